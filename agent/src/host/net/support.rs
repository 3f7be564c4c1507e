//! Which network effects this host can make, found once: the tools present and whether
//! the kernel has netem. A fault asking for one it cannot make is refused at once.

use std::path::Path;
use std::sync::OnceLock;

use troop_proto::{Refusal, pb};

use super::{Family, run};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    pub nft: bool,
    pub iptables: bool,
    pub ip6tables: bool,
    pub netem: bool,
}

/// What this host has, looked at on first use.
pub fn host() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let works = |program: &str| run(program, &["--version"], None).is_ok();
        Support {
            nft: works("nft"),
            iptables: works("iptables-restore") && works("iptables"),
            ip6tables: works("ip6tables-restore") && works("ip6tables"),
            netem: kernel_has_netem(),
        }
    })
}

/// netem as a loadable module or built in, as the kernel's module lists say.
fn kernel_has_netem() -> bool {
    if Path::new("/sys/module/sch_netem").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let modules = Path::new("/lib/modules").join(release.trim());
    ["modules.dep", "modules.builtin"].iter().any(|list| {
        std::fs::read_to_string(modules.join(list)).is_ok_and(|text| text.contains("sch_netem"))
    })
}

impl Support {
    pub fn family(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.iptables,
            Family::V6 => self.ip6tables,
        }
    }

    /// Effects this host can make, and each one it cannot with why.
    pub fn summary(&self) -> pb::NetworkSupport {
        let mut effects = Vec::new();
        let mut unavailable = Vec::new();
        if self.iptables {
            effects.push("latency".to_string());
        } else {
            unavailable.push("latency: needs iptables with the NFQUEUE target".to_string());
        }
        for effect in ["loss", "blackhole", "rate", "dns"] {
            if self.nft {
                effects.push(effect.to_string());
            } else {
                unavailable.push(format!("{effect}: needs nftables (nft)"));
            }
        }
        for effect in ["corrupt", "duplicate"] {
            unavailable.push(format!("{effect}: {}", self.netem_missing()));
        }
        pb::NetworkSupport {
            effects,
            unavailable,
        }
    }

    fn netem_missing(&self) -> &'static str {
        if self.netem {
            "this troop version does not drive netem yet"
        } else {
            "needs the kernel's sch_netem, which this host lacks"
        }
    }

    /// Refuses, as UNIMPLEMENTED naming what is missing, an effect this host cannot make.
    pub fn check(&self, request: &pb::Network) -> Result<(), Refusal> {
        let missing = |effect: &str, why: &str| {
            Err(Refusal::Unimplemented(format!(
                "this host cannot make {effect}: {why}"
            )))
        };
        if request.corrupt_percent > 0.0 {
            return missing("corruption", self.netem_missing());
        }
        if request.duplicate_percent > 0.0 {
            return missing("duplication", self.netem_missing());
        }
        if request.latency_ms > 0 && !self.iptables {
            return missing("latency", "it needs iptables with the NFQUEUE target");
        }
        let drops =
            request.loss_percent > 0.0 || request.blackhole || request.rate_bits_per_second > 0;
        if drops && !self.nft {
            return missing(
                "loss, blackholes or rate limits",
                "they need nftables (nft)",
            );
        }
        Ok(())
    }

    pub fn check_dns(&self) -> Result<(), Refusal> {
        if self.nft {
            Ok(())
        } else {
            Err(Refusal::Unimplemented(
                "this host cannot fail DNS: it needs nftables (nft)".into(),
            ))
        }
    }
}
