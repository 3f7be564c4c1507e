//! Every fault on a real host, measured from outside it: the disk from statvfs of the
//! host's own tmpfs, CPU time and resident memory from /proc, killed services from the
//! host's process tree, and stop-host from the host's PID namespace being gone. Each is
//! reverted on time: at its deadline, on halt, on abort by Ctrl-C, on SIGTERM, after
//! SIGKILL at the next start, and when its lease is no longer renewed.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use troop_proto::{pb, sign_command};
use troop_tests::lab::{Lab, burner_threads, cpu_seconds, resident_bytes, used_percent, wait_for};
use troop_tests::{Credentials, command, connect};

const ALL_BUT_STOP: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\"]";

fn lab_with(id: &str, policy: &str, services: Vec<Vec<OsString>>) -> Option<Lab> {
    let mut lab = Lab::new(id)?;
    lab.add_host(id, &[("role", "web")], policy, services);
    Some(lab)
}

#[test]
fn disk_fill_reaches_its_percent_and_is_removed_at_the_deadline() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    assert!(used_percent(&lab, "web-1") < 1.0);
    let started = Instant::now();
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "50", "--for", "2s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let filled = used_percent(&lab, "web-1");
    assert!(
        (49.0..=51.0).contains(&filled),
        "filled to {filled:.1}%: {report}"
    );
    assert!(
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            < 1.0),
        "fill not removed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "removed before its deadline: {took:?}"
    );
    assert!(
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn disk_fill_past_the_policy_cap_is_refused_and_nothing_is_written() {
    let policy = format!("{ALL_BUT_STOP}\nmax_disk_fill_percent = 60");
    let Some(lab) = lab_with("web-1", &policy, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "70", "--for", "1m",
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["results"][0]["code"], "PERMISSION_DENIED",
        "{report}"
    );
    assert!(
        report["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("max_disk_fill_percent")
    );
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", "/etc", "--size", "1MiB", "--for", "1m",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        report["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("policy.disk_paths"),
        "{report}"
    );
    assert!(used_percent(&lab, "web-1") < 1.0);
}

#[test]
fn halt_reverts_every_fault_at_once() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let fill = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "32MiB", "--for", "5m",
    ]);
    assert_eq!(fill.0, Some(0), "{}", fill.1);
    let burn = lab.troop_json(&[
        "attack", "cpu", "--select", "role=web", "--load", "30", "--cores", "1", "--for", "5m",
    ]);
    assert_eq!(burn.0, Some(0), "{}", burn.1);
    assert_eq!(
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let halted = Instant::now();
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["results"][0]["receipt"]["aborted_fault_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        used_percent(&lab, "web-1") < 1.0,
        "fill still there after halt answered"
    );
    assert!(
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    eprintln!("halt to every fault reverted: {:?}", halted.elapsed());
}

#[test]
fn cpu_load_shows_in_the_agents_cpu_time_and_stops_at_the_deadline() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    let (code, report) = lab.troop_json(&[
        "attack", "cpu", "--select", "role=web", "--load", "50", "--cores", "1", "--for", "3s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, wall0) = (cpu_seconds(agent), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let load = (cpu_seconds(agent) - cpu0) / wall0.elapsed().as_secs_f64() * 100.0;
    // Loose bounds for a shared CI machine; BENCHMARKS.md has the precise figures.
    assert!(
        (25.0..=75.0).contains(&load),
        "agent burned {load:.1}% of a core for a 50% fault"
    );
    let effect = lab.status("web-1")["active_faults"][0]["effect"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(effect.contains("target 50%"), "{effect}");
    assert!(wait_for(Duration::from_secs(10), || {
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .is_empty()
    }));
    let idle0 = cpu_seconds(agent);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_seconds(agent) - idle0;
    assert!(
        idle < 0.1,
        "agent still burning after the deadline: {idle:.2}s of CPU in 1s"
    );
}

#[test]
fn memory_is_held_resident_by_a_helper_and_freed_at_the_deadline() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let (code, report) = lab.troop_json(&[
        "attack", "memory", "--select", "role=web", "--size", "96MiB", "--for", "2s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let host = &lab.hosts["web-1"];
    let agent = host.agent_pid().unwrap();
    let holder = host
        .host
        .processes()
        .into_iter()
        .find(|p| p.ppid == agent && p.cmdline.iter().any(|a| a == "__hold-memory"))
        .expect("a holder process under the agent");
    let resident = resident_bytes(holder.pid).unwrap();
    assert!(
        resident >= 96 << 20,
        "holder has only {resident} bytes resident"
    );
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", holder.pid)).unwrap();
    assert_eq!(
        adj.trim(),
        "1000",
        "the holder, not the agent, goes first under pressure"
    );
    assert!(
        resident_bytes(agent).unwrap() < 64 << 20,
        "the agent itself stays small"
    );
    assert!(
        wait_for(Duration::from_secs(10), || resident_bytes(holder.pid)
            .is_none()),
        "holder outlived its deadline"
    );
}

#[test]
fn a_repeating_kill_keeps_a_restarting_service_down_until_its_deadline() {
    let restarting: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        "while :; do sleep 600; done".into(),
    ];
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![restarting]) else {
        return;
    };
    let host = &lab.hosts["web-1"];
    assert!(host.host.wait_for("sleep", 1, Duration::from_secs(5)));
    let (code, report) = lab.troop_json(&[
        "attack", "kill", "--select", "role=web", "--name", "sleep", "--repeat", "200ms", "--for",
        "2s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    std::thread::sleep(Duration::from_millis(1000));
    let effect = lab.status("web-1")["active_faults"][0]["effect"]
        .as_str()
        .unwrap()
        .to_string();
    let kills: usize = effect.split_whitespace().next().unwrap().parse().unwrap();
    assert!(kills >= 3, "only {kills} kills in a second: {effect}");
    assert!(wait_for(Duration::from_secs(10), || {
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .is_empty()
    }));
    // After the deadline the service comes back and stays.
    assert!(host.host.wait_for("sleep", 1, Duration::from_secs(5)));
    let survivor = host.host.pids_named("sleep");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        host.host.pids_named("sleep"),
        survivor,
        "still killing after the deadline"
    );
}

#[test]
fn sigterm_reverts_before_the_agent_exits() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "40", "--for", "5m",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || lab.hosts["web-1"]
            .agent_pid()
            .is_none()),
        "agent did not exit"
    );
    assert!(
        used_percent(&lab, "web-1") < 1.0,
        "SIGTERM left the fill behind"
    );
}

#[tokio::test]
async fn what_a_killed_agent_leaves_is_undone_at_its_next_start_and_never_rerun() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    // This test's single thread speaks gRPC to the host itself, from the lab's network.
    lab.enter_network();
    let host = &lab.hosts["web-1"];
    // The fill is sent as one signed command, so that exactly it can be replayed later.
    let address = host.address.parse().unwrap();
    let mut client = connect(address, "web-1", Credentials::Coordinator(&lab.pki))
        .await
        .unwrap();
    let fill = pb::command::Action::Start(pb::StartFault {
        duration_ms: 300_000,
        lease_ms: 0,
        fault: Some(pb::start_fault::Fault::Disk(pb::Disk {
            path: host.disk.display().to_string(),
            amount: Some(pb::disk::Amount::FillPercent(50)),
        })),
    });
    let signed = sign_command(&command("web-1", fill), &lab.pki.signing_key());
    let first = client.execute(signed.clone()).await.unwrap().into_inner();
    let (code, report) = lab.troop_json(&[
        "attack", "memory", "--select", "role=web", "--size", "32MiB", "--for", "5m",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let agent = host.agent_pid().unwrap();
    let holder = host
        .host
        .processes()
        .into_iter()
        .find(|p| p.ppid == agent && p.cmdline.iter().any(|a| a == "__hold-memory"))
        .expect("memory holder");

    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    assert!(wait_for(Duration::from_secs(10), || host
        .agent_pid()
        .is_none()));
    assert!(
        used_percent(&lab, "web-1") > 45.0,
        "the crash itself leaves the fill"
    );
    // The holder sees its agent gone and frees the memory by itself.
    assert!(
        wait_for(Duration::from_secs(5), || resident_bytes(holder.pid)
            .is_none()),
        "holder outlived the agent"
    );

    // The agent starts again inside the same host: same tmpfs, same state dir.
    let config = lab.dir().join("web-1.toml");
    let argv: Vec<OsString> = vec![
        troop_tests::binary("troop-agent").into(),
        "--config".into(),
        config.into(),
    ];
    let mut restarted = host.host.command_inside(&argv).unwrap().spawn().unwrap();
    lab.wait_reachable("web-1");
    assert!(
        wait_for(Duration::from_secs(5), || used_percent(&lab, "web-1") < 1.0),
        "leftover fill not removed"
    );
    assert!(
        lab.status("web-1")["active_faults"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The command it ran before the crash is remembered: its first receipt, no new fill.
    let mut client = connect(address, "web-1", Credentials::Coordinator(&lab.pki))
        .await
        .unwrap();
    let replay = client.execute(signed).await.unwrap().into_inner();
    assert_eq!(replay, first);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        used_percent(&lab, "web-1") < 1.0,
        "a replay filled the disk again"
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
}

#[test]
fn a_leased_fault_is_reverted_when_renewals_stop() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let mut attached = lab.spawn_troop(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "30", "--for", "5m",
        "--lease", "2s",
    ]);
    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            > 25.0),
        "fill never applied"
    );
    // Held past several lease lengths while the CLI renews.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        used_percent(&lab, "web-1") > 25.0,
        "lease lapsed while renewed"
    );
    let lease = lab.status("web-1")["active_faults"][0]["lease_expires_at_unix_ms"]
        .as_i64()
        .unwrap();
    assert!(lease > 0);
    // The coordinator dies: no more renewals.
    attached.kill().unwrap();
    attached.wait().unwrap();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            < 1.0),
        "fill outlived its lease"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "reverted only after {:?}",
        killed.elapsed()
    );
}

#[test]
fn stop_host_ends_only_that_hosts_namespace_and_is_reported_after_power_on() {
    let Some(mut lab) = Lab::new("stop-host") else {
        return;
    };
    lab.add_host(
        "db-1",
        &[("role", "db")],
        "allow = [\"kill\", \"stop-host\"]",
        vec![],
    );
    lab.add_host("web-1", &[("role", "web")], ALL_BUT_STOP, vec![]);
    // Safety: the host to stop must be in a PID namespace that is not ours.
    let init = lab.hosts["db-1"].checked_init();

    // Where policy does not allow it, stop-host is refused and the host stays up.
    let (code, report) = lab.troop_json(&[
        "attack",
        "stop-host",
        "--select",
        "role=web",
        "--mode",
        "poweroff",
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["results"][0]["code"], "PERMISSION_DENIED");

    let (code, report) = lab.troop_json(&[
        "attack",
        "stop-host",
        "--select",
        "role=db",
        "--mode",
        "poweroff",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let command_id = report["results"][0]["command_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::metadata(format!(
            "/proc/{init}"
        ))
        .is_err()
            || std::fs::read_to_string(format!("/proc/{init}/stat"))
                .is_ok_and(|s| s.contains(") Z"))),
        "the host's pid 1 is still running"
    );
    assert_eq!(lab.status("db-1")["reachable"], false);
    assert_eq!(
        lab.status("web-1")["reachable"],
        true,
        "the other host must keep running"
    );

    lab.power_on("db-1");
    let stop = &lab.status("db-1")["last_stop"];
    assert_eq!(
        stop["command_id"],
        command_id.as_str(),
        "{stop}\n{}",
        lab.log("db-1")
    );
    assert_eq!(stop["mode"], "poweroff");
}

#[test]
fn ctrl_c_on_an_attached_attack_aborts_its_faults() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let mut attached = lab
        .troop_command()
        .args([
            "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "30", "--for",
            "5m", "--lease", "30s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the CLI to say it is holding (it listens for Ctrl-C from then on).
    let mut stderr = std::io::BufReader::new(attached.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("Ctrl-C aborts") {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "the CLI ended early: {said}");
        said.push_str(&line);
    }
    assert!(used_percent(&lab, "web-1") > 25.0, "fill not applied");
    kill(Pid::from_raw(attached.id() as i32), Signal::SIGINT).unwrap();
    let aborted = Instant::now();
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    let status = attached.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    // Long before the 30 s lease could lapse: the CLI aborted the fault itself.
    assert!(
        used_percent(&lab, "web-1") < 1.0,
        "fill still there after Ctrl-C"
    );
    assert!(aborted.elapsed() < Duration::from_secs(5));
    assert!(said.contains("reverted fault"), "{said}");
}

/// The agent's writes to the disk under its state dir held to one byte a second, through
/// a blkio cgroup of its own: a write lands in the page cache at once, and an `fdatasync`
/// waits (a block is 4 KiB) until [`SlowDisk::release`], as on a disk that has stopped
/// answering. Undone on drop, and only the agent this test started is in it.
struct SlowDisk {
    cgroup: PathBuf,
    rule: PathBuf,
    device: String,
}

impl SlowDisk {
    const HIERARCHY: &str = "/sys/fs/cgroup/blkio";

    fn hold(agent: i32, state_dir: &Path) -> Result<Self, String> {
        let root = Path::new(Self::HIERARCHY);
        if !root.join("cgroup.procs").exists() {
            return Err(format!(
                "no cgroup v1 blkio hierarchy at {}",
                root.display()
            ));
        }
        let dev = std::fs::metadata(state_dir)
            .map_err(|e| e.to_string())?
            .dev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        if major == 0 {
            return Err(format!("{} is on no block device", state_dir.display()));
        }
        let cgroup = root.join(format!("troop-test-slow-disk-{agent}"));
        std::fs::create_dir(&cgroup).map_err(|e| e.to_string())?;
        let slow = Self {
            rule: cgroup.join("blkio.throttle.write_bps_device"),
            cgroup,
            device: format!("{major}:{minor}"),
        };
        std::fs::write(&slow.rule, format!("{} 1", slow.device)).map_err(|e| e.to_string())?;
        std::fs::write(slow.cgroup.join("cgroup.procs"), agent.to_string())
            .map_err(|e| e.to_string())?;
        Ok(slow)
    }

    /// Lets the held writes through, at the device's own speed.
    fn release(&self) {
        let _ = std::fs::write(&self.rule, format!("{} 0", self.device));
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        self.release();
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(Path::new(Self::HIERARCHY).join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Starts a 5-minute cpu fault on web-1 and answers its agent's pid once the burner
/// threads run.
fn burning(lab: &Lab) -> i32 {
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    let burn = lab.troop_json(&[
        "attack", "cpu", "--select", "role=web", "--load", "30", "--cores", "1", "--for", "5m",
    ]);
    assert_eq!(burn.0, Some(0), "{}", burn.1);
    assert!(wait_for(Duration::from_secs(5), || burner_threads(agent) > 0));
    agent
}

#[test]
fn halt_ends_faults_while_another_commands_sync_hangs() {
    let victim: Vec<OsString> = vec!["sleep".into(), "600".into()];
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![victim]) else {
        return;
    };
    let host = &lab.hosts["web-1"];
    assert!(host.host.wait_for("sleep", 1, Duration::from_secs(5)));
    let agent = burning(&lab);
    let ledger = lab.dir().join("state/web-1/commands.jsonl");
    let lines = || std::fs::read_to_string(&ledger).unwrap().lines().count();
    let before = lines();
    let slow = match SlowDisk::hold(agent, ledger.parent().unwrap()) {
        Ok(slow) => slow,
        Err(reason) => return troop_tests::lab::skip("a halt during a hung sync", &reason),
    };
    std::thread::scope(|scope| {
        let kill = scope.spawn(|| {
            lab.troop_json(&["attack", "kill", "--select", "role=web", "--name", "sleep"])
        });
        // The kill's admission is written; its sync is held, and the kill waits for it.
        let written = wait_for(Duration::from_secs(10), || lines() > before);
        let halt = scope.spawn(|| lab.troop_json(&["halt"]));
        let burners_gone = wait_for(Duration::from_secs(10), || burner_threads(agent) == 0);
        let victim_alive = !host.host.pids_named("sleep").is_empty();
        // Before any assertion, so that a failing one does not leave both calls hanging.
        slow.release();
        assert!(written, "the kill's admission never reached the ledger");
        assert!(burners_gone, "the halt did not end the cpu fault");
        assert!(
            victim_alive,
            "the cpu fault ended only after the kill's sync: the halt waited for it"
        );
        let (code, report) = halt.join().unwrap();
        assert_eq!(code, Some(0), "{report}");
        let (code, report) = kill.join().unwrap();
        assert_eq!(code, Some(0), "{report}");
    });
    assert!(
        wait_for(Duration::from_secs(5), || host
            .host
            .pids_named("sleep")
            .is_empty()),
        "the kill did not run once its sync was through"
    );
}

#[test]
fn an_emergency_stop_ends_faults_while_the_state_dirs_disk_hangs() {
    let Some(lab) = lab_with("web-1", ALL_BUT_STOP, vec![]) else {
        return;
    };
    let agent = burning(&lab);
    let state_dir = lab.dir().join("state/web-1");
    let slow = match SlowDisk::hold(agent, &state_dir) {
        Ok(slow) => slow,
        Err(reason) => return troop_tests::lab::skip("an emergency stop on a hung disk", &reason),
    };
    std::thread::scope(|scope| {
        let stop = scope.spawn(|| lab.troop_json(&["emergency-stop", "--reason", "hung disk"]));
        // Its latch file cannot reach the disk yet; the fault ends all the same.
        let burners_gone = wait_for(Duration::from_secs(10), || burner_threads(agent) == 0);
        let answered = stop.is_finished();
        slow.release();
        assert!(burners_gone, "the cpu fault waited for the latch file");
        assert!(!answered, "the latch file's sync did not hang");
        let (code, report) = stop.join().unwrap();
        assert_eq!(code, Some(0), "{report}");
    });
    assert!(lab.status("web-1")["latch"].is_object(), "not latched");
    assert!(
        state_dir.join("latch.json").exists(),
        "the latch was not saved"
    );
}
