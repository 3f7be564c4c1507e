use super::*;

#[test]
fn reads_this_host() {
    let inventory = Inventory::new().current();
    assert!(inventory.cpus >= 1);
    assert!(inventory.memory_total_bytes > 0);
    assert!(inventory.memory_available_bytes <= inventory.memory_total_bytes);
    assert!(!inventory.kernel.is_empty());
    assert!(inventory.uptime_seconds > 0);
    let root = inventory.disks.iter().find(|d| d.mount_point == "/");
    assert!(root.is_some_and(|root| root.total_bytes > 0 && root.unavailable.is_empty()));
}

#[test]
fn storage_mounts_leave_out_the_kernels_own() {
    let table = "\
/dev/vda / ext4 rw 0 0
proc /proc proc rw 0 0
tmpfs /dev/shm tmpfs rw 0 0
server:/export /mnt/my\\040share nfs4 rw 0 0
sshfs#me@host: /srv/remote fuse.sshfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/sdb1 /run/media/usb vfat rw 0 0
";
    let mounts: Vec<_> = storage_mounts(table).collect();
    let names: Vec<_> = mounts
        .iter()
        .map(|(path, fs)| format!("{} {fs}", path.display()))
        .collect();
    assert_eq!(
        names,
        [
            "/ ext4",
            "/mnt/my share nfs4",
            "/srv/remote fuse.sshfs",
            "/run/media/usb vfat"
        ]
    );
}

/// A FUSE mount whose daemon never answers hangs every statvfs of it, as a hard NFS mount
/// whose server is gone does. The inventory still comes back, within its timeout, and
/// names the mount; a second refresh does not start a second stuck thread.
#[test]
fn a_hung_mount_does_not_hang_the_inventory() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse");
        return;
    }
    // Everything happens on a thread of its own in a private mount namespace: the
    // threads it starts share that namespace, and nothing shows outside.
    std::thread::spawn(|| {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fuse = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap();
        use std::os::fd::AsRawFd;
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            fuse.as_raw_fd()
        );
        mount(
            Some("troop-hung"),
            dir.path(),
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .unwrap();
        let mount_point = dir.path().display().to_string();

        let started = Instant::now();
        let inventory = Inventory::new();
        let took = started.elapsed();
        let disks = inventory.current().disks;
        let hung = disks.iter().find(|d| d.mount_point == mount_point);
        assert!(took < MOUNT_TIMEOUT * 3, "inventory took {took:?}");
        let hung = hung.unwrap_or_else(|| panic!("{mount_point} not in {disks:?}"));
        assert!(hung.unavailable.contains("did not answer"), "{hung:?}");
        assert!(
            disks
                .iter()
                .any(|d| d.mount_point == "/" && d.total_bytes > 0)
        );

        inventory.refresh();
        let disks = inventory.current().disks;
        let hung = disks.iter().find(|d| d.mount_point == mount_point).unwrap();
        assert!(hung.unavailable.contains("still not answering"), "{hung:?}");

        // Closing the device aborts the connection: the stuck statvfs returns.
        drop(fuse);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !inventory.asking.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the stuck statvfs never returned"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        umount2(dir.path(), MntFlags::MNT_DETACH).unwrap();
    })
    .join()
    .unwrap();
}
