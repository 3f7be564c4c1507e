//! The fault journal: what is applied right now and how to undo it, in `state_dir`.
//!
//! Written atomically (temp file, fsync, rename, fsync of the folder) *before* a fault is
//! applied and after it is reverted, so an agent that crashed knows at its next start what
//! it left behind, and undoes it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "faults.json";

/// How to undo a fault after a crash, when the agent's memory of it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "undo")]
pub enum Undo {
    /// Threads that died with the crashed agent (cpu, a repeating kill).
    Nothing,
    /// A fill file to remove.
    RemoveFile { path: PathBuf },
    /// A helper process (the memory holder) to end, found by its fault id marker.
    EndHelper { marker: String },
    /// A stop-host waiting out its delay: a restart cancels it (nothing to undo, and
    /// nothing to report: the host was not stopped).
    PendingStop { mode: String },
    /// The host is being stopped now: nothing to undo, but the agent reports it once back.
    ReportStop { mode: String },
    /// A network fault's nftables table (`inet TABLE`) and iptables mangle chains.
    RemoveNetworkRules { table: String, chain: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub fault_id: String,
    pub kind: String,
    pub started_at_unix_ms: i64,
    pub ends_at_unix_ms: i64,
    #[serde(flatten)]
    pub undo: Undo,
}

#[derive(Debug, thiserror::Error)]
#[error("fault journal {path}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// The faults applied right now and how to undo each, on disk: what the next start
/// reverts after a crash.
#[derive(Debug)]
pub struct FaultJournal {
    path: PathBuf,
    records: Mutex<Vec<Record>>,
}

impl FaultJournal {
    /// Opens the journal and hands back what a previous run left in it, to be undone.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Record>), JournalError> {
        let path = state_dir.join(FILE_NAME);
        let left = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| JournalError {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, error),
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(JournalError { path, source }),
        };
        let journal = Self {
            path,
            records: Mutex::new(left.clone()),
        };
        Ok((journal, left))
    }

    /// The state dir the journal lives in.
    pub fn state_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Reads what the journal holds without changing it (for `validate`).
    pub fn check(state_dir: &Path) -> Result<usize, JournalError> {
        let path = state_dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<Record>>(&bytes)
                .map(|records| records.len())
                .map_err(|error| JournalError {
                    path,
                    source: io::Error::new(io::ErrorKind::InvalidData, error),
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(JournalError { path, source }),
        }
    }

    pub fn add(&self, record: Record) -> Result<(), JournalError> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|r| r.fault_id != record.fault_id);
        records.push(record);
        self.write(&records)
    }

    pub fn contains(&self, fault_id: &str) -> bool {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().any(|r| r.fault_id == fault_id)
    }

    /// Forgets a fault; forgetting one that is not there is fine (reverts are idempotent).
    pub fn remove(&self, fault_id: &str) -> Result<(), JournalError> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let before = records.len();
        records.retain(|r| r.fault_id != fault_id);
        if records.len() == before {
            return Ok(());
        }
        self.write(&records)
    }

    fn write(&self, records: &[Record]) -> Result<(), JournalError> {
        let started = std::time::Instant::now();
        let written = self.write_durably(records);
        crate::metrics::get()
            .journal_write
            .observe(started.elapsed().as_secs_f64());
        written
    }

    fn write_durably(&self, records: &[Record]) -> Result<(), JournalError> {
        let error = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let temp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(records).map_err(|e| error(e.into()))?;
        let mut file = File::create(&temp).map_err(error)?;
        file.write_all(&bytes).map_err(error)?;
        file.sync_all().map_err(error)?;
        fs::rename(&temp, &self.path).map_err(error)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            fault_id: id.into(),
            kind: "disk".into(),
            started_at_unix_ms: 1,
            ends_at_unix_ms: 2,
            undo: Undo::RemoveFile {
                path: "/tmp/x".into(),
            },
        }
    }

    #[test]
    fn what_is_added_survives_a_restart_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, left) = FaultJournal::open(dir.path()).unwrap();
        assert!(left.is_empty());
        journal.add(record("a")).unwrap();
        journal.add(record("b")).unwrap();
        journal.remove("a").unwrap();
        journal.remove("a").unwrap();
        drop(journal);
        let (_, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("b")]);
        assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
    }

    #[test]
    fn a_damaged_journal_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"[{").unwrap();
        assert!(FaultJournal::open(dir.path()).is_err());
    }
}
