use super::*;

fn hosts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("host-{i:03}")).collect()
}

fn is_ordered_subset(picked: &[String], all: &[String]) -> bool {
    let mut rest = all.iter();
    picked.iter().all(|p| rest.any(|c| c == p))
}

#[test]
fn all_returns_everything_in_order() {
    let all = hosts(5);
    let mut rng = rng_from_seed(Some(1));
    assert_eq!(pick(&all, Pick::All, &mut rng), all);
    assert!(pick(&[] as &[String], Pick::All, &mut rng).is_empty());
}

#[test]
fn count_sizes() {
    let mut rng = rng_from_seed(Some(2));
    for len in [0, 1, 2, 5, 10, 100] {
        let all = hosts(len);
        for n in [0, 1, 3, 10, 1000] {
            let picked = pick(&all, Pick::Count(n), &mut rng);
            assert_eq!(picked.len(), n.min(len), "Count({n}) of {len}");
            assert!(is_ordered_subset(&picked, &all), "Count({n}) of {len}");
        }
    }
}

#[test]
fn count_does_not_repeat_candidates() {
    let all = hosts(50);
    let mut rng = rng_from_seed(Some(3));
    let picked = pick(&all, Pick::Count(30), &mut rng);
    let mut unique = picked.clone();
    unique.dedup();
    assert_eq!(unique.len(), 30);
}

#[test]
fn percent_sizes_round_up() {
    // (candidates, percent, expected)
    let cases = [
        (5, 10, 1),
        (5, 20, 1),
        (5, 21, 2),
        (5, 100, 5),
        (10, 10, 1),
        (10, 15, 2),
        (100, 1, 1),
        (100, 50, 50),
        (101, 50, 51),
        (3, 33, 1),
        (3, 34, 2),
        (1, 1, 1),
        (0, 50, 0),
        (7, 0, 0),
        (7, 200, 7),
    ];
    let mut rng = rng_from_seed(Some(4));
    for (len, p, expected) in cases {
        let all = hosts(len);
        assert_eq!(Pick::Percent(p).count(len), expected, "{p}% of {len}");
        let picked = pick(&all, Pick::Percent(p), &mut rng);
        assert_eq!(picked.len(), expected, "{p}% of {len}");
        assert!(is_ordered_subset(&picked, &all));
    }
}

#[test]
fn percent_never_zero_with_candidates() {
    for len in 1..=300 {
        for p in 1..=100u8 {
            let n = Pick::Percent(p).count(len);
            assert!(n >= 1 && n <= len, "{p}% of {len} gave {n}");
        }
    }
    assert_eq!(Pick::Percent(100).count(usize::MAX), usize::MAX);
    assert_eq!(Pick::Percent(50).count(usize::MAX), usize::MAX / 2 + 1);
}

#[test]
fn same_seed_same_picks() {
    let all = hosts(40);
    for how in [Pick::Count(7), Pick::Percent(25)] {
        let a = pick(&all, how, &mut rng_from_seed(Some(7)));
        let b = pick(&all, how, &mut rng_from_seed(Some(7)));
        assert_eq!(a, b);
    }
    let mut a = rand::rngs::StdRng::seed_from_u64(7);
    let mut b = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20 {
        assert_eq!(
            pick(&all, Pick::Count(3), &mut a),
            pick(&all, Pick::Count(3), &mut b)
        );
    }
}

#[test]
fn different_seeds_eventually_differ() {
    let all = hosts(40);
    let first = pick(&all, Pick::Count(5), &mut rng_from_seed(Some(7)));
    let differs =
        (8..100).any(|seed| pick(&all, Pick::Count(5), &mut rng_from_seed(Some(seed))) != first);
    assert!(differs);
}

#[test]
fn os_entropy_rng_works() {
    let all = hosts(10);
    let picked = pick(&all, Pick::Count(3), &mut rng_from_seed(None));
    assert_eq!(picked.len(), 3);
}

#[test]
fn count_one_of_four_is_unbiased() {
    let all = hosts(4);
    let mut rng = rng_from_seed(Some(11));
    let draws = 4000;
    let mut seen = [0usize; 4];
    for _ in 0..draws {
        let picked = pick(&all, Pick::Count(1), &mut rng);
        assert_eq!(picked.len(), 1);
        let i = all.iter().position(|h| *h == picked[0]).unwrap();
        seen[i] += 1;
    }
    // Expect ~1000 each; 800..1200 is over 7 standard deviations wide.
    for (i, n) in seen.iter().enumerate() {
        assert!(
            (800..1200).contains(n),
            "candidate {i} picked {n} of {draws}: {seen:?}"
        );
    }
}
