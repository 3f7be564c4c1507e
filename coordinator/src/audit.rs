//! The audit trail of every command the coordinator sends: campaign runs, and ad-hoc attacks,
//! their lease renewals and aborts, and halts, each an entry in `troop campaign history`.
//! A command is recorded before it is sent (none is sent that cannot be recorded, except
//! a halt), signed as it leaves, and its outcome recorded when it answers.

use std::sync::Arc;

use serde_json::Value;
use troop_proto::freshness::DEFAULT_VALIDITY;
use troop_proto::pb;

use crate::config::AgentEntry;
use crate::describe;
use crate::dispatch::{CallError, Delivery, code_name};
use crate::fleet::Fleet;
use crate::signer::{Signer, new_command, now_unix_ms};
use crate::store::{CommandOutcome, CommandRecord, Store, StoreError};

/// Where a run's commands are recorded.
#[derive(Clone, Copy)]
pub struct Audit<'a> {
    pub store: &'a Store,
    pub run: i64,
    pub step: Option<i64>,
}

/// An ad-hoc run (`troop attack`, `troop halt`) in the store.
pub struct AdhocRun {
    store: Arc<Store>,
    run: i64,
}

impl AdhocRun {
    /// Opens the store and records the run's start, under the local user's name.
    pub fn begin(fleet: &Fleet, what: &str, seed: u64) -> Result<Self, StoreError> {
        let store = Arc::new(Store::open(&fleet.config.store_url)?);
        Self::begin_in(store, what, seed, &local_operator())
    }

    /// Records the run's start in `store` under `operator` (serve's operator API).
    pub fn begin_in(
        store: Arc<Store>,
        what: &str,
        seed: u64,
        operator: &str,
    ) -> Result<Self, StoreError> {
        let run = store.begin_adhoc(what, seed, operator, now_unix_ms())?;
        Ok(Self { store, run })
    }

    /// An ad-hoc run already in `store`, to record more of its commands (renewals, aborts).
    pub fn resume_in(store: Arc<Store>, run: i64) -> Self {
        Self { store, run }
    }

    pub fn id(&self) -> i64 {
        self.run
    }

    pub fn audit(&self) -> Audit<'_> {
        Audit {
            store: &self.store,
            run: self.run,
            step: None,
        }
    }

    /// Records how it ended: `completed` if every command applied, else `failed`.
    pub fn finish(&self, deliveries: &[Delivery]) {
        let failed = deliveries.iter().filter(|d| d.result.is_err()).count();
        let (status, reason) = if failed == 0 {
            ("completed", String::new())
        } else {
            (
                "failed",
                format!("{failed} of {} command(s) not applied", deliveries.len()),
            )
        };
        if let Err(error) = self
            .store
            .finish_run(self.run, status, &reason, now_unix_ms())
        {
            tracing::warn!(%error, "audit store: cannot record the end of the run");
        }
    }
}

/// Who runs this CLI, as the audit trail names them.
pub fn local_operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

/// Sends `work`, recorded in `run` where the store takes it, else unrecorded: a halt or
/// an emergency stop must not wait for a disk. Then records how `run` ended.
pub async fn send_even_unrecorded(
    fleet: &Fleet,
    signer: &Signer,
    run: Option<&AdhocRun>,
    work: Vec<(AgentEntry, pb::command::Action)>,
) -> Vec<Delivery> {
    let none = serde_json::json!({});
    let audit = run.map(AdhocRun::audit);
    let deliveries = match send_recorded(fleet, signer, audit, work.clone(), &none).await {
        Ok(deliveries) => deliveries,
        // Recording failed, so nothing was sent.
        Err(error) => {
            tracing::warn!(%error, "audit store: cannot record the commands; sending them unrecorded");
            // Unrecorded, nothing can fail.
            send_recorded(fleet, signer, None, work, &none)
                .await
                .unwrap_or_default()
        }
    };
    if let Some(run) = run {
        run.finish(&deliveries);
    }
    deliveries
}

/// Records every command before it is sent (if one cannot be recorded, none is sent),
/// signs each as it leaves, and records what each got.
pub async fn send_recorded(
    fleet: &Fleet,
    signer: &Signer,
    audit: Option<Audit<'_>>,
    work: Vec<(AgentEntry, pb::command::Action)>,
    parameters: &Value,
) -> Result<Vec<Delivery>, StoreError> {
    let commands: Vec<(AgentEntry, pb::Command)> = work
        .into_iter()
        .map(|(agent, action)| {
            let command = new_command(&agent.id, action, DEFAULT_VALIDITY);
            tracing::debug!(agent = %agent.id, command_id = %command.command_id, action = %describe::action_text(command.action.as_ref()), "sending command");
            (agent, command)
        })
        .collect();
    let mut pending = Vec::new();
    if let Some(audit) = audit {
        for (agent, command) in &commands {
            let mut parameters = parameters.clone();
            // A start or renewal without described parameters: what it asks, as fields.
            match &command.action {
                Some(pb::command::Action::Start(start)) if parameters.get("fault").is_none() => {
                    if let Some(fault) = &start.fault {
                        parameters = serde_json::json!({
                            "fault": describe::fault_fields(fault),
                            "duration_ms": start.duration_ms,
                            "lease_ms": start.lease_ms,
                        });
                    }
                }
                Some(pb::command::Action::Renew(renew)) if parameters.get("lease_ms").is_none() => {
                    parameters = serde_json::json!({ "lease_ms": renew.lease_ms });
                }
                _ => {}
            }
            pending.push(CommandRecord {
                run: audit.run,
                step: audit.step,
                target: agent.id.clone(),
                command_id: command.command_id.clone(),
                fault_kind: describe::action_text(command.action.as_ref()),
                parameters: parameters.to_string(),
                signature_sha256: String::new(),
                key_id: signer.key_id(),
                sent_at_ms: now_unix_ms(),
            });
        }
    }
    // One transaction for all: a fleet's records cost one sync, not one per host.
    let records = match audit {
        Some(audit) => audit.store.record_commands(&pending)?,
        None => Vec::new(),
    };
    let deliveries = fleet.dispatcher.sign_and_send(signer, commands).await;
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for delivery in &deliveries {
        let (agent, command_id) = (&delivery.agent.id, &delivery.command_id);
        *outcomes
            .entry(describe::outcome_word(&delivery.result))
            .or_default() += 1;
        match &delivery.result {
            Ok(receipt) => {
                tracing::debug!(%agent, %command_id, summary = %receipt.summary, "applied")
            }
            Err(error) => tracing::debug!(%agent, %command_id, %error, "not applied"),
        }
    }
    // One line a batch: a command to 1,000 agents is not 2,000 lines in the journal (the
    // audit store has every command; each is logged at debug).
    if !deliveries.is_empty() {
        let outcomes = outcomes
            .iter()
            .map(|(word, count)| format!("{count} {word}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(commands = deliveries.len(), %outcomes, "sent");
    }
    if let Some(audit) = audit {
        let outcomes: Vec<CommandOutcome> = deliveries
            .iter()
            .zip(records)
            .map(|(delivery, id)| {
                let (code, message) = match &delivery.result {
                    Ok(receipt) => (None, receipt.summary.clone()),
                    Err(CallError::Status { code, message }) => {
                        (Some(code_name(*code).to_string()), message.clone())
                    }
                    Err(error) => (None, error.to_string()),
                };
                CommandOutcome {
                    id,
                    outcome: describe::outcome_word(&delivery.result).to_string(),
                    code,
                    message,
                    signature_sha256: delivery.signature_sha256.clone(),
                    answered_at_ms: now_unix_ms(),
                }
            })
            .collect();
        let errors = match audit.store.finish_commands(&outcomes) {
            Ok(answers) => answers.into_iter().filter_map(Result::err).collect(),
            Err(error) => vec![error],
        };
        for error in errors {
            tracing::warn!(%error, "audit store: cannot record a command's outcome");
        }
    }
    Ok(deliveries)
}
