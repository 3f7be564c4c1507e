//! troop-common: what the agent and the coordinator both need, and nothing that acts on
//! a host. Quantities as operators write them ([`units`]), names ([`names`]), TLS
//! material ([`tls`]), whose a certificate is ([`identity`]), a guarded mutual-TLS
//! acceptor for gRPC servers ([`listener`]), the wall clock ([`clock`]), the emergency-stop latch's words ([`latch`]), systemd readiness ([`notify`]) and
//! reading a host from outside ([`observe`]); how the processes use glibc's allocator
//! ([`allocator`], the crate's one use of `unsafe`).
#![deny(unsafe_code)]

pub mod agent_file;
pub mod allocator;
pub mod clock;
pub mod identity;
pub mod latch;
pub mod listener;
pub mod names;
pub mod notify;
pub mod observe;
pub mod tls;
pub mod units;
