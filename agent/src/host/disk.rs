//! Filesystem usage and fill files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{FallocateFlags, fallocate};
use nix::sys::statvfs::statvfs;

/// A filesystem's size and use, as `df` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
    /// What an unprivileged writer may still use.
    pub available: u64,
}

impl Usage {
    pub fn used_percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / self.total as f64
    }
}

pub fn usage(path: &Path) -> io::Result<Usage> {
    let stat = statvfs(path).map_err(io::Error::from)?;
    let block = stat.fragment_size();
    let total = stat.blocks() * block;
    let free = stat.blocks_free() * block;
    Ok(Usage {
        total,
        used: total.saturating_sub(free),
        available: stat.blocks_available() * block,
    })
}

/// Creates `path` (it must not exist) holding `bytes` of allocated space: fallocate where
/// the filesystem supports it, written zeros where it does not.
pub fn fill(path: &Path, bytes: u64) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if bytes == 0 {
        return Ok(());
    }
    let length = i64::try_from(bytes).map_err(|_| io::Error::other("fill size too large"))?;
    match fallocate(&file, FallocateFlags::empty(), 0, length) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => write_zeros(&mut file, bytes),
        Err(errno) => Err(errno.into()),
    }
}

fn write_zeros(file: &mut File, bytes: u64) -> io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_data()
}

/// Removes a fill file; one already gone is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
