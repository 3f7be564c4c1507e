//! The emergency-stop latch. While it is set the agent starts no fault, whoever signed
//! the command; aborts, halts, renewals and Status go on working. It is a file in the
//! state dir, written before the faults are reverted, so a restart or a crash keeps it.
//! A latch file that cannot be read latches too: an emergency stop must never be lost
//! to a damaged file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use troop_common::latch::{MAX_BY_CHARS, latched_message};
use troop_proto::{Refusal, pb};

const LATCH_FILE: &str = "latch.json";
pub use troop_common::latch::MAX_REASON_CHARS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latch {
    pub command_id: String,
    pub by: String,
    pub reason: String,
    pub at_unix_ms: i64,
}

impl Latch {
    /// The latch an `EmergencyStop` command sets, its text checked.
    pub fn from_command(command: &pb::Command, stop: &pb::EmergencyStop) -> Result<Self, Refusal> {
        Ok(Self {
            command_id: command.command_id.clone(),
            by: checked_text("by", &stop.by, MAX_BY_CHARS)?,
            reason: checked_text("reason", &stop.reason, MAX_REASON_CHARS)?,
            at_unix_ms: command.issued_at_unix_ms,
        })
    }

    /// What every StartFault gets while latched.
    pub fn refusal(&self) -> Refusal {
        Refusal::Latched(latched_message(
            &self.by,
            self.at_unix_ms,
            &format!("command {}", self.command_id),
            &self.reason,
        ))
    }

    pub fn to_pb(&self) -> pb::Latch {
        pb::Latch {
            command_id: self.command_id.clone(),
            by: self.by.clone(),
            reason: self.reason.clone(),
            at_unix_ms: self.at_unix_ms,
        }
    }
}

/// `text` checked as a latch's `key` (non-blank, short, printable).
pub fn checked_text(key: &str, text: &str, max: usize) -> Result<String, Refusal> {
    troop_common::latch::checked_text(key, text, max).map_err(Refusal::InvalidArgument)
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LATCH_FILE)
}

/// The latch left by an earlier agent process, if any.
pub fn load(state_dir: &Path) -> Option<Latch> {
    let path = path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => return Some(unreadable(&path, &error.to_string())),
    };
    Some(
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|error| unreadable(&path, &error.to_string())),
    )
}

fn unreadable(path: &Path, error: &str) -> Latch {
    tracing::error!(path = %path.display(), %error, "the latch file is unreadable; staying latched");
    Latch {
        command_id: "-".into(),
        by: "an unreadable latch file".into(),
        reason: format!(
            "{} cannot be read ({error}); a resume rewrites it",
            path.display()
        ),
        at_unix_ms: 0,
    }
}

pub fn save(state_dir: &Path, latch: &Latch) -> std::io::Result<()> {
    crate::state_file::write_atomic(&path(state_dir), &serde_json::to_vec(latch)?)
}

pub fn clear(state_dir: &Path) -> std::io::Result<()> {
    let path = path(state_dir);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => crate::state_file::sync_dir(state_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latch() -> Latch {
        Latch {
            command_id: "c-1".into(),
            by: "alice".into(),
            reason: "checkout is down".into(),
            at_unix_ms: 1_796_000_000_000,
        }
    }

    #[test]
    fn a_latch_outlives_the_process_and_a_resume_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        save(dir.path(), &latch()).unwrap();
        assert_eq!(load(dir.path()), Some(latch()));
        clear(dir.path()).unwrap();
        assert_eq!(load(dir.path()), None);
        clear(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_latch_file_still_latches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LATCH_FILE), b"{\"by\": tru").unwrap();
        let latch = load(dir.path()).expect("still latched");
        let message = latch.refusal().to_string();
        assert!(message.contains("latch.json cannot be read"), "{message}");
    }

    #[test]
    fn the_refusal_names_who_when_and_why() {
        let message = latch().refusal().to_string();
        assert!(
            message.contains("by alice at 2026-11-30T00:53:20Z"),
            "{message}"
        );
        assert!(message.contains("checkout is down"), "{message}");
        assert_eq!(latch().refusal().code(), tonic::Code::FailedPrecondition);
    }
}
