//! The campaign runner as a library: driven against real agents (in this process, on
//! real mutual-TLS sockets) through the coordinator's `Fleet`, with its events collected
//! instead of printed, and what it did checked on the agents and in the audit store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use troop_coordinator::campaign::Campaign;
use troop_coordinator::campaign::events::{Progress, RunEvent};
use troop_coordinator::campaign::runner::run_campaign;
use troop_coordinator::fleet::Fleet;
use troop_coordinator::store::Store;
use troop_lab::files;
use troop_tests::{AgentConfigs, RunningAgent, TestPki};

#[derive(Default)]
struct Collected(Mutex<Vec<RunEvent>>);

impl Progress for Collected {
    fn event(&self, event: RunEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Collected {
    fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Two agents allowing CPU faults, and the fleet that reaches them.
async fn fleet() -> (TestPki, Vec<RunningAgent>, Fleet) {
    let pki = TestPki::new(&["web-1", "web-2"]);
    let mut agents = Vec::new();
    for id in ["web-1", "web-2"] {
        agents.push(RunningAgent::start(pki.agent_config(id, "allow = [\"cpu\"]")).await);
    }
    let labels = files::labels(&[("role", "web")]);
    let addresses: Vec<(String, String)> = agents
        .iter()
        .map(|a| (a.id.clone(), a.address.to_string()))
        .collect();
    let config = pki.dir.path().join("troop.toml");
    files::write(
        &config,
        &files::coordinator_file(
            addresses
                .iter()
                .map(|(id, address)| (id.as_str(), address.as_str(), &labels)),
        ),
    )
    .unwrap();
    let fleet = Fleet::load(Some(&config)).unwrap();
    (pki, agents, fleet)
}

fn campaign(duration: &str) -> Campaign {
    campaign_with(duration, "")
}

/// The campaign, with `guardrails` lines (probes) added to `[guardrails]`.
fn campaign_with(duration: &str, guardrails: &str) -> Campaign {
    let text = format!(
        r#"
name = "burn"
seed = 3

[guardrails]
max_concurrent = 1
lease = "3s"
{guardrails}

[[step]]
select = "role=web"
pick = {{ count = 1 }}
fault = {{ kind = "cpu", load = 10, cores = 1 }}
duration = "{duration}"

[[step]]
select = "role=web"
pick = {{ count = 1 }}
fault = {{ kind = "cpu", load = 10, cores = 1 }}
duration = "{duration}"
"#
    );
    Campaign::parse(&text, Path::new("burn.toml")).unwrap()
}

async fn active_faults(fleet: &Fleet) -> BTreeMap<String, usize> {
    fleet
        .statuses(&fleet.config.agents)
        .await
        .into_iter()
        .map(|(agent, status)| (agent.id, status.unwrap().active_faults.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_holds_the_guardrail_reports_each_step_and_is_audited() {
    let (_pki, _agents, fleet) = fleet().await;
    let collected = Arc::new(Collected::default());
    let (_cancel, cancelled) = watch::channel(None);
    let report = run_campaign(
        &fleet,
        &campaign("1s"),
        false,
        None,
        cancelled,
        collected.clone(),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(report.status, "completed", "{}", report.reason);
    // Steps run back to back; with the first fault still on, max_concurrent = 1 holds
    // the second step back entirely.
    assert_eq!((report.sent, report.applied), (1, 1));
    let events = collected.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RunEvent::Step {
                index: 1,
                targets: 0,
                held_back: 1..,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, RunEvent::Applied { .. }))
            .count(),
        1
    );
    // The run waited for its fault to end: nothing is left on either agent.
    assert!(active_faults(&fleet).await.values().all(|n| *n == 0));
    let store = Store::open(&fleet.config.store_url).unwrap();
    let detail = store.run(report.run_id.unwrap()).unwrap();
    assert_eq!(detail.run.status, "completed");
    assert!(
        detail
            .commands
            .iter()
            .any(|c| c.step.is_some() && c.outcome == "applied")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_aborts_its_fault_at_once() {
    let (_pki, _agents, fleet) = fleet().await;
    let collected = Arc::new(Collected::default());
    let (cancel, cancelled) = watch::channel(None);
    let watcher = collected.clone();
    let canceller = tokio::spawn(async move {
        // Cancel once the fault is applied.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !watcher
            .events()
            .iter()
            .any(|e| matches!(e, RunEvent::Applied { .. }))
        {
            assert!(Instant::now() < deadline, "no fault applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.send(Some("stopped by the test".into())).unwrap();
        cancel
    });
    let started = Instant::now();
    let report = run_campaign(
        &fleet,
        &campaign("1m"),
        false,
        None,
        cancelled,
        collected.clone(),
        "test",
    )
    .await
    .unwrap();
    let _cancel = canceller.await.unwrap();
    assert_eq!(report.status, "aborted");
    assert_eq!(report.reason, "stopped by the test");
    assert_eq!(report.reverted_early, 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not held to the end"
    );
    assert!(
        collected
            .events()
            .iter()
            .any(|e| matches!(e, RunEvent::Aborting { faults: 1, .. }))
    );
    assert!(active_faults(&fleet).await.values().all(|n| *n == 0));
}

/// An HTTPS health endpoint on loopback with a certificate from `pki`'s CA (for
/// 127.0.0.1): `200 OK` to a request carrying `Authorization: Bearer test`, else 401.
async fn https_service(pki: &TestPki) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    pki.issue_agent("health", &["127.0.0.1".into()]);
    let config = rustls::ServerConfig::builder_with_provider(troop_common::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            troop_common::tls::load_certs(&pki.path("health.pem")).unwrap(),
            troop_common::tls::load_key(&pki.path("health.key")).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 2048];
                let read = tls.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]).to_ascii_lowercase();
                let status = if request.contains("\r\nauthorization: bearer test\r\n") {
                    "200 OK"
                } else {
                    "401 Unauthorized"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{address}/health")
}

fn https_probe(url: &str, ca: &Path) -> String {
    format!(
        "[[guardrails.stop_if]]\nname = \"service\"\nhttp = \"{url}\"\nca = \"{}\"\nheaders = {{ Authorization = \"Bearer test\" }}\nevery = \"200ms\"\n",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_probe_trusts_its_own_ca_and_says_when_the_ca_is_wrong() {
    let (pki, _agents, fleet) = fleet().await;
    let url = https_service(&pki).await;
    let (_cancel, cancelled) = watch::channel(None);
    let good = campaign_with("1s", &https_probe(&url, &pki.path("ca.pem")));
    let report = run_campaign(
        &fleet,
        &good,
        false,
        None,
        cancelled.clone(),
        Arc::new(Collected::default()),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(report.status, "completed", "{}", report.reason);
    let store = Store::open(&fleet.config.store_url).unwrap();
    let probes = store.run(report.run_id.unwrap()).unwrap().probes;
    assert!(
        !probes.is_empty() && probes.iter().all(|p| p.ok),
        "{probes:?}"
    );

    // Another fleet's CA: the steady state cannot be shown, so nothing is sent.
    let other = TestPki::new(&[]);
    let wrong = campaign_with("1s", &https_probe(&url, &other.path("ca.pem")));
    let report = run_campaign(
        &fleet,
        &wrong,
        false,
        None,
        cancelled,
        Arc::new(Collected::default()),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(report.status, "refused");
    assert_eq!(report.sent, 0);
    assert!(
        report.reason.contains("not signed by the CA in")
            && report
                .reason
                .contains(&other.path("ca.pem").display().to_string()),
        "{}",
        report.reason
    );
}
