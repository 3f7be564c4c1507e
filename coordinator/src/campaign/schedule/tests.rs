use super::*;
use jiff::civil::{date, time};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
];

fn w(s: &str) -> Window {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn werr(s: &str) -> String {
    s.parse::<Window>().unwrap_err().to_string()
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn sched(every: Duration, window: Option<&str>, zone: &str) -> Schedule {
    Schedule {
        every,
        jitter: Duration::ZERO,
        window: window.map(w),
        timezone: tz(zone),
        blackout: vec![],
        mean_time_between: None,
        min_time_between: None,
    }
}

fn local(s: &Schedule, at: Timestamp) -> DateTime {
    s.timezone.to_datetime(at)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

// --- Window parsing ---

#[test]
fn parses_and_prints_canonically() {
    for (text, canonical) in [
        ("Mon-Fri 09:00-17:00", "Mon-Fri 09:00-17:00"),
        ("Mon,Wed,Fri 10:00-12:30", "Mon,Wed,Fri 10:00-12:30"),
        ("Sat-Sun 00:00-24:00", "Sat-Sun 00:00-24:00"),
        ("Mon-Sun 22:00-06:00", "Mon-Sun 22:00-06:00"),
        ("mon-FRI 9:00-17:00", "Mon-Fri 09:00-17:00"),
        ("Monday,Tuesday 08:00-09:00", "Mon-Tue 08:00-09:00"),
        ("  Mon - Fri  09:00 - 17:00 ", "Mon-Fri 09:00-17:00"),
        ("Fri-Mon 01:00-02:00", "Mon,Fri-Sun 01:00-02:00"),
        ("Sun,Mon,Mon 01:00-02:00", "Mon,Sun 01:00-02:00"),
        ("Tue,Wed,Thu 01:00-02:00", "Tue-Thu 01:00-02:00"),
    ] {
        assert_eq!(w(text).to_string(), canonical, "{text:?}");
        assert_eq!(w(canonical), w(text));
    }
    let mf = w("Mon-Fri 09:00-17:00");
    assert_eq!(
        mf.weekdays().collect::<Vec<_>>(),
        [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday
        ]
    );
}

#[test]
fn parse_errors_name_the_bad_part() {
    assert_eq!(
        werr("Mnd-Fri 09:00-17:00"),
        r#"unknown weekday "Mnd"; use Mon..Sun"#
    );
    assert_eq!(
        werr("Mon-Fri 25:00-26:00"),
        r#""25:00" is not a time HH:MM"#
    );
    assert_eq!(
        werr("Mon-Fri 09:00-17:60"),
        r#""17:60" is not a time HH:MM"#
    );
    assert_eq!(
        werr("Mon-Fri 09:00-24:01"),
        r#""24:01" is not a time HH:MM"#
    );
    assert_eq!(werr("Mon-Fri 9-17"), r#""9" is not a time HH:MM"#);
    assert_eq!(werr("Mon-Fri 09:0-17:00"), r#""09:0" is not a time HH:MM"#);
    assert_eq!(
        werr("Mon-Fri"),
        r#"window "Mon-Fri" needs hours, e.g. "Mon-Fri 09:00-17:00""#
    );
    assert_eq!(
        werr("09:00-17:00"),
        r#"window "09:00-17:00" needs weekdays, e.g. "Mon-Fri 09:00-17:00""#
    );
    assert_eq!(werr(""), r#"empty window; e.g. "Mon-Fri 09:00-17:00""#);
    assert_eq!(
        werr("Mon 09:00"),
        r#"hours "09:00" need a start and an end, e.g. "09:00-17:00""#
    );
    assert_eq!(
        werr("Mon 24:00-01:00"),
        r#"a window cannot start at "24:00"; use 00:00"#
    );
    assert_eq!(
        werr("Mon 09:00 17:00"),
        r#"hours "09:00 17:00" need a start and an end, e.g. "09:00-17:00""#
    );
    assert!(werr("Mon 09:00-09:00").contains("is empty"));
    assert_eq!(
        werr("Mon,,Tue 09:00-10:00"),
        r#"empty weekday in "Mon,,Tue""#
    );
    assert_eq!(
        werr("Mon-Funday 09:00-10:00"),
        r#"unknown weekday "Funday"; use Mon..Sun"#
    );
}

// --- Window::contains ---

fn dt(s: &str) -> DateTime {
    s.parse().unwrap()
}

#[test]
fn contains_daytime_window() {
    let win = w("Mon-Fri 09:00-17:00");
    // 2026-03-02 is a Monday.
    assert!(win.contains(dt("2026-03-02T09:00")));
    assert!(win.contains(dt("2026-03-02T16:59:59.999999999")));
    assert!(!win.contains(dt("2026-03-02T17:00")));
    assert!(!win.contains(dt("2026-03-02T08:59:59")));
    assert!(win.contains(dt("2026-03-06T12:00")));
    assert!(!win.contains(dt("2026-03-07T12:00")));
    assert!(!win.contains(dt("2026-03-08T12:00")));
}

#[test]
fn contains_end_of_day() {
    let win = w("Sat-Sun 00:00-24:00");
    assert!(win.contains(dt("2026-03-07T00:00")));
    assert!(win.contains(dt("2026-03-08T23:59:59.999999999")));
    assert!(!win.contains(dt("2026-03-09T00:00")));
    assert!(!win.contains(dt("2026-03-06T23:59:59.999999999")));
    let evening = w("Fri 18:00-24:00");
    assert!(evening.contains(dt("2026-03-06T23:59")));
    assert!(!evening.contains(dt("2026-03-07T00:00")));
}

#[test]
fn contains_overnight_belongs_to_start_day() {
    let win = w("Sun 22:00-06:00");
    assert!(!win.contains(dt("2026-03-08T21:59")));
    assert!(win.contains(dt("2026-03-08T22:00")));
    assert!(win.contains(dt("2026-03-09T00:00")));
    assert!(win.contains(dt("2026-03-09T05:59:59")));
    assert!(!win.contains(dt("2026-03-09T06:00")));
    assert!(!win.contains(dt("2026-03-09T22:00")));
    // Sunday morning belongs to a Saturday night, which is not in the set.
    assert!(!win.contains(dt("2026-03-08T01:00")));
    let nightly = w("Mon-Sun 22:00-06:00");
    assert!(nightly.contains(dt("2026-03-04T03:00")));
    assert!(!nightly.contains(dt("2026-03-04T12:00")));
    // Ending at 00:00 is the same as ending at 24:00.
    let late = w("Mon 22:00-00:00");
    assert!(late.contains(dt("2026-03-02T23:00")));
    assert!(!late.contains(dt("2026-03-03T00:00")));
}

// --- Schedule: hand-written regressions ---

/// Runs `next_run` from `from` until `until`, checking nothing.
fn runs(s: &Schedule, from: Timestamp, until: Timestamp, seed: u64) -> Vec<Timestamp> {
    let mut r = rng(seed);
    let mut out = vec![];
    let mut at = from;
    while let Some(next) = s.next_run(at, &mut r).filter(|&n| n < until) {
        assert!(next > at, "{next} not after {at}");
        out.push(next);
        at = next;
    }
    out
}

#[test]
fn no_window_is_every_plus_nothing() {
    let s = sched(hours(1), None, "UTC");
    assert_eq!(
        s.next_run(ts("2026-01-01T00:00Z"), &mut rng(1)),
        Some(ts("2026-01-01T01:00Z"))
    );
}

#[test]
fn jitter_stays_below_bound() {
    let mut s = sched(hours(1), None, "UTC");
    s.jitter = mins(10);
    let mut r = rng(7);
    let from = ts("2026-01-01T00:00Z");
    let mut seen_late = false;
    for _ in 0..1000 {
        let next = s.next_run(from, &mut r).unwrap();
        let delay = next.duration_since(from);
        assert!(delay >= SignedDuration::from_hours(1));
        assert!(delay < SignedDuration::from_mins(70));
        seen_late |= delay > SignedDuration::from_mins(65);
    }
    assert!(seen_late, "jitter never reached its upper half");
}

#[test]
fn berlin_spring_forward_keeps_local_hours() {
    // 2026-03-29 02:00 CET jumps to 03:00 CEST.
    let s = sched(hours(1), Some("Mon-Sun 09:00-17:00"), "Europe/Berlin");
    let all = runs(&s, ts("2026-03-28T15:30Z"), ts("2026-03-31T00:00Z"), 1);
    for &at in &all {
        let l = local(&s, at);
        assert!((9..17).contains(&l.hour()), "{at} is {l} local");
    }
    // Saturday 16:30 CET + 1h is outside; next opening is Sunday 09:00 CEST.
    assert_eq!(all[0], ts("2026-03-29T07:00Z"));
    assert!(all.contains(&ts("2026-03-30T07:00Z")));
    // Eight runs a day: 09:00 .. 16:00.
    assert_eq!(all.len(), 16);
}

#[test]
fn berlin_fall_back_keeps_local_hours() {
    // 2026-10-25 03:00 CEST falls back to 02:00 CET.
    let s = sched(hours(1), Some("Mon-Sun 09:00-17:00"), "Europe/Berlin");
    let all = runs(&s, ts("2026-10-24T14:30Z"), ts("2026-10-27T00:00Z"), 1);
    assert_eq!(all[0], ts("2026-10-25T08:00Z"));
    assert!(all.contains(&ts("2026-10-26T08:00Z")));
    assert_eq!(all.len(), 16);
    for &at in &all {
        assert!((9..17).contains(&local(&s, at).hour()));
    }
}

#[test]
fn window_inside_dst_gap_opens_at_gap_end_or_skips() {
    // Local 02:30 does not exist on 2026-03-29 in Berlin; 03:00 CEST
    // (01:00Z) is the first local time in the window.
    let s = sched(hours(1), Some("Sun 02:30-04:00"), "Europe/Berlin");
    assert_eq!(
        s.next_run(ts("2026-03-28T12:00Z"), &mut rng(1)),
        Some(ts("2026-03-29T01:00Z"))
    );
    // A window wholly inside the gap has no moment that day.
    let s = sched(hours(1), Some("Sun 02:15-02:45"), "Europe/Berlin");
    assert_eq!(
        s.next_run(ts("2026-03-28T12:00Z"), &mut rng(1)),
        Some(ts("2026-04-05T00:15Z"))
    );
}

#[test]
fn window_in_dst_fold_is_allowed_twice() {
    // 02:00-02:30 local happens at 00:00Z (CEST) and again at 01:00Z (CET).
    let s = sched(mins(10), Some("Sun 02:00-02:30"), "Europe/Berlin");
    let all = runs(&s, ts("2026-10-24T23:50Z"), ts("2026-10-25T12:00Z"), 1);
    let expected: Vec<Timestamp> = ["00:00", "00:10", "00:20", "01:00", "01:10", "01:20"]
        .iter()
        .map(|t| ts(&format!("2026-10-25T{t}Z")))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn new_york_weekends_across_dst() {
    let s = sched(hours(1), Some("Mon-Fri 09:00-17:00"), "America/New_York");
    // Friday 16:30 EST; DST starts Sunday 2026-03-08; Monday 09:00 EDT.
    assert_eq!(
        s.next_run(ts("2026-03-06T21:30Z"), &mut rng(1)),
        Some(ts("2026-03-09T13:00Z"))
    );
    // Friday 16:30 EDT; DST ends Sunday 2026-11-01; Monday 09:00 EST.
    assert_eq!(
        s.next_run(ts("2026-10-30T20:30Z"), &mut rng(1)),
        Some(ts("2026-11-02T14:00Z"))
    );
}

#[test]
fn sydney_and_kolkata_offsets() {
    // Sydney DST ends 2026-04-05 03:00 AEDT -> 02:00 AEST.
    let s = sched(hours(2), Some("Mon-Fri 09:00-17:00"), "Australia/Sydney");
    // Friday 2026-04-03 16:00 AEDT = 05:00Z; Monday 09:00 AEST = Sunday 23:00Z.
    assert_eq!(
        s.next_run(ts("2026-04-03T05:00Z"), &mut rng(1)),
        Some(ts("2026-04-05T23:00Z"))
    );
    let s = sched(hours(1), Some("Mon 09:00-09:30"), "Asia/Kolkata");
    // 2026-03-02 is a Monday; 09:00 IST = 03:30Z.
    assert_eq!(
        s.next_run(ts("2026-03-01T00:00Z"), &mut rng(1)),
        Some(ts("2026-03-02T03:30Z"))
    );
}

#[test]
fn window_opening_at_monday_midnight() {
    let s = sched(mins(10), Some("Mon 00:00-01:00"), "UTC");
    // Sunday 23:55 + 10 min is Monday 00:05, inside.
    assert_eq!(
        s.next_run(ts("2026-03-08T23:55Z"), &mut rng(1)),
        Some(ts("2026-03-09T00:05Z"))
    );
    // Monday 00:55 + 10 min is outside; next Monday 00:00.
    assert_eq!(
        s.next_run(ts("2026-03-09T00:55Z"), &mut rng(1)),
        Some(ts("2026-03-16T00:00Z"))
    );
    let s = sched(mins(10), Some("Mon 00:00-01:00"), "Europe/Berlin");
    // Sunday 23:00 Berlin (22:00Z) -> Monday 00:00 Berlin (23:00Z Sunday).
    assert_eq!(
        s.next_run(ts("2026-03-08T21:00Z"), &mut rng(1)),
        Some(ts("2026-03-08T23:00Z"))
    );
}

#[test]
fn blackout_of_a_whole_working_week() {
    let mut s = sched(hours(1), Some("Mon-Fri 09:00-17:00"), "Europe/Berlin");
    s.blackout = (1..=5).map(|d| date(2026, 6, d)).collect();
    // Friday 2026-05-29 16:30 CEST; the week of 1 June is blacked out.
    assert_eq!(
        s.next_run(ts("2026-05-29T14:30Z"), &mut rng(1)),
        Some(ts("2026-06-08T07:00Z"))
    );
    assert!(!s.allows(ts("2026-06-03T10:00Z")));
    assert!(s.allows(ts("2026-06-08T10:00Z")));
}

#[test]
fn blackout_cuts_overnight_window_by_local_date() {
    let mut s = sched(hours(1), Some("Mon-Sun 22:00-06:00"), "UTC");
    s.blackout = vec![date(2026, 3, 3)]; // a Tuesday
    assert!(s.allows(ts("2026-03-02T23:00Z")));
    assert!(!s.allows(ts("2026-03-03T01:00Z")));
    assert!(!s.allows(ts("2026-03-03T23:00Z")));
    assert!(s.allows(ts("2026-03-04T01:00Z")));
    // Monday 23:30 + 1h lands on the blacked-out Tuesday: skip to Wednesday 00:00.
    assert_eq!(
        s.next_run(ts("2026-03-02T23:30Z"), &mut rng(1)),
        Some(ts("2026-03-04T00:00Z"))
    );
}

#[test]
fn nothing_allowed_within_horizon_is_none() {
    let mut s = sched(hours(1), Some("Mon 09:00-10:00"), "UTC");
    let first_monday = date(2026, 3, 2);
    s.blackout = (0..60)
        .map(|i| first_monday.checked_add(Span::new().weeks(i)).unwrap())
        .collect();
    assert_eq!(s.next_run(ts("2026-03-01T00:00Z"), &mut rng(1)), None);
    // A window on no day (not writable as text, but constructible).
    s.blackout.clear();
    s.window = Some(Window {
        days: 0,
        start: time(9, 0, 0, 0),
        end: None,
    });
    assert_eq!(s.next_run(ts("2026-03-01T00:00Z"), &mut rng(1)), None);
    // All days blacked out, no window.
    let mut s = sched(hours(1), None, "Europe/Berlin");
    let d0 = date(2026, 1, 1);
    s.blackout = (0..410)
        .map(|i| d0.checked_add(Span::new().days(i)).unwrap())
        .collect();
    assert_eq!(s.next_run(ts("2026-01-01T12:00Z"), &mut rng(1)), None);
    // Past the end of time.
    let s = sched(hours(1), None, "UTC");
    assert_eq!(s.next_run(Timestamp::MAX, &mut rng(1)), None);
}

#[test]
fn zero_every_still_moves_forward() {
    let s = sched(Duration::ZERO, None, "UTC");
    assert_eq!(s.validate(), Err(ScheduleError::ZeroEvery));
    let from = ts("2026-01-01T00:00Z");
    assert!(s.next_run(from, &mut rng(1)).unwrap() > from);
}

#[test]
fn validate_rejects_zero_mean() {
    let mut s = sched(hours(1), None, "UTC");
    assert_eq!(s.validate(), Ok(()));
    s.mean_time_between = Some(Duration::ZERO);
    assert_eq!(s.validate(), Err(ScheduleError::ZeroMeanTimeBetween));
}

// --- Strikes ---

#[test]
fn strike_probability_follows_mean() {
    let mut s = sched(hours(1), None, "UTC");
    assert_eq!(s.strike_probability(), 1.0);
    s.mean_time_between = Some(hours(1));
    assert!((s.strike_probability() - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    s.mean_time_between = Some(hours(24 * 365));
    let p = s.strike_probability();
    assert!((p - 1.0 / (24.0 * 365.0)).abs() < 1e-8, "{p}");
    s.mean_time_between = Some(Duration::ZERO);
    assert_eq!(s.strike_probability(), 1.0);
}

#[test]
fn strike_rate_matches_probability() {
    let mut s = sched(hours(1), None, "UTC");
    s.mean_time_between = Some(hours(10));
    let p = s.strike_probability();
    let mut r = rng(42);
    let now = ts("2026-01-01T00:00Z");
    let n = 20_000;
    let hits = (0..n)
        .filter(|_| s.strikes_group(None, now, &mut r))
        .count();
    let rate = hits as f64 / f64::from(n);
    // Five standard deviations.
    let sd = (p * (1.0 - p) / f64::from(n)).sqrt();
    assert!((rate - p).abs() < 5.0 * sd, "rate {rate} vs p {p}");
}

#[test]
fn floor_blocks_recent_strikes() {
    let mut s = sched(hours(1), None, "UTC");
    let now = ts("2026-01-02T00:00Z");
    assert!(s.floor_allows(Some(now), now));
    s.min_time_between = Some(hours(24));
    assert!(s.floor_allows(None, now));
    assert!(s.floor_allows(Some(ts("2026-01-01T00:00Z")), now));
    assert!(!s.floor_allows(Some(ts("2026-01-01T00:00:01Z")), now));
    // A last strike in the future (clock went back) blocks.
    assert!(!s.floor_allows(Some(ts("2026-01-03T00:00Z")), now));
    // Floor blocks before any dice: no strike even with p = 1.
    assert!(!s.strikes_group(Some(now), now, &mut rng(1)));
    assert!(s.strikes_group(None, now, &mut rng(1)));
}

#[test]
fn plan_updates_state_and_respects_floor() {
    let mut s = sched(hours(1), Some("Mon-Fri 09:00-17:00"), "Europe/Berlin");
    s.min_time_between = Some(hours(24));
    let groups = vec!["a".to_string(), "b".to_string(), "a".to_string()];
    let mut last = BTreeMap::new();
    // "b" was struck Monday 08:30 local (06:30Z).
    last.insert("b".to_string(), ts("2026-03-02T06:30Z"));
    let plan = s.plan(ts("2026-03-02T07:00Z"), 7, &groups, &last, &mut rng(3));
    // From Monday 08:00 local: hourly runs 09:00..16:00 local (08:00Z..15:00Z), Mon..Fri.
    assert_eq!(plan.len(), 5 * 8);
    assert_eq!(plan[0].at, ts("2026-03-02T08:00Z"));
    // No mean: every allowed group is struck at the first run the floor allows.
    assert_eq!(plan[0].groups, ["a"]);
    let b_first = plan
        .iter()
        .find(|r| r.groups.contains(&"b".into()))
        .unwrap();
    assert_eq!(b_first.at, ts("2026-03-03T08:00Z"));
    let strikes_of = |g: &str| {
        plan.iter()
            .filter(|r| r.groups.iter().any(|x| x == g))
            .count()
    };
    assert_eq!(strikes_of("a"), 5);
    assert_eq!(strikes_of("b"), 4);
    // The caller's map is untouched.
    assert_eq!(last.len(), 1);
}

#[test]
fn plan_is_deterministic_for_a_seed() {
    let mut s = sched(mins(30), Some("Mon-Fri 09:00-17:00"), "America/New_York");
    s.jitter = mins(20);
    s.mean_time_between = Some(hours(8));
    s.min_time_between = Some(hours(2));
    let groups: Vec<String> = ["c1", "c2", "c3"].map(String::from).to_vec();
    let from = ts("2026-03-05T12:00Z");
    let a = s.plan(from, 7, &groups, &BTreeMap::new(), &mut rng(9));
    let b = s.plan(from, 7, &groups, &BTreeMap::new(), &mut rng(9));
    let c = s.plan(from, 7, &groups, &BTreeMap::new(), &mut rng(10));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(!a.is_empty());
    assert!(a.iter().all(|r| r.at > from));
    let end = ts("2026-03-12T12:00Z");
    assert!(a.iter().all(|r| r.at < end));
}

// --- Property tests ---

/// An oracle for `Window::contains` written independently: is `l` in the
/// window instance that starts on `l`'s date or on the day before?
fn oracle_contains(win: &Window, l: DateTime) -> bool {
    [l.date(), l.date().yesterday().unwrap()]
        .into_iter()
        .any(|d| {
            if !win.on(d.weekday()) {
                return false;
            }
            let open = d.to_datetime(win.start);
            let close = match win.end {
                None => d.tomorrow().unwrap().to_datetime(Time::midnight()),
                Some(e) if e <= win.start => d.tomorrow().unwrap().to_datetime(e),
                Some(e) => d.to_datetime(e),
            };
            open <= l && l < close
        })
}

fn oracle_allows(s: &Schedule, at: Timestamp) -> bool {
    let l = s.timezone.to_datetime(at);
    !s.blackout.contains(&l.date()) && s.window.is_none_or(|win| oracle_contains(&win, l))
}

fn arb_window() -> impl Strategy<Value = Window> {
    // Quarter hours make DST edges (02:00, 03:00) come up often.
    (1u8..128, 0i8..24, 0i8..4, 0i8..=24, 0i8..4).prop_filter_map(
        "empty window",
        |(days, sh, sq, eh, eq)| {
            let start = time(sh, sq * 15, 0, 0);
            let end = if eh == 24 {
                None
            } else {
                Some(time(eh, eq * 15, 0, 0))
            };
            (end != Some(start)).then_some(Window { days, start, end })
        },
    )
}

#[derive(Debug, Clone)]
struct Case {
    schedule: Schedule,
    start: Timestamp,
    groups: Vec<String>,
    seed: u64,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let every = prop_oneof![60u64..600, 600u64..3600, 3600u64..=21600];
    let start = ts("2026-01-01T00:00Z").as_second()..ts("2028-01-01T00:00Z").as_second();
    (
        (
            every,
            0u32..1000,
            proptest::option::weighted(0.85, arb_window()),
        ),
        0usize..ZONES.len(),
        proptest::collection::vec(0i64..30, 0..8),
        start,
        proptest::option::of(60u64..7 * 86_400),
        proptest::option::of(0u64..2 * 86_400),
        1usize..5,
        any::<u64>(),
    )
        .prop_map(
            |((every, jitter_permille, window), zone, blackout, start, mean, min, n, seed)| {
                let every = Duration::from_secs(every);
                let start = Timestamp::from_second(start).unwrap();
                let timezone = tz(ZONES[zone]);
                let first = timezone.to_datetime(start).date();
                Case {
                    schedule: Schedule {
                        every,
                        jitter: every * jitter_permille / 1000,
                        window,
                        blackout: blackout
                            .into_iter()
                            .map(|d| first.checked_add(Span::new().days(d)).unwrap())
                            .collect(),
                        timezone,
                        mean_time_between: mean.map(Duration::from_secs),
                        min_time_between: min.map(Duration::from_secs),
                    },
                    start,
                    groups: (0..n).map(|i| format!("g{i}")).collect(),
                    seed,
                }
            },
        )
}

/// What a service persists across a restart, kept as text.
#[derive(Clone, Debug, Default)]
struct Persisted {
    last_run: Option<String>,
    last_strikes: BTreeMap<String, String>,
}

/// One strike of a group at a run.
type Strike = (Timestamp, String);

/// Runs the service loop from persisted state until `until` or until
/// `max_runs` runs, returning the runs, the strikes and the new state.
fn service(
    s: &Schedule,
    start: Timestamp,
    until: Timestamp,
    max_runs: usize,
    groups: &[String],
    state: &Persisted,
    rng: &mut StdRng,
) -> Result<(Vec<Timestamp>, Vec<Strike>, Persisted), TestCaseError> {
    let mut last_run = state.last_run.as_deref().map_or(start, ts);
    let mut last: BTreeMap<String, Timestamp> = state
        .last_strikes
        .iter()
        .map(|(g, t)| (g.clone(), ts(t)))
        .collect();
    let (mut runs, mut strikes) = (vec![], vec![]);
    while runs.len() < max_runs {
        let at = s
            .next_run(last_run, rng)
            .expect("a window with a day and few blackouts always has a next run");
        // Checked here too so a regression fails instead of looping.
        prop_assert!(at > last_run, "{at} not after {last_run}");
        if at >= until {
            break;
        }
        for g in groups {
            if s.strikes_group(last.get(g).copied(), at, rng) {
                last.insert(g.clone(), at);
                strikes.push((at, g.clone()));
            }
        }
        runs.push(at);
        last_run = at;
    }
    let state = Persisted {
        last_run: Some(last_run.to_string()),
        last_strikes: last
            .iter()
            .map(|(g, t)| (g.clone(), t.to_string()))
            .collect(),
    };
    Ok((runs, strikes, state))
}

/// The guarantees over a whole timeline of runs and strikes.
fn check_timeline(
    s: &Schedule,
    start: Timestamp,
    runs: &[Timestamp],
    strikes: &[Strike],
) -> Result<(), TestCaseError> {
    let every = SignedDuration::try_from(s.every).unwrap();
    let mut prev = start;
    for &at in runs {
        prop_assert!(oracle_allows(s, at), "{at} ({}) not allowed", local(s, at));
        prop_assert!(s.allows(at));
        prop_assert!(at > prev, "{at} not after {prev}");
        prop_assert!(
            at.duration_since(prev) >= every,
            "{at} too soon after {prev}"
        );
        prev = at;
    }
    if let Some(min) = s.min_time_between {
        let min = SignedDuration::try_from(min).unwrap();
        let mut last: BTreeMap<&str, Timestamp> = BTreeMap::new();
        for (at, g) in strikes {
            if let Some(&before) = last.get(g.as_str()) {
                prop_assert!(
                    at.duration_since(before) >= min,
                    "{g} struck at {before} and {at}"
                );
            }
            last.insert(g, *at);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn window_text_round_trips(win in arb_window()) {
        prop_assert_eq!(win.to_string().parse::<Window>().unwrap(), win);
    }

    #[test]
    fn contains_matches_oracle(win in arb_window(), minute in 0i64..(14 * 24 * 60)) {
        let l = dt("2026-03-01T00:00")
            .checked_add(SignedDuration::from_mins(minute))
            .unwrap();
        prop_assert_eq!(win.contains(l), oracle_contains(&win, l));
    }

    #[test]
    fn next_allowed_is_the_earliest(case in arb_case(), offset in 0i64..(7 * 86_400)) {
        let s = &case.schedule;
        let from = case.start.checked_add(SignedDuration::from_secs(offset)).unwrap();
        let found = s.next_allowed(from).unwrap();
        prop_assert!(found >= from);
        prop_assert!(oracle_allows(s, found));
        // All window edges and offsets in ZONES are whole minutes, so
        // checking each minute boundary between finds any earlier moment.
        prop_assert!(!oracle_allows(s, from) || found == from);
        let mut t = from.checked_add(SignedDuration::from_secs(60 - offset.rem_euclid(60))).unwrap();
        let mut checked = 0;
        while t < found && checked < 20_000 {
            prop_assert!(!oracle_allows(s, t), "{t} is allowed, before {found}");
            t = t.checked_add(SignedDuration::from_mins(1)).unwrap();
            checked += 1;
        }
    }

    #[test]
    fn fourteen_days_hold_the_guarantees(case in arb_case()) {
        let s = &case.schedule;
        let until = case.start.checked_add(SignedDuration::from_hours(14 * 24)).unwrap();
        let mut r = rng(case.seed);
        let (runs, strikes, _) =
            service(s, case.start, until, usize::MAX, &case.groups, &Persisted::default(), &mut r)?;
        check_timeline(s, case.start, &runs, &strikes)?;
        // The same seed replays the same timeline.
        let mut r = rng(case.seed);
        let again = service(s, case.start, until, usize::MAX, &case.groups, &Persisted::default(), &mut r)?;
        prop_assert_eq!(&runs, &again.0);
        prop_assert_eq!(&strikes, &again.1);
    }

    #[test]
    fn guarantees_hold_across_a_restart(case in arb_case(), split in 0usize..200, seed2 in any::<u64>()) {
        let s = &case.schedule;
        let until = case.start.checked_add(SignedDuration::from_hours(14 * 24)).unwrap();
        let (mut runs, mut strikes, state) = service(
            s, case.start, until, split, &case.groups, &Persisted::default(), &mut rng(case.seed),
        )?;
        // The restarted service knows only the persisted text and has a
        // fresh rng.
        let (runs2, strikes2, _) =
            service(s, case.start, until, usize::MAX, &case.groups, &state, &mut rng(seed2))?;
        runs.extend(runs2);
        strikes.extend(strikes2);
        check_timeline(s, case.start, &runs, &strikes)?;
    }

    #[test]
    fn plan_holds_the_guarantees_and_resumes(case in arb_case(), days in 1u32..8) {
        let s = &case.schedule;
        let mut r = rng(case.seed);
        let first = s.plan(case.start, days, &case.groups, &BTreeMap::new(), &mut r);
        // Resume a second plan from the first one's last run and strikes.
        let mut last = BTreeMap::new();
        for run in &first {
            for g in &run.groups {
                last.insert(g.clone(), run.at);
            }
        }
        let resume_at = first.last().map_or(case.start, |r| r.at);
        let second = s.plan(resume_at, 7, &case.groups, &last, &mut r);
        let all: Vec<&PlannedRun> = first.iter().chain(&second).collect();
        let runs: Vec<Timestamp> = all.iter().map(|r| r.at).collect();
        let strikes: Vec<Strike> = all
            .iter()
            .flat_map(|r| r.groups.iter().map(|g| (r.at, g.clone())))
            .collect();
        check_timeline(s, case.start, &runs, &strikes)?;
    }
}
