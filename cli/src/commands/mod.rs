//! The CLI's commands. Each returns an [`Outcome`] (exit 0 or 1) or an error (exit 2).

pub mod attack;
pub mod campaign;
pub mod config;
pub mod context;
pub mod demo;
pub mod fleet;
pub mod lease;
pub mod pki;
pub mod serve;

use std::path::Path;

use crate::cli::{CampaignCommand, FleetCommand, Output};
use crate::outcome::Outcome;
use context::Context;

pub async fn run(context: Context, command: FleetCommand) -> anyhow::Result<Outcome> {
    match command {
        FleetCommand::Agents(args) => fleet::agents(&context, &args.selector).await,
        FleetCommand::Status(args) => fleet::status(&context, &args.selector).await,
        FleetCommand::Halt(args) => fleet::halt(&context, &args.selector).await,
        FleetCommand::EmergencyStop(args) => fleet::latch(&context, true, &args.reason).await,
        FleetCommand::Resume(args) => fleet::latch(&context, false, &args.reason).await,
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
            let context = Context::connect(config, output).await?;
            campaign::run(&context, &file, dry_run).await
        }
        CampaignCommand::History => {
            let context = Context::load(config, output)?;
            campaign::history(&context).await
        }
        CampaignCommand::Show { run, svg } => {
            let context = Context::load(config, output)?;
            campaign::show(&context, run, svg.as_deref()).await
        }
    }
}
