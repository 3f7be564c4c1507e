//! The emergency stop on the lab, measured from outside: cpu, memory and disk faults on
//! every host are gone from /proc and statvfs after `troop emergency-stop`; while latched,
//! attacks from a second operator and from a CLI that signs itself, a campaign run and a
//! scheduled campaign all run nothing; an agent restarted while latched, a host that was
//! partitioned during the stop and a restarted serve are all still latched; after
//! `troop resume` the same attack runs. And the same without serve.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use troop_tests::lab::{Lab, Reaped, cpu_seconds, output_text, used_percent, wait_for};

const POLICY: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\"]";
const REASON: &str = "checkout is down";

fn victim() -> Vec<Vec<OsString>> {
    vec![vec!["sleep".into(), "600".into()]]
}

fn json_as(lab: &Lab, config: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_slice(&lab.troop_as(config, &all).stdout).unwrap_or(Value::Null)
}

fn entry(agents: &Value, id: &str) -> Value {
    agents["agents"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["agent"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_attached(lab: &Lab, operator: &Path, ids: &[&str]) {
    let attached = wait_for(Duration::from_secs(30), || {
        let agents = json_as(lab, operator, &["agents"]);
        ids.iter().all(|id| entry(&agents, id)["reachable"] == true)
    });
    assert!(
        attached,
        "{ids:?} not attached\nserve log:\n{}",
        lab.serve_log()
    );
}

/// Starts cpu (30 % of one core), memory (16 MiB) and disk (50 %) on every host `select`
/// matches, through `config`.
fn attack_everything(lab: &Lab, config: &Path, select: &str, hosts: usize) {
    let disk = lab
        .hosts
        .values()
        .next()
        .unwrap()
        .disk
        .display()
        .to_string();
    for args in [
        vec![
            "attack", "cpu", "--select", select, "--load", "30", "--cores", "1", "--for", "5m",
        ],
        vec![
            "attack", "memory", "--select", select, "--size", "16MiB", "--for", "5m",
        ],
        vec![
            "attack", "disk", "--select", select, "--path", &disk, "--fill", "50", "--for", "5m",
        ],
    ] {
        let report = json_as(lab, config, &args);
        let applied = report["results"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["outcome"] == "applied").count()
        });
        assert_eq!(applied, hosts, "{args:?}: {report}");
    }
}

/// Whether the host shows any of the three faults, read from outside: the agent's CPU
/// time over 200 ms, a memory holder process, its tmpfs by statvfs.
fn shows_a_fault(lab: &Lab, id: &str) -> bool {
    let host = &lab.hosts[id];
    let agent = host.agent_pid().unwrap();
    let cpu = cpu_seconds(agent);
    std::thread::sleep(Duration::from_millis(200));
    let burning = cpu_seconds(agent) - cpu > 0.03;
    let holding = host
        .host
        .processes()
        .iter()
        .any(|p| p.cmdline.iter().any(|a| a == "__hold-memory"));
    burning || holding || used_percent(lab, id) > 1.0
}

/// The host's victims (`sleep 600`; a host whose agent was restarted also runs its
/// init's `sleep 3600`, which is not one).
fn victims(lab: &Lab, id: &str) -> usize {
    lab.hosts[id]
        .host
        .processes()
        .iter()
        .filter(|p| p.cmdline == ["sleep", "600"])
        .count()
}

fn victims_gone(lab: &Lab, id: &str) -> bool {
    wait_for(Duration::from_secs(5), || victims(lab, id) == 0)
}

fn filled(lab: &Lab, id: &str) -> bool {
    used_percent(lab, id) > 40.0
}

fn latched_by(status: &Value) -> Option<&str> {
    status["latch"]["by"].as_str()
}

/// `GET /healthz` on serve's default health port, from inside the lab's network.
fn healthz(lab: &Lab) -> String {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lab.enter_network();
                let mut stream = std::net::TcpStream::connect("127.0.0.1:7080").unwrap();
                stream
                    .write_all(b"GET /healthz HTTP/1.0\r\nHost: serve\r\n\r\n")
                    .unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            })
            .join()
            .unwrap()
    })
}

fn kill_agent(lab: &Lab, id: &str) {
    let pid = lab.hosts[id].agent_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || lab.hosts[id]
        .agent_pid()
        .is_none()));
}

#[test]
fn an_emergency_stop_through_serve_latches_the_fleet_until_a_resume() {
    let Some(mut lab) = Lab::networked("emergency stop through serve") else {
        return;
    };
    for id in ["direct-1", "direct-2"] {
        lab.add_host(id, &[("role", "web")], POLICY, victim());
    }
    let alice = lab.add_operator("alice", Some("operator"));
    let bob = lab.add_operator("bob", Some("operator"));
    let campaigns = lab.dir().join("campaigns");
    std::fs::create_dir(&campaigns).unwrap();
    let mut serve = lab.start_serve();
    for id in ["nat-1", "nat-2"] {
        lab.start_dial_in_host(id, &[("role", "web")], POLICY, victim());
    }
    wait_attached(&lab, &alice, &["direct-1", "direct-2", "nat-1", "nat-2"]);
    attack_everything(&lab, &alice, "role=web", 4);
    for id in ["direct-1", "direct-2", "nat-1", "nat-2"] {
        assert!(shows_a_fault(&lab, id) && filled(&lab, id), "{id}");
    }

    // nat-2 (dial-in) and direct-2 (dialled by serve) are cut off before the stop; their
    // faults run on, out of reach.
    lab.set_connected("nat-2", false);
    lab.set_connected("direct-2", false);
    let silent = wait_for(Duration::from_secs(20), || {
        entry(&json_as(&lab, &alice, &["agents"]), "nat-2")["reachable"] == false
    });
    assert!(silent);
    let started = Instant::now();
    let stop = lab.troop_as(&alice, &["emergency-stop", "--reason", REASON]);
    assert_eq!(
        stop.status.code(),
        Some(1),
        "direct-2 and nat-2 missed it: {}",
        output_text(&stop)
    );
    assert!(
        output_text(&stop).contains("not latched yet: direct-2, nat-2"),
        "{}",
        output_text(&stop)
    );
    let reverted = wait_for(Duration::from_secs(5), || {
        !filled(&lab, "direct-1") && !filled(&lab, "nat-1")
    });
    eprintln!(
        "emergency stop through serve: fills gone {:?} after the CLI started",
        started.elapsed()
    );
    assert!(reverted);
    for id in ["direct-1", "nat-1"] {
        assert!(!shows_a_fault(&lab, id), "{id} still shows a fault");
    }
    for id in ["direct-2", "nat-2"] {
        assert!(filled(&lab, id), "out of reach, {id} still runs its faults");
    }

    // direct-2 back: serve, asking the hosts it missed every 5 s, latches it and its
    // faults end; while it was down, nothing was recorded for it.
    lab.set_connected("direct-2", true);
    let latched = wait_for(Duration::from_secs(30), || {
        latched_by(&entry(&json_as(&lab, &alice, &["status"]), "direct-2")) == Some("alice")
    });
    assert!(latched, "serve log:\n{}", lab.serve_log());
    assert!(wait_for(Duration::from_secs(5), || !filled(
        &lab, "direct-2"
    )));
    assert!(!shows_a_fault(&lab, "direct-2"));
    let history = json_as(&lab, &alice, &["campaign", "history"]);
    let again_to_direct_2 = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["campaign"] == "emergency stop, again to direct-2 (it answers again)")
        .count();
    assert_eq!(again_to_direct_2, 1, "{history}");
    let statuses = json_as(&lab, &alice, &["status"]);
    assert_eq!(
        statuses["serve_latch"]["by"], "alice",
        "serve's own latch: {statuses}"
    );
    for id in ["direct-1", "nat-1"] {
        assert_eq!(
            latched_by(&entry(&statuses, id)),
            Some("alice"),
            "{statuses}"
        );
    }
    assert!(
        healthz(&lab).contains("latched: emergency stop by alice"),
        "{}",
        healthz(&lab)
    );

    // While latched: a second operator through serve, a CLI signing straight to the
    // agent, a campaign run and a scheduled campaign all run nothing.
    let bobs = lab.troop_as(
        &bob,
        &["attack", "kill", "--select", "role=web", "--name", "sleep"],
    );
    assert_eq!(bobs.status.code(), Some(1), "{}", output_text(&bobs));
    for says in ["FAILED_PRECONDITION", "emergency stop by alice", REASON] {
        assert!(
            output_text(&bobs).contains(says),
            "{says}: {}",
            output_text(&bobs)
        );
    }
    let (code, direct) = lab.troop_json(&["attack", "kill", "--select", "", "--name", "sleep"]);
    assert_eq!(code, Some(1), "{direct}");
    let refusal = &direct["results"][0];
    assert_eq!(refusal["code"], "FAILED_PRECONDITION", "{direct}");
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("emergency stop by alice"),
        "{direct}"
    );
    let campaign = lab.dir().join("kill.toml");
    std::fs::write(
        &campaign,
        "name = \"kill-web\"\n[guardrails]\nmax_concurrent = 3\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\npick = \"all\"\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    )
    .unwrap();
    let run = lab.troop_as(&alice, &["campaign", "run", campaign.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", output_text(&run));
    assert!(
        output_text(&run).contains("emergency stop by alice"),
        "{}",
        output_text(&run)
    );
    std::fs::write(
        campaigns.join("monkey.toml"),
        "name = \"monkey\"\n[schedule]\nevery = \"1s\"\nmin_time_between = \"1s\"\n\
         [guardrails]\nmax_concurrent = 3\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\npick = \"all\"\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    )
    .unwrap();
    let hangup = |serve: &Reaped| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(serve.0.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    };
    hangup(&serve);
    let refused_firing = wait_for(Duration::from_secs(15), || {
        json_as(&lab, &alice, &["campaign", "history"])["runs"]
            .as_array()
            .is_some_and(|runs| {
                runs.iter().any(|r| {
                    r["campaign"] == "monkey"
                        && r["status"] == "refused"
                        && r["reason"]
                            .as_str()
                            .is_some_and(|why| why.contains("emergency stop by alice"))
                })
            })
    });
    assert!(refused_firing, "serve log:\n{}", lab.serve_log());
    for id in ["direct-1", "nat-1"] {
        assert_eq!(victims(&lab, id), 1, "{id}");
    }

    // An agent killed and started again is still latched, from its state dir.
    kill_agent(&lab, "direct-1");
    let mut restarted = Reaped(lab.restart_agent("direct-1"));
    assert_eq!(latched_by(&lab.status("direct-1")), Some("alice"));

    // The partitioned host is latched, and its faults reverted, when it returns.
    lab.set_connected("nat-2", true);
    let latched = wait_for(Duration::from_secs(30), || {
        latched_by(&entry(&json_as(&lab, &alice, &["status"]), "nat-2")) == Some("alice")
    });
    assert!(latched, "serve log:\n{}", lab.serve_log());
    assert!(wait_for(Duration::from_secs(5), || !filled(&lab, "nat-2")));
    assert!(!shows_a_fault(&lab, "nat-2"));

    // Serve killed and started again: still latched.
    drop(serve);
    serve = lab.start_serve();
    wait_attached(&lab, &alice, &["direct-1", "direct-2", "nat-1", "nat-2"]);
    let again = lab.troop_as(
        &bob,
        &["attack", "kill", "--select", "role=web", "--name", "sleep"],
    );
    assert_eq!(again.status.code(), Some(1), "{}", output_text(&again));
    assert!(
        output_text(&again).contains("emergency stop by alice"),
        "{}",
        output_text(&again)
    );

    // Resume: nothing latched anywhere, and the same attack runs.
    std::fs::remove_file(campaigns.join("monkey.toml")).unwrap();
    hangup(&serve);
    let resume = lab.troop_as(&alice, &["resume", "--reason", "checkout is back"]);
    assert_eq!(resume.status.code(), Some(0), "{}", output_text(&resume));
    let statuses = json_as(&lab, &alice, &["status"]);
    assert!(statuses["serve_latch"].is_null(), "{statuses}");
    for id in ["direct-1", "direct-2", "nat-1", "nat-2"] {
        assert_eq!(latched_by(&entry(&statuses, id)), None, "{statuses}");
    }
    assert_eq!(healthz(&lab).lines().last(), Some("ok"));
    let attack = lab.troop_as(
        &bob,
        &["attack", "kill", "--select", "role=web", "--name", "sleep"],
    );
    assert_eq!(attack.status.code(), Some(0), "{}", output_text(&attack));
    for id in ["direct-1", "direct-2", "nat-1", "nat-2"] {
        assert!(victims_gone(&lab, id), "{id}");
    }

    // The audit trail: who stopped, who resumed, and the latch sent again to nat-2.
    let history = json_as(&lab, &alice, &["campaign", "history"]);
    let runs = history["runs"].as_array().unwrap();
    let by_alice = |what: &str| {
        runs.iter().any(|r| {
            r["campaign"].as_str().is_some_and(|c| c.starts_with(what)) && r["operator"] == "alice"
        })
    };
    assert!(by_alice("emergency stop"), "{history}");
    assert!(by_alice("resume"), "{history}");
    assert!(by_alice("emergency stop, again to nat-2"), "{history}");
    let _ = restarted.0.kill();
    let _ = restarted.0.wait();
    drop(serve);
}

#[test]
fn an_emergency_stop_without_serve_latches_every_agent_in_the_config() {
    let Some(mut lab) = Lab::new("emergency stop without serve") else {
        return;
    };
    for id in ["web-1", "web-2"] {
        lab.add_host(id, &[("role", "web")], POLICY, victim());
    }
    let config = lab.dir().join("troop.toml");
    attack_everything(&lab, &config, "", 2);
    let (code, report) = lab.troop_json(&["emergency-stop", "--reason", REASON]);
    assert_eq!(code, Some(0), "{report}");
    for id in ["web-1", "web-2"] {
        assert!(
            wait_for(Duration::from_secs(5), || !filled(&lab, id)),
            "{id}"
        );
        assert!(!shows_a_fault(&lab, id), "{id}");
    }
    let (code, refused) = lab.troop_json(&["attack", "kill", "--select", "", "--name", "sleep"]);
    assert_eq!(code, Some(1), "{refused}");
    for result in refused["results"].as_array().unwrap() {
        assert_eq!(result["code"], "FAILED_PRECONDITION", "{refused}");
    }
    kill_agent(&lab, "web-1");
    let mut restarted = Reaped(lab.restart_agent("web-1"));
    assert!(latched_by(&lab.status("web-1")).is_some());
    let (code, report) = lab.troop_json(&["resume", "--reason", "checkout is back"]);
    assert_eq!(code, Some(0), "{report}");
    let (code, report) = lab.troop_json(&["attack", "kill", "--select", "", "--name", "sleep"]);
    assert_eq!(code, Some(0), "{report}");
    for id in ["web-1", "web-2"] {
        assert!(victims_gone(&lab, id), "{id}: {report}");
    }
    let _ = restarted.0.kill();
    let _ = restarted.0.wait();
}
