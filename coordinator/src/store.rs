//! The audit store: one record per campaign run, step, command and probe result, plus the
//! scheduler state (last strike per group, last run per campaign) that must survive a restart
//! of the long-running coordinator.
//!
//! Only SQLite is built (`sqlite://PATH`); `postgres://` URLs are refused with a clear error.
//! The file is opened in WAL mode with a busy timeout so a CLI and a running `troop serve` can
//! share it, and the schema is migrated forward on open, tracked with `PRAGMA user_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// How long a writer waits for another process (a CLI beside `troop serve`) to release the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema batches; entry N takes `user_version` from N to N+1. Append only: a released entry
/// has already run on someone's file, so editing it would fork the schema.
const MIGRATIONS: &[&str] = &[
    // 1: the audit trail and scheduler state.
    r"
    CREATE TABLE runs (
        id             INTEGER PRIMARY KEY,
        campaign       TEXT    NOT NULL,
        file_sha256    TEXT    NOT NULL,
        -- Decimal text: SQLite integers are i64 and a u64 seed must round-trip exactly.
        seed           TEXT    NOT NULL,
        dry_run        INTEGER NOT NULL,
        status         TEXT    NOT NULL DEFAULT 'running',
        reason         TEXT    NOT NULL DEFAULT '',
        started_at_ms  INTEGER NOT NULL,
        finished_at_ms INTEGER
    );
    CREATE INDEX runs_by_status ON runs (status);

    CREATE TABLE steps (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs (id),
        step_index  INTEGER NOT NULL,
        description TEXT    NOT NULL,
        at_ms       INTEGER NOT NULL
    );
    CREATE INDEX steps_by_run ON steps (run_id);

    CREATE TABLE commands (
        id               INTEGER PRIMARY KEY,
        run_id           INTEGER NOT NULL REFERENCES runs (id),
        step_id          INTEGER REFERENCES steps (id),
        target           TEXT    NOT NULL,
        command_id       TEXT    NOT NULL,
        fault_kind       TEXT    NOT NULL,
        parameters       TEXT    NOT NULL,
        signature_sha256 TEXT    NOT NULL,
        sent_at_ms       INTEGER NOT NULL,
        outcome          TEXT    NOT NULL DEFAULT 'pending',
        code             TEXT,
        message          TEXT    NOT NULL DEFAULT '',
        answered_at_ms   INTEGER
    );
    CREATE INDEX commands_by_run ON commands (run_id);
    CREATE INDEX commands_by_command_id ON commands (command_id);

    CREATE TABLE probes (
        id     INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        probe  TEXT    NOT NULL,
        ok     INTEGER NOT NULL,
        detail TEXT    NOT NULL,
        at_ms  INTEGER NOT NULL
    );
    CREATE INDEX probes_by_run ON probes (run_id);

    CREATE TABLE last_strikes (
        campaign   TEXT    NOT NULL,
        group_name TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL,
        PRIMARY KEY (campaign, group_name)
    ) WITHOUT ROWID;

    CREATE TABLE last_runs (
        campaign TEXT    PRIMARY KEY,
        at_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: ad-hoc attacks and halts are runs too; who ran them, and the key that signed.
    r"
    ALTER TABLE runs ADD COLUMN operator TEXT NOT NULL DEFAULT '';
    ALTER TABLE commands ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
    ",
    // 3: who used `troop serve`'s operator API or tried to attach a stream, allowed or not.
    r"
    CREATE TABLE access (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        caller  TEXT    NOT NULL,
        call    TEXT    NOT NULL,
        allowed INTEGER NOT NULL,
        detail  TEXT    NOT NULL
    );
    ",
    // 4: serve's emergency-stop latch (one row while latched); the stop and the resume
    // themselves are ad-hoc runs, their commands each agent's acknowledgement.
    r"
    CREATE TABLE latch (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        by_name  TEXT    NOT NULL,
        reason   TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL,
        run_id   INTEGER NOT NULL REFERENCES runs (id)
    );
    ",
];

/// The schema version this build writes; a file with a higher one came from a newer troop.
#[allow(clippy::cast_possible_truncation)] // A handful of migrations, never 2^32.
const LATEST_VERSION: u32 = MIGRATIONS.len() as u32;

/// Outcomes `finish_commands` accepts; `pending` is only ever set by `record_commands`.
const COMMAND_OUTCOMES: &[&str] = &["applied", "refused", "failed", "unreachable", "unknown"];

/// Statuses `finish_run` accepts; `running` is only ever set by `begin_run`.
const RUN_STATUSES: &[&str] = &["completed", "aborted", "failed", "refused"];

/// Columns of a [`RunSummary`], in the order `summary_from_row` reads them.
const SUMMARY_SELECT: &str = "
    SELECT r.id, r.campaign, r.status, r.reason, r.dry_run, r.seed,
           r.started_at_ms, r.finished_at_ms,
           COUNT(c.id),
           COUNT(CASE WHEN c.outcome = 'applied' THEN 1 END),
           COUNT(CASE WHEN c.outcome = 'refused' THEN 1 END),
           COUNT(CASE WHEN c.outcome = 'failed' THEN 1 END),
           r.operator
    FROM runs r LEFT JOIN commands c ON c.run_id = r.id";

/// Why a store operation failed; a failed write means nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a backend that is planned but not built yet.
    #[error("store URL {:?}: PostgreSQL is not supported yet; use sqlite://", redact(.url))]
    Unsupported {
        /// The URL as given (printed with any password hidden).
        url: String,
    },
    /// The URL is not `sqlite://PATH` or `sqlite://:memory:`.
    #[error("store URL {:?}: expected sqlite://PATH or sqlite://:memory:", redact(.url))]
    BadUrl {
        /// The URL as given (printed with any password hidden).
        url: String,
    },
    /// The database file could not be opened, created or configured.
    #[error("cannot open store {}", .path.display())]
    Open {
        /// The file path from the URL.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// A schema migration failed; it was rolled back and the file keeps its old version.
    #[error("store {}: migrating the schema to version {version} failed", .path.display())]
    Migrate {
        /// The file path from the URL.
        path: PathBuf,
        /// The version that failed to apply.
        version: u32,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer troop; touching it could corrupt its data.
    #[error(
        "store {}: schema version {found} is newer than this troop supports ({supported}); upgrade troop",
        .path.display()
    )]
    TooNew {
        /// The file path from the URL.
        path: PathBuf,
        /// The file's `user_version`.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A query or write failed; shown as SQLite's own message, since callers format it with `{}`.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// No run has this id.
    #[error("run {run} not found in the store")]
    NotFound {
        /// The run id asked for.
        run: i64,
    },
    /// The run is no longer running, so no new step or command may be recorded for it.
    #[error("run {run} is already {status}")]
    RunFinished {
        /// The run id.
        run: i64,
        /// Its final status.
        status: String,
    },
    /// No command record has this id.
    #[error("command record {id} not found in the store")]
    CommandNotFound {
        /// The command record id asked for.
        id: i64,
    },
    /// The command already has an outcome; an audit record is not rewritten.
    #[error("command record {id} already finished as {outcome}")]
    CommandFinished {
        /// The command record id.
        id: i64,
        /// The outcome it already has.
        outcome: String,
    },
    /// The command names a step of another run (or no step at all).
    #[error("step {step} does not belong to run {run}")]
    StepNotInRun {
        /// The step id given.
        step: i64,
        /// The run id given.
        run: i64,
    },
    /// A status or outcome string outside the allowed set.
    #[error("invalid {field} {value:?}: expected one of {}", .expected.join(", "))]
    Invalid {
        /// Which argument was wrong.
        field: &'static str,
        /// The value given.
        value: String,
        /// The values allowed.
        expected: &'static [&'static str],
    },
}

/// One call to `troop serve` (an operator's, or an agent's stream), allowed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRecord {
    pub at_ms: i64,
    /// Who called, as their certificate names them (or the peer address).
    pub caller: String,
    pub call: String,
    pub allowed: bool,
    /// Why it was refused, or what it did.
    pub detail: String,
}

/// Serve's emergency-stop latch: who set it, when, why, and the run that sent it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatchRecord {
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
    pub run: i64,
}

/// What became of a recorded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The record's id, from `record_commands`.
    pub id: i64,
    /// One of `applied`, `refused`, `failed`, `unreachable`, `unknown`.
    pub outcome: String,
    /// The gRPC code's name, if the agent answered with one.
    pub code: Option<String>,
    /// The receipt's summary or the error.
    pub message: String,
    /// SHA-256 of the signature it left with; empty keeps what was recorded.
    pub signature_sha256: String,
    /// When the answer came (or the call gave up), Unix ms.
    pub answered_at_ms: i64,
}

/// A command about to be sent to an agent, recorded first with outcome `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The run it belongs to.
    pub run: i64,
    /// The step it belongs to, if any; must be a step of `run`.
    pub step: Option<i64>,
    /// The agent it is sent to.
    pub target: String,
    /// The command's own id, as signed and sent.
    pub command_id: String,
    /// The fault it injects.
    pub fault_kind: String,
    /// The fault parameters, meant to be JSON; stored as given, never rejected.
    pub parameters: String,
    /// SHA-256 of the signature sent with it.
    pub signature_sha256: String,
    /// The id of the key that signs it.
    pub key_id: String,
    /// When it was recorded, just before sending.
    pub sent_at_ms: i64,
}

/// One run, with counts of its commands by outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub id: i64,
    /// The campaign name.
    pub campaign: String,
    /// `running`, `completed`, `aborted`, `failed` or `refused` (the steady state did not
    /// hold, so nothing was sent).
    pub status: String,
    /// Why it ended as it did; empty while running.
    pub reason: String,
    /// Whether commands were only recorded, not sent.
    pub dry_run: bool,
    /// The seed that drove its random choices.
    pub seed: u64,
    /// When it began.
    pub started_at_ms: i64,
    /// When it ended, if it has.
    pub finished_at_ms: Option<i64>,
    /// Who ran it: the local user of an ad-hoc command; empty for campaigns.
    pub operator: String,
    /// All its commands, whatever their outcome (pending, unreachable and unknown included).
    pub commands: u32,
    /// Commands the agent applied.
    pub applied: u32,
    /// Commands the agent refused.
    pub refused: u32,
    /// Commands whose outcome is `failed`.
    pub failed: u32,
}

/// One run with everything recorded for it, each list in the order it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run itself.
    pub run: RunSummary,
    /// Its steps.
    pub steps: Vec<StepRow>,
    /// Its commands.
    pub commands: Vec<CommandRow>,
    /// Its probe results.
    pub probes: Vec<ProbeRow>,
}

/// One recorded campaign step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRow {
    /// The step id.
    pub id: i64,
    /// The run it belongs to.
    pub run: i64,
    /// Its position in the campaign file.
    pub index: u32,
    /// What it does.
    pub description: String,
    /// When it began.
    pub at_ms: i64,
}

/// One recorded command and, once answered, its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRow {
    /// The command record id.
    pub id: i64,
    /// The run it belongs to.
    pub run: i64,
    /// The step it belongs to, if any.
    pub step: Option<i64>,
    /// The agent it was sent to.
    pub target: String,
    /// The command's own id.
    pub command_id: String,
    /// The fault it injects.
    pub fault_kind: String,
    /// The fault parameters, as recorded.
    pub parameters: String,
    /// SHA-256 of the signature sent with it.
    pub signature_sha256: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// When it was recorded, just before sending.
    pub sent_at_ms: i64,
    /// `pending`, `applied`, `refused`, `failed`, `unreachable` or `unknown`.
    pub outcome: String,
    /// The agent's error code, if it gave one.
    pub code: Option<String>,
    /// The agent's message or the transport error.
    pub message: String,
    /// When the outcome was recorded, if it has been.
    pub answered_at_ms: Option<i64>,
}

/// One recorded probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRow {
    /// The probe result id.
    pub id: i64,
    /// The run it belongs to.
    pub run: i64,
    /// The probe's name.
    pub probe: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw.
    pub detail: String,
    /// When it ran.
    pub at_ms: i64,
}

/// The audit store; `&self` methods may be called from several threads.
pub struct Store {
    /// Where the data lives, for `Debug`.
    path: PathBuf,
    /// One connection: SQLite serializes writers anyway, and a mutex keeps it simple.
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// `sqlite://PATH` (relative paths as given; `sqlite://:memory:` for tests), created on first use, migrated to the latest schema.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        // A file another process is creating or migrating answers "locked" at once for
        // some steps (journal mode switch, schema read), whatever the busy timeout: retry.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::open_once(url) {
                Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => return result,
            }
        }
    }

    fn open_once(url: &str) -> Result<Self, StoreError> {
        let (path, opened) = match parse_url(url)? {
            None => (PathBuf::from(":memory:"), Connection::open_in_memory()),
            Some(path) => {
                // No URI flag: the path is a file name, never `file:...?mode=...`.
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let opened = Connection::open_with_flags(&path, flags);
                (path, opened)
            }
        };
        let mut conn = match opened.and_then(|conn| configure(&conn).map(|()| conn)) {
            Ok(conn) => conn,
            Err(source) => return Err(StoreError::Open { path, source }),
        };
        migrate(&mut conn, &path)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Records the start of a run by `operator`, with status `running`, and returns its id.
    pub fn begin_run(
        &self,
        campaign: &str,
        file_sha256: &str,
        seed: u64,
        dry_run: bool,
        started_at_ms: i64,
        operator: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (campaign, file_sha256, seed, dry_run, started_at_ms, operator)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                campaign,
                file_sha256,
                seed.to_string(),
                dry_run,
                started_at_ms,
                operator
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records the start of an ad-hoc command run (`troop attack`, `troop halt`): `what`
    /// names it in history, `operator` is who ran it. Its commands are recorded like a
    /// campaign's.
    pub fn begin_adhoc(
        &self,
        what: &str,
        seed: u64,
        operator: &str,
        started_at_ms: i64,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (campaign, file_sha256, seed, dry_run, started_at_ms, operator)
             VALUES (?1, '', ?2, 0, ?3, ?4)",
            params![what, seed.to_string(), started_at_ms, operator],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records a step of a running run and returns its id.
    pub fn record_step(
        &self,
        run: i64,
        index: u32,
        description: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        // One conditional statement, so a run aborted by another process cannot gain a step.
        let inserted = conn.execute(
            "INSERT INTO steps (run_id, step_index, description, at_ms)
             SELECT ?1, ?2, ?3, ?4
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND status = 'running')",
            params![run, index, description, at_ms],
        )?;
        if inserted == 0 {
            // `NotFound` covers the one way left: the run was created in between.
            return Err(not_running(&conn, run)?.unwrap_or(StoreError::NotFound { run }));
        }
        Ok(conn.last_insert_rowid())
    }

    /// `record_commands` for one (the store's tests record one at a time).
    #[cfg(test)]
    pub fn record_command(&self, c: &CommandRecord) -> Result<i64, StoreError> {
        Ok(self.record_commands(std::slice::from_ref(c))?[0])
    }

    /// Records commands as `pending` before they are sent, in one transaction (one sync
    /// for a whole fleet's commands), and returns their record ids: every one, or on
    /// error none, and then send nothing.
    pub fn record_commands(&self, commands: &[CommandRecord]) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids = commands
            .iter()
            .map(|c| insert_command(&tx, c))
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(ids)
    }

    /// `finish_commands` for one (the store's tests finish one at a time).
    #[cfg(test)]
    pub fn finish_command(
        &self,
        id: i64,
        outcome: &str,
        code: Option<&str>,
        message: &str,
        signature_sha256: &str,
        answered_at_ms: i64,
    ) -> Result<(), StoreError> {
        let outcome = CommandOutcome {
            id,
            outcome: outcome.to_string(),
            code: code.map(str::to_string),
            message: message.to_string(),
            signature_sha256: signature_sha256.to_string(),
            answered_at_ms,
        };
        self.finish_commands(&[outcome])?
            .pop()
            .expect("one answer per outcome")
    }

    /// Sets the outcome of each `pending` command, and the hash of the signature it left
    /// with (commands are signed as they leave, after their record is written); a
    /// command's outcome is set once. One transaction: one answer per outcome, or the
    /// error that kept the transaction from committing (then none was recorded).
    pub fn finish_commands(
        &self,
        outcomes: &[CommandOutcome],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let answers = outcomes
            .iter()
            .map(|outcome| update_outcome(&tx, outcome))
            .collect();
        tx.commit()?;
        Ok(answers)
    }

    /// Records a probe result; allowed after the run ends, since a post-abort check is evidence too.
    pub fn record_probe(
        &self,
        run: i64,
        probe: &str,
        ok: bool,
        detail: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT INTO probes (run_id, probe, ok, detail, at_ms)
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
            params![run, probe, ok, detail, at_ms],
        )?;
        if inserted == 0 {
            return Err(StoreError::NotFound { run });
        }
        Ok(())
    }

    /// Ends a running run with `completed`, `aborted` or `failed`; a run ends once.
    pub fn finish_run(
        &self,
        run: i64,
        status: &str,
        reason: &str,
        finished_at_ms: i64,
    ) -> Result<(), StoreError> {
        check("status", status, RUN_STATUSES)?;
        let conn = self.conn();
        let updated = conn.execute(
            "UPDATE runs SET status = ?2, reason = ?3, finished_at_ms = ?4
             WHERE id = ?1 AND status = 'running'",
            params![run, status, reason, finished_at_ms],
        )?;
        if updated == 0 {
            // `NotFound` covers the one way left: the run was created in between.
            return Err(not_running(&conn, run)?.unwrap_or(StoreError::NotFound { run }));
        }
        Ok(())
    }

    /// The newest `limit` runs, newest first, with counts of their commands by outcome.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&format!(
            "{SUMMARY_SELECT} GROUP BY r.id ORDER BY r.id DESC LIMIT ?1"
        ))?;
        let rows = statement.query_map([limit], summary_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One run with its steps, commands and probe results, each in the order recorded.
    pub fn run(&self, id: i64) -> Result<RunDetail, StoreError> {
        let mut conn = self.conn();
        // One read transaction: a consistent snapshot even while another process writes.
        let tx = conn.transaction()?;
        let run = tx
            .query_row(
                &format!("{SUMMARY_SELECT} WHERE r.id = ?1 GROUP BY r.id"),
                [id],
                summary_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { run: id })?;
        let steps = tx
            .prepare_cached(
                "SELECT id, run_id, step_index, description, at_ms FROM steps
                 WHERE run_id = ?1 ORDER BY id",
            )?
            .query_map([id], |row| {
                Ok(StepRow {
                    id: row.get(0)?,
                    run: row.get(1)?,
                    index: row.get(2)?,
                    description: row.get(3)?,
                    at_ms: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let commands = tx
            .prepare_cached(
                "SELECT id, run_id, step_id, target, command_id, fault_kind, parameters,
                        signature_sha256, sent_at_ms, outcome, code, message, answered_at_ms,
                        key_id
                 FROM commands WHERE run_id = ?1 ORDER BY id",
            )?
            .query_map([id], |row| {
                Ok(CommandRow {
                    id: row.get(0)?,
                    run: row.get(1)?,
                    step: row.get(2)?,
                    target: row.get(3)?,
                    command_id: row.get(4)?,
                    fault_kind: row.get(5)?,
                    parameters: row.get(6)?,
                    signature_sha256: row.get(7)?,
                    sent_at_ms: row.get(8)?,
                    outcome: row.get(9)?,
                    code: row.get(10)?,
                    message: row.get(11)?,
                    answered_at_ms: row.get(12)?,
                    key_id: row.get(13)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let probes = tx
            .prepare_cached(
                "SELECT id, run_id, probe, ok, detail, at_ms FROM probes
                 WHERE run_id = ?1 ORDER BY id",
            )?
            .query_map([id], |row| {
                Ok(ProbeRow {
                    id: row.get(0)?,
                    run: row.get(1)?,
                    probe: row.get(2)?,
                    ok: row.get(3)?,
                    detail: row.get(4)?,
                    at_ms: row.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(RunDetail {
            run,
            steps,
            commands,
            probes,
        })
    }

    /// Remembers when `group` of `campaign` was last struck, replacing any earlier time.
    pub fn set_last_strike(
        &self,
        campaign: &str,
        group: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO last_strikes (campaign, group_name, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (campaign, group_name) DO UPDATE SET at_ms = excluded.at_ms",
            params![campaign, group, at_ms],
        )?;
        Ok(())
    }

    /// When each group of `campaign` was last struck, by group name.
    pub fn last_strikes(&self, campaign: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare_cached("SELECT group_name, at_ms FROM last_strikes WHERE campaign = ?1")?;
        let rows = statement.query_map([campaign], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remembers when `campaign` last ran, replacing any earlier time.
    pub fn set_last_run(&self, campaign: &str, at_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO last_runs (campaign, at_ms) VALUES (?1, ?2)
             ON CONFLICT (campaign) DO UPDATE SET at_ms = excluded.at_ms",
            params![campaign, at_ms],
        )?;
        Ok(())
    }

    /// When `campaign` last ran, if ever.
    pub fn last_run(&self, campaign: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT at_ms FROM last_runs WHERE campaign = ?1",
                [campaign],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Runs still marked running (a coordinator died mid-run); the caller decides what to do, then calls `finish_run`.
    pub fn unfinished_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&format!(
            "{SUMMARY_SELECT} WHERE r.status = 'running' GROUP BY r.id ORDER BY r.id"
        ))?;
        let rows = statement.query_map([], summary_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records one call to serve's operator API or stream endpoint.
    pub fn record_access(&self, access: &AccessRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO access (at_ms, caller, call, allowed, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                access.at_ms,
                access.caller,
                access.call,
                access.allowed,
                access.detail
            ],
        )?;
        Ok(())
    }

    /// The latest `limit` access records, newest first.
    pub fn access_log(&self, limit: usize) -> Result<Vec<AccessRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT at_ms, caller, call, allowed, detail FROM access ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit as i64], |row| {
            Ok(AccessRecord {
                at_ms: row.get(0)?,
                caller: row.get(1)?,
                call: row.get(2)?,
                allowed: row.get(3)?,
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Latches serve, replacing an earlier latch.
    pub fn set_latch(&self, latch: &LatchRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO latch (id, by_name, reason, at_ms, run_id) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET by_name = excluded.by_name, reason = excluded.reason,
                 at_ms = excluded.at_ms, run_id = excluded.run_id",
            params![latch.by, latch.reason, latch.at_ms, latch.run],
        )?;
        Ok(())
    }

    /// Serve's latch, if set.
    pub fn latch(&self) -> Result<Option<LatchRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT by_name, reason, at_ms, run_id FROM latch WHERE id = 1",
                [],
                |row| {
                    Ok(LatchRecord {
                        by: row.get(0)?,
                        reason: row.get(1)?,
                        at_ms: row.get(2)?,
                        run: row.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Lifts serve's latch; answers whether one was set.
    pub fn clear_latch(&self) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM latch", [])? > 0)
    }

    /// The connection, even if another thread panicked while holding it.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic cannot leave half a write behind: each write is one statement or a
        // transaction that rolls back when dropped during unwinding.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The file path of a `sqlite://` URL, or `None` for `sqlite://:memory:`.
fn parse_url(url: &str) -> Result<Option<PathBuf>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Unsupported { url: url.into() });
    }
    match url.strip_prefix("sqlite://") {
        Some(":memory:") => Ok(None),
        Some(path) if !path.is_empty() => Ok(Some(PathBuf::from(path))),
        _ => Err(StoreError::BadUrl { url: url.into() }),
    }
}

/// Whether an open failed only because another connection held the file for a moment.
fn is_busy(error: &StoreError) -> bool {
    let source = match error {
        StoreError::Open { source, .. } | StoreError::Migrate { source, .. } => source,
        StoreError::Sql(source) => source,
        _ => return false,
    };
    matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Per-connection settings; none of them persist in the file except the journal mode.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that even switching the journal mode waits for a busy writer.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets a CLI read while `troop serve` writes. The pragma answers with the mode in
    // force (`memory` for `:memory:`), which is fine either way.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Applies the migrations the file lacks, each in its own transaction; returns how many ran.
fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: path.into(),
        source,
    })?;
    if found > LATEST_VERSION {
        return Err(StoreError::TooNew {
            path: path.into(),
            found,
            supported: LATEST_VERSION,
        });
    }
    let mut applied = 0;
    for version in found + 1..=LATEST_VERSION {
        let apply = |conn: &mut Connection| -> rusqlite::Result<bool> {
            // Immediate: take the write lock before re-reading the version, so two processes
            // opening a fresh file together do not both apply the same batch.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if user_version(&tx)? >= version {
                return Ok(false);
            }
            tx.execute_batch(MIGRATIONS[version as usize - 1])?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            Ok(true)
        };
        let ran = apply(conn).map_err(|source| StoreError::Migrate {
            path: path.into(),
            version,
            source,
        })?;
        applied += u32::from(ran);
    }
    Ok(applied)
}

/// The schema version stored in the file header.
fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Why a write conditioned on a running run touched nothing: `NotFound`, `RunFinished`, or
/// `None` when the run is in fact running.
/// One command's `pending` record, if its run is running (and the step is the run's).
fn insert_command(conn: &Connection, c: &CommandRecord) -> Result<i64, StoreError> {
    // Conditional like `record_step`: once a run is finished (say, aborted from the CLI),
    // no further command can be recorded, so the coordinator sends none.
    let inserted = conn.execute(
        "INSERT INTO commands (run_id, step_id, target, command_id, fault_kind,
                               parameters, signature_sha256, sent_at_ms, key_id)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
         WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND status = 'running')
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM steps WHERE id = ?2 AND run_id = ?1))",
        params![
            c.run,
            c.step,
            c.target,
            c.command_id,
            c.fault_kind,
            c.parameters,
            c.signature_sha256,
            c.sent_at_ms,
            c.key_id
        ],
    )?;
    if inserted == 0 {
        let run = c.run;
        // If the run is fine, the step was the problem.
        let step = c.step.map(|step| StoreError::StepNotInRun { step, run });
        return Err(not_running(conn, run)?
            .or(step)
            .unwrap_or(StoreError::NotFound { run }));
    }
    Ok(conn.last_insert_rowid())
}

fn update_outcome(conn: &Connection, o: &CommandOutcome) -> Result<(), StoreError> {
    check("outcome", &o.outcome, COMMAND_OUTCOMES)?;
    let updated = conn.execute(
        "UPDATE commands SET outcome = ?2, code = ?3, message = ?4, answered_at_ms = ?5,
             signature_sha256 = CASE WHEN ?6 = '' THEN signature_sha256 ELSE ?6 END
         WHERE id = ?1 AND outcome = 'pending'",
        params![
            o.id,
            o.outcome,
            o.code,
            o.message,
            o.answered_at_ms,
            o.signature_sha256
        ],
    )?;
    if updated == 0 {
        let id = o.id;
        let existing: Option<String> = conn
            .query_row("SELECT outcome FROM commands WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()?;
        return Err(match existing {
            None => StoreError::CommandNotFound { id },
            Some(outcome) => StoreError::CommandFinished { id, outcome },
        });
    }
    Ok(())
}

fn not_running(conn: &Connection, run: i64) -> Result<Option<StoreError>, StoreError> {
    let status: Option<String> = conn
        .query_row("SELECT status FROM runs WHERE id = ?1", [run], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(match status {
        None => Some(StoreError::NotFound { run }),
        Some(status) if status != "running" => Some(StoreError::RunFinished { run, status }),
        Some(_) => None,
    })
}

/// Rejects a value outside `allowed`, before it reaches the audit trail.
fn check(
    field: &'static str,
    value: &str,
    allowed: &'static [&'static str],
) -> Result<(), StoreError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field,
            value: value.into(),
            expected: allowed,
        })
    }
}

/// Reads a row selected by `SUMMARY_SELECT`.
fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let seed: String = row.get(5)?;
    let seed = seed.parse().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(5, Type::Text, Box::new(error))
    })?;
    Ok(RunSummary {
        id: row.get(0)?,
        campaign: row.get(1)?,
        status: row.get(2)?,
        reason: row.get(3)?,
        dry_run: row.get(4)?,
        seed,
        started_at_ms: row.get(6)?,
        finished_at_ms: row.get(7)?,
        operator: row.get(12)?,
        commands: row.get(8)?,
        applied: row.get(9)?,
        refused: row.get(10)?,
        failed: row.get(11)?,
    })
}

/// The URL with any `user:password@` hidden, for error messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests;
