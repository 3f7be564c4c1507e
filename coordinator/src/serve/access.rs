//! Who may call serve's operator API: an operator's client certificate, looked up by name
//! in `[[operators]]`, each call allowed by role (viewer reads, operator acts, admin
//! administers) and recorded in the store's access log, allowed or refused; and the span
//! each call's work runs in.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tonic::{Request, Status};
use troop_common::identity::{FleetVerifier, Identity};
use troop_common::listener::PeerInfo;

use crate::config::Role;
use crate::enrolment::revocations::Revocations;
use crate::fleet::Fleet;
use crate::latch::FleetLatch;
use crate::live::streams::caller;
use crate::signer::Signer;
use crate::store::Store;
use crate::trace_metadata::continue_trace;

pub struct Operators {
    pub fleet: Fleet,
    pub store: Arc<Store>,
    pub signer: Arc<Signer>,
    pub verifier: Arc<FleetVerifier>,
    pub revocations: Arc<Revocations>,
    /// Turns true when serve stops: campaigns operators run are then cancelled.
    pub stopping: watch::Receiver<bool>,
    /// Those runs, which serve waits for (they revert) before it closes agents' streams.
    pub runs: TaskTracker,
    /// The emergency stop: while set, no attack or campaign run.
    pub latch: Arc<FleetLatch>,
}

impl Operators {
    /// Who called and whether their role allows `call`; recorded either way.
    pub(super) fn authorize(
        &self,
        peer: Option<&PeerInfo>,
        call: &str,
        needs: Role,
    ) -> Result<String, Status> {
        let (who, verdict) = match caller(&self.verifier, &self.revocations, peer) {
            Err(status) => {
                let address = peer
                    .and_then(|peer| peer.remote)
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
                (address, Err(status))
            }
            Ok(identity) => {
                let who = match &identity {
                    Identity::Operator(name) => name.clone(),
                    Identity::Coordinator => "coordinator".to_string(),
                    agent => agent.to_string(),
                };
                let verdict = self.role_allows(&identity, call, needs);
                (who, verdict)
            }
        };
        self.record(&who, call, verdict.as_ref().err().map(Status::message));
        verdict.map(|()| who)
    }

    fn role_allows(&self, identity: &Identity, call: &str, needs: Role) -> Result<(), Status> {
        let (name, role) = match identity {
            Identity::Operator(name) => (name.as_str(), self.fleet.config.role_of(name)),
            // The coordinator's own certificate is serve's own host: every role.
            Identity::Coordinator => ("coordinator", Some(Role::Admin)),
            agent @ Identity::Agent(_) => {
                return Err(Status::permission_denied(format!(
                    "an {agent} cannot use the operator API"
                )));
            }
        };
        match role {
            None => Err(Status::permission_denied(format!(
                "operator {name:?} is not listed in serve's [[operators]]"
            ))),
            Some(role) if role < needs => Err(Status::permission_denied(format!(
                "{call} needs the {} role; operator {name:?} is a {}",
                needs.name(),
                role.name()
            ))),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn record(&self, who: &str, call: &str, refused: Option<&str>) {
        self.store.record_call(who, call, refused);
    }

    /// FAILED_PRECONDITION naming the emergency stop while latched; the refusal audited.
    pub(super) fn check_latch(&self, operator: &str, call: &str) -> Result<(), Status> {
        match self.latch.refusal() {
            None => Ok(()),
            Some(refusal) => {
                self.record(operator, call, Some(&refusal));
                Err(Status::failed_precondition(refusal))
            }
        }
    }
}

/// The span of one operator call, a child of the caller's span when the call names one.
pub(super) fn call_span<T>(call: &str, request: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!(
        "operator call",
        otel.name = format!("troop serve {call}"),
        otel.kind = "server",
        troop.operator = tracing::field::Empty,
    );
    continue_trace(&span, request.metadata());
    span
}
