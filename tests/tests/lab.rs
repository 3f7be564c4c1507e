//! Fleet scenarios on the lab: hosts with their own network (as root), PID and mount
//! namespaces, labelled like a mixed fleet, driven by the `troop` CLI from the lab's
//! network. Every effect is measured from outside the host.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use troop_tests::lab::{Lab, cpu_seconds, resident_bytes, used_percent, wait_for};

const ALL_BUT_STOP: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\"]";
const WITH_STOP: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\", \"stop-host\"]";
const SERVICES: usize = 2;

/// id, role, cloud, region: a mixed fleet.
const FLEET: [(&str, &str, &str, &str); 5] = [
    ("web-1", "web", "aws", "eu-1"),
    ("web-2", "web", "gcp", "eu-2"),
    ("web-3", "web", "metal", "eu-1"),
    ("web-4", "web", "aws", "eu-2"),
    ("db-1", "db", "metal", "eu-1"),
];

fn sleeps() -> Vec<Vec<OsString>> {
    vec![vec!["sleep".into(), "600".into()]; SERVICES]
}

/// The five-host fleet; db-1 alone allows stop-host.
fn fleet(scenario: &str) -> Option<Lab> {
    let mut lab = Lab::new(scenario)?;
    for (id, role, cloud, region) in FLEET {
        let policy = if id == "db-1" {
            WITH_STOP
        } else {
            ALL_BUT_STOP
        };
        let labels = [("role", role), ("cloud", cloud), ("region", region)];
        lab.add_host(id, &labels, policy, sleeps());
        assert!(
            lab.hosts[id]
                .host
                .wait_for("sleep", SERVICES, Duration::from_secs(10))
        );
    }
    Some(lab)
}

fn sleep_counts(lab: &Lab) -> BTreeMap<String, usize> {
    lab.hosts
        .iter()
        .map(|(id, host)| (id.clone(), host.host.pids_named("sleep").len()))
        .collect()
}

fn no_active_faults(lab: &Lab, id: &str) -> bool {
    lab.status(id)["active_faults"]
        .as_array()
        .is_some_and(|faults| faults.is_empty())
}

#[test]
fn kill_by_label_hits_exactly_the_picked_hosts_and_a_seed_repeats_the_pick() {
    let Some(lab) = fleet("kill by label") else {
        return;
    };
    let selector = "role=web,cloud!=metal";
    let pick = ["--select", selector, "--count", "2", "--seed", "9"];
    let mut dry = vec![
        "attack",
        "kill",
        "--name",
        "sleep",
        "--all-matches",
        "--dry-run",
    ];
    dry.extend(pick);
    let planned: Vec<String> = lab.troop_json(&dry).1["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["agent_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned.len(), 2);
    assert!(
        planned
            .iter()
            .all(|id| ["web-1", "web-2", "web-4"].contains(&id.as_str()))
    );

    let mut attack = vec!["attack", "kill", "--name", "sleep", "--all-matches"];
    attack.extend(pick);
    let (code, report) = lab.troop_json(&attack);
    assert_eq!(code, Some(0), "{report}");
    let hit: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hit, planned, "the same seed picks the same hosts");
    for id in &hit {
        assert!(
            lab.hosts[id]
                .host
                .wait_for("sleep", 0, Duration::from_secs(5)),
            "{id}"
        );
    }
    for (id, count) in sleep_counts(&lab) {
        let expected = if hit.contains(&id) { 0 } else { SERVICES };
        assert_eq!(count, expected, "{id}");
    }
}

#[test]
fn cpu_memory_and_disk_on_chosen_hosts_measured_from_outside_and_reverted_on_time() {
    let Some(lab) = fleet("cpu, memory, disk") else {
        return;
    };
    let disk = lab.hosts["web-3"].disk.display().to_string();
    for args in [
        vec![
            "attack",
            "cpu",
            "--select",
            "cloud=aws,region=eu-1",
            "--load",
            "50",
            "--cores",
            "1",
            "--for",
            "3s",
        ],
        vec![
            "attack",
            "memory",
            "--select",
            "cloud=gcp",
            "--size",
            "64MiB",
            "--for",
            "3s",
        ],
        vec![
            "attack",
            "disk",
            "--select",
            "role=web,cloud=metal",
            "--path",
            &disk,
            "--fill",
            "60",
            "--for",
            "3s",
        ],
    ] {
        let (code, report) = lab.troop_json(&args);
        assert_eq!(code, Some(0), "{args:?}: {report}");
        assert_eq!(report["results"].as_array().unwrap().len(), 1, "{report}");
    }
    // cpu on web-1: the agent process's CPU time, read from this machine's /proc.
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    let (cpu, wall) = (cpu_seconds(agent), Instant::now());
    std::thread::sleep(Duration::from_millis(1000));
    let load = (cpu_seconds(agent) - cpu) / wall.elapsed().as_secs_f64() * 100.0;
    assert!((25.0..=75.0).contains(&load), "web-1 burned {load:.1}%");
    // memory on web-2: the helper's resident set.
    let web2 = &lab.hosts["web-2"];
    let holder = web2
        .host
        .processes()
        .into_iter()
        .find(|p| p.cmdline.iter().any(|a| a == "__hold-memory"))
        .expect("holder on web-2");
    assert!(resident_bytes(holder.pid).unwrap() >= 64 << 20);
    // disk on web-3: statvfs of its own tmpfs.
    let filled = used_percent(&lab, "web-3");
    assert!(
        (59.0..=61.0).contains(&filled),
        "web-3 filled to {filled:.1}%"
    );
    // Nothing on the others.
    for id in ["web-2", "web-4", "db-1"] {
        let agent = lab.hosts[id].agent_pid().unwrap();
        let cpu = cpu_seconds(agent);
        std::thread::sleep(Duration::from_millis(200));
        assert!(cpu_seconds(agent) - cpu < 0.05, "{id} burns CPU");
        assert!(used_percent(&lab, id) < 1.0, "{id} disk");
    }
    // All reverted at their deadlines.
    assert!(wait_for(Duration::from_secs(10), || used_percent(
        &lab, "web-3"
    ) < 1.0));
    assert!(wait_for(Duration::from_secs(10), || resident_bytes(
        holder.pid
    )
    .is_none()));
    assert!(wait_for(Duration::from_secs(10), || no_active_faults(
        &lab, "web-1"
    )));
}

#[test]
fn halt_reverts_faults_on_every_host() {
    let Some(lab) = fleet("halt everywhere") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    for args in [
        vec![
            "attack", "cpu", "--select", "", "--load", "30", "--cores", "1", "--for", "5m",
        ],
        vec![
            "attack", "disk", "--select", "", "--path", &disk, "--size", "16MiB", "--for", "5m",
        ],
    ] {
        let (code, report) = lab.troop_json(&args);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["results"].as_array().unwrap().len(), FLEET.len());
    }
    assert!(lab.hosts.keys().all(|id| used_percent(&lab, id) > 20.0));
    let started = Instant::now();
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(0), "{report}");
    let all_gone = wait_for(Duration::from_secs(5), || {
        lab.hosts.keys().all(|id| used_percent(&lab, id) < 1.0)
    });
    let took = started.elapsed();
    assert!(all_gone, "fills left after halt");
    eprintln!(
        "halt on {} hosts: every fault reverted {took:?} after `troop halt` started",
        FLEET.len()
    );
    for (id, host) in &lab.hosts {
        let agent = host.agent_pid().unwrap();
        let cpu = cpu_seconds(agent);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            cpu_seconds(agent) - cpu < 0.05,
            "{id} still burns CPU after halt"
        );
        assert!(no_active_faults(&lab, id), "{id}");
    }
}

#[test]
fn stop_host_powers_off_exactly_one_host_where_policy_allows_it() {
    let Some(mut lab) = fleet("stop-host") else {
        return;
    };
    // Every host's PID namespace must differ from ours before anything may stop one.
    let inits: BTreeMap<String, i32> = lab
        .hosts
        .iter()
        .map(|(id, host)| (id.clone(), host.checked_init()))
        .collect();
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    };

    // Web hosts' policy does not allow it: refused, and they stay up.
    let (code, report) = lab.troop_json(&[
        "attack",
        "stop-host",
        "--select",
        "role=web",
        "--mode",
        "poweroff",
    ]);
    assert_eq!(code, Some(1), "{report}");
    for result in report["results"].as_array().unwrap() {
        assert_eq!(result["code"], "PERMISSION_DENIED", "{result}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        inits.iter().all(|(_, pid)| alive(*pid)),
        "a refused stop-host stopped a host"
    );

    let (code, report) = lab.troop_json(&[
        "attack",
        "stop-host",
        "--select",
        "role=db",
        "--count",
        "1",
        "--mode",
        "poweroff",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let command_id = report["results"][0]["command_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wait_for(Duration::from_secs(10), || !alive(inits["db-1"])),
        "db-1 still up"
    );
    let (code, listing) = lab.troop_json(&["agents"]);
    assert_eq!(
        code,
        Some(1),
        "an unreachable agent makes `troop agents` exit 1"
    );
    for agent in listing["agents"].as_array().unwrap() {
        let expected = agent["agent"] != "db-1";
        assert_eq!(agent["reachable"], expected, "{agent}");
    }
    for (id, pid) in &inits {
        assert_eq!(alive(*pid), id != "db-1", "{id}");
    }

    lab.power_on("db-1");
    let stop = &lab.status("db-1")["last_stop"];
    assert_eq!(stop["command_id"], command_id.as_str(), "{stop}");
    assert_eq!(stop["mode"], "poweroff");
}

#[test]
fn a_partitioned_host_reverts_its_leased_fault_and_rejoins_clean() {
    let Some(mut lab) = Lab::networked("partition") else {
        return;
    };
    lab.add_host("web-1", &[("role", "web")], ALL_BUT_STOP, vec![]);
    lab.add_host("web-2", &[("role", "web")], ALL_BUT_STOP, vec![]);
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let mut attached = lab.spawn_troop(&[
        "attack", "disk", "--select", "", "--path", &disk, "--fill", "30", "--for", "5m",
        "--lease", "3s",
    ]);
    assert!(wait_for(Duration::from_secs(10), || {
        used_percent(&lab, "web-1") > 25.0 && used_percent(&lab, "web-2") > 25.0
    }));
    lab.set_connected("web-1", false);
    let cut = Instant::now();
    // web-1 hears no renewals and reverts within its lease; web-2 keeps being renewed.
    assert!(wait_for(Duration::from_secs(10), || used_percent(
        &lab, "web-1"
    ) < 1.0));
    let reverted = cut.elapsed();
    assert!(
        reverted < Duration::from_secs(5),
        "reverted {reverted:?} after the cut"
    );
    assert!(
        used_percent(&lab, "web-2") > 25.0,
        "the connected host lost its fault"
    );
    let (_, listing) = lab.troop_json(&["agents"]);
    let web1 = listing["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "web-1")
        .unwrap()
        .clone();
    assert_eq!(web1["reachable"], false, "{web1}");

    lab.set_connected("web-1", true);
    lab.wait_reachable("web-1");
    assert!(no_active_faults(&lab, "web-1"));
    assert!(used_percent(&lab, "web-1") < 1.0);
    attached.kill().unwrap();
    attached.wait().unwrap();
}

#[test]
fn faults_end_at_their_deadline_when_the_coordinator_is_killed() {
    let Some(lab) = fleet("coordinator killed") else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    // Attached with a lease far longer than the faults: only the deadline can end them.
    let mut attached = lab.spawn_troop(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "16MiB", "--for",
        "3s", "--lease", "60s",
    ]);
    let webs = ["web-1", "web-2", "web-3", "web-4"];
    assert!(wait_for(Duration::from_secs(10), || webs
        .iter()
        .all(|id| used_percent(&lab, id) > 20.0)));
    kill(Pid::from_raw(attached.id() as i32), Signal::SIGKILL).unwrap();
    attached.wait().unwrap();
    let killed = Instant::now();
    assert!(wait_for(Duration::from_secs(10), || webs
        .iter()
        .all(|id| used_percent(&lab, id) < 1.0)));
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "faults outlived their 3 s deadline"
    );
    assert!(webs.iter().all(|id| no_active_faults(&lab, id)));
}

/// A test killed outright drops no guard: the lab's serve must then end by itself, with the
/// thread that started it, as the lab's hosts do.
#[test]
fn the_labs_serve_ends_with_the_thread_that_started_it() {
    let Some(mut lab) = Lab::new("serve ends with its thread") else {
        return;
    };
    lab.add_operator("alice", Some("viewer"));
    // `Some(true)` once it has exited and is not yet reaped.
    let exited = |pid: i32| troop_common::observe::read_process(pid).map(|p| p.zombie);
    let pid = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let serve = lab.start_serve();
                let pid = serve.0.id() as i32;
                // Running, and its guard forgotten: only the thread's end can stop it.
                assert!(
                    wait_for(Duration::from_secs(10), || lab
                        .serve_log()
                        .contains("serving agents' streams")),
                    "serve did not start: {}",
                    lab.serve_log()
                );
                assert_eq!(
                    exited(pid),
                    Some(false),
                    "serve exited: {}",
                    lab.serve_log()
                );
                std::mem::forget(serve);
                pid
            })
            .join()
            .unwrap()
    });
    let ended = wait_for(Duration::from_secs(10), || exited(pid) == Some(true));
    // Reaped either way; killed if it outlived the thread, so the test leaves nothing.
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    assert!(ended, "serve outlived the thread that started it");
}
