//! Resident memory of an idle release agent after start-up and after 10,000 commands,
//! next to prometheus-node-exporter (the monitoring agent a host already runs) started
//! the same way, when it is installed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use troop_proto::{pb, sign_command};
use troop_tests::*;

use super::AgentProcess;

const COMMANDS: usize = 10_000;
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub async fn bench() {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut agent = AgentProcess::start(disk.path()).await;
    let exporter = start_node_exporter();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_idle = agent.rss_mib();
    let exporter_idle = exporter
        .as_ref()
        .and_then(|child| troop_tests::lab::resident_bytes(child.0.id() as i32))
        .map(mib);
    let key = agent.pki.signing_key();
    for _ in 0..COMMANDS {
        let signed = sign_command(
            &command("web-1", pb::command::Action::AbortAll(pb::AbortAll {})),
            &key,
        );
        agent.client.execute(signed).await.unwrap();
    }
    agent.client.status(pb::StatusRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_busy = agent.rss_mib();
    println!(
        "idle RSS of release troop-agent: {agent_idle:.1} MiB after start-up, {agent_busy:.1} MiB idle after {COMMANDS} commands and a status"
    );
    match exporter_idle {
        Some(exporter) => println!(
            "idle RSS of prometheus-node-exporter: {exporter:.1} MiB; agent/exporter {:.2} after start-up, {:.2} after {COMMANDS} commands",
            agent_idle / exporter,
            agent_busy / exporter
        ),
        None => println!("prometheus-node-exporter is not installed: no side-by-side figure"),
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
