//! A signing-key rotation across a 5-host lab (four hosts dialled in behind firewalls, one
//! that serve dials), with no agent restarted: `troop pki rotate-signing-key` makes every
//! agent trust the old and the new key, serve signs with the new one and every agent
//! takes it; `--retire` then makes every agent refuse the old key. Commands signed with
//! the old key are delivered as any other serve would: down the dial-in hosts' streams
//! through serve's relay, and straight to the direct host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use troop_common::identity::COORDINATOR_NAME;
use troop_proto::pb;
use troop_proto::pb::agent_client::AgentClient;
use troop_proto::serve_pb::{self, coordinator_client::CoordinatorClient};
use troop_tests::lab::{Lab, output_text, wait_for};

const DIAL_IN: [&str; 4] = ["nat-1", "nat-2", "nat-3", "nat-4"];
const DIRECT: &str = "direct-1";

fn hosts() -> impl Iterator<Item = &'static str> {
    DIAL_IN.into_iter().chain([DIRECT])
}

/// The generation a host's agent keeps in its state dir (0: it trusts its config's keys).
fn learned_generation(lab: &Lab, id: &str) -> u64 {
    let path = lab.dir().join("state").join(id).join("trusted-keys.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|value| value["generation"].as_u64())
        .unwrap_or(0)
}

fn every_host_learned(lab: &Lab, generation: u64) -> bool {
    wait_for(Duration::from_secs(20), || {
        hosts().all(|id| learned_generation(lab, id) == generation)
    })
}

/// A channel inside the lab's network, as the coordinator's certificate, to `address`
/// whose certificate names `name`.
async fn channel(tls: Arc<rustls::ClientConfig>, address: String, name: String) -> Channel {
    let connector = TlsConnector::from(tls);
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, address, name) = (connector.clone(), address.clone(), name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let name = ServerName::try_from(name).unwrap();
                Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
        .await
        .unwrap()
}

type Answers = Vec<(String, Result<String, tonic::Status>)>;

/// A halt for every host, signed by the key in `key_file`, delivered the way another
/// serve would: each host's answer (`Ok` with the receipt, or the refusal).
fn halt_signed_by(lab: &Lab, key_file: &Path) -> Answers {
    let key = troop_coordinator::pki::load_signing_key(key_file).unwrap();
    signed_by(lab, &key, pb::command::Action::AbortAll(pb::AbortAll {}))
}

/// `action` for every host, signed by `key`, delivered as [`halt_signed_by`] does.
fn signed_by(lab: &Lab, key: &ed25519_dalek::SigningKey, action: pb::command::Action) -> Answers {
    let signed = |id: &str| {
        let command =
            troop_coordinator::signer::new_command(id, action.clone(), Duration::from_secs(60));
        troop_proto::sign_command(&command, key)
    };
    let commands: Vec<(String, pb::SignedCommand)> =
        hosts().map(|id| (id.to_string(), signed(id))).collect();
    let direct_address = lab.hosts[DIRECT].address.clone();
    let netns = lab.network_namespace().expect("networked lab");
    let pki = |file: &str| lab.pki.path(file);
    let tls = Arc::new(
        troop_common::tls::client_config(
            &pki("coordinator.pem"),
            &pki("coordinator.key"),
            &pki("ca.pem"),
        )
        .unwrap(),
    );
    troop_lab::net::inside(&netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let serve = format!("127.0.0.1:{}", troop_lab::lab::SERVE_PORT);
                let mut answers = Vec::new();
                for (id, command) in commands {
                    let answer = if id == DIRECT {
                        let channel =
                            channel(tls.clone(), direct_address.clone(), id.clone()).await;
                        AgentClient::new(channel)
                            .execute(command)
                            .await
                            .map(|r| r.into_inner().summary)
                    } else {
                        let channel =
                            channel(tls.clone(), serve.clone(), COORDINATOR_NAME.to_string()).await;
                        let relay = serve_pb::RelayRequest {
                            agent_id: id.clone(),
                            request: Some(serve_pb::Request {
                                request_id: 0,
                                call: Some(serve_pb::request::Call::Execute(command)),
                            }),
                        };
                        match CoordinatorClient::new(channel).relay(relay).await {
                            Err(status) => Err(status),
                            Ok(answer) => match answer.into_inner().result {
                                Some(serve_pb::answer::Result::Receipt(r)) => Ok(r.summary),
                                Some(serve_pb::answer::Result::Failure(f)) => {
                                    Err(tonic::Status::new(f.code.into(), f.message))
                                }
                                other => panic!("{id}: unexpected answer {other:?}"),
                            },
                        }
                    };
                    answers.push((id, answer));
                }
                answers
            })
    })
}

#[test]
fn a_signing_key_rotation_reaches_every_agent_without_a_restart() {
    let Some(mut lab) = Lab::networked("signing-key rotation") else {
        return;
    };
    let alice = lab.add_operator("alice", Some("operator"));
    // Static hosts are in troop.toml before serve reads it.
    lab.start_host(DIRECT, &[("role", "web")], "", Vec::new());
    let _serve = lab.start_serve();
    for id in DIAL_IN {
        lab.start_dial_in_host(id, &[("role", "web")], "", Vec::new());
    }
    let agents_up = wait_for(Duration::from_secs(30), || {
        hosts().all(|id| lab.reachable_as(&alice, id))
    });
    assert!(
        agents_up,
        "not every host is reachable: {}",
        lab.serve_log()
    );
    let pids: Vec<Option<i32>> = hosts().map(|id| lab.hosts[id].agent_pid()).collect();
    assert!(pids.iter().all(Option::is_some));
    let old_key = lab.pki.path("signing.key");

    // Both keys trusted; serve signs with the new one, which every agent takes.
    let begun = lab.troop(&["pki", "rotate-signing-key"]);
    assert!(begun.status.success(), "{}", output_text(&begun));
    assert!(
        every_host_learned(&lab, 1),
        "generation 1 did not reach every agent: {}",
        lab.serve_log()
    );
    let again = lab.troop(&["pki", "rotate-signing-key"]);
    assert_eq!(again.status.code(), Some(2), "{}", output_text(&again));
    assert!(output_text(&again).contains("retire the old one first"));
    let new_key = lab.dir().join("pki").join("signing-1.key");
    assert!(new_key.is_file(), "{}", output_text(&begun));
    // Serve switches to the new key once it announced it.
    let halted_by_serve = wait_for(Duration::from_secs(10), || {
        lab.troop_as(&alice, &["halt", "--select", "role=web"])
            .status
            .success()
    });
    assert!(halted_by_serve, "{}", lab.serve_log());
    for (id, answer) in halt_signed_by(&lab, &new_key) {
        assert!(answer.is_ok(), "{id} refused the new key: {answer:?}");
    }
    for (id, answer) in halt_signed_by(&lab, &old_key) {
        assert!(
            answer.is_ok(),
            "{id} refused the old key in the overlap: {answer:?}"
        );
    }

    // Retired: every agent refuses the old key, and still takes serve's commands.
    let retired = lab.troop(&["pki", "rotate-signing-key", "--retire"]);
    assert!(retired.status.success(), "{}", output_text(&retired));
    assert!(
        every_host_learned(&lab, 2),
        "generation 2 did not reach every agent: {}",
        lab.serve_log()
    );
    for (id, answer) in halt_signed_by(&lab, &old_key) {
        let status = answer.expect_err(&format!("{id} still takes the retired key"));
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{id}: {status:?}"
        );
        assert!(
            status
                .message()
                .contains("is not a trusted coordinator key"),
            "{id}: {status:?}"
        );
    }
    let halted = lab.troop_as(&alice, &["halt", "--select", "role=web"]);
    assert!(halted.status.success(), "{}", output_text(&halted));

    // A host that comes back already following generation 2 is not told again: one
    // announcement run per generation, not one per attach.
    lab.set_connected("nat-1", false);
    assert!(wait_for(Duration::from_secs(30), || !lab
        .reachable_as(&alice, "nat-1")));
    lab.set_connected("nat-1", true);
    assert!(wait_for(Duration::from_secs(40), || lab
        .reachable_as(&alice, "nat-1")));
    std::thread::sleep(Duration::from_secs(2));
    let store_url = format!("sqlite://{}", lab.dir().join("troop.db").display());
    let announcements = troop_coordinator::store::Store::open(&store_url)
        .unwrap()
        .runs(1000)
        .unwrap()
        .into_iter()
        .filter(|run| run.campaign.starts_with("trust signing-key generation"))
        .map(|run| run.campaign)
        .collect::<Vec<_>>();
    assert_eq!(
        announcements,
        [
            "trust signing-key generation 2",
            "trust signing-key generation 1"
        ],
        "{}",
        lab.serve_log()
    );

    // A trusted set announced by a key no agent trusts (a forged rotation, here one that
    // would plant the forger's key) changes nothing anywhere.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let forged = pb::command::Action::Trust(pb::TrustKeys {
        generation: 3,
        public_keys: vec![forger.verifying_key().to_bytes().to_vec()],
    });
    for (id, answer) in signed_by(&lab, &forger, forged) {
        let status = answer.expect_err(&format!("{id} took a forged rotation"));
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{id}: {status:?}"
        );
        assert_eq!(learned_generation(&lab, &id), 2, "{id}");
    }
    let halted = lab.troop_as(&alice, &["halt", "--select", "role=web"]);
    assert!(halted.status.success(), "{}", output_text(&halted));

    let after: Vec<Option<i32>> = hosts().map(|id| lab.hosts[id].agent_pid()).collect();
    assert_eq!(pids, after, "an agent was restarted");
}
