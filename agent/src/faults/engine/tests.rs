use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts its reverts.
struct Probe(Arc<AtomicUsize>);

impl Effect for Probe {
    fn effect(&self) -> String {
        "probing".into()
    }
    fn revert(&mut self) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn engine() -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = FaultJournal::open(dir.path()).unwrap();
    let engine = Arc::new(Engine::new(journal));
    engine.supervise();
    (engine, dir)
}

fn start(
    engine: &Engine,
    id: &str,
    duration: Duration,
    lease: Option<Duration>,
) -> Arc<AtomicUsize> {
    let reverts = Arc::new(AtomicUsize::new(0));
    engine
        .start(id, FaultKind::Cpu, duration, lease, Undo::Nothing, &|| {
            Ok(Applied {
                effect: Box::new(Probe(reverts.clone())),
                summary: "probe".into(),
            })
        })
        .unwrap();
    reverts
}

fn wait_until(what: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn reverts_once_at_the_deadline_and_clears_the_journal() {
    let (engine, dir) = engine();
    let reverts = start(&engine, "a", Duration::from_millis(50), None);
    assert_eq!(engine.active().len(), 1);
    assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
    assert!(wait_until(|| reverts.load(Ordering::SeqCst) == 1));
    assert!(engine.active().is_empty());
    // The entry goes right after the revert returns: waited for, not raced.
    assert!(wait_until(|| FaultJournal::check(dir.path()).unwrap() == 0));
    assert!(engine.abort("a").is_err(), "already reverted");
    assert_eq!(reverts.load(Ordering::SeqCst), 1);
}

#[test]
fn abort_and_abort_all_revert_now() {
    let (engine, _dir) = engine();
    let a = start(&engine, "a", Duration::from_secs(60), None);
    let b = start(&engine, "b", Duration::from_secs(60), None);
    let c = start(&engine, "c", Duration::from_secs(60), None);
    engine.abort("a").unwrap();
    assert_eq!(a.load(Ordering::SeqCst), 1);
    assert_eq!(engine.abort_all(EndReason::Aborted).ids, ["b", "c"]);
    assert_eq!((b.load(Ordering::SeqCst), c.load(Ordering::SeqCst)), (1, 1));
}

#[test]
fn a_lease_not_renewed_ends_the_fault_and_renewing_keeps_it() {
    let (engine, _dir) = engine();
    let lapsed = start(
        &engine,
        "lapsed",
        Duration::from_secs(60),
        Some(Duration::from_millis(100)),
    );
    let kept = start(
        &engine,
        "kept",
        Duration::from_secs(60),
        Some(Duration::from_millis(300)),
    );
    assert!(wait_until(|| lapsed.load(Ordering::SeqCst) == 1));
    for _ in 0..5 {
        engine.renew("kept", Duration::from_millis(300)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kept.load(Ordering::SeqCst), 0, "renewed, so still held");
    assert!(wait_until(|| kept.load(Ordering::SeqCst) == 1));
}

#[test]
fn shutdown_reverts_everything_and_refuses_new_faults() {
    let (engine, _dir) = engine();
    let a = start(&engine, "a", Duration::from_secs(60), None);
    engine.shutdown();
    assert_eq!(a.load(Ordering::SeqCst), 1);
    let refused = engine.start(
        "b",
        FaultKind::Cpu,
        Duration::from_secs(1),
        None,
        Undo::Nothing,
        &|| unreachable!("must not apply while stopping"),
    );
    assert!(refused.is_err());
}

/// Fails its first `failures` reverts.
struct Stubborn {
    failures: usize,
    reverts: Arc<AtomicUsize>,
}

impl Effect for Stubborn {
    fn effect(&self) -> String {
        "stubborn".into()
    }
    fn revert(&mut self) -> Result<(), String> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err("the disk said no".into());
        }
        self.reverts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn an_id_that_names_a_running_fault_is_refused_and_the_first_keeps_running() {
    let (engine, dir) = engine();
    let first = start(&engine, "a", Duration::from_secs(60), None);
    let refused = engine.start(
        "a",
        FaultKind::Cpu,
        Duration::from_secs(60),
        None,
        Undo::Nothing,
        &|| unreachable!("must not apply over a running fault"),
    );
    assert!(
        matches!(refused, Err(Refusal::FaultIdInUse { .. })),
        "{refused:?}"
    );
    assert_eq!(engine.active().len(), 1);
    assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
    assert_eq!(engine.abort_all(EndReason::Aborted).ids, ["a"]);
    assert_eq!(first.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failed_revert_stays_journaled_and_listed_until_a_retry_succeeds() {
    let (engine, dir) = engine();
    let reverts = Arc::new(AtomicUsize::new(0));
    let stubborn = reverts.clone();
    engine
        .start(
            "a",
            FaultKind::Disk,
            Duration::from_millis(20),
            None,
            Undo::Nothing,
            &|| {
                Ok(Applied {
                    effect: Box::new(Stubborn {
                        failures: 2,
                        reverts: stubborn.clone(),
                    }),
                    summary: "stubborn".into(),
                })
            },
        )
        .unwrap();
    // The deadline's revert fails: still journaled, listed, and the id still taken.
    assert!(wait_until(|| engine
        .active()
        .first()
        .is_some_and(|fault| fault.effect.contains("revert failed"))));
    assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
    assert!(engine.renew("a", Duration::from_secs(5)).is_err());
    // An abort tries again at once, fails again, and says so.
    let error = engine.abort("a").unwrap_err();
    assert!(error.to_string().contains("keeps retrying"), "{error}");
    assert_eq!(FaultJournal::check(dir.path()).unwrap(), 1);
    // The supervisor's retry succeeds.
    let deadline = Instant::now() + REVERT_RETRY * 3;
    while reverts.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reverts.load(Ordering::SeqCst), 1);
    assert!(engine.active().is_empty());
    assert!(wait_until(|| FaultJournal::check(dir.path()).unwrap() == 0));
}

#[test]
fn a_failed_apply_leaves_no_journal_entry() {
    let (engine, dir) = engine();
    let result = engine.start(
        "a",
        FaultKind::Disk,
        Duration::from_secs(1),
        None,
        Undo::Nothing,
        &|| Err(Refusal::InvalidArgument("no".into())),
    );
    assert!(result.is_err());
    assert_eq!(FaultJournal::check(dir.path()).unwrap(), 0);
}

#[test]
fn an_emergency_stop_reverts_while_its_latch_is_still_being_saved() {
    let (engine, _dir) = engine();
    let a = start(&engine, "a", Duration::from_secs(60), None);
    let b = start(&engine, "b", Duration::from_secs(60), None);
    let latch = Latch {
        command_id: "stop".into(),
        by: "test".into(),
        reason: "a state dir that hangs".into(),
        at_unix_ms: 0,
    };
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let stop = scope.spawn(|| {
            engine.emergency_stop_saving(latch, move |_, _| {
                // The disk answers when the test says so.
                released.recv().unwrap();
                Ok(())
            })
        });
        let reverted =
            wait_until(|| a.load(Ordering::SeqCst) == 1 && b.load(Ordering::SeqCst) == 1);
        let latched = engine.latch().is_some();
        let saving = !stop.is_finished();
        release.send(()).unwrap();
        assert!(reverted, "the faults waited for the latch's save");
        assert!(latched, "not latched while the save hung");
        assert!(saving, "the save did not hang");
        let (reverted, unsaved) = stop.join().unwrap();
        assert_eq!(reverted.ids, ["a", "b"]);
        assert!(unsaved.is_none());
    });
}
