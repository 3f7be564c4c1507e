//! The PostgreSQL engine, through rust-postgres' blocking client on a thread of its own: the
//! store's callers are synchronous, and that client runs its own small runtime, which must
//! never be entered from a thread already driving tokio. Each call sends the thread a job
//! and waits for its answer. Writes run SERIALIZABLE and are retried on a serialization
//! failure, so a check-then-write (a run still running, a lease still held) is as safe as
//! under SQLite's single writer.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, IsolationLevel, NoTls, Statement};

use super::dialect::{Dialect, LATEST_VERSION};
use super::postgres_tls::Rustls;
use super::sql::{Cell, Cells, Tx, Value};
use super::{Mode, StoreError, redact};

/// How long a connection attempt may take before the store reports the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server lets a transaction of this store sit idle before ending it.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Serialization failures in a row before a write gives up (each one means another writer
/// committed in between, so this only runs out under a storm of conflicting writes).
const SERIALIZATION_RETRIES: u32 = 50;

/// `pg_advisory_xact_lock` key that serializes migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x7472_6f6f_7073; // "troops"

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(super) struct Postgres {
    jobs: mpsc::Sender<Job>,
}

/// What the store's thread owns: the client (reopened after the server went away) and the
/// statements it has prepared on it.
pub(super) struct Connection {
    config: Config,
    /// With `sslmode=require`: how the server's certificate is checked.
    tls: Option<Rustls>,
    url: String,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Postgres {
    /// Connects to `url` and migrates the database before answering.
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let (libpq_url, ca) = tls_options(url);
        let mut config: Config = libpq_url.parse().map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                Some(
                    Rustls::new(ca.as_deref()).map_err(|reason| StoreError::Tls {
                        url: redact(url),
                        reason,
                    })?,
                )
            }
            // Plain: a Unix socket, or a private network (see the fleet guide).
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        let mut connection = Connection {
            config,
            tls,
            url: redact(url),
            client: None,
            statements: HashMap::new(),
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("troop-store".into())
            .spawn(move || {
                // Ends when the store is dropped (the sender with it).
                for job in queue {
                    job(&mut connection);
                }
            })
            .map_err(|source| StoreError::Thread { source })?;
        let postgres = Self { jobs };
        // Connecting too happens on the store's thread, never on the caller's.
        postgres.run(migrate)?;
        Ok(postgres)
    }

    /// Runs `job` on the store's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection| {
            let _ = answer.send(job(connection));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answered.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `body` in one transaction on the store's thread; see the module comment.
    pub(super) fn transact<T: Send + 'static>(
        &self,
        mode: Mode,
        mut body: impl FnMut(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(move |connection| connection.transact(mode, &mut body))
    }
}

impl Connection {
    /// The client, connecting first if there is none or the server closed the last one.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            let connected = match &self.tls {
                Some(tls) => self.config.connect(tls.clone()),
                None => self.config.connect(NoTls),
            };
            let mut client = connected.map_err(|source| StoreError::Connect {
                url: self.url.clone(),
                source,
            })?;
            // A replica that stalls (paused, swapping) inside a transaction must not hold
            // the lease row's lock, hence its successor, for longer than this.
            client.batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION.as_millis()
            ))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn transact<T>(
        &mut self,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conflicts = 0;
        loop {
            // A write's outcome is unknown if the link drops mid-commit, so nothing is
            // retried on a broken connection: the caller hears the error, the next call
            // reconnects.
            match self.transact_once(mode, body) {
                Err(StoreError::Postgres(error))
                    if is_conflict(&error) && conflicts < SERIALIZATION_RETRIES =>
                {
                    conflicts += 1;
                    std::thread::sleep(Duration::from_millis(u64::from(conflicts)));
                }
                answer => return answer,
            }
        }
    }

    fn transact_once<T>(
        &mut self,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let Self {
            client, statements, ..
        } = self;
        let client = client.as_mut().expect("connected above");
        let write = mode != Mode::Read;
        let mut tx = client
            .build_transaction()
            .isolation_level(if write {
                IsolationLevel::Serializable
            } else {
                // One snapshot for a read, as SQLite's read transaction gives.
                IsolationLevel::RepeatableRead
            })
            .read_only(!write)
            .start()?;
        if mode == Mode::LazyWrite {
            // For this transaction only: the commit does not wait for the WAL flush,
            // which the next synchronous commit (or the WAL writer) does, in order.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        }
        let answer = body(&mut PgTx {
            tx: &mut tx,
            statements,
        })?;
        tx.commit()?;
        Ok(answer)
    }
}

/// `url` as rust-postgres reads it, and the CA file of `sslrootcert` if it names one:
/// libpq's `sslrootcert` is taken out (rust-postgres knows no such option) and its
/// `verify-ca`/`verify-full` modes read as `require`, which always verifies fully here.
pub(super) fn tls_options(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut ca = None;
    let kept: Vec<String> = query
        .split('&')
        .filter_map(|pair| match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                ca = Some(std::path::PathBuf::from(path));
                None
            }
            Some(("sslmode", "verify-ca" | "verify-full")) => Some("sslmode=require".into()),
            _ => Some(pair.to_string()),
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, ca)
}

/// Whether another transaction's commit made this one fail, so running it again may pass.
fn is_conflict(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

struct PgTx<'a, 'c> {
    tx: &'a mut postgres::Transaction<'c>,
    statements: &'a mut HashMap<String, Statement>,
}

impl PgTx<'_, '_> {
    fn prepared(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let statement = self.prepared(sql)?;
        Ok(self.tx.execute(&statement, &pg_params(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Cells>, StoreError> {
        let statement = self.prepared(sql)?;
        let rows = self.tx.query(&statement, &pg_params(params))?;
        rows.iter().map(cells).collect()
    }
}

fn pg_params<'a>(params: &'a [Value<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|value| -> &(dyn ToSql + Sync) {
            match value {
                Value::Int(value) => value,
                Value::OptInt(value) => value,
                Value::Text(value) => value,
                Value::OptText(value) => value,
                Value::Bool(value) => value,
            }
        })
        .collect()
}

fn cells(row: &postgres::Row) -> Result<Cells, StoreError> {
    let cells = row
        .columns()
        .iter()
        .enumerate()
        .map(|(column, described)| {
            let ty = described.type_();
            Ok(if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(column)?
                    .map_or(Cell::Null, Cell::Int)
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(column)?
                    .map_or(Cell::Null, |value| Cell::Int(value.into()))
            } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                row.try_get::<_, Option<String>>(column)?
                    .map_or(Cell::Null, Cell::Text)
            } else if *ty == Type::BOOL {
                row.try_get::<_, Option<bool>>(column)?
                    .map_or(Cell::Null, Cell::Bool)
            } else {
                return Err(StoreError::Decode {
                    column,
                    expected: "BIGINT, INTEGER, TEXT or BOOLEAN",
                });
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Cells(cells))
}

/// Brings the database to the latest schema in one transaction, under an advisory lock so
/// replicas starting together apply each batch once; the version lives in `troop_schema`.
fn migrate(connection: &mut Connection) -> Result<u32, StoreError> {
    let url = connection.url.clone();
    let client = connection.client()?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // Quiet: every open after the first would log "already exists, skipping".
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS troop_schema (version BIGINT NOT NULL)",
    )?;
    let found: i64 = match tx.query_opt("SELECT version FROM troop_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO troop_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let found = u32::try_from(found).unwrap_or(u32::MAX);
    if found > LATEST_VERSION {
        return Err(StoreError::TooNew {
            place: url,
            found,
            supported: LATEST_VERSION,
        });
    }
    for version in found + 1..=LATEST_VERSION {
        tx.batch_execute(Dialect::Postgres.migrations()[version as usize - 1])
            .map_err(|source| StoreError::Migrate {
                place: url.clone(),
                version,
                source: source.into(),
            })?;
    }
    tx.execute(
        "UPDATE troop_schema SET version = $1",
        &[&i64::from(LATEST_VERSION)],
    )?;
    tx.commit()?;
    Ok(LATEST_VERSION - found)
}
