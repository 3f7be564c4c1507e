use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;

const OPEN: Guardrails = Guardrails {
    max_concurrent: usize::MAX,
    min_healthy_percent: 0,
};

fn host(id: &str, group: &str, healthy: bool, under_fault: bool) -> Host {
    Host {
        id: id.to_owned(),
        group: group.to_owned(),
        healthy,
        under_fault,
    }
}

/// `n` healthy, free hosts named `{group}{i}`.
fn fleet(group: &str, n: usize) -> Vec<Host> {
    (0..n)
        .map(|i| host(&format!("{group}{i}"), group, true, false))
        .collect()
}

fn plan(hosts: &[Host], pick: Pick, guardrails: Guardrails, active: usize) -> StepPlan {
    plan_step(
        hosts,
        pick,
        guardrails,
        active,
        &mut StdRng::seed_from_u64(7),
    )
}

fn in_group(ids: &[String], group: &str) -> usize {
    ids.iter().filter(|id| id.starts_with(group)).count()
}

// ---- rules, one by one ----

#[test]
fn all_targets_free_hosts_and_reports_the_rest() {
    let hosts = vec![
        host("a", "", true, false),
        host("b", "", false, false),
        host("c", "", true, true),
        host("d", "", true, false),
        host("e", "", false, true),
    ];
    let p = plan(&hosts, Pick::All, OPEN, 0);
    assert_eq!(p.targets, ["a", "d"]);
    assert_eq!(
        p.skipped,
        [
            ("b".to_owned(), Skip::Unhealthy),
            ("c".to_owned(), Skip::AlreadyFaulted),
            ("e".to_owned(), Skip::AlreadyFaulted),
        ]
    );
}

#[test]
fn count_is_per_group_and_capped_by_group_size() {
    let hosts = [fleet("a", 5), fleet("b", 3), fleet("c", 1)].concat();
    let p = plan(&hosts, Pick::Count(2), OPEN, 0);
    assert_eq!(in_group(&p.targets, "a"), 2);
    assert_eq!(in_group(&p.targets, "b"), 2);
    assert_eq!(in_group(&p.targets, "c"), 1);
    assert!(p.skipped.is_empty());
}

#[test]
fn count_prefers_free_hosts_and_reports_only_the_shortfall() {
    let hosts = vec![
        host("a", "", false, false),
        host("b", "", true, false),
        host("c", "", false, false),
        host("d", "", false, false),
    ];
    let p = plan(&hosts, Pick::Count(2), OPEN, 0);
    assert_eq!(p.targets, ["b"]);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].1, Skip::Unhealthy);
    // Enough free hosts: nothing unhealthy is mentioned.
    let p = plan(&hosts, Pick::Count(1), OPEN, 0);
    assert_eq!(p.targets, ["b"]);
    assert!(p.skipped.is_empty());
}

#[test]
fn percent_is_of_each_group_rounded_up() {
    let hosts = [fleet("a", 10), fleet("b", 3)].concat();
    let p = plan(&hosts, Pick::Percent(25), OPEN, 0);
    assert_eq!(in_group(&p.targets, "a"), 3);
    assert_eq!(in_group(&p.targets, "b"), 1);
    assert!(plan(&hosts, Pick::Percent(0), OPEN, 0).targets.is_empty());
    assert_eq!(plan(&hosts, Pick::Percent(250), OPEN, 0).targets.len(), 13);
}

#[test]
fn percent_counts_unhealthy_hosts_in_the_group_size() {
    // 4 hosts, 50% wants 2, but only one is free.
    let hosts = vec![
        host("a", "", true, false),
        host("b", "", false, false),
        host("c", "", false, false),
        host("d", "", false, false),
    ];
    let p = plan(&hosts, Pick::Percent(50), OPEN, 0);
    assert_eq!(p.targets, ["a"]);
    assert_eq!(p.skipped.len(), 1);
}

#[test]
fn min_healthy_caps_each_group() {
    let hosts = fleet("a", 10);
    let guard = Guardrails {
        max_concurrent: 100,
        min_healthy_percent: 70,
    };
    let p = plan(&hosts, Pick::All, guard, 0);
    assert_eq!(p.targets.len(), 3);
    assert_eq!(p.skipped.len(), 7);
    let why = Skip::MinHealthy {
        group: "a".to_owned(),
        healthy: 10,
        size: 10,
    };
    assert!(p.skipped.iter().all(|(_, s)| *s == why));
}

#[test]
fn min_healthy_floor_uses_whole_group_size() {
    // 8 of 10 free, floor ceil(10 × 70%) = 7: only one may go.
    let mut hosts = fleet("a", 10);
    hosts[0].healthy = false;
    hosts[1].under_fault = true;
    let guard = Guardrails {
        max_concurrent: 100,
        min_healthy_percent: 70,
    };
    let p = plan(&hosts, Pick::All, guard, 0);
    assert_eq!(p.targets.len(), 1);
    let held = p
        .skipped
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                Skip::MinHealthy {
                    healthy: 8,
                    size: 10,
                    ..
                }
            )
        })
        .count();
    assert_eq!(held, 7);
}

#[test]
fn group_already_below_floor_gets_nothing() {
    let mut hosts = [fleet("a", 4), fleet("b", 4)].concat();
    hosts[0].healthy = false;
    hosts[1].under_fault = true;
    let guard = Guardrails {
        max_concurrent: 100,
        min_healthy_percent: 75,
    };
    let p = plan(&hosts, Pick::Count(1), guard, 0);
    assert_eq!(in_group(&p.targets, "a"), 0);
    assert_eq!(in_group(&p.targets, "b"), 1);
    assert_eq!(
        p.skipped,
        [(
            p.skipped[0].0.clone(),
            Skip::MinHealthy {
                group: "a".to_owned(),
                healthy: 2,
                size: 4
            }
        )]
    );
}

#[test]
fn max_concurrent_counts_active_faults() {
    let hosts = fleet("a", 10);
    let guard = Guardrails {
        max_concurrent: 5,
        min_healthy_percent: 0,
    };
    let p = plan(&hosts, Pick::All, guard, 3);
    assert_eq!(p.targets.len(), 2);
    assert_eq!(p.skipped.len(), 8);
    assert!(p.skipped.iter().all(|(_, s)| *s == Skip::MaxConcurrent));
    // Already over the limit (e.g. lowered mid-run): nothing more.
    assert!(plan(&hosts, Pick::All, guard, 9).targets.is_empty());
}

#[test]
fn max_concurrent_is_shared_fairly_across_groups() {
    let hosts = [fleet("a", 10), fleet("b", 10), fleet("c", 1)].concat();
    let guard = Guardrails {
        max_concurrent: 5,
        min_healthy_percent: 0,
    };
    for seed in 0..20 {
        let p = plan_step(
            &hosts,
            Pick::All,
            guard,
            0,
            &mut StdRng::seed_from_u64(seed),
        );
        assert_eq!(in_group(&p.targets, "a"), 2);
        assert_eq!(in_group(&p.targets, "b"), 2);
        assert_eq!(in_group(&p.targets, "c"), 1);
    }
}

#[test]
fn targets_keep_input_order_and_vary_with_seed() {
    let hosts = fleet("h", 20);
    let mut seen = BTreeSet::new();
    for seed in 0..10 {
        let p = plan_step(
            &hosts,
            Pick::Count(5),
            OPEN,
            0,
            &mut StdRng::seed_from_u64(seed),
        );
        let pos: Vec<usize> = p
            .targets
            .iter()
            .map(|t| hosts.iter().position(|h| &h.id == t).unwrap())
            .collect();
        assert!(pos.is_sorted());
        seen.insert(p.targets);
    }
    assert!(seen.len() > 1, "the pick should depend on the seed");
}

#[test]
fn same_seed_same_plan() {
    let hosts = [fleet("a", 7), fleet("b", 9)].concat();
    let guard = Guardrails {
        max_concurrent: 4,
        min_healthy_percent: 20,
    };
    let one = plan_step(
        &hosts,
        Pick::Percent(60),
        guard,
        1,
        &mut StdRng::seed_from_u64(3),
    );
    let two = plan_step(
        &hosts,
        Pick::Percent(60),
        guard,
        1,
        &mut StdRng::seed_from_u64(3),
    );
    assert_eq!(one, two);
}

// ---- regressions for edge cases ----

#[test]
fn regression_percent_rounding() {
    // 33% of 3 is 0.99 → 1; 34% of 3 is 1.02 → 2; 1% of 1 is 0.01 → 1.
    assert_eq!(
        plan(&fleet("a", 3), Pick::Percent(33), OPEN, 0)
            .targets
            .len(),
        1
    );
    assert_eq!(
        plan(&fleet("a", 3), Pick::Percent(34), OPEN, 0)
            .targets
            .len(),
        2
    );
    assert_eq!(
        plan(&fleet("a", 1), Pick::Percent(1), OPEN, 0)
            .targets
            .len(),
        1
    );
    assert_eq!(
        plan(&fleet("a", 200), Pick::Percent(1), OPEN, 0)
            .targets
            .len(),
        2
    );
}

#[test]
fn regression_group_of_one_with_min_healthy_50() {
    // ceil(1 × 50%) = 1 must stay up, so the lone host is never faulted.
    let guard = Guardrails {
        max_concurrent: 10,
        min_healthy_percent: 50,
    };
    let p = plan(&fleet("a", 1), Pick::All, guard, 0);
    assert!(p.targets.is_empty());
    assert_eq!(
        p.skipped,
        [(
            "a0".to_owned(),
            Skip::MinHealthy {
                group: "a".to_owned(),
                healthy: 1,
                size: 1
            }
        )]
    );
}

#[test]
fn regression_max_concurrent_zero() {
    let guard = Guardrails {
        max_concurrent: 0,
        min_healthy_percent: 0,
    };
    let p = plan(&fleet("a", 3), Pick::All, guard, 0);
    assert!(p.targets.is_empty());
    assert_eq!(p.skipped.len(), 3);
    assert!(p.skipped.iter().all(|(_, s)| *s == Skip::MaxConcurrent));
}

#[test]
fn regression_empty_input() {
    assert_eq!(plan(&[], Pick::All, OPEN, 0), StepPlan::default());
    assert_eq!(plan(&[], Pick::Percent(100), OPEN, 5), StepPlan::default());
}

// ---- ledger ----

#[test]
fn a_strike_holds_its_host_but_has_nothing_to_renew_or_revert() {
    let mut ledger = RunFaults::default();
    ledger.struck("h1".into(), 1_000);
    ledger.applied("f2".into(), "h2".into(), 10_000);
    assert_eq!(
        ledger.active_count(),
        2,
        "a kill counts against max_concurrent"
    );
    assert!(ledger.active_hosts().contains("h1"));
    assert_eq!(ledger.faults(), [("f2".to_owned(), "h2".to_owned())]);
    assert_eq!(
        ledger.to_renew(0, 3_000),
        [("f2".to_owned(), "h2".to_owned())]
    );
    assert!(
        ledger.to_renew(9_000, 3_000).is_empty(),
        "its last renewal covers it"
    );
    assert!(ledger.expire(1_000).is_empty());
    assert_eq!(ledger.active_count(), 1);
    assert_eq!(ledger.take_all(), [("f2".to_owned(), "h2".to_owned())]);
}

#[test]
fn ledger_tracks_expires_and_takes_all() {
    let mut ledger = RunFaults::default();
    ledger.applied("f1".into(), "h1".into(), 100);
    ledger.applied("f2".into(), "h2".into(), 200);
    ledger.applied("f3".into(), "h3".into(), 300);
    assert_eq!(ledger.active_count(), 3);
    assert_eq!(ledger.expire(99), Vec::<String>::new());
    assert_eq!(ledger.expire(200), ["f1", "f2"]);
    ledger.ended("f3");
    ledger.ended("f3");
    ledger.ended("nope");
    assert_eq!(ledger.active_count(), 0);
    ledger.applied("f4".into(), "h1".into(), 400);
    ledger.applied("f5".into(), "h5".into(), 500);
    assert_eq!(
        ledger.active_hosts(),
        BTreeSet::from(["h1".to_owned(), "h5".to_owned()])
    );
    assert_eq!(
        ledger.take_all(),
        [
            ("f4".to_owned(), "h1".to_owned()),
            ("f5".to_owned(), "h5".to_owned())
        ]
    );
    assert_eq!(ledger.active_count(), 0);
    assert!(ledger.active_hosts().is_empty());
    assert!(ledger.take_all().is_empty());
}

// ---- properties ----

fn arb_fleet() -> impl Strategy<Value = Vec<Host>> {
    (1usize..=6)
        .prop_flat_map(|groups| {
            prop::collection::vec(
                (
                    0..groups,
                    prop::bool::weighted(0.8),
                    prop::bool::weighted(0.15),
                ),
                1..=40,
            )
        })
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (g, healthy, under_fault))| Host {
                    id: format!("h{i}"),
                    group: format!("g{g}"),
                    healthy,
                    under_fault,
                })
                .collect()
        })
}

fn arb_percent() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..=100, 1 => any::<u8>()]
}

fn arb_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        Just(Pick::All),
        (0usize..=45).prop_map(Pick::Count),
        arb_percent().prop_map(Pick::Percent),
    ]
}

fn arb_guardrails() -> impl Strategy<Value = Guardrails> {
    (0usize..=45, arb_percent()).prop_map(|(max_concurrent, min_healthy_percent)| Guardrails {
        max_concurrent,
        min_healthy_percent,
    })
}

/// What happens between two steps.
#[derive(Debug, Clone)]
enum Between {
    Nothing,
    /// Time moves on by this many ms; due faults expire.
    Advance(i64),
    /// The runner reverts the n-th (mod len) active fault early.
    End(usize),
}

fn arb_between() -> impl Strategy<Value = Between> {
    prop_oneof![
        Just(Between::Nothing),
        (1i64..=60).prop_map(Between::Advance),
        any::<usize>().prop_map(Between::End),
    ]
}

// Oracles written apart from the code under test, so a bug there can't
// hide by also changing what the properties expect.
fn oracle_free(h: &Host) -> bool {
    h.healthy && !h.under_fault
}

fn oracle_wanted(pick: Pick, size: usize) -> usize {
    match pick {
        Pick::All => size,
        Pick::Count(n) => n.min(size),
        Pick::Percent(p) => (size * usize::from(p.min(100))).div_ceil(100),
    }
}

fn floor(size: usize, guardrails: Guardrails) -> usize {
    (size * usize::from(guardrails.min_healthy_percent.min(100))).div_ceil(100)
}

/// Checks every rule of one plan against the fleet it was made for.
fn check_plan(
    hosts: &[Host],
    pick: Pick,
    guardrails: Guardrails,
    active: usize,
    p: &StepPlan,
) -> Result<(), TestCaseError> {
    let index: BTreeMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.id.as_str(), i))
        .collect();
    let pos = |id: &String| index[id.as_str()];

    // Input order, and each host decided at most once.
    let t_pos: Vec<usize> = p.targets.iter().map(pos).collect();
    let s_pos: Vec<usize> = p.skipped.iter().map(|(id, _)| pos(id)).collect();
    prop_assert!(t_pos.is_sorted_by(|a, b| a < b));
    prop_assert!(s_pos.is_sorted_by(|a, b| a < b));
    prop_assert!(t_pos.iter().all(|i| !s_pos.contains(i)));

    // Targets are free; skip reasons fit the host.
    for &i in &t_pos {
        prop_assert!(oracle_free(&hosts[i]), "target {} not free", hosts[i].id);
    }
    for (id, why) in &p.skipped {
        let h = &hosts[pos(id)];
        match why {
            Skip::AlreadyFaulted => prop_assert!(h.under_fault),
            Skip::Unhealthy => prop_assert!(!h.healthy && !h.under_fault),
            Skip::MaxConcurrent | Skip::MinHealthy { .. } => prop_assert!(oracle_free(h)),
        }
    }

    // Max concurrent, and it only holds back when the budget is used up.
    let budget = guardrails.max_concurrent.saturating_sub(active);
    prop_assert!(p.targets.len() <= budget);
    let max_held = p.skipped.iter().any(|(_, s)| *s == Skip::MaxConcurrent);
    if max_held {
        prop_assert_eq!(p.targets.len(), budget);
    }

    // Per group: wanted count, floor, and fair sharing of the budget.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        groups.entry(h.group.as_str()).or_default().push(i);
    }
    let mut cut_by_max = Vec::new();
    let mut per_group = Vec::new();
    for (name, members) in &groups {
        let size = members.len();
        let free = members.iter().filter(|&&i| oracle_free(&hosts[i])).count();
        let targets = t_pos.iter().filter(|i| members.contains(i)).count();
        let skips: Vec<&Skip> = p
            .skipped
            .iter()
            .filter(|(id, _)| members.contains(&pos(id)))
            .map(|(_, s)| s)
            .collect();
        prop_assert_eq!(targets + skips.len(), oracle_wanted(pick, size));
        if let Pick::Percent(pct) = pick {
            prop_assert!(pct == 0 || oracle_wanted(pick, size) > 0);
        }
        let fl = floor(size, guardrails);
        prop_assert!(
            targets == 0 || free - targets >= fl,
            "group {name}: {free} free, {targets} targets, floor {fl}"
        );
        let room = free.saturating_sub(fl);
        let min_held = skips
            .iter()
            .filter(|s| matches!(s, Skip::MinHealthy { .. }))
            .count();
        let max_held = skips.iter().filter(|s| **s == &Skip::MaxConcurrent).count();
        for s in &skips {
            if let Skip::MinHealthy {
                group,
                healthy,
                size: sz,
            } = s
            {
                prop_assert_eq!(group.as_str(), *name);
                prop_assert_eq!((*healthy, *sz), (free, size));
            }
        }
        if min_held > 0 {
            prop_assert_eq!(targets + max_held, room);
        }
        if max_held > 0 {
            cut_by_max.push(targets);
        }
        per_group.push(targets);
    }
    // A group cut by max_concurrent has at most one slot fewer than any other.
    for cut in &cut_by_max {
        for other in &per_group {
            prop_assert!(*other <= cut + 1, "unfair: {per_group:?}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn prop_single_step_obeys_every_rule(
        hosts in arb_fleet(),
        pick in arb_pick(),
        guardrails in arb_guardrails(),
        active in 0usize..=50,
        seed in any::<u64>(),
    ) {
        let p = plan_step(&hosts, pick, guardrails, active, &mut StdRng::seed_from_u64(seed));
        check_plan(&hosts, pick, guardrails, active, &p)?;
        let again = plan_step(&hosts, pick, guardrails, active, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(p, again);
    }

    #[test]
    fn prop_campaign_run_stays_inside_guardrails(
        base in arb_fleet(),
        guardrails in arb_guardrails(),
        steps in prop::collection::vec((arb_pick(), 1i64..=100, arb_between()), 1..=12),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ledger = RunFaults::default();
        // Model of what the ledger must hold: fault id -> (host, due).
        let mut model: BTreeMap<String, (String, i64)> = BTreeMap::new();
        let mut now = 0i64;
        let mut next_id = 0usize;

        for (pick, duration, between) in steps {
            let active_hosts = ledger.active_hosts();
            let view: Vec<Host> = base
                .iter()
                .map(|h| Host {
                    under_fault: h.under_fault || active_hosts.contains(&h.id),
                    ..h.clone()
                })
                .collect();
            let active = ledger.active_count();
            let p = plan_step(&view, pick, guardrails, active, &mut rng);
            check_plan(&view, pick, guardrails, active, &p)?;

            for t in &p.targets {
                prop_assert!(!active_hosts.contains(t), "{t} targeted twice");
                let h = base.iter().find(|h| &h.id == t).unwrap();
                prop_assert!(h.healthy && !h.under_fault);
                let id = format!("f{next_id}");
                next_id += 1;
                ledger.applied(id.clone(), t.clone(), now + duration);
                model.insert(id, (t.clone(), now + duration));
            }
            prop_assert!(ledger.active_count() <= guardrails.max_concurrent);
            prop_assert!(ledger.active_hosts().len() <= guardrails.max_concurrent);
            prop_assert_eq!(ledger.active_count(), model.len());

            match between {
                Between::Nothing => {}
                Between::Advance(ms) => {
                    now += ms;
                    for id in ledger.expire(now) {
                        let (_, due) = model.remove(&id).expect("expired a fault never applied");
                        prop_assert!(due <= now);
                    }
                    prop_assert!(model.values().all(|(_, due)| *due > now));
                }
                Between::End(n) => {
                    if let Some(id) = model.keys().nth(n % model.len().max(1)).cloned() {
                        ledger.ended(&id);
                        model.remove(&id);
                    }
                }
            }
        }

        // Abort: every applied fault not yet ended comes back exactly once.
        let mut reverts = ledger.take_all();
        reverts.sort();
        let expected: Vec<(String, String)> =
            model.into_iter().map(|(id, (host, _))| (id, host)).collect();
        prop_assert_eq!(reverts, expected);
        prop_assert_eq!(ledger.active_count(), 0);
        prop_assert!(ledger.active_hosts().is_empty());
        prop_assert!(ledger.take_all().is_empty());
        prop_assert!(ledger.expire(i64::MAX).is_empty());
    }
}
