//! How command results are shown: a table for people, JSON for scripts.

use crate::cli::Output;
use serde_json::{Value, json};

use troop_coordinator::dispatch::CallError;
use troop_coordinator::table;
use troop_proto::pb;

use crate::outcome::Outcome;

pub use troop_coordinator::describe::{action_text, fault_fields, outcome_word};
pub use troop_coordinator::dispatch::Delivery;

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
        "ends_at_unix_ms": receipt.ends_at_unix_ms,
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
    print_attack(output, deliveries, None)
}

/// As [`print_deliveries`], with how the targets were picked: its seed (so the same
/// picks can be made again) and a note when fewer hosts matched than asked.
pub fn print_attack(output: Output, deliveries: &[Delivery], picked: Option<&Picked>) -> Outcome {
    match output {
        Output::Json => {
            let all: Vec<Value> = deliveries.iter().map(delivery_json).collect();
            let mut value = json!({ "results": all });
            if let Some(picked) = picked {
                value["seed"] = json!(picked.seed);
                value["shortfall"] = json!(picked.shortfall());
            }
            println!("{value}");
        }
        Output::Table => {
            if let Some(picked) = picked {
                picked.tell();
            }
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

/// How an attack's targets were picked.
#[derive(Debug, Clone)]
pub struct Picked {
    pub seed: u64,
    /// `--count N` as asked, if it was.
    pub asked: Option<usize>,
    /// Hosts the selector matched.
    pub matched: usize,
    pub picked: usize,
}

impl Picked {
    /// `{"asked": N, "matched": M}` when `--count` asked for more hosts than matched.
    pub fn shortfall(&self) -> Value {
        match self.asked {
            Some(asked) if asked > self.matched => {
                json!({ "asked": asked, "matched": self.matched })
            }
            _ => Value::Null,
        }
    }

    /// The seed and any shortfall, on stderr (stdout holds the results).
    pub fn tell(&self) {
        if let Some(asked) = self.asked.filter(|asked| *asked > self.matched) {
            eprintln!(
                "note: --count {asked} asked for more hosts than the {} that match; hitting {}",
                self.matched, self.picked
            );
        }
        eprintln!("picked {} host(s) with --seed {}", self.picked, self.seed);
    }
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
