//! Network faults: latency (with jitter), loss, blackholes and rate limits on one
//! interface's egress, and failed DNS, each checked against policy and against the
//! network faults already active, so that together they stay inside its caps.
//!
//! Drops live in an nftables table of the fault's own (`inet troop_<hash>`), duplication
//! in per-family tables of the same name (`ip`, `ip6`), latency and corruption in an
//! iptables mangle chain of its own (`troop-<hash>`) feeding the agent's NFQUEUE. All are
//! named from the fault id, journaled before they exist, and start with the spared
//! traffic: the agent's listen port, its coordinator streams and SSH.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use sha2::{Digest, Sha256};
use troop_proto::{Refusal, pb};

use super::engine::{Applied, Effect};
use super::journal::Undo;
use crate::host::net::nfqueue::{Delayer, Treatment};
use crate::host::net::rules::{self, Destination, Drops, Egress, Spared};
use crate::host::net::{self as netfilter, Family, NetworkLoad, support::Support};
use crate::policy::Policy;
use troop_common::units::format_duration;

/// At most this many `to` entries and ports in one fault.
const MAX_TARGETS: usize = 64;

/// What the agent's own control path is, to be spared by every network fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlPath {
    pub listen_port: Option<u16>,
    /// `host:port` of each coordinator the agent dials.
    pub coordinators: Vec<String>,
}

/// A validated network fault, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPlan {
    pub spared: Spared,
    pub egress: Egress,
    /// Latency and corruption, made by the agent's NFQUEUE.
    pub queue: Option<Treatment>,
    pub drops: Drops,
    /// Out of 10,000 matched packets.
    pub duplicate_per_10000: u32,
    pub load: Option<NetworkLoad>,
    /// What it does, for people: "latency 100ms ±10ms on eth0 to 10.77.0.12/32".
    pub description: String,
}

/// The rule names a fault owns, derived from its id (ids may be any text; names may not).
pub fn undo_for(fault_id: &str) -> Undo {
    let hash = hex::encode(&Sha256::digest(fault_id.as_bytes())[..6]);
    Undo::RemoveNetworkRules {
        table: format!("troop_{hash}"),
        chain: format!("troop-{hash}"),
    }
}

/// Interface names as the kernel allows them (1 to 15 bytes, no slash or space).
pub fn check_interface(name: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':');
    if name.is_empty() || name.len() > 15 || !name.chars().all(fine) {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(())
}

/// The interface of the host's default IPv4 route, from /proc/net/route.
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_string())
    })
}

/// Resolves the control path into what the rules spare.
fn spared(control: &ControlPath, policy: &Policy) -> Result<Spared, Refusal> {
    let mut coordinators = Vec::new();
    for coordinator in &control.coordinators {
        let addresses = coordinator.to_socket_addrs().map_err(|error| {
            Refusal::Unavailable(format!(
                "cannot resolve coordinator {coordinator} to spare its stream: {error}"
            ))
        })?;
        coordinators.extend(addresses);
    }
    coordinators.sort();
    coordinators.dedup();
    Ok(Spared {
        listen_ports: control.listen_port.into_iter().collect(),
        coordinators,
        ssh: policy.network_spare_ssh,
    })
}

fn percent(name: &str, value: f64) -> Result<f64, Refusal> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(Refusal::InvalidArgument(format!(
            "{name} {value} is not 0 to 100 percent"
        )));
    }
    Ok(value)
}

fn port(value: u32) -> Result<u16, Refusal> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| Refusal::InvalidArgument(format!("port {value} is not 1 to 65535")))
}

/// One `to` entry: CIDR, address, `address:port`, `[v6]:port`, `host` or `host:port`.
fn destinations(entry: &str, ports: &[u16]) -> Result<Vec<Destination>, Refusal> {
    let bad = |why: &str| Refusal::InvalidArgument(format!("to {entry:?}: {why}"));
    let with_ports = |own: Option<u16>| own.map_or_else(|| ports.to_vec(), |p| vec![p]);
    if let Some((address, prefix)) = entry.split_once('/') {
        let address: IpAddr = address.parse().map_err(|_| bad("not an address block"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad("the prefix length is out of range"))?;
        return Ok(vec![Destination {
            net: Some((address, prefix)),
            ports: ports.to_vec(),
        }]);
    }
    let single = |address: IpAddr, own: Option<u16>| Destination {
        net: Some((address, if address.is_ipv4() { 32 } else { 128 })),
        ports: with_ports(own),
    };
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(vec![single(address, None)]);
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        let own = port(u32::from(address.port())).map_err(|_| bad("port 0 is no port"))?;
        return Ok(vec![single(address.ip(), Some(own))]);
    }
    let (host, own) = match entry.rsplit_once(':') {
        Some((host, text)) => {
            let number: u32 = text.parse().map_err(|_| bad("the port is not a number"))?;
            let own = port(number).map_err(|_| bad("the port is not 1 to 65535"))?;
            (host, Some(own))
        }
        None => (entry, None),
    };
    let fine = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || host.len() > 253 || !host.chars().all(fine) {
        return Err(bad("neither an address, an address block nor a host name"));
    }
    let mut addresses: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|error| bad(&format!("cannot resolve {host}: {error}")))?
        .map(|address| address.ip())
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses.into_iter().map(|a| single(a, own)).collect())
}

/// Checks a network fault against this host, its policy and the network faults already
/// active (`active`), and plans its rules.
pub fn plan(
    request: &pb::Network,
    policy: &Policy,
    control: &ControlPath,
    support: &Support,
    active: &[NetworkLoad],
) -> Result<NetworkPlan, Refusal> {
    let loss = percent("loss", request.loss_percent)?;
    percent("corruption", request.corrupt_percent)?;
    percent("duplication", request.duplicate_percent)?;
    let latency = Duration::from_millis(request.latency_ms);
    let jitter = Duration::from_millis(request.jitter_ms);
    let effects = !latency.is_zero()
        || loss > 0.0
        || request.blackhole
        || request.rate_bits_per_second > 0
        || request.corrupt_percent > 0.0
        || request.duplicate_percent > 0.0;
    if !effects {
        return Err(Refusal::InvalidArgument(
            "a network fault needs at least one effect: latency, loss, corruption, duplication, rate or blackhole".into(),
        ));
    }
    if !jitter.is_zero() && jitter > latency {
        return Err(Refusal::InvalidArgument(format!(
            "jitter {} is more than the latency {}",
            format_duration(jitter),
            format_duration(latency)
        )));
    }
    if request.rate_bits_per_second > 0 && request.rate_bits_per_second < 8 {
        return Err(Refusal::InvalidArgument(
            "a rate under 8bit per second is no rate; use a blackhole".into(),
        ));
    }
    support.check(request)?;
    let interface = if request.interface.is_empty() {
        default_route_interface().ok_or_else(|| {
            Refusal::InvalidArgument(
                "no interface given and this host has no default route to take it from".into(),
            )
        })?
    } else {
        check_interface(&request.interface).map_err(Refusal::InvalidArgument)?;
        request.interface.clone()
    };
    if !policy.network_interfaces.contains(&interface) {
        return Err(Refusal::Policy(format!(
            "interface {interface} is not in this agent's policy.network_interfaces ({})",
            if policy.network_interfaces.is_empty() {
                "which lists none".to_string()
            } else {
                policy.network_interfaces.join(", ")
            }
        )));
    }
    if latency > policy.max_latency {
        return Err(Refusal::Policy(format!(
            "latency {} is past this agent's policy.max_latency of {}",
            format_duration(latency),
            format_duration(policy.max_latency)
        )));
    }
    let corrupt = request.corrupt_percent / 100.0;
    let loss_fraction = if request.blackhole {
        1.0
    } else {
        1.0 - (1.0 - loss / 100.0) * (1.0 - corrupt)
    };
    let on_interface = active.iter().filter(|load| load.interface == interface);
    let kept = on_interface
        .clone()
        .fold(1.0 - loss_fraction, |kept, load| kept * (1.0 - load.loss));
    let together = (1.0 - kept) * 100.0;
    if loss_fraction > 0.0 && together > f64::from(policy.max_loss_percent) + 1e-9 {
        return Err(Refusal::Policy(format!(
            "loss on {interface} would be {together:.1}% with the network faults already active there, past this agent's policy.max_loss_percent of {}% (corruption counts as loss, a blackhole as 100%)",
            policy.max_loss_percent
        )));
    }
    let queued = !latency.is_zero() || corrupt > 0.0;
    if queued && on_interface.clone().any(|load| load.queued) {
        return Err(Refusal::InvalidArgument(format!(
            "a latency or corruption fault is already active on {interface}; one at a time per interface (abort it first)"
        )));
    }
    if request.to.len() > MAX_TARGETS || request.ports.len() > MAX_TARGETS {
        return Err(Refusal::InvalidArgument(format!(
            "at most {MAX_TARGETS} `to` entries and {MAX_TARGETS} ports"
        )));
    }
    let ports = request
        .ports
        .iter()
        .map(|p| port(*p))
        .collect::<Result<Vec<u16>, _>>()?;
    let mut targets = Vec::new();
    for entry in &request.to {
        targets.extend(destinations(entry.trim(), &ports)?);
    }
    if request.to.is_empty() {
        targets.push(Destination { net: None, ports });
    }
    let egress = Egress {
        interface: Some(interface.clone()),
        destinations: targets,
    };
    if queued {
        for family in rules::families(&egress) {
            let named = egress.destinations.iter().any(|d| {
                d.net
                    .is_some_and(|(address, _)| address.is_ipv4() == (family == Family::V4))
            });
            if named && !support.family(family) {
                return Err(Refusal::Unimplemented(format!(
                    "this host cannot delay {family:?} packets: {} is missing",
                    if family == Family::V4 {
                        "iptables"
                    } else {
                        "ip6tables"
                    }
                )));
            }
        }
    }
    let drops = Drops {
        blackhole: request.blackhole,
        loss_per_10000: (loss * 100.0).round() as u32,
        rate_bytes_per_second: request.rate_bits_per_second / 8,
        dns: false,
    };
    let queue = queued.then_some(Treatment {
        delay: latency,
        jitter,
        corrupt_per_10000: (request.corrupt_percent * 100.0).round() as u32,
    });
    Ok(NetworkPlan {
        spared: spared(control, policy)?,
        description: describe(request, &egress),
        egress,
        queue,
        drops,
        duplicate_per_10000: (request.duplicate_percent * 100.0).round() as u32,
        load: Some(NetworkLoad {
            interface,
            loss: loss_fraction,
            queued,
        }),
    })
}

/// The DNS fault: queries to port 53 dropped on every interface.
pub fn plan_dns(
    policy: &Policy,
    control: &ControlPath,
    support: &Support,
) -> Result<NetworkPlan, Refusal> {
    support.check_dns()?;
    Ok(NetworkPlan {
        spared: spared(control, policy)?,
        egress: Egress {
            interface: None,
            destinations: Vec::new(),
        },
        queue: None,
        drops: Drops {
            dns: true,
            ..Drops::default()
        },
        duplicate_per_10000: 0,
        load: None,
        description: "DNS queries (port 53) dropped".into(),
    })
}

fn describe(request: &pb::Network, egress: &Egress) -> String {
    let mut text = troop_proto::describe::network_effects(request);
    if let Some(interface) = &egress.interface {
        text.push_str(&format!(" on {interface}"));
    }
    // The destinations as resolved here: what the rules really match.
    let targets: Vec<String> = egress
        .destinations
        .iter()
        .map(|destination| {
            let net = destination
                .net
                .map_or("any".to_string(), |(address, prefix)| {
                    format!("{address}/{prefix}")
                });
            match destination.ports.as_slice() {
                [] => net,
                ports => {
                    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                    format!("{net} port {}", ports.join(","))
                }
            }
        })
        .filter(|target| target != "any")
        .collect();
    if !targets.is_empty() {
        text.push_str(&format!(" to {}", targets.join(", ")));
    }
    text
}

/// Applies a plan under the names `undo` journaled; anything half made is taken down.
pub fn apply(plan: &NetworkPlan, undo: &Undo, support: &Support) -> Result<Applied, Refusal> {
    let Undo::RemoveNetworkRules { table, chain } = undo else {
        return Err(Refusal::Internal(
            "a network fault journaled no rule names".into(),
        ));
    };
    let mut effect = NetworkEffect {
        table: table.clone(),
        chain: chain.clone(),
        delayer: None,
        plan: plan.clone(),
    };
    let failed = |effect: &mut NetworkEffect, error: String| {
        let _ = effect.revert();
        Refusal::Internal(format!("cannot apply the network fault: {error}"))
    };
    if let Some(treatment) = plan.queue {
        let delayer = Delayer::start(treatment)
            .map_err(|error| Refusal::Internal(format!("cannot bind an NFQUEUE: {error}")))?;
        let queue = delayer.queue;
        effect.delayer = Some(delayer);
        for family in rules::families(&plan.egress) {
            if !support.family(family) {
                continue;
            }
            let script = rules::iptables_chain(family, chain, &plan.spared, &plan.egress, queue);
            if let Err(error) = netfilter::iptables_apply(family, &script) {
                return Err(failed(&mut effect, error));
            }
        }
    }
    if plan.drops.any() {
        let script = rules::nft_table(table, &plan.spared, &plan.egress, &plan.drops);
        if let Err(error) = netfilter::nft_apply(&script) {
            return Err(failed(&mut effect, error));
        }
    }
    if plan.duplicate_per_10000 > 0 {
        for family in rules::families(&plan.egress) {
            let per = plan.duplicate_per_10000;
            let script = rules::nft_duplicate_table(family, table, &plan.spared, &plan.egress, per);
            if let Some(script) = script
                && let Err(error) = netfilter::nft_apply(&script)
            {
                return Err(failed(&mut effect, error));
            }
        }
    }
    let summary = format!(
        "{}; spared: {}",
        plan.description,
        spared_text(&plan.spared)
    );
    Ok(Applied {
        effect: Box::new(effect),
        summary,
    })
}

fn spared_text(spared: &Spared) -> String {
    let mut parts: Vec<String> = spared
        .listen_ports
        .iter()
        .map(|port| format!("agent port {port}"))
        .collect();
    parts.extend(
        spared
            .coordinators
            .iter()
            .map(|c| format!("coordinator {c}")),
    );
    if spared.ssh {
        parts.push("ssh".into());
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Undoes the rules a fault owns (idempotent); used at revert and after a crash.
pub fn remove_rules(table: &str, chain: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for family in [Family::V4, Family::V6] {
        if let Err(error) = netfilter::iptables_delete_chain(family, chain) {
            errors.push(error);
        }
    }
    for family in ["inet", "ip", "ip6"] {
        if let Err(error) = netfilter::nft_delete_table(family, table) {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

struct NetworkEffect {
    table: String,
    chain: String,
    delayer: Option<Delayer>,
    plan: NetworkPlan,
}

impl Effect for NetworkEffect {
    fn effect(&self) -> String {
        let mut parts = vec![self.plan.description.clone()];
        if let Some(delayer) = &self.delayer {
            let (packets, mean) = delayer.held.summary();
            if self.plan.queue.is_some_and(|q| !q.delay.is_zero()) {
                parts.push(format!(
                    "{packets} packets delayed, mean {:.1}ms",
                    mean.as_secs_f64() * 1000.0
                ));
            }
            if self.plan.queue.is_some_and(|q| q.corrupt_per_10000 > 0) {
                let corrupted = delayer
                    .held
                    .corrupted
                    .load(std::sync::atomic::Ordering::Relaxed);
                parts.push(format!("{corrupted} of {packets} packets corrupted"));
            }
        }
        if self.plan.drops.any() {
            match netfilter::nft_counters("inet", &self.table) {
                Ok(counters) => parts.push(drop_text(&counters)),
                Err(error) => parts.push(format!("counters unreadable: {error}")),
            }
        }
        if self.plan.duplicate_per_10000 > 0 {
            let duplicated: u64 = rules::families(&self.plan.egress)
                .into_iter()
                .filter_map(|family| netfilter::nft_counters(family.nft(), &self.table).ok())
                .flatten()
                .filter(|(comment, _)| comment == rules::DUPLICATE)
                .map(|(_, packets)| packets)
                .sum();
            parts.push(format!("{duplicated} packets duplicated"));
        }
        parts.join("; ")
    }

    fn revert(&mut self) -> Result<(), String> {
        // The chain first, so nothing new is queued; then the held packets go.
        let removed = remove_rules(&self.table, &self.chain);
        if let Some(delayer) = self.delayer.take() {
            delayer.stop();
        }
        removed
    }

    fn network_load(&self) -> Option<NetworkLoad> {
        self.plan.load.clone()
    }
}

impl Drop for NetworkEffect {
    fn drop(&mut self) {
        let _ = self.revert();
    }
}

/// "312 of 1020 packets dropped (30.6%)", from the table's counted rules.
fn drop_text(counters: &[(String, u64)]) -> String {
    let sum = |name: &str| -> u64 {
        counters
            .iter()
            .filter(|(comment, _)| comment == name)
            .map(|(_, packets)| packets)
            .sum()
    };
    let matched = sum(rules::MATCHED);
    let dropped: u64 = [rules::BLACKHOLE, rules::LOSS, rules::RATE, rules::DNS]
        .iter()
        .map(|name| sum(name))
        .sum();
    if matched == 0 {
        return format!("{dropped} packets dropped");
    }
    format!(
        "{dropped} of {matched} packets dropped ({:.1}%)",
        dropped as f64 * 100.0 / matched as f64
    )
}

#[cfg(test)]
mod tests;
