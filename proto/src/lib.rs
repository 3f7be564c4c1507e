//! troop's wire contract.
//!
//! - [`pb`]: the generated agent API (`proto/troop/agent/v1/agent.proto`, compiled by
//!   protox in `build.rs`, so no protoc is needed).
//! - [`envelope`]: signing and verifying commands exactly as the contract says: Ed25519
//!   over a domain prefix and the exact payload bytes, verified before anything is decoded.
//! - [`freshness`]: the binding and validity-window checks every agent applies.
//! - [`refusal`]: one typed reason per way a command can be refused, and its gRPC code.
//! - [`describe`]: faults in words, the same for agents and coordinators.
//!
//! Start reading at [`envelope::TrustedKeys::verify`].
#![forbid(unsafe_code)]

pub mod describe;
pub mod envelope;
pub mod freshness;
pub mod refusal;

/// Generated protobuf and gRPC code, nested as the packages are (the coordinator's
/// messages refer to the agent's by package path).
#[allow(clippy::all, missing_docs)]
mod generated {
    pub mod troop {
        pub mod agent {
            pub mod v1 {
                tonic::include_proto!("troop.agent.v1");
            }
        }
        pub mod coordinator {
            pub mod v1 {
                tonic::include_proto!("troop.coordinator.v1");
            }
        }
    }
}

/// The agent API, `troop.agent.v1` (`proto/troop/agent/v1/agent.proto`, compiled by
/// protox in `build.rs`, so no protoc is needed).
pub use generated::troop::agent::v1 as pb;
/// `troop serve`'s API, `troop.coordinator.v1`: agents' streams and the operator API
/// (`proto/troop/coordinator/v1/coordinator.proto`).
pub use generated::troop::coordinator::v1 as serve_pb;

pub use envelope::{SIGNING_DOMAIN, TrustedKeys, key_id, raw_public_key, sign_command};
pub use refusal::Refusal;
