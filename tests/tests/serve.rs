//! `troop serve` as the fleet's control plane, on the lab: hosts behind a firewall that
//! drops every inbound connection dial out to serve and are attacked through it by an
//! operator's CLI that holds no signing key; roles are enforced; an agent registering
//! under another id than its certificate names is refused; a serve killed with SIGKILL
//! is rejoined by every agent when it comes back. Effects are read from outside.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use troop_tests::lab::{Lab, agent_entry, output_text, used_percent, wait_for};

const POLICY: &str = "allow = [\"kill\", \"disk\"]";

fn victim() -> Vec<Vec<OsString>> {
    vec![vec!["sleep".into(), "600".into()]]
}

/// Waits until serve shows each of `ids` reachable over its stream.
fn wait_attached(lab: &Lab, operator: &Path, ids: &[&str]) {
    let attached = wait_for(Duration::from_secs(30), || {
        let agents = lab.agents_as(operator);
        ids.iter().all(|id| {
            agent_entry(&agents, id).is_some_and(|a| a["reachable"] == true && a["via"] == "stream")
        })
    });
    assert!(
        attached,
        "{ids:?} not attached: {}\nserve log:\n{}",
        lab.agents_as(operator),
        lab.serve_log()
    );
}

#[test]
fn hosts_behind_a_firewall_are_attacked_through_serve() {
    let Some(mut lab) = Lab::networked("serve: dial-in hosts") else {
        return;
    };
    lab.add_host("direct-1", &[("role", "web")], POLICY, victim());
    let alice = lab.add_operator("alice", Some("operator"));
    let bob = lab.add_operator("bob", Some("viewer"));
    let mallory = lab.add_operator("mallory", None);
    let mut serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web"), ("zone", "a")], POLICY, victim());
    lab.start_dial_in_host("nat-2", &[("role", "db")], POLICY, victim());
    wait_attached(&lab, &alice, &["nat-1", "nat-2"]);

    // Labels serve was never told, as the agents reported them; the static host beside.
    let agents = lab.agents_as(&alice);
    let nat_1 = agent_entry(&agents, "nat-1").unwrap();
    assert_eq!(nat_1["labels"]["zone"], "a", "{agents}");
    assert!(nat_1["connected_since_unix_ms"].as_i64().unwrap() > 0);
    assert!(nat_1["last_seen_unix_ms"].as_i64().unwrap() > 0);
    let direct = agent_entry(&agents, "direct-1").unwrap();
    assert_eq!(
        (&direct["via"], &direct["reachable"]),
        (&"direct".into(), &true.into())
    );

    // A direct dial to a firewalled host fails: the stream is the only way in.
    let probe = lab.dir().join("direct-to-nat.toml");
    let no_labels = Default::default();
    let direct_config = troop_lab::files::coordinator_file([(
        "nat-1",
        lab.hosts["nat-1"].address.as_str(),
        &no_labels,
    )]);
    troop_lab::files::write(&probe, &direct_config).unwrap();
    let direct_try = lab.agents_as(&probe);
    assert_eq!(
        agent_entry(&direct_try, "nat-1").unwrap()["reachable"],
        false,
        "{direct_try}"
    );

    // A viewer may look, not act; an operator serve does not list may do neither.
    let refused = lab.troop_as(
        &bob,
        &["attack", "kill", "--select", "role=db", "--name", "sleep"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("needs the operator role"),
        "{}",
        output_text(&refused)
    );
    let unknown = lab.troop_as(&mallory, &["agents"]);
    assert_ne!(unknown.status.code(), Some(0));
    assert!(
        output_text(&unknown).contains("not listed"),
        "{}",
        output_text(&unknown)
    );
    assert_eq!(
        lab.hosts["nat-2"].host.pids_named("sleep").len(),
        1,
        "nothing ran"
    );

    // Kill by label through serve: exactly the web hosts, dial-in and direct alike.
    let killed = lab.troop_as(
        &alice,
        &[
            "attack", "kill", "--select", "role=web", "--name", "sleep", "--output", "json",
        ],
    );
    assert_eq!(killed.status.code(), Some(0), "{}", output_text(&killed));
    for id in ["nat-1", "direct-1"] {
        let gone = wait_for(Duration::from_secs(5), || {
            lab.hosts[id].host.pids_named("sleep").is_empty()
        });
        assert!(gone, "{id}'s victim is still running");
    }
    assert_eq!(lab.hosts["nat-2"].host.pids_named("sleep").len(), 1);

    // Serve keeps one connection open to the static host, however often it calls.
    let direct_address = lab.hosts["direct-1"].address.clone();
    assert_eq!(established_to(&serve.0, &direct_address), 1);
    for _ in 0..3 {
        let status = lab.troop_as(&alice, &["status", "--select", "role=web"]);
        assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
    }
    assert_eq!(established_to(&serve.0, &direct_address), 1);

    // A disk fill through serve is measured by statvfs; a halt through serve reverts it.
    let disk = lab.hosts["nat-1"].disk.display().to_string();
    let filling = lab.troop_as(
        &alice,
        &[
            "attack", "disk", "--select", "zone=a", "--path", &disk, "--fill", "60", "--for", "5m",
        ],
    );
    assert_eq!(filling.status.code(), Some(0), "{}", output_text(&filling));
    assert!(used_percent(&lab, "nat-1") > 50.0);
    let halted = lab.troop_as(&alice, &["halt", "--select", "zone=a"]);
    assert_eq!(halted.status.code(), Some(0), "{}", output_text(&halted));
    assert!(wait_for(Duration::from_secs(5), || used_percent(
        &lab, "nat-1"
    ) < 10.0));

    // Serve's store names the operator of each run and every refused call.
    let history = lab.troop_as(
        &lab.dir().join("troop.toml"),
        &["campaign", "history", "--output", "json"],
    );
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let operators: Vec<&Value> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["operator"])
        .collect();
    assert_eq!(operators.len(), 3, "kill, disk and halt: {history}");
    assert!(operators.iter().all(|o| *o == "alice"), "{history}");
    let store = troop_coordinator::store::Store::open(&format!(
        "sqlite://{}",
        lab.dir().join("troop.db").display()
    ))
    .unwrap();
    let access = store.access_log(1000).unwrap();
    let refused = |caller: &str, says: &str| {
        access
            .iter()
            .any(|a| a.caller == caller && !a.allowed && a.detail.contains(says))
    };
    assert!(refused("bob", "needs the operator role"), "{access:?}");
    assert!(refused("mallory", "not listed"), "{access:?}");
    assert!(
        access
            .iter()
            .any(|a| a.caller == "nat-1" && a.call == "attach stream" && a.allowed),
        "{access:?}"
    );

    // A host cut off the network: its heartbeats stop, serve shows it unreachable with
    // when it was last seen, and no attack picks it; healed, it dials back in.
    lab.set_connected("nat-2", false);
    let silent = wait_for(Duration::from_secs(20), || {
        agent_entry(&lab.agents_as(&alice), "nat-2").is_some_and(|a| a["reachable"] == false)
    });
    assert!(silent, "{}", lab.agents_as(&alice));
    let gone = lab.agents_as(&alice);
    assert!(
        agent_entry(&gone, "nat-2").unwrap()["last_seen_unix_ms"]
            .as_i64()
            .unwrap()
            > 0
    );
    let unpicked = lab.troop_as(
        &alice,
        &["attack", "kill", "--select", "role=db", "--name", "sleep"],
    );
    assert_eq!(
        unpicked.status.code(),
        Some(2),
        "{}",
        output_text(&unpicked)
    );
    assert!(
        output_text(&unpicked).contains("no agent matches"),
        "{}",
        output_text(&unpicked)
    );
    lab.set_connected("nat-2", true);
    wait_attached(&lab, &alice, &["nat-2"]);
    assert_eq!(lab.hosts["nat-2"].host.pids_named("sleep").len(), 1);

    // Serve killed outright and started again: every agent dials back in.
    serve.0.kill().unwrap();
    serve.0.wait().unwrap();
    let down = lab.agents_as(&alice);
    assert!(
        down.is_null() || agent_entry(&down, "nat-1").is_none(),
        "serve is down: {down}"
    );
    serve = lab.start_serve();
    wait_attached(&lab, &alice, &["nat-1", "nat-2"]);
    drop(serve);
}

#[test]
fn an_agent_registering_under_another_name_is_refused() {
    let Some(mut lab) = Lab::networked("serve: impostor agent") else {
        return;
    };
    let alice = lab.add_operator("alice", Some("operator"));
    let _serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], POLICY, victim());
    wait_attached(&lab, &alice, &["nat-1"]);

    // On nat-1's host, a second agent that calls itself nat-9 with nat-1's certificate.
    let config: PathBuf = lab.dir().join("nat-9.toml");
    let original = std::fs::read_to_string(lab.dir().join("nat-1.toml")).unwrap();
    let impostor = original
        .replace("id = \"nat-1\"", "id = \"nat-9\"")
        .replace("state/nat-1", "state/nat-9")
        .replace(
            "listen = \"10.77.0.10:7443\"",
            "listen = \"10.77.0.10:7449\"",
        )
        .replace(":9464\"", ":9465\"");
    assert_ne!(impostor, original);
    std::fs::write(&config, impostor).unwrap();
    let log = std::fs::File::create(lab.dir().join("nat-9.log")).unwrap();
    let argv: Vec<OsString> = vec![
        lab.binaries.agent.clone().into(),
        "--config".into(),
        config.into(),
    ];
    let mut agent = lab.hosts["nat-1"]
        .host
        .command_inside(&argv)
        .unwrap()
        .stderr(log)
        .spawn()
        .unwrap();
    let refused = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(lab.dir().join("nat-9.log"))
            .unwrap_or_default()
            .contains("names nat-1, not the agent \"nat-9\"")
    });
    let _ = agent.kill();
    let _ = agent.wait();
    let log = std::fs::read_to_string(lab.dir().join("nat-9.log")).unwrap_or_default();
    assert!(
        refused,
        "impostor log:\n{log}\nserve log:\n{}",
        lab.serve_log()
    );
    let agents = lab.agents_as(&alice);
    assert!(agent_entry(&agents, "nat-9").is_none(), "{agents}");
    assert_eq!(
        agent_entry(&agents, "nat-1").unwrap()["reachable"],
        true,
        "the real one is untouched"
    );
}

#[test]
fn a_scheduled_campaign_strikes_dial_in_and_direct_hosts_alike() {
    let Some(mut lab) = Lab::networked("serve: campaign over both paths") else {
        return;
    };
    lab.add_host("direct-1", &[("role", "web")], POLICY, victim());
    let alice = lab.add_operator("alice", Some("viewer"));
    let campaigns = lab.dir().join("campaigns");
    std::fs::create_dir(&campaigns).unwrap();
    let serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], POLICY, victim());
    wait_attached(&lab, &alice, &["nat-1"]);
    // Loaded only now (SIGHUP), so the first firing finds the dial-in host connected.
    std::fs::write(
        campaigns.join("monkey.toml"),
        "name = \"monkey\"\n[schedule]\nevery = \"1s\"\nmin_time_between = \"1h\"\n\
         [guardrails]\nmax_concurrent = 2\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\npick = \"all\"\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    for id in ["direct-1", "nat-1"] {
        let gone = wait_for(Duration::from_secs(20), || {
            lab.hosts[id].host.pids_named("sleep").is_empty()
        });
        assert!(gone, "{id} was not struck\nserve log:\n{}", lab.serve_log());
    }
    // The victims die before the agents' receipts are recorded: wait for those.
    let recorded = wait_for(Duration::from_secs(10), || {
        let (_, history) = lab.troop_json(&["campaign", "history"]);
        let run = &history["runs"][0];
        run["campaign"] == "monkey" && run["applied"] == 2
    });
    assert!(recorded, "{}", lab.troop_json(&["campaign", "history"]).1);
}

/// Established TCP connections to `address` (ip:port) in `process`'s network namespace,
/// from the kernel's table.
fn established_to(process: &Child, address: &str) -> usize {
    let (ip, port) = address.rsplit_once(':').unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    // /proc/net/tcp: the address as a little-endian u32 in hex, the port in hex.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        port.parse::<u16>().unwrap()
    );
    std::fs::read_to_string(format!("/proc/{}/net/tcp", process.id()))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&wanted.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// `troop ...` as the operator `config`, in the background, its output in `log`.
fn spawn_as(lab: &Lab, config: &Path, args: &[&str], log: &str) -> Child {
    let log = std::fs::File::create(lab.dir().join(log)).unwrap();
    lab.troop_command()
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn read_log(lab: &Lab, log: &str) -> String {
    std::fs::read_to_string(lab.dir().join(log)).unwrap_or_default()
}

fn emptied(lab: &Lab, id: &str, within: Duration) -> bool {
    wait_for(within, || used_percent(lab, id) < 10.0)
}

fn json_as(lab: &Lab, config: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let output = lab.troop_as(config, &all);
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn operators_run_campaigns_and_hold_leases_through_serve() {
    let Some(mut lab) = Lab::networked("serve: campaigns and leases") else {
        return;
    };
    let alice = lab.add_operator("alice", Some("operator"));
    let bob = lab.add_operator("bob", Some("viewer"));
    let serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], POLICY, victim());
    lab.start_dial_in_host("nat-2", &[("role", "web")], POLICY, victim());
    wait_attached(&lab, &alice, &["nat-1", "nat-2"]);
    let disk = lab.hosts["nat-1"].disk.display().to_string();

    // A campaign file on the operator's machine, run by serve: the kills happen, the
    // progress and summary come back, the history in serve names alice.
    let kill = lab.dir().join("kill-web.toml");
    std::fs::write(
        &kill,
        "name = \"kill-web\"\n[guardrails]\nmax_concurrent = 2\nmin_healthy_percent = 0\n\
         [[step]]\nselect = \"role=web\"\npick = \"all\"\n\
         fault = { kind = \"kill\", name = \"sleep\" }\n",
    )
    .unwrap();
    let kill = kill.display().to_string();
    let dry = lab.troop_as(&bob, &["campaign", "run", &kill, "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", output_text(&dry));
    assert!(
        output_text(&dry).contains("would fault nat-1"),
        "{}",
        output_text(&dry)
    );
    let refused = lab.troop_as(&bob, &["campaign", "run", &kill]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(output_text(&refused).contains("needs the operator role"));
    assert_eq!(lab.hosts["nat-1"].host.pids_named("sleep").len(), 1);
    let ran = lab.troop_as(&alice, &["campaign", "run", &kill]);
    assert_eq!(ran.status.code(), Some(0), "{}", output_text(&ran));
    assert!(
        output_text(&ran).contains("kill-web\" completed"),
        "{}",
        output_text(&ran)
    );
    for id in ["nat-1", "nat-2"] {
        let gone = wait_for(Duration::from_secs(5), || {
            lab.hosts[id].host.pids_named("sleep").is_empty()
        });
        assert!(gone, "{id}'s victim is still running");
    }
    let history = json_as(&lab, &bob, &["campaign", "history"]);
    let run = &history["runs"][0];
    assert_eq!(
        (&run["campaign"], &run["operator"], &run["applied"]),
        (&"kill-web".into(), &"alice".into(), &2.into()),
        "{history}"
    );
    let shown = json_as(&lab, &bob, &["campaign", "show", &run["id"].to_string()]);
    assert_eq!(shown["commands"].as_array().unwrap().len(), 2, "{shown}");
    let missing = lab.troop_as(&bob, &["campaign", "show", "999999"]);
    assert!(
        output_text(&missing).contains("there is no run 999999"),
        "{}",
        output_text(&missing)
    );

    // A long disk fill, cancelled by the operator's Ctrl-C, and by the operator's CLI
    // dying: serve reverts it each time and records why.
    let fill = lab.dir().join("fill.toml");
    std::fs::write(
        &fill,
        format!(
            "name = \"fill\"\n[guardrails]\nmax_concurrent = 2\nmin_healthy_percent = 0\n\
             [[step]]\nselect = \"role=web\"\npick = {{ count = 1 }}\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 60 }}\nduration = \"5m\"\n"
        ),
    )
    .unwrap();
    let fill = fill.display().to_string();
    for (how, says) in [
        (nix::sys::signal::Signal::SIGINT, "cancelled by alice"),
        (
            nix::sys::signal::Signal::SIGKILL,
            "alice's connection to serve ended",
        ),
    ] {
        let mut cli = spawn_as(&lab, &alice, &["campaign", "run", &fill], "fill.log");
        assert!(
            filled_any(&lab),
            "{}\n{}",
            read_log(&lab, "fill.log"),
            lab.serve_log()
        );
        signal(&cli, how);
        cli.wait().unwrap();
        for id in ["nat-1", "nat-2"] {
            assert!(
                emptied(&lab, id, Duration::from_secs(10)),
                "{how}: {id} still full\n{}",
                lab.serve_log()
            );
        }
        let ended = wait_for(Duration::from_secs(10), || {
            let history = json_as(&lab, &bob, &["campaign", "history"]);
            history["runs"][0]["status"] == "aborted"
                && history["runs"][0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(says))
        });
        assert!(
            ended,
            "{how}: {}",
            json_as(&lab, &bob, &["campaign", "history"])
        );
    }

    // An attack held with --lease through serve: renewed past its lease, then Ctrl-C
    // aborts it; renewals and the abort are recorded in the attack's own run.
    let lease_args = [
        "attack", "disk", "--select", "role=web", "--count", "1", "--path", &disk, "--fill", "60",
        "--for", "5m", "--lease", "3s",
    ];
    let mut held = spawn_as(&lab, &alice, &lease_args, "lease.log");
    assert!(filled_any(&lab), "{}", read_log(&lab, "lease.log"));
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        filled_any(&lab),
        "renewals through serve keep it: {}",
        read_log(&lab, "lease.log")
    );
    signal(&held, nix::sys::signal::Signal::SIGINT);
    held.wait().unwrap();
    for id in ["nat-1", "nat-2"] {
        assert!(
            emptied(&lab, id, Duration::from_secs(10)),
            "{id} still full"
        );
    }
    let history = json_as(&lab, &bob, &["campaign", "history"]);
    let attack = &history["runs"][0];
    assert_eq!(attack["campaign"], "attack disk", "{history}");
    assert!(
        attack["commands"].as_i64().unwrap() >= 3,
        "start, renewals, abort in one run: {history}"
    );

    // Held again, and serve killed outright: the lease ends the fault on the agent.
    let mut held = spawn_as(&lab, &alice, &lease_args, "lease-2.log");
    assert!(filled_any(&lab), "{}", read_log(&lab, "lease-2.log"));
    let mut serve = serve;
    serve.0.kill().unwrap();
    serve.0.wait().unwrap();
    for id in ["nat-1", "nat-2"] {
        assert!(
            emptied(&lab, id, Duration::from_secs(10)),
            "{id} still full after its lease"
        );
    }
    let _ = held.kill();
    let _ = held.wait();

    // Restarted, then stopped with SIGTERM while agents are attached: serve exits.
    let mut serve = lab.start_serve();
    wait_attached(&lab, &alice, &["nat-1", "nat-2"]);
    signal(&serve.0, nix::sys::signal::Signal::SIGTERM);
    let exited = wait_for(Duration::from_secs(15), || {
        serve.0.try_wait().unwrap().is_some()
    });
    assert!(exited, "serve ignores SIGTERM\n{}", lab.serve_log());
}

/// Waits until one of the web hosts' disks is filled.
fn filled_any(lab: &Lab) -> bool {
    wait_for(Duration::from_secs(15), || {
        ["nat-1", "nat-2"]
            .iter()
            .any(|id| used_percent(lab, id) > 50.0)
    })
}
