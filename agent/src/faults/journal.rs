//! The fault journal: what is applied right now and how to undo it, in `state_dir`.
//!
//! An append-only file of JSON lines, each a fault added or removed, synced (one
//! `fdatasync`) *before* a fault is applied and after it is reverted, so an agent that
//! crashed knows at its next start what it left behind, and undoes it. A line cut short by
//! a crash is the last one and was never acted on (its fault was not applied yet, or was
//! reverted already), so it is left out. The file is rewritten atomically with only the
//! live faults at start-up, when removed lines dominate, and after a failed append.
//! (Before issue 18 the whole journal was rewritten for every change, temp file, rename
//! and folder sync: three syncs, ~1 ms on a VM's disk. Such a `faults.json` is still
//! read.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "faults.jsonl";
/// The whole-file journal agents before issue 18 wrote: read once, then replaced.
const LEGACY_NAME: &str = "faults.json";
/// Appended lines after which the file is rewritten, if most of them are removed faults.
const COMPACT_AFTER_LINES: usize = 64;

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

/// One line of the journal file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Add(Record),
    Remove(String),
}

/// The faults applied right now and how to undo each, on disk: what the next start
/// reverts after a crash.
#[derive(Debug)]
pub struct FaultJournal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    records: Vec<Record>,
    /// Open for appending; `None` after a failed write: the next change rewrites the file.
    file: Option<File>,
    /// Lines in the file.
    lines: usize,
}

impl FaultJournal {
    /// Opens the journal and hands back what a previous run left in it, to be undone.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Record>), JournalError> {
        let path = state_dir.join(FILE_NAME);
        let left = Self::read(state_dir)?;
        let journal = Self {
            path,
            inner: Mutex::new(Inner {
                records: left.clone(),
                file: None,
                lines: 0,
            }),
        };
        {
            let mut inner = journal.inner.lock().unwrap_or_else(|e| e.into_inner());
            journal.rewrite(&mut inner)?;
        }
        let legacy = state_dir.join(LEGACY_NAME);
        if legacy.exists() {
            fs::remove_file(&legacy)
                .and_then(|()| crate::state_file::sync_dir(state_dir))
                .map_err(|source| JournalError {
                    path: legacy,
                    source,
                })?;
        }
        Ok((journal, left))
    }

    /// The state dir the journal lives in.
    pub fn state_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Reads what the journal holds without changing it (for `validate`).
    pub fn check(state_dir: &Path) -> Result<usize, JournalError> {
        Self::read(state_dir).map(|records| records.len())
    }

    /// The faults the journal in `state_dir` holds, without changing it: its lines
    /// replayed, after what an older agent's whole-file journal held.
    pub fn read(state_dir: &Path) -> Result<Vec<Record>, JournalError> {
        let legacy = state_dir.join(LEGACY_NAME);
        let mut records: Vec<Record> = match fs::read(&legacy) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| JournalError {
                path: legacy,
                source: io::Error::new(io::ErrorKind::InvalidData, error),
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(JournalError {
                    path: legacy,
                    source,
                });
            }
        };
        let path = state_dir.join(FILE_NAME);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(records),
            Err(source) => return Err(JournalError { path, source }),
        };
        let damaged = |line: usize, why: String| JournalError {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("line {line}: {why}")),
        };
        // Only whole lines: a crash may have cut the last one short.
        let whole = text
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(&text[..0], |end| &text[..=end]);
        for (number, line) in whole.split(|&byte| byte == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(Change::Add(record)) => {
                    records.retain(|r| r.fault_id != record.fault_id);
                    records.push(record);
                }
                Ok(Change::Remove(fault_id)) => records.retain(|r| r.fault_id != fault_id),
                Err(error) => return Err(damaged(number + 1, error.to_string())),
            }
        }
        Ok(records)
    }

    pub fn add(&self, record: Record) -> Result<(), JournalError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.records.retain(|r| r.fault_id != record.fault_id);
        inner.records.push(record.clone());
        let fault_id = record.fault_id.clone();
        let written = self.change(&mut inner, &Change::Add(record));
        if written.is_err() {
            // Not applied, so nothing to undo after a crash either.
            inner.records.retain(|r| r.fault_id != fault_id);
        }
        written
    }

    pub fn contains(&self, fault_id: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.records.iter().any(|r| r.fault_id == fault_id)
    }

    /// Forgets a fault; forgetting one that is not there is fine (reverts are idempotent).
    pub fn remove(&self, fault_id: &str) -> Result<(), JournalError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = inner.records.len();
        inner.records.retain(|r| r.fault_id != fault_id);
        if inner.records.len() == before {
            return Ok(());
        }
        self.change(&mut inner, &Change::Remove(fault_id.to_string()))
    }

    /// Makes `change` (already in `inner.records`) durable: one appended line, or the
    /// whole file again when removed faults dominate it or an append failed.
    fn change(&self, inner: &mut Inner, change: &Change) -> Result<(), JournalError> {
        let started = std::time::Instant::now();
        let compact = inner.lines >= COMPACT_AFTER_LINES && inner.lines > 2 * inner.records.len();
        let written = if compact || inner.file.is_none() {
            self.rewrite(inner)
        } else {
            self.append(inner, change)
        };
        crate::metrics::get()
            .journal_write
            .observe(started.elapsed().as_secs_f64());
        written
    }

    fn append(&self, inner: &mut Inner, change: &Change) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(change).map_err(|e| self.error(e.into()))?;
        line.push(b'\n');
        let Some(file) = inner.file.as_mut() else {
            return Err(self.error(io::Error::other("the journal is not open")));
        };
        match file.write_all(&line).and_then(|()| file.sync_data()) {
            Ok(()) => {
                inner.lines += 1;
                Ok(())
            }
            Err(source) => {
                // What was half written may be followed by nothing: the next change
                // rewrites the whole file from memory.
                inner.file = None;
                Err(self.error(source))
            }
        }
    }

    /// Writes the live faults as a new file (temp file, fsync, rename, folder fsync) and
    /// appends to it from then on.
    fn rewrite(&self, inner: &mut Inner) -> Result<(), JournalError> {
        inner.file = None;
        let mut text = Vec::new();
        for record in &inner.records {
            serde_json::to_writer(&mut text, &Change::Add(record.clone()))
                .map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        crate::state_file::write_atomic(&self.path, &text).map_err(|e| self.error(e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(e))?;
        inner.file = Some(file);
        inner.lines = inner.records.len();
        Ok(())
    }

    /// Makes the next append fail, as a full or failing disk would.
    #[cfg(test)]
    fn fail_next_append(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.file = Some(OpenOptions::new().write(true).open("/dev/full").unwrap());
    }

    fn error(&self, source: io::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
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
        fs::write(dir.path().join(FILE_NAME), b"[{\n").unwrap();
        let error = FaultJournal::open(dir.path()).unwrap_err();
        assert!(
            format!("{:?}", error.source).contains("line 1"),
            "{error:?}"
        );
        fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        fs::write(dir.path().join(LEGACY_NAME), b"[{").unwrap();
        assert!(FaultJournal::open(dir.path()).is_err());
    }

    /// A crash in the middle of an append leaves a line without its end: that change was
    /// never acted on, and the rest of the journal holds.
    #[test]
    fn a_line_cut_short_by_a_crash_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = FaultJournal::open(dir.path()).unwrap();
        journal.add(record("a")).unwrap();
        drop(journal);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all(br#"{"add":{"fault_id":"b","ki"#).unwrap();
        let (journal, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("a")]);
        journal.add(record("c")).unwrap();
        drop(journal);
        let (_, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("a"), record("c")]);
    }

    /// Each change is one line; the file is rewritten when removed faults dominate it.
    #[test]
    fn changes_are_appended_and_the_file_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = FaultJournal::open(dir.path()).unwrap();
        journal.add(record("kept")).unwrap();
        let lines = || {
            fs::read_to_string(dir.path().join(FILE_NAME))
                .unwrap()
                .lines()
                .count()
        };
        journal.add(record("a")).unwrap();
        journal.remove("a").unwrap();
        assert_eq!(lines(), 3, "one line per change");
        for n in 0..500 {
            journal.add(record(&format!("f{n}"))).unwrap();
            journal.remove(&format!("f{n}")).unwrap();
            assert!(lines() <= COMPACT_AFTER_LINES + 2, "{} lines", lines());
        }
        drop(journal);
        let (_, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("kept")]);
    }

    /// An agent before issue 18 kept the journal as one JSON array: its faults are undone
    /// like any others, and the old file is replaced.
    #[test]
    fn an_older_agents_journal_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_NAME);
        fs::write(
            &legacy,
            serde_json::to_vec_pretty(&[record("old")]).unwrap(),
        )
        .unwrap();
        assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
        let (journal, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("old")]);
        assert!(!legacy.exists());
        journal.remove("old").unwrap();
        drop(journal);
        let (_, left) = FaultJournal::open(dir.path()).unwrap();
        assert!(left.is_empty());
    }

    /// An append that fails leaves no fault behind to undo, and the next change writes
    /// the whole journal again rather than after a half-written line.
    #[test]
    fn a_failed_append_is_followed_by_a_whole_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = FaultJournal::open(dir.path()).unwrap();
        journal.add(record("a")).unwrap();
        journal.fail_next_append();
        assert!(journal.add(record("b")).is_err());
        assert!(!journal.contains("b"));
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all(br#"{"add":{"fau"#).unwrap();
        journal.add(record("c")).unwrap();
        journal.add(record("d")).unwrap();
        drop(journal);
        let (_, left) = FaultJournal::open(dir.path()).unwrap();
        assert_eq!(left, [record("a"), record("c"), record("d")]);
    }
}
