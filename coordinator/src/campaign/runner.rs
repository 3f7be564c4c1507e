//! One run of a campaign: the steady state checked, each step planned inside the
//! guardrails and sent (every command audited), leases renewed while faults hold, probes
//! watched, and everything aborted and reverted when a probe fails, the error threshold
//! is passed or the run is cancelled. `troop campaign run`, `troop serve` and the demo all
//! run campaigns through [`run_campaign`]; what happens is reported as
//! [`RunEvent`]s.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::watch;
use troop_proto::pb;

use crate::audit::{Audit, send_recorded};
use crate::campaign::events::{Progress, RunEvent, RunReport, StopReason};
use crate::campaign::planner::{self, Host, RunFaults};
use crate::campaign::probe::Probe;
use crate::campaign::{Campaign, file::Step};
use crate::config::AgentEntry;
use crate::describe;
use crate::fleet::Fleet;
use crate::signer::{Signer, now_unix_ms};
use crate::store::{Lease, Store};
use tracing::Instrument as _;

/// Every group the campaign's steps select from ("" where a step has no `group_by`).
pub fn groups_of(fleet: &Fleet, campaign: &Campaign) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    for step in &campaign.steps {
        for agent in fleet
            .config
            .agents
            .iter()
            .filter(|a| step.select.matches(&a.labels))
        {
            groups.insert(group_of(agent, step));
        }
    }
    groups
}

/// The group `agent` belongs to for `step` (its `group_by` label's value, or "").
pub fn group_of(agent: &AgentEntry, step: &Step) -> String {
    step.group_by
        .as_ref()
        .and_then(|label| agent.labels.get(label).cloned())
        .unwrap_or_default()
}

struct Survey {
    agents: Vec<AgentEntry>,
    /// Reachable and holding no fault.
    healthy: BTreeSet<String>,
}

async fn survey(fleet: &Fleet) -> Survey {
    let agents = fleet.agents();
    let results = fleet.statuses(&agents).await;
    let healthy = results
        .iter()
        .filter(|(_, result)| result.as_ref().is_ok_and(|s| s.active_faults.is_empty()))
        .map(|(agent, _)| agent.id.clone())
        .collect();
    Survey { agents, healthy }
}

/// Runs every probe once; the first failure, if any.
async fn steady_state(probes: &[Probe]) -> Result<(), String> {
    for probe in probes {
        if let Err(error) = probe.check.run(probe.timeout).await {
            return Err(format!(
                "probe {} fails before any fault: {error}",
                probe.name
            ));
        }
    }
    Ok(())
}

/// Watches the probes while faults are active; sends a stop reason once one has failed
/// `failures` times in a row. Each result goes to the store.
fn watch_probes(
    probes: Vec<Probe>,
    store: Option<Arc<Store>>,
    run: Option<i64>,
    stop: watch::Sender<StopReason>,
    progress: Arc<dyn Progress>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for probe in probes {
            let (store, stop, progress) = (store.clone(), stop.clone(), progress.clone());
            tasks.spawn(async move {
                let mut failed = 0;
                let mut every = tokio::time::interval(probe.every);
                loop {
                    every.tick().await;
                    let result = probe.check.run(probe.timeout).await;
                    let (ok, detail) = match &result {
                        Ok(detail) => (true, detail.clone()),
                        Err(error) => (false, error.clone()),
                    };
                    if let (Some(store), Some(run)) = (&store, run) {
                        let _ = store.record_probe(run, &probe.name, ok, &detail, now_unix_ms());
                    }
                    failed = if ok { 0 } else { failed + 1 };
                    if !ok {
                        crate::metrics::get().probe_failed(&probe.name);
                        progress.event(RunEvent::ProbeFailed {
                            probe: probe.name.clone(),
                            detail: detail.clone(),
                            failed,
                            of: probe.failures,
                        });
                    }
                    if failed >= probe.failures {
                        let _ = stop.send(Some(format!(
                            "probe {} failed {failed} time(s): {detail}",
                            probe.name
                        )));
                        return;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// A scheduled run about to begin: the groups it may strike, and the lease it fires under.
#[derive(Debug, Clone)]
pub struct Firing {
    pub groups: BTreeSet<String>,
    pub lease: Lease,
}

/// One run of a campaign. A scheduler's `firing` limits which groups may be hit, and its
/// lease fences the run's records (a deposed leader records, so sends, nothing); `cancel` stops it from outside (Ctrl-C, SIGTERM of `serve`, an operator who
/// went away); `operator` is who started it, as the history names them.
pub async fn run_campaign(
    fleet: &Fleet,
    campaign: &Campaign,
    dry_run: bool,
    firing: Option<&Firing>,
    mut cancel: watch::Receiver<StopReason>,
    progress: Arc<dyn Progress>,
    operator: &str,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport {
        run_id: None,
        status: "completed".into(),
        reason: String::new(),
        sent: 0,
        applied: 0,
        not_applied: 0,
        reverted_early: 0,
    };
    let signer = fleet.signer()?;
    // A dry run touches nothing, the store included.
    let store = if dry_run {
        None
    } else {
        Some(Arc::new(
            Store::open(&fleet.config.store_url).context("audit store")?,
        ))
    };
    let seed = campaign.seed.unwrap_or_else(rand::random);
    let run = match &store {
        Some(store) => Some(store.begin_run(
            &campaign.name,
            &campaign.sha256,
            seed,
            dry_run,
            now_unix_ms(),
            operator,
            firing.map(|firing| &firing.lease),
        )?),
        None => None,
    };
    report.run_id = run;
    progress.event(RunEvent::Started {
        campaign: campaign.name.clone(),
        run,
        seed,
    });
    // No chaos on a service that is already sick; the refusal is part of the record.
    if let Err(reason) = steady_state(&campaign.probes).await {
        report.status = "refused".into();
        report.reason = reason;
        if let (Some(store), Some(run)) = (&store, run) {
            store.finish_run(run, &report.status, &report.reason, now_unix_ms())?;
        }
        return Ok(report);
    }
    let (stop, mut stopped) = watch::channel(None::<String>);
    let probes = watch_probes(
        campaign.probes.clone(),
        store.clone(),
        run,
        stop.clone(),
        progress.clone(),
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut held = RunFaults::default();
    let survey = survey(fleet).await;
    let lease_ms = campaign.guardrails.lease.as_millis() as u64;
    let mut holding = Holding {
        fleet,
        signer: &signer,
        store: store.as_deref(),
        run,
        survey: &survey,
        lease_ms,
        renew: tokio::time::interval(campaign.guardrails.lease / 3),
    };

    let outcome: Result<(), String> = async {
        for (index, step) in campaign.steps.iter().enumerate() {
            if let Some(reason) = stopped.borrow().clone().or_else(|| cancel.borrow().clone()) {
                return Err(reason);
            }
            let hosts: Vec<Host> = survey
                .agents
                .iter()
                .filter(|agent| step.select.matches(&agent.labels))
                .filter(|agent| {
                    firing.is_none_or(|firing| firing.groups.contains(&group_of(agent, step)))
                })
                .map(|agent| Host {
                    id: agent.id.clone(),
                    group: group_of(agent, step),
                    healthy: survey.healthy.contains(&agent.id),
                    under_fault: held.active_hosts().contains(&agent.id),
                })
                .collect();
            let plan = planner::plan_step(
                &hosts,
                step.pick,
                guardrails(campaign),
                held.active_count(),
                &mut rng,
            );
            progress.event(RunEvent::Step {
                index,
                action: describe::action_text(Some(&start_action(step, 0))),
                targets: plan.targets.len(),
                held_back: plan.skipped.len(),
            });
            let step_id = match (&store, run) {
                (Some(store), Some(run)) => Some(
                    store
                        .record_step(
                            run,
                            index as u32,
                            &describe::action_text(Some(&start_action(step, lease_ms))),
                            now_unix_ms(),
                        )
                        .map_err(|e| format!("audit store: {e}; nothing sent"))?,
                ),
                _ => None,
            };
            if dry_run {
                for target in &plan.targets {
                    progress.event(RunEvent::WouldFault {
                        index,
                        target: target.clone(),
                    });
                }
                continue;
            }
            let targets: Vec<AgentEntry> = survey
                .agents
                .iter()
                .filter(|a| plan.targets.contains(&a.id))
                .cloned()
                .collect();
            let action = start_action(step, if step.duration.is_zero() { 0 } else { lease_ms });
            let parameters = json!({
                "fault": describe::fault_fields(&step.fault),
                "duration_ms": step.duration.as_millis() as u64,
                "lease_ms": lease_ms,
            });
            let work = targets
                .into_iter()
                .map(|agent| (agent, action.clone()))
                .collect();
            let audit = store.as_deref().zip(run).map(|(store, run)| Audit {
                store,
                run,
                step: step_id,
            });
            let step_span = tracing::info_span!(
                "campaign step",
                otel.name = format!("campaign step {}", index + 1),
                troop.step = index,
                troop.action = %describe::action_text(Some(&action)),
                troop.targets = plan.targets.len(),
            );
            let deliveries = send_recorded(fleet, &signer, audit, work, &parameters)
                .instrument(step_span)
                .await
                .map_err(|e| format!("audit store: {e}; nothing sent"))?;
            report.sent += deliveries.len();
            // A single kill is over at once, but its host counts as under fault for the
            // step's duration (or one lease): the service it hit may still be down.
            let kill_hold_ms = step.duration.max(campaign.guardrails.lease).as_millis() as i64;
            for delivery in &deliveries {
                let word = describe::outcome_word(&delivery.result);
                let agent = &delivery.agent;
                match &delivery.result {
                    Ok(receipt) => {
                        report.applied += 1;
                        if receipt.fault_id.is_empty() {
                            held.struck(agent.id.clone(), now_unix_ms() + kill_hold_ms);
                        } else {
                            held.applied(
                                receipt.fault_id.clone(),
                                agent.id.clone(),
                                receipt.ends_at_unix_ms,
                            );
                        }
                        progress.event(RunEvent::Applied {
                            agent: agent.id.clone(),
                            summary: receipt.summary.clone(),
                        });
                    }
                    Err(error) => {
                        report.not_applied += 1;
                        progress.event(RunEvent::NotApplied {
                            agent: agent.id.clone(),
                            outcome: word.to_string(),
                            error: error.to_string(),
                        });
                    }
                }
            }
            let threshold = f64::from(campaign.guardrails.error_threshold_percent);
            if report.sent > 0 && report.not_applied as f64 * 100.0 / report.sent as f64 > threshold
            {
                return Err(format!(
                    "{} of {} command(s) not applied, past the error threshold of {threshold}%",
                    report.not_applied, report.sent
                ));
            }
            if !step.watch.is_zero() {
                let until = now_unix_ms() + step.watch.as_millis() as i64;
                holding
                    .hold(&mut held, &mut stopped, &mut cancel, Until::Time(until))
                    .await?;
            }
        }
        // Hold until every fault has ended by itself, renewing leases, watching probes.
        holding
            .hold(&mut held, &mut stopped, &mut cancel, Until::FaultsEnd)
            .await
    }
    .instrument(tracing::info_span!(
        "campaign run",
        otel.name = format!("campaign {}", campaign.name),
        troop.campaign = %campaign.name,
        troop.run = run.unwrap_or(0),
        troop.dry_run = dry_run,
    ))
    .await;

    probes.abort();
    if let Err(reason) = outcome {
        let to_revert = held.take_all();
        report.reverted_early = to_revert.len();
        report.status = "aborted".into();
        report.reason = reason;
        progress.event(RunEvent::Aborting {
            reason: report.reason.clone(),
            faults: to_revert.len(),
        });
        let work = to_revert
            .into_iter()
            .filter_map(|(fault_id, host)| {
                let agent = survey.agents.iter().find(|a| a.id == host)?.clone();
                Some((
                    agent,
                    pb::command::Action::Abort(pb::AbortFault { fault_id }),
                ))
            })
            .collect();
        let audit = store.as_deref().zip(run).map(|(store, run)| Audit {
            store,
            run,
            step: None,
        });
        let deliveries = send_recorded(fleet, &signer, audit, work, &json!({}))
            .await
            .unwrap_or_else(|error| {
                progress.event(RunEvent::AbortsNotSent {
                    error: error.to_string(),
                });
                Vec::new()
            });
        for delivery in deliveries {
            if let Err(error) = &delivery.result {
                // A failed abort still ends within the lease, which is no longer renewed.
                progress.event(RunEvent::AbortNotApplied {
                    agent: delivery.agent.id.clone(),
                    error: error.to_string(),
                });
            }
        }
    }
    if let (Some(store), Some(run)) = (&store, run) {
        store.finish_run(run, &report.status, &report.reason, now_unix_ms())?;
    }
    let _ = stop;
    Ok(report)
}

fn guardrails(campaign: &Campaign) -> planner::Guardrails {
    planner::Guardrails {
        max_concurrent: campaign.guardrails.max_concurrent,
        min_healthy_percent: campaign.guardrails.min_healthy_percent,
    }
}

/// The start command of `step`, with `lease_ms` (0: none).
pub fn start_action(step: &Step, lease_ms: u64) -> pb::command::Action {
    pb::command::Action::Start(pb::StartFault {
        duration_ms: step.duration.as_millis() as u64,
        lease_ms,
        fault: Some(step.fault.clone()),
    })
}

/// What a run needs to hold on between its steps and at its end: leases renewed, probes
/// (which run on their own) given the time to fail.
struct Holding<'a> {
    fleet: &'a Fleet,
    signer: &'a Signer,
    store: Option<&'a Store>,
    run: Option<i64>,
    survey: &'a Survey,
    lease_ms: u64,
    renew: tokio::time::Interval,
}

/// How long [`Holding::hold`] holds.
#[derive(Clone, Copy)]
enum Until {
    /// Until this time (Unix ms): a step's `watch`.
    Time(i64),
    /// Until every fault of the run has ended by itself.
    FaultsEnd,
}

impl Holding<'_> {
    /// Holds, renewing the leases of the run's faults, until `until`; a probe's stop or a
    /// cancel ends it early with the reason.
    async fn hold(
        &mut self,
        held: &mut RunFaults,
        stopped: &mut watch::Receiver<StopReason>,
        cancel: &mut watch::Receiver<StopReason>,
        until: Until,
    ) -> Result<(), String> {
        loop {
            let now = now_unix_ms();
            held.expire(now);
            let (done, wait) = match until {
                Until::Time(at) => (now >= at, (at - now).max(0) as u64),
                Until::FaultsEnd => (held.faults().is_empty(), u64::MAX),
            };
            if done {
                return Ok(());
            }
            let audit = self.store.zip(self.run).map(|(store, run)| Audit {
                store,
                run,
                step: None,
            });
            tokio::select! {
                _ = self.renew.tick() => {
                    renew_leases(self.fleet, self.signer, audit, self.survey, held, self.lease_ms).await;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(wait)), if wait != u64::MAX => {}
                _ = stopped.changed() => {}
                _ = cancel.changed() => {}
            }
            if let Some(reason) = stopped.borrow().clone().or_else(|| cancel.borrow().clone()) {
                return Err(reason);
            }
        }
    }
}

async fn renew_leases(
    fleet: &Fleet,
    signer: &Signer,
    audit: Option<Audit<'_>>,
    survey: &Survey,
    held: &RunFaults,
    lease_ms: u64,
) {
    let work = held
        .to_renew(now_unix_ms(), lease_ms as i64)
        .into_iter()
        .filter_map(|(fault_id, host)| {
            let agent = survey.agents.iter().find(|a| a.id == host)?.clone();
            Some((
                agent,
                pb::command::Action::Renew(pb::RenewLease { fault_id, lease_ms }),
            ))
        })
        .collect();
    // Unrecorded renewals are not sent; the agents then end the faults within the lease.
    if let Err(error) =
        send_recorded(fleet, signer, audit, work, &json!({ "lease_ms": lease_ms })).await
    {
        tracing::error!(%error, "audit store: lease renewals not sent");
    }
}
