//! The rule text of a network fault, built from validated values only: an nftables table
//! for drops (loss, blackhole, rate, DNS) and an iptables mangle chain that sends packets
//! to the delay queue. Both start with the spared traffic, so nothing after can touch it.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use super::Family;

/// Traffic no fault may touch: the agent's own control path and, usually, SSH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spared {
    /// Ports the agent listens on (answers to direct calls leave from them).
    pub listen_ports: Vec<u16>,
    /// Coordinator endpoints the agent keeps streams to.
    pub coordinators: Vec<SocketAddr>,
    pub ssh: bool,
}

/// One destination a fault aims at: an address block, and the ports on it (none: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub net: Option<(IpAddr, u8)>,
    pub ports: Vec<u16>,
}

impl Destination {
    fn family(&self) -> Option<Family> {
        self.net.map(|(address, _)| match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        })
    }
}

/// What a fault's egress rules match: an interface (none: every one) and destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub interface: Option<String>,
    /// Never empty: "everything" is one destination without a net or ports.
    pub destinations: Vec<Destination>,
}

/// The drops of one fault, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub blackhole: bool,
    /// Out of 10,000 packets.
    pub loss_per_10000: u32,
    pub rate_bytes_per_second: u64,
    /// Queries to port 53, TCP and UDP, on every interface.
    pub dns: bool,
}

impl Drops {
    pub fn any(&self) -> bool {
        self.blackhole || self.loss_per_10000 > 0 || self.rate_bytes_per_second > 0 || self.dns
    }
}

/// Comments naming the counted rules, read back for the achieved effect.
pub const MATCHED: &str = "matched";
pub const BLACKHOLE: &str = "blackhole";
pub const LOSS: &str = "loss";
pub const RATE: &str = "rate";
pub const DNS: &str = "dns";
pub const DUPLICATE: &str = "duplicate";

fn nft_match(interface: Option<&str>, destination: &Destination) -> String {
    let mut text = String::new();
    if let Some(interface) = interface {
        let _ = write!(text, "oifname \"{interface}\" ");
    }
    match destination.net {
        Some((IpAddr::V4(address), prefix)) => {
            let _ = write!(text, "ip daddr {address}/{prefix} ");
        }
        Some((IpAddr::V6(address), prefix)) => {
            let _ = write!(text, "ip6 daddr {address}/{prefix} ");
        }
        None => {}
    }
    match destination.ports.as_slice() {
        [] => {}
        [port] => {
            let _ = write!(text, "meta l4proto {{ tcp, udp }} th dport {port} ");
        }
        ports => {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            let _ = write!(
                text,
                "meta l4proto {{ tcp, udp }} th dport {{ {} }} ",
                list.join(", ")
            );
        }
    }
    text
}

/// The spared traffic's rules; in a table of one family (`only`), that family's only.
fn nft_spared(spared: &Spared, only: Option<Family>) -> Vec<String> {
    let mut rules = Vec::new();
    for port in &spared.listen_ports {
        rules.push(format!("tcp sport {port} accept"));
    }
    let wanted = |address: &SocketAddr| match only {
        Some(family) => address.is_ipv4() == (family == Family::V4),
        None => true,
    };
    for coordinator in spared.coordinators.iter().filter(|c| wanted(c)) {
        let family = if coordinator.is_ipv4() { "ip" } else { "ip6" };
        rules.push(format!(
            "{family} daddr {} tcp dport {} accept",
            coordinator.ip(),
            coordinator.port()
        ));
    }
    if spared.ssh {
        rules.push("tcp dport 22 accept".into());
        rules.push("tcp sport 22 accept".into());
    }
    rules
}

/// The nft script that creates table `inet NAME` with the fault's drops.
pub fn nft_table(name: &str, spared: &Spared, egress: &Egress, drops: &Drops) -> String {
    let mut rules = nft_spared(spared, None);
    if drops.dns {
        rules.push(format!(
            "meta l4proto {{ tcp, udp }} th dport 53 counter drop comment \"{DNS}\""
        ));
    }
    for destination in &egress.destinations {
        let matched = nft_match(egress.interface.as_deref(), destination);
        if drops.blackhole || drops.loss_per_10000 > 0 || drops.rate_bytes_per_second > 0 {
            rules.push(format!("{matched}counter comment \"{MATCHED}\""));
        }
        if drops.blackhole {
            rules.push(format!("{matched}counter drop comment \"{BLACKHOLE}\""));
        }
        if drops.loss_per_10000 > 0 {
            rules.push(format!(
                "{matched}numgen random mod 10000 < {} counter drop comment \"{LOSS}\"",
                drops.loss_per_10000
            ));
        }
        if drops.rate_bytes_per_second > 0 {
            rules.push(format!(
                "{matched}limit rate over {} bytes/second counter drop comment \"{RATE}\"",
                drops.rate_bytes_per_second
            ));
        }
    }
    nft_script("inet", name, rules)
}

fn nft_script(family: &str, name: &str, rules: Vec<String>) -> String {
    let mut script = format!(
        "table {family} {name} {{\n  chain egress {{\n    type filter hook output priority 0; policy accept;\n"
    );
    for rule in rules {
        let _ = writeln!(script, "    {rule}");
    }
    script.push_str("  }\n}\n");
    script
}

/// The nft script of table `FAMILY NAME` that duplicates `per_10000` of the matched
/// packets of `family` (nft's `dup` exists per family only, not in `inet` tables): each
/// copy goes to the packet's own destination, out of the fault's interface.
pub fn nft_duplicate_table(
    family: Family,
    name: &str,
    spared: &Spared,
    egress: &Egress,
    per_10000: u32,
) -> Option<String> {
    let interface = egress.interface.as_deref()?;
    let mut rules = nft_spared(spared, Some(family));
    let keyword = family.nft();
    for destination in &egress.destinations {
        if destination.family().is_some_and(|f| f != family) {
            continue;
        }
        let matched = nft_match(Some(interface), destination);
        rules.push(format!(
            "{matched}numgen random mod 10000 < {per_10000} counter dup to {keyword} daddr device \"{interface}\" comment \"{DUPLICATE}\""
        ));
    }
    Some(nft_script(keyword, name, rules))
}

/// The families a fault's delay chain is needed in: those of its destinations, or both.
pub fn families(egress: &Egress) -> Vec<Family> {
    let mut families: Vec<Family> = egress
        .destinations
        .iter()
        .map(|destination| destination.family())
        .map(|family| family.map_or(vec![Family::V4, Family::V6], |f| vec![f]))
        .collect::<Vec<_>>()
        .concat();
    families.sort_by_key(|family| *family as u8);
    families.dedup();
    families
}

/// The iptables-restore script that makes mangle chain `chain`, sending the fault's
/// packets of `family` to NFQUEUE `queue`, and jumps to it first thing in OUTPUT.
/// `--queue-bypass`: with no one bound to the queue (the agent died) packets pass.
pub fn iptables_chain(
    family: Family,
    chain: &str,
    spared: &Spared,
    egress: &Egress,
    queue: u16,
) -> String {
    let mut rules = Vec::new();
    for port in &spared.listen_ports {
        rules.push(format!("-p tcp --sport {port} -j RETURN"));
    }
    for coordinator in &spared.coordinators {
        if coordinator.is_ipv4() == (family == Family::V4) {
            let prefix = if coordinator.is_ipv4() { 32 } else { 128 };
            rules.push(format!(
                "-d {}/{prefix} -p tcp --dport {} -j RETURN",
                coordinator.ip(),
                coordinator.port()
            ));
        }
    }
    if spared.ssh {
        rules.push("-p tcp --dport 22 -j RETURN".into());
        rules.push("-p tcp --sport 22 -j RETURN".into());
    }
    let target = format!("-j NFQUEUE --queue-num {queue} --queue-bypass");
    for destination in &egress.destinations {
        if destination.family().is_some_and(|f| f != family) {
            continue;
        }
        let mut matched = String::new();
        if let Some(interface) = &egress.interface {
            let _ = write!(matched, "-o {interface} ");
        }
        if let Some((address, prefix)) = destination.net {
            let _ = write!(matched, "-d {address}/{prefix} ");
        }
        if destination.ports.is_empty() {
            rules.push(format!("{matched}{target}"));
        } else {
            let ports: Vec<String> = destination.ports.iter().map(u16::to_string).collect();
            for protocol in ["tcp", "udp"] {
                rules.push(format!(
                    "{matched}-p {protocol} -m multiport --dports {} {target}",
                    ports.join(",")
                ));
            }
        }
    }
    let mut script = format!("*mangle\n:{chain} - [0:0]\n");
    for rule in rules {
        let _ = writeln!(script, "-A {chain} {rule}");
    }
    let _ = writeln!(script, "-I OUTPUT -j {chain}\nCOMMIT");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spared() -> Spared {
        Spared {
            listen_ports: vec![7000],
            coordinators: vec!["10.77.0.1:7443".parse().unwrap()],
            ssh: true,
        }
    }

    fn to_one_port() -> Egress {
        Egress {
            interface: Some("eth0".into()),
            destinations: vec![Destination {
                net: Some(("10.77.0.12".parse().unwrap(), 32)),
                ports: vec![8080],
            }],
        }
    }

    #[test]
    fn the_spared_traffic_comes_before_every_drop() {
        let drops = Drops {
            blackhole: true,
            loss_per_10000: 3000,
            ..Drops::default()
        };
        let script = nft_table("troop_x", &spared(), &to_one_port(), &drops);
        let lines: Vec<&str> = script.lines().map(str::trim).collect();
        let spare_end = lines.iter().rposition(|l| l.ends_with("accept")).unwrap();
        let first_drop = lines.iter().position(|l| l.contains("drop")).unwrap();
        assert!(spare_end < first_drop, "{script}");
        assert!(lines.contains(&"tcp sport 7000 accept"));
        assert!(lines.contains(&"ip daddr 10.77.0.1 tcp dport 7443 accept"));
        assert!(lines.contains(&"tcp dport 22 accept"));
        assert!(lines.contains(
            &"oifname \"eth0\" ip daddr 10.77.0.12/32 meta l4proto { tcp, udp } th dport 8080 numgen random mod 10000 < 3000 counter drop comment \"loss\""
        ));
    }

    #[test]
    fn ssh_is_not_spared_when_the_policy_says_so() {
        let spared = Spared {
            ssh: false,
            ..spared()
        };
        let script = nft_table(
            "t",
            &spared,
            &to_one_port(),
            &Drops {
                blackhole: true,
                ..Drops::default()
            },
        );
        assert!(!script.contains("22 accept"), "{script}");
        let chain = iptables_chain(Family::V4, "c", &spared, &to_one_port(), 29_000);
        assert!(!chain.contains("22 -j RETURN"), "{chain}");
    }

    #[test]
    fn a_dns_table_drops_port_53_on_every_interface() {
        let everything = Egress {
            interface: None,
            destinations: vec![Destination {
                net: None,
                ports: vec![],
            }],
        };
        let script = nft_table(
            "t",
            &Spared::default(),
            &everything,
            &Drops {
                dns: true,
                ..Drops::default()
            },
        );
        assert!(
            script.contains("meta l4proto { tcp, udp } th dport 53 counter drop comment \"dns\"")
        );
        assert!(!script.contains("oifname"));
    }

    #[test]
    fn duplicates_are_made_per_family_after_the_spared_traffic() {
        let script = nft_duplicate_table(Family::V4, "t", &spared(), &to_one_port(), 500).unwrap();
        assert!(script.starts_with("table ip t {"), "{script}");
        assert!(script.contains("ip daddr 10.77.0.1 tcp dport 7443 accept"));
        assert!(script.contains(
            "oifname \"eth0\" ip daddr 10.77.0.12/32 meta l4proto { tcp, udp } th dport 8080 numgen random mod 10000 < 500 counter dup to ip daddr device \"eth0\" comment \"duplicate\""
        ));
        let v6 = nft_duplicate_table(Family::V6, "t", &spared(), &to_one_port(), 500).unwrap();
        assert!(!v6.contains("10.77.0"), "{v6}");
    }

    #[test]
    fn the_delay_chain_queues_each_protocol_and_is_jumped_to_first() {
        let chain = iptables_chain(Family::V4, "troop-ab", &spared(), &to_one_port(), 29_001);
        assert!(chain.starts_with("*mangle\n:troop-ab - [0:0]\n"), "{chain}");
        assert!(chain.contains("-A troop-ab -d 10.77.0.1/32 -p tcp --dport 7443 -j RETURN"));
        assert!(chain.contains(
            "-A troop-ab -o eth0 -d 10.77.0.12/32 -p udp -m multiport --dports 8080 -j NFQUEUE --queue-num 29001 --queue-bypass"
        ));
        assert!(chain.ends_with("-I OUTPUT -j troop-ab\nCOMMIT\n"));
        assert_eq!(families(&to_one_port()), [Family::V4]);
    }

    #[test]
    fn everything_needs_both_families_and_v6_rules_skip_v4_coordinators() {
        let everything = Egress {
            interface: Some("eth0".into()),
            destinations: vec![Destination {
                net: None,
                ports: vec![],
            }],
        };
        assert_eq!(families(&everything), [Family::V4, Family::V6]);
        let chain = iptables_chain(Family::V6, "c", &spared(), &everything, 1);
        assert!(!chain.contains("10.77.0.1"), "{chain}");
        assert!(chain.contains("-A c -o eth0 -j NFQUEUE --queue-num 1 --queue-bypass"));
    }
}
