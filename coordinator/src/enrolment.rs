//! Hosts join the fleet themselves: an admin makes a join token (`troop pki join-token`),
//! and the new host's `troop-agent enroll` trades one use of it for a certificate of a key
//! it generated and keeps. Serve signs with the fleet CA's key, which never leaves the
//! serve host; it remembers each certificate it issued, so `troop pki revoke` can refuse
//! a name at once (see [`revocations`]).

pub mod certificate;
pub mod renewal;
pub mod revocations;
pub mod token;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use tonic::{Request, Response, Status};
use troop_common::listener::PeerInfo;
use troop_common::names::{validate_agent_id, validate_label};
use troop_proto::serve_pb::{self, enrolment_server};

use crate::pki::FleetCa;
use crate::store::{JoinToken, Redeemed, Store};

/// Join tokens last at most this long: a token is a credential in transit.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Uses one token may have (a token for an autoscaling group's launches).
pub const MAX_TOKEN_USES: u32 = 10_000;
/// Labels a token may give.
const MAX_LABELS: usize = 64;

/// `Enrolment.Enroll` on serve's port.
#[derive(Clone)]
pub struct Enrolment {
    /// The fleet CA with its key; without one (`[serve] ca_key` unset) serve enrols nobody.
    pub ca: Option<Arc<FleetCa>>,
    pub store: Arc<Store>,
    /// The keys agents trust to sign commands, SPKI PEM each, until a signing-key
    /// rotation in the store names others.
    pub signing_keys_pem: Vec<String>,
    pub lifetime: Duration,
}

/// The SPKI PEM of a command-signing key, as an agent's `trust.coordinator_keys` reads it.
pub fn signing_key_pem(key: &ed25519_dalek::VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 public key encodes")
}

/// Makes a join token and stores its hash; returns the token and when it expires.
pub fn create_join_token(
    store: &Store,
    ttl: Duration,
    uses: u32,
    agent_id: Option<String>,
    labels: BTreeMap<String, String>,
    created_by: &str,
) -> Result<(String, i64), TokenRequestError> {
    let invalid = |what: String| TokenRequestError::Invalid(what);
    if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
        return Err(invalid(format!(
            "a join token lasts from 1s to 30d, not {}",
            troop_common::units::format_duration(ttl)
        )));
    }
    if !(1..=MAX_TOKEN_USES).contains(&uses) {
        return Err(invalid(format!(
            "a join token has 1 to {MAX_TOKEN_USES} uses, not {uses}"
        )));
    }
    if let Some(id) = &agent_id {
        validate_agent_id(id).map_err(|m| invalid(format!("agent id {id:?}: {m}")))?;
        crate::pki::check_agent_name(id).map_err(|e| invalid(e.to_string()))?;
    }
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "{} labels; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (key, value) in &labels {
        validate_label(key, value).map_err(|m| invalid(format!("label {key:?}: {m}")))?;
    }
    let token = token::new_token().map_err(|e| TokenRequestError::Other(e.to_string()))?;
    let expires = store
        .add_join_token(
            &token::token_sha256(&token),
            &JoinToken {
                agent_id,
                labels,
                uses,
                ttl,
                created_by: created_by.to_owned(),
            },
        )
        .map_err(|e| TokenRequestError::Other(e.to_string()))?;
    Ok((token, expires))
}

/// Revokes every certificate for `name` issued until now (serve cuts off its streams
/// within [`revocations::REFRESH_EVERY`]); returns when.
pub fn revoke(store: &Store, name: &str, by: &str) -> Result<i64, TokenRequestError> {
    troop_common::names::check_dns_name(name, false)
        .map_err(|m| TokenRequestError::Invalid(format!("{name:?}: {m}")))?;
    if name.eq_ignore_ascii_case(troop_common::identity::COORDINATOR_NAME) {
        return Err(TokenRequestError::Invalid(format!(
            "{name:?} is serve's own certificate; re-issue the PKI instead of revoking it"
        )));
    }
    store
        .revoke(name, by)
        .map_err(|e| TokenRequestError::Other(e.to_string()))
}

/// Why no join token was made, or no name revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    #[error("{0}")]
    Invalid(String),
    #[error("audit store: {0}")]
    Other(String),
}

impl From<TokenRequestError> for Status {
    fn from(error: TokenRequestError) -> Self {
        match error {
            TokenRequestError::Invalid(message) => Status::invalid_argument(message),
            TokenRequestError::Other(message) => Status::internal(message),
        }
    }
}

impl Enrolment {
    /// The keys the fleet trusts now: the newest rotation's, else the configured one.
    fn trusted_keys_pem(&self) -> Result<Vec<String>, crate::store::StoreError> {
        Ok(match self.store.signing_generation()? {
            Some(generation) => generation.public_keys.iter().map(signing_key_pem).collect(),
            None => self.signing_keys_pem.clone(),
        })
    }

    fn enrol(&self, request: &serve_pb::EnrollRequest) -> Result<serve_pb::EnrollReply, Status> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this troop serve does not enrol agents: its [serve] ca_key is not set",
            )
        })?;
        token::check_shape(&request.token).map_err(Status::unauthenticated)?;
        for (what, id) in [
            ("agent id", &request.agent_id),
            ("hostname", &request.hostname),
        ] {
            if !id.is_empty() {
                validate_agent_id(id)
                    .map_err(|m| Status::invalid_argument(format!("{what} {id:?}: {m}")))?;
            }
        }
        let hash = token::token_sha256(&request.token);
        let store_error =
            |e: crate::store::StoreError| Status::internal(format!("audit store: {e}"));
        // Check first, sign, then spend the use: a bad request costs the token nothing.
        let granted = |redeemed: Redeemed| match redeemed {
            Redeemed::Granted { agent_id, labels } => Ok((agent_id, labels)),
            refused => Err(token_refusal(&refused, &request.agent_id)),
        };
        let (agent_id, labels) = granted(
            self.store
                .check_join_token(&hash, &request.agent_id)
                .map_err(store_error)?,
        )?;
        // Neither the token nor the host named an id: the host's name is it.
        let agent_id = match (agent_id.is_empty(), request.hostname.is_empty()) {
            (false, _) => agent_id,
            (true, false) => request.hostname.clone(),
            (true, true) => {
                return Err(Status::invalid_argument(
                    "no agent id: the join token binds none, and the host gave neither an id (--id) nor its host name",
                ));
            }
        };
        let issued = ca
            .sign_agent_csr(&agent_id, &request.csr_der, self.lifetime)
            .map_err(|e| Status::invalid_argument(troop_telemetry::error_chain(&e)))?;
        granted(
            self.store
                .redeem_join_token(&hash, &request.agent_id)
                .map_err(store_error)?,
        )?;
        self.store
            .record_certificate(&issued.serial, &agent_id, issued.not_after_unix_ms)
            .map_err(store_error)?;
        Ok(serve_pb::EnrollReply {
            agent_id,
            certificate_pem: issued.pem,
            ca_pem: ca.cert_pem().to_string(),
            signing_keys_pem: self.trusted_keys_pem().map_err(store_error)?,
            labels: labels.into_iter().collect(),
            not_after_unix_ms: issued.not_after_unix_ms,
        })
    }
}

fn token_refusal(refused: &Redeemed, asked: &str) -> Status {
    match refused {
        Redeemed::Granted { .. } => Status::internal("granted"),
        Redeemed::Unknown => Status::unauthenticated("unknown join token"),
        Redeemed::Expired { expired_at_ms } => Status::unauthenticated(format!(
            "the join token expired at {}",
            crate::describe::unix_ms_text(*expired_at_ms)
        )),
        Redeemed::UsedUp => Status::unauthenticated("the join token has been used up"),
        Redeemed::OtherId { bound } => Status::permission_denied(format!(
            "the join token is for agent {bound:?}, not {asked:?}"
        )),
    }
}

#[tonic::async_trait]
impl enrolment_server::Enrolment for Enrolment {
    async fn enroll(
        &self,
        request: Request<serve_pb::EnrollRequest>,
    ) -> Result<Response<serve_pb::EnrollReply>, Status> {
        let address = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.remote)
            .map_or_else(|| "?".to_string(), |a: SocketAddr| a.to_string());
        let request = request.into_inner();
        let this = self.clone();
        let asked = request.agent_id.clone();
        let result = tokio::task::spawn_blocking(move || this.enrol(&request))
            .await
            .unwrap_or_else(|_| Err(Status::internal("the enrolment task failed")));
        match &result {
            Ok(reply) => {
                self.store
                    .record_call(&reply.agent_id, &format!("enrol from {address}"), None)
            }
            Err(status) => self.store.record_call(
                &format!("{address} (asking to be {asked:?})"),
                "enrol",
                Some(&format!(
                    "{}: {}",
                    troop_proto::refusal::code_name(status.code()),
                    status.message()
                )),
            ),
        }
        result.map(Response::new)
    }
}
