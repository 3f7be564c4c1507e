//! The `Coordinator.Attach` service: an agent's stream is accepted only from an agent
//! certificate that names the id it registers, with a valid id and labels; then its
//! heartbeats keep it in the [`Registry`] and its answers reach the requests that asked.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use troop_common::identity::{FleetVerifier, Identity};
use troop_common::listener::PeerInfo;
use troop_common::names::{validate_agent_id, validate_label};
use troop_proto::serve_pb::coordinator_server::Coordinator;
use troop_proto::serve_pb::{self, agent_message, serve_message};

use super::flood::{Admit, AttachLimiter, BURST, REFILL_EVERY};
use super::{HEARTBEAT_EVERY, Link, Registration, Registry, SILENT_AFTER};
use crate::enrolment::Enrolment;
use crate::enrolment::certificate::CertInfo;
use crate::enrolment::renewal::Renewals;
use crate::enrolment::revocations::Revocations;
use crate::store::{AccessRecord, Store};

/// The agent's `Register` must arrive this soon after the stream opens.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued for one agent before senders wait.
const OUTBOX: usize = 256;
/// Labels one agent may report.
const MAX_LABELS: usize = 64;

pub struct Streams {
    pub registry: Arc<Registry>,
    pub verifier: Arc<FleetVerifier>,
    pub revocations: Arc<Revocations>,
    /// Signs the renewals agents ask for on their streams.
    pub enrolment: Enrolment,
    /// Every attach, allowed or refused, goes to its access log.
    pub store: Arc<Store>,
    pub limiter: AttachLimiter,
    /// Told of every agent that attaches (serve latches it while an emergency stop holds).
    pub attached: OnAttach,
}

/// What [`Streams`] calls with each agent that attaches, once its link is open, and the
/// signing-key generation it reported.
pub type OnAttach = Arc<dyn Fn(crate::config::AgentEntry, u64) + Send + Sync>;

fn record(store: &Store, caller: &str, allowed: bool, detail: String) {
    record_call(store, caller, "attach stream", allowed, detail);
}

fn record_call(store: &Store, caller: &str, call: &str, allowed: bool, detail: String) {
    let access = AccessRecord {
        at_ms: crate::signer::now_unix_ms(),
        caller: caller.to_string(),
        call: call.into(),
        allowed,
        detail,
    };
    if let Err(error) = store.record_access(&access) {
        tracing::error!(%error, "audit store: cannot record a call to the coordinator service");
    }
}

fn code_and_message(status: &Status) -> String {
    format!(
        "{}: {}",
        troop_proto::refusal::code_name(status.code()),
        status.message()
    )
}

/// Who called, from the certificate the connection proved, unless it is revoked.
pub fn caller(
    verifier: &FleetVerifier,
    revocations: &Revocations,
    peer: Option<&PeerInfo>,
) -> Result<Identity, Status> {
    let leaf = peer
        .and_then(|peer| peer.certificate.as_ref())
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let identity = verifier.identify(leaf).map_err(|reason| {
        Status::unauthenticated(format!("client certificate refused: {reason}"))
    })?;
    let names = match &identity {
        Identity::Agent(names) => names.clone(),
        Identity::Operator(name) => vec![name.clone()],
        Identity::Coordinator => Vec::new(),
    };
    match revocations.refusal(&names, CertInfo::read(leaf).as_ref()) {
        Some(reason) => Err(Status::unauthenticated(reason)),
        None => Ok(identity),
    }
}

/// Checks a registration against the certificate that carries it.
fn check(identity: &Identity, register: &serve_pb::Register) -> Result<(), Status> {
    let id = &register.agent_id;
    validate_agent_id(id)
        .map_err(|message| Status::invalid_argument(format!("agent id {id:?}: {message}")))?;
    match identity {
        Identity::Agent(_) if identity.is_agent(id) => {}
        Identity::Agent(names) => {
            return Err(Status::permission_denied(format!(
                "the certificate names {}, not the agent {id:?} this stream registers",
                names.join(", ")
            )));
        }
        other => {
            return Err(Status::permission_denied(format!(
                "only an agent's certificate may attach a stream, not {other}"
            )));
        }
    }
    if register.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "{} labels; at most {MAX_LABELS}",
            register.labels.len()
        )));
    }
    for (key, value) in &register.labels {
        validate_label(key, value)
            .map_err(|message| Status::invalid_argument(format!("label {key:?}: {message}")))?;
    }
    Ok(())
}

type Outgoing = Pin<Box<dyn Stream<Item = Result<serve_pb::ServeMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for Streams {
    type AttachStream = Outgoing;

    async fn relay(
        &self,
        request: Request<serve_pb::RelayRequest>,
    ) -> Result<Response<serve_pb::Answer>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let identity = caller(&self.verifier, &self.revocations, peer.as_ref())?;
        let relay = request.into_inner();
        if !matches!(identity, Identity::Coordinator) {
            let status = Status::permission_denied(format!(
                "only another troop serve (the coordinator's certificate) may relay, not {identity}"
            ));
            let who = match &identity {
                Identity::Agent(names) => names.join(", "),
                Identity::Operator(name) => name.clone(),
                Identity::Coordinator => troop_common::identity::COORDINATOR_NAME.into(),
            };
            record_call(&self.store, &who, "relay", false, code_and_message(&status));
            tracing::warn!(caller = %who, reason = %status.message(), "refused a relay");
            return Err(status);
        }
        let call = relay
            .request
            .and_then(|request| request.call)
            .ok_or_else(|| Status::invalid_argument("a relay carries one request"))?;
        let link = self.registry.get(&relay.agent_id).ok_or_else(|| {
            Status::unavailable(format!(
                "agent {:?} has no stream to this replica (it moved, or went away)",
                relay.agent_id
            ))
        })?;
        let result = link
            .call(call)
            .await
            .map_err(|error| Status::unavailable(error.0))?;
        Ok(Response::new(serve_pb::Answer {
            request_id: 0,
            result: Some(result),
        }))
    }

    async fn attach(
        &self,
        request: Request<Streaming<serve_pb::AgentMessage>>,
    ) -> Result<Response<Outgoing>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let address = peer
            .as_ref()
            .and_then(|peer| peer.remote)
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        let refused = |who: &str, status: Status| {
            tracing::warn!(%who, %address, code = ?status.code(), reason = %status.message(), "refused an agent stream");
            record(
                &self.store,
                who,
                false,
                format!("from {address}: {}", code_and_message(&status)),
            );
            status
        };
        let identity = caller(&self.verifier, &self.revocations, peer.as_ref())
            .map_err(|s| refused(&address, s))?;
        let who = match &identity {
            Identity::Agent(names) => names.join(","),
            other => other.to_string(),
        };
        let flood = match self.limiter.admit(&who, Instant::now()) {
            Admit::Yes { refused } => refused,
            Admit::No { first } => {
                let status = Status::resource_exhausted(format!(
                    "{identity} opened more than {BURST} streams within {}s; refusing until it slows down",
                    (REFILL_EVERY * BURST).as_secs()
                ));
                // One record per flood, not one per attempt.
                return Err(if first { refused(&who, status) } else { status });
            }
        };
        let refused = |status: Status| refused(&who, status);
        let mut inbound = request.into_inner();
        let register = match tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(serve_pb::AgentMessage {
                body: Some(agent_message::Body::Register(register)),
            }))) => register,
            Ok(Err(status)) => return Err(refused(status)),
            Err(_) => {
                return Err(refused(Status::deadline_exceeded(
                    "no Register within 10s of opening the stream",
                )));
            }
            Ok(_) => {
                return Err(refused(Status::invalid_argument(
                    "the first message on a stream must be Register",
                )));
            }
        };
        check(&identity, &register).map_err(refused)?;
        let (link, outbox, closed) = self.registry.insert(
            Registration {
                id: register.agent_id,
                labels: register.labels.into_iter().collect(),
                version: register.version,
                address: address.clone(),
                certificate: peer
                    .as_ref()
                    .and_then(|peer| peer.certificate.as_ref())
                    .and_then(|leaf| CertInfo::read(leaf)),
            },
            OUTBOX,
        );
        tracing::info!(agent = %link.id, %address, version = %link.version, "agent attached");
        let after_flood = if flood == 0 {
            String::new()
        } else {
            format!(", after refusing {flood} stream(s) as a flood")
        };
        record(
            &self.store,
            &link.id,
            true,
            format!("from {address}, version {}{after_flood}", link.version),
        );
        let registered = serve_pb::ServeMessage {
            body: Some(serve_message::Body::Registered(serve_pb::Registered {
                heartbeat_every_ms: HEARTBEAT_EVERY.as_millis() as u64,
            })),
        };
        // The outbox is new and empty: this cannot be full.
        link.tell(registered);
        (self.attached)(link.entry(), register.trust_generation);
        let (ended, ending) = oneshot::channel();
        tokio::spawn(read(
            self.registry.clone(),
            self.store.clone(),
            Renewals::new(self.enrolment.clone()),
            link,
            inbound,
            closed.clone(),
            ended,
        ));
        let mut closed = closed;
        // The agent's requests, then, if serve ended the stream for a broken message, why.
        let outgoing = ReceiverStream::new(outbox)
            .map(Ok)
            .take_until(async move { super::wait_closed(&mut closed).await })
            .chain(futures::stream::once(ending).filter_map(|why| async { why.ok().map(Err) }));
        Ok(Response::new(Box::pin(outgoing)))
    }
}

/// Why a stream ended: a broken message from the agent (told to it, and recorded), or
/// an ordinary end.
enum Ended {
    Broken(Status),
    Ordinary(String),
}

/// Reads one agent's stream until it ends, goes silent, is replaced, or breaks the
/// protocol (garbage, an oversized message, a second Register), which ends only it.
async fn read(
    registry: Arc<Registry>,
    store: Arc<Store>,
    mut renewals: Renewals,
    link: Arc<Link>,
    mut inbound: Streaming<serve_pb::AgentMessage>,
    mut closed: watch::Receiver<bool>,
    ended: oneshot::Sender<Status>,
) {
    let mut watchdog = tokio::time::interval(HEARTBEAT_EVERY);
    let broken = |why: &str| Ended::Broken(Status::invalid_argument(why));
    let end = loop {
        tokio::select! {
            received = inbound.message() => match received {
                Ok(Some(serve_pb::AgentMessage { body: Some(body) })) => match body {
                    agent_message::Body::Heartbeat(_) => link.touch(),
                    agent_message::Body::Answer(answer) => link.answered(answer),
                    agent_message::Body::Renew(request) => renewals.answer(&link, request).await,
                    agent_message::Body::Register(_) => break broken("registered twice on one stream"),
                },
                Ok(Some(_)) => break broken("an empty message"),
                Ok(None) => break Ended::Ordinary("the agent closed the stream".into()),
                Err(status) if status.code() == tonic::Code::Cancelled || status.code() == tonic::Code::Unknown => {
                    break Ended::Ordinary(code_and_message(&status));
                }
                Err(status) => break Ended::Broken(status),
            },
            _ = watchdog.tick() => {
                if !link.is_fresh(crate::signer::now_unix_ms()) {
                    crate::metrics::get().dropped_silent.inc();
                    break Ended::Ordinary(format!("no heartbeat for {}s", SILENT_AFTER.as_secs()));
                }
            }
            () = super::wait_closed(&mut closed) => break Ended::Ordinary("closed by serve (a newer stream, or serve stopping)".into()),
        }
    };
    match end {
        Ended::Ordinary(reason) => {
            tracing::warn!(agent = %link.id, address = %link.address, %reason, "agent stream ended");
        }
        Ended::Broken(status) => {
            let reason = code_and_message(&status);
            tracing::warn!(agent = %link.id, address = %link.address, %reason, "ended an agent stream that broke the protocol");
            record(
                &store,
                &link.id,
                false,
                format!("stream ended by serve: {reason}"),
            );
            let _ = ended.send(status);
        }
    }
    registry.remove(&link);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: &str, labels: &[(&str, &str)]) -> serve_pb::Register {
        serve_pb::Register {
            agent_id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_registration_must_match_its_certificate_and_be_well_formed() {
        let web_1 = Identity::Agent(vec!["web-1".into(), "web-1.example.net".into()]);
        check(&web_1, &register("web-1", &[("role", "web")])).unwrap();
        check(&web_1, &register("WEB-1.example.net", &[])).unwrap();
        for (identity, register, code, says) in [
            (
                &web_1,
                register("db-1", &[]),
                tonic::Code::PermissionDenied,
                "names web-1, web-1.example.net, not the agent \"db-1\"",
            ),
            (
                &Identity::Operator("alice".into()),
                register("alice", &[]),
                tonic::Code::PermissionDenied,
                "only an agent's certificate",
            ),
            (
                &Identity::Coordinator,
                register("web-1", &[]),
                tonic::Code::PermissionDenied,
                "only an agent's certificate",
            ),
            (
                &web_1,
                register("web 1", &[]),
                tonic::Code::InvalidArgument,
                "agent id",
            ),
            (
                &web_1,
                register("web-1", &[("role", "w b")]),
                tonic::Code::InvalidArgument,
                "label \"role\"",
            ),
        ] {
            let status = check(identity, &register).unwrap_err();
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(status.message().contains(says), "{}", status.message());
        }
        let many: Vec<(String, String)> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let flood = serve_pb::Register {
            agent_id: "web-1".into(),
            labels: many.into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(
            check(&web_1, &flood).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
