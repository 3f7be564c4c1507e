//! troop-coordinator: the fleet side of troop, and the `troop` CLI.
//!
//! - [`config`]: `troop.toml` and the static fleet.
//! - [`selector`] and [`picker`]: which agents a command goes to.
//! - [`signer`]: commands built and Ed25519-signed.
//! - [`client`] and [`dispatch`]: mutual-TLS channels to agents, many at once.
//! - [`pki`]: the fleet CA, certificates and the signing key.
//! - [`campaign`]: campaign files, schedules, the guardrail planner and probes.
//! - [`store`]: the audit store (SQLite): every run, step, command and probe result.
//!
//! The binary (`src/main.rs`, `src/commands/`) turns these into the CLI.
#![forbid(unsafe_code)]

pub mod campaign;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod picker;
pub mod pki;
pub mod selector;
pub mod signal;
pub mod signer;
pub mod store;
pub mod table;
