//! `troop attack`: pick targets, build one signed command each, send, report.

use anyhow::Context as _;
use std::time::Duration;

use crate::cli::{AttackCommand, KillArgs, MemoryAmount, Output, StopMode, Targeting};
use troop_coordinator::config::AgentEntry;
use troop_coordinator::picker::{Pick, pick, rng_from_seed};
use troop_coordinator::signer::{Signer, new_command};
use troop_coordinator::table;
use troop_proto::freshness::DEFAULT_VALIDITY;
use troop_proto::pb;

use super::context::Context;
use super::lease::{self, Sender};
use crate::outcome::Outcome;
use crate::report::{self, Delivery};
use troop_coordinator::audit::{AdhocRun, Audit, send_even_unrecorded, send_recorded};
use troop_coordinator::store::StoreError;

pub async fn run(context: &Context, command: AttackCommand) -> anyhow::Result<Outcome> {
    use pb::start_fault::Fault;
    let (targeting, fault, duration, lease) = match &command {
        AttackCommand::Kill(args) => (
            &args.targeting,
            Fault::Kill(kill_fault(args)),
            args.duration,
            args.lease,
        ),
        AttackCommand::Cpu(args) => (
            &args.targeting,
            Fault::Cpu(pb::Cpu {
                load_percent: u32::from(args.load),
                cores: args.cores.unwrap_or(0),
            }),
            Some(args.holding.duration),
            args.holding.lease,
        ),
        AttackCommand::Memory(args) => (
            &args.targeting,
            Fault::Memory(pb::Memory {
                amount: Some(match args.size {
                    MemoryAmount::Bytes(bytes) => pb::memory::Amount::Bytes(bytes),
                    MemoryAmount::Percent(p) => pb::memory::Amount::Percent(u32::from(p)),
                }),
            }),
            Some(args.holding.duration),
            args.holding.lease,
        ),
        AttackCommand::Disk(args) => (
            &args.targeting,
            Fault::Disk(pb::Disk {
                path: args.path.clone(),
                amount: match (args.fill, args.size) {
                    (Some(percent), _) => Some(pb::disk::Amount::FillPercent(u32::from(percent))),
                    (None, size) => size.map(pb::disk::Amount::Bytes),
                },
            }),
            Some(args.holding.duration),
            args.holding.lease,
        ),
        AttackCommand::StopHost(args) => (
            &args.targeting,
            Fault::StopHost(pb::StopHost {
                mode: match args.mode {
                    StopMode::Poweroff => pb::stop_host::Mode::Poweroff,
                    StopMode::Reboot => pb::stop_host::Mode::Reboot,
                    StopMode::Halt => pb::stop_host::Mode::Halt,
                } as i32,
                delay_ms: millis(args.delay),
            }),
            None,
            None,
        ),
        AttackCommand::Network(args) => (
            &args.targeting,
            Fault::Network(pb::Network {
                interface: args.interface.clone().unwrap_or_default(),
                to: args.to.clone(),
                ports: args.ports.iter().map(|port| u32::from(*port)).collect(),
                latency_ms: args.latency.map_or(0, millis),
                jitter_ms: args.jitter.map_or(0, millis),
                loss_percent: args.loss.unwrap_or(0.0),
                corrupt_percent: args.corrupt.unwrap_or(0.0),
                duplicate_percent: args.duplicate.unwrap_or(0.0),
                rate_bits_per_second: args.rate.unwrap_or(0),
                blackhole: args.blackhole,
            }),
            Some(args.holding.duration),
            args.holding.lease,
        ),
        AttackCommand::Dns(args) => (
            &args.targeting,
            Fault::Dns(pb::Dns {}),
            Some(args.holding.duration),
            args.holding.lease,
        ),
    };
    if let AttackCommand::Kill(KillArgs {
        pattern: Some(pattern),
        ..
    }) = &command
    {
        regex::Regex::new(pattern).with_context(|| format!("--pattern {pattern:?}"))?;
    }
    let action = pb::command::Action::Start(pb::StartFault {
        duration_ms: duration.map_or(0, millis),
        lease_ms: lease.map_or(0, millis),
        fault: Some(fault),
    });
    let what = format!("attack {}", command.kind());
    if let Some(remote) = &context.fleet.remote {
        let (targets, picked) = pick_targets(context, targeting)?;
        if targeting.dry_run {
            let signer = format!("troop serve at {}", remote.address);
            return Ok(dry_run(
                context.output,
                &targets,
                &picked,
                None,
                &signer,
                &action,
            ));
        }
        let work = targets
            .iter()
            .map(|agent| (agent.clone(), action.clone()))
            .collect();
        let (run, deliveries) = remote
            .send(&what, picked.seed, None, lease.is_some(), work)
            .await?;
        let outcome = report::print_attack(context.output, &deliveries, Some(&picked));
        return Ok(match lease {
            Some(lease) => {
                let sender = Sender::Serve { remote, run };
                outcome.and(lease::hold(context, sender, &deliveries, lease).await?)
            }
            None => outcome,
        });
    }
    // Loaded for the dry run too, so it fails exactly where the real run would.
    let signer = context.fleet.signer()?;
    let (targets, picked) = pick_targets(context, targeting)?;
    if targeting.dry_run {
        let key_id = signer.key_id();
        let key = format!("key {key_id}");
        return Ok(dry_run(
            context.output,
            &targets,
            &picked,
            Some(&key_id),
            &key,
            &action,
        ));
    }
    // Like a campaign's: an attack that cannot be recorded is not sent.
    let run =
        AdhocRun::begin(&context.fleet, &what, picked.seed).context("audit store; nothing sent")?;
    let deliveries = send_signed(context, &signer, Some(run.audit()), &targets, action)
        .await
        .context("audit store; nothing sent")?;
    let outcome = report::print_attack(context.output, &deliveries, Some(&picked));
    let outcome = match lease {
        Some(lease) => {
            let sender = Sender::Signed {
                signer: &signer,
                audit: run.audit(),
            };
            outcome.and(lease::hold(context, sender, &deliveries, lease).await?)
        }
        None => outcome,
    };
    run.finish(&deliveries);
    Ok(outcome)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
        repeat_every_ms: args.repeat.map_or(0, millis),
    }
}

/// The selected agents, then `--count`/`--percent` of them at random (all without),
/// with the seed that made the picks (given, or drawn and shown so a run can be repeated).
pub fn pick_targets(
    context: &Context,
    targeting: &Targeting,
) -> anyhow::Result<(Vec<AgentEntry>, report::Picked)> {
    let selected = context.fleet.select(&targeting.selector)?;
    let how = match (targeting.count, targeting.percent) {
        (Some(0), _) => anyhow::bail!("--count must be at least 1"),
        (Some(count), _) => Pick::Count(count),
        (None, Some(percent)) => Pick::Percent(percent),
        (None, None) => Pick::All,
    };
    let seed = targeting.seed.unwrap_or_else(rand::random);
    let targets = pick(&selected, how, &mut rng_from_seed(Some(seed)));
    let picked = report::Picked {
        seed,
        asked: targeting.count,
        matched: selected.len(),
        picked: targets.len(),
    };
    Ok((targets, picked))
}

/// Signs `action` once per target with the configured key and sends them all, recorded
/// as the ad-hoc run `what` where the store can be opened (a halt goes out regardless).
pub async fn send(
    context: &Context,
    what: &str,
    targets: &[AgentEntry],
    action: pb::command::Action,
) -> anyhow::Result<Vec<Delivery>> {
    let work = targets
        .iter()
        .map(|agent| (agent.clone(), action.clone()))
        .collect();
    if let Some(remote) = &context.fleet.remote {
        return Ok(remote.send(what, 0, None, false, work).await?.1);
    }
    let signer = context.fleet.signer()?;
    let run = AdhocRun::begin(&context.fleet, what, 0)
        .inspect_err(|error| eprintln!("warning: audit store: {error}; sending anyway"))
        .ok();
    Ok(send_even_unrecorded(&context.fleet, &signer, run.as_ref(), work).await)
}

/// Signs `action` once per target with `signer` and sends them all, each recorded first
/// when `audit` says where.
pub async fn send_signed(
    context: &Context,
    signer: &Signer,
    audit: Option<Audit<'_>>,
    targets: &[AgentEntry],
    action: pb::command::Action,
) -> Result<Vec<Delivery>, StoreError> {
    let work = targets
        .iter()
        .map(|agent| (agent.clone(), action.clone()))
        .collect();
    send_recorded(&context.fleet, signer, audit, work, &serde_json::json!({})).await
}

fn dry_run(
    output: Output,
    targets: &[AgentEntry],
    picked: &report::Picked,
    key_id: Option<&str>,
    signed_by: &str,
    action: &pb::command::Action,
) -> Outcome {
    let commands: Vec<pb::Command> = targets
        .iter()
        .map(|agent| new_command(&agent.id, action.clone(), DEFAULT_VALIDITY))
        .collect();
    match output {
        Output::Json => {
            let commands: Vec<_> = commands.iter().map(report::command_json).collect();
            println!(
                "{}",
                serde_json::json!({
                    "dry_run": true,
                    "commands": commands,
                    "seed": picked.seed,
                    "shortfall": picked.shortfall(),
                    "key_id": key_id,
                })
            );
        }
        Output::Table => {
            picked.tell();
            println!(
                "dry run: nothing sent; would be signed by {}. {} target(s):",
                signed_by,
                targets.len()
            );
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
