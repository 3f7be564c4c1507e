//! The metrics, as a real Prometheus (Debian's `prometheus`, started here on the lab's
//! loopback with a generated config) scrapes them from `troop serve` and from an agent
//! during an attack, read back through Prometheus' HTTP API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use troop_lab::host::free_port;
use troop_tests::lab::{Lab, METRICS_PORT, Reaped, wait_for};
use troop_tests::net::inside;

const POLICY: &str = "allow = [\"cpu\", \"disk\"]";

/// Starts Prometheus in the lab's namespace, scraping serve's `/metrics` and the agents'
/// every second; answers on `127.0.0.1:port` there.
fn start_prometheus(lab: &Lab, agents: &[String], port: u16) -> Reaped {
    let dir = lab.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = agents.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: serve\n    static_configs:\n      - targets: ['127.0.0.1:7080']\n  - job_name: agents\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec"])
        .arg(lab.network_namespace().unwrap().file_name().unwrap())
        .arg("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run prometheus (Debian package prometheus)");
    Reaped(child)
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of an instant query, as Prometheus answers it (one per series).
fn query(lab_ns: &Path, port: u16, promql: &str) -> Vec<f64> {
    let path = format!("/api/v1/query?query={}", percent_encoded(promql));
    let body = inside(lab_ns, move || {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    });
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| series["value"][1].as_str()?.parse().ok())
        .collect()
}

/// Waits until `promql` has a series whose value passes `test`.
fn targets(lab_ns: &Path, port: u16) -> String {
    inside(lab_ns, move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET /api/v1/targets HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
}

fn wait_series(lab_ns: &Path, port: u16, promql: &str, test: impl Fn(f64) -> bool) {
    let seen = wait_for(Duration::from_secs(30), || {
        query(lab_ns, port, promql).into_iter().any(&test)
    });
    assert!(
        seen,
        "no series of {promql} as expected: {:?}; targets up: {:?}",
        query(lab_ns, port, promql),
        targets(lab_ns, port)
    );
}

#[test]
fn prometheus_scrapes_serve_and_an_agent_during_an_attack() {
    let Some(mut lab) = Lab::networked("metrics") else {
        return;
    };
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        troop_tests::lab::skip("metrics", "needs Prometheus (Debian package prometheus)");
        return;
    }
    // Scraped directly: an agent behind NAT (nat-1) cannot be, as with any pull.
    lab.add_host("web-1", &[("role", "web")], POLICY, vec![]);
    let alice = lab.add_operator("alice", Some("operator"));
    let _serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "db")], POLICY, vec![]);
    let agent_ip = lab.hosts["web-1"]
        .address
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let lab_ns = lab.network_namespace().unwrap();
    let port = free_port().unwrap();
    let _prometheus = start_prometheus(&lab, &[format!("{agent_ip}:{METRICS_PORT}")], port);

    wait_series(&lab_ns, port, "troop_serve_connected_agents", |v| v == 1.0);
    let troop = |args: &[&str]| lab.troop_as(&alice, args);
    let attacked = troop(&[
        "attack", "cpu", "--select", "role=web", "--load", "20", "--for", "1m",
    ]);
    assert!(attacked.status.success(), "{attacked:?}");
    let refused = troop(&[
        "attack", "disk", "--select", "role=web", "--path", "/etc", "--size", "1MiB", "--for", "1m",
    ]);
    assert!(!refused.status.success());
    // A real fill, so the leak detector has a file to find on the host.
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let filled = troop(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "1MiB", "--for", "1m",
    ]);
    assert!(filled.status.success(), "{filled:?}");
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_fault_artifacts_on_host{kind="disk"}"#,
        |v| v == 1.0,
    );

    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_faults_active{kind="cpu"}"#,
        |v| v == 1.0,
    );
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_commands_total{action="start",kind="cpu",outcome="accepted"}"#,
        |v| v >= 1.0,
    );
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_commands_total{kind="disk",outcome="refused",reason="policy"}"#,
        |v| v >= 1.0,
    );
    wait_series(
        &lab_ns,
        port,
        "troop_agent_journal_write_seconds_count",
        |v| v >= 1.0,
    );
    wait_series(
        &lab_ns,
        port,
        "troop_agent_ledger_write_seconds_count",
        |v| v >= 1.0,
    );
    // The lab's agent certificates last 825 days: an alert on this would be quiet.
    let in_800_days = (troop_common::clock::now_unix_ms() / 1000 + 800 * 86_400) as f64;
    wait_series(
        &lab_ns,
        port,
        "troop_agent_certificate_expiry_timestamp_seconds",
        |v| v > in_800_days && v < in_800_days + 30.0 * 86_400.0,
    );

    let halted = troop(&["halt", "--select", "role=web"]);
    assert!(halted.status.success(), "{halted:?}");
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_reverts_total{kind="cpu",cause="halt"}"#,
        |v| v >= 1.0,
    );
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_faults_active{kind="cpu"}"#,
        |v| v == 0.0,
    );
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_fault_held_seconds_count{kind="cpu"}"#,
        |v| v >= 1.0,
    );
    // The halt took the fill too: the host shows nothing the agent no longer holds.
    wait_series(
        &lab_ns,
        port,
        r#"troop_agent_fault_artifacts_on_host{kind="disk"}"#,
        |v| v == 0.0,
    );

    // A dial-in agent whose link goes dead misses its heartbeats: serve drops its stream
    // as silent and counts it; when the link is back, the agent is connected again.
    lab.set_connected("nat-1", false);
    wait_series(
        &lab_ns,
        port,
        "troop_serve_streams_dropped_silent_total",
        |v| v >= 1.0,
    );
    wait_series(&lab_ns, port, "troop_serve_connected_agents", |v| v == 0.0);
    lab.set_connected("nat-1", true);
    wait_series(&lab_ns, port, "troop_serve_connected_agents", |v| v == 1.0);
}
