//! The coordinator's dispatcher as a library, against real agents in this process: each
//! command is stamped and signed when its agent is dialled, results come back in the
//! order asked, and an unreachable agent fails alone.

use std::time::Duration;

use troop_coordinator::client::Dialer;
use troop_coordinator::config::AgentEntry;
use troop_coordinator::dispatch::{CONNECT_TIMEOUT, CallError, Dispatcher};
use troop_coordinator::signer::{Signer, new_command, now_unix_ms};
use troop_proto::pb;
use troop_tests::{AgentConfigs, RunningAgent, TestPki, Victim, kill_pid};

fn dispatcher(pki: &TestPki) -> Dispatcher {
    let tls = troop_coordinator::config::ClientTls {
        cert: pki.path("coordinator.pem"),
        key: pki.path("coordinator.key"),
        ca: pki.path("ca.pem"),
    };
    Dispatcher::new(Dialer::new(&tls, CONNECT_TIMEOUT).unwrap())
}

fn entry(agent: &RunningAgent) -> AgentEntry {
    AgentEntry {
        id: agent.id.clone(),
        address: agent.address.to_string(),
        labels: Default::default(),
    }
}

#[tokio::test]
async fn a_command_built_long_ago_is_stamped_and_signed_when_sent() {
    let pki = TestPki::new(&["web-1"]);
    let agent = RunningAgent::start(pki.agent_config("web-1", "")).await;
    let mut victim = Victim::start();
    let mut command = new_command("web-1", kill_pid(victim.pid()), Duration::from_secs(60));
    // Built ten minutes ago: signed as it was, the agent would refuse it as expired.
    command.issued_at_unix_ms = now_unix_ms() - 600_000;
    command.expires_at_unix_ms = command.issued_at_unix_ms + 60_000;
    let signer = Signer::from_key(pki.signing_key());
    let deliveries = dispatcher(&pki)
        .sign_and_send(&signer, vec![(entry(&agent), command)])
        .await;
    let delivery = &deliveries[0];
    assert!(delivery.result.is_ok(), "{:?}", delivery.result);
    assert_eq!(delivery.signature_sha256.len(), 64);
    assert!(victim.wait_killed(Duration::from_secs(5)).is_some());
}

#[tokio::test]
async fn one_unreachable_agent_fails_alone_and_results_keep_their_order() {
    let pki = TestPki::new(&["web-1", "web-2", "web-9"]);
    let web1 = RunningAgent::start(pki.agent_config("web-1", "")).await;
    let web2 = RunningAgent::start(pki.agent_config("web-2", "")).await;
    let gone = AgentEntry {
        id: "web-9".into(),
        address: "127.0.0.1:1".into(),
        labels: Default::default(),
    };
    let abort_all = || pb::command::Action::AbortAll(pb::AbortAll {});
    let work = [entry(&web1), gone, entry(&web2)]
        .into_iter()
        .map(|agent| {
            let command = new_command(&agent.id, abort_all(), Duration::from_secs(60));
            (agent, command)
        })
        .collect();
    let signer = Signer::from_key(pki.signing_key());
    let deliveries = dispatcher(&pki).sign_and_send(&signer, work).await;
    let order: Vec<&str> = deliveries.iter().map(|d| d.agent.id.as_str()).collect();
    assert_eq!(order, ["web-1", "web-9", "web-2"]);
    assert!(deliveries[0].result.is_ok() && deliveries[2].result.is_ok());
    assert!(
        matches!(deliveries[1].result, Err(CallError::Unreachable(_))),
        "{:?}",
        deliveries[1].result
    );
    // Never dialled, so never signed.
    assert!(deliveries[1].signature_sha256.is_empty());
    assert_ne!(
        deliveries[0].signature_sha256,
        deliveries[2].signature_sha256
    );
}
