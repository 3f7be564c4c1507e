//! The CLI's commands. Each returns an [`Outcome`] (exit 0 or 1) or an error (exit 2).

pub mod attack;
pub mod audit;
pub mod campaign;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod lease;
pub mod pki;
pub mod serve;

use std::path::Path;

use crate::cli::{CampaignCommand, FleetCommand, Output};
use anyhow::{Context as _, bail};
use troop_coordinator::client::Dialer;
use troop_coordinator::config::{AgentEntry, CoordinatorConfig};
use troop_coordinator::dispatch::{CONNECT_TIMEOUT, CallError, Dispatcher};
use troop_coordinator::selector::Selector;
use troop_proto::pb;

pub use crate::outcome::Outcome;

/// What the fleet commands share: the config, a way to reach agents, the output format.
#[derive(Clone)]
pub struct Context {
    pub config: CoordinatorConfig,
    pub dispatcher: Dispatcher,
    pub output: Output,
}

impl Context {
    pub fn load(explicit: Option<&Path>, output: Output) -> anyhow::Result<Self> {
        let path = CoordinatorConfig::locate(explicit)?;
        let config = CoordinatorConfig::load(&path)?;
        let dialer = Dialer::new(&config.tls, CONNECT_TIMEOUT)
            .with_context(|| format!("config {}: [tls]", path.display()))?;
        Ok(Self {
            config,
            dispatcher: Dispatcher::new(dialer),
            output,
        })
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

pub async fn run(context: Context, command: FleetCommand) -> anyhow::Result<Outcome> {
    match command {
        FleetCommand::Agents(args) => fleet::agents(&context, &args.selector).await,
        FleetCommand::Status(args) => fleet::status(&context, &args.selector).await,
        FleetCommand::Halt(args) => fleet::halt(&context, &args.selector).await,
        FleetCommand::Attack(attack) => attack::run(&context, attack).await,
    }
}

pub async fn run_campaign_command(
    config: Option<&Path>,
    output: Output,
    command: CampaignCommand,
) -> anyhow::Result<Outcome> {
    match command {
        CampaignCommand::Validate { file } => campaign::validate(&file, output),
        CampaignCommand::Plan { file, days } => {
            // The fleet config only adds the groups; a plan works without it.
            let context = Context::load(config, output).ok();
            campaign::plan(context.as_ref(), &file, days, output)
        }
        CampaignCommand::Run { file, dry_run } => {
            campaign::run(&Context::load(config, output)?, &file, dry_run).await
        }
        CampaignCommand::History => campaign::history(&Context::load(config, output)?),
        CampaignCommand::Show { run } => campaign::show(&Context::load(config, output)?, run),
    }
}
