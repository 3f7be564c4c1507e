//! The agent's code pages. VmRSS counts every page of the binary the process has mapped,
//! and the kernel maps whole folios around each page it faults in, so an agent keeps its
//! start-up code (arguments, config, TLS set-up) and its neighbours mapped for good: most
//! of its VmRSS, next to the service it tests.
//!
//! An idle agent unmaps the clean read-only pages of its own executable. They stay in the
//! page cache, so the next use is a minor fault, not a disk read; but unmapped, they are
//! the first pages the host reclaims under pressure (mapped code is kept longest), and
//! VmRSS counts what the agent uses again. Shared libraries (libc) are left mapped: every
//! process on the host maps the same pages, so unmapping them here would free nothing.

use std::ops::Range;
use std::os::unix::fs::MetadataExt;

/// Unmaps the clean read-only pages of the agent's executable (see the module docs).
/// Returns the bytes of address space it gave back to the kernel (not all of it was
/// resident).
#[allow(unsafe_code)]
pub fn unmap_idle_code() -> std::io::Result<usize> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    let file = FileId {
        major: nix::sys::stat::major(exe.dev()),
        minor: nix::sys::stat::minor(exe.dev()),
        inode: exe.ino(),
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for range in clean_mappings_of(file, &smaps) {
        let length = range.end - range.start;
        // SAFETY: `range` is a whole private mapping of a file, never writable and holding
        // no copy-on-write page, so every page in it equals the file's page. After
        // MADV_DONTNEED the next access maps the same page again from the page cache, as
        // after the kernel's own reclaim of it; no memory in it ever changes.
        let done = unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                length,
                libc::MADV_DONTNEED,
            )
        };
        if done == 0 {
            released += length;
        }
    }
    Ok(released)
}

/// A file as `/proc/self/smaps` names it: device numbers and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u64,
    minor: u64,
    inode: u64,
}

/// The address ranges of `/proc/self/smaps` mappings of `file` that are private, not
/// writable and hold no anonymous page: code and read-only data. A relocated read-only
/// segment (RELRO) has anonymous pages and is left alone: unmapped, it would come back
/// from the file unrelocated.
fn clean_mappings_of(file: FileId, smaps: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut candidate: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(file, line) {
            candidate = range;
        } else if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let none = anonymous.split_whitespace().next() == Some("0");
            if let Some(range) = candidate.take()
                && none
            {
                found.push(range);
            }
        }
    }
    found
}

/// For a mapping's header line: `Some(Some(range))` for a private read-only mapping of
/// `file`, `Some(None)` for any other mapping; `None` for a line that is no header.
fn mapping_header(file: FileId, line: &str) -> Option<Option<Range<usize>>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let permissions = fields.next()?;
    let _offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?.parse().ok()?;
    let mapped = FileId {
        major: u64::from_str_radix(major, 16).ok()?,
        minor: u64::from_str_radix(minor, 16).ok()?,
        inode,
    };
    let read_only_private = permissions.len() == 4
        && permissions.starts_with('r')
        && !permissions.contains('w')
        && permissions.ends_with('p');
    Some((read_only_private && mapped == file).then_some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 1234 /usr/bin/troop-agent
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 1234 /usr/bin/troop-agent
Rss:                5000 kB
Anonymous:             0 kB
55d0c0900000-55d0c0980000 r--p 00900000 fe:00 1234 /usr/bin/troop-agent
Rss:                 512 kB
Anonymous:           512 kB
55d0c0980000-55d0c0990000 rw-p 00980000 fe:00 1234 /usr/bin/troop-agent
Anonymous:            64 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           100 kB
7f0000000000-7f0000200000 r-xp 00028000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000300000-7f0000301000 rw-s 00000000 00:01 7 /dev/zero (deleted)
Anonymous:             0 kB
7f0000400000-7f0000401000 r--s 00000000 fe:00 1234 /usr/bin/troop-agent
Anonymous:             0 kB
7ffff7fc0000-7ffff7fc2000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_clean_read_only_mappings_are_unmapped() {
        let agent = FileId {
            major: 0xfe,
            minor: 0,
            inode: 1234,
        };
        assert_eq!(
            clean_mappings_of(agent, SMAPS),
            vec![
                0x55d0c0000000..0x55d0c0100000,
                0x55d0c0100000..0x55d0c0900000
            ],
            "left alone: the relocated segment, the writable one, libc, shared mappings, the heap, the vDSO"
        );
        let same_inode_elsewhere = FileId { minor: 1, ..agent };
        assert!(clean_mappings_of(same_inode_elsewhere, SMAPS).is_empty());
    }

    #[test]
    fn unmapped_pages_leave_the_resident_set_and_come_back_unchanged() {
        let resident_file_pages = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let before = resident_file_pages();
        assert!(
            unmap_idle_code().unwrap() > 0,
            "this test's binary is a mapped file"
        );
        let after = resident_file_pages();
        assert!(
            after < before,
            "RssFile {before} kB before, {after} kB after"
        );
        // Code and read-only data (SHA-256's round constants) come back as they were.
        assert_eq!(
            hex::encode(sha2::Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
