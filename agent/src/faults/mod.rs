//! Faults the agent applies. Each module validates its parameters from the wire into a
//! spec (refusing out-of-range values) and applies it through a host trait.

pub mod kill;
