//! Campaigns: Chaos Monkey practice rather than a remote kill switch.
//!
//! - [`file`]: the campaign file, validated with every problem at its line and column.
//! - [`schedule`]: when a campaign fires (every + jitter, inside a window, outside
//!   blackouts, per-group mean and minimum time between strikes): pure functions.
//! - [`planner`]: which hosts a step may fault right now, inside the guardrails; pure.
//! - [`probe`]: steady-state checks that stop a campaign when the service breaks.
//! - [`events`]: what a run reports as it goes, and how it ended.
//! - [`runner`]: one run against a fleet: steps, leases, probes, aborts, the audit trail.
//! - [`scheduler`]: which scheduled campaign fires next, and which groups it strikes.
//! - [`leader`]: which of several `troop serve` sharing one store fires the schedules.

pub mod events;
pub mod file;
pub mod leader;
pub mod planner;
pub mod probe;
pub mod runner;
pub mod schedule;
pub mod scheduler;

pub use file::{Campaign, CampaignError};
