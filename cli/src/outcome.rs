//! How a command that ran went: the exit code of `troop`.

use std::process::ExitCode;

/// How a command that ran went, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every target succeeded.
    Success,
    /// Some target failed, was refused or could not be reached.
    Partial,
}

impl Outcome {
    pub fn from_all_ok(all_ok: bool) -> Self {
        if all_ok {
            Outcome::Success
        } else {
            Outcome::Partial
        }
    }

    /// Success only if both are.
    pub fn and(self, other: Outcome) -> Outcome {
        Outcome::from_all_ok(self == Outcome::Success && other == Outcome::Success)
    }

    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Partial => ExitCode::from(1),
        }
    }
}
