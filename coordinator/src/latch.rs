//! Serve's emergency stop. While latched, serve refuses attacks and campaign runs,
//! fires no schedule, and every agent it knows is sent an `EmergencyStop`: at the stop,
//! when a stream attaches, and, for agents the stop did not reach, again every few
//! seconds. The latch is a row in the store, so a serve restart keeps it, and replicas of
//! serve sharing the store follow each other's stops and resumes within a second, each
//! latching (or resuming) the agents whose streams it holds. The stop and the resume are
//! ad-hoc runs whose commands record each agent's acknowledgement.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use troop_common::latch::{MAX_BY_CHARS, MAX_REASON_CHARS, checked_text, latched_message};
use troop_proto::pb;

use crate::audit::{AdhocRun, send_even_unrecorded};
use crate::config::AgentEntry;
use crate::dispatch::{CallError, Delivery};
use crate::fleet::Fleet;
use crate::signer::{Signer, now_unix_ms};
use crate::store::{LatchRecord, Store, StoreError};

/// How often the agents a stop did not reach are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// How often the latch row is read again, for stops and resumes through other replicas.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Why a stop or resume did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LatchError {
    #[error("{0}")]
    Invalid(String),
    #[error("audit store: {0}; nothing sent")]
    Store(#[from] StoreError),
}

/// The latch and what serve needs to send it.
pub struct FleetLatch {
    store: Arc<Store>,
    fleet: Fleet,
    signer: Arc<Signer>,
    current: watch::Sender<Option<LatchRecord>>,
    /// The latch row as this serve last saw it in the store. A latch held only in memory
    /// (the store refused it) is never lifted by the row's absence.
    stored: Mutex<Option<LatchRecord>>,
    /// Agents a latch has not reached yet.
    unlatched: Mutex<BTreeSet<String>>,
    /// One stop, resume or re-latch at a time, so a resume never overtakes a latch.
    turn: tokio::sync::Mutex<()>,
}

impl FleetLatch {
    /// Serve's latch as the store has it. After a restart while latched, every agent
    /// the config lists may have missed it, so each is sent it again.
    pub fn load(store: Arc<Store>, fleet: Fleet, signer: Arc<Signer>) -> Result<Self, StoreError> {
        let current = store.latch()?;
        let unlatched = match &current {
            Some(latch) => {
                tracing::warn!(by = %latch.by, reason = %latch.reason, "latched by an emergency stop: no attack, run or schedule until a resume");
                fleet.config.agents.iter().map(|a| a.id.clone()).collect()
            }
            None => BTreeSet::new(),
        };
        Ok(Self {
            store,
            fleet,
            signer,
            current: watch::Sender::new(current.clone()),
            stored: Mutex::new(current),
            unlatched: Mutex::new(unlatched),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    pub fn current(&self) -> Option<LatchRecord> {
        self.current.borrow().clone()
    }

    /// Sees every change of the latch (campaign runs are cancelled when it is set).
    pub fn subscribe(&self) -> watch::Receiver<Option<LatchRecord>> {
        self.current.subscribe()
    }

    /// What an attack or a run is refused with while latched.
    pub fn refusal(&self) -> Option<String> {
        self.current().as_ref().map(refusal)
    }

    /// The latch as the wire shows it.
    pub fn to_pb(&self) -> Option<pb::Latch> {
        self.current().map(|latch| pb::Latch {
            command_id: String::new(),
            by: latch.by,
            reason: latch.reason,
            at_unix_ms: latch.at_ms,
        })
    }

    /// Latches serve (stored first), then sends every agent an `EmergencyStop`. A store
    /// that cannot record it does not hold the stop back: serve latches in memory and
    /// sends unrecorded, as a halt does.
    pub async fn stop(&self, by: &str, reason: &str) -> Result<(i64, Vec<Delivery>), LatchError> {
        let reason = checked("reason", reason, MAX_REASON_CHARS)?;
        let by = checked("by", by, MAX_BY_CHARS)?;
        let _turn = self.turn.lock().await;
        let run = AdhocRun::begin_in(self.store.clone(), "emergency stop", 0, &by)
            .inspect_err(|error| tracing::error!(%error, "audit store: cannot record the emergency stop; sending it anyway"))
            .ok();
        let latch = LatchRecord {
            by: by.clone(),
            reason: reason.clone(),
            at_ms: now_unix_ms(),
            run: run.as_ref().map_or(0, AdhocRun::id),
        };
        match self.store.set_latch(&latch) {
            Ok(()) => *lock(&self.stored) = Some(latch.clone()),
            Err(error) => {
                tracing::error!(%error, "audit store: cannot store the latch; latched until serve stops");
            }
        }
        tracing::warn!(%by, %reason, "emergency stop: latched");
        self.current.send_replace(Some(latch));
        let agents = self.fleet.agents();
        let mut deliveries = self
            .send(run.as_ref(), agents, stop_action(&by, &reason))
            .await;
        deliveries.extend(self.departed());
        self.note_reached(&deliveries, true);
        Ok((run.as_ref().map_or(0, AdhocRun::id), deliveries))
    }

    /// Lifts serve's latch (stored first), then sends every agent a `Resume`. An agent
    /// that misses it stays latched until the next resume: the safe side.
    pub async fn resume(&self, by: &str, reason: &str) -> Result<(i64, Vec<Delivery>), LatchError> {
        let reason = checked("reason", reason, MAX_REASON_CHARS)?;
        let by = checked("by", by, MAX_BY_CHARS)?;
        let _turn = self.turn.lock().await;
        let run = AdhocRun::begin_in(self.store.clone(), "resume", 0, &by)?;
        self.store.clear_latch()?;
        *lock(&self.stored) = None;
        tracing::warn!(%by, %reason, "resume: latch lifted");
        self.current.send_replace(None);
        self.unlatched_lock().clear();
        let action = pb::command::Action::Resume(pb::Resume { reason, by });
        let deliveries = self.send(Some(&run), self.fleet.agents(), action).await;
        Ok((run.id(), deliveries))
    }

    /// A stream attached: if serve is latched, the agent is latched at once.
    pub fn attached(self: &Arc<Self>, agent: AgentEntry) {
        if self.current().is_some() {
            let latch = self.clone();
            tokio::spawn(async move { latch.relatch(vec![agent], "it attached").await });
        }
    }

    /// Until serve stops: while latched, the agents a latch has not reached yet are
    /// asked for their Status every [`RETRY_EVERY`], and those that answer are sent it
    /// again. Asking first keeps a host that stays down out of the audit trail: only a
    /// latch actually sent is a run.
    pub async fn keep_latching(self: Arc<Self>) {
        let mut every = tokio::time::interval(RETRY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let unlatched = self.unlatched_lock().clone();
            if unlatched.is_empty() || self.current().is_none() {
                continue;
            }
            let candidates: Vec<AgentEntry> = self
                .fleet
                .agents()
                .into_iter()
                .filter(|agent| unlatched.contains(&agent.id))
                .collect();
            let agents: Vec<AgentEntry> = self
                .fleet
                .statuses(&candidates)
                .await
                .into_iter()
                .filter_map(|(agent, status)| status.is_ok().then_some(agent))
                .collect();
            if !agents.is_empty() {
                self.relatch(agents, "it answers again").await;
            }
        }
    }

    /// Until serve stops: follows the latch row, so a stop or a resume through another
    /// replica of serve sharing the store latches or resumes this one too, and the agents
    /// attached to it.
    pub async fn follow_store(self: Arc<Self>) {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let store = self.store.clone();
            let in_store = match tokio::task::spawn_blocking(move || store.latch()).await {
                Ok(Ok(in_store)) => in_store,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "audit store: cannot read the latch row");
                    continue;
                }
                Err(_) => continue,
            };
            let turn = self.turn.lock().await;
            if *lock(&self.stored) == in_store {
                continue;
            }
            let seen = std::mem::replace(&mut *lock(&self.stored), in_store.clone());
            match in_store {
                Some(latch) => {
                    tracing::warn!(by = %latch.by, reason = %latch.reason, "emergency stop through another replica: latched");
                    self.current.send_replace(Some(latch));
                    drop(turn);
                    self.relatch(self.fleet.agents(), "latched through another replica")
                        .await;
                }
                // Lifted elsewhere; a latch this serve never saw stored stays.
                None if seen.is_some() && self.current() == seen => {
                    tracing::warn!("resume through another replica: latch lifted");
                    self.current.send_replace(None);
                    self.unlatched_lock().clear();
                    drop(turn);
                    self.resume_followed().await;
                }
                None => {}
            }
        }
    }

    /// Sends `Resume` to the agents of this serve after a resume through another replica.
    async fn resume_followed(&self) {
        let _turn = self.turn.lock().await;
        let (by, reason) = (
            "troop serve".to_string(),
            "the emergency stop was lifted through another replica".to_string(),
        );
        let run = AdhocRun::begin_in(self.store.clone(), "resume (lifted through another replica)", 0, &by)
            .inspect_err(|error| tracing::error!(%error, "audit store: cannot record the resume; agents stay latched"))
            .ok();
        // As `resume`: nothing unrecorded. An agent that misses it stays latched.
        if let Some(run) = run {
            let action = pb::command::Action::Resume(pb::Resume { reason, by });
            self.send(Some(&run), self.fleet.agents(), action).await;
        }
    }

    /// Sends the current latch to `agents`, recorded as a run of its own.
    async fn relatch(&self, agents: Vec<AgentEntry>, why: &str) {
        let _turn = self.turn.lock().await;
        // Read under the turn: a resume that went first has lifted it.
        let Some(latch) = self.current() else { return };
        let what = match agents.as_slice() {
            [one] => format!("emergency stop, again to {} ({why})", one.id),
            many => format!("emergency stop, again to {} agents ({why})", many.len()),
        };
        let run = AdhocRun::begin_in(self.store.clone(), &what, 0, &latch.by)
            .inspect_err(|error| tracing::error!(%error, "audit store: cannot record a latch sent again; sending it anyway"))
            .ok();
        let deliveries = self
            .send(run.as_ref(), agents, stop_action(&latch.by, &latch.reason))
            .await;
        self.note_reached(&deliveries, false);
    }

    /// Sends `action` to `agents`, recorded in `run` where the store takes it.
    async fn send(
        &self,
        run: Option<&AdhocRun>,
        agents: Vec<AgentEntry>,
        action: pb::command::Action,
    ) -> Vec<Delivery> {
        let work = agents
            .into_iter()
            .map(|agent| (agent, action.clone()))
            .collect();
        send_even_unrecorded(&self.fleet, &self.signer, run, work).await
    }

    /// Agents whose streams ended and have not come back: not latched until they do.
    fn departed(&self) -> Vec<Delivery> {
        let Some(live) = &self.fleet.dispatcher.streams else {
            return Vec::new();
        };
        live.departed()
            .into_iter()
            .filter(|gone| live.get(&gone.id).is_none())
            .map(|gone| Delivery {
                command_id: String::new(),
                signature_sha256: String::new(),
                result: Err(CallError::Unreachable(format!(
                    "its stream ended (last seen {}); latched when it attaches again",
                    troop_common::clock::utc(gone.last_seen_unix_ms)
                ))),
                agent: AgentEntry {
                    id: gone.id,
                    address: gone.address,
                    labels: gone.labels,
                },
            })
            .collect()
    }

    /// Remembers which agents acknowledged; `fresh` starts over (a new latch).
    fn note_reached(&self, deliveries: &[Delivery], fresh: bool) {
        let mut unlatched = self.unlatched_lock();
        if fresh {
            unlatched.clear();
        }
        for delivery in deliveries {
            if delivery.result.is_ok() {
                unlatched.remove(&delivery.agent.id);
            } else {
                tracing::warn!(agent = %delivery.agent.id, "not latched yet; trying again");
                unlatched.insert(delivery.agent.id.clone());
            }
        }
    }

    fn unlatched_lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        lock(&self.unlatched)
    }
}

/// A lock that outlives a panic of another holder (the state is a plain value).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The refusal's words for `latch`: as the agents say it, naming the run that stopped.
pub fn refusal(latch: &LatchRecord) -> String {
    latched_message(
        &latch.by,
        latch.at_ms,
        &format!("serve, run {}", latch.run),
        &latch.reason,
    )
}

fn stop_action(by: &str, reason: &str) -> pb::command::Action {
    pb::command::Action::EmergencyStop(pb::EmergencyStop {
        reason: reason.to_string(),
        by: by.to_string(),
    })
}

fn checked(key: &str, text: &str, max: usize) -> Result<String, LatchError> {
    checked_text(key, text, max).map_err(LatchError::Invalid)
}
