//! `troop campaign`: validate, plan, run (attached, with guardrails and probes), history
//! and show. The run itself is the library's `campaign::runner`; this prints its events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::watch;
use troop_coordinator::audit::local_operator;
use troop_coordinator::campaign::events::{Progress, RunEvent, RunReport, Silent};
use troop_coordinator::campaign::runner::{group_of, run_campaign, start_action};
use troop_coordinator::campaign::scheduler::groups_of;
use troop_coordinator::campaign::{Campaign, file::Step};
use troop_coordinator::findings::{self, Finding};
use troop_coordinator::picker as planner_pick;
use troop_coordinator::store::{RunDetail, Store};
use troop_coordinator::table;
use troop_proto::pb;

use super::context::Context;
use crate::cli::Output;
use crate::outcome::Outcome;
use crate::report;

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
        Some(context) => groups_of(&context.fleet.config.agents, &campaign)
            .into_iter()
            .collect(),
        None => vec![String::new()],
    };
    let last = match context.and_then(|c| Store::open(&c.fleet.config.store_url).ok()) {
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
        .fleet
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
            .fleet
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

/// `troop campaign run`: attached, with progress; Ctrl-C aborts and reverts. With
/// `[coordinator]` serve runs it (its probes too) and this shows the same progress.
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
    let report = match &context.fleet.remote {
        Some(remote) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            remote
                .run_campaign(&name, text, dry_run, cancelled, progress(context.output))
                .await?
        }
        None => {
            run_campaign(
                &context.fleet,
                &campaign,
                dry_run,
                None,
                cancelled,
                progress(context.output),
                &local_operator(),
            )
            .await?
        }
    };
    let findings = match report.run_id {
        Some(run) => run_detail(context, run)
            .await
            .map(|detail| findings::findings(&detail))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    summary(context.output, &campaign, &report, &findings);
    Ok(Outcome::from_all_ok(
        report.status == "completed" && report.not_applied == 0,
    ))
}

/// A run's events as the CLI shows them: progress on stderr, a dry run's picks on stdout
/// (like `attack --dry-run`); nothing with `--output json`, which prints the summary.
pub fn progress(output: Output) -> Arc<dyn Progress> {
    match output {
        Output::Table => Arc::new(Printed),
        Output::Json => Arc::new(Silent),
    }
}

struct Printed;

impl Progress for Printed {
    fn event(&self, event: RunEvent) {
        match event {
            RunEvent::Started {
                campaign,
                run,
                seed,
            } => eprintln!(
                "campaign {campaign:?}: run {} (seed {seed})",
                run.map_or("dry".to_string(), |r| r.to_string())
            ),
            RunEvent::Step {
                index,
                action,
                targets,
                held_back,
            } => eprintln!(
                "step {}: {action} on {targets} host(s){}",
                index + 1,
                if held_back == 0 {
                    String::new()
                } else {
                    format!(", {held_back} held back by guardrails")
                }
            ),
            RunEvent::WouldFault { index, target } => {
                println!("step {}: would fault {target}", index + 1)
            }
            RunEvent::Applied { agent, summary } => eprintln!("  {agent}: {summary}"),
            RunEvent::NotApplied {
                agent,
                outcome,
                error,
            } => eprintln!("  {agent}: {outcome}: {error}"),
            RunEvent::ProbeFailed {
                probe,
                detail,
                failed,
                of,
            } => eprintln!("  probe {probe}: {detail} ({failed}/{of})"),
            RunEvent::Aborting { reason, faults } => {
                eprintln!("aborting: {reason}; reverting {faults} fault(s)")
            }
            RunEvent::AbortNotApplied { agent, error } => {
                eprintln!("  {agent}: abort not applied ({error}); its lease ends it")
            }
            RunEvent::AbortsNotSent { error } => {
                eprintln!("  audit store: {error}; aborts not sent, the leases end the faults")
            }
        }
    }
}

/// A recorded run, from the store or from serve's with `[coordinator]`.
async fn run_detail(context: &Context, run: i64) -> anyhow::Result<RunDetail> {
    Ok(match &context.fleet.remote {
        Some(remote) => remote.run(run).await?,
        None => Store::open(&context.fleet.config.store_url)?.run(run)?,
    })
}

fn summary(output: Output, campaign: &Campaign, report: &RunReport, findings: &[Finding]) {
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "campaign": campaign.name, "run": report.run_id, "status": report.status,
                "reason": report.reason, "sent": report.sent, "applied": report.applied,
                "not_applied": report.not_applied, "reverted_early": report.reverted_early,
                "findings": findings,
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
    if output == Output::Table {
        for finding in findings {
            println!("  {}", finding.text);
        }
    }
}

/// The newest runs in the store, or in serve's with `[coordinator]`.
pub async fn history(context: &Context) -> anyhow::Result<Outcome> {
    const SHOWN: u32 = 50;
    let runs = match &context.fleet.remote {
        Some(remote) => remote.runs(SHOWN).await?,
        None => Store::open(&context.fleet.config.store_url)?.runs(SHOWN as usize)?,
    };
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

pub async fn show(
    context: &Context,
    run: i64,
    svg: Option<&std::path::Path>,
) -> anyhow::Result<Outcome> {
    let detail = run_detail(context, run).await?;
    let findings = findings::findings(&detail);
    if let Some(path) = svg {
        std::fs::write(path, troop_coordinator::timeline::svg(&detail))
            .with_context(|| format!("--svg {}", path.display()))?;
    }
    match context.output {
        Output::Json => {
            // Parameters are stored as JSON text: shown as fields, not as a string.
            let mut value = serde_json::to_value(&detail)?;
            value["findings"] = serde_json::to_value(&findings)?;
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
            for finding in &findings {
                println!("{}", finding.text);
            }
        }
    }
    Ok(Outcome::Success)
}
