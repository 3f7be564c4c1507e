//! Building and signing commands.

use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use troop_proto::{key_id, pb, sign_command};

use crate::pki::{self, PkiError};

/// The coordinator's Ed25519 signing key; a signing-key rotation replaces it in a
/// running serve ([`crate::rotation`]).
pub struct Signer {
    key: RwLock<SigningKey>,
}

impl Signer {
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        Ok(Self::from_key(pki::load_signing_key(path)?))
    }

    pub fn from_key(key: SigningKey) -> Self {
        Self {
            key: RwLock::new(key),
        }
    }

    /// Signs with `key` from now on.
    pub fn replace(&self, key: SigningKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn key(&self) -> std::sync::RwLockReadGuard<'_, SigningKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The public half: what agents trust, and what checks the dashboard's tokens.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key().verifying_key()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.verifying_key())
    }

    pub fn sign(&self, command: &pb::Command) -> pb::SignedCommand {
        sign_command(command, &self.key())
    }
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A new command for one agent, with a fresh id, valid from now for `validity`, in the
/// trace of the current span.
pub fn new_command(agent_id: &str, action: pb::command::Action, validity: Duration) -> pb::Command {
    let now = now_unix_ms();
    let trace = troop_telemetry::TraceContext::current();
    pb::Command {
        command_id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent_id.to_string(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: now + validity.as_millis() as i64,
        trace_context: (!trace.is_empty()).then_some(pb::TraceContext {
            traceparent: trace.traceparent,
            tracestate: trace.tracestate,
        }),
        action: Some(action),
    }
}
