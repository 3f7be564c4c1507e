//! Faults the agent applies. Each module validates its parameters from the wire
//! (refusing out-of-range values), and applies its fault through a host module; the
//! [`engine`] holds applied faults until their deadline and reverts them, and the
//! [`journal`] lets a restarted agent undo what a crashed one left.

pub mod cpu;
pub mod disk;
pub mod engine;
pub mod journal;
pub mod kill;
pub mod memory;
pub mod network;
pub mod power;
pub mod runner;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use troop_proto::pb;

use engine::{Effect, Engine};
use journal::{Record, Undo};

const LAST_STOP_FILE: &str = "last-stop.json";

/// The last stop-host carried out, as the agent reports it once the host is back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStop {
    pub command_id: String,
    pub mode: String,
    pub at_unix_ms: i64,
}

impl From<LastStop> for pb::HostStop {
    fn from(stop: LastStop) -> Self {
        pb::HostStop {
            command_id: stop.command_id,
            mode: stop.mode,
            at_unix_ms: stop.at_unix_ms,
        }
    }
}

pub fn load_last_stop(state_dir: &Path) -> Option<LastStop> {
    let bytes = std::fs::read(state_dir.join(LAST_STOP_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Undoes what a previous run left in the journal (a crash, or a stopped host) and clears
/// it. Idempotent: a restart in the middle simply undoes again. What cannot be undone now
/// stays journaled and is handed to the engine, which lists it and retries.
pub fn recover(state_dir: &Path, engine: &Engine, left: Vec<Record>) {
    for record in left {
        let id = &record.fault_id;
        match undo_leftover(state_dir, &record) {
            Ok(()) => {
                crate::metrics::get().reverted(
                    &record.kind,
                    engine::EndReason::Recovery.label(),
                    std::time::Duration::ZERO,
                );
                if let Err(error) = engine.journal().remove(id) {
                    tracing::error!(fault_id = %id, error = %troop_telemetry::error_chain(&error), "cannot update the fault journal");
                }
            }
            Err(error) => {
                tracing::error!(fault_id = %id, kind = %record.kind, %error, "cannot undo what the previous agent process left; retrying");
                let effect = Box::new(Leftover {
                    state_dir: state_dir.to_path_buf(),
                    record: record.clone(),
                });
                engine.adopt_failed(&record, effect, error);
            }
        }
    }
}

fn undo_leftover(state_dir: &Path, record: &Record) -> Result<(), String> {
    let id = &record.fault_id;
    match &record.undo {
        Undo::Nothing => {
            tracing::info!(fault_id = %id, kind = %record.kind, "fault ended with the previous agent process");
        }
        Undo::RemoveFile { path } => {
            if let Some(name) = path.file_name().and_then(|name| name.to_str()) {
                crate::host::fill_guard::end_leftover(name);
            }
            crate::host::disk::remove_fill(path)
                .map_err(|error| format!("remove {}: {error}", path.display()))?;
            tracing::info!(fault_id = %id, path = %path.display(), "removed a fill left by the previous agent process");
        }
        Undo::EndHelper { marker } => crate::host::memory::end_leftover(marker),
        Undo::RemoveNetworkRules { table, chain } => {
            network::remove_rules(table, chain)?;
            tracing::info!(fault_id = %id, %table, %chain, "removed network rules left by the previous agent process");
        }
        Undo::PendingStop { mode } => {
            tracing::info!(fault_id = %id, %mode, "a stop-host was still waiting out its delay when the previous agent process ended; it is cancelled");
        }
        Undo::ReportStop { mode } => {
            let stop = LastStop {
                command_id: id.clone(),
                mode: mode.clone(),
                at_unix_ms: record.started_at_unix_ms,
            };
            tracing::warn!(command_id = %id, mode = %mode, "this host was stopped by troop");
            save_last_stop(state_dir, &stop)
                .map_err(|error| format!("cannot record the last stop: {error}"))?;
        }
    }
    Ok(())
}

/// A journal entry the start-up recovery could not undo, retried by the engine.
struct Leftover {
    state_dir: PathBuf,
    record: Record,
}

impl Effect for Leftover {
    fn effect(&self) -> String {
        format!(
            "left applied by a previous agent process ({})",
            self.record.kind
        )
    }

    fn revert(&mut self) -> Result<(), String> {
        undo_leftover(&self.state_dir, &self.record)
    }
}

fn save_last_stop(state_dir: &Path, stop: &LastStop) -> std::io::Result<()> {
    crate::state_file::write_atomic(&state_dir.join(LAST_STOP_FILE), &serde_json::to_vec(stop)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use journal::FaultJournal;

    #[test]
    fn recovery_removes_a_leftover_fill_and_remembers_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let fill = dir.path().join(".troop-fill-x");
        std::fs::write(&fill, b"fill").unwrap();
        {
            let (journal, _) = FaultJournal::open(dir.path()).unwrap();
            for (id, undo) in [
                ("x", Undo::RemoveFile { path: fill.clone() }),
                (
                    "s",
                    Undo::ReportStop {
                        mode: "poweroff".into(),
                    },
                ),
            ] {
                journal
                    .add(Record {
                        fault_id: id.into(),
                        kind: "disk".into(),
                        started_at_unix_ms: 7,
                        ends_at_unix_ms: 8,
                        undo,
                    })
                    .unwrap();
            }
        }
        let (journal, left) = FaultJournal::open(dir.path()).unwrap();
        recover(dir.path(), &Engine::new(journal), left);
        assert!(!fill.exists());
        assert_eq!(FaultJournal::check(dir.path()).unwrap(), 0);
        let stop = load_last_stop(dir.path()).unwrap();
        assert_eq!(
            (
                stop.command_id.as_str(),
                stop.mode.as_str(),
                stop.at_unix_ms
            ),
            ("s", "poweroff", 7)
        );
    }
}
