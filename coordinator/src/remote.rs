//! A CLI with a `[coordinator]` section: every command goes through that `troop serve`'s
//! operator API, under the operator's client certificate. Serve holds the signing key,
//! records every call and reaches the agents; this side only picks and reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use troop_common::identity::COORDINATOR_NAME;
use troop_proto::pb;
use troop_proto::serve_pb::{self, operator_client::OperatorClient, run_control, run_update};

use crate::campaign::events::{Progress, RunReport};
use crate::config::{AgentEntry, RemoteCoordinator};
use crate::dispatch::{CONNECT_TIMEOUT, CallError, Delivery, code_name};
use crate::store::{RunDetail, RunSummary};
use crate::trace_metadata::traced;
use crate::wire::{self, run};

/// Larger than a command: a whole fleet's statuses come back in one answer.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Serve refused the call: the operator's role (or no role at all), or an emergency
/// stop's latch.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}: {reason}", code_name(*.code))]
pub struct Refused {
    pub what: String,
    pub code: tonic::Code,
    pub reason: String,
}

/// The operator API of one `troop serve`.
#[derive(Clone)]
pub struct Remote {
    pub address: String,
    client: OperatorClient<Channel>,
}

impl Remote {
    /// Prepares the channel to `remote` with `tls`, the client config made of its
    /// `[coordinator]` cert, key and ca; it connects on first use.
    pub fn new(remote: &RemoteCoordinator, tls: Arc<ClientConfig>) -> anyhow::Result<Self> {
        let connector = TlsConnector::from(tls);
        let address = remote.address.clone();
        let target = address.clone();
        // The URI only labels requests; the connector decides where bytes go, and serve's
        // certificate must name the coordinator whatever address was dialled.
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let connector = connector.clone();
                let target = target.clone();
                async move {
                    let tcp = TcpStream::connect(&target).await?;
                    tcp.set_nodelay(true)?;
                    let name =
                        ServerName::try_from(COORDINATOR_NAME).map_err(std::io::Error::other)?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }));
        Ok(Self {
            address,
            client: OperatorClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES),
        })
    }

    fn refused(&self, call: &str, status: tonic::Status) -> anyhow::Error {
        let what = format!("troop serve at {}: {call}", self.address);
        if matches!(
            status.code(),
            tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition
        ) {
            return Refused {
                what,
                code: status.code(),
                reason: status.message().to_string(),
            }
            .into();
        }
        anyhow::anyhow!("{what}: {}: {}", code_name(status.code()), status.message())
    }

    /// The live fleet as serve sees it, and serve's latch if an emergency stop set it.
    pub async fn agents(&self) -> anyhow::Result<(Vec<serve_pb::LiveAgent>, Option<pb::Latch>)> {
        let mut client = self.client.clone();
        let list = client
            .list_agents(serve_pb::ListAgentsRequest {})
            .await
            .map_err(|status| self.refused("list agents", status))?
            .into_inner();
        Ok((list.agents, list.latch))
    }

    /// Has serve latch itself and every agent it knows (`stop`), or lift the latch; its
    /// run, and what each agent answered.
    pub async fn latch(&self, stop: bool, reason: &str) -> anyhow::Result<(i64, Vec<Delivery>)> {
        let mut client = self.client.clone();
        let request = serve_pb::LatchRequest {
            reason: reason.to_string(),
        };
        let (call, reply) = if stop {
            (
                "emergency stop",
                client.emergency_stop(traced(request)).await,
            )
        } else {
            ("resume", client.resume(traced(request)).await)
        };
        let reply = reply
            .map_err(|status| self.refused(call, status))?
            .into_inner();
        let deliveries = reply
            .deliveries
            .into_iter()
            .map(|delivery| {
                let agent = AgentEntry {
                    id: delivery.agent_id.clone(),
                    address: String::new(),
                    labels: BTreeMap::new(),
                };
                wire::delivery_in(agent, delivery)
            })
            .collect();
        Ok((reply.run, deliveries))
    }

    /// A join token from serve (admin): the token, the CA's fingerprint, its expiry.
    pub async fn join_token(
        &self,
        request: serve_pb::JoinTokenRequest,
    ) -> anyhow::Result<serve_pb::JoinTokenReply> {
        let mut client = self.client.clone();
        Ok(client
            .create_join_token(request)
            .await
            .map_err(|status| self.refused("join token", status))?
            .into_inner())
    }

    /// Revokes `name` in serve (admin); when it took effect.
    pub async fn revoke(&self, name: &str) -> anyhow::Result<i64> {
        let mut client = self.client.clone();
        Ok(client
            .revoke(serve_pb::RevokeRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|status| self.refused("revoke", status))?
            .into_inner()
            .revoked_at_unix_ms)
    }

    /// Each agent's status, asked by serve now.
    pub async fn statuses(
        &self,
        agents: &[AgentEntry],
    ) -> anyhow::Result<Vec<(AgentEntry, Result<pb::AgentStatus, CallError>)>> {
        let mut client = self.client.clone();
        let ids = agents.iter().map(|agent| agent.id.clone()).collect();
        let replies = client
            .statuses(serve_pb::AgentIds { agent_ids: ids })
            .await
            .map_err(|status| self.refused("status", status))?
            .into_inner()
            .statuses;
        let mut by_id: BTreeMap<String, serve_pb::StatusReply> = replies
            .into_iter()
            .map(|reply| (reply.agent_id.clone(), reply))
            .collect();
        Ok(agents
            .iter()
            .map(|agent| {
                let result = by_id.remove(&agent.id).map_or_else(
                    || Err(CallError::Unreachable("serve gave no answer for it".into())),
                    wire::status_in,
                );
                (agent.clone(), result)
            })
            .collect())
    }

    /// Has serve record, sign and send `action` to each agent, as a new run `what`, or
    /// as more of this operator's run `run`, which ends unless `keep_open`; returns the
    /// run and what each agent got.
    pub async fn send(
        &self,
        what: &str,
        seed: u64,
        run: Option<i64>,
        keep_open: bool,
        work: Vec<(AgentEntry, pb::command::Action)>,
    ) -> anyhow::Result<(i64, Vec<Delivery>)> {
        let mut client = self.client.clone();
        let commands = work
            .iter()
            .map(|(agent, action)| pb::Command {
                agent_id: agent.id.clone(),
                action: Some(action.clone()),
                ..Default::default()
            })
            .collect();
        let reply = client
            .send(traced(serve_pb::SendRequest {
                what: what.to_string(),
                commands,
                seed,
                run: run.unwrap_or(0),
                keep_open,
            }))
            .await
            .map_err(|status| self.refused(what, status))?
            .into_inner();
        let deliveries = reply.deliveries;
        if deliveries.len() != work.len() {
            anyhow::bail!(
                "troop serve at {} answered {} of {} command(s)",
                self.address,
                deliveries.len(),
                work.len()
            );
        }
        let deliveries = work
            .into_iter()
            .zip(deliveries)
            .map(|((agent, _), delivery)| wire::delivery_in(agent, delivery))
            .collect();
        Ok((reply.run, deliveries))
    }

    /// Runs a campaign in serve, attached: its events go to `progress`; a reason on
    /// `cancel` stops it there as Ctrl-C stops a local run.
    pub async fn run_campaign(
        &self,
        file_name: &str,
        campaign_toml: String,
        dry_run: bool,
        mut cancel: watch::Receiver<Option<String>>,
        progress: Arc<dyn Progress>,
    ) -> anyhow::Result<RunReport> {
        let mut client = self.client.clone();
        let (control, controls) = mpsc::channel(4);
        let start = serve_pb::StartRun {
            file_name: file_name.to_string(),
            campaign_toml,
            dry_run,
        };
        control
            .send(serve_pb::RunControl {
                body: Some(run_control::Body::Start(start)),
            })
            .await?;
        let mut updates = client
            .run_campaign(traced(ReceiverStream::new(controls)))
            .await
            .map_err(|status| self.refused("campaign run", status))?
            .into_inner();
        let mut cancel_sent = false;
        loop {
            let update = tokio::select! {
                update = updates.message() => update,
                Ok(()) = cancel.changed(), if !cancel_sent => {
                    let reason = cancel.borrow().clone().unwrap_or_default();
                    let body = Some(run_control::Body::Cancel(serve_pb::CancelRun { reason }));
                    // If serve is gone already, the run's leases end its faults.
                    let _ = control.send(serve_pb::RunControl { body }).await;
                    cancel_sent = true;
                    continue;
                }
            };
            // Once the run has started, an error is its failure, not serve's verdict.
            let update = update.map_err(|status| {
                anyhow::anyhow!(
                    "troop serve at {}: campaign run: {}: {}",
                    self.address,
                    code_name(status.code()),
                    status.message()
                )
            })?;
            match update {
                Some(serve_pb::RunUpdate {
                    body: Some(run_update::Body::Event(event)),
                }) => {
                    if let Some(event) = run::event_in(event) {
                        progress.event(event);
                    }
                }
                Some(serve_pb::RunUpdate {
                    body: Some(run_update::Body::Outcome(outcome)),
                }) => return Ok(run::report_in(outcome)),
                Some(_) => {}
                None => anyhow::bail!(
                    "troop serve at {} ended the run's stream without its outcome; `troop campaign history` shows what it recorded",
                    self.address
                ),
            }
        }
    }

    /// The newest `limit` runs in serve's store.
    pub async fn runs(&self, limit: u32) -> anyhow::Result<Vec<RunSummary>> {
        let mut client = self.client.clone();
        let records = client
            .runs(serve_pb::RunsRequest { limit })
            .await
            .map_err(|status| self.refused("campaign history", status))?
            .into_inner();
        serde_json::from_str(&records.json).context("serve's run records")
    }

    /// One run in serve's store.
    pub async fn run(&self, run: i64) -> anyhow::Result<RunDetail> {
        let mut client = self.client.clone();
        let records = client
            .show_run(serve_pb::RunId { run })
            .await
            .map_err(|status| self.refused("campaign show", status))?
            .into_inner();
        serde_json::from_str(&records.json).context("serve's run record")
    }
}
