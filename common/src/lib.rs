//! troop-common: what the agent and the coordinator both need, and nothing that acts on
//! a host. Quantities as operators write them ([`units`]), names ([`names`]), TLS
//! material ([`tls`]), the wall clock ([`clock`]), systemd readiness ([`notify`]) and
//! reading a host from outside ([`observe`]).
#![forbid(unsafe_code)]

pub mod agent_file;
pub mod clock;
pub mod names;
pub mod notify;
pub mod observe;
pub mod tls;
pub mod units;
