//! The command ledger: every command id the agent accepted, remembered for its validity
//! window across restarts, with the outcome it got.
//!
//! On disk it is an append-only file of JSON lines in `state_dir`. A command's admission
//! is appended and synced *before* it runs, so a crash can never let the same id run
//! twice. (A command that only ends faults, which changes nothing if it runs twice, is
//! appended without a sync of its own: the next synced line takes it to the disk. A
//! power loss may forget it, and then a later command reusing its id is not refused.)
//! Its outcome is appended after; if a crash loses it, a retry is told the outcome is
//! unknown instead of running again. The file is compacted (temp file, fsync, rename) at
//! start-up and when expired lines dominate.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
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

/// What admission needs of a command, kept in memory: a few dozen bytes, so a full
/// validity window of commands costs little. The first answer stays on disk, in the
/// entry's latest line, and is read back for the rare exact retry.
#[derive(Debug, Clone)]
struct Entry {
    digest: Digest16,
    until_unix_ms: i64,
    expires_at_unix_ms: i64,
    /// Where the entry's latest line (admission, or outcome once known) is in the file.
    line: Span,
    finished: bool,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    at: u64,
    len: u32,
}

/// The first 16 bytes of a SHA-256 (of an id, or of a payload's digest): a collision
/// would take 2^64 work even for someone who chooses both.
type Digest16 = [u8; 16];

fn digest16(bytes: &[u8]) -> Digest16 {
    let full = Sha256::digest(bytes);
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    short
}

/// When an admission is on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before `admit` returns: a crash can never let the command run twice.
    Synced,
    /// Written, and taken to the disk by the next synced line: for a command whose second
    /// run changes nothing (it only ends faults). A power loss may forget it; a retry then
    /// runs it again, and another command may then take its id.
    WithNextSync,
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
    /// Where the next line goes (the file's length).
    end: u64,
    /// Keyed by the id's digest.
    entries: HashMap<Digest16, Entry>,
    /// The latest expiry among forgotten commands (persisted before they are dropped).
    horizon_unix_ms: i64,
    lines: usize,
    /// Live entries are counted (a pass over all of them) only once `lines` is past this:
    /// a count per command made a burst of commands quadratic.
    recount_at_lines: usize,
    /// Set when a write failed: the file may end in a torn line, so nothing more is
    /// appended (and no command admitted) until a restart compacts it.
    broken: bool,
    /// Lines appended with a sync of their own.
    #[cfg(test)]
    syncs: usize,
}

impl Inner {
    /// The entries whose commands can still be fresh.
    fn live(&self, now_unix_ms: i64) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.until_unix_ms >= now_unix_ms)
            .count()
    }
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
            .map(|(entries, _)| entries.len())
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
        let (entries, end) = read_entries(&path).map_err(error)?;
        let horizon_unix_ms = read_horizon(&path).map_err(error)?;
        let ledger = Self {
            path: path.clone(),
            compact_after_lines: COMPACT_AFTER_LINES,
            inner: Mutex::new(Inner {
                file: open_append(&path).map_err(error)?,
                end,
                entries,
                horizon_unix_ms,
                lines: 0,
                recount_at_lines: 0,
                broken: false,
                #[cfg(test)]
                syncs: 0,
            }),
            _lock: lock,
        };
        ledger.compact(now_unix_ms).map_err(error)?;
        Ok(ledger)
    }

    /// Records a command before it runs, as `durability` says, or says why it must not
    /// run.
    pub fn admit(
        &self,
        id: &str,
        digest: &str,
        expires_at_unix_ms: i64,
        until_unix_ms: i64,
        now_unix_ms: i64,
        durability: Durability,
    ) -> Result<Admission, LedgerError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.broken {
            return Err(self.error(io::Error::other(
                "an earlier write failed; restart the agent to recover the ledger",
            )));
        }
        let key = digest16(id.as_bytes());
        let short = digest16(digest.as_bytes());
        let known = inner.entries.get(&key).cloned();
        if let Some(entry) = &known
            && entry.digest == short
        {
            // Remembered, so answered from memory even if a raised skew or a clock set
            // back made it fresh again.
            if !entry.finished {
                return Ok(Admission::Pending);
            }
            let line = read_line(&inner.file, entry.line).map_err(|e| self.error(e))?;
            return Ok(line.outcome.map_or(Admission::Pending, Admission::Replay));
        }
        if known
            .as_ref()
            .is_some_and(|entry| entry.until_unix_ms >= now_unix_ms)
        {
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
        let line = Line {
            id: id.to_string(),
            digest: digest.to_string(),
            until_unix_ms,
            expires_at_unix_ms: Some(expires_at_unix_ms),
            outcome: None,
        };
        let span = self.append(&mut inner, &line, durability)?;
        inner.entries.insert(
            key,
            Entry {
                digest: short,
                until_unix_ms,
                expires_at_unix_ms,
                line: span,
                finished: false,
            },
        );
        Ok(Admission::New)
    }

    /// Whether the ledger can record admissions (false after a failed write).
    pub fn is_broken(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).broken
    }

    /// Forgets the commands that can no longer be fresh, by the rule a command's outcome
    /// applies (an idle agent's housekeeping: else a burst's entries stay until the next
    /// command).
    pub fn forget_expired(&self, now_unix_ms: i64) -> Result<(), LedgerError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.broken || !self.expired_dominate(&inner, inner.live(now_unix_ms)) {
            return Ok(());
        }
        drop(inner);
        self.compact(now_unix_ms)
            .map_err(|source| self.error(source))
    }

    /// The rule for compacting: the file is past its size floor and most of its lines are
    /// of commands no longer live.
    fn expired_dominate(&self, inner: &Inner, live: usize) -> bool {
        inner.lines > self.compact_after_lines && inner.lines > 2 * live
    }

    /// Lines appended with a sync of their own.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> usize {
        self.inner.lock().unwrap().syncs
    }

    /// Records what an admitted command got, for exact retries.
    pub fn finish(
        &self,
        id: &str,
        digest: &str,
        outcome: FirstAnswer,
        now_unix_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest16(id.as_bytes());
        // Only this command's entry: its id may have been reused (once expired) meanwhile.
        let Some(entry) = inner
            .entries
            .get(&key)
            .filter(|entry| entry.digest == digest16(digest.as_bytes()))
            .cloned()
        else {
            return Ok(());
        };
        let line = Line {
            id: id.to_string(),
            digest: digest.to_string(),
            until_unix_ms: entry.until_unix_ms,
            expires_at_unix_ms: Some(entry.expires_at_unix_ms),
            outcome: Some(outcome),
        };
        // Not synced: losing it in a power cut makes a retry answer "unknown", never rerun.
        let span = self.append(&mut inner, &line, Durability::WithNextSync)?;
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.line = span;
            entry.finished = true;
        }
        if inner.lines <= self.compact_after_lines.max(inner.recount_at_lines) {
            return Ok(());
        }
        let live = inner.live(now_unix_ms);
        // Compacted when expired lines dominate; else counted again after as many lines
        // as are live, so the file stays within a few times the live entries.
        inner.recount_at_lines = inner.lines + live.max(self.compact_after_lines);
        if self.expired_dominate(&inner, live) {
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

    fn append(
        &self,
        inner: &mut Inner,
        line: &Line,
        durability: Durability,
    ) -> Result<Span, LedgerError> {
        if inner.broken {
            return Err(self.error(io::Error::other("an earlier write failed")));
        }
        let mut text = serde_json::to_string(line).map_err(|e| self.error(e.into()))?;
        text.push('\n');
        let started = std::time::Instant::now();
        let written = inner
            .file
            .write_all(text.as_bytes())
            .and_then(|()| match durability {
                Durability::Synced => inner.file.sync_data(),
                Durability::WithNextSync => Ok(()),
            });
        crate::metrics::get()
            .ledger_write
            .observe(started.elapsed().as_secs_f64());
        if let Err(source) = written {
            inner.broken = true;
            return Err(self.error(source));
        }
        let span = Span {
            at: inner.end,
            len: text.len() as u32,
        };
        inner.end += text.len() as u64;
        inner.lines += 1;
        #[cfg(test)]
        if durability == Durability::Synced {
            inner.syncs += 1;
        }
        Ok(span)
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
        // The table a burst grew is given back, not kept for the next burst.
        inner.entries.shrink_to_fit();
        let temp = path.with_extension("jsonl.tmp");
        let mut end = 0;
        {
            // Each entry's latest line holds all of it: copied as it is.
            let mut out = io::BufWriter::new(File::create(&temp)?);
            let mut text = Vec::new();
            for entry in inner.entries.values_mut() {
                text.resize(entry.line.len as usize, 0);
                inner.file.read_exact_at(&mut text, entry.line.at)?;
                out.write_all(&text)?;
                entry.line.at = end;
                end += text.len() as u64;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&temp, path)?;
        inner.file = open_append(path)?;
        inner.end = end;
        inner.lines = inner.entries.len();
        inner.recount_at_lines = 0;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn read_line(file: &File, span: Span) -> io::Result<Line> {
    let mut text = vec![0u8; span.len as usize];
    file.read_exact_at(&mut text, span.at)?;
    serde_json::from_slice(&text).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
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
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

/// An admission line starts an entry (replacing any earlier one for the id: ids may be
/// reused once expired); an outcome line completes the entry with its digest, or is the
/// whole entry (compaction writes one line per command). A torn last line (a crash
/// mid-write of an outcome) is skipped: the admission before it stands.
/// Returns the entries and the file's length.
fn read_entries(path: &Path) -> io::Result<(HashMap<Digest16, Entry>, u64)> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((HashMap::new(), 0)),
        Err(error) => return Err(error),
    };
    let mut entries: HashMap<Digest16, Entry> = HashMap::new();
    let mut reader = BufReader::new(file);
    let mut text = Vec::new();
    let mut at = 0u64;
    loop {
        text.clear();
        let read = reader.read_until(b'\n', &mut text)?;
        if read == 0 {
            break;
        }
        let span = Span {
            at,
            len: read as u32,
        };
        at += read as u64;
        let Ok(line) = serde_json::from_slice::<Line>(&text) else {
            tracing::warn!(path = %path.display(), "skipping an unreadable ledger line");
            continue;
        };
        let key = digest16(line.id.as_bytes());
        let entry = Entry {
            digest: digest16(line.digest.as_bytes()),
            until_unix_ms: line.until_unix_ms,
            expires_at_unix_ms: line.expires_at_unix_ms.unwrap_or(line.until_unix_ms),
            line: span,
            finished: line.outcome.is_some(),
        };
        match entries.get(&key) {
            // The outcome of an older use of a reused id: the newer admission stands.
            Some(known) if entry.finished && known.digest != entry.digest => {}
            // An admission, the outcome of the admission before it, or a whole command
            // as compaction writes it.
            _ => {
                entries.insert(key, entry);
            }
        }
    }
    Ok((entries, at))
}

#[cfg(test)]
mod tests;
