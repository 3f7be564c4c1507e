//! The disk fault: one fill file in a directory the policy allows, to a percent of that
//! filesystem or by a size, never past `policy.max_disk_fill_percent`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use troop_proto::{Refusal, pb};

use super::engine::{Applied, Effect};
use crate::host::disk::{FillDir, Usage};
use crate::host::fill_guard::Guard;
use crate::policy::Policy;
use troop_common::units::format_size;

/// A validated, planned fill: the directory is held open, so the fill lands where it was
/// planned whatever happens to the path meanwhile.
#[derive(Debug)]
pub struct DiskPlan {
    pub dir: Arc<FillDir>,
    pub name: String,
    pub bytes: u64,
    /// Used percent of the filesystem once filled.
    pub fill_percent: f64,
}

impl DiskPlan {
    /// The fill's path, as journaled for crash recovery.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }
}

/// Checks the request against policy and the filesystem as it is now. Callers serialise
/// planning and applying, so concurrent fills together stay under the cap.
pub fn plan(request: &pb::Disk, fault_id: &str, policy: &Policy) -> Result<DiskPlan, Refusal> {
    let path = allowed_dir(&request.path, policy)?;
    let dir = FillDir::open(&path).map_err(|error| {
        Refusal::InvalidArgument(format!("disk path {:?}: {error}", request.path))
    })?;
    let usage = dir
        .usage()
        .map_err(|error| Refusal::Internal(format!("statvfs {}: {error}", path.display())))?;
    let bytes = bytes_to_fill(request.amount.as_ref(), &usage, policy)?;
    Ok(DiskPlan {
        dir: Arc::new(dir),
        name: format!(".troop-fill-{fault_id}"),
        bytes,
        fill_percent: (usage.used + bytes) as f64 * 100.0 / usage.total.max(1) as f64,
    })
}

/// The request's directory, if it lies under one of the policy's `disk_paths`.
fn allowed_dir(path: &str, policy: &Policy) -> Result<PathBuf, Refusal> {
    if path.is_empty() || !path.starts_with('/') {
        return Err(Refusal::InvalidArgument(format!(
            "disk path {path:?} must be an absolute path"
        )));
    }
    let dir = Path::new(path)
        .canonicalize()
        .map_err(|error| Refusal::InvalidArgument(format!("disk path {path:?}: {error}")))?;
    if !dir.is_dir() {
        return Err(Refusal::InvalidArgument(format!(
            "disk path {path:?} is not a directory"
        )));
    }
    let allowed = policy
        .disk_paths
        .iter()
        .filter_map(|allowed| allowed.canonicalize().ok())
        .any(|allowed| dir.starts_with(allowed));
    if !allowed {
        return Err(Refusal::Policy(format!(
            "disk path {path:?} is not under this agent's policy.disk_paths"
        )));
    }
    Ok(dir)
}

/// How many bytes the request adds, refusing what would pass the policy's cap.
pub fn bytes_to_fill(
    amount: Option<&pb::disk::Amount>,
    usage: &Usage,
    policy: &Policy,
) -> Result<u64, Refusal> {
    use pb::disk::Amount;
    let cap = policy.max_disk_fill_percent;
    let bytes = match amount {
        None => {
            return Err(Refusal::InvalidArgument(
                "disk fault names neither a fill percent nor a size".into(),
            ));
        }
        Some(Amount::FillPercent(percent)) => {
            if !(1..=100).contains(percent) {
                return Err(Refusal::InvalidArgument(format!(
                    "fill percent {percent} is not 1 to 100"
                )));
            }
            if *percent > u32::from(cap) {
                return Err(Refusal::Policy(format!(
                    "fill to {percent}% is past this agent's policy.max_disk_fill_percent of {cap}%"
                )));
            }
            let target = (usage.total as u128 * u128::from(*percent) / 100) as u64;
            if target <= usage.used {
                return Err(Refusal::InvalidArgument(format!(
                    "the filesystem is already {:.1}% full, at or past {percent}%",
                    usage.used_percent()
                )));
            }
            target - usage.used
        }
        Some(Amount::Bytes(0)) => {
            return Err(Refusal::InvalidArgument(
                "fill size must be more than 0".into(),
            ));
        }
        Some(Amount::Bytes(bytes)) => *bytes,
    };
    let after = (usage.used as u128 + bytes as u128) * 100;
    if after > usage.total as u128 * u128::from(cap) {
        return Err(Refusal::Policy(format!(
            "adding {} would fill the filesystem past this agent's policy.max_disk_fill_percent of {cap}%",
            format_size(bytes)
        )));
    }
    if bytes > usage.available {
        return Err(Refusal::InvalidArgument(format!(
            "adding {} needs more than the {} available",
            format_size(bytes),
            format_size(usage.available)
        )));
    }
    Ok(bytes)
}

/// Fills, and leaves a guard (`helper_exe __guard-fill`) that removes the fill at
/// `until_unix_ms` should the agent be gone by then.
pub fn apply(plan: &DiskPlan, helper_exe: &Path, until_unix_ms: i64) -> Result<Applied, Refusal> {
    let file = plan.file();
    if let Err(error) = plan.dir.fill(&plan.name, plan.bytes) {
        // Not ours to remove if it was already there (create_new refused it).
        if error.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = plan.dir.remove(&plan.name);
        }
        return Err(Refusal::Internal(format!(
            "cannot fill {}: {error}",
            file.display()
        )));
    }
    // Without a guard the fill still ends at its deadline while the agent lives.
    let guard = Guard::start(helper_exe, &plan.dir, &plan.name, until_unix_ms)
        .inspect_err(|error| {
            tracing::warn!(path = %file.display(), %error, "cannot start the fill guard; the fill ends with the agent only");
        })
        .ok();
    Ok(Applied {
        summary: format!(
            "filled {} in {} ({:.1}% of the filesystem used)",
            format_size(plan.bytes),
            file.display(),
            plan.fill_percent
        ),
        effect: Box::new(DiskFill {
            dir: plan.dir.clone(),
            name: plan.name.clone(),
            bytes: plan.bytes,
            guard,
            removed: false,
        }),
    })
}

struct DiskFill {
    dir: Arc<FillDir>,
    name: String,
    bytes: u64,
    guard: Option<Guard>,
    removed: bool,
}

impl Effect for DiskFill {
    fn effect(&self) -> String {
        let used = self.dir.usage().map_or_else(
            |_| String::new(),
            |usage| format!(", filesystem {:.1}% used", usage.used_percent()),
        );
        format!(
            "{} in {}{used}",
            format_size(self.bytes),
            self.dir.path().join(&self.name).display()
        )
    }

    fn revert(&mut self) -> Result<(), String> {
        // The agent removes its own fill: the guard is no longer needed.
        drop(self.guard.take());
        self.dir.remove(&self.name).map_err(|error| {
            format!(
                "remove {}: {error}",
                self.dir.path().join(&self.name).display()
            )
        })?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for DiskFill {
    fn drop(&mut self) {
        drop(self.guard.take());
        if !self.removed {
            let _ = self.dir.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests;
