use std::sync::Arc;

use super::*;

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use troop_postgres_lab::PostgresServer;

use super::dialect::LATEST_VERSION;
use super::sqlite::{migrate, user_version};

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn memory() -> Store {
    Store::open("sqlite://:memory:").unwrap()
}

/// An empty database of one engine, which each `open` connects to afresh (as another
/// process or replica would).
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: url(&dir.path().join("troop.db")),
            _dir: Some(dir),
        }
    }

    /// A new database on the test process's PostgreSQL server; `None` where there is none
    /// (and `TROOP_LAB_REQUIRED` is unset).
    fn postgres() -> Option<Self> {
        let server = PostgresServer::shared()?;
        Some(Self {
            url: server.new_database().unwrap(),
            _dir: None,
        })
    }

    fn open(&self) -> Store {
        Store::open(&self.url).unwrap()
    }
}

/// Every test named here runs once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { super::$name(&super::Db::sqlite()); })*
        }
        mod on_postgres {
            $(#[test] fn $name() {
                if let Some(db) = super::Db::postgres() {
                    super::$name(&db);
                }
            })*
        }
    };
}

on_both_engines!(
    an_adhoc_run_records_who_ran_it_and_the_signing_key,
    full_run_round_trip,
    counts_commands_by_outcome,
    run_without_commands_has_zero_counts,
    seeds_round_trip_exactly,
    scheduler_state_survives_reopen,
    unfinished_runs_are_listed_until_finished,
    failed_writes_return_errors,
    two_processes_share_the_file,
    threads_share_one_store,
    detail_serializes_to_json,
    a_fleets_commands_are_recorded_all_or_none_and_finished_together,
    the_latch_survives_a_reopen_until_it_is_cleared,
    many_openers_of_a_new_database_all_succeed,
    a_lease_has_one_holder_until_it_runs_out,
    a_deposed_leader_cannot_fire_or_write_its_runs,
    a_released_lease_is_taken_at_once,
    replicas_claiming_together_elect_one_leader,
    pruning_keeps_the_audit_of_commands,
    both_engines_have_the_same_tables_and_columns,
    a_replica_sees_the_streams_the_others_hold_while_fresh,
    a_successor_waits_for_a_write_that_passed_the_lease_check,
    only_the_runs_of_dead_replicas_are_closed,
    lazy_writes_are_seen_at_once_and_leave_later_commits_synced,
);

/// Allowed calls and run starts are committed without a sync of their own, refusals and
/// the commands a run sends with one; another opener (another process) sees the lazy
/// writes at once, and the connection syncs as before after them.
fn lazy_writes_are_seen_at_once_and_leave_later_commits_synced(db: &Db) {
    let store = db.open();
    let synced = || {
        store
            .synced_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = commit_sync(&store);
    store.record_call("alice", "list agents", None);
    let run = store.begin_adhoc("kill", 1, "alice", 1).unwrap();
    assert_eq!(synced(), 0, "an allowed call and a run's start");
    store.record_call("bob", "send commands", Some("bob is a viewer"));
    assert_eq!(synced(), 1, "a refusal");
    store.record_commands(&[command(run, None, 1)]).unwrap();
    assert_eq!(synced(), 2, "the commands sent");
    let other = db.open();
    assert!(
        other
            .access_log(10)
            .unwrap()
            .iter()
            .any(|call| call.caller == "alice")
    );
    assert_eq!(other.run(run).unwrap().run.status, "running");
    assert_eq!(
        commit_sync(&store),
        before,
        "a lazy write changed later commits"
    );
}

/// How the store's connection syncs a commit: SQLite's `synchronous` (FULL unless a
/// write is lazy), PostgreSQL's `synchronous_commit` (the lab's server turns it off).
fn commit_sync(store: &Store) -> String {
    match &store.engine {
        Engine::Sqlite(sqlite) => sqlite
            .conn()
            .pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
            .unwrap()
            .to_string(),
        Engine::Postgres(_) => store
            .read(|tx| tx.query_one("SHOW synchronous_commit", &[])?.text(0))
            .unwrap(),
    }
}

/// `holder`'s lease, claimed for a minute.
fn leader(store: &Store, holder: &str) -> Lease {
    store
        .claim_lease(holder, Duration::from_secs(60))
        .unwrap()
        .expect("nobody else holds the lease")
}

fn command(run: i64, step: Option<i64>, n: u32) -> CommandRecord {
    CommandRecord {
        run,
        step,
        target: format!("agent-{n}"),
        command_id: format!("cmd-{n}"),
        fault_kind: "cpu_stress".into(),
        parameters: format!(r#"{{"cores":{n},"duration_s":30}}"#),
        signature_sha256: "ab".repeat(32),
        key_id: "00112233aabbccdd".into(),
        sent_at_ms: 1_000 + i64::from(n),
    }
}

fn an_adhoc_run_records_who_ran_it_and_the_signing_key(db: &Db) {
    let store = db.open();
    let run = store.begin_adhoc("attack kill", 7, "alice", 10).unwrap();
    let id = store.record_command(&command(run, None, 1)).unwrap();
    store
        .finish_command(id, "applied", None, "sent SIGKILL", "ef", 20)
        .unwrap();
    store.finish_run(run, "completed", "", 30).unwrap();
    let summary = store.runs(10).unwrap().remove(0);
    assert_eq!(
        (
            summary.campaign.as_str(),
            summary.operator.as_str(),
            summary.seed,
            summary.applied
        ),
        ("attack kill", "alice", 7, 1)
    );
    let detail = store.run(run).unwrap();
    assert_eq!(detail.commands[0].key_id, "00112233aabbccdd");
    assert_eq!(detail.commands[0].signature_sha256, "ef");
}

#[test]
fn open_creates_file_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troop.db");
    let store = Store::open(&url(&path)).unwrap();
    assert!(path.is_file());
    let conn = store.conn();
    assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let foreign_keys: bool = conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(foreign_keys);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "access",
            "agent_streams",
            "certificates",
            "commands",
            "join_tokens",
            "last_runs",
            "last_strikes",
            "latch",
            "leader_lease",
            "probes",
            "replicas",
            "revocations",
            "runs",
            "signing_keys",
            "steps"
        ]
    );
}

#[test]
fn relative_path_is_used_as_given() {
    assert_eq!(
        parse_url("sqlite://troop.db").unwrap(),
        Location::Sqlite(Some(PathBuf::from("troop.db")))
    );
    assert_eq!(
        parse_url("sqlite:///var/lib/troop/troop.db").unwrap(),
        Location::Sqlite(Some(PathBuf::from("/var/lib/troop/troop.db")))
    );
    assert_eq!(
        parse_url("sqlite://:memory:").unwrap(),
        Location::Sqlite(None)
    );
    assert_eq!(
        parse_url("postgresql://db/troop").unwrap(),
        Location::Postgres
    );
}

#[test]
fn migrations_run_once() {
    let mut conn = Connection::open_in_memory().unwrap();
    let path = Path::new(":memory:");
    assert_eq!(migrate(&mut conn, path).unwrap(), LATEST_VERSION);
    assert_eq!(migrate(&mut conn, path).unwrap(), 0);
    assert_eq!(user_version(&conn).unwrap(), LATEST_VERSION);
}

#[test]
fn reopen_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troop.db");
    let run = {
        let store = Store::open(&url(&path)).unwrap();
        store
            .begin_run("nightly", "f00d", 7, false, 100, "ops", None)
            .unwrap()
    };
    let store = Store::open(&url(&path)).unwrap();
    let runs = store.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, run);
    assert_eq!(runs[0].campaign, "nightly");
    // Nothing left to apply: the batches are not idempotent, so a rerun would have failed.
    assert_eq!(migrate(&mut store.conn(), &path).unwrap(), 0);
}

fn full_run_round_trip(db: &Db) {
    let store = db.open();
    let run = store
        .begin_run("nightly", "f00d", 42, true, 100, "ops", None)
        .unwrap();
    let step0 = store.record_step(run, 0, "stress web", 110).unwrap();
    let step1 = store.record_step(run, 1, "partition db", 120).unwrap();

    let first = store.record_command(&command(run, Some(step0), 1)).unwrap();
    let second = store.record_command(&command(run, Some(step1), 2)).unwrap();
    let loose = store.record_command(&command(run, None, 3)).unwrap();
    store
        .finish_command(first, "applied", None, "ok", "", 200)
        .unwrap();
    store
        .finish_command(second, "refused", Some("POLICY"), "denied", "cd", 210)
        .unwrap();
    store
        .record_probe(run, "http-200", true, "200 OK", 300)
        .unwrap();
    store
        .record_probe(run, "latency", false, "p99 900ms", 310)
        .unwrap();
    store
        .finish_run(run, "completed", "all steps done", 400)
        .unwrap();

    let summary = store.runs(10).unwrap().remove(0);
    assert_eq!(
        summary,
        RunSummary {
            id: run,
            campaign: "nightly".into(),
            status: "completed".into(),
            reason: "all steps done".into(),
            dry_run: true,
            seed: 42,
            started_at_ms: 100,
            finished_at_ms: Some(400),
            operator: "ops".into(),
            commands: 3,
            applied: 1,
            refused: 1,
            failed: 0,
        }
    );

    let detail = store.run(run).unwrap();
    assert_eq!(detail.run, summary);
    assert_eq!(
        detail.steps,
        [
            StepRow {
                id: step0,
                run,
                index: 0,
                description: "stress web".into(),
                at_ms: 110
            },
            StepRow {
                id: step1,
                run,
                index: 1,
                description: "partition db".into(),
                at_ms: 120
            },
        ]
    );
    let ids: Vec<i64> = detail.commands.iter().map(|c| c.id).collect();
    assert_eq!(ids, [first, second, loose]);
    let c = &detail.commands[1];
    assert_eq!(c.step, Some(step1));
    assert_eq!(c.target, "agent-2");
    assert_eq!(c.command_id, "cmd-2");
    assert_eq!(c.fault_kind, "cpu_stress");
    assert_eq!(c.parameters, r#"{"cores":2,"duration_s":30}"#);
    assert_eq!(
        c.signature_sha256, "cd",
        "set when the command was signed and sent"
    );
    assert_eq!(detail.commands[0].signature_sha256, "ab".repeat(32), "kept");
    assert_eq!(c.sent_at_ms, 1_002);
    assert_eq!(c.outcome, "refused");
    assert_eq!(c.code.as_deref(), Some("POLICY"));
    assert_eq!(c.message, "denied");
    assert_eq!(c.answered_at_ms, Some(210));
    let pending = &detail.commands[2];
    assert_eq!(
        (
            pending.outcome.as_str(),
            pending.step,
            pending.answered_at_ms
        ),
        ("pending", None, None)
    );
    assert_eq!(
        detail.probes,
        [
            ProbeRow {
                id: detail.probes[0].id,
                run,
                probe: "http-200".into(),
                ok: true,
                detail: "200 OK".into(),
                at_ms: 300
            },
            ProbeRow {
                id: detail.probes[1].id,
                run,
                probe: "latency".into(),
                ok: false,
                detail: "p99 900ms".into(),
                at_ms: 310
            },
        ]
    );
}

fn counts_commands_by_outcome(db: &Db) {
    let store = db.open();
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let other = store.begin_run("c", "f", 2, false, 1, "ops", None).unwrap();
    let outcomes = [
        "applied",
        "applied",
        "applied",
        "refused",
        "failed",
        "failed",
        "unreachable",
        "unknown",
    ];
    for (n, outcome) in (0..).zip(outcomes) {
        let id = store.record_command(&command(run, None, n)).unwrap();
        store.finish_command(id, outcome, None, "", "", 5).unwrap();
    }
    store.record_command(&command(run, None, 99)).unwrap(); // still pending
    store.record_command(&command(other, None, 100)).unwrap();

    let runs = store.runs(10).unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [other, run]);
    let r = &runs[1];
    assert_eq!((r.commands, r.applied, r.refused, r.failed), (9, 3, 1, 2));
    let o = &runs[0];
    assert_eq!((o.commands, o.applied, o.refused, o.failed), (1, 0, 0, 0));
    assert_eq!(store.runs(1).unwrap().len(), 1);
    assert_eq!(store.runs(1).unwrap()[0].id, other);
    assert!(store.runs(0).unwrap().is_empty());
}

fn run_without_commands_has_zero_counts(db: &Db) {
    let store = db.open();
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let detail = store.run(run).unwrap();
    assert_eq!(
        (
            detail.run.commands,
            detail.run.applied,
            detail.run.finished_at_ms
        ),
        (0, 0, None)
    );
    assert!(detail.steps.is_empty() && detail.commands.is_empty() && detail.probes.is_empty());
}

fn seeds_round_trip_exactly(db: &Db) {
    let store = db.open();
    for seed in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let run = store
            .begin_run("c", "f", seed, false, 0, "ops", None)
            .unwrap();
        assert_eq!(store.run(run).unwrap().run.seed, seed);
    }
    let json = serde_json::to_string(&store.runs(1).unwrap()[0]).unwrap();
    assert!(json.contains(r#""seed":18446744073709551615"#), "{json}");
}

fn scheduler_state_survives_reopen(db: &Db) {
    {
        let store = db.open();
        let lease = leader(&store, "serve-a");
        let firing = |campaign, at, groups: &[&str]| {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            store.record_firing(&lease, campaign, at, &groups).unwrap();
        };
        firing("nightly", 1_000, &["web", "db"]);
        firing("nightly", 1_500, &["web"]);
        firing("weekly", 5, &["web"]);
        firing("nightly", 2_000, &[]);
    }
    let store = db.open();
    let strikes = store.last_strikes("nightly").unwrap();
    assert_eq!(
        strikes,
        BTreeMap::from([("db".to_string(), 1_000), ("web".to_string(), 1_500)])
    );
    assert!(store.last_strikes("never").unwrap().is_empty());
    assert_eq!(store.last_run("nightly").unwrap(), Some(2_000));
    assert_eq!(store.last_run("weekly").unwrap(), Some(5));
    assert_eq!(store.last_run("never").unwrap(), None);
}

fn unfinished_runs_are_listed_until_finished(db: &Db) {
    let (a, b, c) = {
        let store = db.open();
        let a = store
            .begin_run("a", "f", 1, false, 10, "ops", None)
            .unwrap();
        let b = store
            .begin_run("b", "f", 2, false, 20, "ops", None)
            .unwrap();
        let c = store
            .begin_run("c", "f", 3, false, 30, "ops", None)
            .unwrap();
        store.finish_run(b, "completed", "", 25).unwrap();
        let id = store.record_command(&command(c, None, 1)).unwrap();
        store
            .finish_command(id, "applied", None, "", "", 31)
            .unwrap();
        (a, b, c)
        // The "coordinator" dies here with runs a and c still running.
    };
    let store = db.open();
    let unfinished = store.unfinished_runs(None).unwrap();
    assert_eq!(unfinished.iter().map(|r| r.id).collect::<Vec<_>>(), [a, c]);
    assert!(
        unfinished
            .iter()
            .all(|r| r.status == "running" && r.finished_at_ms.is_none())
    );
    assert_eq!(unfinished[1].applied, 1);
    assert_ne!(b, a);

    store
        .finish_run(a, "aborted", "coordinator restarted", 99)
        .unwrap();
    store
        .finish_run(c, "aborted", "coordinator restarted", 99)
        .unwrap();
    assert!(store.unfinished_runs(None).unwrap().is_empty());
    let aborted = store.run(a).unwrap().run;
    assert_eq!(
        (aborted.status.as_str(), aborted.reason.as_str()),
        ("aborted", "coordinator restarted")
    );
}

#[test]
fn bad_urls_are_rejected() {
    for url in [
        "",
        "sqlite://",
        "sqlite:troop.db",
        "troop.db",
        "mysql://u:pw@x/db",
    ] {
        let error = Store::open(url).unwrap_err();
        assert!(
            matches!(error, StoreError::BadUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(error.to_string().contains("expected sqlite://PATH"));
        assert!(!error.to_string().contains(":pw@"));
    }
}

#[test]
fn unopenable_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/troop.db");
    // A path under a file: fails even for root, unlike a read-only directory.
    for path in [PathBuf::from("/dev/null/x.db"), missing] {
        let error = Store::open(&url(&path)).unwrap_err();
        match &error {
            StoreError::Open { path: named, .. } => assert_eq!(named, &path),
            other => panic!("expected Open, got {other:?}"),
        }
        assert!(error.to_string().contains(&path.display().to_string()));
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "not a database, just some text that is long enough ".repeat(50),
    )
    .unwrap();
    let error = Store::open(&url(&path)).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troop.db");
    drop(Store::open(&url(&path)).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", LATEST_VERSION + 1)
        .unwrap();
    let error = Store::open(&url(&path)).unwrap_err();
    assert!(
        matches!(error, StoreError::TooNew { found, .. } if found == LATEST_VERSION + 1),
        "{error:?}"
    );
}

fn failed_writes_return_errors(db: &Db) {
    let store = db.open();
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let other = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let other_step = store.record_step(other, 0, "x", 0).unwrap();

    assert!(matches!(
        store.record_step(999, 0, "x", 0),
        Err(StoreError::NotFound { run: 999 })
    ));
    assert!(matches!(
        store.record_command(&command(999, None, 1)),
        Err(StoreError::NotFound { run: 999 })
    ));
    assert!(matches!(
        store.record_command(&command(run, Some(other_step), 1)),
        Err(StoreError::StepNotInRun { .. })
    ));
    assert!(matches!(
        store.record_command(&command(run, Some(12345), 1)),
        Err(StoreError::StepNotInRun { step: 12345, .. })
    ));
    assert!(matches!(
        store.record_probe(999, "p", true, "", 0),
        Err(StoreError::NotFound { run: 999 })
    ));
    assert!(matches!(
        store.run(999),
        Err(StoreError::NotFound { run: 999 })
    ));

    let id = store.record_command(&command(run, None, 1)).unwrap();
    assert!(matches!(
        store.finish_command(id, "pending", None, "", "", 0),
        Err(StoreError::Invalid {
            field: "outcome",
            ..
        })
    ));
    assert!(matches!(
        store.finish_command(999, "applied", None, "", "", 0),
        Err(StoreError::CommandNotFound { id: 999 })
    ));
    store
        .finish_command(id, "applied", None, "", "", 0)
        .unwrap();
    let again = store
        .finish_command(id, "failed", None, "", "", 0)
        .unwrap_err();
    assert!(matches!(&again, StoreError::CommandFinished { outcome, .. } if outcome == "applied"));

    assert!(matches!(
        store.finish_run(run, "done", "", 0),
        Err(StoreError::Invalid {
            field: "status",
            ..
        })
    ));
    assert!(matches!(
        store.finish_run(999, "completed", "", 0),
        Err(StoreError::NotFound { run: 999 })
    ));
    store.finish_run(run, "aborted", "operator", 1).unwrap();
    assert!(matches!(
        store.finish_run(run, "completed", "", 2),
        Err(StoreError::RunFinished { .. })
    ));
    // Nothing new may be sent for a finished run, but probes may still be recorded.
    assert!(matches!(
        store.record_command(&command(run, None, 2)),
        Err(StoreError::RunFinished { .. })
    ));
    assert!(matches!(
        store.record_step(run, 9, "late", 3),
        Err(StoreError::RunFinished { .. })
    ));
    store.record_probe(run, "recovered", true, "", 4).unwrap();

    // None of the failures left a row behind.
    let detail = store.run(run).unwrap();
    assert_eq!(
        (
            detail.steps.len(),
            detail.commands.len(),
            detail.probes.len()
        ),
        (0, 1, 1)
    );
}

#[test]
fn sqlite_failures_are_errors_with_sqlite_message() {
    let store = memory();
    store.conn().execute_batch("DROP TABLE last_runs").unwrap();
    let error = store.last_run("c").unwrap_err();
    assert!(matches!(error, StoreError::Sql(_)), "{error:?}");
    assert!(error.to_string().contains("no such table"), "{error}");
}

fn two_processes_share_the_file(db: &Db) {
    let serve = db.open();
    let cli = db.open();
    let run = serve
        .begin_run("nightly", "f", 1, false, 0, "ops", None)
        .unwrap();
    serve.record_command(&command(run, None, 1)).unwrap();
    assert_eq!(cli.unfinished_runs(None).unwrap()[0].commands, 1);
    // An abort from the CLI stops `serve` from recording, hence sending, anything more.
    cli.finish_run(run, "aborted", "operator", 5).unwrap();
    assert!(matches!(
        serve.record_command(&command(run, None, 2)),
        Err(StoreError::RunFinished { .. })
    ));
}

fn threads_share_one_store(db: &Db) {
    let store = Arc::new(db.open());
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for n in 0..25 {
                    let id = store
                        .record_command(&command(run, None, t * 100 + n))
                        .unwrap();
                    store
                        .finish_command(id, "applied", None, "", "", 1)
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let summary = store.run(run).unwrap().run;
    assert_eq!((summary.commands, summary.applied), (100, 100));
}

#[test]
fn a_poisoned_lock_does_not_break_the_store() {
    let store = Arc::new(memory());
    let clone = Arc::clone(&store);
    let result = std::thread::spawn(move || {
        let _guard = clone.conn();
        panic!("boom");
    })
    .join();
    assert!(result.is_err());
    store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
}

fn detail_serializes_to_json(db: &Db) {
    let store = db.open();
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let mut not_json = command(run, None, 3);
    not_json.parameters = "CpuStress { cores: 3 }".into(); // recorded all the same
    store.record_command(&not_json).unwrap();
    let json = serde_json::to_value(store.run(run).unwrap()).unwrap();
    assert_eq!(json["commands"][0]["parameters"], "CpuStress { cores: 3 }");
    assert_eq!(json["commands"][0]["outcome"], "pending");
    assert_eq!(json["run"]["status"], "running");
}

#[test]
fn types_cross_threads_and_fit_anyhow() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<Store>();
    send_sync_static::<StoreError>();
}

#[test]
fn redact_hides_credentials_only() {
    assert_eq!(
        redact("postgres://u:pw@db:5432/x"),
        "postgres://***@db:5432/x"
    );
    assert_eq!(redact("postgres://db/x@y"), "postgres://db/x@y");
    assert_eq!(redact("sqlite://troop.db"), "sqlite://troop.db");
}

/// Replicas (or a CLI beside serve) opening a database nobody has migrated, all at once.
fn many_openers_of_a_new_database_all_succeed(db: &Db) {
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || Store::open(&url).map(|_| ()))
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().unwrap();
    }
    let store = db.open();
    store.begin_adhoc("after the race", 1, "ops", 0).unwrap();
    assert_eq!(store.runs(10).unwrap().len(), 1, "migrated once, usable");
}

fn a_fleets_commands_are_recorded_all_or_none_and_finished_together(db: &Db) {
    let store = db.open();
    let run = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let other = store.begin_run("c", "f", 1, false, 0, "ops", None).unwrap();
    let other_step = store.record_step(other, 0, "x", 0).unwrap();

    // One bad record in the batch: none of it is written, so none of it is sent.
    let batch = [command(run, None, 1), command(run, Some(other_step), 2)];
    assert!(matches!(
        store.record_commands(&batch),
        Err(StoreError::StepNotInRun { .. })
    ));
    assert!(store.run(run).unwrap().commands.is_empty());

    let ids = store
        .record_commands(&[command(run, None, 1), command(run, None, 2)])
        .unwrap();
    assert_eq!(ids.len(), 2);
    let outcome = |id, word: &str| CommandOutcome {
        id,
        outcome: word.into(),
        code: None,
        message: "sent SIGKILL".into(),
        signature_sha256: String::new(),
        answered_at_ms: 20,
    };
    let answers = store
        .finish_commands(&[outcome(ids[0], "applied"), outcome(ids[1], "teleported")])
        .unwrap();
    assert!(answers[0].is_ok());
    assert!(matches!(answers[1], Err(StoreError::Invalid { .. })));
    let commands = store.run(run).unwrap().commands;
    assert_eq!(commands[0].outcome, "applied");
    assert_eq!(
        commands[1].outcome, "pending",
        "the bad outcome alone is not set"
    );
}

fn the_latch_survives_a_reopen_until_it_is_cleared(db: &Db) {
    let store = db.open();
    assert_eq!(store.latch().unwrap(), None);
    let run = store.begin_adhoc("emergency stop", 0, "alice", 10).unwrap();
    let latch = LatchRecord {
        by: "alice".into(),
        reason: "checkout is down".into(),
        at_ms: 11,
        run,
    };
    store.set_latch(&latch).unwrap();
    let again = LatchRecord {
        by: "bob".into(),
        ..latch
    };
    store.set_latch(&again).unwrap();
    drop(store);
    let store = db.open();
    assert_eq!(
        store.latch().unwrap(),
        Some(again),
        "the newer latch replaces"
    );
    assert!(store.clear_latch().unwrap());
    assert!(!store.clear_latch().unwrap());
    assert_eq!(store.latch().unwrap(), None);
}

fn a_lease_has_one_holder_until_it_runs_out(db: &Db) {
    let store = db.open();
    let short = Duration::from_millis(300);
    let a = store.claim_lease("serve-a", short).unwrap().unwrap();
    assert_eq!((a.holder.as_str(), a.epoch), ("serve-a", 1));
    assert_eq!(
        store.claim_lease("serve-b", short).unwrap(),
        None,
        "a holds it"
    );
    let renewed = store.claim_lease("serve-a", short).unwrap().unwrap();
    assert_eq!(renewed.epoch, 1, "a renewal keeps the epoch");
    assert!(renewed.expires_at_ms >= a.expires_at_ms);
    let (seen, now) = store.lease().unwrap();
    assert_eq!(seen, Some(renewed.clone()));
    assert!(now < renewed.expires_at_ms, "timed by the database's clock");

    std::thread::sleep(short + Duration::from_millis(100));
    let b = store.claim_lease("serve-b", short).unwrap().unwrap();
    assert_eq!(
        (b.holder.as_str(), b.epoch),
        ("serve-b", 2),
        "taken once run out"
    );
    std::thread::sleep(short + Duration::from_millis(100));
    let again = store.claim_lease("serve-b", short).unwrap().unwrap();
    assert_eq!(
        again.epoch, 3,
        "a lapse of the holder's own lease is a new epoch too"
    );
}

fn a_deposed_leader_cannot_fire_or_write_its_runs(db: &Db) {
    let store = db.open();
    let short = Duration::from_millis(300);
    let a = store.claim_lease("serve-a", short).unwrap().unwrap();
    let run = store
        .begin_run("nightly", "f", 1, false, 10, "schedule", Some(&a))
        .unwrap();
    let step = store.record_step(run, 0, "kill web", 11).unwrap();
    let sent = store.record_command(&command(run, Some(step), 1)).unwrap();
    let adhoc = store.begin_adhoc("attack kill", 2, "alice", 12).unwrap();

    // serve-a stalls past its lease; serve-b takes over.
    std::thread::sleep(short + Duration::from_millis(100));
    let b = store
        .claim_lease("serve-b", Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert!(b.epoch > a.epoch);

    let deposed = |result: Result<_, StoreError>| matches!(result, Err(StoreError::Deposed { epoch }) if epoch == a.epoch);
    let groups = ["web".to_string()];
    assert!(deposed(store.record_firing(&a, "nightly", 20, &groups)));
    assert!(deposed(
        store
            .begin_run("nightly", "f", 1, false, 20, "schedule", Some(&a))
            .map(drop)
    ));
    assert!(deposed(store.record_step(run, 1, "kill db", 21).map(drop)));
    assert!(deposed(
        store.record_command(&command(run, None, 2)).map(drop)
    ));
    assert!(deposed(store.finish_run(run, "completed", "", 22)));
    let message = store
        .record_firing(&a, "nightly", 20, &groups)
        .unwrap_err()
        .to_string();
    assert!(message.contains("not the leader any more"), "{message}");
    // Nothing of it was written: no firing, no new step or command, the run still open.
    assert_eq!(store.last_run("nightly").unwrap(), None);
    assert!(store.last_strikes("nightly").unwrap().is_empty());
    let detail = store.run(run).unwrap();
    assert_eq!((detail.steps.len(), detail.commands.len()), (1, 1));
    assert_eq!(detail.run.status, "running");
    // An answer to a command already sent is still evidence, and is kept.
    store
        .finish_command(sent, "applied", None, "", "", 23)
        .unwrap();
    // The operator's ad-hoc run belongs to no lease and goes on.
    store.record_command(&command(adhoc, None, 3)).unwrap();

    // The new leader closes what the old one left, and only that.
    let stale: Vec<i64> = store
        .unfinished_runs(Some(&b))
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stale, [run]);
    store
        .close_stale_run(run, "the leader changed", 30)
        .unwrap();
    assert_eq!(store.run(run).unwrap().run.status, "failed");
    let unleased: Vec<i64> = store
        .unfinished_runs(None)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unleased, [adhoc]);
    // The new leader fires.
    store.record_firing(&b, "nightly", 40, &groups).unwrap();
    assert_eq!(store.last_run("nightly").unwrap(), Some(40));
}

fn a_released_lease_is_taken_at_once(db: &Db) {
    let store = db.open();
    let a = leader(&store, "serve-a");
    assert_eq!(
        store
            .claim_lease("serve-b", Duration::from_secs(60))
            .unwrap(),
        None
    );
    store.release_lease(&a).unwrap();
    let b = leader(&store, "serve-b");
    assert_eq!(b.epoch, a.epoch + 1);
    // Releasing an old epoch does not end the new one.
    store.release_lease(&a).unwrap();
    assert_eq!(
        store
            .claim_lease("serve-a", Duration::from_secs(60))
            .unwrap(),
        None
    );
}

/// Replicas starting together, each on its own connection, race for a fresh lease. The
/// lease outlasts any queue of writers, so the race, not the clock, decides; each
/// round's leader releases it for the next.
fn replicas_claiming_together_elect_one_leader(db: &Db) {
    for round in 0..3 {
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let claims: Vec<_> = (0..6)
            .map(|n| {
                let (url, barrier) = (db.url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let store = Store::open(&url).unwrap();
                    barrier.wait();
                    store
                        .claim_lease(&format!("serve-{round}-{n}"), Duration::from_secs(60))
                        .unwrap()
                })
            })
            .collect();
        let leaders: Vec<Lease> = claims
            .into_iter()
            .filter_map(|claim| claim.join().unwrap())
            .collect();
        assert_eq!(leaders.len(), 1, "round {round}: {leaders:?}");
        assert_eq!(leaders[0].epoch, round + 1);
        db.open().release_lease(&leaders[0]).unwrap();
    }
}

fn pruning_keeps_the_audit_of_commands(db: &Db) {
    let store = db.open();
    let run = store
        .begin_run("c", "f", 1, false, 100, "ops", None)
        .unwrap();
    store.record_command(&command(run, None, 1)).unwrap();
    store.record_probe(run, "old", true, "", 100).unwrap();
    store.record_probe(run, "new", true, "", 5_000).unwrap();
    for at_ms in [100, 5_000] {
        let access = AccessRecord {
            at_ms,
            caller: "agent-1".into(),
            call: "stream".into(),
            allowed: true,
            detail: String::new(),
        };
        store.record_access(&access).unwrap();
    }
    assert_eq!(store.prune(1_000).unwrap(), 2);
    let detail = store.run(run).unwrap();
    let probes: Vec<&str> = detail.probes.iter().map(|p| p.probe.as_str()).collect();
    assert_eq!(probes, ["new"]);
    assert_eq!(detail.commands.len(), 1, "commands are kept");
    let access: Vec<i64> = store
        .access_log(10)
        .unwrap()
        .iter()
        .map(|a| a.at_ms)
        .collect();
    assert_eq!(access, [5_000]);
    assert_eq!(store.prune(1_000).unwrap(), 0);
}

/// The tables and columns each engine's migrations make, as (table, column) pairs.
fn columns(store: &Store) -> Vec<(String, String)> {
    let sql = match store.dialect() {
        dialect::Dialect::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table' ORDER BY m.name, p.name"
        }
        dialect::Dialect::Postgres => {
            "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT)
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> 'troop_schema'
             ORDER BY 1, 2"
        }
    };
    store
        .read(move |tx| {
            tx.query(sql, &[])?
                .iter()
                .map(|row| Ok((row.text(0)?, row.text(1)?)))
                .collect()
        })
        .unwrap()
}

fn both_engines_have_the_same_tables_and_columns(db: &Db) {
    let sqlite = Db::sqlite();
    let expected = columns(&sqlite.open());
    assert!(expected.contains(&("leader_lease".into(), "epoch".into())));
    assert_eq!(columns(&db.open()), expected);
}

#[test]
fn a_unix_socket_url_reaches_the_server() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let tcp = server.new_database().unwrap();
    let database = tcp.rsplit('/').next().unwrap();
    let store = Store::open(&server.socket_url(database)).unwrap();
    let run = store.begin_adhoc("over the socket", 1, "ops", 0).unwrap();
    assert_eq!(
        Store::open(&tcp).unwrap().run(run).unwrap().run.campaign,
        "over the socket"
    );
}

/// Store calls from async code (serve's tasks), on either runtime flavour, on either engine:
/// the PostgreSQL client never runs inside tokio, so nothing panics.
#[test]
fn calls_from_async_code_work_on_both_runtimes() {
    let mut dbs = vec![Db::sqlite()];
    dbs.extend(Db::postgres());
    for db in dbs {
        let multi = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for runtime in [multi, single] {
            runtime.block_on(async {
                let store = db.open();
                let run = store.begin_adhoc("from async", 1, "ops", 0).unwrap();
                store.record_command(&command(run, None, 1)).unwrap();
                assert_eq!(store.run(run).unwrap().commands.len(), 1);
            });
        }
    }
}

/// A write that waits (here on another process's lock of the SQLite file) leaves the
/// runtime's only worker free for the other tasks.
#[test]
fn a_waiting_write_leaves_the_runtime_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troop.db");
    let store = Arc::new(Store::open(&url(&path)).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let held = Duration::from_millis(400);
    let locker = {
        let path = path.clone();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let locker = std::thread::spawn(move || {
            let other = Connection::open(&path).unwrap();
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(held);
            other.execute_batch("COMMIT").unwrap();
        });
        is_locked.recv().unwrap();
        locker
    };
    let ticks = runtime.block_on(async {
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .begin_adhoc("waits for the lock", 1, "ops", 0)
                    .unwrap()
            }
        });
        writer.await.unwrap();
        ticker.abort();
        ticks.load(std::sync::atomic::Ordering::Relaxed)
    });
    locker.join().unwrap();
    // About 40 ticks while the write waited; none if it had held the only worker.
    assert!(
        ticks >= 10,
        "only {ticks} ticks while a write waited {held:?}"
    );
}

fn entry(agent: &str, zone: &str) -> StreamEntry {
    StreamEntry {
        agent: agent.into(),
        labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        address: "10.0.0.1:40000".into(),
        connected_since_ms: 5,
    }
}

fn a_replica_sees_the_streams_the_others_hold_while_fresh(db: &Db) {
    let store = db.open();
    store
        .publish_streams(
            "serve-a",
            "a:7444",
            &[entry("web-1", "a"), entry("web-2", "b")],
        )
        .unwrap();
    store
        .publish_streams("serve-b", "b:7444", &[entry("web-3", "a")])
        .unwrap();
    let fresh = Duration::from_secs(6);
    let seen_by_b = store.streams_elsewhere("serve-b", fresh).unwrap();
    let agents: Vec<(&str, &str, &str)> = seen_by_b
        .iter()
        .map(|s| (s.entry.agent.as_str(), s.replica.as_str(), s.relay.as_str()))
        .collect();
    assert_eq!(
        agents,
        [
            ("web-1", "serve-a", "a:7444"),
            ("web-2", "serve-a", "a:7444")
        ]
    );
    assert_eq!(
        seen_by_b[1].entry,
        entry("web-2", "b"),
        "labels and all, as published"
    );

    // web-2 moves to serve-b; serve-a's next publication no longer has it.
    store
        .publish_streams(
            "serve-b",
            "b:7444",
            &[entry("web-2", "b"), entry("web-3", "a")],
        )
        .unwrap();
    store
        .publish_streams("serve-a", "a:7444", &[entry("web-1", "a")])
        .unwrap();
    let seen_by_a: Vec<String> = store
        .streams_elsewhere("serve-a", fresh)
        .unwrap()
        .into_iter()
        .map(|s| s.entry.agent)
        .collect();
    assert_eq!(seen_by_a, ["web-2", "web-3"]);

    // A replica that stops publishing (it died) is forgotten once its rows are stale.
    std::thread::sleep(Duration::from_millis(300));
    store
        .publish_streams("serve-b", "b:7444", &[entry("web-3", "a")])
        .unwrap();
    let short = Duration::from_millis(200);
    let seen_by_c: Vec<String> = store
        .streams_elsewhere("serve-c", short)
        .unwrap()
        .into_iter()
        .map(|s| s.entry.agent)
        .collect();
    assert_eq!(seen_by_c, ["web-3"], "serve-a's web-1 is stale");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM: (ca, cert, key).
fn server_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Whether the store's connection runs over TLS, as the server sees it.
fn over_tls(store: &Store) -> bool {
    store
        .read(|tx| {
            tx.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .flag(0)
        })
        .unwrap()
}

#[test]
fn sslmode_require_verifies_the_servers_certificate() {
    if PostgresServer::shared().is_none() {
        return;
    }
    let (ca, cert, key) = server_pki();
    let server = PostgresServer::start_with_tls(&cert, &key).unwrap();
    let database = server.new_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, server_pki().0).unwrap();
    let with = |query: &str| format!("{database}?{query}");

    let store = Store::open(&with(&format!(
        "sslmode=require&sslrootcert={}",
        ca_file.display()
    )))
    .unwrap();
    assert!(over_tls(&store));
    store.begin_adhoc("over TLS", 1, "ops", 0).unwrap();
    let full = Store::open(&with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    )))
    .unwrap();
    assert!(over_tls(&full), "verify-full reads as require");
    assert!(
        !over_tls(&Store::open(&database).unwrap()),
        "plain unless asked"
    );

    // A server whose certificate another CA signed is refused before anything is sent.
    let impostor = Store::open(&with(&format!(
        "sslmode=require&sslrootcert={}",
        other_ca.display()
    )))
    .unwrap_err();
    assert!(
        matches!(impostor, StoreError::Connect { .. }),
        "{impostor:?}"
    );
    let chain = troop_telemetry::error_chain(&impostor);
    assert!(chain.contains("certificate"), "{chain}");
    // A CA file that is not there is named.
    let missing = dir.path().join("missing.pem");
    let error = Store::open(&with(&format!(
        "sslmode=require&sslrootcert={}",
        missing.display()
    )))
    .unwrap_err();
    assert!(matches!(error, StoreError::Tls { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    // A server without TLS is refused when TLS is required.
    let plain = PostgresServer::shared().unwrap().new_database().unwrap();
    let error = Store::open(&format!(
        "{plain}?sslmode=require&sslrootcert={}",
        ca_file.display()
    ))
    .unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
}

#[test]
fn libpq_tls_options_are_read_as_rust_postgres_reads_them() {
    use super::postgresql::tls_options;
    assert_eq!(
        tls_options("postgres://db/x"),
        ("postgres://db/x".into(), None)
    );
    assert_eq!(
        tls_options(
            "postgres://db/x?sslmode=verify-full&sslrootcert=/etc/troop/db.pem&application_name=troop"
        ),
        (
            "postgres://db/x?sslmode=require&application_name=troop".into(),
            Some(PathBuf::from("/etc/troop/db.pem"))
        )
    );
    assert_eq!(
        tls_options("postgres://db/x?sslrootcert=/ca.pem"),
        ("postgres://db/x".into(), Some(PathBuf::from("/ca.pem")))
    );
}

/// serve-a's lease and scheduled run, and a write of serve-a's in flight.
struct StalledWrite {
    store: Store,
    lease: Lease,
    run: i64,
    writer: std::thread::JoinHandle<Result<u64, StoreError>>,
}

/// Starts a write of serve-a's that passes the lease check, then stalls for `stall` (its
/// 300 ms lease runs out meanwhile) before adding a step; answers once the check passed.
fn stall_inside_a_checked_write(db: &Db, stall: Duration) -> StalledWrite {
    let store = db.open();
    let lease = store
        .claim_lease("serve-a", Duration::from_millis(300))
        .unwrap()
        .unwrap();
    let run = store
        .begin_run("nightly", "f", 1, false, 0, "schedule", Some(&lease))
        .unwrap();
    let (checked, passed) = std::sync::mpsc::channel();
    let leader = db.open();
    let dialect = leader.dialect();
    let writer = std::thread::spawn(move || {
        leader.write(move |tx| {
            writable_run(tx, dialect, run)?;
            let _ = checked.send(());
            std::thread::sleep(stall);
            tx.execute(
                "INSERT INTO steps (run_id, step_index, description, at_ms) VALUES ($1, 0, 'late', 0)",
                &[Value::Int(run)],
            )
        })
    });
    passed.recv().unwrap();
    StalledWrite {
        store,
        lease,
        run,
        writer,
    }
}

/// serve-b claims the lease once serve-a's has run out; answers it and how long it took.
fn successor_claims(db: &Db) -> (Lease, Duration) {
    std::thread::sleep(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let lease = db
        .open()
        .claim_lease("serve-b", Duration::from_secs(60))
        .unwrap()
        .expect("the lease ran out");
    (lease, started.elapsed())
}

/// A leader's write that passed the lease check commits before a successor can take the
/// lease, however long the leader stalls inside it: it never lands in the successor's term.
fn a_successor_waits_for_a_write_that_passed_the_lease_check(db: &Db) {
    let stalled = stall_inside_a_checked_write(db, Duration::from_millis(800));
    let (b, waited) = successor_claims(db);
    assert_eq!(
        stalled.writer.join().unwrap().unwrap(),
        1,
        "the checked write committed"
    );
    assert_eq!(b.epoch, stalled.lease.epoch + 1);
    assert!(
        waited >= Duration::from_millis(200),
        "the successor took the lease after {waited:?}, while the old leader's write was open"
    );
    // From here on the old leader's writes are refused.
    assert!(matches!(
        stalled.store.record_step(stalled.run, 1, "later", 0),
        Err(StoreError::Deposed { .. })
    ));
}

/// A leader that stalls inside a write for good does not hold its successor off for good:
/// the server ends the idle transaction, and nothing of it is written.
#[test]
fn a_leader_stalled_inside_a_write_is_cut_off_by_the_server() {
    let Some(db) = Db::postgres() else {
        return;
    };
    let stall = Duration::from_secs(8);
    let stalled = stall_inside_a_checked_write(&db, stall);
    let (b, waited) = successor_claims(&db);
    assert_eq!(b.epoch, stalled.lease.epoch + 1);
    assert!(waited < stall, "the successor waited {waited:?}");
    assert!(
        stalled.writer.join().unwrap().is_err(),
        "the stalled write went through"
    );
    assert!(stalled.store.run(stalled.run).unwrap().steps.is_empty());
}

/// With several replicas, a replica that starts (or the leader) closes only the runs of
/// replicas that are dead, never an operator's attack running on a live one.
fn only_the_runs_of_dead_replicas_are_closed(db: &Db) {
    let a = db.open().with_replica("serve-a");
    let b = db.open().with_replica("serve-b");
    let cli = db.open();
    let alive = |store: &Store, name: &str| store.publish_streams(name, "x:7444", &[]).unwrap();
    alive(&a, "serve-a");
    alive(&b, "serve-b");
    let on_b = b.begin_adhoc("attack disk", 1, "alice", 0).unwrap();
    let on_a = a.begin_adhoc("attack kill", 2, "bob", 0).unwrap();
    let of_cli = cli.begin_adhoc("attack cpu", 3, "carol", 0).unwrap();
    let ids = |runs: Vec<RunSummary>| -> Vec<i64> { runs.iter().map(|r| r.id).collect() };

    // serve-a (re)starting: its own earlier runs and a CLI's, not live serve-b's.
    assert_eq!(ids(a.unfinished_runs(None).unwrap()), [on_a, of_cli]);
    // serve-a leading: nothing, while serve-b is alive.
    let lease = leader(&a, "serve-a");
    assert!(a.unfinished_runs(Some(&lease)).unwrap().is_empty());

    // serve-b stops saying it is alive: its run is the leader's to close.
    let short = Duration::from_millis(1);
    std::thread::sleep(REPLICA_SILENT_AFTER + short);
    alive(&a, "serve-a");
    assert_eq!(ids(a.unfinished_runs(Some(&lease)).unwrap()), [on_b]);
}

#[test]
fn open_existing_leaves_a_missing_file_uncreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troop.db");
    assert!(Store::open_existing(&url(&path)).unwrap().is_none());
    assert!(!path.exists(), "a reader made the store");
    Store::open(&url(&path)).unwrap();
    assert!(Store::open_existing(&url(&path)).unwrap().is_some());
}
