//! Every reason an agent refuses or fails a command, and the gRPC code each maps to.

use tonic::{Code, Status};

/// Why a command was not carried out. Messages name the problem and never key material.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    // Signature and key problems: UNAUTHENTICATED.
    #[error("command has no key_id")]
    MissingKeyId,
    #[error("key_id {key_id} is not a trusted coordinator key")]
    UnknownKey { key_id: String },
    #[error("signature is {len} bytes, an Ed25519 signature is 64")]
    MalformedSignature { len: usize },
    #[error("signature does not verify under trusted key {key_id}")]
    BadSignature { key_id: String },

    // Binding, freshness, replay and policy: PERMISSION_DENIED.
    #[error("command is addressed to agent {addressed_to:?}, this is agent {this_agent:?}")]
    WrongAgent {
        addressed_to: String,
        this_agent: String,
    },
    #[error("command expired {ago_ms} ms ago")]
    Expired { ago_ms: i64 },
    #[error("command is issued {ahead_ms} ms in the future, past the allowed clock skew")]
    IssuedInFuture { ahead_ms: i64 },
    #[error("command validity window is {window_ms} ms, the maximum is 300000 ms")]
    WindowTooLong { window_ms: u128 },
    #[error("command expires ({expires_at_unix_ms}) before it is issued ({issued_at_unix_ms})")]
    InvalidWindow {
        issued_at_unix_ms: i64,
        expires_at_unix_ms: i64,
    },
    #[error("command_id {command_id} was already used by a different command")]
    ReusedCommandId { command_id: String },
    #[error(
        "command_id {command_id} names a fault that is still active (or still being reverted) on this agent"
    )]
    FaultIdInUse { command_id: String },
    #[error(
        "command {command_id} expired before this agent's replay horizon: a command that old may have run and been forgotten"
    )]
    BeyondReplayHorizon { command_id: String },
    #[error("refused by local policy: {0}")]
    Policy(String),
    /// A signing-key rotation older than the one the agent follows (a late or replayed
    /// announcement); the message names both generations.
    #[error("{0}")]
    StaleTrust(String),

    // Bad parameters: INVALID_ARGUMENT.
    #[error("payload is not a valid Command: {0}")]
    MalformedPayload(prost::DecodeError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    // Well formed, but the agent's state forbids it now: FAILED_PRECONDITION.
    /// An emergency stop latches the agent; the message names who, when and why.
    #[error("{0}")]
    Latched(String),

    // Accepted, but the fault could not be carried out.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// A short stable name of the reason, for metrics labels: `bad_signature`, `policy`...
    pub fn reason(&self) -> &'static str {
        use Refusal::*;
        match self {
            MissingKeyId => "missing_key_id",
            UnknownKey { .. } => "unknown_key",
            MalformedSignature { .. } => "malformed_signature",
            BadSignature { .. } => "bad_signature",
            WrongAgent { .. } => "wrong_agent",
            Expired { .. } => "expired",
            IssuedInFuture { .. } => "issued_in_future",
            WindowTooLong { .. } => "window_too_long",
            InvalidWindow { .. } => "invalid_window",
            ReusedCommandId { .. } => "reused_command_id",
            FaultIdInUse { .. } => "fault_id_in_use",
            BeyondReplayHorizon { .. } => "beyond_replay_horizon",
            Policy(_) => "policy",
            StaleTrust(_) => "stale_trust",
            MalformedPayload(_) => "malformed_payload",
            InvalidArgument(_) => "invalid_argument",
            Latched(_) => "latched",
            NotFound(_) => "not_found",
            Unimplemented(_) => "unimplemented",
            Unavailable(_) => "unavailable",
            Internal(_) => "internal",
        }
    }

    /// A verdict on the command itself (bad signature, binding, freshness, replay, policy
    /// or parameters), as opposed to a failure to carry out an accepted command.
    pub fn is_refusal(&self) -> bool {
        is_refusal_code(self.code())
    }

    pub fn code(&self) -> Code {
        use Refusal::*;
        match self {
            MissingKeyId | UnknownKey { .. } | MalformedSignature { .. } | BadSignature { .. } => {
                Code::Unauthenticated
            }
            WrongAgent { .. }
            | Expired { .. }
            | IssuedInFuture { .. }
            | WindowTooLong { .. }
            | InvalidWindow { .. }
            | ReusedCommandId { .. }
            | FaultIdInUse { .. }
            | BeyondReplayHorizon { .. }
            | Policy(_)
            | StaleTrust(_) => Code::PermissionDenied,
            MalformedPayload(_) | InvalidArgument(_) => Code::InvalidArgument,
            Latched(_) => Code::FailedPrecondition,
            NotFound(_) => Code::NotFound,
            Unimplemented(_) => Code::Unimplemented,
            Unavailable(_) => Code::Unavailable,
            Internal(_) => Code::Internal,
        }
    }
}

/// The codes DESIGN.md gives refusals; any other error code is a failure.
pub fn is_refusal_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
    )
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        Status::new(refusal.code(), refusal.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!(Refusal::MissingKeyId.code(), Code::Unauthenticated);
        assert_eq!(
            Refusal::Expired { ago_ms: 1 }.code(),
            Code::PermissionDenied
        );
        assert_eq!(Refusal::Policy("x".into()).code(), Code::PermissionDenied);
        assert_eq!(
            Refusal::InvalidArgument("x".into()).code(),
            Code::InvalidArgument
        );
        let status = Status::from(Refusal::UnknownKey {
            key_id: "abcd".into(),
        });
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("abcd"));
    }
}
