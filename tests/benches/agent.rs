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
    let signed = sign_command(&command("web-1", kill(pb::process_match::By::Name("nginx".into()), 9, false)), &key);
    for _ in 0..1000 {
        trusted.verify(&signed).unwrap();
    }
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(trusted.verify(std::hint::black_box(&signed)).unwrap());
    }
    let per = start.elapsed() / rounds;
    println!("verify: {} bytes payload, {:.1} µs per command (mean of {rounds})", signed.payload.len(), micros(per));
}

async fn bench_execute(label: &str, state_dir: &std::path::Path) {
    let pki = TestPki::new(&["web-1"]);
    let mut config = pki.agent_config("web-1", "");
    config.state_dir = state_dir.to_path_buf();
    let agent = RunningAgent::start(config).await;
    let mut client = connect(agent.address, "web-1", Credentials::Coordinator(&pki)).await.unwrap();
    let key = pki.signing_key();
    for (name, action) in [
        ("abort-all", pb::command::Action::AbortAll(pb::AbortAll {})),
        ("kill, no match", kill(pb::process_match::By::Name("no-such-process".into()), 9, false)),
    ] {
        let rounds = 2_000;
        let commands: Vec<pb::SignedCommand> =
            (0..rounds + 200).map(|_| sign_command(&command("web-1", action.clone()), &key)).collect();
        let mut times = Vec::with_capacity(rounds);
        for (index, signed) in commands.into_iter().enumerate() {
            let start = Instant::now();
            let result = client.execute(signed).await;
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
    agent.stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

async fn bench_idle_rss() {
    let pki = TestPki::new(&["web-1"]);
    let port = troop_coordinator::local_fleet::free_port().unwrap();
    let config = pki.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "id = \"web-1\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n\
             [tls]\ncert = \"pki/web-1.pem\"\nkey = \"pki/web-1.key\"\nca = \"pki/ca.pem\"\n\
             [trust]\ncoordinator_keys = [\"pki/signing.pub\"]\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(binary("troop-agent"))
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(client) = connect(address, "web-1", Credentials::Coordinator(&pki)).await {
            break client;
        }
        assert!(Instant::now() < deadline, "agent did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = rss_kib(child.id());
    let key = pki.signing_key();
    for _ in 0..500 {
        let signed = sign_command(&command("web-1", pb::command::Action::AbortAll(pb::AbortAll {})), &key);
        client.execute(signed).await.unwrap();
    }
    client.status(pb::StatusRequest {}).await.unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(child.id());
    println!(
        "idle RSS of release troop-agent: {:.1} MiB after start-up, {:.1} MiB idle after 500 commands and a status",
        started as f64 / 1024.0,
        after as f64 / 1024.0
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::main]
async fn main() {
    bench_verify();
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    bench_execute("state on disk", disk.path()).await;
    let tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
    bench_execute("state on tmpfs", tmpfs.path()).await;
    bench_idle_rss().await;
}
