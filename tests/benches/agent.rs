//! Benchmarks behind BENCHMARKS.md. Run:
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p troop-tests --bench agent [-- PART...]
//! ```
//!
//! Parts (all when none is named):
//! - `verify`: signature verification of one signed kill command (what every `Execute`
//!   pays first).
//! - `execute`: `Execute` round trips over mutual TLS on one kept-open connection, with
//!   the agent's state dir (and so its ledger fsync) on this machine's disk and on tmpfs.
//! - `memory`: the resident memory of an idle release `troop-agent`, after start-up and
//!   after 10,000 commands, next to prometheus-node-exporter's when it is installed.
//! - `kill`: kills on a host of 2,000 processes (an agent in its own PID namespace, as
//!   root), and what a repeating kill costs between hits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use troop_proto::{TrustedKeys, pb, sign_command};
use troop_tests::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench_verify() {
    let pki = TestPki::new(&[]);
    let key = pki.signing_key();
    let trusted = TrustedKeys::new([key.verifying_key()]);
    let signed = sign_command(
        &command(
            "web-1",
            kill(pb::process_match::By::Name("nginx".into()), 9, false),
        ),
        &key,
    );
    for _ in 0..1000 {
        trusted.verify(&signed).unwrap();
    }
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(trusted.verify(std::hint::black_box(&signed)).unwrap());
    }
    let per = start.elapsed() / rounds;
    println!(
        "verify: {} bytes payload, {:.1} µs per command (mean of {rounds})",
        signed.payload.len(),
        micros(per)
    );
}

/// A release `troop-agent` process, as production runs it.
struct AgentProcess {
    pki: TestPki,
    child: std::process::Child,
    client: pb::agent_client::AgentClient<tonic::transport::Channel>,
}

impl AgentProcess {
    async fn start(state_dir: &std::path::Path) -> Self {
        Self::start_wrapped(state_dir, std::process::Command::new).await
    }

    /// Starts the agent through `wrap`, which is given the binary and returns the command
    /// that runs it (the agent's arguments are added after).
    async fn start_wrapped(
        state_dir: &std::path::Path,
        wrap: impl FnOnce(PathBuf) -> std::process::Command,
    ) -> Self {
        let pki = TestPki::new(&["web-1"]);
        let port = troop_lab::host::free_port().unwrap();
        let config = pki.dir.path().join("agent.toml");
        let mut file = troop_lab::files::agent_file(
            "web-1",
            &format!("127.0.0.1:{port}"),
            &Default::default(),
            Default::default(),
        );
        file.state_dir = Some(state_dir.to_path_buf());
        troop_lab::files::write(&config, &file).unwrap();
        let mut command = wrap(binary("troop-agent"));
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error");
        end_with_this_process(&mut command);
        let child = command.spawn().unwrap();
        let address = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            if let Ok(client) = connect(address, "web-1", Credentials::Coordinator(&pki)).await {
                break client;
            }
            assert!(Instant::now() < deadline, "agent did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { pki, child, client }
    }
}

/// Has the kernel kill `command`'s process when this one's main thread ends, also when a
/// signal or a timeout ends the bench and no Drop runs (else its agent, and in the kill
/// part the 2,000 processes of its PID namespace, would be left running).
#[allow(unsafe_code)]
fn end_with_this_process(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench_execute(label: &str, agent: &mut AgentProcess) {
    let key = agent.pki.signing_key();
    let abort_all = pb::command::Action::AbortAll(pb::AbortAll {});
    let no_match = kill(
        pb::process_match::By::Name("no-such-process".into()),
        9,
        false,
    );
    // A fault start with the least work after its admission: one /proc lookup.
    let no_pid = kill(pb::process_match::By::Pid(i32::MAX), 9, false);
    for (name, action, forged) in [
        // Refused at its first check, before the ledger: the round trip's floor.
        ("bad signature (floor)", abort_all.clone(), true),
        // Only ends faults: admitted without a sync of its own.
        ("abort-all", abort_all, false),
        // Admitted durably (one fdatasync) before it runs.
        ("kill by pid, no such process", no_pid, false),
        ("kill by name, no match", no_match, false),
    ] {
        let rounds = 2_000;
        let mut times = Vec::with_capacity(rounds);
        for index in 0..rounds + 200 {
            let mut signed = sign_command(&command("web-1", action.clone()), &key);
            if forged {
                signed.signature[0] ^= 1;
            }
            let start = Instant::now();
            let result = agent.client.execute(signed).await;
            let elapsed = start.elapsed();
            assert_eq!(result.is_err(), forged || name != "abort-all", "{result:?}");
            if index >= 200 {
                times.push(elapsed);
            }
        }
        report(label, name, times);
    }
    // A fault's whole life on disk: its start (ledger, fault journal) and its end.
    let cpu = pb::command::Action::Start(pb::StartFault {
        duration_ms: 60_000,
        lease_ms: 0,
        fault: Some(pb::start_fault::Fault::Cpu(pb::Cpu {
            load_percent: 1,
            cores: 1,
        })),
    });
    let rounds = 500;
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    for index in 0..rounds + 50 {
        let start = sign_command(&command("web-1", cpu.clone()), &key);
        let began = Instant::now();
        agent.client.execute(start).await.unwrap();
        let started = began.elapsed();
        let end = sign_command(
            &command("web-1", pb::command::Action::AbortAll(pb::AbortAll {})),
            &key,
        );
        let began = Instant::now();
        agent.client.execute(end).await.unwrap();
        if index >= 50 {
            starts.push(started);
            ends.push(began.elapsed());
        }
    }
    report(label, "cpu fault start", starts);
    report(label, "abort-all ending it", ends);
}

fn report(label: &str, name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "execute [{label}] {name}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} round trips, one connection)",
        micros(percentile(&times, 0.50)),
        micros(percentile(&times, 0.99)),
        micros(*times.last().unwrap()),
        times.len(),
    );
}

#[tokio::main]
async fn main() {
    let wants = bench_wants();
    if wants("verify") {
        bench_verify();
    }
    if wants("execute") {
        let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut agent = AgentProcess::start(disk.path()).await;
        bench_execute("state on disk", &mut agent).await;
        drop(agent);
        let tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut agent = AgentProcess::start(tmpfs.path()).await;
        bench_execute("state on tmpfs", &mut agent).await;
    }
    if wants("memory") {
        memory::bench().await;
    }
    if wants("kill") {
        if nix::unistd::geteuid().is_root() {
            kill::bench().await;
        } else {
            eprintln!("kill skipped: it needs root (a PID namespace)");
        }
    }
}

#[path = "agent/kill.rs"]
mod kill;
#[path = "agent/memory.rs"]
mod memory;
