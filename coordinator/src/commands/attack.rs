//! `troop attack`: pick targets, build one signed command each, send, report.

use anyhow::Context as _;
use troop_coordinator::cli::{AttackCommand, KillArgs, Output, Targeting};
use troop_coordinator::config::AgentEntry;
use troop_coordinator::picker::{Pick, pick, rng_from_seed};
use troop_coordinator::signer::{Signer, new_command};
use troop_coordinator::table;
use troop_proto::freshness::DEFAULT_VALIDITY;
use troop_proto::pb;

use super::{Context, Outcome};
use crate::report::{self, Delivery};

pub async fn run(context: &Context, command: AttackCommand) -> anyhow::Result<Outcome> {
    match command {
        AttackCommand::Kill(args) => {
            let targets = pick_targets(context, &args.targeting)?;
            let action = start(pb::start_fault::Fault::Kill(kill_fault(&args)), 0);
            if args.targeting.dry_run {
                return Ok(dry_run(context.output, &targets, &action));
            }
            let deliveries = send(context, &targets, action).await?;
            Ok(report::print_deliveries(context.output, &deliveries))
        }
    }
}

fn start(fault: pb::start_fault::Fault, duration_ms: u64) -> pb::command::Action {
    pb::command::Action::Start(pb::StartFault {
        duration_ms,
        fault: Some(fault),
    })
}

pub fn kill_fault(args: &KillArgs) -> pb::Kill {
    use pb::process_match::By;
    let by = if let Some(name) = &args.name {
        By::Name(name.clone())
    } else if let Some(exe) = &args.exe {
        By::Exe(exe.clone())
    } else if let Some(pattern) = &args.pattern {
        By::CmdlinePattern(pattern.clone())
    } else if let Some(pid) = args.pid {
        By::Pid(pid)
    } else {
        // clap requires one of the five.
        By::User(args.user.clone().unwrap_or_default())
    };
    pb::Kill {
        target: Some(pb::ProcessMatch { by: Some(by) }),
        signal: args.signal,
        all_matches: args.all_matches,
        repeat_every_ms: 0,
    }
}

/// The selected agents, then `--count`/`--percent` of them at random (all without).
pub fn pick_targets(context: &Context, targeting: &Targeting) -> anyhow::Result<Vec<AgentEntry>> {
    let selected = context.select(&targeting.selector)?;
    let how = match (targeting.count, targeting.percent) {
        (Some(0), _) => anyhow::bail!("--count must be at least 1"),
        (Some(count), _) => Pick::Count(count),
        (None, Some(percent)) => Pick::Percent(percent),
        (None, None) => Pick::All,
    };
    Ok(pick(&selected, how, &mut rng_from_seed(targeting.seed)))
}

/// Signs `action` once per target with the configured key and sends them all.
pub async fn send(
    context: &Context,
    targets: &[AgentEntry],
    action: pb::command::Action,
) -> anyhow::Result<Vec<Delivery>> {
    let signer = Signer::load(&context.config.signing_key)
        .with_context(|| format!("config {}: [signing] key", context.config.path.display()))?;
    Ok(send_signed(context, &signer, targets, action).await)
}

/// Signs `action` once per target with `signer` and sends them all.
pub async fn send_signed(
    context: &Context,
    signer: &Signer,
    targets: &[AgentEntry],
    action: pb::command::Action,
) -> Vec<Delivery> {
    let work: Vec<(AgentEntry, pb::Command)> = targets
        .iter()
        .map(|agent| {
            (
                agent.clone(),
                new_command(&agent.id, action.clone(), DEFAULT_VALIDITY),
            )
        })
        .collect();
    let ids: Vec<String> = work.iter().map(|(_, c)| c.command_id.clone()).collect();
    let signed: Vec<(AgentEntry, pb::SignedCommand)> = work
        .into_iter()
        .map(|(agent, command)| {
            tracing::info!(agent = %agent.id, command_id = %command.command_id, action = %report::action_text(command.action.as_ref()), "sending command");
            (agent, signer.sign(&command))
        })
        .collect();
    let results = context
        .dispatcher
        .each(signed, |mut client, command| async move {
            client.execute(command).await
        })
        .await;
    results
        .into_iter()
        .zip(ids)
        .map(|((agent, result), command_id)| {
            match &result {
                Ok(receipt) => tracing::info!(agent = %agent.id, %command_id, summary = %receipt.summary, "applied"),
                Err(error) => tracing::debug!(agent = %agent.id, %command_id, error = %error, "not applied"),
            }
            Delivery {
                agent,
                command_id,
                result,
            }
        })
        .collect()
}

fn dry_run(output: Output, targets: &[AgentEntry], action: &pb::command::Action) -> Outcome {
    let commands: Vec<pb::Command> = targets
        .iter()
        .map(|agent| new_command(&agent.id, action.clone(), DEFAULT_VALIDITY))
        .collect();
    match output {
        Output::Json => {
            let commands: Vec<_> = commands.iter().map(report::command_json).collect();
            println!(
                "{}",
                serde_json::json!({ "dry_run": true, "commands": commands })
            );
        }
        Output::Table => {
            println!("dry run: nothing sent. {} target(s):", targets.len());
            let rows: Vec<Vec<String>> = targets
                .iter()
                .zip(&commands)
                .map(|(agent, command)| {
                    vec![
                        agent.id.clone(),
                        agent.address.clone(),
                        command.command_id.clone(),
                        report::action_text(command.action.as_ref()),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["AGENT", "ADDRESS", "COMMAND ID", "ACTION"], &rows)
            );
        }
    }
    Outcome::Success
}
