//! The operator API of `troop serve`, each call allowed by role and audited first
//! ([`super::access`]). Commands are recorded, signed when sent and delivered exactly as
//! the CLI would, under the operator's name.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;
use troop_common::listener::PeerInfo;
use troop_proto::serve_pb::operator_server::Operator;
use troop_proto::serve_pb::{self, call_failure, delivery};

use crate::audit::{AdhocRun, send_recorded};
use crate::config::{AgentEntry, Role};
use crate::enrolment;
use crate::latch::LatchError;
use crate::store::{RunDetail, StoreError};
use crate::wire;

use super::access::{Operators, call_span};
use super::runs;

/// Commands one Send may carry.
const MAX_COMMANDS: usize = 10_000;

impl Operators {
    /// An earlier run of this operator's, to record more of its commands in.
    fn own_run(&self, run: i64, operator: &str) -> Result<AdhocRun, Status> {
        let summary = self.stored_run(run, nothing_sent)?.run;
        if summary.operator != operator {
            let refusal = format!(
                "run {run} was begun by {:?}, not by {operator:?}",
                summary.operator
            );
            // The role allowed the call; what it asked for is refused, and audited too.
            self.record(operator, &format!("send into run {run}"), Some(&refusal));
            return Err(Status::permission_denied(refusal));
        }
        Ok(AdhocRun::resume_in(self.store.clone(), run))
    }

    /// Run `run` from the store: NOT_FOUND if there is none, else `failed` says why not.
    fn stored_run(&self, run: i64, failed: fn(StoreError) -> Status) -> Result<RunDetail, Status> {
        self.store.run(run).map_err(|error| match error {
            StoreError::NotFound { .. } => Status::not_found(format!("there is no run {run}")),
            error => failed(error),
        })
    }

    /// `EmergencyStop` (`stop`) or `Resume`, under the caller's own name.
    async fn latch_call(
        &self,
        request: Request<serve_pb::LatchRequest>,
        stop: bool,
    ) -> Result<Response<serve_pb::SendReply>, Status> {
        let call = if stop { "emergency stop" } else { "resume" };
        let span = call_span(call, &request);
        let operator = self.authorize(peer(&request), call, Role::Operator)?;
        span.record("troop.operator", &operator);
        let reason = request.into_inner().reason;
        let latched = if stop {
            self.latch.stop(&operator, &reason).instrument(span).await
        } else {
            self.latch.resume(&operator, &reason).instrument(span).await
        };
        let (run, deliveries) = latched.map_err(|error| match error {
            LatchError::Invalid(message) => Status::invalid_argument(message),
            store @ LatchError::Store(_) => Status::unavailable(store.to_string()),
        })?;
        Ok(Response::new(serve_pb::SendReply {
            deliveries: deliveries.iter().map(wire::delivery_out).collect(),
            run,
        }))
    }

    /// The fleet by id, built once per call: a lookup per command into a fresh list
    /// made a 1,000-agent Send quadratic.
    fn known(&self) -> BTreeMap<String, AgentEntry> {
        self.fleet
            .agents()
            .into_iter()
            .map(|agent| (agent.id.clone(), agent))
            .collect()
    }
}

fn peer<T>(request: &Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

fn unknown(id: &str) -> serve_pb::CallFailure {
    serve_pb::CallFailure {
        kind: call_failure::Kind::Unreachable as i32,
        message: format!(
            "serve has no open stream from agent {id:?} and no [[agents]] entry for it"
        ),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Operator for Operators {
    async fn list_agents(
        &self,
        request: Request<serve_pb::ListAgentsRequest>,
    ) -> Result<Response<serve_pb::AgentList>, Status> {
        self.authorize(peer(&request), "list agents", Role::Viewer)?;
        let agents = self.fleet.live_agents();
        Ok(Response::new(serve_pb::AgentList {
            agents,
            latch: self.latch.to_pb(),
        }))
    }

    async fn statuses(
        &self,
        request: Request<serve_pb::AgentIds>,
    ) -> Result<Response<serve_pb::StatusList>, Status> {
        self.authorize(peer(&request), "status", Role::Viewer)?;
        let ids = request.into_inner().agent_ids;
        let fleet = self.known();
        let (known, unknown_ids): (Vec<_>, Vec<_>) = ids
            .iter()
            .map(|id| (id, fleet.get(id).cloned()))
            .partition(|(_, agent)| agent.is_some());
        let agents: Vec<AgentEntry> = known.into_iter().filter_map(|(_, agent)| agent).collect();
        let mut statuses: Vec<serve_pb::StatusReply> = self
            .fleet
            .statuses(&agents)
            .await
            .iter()
            .map(|(agent, result)| wire::status_out(agent, result))
            .collect();
        statuses.extend(
            unknown_ids
                .into_iter()
                .map(|(id, _)| serve_pb::StatusReply {
                    agent_id: id.clone(),
                    result: Some(serve_pb::status_reply::Result::Failure(unknown(id))),
                }),
        );
        Ok(Response::new(serve_pb::StatusList { statuses }))
    }

    async fn send(
        &self,
        request: Request<serve_pb::SendRequest>,
    ) -> Result<Response<serve_pb::SendReply>, Status> {
        let span = call_span("send", &request);
        async move {
            let operator = self.authorize(peer(&request), "send commands", Role::Operator)?;
            tracing::Span::current().record("troop.operator", &operator);
            let send = request.into_inner();
            if send.commands.len() > MAX_COMMANDS {
                return Err(Status::invalid_argument(format!(
                    "{} commands in one call; at most {MAX_COMMANDS}",
                    send.commands.len()
                )));
            }
            let what: String = send
                .what
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
            use troop_proto::pb::command::Action;
            let actions = || send.commands.iter().filter_map(|c| c.action.as_ref());
            if actions().any(|a| matches!(a, Action::EmergencyStop(_) | Action::Resume(_))) {
                return Err(Status::invalid_argument(
                    "an emergency stop or a resume goes through the EmergencyStop or Resume call (`troop emergency-stop`, `troop resume`), which latch serve too",
                ));
            }
            // Serve signs what it sends: a trusted-key set from an operator would let one
            // plant their own key on every agent.
            if actions().any(|a| matches!(a, Action::Trust(_))) {
                return Err(Status::permission_denied(
                    "trusted signing keys change only by `troop pki rotate-signing-key` on the serve host",
                ));
            }
            if actions().any(|a| matches!(a, Action::Start(_))) {
                self.check_latch(&operator, &format!("send commands ({what})"))?;
            }
            let mut work = Vec::new();
            let mut slots: Vec<Result<usize, String>> = Vec::new();
            let fleet = self.known();
            for command in send.commands {
                match (fleet.get(&command.agent_id).cloned(), command.action) {
                    (Some(agent), Some(action)) => {
                        slots.push(Ok(work.len()));
                        work.push((agent, action));
                    }
                    (None, _) => slots.push(Err(command.agent_id)),
                    (Some(_), None) => {
                        return Err(Status::invalid_argument(format!(
                            "the command for {} has no action",
                            command.agent_id
                        )));
                    }
                }
            }
            let run = match send.run {
                0 => AdhocRun::begin_in(self.store.clone(), &what, send.seed, &operator)
                    .map_err(nothing_sent)?,
                run => self.own_run(run, &operator)?,
            };
            let deliveries = send_recorded(
                &self.fleet,
                &self.signer,
                Some(run.audit()),
                work,
                &serde_json::json!({}),
            )
            .await
            .map_err(nothing_sent)?;
            if !send.keep_open {
                run.finish(&deliveries);
            }
            let deliveries = slots
                .into_iter()
                .map(|slot| match slot {
                    Ok(index) => wire::delivery_out(&deliveries[index]),
                    Err(id) => serve_pb::Delivery {
                        agent_id: id.clone(),
                        result: Some(delivery::Result::Failure(unknown(&id))),
                        ..Default::default()
                    },
                })
                .collect();
            Ok(Response::new(serve_pb::SendReply {
                deliveries,
                run: run.id(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn emergency_stop(
        &self,
        request: Request<serve_pb::LatchRequest>,
    ) -> Result<Response<serve_pb::SendReply>, Status> {
        self.latch_call(request, true).await
    }

    async fn resume(
        &self,
        request: Request<serve_pb::LatchRequest>,
    ) -> Result<Response<serve_pb::SendReply>, Status> {
        self.latch_call(request, false).await
    }

    type RunCampaignStream = runs::Updates;

    async fn run_campaign(
        &self,
        request: Request<Streaming<serve_pb::RunControl>>,
    ) -> Result<Response<Self::RunCampaignStream>, Status> {
        runs::run(self, request).await.map(Response::new)
    }

    async fn runs(
        &self,
        request: Request<serve_pb::RunsRequest>,
    ) -> Result<Response<serve_pb::RunRecords>, Status> {
        self.authorize(peer(&request), "campaign history", Role::Viewer)?;
        let limit = request.into_inner().limit.clamp(1, 1000) as usize;
        let runs = self.store.runs(limit).map_err(store_failed)?;
        records(&runs)
    }

    async fn show_run(
        &self,
        request: Request<serve_pb::RunId>,
    ) -> Result<Response<serve_pb::RunRecords>, Status> {
        self.authorize(peer(&request), "campaign show", Role::Viewer)?;
        records(&self.stored_run(request.into_inner().run, store_failed)?)
    }

    async fn create_join_token(
        &self,
        request: Request<serve_pb::JoinTokenRequest>,
    ) -> Result<Response<serve_pb::JoinTokenReply>, Status> {
        let admin = self.authorize(peer(&request), "join token", Role::Admin)?;
        let asked = request.into_inner();
        let ca = self.fleet.config.tls.as_ref().map(|tls| tls.ca.clone());
        let ca_sha256 = ca
            .as_deref()
            .map(crate::pki::ca_sha256)
            .transpose()
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        let store = self.store.clone();
        let (token, expires_at_unix_ms) = tokio::task::spawn_blocking(move || {
            enrolment::create_join_token(
                &store,
                std::time::Duration::from_millis(asked.ttl_ms),
                asked.uses,
                Some(asked.agent_id).filter(|id| !id.is_empty()),
                asked.labels.into_iter().collect(),
                &admin,
            )
        })
        .await
        .map_err(|_| Status::internal("the join token task failed"))??;
        Ok(Response::new(serve_pb::JoinTokenReply {
            token,
            ca_sha256,
            expires_at_unix_ms,
        }))
    }

    async fn revoke(
        &self,
        request: Request<serve_pb::RevokeRequest>,
    ) -> Result<Response<serve_pb::RevokeReply>, Status> {
        let name = request.get_ref().name.clone();
        let admin = self.authorize(peer(&request), &format!("revoke {name:?}"), Role::Admin)?;
        let store = self.store.clone();
        let revoked_at_unix_ms =
            tokio::task::spawn_blocking(move || enrolment::revoke(&store, &name, &admin))
                .await
                .map_err(|_| Status::internal("the revocation task failed"))??;
        Ok(Response::new(serve_pb::RevokeReply { revoked_at_unix_ms }))
    }
}

fn nothing_sent(error: StoreError) -> Status {
    Status::unavailable(format!("audit store: {error}; nothing sent"))
}

fn store_failed(error: StoreError) -> Status {
    Status::unavailable(format!("audit store: {error}"))
}

fn records<T: serde::Serialize>(value: &T) -> Result<Response<serve_pb::RunRecords>, Status> {
    let json = serde_json::to_string(value)
        .map_err(|error| Status::internal(format!("cannot encode the records: {error}")))?;
    Ok(Response::new(serve_pb::RunRecords { json }))
}
