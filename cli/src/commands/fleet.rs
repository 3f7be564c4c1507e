//! `troop agents`, `troop status`, `troop halt`, `troop emergency-stop` and `troop resume`:
//! the fleet as it is, and stopping all.

use crate::cli::Output;
use serde_json::{Value, json};
use troop_common::units::format_size;
use troop_coordinator::config::AgentEntry;
use troop_coordinator::dispatch::CallError;
use troop_coordinator::selector::Selector;
use troop_coordinator::table;
use troop_proto::pb;

use super::attack;
use super::context::Context;
use crate::outcome::Outcome;
use crate::report;

async fn statuses(
    context: &Context,
    selector: &Selector,
) -> anyhow::Result<Vec<(AgentEntry, Result<pb::AgentStatus, CallError>)>> {
    Ok(context
        .fleet
        .statuses(&context.fleet.listed(selector)?)
        .await)
}

fn labels_text(agent: &AgentEntry) -> String {
    agent
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels troop.toml gives an agent that differ from what the agent itself reports
/// (`key: configured -> reported`, `-` for absent); selectors use the configured ones.
fn label_drift(agent: &AgentEntry, status: &pb::AgentStatus) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> =
        agent.labels.keys().chain(status.labels.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let configured = agent.labels.get(key);
            let reported = status.labels.get(key);
            (configured != reported).then(|| {
                let show = |v: Option<&String>| v.map_or("-".to_string(), Clone::clone);
                format!("{key}: {} -> {}", show(configured), show(reported))
            })
        })
        .collect()
}

fn status_json(
    context: &Context,
    agent: &AgentEntry,
    result: &Result<pb::AgentStatus, CallError>,
) -> Value {
    let reached = context.fleet.reached(&agent.id);
    let mut value = json!({
        "agent": agent.id,
        "address": agent.address,
        "labels": agent.labels,
        "reachable": result.is_ok(),
        "via": reached.via,
        "connected_since_unix_ms": reached.connected_since_unix_ms,
        "last_seen_unix_ms": reached.last_seen_unix_ms,
        "certificate_expires_unix_ms":
            (reached.certificate_expires_unix_ms > 0).then_some(reached.certificate_expires_unix_ms),
    });
    match result {
        Ok(status) => {
            let inventory = status.inventory.clone().unwrap_or_default();
            value["version"] = json!(status.version);
            value["reported_labels"] = json!(status.labels);
            value["label_drift"] = json!(label_drift(agent, status));
            value["inventory"] = json!({
                "hostname": inventory.hostname,
                "os": inventory.os,
                "kernel": inventory.kernel,
                "cpus": inventory.cpus,
                "memory_total_bytes": inventory.memory_total_bytes,
                "memory_available_bytes": inventory.memory_available_bytes,
                "uptime_seconds": inventory.uptime_seconds,
                "disks": inventory.disks.iter().map(|d| json!({
                    "mount_point": d.mount_point, "filesystem": d.filesystem,
                    "total_bytes": d.total_bytes, "available_bytes": d.available_bytes,
                    "unavailable": (!d.unavailable.is_empty()).then_some(&d.unavailable),
                })).collect::<Vec<_>>(),
                "network": inventory.network.as_ref().map(|network| json!({
                    "effects": network.effects,
                    "unavailable": network.unavailable,
                })),
            });
            value["active_faults"] = json!(
                status
                    .active_faults
                    .iter()
                    .map(fault_json)
                    .collect::<Vec<_>>()
            );
            if let Some(latch) = &status.latch {
                value["latch"] = latch_json(latch);
            }
            if let Some(stop) = &status.last_stop {
                value["last_stop"] = json!({
                    "command_id": stop.command_id,
                    "mode": stop.mode,
                    "at_unix_ms": stop.at_unix_ms,
                });
            }
        }
        Err(error) => value["error"] = json!(error.to_string()),
    }
    value
}

/// `; network: latency, loss, ... (not corrupt, duplicate)`, as the agent reports it.
fn network_text(network: Option<&pb::NetworkSupport>) -> String {
    let Some(network) = network else {
        return String::new();
    };
    let missing: Vec<&str> = network
        .unavailable
        .iter()
        .filter_map(|line| line.split(':').next())
        .collect();
    let mut text = format!("; network: {}", network.effects.join(", "));
    if !missing.is_empty() {
        text.push_str(&format!(" (not {})", missing.join(", ")));
    }
    text
}

fn fault_json(fault: &pb::ActiveFault) -> Value {
    json!({
        "fault_id": fault.fault_id,
        "command_id": fault.command_id,
        "kind": fault.kind,
        "started_at_unix_ms": fault.started_at_unix_ms,
        "ends_at_unix_ms": fault.ends_at_unix_ms,
        "effect": fault.effect,
        "lease_expires_at_unix_ms": fault.lease_expires_at_unix_ms,
    })
}

fn latch_json(latch: &pb::Latch) -> Value {
    json!({
        "by": latch.by,
        "reason": latch.reason,
        "at_unix_ms": latch.at_unix_ms,
        "command_id": latch.command_id,
    })
}

/// A latch in words: who, when, why.
fn latch_text(latch: &pb::Latch) -> String {
    format!(
        "latched by {} at {}: {}",
        latch.by,
        troop_common::clock::utc(latch.at_unix_ms),
        latch.reason
    )
}

fn print_json(context: &Context, results: &[(AgentEntry, Result<pb::AgentStatus, CallError>)]) {
    let all: Vec<Value> = results
        .iter()
        .map(|(a, r)| status_json(context, a, r))
        .collect();
    let mut value = json!({ "agents": all });
    if let Some(latch) = &context.fleet.serve_latch {
        value["serve_latch"] = latch_json(latch);
    }
    println!("{value}");
}

/// When the certificate of the agent's stream expires, as serve saw it; `-` if unknown.
fn certificate_text(context: &Context, agent: &AgentEntry) -> String {
    match context.fleet.reached(&agent.id).certificate_expires_unix_ms {
        0 => "-".into(),
        at => troop_coordinator::describe::unix_ms_text(at),
    }
}

/// With serve: its own latch, above the table.
fn tell_serve_latch(context: &Context) {
    if let Some(latch) = &context.fleet.serve_latch {
        println!("troop serve is {}", latch_text(latch));
    }
}

pub async fn agents(context: &Context, selector: &Selector) -> anyhow::Result<Outcome> {
    let results = statuses(context, selector).await?;
    match context.output {
        Output::Json => print_json(context, &results),
        Output::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|(agent, result)| match result {
                    Ok(status) => {
                        let inventory = status.inventory.clone().unwrap_or_default();
                        let drift = label_drift(agent, status);
                        let labels = if drift.is_empty() {
                            labels_text(agent)
                        } else {
                            format!(
                                "{} (agent reports otherwise: {})",
                                labels_text(agent),
                                drift.join("; ")
                            )
                        };
                        vec![
                            agent.id.clone(),
                            agent.address.clone(),
                            "yes".into(),
                            labels,
                            format!(
                                "{} cpu, {} mem, kernel {}{}",
                                inventory.cpus,
                                format_size(inventory.memory_total_bytes),
                                inventory.kernel,
                                network_text(inventory.network.as_ref())
                            ),
                            status.active_faults.len().to_string(),
                            status.latch.as_ref().map_or("-".into(), latch_text),
                            certificate_text(context, agent),
                        ]
                    }
                    Err(error) => vec![
                        agent.id.clone(),
                        agent.address.clone(),
                        "NO".into(),
                        labels_text(agent),
                        error.to_string(),
                        "-".into(),
                        "?".into(),
                        certificate_text(context, agent),
                    ],
                })
                .collect();
            tell_serve_latch(context);
            print!(
                "{}",
                table::render(
                    &[
                        "AGENT",
                        "ADDRESS",
                        "REACHABLE",
                        "LABELS",
                        "HOST",
                        "FAULTS",
                        "LATCH",
                        "CERT EXPIRES"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(Outcome::from_all_ok(results.iter().all(|(_, r)| r.is_ok())))
}

pub async fn status(context: &Context, selector: &Selector) -> anyhow::Result<Outcome> {
    let results = statuses(context, selector).await?;
    match context.output {
        Output::Json => print_json(context, &results),
        Output::Table => {
            let now = troop_coordinator::signer::now_unix_ms();
            let mut rows = Vec::new();
            for (agent, result) in &results {
                if let Ok(pb::AgentStatus {
                    latch: Some(latch), ..
                }) = result
                {
                    rows.push(vec![
                        agent.id.clone(),
                        "-".into(),
                        "latched".into(),
                        String::new(),
                        latch_text(latch),
                    ]);
                }
                match result {
                    Ok(status) if status.active_faults.is_empty() => {
                        rows.push(vec![
                            agent.id.clone(),
                            "-".into(),
                            "no active faults".into(),
                            String::new(),
                            String::new(),
                        ]);
                    }
                    Ok(status) => {
                        for fault in &status.active_faults {
                            let remaining = (fault.ends_at_unix_ms - now).max(0) / 1000;
                            rows.push(vec![
                                agent.id.clone(),
                                fault.fault_id.clone(),
                                fault.kind.clone(),
                                format!("{remaining}s"),
                                fault.effect.clone(),
                            ]);
                        }
                    }
                    Err(error) => rows.push(vec![
                        agent.id.clone(),
                        "-".into(),
                        error.to_string(),
                        String::new(),
                        String::new(),
                    ]),
                }
            }
            tell_serve_latch(context);
            print!(
                "{}",
                table::render(&["AGENT", "FAULT", "KIND", "REMAINING", "EFFECT"], &rows)
            );
        }
    }
    Ok(Outcome::from_all_ok(results.iter().all(|(_, r)| r.is_ok())))
}

pub async fn halt(context: &Context, selector: &Selector) -> anyhow::Result<Outcome> {
    let targets = context.fleet.select(selector)?;
    let deliveries = attack::send(
        context,
        "halt",
        &targets,
        pb::command::Action::AbortAll(pb::AbortAll {}),
    )
    .await?;
    Ok(report::print_deliveries(context.output, &deliveries))
}

/// `troop emergency-stop` (`stop`) and `troop resume`: through serve, which latches
/// itself and its whole fleet, or straight to every agent in the config, signed here.
pub async fn latch(context: &Context, stop: bool, reason: &str) -> anyhow::Result<Outcome> {
    let deliveries = match &context.fleet.remote {
        Some(remote) => remote.latch(stop, reason).await?.1,
        None => {
            let reason = troop_common::latch::checked_text(
                "--reason",
                reason,
                troop_common::latch::MAX_REASON_CHARS,
            )
            .map_err(anyhow::Error::msg)?;
            let by = troop_coordinator::audit::local_operator();
            let (what, action) = if stop {
                let stop = pb::EmergencyStop { reason, by };
                ("emergency stop", pb::command::Action::EmergencyStop(stop))
            } else {
                (
                    "resume",
                    pb::command::Action::Resume(pb::Resume { reason, by }),
                )
            };
            let targets = context.fleet.config.agents.clone();
            attack::send(context, what, &targets, action).await?
        }
    };
    let outcome = report::print_deliveries(context.output, &deliveries);
    let missed: Vec<&str> = deliveries
        .iter()
        .filter(|delivery| delivery.result.is_err())
        .map(|delivery| delivery.agent.id.as_str())
        .collect();
    if !missed.is_empty() {
        let missed = missed.join(", ");
        eprintln!(
            "{}",
            match (stop, context.fleet.remote.is_some()) {
                (true, true) => format!(
                    "not latched yet: {missed}; troop serve latches each when it attaches or answers again"
                ),
                (true, false) => format!(
                    "not latched: {missed}; run `troop emergency-stop` again when they are back (their faults end at their own deadlines and leases)"
                ),
                (false, _) =>
                    format!("still latched: {missed}; run `troop resume` again when they are back"),
            }
        );
    }
    Ok(outcome)
}
