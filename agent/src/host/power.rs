//! Stopping the host: sync, then reboot(2).
//!
//! Inside a child PID namespace reboot(2) ends only that namespace (the kernel kills its
//! pid 1), which is how tests stop a lab host without touching the machine.

use nix::sys::reboot::{RebootMode, reboot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Poweroff,
    Reboot,
    Halt,
}

impl StopMode {
    pub fn name(self) -> &'static str {
        match self {
            StopMode::Poweroff => "poweroff",
            StopMode::Reboot => "reboot",
            StopMode::Halt => "halt",
        }
    }
}

/// Flushes filesystems and stops the host. Returns only if the kernel refused.
pub fn stop(mode: StopMode) -> nix::Error {
    nix::unistd::sync();
    let mode = match mode {
        StopMode::Poweroff => RebootMode::RB_POWER_OFF,
        StopMode::Reboot => RebootMode::RB_AUTOBOOT,
        StopMode::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    match reboot(mode) {
        Err(error) => error,
        Ok(never) => match never {},
    }
}
