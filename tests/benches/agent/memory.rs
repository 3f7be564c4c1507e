//! Resident memory of a release agent after start-up, idle, and after 10,000 commands,
//! next to prometheus-node-exporter (the monitoring agent a host already runs) started
//! the same way, when it is installed. Each figure is VmRSS, with its split into
//! anonymous memory (the heap, stacks: what the host cannot take back without swap) and
//! file pages (the binary's own code and data, and shared libraries).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use troop_common::observe::kib_field;
use troop_proto::{pb, sign_command};
use troop_tests::*;

use super::AgentProcess;

const COMMANDS: usize = 10_000;
/// How often an agent does its housekeeping, and a little more.
const HOUSEKEEPING: Duration = Duration::from_secs(32);
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub async fn bench() {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut agent = AgentProcess::start(disk.path()).await;
    let exporter = start_node_exporter();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_started = Resident::of(agent.child.id());
    let exporter_idle = exporter.as_ref().map(|child| Resident::of(child.0.id()));
    // One round of the agent's housekeeping (every 30 s) without a command.
    tokio::time::sleep(HOUSEKEEPING).await;
    let agent_idle = Resident::of(agent.child.id());
    let key = agent.pki.signing_key();
    let abort_all = || {
        sign_command(
            &command("web-1", pb::command::Action::AbortAll(pb::AbortAll {})),
            &key,
        )
    };
    let mut round_trips = Vec::with_capacity(COMMANDS);
    for _ in 0..COMMANDS {
        let signed = abort_all();
        let started = Instant::now();
        agent.client.execute(signed).await.unwrap();
        round_trips.push(started.elapsed());
    }
    agent.client.status(pb::StatusRequest {}).await.unwrap();
    let agent_busy = Resident::of(agent.child.id());
    // A round that saw the commands, then one without.
    tokio::time::sleep(2 * HOUSEKEEPING).await;
    let agent_rested = Resident::of(agent.child.id());
    let first = abort_all();
    let started = Instant::now();
    agent.client.execute(first).await.unwrap();
    let first_after_rest = started.elapsed();
    // The commands are remembered for their window (60 s) and the skew (30 s); the first
    // housekeeping round after that forgets them.
    tokio::time::sleep(2 * HOUSEKEEPING).await;
    let agent_forgot = Resident::of(agent.child.id());
    let p50 = |mut sample: Vec<Duration>| {
        sample.sort();
        sample[sample.len() / 2]
    };
    println!("release troop-agent VmRSS:");
    println!("  3 s after start-up: {agent_started}");
    println!("  idle (a housekeeping round without commands): {agent_idle}");
    println!("  right after {COMMANDS} commands and a status: {agent_busy}");
    println!("  idle again after them: {agent_rested}");
    println!("  idle once they expired: {agent_forgot}");
    println!(
        "  the first command after idling: {} µs (the {COMMANDS} before: p50 {} µs)",
        first_after_rest.as_micros(),
        p50(round_trips).as_micros()
    );
    match exporter_idle {
        Some(exporter) => println!(
            "prometheus-node-exporter VmRSS, idle: {exporter}\nagent/exporter VmRSS: {:.2} after start-up, {:.2} idle, {:.2} right after {COMMANDS} commands, {:.2} idle after them, {:.2} once they expired",
            agent_started.total / exporter.total,
            agent_idle.total / exporter.total,
            agent_busy.total / exporter.total,
            agent_rested.total / exporter.total,
            agent_forgot.total / exporter.total,
        ),
        None => println!("prometheus-node-exporter is not installed: no side-by-side figure"),
    }
}

/// VmRSS and its parts, in MiB.
#[derive(Debug, Clone, Copy)]
struct Resident {
    total: f64,
    anon: f64,
    file: f64,
    /// Pss: each shared page divided by the processes that map it (libc's pages are in
    /// every process's VmRSS whole).
    proportional: f64,
}

impl Resident {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let field = |text: &str, name: &str| {
            let kib = kib_field(text, name).unwrap_or_else(|| panic!("no {name} for {pid}"));
            mib(kib * 1024)
        };
        Self {
            total: field(&status, "VmRSS:"),
            anon: field(&status, "RssAnon:"),
            file: field(&status, "RssFile:"),
            proportional: field(&rollup, "Pss:"),
        }
    }
}

impl std::fmt::Display for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB ({:.1} MiB anonymous, {:.1} MiB file pages; Pss {:.1} MiB)",
            self.total, self.anon, self.file, self.proportional
        )
    }
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node_exporter() -> Option<Exporter> {
    if !std::path::Path::new(NODE_EXPORTER).exists() {
        return None;
    }
    let port = troop_lab::host::free_port().unwrap();
    Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Exporter)
}
