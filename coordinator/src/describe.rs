//! Commands and their results in words: one line per action for people and the audit
//! trail, a fault as fields for scripts, and the outcome word every report uses.

use std::time::Duration;

use serde_json::{Value, json};
use troop_common::units::{format_duration, format_size};
use troop_proto::pb;

use crate::dispatch::CallError;

/// `applied`, `refused`, `unreachable`, `unknown` (timed out: it may have run) or `failed`.
pub fn outcome_word(result: &Result<pb::Receipt, CallError>) -> &'static str {
    match result {
        Ok(_) => "applied",
        Err(error) if error.is_refusal() => "refused",
        Err(CallError::Unreachable(_)) => "unreachable",
        Err(CallError::TimedOut(_)) => "unknown",
        Err(_) => "failed",
    }
}

/// One line describing an action, e.g. `kill name "nginx" with signal 9 (one match)`.
pub fn action_text(action: Option<&pb::command::Action>) -> String {
    use pb::command::Action;
    match action {
        None => "nothing".into(),
        Some(Action::AbortAll(_)) => "abort every active fault".into(),
        Some(Action::Abort(abort)) => format!("abort fault {}", abort.fault_id),
        Some(Action::EmergencyStop(stop)) => format!(
            "emergency stop by {}: revert every fault and latch ({})",
            stop.by, stop.reason
        ),
        Some(Action::Resume(resume)) => {
            format!(
                "resume by {}: lift the latch ({})",
                resume.by, resume.reason
            )
        }
        Some(Action::Trust(trust)) => format!(
            "trust signing-key generation {}: {}",
            trust.generation,
            trust
                .public_keys
                .iter()
                .map(|raw| troop_proto::raw_public_key(raw)
                    .map_or_else(|_| "?".to_string(), |key| troop_proto::key_id(&key)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Action::Renew(renew)) => {
            format!(
                "renew the lease of {} for {} ms",
                renew.fault_id, renew.lease_ms
            )
        }
        Some(Action::Start(start)) => {
            let mut text = fault_text(start.fault.as_ref());
            if start.duration_ms > 0 {
                text.push_str(&format!(
                    " for {}",
                    format_duration(Duration::from_millis(start.duration_ms))
                ));
            }
            if start.lease_ms > 0 {
                text.push_str(&format!(
                    " (lease {})",
                    format_duration(Duration::from_millis(start.lease_ms))
                ));
            }
            text
        }
    }
}

/// A fault as fields named like the campaign file's keys (`kind`, `name`, `load`, ...),
/// for scripts: `campaign plan` and `campaign show --output json`.
pub fn fault_fields(fault: &pb::start_fault::Fault) -> Value {
    use pb::process_match::By;
    use pb::start_fault::Fault;
    match fault {
        Fault::Kill(kill) => {
            let mut value = json!({
                "kind": "kill",
                "signal": kill.signal,
                "all_matches": kill.all_matches,
            });
            match kill.target.as_ref().and_then(|t| t.by.as_ref()) {
                Some(By::Name(name)) => value["name"] = json!(name),
                Some(By::Exe(exe)) => value["exe"] = json!(exe),
                Some(By::CmdlinePattern(pattern)) => value["pattern"] = json!(pattern),
                Some(By::Pid(pid)) => value["pid"] = json!(pid),
                Some(By::User(user)) => value["user"] = json!(user),
                None => {}
            }
            if kill.repeat_every_ms > 0 {
                value["repeat_ms"] = json!(kill.repeat_every_ms);
            }
            value
        }
        Fault::Cpu(cpu) => json!({ "kind": "cpu", "load": cpu.load_percent, "cores": cpu.cores }),
        Fault::Memory(memory) => match memory.amount {
            Some(pb::memory::Amount::Bytes(bytes)) => {
                json!({ "kind": "memory", "size_bytes": bytes })
            }
            Some(pb::memory::Amount::Percent(percent)) => {
                json!({ "kind": "memory", "percent": percent })
            }
            None => json!({ "kind": "memory" }),
        },
        Fault::Disk(disk) => match disk.amount {
            Some(pb::disk::Amount::Bytes(bytes)) => {
                json!({ "kind": "disk", "path": disk.path, "size_bytes": bytes })
            }
            Some(pb::disk::Amount::FillPercent(fill)) => {
                json!({ "kind": "disk", "path": disk.path, "fill": fill })
            }
            None => json!({ "kind": "disk", "path": disk.path }),
        },
        Fault::StopHost(stop) => json!({
            "kind": "stop-host",
            "mode": pb::stop_host::Mode::try_from(stop.mode)
                .map_or("?", |mode| mode.as_str_name())
                .trim_start_matches("MODE_")
                .to_ascii_lowercase(),
            "delay_ms": stop.delay_ms,
        }),
        Fault::Network(network) => {
            let mut value = json!({ "kind": "network" });
            let set = |value: &mut Value, key: &str, field: Value, present: bool| {
                if present {
                    value[key] = field;
                }
            };
            set(
                &mut value,
                "interface",
                json!(network.interface),
                !network.interface.is_empty(),
            );
            set(&mut value, "to", json!(network.to), !network.to.is_empty());
            set(
                &mut value,
                "port",
                json!(network.ports),
                !network.ports.is_empty(),
            );
            set(
                &mut value,
                "latency_ms",
                json!(network.latency_ms),
                network.latency_ms > 0,
            );
            set(
                &mut value,
                "jitter_ms",
                json!(network.jitter_ms),
                network.jitter_ms > 0,
            );
            set(
                &mut value,
                "loss",
                json!(network.loss_percent),
                network.loss_percent > 0.0,
            );
            set(
                &mut value,
                "corrupt",
                json!(network.corrupt_percent),
                network.corrupt_percent > 0.0,
            );
            set(
                &mut value,
                "duplicate",
                json!(network.duplicate_percent),
                network.duplicate_percent > 0.0,
            );
            set(
                &mut value,
                "rate_bits",
                json!(network.rate_bits_per_second),
                network.rate_bits_per_second > 0,
            );
            set(&mut value, "blackhole", json!(true), network.blackhole);
            value
        }
        Fault::Dns(_) => json!({ "kind": "dns" }),
    }
}

fn fault_text(fault: Option<&pb::start_fault::Fault>) -> String {
    use pb::process_match::By;
    use pb::start_fault::Fault;
    match fault {
        None => "no fault".into(),
        Some(Fault::Kill(kill)) => {
            let target = match kill.target.as_ref().and_then(|t| t.by.as_ref()) {
                Some(By::Name(name)) => format!("name {name:?}"),
                Some(By::Exe(exe)) => format!("exe {exe:?}"),
                Some(By::CmdlinePattern(pattern)) => format!("pattern {pattern:?}"),
                Some(By::Pid(pid)) => format!("pid {pid}"),
                Some(By::User(user)) => format!("user {user:?}"),
                None => "no target".into(),
            };
            let how = if kill.all_matches {
                "every match"
            } else {
                "one match at random"
            };
            let repeat = match kill.repeat_every_ms {
                0 => String::new(),
                ms => format!(
                    ", again every {}",
                    format_duration(Duration::from_millis(ms))
                ),
            };
            format!("kill {target} with signal {} ({how}{repeat})", kill.signal)
        }
        Some(Fault::Cpu(cpu)) => match cpu.cores {
            0 => format!("cpu {}% on every core", cpu.load_percent),
            n => format!("cpu {}% on {n} core(s)", cpu.load_percent),
        },
        Some(Fault::Memory(memory)) => match memory.amount {
            Some(pb::memory::Amount::Bytes(bytes)) => format!("memory {}", format_size(bytes)),
            Some(pb::memory::Amount::Percent(percent)) => format!("memory {percent}% of the host"),
            None => "memory (no amount)".into(),
        },
        Some(Fault::Disk(disk)) => match disk.amount {
            Some(pb::disk::Amount::Bytes(bytes)) => {
                format!("disk: add {} in {}", format_size(bytes), disk.path)
            }
            Some(pb::disk::Amount::FillPercent(percent)) => {
                format!("disk: fill {} to {percent}%", disk.path)
            }
            None => format!("disk {} (no amount)", disk.path),
        },
        Some(Fault::StopHost(stop)) => {
            let mode = pb::stop_host::Mode::try_from(stop.mode)
                .map_or("?", |mode| mode.as_str_name())
                .trim_start_matches("MODE_")
                .to_ascii_lowercase();
            format!(
                "stop-host: {mode} after {}",
                format_duration(Duration::from_millis(stop.delay_ms))
            )
        }
        Some(Fault::Network(network)) => network_text(network),
        Some(Fault::Dns(_)) => "dns: the host's name resolution fails".into(),
    }
}

/// `network: latency +100ms ±10ms, loss 30% on eth0 to 10.0.2.0/24`.
fn network_text(network: &pb::Network) -> String {
    let effects = troop_proto::describe::network_effects(network);
    let mut text = format!("network: {effects}");
    if !network.interface.is_empty() {
        text.push_str(&format!(" on {}", network.interface));
    }
    if !network.to.is_empty() {
        text.push_str(&format!(" to {}", network.to.join(", ")));
    }
    if !network.ports.is_empty() {
        let ports: Vec<String> = network.ports.iter().map(u32::to_string).collect();
        text.push_str(&format!(" port {}", ports.join(", ")));
    }
    text
}

/// A Unix time in milliseconds as people read it: `2026-12-03 21:47:40 UTC`.
pub fn unix_ms_text(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| format!("{at_ms} ms after 1970"))
}
