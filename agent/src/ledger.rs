//! The command ledger: every command id the agent accepted, remembered for its validity
//! window across restarts, with the outcome it got.
//!
//! On disk it is an append-only file of JSON lines in `state_dir`. A command's admission
//! is appended and synced *before* it runs, so a crash can never let the same id run
//! twice. (A command that only ends faults, which changes nothing if it runs twice, is
//! appended without a sync of its own: the next synced line takes it to the disk. A
//! power loss may forget it, and then a later command reusing its id is not refused.)
//! Its outcome is appended after; if a crash loses it, a retry is told the outcome is
//! unknown instead of running again. A sync runs without the ledger's lock, so a command
//! that only ends faults is never held up behind another's slow or hung sync. The file is
//! compacted (temp file, fsync, rename) at start-up and when expired lines dominate.
//!
//! In memory each remembered command is 16 bytes (a key of its id, its line's offset, its
//! expiry); everything else is read back from its line when its id comes again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

impl Line {
    fn expiry(&self) -> i64 {
        self.expires_at_unix_ms.unwrap_or(self.until_unix_ms)
    }
}

/// What admission keeps of a remembered command in memory: where its latest line is and
/// until when it may be fresh, 16 bytes with its key. The rest (its digest, exact times and
/// first answer) is in that line, read back only when the id comes again: an exact retry
/// or a reuse.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The offset in the file of the entry's latest line (admission, or outcome once known).
    at: u32,
    /// `until_unix_ms` as milliseconds after the ledger's base (saturating): only for
    /// counting live entries, which decides when to compact.
    until: u32,
}

/// The first 8 bytes of the SHA-256 of an id. Two ids that share a key (2^-64 a pair) are
/// told apart by the line, and the later is refused as a reuse while the earlier is live.
type Key = u64;

fn key_of(id: &str) -> Key {
    let full = Sha256::digest(id.as_bytes());
    u64::from_le_bytes(full[..8].try_into().expect("8 bytes"))
}

/// `unix_ms` as a slot's `until` after `base_unix_ms`. Past 49 days it saturates: such an
/// entry counts as live until then, and the next compaction (which reads the exact time
/// and moves the base) counts it right.
fn after_base(unix_ms: i64, base_unix_ms: i64) -> u32 {
    u32::try_from(unix_ms.saturating_sub(base_unix_ms).max(0)).unwrap_or(u32::MAX)
}

/// A command admitted whose outcome is not yet written: the few that run right now.
#[derive(Debug, Clone, Copy)]
struct Running {
    digest: Digest16,
    until_unix_ms: i64,
    expires_at_unix_ms: i64,
}

/// The first 16 bytes of a SHA-256 of a payload's digest: a collision would take 2^64 work
/// even for someone who chooses both.
type Digest16 = [u8; 16];

fn digest16(bytes: &[u8]) -> Digest16 {
    let full = Sha256::digest(bytes);
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    short
}

/// The file's offsets are kept as `u32`: past this the ledger admits nothing until a
/// compaction makes room (4 GiB of remembered commands, about ten million).
const MAX_FILE_LEN: u64 = u32::MAX as u64 - 1;
/// Marks a slot that a compaction forgets.
const FORGOTTEN: u32 = u32::MAX;

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
    max_file_len: u64,
    inner: Mutex<Inner>,
    _lock: Flock<File>,
    /// While set, syncs wait for it to be cleared: a disk that hangs, for tests.
    #[cfg(test)]
    hung_disk: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

#[derive(Debug)]
struct Inner {
    /// Shared with a sync in flight, which runs without the lock.
    file: Arc<File>,
    /// Where the next line goes (the file's length).
    end: u64,
    entries: HashMap<Key, Slot>,
    /// What slots' `until` counts from: the time of the last compaction.
    base_unix_ms: i64,
    /// Commands admitted and still running, so that their outcome is written to their own
    /// entry (their id may be reused once they expired).
    running: HashMap<Key, Running>,
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
            .filter(|slot| self.base_unix_ms + i64::from(slot.until) >= now_unix_ms)
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
        read_entries(&path, troop_common::clock::now_unix_ms())
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
        let (entries, end) = read_entries(&path, now_unix_ms).map_err(error)?;
        let horizon_unix_ms = read_horizon(&path).map_err(error)?;
        let ledger = Self {
            path: path.clone(),
            compact_after_lines: COMPACT_AFTER_LINES,
            max_file_len: MAX_FILE_LEN,
            inner: Mutex::new(Inner {
                file: Arc::new(open_append(&path).map_err(error)?),
                end,
                entries,
                base_unix_ms: now_unix_ms,
                running: HashMap::new(),
                horizon_unix_ms,
                lines: 0,
                recount_at_lines: 0,
                broken: false,
                #[cfg(test)]
                syncs: 0,
            }),
            _lock: lock,
            #[cfg(test)]
            hung_disk: Arc::default(),
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
        let key = key_of(id);
        // The latest line of an earlier use of this id (or of an id sharing its key).
        let known = match inner.entries.get(&key) {
            Some(slot) => Some(read_line(&inner.file, slot.at).map_err(|e| self.error(e))?),
            None => None,
        };
        if let Some(line) = &known
            && line.id == id
            && line.digest == digest
        {
            // Remembered, so answered from memory even if a raised skew or a clock set
            // back made it fresh again.
            return Ok(line
                .outcome
                .clone()
                .map_or(Admission::Pending, Admission::Replay));
        }
        if known
            .as_ref()
            .is_some_and(|line| line.until_unix_ms >= now_unix_ms)
        {
            return Ok(Admission::Conflict);
        }
        if expires_at_unix_ms <= inner.horizon_unix_ms {
            return Ok(Admission::BeyondHorizon);
        }
        // An expired entry for this id is forgotten now: the horizon moves past it first.
        if let Some(replaced) = known.as_ref().map(Line::expiry)
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
        let started = std::time::Instant::now();
        let at = self.append(&mut inner, &line)?;
        let until = after_base(until_unix_ms, inner.base_unix_ms);
        inner.entries.insert(key, Slot { at, until });
        inner.running.insert(
            key,
            Running {
                digest: digest16(digest.as_bytes()),
                until_unix_ms,
                expires_at_unix_ms,
            },
        );
        // Remembered from here on: a retry meanwhile is told it is pending, never run.
        if durability == Durability::Synced {
            let file = Arc::clone(&inner.file);
            drop(inner);
            self.sync(&file)?;
        }
        crate::metrics::get()
            .ledger_write
            .observe(started.elapsed().as_secs_f64());
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
        let key = key_of(id);
        // Only this command's entry: its id may have been reused (once expired) meanwhile.
        let Some(running) = inner
            .running
            .get(&key)
            .filter(|running| running.digest == digest16(digest.as_bytes()))
            .copied()
        else {
            return Ok(());
        };
        inner.running.remove(&key);
        if !inner.entries.contains_key(&key) {
            // Forgotten by a compaction: it expired while it ran.
            return Ok(());
        }
        let line = Line {
            id: id.to_string(),
            digest: digest.to_string(),
            until_unix_ms: running.until_unix_ms,
            expires_at_unix_ms: Some(running.expires_at_unix_ms),
            outcome: Some(outcome),
        };
        // Not synced: losing it in a power cut makes a retry answer "unknown", never rerun.
        let started = std::time::Instant::now();
        let at = self.append(&mut inner, &line)?;
        crate::metrics::get()
            .ledger_write
            .observe(started.elapsed().as_secs_f64());
        if let Some(slot) = inner.entries.get_mut(&key) {
            slot.at = at;
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
        inner.file = Arc::new(OpenOptions::new().write(true).open("/dev/full").unwrap());
    }

    /// Makes syncs hang until [`ReplayLedger::hang_syncs`] is called with false, as a
    /// disk that stops answering would.
    #[cfg(test)]
    pub(crate) fn hang_syncs(&self, hang: bool) {
        let (hung, changed) = &*self.hung_disk;
        *hung.lock().unwrap() = hang;
        changed.notify_all();
    }

    fn error(&self, source: io::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes `line` at the end of the file; [`ReplayLedger::sync`] takes it to the disk.
    fn append(&self, inner: &mut Inner, line: &Line) -> Result<u32, LedgerError> {
        if inner.broken {
            return Err(self.error(io::Error::other("an earlier write failed")));
        }
        let mut text = serde_json::to_string(line).map_err(|e| self.error(e.into()))?;
        text.push('\n');
        let at = u32::try_from(inner.end)
            .ok()
            .filter(|_| inner.end + text.len() as u64 <= self.max_file_len)
            .ok_or_else(|| {
                self.error(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "the file is full of commands that can still be fresh; nothing more is admitted until some expire",
                ))
            })?;
        if let Err(source) = (&*inner.file).write_all(text.as_bytes()) {
            inner.broken = true;
            return Err(self.error(source));
        }
        inner.end += text.len() as u64;
        inner.lines += 1;
        Ok(at)
    }

    /// Syncs `file` (the ledger's, or the one a compaction replaced since: the new one was
    /// synced whole) without holding the lock. A failed sync stops admissions, as a
    /// failed write does: what it covered may not be on the disk.
    fn sync(&self, file: &File) -> Result<(), LedgerError> {
        #[cfg(test)]
        {
            let (hung, changed) = &*self.hung_disk;
            let _unhung = changed.wait_while(hung.lock().unwrap(), |hung| *hung);
        }
        let synced = file.sync_data();
        #[cfg(test)]
        {
            self.inner.lock().unwrap().syncs += 1;
        }
        synced.map_err(|source| {
            self.inner.lock().unwrap_or_else(|e| e.into_inner()).broken = true;
            self.error(source)
        })
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

    /// One pass over the file: each entry's latest line holds all of it, and is copied as
    /// it is while its command can still be fresh; else the entry is forgotten and the
    /// horizon moves past it.
    fn rewrite(path: &Path, inner: &mut Inner, now_unix_ms: i64) -> io::Result<()> {
        let temp = path.with_extension("jsonl.tmp");
        let mut horizon = inner.horizon_unix_ms;
        let mut end = 0u64;
        {
            let mut out = io::BufWriter::new(File::create(&temp)?);
            each_line(File::open(path)?, |line_at, text, line| {
                // Only an entry's latest line. Offsets already rewritten are below
                // `line_at`, so an older line can never be taken for one of them.
                let Some((line, slot)) = line.and_then(|line| {
                    let slot = inner
                        .entries
                        .get_mut(&key_of(&line.id))
                        .filter(|slot| u64::from(slot.at) == line_at)?;
                    Some((line, slot))
                }) else {
                    return Ok(());
                };
                if line.until_unix_ms >= now_unix_ms {
                    out.write_all(text)?;
                    slot.at = end as u32;
                    slot.until = after_base(line.until_unix_ms, now_unix_ms);
                    end += text.len() as u64;
                } else {
                    horizon = horizon.max(line.expiry());
                    slot.at = FORGOTTEN;
                }
                Ok(())
            })?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        // The horizon is on disk before anything it covers leaves the ledger.
        if horizon > inner.horizon_unix_ms {
            write_horizon(path, horizon)?;
            inner.horizon_unix_ms = horizon;
        }
        fs::rename(&temp, path)?;
        inner.file = Arc::new(open_append(path)?);
        inner.end = end;
        inner.base_unix_ms = now_unix_ms;
        inner.entries.retain(|_, slot| slot.at != FORGOTTEN);
        let entries = &inner.entries;
        inner.running.retain(|key, _| entries.contains_key(key));
        // The table a burst grew is given back, not kept for the next burst.
        inner.entries.shrink_to_fit();
        inner.running.shrink_to_fit();
        inner.lines = inner.entries.len();
        inner.recount_at_lines = 0;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The line that starts at `at`.
fn read_line(file: &File, at: u32) -> io::Result<Line> {
    let mut text = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let read = file.read_at(&mut chunk, u64::from(at) + text.len() as u64)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match chunk[..read].iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                text.extend_from_slice(&chunk[..newline]);
                break;
            }
            None => text.extend_from_slice(&chunk[..read]),
        }
    }
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
fn read_entries(path: &Path, base_unix_ms: i64) -> io::Result<(HashMap<Key, Slot>, u64)> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((HashMap::new(), 0)),
        Err(error) => return Err(error),
    };
    // With each entry, the digest of its latest line: only while reading.
    let mut entries: HashMap<Key, (Slot, Digest16)> = HashMap::new();
    let length = each_line(file, |at, _, line| {
        let line_at = u32::try_from(at)
            .ok()
            .filter(|&at| at != FORGOTTEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "longer than 4 GiB"))?;
        let Some(line) = line else {
            tracing::warn!(path = %path.display(), "skipping an unreadable ledger line");
            return Ok(());
        };
        let key = key_of(&line.id);
        let digest = digest16(line.digest.as_bytes());
        match entries.get(&key) {
            // The outcome of an older use of a reused id: the newer admission stands.
            Some((_, known)) if line.outcome.is_some() && *known != digest => {}
            // An admission, the outcome of the admission before it, or a whole command
            // as compaction writes it.
            _ => {
                let slot = Slot {
                    at: line_at,
                    until: after_base(line.until_unix_ms, base_unix_ms),
                };
                entries.insert(key, (slot, digest));
            }
        }
        Ok(())
    })?;
    let entries = entries
        .into_iter()
        .map(|(key, (slot, _))| (key, slot))
        .collect();
    Ok((entries, length))
}

/// Reads `file`'s lines in order, giving `visit` each one's offset, bytes and content
/// (`None` for a line that does not parse, such as a torn last one). Returns the length.
fn each_line(
    file: File,
    mut visit: impl FnMut(u64, &[u8], Option<Line>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut reader = BufReader::new(file);
    let mut text = Vec::new();
    let mut at = 0u64;
    loop {
        text.clear();
        let read = reader.read_until(b'\n', &mut text)?;
        if read == 0 {
            return Ok(at);
        }
        visit(at, &text, serde_json::from_slice(&text).ok())?;
        at += read as u64;
    }
}

#[cfg(test)]
mod tests;
