//! What a run says as it goes and how it ended: the words the runner, the CLI, serve's
//! operator stream and its wire format share, kept apart from the runner so that those
//! who only listen need not depend on it.

/// What a run reports as it goes, for a person watching (the CLI) or a log (serve).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Started {
        campaign: String,
        /// `None` for a dry run, which records nothing.
        run: Option<i64>,
        seed: u64,
    },
    /// Step `index` (from 0) is sent to `targets` hosts; `held_back` were spared by the
    /// guardrails.
    Step {
        index: usize,
        action: String,
        targets: usize,
        held_back: usize,
    },
    /// A dry run's pick: step `index` would fault `target`.
    WouldFault {
        index: usize,
        target: String,
    },
    Applied {
        agent: String,
        summary: String,
    },
    NotApplied {
        agent: String,
        outcome: String,
        error: String,
    },
    /// A probe failed `failed` times in a row; at `of` the run stops.
    ProbeFailed {
        probe: String,
        detail: String,
        failed: u32,
        of: u32,
    },
    Aborting {
        reason: String,
        faults: usize,
    },
    AbortNotApplied {
        agent: String,
        error: String,
    },
    /// The store refused the aborts' records, so none was sent; the leases end the faults.
    AbortsNotSent {
        error: String,
    },
}

/// Where a run's events go.
pub trait Progress: Send + Sync {
    fn event(&self, event: RunEvent);
}

/// Events nobody watches.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: RunEvent) {}
}

/// Why a run stops early; `None` while it may go on.
pub type StopReason = Option<String>;

/// How a run ended, for the summary and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: Option<i64>,
    pub status: String,
    pub reason: String,
    pub sent: usize,
    pub applied: usize,
    pub not_applied: usize,
    pub reverted_early: usize,
}
