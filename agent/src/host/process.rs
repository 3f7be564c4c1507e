//! Seeing and signalling processes.
//!
//! The Linux implementation reads `/proc` and signals through a pidfd: it opens the pidfd,
//! then checks that the process still has the start time it had when it was matched. A
//! pidfd names one process for good, so a pid reused in between is never signalled.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use regex::Regex;
pub use troop_common::observe::{
    Detail, ProcessInfo, cpu_seconds, list_processes, parent_pid, pid_listing, pids, read_cmdline,
    read_process, read_process_with, read_uid, resident_bytes,
};

/// The kernel keeps at most this many bytes of a process's name (`comm`).
const COMM_LEN: usize = 15;

/// What a search tells processes apart by. A scan reads only this one field of every
/// process (one small read each: on a host with thousands of processes the reads are the
/// cost); the rest is read for the few that pass.
#[derive(Debug, Clone, Copy)]
pub enum Sieve<'a> {
    Pid(i32),
    /// The kernel's name; a name longer than the kernel keeps also matches a process whose
    /// `comm` is its first 15 bytes and whose exe has the whole name.
    Name(&'a str),
    Exe(&'a Path),
    Cmdline(&'a Regex),
    Uid(u32),
}

impl Sieve<'_> {
    /// Whether a fully read process passes.
    pub fn admits(&self, process: &ProcessInfo) -> bool {
        match *self {
            Sieve::Pid(pid) => process.pid == pid,
            Sieve::Name(name) => {
                process.name == name
                    || (kernel_cut(process.name.as_bytes(), name)
                        && process
                            .exe
                            .as_deref()
                            .and_then(Path::file_name)
                            .is_some_and(|file| file == name))
            }
            Sieve::Exe(path) => process.exe.as_deref() == Some(path),
            Sieve::Cmdline(regex) => regex.is_match(&process.cmdline.join(" ")),
            Sieve::Uid(uid) => process.uid == Some(uid),
        }
    }

    /// What a process must be read with, beyond its `stat` and exe, for [`Self::admits`]
    /// to judge it (the protections need no more than those two).
    pub fn detail(&self) -> Detail {
        Detail {
            uid: matches!(self, Sieve::Uid(_)),
            cmdline: matches!(self, Sieve::Cmdline(_)),
        }
    }

    /// Whether the process may pass, from its one field; `false` if it is gone. `proc`
    /// is `/proc`, opened once per scan.
    fn may_admit(&self, proc: BorrowedFd, pid: i32) -> bool {
        match *self {
            Sieve::Pid(wanted) => pid == wanted,
            Sieve::Name(name) => comm_is(proc, pid, name),
            Sieve::Exe(path) => std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == path || exe == deleted(path)),
            Sieve::Cmdline(regex) => {
                read_cmdline(pid).is_some_and(|args| regex.is_match(&args.join(" ")))
            }
            Sieve::Uid(uid) => read_uid(pid) == Some(uid),
        }
    }
}

/// Whether the kernel's name of `pid` is `name`, or what it kept of it: one read into a
/// buffer on the stack, of a file opened relative to `proc` (a sixth less work for the
/// kernel than a whole path).
fn comm_is(proc: BorrowedFd, pid: i32, name: &str) -> bool {
    let mut path = [0u8; 24];
    let mut cursor = io::Cursor::new(&mut path[..]);
    if write!(cursor, "{pid}/comm").is_err() {
        return false;
    }
    let length = cursor.position() as usize;
    let mut buffer = [0u8; 64];
    let Ok(read) = openat(
        proc,
        &path[..length],
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .and_then(|file| nix::unistd::read(&file, &mut buffer).map_err(io::Error::from)) else {
        return false;
    };
    let comm = buffer[..read]
        .strip_suffix(b"\n")
        .unwrap_or(&buffer[..read]);
    comm == name.as_bytes() || kernel_cut(comm, name)
}

/// `comm` is what the kernel kept of the longer `name`.
fn kernel_cut(comm: &[u8], name: &str) -> bool {
    comm.len() == COMM_LEN && name.len() > COMM_LEN && name.as_bytes().starts_with(comm)
}

/// How the kernel shows the exe of a process whose file was deleted after it started.
fn deleted(path: &Path) -> PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(" (deleted)");
    PathBuf::from(text)
}

/// How a scan is spread over threads: /proc is listed in chunks of `chunk` pids, each
/// sifted as soon as it is listed; once more than `from` pids were listed, helper threads
/// (up to `threads` in all, this one included) take chunks too. Each read of /proc is a
/// few µs of kernel work that the kernel serves on every core at once (2,000 processes:
/// 14.7 ms on one thread of this 2-core VM, 8.5 ms on two), and listing them takes ~2 ms
/// that the helpers need not wait for.
#[derive(Debug, Clone, Copy)]
struct Split {
    threads: usize,
    chunk: usize,
    from: usize,
}

impl Split {
    /// One thread per core, at most four; below 512 processes one thread is quicker than
    /// starting others. The cores are counted once: asking costs ~30 µs and twenty
    /// syscalls (affinity, cgroup quota), which every kill would pay again.
    fn for_this_host() -> Self {
        static SPLIT: std::sync::OnceLock<Split> = std::sync::OnceLock::new();
        *SPLIT.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
            Self {
                threads: cores.min(4),
                chunk: 128,
                from: 512,
            }
        })
    }
}

/// The pids of `listing` whose one field `sieve` reads may pass, in the listing's order,
/// spread as `split` says; the first error of the listing ends the scan.
fn sift(
    proc: BorrowedFd,
    listing: impl IntoIterator<Item = io::Result<i32>>,
    sieve: &Sieve,
    split: Split,
) -> io::Result<Vec<i32>> {
    let keep = |part: &[i32]| -> Vec<i32> {
        part.iter()
            .copied()
            .filter(|&pid| sieve.may_admit(proc, pid))
            .collect()
    };
    let (send, receive) = std::sync::mpsc::channel::<(usize, Vec<i32>)>();
    let receive = Mutex::new(receive);
    // Sifts chunks until the listing is done and none is left.
    let drain = || {
        let mut sifted = Vec::new();
        loop {
            let next = receive.lock().unwrap_or_else(|e| e.into_inner()).recv();
            match next {
                Ok((index, chunk)) => sifted.push((index, keep(&chunk))),
                Err(_) => return sifted,
            }
        }
    };
    std::thread::scope(|scope| {
        let mut helpers = Vec::new();
        let mut chunk = Vec::with_capacity(split.chunk);
        let (mut listed, mut chunks) = (0, 0);
        for pid in listing {
            chunk.push(pid?);
            listed += 1;
            if chunk.len() == split.chunk {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(split.chunk));
                let _ = send.send((chunks, full));
                chunks += 1;
            }
            if listed == split.from + 1 {
                for _ in 1..split.threads {
                    let helper = std::thread::Builder::new()
                        .name("troop-scan".into())
                        .stack_size(256 * 1024)
                        .spawn_scoped(scope, drain);
                    // One that cannot start leaves its share to the others.
                    helpers.extend(helper.ok());
                }
            }
        }
        if !chunk.is_empty() {
            let _ = send.send((chunks, chunk));
        }
        drop(send);
        let mut sifted = drain();
        for helper in helpers {
            sifted.extend(helper.join().unwrap_or_default());
        }
        sifted.sort_unstable_by_key(|(index, _)| *index);
        Ok(sifted.into_iter().flat_map(|(_, pids)| pids).collect())
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("process {pid} exited or its pid was reused before it could be signalled")]
    Gone { pid: i32 },
    #[error("process {pid} changed (exec) after it was matched and no longer qualifies")]
    Changed { pid: i32 },
    #[error("signalling process {pid} failed")]
    Failed {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// The processes of the host the agent runs on.
pub trait ProcessTable: Send + Sync {
    fn list(&self) -> io::Result<Vec<ProcessInfo>>;
    /// The processes `sieve` admits, read as far as [`Sieve::detail`] says.
    fn find(&self, sieve: &Sieve) -> io::Result<Vec<ProcessInfo>>;
    /// The parent of `pid`, `None` if it is gone.
    fn parent(&self, pid: i32) -> Option<i32>;
    /// The processes above this one, up to the top of its PID namespace.
    fn ancestors(&self) -> HashSet<i32> {
        ancestors_of(std::process::id() as i32, |pid| self.parent(pid))
    }
    /// Sends `signal` to exactly the process `process` describes, never to a reused pid,
    /// and only if `still_eligible` holds for the process as it is at that moment (it may
    /// have exec'd into something protected since it was matched), read again as far as
    /// `process` was (its uid if it has one, its arguments if it has any).
    fn signal(
        &self,
        process: &ProcessInfo,
        signal: i32,
        still_eligible: &dyn Fn(&ProcessInfo) -> bool,
    ) -> Result<(), SignalError>;
}

/// The processes above `pid`, walked up with `parent` until a process has none (the top
/// of its PID namespace) or the walk loops.
pub fn ancestors_of(pid: i32, parent: impl Fn(i32) -> Option<i32>) -> HashSet<i32> {
    let mut ancestors = HashSet::new();
    let mut current = pid;
    while let Some(ppid) = parent(current) {
        if ppid <= 0 || !ancestors.insert(ppid) {
            break;
        }
        current = ppid;
    }
    ancestors
}

/// `/proc` and pidfds.
#[derive(Debug, Default)]
pub struct LinuxProcessTable;

impl ProcessTable for LinuxProcessTable {
    fn list(&self) -> io::Result<Vec<ProcessInfo>> {
        list_processes()
    }

    fn find(&self, sieve: &Sieve) -> io::Result<Vec<ProcessInfo>> {
        // A pid names one process: no scan at all.
        let passed = match sieve {
            Sieve::Pid(pid) => vec![*pid],
            _ => {
                let proc = File::open("/proc")?;
                sift(proc.as_fd(), pid_listing()?, sieve, Split::for_this_host())?
            }
        };
        Ok(passed
            .into_iter()
            .filter_map(|pid| read_process_with(pid, sieve.detail()))
            .filter(|process| sieve.admits(process))
            .collect())
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        parent_pid(pid)
    }

    /// Walked once, and again only when this process's parent changes (a `getppid`, no
    /// read), instead of a few `/proc` reads per kill. While the parent stays, the set
    /// can only grow stale on the safe side: an ancestor that exits leaves its orphans
    /// to a subreaper or init above it, both already in the set, so no process becomes
    /// an ancestor unseen; a pid in the set that exited is protected for nothing.
    fn ancestors(&self) -> HashSet<i32> {
        static WALKED: Mutex<Option<(i32, HashSet<i32>)>> = Mutex::new(None);
        let parent = nix::unistd::getppid().as_raw();
        let mut walked = WALKED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((walked_from, ancestors)) = &*walked
            && *walked_from == parent
        {
            return ancestors.clone();
        }
        let ancestors = ancestors_of(std::process::id() as i32, parent_pid);
        *walked = Some((parent, ancestors.clone()));
        ancestors
    }

    fn signal(
        &self,
        process: &ProcessInfo,
        signal: i32,
        still_eligible: &dyn Fn(&ProcessInfo) -> bool,
    ) -> Result<(), SignalError> {
        let pid = process.pid;
        let pidfd = pidfd::open(pid).map_err(|source| match source.raw_os_error() {
            Some(libc::ESRCH) => SignalError::Gone { pid },
            _ => SignalError::Failed { pid, source },
        })?;
        // The pidfd now pins one process; make sure it is the one that was matched, as it
        // is now.
        let detail = Detail {
            uid: process.uid.is_some(),
            cmdline: !process.cmdline.is_empty(),
        };
        let now = read_process_with(pid, detail).ok_or(SignalError::Gone { pid })?;
        if now.start_time != process.start_time {
            return Err(SignalError::Gone { pid });
        }
        if !still_eligible(&now) {
            return Err(SignalError::Changed { pid });
        }
        pidfd::send_signal(&pidfd, signal).map_err(|source| match source.raw_os_error() {
            Some(libc::ESRCH) => SignalError::Gone { pid },
            _ => SignalError::Failed { pid, source },
        })
    }
}

#[allow(unsafe_code)]
mod pidfd {
    //! The two pidfd syscalls, which nix does not wrap.
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    pub fn open(pid: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory
        // is shared with the kernel.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    pub fn send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel fills in a
        // default one) and no flags.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A process table for unit tests: a fixed list, and a record of every signal sent.
#[derive(Debug, Default)]
pub struct FakeProcessTable {
    processes: Mutex<Vec<ProcessInfo>>,
    signalled: Mutex<Vec<(i32, i32)>>,
    fail_pids: Mutex<HashMap<i32, bool>>,
    reuse_after_list: Mutex<Vec<i32>>,
}

impl FakeProcessTable {
    pub fn new(processes: Vec<ProcessInfo>) -> Self {
        Self {
            processes: Mutex::new(processes),
            ..Self::default()
        }
    }

    /// Makes signalling `pid` fail as if it had exited in the meantime.
    pub fn make_gone(&self, pid: i32) {
        self.fail_pids.lock().unwrap().insert(pid, true);
    }

    /// After the next listing, `pid` belongs to a newer process (it started later), as
    /// if the listed one exited and its pid was reused before it could be signalled.
    pub fn reuse_pid_after_listing(&self, pid: i32) {
        self.reuse_after_list.lock().unwrap().push(pid);
    }

    /// Every (pid, signal) sent so far.
    pub fn signalled(&self) -> Vec<(i32, i32)> {
        self.signalled.lock().unwrap().clone()
    }
}

impl ProcessTable for FakeProcessTable {
    fn list(&self) -> io::Result<Vec<ProcessInfo>> {
        let mut processes = self.processes.lock().unwrap();
        let listed = processes.clone();
        for pid in self.reuse_after_list.lock().unwrap().drain(..) {
            for process in processes.iter_mut().filter(|p| p.pid == pid) {
                process.start_time += 1;
            }
        }
        Ok(listed)
    }

    fn find(&self, sieve: &Sieve) -> io::Result<Vec<ProcessInfo>> {
        let mut listed = self.list()?;
        listed.retain(|process| sieve.admits(process));
        Ok(listed)
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        let processes = self.processes.lock().unwrap();
        processes.iter().find(|p| p.pid == pid).map(|p| p.ppid)
    }

    fn signal(
        &self,
        process: &ProcessInfo,
        signal: i32,
        still_eligible: &dyn Fn(&ProcessInfo) -> bool,
    ) -> Result<(), SignalError> {
        // As the real table: the pid must still belong to the process that was matched
        // (same start time), then still qualify.
        let now = self
            .processes
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.pid == process.pid)
            .cloned();
        let Some(now) = now.filter(|now| now.start_time == process.start_time) else {
            return Err(SignalError::Gone { pid: process.pid });
        };
        if !still_eligible(&now) {
            return Err(SignalError::Changed { pid: process.pid });
        }
        if self.fail_pids.lock().unwrap().contains_key(&process.pid) {
            return Err(SignalError::Gone { pid: process.pid });
        }
        self.signalled.lock().unwrap().push((process.pid, signal));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn lists_this_process_and_signals_its_own_child() {
        let table = LinuxProcessTable;
        let me = std::process::id() as i32;
        let processes = table.list().unwrap();
        let this = processes.iter().find(|p| p.pid == me).unwrap();
        assert!(!this.kernel_thread);

        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        // Until the child has called exec it still shows the test's own cmdline.
        let mut info = read_process(pid).unwrap();
        for _ in 0..200 {
            if info.cmdline.first().map(String::as_str) == Some("sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            info = read_process(pid).unwrap();
        }
        assert_eq!(info.ppid, me);
        assert_eq!(info.cmdline, ["sleep", "30"]);
        table.signal(&info, libc::SIGKILL, &|_| true).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// The remembered walk is this process's real lineage, the same on every call.
    #[test]
    fn the_ancestors_are_this_processs_lineage() {
        let table = LinuxProcessTable;
        let walked = ancestors_of(std::process::id() as i32, parent_pid);
        assert!(walked.contains(&nix::unistd::getppid().as_raw()));
        assert_eq!(table.ancestors(), walked);
        assert_eq!(table.ancestors(), walked, "remembered");
    }

    /// The scan reads one field of every process, then the passers in full: a copy of
    /// `sleep` under a name longer than the kernel keeps is found by name, exe and pid.
    #[test]
    fn find_reads_what_the_sieve_needs() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("troop-sleeper-with-a-long-name");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        // Until every child another test forks meanwhile has exec'd, it may hold the
        // copy's write descriptor: "text file busy" for a moment.
        let mut attempts = 0;
        let mut child = loop {
            match Command::new(&exe).arg("30").spawn() {
                Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                spawned => break spawned.unwrap(),
            }
        };
        let pid = child.id() as i32;
        let table = LinuxProcessTable;
        let found = |sieve: Sieve| -> Vec<i32> {
            table.find(&sieve).unwrap().iter().map(|p| p.pid).collect()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while found(Sieve::Name("troop-sleeper-with-a-long-name")) != [pid] {
            assert!(std::time::Instant::now() < deadline, "child never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            found(Sieve::Name("troop-sleeper-w")),
            [pid],
            "the kernel's 15 bytes"
        );
        assert_eq!(
            found(Sieve::Name("troop-sleeper-with-another-name")),
            [0; 0]
        );
        assert_eq!(found(Sieve::Exe(&exe)), [pid]);
        assert_eq!(found(Sieve::Pid(pid)), [pid]);
        let pattern = Regex::new("long-name 30$").unwrap();
        assert_eq!(found(Sieve::Cmdline(&pattern)), [pid]);
        let uid = nix::unistd::getuid().as_raw();
        assert!(found(Sieve::Uid(uid)).contains(&pid));
        assert!(!found(Sieve::Uid(uid + 1)).contains(&pid));
        assert_eq!(table.parent(pid), Some(std::process::id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found(Sieve::Pid(pid)), [0; 0], "a reaped pid is not found");
    }

    /// A scan split over threads finds what one thread finds, in the same order.
    #[test]
    fn a_split_scan_finds_what_one_thread_finds() {
        let children: Vec<_> = (0..5)
            .map(|_| Command::new("sleep").arg("30").spawn().unwrap())
            .collect();
        let mine: Vec<i32> = children.iter().map(|child| child.id() as i32).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let proc = File::open("/proc").unwrap();
        let sift = |pids: &[i32], sieve: &Sieve, threads, chunk, from| {
            let listing = pids.iter().map(|&pid| Ok(pid));
            let split = Split {
                threads,
                chunk,
                from,
            };
            sift(proc.as_fd(), listing, sieve, split).unwrap()
        };
        let all = loop {
            let all = pids().unwrap();
            let sleeping = sift(&all, &Sieve::Name("sleep"), 1, 128, 512);
            if mine.iter().all(|pid| sleeping.contains(pid)) {
                break all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "children never exec'd"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // Other tests start and reap processes meanwhile: compare on this test's own.
        let only_mine = |found: Vec<i32>| -> Vec<i32> {
            found.into_iter().filter(|pid| mine.contains(pid)).collect()
        };
        let alone = only_mine(sift(&all, &Sieve::Name("sleep"), 1, 128, 512));
        assert_eq!(alone.len(), mine.len());
        for (threads, chunk, from) in [(2, 1, 0), (3, 4, 10), (4, 7, 0), (2, all.len() + 1, 0)] {
            let split = only_mine(sift(&all, &Sieve::Name("sleep"), threads, chunk, from));
            assert_eq!(
                split, alone,
                "{threads} threads, chunks of {chunk}, from {from}"
            );
        }
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(only_mine(sift(&all, &Sieve::Uid(uid), 3, 2, 0)), alone);
        assert_eq!(only_mine(sift(&all, &Sieve::Uid(uid + 1), 3, 2, 0)), [0; 0]);
        assert_eq!(sift(&[], &Sieve::Name("sleep"), 3, 2, 0), [0; 0]);
        // The listing's first error ends the scan.
        let failing = [Ok(1), Err(io::Error::other("listing broke")), Ok(2)];
        let split = Split {
            threads: 2,
            chunk: 1,
            from: 0,
        };
        assert!(super::sift(proc.as_fd(), failing, &Sieve::Uid(uid), split).is_err());
        for mut child in children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_search_reads_the_uid_and_arguments_only_when_its_sieve_needs_them() {
        let table = LinuxProcessTable;
        let mut child = Command::new("sleep").arg("31").spawn().unwrap();
        let pid = child.id() as i32;
        let uid = nix::unistd::getuid().as_raw();
        let found = |sieve: &Sieve| {
            table
                .find(sieve)
                .unwrap()
                .into_iter()
                .find(|process| process.pid == pid)
        };
        let by_pid = found(&Sieve::Pid(pid)).unwrap();
        assert_eq!((by_pid.uid, by_pid.cmdline.len()), (None, 0));
        assert!(by_pid.start_time > 0 && by_pid.exe.is_some());
        let by_user = found(&Sieve::Uid(uid)).unwrap();
        assert_eq!((by_user.uid, by_user.cmdline.len()), (Some(uid), 0));
        let pattern = Regex::new("^sleep 31$").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let by_pattern = loop {
            // Until the child has called exec it shows the test's own arguments.
            if let Some(process) = found(&Sieve::Cmdline(&pattern)) {
                break process;
            }
            assert!(std::time::Instant::now() < deadline, "sleep never showed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(
            (by_pattern.uid, by_pattern.cmdline),
            (None, vec!["sleep".into(), "31".into()])
        );
        // Checked again before the signal as far as it was read: a user search's process
        // is judged on its uid as it is then.
        assert!(matches!(
            table.signal(&by_user, libc::SIGKILL, &|now| now.uid != Some(uid)),
            Err(SignalError::Changed { .. })
        ));
        assert!(child.try_wait().unwrap().is_none(), "child must still run");
        table
            .signal(&by_pid, libc::SIGKILL, &|now| now.uid.is_none())
            .unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_stale_identity_is_never_signalled() {
        let table = LinuxProcessTable;
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut info = read_process(child.id() as i32).unwrap();
        info.start_time += 1; // as if the pid now belonged to a newer process
        assert!(matches!(
            table.signal(&info, libc::SIGKILL, &|_| true),
            Err(SignalError::Gone { .. })
        ));
        assert!(child.try_wait().unwrap().is_none(), "child must still run");
        let info = read_process(child.id() as i32).unwrap();
        assert!(matches!(
            table.signal(&info, libc::SIGKILL, &|now| now.name != "sleep"),
            Err(SignalError::Changed { .. })
        ));
        assert!(child.try_wait().unwrap().is_none(), "child must still run");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
