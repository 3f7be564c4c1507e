//! troop-lab: a fleet on this machine, as the demo, the tests and the benchmarks use it.
//!
//! - [`host`]: one host, a PID and mount namespace with its own `/proc`, services and an
//!   agent process.
//! - [`net`]: network namespaces on a lab bridge, so hosts have addresses (root only).
//! - [`pki`]: a throwaway fleet CA, certificates and signing key.
//! - [`files`]: `agent.toml` and `troop.toml` built as typed values and serialised.
//! - [`lab`]: all of it together: hosts running the real `troop-agent` binary, driven
//!   with the real `troop` CLI; everything ends when the lab is dropped.
#![forbid(unsafe_code)]

pub mod files;
pub mod host;
pub mod lab;
pub mod net;
pub mod pki;

pub use lab::{Binaries, Lab, LabHost};
pub use pki::Pki;
