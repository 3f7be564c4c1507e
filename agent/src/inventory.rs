//! What the host is. Status answers from a copy refreshed in the background, so it never
//! waits on the host: a mount that does not answer statvfs (a hard NFS mount whose
//! server is gone, a stuck FUSE daemon) blocks only the thread that asked it, for at most
//! [`MOUNT_TIMEOUT`], and is then shown as not answering until it does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sysinfo::{MemoryRefreshKind, RefreshKind, System};
use troop_common::observe::Usage;
use troop_proto::pb;

/// How long one statvfs may take before its mount is reported as not answering.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// The host's inventory as last read, and the mounts a statvfs is still waiting on.
#[derive(Debug, Default)]
pub struct Inventory {
    latest: Mutex<pb::Inventory>,
    asking: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Inventory {
    /// Reads the host once (bounded by [`MOUNT_TIMEOUT`] per refresh).
    pub fn new() -> Self {
        let inventory = Self::default();
        inventory.refresh();
        inventory
    }

    /// The last reading, with memory read now (one read of /proc/meminfo).
    pub fn current(&self) -> pb::Inventory {
        let mut inventory = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let system = memory();
        inventory.memory_total_bytes = system.total_memory();
        inventory.memory_available_bytes = system.available_memory();
        inventory.uptime_seconds = System::uptime();
        inventory
    }

    /// Reads everything again; blocks its caller for at most about [`MOUNT_TIMEOUT`].
    pub fn refresh(&self) {
        let system = memory();
        let inventory = pb::Inventory {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
            kernel: System::kernel_version().unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
            memory_total_bytes: system.total_memory(),
            memory_available_bytes: system.available_memory(),
            disks: self.disks(),
            uptime_seconds: System::uptime(),
            network: Some(crate::host::net::support::host().summary()),
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = inventory;
    }

    /// Every storage mount, each asked on its own thread, all within one deadline.
    fn disks(&self) -> Vec<pb::DiskInfo> {
        let mounts = std::fs::read_to_string("/proc/thread-self/mounts").unwrap_or_default();
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let asked: Vec<_> = storage_mounts(&mounts)
            .map(|(mount_point, filesystem)| {
                let answer = self.ask(&mount_point);
                (mount_point, filesystem, answer)
            })
            .collect();
        asked
            .into_iter()
            .map(|(mount_point, filesystem, answer)| {
                let usage = match answer {
                    Some(answer) => answer
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "did not answer statvfs within {}",
                                troop_common::units::format_duration(MOUNT_TIMEOUT)
                            ))
                        }),
                    None => Err("still not answering an earlier statvfs".into()),
                };
                let (total_bytes, available_bytes, unavailable) = match usage {
                    Ok(usage) => (usage.total, usage.available, String::new()),
                    Err(why) => (0, 0, why),
                };
                pb::DiskInfo {
                    mount_point: mount_point.display().to_string(),
                    filesystem,
                    total_bytes,
                    available_bytes,
                    unavailable,
                }
            })
            .collect()
    }

    /// Starts a statvfs of `mount_point` on its own thread, unless one is still stuck
    /// there (then `None`: a dead mount costs one thread, not one per refresh).
    fn ask(&self, mount_point: &Path) -> Option<mpsc::Receiver<Result<Usage, String>>> {
        if !self
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mount_point.to_path_buf())
        {
            return None;
        }
        let (send, answer) = mpsc::channel();
        let (asking, path) = (self.asking.clone(), mount_point.to_path_buf());
        let spawned = std::thread::Builder::new()
            .name("troop-statvfs".into())
            .spawn(move || {
                let usage = troop_common::observe::usage(&path).map_err(|e| e.to_string());
                asking
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&path);
                let _ = send.send(usage);
            });
        if spawned.is_err() {
            self.asking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(mount_point);
            return None;
        }
        Some(answer)
    }
}

fn memory() -> System {
    System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
}

/// The host's memory in bytes (one read of /proc/meminfo; no mount is touched).
pub fn memory_total_bytes() -> u64 {
    memory().total_memory()
}

/// Mounts that hold files (not the kernel's pseudo filesystems), from a mounts table.
fn storage_mounts(table: &str) -> impl Iterator<Item = (PathBuf, String)> + '_ {
    table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (source, mount_point, filesystem) = (fields.next()?, fields.next()?, fields.next()?);
        let mount_point = unescape(mount_point);
        let pseudo = matches!(
            filesystem,
            "rootfs"
                | "sysfs"
                | "proc"
                | "devtmpfs"
                | "devpts"
                | "cgroup"
                | "cgroup2"
                | "pstore"
                | "bpf"
                | "tracefs"
                | "debugfs"
                | "securityfs"
                | "configfs"
                | "fusectl"
                | "mqueue"
                | "hugetlbfs"
                | "binfmt_misc"
                | "rpc_pipefs"
                | "nsfs"
                | "autofs"
                | "squashfs"
                | "iso9660"
                | "efivarfs"
                | "tmpfs"
        );
        let system_dir = ["/sys", "/proc", "/dev"]
            .iter()
            .any(|dir| mount_point.starts_with(dir))
            || (mount_point.starts_with("/run") && !mount_point.starts_with("/run/media"));
        (!pseudo && !system_dir && !source.starts_with("sunrpc"))
            .then(|| (PathBuf::from(mount_point), filesystem.to_string()))
    })
}

/// Mount tables write space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests;
