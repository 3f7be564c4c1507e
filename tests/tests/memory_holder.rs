//! The memory holder a memory fault starts: a minimal process (one thread, no
//! capabilities, no new privileges) that holds its memory resident and dies with the
//! agent that started it, also when that agent died before it could arm itself.

use std::process::{Command, Stdio};
use std::time::Duration;

use troop_agent::host::memory::{HOLD_COMMAND, Holder};
use troop_tests::binary;
use troop_tests::lab::wait_for;

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
}

fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.contains(") Z"))
}

#[test]
fn a_holder_is_one_thread_without_capabilities_holding_its_memory() {
    let bytes = 16 << 20;
    let holder = Holder::start(
        &binary("troop-agent"),
        "t-1",
        bytes,
        Duration::from_secs(10),
    )
    .unwrap();
    let pid = holder.pid();
    assert_eq!(
        status_field(pid, "Threads").as_deref(),
        Some("1"),
        "no async runtime in the holder"
    );
    assert_eq!(
        status_field(pid, "CapEff").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        status_field(pid, "CapPrm").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(status_field(pid, "NoNewPrivs").as_deref(), Some("1"));
    let resident = holder.resident_bytes().unwrap();
    assert!(
        resident >= bytes,
        "only {resident} of {bytes} bytes resident"
    );
    drop(holder);
    assert!(is_gone(pid));
}

#[test]
fn a_holder_whose_agent_is_already_gone_does_not_hold() {
    // The parent it is told about is not its parent: as if the agent died before the
    // holder armed its parent-death signal (its parent is then someone else).
    let output = Command::new(binary("troop-agent"))
        .args([
            HOLD_COMMAND,
            "--fault",
            "t-2",
            "--bytes",
            "1048576",
            "--parent",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "it said ready: {output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is gone"),
        "{output:?}"
    );
}

#[test]
fn a_holder_dies_with_its_agent() {
    // A stand-in agent: a shell that starts the holder and waits.
    let mut agent = Command::new("sh")
        .args([
            "-c",
            "\"$0\" __hold-memory --fault t-3 --bytes 1048576 --parent $$ & wait",
        ])
        .arg(binary("troop-agent"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let shell = agent.id() as i32;
    let mut holder = None;
    assert!(wait_for(Duration::from_secs(10), || {
        use troop_agent::host::process::{LinuxProcessTable, ProcessTable};
        holder = LinuxProcessTable
            .list()
            .unwrap()
            .into_iter()
            .find(|p| p.ppid == shell && p.cmdline.iter().any(|a| a == HOLD_COMMAND))
            .map(|p| p.pid as u32);
        holder.is_some_and(|pid| status_field(pid, "VmRSS").is_some())
    }));
    let holder = holder.unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || is_gone(holder)),
        "the holder outlived its agent"
    );
}
