//! The refusal matrix: every way a command can be wrong is refused with the contract's
//! gRPC code and a message naming the problem, and the victim it aimed at is still alive.

use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message;
use tonic::Code;
use troop_proto::envelope::{SIGNING_DOMAIN, key_id, sign_payload};
use troop_proto::{pb, sign_command};
use troop_tests::AgentConfigs;
use troop_tests::*;

struct Lab {
    pki: TestPki,
    agent: RunningAgent,
    client: pb::agent_client::AgentClient<tonic::transport::Channel>,
    key: SigningKey,
    victim: Victim,
}

const AGENT: &str = "web-1";
/// How long a victim must outlive a refused command: a sent SIGKILL ends it far sooner.
const GRACE: Duration = Duration::from_millis(300);

async fn lab() -> Lab {
    let pki = TestPki::new(&[AGENT, "web-2"]);
    let agent = RunningAgent::start(pki.agent_config(AGENT, "")).await;
    let client = connect(agent.address, AGENT, Credentials::Coordinator(&pki))
        .await
        .unwrap();
    Lab {
        key: pki.signing_key(),
        pki,
        agent,
        client,
        victim: Victim::start(),
    }
}

impl Lab {
    fn kill_victim(&self) -> pb::Command {
        command(AGENT, kill_pid(self.victim.pid()))
    }

    async fn send(&mut self, signed: pb::SignedCommand) -> Result<pb::Receipt, tonic::Status> {
        self.client.execute(signed).await.map(|r| r.into_inner())
    }

    /// Sends, and checks the refusal's code and message and that the victim survived.
    async fn assert_refused(&mut self, signed: pb::SignedCommand, code: Code, needle: &str) {
        let status = self
            .send(signed)
            .await
            .expect_err("command must be refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "message {:?} should name {needle:?}",
            status.message()
        );
        // A kill is synchronous: had it run, the victim would already be gone.
        assert!(
            self.victim.is_alive(),
            "victim was killed by a refused command"
        );
    }
}

#[tokio::test]
async fn a_valid_command_kills_the_victim() {
    let mut lab = lab().await;
    let signed = sign_command(&lab.kill_victim(), &lab.key);
    let receipt = lab.send(signed).await.unwrap();
    assert_eq!(receipt.signalled.len(), 1);
    assert_eq!(receipt.signalled[0].pid, lab.victim.pid());
    assert_eq!(lab.victim.wait_killed(Duration::from_secs(5)), Some(9));
}

#[tokio::test]
async fn tampered_payload() {
    let mut lab = lab().await;
    let mut signed = sign_command(&lab.kill_victim(), &lab.key);
    let last = signed.payload.len() - 1;
    signed.payload[last] ^= 0x01;
    lab.assert_refused(signed, Code::Unauthenticated, "does not verify")
        .await;
}

#[tokio::test]
async fn flipped_signature_bit() {
    let mut lab = lab().await;
    let mut signed = sign_command(&lab.kill_victim(), &lab.key);
    signed.signature[10] ^= 0x04;
    lab.assert_refused(signed, Code::Unauthenticated, "does not verify")
        .await;
}

#[tokio::test]
async fn unknown_key() {
    let mut lab = lab().await;
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let signed = sign_command(&lab.kill_victim(), &stranger);
    lab.assert_refused(
        signed,
        Code::Unauthenticated,
        "not a trusted coordinator key",
    )
    .await;
}

#[tokio::test]
async fn trusted_key_id_with_another_keys_signature() {
    let mut lab = lab().await;
    let stranger = SigningKey::from_bytes(&[7; 32]);
    let mut signed = sign_command(&lab.kill_victim(), &stranger);
    signed.key_id = key_id(&lab.key.verifying_key());
    lab.assert_refused(signed, Code::Unauthenticated, "does not verify")
        .await;
}

#[tokio::test]
async fn signature_without_the_domain_prefix() {
    let mut lab = lab().await;
    let payload = lab.kill_victim().encode_to_vec();
    let mut signed = sign_payload(payload.clone(), &lab.key);
    signed.signature = lab.key.sign(&payload).to_bytes().to_vec();
    assert_ne!(&payload[..], SIGNING_DOMAIN);
    lab.assert_refused(signed, Code::Unauthenticated, "does not verify")
        .await;
}

#[tokio::test]
async fn empty_signature() {
    let mut lab = lab().await;
    let mut signed = sign_command(&lab.kill_victim(), &lab.key);
    signed.signature.clear();
    lab.assert_refused(signed, Code::Unauthenticated, "signature is 0 bytes")
        .await;
}

#[tokio::test]
async fn another_agents_id() {
    let mut lab = lab().await;
    let signed = sign_command(&command("web-2", kill_pid(lab.victim.pid())), &lab.key);
    lab.assert_refused(
        signed,
        Code::PermissionDenied,
        "addressed to agent \"web-2\"",
    )
    .await;
}

#[tokio::test]
async fn expired() {
    let mut lab = lab().await;
    let mut stale = lab.kill_victim();
    stale.issued_at_unix_ms = now_ms() - 200_000;
    stale.expires_at_unix_ms = now_ms() - 100_000;
    let signed = sign_command(&stale, &lab.key);
    lab.assert_refused(signed, Code::PermissionDenied, "expired")
        .await;
}

#[tokio::test]
async fn issued_in_the_future() {
    let mut lab = lab().await;
    let mut early = lab.kill_victim();
    early.issued_at_unix_ms = now_ms() + 120_000;
    early.expires_at_unix_ms = now_ms() + 180_000;
    let signed = sign_command(&early, &lab.key);
    lab.assert_refused(signed, Code::PermissionDenied, "in the future")
        .await;
}

#[tokio::test]
async fn window_over_five_minutes() {
    let mut lab = lab().await;
    let mut long = lab.kill_victim();
    long.expires_at_unix_ms = long.issued_at_unix_ms + 5 * 60_000 + 1;
    let signed = sign_command(&long, &lab.key);
    lab.assert_refused(signed, Code::PermissionDenied, "validity window")
        .await;
}

#[tokio::test]
async fn validly_signed_garbage() {
    let mut lab = lab().await;
    let signed = sign_payload(vec![0xff, 0xff, 0xff, 0x0f, 0x12], &lab.key);
    lab.assert_refused(signed, Code::InvalidArgument, "not a valid Command")
        .await;
}

#[tokio::test]
async fn out_of_range_signal() {
    let mut lab = lab().await;
    let action = kill(pb::process_match::By::Pid(lab.victim.pid()), 99, false);
    let signed = sign_command(&command(AGENT, action), &lab.key);
    lab.assert_refused(signed, Code::InvalidArgument, "signal 99")
        .await;
}

#[tokio::test]
async fn kill_of_pid_1() {
    let mut lab = lab().await;
    // SIGKILL: even if the guard failed, the kernel never delivers it to init from
    // inside init's own PID namespace, so this test cannot harm the machine.
    let signed = sign_command(&command(AGENT, kill_pid(1)), &lab.key);
    lab.assert_refused(signed, Code::PermissionDenied, "pid 1 is the host's init")
        .await;
}

#[tokio::test]
async fn kill_of_the_agent_itself() {
    let mut lab = lab().await;
    // The agent runs in this test process: were it signalled, the test would die.
    let signed = sign_command(
        &command(AGENT, kill_pid(std::process::id() as i32)),
        &lab.key,
    );
    lab.assert_refused(signed, Code::PermissionDenied, "the troop agent itself")
        .await;
}

#[tokio::test]
async fn oversized_message() {
    let mut lab = lab().await;
    let mut signed = sign_command(&lab.kill_victim(), &lab.key);
    signed.signature = vec![0; 100 * 1024];
    let status = lab.send(signed).await.expect_err("must be refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    assert!(lab.victim.survives(GRACE));
}

#[tokio::test]
async fn exact_replay_answers_the_first_receipt_and_runs_nothing() {
    let mut lab = lab().await;
    let marker = lab.victim.marker.clone();
    let action = kill(
        pb::process_match::By::CmdlinePattern(format!("^{marker} ")),
        9,
        true,
    );
    let signed = sign_command(&command(AGENT, action), &lab.key);
    let first = lab.send(signed.clone()).await.unwrap();
    assert_eq!(lab.victim.wait_killed(Duration::from_secs(5)), Some(9));
    // A second process the same command would match, were it run again.
    let mut second = Victim::with_marker(&marker);
    let replay = lab.send(signed.clone()).await.unwrap();
    assert_eq!(replay, first);
    assert!(second.survives(GRACE), "the replay ran the kill again");
}

#[tokio::test]
async fn replay_after_agent_restart() {
    let Lab {
        pki,
        agent,
        mut client,
        key,
        mut victim,
    } = lab().await;
    let pattern = format!("^{} ", victim.marker);
    let action = kill(pb::process_match::By::CmdlinePattern(pattern), 9, true);
    let mut signed = sign_command(&command(AGENT, action), &key);
    let first = client.execute(signed.clone()).await.unwrap().into_inner();
    assert_eq!(victim.wait_killed(Duration::from_secs(5)), Some(9));
    agent.stop().await;
    let mut second = Victim::with_marker(&victim.marker);

    let restarted = RunningAgent::start(pki.agent_config(AGENT, "")).await;
    let mut client = connect(restarted.address, AGENT, Credentials::Coordinator(&pki))
        .await
        .unwrap();
    let replay = client.execute(signed.clone()).await.unwrap().into_inner();
    assert_eq!(replay, first, "the first receipt, from the ledger on disk");
    assert!(second.survives(GRACE), "the replay ran the kill again");

    // The same id with another payload is refused after the restart too.
    let mut other = pb::Command::decode(signed.payload.as_slice()).unwrap();
    let mut bystander = Victim::start();
    other.action = Some(kill_pid(bystander.pid()));
    signed = sign_command(&other, &key);
    let status = client.execute(signed).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("already used"), "{status:?}");
    assert!(bystander.survives(GRACE));
}

#[tokio::test]
async fn reused_id_with_another_payload() {
    let mut lab = lab().await;
    let mut spent = Victim::start();
    let first = command(AGENT, kill_pid(spent.pid()));
    lab.send(sign_command(&first, &lab.key)).await.unwrap();
    assert_eq!(spent.wait_killed(Duration::from_secs(5)), Some(9));
    let mut reuse = lab.kill_victim();
    reuse.command_id = first.command_id.clone();
    let signed = sign_command(&reuse, &lab.key);
    lab.assert_refused(
        signed,
        Code::PermissionDenied,
        "already used by a different command",
    )
    .await;
}

#[tokio::test]
async fn policy_refuses_a_fault_kind_it_does_not_allow() {
    let pki = TestPki::new(&[AGENT]);
    let agent = RunningAgent::start(pki.agent_config(AGENT, "allow = [\"cpu\"]")).await;
    let mut client = connect(agent.address, AGENT, Credentials::Coordinator(&pki))
        .await
        .unwrap();
    let mut victim = Victim::start();
    let signed = sign_command(&command(AGENT, kill_pid(victim.pid())), &pki.signing_key());
    let status = client.execute(signed).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("kill is not in this agent's policy.allow"),
        "{status:?}"
    );
    assert!(victim.survives(GRACE));
}

/// Connects with `credentials` and tries to kill a victim; true if that was refused.
async fn refused_with(lab: &Lab, credentials: Credentials<'_>, victim: &Victim) -> bool {
    match connect(lab.agent.address, AGENT, credentials).await {
        Err(_) => true,
        Ok(mut client) => {
            let signed = sign_command(&command(AGENT, kill_pid(victim.pid())), &lab.key);
            client.execute(signed).await.is_err()
        }
    }
}

#[tokio::test]
async fn no_client_certificate() {
    let lab = lab().await;
    let mut victim = Victim::start();
    let refused = refused_with(&lab, Credentials::NoClientCert(&lab.pki), &victim).await;
    assert!(refused, "a client without a certificate must not be served");
    assert!(victim.survives(GRACE));
}

#[tokio::test]
async fn client_certificate_from_another_ca() {
    let lab = lab().await;
    let other = TestPki::new(&[]);
    let mut victim = Victim::start();
    let credentials = Credentials::OtherCa {
        agent_ca: &lab.pki,
        other: &other,
    };
    assert!(
        refused_with(&lab, credentials, &victim).await,
        "another CA's certificate was served"
    );
    assert!(victim.survives(GRACE));
}

#[tokio::test]
async fn another_agents_certificate_is_no_client_certificate() {
    let lab = lab().await;
    let mut victim = Victim::start();
    let credentials = Credentials::AgentCert {
        pki: &lab.pki,
        agent: "web-2",
    };
    assert!(
        refused_with(&lab, credentials, &victim).await,
        "an agent certificate was served as a client"
    );
    assert!(victim.survives(GRACE));
}

#[tokio::test]
async fn tls_1_2() {
    let lab = lab().await;
    let mut victim = Victim::start();
    assert!(
        refused_with(&lab, Credentials::Tls12Only(&lab.pki), &victim).await,
        "TLS 1.2 was served"
    );
    assert!(victim.survives(GRACE));
}

#[tokio::test]
async fn plaintext() {
    let lab = lab().await;
    let mut victim = Victim::start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", lab.agent.address))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let refused = match channel.connect().await {
        Err(_) => true,
        Ok(channel) => {
            let mut client = pb::agent_client::AgentClient::new(channel);
            let signed = sign_command(&command(AGENT, kill_pid(victim.pid())), &lab.key);
            client.execute(signed).await.is_err()
        }
    };
    assert!(refused, "plaintext must not be served");
    assert!(victim.survives(GRACE));
}

#[tokio::test]
async fn the_coordinator_refuses_an_agent_whose_certificate_names_another_id() {
    // web-2 answers where the fleet config says web-1 lives: the coordinator's dialer
    // must refuse the connection, because web-2's certificate does not name web-1.
    let pki = TestPki::new(&["web-1", "web-2"]);
    let impostor = RunningAgent::start(pki.agent_config("web-2", "")).await;
    let tls = troop_coordinator::config::ClientTls {
        cert: pki.path("coordinator.pem"),
        key: pki.path("coordinator.key"),
        ca: pki.path("ca.pem"),
    };
    let dialer = troop_coordinator::client::Dialer::new(&tls, Duration::from_secs(5)).unwrap();
    let entry = |id: &str| troop_coordinator::config::AgentEntry {
        id: id.into(),
        address: impostor.address.to_string(),
        labels: Default::default(),
    };
    assert!(
        dialer.dial(&entry("web-2")).await.is_ok(),
        "the real name must work"
    );
    let error = dialer
        .dial(&entry("web-1"))
        .await
        .expect_err("impostor accepted as web-1");
    let chain = troop_telemetry::error_chain(&error);
    assert!(
        chain.contains("does not name agent web-1"),
        "said plainly: {chain}"
    );
    assert!(!chain.contains("DnsName"), "no Debug formatting: {chain}");
}
