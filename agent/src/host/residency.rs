//! The agent's code pages. VmRSS counts every page of the binary and its libraries the
//! process has mapped, and the kernel maps whole folios around each page it faults in, so
//! an agent keeps its start-up code (arguments, config, TLS set-up) and its neighbours
//! mapped for good: two thirds of its VmRSS, next to the service it tests.
//!
//! An idle agent unmaps the clean read-only pages of its files. They stay in the page
//! cache, so the next use is a minor fault, not a disk read; but unmapped, they are the
//! first pages the host reclaims under pressure (mapped code is kept longest), and VmRSS
//! counts what the agent actually uses again.

use std::ops::Range;

/// Unmaps the clean read-only file pages of every mapping (see the module docs). Returns
/// the bytes of address space it gave back to the kernel (not all of it was resident).
#[allow(unsafe_code)]
pub fn unmap_idle_code() -> std::io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for range in clean_file_mappings(&smaps) {
        let length = range.end - range.start;
        // SAFETY: `range` is a whole mapping of a file, never writable and holding no
        // private (copy-on-write) page, so every page in it equals the file's page. After
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

/// The address ranges of `/proc/self/smaps` mappings that are backed by a file, not
/// writable and hold no anonymous page: code and read-only data. A relocated read-only
/// segment (RELRO) has anonymous pages and is left alone: unmapped, it would come back
/// from the file unrelocated.
fn clean_file_mappings(smaps: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut candidate: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
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

/// For a mapping's header line: `Some(Some(range))` for a read-only mapping of a file,
/// `Some(None)` for any other mapping; `None` for a line that is no header.
fn mapping_header(line: &str) -> Option<Option<Range<usize>>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let permissions = fields.next()?;
    let inode = fields.nth(2)?;
    let path = fields.next().unwrap_or("");
    let read_only_file = permissions.len() == 4
        && permissions.starts_with('r')
        && !permissions.contains('w')
        && permissions.ends_with('p')
        && inode != "0"
        && path.starts_with('/');
    Some(read_only_file.then_some(start..end))
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
7f0000400000-7f0000401000 r--s 00000000 fe:00 55 /var/lib/troop-agent/shared
Anonymous:             0 kB
7ffff7fc0000-7ffff7fc2000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_are_unmapped() {
        assert_eq!(
            clean_file_mappings(SMAPS),
            vec![
                0x55d0c0000000..0x55d0c0100000,
                0x55d0c0100000..0x55d0c0900000,
                0x7f0000000000..0x7f0000200000,
            ],
            "left alone: the relocated segment, writable and shared mappings, the heap, the vDSO"
        );
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
