//! The emergency-stop latch through the whole pipeline: signed commands in, faults and
//! refusals out.

use super::*;

fn emergency_stop(by: &str, reason: &str) -> pb::command::Action {
    pb::command::Action::EmergencyStop(pb::EmergencyStop {
        reason: reason.into(),
        by: by.into(),
    })
}

fn resume(by: &str) -> pb::command::Action {
    pb::command::Action::Resume(pb::Resume {
        reason: "checkout is back".into(),
        by: by.into(),
    })
}

fn halt() -> pb::command::Action {
    pb::command::Action::AbortAll(pb::AbortAll {})
}

fn assert_latched(status: &Status, by: &str) {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("emergency stop by {by}")),
        "{status:?}"
    );
}

#[test]
fn an_emergency_stop_reverts_everything_and_refuses_every_start_until_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    service
        .execute(&signed("r-1", 60_000, repeating_kill(60_000)))
        .unwrap();
    let stop = service
        .execute(&signed(
            "stop-1",
            60_000,
            emergency_stop("alice", "checkout is down"),
        ))
        .unwrap();
    assert_eq!(stop.aborted_fault_ids, ["r-1"]);
    assert!(stop.summary.starts_with("latched"), "{}", stop.summary);
    let status = service.status();
    assert!(status.active_faults.is_empty());
    let latch = status.latch.expect("Status shows the latch");
    assert_eq!(
        (latch.by.as_str(), latch.command_id.as_str()),
        ("alice", "stop-1")
    );
    assert_eq!(latch.reason, "checkout is down");

    for (id, start) in [
        ("r-2", repeating_kill(60_000)),
        (
            "k-1",
            pb::Command::decode(kill_nginx().payload.as_slice())
                .unwrap()
                .action
                .unwrap(),
        ),
    ] {
        let refused = service.execute(&signed(id, 60_000, start)).unwrap_err();
        assert_latched(&refused, "alice");
        assert!(
            refused.message().contains("checkout is down"),
            "{refused:?}"
        );
    }
    assert_eq!(
        table.signalled().len(),
        1,
        "only the kill before the stop ran"
    );
    // Ending things still works while latched.
    let halted = service.execute(&signed("h-1", 60_000, halt())).unwrap();
    assert!(halted.aborted_fault_ids.is_empty());

    let lifted = service
        .execute(&signed("resume-1", 60_000, resume("bob")))
        .unwrap();
    assert!(
        lifted
            .summary
            .contains("latch lifted (emergency stop by alice"),
        "{}",
        lifted.summary
    );
    assert_eq!(service.status().latch, None);
    service
        .execute(&signed("r-3", 60_000, repeating_kill(60_000)))
        .unwrap();
    assert_eq!(table.signalled().len(), 2);
    let again = service
        .execute(&signed("resume-2", 60_000, resume("bob")))
        .unwrap();
    assert_eq!(again.summary, "was not latched");
}

#[test]
fn the_latch_outlives_the_agent_process() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (service, _) = service(dir.path(), Policy::default());
        service
            .execute(&signed("stop-1", 60_000, emergency_stop("alice", "db")))
            .unwrap();
    }
    let (restarted, table) = service(dir.path(), Policy::default());
    assert_eq!(
        restarted.status().latch.map(|latch| latch.by),
        Some("alice".into())
    );
    let refused = restarted.execute(&kill_nginx()).unwrap_err();
    assert_latched(&refused, "alice");
    assert!(table.signalled().is_empty());
}

#[test]
fn a_resume_from_before_the_stop_or_replayed_lifts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    let now = now_unix_ms();
    // Signed before the stop, delivered after it (a delayed or held-back message).
    let early = signed_at("resume-0", now - 5_000, 60_000, resume("mallory"));
    service
        .execute(&signed_at(
            "stop-1",
            now,
            60_000,
            emergency_stop("alice", "db"),
        ))
        .unwrap();
    let refused = service.execute(&early).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("before the emergency stop"),
        "{refused:?}"
    );
    assert!(service.status().latch.is_some());

    // A resume that lifted one stop, sent again after a second stop.
    let first_resume = signed_at("resume-1", now + 1, 60_000, resume("bob"));
    service.execute(&first_resume).unwrap();
    service
        .execute(&signed_at(
            "stop-2",
            now + 2,
            60_000,
            emergency_stop("carol", "again"),
        ))
        .unwrap();
    let replayed = service.execute(&first_resume).unwrap();
    assert!(
        replayed.summary.contains("latch lifted"),
        "the first answer, again"
    );
    let latch = service
        .status()
        .latch
        .expect("still latched by the second stop");
    assert_eq!(latch.by, "carol");
    assert_latched(&service.execute(&kill_nginx()).unwrap_err(), "carol");
    assert!(table.signalled().is_empty());
}

#[test]
fn an_emergency_stop_without_a_reason_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = service(dir.path(), Policy::default());
    service
        .execute(&signed("r-1", 60_000, repeating_kill(60_000)))
        .unwrap();
    for (id, stop) in [
        ("s-1", emergency_stop("alice", " ")),
        ("s-2", emergency_stop("", "db")),
        ("s-3", emergency_stop("alice", "db\u{1b}[2J")),
    ] {
        let refused = service.execute(&signed(id, 60_000, stop)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let status = service.status();
    assert_eq!(status.latch, None);
    assert_eq!(
        status.active_faults.len(),
        1,
        "the running fault was left alone"
    );
}

/// Root can write anywhere, so the latch file is made unwritable by putting a
/// directory where it would go: the rename over it fails.
#[test]
fn a_latch_the_state_dir_cannot_take_still_holds_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    std::fs::create_dir_all(dir.path().join("latch.json/blocked")).unwrap();
    service
        .execute(&signed("r-1", 60_000, repeating_kill(60_000)))
        .unwrap();
    let stop = service
        .execute(&signed("stop-1", 60_000, emergency_stop("alice", "db")))
        .unwrap();
    assert!(
        stop.summary
            .contains("latched until this agent process ends"),
        "{}",
        stop.summary
    );
    assert_eq!(stop.aborted_fault_ids, ["r-1"]);
    assert_latched(&service.execute(&kill_nginx()).unwrap_err(), "alice");
    drop(service);
    // What is there now cannot be read as a latch either: the next start stays latched.
    let (restarted, _) = super::service(dir.path(), Policy::default());
    assert!(restarted.status().latch.is_some());
    assert_eq!(table.signalled().len(), 1);
}
