//! The campaign runner as a library: driven against real agents (in this process, on
//! real mutual-TLS sockets) through the coordinator's `Fleet`, with its events collected
//! instead of printed, and what it did checked on the agents and in the audit store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use troop_coordinator::campaign::Campaign;
use troop_coordinator::campaign::runner::{Progress, RunEvent, run_campaign};
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
    let text = format!(
        r#"
name = "burn"
seed = 3

[guardrails]
max_concurrent = 1
lease = "3s"

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
