//! Campaigns end to end on the lab fleet: guardrails hold, a probe going red aborts the
//! run and every fault is reverted, a dry run touches nothing, and the audit store holds
//! one record per command sent.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::Value;
use troop_tests::lab::{Lab, used_percent, wait_for};

const POLICY: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\"]";

/// Six web hosts in two clusters of three.
fn fleet(scenario: &str) -> Option<Lab> {
    let mut lab = Lab::new(scenario)?;
    for index in 1..=6 {
        let id = format!("web-{index}");
        let cluster = if index <= 3 { "a" } else { "b" };
        let services: Vec<Vec<OsString>> = vec![vec!["sleep".into(), "600".into()]];
        lab.add_host(
            &id,
            &[("role", "web"), ("cluster", cluster)],
            POLICY,
            services,
        );
    }
    Some(lab)
}

fn write_campaign(lab: &Lab, name: &str, body: &str) -> String {
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\nseed = 7\n{body}")).unwrap();
    path.display().to_string()
}

fn faulted_hosts(lab: &Lab) -> Vec<String> {
    lab.hosts
        .keys()
        .filter(|id| used_percent(lab, id) > 10.0)
        .cloned()
        .collect()
}

fn show(lab: &Lab, run: &Value) -> Value {
    let run = run.as_i64().expect("a run id").to_string();
    let (code, detail) = lab.troop_json(&["campaign", "show", &run]);
    assert_eq!(code, Some(0), "{detail}");
    detail
}

#[test]
fn guardrails_hold_and_the_store_records_every_command() {
    let Some(lab) = fleet("campaign guardrails") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    // Asks for every host; min_healthy_percent alone would allow one per cluster (two),
    // max_concurrent = 1 must hold it to one.
    let file = write_campaign(
        &lab,
        "fill-all",
        &format!(
            "[guardrails]\nmax_concurrent = 1\nmin_healthy_percent = 60\n\
             [[step]]\nselect = \"role=web\"\ngroup_by = \"cluster\"\npick = \"all\"\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"3s\"\n"
        ),
    );
    let mut run = lab
        .troop_command()
        .args(["campaign", "run", &file, "--output", "json"])
        .spawn_json();
    let mut most = 0;
    let finished = wait_for(Duration::from_secs(30), || {
        let hit = faulted_hosts(&lab);
        most = most.max(hit.len());
        // Per cluster of 3, 60 % healthy means at most one host under fault.
        for cluster in [["web-1", "web-2", "web-3"], ["web-4", "web-5", "web-6"]] {
            let in_cluster = hit.iter().filter(|h| cluster.contains(&h.as_str())).count();
            assert!(
                in_cluster <= 1,
                "cluster {cluster:?} has {in_cluster} under fault: {hit:?}"
            );
        }
        run.finished()
    });
    assert!(finished, "campaign run did not finish");
    let (code, report) = run.result();
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        most, 1,
        "max_concurrent = 1, seen {most} hosts under fault at once"
    );
    assert_eq!(report["sent"], 1, "{report}");
    assert!(
        lab.hosts.keys().all(|id| used_percent(&lab, id) < 1.0),
        "fills left behind"
    );
    let detail = show(&lab, &report["run"]);
    let commands = detail["commands"].as_array().unwrap();
    let starts = commands.iter().filter(|c| !c["step"].is_null()).count();
    assert_eq!(starts as u64, report["sent"].as_u64().unwrap(), "{detail}");
    assert!(
        commands.iter().all(|c| c["outcome"] == "applied"),
        "{detail}"
    );
}

/// A single kill is over at once, but the host it hit counts against max_concurrent.
#[test]
fn a_single_kill_counts_against_max_concurrent() {
    let Some(lab) = fleet("campaign kill guardrail") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let sleeps = |lab: &Lab| -> usize {
        lab.hosts
            .values()
            .map(|h| h.host.pids_named("sleep").len())
            .sum()
    };
    assert_eq!(sleeps(&lab), 6);
    let file = write_campaign(
        &lab,
        "kill-then-fill",
        &format!(
            "[guardrails]\nmax_concurrent = 1\nmin_healthy_percent = 0\n\
             [[step]]\nselect = \"role=web\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"kill\", name = \"sleep\" }}\n\
             [[step]]\nselect = \"role=web\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"2s\"\n"
        ),
    );
    let (code, report) = lab.troop_json(&["campaign", "run", &file]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(sleeps(&lab), 5, "exactly one service killed");
    assert_eq!(report["sent"], 1, "the fill must be held back: {report}");
    assert!(
        lab.hosts.keys().all(|id| used_percent(&lab, id) < 1.0),
        "a fill ran although the killed host counts as under fault"
    );
}

#[test]
fn a_probe_going_red_aborts_the_run_and_reverts_every_fault() {
    let Some(lab) = fleet("campaign abort") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let healthy = lab.dir().join("service-is-healthy");
    std::fs::write(&healthy, "").unwrap();
    let file = write_campaign(
        &lab,
        "probe-red",
        &format!(
            "[guardrails]\nmax_concurrent = 6\nmin_healthy_percent = 0\n\
             [[guardrails.stop_if]]\nname = \"service\"\ncommand = \"test -e {}\"\nevery = \"200ms\"\nfailures = 2\n\
             [[step]]\nselect = \"role=web\"\npick = {{ count = 4 }}\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"5m\"\n",
            healthy.display()
        ),
    );
    let mut run = lab
        .troop_command()
        .args(["campaign", "run", &file, "--output", "json"])
        .spawn_json();
    assert!(
        wait_for(Duration::from_secs(20), || faulted_hosts(&lab).len() == 4),
        "faults not applied"
    );
    // The service breaks: the probe fails twice, the campaign aborts and reverts.
    std::fs::remove_file(&healthy).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || run.finished()),
        "run did not stop"
    );
    let (code, report) = run.result();
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["status"], "aborted", "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("probe service"),
        "{report}"
    );
    assert_eq!(report["reverted_early"], 4, "{report}");
    assert!(
        faulted_hosts(&lab).is_empty(),
        "faults left after the abort"
    );
    let detail = show(&lab, &report["run"]);
    let aborts = detail["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["fault_kind"].as_str().unwrap().starts_with("abort fault"))
        .filter(|c| c["outcome"] == "applied")
        .count();
    assert_eq!(aborts, 4, "every abort is in the audit store: {detail}");
    assert!(
        detail["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ok"] == false),
        "{detail}"
    );

    // Each fault held while the probe went red: each is named for it.
    let findings = detail["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 4, "{detail}");
    for finding in findings {
        assert_eq!(finding["broke"]["probe"], "service", "{finding}");
        let text = finding["text"].as_str().unwrap();
        assert!(text.ends_with("single point of failure"), "{text}");
    }

    // The run's picture: a row per host hit, each fault's bar marked aborted, the probe's
    // strip beneath, the run's abort drawn.
    let picture = lab.dir().join("run.svg");
    let run = report["run"].to_string();
    let drawn = lab.troop(&["campaign", "show", &run, "--svg", picture.to_str().unwrap()]);
    assert!(drawn.status.success(), "{drawn:?}");
    let text = std::fs::read_to_string(&picture).unwrap();
    let svg = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    let count = |class: &str| {
        svg.descendants()
            .filter(|node| node.attribute("class") == Some(class))
            .count()
    };
    let counted = [
        ("host", 4),
        ("fault", 4),
        ("abort", 4),
        ("probe", 1),
        ("run-abort", 1),
    ];
    for (class, expected) in counted {
        assert_eq!(count(class), expected, "{class} in {text}");
    }
    // `TROOP_DOCS_SVG=docs/run-timeline.svg` keeps this picture for the docs.
    if let Some(keep) = std::env::var_os("TROOP_DOCS_SVG") {
        std::fs::copy(&picture, keep).unwrap();
    }
}

#[test]
fn an_already_sick_service_gets_no_chaos() {
    let Some(lab) = fleet("campaign steady state") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let file = write_campaign(
        &lab,
        "sick",
        &format!(
            "[[guardrails.stop_if]]\ncommand = \"false\"\n\
             [[step]]\nselect = \"role=web\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"5m\"\n"
        ),
    );
    let (code, report) = lab.troop_json(&["campaign", "run", &file]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["status"], "refused");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("before any fault"),
        "{report}"
    );
    assert_eq!(report["sent"], 0);
    assert!(faulted_hosts(&lab).is_empty());
    // The refusal is in the audit trail, as a run that sent nothing.
    let (_, history) = lab.troop_json(&["campaign", "history"]);
    let run = &history["runs"][0];
    assert_eq!(run["campaign"], "sick", "{history}");
    assert_eq!(run["status"], "refused", "{history}");
    assert_eq!(run["commands"], 0, "{history}");
}

#[test]
fn a_dry_run_touches_nothing() {
    let Some(lab) = fleet("campaign dry run") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let file = write_campaign(
        &lab,
        "dry",
        &format!(
            "[guardrails]\nmax_concurrent = 6\n[[step]]\nselect = \"role=web\"\npick = \"all\"\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"5m\"\n"
        ),
    );
    let (code, report) = lab.troop_json(&["campaign", "run", &file, "--dry-run"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sent"], 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(faulted_hosts(&lab).is_empty());
    assert!(
        !lab.dir().join("troop.db").exists(),
        "a dry run wrote the audit store"
    );
}

/// `GET /healthz` on serve's default address, from the lab's network; the status code.
fn healthz(lab: &Lab) -> String {
    use std::io::{Read, Write};
    lab.enter_network();
    let mut stream = std::net::TcpStream::connect("127.0.0.1:7080").unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: troop\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn without_an_audit_record_nothing_is_sent() {
    let Some(lab) = fleet("audit store down") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let file = write_campaign(
        &lab,
        "unrecorded",
        &format!(
            "[[step]]\nselect = \"role=web\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 40 }}\nduration = \"5m\"\n"
        ),
    );
    // The store's file cannot be a database: it is a directory.
    std::fs::create_dir(lab.dir().join("troop.db")).unwrap();
    let output = lab.troop(&["campaign", "run", &file]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("audit store"),
        "{output:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        faulted_hosts(&lab).is_empty(),
        "a fault was sent without an audit record"
    );
}

/// A `troop ... --output json` process running in the background.
trait SpawnJson {
    fn spawn_json(&mut self) -> Running;
}

impl SpawnJson for std::process::Command {
    fn spawn_json(&mut self) -> Running {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Running {
            child,
            status: None,
        }
    }
}

struct Running {
    child: std::process::Child,
    status: Option<std::process::ExitStatus>,
}

impl Running {
    fn finished(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_some()
    }

    fn result(mut self) -> (Option<i32>, Value) {
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self
            .status
            .take()
            .unwrap_or_else(|| self.child.wait().unwrap());
        let value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
        (status.code(), value)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serve_fires_on_schedule_and_a_restart_keeps_the_floor() {
    let Some(lab) = fleet("serve") else {
        return;
    };
    let campaigns = lab.dir().join("campaigns");
    std::fs::create_dir(&campaigns).unwrap();
    std::fs::write(
        campaigns.join("monkey.toml"),
        "name = \"monkey\"\n[schedule]\nevery = \"1s\"\nmin_time_between = \"1h\"\n\
         [guardrails]\nmax_concurrent = 6\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\ngroup_by = \"cluster\"\npick = { count = 1 }\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    )
    .unwrap();
    let history = || -> Vec<Value> {
        let (code, value) = lab.troop_json(&["campaign", "history"]);
        assert_eq!(code, Some(0), "{value}");
        value["runs"].as_array().cloned().unwrap_or_default()
    };
    let log = lab.dir().join("serve.log");
    let start = || {
        lab.troop_command()
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let stop = |mut serve: std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(serve.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = serve.wait().unwrap();
        assert!(status.success(), "serve did not stop cleanly: {status:?}");
    };
    let serve = start();
    // The first run strikes one host in each cluster; later runs fall inside the floor.
    assert!(
        wait_for(Duration::from_secs(20), || history().len() == 1),
        "no run fired"
    );
    assert_eq!(healthz(&lab), "200", "serve answers /healthz");
    std::thread::sleep(Duration::from_secs(3));
    stop(serve);
    // At its default level serve says what it loaded and when each campaign fires.
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("loaded a scheduled campaign") && said.contains("monkey"),
        "{said}"
    );
    assert!(said.contains("fires next"), "{said}");
    let runs = history();
    assert_eq!(
        runs.len(),
        1,
        "struck twice within min_time_between: {runs:?}"
    );
    assert_eq!(runs[0]["applied"], 2, "{runs:?}");
    let killed: usize = lab
        .hosts
        .values()
        .filter(|h| h.host.pids_named("sleep").is_empty())
        .count();
    assert_eq!(killed, 2, "one host per cluster");
    // A restarted serve remembers the floor from the store.
    let serve = start();
    std::thread::sleep(Duration::from_secs(4));
    stop(serve);
    assert_eq!(
        history().len(),
        1,
        "a restart struck again inside min_time_between"
    );
}

/// Ad-hoc attacks and halts are in the audit store like campaign runs: who ran them,
/// their seed, every command with its signing key and signature.
#[test]
fn ad_hoc_attacks_and_halts_are_audited() {
    let Some(mut lab) = Lab::new("ad-hoc audit") else {
        return;
    };
    lab.add_host(
        "web-1",
        &[("role", "web")],
        POLICY,
        vec![vec!["sleep".into(), "600".into()]],
    );
    let (code, report) = lab.troop_json(&[
        "attack", "kill", "--select", "role=web", "--name", "sleep", "--seed", "11",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let command_id = report["results"][0]["command_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(0), "{report}");
    let (code, history) = lab.troop_json(&["campaign", "history"]);
    assert_eq!(code, Some(0), "{history}");
    let runs = history["runs"].as_array().unwrap();
    let attack = runs
        .iter()
        .find(|r| r["campaign"] == "attack kill")
        .expect("the attack");
    assert_eq!(attack["seed"], 11, "{history}");
    assert_eq!(attack["status"], "completed", "{history}");
    assert!(
        !attack["operator"].as_str().unwrap().is_empty(),
        "{history}"
    );
    assert!(
        runs.iter()
            .any(|r| r["campaign"] == "halt" && r["applied"] == 1),
        "{history}"
    );
    let detail = show(&lab, &attack["id"]);
    let recorded = &detail["commands"][0];
    assert_eq!(recorded["command_id"], command_id.as_str(), "{detail}");
    assert_eq!(recorded["outcome"], "applied", "{detail}");
    assert_eq!(recorded["key_id"].as_str().unwrap().len(), 16, "{detail}");
    assert_eq!(
        recorded["signature_sha256"].as_str().unwrap().len(),
        64,
        "{detail}"
    );
}

/// `campaign plan` names, for each firing, every step and the hosts it may strike, by
/// group; its JSON and `campaign show --output json` give faults as fields.
#[test]
fn plan_and_show_name_steps_hosts_and_fault_fields() {
    let Some(lab) = fleet("campaign plan") else {
        return;
    };
    let file = write_campaign(
        &lab,
        "planned",
        "[schedule]\nevery = \"6h\"\ntimezone = \"UTC\"\n\
         [guardrails]\nmax_concurrent = 6\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\ngroup_by = \"cluster\"\npick = { count = 1 }\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    );
    let (code, plan) = lab.troop_json(&["campaign", "plan", &file, "--days", "1"]);
    assert_eq!(code, Some(0), "{plan}");
    let step = &plan["runs"][0]["steps"][0];
    assert_eq!(step["step"], 1, "{plan}");
    assert_eq!(step["fault"]["kind"], "kill", "{plan}");
    assert_eq!(step["fault"]["name"], "sleep", "{plan}");
    let strikes = step["may_strike"].as_array().unwrap();
    let a = strikes
        .iter()
        .find(|g| g["group"] == "a")
        .expect("cluster a");
    assert_eq!(
        a["hosts"],
        serde_json::json!(["web-1", "web-2", "web-3"]),
        "{plan}"
    );
    let table = String::from_utf8_lossy(
        &lab.troop(&["campaign", "plan", &file, "--days", "1"])
            .stdout,
    )
    .into_owned();
    assert!(table.contains("1 of a [web-1 web-2 web-3]"), "{table}");

    let (code, report) = lab.troop_json(&["campaign", "run", &file]);
    assert_eq!(code, Some(0), "{report}");
    let detail = show(&lab, &report["run"]);
    let parameters = &detail["commands"][0]["parameters"];
    assert_eq!(parameters["fault"]["kind"], "kill", "{detail}");
    assert_eq!(parameters["fault"]["name"], "sleep", "{detail}");
}

/// A dry run prints its picks on stdout; a group_by label some hosts lack and a run
/// outside the schedule's window are said, not silent.
#[test]
fn a_dry_run_says_what_would_surprise() {
    let Some(lab) = fleet("campaign dry run notes") else {
        return;
    };
    let date = |when: &str| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", when, "+%F"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let blackout = ["yesterday", "today", "tomorrow"]
        .map(|d| format!("\"{}\"", date(d)))
        .join(", ");
    let file = write_campaign(
        &lab,
        "off-window",
        &format!(
            "[schedule]\nevery = \"1h\"\ntimezone = \"UTC\"\nblackout = [{blackout}]\n\
             [guardrails]\nmax_concurrent = 6\nmin_healthy_percent = 0\n\
             [[step]]\nselect = \"role=web\"\ngroup_by = \"zone\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"kill\", name = \"sleep\" }}\n"
        ),
    );
    let output = lab.troop(&["campaign", "run", &file, "--dry-run"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("step 1: would fault web-"), "{stdout}");
    assert!(
        stderr.contains("outside campaign \"off-window\"'s schedule window"),
        "{stderr}"
    );
    assert!(
        stderr.contains("group_by \"zone\"") && stderr.contains("web-1"),
        "{stderr}"
    );
}
