//! The audit store: one record per campaign run, step, command and probe result, plus the
//! scheduler state (last strike per group, last run per campaign) that must survive a restart
//! of the long-running coordinator, and the lease that says which `troop serve` fires
//! schedules when several share one database.
//!
//! Two engines behind one interface: SQLite (`sqlite://PATH`, the embedded default) and
//! PostgreSQL (`postgres://...`, for replicated serves and a database that is backed up).
//! Every query is written once (`sql`), what the engines say differently is in `dialect`,
//! and each engine runs a query body in a transaction of its own (`sqlite`, `postgresql`).
//! The schema is migrated forward on open.

mod dialect;
mod enrolment;
mod lease;
mod postgres_tls;
mod postgresql;
mod signing;
mod sql;
mod sqlite;
mod streams;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use enrolment::{JoinToken, Redeemed, Revocation};
pub use lease::Lease;
pub use signing::SigningGeneration;
use sql::{Cells, Tx, Value};
pub use streams::{PublishedStream, StreamEntry};

/// Outcomes `finish_commands` accepts; `pending` is only ever set by `record_commands`.
const COMMAND_OUTCOMES: &[&str] = &["applied", "refused", "failed", "unreachable", "unknown"];

/// Statuses `finish_run` accepts; `running` is only ever set by `begin_run`.
const RUN_STATUSES: &[&str] = &["completed", "aborted", "failed", "refused"];

/// A replica that has not said it is alive for this long is dead, and the runs it began
/// are closed by whoever finds them (replicas say so every 2 s; see `live::peers`).
const REPLICA_SILENT_AFTER: Duration = Duration::from_secs(10);

/// The replica of `troop serve` this process is, once it says (`set_replica`).
static REPLICA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process as serve replica `name`: every run begun through a store opened in
/// it from now on is that replica's, so no other replica closes it while `name` is alive.
pub fn set_replica(name: &str) {
    let _ = REPLICA.set(name.to_string());
}

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

/// What an engine reported.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
}

/// Why a store operation failed; a failed write means nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not `sqlite://PATH`, `sqlite://:memory:` or `postgres://...`.
    #[error(
        "store URL {:?}: expected sqlite://PATH, sqlite://:memory: or postgres://USER@HOST/DB",
        redact(.url)
    )]
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
    /// The PostgreSQL server could not be reached, or refused the connection.
    #[error("cannot connect to store {url}")]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// What the PostgreSQL client reported.
        #[source]
        source: postgres::Error,
    },
    /// `sslmode=require` was asked for and the TLS settings cannot be used.
    #[error("store {url}: TLS: {reason}")]
    Tls {
        /// The URL, with any password hidden.
        url: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A schema migration failed; it was rolled back and the database keeps its old version.
    #[error("store {place}: migrating the schema to version {version} failed")]
    Migrate {
        /// The file path, or the URL with any password hidden.
        place: String,
        /// The version that failed to apply.
        version: u32,
        /// What the engine reported.
        #[source]
        source: EngineError,
    },
    /// The database was written by a newer troop; touching it could corrupt its data.
    #[error(
        "store {place}: schema version {found} is newer than this troop supports ({supported}); upgrade troop"
    )]
    TooNew {
        /// The file path, or the URL with any password hidden.
        place: String,
        /// The database's schema version.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A query or write failed; shown as SQLite's own message, since callers format it with `{}`.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A query or write failed on PostgreSQL; shown as the server's own message.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A row did not hold what the schema promises (a bug, or a database edited by hand).
    #[error("the store answered a row whose column {column} is not {expected}")]
    Decode {
        /// The column's position in the query.
        column: usize,
        /// What it should have held.
        expected: &'static str,
    },
    /// The store's connection thread could not be started.
    #[error("cannot start the store's connection thread")]
    Thread {
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The store's connection thread is gone (it panicked).
    #[error("the store's connection thread has stopped")]
    Closed,
    /// A write made as leader under a lease that is no longer current: another `troop
    /// serve` took over (or this one stalled past its lease), so nothing was written.
    #[error(
        "not the leader any more: the lease of epoch {epoch} has ended (another troop serve fires schedules now)"
    )]
    Deposed {
        /// The epoch the write was made under.
        epoch: i64,
    },
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
    /// Where the data lives, for `Debug`: the file, or the URL with any password hidden.
    place: String,
    engine: Engine,
    /// The serve replica whose runs this store begins ("" outside serve).
    replica: String,
    /// Writes committed with a sync of their own ([`Mode::Write`]).
    #[cfg(test)]
    synced_writes: std::sync::atomic::AtomicUsize,
}

enum Engine {
    Sqlite(sqlite::Sqlite),
    Postgres(postgresql::Postgres),
}

/// What a transaction may do, and when a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One consistent snapshot.
    Read,
    /// Synced before the commit returns.
    Write,
    /// Committed (every reader sees it at once) but synced only with the next synced
    /// write, or by the engine itself soon after: SQLite's checkpoint, PostgreSQL's WAL
    /// writer. Serve killed loses nothing (the commit is with the operating system or the
    /// database server); a power loss or a database crash may forget the record. Only for
    /// records that nothing outside serve acts on before a synced write follows them.
    LazyWrite,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// Where a store URL points.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// A SQLite file (relative paths as given), or memory for `None`.
    Sqlite(Option<PathBuf>),
    /// A PostgreSQL server, by the URL as given.
    Postgres,
}

impl Store {
    /// As [`Store::open`], but `None` for an SQLite file that does not exist yet, which is
    /// left uncreated: for readers that must not write (a dry run reading the signing key).
    pub fn open_existing(url: &str) -> Result<Option<Self>, StoreError> {
        match parse_url(url)? {
            Location::Sqlite(Some(path)) if !path.exists() => Ok(None),
            _ => Self::open(url).map(Some),
        }
    }

    /// `sqlite://PATH` (relative paths as given; `sqlite://:memory:` for tests), created on
    /// first use, or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (libpq's URL form, also
    /// `postgresql://`); migrated to the latest schema either way.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let (place, engine) = match parse_url(url)? {
            Location::Sqlite(path) => {
                let place = path
                    .as_deref()
                    .map_or(":memory:".into(), |path| path.display().to_string());
                (
                    place,
                    Engine::Sqlite(sqlite::Sqlite::open(path.as_deref())?),
                )
            }
            Location::Postgres => (
                redact(url),
                Engine::Postgres(postgresql::Postgres::open(url)?),
            ),
        };
        let replica = REPLICA.get().cloned().unwrap_or_default();
        Ok(Self {
            place,
            engine,
            replica,
            #[cfg(test)]
            synced_writes: Default::default(),
        })
    }

    /// This store as serve replica `name`'s (see [`set_replica`]).
    pub fn with_replica(mut self, name: &str) -> Self {
        self.replica = name.to_string();
        self
    }

    /// The SQLite connection, for tests that look beneath the interface.
    #[cfg(test)]
    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.conn(),
            Engine::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    fn dialect(&self) -> dialect::Dialect {
        match self.engine {
            Engine::Sqlite(_) => dialect::Dialect::Sqlite,
            Engine::Postgres(_) => dialect::Dialect::Postgres,
        }
    }

    /// Runs `body` as one write transaction: all of it is recorded, or (on error) none.
    fn write<T: Send + 'static>(
        &self,
        body: impl FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.transact(Mode::Write, body)
    }

    /// As [`Store::write`], synced with the next synced write instead of its own
    /// ([`Mode::LazyWrite`]).
    fn write_lazily<T: Send + 'static>(
        &self,
        body: impl FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.transact(Mode::LazyWrite, body)
    }

    /// Runs `body` as one transaction of `mode`, off the async runtime's threads.
    fn transact<T: Send + 'static>(
        &self,
        mode: Mode,
        mut body: impl FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        #[cfg(test)]
        if mode == Mode::Write {
            self.synced_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        off_the_runtime(|| match &self.engine {
            Engine::Sqlite(sqlite) => sqlite.transact(mode, &mut body),
            Engine::Postgres(postgres) => postgres.transact(mode, body),
        })
    }

    /// Runs `body` as one read transaction: one consistent snapshot, even while another
    /// process writes.
    fn read<T: Send + 'static>(
        &self,
        body: impl FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.transact(Mode::Read, body)
    }

    /// Records the start of a run by `operator`, with status `running`, and returns its
    /// id. A run begun by the leader carries its lease: it can gain steps and commands only
    /// while that lease is current.
    #[allow(clippy::too_many_arguments)] // The run's columns, each said once.
    pub fn begin_run(
        &self,
        campaign: &str,
        file_sha256: &str,
        seed: u64,
        dry_run: bool,
        started_at_ms: i64,
        operator: &str,
        leader: Option<&Lease>,
    ) -> Result<i64, StoreError> {
        let (campaign, file_sha256, operator) = (
            campaign.to_owned(),
            file_sha256.to_owned(),
            operator.to_owned(),
        );
        let epoch = leader.map(|lease| lease.epoch);
        let dialect = self.dialect();
        let replica = self.replica.clone();
        // Nothing is sent in a run before its commands are recorded, synced: the run's
        // start reaches the disk with them.
        self.write_lazily(move |tx| {
            if let Some(epoch) = epoch {
                lease::check_current(tx, dialect, epoch)?;
            }
            tx.query_one(
                "INSERT INTO runs (campaign, file_sha256, seed, dry_run, started_at_ms, operator,
                                   leader_epoch, replica)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    Value::Text(&campaign),
                    Value::Text(&file_sha256),
                    Value::Text(&seed.to_string()),
                    Value::Bool(dry_run),
                    Value::Int(started_at_ms),
                    Value::Text(&operator),
                    Value::OptInt(epoch),
                    Value::Text(&replica),
                ],
            )?
            .int(0)
        })
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
        self.begin_run(what, "", seed, false, started_at_ms, operator, None)
    }

    /// Records a step of a running run and returns its id.
    pub fn record_step(
        &self,
        run: i64,
        index: u32,
        description: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let description = description.to_owned();
        let dialect = self.dialect();
        self.write(move |tx| {
            // Checked and written in one transaction, so a run aborted by another process
            // cannot gain a step.
            writable_run(tx, dialect, run)?;
            tx.query_one(
                "INSERT INTO steps (run_id, step_index, description, at_ms)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    Value::Int(run),
                    Value::Int(index.into()),
                    Value::Text(&description),
                    Value::Int(at_ms),
                ],
            )?
            .int(0)
        })
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
        let commands = commands.to_vec();
        let dialect = self.dialect();
        self.write(move |tx| {
            commands
                .iter()
                .map(|c| insert_command(tx, dialect, c))
                .collect()
        })
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
        let outcomes = outcomes.to_vec();
        self.write(move |tx| {
            outcomes
                .iter()
                .map(|outcome| match update_outcome(tx, outcome) {
                    // An engine error aborts the transaction: none of it is recorded.
                    Err(error @ (StoreError::Sql(_) | StoreError::Postgres(_))) => Err(error),
                    answer => Ok(answer),
                })
                .collect()
        })
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
        let (probe, detail) = (probe.to_owned(), detail.to_owned());
        self.write(move |tx| {
            run_status(tx, run)?.ok_or(StoreError::NotFound { run })?;
            tx.execute(
                "INSERT INTO probes (run_id, probe, ok, detail, at_ms) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Value::Int(run),
                    Value::Text(&probe),
                    Value::Bool(ok),
                    Value::Text(&detail),
                    Value::Int(at_ms),
                ],
            )?;
            Ok(())
        })
    }

    /// Ends a running run with `completed`, `aborted`, `failed` or `refused`; a run ends
    /// once. A deposed leader's run is left for the new leader to close.
    pub fn finish_run(
        &self,
        run: i64,
        status: &str,
        reason: &str,
        finished_at_ms: i64,
    ) -> Result<(), StoreError> {
        check("status", status, RUN_STATUSES)?;
        let (result, reason) = (status.to_owned(), reason.to_owned());
        let dialect = self.dialect();
        self.write(move |tx| {
            writable_run(tx, dialect, run)?;
            tx.execute(
                "UPDATE runs SET status = $2, reason = $3, finished_at_ms = $4 WHERE id = $1",
                &[
                    Value::Int(run),
                    Value::Text(&result),
                    Value::Text(&reason),
                    Value::Int(finished_at_ms),
                ],
            )?;
            Ok(())
        })?;
        crate::metrics::get().run_finished(status);
        Ok(())
    }

    /// The newest `limit` runs, newest first, with counts of their commands by outcome.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            tx.query(
                &format!("{SUMMARY_SELECT} GROUP BY r.id ORDER BY r.id DESC LIMIT $1"),
                &[Value::Int(limit)],
            )?
            .iter()
            .map(summary_from_row)
            .collect()
        })
    }

    /// One run with its steps, commands and probe results, each in the order recorded.
    pub fn run(&self, id: i64) -> Result<RunDetail, StoreError> {
        self.read(move |tx| {
            let run = tx
                .query_opt(
                    &format!("{SUMMARY_SELECT} WHERE r.id = $1 GROUP BY r.id"),
                    &[Value::Int(id)],
                )?
                .ok_or(StoreError::NotFound { run: id })?;
            let run = summary_from_row(&run)?;
            let steps = tx
                .query(
                    "SELECT id, run_id, step_index, description, at_ms FROM steps
                     WHERE run_id = $1 ORDER BY id",
                    &[Value::Int(id)],
                )?
                .iter()
                .map(|row| {
                    Ok(StepRow {
                        id: row.int(0)?,
                        run: row.int(1)?,
                        index: row.small(2)?,
                        description: row.text(3)?,
                        at_ms: row.int(4)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            let commands = tx
                .query(
                    "SELECT id, run_id, step_id, target, command_id, fault_kind, parameters,
                            signature_sha256, sent_at_ms, outcome, code, message, answered_at_ms,
                            key_id
                     FROM commands WHERE run_id = $1 ORDER BY id",
                    &[Value::Int(id)],
                )?
                .iter()
                .map(|row| {
                    Ok(CommandRow {
                        id: row.int(0)?,
                        run: row.int(1)?,
                        step: row.opt_int(2)?,
                        target: row.text(3)?,
                        command_id: row.text(4)?,
                        fault_kind: row.text(5)?,
                        parameters: row.text(6)?,
                        signature_sha256: row.text(7)?,
                        sent_at_ms: row.int(8)?,
                        outcome: row.text(9)?,
                        code: row.opt_text(10)?,
                        message: row.text(11)?,
                        answered_at_ms: row.opt_int(12)?,
                        key_id: row.text(13)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            let probes = tx
                .query(
                    "SELECT id, run_id, probe, ok, detail, at_ms FROM probes
                     WHERE run_id = $1 ORDER BY id",
                    &[Value::Int(id)],
                )?
                .iter()
                .map(|row| {
                    Ok(ProbeRow {
                        id: row.int(0)?,
                        run: row.int(1)?,
                        probe: row.text(2)?,
                        ok: row.flag(3)?,
                        detail: row.text(4)?,
                        at_ms: row.int(5)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(RunDetail {
                run,
                steps,
                commands,
                probes,
            })
        })
    }

    /// Remembers that `campaign` fired at `at_ms` and struck `groups`, replacing earlier
    /// times, if `leader` is still the current lease: a deposed leader records no firing,
    /// hence strikes nothing.
    pub fn record_firing(
        &self,
        leader: &Lease,
        campaign: &str,
        at_ms: i64,
        groups: &[String],
    ) -> Result<(), StoreError> {
        let (campaign, groups, epoch) = (campaign.to_owned(), groups.to_vec(), leader.epoch);
        let dialect = self.dialect();
        self.write(move |tx| {
            lease::check_current(tx, dialect, epoch)?;
            tx.execute(
                "INSERT INTO last_runs (campaign, at_ms) VALUES ($1, $2)
                 ON CONFLICT (campaign) DO UPDATE SET at_ms = excluded.at_ms",
                &[Value::Text(&campaign), Value::Int(at_ms)],
            )?;
            for group in &groups {
                tx.execute(
                    "INSERT INTO last_strikes (campaign, group_name, at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (campaign, group_name) DO UPDATE SET at_ms = excluded.at_ms",
                    &[
                        Value::Text(&campaign),
                        Value::Text(group),
                        Value::Int(at_ms),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// When each group of `campaign` was last struck, by group name.
    pub fn last_strikes(&self, campaign: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let campaign = campaign.to_owned();
        self.read(move |tx| {
            tx.query(
                "SELECT group_name, at_ms FROM last_strikes WHERE campaign = $1",
                &[Value::Text(&campaign)],
            )?
            .iter()
            .map(|row| Ok((row.text(0)?, row.int(1)?)))
            .collect()
        })
    }

    /// When `campaign` last ran, if ever.
    pub fn last_run(&self, campaign: &str) -> Result<Option<i64>, StoreError> {
        let campaign = campaign.to_owned();
        self.read(move |tx| {
            tx.query_opt(
                "SELECT at_ms FROM last_runs WHERE campaign = $1",
                &[Value::Text(&campaign)],
            )?
            .map(|row| row.int(0))
            .transpose()
        })
    }

    /// Runs still marked running whose coordinator died mid-run. With `leader` (the
    /// leader, every time it claims): the scheduled runs of earlier leases, and the runs
    /// of replicas that stopped saying they are alive. Without (a serve starting): also
    /// the runs of this replica's earlier life and of processes that were no replica (a
    /// CLI). A run of a live replica is never among them.
    pub fn unfinished_runs(&self, leader: Option<&Lease>) -> Result<Vec<RunSummary>, StoreError> {
        let epoch = leader.map(|lease| lease.epoch);
        let silent_ms = i64::try_from(REPLICA_SILENT_AFTER.as_millis()).unwrap_or(i64::MAX);
        let now = self.dialect().now_ms();
        let me = self.replica.clone();
        self.read(move |tx| {
            let dead = format!(
                "(r.replica <> '' AND r.replica <> $2 AND NOT EXISTS (
                     SELECT 1 FROM replicas p
                     WHERE p.name = r.replica AND p.seen_at_ms > {now} - $1))"
            );
            let which = match epoch {
                Some(_) => format!("r.leader_epoch < $3 OR (r.leader_epoch IS NULL AND {dead})"),
                None => format!(
                    "r.leader_epoch IS NULL AND (r.replica = '' OR r.replica = $2 OR {dead})"
                ),
            };
            let mut params = vec![Value::Int(silent_ms), Value::Text(&me)];
            params.extend(epoch.map(Value::Int));
            tx.query(
                &format!(
                    "{SUMMARY_SELECT} WHERE r.status = 'running' AND ({which})
                     GROUP BY r.id ORDER BY r.id"
                ),
                &params,
            )?
            .iter()
            .map(summary_from_row)
            .collect()
        })
    }

    /// Closes a run a stopped coordinator left running, whatever lease it was begun under
    /// (its faults carried leases nobody renewed, so the agents have reverted them).
    pub fn close_stale_run(&self, run: i64, reason: &str, at_ms: i64) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE runs SET status = 'failed', reason = $2, finished_at_ms = $3
                 WHERE id = $1 AND status = 'running'",
                &[Value::Int(run), Value::Text(&reason), Value::Int(at_ms)],
            )?;
            Ok(())
        })
    }

    /// Logs a call to serve (operator API, dashboard, enrolment) and records it in the
    /// access log, allowed or refused (`refused` says why); a store that cannot take it
    /// is logged, not fatal.
    pub fn record_call(&self, who: &str, call: &str, refused: Option<&str>) {
        match refused {
            Some(reason) => tracing::warn!(caller = %who, %call, %reason, "refused a call"),
            None => tracing::info!(caller = %who, %call, "call"),
        }
        let access = AccessRecord {
            at_ms: troop_common::clock::now_unix_ms(),
            caller: who.to_string(),
            call: call.to_string(),
            allowed: refused.is_none(),
            detail: refused.unwrap_or_default().to_string(),
        };
        if let Err(error) = self.record_access(&access) {
            tracing::error!(%error, "audit store: cannot record a call to serve");
        }
    }

    /// Records one call to serve's operator API or stream endpoint. A refusal is synced
    /// before it is answered; an allowed call's record reaches the disk with the next
    /// synced write (what the call then does, if it acts, is recorded synced first).
    pub fn record_access(&self, access: &AccessRecord) -> Result<(), StoreError> {
        let access = access.clone();
        let mode = if access.allowed {
            Mode::LazyWrite
        } else {
            Mode::Write
        };
        self.transact(mode, move |tx| {
            tx.execute(
                "INSERT INTO access (at_ms, caller, call, allowed, detail)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    Value::Int(access.at_ms),
                    Value::Text(&access.caller),
                    Value::Text(&access.call),
                    Value::Bool(access.allowed),
                    Value::Text(&access.detail),
                ],
            )?;
            Ok(())
        })
    }

    /// The latest `limit` access records, newest first.
    pub fn access_log(&self, limit: usize) -> Result<Vec<AccessRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            tx.query(
                "SELECT at_ms, caller, call, allowed, detail FROM access ORDER BY id DESC LIMIT $1",
                &[Value::Int(limit)],
            )?
            .iter()
            .map(|row| {
                Ok(AccessRecord {
                    at_ms: row.int(0)?,
                    caller: row.text(1)?,
                    call: row.text(2)?,
                    allowed: row.flag(3)?,
                    detail: row.text(4)?,
                })
            })
            .collect()
        })
    }

    /// Deletes probe results and access records older than `before_ms`; the runs, steps and
    /// commands (the audit of what was done) are kept. Answers how many rows went.
    pub fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let probes = tx.execute(
                "DELETE FROM probes WHERE at_ms < $1",
                &[Value::Int(before_ms)],
            )?;
            let access = tx.execute(
                "DELETE FROM access WHERE at_ms < $1",
                &[Value::Int(before_ms)],
            )?;
            Ok(probes + access)
        })
    }

    /// Latches serve, replacing an earlier latch.
    pub fn set_latch(&self, latch: &LatchRecord) -> Result<(), StoreError> {
        let latch = latch.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO latch (id, by_name, reason, at_ms, run_id) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET by_name = excluded.by_name,
                     reason = excluded.reason, at_ms = excluded.at_ms, run_id = excluded.run_id",
                &[
                    Value::Text(&latch.by),
                    Value::Text(&latch.reason),
                    Value::Int(latch.at_ms),
                    Value::Int(latch.run),
                ],
            )?;
            Ok(())
        })
    }

    /// Serve's latch, if set.
    pub fn latch(&self) -> Result<Option<LatchRecord>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT by_name, reason, at_ms, run_id FROM latch WHERE id = 1",
                &[],
            )?
            .map(|row| {
                Ok(LatchRecord {
                    by: row.text(0)?,
                    reason: row.text(1)?,
                    at_ms: row.int(2)?,
                    run: row.int(3)?,
                })
            })
            .transpose()
        })
    }

    /// Lifts serve's latch; answers whether one was set.
    pub fn clear_latch(&self) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM latch", &[])? > 0))
    }
}

/// Runs a store call that blocks (a file sync, a round trip to the database). On a worker
/// of tokio's multi-threaded runtime (`troop serve`, the CLI), the worker first hands its
/// other tasks to the rest of the pool, so a slow disk or database never stalls agents'
/// streams or other calls; elsewhere (a plain thread, a single-threaded test runtime) it
/// just runs.
fn off_the_runtime<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// Where a store URL points, or why it points nowhere.
fn parse_url(url: &str) -> Result<Location, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Location::Postgres);
    }
    match url.strip_prefix("sqlite://") {
        Some(":memory:") => Ok(Location::Sqlite(None)),
        Some(path) if !path.is_empty() => Ok(Location::Sqlite(Some(PathBuf::from(path)))),
        _ => Err(StoreError::BadUrl { url: url.into() }),
    }
}

/// The status of run `run`, if it exists.
fn run_status(tx: &mut dyn Tx, run: i64) -> Result<Option<String>, StoreError> {
    tx.query_opt("SELECT status FROM runs WHERE id = $1", &[Value::Int(run)])?
        .map(|row| row.text(0))
        .transpose()
}

/// Passes if run `run` is running and, if a leader began it, that leader's lease is
/// current (and held for the rest of the transaction; see `lease::check_current`);
/// otherwise the error that says which of these failed.
fn writable_run(tx: &mut dyn Tx, dialect: dialect::Dialect, run: i64) -> Result<(), StoreError> {
    let row = tx.query_opt(
        "SELECT status, leader_epoch FROM runs WHERE id = $1",
        &[Value::Int(run)],
    )?;
    let row = row.ok_or(StoreError::NotFound { run })?;
    let status = row.text(0)?;
    if status != "running" {
        return Err(StoreError::RunFinished { run, status });
    }
    match row.opt_int(1)? {
        Some(epoch) => lease::check_current(tx, dialect, epoch),
        None => Ok(()),
    }
}

/// One command's `pending` record, if its run is writable (and the step is the run's).
fn insert_command(
    tx: &mut dyn Tx,
    dialect: dialect::Dialect,
    c: &CommandRecord,
) -> Result<i64, StoreError> {
    // Like `record_step`: once a run is finished (say, aborted from the CLI), no further
    // command can be recorded, so the coordinator sends none.
    writable_run(tx, dialect, c.run)?;
    if let Some(step) = c.step {
        let of_run = tx.query_opt(
            "SELECT 1 FROM steps WHERE id = $1 AND run_id = $2",
            &[Value::Int(step), Value::Int(c.run)],
        )?;
        if of_run.is_none() {
            return Err(StoreError::StepNotInRun { step, run: c.run });
        }
    }
    tx.query_one(
        "INSERT INTO commands (run_id, step_id, target, command_id, fault_kind,
                               parameters, signature_sha256, sent_at_ms, key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        &[
            Value::Int(c.run),
            Value::OptInt(c.step),
            Value::Text(&c.target),
            Value::Text(&c.command_id),
            Value::Text(&c.fault_kind),
            Value::Text(&c.parameters),
            Value::Text(&c.signature_sha256),
            Value::Int(c.sent_at_ms),
            Value::Text(&c.key_id),
        ],
    )?
    .int(0)
}

fn update_outcome(tx: &mut dyn Tx, o: &CommandOutcome) -> Result<(), StoreError> {
    check("outcome", &o.outcome, COMMAND_OUTCOMES)?;
    let id = o.id;
    let existing = tx
        .query_opt(
            "SELECT outcome FROM commands WHERE id = $1",
            &[Value::Int(id)],
        )?
        .map(|row| row.text(0))
        .transpose()?;
    match existing {
        None => return Err(StoreError::CommandNotFound { id }),
        Some(outcome) if outcome != "pending" => {
            return Err(StoreError::CommandFinished { id, outcome });
        }
        Some(_) => {}
    }
    tx.execute(
        "UPDATE commands SET outcome = $2, code = $3, message = $4, answered_at_ms = $5,
             signature_sha256 = CASE WHEN $6 = '' THEN signature_sha256 ELSE $6 END
         WHERE id = $1",
        &[
            Value::Int(id),
            Value::Text(&o.outcome),
            Value::OptText(o.code.as_deref()),
            Value::Text(&o.message),
            Value::Int(o.answered_at_ms),
            Value::Text(&o.signature_sha256),
        ],
    )?;
    Ok(())
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
fn summary_from_row(row: &Cells) -> Result<RunSummary, StoreError> {
    let seed = row.text(5)?.parse().map_err(|_| StoreError::Decode {
        column: 5,
        expected: "a u64 seed",
    })?;
    Ok(RunSummary {
        id: row.int(0)?,
        campaign: row.text(1)?,
        status: row.text(2)?,
        reason: row.text(3)?,
        dry_run: row.flag(4)?,
        seed,
        started_at_ms: row.int(6)?,
        finished_at_ms: row.opt_int(7)?,
        operator: row.text(12)?,
        commands: row.small(8)?,
        applied: row.small(9)?,
        refused: row.small(10)?,
        failed: row.small(11)?,
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
