//! Chaos-Monkey-style scheduling of campaign runs.
//!
//! A campaign runs every [`Schedule::every`] plus a random jitter, but only
//! inside a weekly [`Window`] in the campaign's time zone and never on a
//! blackout date. At each run every group (e.g. a cluster) is struck with a
//! probability derived from a mean time between attacks, but never sooner
//! than a floor after that group's last strike.
//!
//! All calendar reasoning is local civil time in the schedule's time zone;
//! instants are found by walking the stretches between the zone's offset
//! transitions, so daylight-saving changes neither move a window nor
//! produce a run outside it (a window opening in a DST gap opens when the
//! gap ends; a window hour repeated by a fold is allowed both times).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};

/// How far ahead [`Schedule::next_run`] looks for an allowed moment.
pub const SEARCH_HORIZON_DAYS: i64 = 400;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const EXAMPLE: &str = "e.g. \"Mon-Fri 09:00-17:00\"";

/// Why a window's text could not be parsed; the message names the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowError(String);

/// A schedule whose fields cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `every` is zero.
    #[error("every must be longer than 0s")]
    ZeroEvery,
    /// `mean_time_between` is zero.
    #[error("mean_time_between must be longer than 0s; leave it out to strike at every run")]
    ZeroMeanTimeBetween,
}

/// A weekly window of allowed local times: a set of weekdays and daily hours.
///
/// `end` is exclusive; `None` stands for "24:00". When the end is before the
/// start the window runs overnight and belongs to the weekday it starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Bit `i` set: the window starts on the weekday with Monday-zero offset `i`.
    days: u8,
    start: Time,
    end: Option<Time>,
}

/// One stretch of allowed time of day: `[start, end)`, `None` = end of day.
type Stretch = (Time, Option<Time>);

impl Window {
    /// Whether the local date-time `local` falls inside the window.
    pub fn contains(&self, local: DateTime) -> bool {
        let t = local.time();
        self.stretches_on(local.date())
            .into_iter()
            .flatten()
            .any(|(a, b)| a <= t && b.is_none_or(|b| t < b))
    }

    /// The weekdays the window starts on, Monday first.
    pub fn weekdays(&self) -> impl Iterator<Item = Weekday> + '_ {
        (0..7i8)
            .filter(|i| self.days & (1 << i) != 0)
            .filter_map(|i| Weekday::from_monday_zero_offset(i).ok())
    }

    fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.to_monday_zero_offset()) != 0
    }

    fn overnight(&self) -> bool {
        self.end.is_some_and(|end| end < self.start)
    }

    /// The allowed stretches of `date`, earliest first: the tail of an
    /// overnight window that started the day before, then today's window.
    fn stretches_on(&self, date: Date) -> [Option<Stretch>; 2] {
        let today = date.weekday();
        if self.overnight() {
            let tail = self
                .on(today.previous())
                .then_some((Time::midnight(), self.end));
            let head = self.on(today).then_some((self.start, None));
            [tail, head]
        } else {
            [self.on(today).then_some((self.start, self.end)), None]
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of consecutive days (Monday first) print as "Mon-Fri".
        let mut parts = Vec::new();
        let mut i = 0;
        while i < 7 {
            if self.days & (1 << i) == 0 {
                i += 1;
                continue;
            }
            let first = i;
            while i + 1 < 7 && self.days & (1 << (i + 1)) != 0 {
                i += 1;
            }
            parts.push(if first == i {
                DAY_NAMES[first].to_string()
            } else {
                format!("{}-{}", DAY_NAMES[first], DAY_NAMES[i])
            });
            i += 1;
        }
        let end = self.end.map_or_else(|| "24:00".to_string(), hhmm);
        write!(f, "{} {}-{}", parts.join(","), hhmm(self.start), end)
    }
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |msg: String| Err(WindowError(msg));
        let text = s.trim();
        if text.is_empty() {
            return err(format!("empty window; {EXAMPLE}"));
        }

        // Hours start at the first token opening with a digit; spaces around
        // the dashes are tolerated so "Mon - Fri 09:00 - 17:00" also reads.
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let split = tokens
            .iter()
            .position(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(tokens.len());
        let days_text = tokens[..split].concat();
        let hours_text = tokens[split..].join(" ");
        if days_text.is_empty() {
            return err(format!("window {text:?} needs weekdays, {EXAMPLE}"));
        }
        if hours_text.is_empty() {
            return err(format!(
                "window {text:?} needs hours, e.g. \"{days_text} 09:00-17:00\""
            ));
        }
        let days = parse_days(&days_text)?;
        let Some((start_text, end_text)) = hours_text.split_once('-') else {
            return err(format!(
                "hours {hours_text:?} need a start and an end, e.g. \"09:00-17:00\""
            ));
        };
        let (start_text, end_text) = (start_text.trim(), end_text.trim());
        let start = match parse_hhmm(start_text)? {
            Some(start) => start,
            None => return err("a window cannot start at \"24:00\"; use 00:00".to_string()),
        };
        let end = parse_hhmm(end_text)?;
        if end == Some(start) {
            return err(format!(
                "window {text:?} is empty (starts and ends at {}); for whole days use 00:00-24:00",
                hhmm(start)
            ));
        }
        Ok(Window { days, start, end })
    }
}

fn hhmm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn parse_days(text: &str) -> Result<u8, WindowError> {
    let mut days = 0u8;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(WindowError(format!("empty weekday in {text:?}")));
        }
        match item.split_once('-') {
            Some((a, b)) => {
                // Ranges may wrap past Sunday: "Fri-Mon".
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(item)?,
        }
    }
    Ok(days)
}

fn parse_day(text: &str) -> Result<u8, WindowError> {
    let lower = text.to_ascii_lowercase();
    (0..7u8)
        .find(|&i| {
            let i = usize::from(i);
            lower == DAY_NAMES[i].to_ascii_lowercase() || lower == FULL_DAY_NAMES[i]
        })
        .ok_or_else(|| WindowError(format!("unknown weekday {text:?}; use Mon..Sun")))
}

/// Parses "HH:MM" (or "H:MM"); `Ok(None)` is "24:00", the end of the day.
fn parse_hhmm(text: &str) -> Result<Option<Time>, WindowError> {
    let bad = || WindowError(format!("{text:?} is not a time HH:MM"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 1..=2) || !digits(m, 2..=2) {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if (h, m) == (24, 0) {
        return Ok(None);
    }
    Time::new(h, m, 0, 0).map(Some).map_err(|_| bad())
}

/// When and how a campaign runs and strikes groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Base interval between runs; must be > 0.
    pub every: Duration,
    /// Upper bound (exclusive) of the random delay added to `every`; may be 0.
    pub jitter: Duration,
    /// Weekly window the runs must fall in; `None` allows any time.
    pub window: Option<Window>,
    /// Time zone of the window and the blackout dates.
    pub timezone: TimeZone,
    /// Local calendar dates on which nothing runs.
    pub blackout: Vec<Date>,
    /// Mean time between strikes of one group; `None` strikes at every run.
    pub mean_time_between: Option<Duration>,
    /// Least time between two strikes of one group.
    pub min_time_between: Option<Duration>,
}

/// One simulated run: when, and which groups it strikes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRun {
    /// When the run happens.
    pub at: Timestamp,
    /// The groups it strikes, in the order they were given.
    pub groups: Vec<String>,
}

impl Schedule {
    /// Checks the fields that would make the schedule meaningless.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.every.is_zero() {
            return Err(ScheduleError::ZeroEvery);
        }
        if self.mean_time_between.is_some_and(|m| m.is_zero()) {
            return Err(ScheduleError::ZeroMeanTimeBetween);
        }
        Ok(())
    }

    /// Whether `at` is an allowed moment: inside the window, not on a blackout date (both in the timezone).
    pub fn allows(&self, at: Timestamp) -> bool {
        self.allows_local(self.timezone.to_datetime(at))
    }

    fn allows_local(&self, local: DateTime) -> bool {
        !self.blackout.contains(&local.date()) && self.window.is_none_or(|w| w.contains(local))
    }

    /// The next run strictly after `after`: after + every + jitter, then moved forward to the next allowed moment if it falls outside (to the window's next opening, skipping blackout days). None if nothing is allowed within 400 days (e.g. a window on no day, or all blacked out).
    pub fn next_run(&self, after: Timestamp, rng: &mut impl rand::Rng) -> Option<Timestamp> {
        // A zero `every` would return `after` itself; one nanosecond keeps
        // runs strictly increasing.
        let every = self.every.max(Duration::from_nanos(1));
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            let bound = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rng.random_range(0..bound))
        };
        let due = after.checked_add(every).ok()?.checked_add(jitter).ok()?;
        self.next_allowed(due)
    }

    /// The earliest allowed instant at or after `from`, within the horizon.
    fn next_allowed(&self, from: Timestamp) -> Option<Timestamp> {
        let horizon = SignedDuration::from_hours(SEARCH_HORIZON_DAYS * 24);
        let limit = from.checked_add(horizon).unwrap_or(Timestamp::MAX);
        let mut t = from;
        // Between two transitions the offset is fixed, so local time moves
        // in step with the instant and a civil search maps back exactly.
        // Gaps and folds are just segment boundaries here.
        while t < limit {
            let offset = self.timezone.to_offset(t);
            let seg_end = self
                .timezone
                .following(t)
                .next()
                .map_or(limit, |tr| tr.timestamp().min(limit));
            let local = offset.to_datetime(t);
            if let Some(found) = self.next_allowed_civil(local, offset.to_datetime(seg_end)) {
                return offset.to_timestamp(found).ok();
            }
            t = seg_end;
        }
        None
    }

    /// The earliest allowed local date-time in `[from, until)`.
    fn next_allowed_civil(&self, from: DateTime, until: DateTime) -> Option<DateTime> {
        let all_day: [Option<Stretch>; 2] = [Some((Time::midnight(), None)), None];
        let mut date = from.date();
        let mut floor = from.time();
        while date.to_datetime(Time::midnight()) < until {
            if !self.blackout.contains(&date) {
                let stretches = self.window.map_or(all_day, |w| w.stretches_on(date));
                for (a, b) in stretches.into_iter().flatten() {
                    let candidate = a.max(floor);
                    if b.is_none_or(|b| candidate < b) {
                        let found = date.to_datetime(candidate);
                        return (found < until).then_some(found);
                    }
                }
            }
            date = date.tomorrow().ok()?;
            floor = Time::midnight();
        }
        None
    }

    /// Probability that one run strikes a group: 1 − exp(−every / mean_time_between), or 1 without a mean.
    pub fn strike_probability(&self) -> f64 {
        match self.mean_time_between {
            None => 1.0,
            Some(mean) if mean.is_zero() => 1.0,
            Some(mean) => {
                let x = self.every.as_secs_f64() / mean.as_secs_f64();
                // 1 - e^-x, computed without cancellation for small x.
                (-(-x).exp_m1()).clamp(0.0, 1.0)
            }
        }
    }

    /// Whether a group may be struck at `now` given its last strike (the min_time_between floor).
    ///
    /// A last strike after `now` (a clock that went back) counts as recent.
    pub fn floor_allows(&self, last_strike: Option<Timestamp>, now: Timestamp) -> bool {
        match (self.min_time_between, last_strike) {
            (Some(min), Some(last)) => {
                let min = SignedDuration::try_from(min).unwrap_or(SignedDuration::MAX);
                now.duration_since(last) >= min
            }
            _ => true,
        }
    }

    /// Decides for one group at one run: floor first, then the dice.
    pub fn strikes_group(
        &self,
        last_strike: Option<Timestamp>,
        now: Timestamp,
        rng: &mut impl rand::Rng,
    ) -> bool {
        // The dice are only thrown when the floor allows, and always when it
        // does, so a seeded rng replays the same decisions.
        self.floor_allows(last_strike, now) && rng.random::<f64>() < self.strike_probability()
    }

    /// The runs from `from` over `days`, with for each run the groups it would strike, simulated with the given last strikes (state is updated as the simulation strikes) — for `troop campaign plan --days 7`.
    ///
    /// Runs are strictly after `from` and before the same local time `days`
    /// calendar days later. Duplicate group names are struck at most once.
    pub fn plan(
        &self,
        from: Timestamp,
        days: u32,
        groups: &[String],
        last_strikes: &BTreeMap<String, Timestamp>,
        rng: &mut impl rand::Rng,
    ) -> Vec<PlannedRun> {
        let end = Span::new()
            .try_days(i64::from(days))
            .and_then(|span| from.to_zoned(self.timezone.clone()).checked_add(span))
            .map_or(Timestamp::MAX, |z| z.timestamp());
        let mut last = last_strikes.clone();
        let mut runs = Vec::new();
        let mut after = from;
        // `at > after` holds by construction; checking it keeps a future
        // regression from turning into an endless plan.
        while let Some(at) = self
            .next_run(after, rng)
            .filter(|&at| at > after && at < end)
        {
            let mut seen = BTreeSet::new();
            let mut struck = Vec::new();
            for group in groups {
                if !seen.insert(group.as_str()) {
                    continue;
                }
                if self.strikes_group(last.get(group).copied(), at, rng) {
                    last.insert(group.clone(), at);
                    struck.push(group.clone());
                }
            }
            runs.push(PlannedRun { at, groups: struck });
            after = at;
        }
        runs
    }
}

#[cfg(test)]
mod tests;
