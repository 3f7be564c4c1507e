//! What the host is: read fresh from sysinfo for each `Status` call.

use sysinfo::{Disks, MemoryRefreshKind, RefreshKind, System};
use troop_proto::pb;

pub fn collect() -> pb::Inventory {
    let system = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let disks = Disks::new_with_refreshed_list()
        .list()
        .iter()
        .map(|disk| pb::DiskInfo {
            mount_point: disk.mount_point().display().to_string(),
            filesystem: disk.file_system().to_string_lossy().into_owned(),
            total_bytes: disk.total_space(),
            available_bytes: disk.available_space(),
        })
        .collect();
    pb::Inventory {
        hostname: System::host_name().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_total_bytes: system.total_memory(),
        memory_available_bytes: system.available_memory(),
        disks,
        uptime_seconds: System::uptime(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_host() {
        let inventory = super::collect();
        assert!(inventory.cpus >= 1);
        assert!(inventory.memory_total_bytes > 0);
        assert!(inventory.memory_available_bytes <= inventory.memory_total_bytes);
        assert!(!inventory.kernel.is_empty());
        assert!(inventory.uptime_seconds > 0);
    }
}
