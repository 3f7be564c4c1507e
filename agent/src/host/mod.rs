//! The host effects the agent has, each behind a narrow trait: a Linux implementation for
//! production and integration tests, and a fake that records calls for unit tests.

pub mod cpu;
pub mod disk;
pub mod memory;
pub mod power;
pub mod process;
