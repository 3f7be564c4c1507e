//! Kills on a host of 2,000 processes: a release agent as pid 1 of its own PID namespace
//! (with its own /proc), 2,000 `sleep`s and one victim beside it. The victim is sent
//! SIGCONT, so it survives every round and each round finds the same host.

use std::path::Path;
use std::time::{Duration, Instant};

use troop_proto::{pb, sign_command};
use troop_tests::*;

use super::{AgentProcess, micros, percentile};

const POPULATION: usize = 2_000;
const ROUNDS: usize = 300;
const VICTIM: &str = "bench-victim";
const SIGCONT: i32 = nix::sys::signal::Signal::SIGCONT as i32;

pub async fn bench() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let victim_exe = dir.path().join(VICTIM);
    std::fs::copy("/bin/sleep", &victim_exe).unwrap();
    let victim_pid_file = dir.path().join("victim.pid");
    let state = dir.path().join("state");
    let script = format!(
        "for i in $(seq {POPULATION}); do sleep 3600 & done; \"$1\" 3600 & echo $! > \"$2\"; shift 2; exec \"$@\""
    );
    let mut agent = AgentProcess::start_wrapped(&state, |agent| {
        let mut command = std::process::Command::new("unshare");
        command
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
            ])
            .arg(&script)
            .arg("sh")
            .arg(&victim_exe)
            .arg(&victim_pid_file)
            .arg(agent);
        command
    })
    .await;
    let victim: i32 = std::fs::read_to_string(&victim_pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let agent_pid = namespace_init(agent.child.id());
    let processes = std::fs::read_dir(format!("/proc/{agent_pid}/root/proc"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
        })
        .count();
    println!("kill on a host of {processes} processes (the agent's PID namespace):");
    use pb::process_match::By;
    for (label, action, must_succeed) in [
        (
            "abort-all (the round trip without a kill)",
            pb::command::Action::AbortAll(pb::AbortAll {}),
            true,
        ),
        (
            "kill by name, one match",
            kill(By::Name(VICTIM.into()), SIGCONT, false),
            true,
        ),
        (
            "kill by name, no match",
            kill(By::Name("no-such-process".into()), SIGCONT, false),
            false,
        ),
        (
            "kill by exe, one match",
            kill(By::Exe(victim_exe.display().to_string()), SIGCONT, false),
            true,
        ),
        ("kill by pid", kill(By::Pid(victim), SIGCONT, false), true),
        (
            "kill by cmdline pattern, one match",
            kill(
                By::CmdlinePattern(format!("{VICTIM} 3600$")),
                SIGCONT,
                false,
            ),
            true,
        ),
    ] {
        let times = round_trips(&mut agent, &action, must_succeed).await;
        println!(
            "  {label}: p50 {:.2} ms, p99 {:.2} ms ({ROUNDS} round trips)",
            micros(percentile(&times, 0.50)) / 1e3,
            micros(percentile(&times, 0.99)) / 1e3,
        );
    }
    repeating_kill_cost(&mut agent, agent_pid).await;
}

async fn round_trips(
    agent: &mut AgentProcess,
    action: &pb::command::Action,
    must_succeed: bool,
) -> Vec<Duration> {
    let key = agent.pki.signing_key();
    let mut times = Vec::with_capacity(ROUNDS);
    for index in 0..ROUNDS + 20 {
        let signed = sign_command(&command("web-1", action.clone()), &key);
        let start = Instant::now();
        let result = agent.client.execute(signed).await;
        let elapsed = start.elapsed();
        assert!(result.is_ok() || !must_succeed, "{result:?}");
        if index >= 20 {
            times.push(elapsed);
        }
    }
    times.sort();
    times
}

/// The agent's CPU time over 5 s idle, then over 5 s of a kill repeating every 100 ms.
async fn repeating_kill_cost(agent: &mut AgentProcess, agent_pid: i32) {
    let window = Duration::from_secs(5);
    let idle = cpu_over(agent_pid, window).await;
    let key = agent.pki.signing_key();
    let start = pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms: 8_000,
        fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
            target: Some(pb::ProcessMatch {
                by: Some(pb::process_match::By::Name(VICTIM.into())),
            }),
            signal: SIGCONT,
            all_matches: false,
            repeat_every_ms: 100,
        })),
    });
    agent
        .client
        .execute(sign_command(&command("web-1", start), &key))
        .await
        .unwrap();
    let repeating = cpu_over(agent_pid, window).await;
    let ticks = window.as_millis() as f64 / 100.0;
    println!(
        "  repeating kill by name every 100 ms: agent CPU {:.1} ms per kill, {:.1} % of a core (idle: {:.1} % of a core)",
        (repeating - idle) * 1e3 / ticks,
        repeating * 100.0 / window.as_secs_f64(),
        idle * 100.0 / window.as_secs_f64(),
    );
    agent
        .client
        .execute(sign_command(
            &command("web-1", pb::command::Action::AbortAll(pb::AbortAll {})),
            &key,
        ))
        .await
        .unwrap();
}

async fn cpu_over(pid: i32, window: Duration) -> f64 {
    let before = troop_tests::lab::cpu_seconds(pid);
    tokio::time::sleep(window).await;
    troop_tests::lab::cpu_seconds(pid) - before
}

/// The pid (as this namespace sees it) of the first process `unshare --fork` started.
fn namespace_init(unshare: u32) -> i32 {
    let children = Path::new("/proc")
        .join(unshare.to_string())
        .join("task")
        .join(unshare.to_string())
        .join("children");
    std::fs::read_to_string(children)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
