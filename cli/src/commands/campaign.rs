//! `troop campaign`: validate, plan, run (attached, with guardrails and probes), history
//! and show. The run loop is also what `troop serve` fires on a schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::cli::Output;
use anyhow::{Context as _, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::watch;
use troop_coordinator::campaign::planner::{self, Host, RunLedger};
use troop_coordinator::campaign::probe::Probe;
use troop_coordinator::campaign::{Campaign, file::Step};
use troop_coordinator::config::AgentEntry;
use troop_coordinator::picker as planner_pick;
use troop_coordinator::signer::{Signer, now_unix_ms};
use troop_coordinator::store::Store;
use troop_coordinator::table;
use troop_proto::pb;

use super::audit::{Audit, send_recorded};
use super::{Context, Outcome};
use crate::report;

/// Why a run stops early; `None` while it may go on.
type StopReason = Option<String>;

/// How a run ended, for the summary and the exit code.
pub struct RunReport {
    pub run_id: Option<i64>,
    pub status: &'static str,
    pub reason: String,
    pub sent: usize,
    pub applied: usize,
    pub not_applied: usize,
    pub reverted_early: usize,
}

pub fn validate(path: &Path, output: Output) -> anyhow::Result<Outcome> {
    let campaign = Campaign::load(path)?;
    match output {
        Output::Json => println!(
            "{}",
            json!({ "valid": true, "name": campaign.name, "steps": campaign.steps.len(), "probes": campaign.probes.len() })
        ),
        Output::Table => println!(
            "{}: valid. campaign {:?}, {} step(s), {} probe(s), {}",
            path.display(),
            campaign.name,
            campaign.steps.len(),
            campaign.probes.len(),
            if campaign.schedule.is_some() {
                "scheduled"
            } else {
                "run once"
            }
        ),
    }
    Ok(Outcome::Success)
}

/// Every run and the groups it would strike over the next days; touches nothing.
pub fn plan(
    context: Option<&Context>,
    path: &Path,
    days: u32,
    output: Output,
) -> anyhow::Result<Outcome> {
    let campaign = Campaign::load(path)?;
    let Some(schedule) = &campaign.schedule else {
        bail!(
            "campaign {:?} has no [schedule]: it runs once, when `troop campaign run` runs it",
            campaign.name
        );
    };
    let groups: Vec<String> = match context {
        Some(context) => groups_of(context, &campaign).into_iter().collect(),
        None => vec![String::new()],
    };
    let last = match context.and_then(|c| Store::open(&c.config.store_url).ok()) {
        Some(store) => store
            .last_strikes(&campaign.name)?
            .into_iter()
            .filter_map(|(group, ms)| {
                jiff::Timestamp::from_millisecond(ms)
                    .ok()
                    .map(|t| (group, t))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    let mut rng = StdRng::seed_from_u64(campaign.seed.unwrap_or(0));
    let runs = schedule.plan(jiff::Timestamp::now(), days, &groups, &last, &mut rng);
    if let Some(context) = context {
        warn_ungrouped(context, &campaign, &|text| eprintln!("warning: {text}"));
    }
    // Per step, the hosts of each group it selects from (no fleet: nothing known).
    let candidates: Vec<BTreeMap<String, Vec<String>>> = campaign
        .steps
        .iter()
        .map(|step| context.map(|c| step_groups(c, step)).unwrap_or_default())
        .collect();
    let strikes = |run_groups: &[String]| -> Vec<StepStrikes<'_>> {
        campaign
            .steps
            .iter()
            .zip(&candidates)
            .enumerate()
            .map(|(index, (step, groups))| {
                let struck = groups
                    .iter()
                    .filter(|(group, _)| run_groups.contains(group))
                    .map(|(group, hosts)| (group.clone(), hosts.clone()))
                    .collect();
                (index + 1, step, struck)
            })
            .collect()
    };
    match output {
        Output::Json => {
            let runs: Vec<_> = runs
                .iter()
                .map(|run| {
                    let steps: Vec<_> = strikes(&run.groups)
                        .into_iter()
                        .map(|(index, step, groups)| {
                            json!({
                                "step": index,
                                "select": step.select.to_string(),
                                "group_by": step.group_by,
                                "pick": pick_text(step.pick),
                                "fault": fault_json(&step.fault),
                                "duration_ms": step.duration.as_millis() as u64,
                                "may_strike": groups.iter().map(|(group, hosts)| json!({
                                    "group": (!group.is_empty()).then_some(group),
                                    "hosts": hosts,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    json!({ "at": run.at.to_string(), "groups": run.groups, "steps": steps })
                })
                .collect();
            println!("{}", json!({ "campaign": campaign.name, "runs": runs }));
        }
        Output::Table => {
            let mut rows: Vec<Vec<String>> = Vec::new();
            for run in &runs {
                let local = run.at.to_zoned(schedule.timezone.clone());
                for (index, step, groups) in strikes(&run.groups) {
                    let targets = if context.is_none() {
                        "(no fleet config: hosts unknown)".to_string()
                    } else if groups.is_empty() {
                        "nothing".to_string()
                    } else {
                        groups
                            .iter()
                            .map(|(group, hosts)| {
                                let hosts = hosts.join(" ");
                                if group.is_empty() {
                                    format!("{} of [{hosts}]", pick_text(step.pick))
                                } else {
                                    format!("{} of {group} [{hosts}]", pick_text(step.pick))
                                }
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let when = if index == 1 {
                        local.strftime("%a %Y-%m-%d %H:%M %Z").to_string()
                    } else {
                        String::new()
                    };
                    rows.push(vec![
                        when,
                        format!("{index}: {}", fault_text(step)),
                        targets,
                    ]);
                }
            }
            println!(
                "campaign {:?} over the next {days} day(s): {} run(s)",
                campaign.name,
                runs.len()
            );
            print!("{}", table::render(&["WHEN", "STEP", "MAY STRIKE"], &rows));
        }
    }
    Ok(Outcome::Success)
}

/// A step of a planned firing (1-based), and the hosts of each group it may strike.
type StepStrikes<'a> = (usize, &'a Step, Vec<(String, Vec<String>)>);

fn pick_text(pick: planner_pick::Pick) -> String {
    match pick {
        planner_pick::Pick::All => "all".into(),
        planner_pick::Pick::Count(n) => format!("{n}"),
        planner_pick::Pick::Percent(p) => format!("{p}%"),
    }
}

fn fault_text(step: &Step) -> String {
    report::action_text(Some(&start_action(step, 0)))
}

/// A fault as structured fields, as the campaign file spells them.
fn fault_json(fault: &pb::start_fault::Fault) -> serde_json::Value {
    report::fault_fields(fault)
}

/// The hosts of each group a step selects from (group "" without `group_by`).
fn step_groups(context: &Context, step: &Step) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for agent in context
        .config
        .agents
        .iter()
        .filter(|a| step.select.matches(&a.labels))
    {
        groups
            .entry(group_of(agent, step))
            .or_default()
            .push(agent.id.clone());
    }
    groups
}

/// Says where a step's `group_by` label is missing on hosts it selects: those hosts
/// would silently form one group of their own.
fn warn_ungrouped(context: &Context, campaign: &Campaign, say: &dyn Fn(String)) {
    for (index, step) in campaign.steps.iter().enumerate() {
        let Some(label) = &step.group_by else {
            continue;
        };
        let missing: Vec<&str> = context
            .config
            .agents
            .iter()
            .filter(|a| step.select.matches(&a.labels) && !a.labels.contains_key(label))
            .map(|a| a.id.as_str())
            .collect();
        if !missing.is_empty() {
            say(format!(
                "step {}: group_by {label:?}, but {} have no {label:?} label; they form one group of their own",
                index + 1,
                missing.join(", ")
            ));
        }
    }
}

/// Every group the campaign's steps select from ("" where a step has no `group_by`).
pub fn groups_of(context: &Context, campaign: &Campaign) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    for step in &campaign.steps {
        for agent in context
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

fn group_of(agent: &AgentEntry, step: &Step) -> String {
    step.group_by
        .as_ref()
        .and_then(|label| agent.labels.get(label).cloned())
        .unwrap_or_default()
}

/// `troop campaign run`: attached, with progress; Ctrl-C aborts and reverts.
pub async fn run(context: &Context, path: &Path, dry_run: bool) -> anyhow::Result<Outcome> {
    let campaign = Campaign::load(path)?;
    // Run by hand it runs now, but the operator should know what serve would not do.
    if let Some(schedule) = &campaign.schedule
        && !schedule.allows(jiff::Timestamp::now())
    {
        eprintln!(
            "note: now is outside campaign {:?}'s schedule window (or a blackout day); \
             `troop serve` would not fire it now. Running it as asked.",
            campaign.name
        );
    }
    warn_ungrouped(context, &campaign, &|text| eprintln!("warning: {text}"));
    let (cancel, cancelled) = watch::channel(None::<String>);
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            let _ = cancel.send(Some("interrupted (Ctrl-C)".into()));
        }
    });
    let report = run_campaign(context, &campaign, dry_run, None, cancelled).await?;
    summary(context.output, &campaign, &report);
    Ok(Outcome::from_all_ok(
        report.status == "completed" && report.not_applied == 0,
    ))
}

fn summary(output: Output, campaign: &Campaign, report: &RunReport) {
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "campaign": campaign.name, "run": report.run_id, "status": report.status,
                "reason": report.reason, "sent": report.sent, "applied": report.applied,
                "not_applied": report.not_applied, "reverted_early": report.reverted_early,
            })
        ),
        Output::Table => println!(
            "campaign {:?} {}{}: {} command(s) sent, {} applied, {} not applied, {} fault(s) reverted early{}",
            campaign.name,
            report.status,
            if report.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.reason)
            },
            report.sent,
            report.applied,
            report.not_applied,
            report.reverted_early,
            report
                .run_id
                .map_or_else(String::new, |id| format!("; `troop campaign show {id}`"))
        ),
    }
}

struct Fleet {
    agents: Vec<AgentEntry>,
    /// Reachable and holding no fault.
    healthy: BTreeSet<String>,
}

async fn survey(context: &Context) -> Fleet {
    let results = context.statuses(&context.config.agents).await;
    let healthy = results
        .iter()
        .filter(|(_, result)| result.as_ref().is_ok_and(|s| s.active_faults.is_empty()))
        .map(|(agent, _)| agent.id.clone())
        .collect();
    Fleet {
        agents: context.config.agents.clone(),
        healthy,
    }
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
    output: Output,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for probe in probes {
            let (store, stop) = (store.clone(), stop.clone());
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
                    if !ok && output == Output::Table {
                        eprintln!(
                            "  probe {}: {detail} ({failed}/{})",
                            probe.name, probe.failures
                        );
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

/// One run of a campaign. `strike_groups` (from the scheduler) limits which groups may
/// be hit; `cancel` stops it from outside (Ctrl-C, SIGTERM of `serve`).
pub async fn run_campaign(
    context: &Context,
    campaign: &Campaign,
    dry_run: bool,
    strike_groups: Option<&BTreeSet<String>>,
    mut cancel: watch::Receiver<StopReason>,
) -> anyhow::Result<RunReport> {
    let say = |text: String| {
        if context.output == Output::Table {
            eprintln!("{text}");
        }
    };
    let mut report = RunReport {
        run_id: None,
        status: "completed",
        reason: String::new(),
        sent: 0,
        applied: 0,
        not_applied: 0,
        reverted_early: 0,
    };
    let signer = Signer::load(&context.config.signing_key)
        .with_context(|| format!("config {}: [signing] key", context.config.path.display()))?;
    // A dry run touches nothing, the store included.
    let store = if dry_run {
        None
    } else {
        Some(Arc::new(
            Store::open(&context.config.store_url).context("audit store")?,
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
        )?),
        None => None,
    };
    report.run_id = run;
    say(format!(
        "campaign {:?}: run {} (seed {seed})",
        campaign.name,
        run.map_or("dry".to_string(), |r| r.to_string())
    ));
    // No chaos on a service that is already sick; the refusal is part of the record.
    if let Err(reason) = steady_state(&campaign.probes).await {
        report.status = "refused";
        report.reason = reason;
        if let (Some(store), Some(run)) = (&store, run) {
            store.finish_run(run, report.status, &report.reason, now_unix_ms())?;
        }
        return Ok(report);
    }
    let (stop, mut stopped) = watch::channel(None::<String>);
    let probes = watch_probes(
        campaign.probes.clone(),
        store.clone(),
        run,
        stop.clone(),
        context.output,
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ledger = RunLedger::default();
    let fleet = survey(context).await;
    let lease_ms = campaign.guardrails.lease.as_millis() as u64;

    let outcome: Result<(), String> = async {
        for (index, step) in campaign.steps.iter().enumerate() {
            if let Some(reason) = stopped.borrow().clone().or_else(|| cancel.borrow().clone()) {
                return Err(reason);
            }
            let hosts: Vec<Host> = fleet
                .agents
                .iter()
                .filter(|agent| step.select.matches(&agent.labels))
                .filter(|agent| {
                    strike_groups.is_none_or(|groups| groups.contains(&group_of(agent, step)))
                })
                .map(|agent| Host {
                    id: agent.id.clone(),
                    group: group_of(agent, step),
                    healthy: fleet.healthy.contains(&agent.id),
                    under_fault: ledger.active_hosts().contains(&agent.id),
                })
                .collect();
            let plan = planner::plan_step(
                &hosts,
                step.pick,
                guardrails(campaign),
                ledger.active_count(),
                &mut rng,
            );
            say(format!(
                "step {}: {} on {} host(s){}",
                index + 1,
                report::action_text(Some(&start_action(step, 0))),
                plan.targets.len(),
                if plan.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} held back by guardrails", plan.skipped.len())
                }
            ));
            let step_id = match (&store, run) {
                (Some(store), Some(run)) => Some(
                    store
                        .record_step(
                            run,
                            index as u32,
                            &report::action_text(Some(&start_action(step, lease_ms))),
                            now_unix_ms(),
                        )
                        .map_err(|e| format!("audit store: {e}; nothing sent"))?,
                ),
                _ => None,
            };
            if dry_run {
                // The picks are the dry run's result: stdout, like `attack --dry-run`.
                if context.output == Output::Table {
                    for target in &plan.targets {
                        println!("step {}: would fault {target}", index + 1);
                    }
                }
                continue;
            }
            let targets: Vec<AgentEntry> = fleet
                .agents
                .iter()
                .filter(|a| plan.targets.contains(&a.id))
                .cloned()
                .collect();
            let action = start_action(step, if step.duration.is_zero() { 0 } else { lease_ms });
            let parameters = json!({
                "fault": report::fault_fields(&step.fault),
                "duration_ms": step.duration.as_millis() as u64,
                "lease_ms": lease_ms,
            });
            let work = targets.into_iter().map(|agent| (agent, action.clone())).collect();
            let audit = store.as_deref().zip(run).map(|(store, run)| Audit { store, run, step: step_id });
            let deliveries = send_recorded(context, &signer, audit, work, &parameters)
                .await
                .map_err(|e| format!("audit store: {e}; nothing sent"))?;
            report.sent += deliveries.len();
            // A single kill is over at once, but its host counts as under fault for the
            // step's duration (or one lease): the service it hit may still be down.
            let kill_hold_ms =
                step.duration.max(campaign.guardrails.lease).as_millis() as i64;
            for delivery in &deliveries {
                let word = report::outcome_word(&delivery.result);
                let agent = &delivery.agent;
                match &delivery.result {
                    Ok(receipt) => {
                        report.applied += 1;
                        if receipt.fault_id.is_empty() {
                            ledger.struck(agent.id.clone(), now_unix_ms() + kill_hold_ms);
                        } else {
                            ledger.applied(
                                receipt.fault_id.clone(),
                                agent.id.clone(),
                                receipt.ends_at_unix_ms,
                            );
                        }
                        say(format!("  {}: {}", agent.id, receipt.summary));
                    }
                    Err(error) => {
                        report.not_applied += 1;
                        say(format!("  {}: {word}: {error}", agent.id));
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
        }
        // Hold until every fault has ended by itself, renewing leases, watching probes.
        let mut renew = tokio::time::interval(campaign.guardrails.lease / 3);
        loop {
            ledger.expire(now_unix_ms());
            if ledger.faults().is_empty() {
                return Ok(());
            }
            let audit = store.as_deref().zip(run).map(|(store, run)| Audit { store, run, step: None });
            tokio::select! {
                _ = renew.tick() => renew_leases(context, &signer, audit, &fleet, &ledger, lease_ms).await,
                _ = stopped.changed() => {}
                _ = cancel.changed() => {}
            }
            if let Some(reason) = stopped.borrow().clone().or_else(|| cancel.borrow().clone()) {
                return Err(reason);
            }
        }
    }
    .await;

    probes.abort();
    if let Err(reason) = outcome {
        let to_revert = ledger.take_all();
        report.reverted_early = to_revert.len();
        report.status = "aborted";
        report.reason = reason;
        say(format!(
            "aborting: {}; reverting {} fault(s)",
            report.reason,
            to_revert.len()
        ));
        let work = to_revert
            .into_iter()
            .filter_map(|(fault_id, host)| {
                let agent = fleet.agents.iter().find(|a| a.id == host)?.clone();
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
        let deliveries = send_recorded(context, &signer, audit, work, &json!({}))
            .await
            .unwrap_or_else(|error| {
                say(format!(
                    "  audit store: {error}; aborts not sent, the leases end the faults"
                ));
                Vec::new()
            });
        for delivery in deliveries {
            if let Err(error) = &delivery.result {
                // A failed abort still ends within the lease, which is no longer renewed.
                say(format!(
                    "  {}: abort not applied ({error}); its lease ends it",
                    delivery.agent.id
                ));
            }
        }
    }
    if let (Some(store), Some(run)) = (&store, run) {
        store.finish_run(run, report.status, &report.reason, now_unix_ms())?;
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

fn start_action(step: &Step, lease_ms: u64) -> pb::command::Action {
    pb::command::Action::Start(pb::StartFault {
        duration_ms: step.duration.as_millis() as u64,
        lease_ms,
        fault: Some(step.fault.clone()),
    })
}

async fn renew_leases(
    context: &Context,
    signer: &Signer,
    audit: Option<Audit<'_>>,
    fleet: &Fleet,
    ledger: &RunLedger,
    lease_ms: u64,
) {
    let work = ledger
        .to_renew(now_unix_ms(), lease_ms as i64)
        .into_iter()
        .filter_map(|(fault_id, host)| {
            let agent = fleet.agents.iter().find(|a| a.id == host)?.clone();
            Some((
                agent,
                pb::command::Action::Renew(pb::RenewLease { fault_id, lease_ms }),
            ))
        })
        .collect();
    // Unrecorded renewals are not sent; the agents then end the faults within the lease.
    if let Err(error) = send_recorded(
        context,
        signer,
        audit,
        work,
        &json!({ "lease_ms": lease_ms }),
    )
    .await
    {
        tracing::error!(%error, "audit store: lease renewals not sent");
    }
}

pub fn history(context: &Context) -> anyhow::Result<Outcome> {
    let store = Store::open(&context.config.store_url)?;
    let runs = store.runs(50)?;
    match context.output {
        Output::Json => println!("{}", json!({ "runs": runs })),
        Output::Table => {
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|run| {
                    vec![
                        run.id.to_string(),
                        run.campaign.clone(),
                        run.status.clone(),
                        jiff::Timestamp::from_millisecond(run.started_at_ms)
                            .map_or_else(|_| "?".into(), |t| t.to_string()),
                        format!(
                            "{} sent, {} applied, {} refused, {} failed",
                            run.commands, run.applied, run.refused, run.failed
                        ),
                        run.reason.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["RUN", "CAMPAIGN", "STATUS", "STARTED", "COMMANDS", "REASON"],
                    &rows
                )
            );
        }
    }
    Ok(Outcome::Success)
}

pub fn show(context: &Context, run: i64) -> anyhow::Result<Outcome> {
    let store = Store::open(&context.config.store_url)?;
    let detail = store.run(run)?;
    match context.output {
        Output::Json => {
            // Parameters are stored as JSON text: shown as fields, not as a string.
            let mut value = serde_json::to_value(&detail)?;
            if let Some(commands) = value["commands"].as_array_mut() {
                for command in commands {
                    if let Some(Ok(parsed)) = command["parameters"]
                        .as_str()
                        .map(serde_json::from_str::<serde_json::Value>)
                    {
                        command["parameters"] = parsed;
                    }
                }
            }
            println!("{value}");
        }
        Output::Table => {
            println!(
                "run {} of campaign {:?}: {} {}",
                detail.run.id, detail.run.campaign, detail.run.status, detail.run.reason
            );
            let rows: Vec<Vec<String>> = detail
                .commands
                .iter()
                .map(|c| {
                    vec![
                        c.target.clone(),
                        c.outcome.clone(),
                        c.fault_kind.clone(),
                        c.message.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["TARGET", "OUTCOME", "FAULT", "DETAIL"], &rows)
            );
            let failed = detail.probes.iter().filter(|p| !p.ok).count();
            println!("{} probe result(s), {failed} failed", detail.probes.len());
        }
    }
    Ok(Outcome::Success)
}
