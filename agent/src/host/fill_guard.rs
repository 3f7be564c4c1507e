//! The fill guard: a small process that a disk fault leaves beside its fill, so the fill
//! ends by its deadline even when the agent dies and nothing restarts it (no systemd, a
//! crash loop past `StartLimitBurst`). It removes the fill at the deadline, or at once on
//! SIGTERM, SIGINT, SIGHUP or SIGQUIT (which is what systemd sends the unit's remaining
//! processes when it gives up on the agent). A running agent ends its guard before it
//! removes the fill itself. The guard removes only the very file it was started for
//! (same inode, through a handle on its directory), never one that replaced it.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::AtFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::fstatat;

use super::disk::FillDir;

/// The hidden subcommand both binaries answer with [`guard`], before anything else.
pub const GUARD_COMMAND: &str = "__guard-fill";

/// Runs the guard and exits, if this process was started as one; returns otherwise.
pub fn run_guard_if_asked() {
    let Some(args) = super::HelperArgs::of(GUARD_COMMAND) else {
        return;
    };
    let outcome = (|| {
        let dir: String = args.get("--dir")?;
        let name: String = args.get("--name")?;
        let inode = args.get("--inode")?;
        let until = args.get("--until-unix-ms")?;
        Some(guard(Path::new(&dir), &name, inode, until))
    })();
    super::exit_helper(
        GUARD_COMMAND,
        "--dir DIR --name NAME --inode N --until-unix-ms MS",
        outcome,
    )
}

fn guard(dir: &Path, name: &str, inode: u64, until_unix_ms: i64) -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs()?;
    let mut endings = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        endings.add(signal);
    }
    // Single-threaded here: blocking them for this thread blocks them for the process.
    endings.thread_block()?;
    let signals = SignalFd::with_flags(&endings, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let why = loop {
        if let Some(info) = signals.read_signal()? {
            break format!("on signal {}", info.ssi_signo);
        }
        let left = until_unix_ms - troop_common::clock::now_unix_ms();
        if left <= 0 {
            break "at its deadline".to_string();
        }
        std::thread::sleep(Duration::from_millis(left.clamp(1, 100) as u64));
    };
    remove_if_same(dir, name, inode)?;
    // On the agent's stderr (its log): the agent itself is gone or stopping.
    eprintln!("{GUARD_COMMAND}: removed {}/{name} {why}", dir.display());
    Ok(())
}

/// Removes `dir/name` if it is still the file with `inode`.
fn remove_if_same(dir: &Path, name: &str, inode: u64) -> io::Result<()> {
    let dir = match FillDir::open(dir) {
        Ok(dir) => dir,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    match fstatat(dir.handle(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if stat.st_ino == inode => dir.remove(name),
        Ok(_) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// A guard started for a fill; killed (without touching the fill) when dropped.
#[derive(Debug)]
pub struct Guard {
    child: Child,
}

impl Guard {
    /// Starts `exe __guard-fill` for the fill `dir/name` (it must exist) until the deadline.
    pub fn start(exe: &Path, dir: &FillDir, name: &str, until_unix_ms: i64) -> io::Result<Self> {
        let stat = fstatat(dir.handle(), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let child = Command::new(exe)
            .arg(GUARD_COMMAND)
            .arg("--dir")
            .arg(dir.path())
            .args(["--name", name])
            .args(["--inode", &stat.st_ino.to_string()])
            .args(["--until-unix-ms", &until_unix_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ends guards a crashed agent left for the fill `name` (its recovery removes the fill).
pub fn end_leftover(name: &str) {
    use crate::host::process::{LinuxProcessTable, ProcessTable};
    let table = LinuxProcessTable;
    let Ok(processes) = table.list() else { return };
    for process in processes {
        let args = &process.cmdline;
        let is_ours = args.iter().any(|a| a == GUARD_COMMAND)
            && args.windows(2).any(|w| w[0] == "--name" && w[1] == name);
        if is_ours {
            let _ = table.signal(&process, libc::SIGKILL, &|_| true);
        }
    }
}
