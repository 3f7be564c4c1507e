//! A validly signed but careless or hostile coordinator: whatever it sends, every fault
//! ends, halt wins, and the host's policy caps hold in total. Effects are measured from
//! outside each host: its PID namespace, statvfs of its tmpfs, its processes' memory.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use troop_proto::{pb, sign_command};
use troop_tests::AgentConfigs;
use troop_tests::lab::{Lab, resident_bytes, used_percent, wait_for};
use troop_tests::{Credentials, command, connect};

const WITH_STOP: &str = "allow = [\"kill\", \"cpu\", \"memory\", \"disk\", \"stop-host\"]";

fn active_faults(lab: &Lab, id: &str) -> Vec<serde_json::Value> {
    lab.status(id)["active_faults"].as_array().unwrap().clone()
}

fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z"))
}

/// The agent that `Lab::restart_agent` started (the child of its nsenter).
fn restarted_agent_pid(nsenter: &std::process::Child) -> i32 {
    use troop_agent::host::process::{LinuxProcessTable, ProcessTable};
    LinuxProcessTable
        .list()
        .unwrap()
        .into_iter()
        .find(|p| p.ppid == nsenter.id() as i32 && p.name == "troop-agent")
        .expect("the restarted agent")
        .pid
}

fn stop_host_in(lab: &Lab, delay: &str) -> String {
    let (code, report) = lab.troop_json(&[
        "attack",
        "stop-host",
        "--select",
        "role=db",
        "--mode",
        "poweroff",
        "--delay",
        delay,
    ]);
    assert_eq!(code, Some(0), "{report}");
    report["results"][0]["command_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A stop-host waiting out its delay is an ordinary fault: listed, and cancelled by halt,
/// by SIGTERM and by an agent restart, after which it is not reported as a stop.
#[test]
fn a_stop_host_in_its_delay_is_cancelled_by_halt_sigterm_and_a_restart() {
    let Some(mut lab) = Lab::new("stop-host cancelled in its delay") else {
        return;
    };
    lab.add_host("db-1", &[("role", "db")], WITH_STOP, vec![]);
    let init = lab.hosts["db-1"].checked_init();

    // Halt in the delay.
    let id = stop_host_in(&lab, "3s");
    let faults = active_faults(&lab, "db-1");
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0]["kind"], "stop-host");
    assert_eq!(faults[0]["fault_id"], id.as_str());
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["results"][0]["receipt"]["aborted_fault_ids"][0],
        id.as_str()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        is_running(init),
        "halt in the delay did not stop the stop: the host is gone"
    );
    assert!(active_faults(&lab, "db-1").is_empty());

    // SIGTERM in the delay: the agent reverts (cancels) before it exits.
    stop_host_in(&lab, "3s");
    let agent = lab.hosts["db-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    assert!(wait_for(Duration::from_secs(10), || lab.hosts["db-1"]
        .agent_pid()
        .is_none()));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        is_running(init),
        "SIGTERM in the delay did not cancel the stop"
    );
    let mut agent = lab.restart_agent("db-1");
    assert!(
        lab.status("db-1")["last_stop"].is_null(),
        "{}",
        lab.status("db-1")
    );

    // SIGKILL in the delay: the stop dies with the agent, and its restart reports nothing.
    stop_host_in(&lab, "3s");
    let pid = restarted_agent_pid(&agent);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let _ = agent.wait();
    std::thread::sleep(Duration::from_secs(4));
    assert!(is_running(init), "a killed agent's stop still happened");
    let mut agent = lab.restart_agent("db-1");
    let status = lab.status("db-1");
    assert!(
        status["last_stop"].is_null(),
        "a stop that never happened was reported: {status}"
    );
    assert!(
        status["active_faults"].as_array().unwrap().is_empty(),
        "{status}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Concurrent faults that each pass the cap alone must not pass it together.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_fills_and_memory_holds_stay_under_the_caps_together() {
    let policy = format!("{WITH_STOP}\nmax_disk_fill_percent = 60\nmax_memory_percent = 1");
    let Some(mut lab) = Lab::new("concurrent faults against the caps") else {
        return;
    };
    lab.add_host("web-1", &[("role", "web")], &policy, vec![]);
    lab.enter_network();
    let host = &lab.hosts["web-1"];
    let address = host.address.parse().unwrap();
    let client = connect(address, "web-1", Credentials::Coordinator(&lab.pki))
        .await
        .unwrap();
    let send_all = |faults: Vec<pb::start_fault::Fault>| {
        let key = lab.pki.signing_key();
        let tasks: Vec<_> = faults
            .into_iter()
            .map(|fault| {
                let start = pb::command::Action::Start(pb::StartFault {
                    duration_ms: 60_000,
                    lease_ms: 0,
                    fault: Some(fault),
                });
                let signed = sign_command(&command("web-1", start), &key);
                let mut client = client.clone();
                tokio::spawn(async move { client.execute(signed).await })
            })
            .collect();
        async move {
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.unwrap());
            }
            outcomes
        }
    };

    // Four fills of 40 % each, at once, under a 60 % cap: exactly one lands.
    let fill = pb::start_fault::Fault::Disk(pb::Disk {
        path: host.disk.display().to_string(),
        amount: Some(pb::disk::Amount::Bytes(lab_disk_bytes() * 40 / 100)),
    });
    let outcomes = send_all(vec![fill; 4]).await;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("max_disk_fill_percent"),
            "{refused:?}"
        );
    }
    let used = used_percent(&lab, "web-1");
    assert!(
        used <= 60.0,
        "the host's disk is {used:.1}% full past a 60% cap"
    );

    // Three holds of 60 % of the memory cap each, at once: exactly one lands.
    let cap = memory_total_bytes() / 100;
    let hold = pb::start_fault::Fault::Memory(pb::Memory {
        amount: Some(pb::memory::Amount::Bytes(cap * 60 / 100)),
    });
    let outcomes = send_all(vec![hold; 3]).await;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("max_memory_percent"),
            "{refused:?}"
        );
    }
    let held: u64 = host
        .host
        .processes()
        .iter()
        .filter(|p| p.cmdline.iter().any(|a| a == "__hold-memory"))
        .filter_map(|p| resident_bytes(p.pid))
        .sum();
    assert!(
        held <= cap,
        "holders are resident with {held} bytes past the cap of {cap}"
    );
    assert!(
        held >= cap / 2,
        "the accepted hold is not resident: {held} bytes"
    );
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(0), "{report}");
}

fn lab_disk_bytes() -> u64 {
    troop_tests::lab::DISK_BYTES
}

fn memory_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A fill whose removal fails (its filesystem turned read-only) stays journaled and
/// listed, and is removed by a retry once removal works again.
#[test]
fn a_revert_that_fails_is_kept_and_retried_until_it_succeeds() {
    let Some(mut lab) = Lab::new("failed revert retried") else {
        return;
    };
    lab.add_host("web-1", &[("role", "web")], WITH_STOP, vec![]);
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "16MiB", "--for", "1s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let remount = |mode: &str| {
        let output = lab.run_inside("web-1", &["mount", "-o", &format!("remount,{mode}"), &disk]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    remount("ro");
    std::thread::sleep(Duration::from_secs(2));
    let faults = active_faults(&lab, "web-1");
    assert_eq!(
        faults.len(),
        1,
        "the fault was forgotten although its fill is still there"
    );
    assert!(
        faults[0]["effect"]
            .as_str()
            .unwrap()
            .contains("revert failed"),
        "{faults:?}"
    );
    assert!(used_percent(&lab, "web-1") > 20.0);
    assert!(journaled_fill(&lab), "the fill is not in the fault journal");
    // Halt says what it could not do, instead of claiming success.
    let (code, report) = lab.troop_json(&["halt"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("could not revert"),
        "{report}"
    );

    remount("rw");
    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            < 1.0),
        "the retry never removed the fill"
    );
    assert!(wait_for(Duration::from_secs(5), || active_faults(
        &lab, "web-1"
    )
    .is_empty()));
    assert!(!journaled_fill(&lab), "the removed fill is still journaled");
}

/// Whether web-1's fault journal holds a fill to remove.
fn journaled_fill(lab: &Lab) -> bool {
    use troop_agent::faults::journal::{FaultJournal, Undo};
    FaultJournal::read(&lab.dir().join("state/web-1"))
        .unwrap()
        .iter()
        .any(|record| matches!(&record.undo, Undo::RemoveFile { path } if path.to_string_lossy().contains(".troop-fill-")))
}

/// Hundreds of connections that never finish a TLS handshake do not lock the
/// coordinator out: a fresh `troop halt` still answers within a second.
#[tokio::test]
async fn halt_gets_through_a_flood_of_half_open_connections() {
    use tokio::io::AsyncWriteExt;
    let pki = troop_tests::TestPki::new(&["web-1"]);
    let agent = troop_tests::RunningAgent::start(pki.agent_config("web-1", "")).await;
    let address = agent.address.to_string();
    let fleet =
        troop_lab::files::coordinator_file([("web-1", address.as_str(), &Default::default())]);
    troop_lab::files::write(&pki.dir.path().join("troop.toml"), &fleet).unwrap();
    let halt = || {
        let dir = pki.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let output = std::process::Command::new(troop_tests::binary("troop"))
                .args(["halt", "--output", "json"])
                .current_dir(dir)
                .output()
                .unwrap();
            (started.elapsed(), output)
        })
    };
    let (baseline, output) = halt().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // 300 silent connections and 100 that stop in the middle of a ClientHello.
    let mut flood = Vec::new();
    for i in 0..400 {
        let mut stream = tokio::net::TcpStream::connect(agent.address).await.unwrap();
        if i % 4 == 0 {
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        flood.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (took, output) = halt().await.unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("troop halt: {baseline:?} idle, {took:?} under a flood of 400 half-open connections");
    assert!(
        took < Duration::from_secs(1),
        "halt took {took:?} under the flood"
    );
    drop(flood);
    agent.stop().await;
}
