//! Which network effects this host can make, found once: the tools present and the
//! kernel features they need. A fault asking for one it cannot make is refused at once.
//!
//! No effect needs netem (many microVM and minimal cloud kernels lack it): latency and
//! corruption come from an NFQUEUE the agent serves, duplication from nft's `dup`, the
//! rest from nftables drops.

use std::path::Path;
use std::sync::OnceLock;

use troop_proto::{Refusal, pb};

use super::{Family, run};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    pub nft: bool,
    pub iptables: bool,
    pub ip6tables: bool,
    /// The kernel's nfnetlink_queue (built in or loaded).
    pub queue: bool,
    /// nft's `dup` statement, as a dry run (`nft --check`) accepts it.
    pub dup: bool,
}

/// What this host has, looked at on first use.
pub fn host() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let works = |program: &str| run(program, &["--version"], None).is_ok();
        let nft = works("nft");
        Support {
            nft,
            iptables: works("iptables-restore") && works("iptables"),
            ip6tables: works("ip6tables-restore") && works("ip6tables"),
            queue: Path::new("/proc/net/netfilter/nfnetlink_queue").exists(),
            dup: nft && dup_accepted(),
        }
    })
}

/// Whether the kernel takes a `dup` rule: checked in a transaction that is never
/// committed, so nothing is created.
fn dup_accepted() -> bool {
    let probe = "table ip troop_probe {\n  chain egress {\n    type filter hook output priority 0; policy accept;\n    ip daddr 127.0.0.1 dup to 127.0.0.1\n  }\n}\n";
    run("nft", &["--check", "-f", "-"], Some(probe)).is_ok()
}

/// An effect and what it needs, when missing.
struct Need {
    effect: &'static str,
    missing: Option<&'static str>,
}

impl Support {
    pub fn family(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.iptables,
            Family::V6 => self.ip6tables,
        }
    }

    fn queue_missing(&self) -> Option<&'static str> {
        if !self.queue {
            Some("needs the kernel's nfnetlink_queue (NFQUEUE)")
        } else if !self.iptables {
            Some("needs iptables with the NFQUEUE target")
        } else {
            None
        }
    }

    fn needs(&self) -> [Need; 7] {
        let nft = (!self.nft).then_some("needs nftables (nft)");
        let dup = if self.dup {
            None
        } else {
            nft.or(Some("needs the kernel's nft dup (nft_dup_ipv4)"))
        };
        let queue = self.queue_missing();
        [
            Need {
                effect: "latency",
                missing: queue,
            },
            Need {
                effect: "corrupt",
                missing: queue,
            },
            Need {
                effect: "duplicate",
                missing: dup,
            },
            Need {
                effect: "loss",
                missing: nft,
            },
            Need {
                effect: "blackhole",
                missing: nft,
            },
            Need {
                effect: "rate",
                missing: nft,
            },
            Need {
                effect: "dns",
                missing: nft,
            },
        ]
    }

    /// Effects this host can make, and each one it cannot with why.
    pub fn summary(&self) -> pb::NetworkSupport {
        let mut summary = pb::NetworkSupport::default();
        for need in self.needs() {
            match need.missing {
                None => summary.effects.push(need.effect.to_string()),
                Some(why) => summary.unavailable.push(format!("{}: {why}", need.effect)),
            }
        }
        summary
    }

    fn refuse(&self, effect: &str) -> Result<(), Refusal> {
        match self.needs().iter().find(|need| need.effect == effect) {
            Some(Need {
                missing: Some(why), ..
            }) => Err(Refusal::Unimplemented(format!(
                "this host cannot make {effect}: it {why}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses, as UNIMPLEMENTED naming what is missing, an effect this host cannot make.
    pub fn check(&self, request: &pb::Network) -> Result<(), Refusal> {
        let asked = [
            ("latency", request.latency_ms > 0),
            ("corrupt", request.corrupt_percent > 0.0),
            ("duplicate", request.duplicate_percent > 0.0),
            ("loss", request.loss_percent > 0.0),
            ("blackhole", request.blackhole),
            ("rate", request.rate_bits_per_second > 0),
        ];
        for (effect, _) in asked.iter().filter(|(_, asked)| *asked) {
            self.refuse(effect)?;
        }
        Ok(())
    }

    pub fn check_dns(&self) -> Result<(), Refusal> {
        self.refuse("dns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_missing_is_named_for_each_effect_it_takes() {
        let bare = Support {
            nft: true,
            iptables: true,
            ip6tables: true,
            queue: false,
            dup: false,
        };
        let summary = bare.summary();
        assert_eq!(summary.effects, ["loss", "blackhole", "rate", "dns"]);
        assert!(summary.unavailable[0].starts_with("latency: needs the kernel's nfnetlink_queue"));
        assert!(summary.unavailable[2].contains("nft_dup_ipv4"));
        let corrupt = pb::Network {
            corrupt_percent: 1.0,
            ..pb::Network::default()
        };
        let refused = bare.check(&corrupt).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert!(refused.to_string().contains("nfnetlink_queue"), "{refused}");
        let no_nft = Support { nft: false, ..bare };
        assert!(
            no_nft
                .check_dns()
                .unwrap_err()
                .to_string()
                .contains("nftables")
        );
    }
}
