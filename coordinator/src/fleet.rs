//! The fleet as the coordinator reaches it: its config (the agents, their labels) and a
//! dispatcher that sends to many agents at once. The campaign runner, halt, status and
//! every attack go through this one interface; the stream transport of agents that dial
//! in (issue 11) slots in behind it.

use std::path::Path;

use anyhow::{Context as _, bail};
use troop_proto::pb;

use crate::client::Dialer;
use crate::config::{AgentEntry, CoordinatorConfig};
use crate::dispatch::{CONNECT_TIMEOUT, CallError, Dispatcher};
use crate::selector::Selector;
use crate::signer::Signer;

#[derive(Clone)]
pub struct Fleet {
    pub config: CoordinatorConfig,
    pub dispatcher: Dispatcher,
}

impl Fleet {
    /// The fleet of the config at `explicit`, else where [`CoordinatorConfig::locate`]
    /// finds one.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let path = CoordinatorConfig::locate(explicit)?;
        let config = CoordinatorConfig::load(&path)?;
        let dialer = Dialer::new(&config.tls, CONNECT_TIMEOUT)
            .with_context(|| format!("config {}: [tls]", path.display()))?;
        Ok(Self {
            config,
            dispatcher: Dispatcher::new(dialer),
        })
    }

    /// The configured signing key.
    pub fn signer(&self) -> anyhow::Result<Signer> {
        Signer::load(&self.config.signing_key)
            .with_context(|| format!("config {}: [signing] key", self.config.path.display()))
    }

    /// Asks every one of `agents` for its status, concurrently.
    pub async fn statuses(
        &self,
        agents: &[AgentEntry],
    ) -> Vec<(AgentEntry, Result<pb::AgentStatus, CallError>)> {
        let work = agents.iter().map(|agent| (agent.clone(), ())).collect();
        self.dispatcher
            .each(work, |mut client, ()| async move {
                client.status(pb::StatusRequest {}).await
            })
            .await
    }

    /// The agents a selector matches, sorted by id so that seeded picks repeat.
    pub fn select(&self, selector: &Selector) -> anyhow::Result<Vec<AgentEntry>> {
        let mut agents: Vec<AgentEntry> = self
            .config
            .agents
            .iter()
            .filter(|agent| selector.matches(&agent.labels))
            .cloned()
            .collect();
        if agents.is_empty() {
            if self.config.agents.is_empty() {
                bail!(
                    "config {} lists no agents ([[agents]] id, address, labels)",
                    self.config.path.display()
                );
            }
            bail!("no agent matches selector {:?}", selector.to_string());
        }
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(agents)
    }
}
