//! The fleet as the coordinator reaches it: its config (the agents, their labels) and a
//! dispatcher that sends to many agents at once, directly or down the streams of agents
//! that dialled in to this `troop serve`. The campaign runner, halt, status and every
//! attack go through this one interface. With `[coordinator]` the fleet is the one that
//! serve sees, reached through its operator API ([`Remote`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use troop_proto::pb;
use troop_proto::serve_pb::LiveAgent;

use crate::client::Dialer;
use crate::config::{AgentEntry, ClientTls, CoordinatorConfig};
use crate::dispatch::{CONNECT_TIMEOUT, Call, CallError, Dispatcher, Reply, wrong_reply};
use crate::remote::Remote;
use crate::selector::Selector;
use crate::signer::Signer;

#[derive(Clone)]
pub struct Fleet {
    pub config: CoordinatorConfig,
    pub dispatcher: Dispatcher,
    /// With `[coordinator]`: the serve every command goes through, and the agents it
    /// showed at [`Fleet::refresh`].
    pub remote: Option<Remote>,
    /// With `[coordinator]`: serve's own latch, as [`Fleet::refresh`] found it.
    pub serve_latch: Option<pb::Latch>,
    /// In `troop serve`: its one signer, which a signing-key rotation swaps once agents
    /// were told (so a campaign run never signs with a key they do not trust yet).
    pub live_signer: Option<Arc<Signer>>,
    reached: BTreeMap<String, LiveAgent>,
}

/// How an agent is reached, for `troop agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    /// `stream` (dialled in), `relay` (dialled in to another replica) or `direct`.
    pub via: &'static str,
    pub connected_since_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// When the certificate of the agent's stream expires; 0 if not known.
    pub certificate_expires_unix_ms: i64,
}

impl Fleet {
    /// The fleet of the config at `explicit`, else where [`CoordinatorConfig::locate`]
    /// finds one. With `[coordinator]`, call [`Fleet::refresh`] before selecting.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let path = CoordinatorConfig::locate(explicit)?;
        let config = CoordinatorConfig::load(&path)?;
        Self::from_config(config)
    }

    pub fn from_config(config: CoordinatorConfig) -> anyhow::Result<Self> {
        let path = &config.path;
        let client_config = |tls: &ClientTls, key: &str| {
            tls.client_config()
                .map(Arc::new)
                .with_context(|| format!("config {}: {key}", path.display()))
        };
        let remote_tls = match &config.remote {
            Some(remote) => Some(client_config(&remote.tls, "[coordinator]")?),
            None => None,
        };
        // An operator's machine has only `[coordinator]`: its one client config serves
        // both, read once (a CLI command's start-up is part of every attack's time).
        let agents_tls = match (&config.tls, &remote_tls) {
            (Some(tls), _) => client_config(tls, "[tls]")?,
            (None, Some(remote_tls)) => remote_tls.clone(),
            (None, None) => bail!("config {}: [tls] is missing", path.display()),
        };
        let remote = config
            .remote
            .as_ref()
            .zip(remote_tls)
            .map(|(remote, tls)| Remote::new(remote, tls))
            .transpose()
            .with_context(|| format!("config {}", path.display()))?;
        let dialer = Dialer::with_config(agents_tls, CONNECT_TIMEOUT);
        Ok(Self {
            config,
            dispatcher: Dispatcher::new(dialer),
            remote,
            serve_latch: None,
            live_signer: None,
            reached: BTreeMap::new(),
        })
    }

    /// With `[coordinator]`: takes serve's live fleet as this fleet's agents.
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let (live, latch) = remote.agents().await?;
        self.serve_latch = latch;
        self.config.agents = live
            .iter()
            .map(|agent| AgentEntry {
                id: agent.agent_id.clone(),
                address: agent.address.clone(),
                labels: agent.labels.clone().into_iter().collect(),
            })
            .collect();
        self.reached = live
            .into_iter()
            .map(|agent| (agent.agent_id.clone(), agent))
            .collect();
        Ok(())
    }

    /// The signing key: serve's live one, else the newest a signing-key rotation in the
    /// store made, else the configured one (none on an operator's machine: serve signs).
    pub fn signer(&self) -> anyhow::Result<Arc<Signer>> {
        if let Some(live) = &self.live_signer {
            return Ok(live.clone());
        }
        let key = self.signing_key_path()?;
        let signer = Signer::load(&key).with_context(|| {
            if self.config.signing_key.as_ref() == Some(&key) {
                format!("config {}: [signing] key", self.config.path.display())
            } else {
                format!("the rotated signing key {}", key.display())
            }
        })?;
        Ok(Arc::new(signer))
    }

    /// The signing key's file: the newest a signing-key rotation in the store made, else
    /// the configured one (none on an operator's machine: serve signs).
    pub fn signing_key_path(&self) -> anyhow::Result<std::path::PathBuf> {
        let Some(configured) = &self.config.signing_key else {
            bail!(
                "config {}: no [signing] key here; with [coordinator], troop serve signs",
                self.config.path.display()
            );
        };
        // A store not made yet holds no rotation, and a dry run must not make it.
        Ok(
            match crate::store::Store::open_existing(&self.config.store_url)
                .context("audit store")?
            {
                Some(store) => store
                    .signing_key_path(configured)
                    .context("audit store: signing-key generation")?,
                None => configured.clone(),
            },
        )
    }

    /// Every agent: the static `[[agents]]`, then (in `troop serve`) each agent whose
    /// stream is open, here or on another replica sharing the store, which is reached
    /// down it with the labels it reports.
    pub fn agents(&self) -> Vec<AgentEntry> {
        let mut by_id: BTreeMap<String, AgentEntry> = self
            .config
            .agents
            .iter()
            .map(|agent| (agent.id.clone(), agent.clone()))
            .collect();
        if let Some(live) = &self.dispatcher.streams {
            // Another replica's before this one's: a stream here is the shorter way.
            for stream in live.elsewhere.all() {
                let entry = stream.entry;
                by_id.insert(
                    entry.agent.clone(),
                    AgentEntry {
                        id: entry.agent,
                        address: entry.address,
                        labels: entry.labels,
                    },
                );
            }
            for link in live.connected() {
                by_id.insert(link.id.clone(), link.entry());
            }
        }
        by_id.into_values().collect()
    }

    /// How `id` is reached.
    /// Every agent serve knows, as `troop agents` lists them: the fleet's (static and
    /// attached), then those whose streams ended, unreachable; by id.
    pub fn live_agents(&self) -> Vec<troop_proto::serve_pb::LiveAgent> {
        let mut agents: Vec<troop_proto::serve_pb::LiveAgent> = self
            .agents()
            .into_iter()
            .map(|agent| {
                let reached = self.reached(&agent.id);
                troop_proto::serve_pb::LiveAgent {
                    reachable: reached.via != "direct",
                    via: reached.via.to_string(),
                    connected_since_unix_ms: reached.connected_since_unix_ms,
                    last_seen_unix_ms: reached.last_seen_unix_ms,
                    certificate_expires_unix_ms: reached.certificate_expires_unix_ms,
                    agent_id: agent.id,
                    labels: agent.labels.into_iter().collect(),
                    address: agent.address,
                }
            })
            .collect();
        if let Some(live) = &self.dispatcher.streams {
            let listed: std::collections::BTreeSet<String> =
                agents.iter().map(|agent| agent.agent_id.clone()).collect();
            agents.extend(
                live.departed()
                    .into_iter()
                    .filter(|gone| !listed.contains(&gone.id))
                    .map(|gone| troop_proto::serve_pb::LiveAgent {
                        agent_id: gone.id,
                        labels: gone.labels.into_iter().collect(),
                        via: "stream".into(),
                        address: gone.address,
                        connected_since_unix_ms: 0,
                        last_seen_unix_ms: gone.last_seen_unix_ms,
                        reachable: false,
                        certificate_expires_unix_ms: 0,
                    }),
            );
            agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        }
        agents
    }

    pub fn reached(&self, id: &str) -> Reached {
        if let Some(agent) = self.reached.get(id) {
            return Reached {
                via: match agent.via.as_str() {
                    "stream" => "stream",
                    "relay" => "relay",
                    _ => "direct",
                },
                connected_since_unix_ms: agent.connected_since_unix_ms,
                last_seen_unix_ms: agent.last_seen_unix_ms,
                certificate_expires_unix_ms: agent.certificate_expires_unix_ms,
            };
        }
        match self
            .dispatcher
            .streams
            .as_ref()
            .and_then(|live| live.get(id))
        {
            Some(link) => Reached {
                via: "stream",
                connected_since_unix_ms: link.connected_since_unix_ms,
                last_seen_unix_ms: link.last_seen_unix_ms(),
                certificate_expires_unix_ms: link
                    .certificate()
                    .map_or(0, |cert| cert.not_after_unix_ms),
            },
            None => match self
                .dispatcher
                .streams
                .as_ref()
                .and_then(|live| live.elsewhere.get(id))
            {
                Some(stream) => Reached {
                    via: "relay",
                    connected_since_unix_ms: stream.entry.connected_since_ms,
                    last_seen_unix_ms: stream.seen_at_ms,
                    certificate_expires_unix_ms: 0,
                },
                None => Reached {
                    via: "direct",
                    ..Reached::default()
                },
            },
        }
    }

    /// Asks every one of `agents` for its status, concurrently (through serve with
    /// `[coordinator]`; if serve cannot be asked, every agent shows why).
    pub async fn statuses(
        &self,
        agents: &[AgentEntry],
    ) -> Vec<(AgentEntry, Result<pb::AgentStatus, CallError>)> {
        if let Some(remote) = &self.remote {
            return match remote.statuses(agents).await {
                Ok(statuses) => statuses,
                Err(error) => agents
                    .iter()
                    .map(|agent| {
                        (
                            agent.clone(),
                            Err(CallError::Unreachable(format!("{error:#}"))),
                        )
                    })
                    .collect(),
            };
        }
        let work = agents.iter().map(|agent| (agent.clone(), ())).collect();
        self.dispatcher
            .each(work, |()| Call::Status)
            .await
            .into_iter()
            .map(|(agent, result)| {
                let status = result.and_then(|reply| match reply {
                    Reply::Status(status) => Ok(*status),
                    Reply::Receipt(_) => Err(wrong_reply()),
                });
                (agent, status)
            })
            .collect()
    }

    /// Every agent a selector matches for showing, including (with `[coordinator]`) those
    /// whose streams serve lost, which [`Fleet::select`] never picks.
    pub fn listed(&self, selector: &Selector) -> anyhow::Result<Vec<AgentEntry>> {
        self.matching(selector, self.agents())
    }

    /// The agents a selector matches, sorted by id so that seeded picks repeat. An agent
    /// that dialled in and went silent is not among them.
    pub fn select(&self, selector: &Selector) -> anyhow::Result<Vec<AgentEntry>> {
        let live = self
            .agents()
            .into_iter()
            .filter(|agent| {
                self.reached
                    .get(&agent.id)
                    .is_none_or(|seen| seen.via == "direct" || seen.reachable)
            })
            .collect();
        self.matching(selector, live)
    }

    fn matching(
        &self,
        selector: &Selector,
        all: Vec<AgentEntry>,
    ) -> anyhow::Result<Vec<AgentEntry>> {
        let mut agents: Vec<AgentEntry> = all
            .iter()
            .filter(|agent| selector.matches(&agent.labels))
            .cloned()
            .collect();
        if agents.is_empty() {
            if all.is_empty() {
                if let Some(remote) = &self.remote {
                    bail!("troop serve at {} knows no agents", remote.address);
                }
                bail!(
                    "config {} lists no agents ([[agents]] id, address, labels) and none is connected",
                    self.config.path.display()
                );
            }
            bail!("no agent matches selector {:?}", selector.to_string());
        }
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(agents)
    }
}
