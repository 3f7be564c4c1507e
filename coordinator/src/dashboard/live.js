// Live parts of a page, sent by serve every second as server-sent events: the faults
// table (on the live faults page) and the emergency-stop banner (everywhere).
"use strict";
(function () {
  const source = new EventSource("/ui/events");
  const replace = (id) => (event) => {
    const target = document.getElementById(id);
    if (target) target.innerHTML = event.data;
  };
  source.addEventListener("faults", replace("live-faults"));
  source.addEventListener("latch", replace("latch"));
})();
