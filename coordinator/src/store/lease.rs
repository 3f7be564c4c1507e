//! The leader lease: several `troop serve` share one database and exactly one fires
//! schedules. The lease is one row (holder, epoch, expiry) timed by the database's clock, so
//! replicas' clocks never matter. A holder renews it well inside its length; whoever finds
//! it expired takes it with the next epoch. Every write a leader makes as leader names its
//! epoch and is refused once that epoch is no longer current, so a leader that was paused or
//! cut off past its lease cannot strike after its successor has begun.

use std::time::Duration;

use serde::Serialize;

use super::dialect::Dialect;
use super::sql::{Tx, Value};
use super::{Store, StoreError};

/// A held lease: who holds it, its epoch (one more for each change of holder, or each lapse),
/// and when it ends unless renewed, on the database's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    pub expires_at_ms: i64,
}

impl Store {
    /// Takes the lease for `holder`, or renews it if `holder` has it, for `length` from now
    /// on the database's clock. Answers the lease held, or `None` while another holder's
    /// lease is current. A holder whose own lease lapsed gets a new epoch: anything it began
    /// under the old one stays fenced off.
    pub fn claim_lease(&self, holder: &str, length: Duration) -> Result<Option<Lease>, StoreError> {
        let holder = holder.to_owned();
        let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            let (now_ms, current) = read(tx, now)?;
            let live = current
                .as_ref()
                .is_some_and(|lease| lease.expires_at_ms > now_ms);
            let held = current.as_ref().map(|lease| lease.holder.as_str());
            let epoch = current.as_ref().map_or(0, |lease| lease.epoch);
            let epoch = match held {
                Some(other) if live && other != holder.as_str() => return Ok(None),
                Some(_) if live => epoch,
                _ => epoch + 1,
            };
            let expires_at_ms = now_ms.saturating_add(length_ms);
            tx.execute(
                "INSERT INTO leader_lease (id, holder, epoch, expires_at_ms) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,
                     epoch = excluded.epoch, expires_at_ms = excluded.expires_at_ms",
                &[
                    Value::Text(&holder),
                    Value::Int(epoch),
                    Value::Int(expires_at_ms),
                ],
            )?;
            Ok(Some(Lease {
                holder: holder.clone(),
                epoch,
                expires_at_ms,
            }))
        })
    }

    /// Ends `lease` at once if it is still current (a leader stopping cleanly), so another
    /// replica takes over without waiting for it to run out.
    pub fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let epoch = lease.epoch;
        self.write(move |tx| {
            tx.execute(
                "UPDATE leader_lease SET expires_at_ms = 0 WHERE id = 1 AND epoch = $1",
                &[Value::Int(epoch)],
            )?;
            Ok(())
        })
    }

    /// The lease as the database has it, current or not, and the database's clock now.
    pub fn lease(&self) -> Result<(Option<Lease>, i64), StoreError> {
        let now = self.dialect().now_ms();
        self.read(move |tx| {
            let (now_ms, lease) = read(tx, now)?;
            Ok((lease, now_ms))
        })
    }
}

/// The database's clock (`now` is the dialect's expression) and the lease row, if any.
fn read(tx: &mut dyn Tx, now: &str) -> Result<(i64, Option<Lease>), StoreError> {
    let row = tx.query_one(
        &format!(
            "SELECT {now}, l.holder, l.epoch, l.expires_at_ms
             FROM (SELECT 1 AS one) n LEFT JOIN leader_lease l ON l.id = 1"
        ),
        &[],
    )?;
    let lease = match row.opt_text(1)? {
        None => None,
        Some(holder) => Some(Lease {
            holder,
            epoch: row.int(2)?,
            expires_at_ms: row.int(3)?,
        }),
    };
    Ok((row.int(0)?, lease))
}

/// Passes if `epoch` is the current lease's; `Deposed` otherwise. On PostgreSQL the lease
/// row stays share-locked until the transaction ends, so a successor's claim waits for a
/// write that passed this check, and the check holds until that write commits (SQLite's
/// single writer gives the same). A leader that stalls inside such a transaction is cut
/// off by the server's idle-in-transaction timeout (see `postgresql`).
pub(super) fn check_current(
    tx: &mut dyn Tx,
    dialect: Dialect,
    epoch: i64,
) -> Result<(), StoreError> {
    let current = tx.query_opt(
        &format!(
            "SELECT 1 FROM leader_lease WHERE id = 1 AND epoch = $1 AND expires_at_ms > {}{}",
            dialect.now_ms(),
            dialect.share_lock()
        ),
        &[Value::Int(epoch)],
    )?;
    match current {
        Some(_) => Ok(()),
        None => Err(StoreError::Deposed { epoch }),
    }
}
