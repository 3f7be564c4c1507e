//! Hostile agent streams against serve's `Attach`, in process on loopback: garbage,
//! oversized messages, a broken stream after registering, and a registration flood. Each
//! is refused with a clear code and message and recorded in the access log, and a real
//! agent attached beside them keeps its one stream and answers throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls_pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use troop_common::identity::{COORDINATOR_NAME, FleetVerifier};
use troop_coordinator::enrolment::Enrolment;
use troop_coordinator::enrolment::revocations::Revocations;
use troop_coordinator::fleet::Fleet;
use troop_coordinator::live::Registry;
use troop_coordinator::live::streams::Streams;
use troop_coordinator::serve::{self, access::Operators};
use troop_coordinator::signer::Signer;
use troop_coordinator::store::Store;
use troop_proto::serve_pb::operator_client::OperatorClient;
use troop_proto::serve_pb::run_control;
use troop_proto::{pb, serve_pb};
use troop_tests::{AgentConfigs, RunningAgent, TestPki};

const ATTACH: &str = "/troop.coordinator.v1.Coordinator/Attach";

/// Sends each item's bytes as one gRPC message, whatever they are; reads raw replies.
#[derive(Default, Clone)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

struct Serve {
    address: std::net::SocketAddr,
    registry: Arc<Registry>,
    store: Arc<Store>,
    pki: TestPki,
    stop: watch::Sender<bool>,
}

/// `troop serve`'s gRPC side on a loopback port, as `troop serve` assembles it.
async fn start_serve(agents: &[&str], operators: &[(&str, &str)]) -> Serve {
    let pki = TestPki::new(agents);
    let config = pki.dir.path().join("troop.toml");
    let mut file = troop_lab::files::coordinator_file([]);
    for (name, role) in operators {
        troop_coordinator::pki::issue_operator(&pki.path(""), name, 30).unwrap();
        file.operators
            .push(troop_coordinator::config::OperatorFile {
                name: name.to_string(),
                role: role.to_string(),
            });
    }
    troop_lab::files::write(&config, &file).unwrap();
    let mut fleet = Fleet::load(Some(&config)).unwrap();
    let registry = Arc::new(Registry::default());
    fleet.dispatcher.streams = Some(registry.clone());
    let tls = fleet.config.tls.clone().unwrap();
    let verifier = Arc::new(FleetVerifier::new(&tls.ca).unwrap());
    let store = Arc::new(Store::open(&fleet.config.store_url).unwrap());
    let signer = Arc::new(Signer::load(fleet.config.signing_key.as_ref().unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let latch = Arc::new(
        troop_coordinator::latch::FleetLatch::load(store.clone(), fleet.clone(), signer.clone())
            .unwrap(),
    );
    let revocations = Arc::new(Revocations::default());
    let enrolment = Enrolment {
        ca: None,
        store: store.clone(),
        signing_keys_pem: Vec::new(),
        lifetime: Duration::from_secs(3600),
    };
    let streams = Streams {
        registry: registry.clone(),
        verifier: verifier.clone(),
        revocations: revocations.clone(),
        enrolment: enrolment.clone(),
        store: store.clone(),
        limiter: Default::default(),
        attached: {
            let latch = latch.clone();
            Arc::new(move |agent, _| latch.attached(agent))
        },
    };
    let operators = Operators {
        fleet,
        store: store.clone(),
        signer,
        verifier: verifier.clone(),
        revocations,
        stopping: stopped.clone(),
        runs: Default::default(),
        latch,
    };
    let server_tls = serve::server_config(&tls, verifier).unwrap();
    tokio::spawn(serve::serve(
        listener,
        server_tls,
        streams,
        enrolment,
        operators,
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    Serve {
        address,
        registry,
        store,
        pki,
        stop,
    }
}

impl Serve {
    /// A channel to serve under `id`'s certificate (an agent's or an operator's).
    fn channel_as(&self, id: &str) -> Channel {
        let tls = troop_common::tls::client_config(
            &self.pki.path(&format!("{id}.pem")),
            &self.pki.path(&format!("{id}.key")),
            &self.pki.path("ca.pem"),
        )
        .unwrap();
        let connector = TlsConnector::from(Arc::new(tls));
        let address = self.address;
        Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    let name = ServerName::try_from(COORDINATOR_NAME).unwrap();
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
    }

    /// Opens an Attach stream as `id` and sends `first`; returns the sender for more
    /// messages and serve's answer to the call.
    async fn attach_as(
        &self,
        id: &str,
        first: Vec<u8>,
    ) -> (
        mpsc::Sender<Vec<u8>>,
        Result<tonic::Streaming<Vec<u8>>, Status>,
    ) {
        let mut grpc = tonic::client::Grpc::new(self.channel_as(id));
        grpc.ready().await.unwrap();
        let (messages, outgoing) = mpsc::channel(8);
        messages.send(first).await.unwrap();
        let answer = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(outgoing)),
                ATTACH.parse().unwrap(),
                Raw,
            )
            .await
            .map(tonic::Response::into_inner);
        (messages, answer)
    }

    /// A real agent `id` (kill allowed) dialled in to this serve, once it is attached.
    async fn attached_agent(&self, id: &str) -> RunningAgent {
        let mut config = self.pki.agent_config(id, "allow = [\"kill\"]");
        // Parsed configs hold each coordinator URL as host:port.
        config.coordinators = vec![self.address.to_string()];
        let agent = RunningAgent::start(config).await;
        assert!(
            wait_until(Duration::from_secs(20), || self.registry.get(id).is_some()).await,
            "{id} never attached"
        );
        agent
    }

    fn operator(&self, name: &str) -> OperatorClient<Channel> {
        OperatorClient::new(self.channel_as(name))
    }

    fn refusals(&self, caller: &str) -> Vec<String> {
        self.store
            .access_log(10_000)
            .unwrap()
            .into_iter()
            .filter(|a| a.caller == caller && !a.allowed)
            .map(|a| a.detail)
            .collect()
    }
}

fn register(id: &str, label_value: &str) -> Vec<u8> {
    serve_pb::AgentMessage {
        body: Some(serve_pb::agent_message::Body::Register(
            serve_pb::Register {
                agent_id: id.to_string(),
                labels: [("role".to_string(), label_value.to_string())].into(),
                version: "hostile".into(),
                inventory: None,
                trust_generation: 0,
            },
        )),
    }
    .encode_to_vec()
}

async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// What a stream's first answer was: an error status, or a message.
fn refused(answer: Result<tonic::Streaming<Vec<u8>>, Status>) -> Status {
    match answer {
        Err(status) => status,
        Ok(_) => panic!("serve accepted the stream"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_streams_are_refused_recorded_and_leave_other_agents_alone() {
    let _log = troop_telemetry::init("serve-streams-test", troop_telemetry::LogFormat::Plain);
    let serve = start_serve(&["web-1", "web-2", "web-3"], &[]).await;
    let agent = serve.attached_agent("web-1").await;
    let before = serve.registry.get("web-1").unwrap().connected_since_unix_ms;

    // Garbage where Register should be.
    let (_keep, answer) = serve.attach_as("web-2", vec![0xff; 32]).await;
    let status = refused(answer);
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");

    // A Register far over the stream's message limit.
    let (_keep, answer) = serve
        .attach_as("web-2", register("web-2", &"x".repeat(200 * 1024)))
        .await;
    let status = refused(answer);
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    // Registered properly, then garbage: serve ends that stream and says why.
    let (more, answer) = serve.attach_as("web-2", register("web-2", "web")).await;
    let mut replies = answer.expect("a valid registration is accepted");
    let registered = replies.message().await.unwrap().unwrap();
    assert!(matches!(
        serve_pb::ServeMessage::decode(registered.as_slice())
            .unwrap()
            .body,
        Some(serve_pb::serve_message::Body::Registered(_))
    ));
    more.send(vec![0x0a, 0xff, 0xff, 0xff]).await.unwrap();
    let ended = replies
        .message()
        .await
        .expect_err("serve ends a stream that sends garbage");
    assert_eq!(ended.code(), Code::Internal, "{ended:?}");
    assert!(
        wait_until(Duration::from_secs(5), || serve
            .registry
            .get("web-2")
            .is_none())
        .await,
        "the broken stream is gone"
    );

    let web_2 = serve.refusals("web-2");
    assert!(
        web_2
            .iter()
            .any(|d| d.contains("INTERNAL") && d.contains("decode")),
        "{web_2:?}"
    );
    assert!(
        web_2.iter().any(|d| d.contains("OUT_OF_RANGE")),
        "{web_2:?}"
    );
    assert!(
        web_2.iter().any(|d| d.starts_with("stream ended by serve")),
        "{web_2:?}"
    );

    // A registration flood from one certificate: a burst, then refusals, recorded once.
    let mut exhausted = 0;
    for _ in 0..40 {
        let (_keep, answer) = serve.attach_as("web-3", register("web-3", "web")).await;
        if let Err(status) = answer {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("opened more than"), "{status:?}");
            exhausted += 1;
        }
    }
    assert!(exhausted >= 30, "only {exhausted} of 40 refused");
    let floods: Vec<String> = serve
        .refusals("web-3")
        .into_iter()
        .filter(|d| d.contains("RESOURCE_EXHAUSTED"))
        .collect();
    assert_eq!(floods.len(), 1, "one record per flood: {floods:?}");

    // Through all of it the real agent kept its one stream and still answers.
    let link = serve.registry.get("web-1").expect("web-1 still attached");
    assert_eq!(
        link.connected_since_unix_ms, before,
        "web-1 was never replaced"
    );
    let fleet = {
        let config = serve.pki.dir.path().join("troop.toml");
        let mut fleet = Fleet::load(Some(&config)).unwrap();
        fleet.dispatcher.streams = Some(serve.registry.clone());
        fleet
    };
    let web_1 = fleet
        .agents()
        .into_iter()
        .find(|a| a.id == "web-1")
        .unwrap();
    let statuses = fleet.statuses(&[web_1]).await;
    assert!(statuses[0].1.is_ok(), "{:?}", statuses[0].1);

    agent.stop().await;
    let _ = serve.stop.send(true);
}

/// A kill that matches nothing on `agent`: a real command with no effect.
fn harmless_kill(agent: &str) -> pb::Command {
    let kill = pb::Kill {
        target: Some(pb::ProcessMatch {
            by: Some(pb::process_match::By::Name("troop-no-such-process".into())),
        }),
        ..Default::default()
    };
    pb::Command {
        agent_id: agent.to_string(),
        action: Some(pb::command::Action::Start(pb::StartFault {
            fault: Some(pb::start_fault::Fault::Kill(kill)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn send_request(run: i64, keep_open: bool) -> serve_pb::SendRequest {
    serve_pb::SendRequest {
        what: "attack kill".into(),
        commands: vec![harmless_kill("web-1")],
        seed: 1,
        run,
        keep_open,
    }
}

/// Opens RunCampaign with `first` as the only control message; returns serve's answer.
async fn run_campaign_as(
    serve: &Serve,
    name: &str,
    first: serve_pb::RunControl,
) -> Result<serve_pb::RunUpdate, Status> {
    let mut client = serve.operator(name);
    let (control, controls) = mpsc::channel(2);
    control.send(first).await.unwrap();
    let mut updates = client
        .run_campaign(ReceiverStream::new(controls))
        .await?
        .into_inner();
    let first = updates.message().await?;
    drop(control);
    Ok(first.expect("an update or an error"))
}

fn start_run(toml: &str, dry_run: bool) -> serve_pb::RunControl {
    serve_pb::RunControl {
        body: Some(run_control::Body::Start(serve_pb::StartRun {
            file_name: "careless.toml".into(),
            campaign_toml: toml.into(),
            dry_run,
        })),
    }
}

/// Validly authenticated operators who ask for what is not theirs: each is refused with a
/// code and message naming the problem, nothing is sent or recorded as a run, and the
/// refusal is in the access log.
#[tokio::test(flavor = "multi_thread")]
async fn careless_operator_calls_are_refused_and_run_nothing() {
    let _log = troop_telemetry::init("serve-operators-test", troop_telemetry::LogFormat::Plain);
    let serve = start_serve(
        &["web-1"],
        &[
            ("alice", "operator"),
            ("bob", "operator"),
            ("vera", "viewer"),
        ],
    )
    .await;
    let agent = serve.attached_agent("web-1").await;

    // alice holds a run open, as `attack --lease` does.
    let reply = serve
        .operator("alice")
        .send(send_request(0, true))
        .await
        .expect("alice may attack")
        .into_inner();
    let run = reply.run;
    assert!(run > 0, "{reply:?}");
    assert_eq!(reply.deliveries.len(), 1, "{reply:?}");
    let commands_in_run = || serve.store.run(run).unwrap().commands.len();
    let recorded = commands_in_run();
    let runs_before = serve.store.runs(1000).unwrap().len();

    // bob, also an operator, tries to add to alice's run.
    let status = serve
        .operator("bob")
        .send(send_request(run, true))
        .await
        .expect_err("bob may not add to alice's run");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("begun by \"alice\", not by \"bob\""),
        "{status:?}"
    );
    // ... and into a run that does not exist.
    let status = serve
        .operator("bob")
        .send(send_request(run + 1000, false))
        .await
        .expect_err("there is no such run");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("no run"), "{status:?}");

    // Serve signs what an operator sends: a trusted-key set would plant their own key.
    let mut plant = send_request(0, false);
    plant.commands[0].action = Some(pb::command::Action::Trust(pb::TrustKeys {
        generation: 9,
        public_keys: vec![vec![7; 32]],
    }));
    let status = serve
        .operator("alice")
        .send(plant)
        .await
        .expect_err("an operator may not change the agents' trusted keys");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("rotate-signing-key"),
        "{status:?}"
    );

    // vera, a viewer, may not attack, and may not run a campaign for real.
    let status = serve
        .operator("vera")
        .send(send_request(0, false))
        .await
        .expect_err("a viewer may not attack");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("operator role"), "{status:?}");
    let campaign = "name = \"careless\"\n[[step]]\nselect = \"role=web\"\nfault = { kind = \"kill\", name = \"troop-no-such-process\" }\n";
    let status = run_campaign_as(&serve, "vera", start_run(campaign, false))
        .await
        .expect_err("a viewer may not run a campaign");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A run whose first message is not StartRun.
    let cancel = serve_pb::RunControl {
        body: Some(run_control::Body::Cancel(serve_pb::CancelRun {
            reason: "before anything".into(),
        })),
    };
    let status = run_campaign_as(&serve, "alice", cancel)
        .await
        .expect_err("a run starts with StartRun");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must be StartRun"), "{status:?}");

    // A campaign serve cannot parse: refused before anything runs, naming the problem.
    let broken = "name = \"careless\"\n[[step]]\nselect = \"role=web\"\npick = { count = 1 }\nfault = { kind = \"teleport\" }\n";
    let status = run_campaign_as(&serve, "alice", start_run(broken, false))
        .await
        .expect_err("an invalid campaign is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("teleport"), "{status:?}");

    // None of it sent or recorded anything.
    assert_eq!(
        commands_in_run(),
        recorded,
        "nothing was added to alice's run"
    );
    assert_eq!(
        serve.store.runs(1000).unwrap().len(),
        runs_before,
        "no run was begun"
    );
    let bob = serve.refusals("bob");
    assert!(bob.iter().any(|d| d.contains("begun by")), "{bob:?}");
    let vera = serve.refusals("vera");
    assert_eq!(vera.len(), 2, "{vera:?}");

    agent.stop().await;
    let _ = serve.stop.send(true);
}

#[tokio::test(flavor = "multi_thread")]
async fn careless_emergency_stops_and_resumes_are_refused() {
    let serve = start_serve(&["web-1"], &[("alice", "operator"), ("vera", "viewer")]).await;
    let agent = serve.attached_agent("web-1").await;
    let latch = |reason: &str| serve_pb::LatchRequest {
        reason: reason.into(),
    };

    // A viewer may not stop or resume; a stop needs a reason a person can read.
    for status in [
        serve
            .operator("vera")
            .emergency_stop(latch("db down"))
            .await
            .unwrap_err(),
        serve
            .operator("vera")
            .resume(latch("db back"))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    for (reason, says) in [("", "must not be empty"), ("a\nb", "control characters")] {
        let status = serve
            .operator("alice")
            .emergency_stop(latch(reason))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    // A raw EmergencyStop in a Send would latch agents under any name, and not serve.
    let mut forged = send_request(0, false);
    forged.commands[0].action = Some(pb::command::Action::EmergencyStop(pb::EmergencyStop {
        reason: "db down".into(),
        by: "someone else".into(),
    }));
    let status = serve.operator("alice").send(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(serve.store.latch().unwrap(), None, "nothing latched");

    // Latched: a start is refused before anything is recorded or sent; an abort is not.
    let stop = serve
        .operator("alice")
        .emergency_stop(latch("db down"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stop.deliveries.len(), 1, "{stop:?}");
    assert_eq!(serve.store.latch().unwrap().unwrap().by, "alice");
    let runs = serve.store.runs(1000).unwrap().len();
    let status = serve
        .operator("alice")
        .send(send_request(0, false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("emergency stop by alice"),
        "{status:?}"
    );
    assert_eq!(
        serve.store.runs(1000).unwrap().len(),
        runs,
        "nothing recorded"
    );
    let mut halt = send_request(0, false);
    halt.commands[0].action = Some(pb::command::Action::AbortAll(pb::AbortAll {}));
    serve
        .operator("alice")
        .send(halt)
        .await
        .expect("a halt still goes");

    serve
        .operator("alice")
        .resume(latch("db back"))
        .await
        .unwrap();
    assert_eq!(serve.store.latch().unwrap(), None);
    serve
        .operator("alice")
        .send(send_request(0, false))
        .await
        .expect("after the resume, attacks go again");
    agent.stop().await;
    let _ = serve.stop.send(true);
}

fn relay_status(agent: &str) -> serve_pb::RelayRequest {
    serve_pb::RelayRequest {
        agent_id: agent.to_string(),
        request: Some(serve_pb::Request {
            request_id: 0,
            call: Some(serve_pb::request::Call::Status(pb::StatusRequest {})),
        }),
    }
}

#[tokio::test]
async fn a_relay_is_taken_only_from_another_serve_and_cannot_change_a_command() {
    let serve = start_serve(&["web-1"], &[("alice", "operator")]).await;
    let _agent = serve.attached_agent("web-1").await;
    let relay = |id: &str| {
        troop_proto::serve_pb::coordinator_client::CoordinatorClient::new(serve.channel_as(id))
    };

    // An agent's or an operator's certificate may not relay: roles and the stream's
    // owner are not to be bypassed.
    for caller in ["web-1", "alice"] {
        let refused = relay(caller)
            .relay(relay_status("web-1"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{caller}: {refused:?}"
        );
        assert!(
            refused.message().contains("only another troop serve"),
            "{refused:?}"
        );
    }
    assert_eq!(serve.refusals("alice").len(), 1, "recorded");

    // Another serve's certificate may, for an agent whose stream is here.
    let mut peer = relay("coordinator");
    let answer = peer
        .relay(relay_status("web-1"))
        .await
        .unwrap()
        .into_inner();
    match answer.result {
        Some(serve_pb::answer::Result::Status(status)) => assert_eq!(status.agent_id, "web-1"),
        other => panic!("expected web-1's status, got {other:?}"),
    }
    let elsewhere = peer.relay(relay_status("web-9")).await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::Unavailable);
    assert!(
        elsewhere
            .message()
            .contains("\"web-9\" has no stream to this replica"),
        "{elsewhere:?}"
    );
    let empty = serve_pb::RelayRequest {
        agent_id: "web-1".into(),
        request: None,
    };
    assert_eq!(
        peer.relay(empty).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // A command altered on its way (here: signed by nobody) is the agent's to refuse.
    let forged = serve_pb::RelayRequest {
        agent_id: "web-1".into(),
        request: Some(serve_pb::Request {
            request_id: 0,
            call: Some(serve_pb::request::Call::Execute(pb::SignedCommand {
                payload: harmless_kill("web-1").encode_to_vec(),
                signature: vec![7; 64],
                key_id: "00".repeat(8),
            })),
        }),
    };
    match peer.relay(forged).await.unwrap().into_inner().result {
        Some(serve_pb::answer::Result::Failure(failure)) => {
            assert_eq!(
                Code::from(failure.code),
                Code::Unauthenticated,
                "{failure:?}"
            );
        }
        other => panic!("a forged command was not refused: {other:?}"),
    }
    let _ = serve.stop.send(true);
}

fn renew_request(csr: Vec<u8>) -> Vec<u8> {
    serve_pb::AgentMessage {
        body: Some(serve_pb::agent_message::Body::Renew(
            serve_pb::RenewCertificate { csr_der: csr },
        )),
    }
    .encode_to_vec()
}

/// The next message serve sends on a raw stream, decoded.
async fn next_message(replies: &mut tonic::Streaming<Vec<u8>>) -> serve_pb::ServeMessage {
    let bytes = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("serve answered")
        .unwrap()
        .unwrap();
    serve_pb::ServeMessage::decode(bytes.as_slice()).unwrap()
}

#[tokio::test]
async fn renewals_serve_cannot_sign_or_that_come_too_often_are_refused_on_the_stream() {
    // This serve has no [serve] ca_key.
    let serve = start_serve(&["web-2"], &[]).await;
    let (more, answer) = serve.attach_as("web-2", register("web-2", "web")).await;
    let mut replies = answer.expect("a valid registration is accepted");
    assert!(matches!(
        next_message(&mut replies).await.body,
        Some(serve_pb::serve_message::Body::Registered(_))
    ));
    let mut refusal = async |csr: Vec<u8>| match next_message(&mut replies).await.body {
        Some(serve_pb::serve_message::Body::Renewed(renewed)) => {
            assert!(renewed.certificate_pem.is_empty(), "{renewed:?}");
            renewed.refused
        }
        other => panic!(
            "not a Renewed: {other:?} (for a CSR of {} bytes)",
            csr.len()
        ),
    };
    more.send(renew_request(b"any".to_vec())).await.unwrap();
    let first = refusal(b"any".to_vec()).await;
    assert!(first.contains("ca_key is not set"), "{first}");
    more.send(renew_request(b"again".to_vec())).await.unwrap();
    let second = refusal(b"again".to_vec()).await;
    assert!(second.contains("renewed less than 10s ago"), "{second}");

    // Both in the access log; the stream is still up.
    let refused = serve.refusals("web-2");
    assert!(
        refused.iter().any(|d| d.contains("ca_key is not set")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|d| d.contains("renewed less than")),
        "{refused:?}"
    );
    assert!(
        serve.registry.get("web-2").is_some(),
        "the stream was dropped"
    );
    let _ = serve.stop.send(true);
}
