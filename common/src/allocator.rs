//! How troop's processes use glibc's allocator. glibc gives a thread that allocates while
//! another holds an arena an arena of its own, up to eight per core, and gives memory
//! back only from the top of each. So an agent that once held a burst of commands would
//! keep their pages for good, and `troop serve`, whose blocking threads a storm of
//! attaching agents starts, kept eight arenas of 11–17 MiB each, mostly free: 128–138
//! MiB with 1,000 agents attached, 97 MiB with two arenas.

/// Arenas glibc may make: the threads are few (two async workers, short blocking tasks)
/// and rarely allocate at once.
const ARENAS: i32 = 2;

/// Call first in `main`, before any thread exists.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; no thread allocates yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// For a small daemon that idles between bursts (the agent): free memory at the top of an
/// arena goes back to the kernel once it passes 64 KiB, and growth takes no padding.
/// glibc's defaults (128 KiB each) keep up to 256 KiB a thread's arena once touched, and
/// `malloc_trim` gives back only the main arena's top: after a burst of 10,000 commands
/// the agent's second arena kept 208 KiB resident, 44 KiB with these.
#[allow(unsafe_code)]
pub fn trim_eagerly() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TOP_PAD, 0);
    }
}

/// Returns free pages of every arena to the kernel (after a burst of commands).
#[allow(unsafe_code)]
pub fn give_back_free_memory() {
    // SAFETY: malloc_trim is thread-safe and touches only the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}
