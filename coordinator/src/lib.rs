//! troop-coordinator: the fleet side of troop, as a library. The `troop` binary (crate
//! `troop`, `cli/`) parses arguments, calls this and prints; it holds no loop of its own.
//!
//! - [`config`]: `troop.toml` and the static fleet.
//! - [`fleet`]: the one interface to the fleet (config and dispatcher) that runs,
//!   attacks, halts and status go through.
//! - [`selector`] and [`picker`]: which agents a command goes to.
//! - [`signer`]: commands built and Ed25519-signed.
//! - [`client`] and [`dispatch`]: mutual-TLS channels to agents, many at once, or
//!   requests down the streams of agents that dialled in to `troop serve` ([`live`]).
//! - [`serve`]: `troop serve`'s port: agents' streams and the operator API, by role;
//!   [`remote`] is that API's client and [`wire`] its messages.
//! - [`pki`]: the fleet CA, certificates and the signing key; [`enrolment`]: join tokens,
//!   certificates issued, renewed and revoked by serve; [`rotation`]: signing-key rotation.
//! - [`campaign`]: campaign files, schedules, the guardrail planner, probes, the runner
//!   and the scheduler.
//! - [`latch`]: serve's emergency stop, kept in the store and sent to every agent.
//! - [`audit`]: every command recorded before it is sent, its outcome after.
//! - [`describe`]: actions, faults and outcomes in words.
//! - [`store`]: the audit store (SQLite): every run, step, command and probe result.
#![forbid(unsafe_code)]

pub mod audit;
pub mod campaign;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod describe;
pub mod dispatch;
pub mod enrolment;
pub mod findings;
pub mod fleet;
pub mod latch;
pub mod live;
pub mod metrics;
pub mod picker;
pub mod pki;
pub mod remote;
pub mod rotation;
pub mod selector;
pub mod serve;
pub mod signal;
pub mod signer;
pub mod store;
pub mod table;
pub mod timeline;
pub mod trace_metadata;
pub mod wire;
