//! troop's wire contract.
//!
//! - [`pb`]: the generated agent API (`proto/troop/agent/v1/agent.proto`, compiled by
//!   protox in `build.rs`, so no protoc is needed).
//! - [`envelope`]: signing and verifying commands exactly as the contract says: Ed25519
//!   over a domain prefix and the exact payload bytes, verified before anything is decoded.
//! - [`freshness`]: the binding and validity-window checks every agent applies.
//! - [`refusal`]: one typed reason per way a command can be refused, and its gRPC code.
//!
//! Start reading at [`envelope::TrustedKeys::verify`].
#![forbid(unsafe_code)]

pub mod envelope;
pub mod freshness;
pub mod refusal;

/// Generated protobuf and gRPC code for `troop.agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("troop.agent.v1");
}

pub use envelope::{SIGNING_DOMAIN, TrustedKeys, key_id, sign_command};
pub use refusal::Refusal;
