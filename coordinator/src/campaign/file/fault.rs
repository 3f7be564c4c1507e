//! A step's `fault` table checked kind by kind into the wire's fault: which keys each
//! kind takes, and each value in range.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use troop_common::units::{parse_fractional_percent, parse_percent, parse_rate, parse_size};
use troop_proto::pb;

use super::raw::{Problems, RawFault};

pub(super) fn check_fault(
    raw: &Spanned<RawFault>,
    duration: Duration,
    p: &mut Problems<'_>,
) -> Option<pb::start_fault::Fault> {
    use pb::start_fault::Fault;
    let f = raw.get_ref();
    let kind = f.kind.get_ref().as_str();
    // Which keys each kind accepts; any other key present is a mistake worth naming.
    let allowed: &[&str] = match kind {
        "kill" => &[
            "name",
            "exe",
            "pattern",
            "pid",
            "user",
            "signal",
            "all_matches",
            "repeat",
        ],
        "cpu" => &["load", "cores"],
        "memory" => &["size"],
        "disk" => &["path", "fill", "size"],
        "stop-host" => &["mode", "delay"],
        "network" => &NETWORK_KEYS,
        "dns" => &[],
        other => {
            p.at(
                f.kind.span(),
                format!(
                    "unknown fault kind {other:?}; known: kill, cpu, memory, disk, stop-host, network, dns"
                ),
            );
            return None;
        }
    };
    let present: [(&str, Option<Range<usize>>); 25] = [
        ("name", f.name.as_ref().map(Spanned::span)),
        ("exe", f.exe.as_ref().map(Spanned::span)),
        ("pattern", f.pattern.as_ref().map(Spanned::span)),
        ("pid", f.pid.as_ref().map(Spanned::span)),
        ("user", f.user.as_ref().map(Spanned::span)),
        ("signal", f.signal.as_ref().map(Spanned::span)),
        ("all_matches", f.all_matches.as_ref().map(Spanned::span)),
        ("repeat", f.repeat.as_ref().map(Spanned::span)),
        ("load", f.load.as_ref().map(Spanned::span)),
        ("cores", f.cores.as_ref().map(Spanned::span)),
        ("size", f.size.as_ref().map(Spanned::span)),
        ("path", f.path.as_ref().map(Spanned::span)),
        ("fill", f.fill.as_ref().map(Spanned::span)),
        ("mode", f.mode.as_ref().map(Spanned::span)),
        ("delay", f.delay.as_ref().map(Spanned::span)),
        ("latency", f.latency.as_ref().map(Spanned::span)),
        ("jitter", f.jitter.as_ref().map(Spanned::span)),
        ("loss", f.loss.as_ref().map(Spanned::span)),
        ("corrupt", f.corrupt.as_ref().map(Spanned::span)),
        ("duplicate", f.duplicate.as_ref().map(Spanned::span)),
        ("rate", f.rate.as_ref().map(Spanned::span)),
        ("blackhole", f.blackhole.as_ref().map(Spanned::span)),
        ("to", f.to.as_ref().map(Spanned::span)),
        ("port", f.port.as_ref().map(Spanned::span)),
        ("interface", f.interface.as_ref().map(Spanned::span)),
    ];
    let before = p.found.len();
    for (key, span) in &present {
        if let Some(span) = span
            && !allowed.contains(key)
        {
            p.at(
                span.clone(),
                format!("{key} does not apply to a {kind} fault"),
            );
        }
    }
    let holds = kind != "kill" && kind != "stop-host";
    if holds && duration.is_zero() {
        p.at(raw.span(), format!("a {kind} fault needs a step duration"));
    }
    let fault = match kind {
        "kill" => check_kill(f, raw.span(), duration, p).map(Fault::Kill),
        "cpu" => {
            let load = match &f.load {
                Some(load) => p.ranged(load, "load", 1..=100)?,
                None => {
                    p.at(raw.span(), "a cpu fault needs load (1 to 100)");
                    return None;
                }
            };
            let cores = match &f.cores {
                Some(cores) => p.ranged(cores, "cores", 1..=4096)?,
                None => 0,
            };
            Some(Fault::Cpu(pb::Cpu {
                load_percent: load as u32,
                cores: cores as u32,
            }))
        }
        "memory" => {
            let Some(size) = &f.size else {
                p.at(
                    raw.span(),
                    "a memory fault needs size (\"512MiB\" or \"25%\")",
                );
                return None;
            };
            let text = size.get_ref();
            let amount = if text.trim_end().ends_with('%') {
                parse_percent(text).map(|pct| pb::memory::Amount::Percent(u32::from(pct)))
            } else {
                parse_size(text).map(pb::memory::Amount::Bytes)
            };
            match amount {
                Ok(amount) => Some(Fault::Memory(pb::Memory {
                    amount: Some(amount),
                })),
                Err(error) => {
                    p.at(size.span(), format!("size: {error}"));
                    None
                }
            }
        }
        "disk" => {
            let Some(path) = &f.path else {
                p.at(raw.span(), "a disk fault needs path");
                return None;
            };
            if !path.get_ref().starts_with('/') {
                p.at(path.span(), "path must be absolute");
            }
            let amount = match (&f.fill, &f.size) {
                (Some(fill), None) => {
                    Some(pb::disk::Amount::FillPercent(
                        p.ranged(fill, "fill", 1..=100)? as u32,
                    ))
                }
                (None, Some(size)) => match parse_size(size.get_ref()) {
                    Ok(bytes) => Some(pb::disk::Amount::Bytes(bytes)),
                    Err(error) => {
                        p.at(size.span(), format!("size: {error}"));
                        None
                    }
                },
                _ => {
                    p.at(raw.span(), "a disk fault needs exactly one of fill or size");
                    None
                }
            };
            Some(Fault::Disk(pb::Disk {
                path: path.get_ref().clone(),
                amount: Some(amount?),
            }))
        }
        "network" => check_network(f, raw.span(), p).map(Fault::Network),
        "dns" => Some(Fault::Dns(pb::Dns {})),
        _ => {
            let mode = match f.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
                Some((_, "poweroff")) => pb::stop_host::Mode::Poweroff,
                Some((_, "reboot")) => pb::stop_host::Mode::Reboot,
                Some((_, "halt")) => pb::stop_host::Mode::Halt,
                Some((m, other)) => {
                    p.at(
                        m.span(),
                        format!("mode {other:?} is not poweroff, reboot or halt"),
                    );
                    return None;
                }
                None => {
                    p.at(raw.span(), "a stop-host fault needs mode");
                    return None;
                }
            };
            let delay = match &f.delay {
                Some(delay) => p.duration(delay, "delay")?,
                None => Duration::ZERO,
            };
            Some(Fault::StopHost(pb::StopHost {
                mode: mode as i32,
                delay_ms: delay.as_millis() as u64,
            }))
        }
    };
    if p.found.len() > before {
        return None;
    }
    fault
}

const NETWORK_KEYS: [&str; 10] = [
    "latency",
    "jitter",
    "loss",
    "corrupt",
    "duplicate",
    "rate",
    "blackhole",
    "to",
    "port",
    "interface",
];

/// A network fault's keys, as `troop attack network` takes them: `latency = "100ms"`,
/// `loss = "30%"` (or `30`), `rate = "10mbit"`, `to = ["10.0.2.0/24"]`, `port = [5432]`.
fn check_network(f: &RawFault, span: Range<usize>, p: &mut Problems<'_>) -> Option<pb::Network> {
    let before = p.found.len();
    let millis = |value: &Option<Spanned<String>>, key: &str, p: &mut Problems<'_>| {
        value
            .as_ref()
            .and_then(|v| p.duration(v, key))
            .map_or(0, |d| d.as_millis() as u64)
    };
    let latency_ms = millis(&f.latency, "latency", p);
    let jitter_ms = millis(&f.jitter, "jitter", p);
    let mut percent = |value: &Option<Spanned<toml::Value>>, key: &str| -> f64 {
        let Some(value) = value else {
            return 0.0;
        };
        let text = match value.get_ref() {
            toml::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        parse_fractional_percent(&text).unwrap_or_else(|error| {
            p.at(value.span(), format!("{key}: {error}"));
            0.0
        })
    };
    let loss_percent = percent(&f.loss, "loss");
    let corrupt_percent = percent(&f.corrupt, "corrupt");
    let duplicate_percent = percent(&f.duplicate, "duplicate");
    let rate_bits_per_second = match &f.rate {
        Some(rate) => parse_rate(rate.get_ref()).unwrap_or_else(|error| {
            p.at(rate.span(), format!("rate: {error}"));
            0
        }),
        None => 0,
    };
    let blackhole = f.blackhole.as_ref().is_some_and(|b| *b.get_ref());
    let mut ports = Vec::new();
    for port in f.port.as_ref().map_or(&[][..], |ports| ports.get_ref()) {
        match u16::try_from(*port) {
            Ok(port) if port > 0 => ports.push(u32::from(port)),
            _ => p.at(
                f.port.as_ref().map_or(span.clone(), Spanned::span),
                format!("port {port} is not 1 to 65535"),
            ),
        }
    }
    let effects = latency_ms > 0
        || loss_percent > 0.0
        || corrupt_percent > 0.0
        || duplicate_percent > 0.0
        || rate_bits_per_second > 0
        || blackhole;
    if !effects && p.found.len() == before {
        p.at(
            span,
            "a network fault needs at least one of latency, loss, corrupt, duplicate, rate or blackhole",
        );
    }
    if jitter_ms > 0 && latency_ms == 0 {
        p.at(
            f.jitter.as_ref().map_or(0..0, Spanned::span),
            "jitter needs a latency",
        );
    }
    Some(pb::Network {
        interface: f
            .interface
            .as_ref()
            .map_or(String::new(), |i| i.get_ref().clone()),
        to: f.to.as_ref().map_or(Vec::new(), |to| to.get_ref().clone()),
        ports,
        latency_ms,
        jitter_ms,
        loss_percent,
        corrupt_percent,
        duplicate_percent,
        rate_bits_per_second,
        blackhole,
    })
}

fn check_kill(
    f: &RawFault,
    span: Range<usize>,
    duration: Duration,
    p: &mut Problems<'_>,
) -> Option<pb::Kill> {
    use pb::process_match::By;
    let targets = [
        f.name.as_ref().map(|v| By::Name(v.get_ref().clone())),
        f.exe.as_ref().map(|v| By::Exe(v.get_ref().clone())),
        f.pattern
            .as_ref()
            .map(|v| By::CmdlinePattern(v.get_ref().clone())),
        f.pid.as_ref().map(|v| By::Pid(*v.get_ref() as i32)),
        f.user.as_ref().map(|v| By::User(v.get_ref().clone())),
    ];
    let mut chosen = targets.into_iter().flatten();
    let (Some(by), None) = (chosen.next(), chosen.next()) else {
        p.at(
            span,
            "a kill fault needs exactly one of name, exe, pattern, pid or user",
        );
        return None;
    };
    let signal = match &f.signal {
        Some(signal) => match crate::signal::parse_signal(signal.get_ref()) {
            Ok(signal) => signal,
            Err(error) => {
                p.at(signal.span(), error);
                return None;
            }
        },
        None => 9,
    };
    let repeat = match &f.repeat {
        Some(repeat) => {
            let every = p.duration(repeat, "repeat")?;
            if duration.is_zero() {
                p.at(repeat.span(), "a repeating kill needs a step duration");
            }
            every.as_millis() as u64
        }
        None => {
            if !duration.is_zero() {
                p.at(
                    span,
                    "a kill without repeat is over at once; drop the step duration or add repeat",
                );
            }
            0
        }
    };
    Some(pb::Kill {
        target: Some(pb::ProcessMatch { by: Some(by) }),
        signal,
        all_matches: f.all_matches.as_ref().is_some_and(|a| *a.get_ref()),
        repeat_every_ms: repeat,
    })
}
