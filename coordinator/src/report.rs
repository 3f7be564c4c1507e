//! How command results are shown: a table for people, JSON for scripts.

use serde_json::{Value, json};
use troop_coordinator::cli::Output;
use troop_coordinator::config::AgentEntry;
use troop_coordinator::dispatch::CallError;
use troop_coordinator::table;
use troop_proto::pb;

use crate::commands::Outcome;

/// One command sent to one agent, and what came back.
pub struct Delivery {
    pub agent: AgentEntry,
    pub command_id: String,
    pub result: Result<pb::Receipt, CallError>,
}

pub fn outcome_word(result: &Result<pb::Receipt, CallError>) -> &'static str {
    match result {
        Ok(_) => "applied",
        Err(error) if error.is_refusal() => "refused",
        Err(CallError::Unreachable(_)) => "unreachable",
        Err(CallError::TimedOut(_)) => "unknown",
        Err(_) => "failed",
    }
}

pub fn receipt_json(receipt: &pb::Receipt) -> Value {
    json!({
        "command_id": receipt.command_id,
        "agent_id": receipt.agent_id,
        "fault_id": receipt.fault_id,
        "applied_at_unix_ms": receipt.applied_at_unix_ms,
        "summary": receipt.summary,
        "signalled": receipt.signalled.iter().map(|p| json!({
            "pid": p.pid, "name": p.name, "signal": p.signal,
        })).collect::<Vec<_>>(),
        "aborted_fault_ids": receipt.aborted_fault_ids,
    })
}

fn delivery_json(delivery: &Delivery) -> Value {
    let mut value = json!({
        "agent": delivery.agent.id,
        "address": delivery.agent.address,
        "command_id": delivery.command_id,
        "outcome": outcome_word(&delivery.result),
    });
    match &delivery.result {
        Ok(receipt) => value["receipt"] = receipt_json(receipt),
        Err(error) => {
            value["error"] = json!(error.to_string());
            if let CallError::Status { code, .. } = error {
                value["code"] = json!(troop_coordinator::dispatch::code_name(*code));
            }
        }
    }
    value
}

/// Prints what each agent answered; the outcome is a success only if all applied.
pub fn print_deliveries(output: Output, deliveries: &[Delivery]) -> Outcome {
    match output {
        Output::Json => {
            let all: Vec<Value> = deliveries.iter().map(delivery_json).collect();
            println!("{}", json!({ "results": all }));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = deliveries
                .iter()
                .map(|delivery| {
                    let detail = match &delivery.result {
                        Ok(receipt) => receipt.summary.clone(),
                        Err(error) => error.to_string(),
                    };
                    vec![
                        delivery.agent.id.clone(),
                        outcome_word(&delivery.result).to_string(),
                        detail,
                    ]
                })
                .collect();
            print!("{}", table::render(&["AGENT", "OUTCOME", "DETAIL"], &rows));
        }
    }
    Outcome::from_all_ok(deliveries.iter().all(|delivery| delivery.result.is_ok()))
}

/// A command as `--dry-run` shows it.
pub fn command_json(command: &pb::Command) -> Value {
    json!({
        "command_id": command.command_id,
        "agent_id": command.agent_id,
        "issued_at_unix_ms": command.issued_at_unix_ms,
        "expires_at_unix_ms": command.expires_at_unix_ms,
        "action": action_text(command.action.as_ref()),
    })
}

/// One line describing an action, e.g. `kill name "nginx" signal 9 (one match)`.
pub fn action_text(action: Option<&pb::command::Action>) -> String {
    use pb::command::Action;
    use pb::process_match::By;
    use pb::start_fault::Fault;
    match action {
        None => "nothing".into(),
        Some(Action::AbortAll(_)) => "abort every active fault".into(),
        Some(Action::Abort(abort)) => format!("abort fault {}", abort.fault_id),
        Some(Action::Start(start)) => match &start.fault {
            Some(Fault::Kill(kill)) => {
                let target = match kill.target.as_ref().and_then(|t| t.by.as_ref()) {
                    Some(By::Name(name)) => format!("name {name:?}"),
                    Some(By::Exe(exe)) => format!("exe {exe:?}"),
                    Some(By::CmdlinePattern(pattern)) => format!("pattern {pattern:?}"),
                    Some(By::Pid(pid)) => format!("pid {pid}"),
                    Some(By::User(user)) => format!("user {user:?}"),
                    None => "no target".into(),
                };
                let how = if kill.all_matches {
                    "every match"
                } else {
                    "one match at random"
                };
                format!("kill {target} with signal {} ({how})", kill.signal)
            }
            Some(other) => format!("{other:?}"),
            None => "no fault".into(),
        },
    }
}
