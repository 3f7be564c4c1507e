//! The fault lifecycle: apply, hold until the deadline (or the lease) passes, revert.
//!
//! Each running fault is a small state machine: `journaled → applied → reverted`. The
//! journal entry is written before the fault is applied, and removed only after the fault
//! is really reverted: a revert that fails keeps its entry, stays listed in `Status`, and
//! is retried every [`REVERT_RETRY`] (and at the next start) until it succeeds. One
//! supervisor thread sleeps until the earliest deadline, lease expiry or retry and acts on
//! what is due; `abort`, `abort_all` and `shutdown` revert at once. Reverting is done
//! outside the engine's lock and is idempotent, so a fault is reverted exactly once
//! whichever of these gets to it first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use troop_proto::{Refusal, pb};

use super::journal::{FaultJournal, Record, Undo};
use crate::latch::{self, Latch};
use crate::policy::FaultKind;
use troop_common::clock::now_unix_ms;

/// How soon a failed revert is tried again.
pub const REVERT_RETRY: Duration = Duration::from_secs(2);

/// A fault that is holding: reports what it achieves, and undoes itself.
///
/// Dropping an effect must end it too (threads stopped, helpers killed, files removed),
/// so no path that loses the handle can leave a fault running unseen.
pub trait Effect: Send {
    /// What the fault achieves right now, for `Status`.
    fn effect(&self) -> String;
    /// Undoes the fault. Idempotent: called again after a failure; must not panic.
    fn revert(&mut self) -> Result<(), String>;
    /// Memory this fault holds, counted against `policy.max_memory_percent`.
    fn memory_bytes(&self) -> u64 {
        0
    }
    /// What a network fault puts on its interface, counted against the network caps.
    fn network_load(&self) -> Option<crate::host::net::NetworkLoad> {
        None
    }
}

/// What a fault started with: its effect and how to undo it after a crash.
pub struct Applied {
    pub effect: Box<dyn Effect>,
    pub summary: String,
}

struct Running {
    kind: FaultKind,
    started_at_unix_ms: i64,
    ends_at: Instant,
    ends_at_unix_ms: i64,
    lease: Option<(Instant, i64)>,
    effect: Box<dyn Effect>,
    /// Set once a revert failed: why it ended, and what the revert said.
    failed_revert: Option<(EndReason, String)>,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Running>,
    /// Ids between their journal entry and their place in `running`.
    starting: BTreeSet<String>,
    stopping: bool,
    /// Set by an emergency stop: no fault starts while it is.
    latch: Option<Latch>,
}

/// Why a fault ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Deadline,
    LeaseExpired,
    Aborted,
    /// `AbortAll`: `troop halt`.
    Halted,
    EmergencyStop,
    Shutdown,
    /// Left applied by a previous agent process.
    Recovery,
}

impl EndReason {
    /// The cause as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Deadline => "deadline",
            EndReason::LeaseExpired => "lease",
            EndReason::Aborted => "abort",
            EndReason::Halted => "halt",
            EndReason::EmergencyStop => "emergency_stop",
            EndReason::Shutdown => "shutdown",
            EndReason::Recovery => "recovery",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            EndReason::Deadline => "its duration is over",
            EndReason::LeaseExpired => "its lease was not renewed",
            EndReason::Aborted => "it was aborted",
            EndReason::Halted => "it was halted",
            EndReason::EmergencyStop => "an emergency stop reverted it",
            EndReason::Shutdown => "the agent is stopping",
            EndReason::Recovery => "a previous agent process left it applied",
        }
    }
}

/// What `abort_all` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reverted {
    pub ids: Vec<String>,
    /// Faults whose revert failed: still journaled, listed in Status and retried.
    pub failed: Vec<(String, String)>,
}

pub struct Engine {
    state: Mutex<State>,
    wake: Condvar,
    journal: FaultJournal,
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// An engine over `journal`, latched if an emergency stop left its latch in the
    /// journal's state dir.
    pub fn new(journal: FaultJournal) -> Self {
        let latch = latch::load(journal.state_dir());
        if let Some(latch) = &latch {
            tracing::warn!(by = %latch.by, reason = %latch.reason, "latched by an emergency stop: no fault starts until a resume");
        }
        Self {
            state: Mutex::new(State {
                latch,
                ..State::default()
            }),
            wake: Condvar::new(),
            journal,
        }
    }

    pub fn journal(&self) -> &FaultJournal {
        &self.journal
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals, applies and starts holding a fault. `undo` must say how to undo `apply`
    /// after a crash; it is on disk before `apply` runs. An id that names a fault still
    /// active, starting or journaled is refused: a second fault must never take the place
    /// (and hide the handle) of the first.
    pub fn start(
        &self,
        fault_id: &str,
        kind: FaultKind,
        duration: Duration,
        lease: Option<Duration>,
        undo: Undo,
        apply: &dyn Fn() -> Result<Applied, Refusal>,
    ) -> Result<(String, i64), Refusal> {
        {
            let mut state = self.lock();
            if state.stopping {
                return Err(Refusal::Unavailable("the agent is stopping".into()));
            }
            if let Some(latch) = &state.latch {
                return Err(latch.refusal());
            }
            let in_use = state.running.contains_key(fault_id)
                || state.starting.contains(fault_id)
                || self.journal.contains(fault_id);
            if in_use {
                return Err(Refusal::FaultIdInUse {
                    command_id: fault_id.to_string(),
                });
            }
            state.starting.insert(fault_id.to_string());
        }
        let result = self.journal_and_apply(fault_id, kind, duration, lease, undo, apply);
        let mut state = self.lock();
        state.starting.remove(fault_id);
        let (summary, ends_at_unix_ms) = result?;
        // A shutdown or an emergency stop that came while this fault was being applied
        // found it not yet running: it is undone here instead.
        let ended_meanwhile = if state.stopping {
            Some((
                EndReason::Shutdown,
                Refusal::Unavailable("the agent is stopping".into()),
            ))
        } else {
            state
                .latch
                .as_ref()
                .map(|latch| (EndReason::EmergencyStop, latch.refusal()))
        };
        if let Some((reason, refusal)) = ended_meanwhile {
            let running = state.running.remove(fault_id);
            drop(state);
            if let Some(running) = running {
                self.revert(fault_id.to_string(), running, reason);
            }
            return Err(refusal);
        }
        drop(state);
        self.wake.notify_all();
        tracing::info!(fault_id, %kind, duration_ms = ms(duration), "fault applied");
        Ok((summary, ends_at_unix_ms))
    }

    fn journal_and_apply(
        &self,
        fault_id: &str,
        kind: FaultKind,
        duration: Duration,
        lease: Option<Duration>,
        undo: Undo,
        apply: &dyn Fn() -> Result<Applied, Refusal>,
    ) -> Result<(String, i64), Refusal> {
        let started_at_unix_ms = now_unix_ms();
        let ends_at_unix_ms = started_at_unix_ms.saturating_add(ms(duration));
        self.journal
            .add(Record {
                fault_id: fault_id.to_string(),
                kind: kind.name().to_string(),
                started_at_unix_ms,
                ends_at_unix_ms,
                undo,
            })
            .map_err(|error| {
                Refusal::Unavailable(format!(
                    "cannot journal the fault, so it was not applied: {}",
                    troop_telemetry::error_chain(&error)
                ))
            })?;
        let applied = match apply() {
            Ok(applied) => applied,
            Err(refusal) => {
                self.forget(fault_id);
                return Err(refusal);
            }
        };
        let now = Instant::now();
        let running = Running {
            kind,
            started_at_unix_ms,
            ends_at: now + duration,
            ends_at_unix_ms,
            lease: lease.map(|lease| (now + lease, now_unix_ms().saturating_add(ms(lease)))),
            effect: applied.effect,
            failed_revert: None,
        };
        self.lock().running.insert(fault_id.to_string(), running);
        Ok((applied.summary, ends_at_unix_ms))
    }

    /// Takes over a fault a previous agent process left applied and could not undo at
    /// start-up: it is retried like any failed revert, and shown in Status meanwhile.
    pub fn adopt_failed(&self, record: &Record, effect: Box<dyn Effect>, error: String) {
        let kind = record.kind.parse().unwrap_or(FaultKind::Disk);
        let running = Running {
            kind,
            started_at_unix_ms: record.started_at_unix_ms,
            ends_at: Instant::now() + REVERT_RETRY,
            ends_at_unix_ms: record.ends_at_unix_ms,
            lease: None,
            effect,
            failed_revert: Some((EndReason::Recovery, error)),
        };
        self.lock().running.insert(record.fault_id.clone(), running);
        self.wake.notify_all();
    }

    fn forget(&self, fault_id: &str) {
        if let Err(error) = self.journal.remove(fault_id) {
            tracing::error!(fault_id, error = %troop_telemetry::error_chain(&error), "cannot update the fault journal");
        }
    }

    /// Reverts a fault taken out of `running`. On failure it goes back, journal entry
    /// kept, to be retried; the error is returned.
    fn revert(&self, fault_id: String, mut running: Running, reason: EndReason) -> Option<String> {
        let reason = running
            .failed_revert
            .as_ref()
            .map_or(reason, |(first, _)| *first);
        match running.effect.revert() {
            Ok(()) => {
                tracing::info!(%fault_id, kind = %running.kind, reason = reason.as_str(), "fault reverted");
                let held = now_unix_ms().saturating_sub(running.started_at_unix_ms);
                crate::metrics::get().reverted(
                    running.kind.name(),
                    reason.label(),
                    Duration::from_millis(held.max(0) as u64),
                );
                self.forget(&fault_id);
                None
            }
            Err(error) => {
                tracing::error!(%fault_id, kind = %running.kind, %error, retry_in_ms = ms(REVERT_RETRY), "fault revert failed; keeping it journaled and retrying");
                running.failed_revert = Some((reason, error.clone()));
                running.ends_at = Instant::now() + REVERT_RETRY;
                running.lease = None;
                let mut state = self.lock();
                state.running.insert(fault_id, running);
                drop(state);
                self.wake.notify_all();
                Some(error)
            }
        }
    }

    pub fn abort(&self, fault_id: &str) -> Result<(), Refusal> {
        let running = self.lock().running.remove(fault_id);
        match running {
            Some(running) => match self.revert(fault_id.to_string(), running, EndReason::Aborted) {
                None => Ok(()),
                Some(error) => Err(Refusal::Internal(format!(
                    "fault {fault_id} could not be reverted ({error}); the agent keeps retrying"
                ))),
            },
            None => Err(Refusal::NotFound(format!(
                "no active fault {fault_id:?} on this agent"
            ))),
        }
    }

    /// Reverts every fault now.
    pub fn abort_all(&self, reason: EndReason) -> Reverted {
        let taken = std::mem::take(&mut self.lock().running);
        // Reverted side by side: halting many faults takes as long as the slowest.
        let outcomes: Vec<(String, Option<String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = taken
                .into_iter()
                .map(|(id, running)| {
                    scope.spawn(move || (id.clone(), self.revert(id, running, reason)))
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|handle| handle.join().ok())
                .collect()
        });
        let mut reverted = Reverted::default();
        for (id, failure) in outcomes {
            match failure {
                None => reverted.ids.push(id),
                Some(error) => reverted.failed.push((id, error)),
            }
        }
        reverted
    }

    pub fn latch(&self) -> Option<Latch> {
        self.lock().latch.clone()
    }

    /// Latches, here and on disk, and reverts every fault. A latch the state dir cannot
    /// take still holds until this process ends; the error says so.
    pub fn emergency_stop(&self, latch: Latch) -> (Reverted, Option<std::io::Error>) {
        self.emergency_stop_saving(latch, latch::save)
    }

    /// As [`Engine::emergency_stop`], the latch saved by `save`: latched in memory first,
    /// so no fault starts from here on, then saved beside the reverts, so a state dir
    /// that hangs keeps no fault running.
    fn emergency_stop_saving(
        &self,
        latch: Latch,
        save: impl FnOnce(&std::path::Path, &Latch) -> std::io::Result<()> + Send,
    ) -> (Reverted, Option<std::io::Error>) {
        self.lock().latch = Some(latch.clone());
        std::thread::scope(|scope| {
            let saving = scope.spawn(|| save(self.journal.state_dir(), &latch));
            let reverted = self.abort_all(EndReason::EmergencyStop);
            let unsaved = saving
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("saving the latch panicked")));
            (reverted, unsaved.err())
        })
    }

    /// Lifts the latch for a resume issued at `issued_at_unix_ms`, and answers what it
    /// lifted. A resume issued before the latch was set (delayed, or replayed from
    /// before the stop) lifts nothing.
    pub fn resume(&self, issued_at_unix_ms: i64) -> Result<Option<Latch>, Refusal> {
        let mut state = self.lock();
        let Some(latch) = &state.latch else {
            return Ok(None);
        };
        if issued_at_unix_ms < latch.at_unix_ms {
            return Err(Refusal::Latched(format!(
                "this resume was issued at {}, before the emergency stop at {} it would lift; it lifts nothing",
                troop_common::clock::utc(issued_at_unix_ms),
                troop_common::clock::utc(latch.at_unix_ms)
            )));
        }
        latch::clear(self.journal.state_dir()).map_err(|error| {
            Refusal::Unavailable(format!(
                "cannot remove the latch file, so the agent stays latched: {error}"
            ))
        })?;
        Ok(state.latch.take())
    }

    pub fn renew(&self, fault_id: &str, lease: Duration) -> Result<i64, Refusal> {
        let mut state = self.lock();
        let running = state.running.get_mut(fault_id).ok_or_else(|| {
            Refusal::NotFound(format!("no active fault {fault_id:?} on this agent"))
        })?;
        if running.failed_revert.is_some() {
            return Err(Refusal::NotFound(format!(
                "fault {fault_id:?} has ended and is being reverted"
            )));
        }
        if running.lease.is_none() {
            return Err(Refusal::InvalidArgument(format!(
                "fault {fault_id:?} was started without a lease"
            )));
        }
        let expires = now_unix_ms().saturating_add(ms(lease));
        running.lease = Some((Instant::now() + lease, expires));
        Ok(expires)
    }

    /// Memory held by every active fault, for the policy's total cap.
    pub fn memory_held(&self) -> u64 {
        self.lock()
            .running
            .values()
            .map(|running| running.effect.memory_bytes())
            .sum()
    }

    /// What the network faults held now put on their interfaces.
    pub fn network_loads(&self) -> Vec<crate::host::net::NetworkLoad> {
        self.lock()
            .running
            .values()
            .filter_map(|running| running.effect.network_load())
            .collect()
    }

    pub fn active(&self) -> Vec<pb::ActiveFault> {
        self.lock()
            .running
            .iter()
            .map(|(id, running)| pb::ActiveFault {
                fault_id: id.clone(),
                command_id: id.clone(),
                kind: running.kind.name().to_string(),
                started_at_unix_ms: running.started_at_unix_ms,
                ends_at_unix_ms: running.ends_at_unix_ms,
                effect: match &running.failed_revert {
                    None => running.effect.effect(),
                    Some((_, error)) => format!(
                        "ended, but its revert failed ({error}); retrying every {} s",
                        REVERT_RETRY.as_secs()
                    ),
                },
                lease_expires_at_unix_ms: running.lease.map_or(0, |(_, at)| at),
            })
            .collect()
    }

    /// Reverts everything and stops the supervisor (SIGTERM, or the server ending).
    /// What cannot be reverted now stays journaled for the next start.
    pub fn shutdown(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
        let reverted = self.abort_all(EndReason::Shutdown);
        if !reverted.ids.is_empty() {
            tracing::info!(
                count = reverted.ids.len(),
                "reverted every fault before stopping"
            );
        }
        for (fault_id, error) in reverted.failed {
            tracing::error!(%fault_id, %error, "cannot revert before stopping; the next start retries");
        }
    }

    /// Starts the thread that ends faults on time.
    pub fn supervise(self: &Arc<Self>) -> JoinHandle<()> {
        let engine = self.clone();
        std::thread::Builder::new()
            .name("troop-deadlines".into())
            .spawn(move || engine.supervisor_loop())
            .expect("cannot start the deadline thread")
    }

    fn supervisor_loop(&self) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let due: Vec<(String, EndReason)> = state
                .running
                .iter()
                .filter_map(|(id, running)| {
                    if running.ends_at <= now {
                        Some((id.clone(), EndReason::Deadline))
                    } else if running.lease.is_some_and(|(at, _)| at <= now) {
                        Some((id.clone(), EndReason::LeaseExpired))
                    } else {
                        None
                    }
                })
                .collect();
            if !due.is_empty() {
                let taken: Vec<_> = due
                    .into_iter()
                    .filter_map(|(id, reason)| {
                        state
                            .running
                            .remove(&id)
                            .map(|running| (id, running, reason))
                    })
                    .collect();
                drop(state);
                for (id, running, reason) in taken {
                    self.revert(id, running, reason);
                }
                state = self.lock();
                continue;
            }
            let next = state
                .running
                .values()
                .map(|running| match running.lease {
                    Some((lease, _)) => running.ends_at.min(lease),
                    None => running.ends_at,
                })
                .min();
            state = match next {
                Some(next) => {
                    let wait = next.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests;
