//! The host effects the agent has, each behind a narrow trait: a Linux implementation for
//! production and integration tests, and a fake that records calls for unit tests.

pub mod cpu;
pub mod disk;
pub mod fill_guard;
pub mod memory;
pub mod power;
pub mod process;

/// Runs the helper process this process was started as (a memory holder or a fill
/// guard) and exits; returns if it is no helper. Binaries call this first of all, so a
/// helper never starts logging, an async runtime or anything else of the agent.
pub fn run_helper_if_asked() {
    memory::run_holder_if_asked();
    fill_guard::run_guard_if_asked();
}
