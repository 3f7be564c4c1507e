//! Filesystem usage and fill files, the latter only through directory handles.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FallocateFlags, OFlag, fallocate, open, openat};
use nix::sys::stat::Mode;
use nix::sys::statvfs::fstatvfs;
use nix::unistd::{UnlinkatFlags, unlinkat};
pub use troop_common::observe::{Usage, usage};

/// A directory opened once without following links: fills are measured, created and
/// removed through this handle, so no symlink or rename race can move a fill elsewhere.
#[derive(Debug)]
pub struct FillDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl FillDir {
    /// Opens `path`, which must be canonical (no links): the handle must lead where
    /// `path` says, or this fails.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if real != path {
            return Err(io::Error::other(format!(
                "{} changed while it was opened (it now leads to {})",
                path.display(),
                real.display()
            )));
        }
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn handle(&self) -> &OwnedFd {
        &self.fd
    }

    /// statvfs of the filesystem the handle is on.
    pub fn usage(&self) -> io::Result<Usage> {
        Ok(Usage::from(fstatvfs(&self.fd)?))
    }

    /// Creates `name` (it must not exist, nor be a link) holding `bytes` of allocated
    /// space: fallocate where the filesystem supports it, written zeros where it does not.
    pub fn fill(&self, name: &str, bytes: u64) -> io::Result<()> {
        check_name(name)?;
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut file = File::from(fd);
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

    /// Removes `name` from this directory; one already gone is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
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

/// Removes a fill file recorded by its full path (crash recovery): through a handle on
/// its directory, which must still be the directory it was recorded in.
pub fn remove_fill(path: &Path) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(io::Error::other(format!(
            "{} is not a fill path",
            path.display()
        )));
    };
    match FillDir::open(dir) {
        Ok(dir) => dir.remove(name),
        // The directory is gone, and the fill with it.
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
