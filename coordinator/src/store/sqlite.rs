//! The SQLite engine: one connection behind a mutex (SQLite serializes writers anyway), the
//! file in WAL mode with a busy timeout so a CLI and a running `troop serve` can share it,
//! the schema version in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::dialect::{Dialect, LATEST_VERSION};
use super::sql::{Cell, Cells, Tx, Value};
use super::{Mode, StoreError};

/// How long a writer waits for another process (a CLI beside `troop serve`) to release the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (creating) the file, or memory for `None`, and migrates it.
    pub(super) fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        // A file another process is creating or migrating answers "locked" at once for
        // some steps (journal mode switch, schema read), whatever the busy timeout: retry.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::open_once(path) {
                Err(error) if is_busy(&error) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
    }

    fn open_once(path: Option<&Path>) -> Result<Self, StoreError> {
        let place = path.unwrap_or(Path::new(":memory:"));
        let opened = match path {
            None => Connection::open_in_memory(),
            Some(path) => {
                // No URI flag: the path is a file name, never `file:...?mode=...`.
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(path, flags)
            }
        };
        let mut conn = match opened.and_then(|conn| configure(&conn).map(|()| conn)) {
            Ok(conn) => conn,
            Err(source) => {
                return Err(StoreError::Open {
                    path: place.into(),
                    source,
                });
            }
        };
        migrate(&mut conn, place)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `body` in one transaction: a write takes the write lock first (so what it reads
    /// cannot change before it writes), a read sees one snapshot. Commits if `body` answers.
    pub(super) fn transact<T>(
        &self,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        if mode == Mode::LazyWrite {
            // In WAL mode NORMAL syncs nothing at commit; the next FULL commit's sync of
            // the log covers this one's frames too, as they come before its own.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let answer = Self::transact_on(&mut conn, mode, body);
        if mode == Mode::LazyWrite {
            // Back before the lock is released, so no other write goes unsynced.
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        answer
    }

    fn transact_on<T>(
        conn: &mut Connection,
        mode: Mode,
        body: &mut dyn FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let behavior = match mode {
            Mode::Read => TransactionBehavior::Deferred,
            Mode::Write | Mode::LazyWrite => TransactionBehavior::Immediate,
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        let answer = body(&mut SqliteTx(&tx))?;
        tx.commit()?;
        Ok(answer)
    }

    /// The connection, even if another thread panicked while holding it.
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic cannot leave half a write behind: each write is a transaction that rolls
        // back when dropped during unwinding.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let mut statement = self.0.prepare_cached(&Dialect::Sqlite.statement(sql))?;
        let changed = statement.execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Cells>, StoreError> {
        let mut statement = self.0.prepare_cached(&Dialect::Sqlite.statement(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut answer = Vec::new();
        while let Some(row) = rows.next()? {
            let cells = (0..columns)
                .map(|column| {
                    Ok(match row.get_ref(column)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(value) => Cell::Int(value),
                        ValueRef::Text(text) => Cell::Text(String::from_utf8_lossy(text).into()),
                        ValueRef::Real(_) | ValueRef::Blob(_) => {
                            return Err(StoreError::Decode {
                                column,
                                expected: "an integer or text",
                            });
                        }
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            answer.push(Cells(cells));
        }
        Ok(answer)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Self::Int(value) | Self::OptInt(Some(value)) => ToSqlOutput::from(value),
            Self::Text(value) | Self::OptText(Some(value)) => ToSqlOutput::from(value),
            Self::Bool(value) => ToSqlOutput::from(value),
            Self::OptInt(None) | Self::OptText(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

/// Whether an open failed only because another connection held the file for a moment.
fn is_busy(error: &StoreError) -> bool {
    let source = match error {
        StoreError::Open { source, .. } => source,
        StoreError::Migrate {
            source: super::EngineError::Sqlite(source),
            ..
        }
        | StoreError::Sql(source) => source,
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
    // Said, not assumed: every commit syncs the log unless a write asks to be lazy.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Applies the migrations the file lacks, each in its own transaction; returns how many ran.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let place = || path.display().to_string();
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: PathBuf::from(path),
        source,
    })?;
    if found > LATEST_VERSION {
        return Err(StoreError::TooNew {
            place: place(),
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
            tx.execute_batch(Dialect::Sqlite.migrations()[version as usize - 1])?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            Ok(true)
        };
        let ran = apply(conn).map_err(|source| StoreError::Migrate {
            place: place(),
            version,
            source: source.into(),
        })?;
        applied += u32::from(ran);
    }
    Ok(applied)
}

/// The schema version stored in the file header.
pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}
