use super::*;
use Durability::{Synced, WithNextSync};

const NOW: i64 = 1_000_000;

fn receipt() -> FirstAnswer {
    FirstAnswer::Receipt("0a01".into())
}

/// A command remembered until it expires, admitted with a sync of its own.
fn admit(ledger: &ReplayLedger, id: &str, digest: &str, expires: i64, now: i64) -> Admission {
    ledger
        .admit(id, digest, expires, expires, now, Synced)
        .unwrap()
}

#[test]
fn first_use_then_exact_replay_then_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(admit(&ledger, "a", "d1", NOW + 10, NOW), Admission::New);
    assert_eq!(admit(&ledger, "a", "d1", NOW + 10, NOW), Admission::Pending);
    ledger.finish("a", "d1", receipt(), NOW).unwrap();
    assert_eq!(
        admit(&ledger, "a", "d1", NOW + 10, NOW),
        Admission::Replay(receipt())
    );
    assert_eq!(
        admit(&ledger, "a", "d2", NOW + 10, NOW),
        Admission::Conflict
    );
}

#[test]
fn survives_a_restart_and_forgets_what_expired() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        admit(&ledger, "done", "d", NOW + 100, NOW);
        ledger.finish("done", "d", receipt(), NOW).unwrap();
        admit(&ledger, "crashed", "d", NOW + 100, NOW);
        admit(&ledger, "old", "d", NOW + 1, NOW);
    }
    let ledger = ReplayLedger::open(dir.path(), NOW + 50).unwrap();
    assert_eq!(
        admit(&ledger, "done", "d", NOW + 100, NOW + 50),
        Admission::Replay(receipt())
    );
    assert_eq!(
        admit(&ledger, "crashed", "d", NOW + 100, NOW + 50),
        Admission::Pending
    );
    assert_eq!(
        admit(&ledger, "old", "d", NOW + 100, NOW + 50),
        Admission::New
    );
    let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(!text.contains("\"old\",\"digest\":\"d\",\"until_unix_ms\":1000001"));
}

#[test]
fn a_torn_last_line_keeps_the_admission() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        admit(&ledger, "a", "d", NOW + 100, NOW);
    }
    let mut file = open_append(&dir.path().join(FILE_NAME)).unwrap();
    file.write_all(b"{\"id\":\"a\",\"dig").unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(admit(&ledger, "a", "d", NOW + 100, NOW), Admission::Pending);
}

#[test]
fn an_id_reused_after_expiry_keeps_its_new_digest_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        admit(&ledger, "a", "old", NOW + 10, NOW);
        ledger.finish("a", "old", receipt(), NOW).unwrap();
        assert_eq!(
            admit(&ledger, "a", "new", NOW + 100, NOW + 50),
            Admission::New
        );
    }
    let ledger = ReplayLedger::open(dir.path(), NOW + 50).unwrap();
    assert_eq!(
        admit(&ledger, "a", "new", NOW + 100, NOW + 50),
        Admission::Pending
    );
    assert_eq!(
        admit(&ledger, "a", "old", NOW + 100, NOW + 50),
        Admission::Conflict
    );
}

#[test]
fn one_state_dir_serves_one_agent_and_check_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    admit(&ledger, "a", "d", NOW + 100, NOW);
    let error = ReplayLedger::open(dir.path(), NOW).unwrap_err();
    assert!(format!("{:?}", error).contains("in use by another running troop-agent"));
    let before = fs::read(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(ReplayLedger::check(dir.path()).unwrap(), 1);
    assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), before);
    assert_eq!(admit(&ledger, "b", "d", NOW + 100, NOW), Admission::New);
    drop(ledger);
    assert!(
        ReplayLedger::open(dir.path(), NOW).is_ok(),
        "the lock goes with the agent"
    );
}

#[test]
fn a_failed_write_stops_admissions_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger.fail_writes();
    assert!(
        ledger
            .admit("a", "d", NOW + 100, NOW + 100, NOW, Synced)
            .is_err()
    );
    assert!(
        ledger
            .admit("b", "d", NOW + 100, NOW + 100, NOW, Synced)
            .is_err(),
        "must stay stopped"
    );
    drop(ledger);
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(admit(&ledger, "a", "d", NOW + 100, NOW), Admission::New);
}

#[test]
fn a_forgotten_command_stays_refused_after_the_clock_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        ledger
            .admit("a", "d", NOW + 10, NOW + 40, NOW, Synced)
            .unwrap();
        ledger.finish("a", "d", receipt(), NOW).unwrap();
    }
    // Opened with the clock far ahead: "a" is past its window and forgotten.
    drop(ReplayLedger::open(dir.path(), NOW + 1_000_000).unwrap());
    assert!(
        !fs::read_to_string(dir.path().join(FILE_NAME))
            .unwrap()
            .contains("\"a\"")
    );
    // The clock is set back (or the skew raised), so "a" looks fresh again.
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(
        ledger
            .admit("a", "d", NOW + 10, NOW + 40, NOW, Synced)
            .unwrap(),
        Admission::BeyondHorizon
    );
    assert_eq!(
        ledger
            .admit("b", "d", NOW + 11, NOW + 41, NOW, Synced)
            .unwrap(),
        Admission::New,
        "commands expiring after the horizon are admitted"
    );
}

#[test]
fn a_remembered_command_is_a_replay_even_when_its_window_looks_over() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger
        .admit("a", "d", NOW + 10, NOW + 40, NOW, Synced)
        .unwrap();
    ledger.finish("a", "d", receipt(), NOW).unwrap();
    // A larger skew now makes it fresh at NOW + 100: still the first outcome.
    assert_eq!(
        ledger
            .admit("a", "d", NOW + 10, NOW + 130, NOW + 100, Synced)
            .unwrap(),
        Admission::Replay(receipt())
    );
    // Another command taking over the expired id moves the horizon past the first.
    assert_eq!(
        ledger
            .admit("a", "e", NOW + 200, NOW + 230, NOW + 100, Synced)
            .unwrap(),
        Admission::New
    );
    drop(ledger);
    let ledger = ReplayLedger::open(dir.path(), NOW + 100).unwrap();
    assert_eq!(
        ledger
            .admit("a", "d", NOW + 10, NOW + 130, NOW + 100, Synced)
            .unwrap(),
        Admission::Conflict
    );
    assert_eq!(
        ledger
            .admit("z", "d", NOW + 10, NOW + 130, NOW + 100, Synced)
            .unwrap(),
        Admission::BeyondHorizon
    );
}

#[test]
fn compaction_keeps_the_file_small() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger.compact_after_lines = 64;
    for i in 0..256 {
        let id = i.to_string();
        admit(&ledger, &id, "d", NOW + i, NOW + i);
        ledger.finish(&id, "d", receipt(), NOW + i).unwrap();
    }
    let lines = lines_in(dir.path());
    assert!(lines <= 64, "{lines} lines");
    // The lines compaction copied still answer exact retries, also after a restart.
    let last = NOW + 255;
    assert_eq!(
        admit(&ledger, "255", "d", last, last),
        Admission::Replay(receipt())
    );
    drop(ledger);
    let ledger = ReplayLedger::open(dir.path(), last).unwrap();
    assert_eq!(
        admit(&ledger, "255", "d", last, last),
        Admission::Replay(receipt())
    );
}

/// What a remembered command costs in memory: its 16-byte slot in the map, nothing more.
#[test]
fn an_entry_is_16_bytes_in_memory() {
    assert_eq!(std::mem::size_of::<(Key, Slot)>(), 16);
}

/// Compaction writes a finished command as one line that holds its outcome: the next
/// start must read that line as the command, or the command could run again.
#[test]
fn a_finished_command_outlives_a_compaction_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        admit(&ledger, "a", "d", NOW + 100, NOW);
        ledger.finish("a", "d", receipt(), NOW).unwrap();
    }
    for _ in 0..2 {
        // Each open compacts the file.
        let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
        assert_eq!(
            admit(&ledger, "a", "d", NOW + 100, NOW),
            Admission::Replay(receipt())
        );
    }
}

/// The outcome of a command whose id was taken over (after it expired) while it ran
/// belongs to it alone, not to the command that now holds the id.
#[test]
fn a_late_outcome_never_completes_the_next_user_of_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    admit(&ledger, "a", "old", NOW + 10, NOW);
    admit(&ledger, "a", "new", NOW + 100, NOW + 50);
    ledger.finish("a", "old", receipt(), NOW + 50).unwrap();
    let retry = |ledger: &ReplayLedger| admit(ledger, "a", "new", NOW + 100, NOW + 50);
    assert_eq!(retry(&ledger), Admission::Pending);
    drop(ledger);
    let ledger = ReplayLedger::open(dir.path(), NOW + 50).unwrap();
    assert_eq!(retry(&ledger), Admission::Pending);
}

/// A command admitted with the next sync waits for none of its own, and is remembered like
/// any other: an exact retry is answered, a reused id refused, and it is in the file.
#[test]
fn a_command_admitted_with_the_next_sync_is_remembered_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(
        ledger
            .admit("end", "d1", NOW + 10, NOW + 10, NOW, WithNextSync)
            .unwrap(),
        Admission::New
    );
    assert_eq!(ledger.syncs(), 0);
    assert_eq!(
        ledger
            .admit("end", "d1", NOW + 10, NOW + 10, NOW, WithNextSync)
            .unwrap(),
        Admission::Pending
    );
    assert_eq!(
        admit(&ledger, "end", "d2", NOW + 10, NOW),
        Admission::Conflict
    );
    assert_eq!(admit(&ledger, "start", "d3", NOW + 10, NOW), Admission::New);
    assert_eq!(ledger.syncs(), 1);
    drop(ledger);
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    assert_eq!(
        ledger
            .admit("end", "d1", NOW + 10, NOW + 10, NOW, WithNextSync)
            .unwrap(),
        Admission::Pending
    );
}

/// An idle agent forgets expired commands without waiting for the next one: the file
/// shrinks, the horizon covers them, and a live one is still remembered.
#[test]
fn expired_commands_are_forgotten_between_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger.compact_after_lines = 64;
    let old = |ledger: &ReplayLedger, range: std::ops::Range<i64>| {
        for i in range {
            let id = format!("old-{i}");
            admit(ledger, &id, "d", NOW + 10, NOW);
            ledger.finish(&id, "d", receipt(), NOW).unwrap();
        }
    };
    old(&ledger, 0..20);
    ledger.forget_expired(NOW + 11).unwrap();
    assert_eq!(
        lines_in(dir.path()),
        40,
        "below the size floor the file is left alone"
    );
    old(&ledger, 20..100);
    admit(&ledger, "live", "d", NOW + 1000, NOW);
    assert_eq!(lines_in(dir.path()), 201);
    ledger.forget_expired(NOW + 5).unwrap();
    assert_eq!(lines_in(dir.path()), 201, "nothing has expired yet");
    ledger.forget_expired(NOW + 11).unwrap();
    assert_eq!(lines_in(dir.path()), 1, "only the live command is left");
    assert_eq!(
        admit(&ledger, "old-7", "d", NOW + 10, NOW + 11),
        Admission::BeyondHorizon
    );
    assert_eq!(
        admit(&ledger, "live", "d", NOW + 1000, NOW + 11),
        Admission::Pending
    );
}

fn lines_in(state_dir: &Path) -> usize {
    fs::read_to_string(state_dir.join(FILE_NAME))
        .unwrap()
        .lines()
        .count()
}

/// Offsets are kept in 32 bits: a ledger whose live commands fill them admits nothing more,
/// with an error that says so, and admits again once a compaction made room.
#[test]
fn a_full_file_refuses_admissions_until_commands_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger.compact_after_lines = 0;
    admit(&ledger, "a", "d", NOW + 10, NOW);
    ledger.max_file_len = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len() + 10;
    let full = ledger
        .admit("b", "d", NOW + 10, NOW + 10, NOW, Synced)
        .unwrap_err();
    assert_eq!(
        std::error::Error::source(&full)
            .and_then(|source| source.downcast_ref::<io::Error>())
            .map(io::Error::kind),
        Some(io::ErrorKind::StorageFull),
        "{full:?}"
    );
    assert!(!ledger.is_broken());
    assert_eq!(lines_in(dir.path()), 1, "nothing of the refused command");
    ledger.forget_expired(NOW + 11).unwrap();
    assert_eq!(admit(&ledger, "b", "d", NOW + 20, NOW + 11), Admission::New);
}

/// A command admitted but never finished (its run panicked, say) is kept in memory only
/// while its entry is: once it expires and a compaction forgets it, nothing of it is left.
#[test]
fn an_unfinished_command_leaves_nothing_in_memory_once_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    ledger.compact_after_lines = 0;
    for id in ["lost-1", "lost-2", "lost-3"] {
        admit(&ledger, id, "d", NOW + 10, NOW);
    }
    admit(&ledger, "live", "d", NOW + 1000, NOW);
    ledger.forget_expired(NOW + 11).unwrap();
    let inner = ledger.inner.lock().unwrap();
    assert_eq!(inner.entries.len(), 1);
    assert_eq!(inner.running.len(), 1, "only the live command's");
}

/// A slot's expiry counts from the last compaction and saturates 49 days on: such an entry
/// counts as live until then, never as expired early.
#[test]
fn a_slots_expiry_saturates_on_the_live_side() {
    const DAY: i64 = 86_400_000;
    assert_eq!(after_base(NOW + 10, NOW), 10);
    assert_eq!(after_base(NOW - 10, NOW), 0);
    assert_eq!(after_base(NOW + 50 * DAY, NOW), u32::MAX);
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    admit(&ledger, "far", "d", NOW + 50 * DAY, NOW);
    let inner = ledger.inner.lock().unwrap();
    assert_eq!(inner.live(NOW + 49 * DAY), 1);
}

#[test]
fn a_hung_sync_holds_up_only_its_own_command() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ReplayLedger::open(dir.path(), NOW).unwrap();
    let within = |seconds: u64, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while !done() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        done()
    };
    ledger.hang_syncs(true);
    std::thread::scope(|scope| {
        let start = scope.spawn(|| admit(&ledger, "start", "d", NOW + 10, NOW));
        // Its line is written before its sync starts.
        assert!(within(10, &|| lines_in(dir.path()) == 1));
        // A halt does not wait for that sync, nor does the command's own retry, which is
        // told it is pending rather than run again.
        let halt = scope.spawn(|| {
            let halt = ledger.admit("halt", "d", NOW + 10, NOW + 10, NOW, WithNextSync);
            let retry = ledger.admit("start", "d", NOW + 10, NOW + 10, NOW, WithNextSync);
            (halt.unwrap(), retry.unwrap())
        });
        let halted = within(10, &|| halt.is_finished());
        let start_hung = !start.is_finished();
        ledger.hang_syncs(false);
        assert!(halted, "the halt waited for another command's sync");
        assert!(start_hung, "the sync did not hang");
        assert_eq!(halt.join().unwrap(), (Admission::New, Admission::Pending));
        assert_eq!(start.join().unwrap(), Admission::New);
    });
    assert_eq!(ledger.syncs(), 1);
}
