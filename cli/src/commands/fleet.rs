//! `troop agents`, `troop status` and `troop halt`: the fleet as it is, and stopping all.

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
                })).collect::<Vec<_>>(),
            });
            value["active_faults"] = json!(
                status
                    .active_faults
                    .iter()
                    .map(fault_json)
                    .collect::<Vec<_>>()
            );
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

fn print_json(context: &Context, results: &[(AgentEntry, Result<pb::AgentStatus, CallError>)]) {
    let all: Vec<Value> = results
        .iter()
        .map(|(a, r)| status_json(context, a, r))
        .collect();
    println!("{}", json!({ "agents": all }));
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
                                "{} cpu, {} mem, kernel {}",
                                inventory.cpus,
                                format_size(inventory.memory_total_bytes),
                                inventory.kernel
                            ),
                            status.active_faults.len().to_string(),
                        ]
                    }
                    Err(error) => vec![
                        agent.id.clone(),
                        agent.address.clone(),
                        "NO".into(),
                        labels_text(agent),
                        error.to_string(),
                        "-".into(),
                    ],
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["AGENT", "ADDRESS", "REACHABLE", "LABELS", "HOST", "FAULTS"],
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
