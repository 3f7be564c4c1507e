//! Signing-key rotation without touching a host. `troop pki rotate-signing-key` on the serve
//! host makes a new key beside the configured one and adds a generation to the store that
//! trusts both; `--retire` adds one that trusts the new key alone. Each replica of serve
//! follows the store: it announces the generation to every agent it reaches, as a
//! `TrustKeys` command signed by a key those agents already trust (the old key for the
//! overlap, the new one to retire the old), then signs with the generation's key. Agents
//! that attach later are told on attach. Agents keep what they learned in their state dir.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use troop_proto::{key_id, pb};

use crate::audit::{AdhocRun, send_even_unrecorded};
use crate::config::AgentEntry;
use crate::fleet::Fleet;
use crate::pki::{self, PkiError};
use crate::signer::Signer;
use crate::store::{SigningGeneration, Store, StoreError};

/// How often serve reads the store for a new generation.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How often agents an announcement did not reach are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{0}")]
    Refused(String),
    #[error("audit store")]
    Store(#[from] StoreError),
    #[error("signing key")]
    Pki(#[from] PkiError),
}

/// Starts a rotation: a new key in the configured key's folder, trusted with the current
/// one from the new generation on, and signing from when serve announced it.
pub fn begin(
    store: &Store,
    configured: &Path,
    by: &str,
) -> Result<SigningGeneration, RotationError> {
    let newest = store.signing_generation()?;
    if let Some(newest) = newest.as_ref().filter(|g| g.public_keys.len() > 1) {
        return Err(RotationError::Refused(format!(
            "generation {} still trusts {} keys; retire the old one first (`troop pki rotate-signing-key --retire`)",
            newest.generation,
            newest.public_keys.len()
        )));
    }
    let current_path = newest
        .as_ref()
        .map_or_else(|| configured.to_path_buf(), |g| g.signer.clone());
    let current = pki::load_signing_key(&current_path)?;
    let generation = newest.as_ref().map_or(0, |g| g.generation) + 1;
    let dir = configured.parent().unwrap_or(Path::new("."));
    let (new, new_path) = pki::new_signing_key(dir, &format!("signing-{generation}"))?;
    let next = SigningGeneration {
        generation,
        public_keys: vec![current.verifying_key(), new.verifying_key()],
        signer: new_path.clone(),
        announcer: current_path,
        created_by: by.to_string(),
    };
    stored(store, next).inspect_err(|_| {
        let _ = std::fs::remove_file(&new_path);
        let _ = std::fs::remove_file(new_path.with_extension("pub"));
    })
}

/// Ends the overlap: only the key serve signs with stays trusted.
pub fn retire(store: &Store, by: &str) -> Result<SigningGeneration, RotationError> {
    let newest = store
        .signing_generation()?
        .filter(|g| g.public_keys.len() > 1)
        .ok_or_else(|| {
            RotationError::Refused(
                "no overlap to end: start a rotation with `troop pki rotate-signing-key`".into(),
            )
        })?;
    let signer = pki::load_signing_key(&newest.signer)?;
    let next = SigningGeneration {
        generation: newest.generation + 1,
        public_keys: vec![signer.verifying_key()],
        signer: newest.signer.clone(),
        announcer: newest.signer,
        created_by: by.to_string(),
    };
    stored(store, next)
}

/// `next`, once the store took it as the generation after the newest.
fn stored(store: &Store, next: SigningGeneration) -> Result<SigningGeneration, RotationError> {
    if store.add_signing_generation(&next)? {
        Ok(next)
    } else {
        Err(RotationError::Refused(
            "another rotation was stored meanwhile; look again".into(),
        ))
    }
}

/// The ids of a generation's keys, for messages.
pub fn key_ids(generation: &SigningGeneration) -> String {
    generation
        .public_keys
        .iter()
        .map(key_id)
        .collect::<Vec<_>>()
        .join(", ")
}

fn trust_action(generation: &SigningGeneration) -> pb::command::Action {
    pb::command::Action::Trust(pb::TrustKeys {
        generation: generation.generation,
        public_keys: generation
            .public_keys
            .iter()
            .map(|key| key.to_bytes().to_vec())
            .collect(),
    })
}

/// Serve's side: follows the store's generations, announces them and signs with them.
pub struct Rotation {
    store: Arc<Store>,
    fleet: Fleet,
    signer: Arc<Signer>,
    state: Mutex<Followed>,
    /// One announcement round at a time.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Followed {
    current: Option<SigningGeneration>,
    /// Agents the current generation has not reached yet.
    unreached: BTreeSet<String>,
    /// A newer generation whose key file this host lacks (said once, not every second).
    unusable: Option<u64>,
}

impl Rotation {
    /// `current`: the generation serve's signer was loaded from at start, if any.
    pub fn new(
        store: Arc<Store>,
        fleet: Fleet,
        signer: Arc<Signer>,
        current: Option<SigningGeneration>,
    ) -> Self {
        // After a restart every agent may have missed the newest generation.
        let unreached = match &current {
            Some(_) => fleet.config.agents.iter().map(|a| a.id.clone()).collect(),
            None => BTreeSet::new(),
        };
        Self {
            store,
            fleet,
            signer,
            state: Mutex::new(Followed {
                current,
                unreached,
                unusable: None,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// A stream attached, following `trust_generation`: told the newest generation if it
    /// slept through it.
    pub fn attached(self: &Arc<Self>, agent: AgentEntry, trust_generation: u64) {
        let behind = self
            .lock()
            .current
            .as_ref()
            .is_some_and(|current| current.generation > trust_generation);
        if behind {
            let rotation = self.clone();
            tokio::spawn(async move { rotation.announce(vec![agent]).await });
        }
    }

    /// Until serve stops: reads the store for new generations, and retries agents an
    /// announcement did not reach.
    pub async fn follow(self: Arc<Self>) {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_at = tokio::time::Instant::now() + RETRY_EVERY;
        loop {
            every.tick().await;
            let store = self.store.clone();
            let newest = match tokio::task::spawn_blocking(move || store.signing_generation()).await
            {
                Ok(Ok(newest)) => newest,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "audit store: cannot read the signing-key generation");
                    continue;
                }
                Err(_) => continue,
            };
            let (known, unusable) = {
                let state = self.lock();
                (state.current.as_ref().map(|g| g.generation), state.unusable)
            };
            match newest {
                Some(newest)
                    if Some(newest.generation) != known && Some(newest.generation) != unusable =>
                {
                    self.adopt(newest).await
                }
                _ if tokio::time::Instant::now() >= retry_at => {
                    retry_at = tokio::time::Instant::now() + RETRY_EVERY;
                    let unreached = self.lock().unreached.clone();
                    let agents: Vec<AgentEntry> = self
                        .fleet
                        .agents()
                        .into_iter()
                        .filter(|agent| unreached.contains(&agent.id))
                        .collect();
                    if !agents.is_empty() {
                        self.announce(agents).await;
                    }
                }
                _ => {}
            }
        }
    }

    /// A new generation: every agent is told, then serve signs with its key.
    async fn adopt(&self, generation: SigningGeneration) {
        let key = match pki::load_signing_key(&generation.signer) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(generation = generation.generation, error = %troop_telemetry::error_chain(&error), "cannot load the rotated signing key on this host; still signing with the old one");
                self.lock().unusable = Some(generation.generation);
                return;
            }
        };
        tracing::warn!(generation = generation.generation, keys = %key_ids(&generation), "signing-key rotation: announcing to every agent");
        {
            let mut state = self.lock();
            state.current = Some(generation);
            state.unreached = self.fleet.agents().into_iter().map(|a| a.id).collect();
        }
        self.announce(self.fleet.agents()).await;
        self.signer.replace(key);
    }

    /// Sends the current generation to `agents`, recorded as a run of its own.
    async fn announce(&self, agents: Vec<AgentEntry>) {
        let _turn = self.turn.lock().await;
        let Some(generation) = self.lock().current.clone() else {
            return;
        };
        let announcer = match Signer::load(&generation.announcer) {
            Ok(announcer) => announcer,
            Err(error) => {
                tracing::error!(error = %troop_telemetry::error_chain(&error), "cannot load the key that announces the signing-key generation");
                return;
            }
        };
        let what = format!("trust signing-key generation {}", generation.generation);
        let run = AdhocRun::begin_in(self.store.clone(), &what, 0, &generation.created_by)
            .inspect_err(|error| tracing::error!(%error, "audit store: cannot record the announcement; sending it anyway"))
            .ok();
        let work = agents
            .into_iter()
            .map(|agent| (agent, trust_action(&generation)))
            .collect();
        let deliveries = send_even_unrecorded(&self.fleet, &announcer, run.as_ref(), work).await;
        let mut state = self.lock();
        for delivery in deliveries {
            match delivery.result {
                Ok(_) => {
                    state.unreached.remove(&delivery.agent.id);
                }
                // Its verdict stands: an agent that slept through a whole overlap trusts
                // none of the keys that could announce this; it needs its keys by hand.
                Err(error) if error.is_refusal() => {
                    tracing::error!(agent = %delivery.agent.id, %error, generation = generation.generation, "an agent refused the signing-key generation");
                    state.unreached.remove(&delivery.agent.id);
                }
                Err(error) => {
                    tracing::warn!(agent = %delivery.agent.id, %error, generation = generation.generation, "the signing-key generation did not reach this agent yet");
                    state.unreached.insert(delivery.agent.id);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Followed> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
