//! What a host shows from outside: its processes (from /proc) and how full a
//! filesystem is (statvfs). The agent matches and measures with these; the lab and the
//! demo use them to check a fault's effect without asking the agent.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::sys::statvfs::{Statvfs, statvfs};

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// The kernel's name for it (`comm`, at most 15 bytes).
    pub name: String,
    pub exe: Option<PathBuf>,
    /// Empty for a kernel thread, and when it was not read (see [`Detail`]).
    pub cmdline: Vec<String>,
    /// The real uid; `None` when it was not read (see [`Detail`]), never a guess.
    pub uid: Option<u32>,
    /// Clock ticks after boot; with the pid, the process's identity.
    pub start_time: u64,
    pub kernel_thread: bool,
    /// Exited but not yet reaped: signalling it would do nothing.
    pub zombie: bool,
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`; `None` if gone.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = read_proc_text(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Fields 14 and 15 of proc(5); fields[0] is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks as f64 / hz as f64)
}

/// Resident memory of a process (`VmRSS`), `None` if it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = read_proc_text(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// The number of a `Name:   123 kB` line, as `/proc/PID/status` and `smaps_rollup` write
/// them (`name` with its colon).
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// What of a process is read beyond its `stat` and exe link, which every read takes: the
/// uid, from `status` (the dearest of the four: the kernel renders ~1.4 KB for it), and
/// the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    pub uid: bool,
    pub cmdline: bool,
}

impl Detail {
    pub const ALL: Self = Self {
        uid: true,
        cmdline: true,
    };
}

/// Reads one process, `None` if it is gone.
pub fn read_process(pid: i32) -> Option<ProcessInfo> {
    read_process_with(pid, Detail::ALL)
}

/// Reads one process with what `detail` asks for besides its `stat` and exe; `None` if it
/// is gone.
pub fn read_process_with(pid: i32, detail: Detail) -> Option<ProcessInfo> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = parse_stat(&read_proc_text(dir.join("stat")).ok()?)?;
    let uid = if detail.uid {
        Some(read_uid(pid)?)
    } else {
        None
    };
    let cmdline = if detail.cmdline {
        read_cmdline(pid).unwrap_or_default()
    } else {
        Vec::new()
    };
    let exe = fs::read_link(dir.join("exe")).ok().map(|path| {
        let text = path.to_string_lossy();
        PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text))
    });
    Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        name: stat.name,
        exe,
        cmdline,
        uid,
        start_time: stat.start_time,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        zombie: stat.state == 'Z',
    })
}

/// The real uid of a process, from `/proc/PID/status`; `None` if it is gone.
pub fn read_uid(pid: i32) -> Option<u32> {
    read_proc_text(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The arguments of a process (empty for a kernel thread); `None` if it is gone.
pub fn read_cmdline(pid: i32) -> Option<Vec<String>> {
    Some(
        read_proc(format!("/proc/{pid}/cmdline"))
            .ok()?
            .split(|&byte| byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// Every process of this PID namespace; one that exits while it is read is not listed.
pub fn list_processes() -> io::Result<Vec<ProcessInfo>> {
    Ok(pids()?.into_iter().filter_map(read_process).collect())
}

/// The pids of this PID namespace, from the names in `/proc`.
pub fn pids() -> io::Result<Vec<i32>> {
    pid_listing()?.collect()
}

/// The pids in `/proc` as they are listed, for a scan that starts before the listing ends.
pub fn pid_listing() -> io::Result<impl Iterator<Item = io::Result<i32>>> {
    Ok(fs::read_dir("/proc")?.filter_map(|entry| match entry {
        Ok(entry) => entry.file_name().to_str()?.parse().ok().map(Ok),
        Err(error) => Some(Err(error)),
    }))
}

/// The parent of a process (one small read), `None` if it is gone.
pub fn parent_pid(pid: i32) -> Option<i32> {
    parse_stat(&read_proc_text(format!("/proc/{pid}/stat")).ok()?).map(|stat| stat.ppid)
}

/// A file of /proc, whole. Not `fs::read`: /proc reports a size of 0, so that asks for
/// the metadata and then reads in steps from 32 bytes up (eight reads for a `status`);
/// this reads a page at a time: one read and the one that finds the end.
fn read_proc(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut bytes = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2, 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// As [`read_proc`], as text; a byte that is not UTF-8 (a process may name itself with
/// any bytes) becomes U+FFFD instead of hiding the process.
fn read_proc_text(path: impl AsRef<Path>) -> io::Result<String> {
    read_proc(path).map(|bytes| match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    })
}

struct Stat {
    name: String,
    state: char,
    ppid: i32,
    flags: u64,
    start_time: u64,
}

/// Parses `/proc/PID/stat`. The name sits in parentheses and may itself hold spaces or
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    Some(Stat {
        name,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        flags: fields.get(6)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

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
    Ok(Usage::from(statvfs(path).map_err(io::Error::from)?))
}

impl From<Statvfs> for Usage {
    fn from(stat: Statvfs) -> Self {
        let block = stat.fragment_size();
        let total = stat.blocks() * block;
        let free = stat.blocks_free() * block;
        Usage {
            total,
            used: total.saturating_sub(free),
            available: stat.blocks_available() * block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_longer_than_a_page_is_read_whole_and_odd_bytes_do_not_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let long: Vec<u8> = (0..10_000u32).map(|n| b'a' + (n % 26) as u8).collect();
        fs::write(&path, &long).unwrap();
        assert_eq!(read_proc(&path).unwrap(), long);
        fs::write(&path, b"1 (bad\xffname) S 0").unwrap();
        assert_eq!(read_proc_text(&path).unwrap(), "1 (bad\u{fffd}name) S 0");
        assert_eq!(
            read_proc_text(format!("/proc/{}/stat", std::process::id()))
                .ok()
                .and_then(|text| parse_stat(&text))
                .map(|stat| stat.ppid),
            Some(nix::unistd::getppid().as_raw())
        );
    }

    #[test]
    fn kib_fields_are_read_by_their_whole_name() {
        let status = "VmRSS:\t   10240 kB\nRssAnon:\t    1024 kB\nRssAnonX:\t 7 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(10240));
        assert_eq!(kib_field(status, "RssAnon:"), Some(1024));
        assert_eq!(kib_field(status, "Pss:"), None);
        assert_eq!(kib_field("Pss: lots kB\n", "Pss:"), None);
    }

    #[test]
    fn stat_names_with_spaces_and_parentheses_parse() {
        let mut text = String::from("42 (a) b)) S 7 42 42 0 -1 4194560");
        for field in 10..=22 {
            text.push_str(&format!(" {field}"));
        }
        let stat = parse_stat(&text).unwrap();
        assert_eq!(stat.name, "a) b)");
        assert_eq!(stat.ppid, 7);
        assert_eq!(stat.flags, 4194560);
        assert_eq!(stat.start_time, 22);
    }
}
