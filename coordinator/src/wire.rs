//! The operator API's messages to and from the dispatcher's own types, for both ends:
//! `troop serve` answering, and a CLI with `[coordinator]` reading the answers.

pub mod run;

use troop_proto::serve_pb::{self, call_failure::Kind, delivery, status_reply};

use crate::config::AgentEntry;
use crate::dispatch::{CallError, Delivery};
use troop_proto::pb;

pub fn failure(error: &CallError) -> serve_pb::CallFailure {
    match error {
        CallError::Unreachable(reason) => serve_pb::CallFailure {
            kind: Kind::Unreachable as i32,
            message: reason.clone(),
            ..Default::default()
        },
        CallError::TimedOut(after) => serve_pb::CallFailure {
            kind: Kind::TimedOut as i32,
            timeout_ms: after.as_millis() as u64,
            ..Default::default()
        },
        CallError::Status { code, message } => serve_pb::CallFailure {
            kind: Kind::Status as i32,
            code: *code as i32,
            message: message.clone(),
            timeout_ms: 0,
        },
    }
}

pub fn call_error(failure: serve_pb::CallFailure) -> CallError {
    match Kind::try_from(failure.kind) {
        Ok(Kind::TimedOut) => {
            CallError::TimedOut(std::time::Duration::from_millis(failure.timeout_ms))
        }
        Ok(Kind::Status) => CallError::Status {
            code: tonic::Code::from(failure.code),
            message: failure.message,
        },
        _ => CallError::Unreachable(failure.message),
    }
}

pub fn delivery_out(delivery: &Delivery) -> serve_pb::Delivery {
    serve_pb::Delivery {
        agent_id: delivery.agent.id.clone(),
        command_id: delivery.command_id.clone(),
        signature_sha256: delivery.signature_sha256.clone(),
        result: Some(match &delivery.result {
            Ok(receipt) => delivery::Result::Receipt(receipt.clone()),
            Err(error) => delivery::Result::Failure(failure(error)),
        }),
    }
}

/// A delivery as the CLI reports it; `agent` is the entry it was sent to.
pub fn delivery_in(agent: AgentEntry, delivery: serve_pb::Delivery) -> Delivery {
    Delivery {
        agent,
        command_id: delivery.command_id,
        signature_sha256: delivery.signature_sha256,
        result: match delivery.result {
            Some(delivery::Result::Receipt(receipt)) => Ok(receipt),
            Some(delivery::Result::Failure(failure)) => Err(call_error(failure)),
            None => Err(CallError::Unreachable("serve sent no result".into())),
        },
    }
}

pub fn status_out(
    agent: &AgentEntry,
    result: &Result<pb::AgentStatus, CallError>,
) -> serve_pb::StatusReply {
    serve_pb::StatusReply {
        agent_id: agent.id.clone(),
        result: Some(match result {
            Ok(status) => status_reply::Result::Status(status.clone()),
            Err(error) => status_reply::Result::Failure(failure(error)),
        }),
    }
}

pub fn status_in(reply: serve_pb::StatusReply) -> Result<pb::AgentStatus, CallError> {
    match reply.result {
        Some(status_reply::Result::Status(status)) => Ok(status),
        Some(status_reply::Result::Failure(failure)) => Err(call_error(failure)),
        None => Err(CallError::Unreachable("serve sent no result".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_survive_the_trip() {
        for error in [
            CallError::Unreachable("down".into()),
            CallError::TimedOut(std::time::Duration::from_secs(15)),
            CallError::Status {
                code: tonic::Code::PermissionDenied,
                message: "policy".into(),
            },
        ] {
            assert_eq!(call_error(failure(&error)), error);
        }
    }
}
