use super::*;
use crate::faults::engine::Engine;
use crate::faults::journal::FaultJournal;
use crate::host::process::{FakeProcessTable, ProcessInfo};
use crate::policy::Policy;
use ed25519_dalek::SigningKey;
use troop_proto::sign_command;

fn victim() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        ppid: 1,
        name: "nginx".into(),
        exe: Some("/usr/sbin/nginx".into()),
        cmdline: vec!["nginx".into()],
        uid: Some(33),
        start_time: 1,
        kernel_thread: false,
        zombie: false,
    }
}

fn service(dir: &std::path::Path, policy: Policy) -> (AgentService, Arc<FakeProcessTable>) {
    let table = Arc::new(FakeProcessTable::new(vec![victim()]));
    let (journal, _) = FaultJournal::open(dir).unwrap();
    let service = AgentService::new(
        "web-1".into(),
        BTreeMap::new(),
        TrustedKeys::new([key().verifying_key()]),
        freshness::DEFAULT_CLOCK_SKEW,
        ReplayLedger::open(dir, now_unix_ms()).unwrap(),
        Runner::new(
            "web-1".into(),
            policy,
            Arc::new(Engine::new(journal)),
            table.clone(),
            "/nonexistent".into(),
        ),
        None,
    );
    (service, table)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

fn kill_nginx() -> pb::SignedCommand {
    let kill = pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms: 0,
        fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
            target: Some(pb::ProcessMatch {
                by: Some(pb::process_match::By::Name("nginx".into())),
            }),
            signal: 15,
            all_matches: true,
            repeat_every_ms: 0,
        })),
    });
    signed("c-1", 60_000, kill)
}

#[test]
fn an_accepted_kill_signals_through_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    let receipt = service.execute(&kill_nginx()).unwrap();
    assert_eq!(receipt.signalled[0].pid, 4242);
    assert_eq!(table.signalled(), [(4242, 15)]);
}

/// A fault start is on the disk before it runs; commands that only end faults wait for
/// no sync of their own (their second run would change nothing).
#[test]
fn only_commands_that_end_faults_skip_their_own_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = service(dir.path(), Policy::default());
    for (id, action) in [
        ("a-1", pb::command::Action::AbortAll(pb::AbortAll {})),
        (
            "a-2",
            pb::command::Action::Abort(pb::AbortFault {
                fault_id: "none".into(),
            }),
        ),
    ] {
        let _ = service.execute(&signed(id, 60_000, action));
    }
    assert_eq!(service.ledger.syncs(), 0);
    service.execute(&kill_nginx()).unwrap();
    assert_eq!(service.ledger.syncs(), 1, "the kill's admission");
}

#[test]
fn an_unwritable_ledger_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    service.ledger.fail_writes();
    let status = service.execute(&kill_nginx()).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("nothing was run"), "{status:?}");
    assert!(table.signalled().is_empty());
}

#[test]
fn policy_refusals_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = Policy::default();
    policy.protected_processes.insert("nginx".into());
    let (service, table) = service(dir.path(), policy);
    let status = service.execute(&kill_nginx()).unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("protected_processes"),
        "{status:?}"
    );
    assert!(table.signalled().is_empty());
}

#[test]
fn ids_that_are_not_plain_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    let long = "x".repeat(129);
    for id in [
        "c\u{1b}[2J",
        "../../etc/x",
        "a/b",
        "..",
        ".",
        "",
        "a b",
        "é",
        &long,
    ] {
        let mut command = pb::Command::decode(kill_nginx().payload.as_slice()).unwrap();
        command.command_id = id.into();
        let status = service
            .execute(&sign_command(&command, &key()))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id:?}");
        assert!(status.message().contains("command_id"), "{status:?}");
    }
    assert!(table.signalled().is_empty());
    assert!(is_valid_command_id("0b0c4f6e-8a1d-4c4e-9d7c-1f2a3b4c5d6e"));
    assert!(is_valid_command_id("run-12.step_3"));
}

fn signed(id: &str, validity_ms: i64, action: pb::command::Action) -> pb::SignedCommand {
    signed_at(id, now_unix_ms(), validity_ms, action)
}

fn signed_at(
    id: &str,
    issued_at_unix_ms: i64,
    validity_ms: i64,
    action: pb::command::Action,
) -> pb::SignedCommand {
    let command = pb::Command {
        trace_context: None,
        command_id: id.into(),
        agent_id: "web-1".into(),
        issued_at_unix_ms,
        expires_at_unix_ms: issued_at_unix_ms + validity_ms,
        action: Some(action),
    };
    sign_command(&command, &key())
}

fn repeating_kill(duration_ms: u64) -> pb::command::Action {
    pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms,
        fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
            target: Some(pb::ProcessMatch {
                by: Some(pb::process_match::By::Name("nginx".into())),
            }),
            signal: 15,
            all_matches: true,
            repeat_every_ms: 60_000,
        })),
    })
}

/// Once the ledger no longer guards an id (its window is over), a new command with
/// the same id must still not replace the fault that runs under it.
#[test]
fn a_new_command_reusing_the_id_of_a_running_fault_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    service.settings.write().unwrap().max_clock_skew = Duration::ZERO;
    service
        .execute(&signed("r-1", 100, repeating_kill(60_000)))
        .unwrap();
    assert_eq!(table.signalled().len(), 1);
    std::thread::sleep(Duration::from_millis(150));
    let status = service
        .execute(&signed("r-1", 60_000, repeating_kill(30_000)))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("still active"), "{status:?}");
    assert_eq!(
        table.signalled().len(),
        1,
        "the refused start signalled nothing"
    );
    let active = service.status().active_faults;
    assert_eq!(active.len(), 1);
    assert_eq!(
        active[0].ends_at_unix_ms - active[0].started_at_unix_ms,
        60_000
    );
    let halt = service
        .execute(&signed(
            "h-1",
            60_000,
            pb::command::Action::AbortAll(pb::AbortAll {}),
        ))
        .unwrap();
    assert_eq!(halt.aborted_fault_ids, ["r-1"]);
}

#[test]
fn halt_and_aborts_still_run_when_the_ledger_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let (service, table) = service(dir.path(), Policy::default());
    service
        .execute(&signed("r-1", 60_000, repeating_kill(60_000)))
        .unwrap();
    service
        .execute(&signed("r-2", 60_000, repeating_kill(60_000)))
        .unwrap();
    service.ledger.fail_writes();
    let start = service
        .execute(&signed("r-3", 60_000, repeating_kill(60_000)))
        .unwrap_err();
    assert_eq!(start.code(), tonic::Code::Unavailable);
    let abort = pb::command::Action::Abort(pb::AbortFault {
        fault_id: "r-1".into(),
    });
    service.execute(&signed("a-1", 60_000, abort)).unwrap();
    let halt = service
        .execute(&signed(
            "h-1",
            60_000,
            pb::command::Action::AbortAll(pb::AbortAll {}),
        ))
        .unwrap();
    assert_eq!(halt.aborted_fault_ids, ["r-2"]);
    assert!(service.status().active_faults.is_empty());
    assert_eq!(table.signalled().len(), 2, "only the two first kills ran");
}

/// The same signed command, re-sent after the agent restarted with its clock far
/// ahead (so the ledger forgot it) and then set right again, runs nothing.
#[test]
fn a_replay_after_the_clock_jumped_ahead_and_back_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let command = kill_nginx();
    {
        let (service, table) = service(dir.path(), Policy::default());
        service.execute(&command).unwrap();
        assert_eq!(table.signalled().len(), 1);
    }
    drop(ReplayLedger::open(dir.path(), now_unix_ms() + 3_600_000).unwrap());
    let (service, table) = service(dir.path(), Policy::default());
    let status = service.execute(&command).unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("replay horizon"), "{status:?}");
    assert!(table.signalled().is_empty());
}

mod latch;
