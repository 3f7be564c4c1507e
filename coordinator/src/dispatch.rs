//! Talking to many agents at once: bounded concurrency, a deadline per agent, and one
//! unreachable agent reported without failing the others.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;
use troop_proto::pb::agent_client::AgentClient;

use crate::client::{DialError, Dialer};
use crate::config::AgentEntry;
use troop_telemetry::error_chain;

/// Agents contacted at once.
pub const DEFAULT_CONCURRENCY: usize = 32;
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

/// The gRPC name of a code, as other gRPC tools print it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How to reach the fleet.
#[derive(Clone)]
pub struct Dispatcher {
    pub dialer: Dialer,
    pub concurrency: usize,
    pub agent_timeout: Duration,
}

impl Dispatcher {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            concurrency: DEFAULT_CONCURRENCY,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
        }
    }

    /// Runs `call` against each `(agent, input)`; results come back in input order.
    pub async fn each<I, T, F, Fut>(
        &self,
        work: Vec<(AgentEntry, I)>,
        call: F,
    ) -> Vec<(AgentEntry, Result<T, CallError>)>
    where
        F: Fn(AgentClient<Channel>, I) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let call = &call;
        let mut results: Vec<(usize, AgentEntry, Result<T, CallError>)> =
            futures::stream::iter(work.into_iter().enumerate())
                .map(|(index, (agent, input))| async move {
                    let outcome = tokio::time::timeout(self.agent_timeout, async {
                        let client = self.dialer.dial(&agent).await.map_err(unreachable)?;
                        call(client, input)
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|status| CallError::Status {
                                code: status.code(),
                                message: status.message().to_string(),
                            })
                    })
                    .await
                    .unwrap_or(Err(CallError::TimedOut(self.agent_timeout)));
                    (index, agent, outcome)
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
        results.sort_by_key(|(index, ..)| *index);
        results
            .into_iter()
            .map(|(_, agent, outcome)| (agent, outcome))
            .collect()
    }
}

fn unreachable(error: DialError) -> CallError {
    CallError::Unreachable(error_chain(&error))
}
