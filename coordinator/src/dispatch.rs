//! Talking to many agents at once: bounded concurrency, a deadline per agent, and one
//! unreachable agent reported without failing the others. An agent with a stream open to
//! this `troop serve` is reached down it, one attached to another replica sharing the
//! store through that replica; any other is dialled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use troop_proto::serve_pb::{answer, request};

use crate::client::{DialError, Dialer, KeptChannels};
use crate::config::AgentEntry;
use crate::live::{Link, Registry};
use crate::signer::{Signer, now_unix_ms};
use crate::store::PublishedStream;
use sha2::{Digest, Sha256};
use troop_proto::pb;
use troop_telemetry::error_chain;

/// Agents dialled at once (each a connection, a handshake and a call).
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Calls in flight at once in all: a call on an agent's open stream is one message on a
/// connection that already exists, so far more of those go out together than dials.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Connecting (TCP and TLS) to one agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting plus answering, per agent; longer than an agent's own 10 s request limit,
/// so a slow agent answers with its own error rather than leaving the outcome unknown.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why one agent did not answer with a result.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    Unreachable(String),
    TimedOut(Duration),
    /// The agent answered with an error status.
    Status {
        code: tonic::Code,
        message: String,
    },
}

impl CallError {
    /// Refusals are the agent's verdict on the command; other errors are failures.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CallError::Status { code, .. } if troop_proto::refusal::is_refusal_code(*code))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            CallError::TimedOut(after) => write!(
                f,
                "no answer within {}s: the command may or may not have run",
                after.as_secs_f32()
            ),
            CallError::Status { code, message } => {
                write!(f, "{}: {message}", code_name(*code))
            }
        }
    }
}

pub use troop_proto::refusal::code_name;

/// How one agent is reached.
enum Route {
    Stream(Arc<Link>),
    Relay(PublishedStream),
    Dial,
}

/// One request to one agent.
pub enum Call {
    Execute(pb::SignedCommand),
    Status,
}

/// Its answer.
pub enum Reply {
    Receipt(pb::Receipt),
    Status(Box<pb::AgentStatus>),
}

/// How to reach the fleet.
#[derive(Clone)]
pub struct Dispatcher {
    pub dialer: Dialer,
    /// Agents dialled at once; calls on open streams are bounded by `MAX_IN_FLIGHT`.
    pub concurrency: usize,
    pub agent_timeout: Duration,
    /// The streams of agents that dialled in (in `troop serve`).
    pub streams: Option<Arc<Registry>>,
    /// Channels to static agents kept between calls (in `troop serve`); else one per call.
    pub kept: Option<Arc<KeptChannels>>,
}

impl Dispatcher {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            concurrency: DEFAULT_CONCURRENCY,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            streams: None,
            kept: None,
        }
    }

    /// Sends each agent the request `make` builds from its input, once the agent is
    /// reached (dialled, or its stream found), so what it stamps is fresh. Results come
    /// back in input order.
    pub async fn each<I>(
        &self,
        work: Vec<(AgentEntry, I)>,
        make: impl Fn(I) -> Call,
    ) -> Vec<(AgentEntry, Result<Reply, CallError>)> {
        let make = &make;
        let dials = &tokio::sync::Semaphore::new(self.concurrency.max(1));
        let mut results: Vec<(usize, AgentEntry, Result<Reply, CallError>)> =
            futures::stream::iter(work.into_iter().enumerate())
                .map(|(index, (agent, input))| async move {
                    let route = self.route(&agent.id);
                    // Waiting for a turn to dial is not the agent's time to answer.
                    let _dialling = match route {
                        Route::Dial => Some(dials.acquire().await.expect("never closed")),
                        _ => None,
                    };
                    let outcome = tokio::time::timeout(
                        self.agent_timeout,
                        self.call(&agent, route, input, make),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        // A kept channel that hangs is not kept.
                        if let Some(kept) = &self.kept {
                            kept.forget(&agent);
                        }
                        Err(CallError::TimedOut(self.agent_timeout))
                    });
                    (index, agent, outcome)
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
        results.sort_by_key(|(index, ..)| *index);
        results
            .into_iter()
            .map(|(_, agent, outcome)| (agent, outcome))
            .collect()
    }

    /// How `id` is reached: its stream here, a stream another replica holds, or a dial.
    fn route(&self, id: &str) -> Route {
        let Some(live) = &self.streams else {
            return Route::Dial;
        };
        match live.get(id) {
            Some(link) => Route::Stream(link),
            None => live.elsewhere.get(id).map_or(Route::Dial, Route::Relay),
        }
    }

    async fn call<I>(
        &self,
        agent: &AgentEntry,
        route: Route,
        input: I,
        make: impl Fn(I) -> Call,
    ) -> Result<Reply, CallError> {
        let streamed = |input| match make(input) {
            Call::Execute(signed) => request::Call::Execute(signed),
            Call::Status => request::Call::Status(pb::StatusRequest {}),
        };
        let answered = match route {
            Route::Stream(link) => link.call(streamed(input)).await,
            Route::Relay(stream) => {
                let live = self
                    .streams
                    .as_ref()
                    .expect("a relay route comes from the registry");
                live.elsewhere
                    .relay(&self.dialer, &stream, streamed(input))
                    .await
            }
            // Signed only once dialled: fresh, and never for an agent that cannot be reached.
            Route::Dial => return self.dial_and_call(agent, input, make).await,
        };
        match answered {
            Ok(answer::Result::Receipt(receipt)) => Ok(Reply::Receipt(receipt)),
            Ok(answer::Result::Status(status)) => Ok(Reply::Status(Box::new(status))),
            Ok(answer::Result::Failure(failure)) => Err(CallError::Status {
                code: tonic::Code::from(failure.code),
                message: failure.message,
            }),
            Err(error) => Err(CallError::Unreachable(error.0)),
        }
    }

    async fn dial_and_call<I>(
        &self,
        agent: &AgentEntry,
        input: I,
        make: impl Fn(I) -> Call,
    ) -> Result<Reply, CallError> {
        let mut client = match &self.kept {
            Some(kept) => kept.client(&self.dialer, agent).await,
            None => self.dialer.dial(agent).await,
        }
        .map_err(unreachable)?;
        let answered = match make(input) {
            Call::Execute(signed) => client
                .execute(signed)
                .await
                .map(|r| Reply::Receipt(r.into_inner())),
            Call::Status => client
                .status(pb::StatusRequest {})
                .await
                .map(|r| Reply::Status(Box::new(r.into_inner()))),
        };
        if let (Some(kept), Err(status)) = (&self.kept, &answered)
            && matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            )
        {
            kept.forget(agent);
        }
        answered.map_err(|status| CallError::Status {
            code: status.code(),
            message: status.message().to_string(),
        })
    }
}

/// One command sent to one agent, and what came back.
#[derive(Debug)]
pub struct Delivery {
    pub agent: AgentEntry,
    pub command_id: String,
    /// SHA-256 of the signature it carried (hex); empty if it was never signed (the agent
    /// could not be dialled).
    pub signature_sha256: String,
    pub result: Result<pb::Receipt, CallError>,
}

impl Dispatcher {
    /// Signs and sends each agent its command. Each command's validity window is stamped
    /// and signed only once its agent is dialled, so on a large or slow fleet the last
    /// commands are as fresh as the first. Results come back in input order.
    pub async fn sign_and_send(
        &self,
        signer: &Signer,
        work: Vec<(AgentEntry, pb::Command)>,
    ) -> Vec<Delivery> {
        let signatures = Mutex::new(HashMap::new());
        let ids: Vec<String> = work.iter().map(|(_, c)| c.command_id.clone()).collect();
        let results = self
            .each(work, |mut command: pb::Command| {
                let validity = command
                    .expires_at_unix_ms
                    .saturating_sub(command.issued_at_unix_ms);
                command.issued_at_unix_ms = now_unix_ms();
                command.expires_at_unix_ms = command.issued_at_unix_ms.saturating_add(validity);
                let signed = signer.sign(&command);
                signatures.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    command.command_id.clone(),
                    hex::encode(Sha256::digest(&signed.signature)),
                );
                Call::Execute(signed)
            })
            .await;
        let mut signatures = signatures.into_inner().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .zip(ids)
            .map(|((agent, result), command_id)| Delivery {
                signature_sha256: signatures.remove(&command_id).unwrap_or_default(),
                agent,
                command_id,
                result: result.and_then(|reply| match reply {
                    Reply::Receipt(receipt) => Ok(receipt),
                    Reply::Status(_) => Err(wrong_reply()),
                }),
            })
            .collect()
    }
}

/// An agent that answered a request with the answer to another kind.
pub fn wrong_reply() -> CallError {
    CallError::Status {
        code: tonic::Code::Internal,
        message: "the agent answered with the wrong kind of reply".into(),
    }
}

fn unreachable(error: DialError) -> CallError {
    CallError::Unreachable(error_chain(&error))
}
