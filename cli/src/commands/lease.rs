//! `--lease`: stay attached to the faults just started, renew their leases, show progress,
//! and abort them on Ctrl-C. If this process dies or the network fails, renewals stop and
//! every agent reverts its fault within the lease by itself.

use std::io::Write as _;
use std::time::Duration;

use crate::cli::Output;
use anyhow::Context as _;
use troop_coordinator::config::AgentEntry;
use troop_coordinator::dispatch::CallError;
use troop_coordinator::remote::Remote;
use troop_coordinator::signer::{Signer, now_unix_ms};
use troop_proto::pb;

use super::context::Context;
use crate::outcome::Outcome;
use crate::report::Delivery;
use serde_json::json;
use troop_coordinator::audit::{Audit, send_recorded};

struct Held {
    agent: AgentEntry,
    fault_id: String,
    ends_at_unix_ms: i64,
}

/// Who signs and sends the renewals and aborts, recorded in the attack's own run: this
/// CLI with its key, or serve (with `[coordinator]`).
pub enum Sender<'a> {
    Signed {
        signer: &'a Signer,
        audit: Audit<'a>,
    },
    Serve {
        remote: &'a Remote,
        run: i64,
    },
}

type Work = Vec<(AgentEntry, pb::command::Action)>;

impl Sender<'_> {
    /// A renewal that cannot be recorded is not sent: the agents then end the faults.
    async fn renew(&self, context: &Context, work: Work) -> anyhow::Result<Vec<Delivery>> {
        match self {
            Sender::Signed { signer, audit } => {
                Ok(send_recorded(&context.fleet, signer, Some(*audit), work, &json!({})).await?)
            }
            Sender::Serve { remote, run } => Ok(remote
                .send("renew leases", 0, Some(*run), true, work)
                .await?
                .1),
        }
    }

    /// Aborts go out even when they cannot be recorded.
    async fn abort(
        &self,
        context: &Context,
        work: Work,
        progress: &dyn Fn(String),
    ) -> anyhow::Result<Vec<Delivery>> {
        match self {
            Sender::Signed { signer, audit } => {
                let recorded = send_recorded(
                    &context.fleet,
                    signer,
                    Some(*audit),
                    work.clone(),
                    &json!({}),
                )
                .await;
                match recorded {
                    Ok(aborted) => Ok(aborted),
                    Err(error) => {
                        progress(format!("audit store: {error}; aborting unrecorded"));
                        Ok(send_recorded(&context.fleet, signer, None, work, &json!({})).await?)
                    }
                }
            }
            Sender::Serve { remote, run } => {
                Ok(remote.send("abort", 0, Some(*run), false, work).await?.1)
            }
        }
    }

    /// Ends serve's run of a hold that ended by itself; a local run ends with the attack.
    async fn finish(&self) -> anyhow::Result<()> {
        if let Sender::Serve { remote, run } = self {
            remote
                .send("end hold", 0, Some(*run), false, Vec::new())
                .await?;
        }
        Ok(())
    }
}

pub async fn hold(
    context: &Context,
    sender: Sender<'_>,
    deliveries: &[Delivery],
    lease: Duration,
) -> anyhow::Result<Outcome> {
    let mut held: Vec<Held> = deliveries
        .iter()
        .filter_map(|delivery| {
            let receipt = delivery.result.as_ref().ok()?;
            (!receipt.fault_id.is_empty()).then(|| Held {
                agent: delivery.agent.clone(),
                fault_id: receipt.fault_id.clone(),
                ends_at_unix_ms: receipt.ends_at_unix_ms,
            })
        })
        .collect();
    // Listening before saying so: a Ctrl-C after the line below always aborts.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let mut renew = tokio::time::interval(lease / 3);
    renew.tick().await;
    let progress = |text: String| {
        if context.output == Output::Table {
            eprintln!("{text}");
            let _ = std::io::stderr().flush();
        }
    };
    progress(format!(
        "holding {} fault(s), renewing a {}s lease every {}s; Ctrl-C aborts them",
        held.len(),
        lease.as_secs(),
        (lease / 3).as_secs_f32()
    ));
    while !held.is_empty() {
        tokio::select! {
            _ = interrupt.recv() => {
                progress("Ctrl-C: aborting".into());
                let work: Work = held
                    .iter()
                    .map(|h| {
                        let abort = pb::AbortFault { fault_id: h.fault_id.clone() };
                        (h.agent.clone(), pb::command::Action::Abort(abort))
                    })
                    .collect();
                let aborted = sender.abort(context, work, &progress).await?;
                for delivery in &aborted {
                    let outcome = match &delivery.result {
                        Ok(receipt) => receipt.summary.clone(),
                        Err(error) => error.to_string(),
                    };
                    progress(format!("  {}: {outcome}", delivery.agent.id));
                }
                // Aborted on purpose; the exit code says whether every abort landed.
                return Ok(Outcome::from_all_ok(aborted.iter().all(|d| d.result.is_ok())));
            }
            _ = renew.tick() => {
                let now = now_unix_ms();
                held.retain(|h| {
                    let over = h.ends_at_unix_ms <= now;
                    if over {
                        progress(format!("  {}: fault {} ended at its deadline", h.agent.id, h.fault_id));
                    }
                    !over
                });
                if held.is_empty() {
                    break;
                }
                let work = held
                    .iter()
                    .map(|h| {
                        let renew = pb::RenewLease { fault_id: h.fault_id.clone(), lease_ms };
                        (h.agent.clone(), pb::command::Action::Renew(renew))
                    })
                    .collect();
                let renewed = sender.renew(context, work).await.unwrap_or_else(|error| {
                    progress(format!("{error:#}; renewals not sent"));
                    Vec::new()
                });
                let mut line = Vec::new();
                for delivery in renewed {
                    match &delivery.result {
                        Ok(_) => line.push(format!("{} held", delivery.agent.id)),
                        Err(CallError::Status { code: tonic::Code::NotFound, .. }) => {
                            line.push(format!("{} ended", delivery.agent.id));
                            held.retain(|h| h.agent.id != delivery.agent.id);
                        }
                        // Keep trying: the agent reverts by itself if this keeps failing.
                        Err(error) => line.push(format!("{} not renewed ({error})", delivery.agent.id)),
                    }
                }
                let left = held.iter().map(|h| h.ends_at_unix_ms).max().unwrap_or(now) - now;
                progress(format!("  {}s left: {}", left.max(0) / 1000, line.join(", ")));
            }
        }
    }
    progress("every fault ended".into());
    sender.finish().await?;
    Ok(Outcome::Success)
}
