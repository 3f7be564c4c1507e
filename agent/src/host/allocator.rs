//! How the agent uses glibc's allocator. It runs next to the service it tests, so what it
//! freed goes back to the host: glibc keeps an arena per thread (up to eight per core)
//! and gives memory back only from the top of each, so an agent that once held a burst
//! of commands would keep their pages for good.

/// Arenas glibc may make: the agent's threads are few and rarely allocate at once.
const ARENAS: i32 = 2;

/// Call first in `main`, before any thread exists.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; no thread allocates yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
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
