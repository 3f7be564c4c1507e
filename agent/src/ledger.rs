//! The command ledger: every command id the agent accepted, remembered for its validity
//! window across restarts, with the outcome it got.
//!
//! On disk it is an append-only file of JSON lines in `state_dir`. A command's admission
//! is appended and synced *before* it runs, so a crash can never let the same id run
//! twice. Its outcome is appended after; if a crash loses it, a retry is told the outcome
//! is unknown instead of running again. The file is compacted (temp file, fsync, rename)
//! at start-up and when expired lines dominate.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FILE_NAME: &str = "commands.jsonl";
/// The replay horizon: every command the ledger ever forgot expired at or before it.
const HORIZON_NAME: &str = "replay-horizon.json";
/// Held (flock) while an agent uses the state dir: two agents on one ledger would each
/// forget what the other ran.
const LOCK_NAME: &str = "agent.lock";
const COMPACT_AFTER_LINES: usize = 4096;

/// What a command got the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstAnswer {
    /// The encoded `Receipt`, hex.
    Receipt(String),
    /// The gRPC status it was answered with.
    Status { code: i32, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    id: String,
    /// SHA-256 of the signed payload: tells an exact retry from a reused id.
    digest: String,
    until_unix_ms: i64,
    /// Absent in ledgers written before the replay horizon existed; `until` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<FirstAnswer>,
}

#[derive(Debug, Clone)]
struct Entry {
    digest: String,
    until_unix_ms: i64,
    expires_at_unix_ms: i64,
    outcome: Option<FirstAnswer>,
}

impl Entry {
    fn line(&self, id: &str) -> Line {
        Line {
            id: id.to_string(),
            digest: self.digest.clone(),
            until_unix_ms: self.until_unix_ms,
            expires_at_unix_ms: Some(self.expires_at_unix_ms),
            outcome: self.outcome.clone(),
        }
    }
}

/// What the ledger says about a command about to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// First time: recorded durably; run it, then call [`ReplayLedger::finish`].
    New,
    /// The exact same command ran before and got this.
    Replay(FirstAnswer),
    /// The exact same command was admitted but its outcome is not (yet) known.
    Pending,
    /// Another command already used this id.
    Conflict,
    /// The command expired at or before the replay horizon: it may have run and been
    /// forgotten, whatever the clock or the configured skew say now.
    BeyondHorizon,
}

#[derive(Debug, thiserror::Error)]
#[error("command ledger {path}")]
pub struct LedgerError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Every command id this agent admitted, kept on disk until it can no longer be fresh:
/// the reason a command never runs twice, also across a crash.
#[derive(Debug)]
pub struct ReplayLedger {
    path: PathBuf,
    compact_after_lines: usize,
    inner: Mutex<Inner>,
    _lock: Flock<File>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    entries: HashMap<String, Entry>,
    /// The latest expiry among forgotten commands (persisted before they are dropped).
    horizon_unix_ms: i64,
    lines: usize,
    /// Set when a write failed: the file may end in a torn line, so nothing more is
    /// appended (and no command admitted) until a restart compacts it.
    broken: bool,
}

pub fn digest(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

impl ReplayLedger {
    /// Reads the ledger in `state_dir` without changing anything (for `validate`, which
    /// may run beside a live agent). Returns how many commands it remembers.
    pub fn check(state_dir: &Path) -> Result<usize, LedgerError> {
        let path = state_dir.join(FILE_NAME);
        read_entries(&path)
            .map(|entries| entries.len())
            .map_err(|source| LedgerError { path, source })
    }

    /// Opens the ledger in `state_dir` for this agent alone, forgetting what expired
    /// before `now_unix_ms`.
    pub fn open(state_dir: &Path, now_unix_ms: i64) -> Result<Self, LedgerError> {
        let path = state_dir.join(FILE_NAME);
        let error = |source| LedgerError {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(error)?;
        let lock = lock(&state_dir.join(LOCK_NAME)).map_err(error)?;
        let entries = read_entries(&path).map_err(error)?;
        let horizon_unix_ms = read_horizon(&path).map_err(error)?;
        let ledger = Self {
            path: path.clone(),
            compact_after_lines: COMPACT_AFTER_LINES,
            inner: Mutex::new(Inner {
                file: open_append(&path).map_err(error)?,
                entries,
                horizon_unix_ms,
                lines: 0,
                broken: false,
            }),
            _lock: lock,
        };
        ledger.compact(now_unix_ms).map_err(error)?;
        Ok(ledger)
    }

    /// Records a command before it runs, or says why it must not run.
    pub fn admit(
        &self,
        id: &str,
        digest: &str,
        expires_at_unix_ms: i64,
        until_unix_ms: i64,
        now_unix_ms: i64,
    ) -> Result<Admission, LedgerError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.broken {
            return Err(self.error(io::Error::other(
                "an earlier write failed; restart the agent to recover the ledger",
            )));
        }
        let known = inner.entries.get(id);
        if let Some(entry) = known
            && entry.digest == digest
        {
            // Remembered, so answered from memory even if a raised skew or a clock set
            // back made it fresh again.
            return Ok(entry
                .outcome
                .clone()
                .map_or(Admission::Pending, Admission::Replay));
        }
        if known.is_some_and(|entry| entry.until_unix_ms >= now_unix_ms) {
            return Ok(Admission::Conflict);
        }
        if expires_at_unix_ms <= inner.horizon_unix_ms {
            return Ok(Admission::BeyondHorizon);
        }
        // An expired entry for this id is forgotten now: the horizon moves past it first.
        if let Some(replaced) = known.map(|entry| entry.expires_at_unix_ms)
            && replaced > inner.horizon_unix_ms
        {
            write_horizon(&self.path, replaced).map_err(|source| self.error(source))?;
            inner.horizon_unix_ms = replaced;
        }
        let entry = Entry {
            digest: digest.to_string(),
            until_unix_ms,
            expires_at_unix_ms,
            outcome: None,
        };
        self.append(&mut inner, &entry.line(id), true)?;
        inner.entries.insert(id.to_string(), entry);
        Ok(Admission::New)
    }

    /// Whether the ledger can record admissions (false after a failed write).
    pub fn is_broken(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).broken
    }

    /// Records what an admitted command got, for exact retries.
    pub fn finish(
        &self,
        id: &str,
        outcome: FirstAnswer,
        now_unix_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = inner.entries.get_mut(id) else {
            return Ok(());
        };
        entry.outcome = Some(outcome);
        let line = entry.line(id);
        // Not synced: losing it in a power cut makes a retry answer "unknown", never rerun.
        self.append(&mut inner, &line, false)?;
        let live = || {
            inner
                .entries
                .values()
                .filter(|entry| entry.until_unix_ms >= now_unix_ms)
                .count()
        };
        if inner.lines > self.compact_after_lines && inner.lines > 2 * live() {
            drop(inner);
            self.compact(now_unix_ms)
                .map_err(|source| self.error(source))?;
        }
        Ok(())
    }

    /// Makes every later write fail, as a full or failing disk would.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
    }

    fn error(&self, source: io::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    fn append(&self, inner: &mut Inner, line: &Line, sync: bool) -> Result<(), LedgerError> {
        if inner.broken {
            return Err(self.error(io::Error::other("an earlier write failed")));
        }
        let mut text = serde_json::to_string(line).map_err(|e| self.error(e.into()))?;
        text.push('\n');
        let written = inner
            .file
            .write_all(text.as_bytes())
            .and_then(|()| if sync { inner.file.sync_data() } else { Ok(()) });
        if let Err(source) = written {
            inner.broken = true;
            return Err(self.error(source));
        }
        inner.lines += 1;
        Ok(())
    }

    /// Rewrites the file with only the live entries, atomically. If it fails half-way the
    /// ledger stops admitting commands rather than write to a file that may be gone.
    fn compact(&self, now_unix_ms: i64) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let result = Self::rewrite(&self.path, &mut inner, now_unix_ms);
        if result.is_err() {
            inner.broken = true;
        }
        result
    }

    fn rewrite(path: &Path, inner: &mut Inner, now_unix_ms: i64) -> io::Result<()> {
        let forgotten = inner
            .entries
            .values()
            .filter(|entry| entry.until_unix_ms < now_unix_ms)
            .map(|entry| entry.expires_at_unix_ms)
            .max();
        // The horizon is on disk before anything it covers leaves the ledger.
        if let Some(horizon) = forgotten
            && horizon > inner.horizon_unix_ms
        {
            write_horizon(path, horizon)?;
            inner.horizon_unix_ms = horizon;
        }
        inner
            .entries
            .retain(|_, entry| entry.until_unix_ms >= now_unix_ms);
        let temp = path.with_extension("jsonl.tmp");
        {
            let mut file = File::create(&temp)?;
            for (id, entry) in &inner.entries {
                serde_json::to_writer(&mut file, &entry.line(id))?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        inner.file = open_append(path)?;
        inner.lines = inner.entries.len();
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn lock(path: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the state dir is in use by another running troop-agent",
            )
        } else {
            io::Error::from(errno)
        }
    })
}

#[derive(Serialize, Deserialize)]
struct Horizon {
    forgotten_expiring_up_to_unix_ms: i64,
}

fn horizon_path(ledger: &Path) -> PathBuf {
    ledger.with_file_name(HORIZON_NAME)
}

fn read_horizon(ledger: &Path) -> io::Result<i64> {
    match fs::read(horizon_path(ledger)) {
        Ok(bytes) => serde_json::from_slice::<Horizon>(&bytes)
            .map(|horizon| horizon.forgotten_expiring_up_to_unix_ms)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(i64::MIN),
        Err(error) => Err(error),
    }
}

/// Atomically: temp file, fsync, rename, fsync of the folder.
fn write_horizon(ledger: &Path, horizon_unix_ms: i64) -> io::Result<()> {
    let path = horizon_path(ledger);
    let temp = path.with_extension("json.tmp");
    {
        let mut file = File::create(&temp)?;
        serde_json::to_writer(
            &mut file,
            &Horizon {
                forgotten_expiring_up_to_unix_ms: horizon_unix_ms,
            },
        )?;
        file.sync_all()?;
    }
    fs::rename(&temp, &path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// An admission line starts an entry (replacing any earlier one for the id: ids may be
/// reused once expired); an outcome line completes the entry with its digest. A torn last
/// line (a crash mid-write of an outcome) is skipped: the admission before it stands.
fn read_entries(path: &Path) -> io::Result<HashMap<String, Entry>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(error) => return Err(error),
    };
    let mut entries = HashMap::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = serde_json::from_str::<Line>(&line?) else {
            tracing::warn!(path = %path.display(), "skipping an unreadable ledger line");
            continue;
        };
        match line.outcome {
            None => {
                entries.insert(
                    line.id,
                    Entry {
                        digest: line.digest,
                        until_unix_ms: line.until_unix_ms,
                        expires_at_unix_ms: line.expires_at_unix_ms.unwrap_or(line.until_unix_ms),
                        outcome: None,
                    },
                );
            }
            Some(outcome) => {
                if let Some(entry) = entries.get_mut(&line.id)
                    && entry.digest == line.digest
                {
                    entry.outcome = Some(outcome);
                }
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
