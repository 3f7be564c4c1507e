use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;

use super::*;

const MONKEY: &str = r#"
name = "monkey"

[schedule]
every = "1h"
min_time_between = "1d"

[[step]]
select = "role=web"
group_by = "zone"
pick = { count = 1 }
fault = { kind = "kill", name = "nginx" }
"#;

fn agent(id: &str, zone: &str) -> AgentEntry {
    AgentEntry {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        labels: BTreeMap::from([("role".into(), "web".into()), ("zone".into(), zone.into())]),
    }
}

#[test]
fn a_firing_strikes_each_group_once_per_floor_and_remembers_it() {
    let campaign = Campaign::parse(MONKEY, Path::new("monkey.toml")).unwrap();
    let agents = [
        agent("web-1", "a"),
        agent("web-2", "a"),
        agent("web-3", "b"),
    ];
    let store = Store::open("sqlite://:memory:").unwrap();
    let lease = leader(&store);
    let mut rng = StdRng::seed_from_u64(7);
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    assert_eq!(
        groups_of(&agents, &campaign),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );

    let first = fire(&campaign, &agents, &store, &lease, now, &mut rng).unwrap();
    assert_eq!(first.lease, lease);
    assert_eq!(
        first.groups,
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    assert_eq!(
        store.last_run("monkey").unwrap(),
        Some(now.as_millisecond())
    );
    assert_eq!(store.last_strikes("monkey").unwrap().len(), 2);

    // An hour later the campaign runs again, but the one-day floor spares both groups.
    let later = now + jiff::SignedDuration::from_hours(1);
    assert!(
        fire(&campaign, &agents, &store, &lease, later, &mut rng)
            .unwrap()
            .groups
            .is_empty()
    );
    assert_eq!(
        store.last_run("monkey").unwrap(),
        Some(later.as_millisecond())
    );
    let day_later = now + jiff::SignedDuration::from_hours(25);
    assert_eq!(
        fire(&campaign, &agents, &store, &lease, day_later, &mut rng)
            .unwrap()
            .groups
            .len(),
        2
    );
}

#[test]
fn after_a_restart_the_next_firing_follows_the_last_run_not_the_start() {
    let campaign = Campaign::parse(MONKEY, Path::new("monkey.toml")).unwrap();
    let store = Store::open("sqlite://:memory:").unwrap();
    let lease = leader(&store);
    let mut rng = StdRng::seed_from_u64(7);
    let just_now = jiff::Timestamp::now().as_millisecond();
    store
        .record_firing(&lease, "monkey", just_now, &[])
        .unwrap();
    let next = next_due(&campaign, &store, &mut rng).unwrap();
    // Every hour from the last run, not at once.
    assert!(
        next.as_millisecond() >= just_now + 3_600_000 - 1_000,
        "{next}"
    );

    // A run missed while serve was down fires at once.
    store
        .record_firing(&lease, "monkey", just_now - 10 * 3_600_000, &[])
        .unwrap();
    let next = next_due(&campaign, &store, &mut rng).unwrap();
    assert!(next <= jiff::Timestamp::now(), "{next}");
}

#[test]
fn a_run_left_unfinished_by_a_stopped_serve_is_closed_as_failed() {
    let store = Store::open("sqlite://:memory:").unwrap();
    let run = store
        .begin_run("monkey", "sha", 1, false, now_unix_ms(), "ops", None)
        .unwrap();
    close_stale_runs(&store, None).unwrap();
    assert!(store.unfinished_runs(None).unwrap().is_empty());
    assert_eq!(store.run(run).unwrap().run.status, "failed");
}

#[test]
fn a_deposed_leader_fires_nothing_and_a_new_one_closes_its_run() {
    let campaign = Campaign::parse(MONKEY, Path::new("monkey.toml")).unwrap();
    let agents = [agent("web-1", "a")];
    let store = Store::open("sqlite://:memory:").unwrap();
    let old = store
        .claim_lease("serve-a", std::time::Duration::from_millis(200))
        .unwrap()
        .unwrap();
    let run = store
        .begin_run(
            "monkey",
            "sha",
            1,
            false,
            now_unix_ms(),
            "schedule",
            Some(&old),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let new = leader(&store);
    let mut rng = StdRng::seed_from_u64(7);
    let now = jiff::Timestamp::now();
    assert!(matches!(
        fire(&campaign, &agents, &store, &old, now, &mut rng),
        Err(StoreError::Deposed { .. })
    ));
    assert!(matches!(
        refuse_latched(&campaign, &store, &old, "latched", "schedule"),
        Err(StoreError::Deposed { .. })
    ));
    assert_eq!(store.last_run("monkey").unwrap(), None, "nothing recorded");
    close_stale_runs(&store, Some(&new)).unwrap();
    assert_eq!(store.run(run).unwrap().run.status, "failed");
    assert_eq!(
        fire(&campaign, &agents, &store, &new, now, &mut rng)
            .unwrap()
            .groups
            .len(),
        1
    );
}

fn leader(store: &Store) -> Lease {
    store
        .claim_lease("serve-b", std::time::Duration::from_secs(60))
        .unwrap()
        .unwrap()
}
