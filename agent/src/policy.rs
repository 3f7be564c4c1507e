//! Local policy: what this host allows, whatever a coordinator asks. It is the last word,
//! so a compromised coordinator can do no more than every host allows.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use troop_proto::Refusal;

use troop_common::units::format_duration;

/// Processes an agent never signals unless its config says otherwise: losing them loses
/// the operator's way in, or the host's logging.
pub const DEFAULT_PROTECTED: &[&str] = &[
    "sshd",
    "systemd",
    "systemd-journal",
    "systemd-logind",
    "dbus-daemon",
    "troop-agent",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Cpu,
    Memory,
    Disk,
    StopHost,
    Network,
    Dns,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Cpu,
        FaultKind::Memory,
        FaultKind::Disk,
        FaultKind::StopHost,
        FaultKind::Network,
        FaultKind::Dns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Cpu => "cpu",
            FaultKind::Memory => "memory",
            FaultKind::Disk => "disk",
            FaultKind::StopHost => "stop-host",
            FaultKind::Network => "network",
            FaultKind::Dns => "dns",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                format!("unknown fault kind {text:?}; known: kill, cpu, memory, disk, stop-host, network, dns")
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub allow: BTreeSet<FaultKind>,
    pub max_duration: Duration,
    pub protected_processes: BTreeSet<String>,
    pub disk_paths: Vec<PathBuf>,
    pub max_disk_fill_percent: u8,
    pub max_memory_percent: u8,
    /// Interfaces network faults may touch; none unless listed.
    pub network_interfaces: Vec<String>,
    /// Loss of all network faults on one interface together; a blackhole counts as 100.
    pub max_loss_percent: u8,
    pub max_latency: Duration,
    /// Whether SSH (port 22) is spared by every network fault.
    pub network_spare_ssh: bool,
}

impl Default for Policy {
    /// Everything but stop-host and the network, for at most an hour, with the usual
    /// lifelines protected.
    fn default() -> Self {
        Self {
            allow: [
                FaultKind::Kill,
                FaultKind::Cpu,
                FaultKind::Memory,
                FaultKind::Disk,
            ]
            .into(),
            max_duration: Duration::from_secs(3600),
            protected_processes: DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect(),
            disk_paths: Vec::new(),
            max_disk_fill_percent: 95,
            max_memory_percent: 80,
            network_interfaces: Vec::new(),
            max_loss_percent: 100,
            max_latency: Duration::from_secs(5),
            network_spare_ssh: true,
        }
    }
}

impl Policy {
    pub fn check_allowed(&self, kind: FaultKind) -> Result<(), Refusal> {
        if self.allow.contains(&kind) {
            Ok(())
        } else {
            Err(Refusal::Policy(format!(
                "fault kind {kind} is not in this agent's policy.allow"
            )))
        }
    }

    pub fn check_duration(&self, duration: Duration) -> Result<(), Refusal> {
        if duration > self.max_duration {
            Err(Refusal::Policy(format!(
                "duration {} is past this agent's policy.max_duration of {}",
                format_duration(duration),
                format_duration(self.max_duration)
            )))
        } else {
            Ok(())
        }
    }

    /// The allowed fault kinds as a person reads them: `kill, cpu`.
    pub fn allowed_names(&self) -> String {
        self.allow
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn is_protected(&self, name: &str) -> bool {
        self.protected_processes.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_host_is_off_by_default() {
        let policy = Policy::default();
        assert!(policy.check_allowed(FaultKind::Kill).is_ok());
        let refusal = policy.check_allowed(FaultKind::StopHost).unwrap_err();
        assert!(refusal.to_string().contains("stop-host"));
    }

    #[test]
    fn durations_past_the_cap_are_refused() {
        let policy = Policy::default();
        assert!(policy.check_duration(Duration::from_secs(3600)).is_ok());
        let refusal = policy
            .check_duration(Duration::from_secs(7200))
            .unwrap_err();
        // In the units a person types, not milliseconds.
        assert!(
            refusal.to_string().contains("duration 2h is past"),
            "{refusal}"
        );
        assert!(
            refusal.to_string().contains("max_duration of 1h"),
            "{refusal}"
        );
    }

    #[test]
    fn fault_kinds_round_trip_by_name() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert!("nuke".parse::<FaultKind>().is_err());
    }
}
