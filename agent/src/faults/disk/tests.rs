use super::*;
use pb::disk::Amount;

const GIB: u64 = 1 << 30;

fn usage(used: u64) -> Usage {
    Usage {
        total: 10 * GIB,
        used,
        available: 10 * GIB - used,
    }
}

#[test]
fn a_percent_fills_up_to_that_share_of_the_filesystem() {
    let bytes = bytes_to_fill(
        Some(&Amount::FillPercent(80)),
        &usage(2 * GIB),
        &Policy::default(),
    );
    assert_eq!(bytes, Ok(6 * GIB));
}

#[test]
fn the_policy_cap_and_bad_amounts_are_refused() {
    let policy = Policy {
        max_disk_fill_percent: 90,
        ..Policy::default()
    };
    let refuse = |amount: Option<Amount>, used: u64| {
        bytes_to_fill(amount.as_ref(), &usage(used), &policy).unwrap_err()
    };
    assert!(matches!(
        refuse(Some(Amount::FillPercent(95)), 0),
        Refusal::Policy(_)
    ));
    assert!(matches!(
        refuse(Some(Amount::Bytes(9 * GIB + 1)), 0),
        Refusal::Policy(_)
    ));
    assert!(matches!(
        refuse(Some(Amount::FillPercent(0)), 0),
        Refusal::InvalidArgument(_)
    ));
    assert!(matches!(
        refuse(Some(Amount::FillPercent(50)), 6 * GIB),
        Refusal::InvalidArgument(_)
    ));
    assert!(matches!(
        refuse(Some(Amount::Bytes(0)), 0),
        Refusal::InvalidArgument(_)
    ));
    assert!(matches!(refuse(None, 0), Refusal::InvalidArgument(_)));
}

#[test]
fn only_paths_under_the_policy_are_allowed() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let policy = Policy {
        disk_paths: vec![allowed.path().to_path_buf()],
        ..Policy::default()
    };
    std::fs::create_dir(allowed.path().join("sub")).unwrap();
    let sub = allowed.path().join("sub");
    assert!(allowed_dir(sub.to_str().unwrap(), &policy).is_ok());
    let escape = format!(
        "{}/sub/../../{}",
        allowed.path().display(),
        other.path().file_name().unwrap().to_str().unwrap()
    );
    assert!(matches!(
        allowed_dir(&escape, &policy),
        Err(Refusal::Policy(_))
    ));
    assert!(matches!(
        allowed_dir(other.path().to_str().unwrap(), &policy),
        Err(Refusal::Policy(_))
    ));
    assert!(matches!(
        allowed_dir("relative", &policy),
        Err(Refusal::InvalidArgument(_))
    ));
}

fn plan_in(dir: &Path, bytes: u64) -> DiskPlan {
    let policy = Policy {
        disk_paths: vec![dir.to_path_buf()],
        ..Policy::default()
    };
    let request = pb::Disk {
        path: dir.to_str().unwrap().into(),
        amount: Some(Amount::Bytes(bytes)),
    };
    plan(&request, "t", &policy).unwrap()
}

#[test]
fn a_fill_is_allocated_and_reverted() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_in(&dir.path().canonicalize().unwrap(), 8 << 20);
    let mut applied = apply(&plan, Path::new("/nonexistent"), 0).unwrap();
    let allocated = std::fs::metadata(plan.file()).unwrap();
    assert_eq!(allocated.len(), 8 << 20);
    applied.effect.revert().unwrap();
    assert!(!plan.file().exists());
    applied.effect.revert().unwrap();
}

#[test]
fn a_dropped_fill_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_in(&dir.path().canonicalize().unwrap(), 1 << 20);
    let applied = apply(&plan, Path::new("/nonexistent"), 0).unwrap();
    assert!(plan.file().exists());
    drop(applied);
    assert!(!plan.file().exists());
}

/// The path is swapped for a link to another directory between planning and filling,
/// and again before the revert: the fill stays in the directory that was checked.
#[test]
fn a_swapped_path_cannot_move_the_fill_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let (allowed, moved, outside) = (root.join("fill"), root.join("moved"), root.join("etc"));
    std::fs::create_dir(&allowed).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let plan = plan_in(&allowed, 1 << 20);
    std::fs::rename(&allowed, &moved).unwrap();
    std::os::unix::fs::symlink(&outside, &allowed).unwrap();
    let mut applied = apply(&plan, Path::new("/nonexistent"), 0).unwrap();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(moved.join(".troop-fill-t").exists());
    // A file of the same name outside is never what the revert removes.
    std::fs::write(outside.join(".troop-fill-t"), b"not ours").unwrap();
    applied.effect.revert().unwrap();
    assert!(!moved.join(".troop-fill-t").exists());
    assert!(outside.join(".troop-fill-t").exists());
    // Crash recovery of the recorded path refuses the link that now stands there.
    assert!(crate::host::disk::remove_fill(&allowed.join(".troop-fill-t")).is_err());
    assert!(outside.join(".troop-fill-t").exists());
}

#[test]
fn an_existing_file_or_link_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let target = dir.join("victim");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, dir.join(".troop-fill-t")).unwrap();
    let plan = plan_in(&dir, 1 << 20);
    assert!(apply(&plan, Path::new("/nonexistent"), 0).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(
        dir.join(".troop-fill-t").symlink_metadata().is_ok(),
        "the link is left alone"
    );
}
