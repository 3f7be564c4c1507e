//! Benchmarks behind BENCHMARKS.md. Run:
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p troop-tests --bench agent
//! ```
//!
//! 1. Signature verification of one signed kill command (what every `Execute` pays first).
//! 2. `Execute` round trips over mutual TLS on one kept-open connection, with the agent's
//!    state dir (and so its ledger fsync) on this machine's disk and on tmpfs.
//! 3. The resident memory of an idle release `troop-agent` process.

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
        let child = std::process::Command::new(binary("troop-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap();
        let address = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = loop {
            if let Ok(client) = connect(address, "web-1", Credentials::Coordinator(&pki)).await {
                break client;
            }
            assert!(Instant::now() < deadline, "agent did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { pki, child, client }
    }

    fn rss_mib(&self) -> f64 {
        let bytes = troop_tests::lab::resident_bytes(self.child.id() as i32).unwrap();
        bytes as f64 / (1u64 << 20) as f64
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
    for (name, action) in [
        ("abort-all", pb::command::Action::AbortAll(pb::AbortAll {})),
        (
            "kill, no match",
            kill(
                pb::process_match::By::Name("no-such-process".into()),
                9,
                false,
            ),
        ),
    ] {
        let rounds = 2_000;
        let mut times = Vec::with_capacity(rounds);
        for index in 0..rounds + 200 {
            let signed = sign_command(&command("web-1", action.clone()), &key);
            let start = Instant::now();
            let result = agent.client.execute(signed).await;
            let elapsed = start.elapsed();
            assert!(result.is_ok() || name != "abort-all", "{result:?}");
            if index >= 200 {
                times.push(elapsed);
            }
        }
        times.sort();
        println!(
            "execute [{label}] {name}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({rounds} round trips, one connection)",
            micros(percentile(&times, 0.50)),
            micros(percentile(&times, 0.99)),
            micros(*times.last().unwrap()),
        );
    }
}

#[tokio::main]
async fn main() {
    bench_verify();
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut agent = AgentProcess::start(disk.path()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_start = agent.rss_mib();
    bench_execute("state on disk", &mut agent).await;
    agent.client.status(pb::StatusRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "idle RSS of release troop-agent: {idle_start:.1} MiB after start-up, {:.1} MiB idle after 4400 commands and a status",
        agent.rss_mib()
    );
    drop(agent);
    let tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut agent = AgentProcess::start(tmpfs.path()).await;
    bench_execute("state on tmpfs", &mut agent).await;
}
