//! Campaign files (TOML): parsed, then checked all the way through, with every problem
//! reported at its line and column. A file that validates is a [`Campaign`] the runner
//! and the scheduler can trust.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use troop_proto::pb;

mod fault;
mod raw;
mod stop_if;

use super::planner::Pick;
use super::probe::Probe;
use super::schedule::{Schedule, Window};
use crate::selector::Selector;
use fault::check_fault;
use raw::{
    CAMPAIGN_KEYS, FAULT_KEYS, GUARDRAIL_KEYS, PROBE_KEYS, Problems, RawCampaign, RawGuardrails,
    RawSchedule, RawStep, SCHEDULE_KEYS, STEP_KEYS,
};
use stop_if::check_probe;

/// A lease the runner renews for every fault it starts, unless the file says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A validated campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub name: String,
    pub seed: Option<u64>,
    pub schedule: Option<Schedule>,
    pub guardrails: Guardrails,
    pub probes: Vec<Probe>,
    pub steps: Vec<Step>,
    /// SHA-256 of the file, recorded with each run.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guardrails {
    pub max_concurrent: usize,
    pub min_healthy_percent: u8,
    /// Abort once more than this share of the commands sent failed or were refused.
    pub error_threshold_percent: u8,
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub select: Selector,
    pub group_by: Option<String>,
    pub pick: Pick,
    pub fault: pb::start_fault::Fault,
    /// How long each fault holds (0 for a single kill).
    pub duration: Duration,
    /// How long the run watches its probes after this step before it goes on to the next
    /// one or ends (0: it goes on at once). What a single kill did lasts, and a service
    /// may fall over only a while later.
    pub watch: Duration,
}

/// Longest a step's `watch` may hold a run: longer is a typo, or a run nobody watches.
const MAX_WATCH: Duration = Duration::from_secs(3600);

/// One problem in a campaign file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a campaign file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for CampaignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(f, "{}: {count} problem(s)", self.path.display())?;
        for problem in &self.problems {
            write!(
                f,
                "\n  {}:{}:{}: {}",
                self.path.display(),
                problem.line,
                problem.column,
                problem.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CampaignError {}

// No `deny_unknown_fields` on the Raw* structs: serde would stop at the first unknown
// key. [`unknown_keys`] reports every one of them (by these key lists) and serde then
// ignores them, so one pass finds every problem.
impl Campaign {
    pub fn load(path: &Path) -> Result<Self, CampaignError> {
        let text = std::fs::read_to_string(path).map_err(|error| CampaignError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read: {error}"),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks campaign text; `path` names it in problems.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CampaignError> {
        let mut problems = Problems {
            text,
            found: Vec::new(),
        };
        unknown_keys(text, &mut problems);
        let raw: RawCampaign = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                problems.at(error.span().unwrap_or(0..0), error.message().to_string());
                return Err(CampaignError {
                    path: path.to_path_buf(),
                    problems: problems.found,
                });
            }
        };
        // Relative paths in a campaign (a probe's `ca`) are read from its directory.
        let base = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let campaign = check(raw, &mut problems, text, base);
        match campaign {
            Some(campaign) if problems.found.is_empty() => Ok(campaign),
            _ => Err(CampaignError {
                path: path.to_path_buf(),
                problems: problems.found,
            }),
        }
    }
}

/// Reports every key the campaign format does not have, each at its place. Syntax
/// errors are left to the parse that follows.
fn unknown_keys(text: &str, p: &mut Problems<'_>) {
    use toml::de::{DeTable, DeValue};
    fn table<'a>(value: &'a DeValue<'_>) -> Option<&'a DeTable<'a>> {
        match value {
            DeValue::Table(table) => Some(table),
            _ => None,
        }
    }
    fn tables<'a>(value: &'a DeValue<'_>) -> Vec<&'a DeTable<'a>> {
        match value {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| table(item.get_ref()))
                .collect(),
            DeValue::Table(one) => vec![one],
            _ => Vec::new(),
        }
    }
    fn check(table: &DeTable<'_>, allowed: &[&str], prefix: &str, p: &mut Problems<'_>) {
        for key in table.keys() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                p.at(
                    key.span(),
                    format!(
                        "unknown key `{prefix}{}`; expected one of: {}",
                        key.get_ref(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    let Ok(root) = DeTable::parse(text) else {
        return;
    };
    let root = root.get_ref();
    check(root, CAMPAIGN_KEYS, "", p);
    fn get<'a>(table: &'a DeTable<'a>, key: &str) -> Option<&'a DeValue<'a>> {
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.get_ref())
    }
    if let Some(schedule) = get(root, "schedule").and_then(table) {
        check(schedule, SCHEDULE_KEYS, "schedule.", p);
    }
    if let Some(guardrails) = get(root, "guardrails").and_then(table) {
        check(guardrails, GUARDRAIL_KEYS, "guardrails.", p);
        if let Some(probes) = get(guardrails, "stop_if") {
            for probe in tables(probes) {
                check(probe, PROBE_KEYS, "guardrails.stop_if.", p);
            }
        }
    }
    if let Some(steps) = get(root, "step") {
        for step in tables(steps) {
            check(step, STEP_KEYS, "step.", p);
            if let Some(fault) = get(step, "fault").and_then(table) {
                check(fault, FAULT_KEYS, "step.fault.", p);
            }
        }
    }
}

fn check(raw: RawCampaign, p: &mut Problems<'_>, text: &str, base: &Path) -> Option<Campaign> {
    let name = raw.name.get_ref().trim().to_string();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        p.at(raw.name.span(), "name must be 1 to 64 of [A-Za-z0-9-_.]");
    }
    let seed = raw.seed.as_ref().map(|seed| *seed.get_ref() as u64);
    let schedule = raw.schedule.as_ref().and_then(|s| check_schedule(s, p));
    let guardrails_raw = raw.guardrails.unwrap_or_default();
    let guardrails = check_guardrails(&guardrails_raw, p);
    let probes: Vec<Probe> = guardrails_raw
        .stop_if
        .iter()
        .enumerate()
        .filter_map(|(index, probe)| check_probe(index, probe, base, p))
        .collect();
    if raw.steps.is_empty() {
        p.at(0..0, "a campaign needs at least one [[step]]");
    }
    let steps: Vec<Step> = raw
        .steps
        .iter()
        .filter_map(|step| check_step(step, &guardrails, p))
        .collect();
    if !p.found.is_empty() || steps.len() != raw.steps.len() {
        return None;
    }
    use sha2::Digest;
    Some(Campaign {
        name,
        seed,
        schedule,
        guardrails,
        probes,
        steps,
        sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
    })
}

fn check_schedule(raw: &Spanned<RawSchedule>, p: &mut Problems<'_>) -> Option<Schedule> {
    let s = raw.get_ref();
    let every = p.duration(&s.every, "schedule.every");
    if every.is_some_and(|every| every < Duration::from_secs(1)) {
        p.at(s.every.span(), "schedule.every must be at least 1s");
    }
    let jitter = s
        .jitter
        .as_ref()
        .and_then(|j| p.duration(j, "schedule.jitter"));
    if let (Some(every), Some(jitter), Some(raw_jitter)) = (every, jitter, &s.jitter)
        && jitter > every
    {
        p.at(
            raw_jitter.span(),
            "schedule.jitter may not be longer than schedule.every",
        );
    }
    let window = s
        .window
        .as_ref()
        .and_then(|w| match w.get_ref().parse::<Window>() {
            Ok(window) => Some(window),
            Err(error) => {
                p.at(w.span(), format!("schedule.window: {error}"));
                None
            }
        });
    let timezone = match &s.timezone {
        None => Some(jiff::tz::TimeZone::UTC),
        Some(name) => match jiff::tz::TimeZone::get(name.get_ref()) {
            Ok(zone) => Some(zone),
            Err(_) => {
                p.at(
                    name.span(),
                    format!("schedule.timezone: unknown time zone {:?}", name.get_ref()),
                );
                None
            }
        },
    };
    let blackout: Vec<jiff::civil::Date> = s
        .blackout
        .iter()
        .filter_map(|date| match date.get_ref().parse::<jiff::civil::Date>() {
            Ok(date) => Some(date),
            Err(_) => {
                p.at(
                    date.span(),
                    format!(
                        "schedule.blackout: {:?} is not a date YYYY-MM-DD",
                        date.get_ref()
                    ),
                );
                None
            }
        })
        .collect();
    let mean = s
        .mean_time_between
        .as_ref()
        .and_then(|d| p.duration(d, "schedule.mean_time_between"));
    let min = s
        .min_time_between
        .as_ref()
        .and_then(|d| p.duration(d, "schedule.min_time_between"));
    if blackout.len() != s.blackout.len() || (s.window.is_some() && window.is_none()) {
        return None;
    }
    Some(Schedule {
        every: every?,
        jitter: jitter.unwrap_or_default(),
        window,
        timezone: timezone?,
        blackout,
        mean_time_between: mean,
        min_time_between: min,
    })
}

fn check_guardrails(raw: &RawGuardrails, p: &mut Problems<'_>) -> Guardrails {
    let number = |p: &mut Problems<'_>, value: &Option<Spanned<i64>>, key, range, default| {
        value
            .as_ref()
            .and_then(|v| p.ranged(v, key, range))
            .unwrap_or(default)
    };
    // An invalid max_concurrent is reported once; checks against it then assume no cap,
    // so no later message quotes a value the file does not hold.
    let max_concurrent = match &raw.max_concurrent {
        None => 1,
        Some(value) => p
            .ranged(value, "guardrails.max_concurrent", 1..=10_000)
            .unwrap_or(i64::MAX),
    };
    Guardrails {
        max_concurrent: usize::try_from(max_concurrent).unwrap_or(usize::MAX),
        min_healthy_percent: number(
            p,
            &raw.min_healthy_percent,
            "guardrails.min_healthy_percent",
            0..=100,
            50,
        ) as u8,
        error_threshold_percent: number(
            p,
            &raw.error_threshold_percent,
            "guardrails.error_threshold_percent",
            1..=100,
            50,
        ) as u8,
        lease: raw
            .lease
            .as_ref()
            .and_then(|lease| {
                let parsed = p.duration(lease, "guardrails.lease")?;
                if parsed < Duration::from_secs(3) {
                    p.at(lease.span(), "guardrails.lease must be at least 3s");
                    return None;
                }
                Some(parsed)
            })
            .unwrap_or(DEFAULT_LEASE),
    }
}

fn check_pick(raw: &Spanned<toml::Value>, p: &mut Problems<'_>) -> Option<Pick> {
    let bad = "pick must be \"all\", { count = N } or { percent = P }";
    match raw.get_ref() {
        toml::Value::String(word) if word == "all" => Some(Pick::All),
        toml::Value::Table(table) if table.len() == 1 => match table.iter().next() {
            Some((key, toml::Value::Integer(n))) if key == "count" => {
                if *n < 1 {
                    p.at(
                        raw.span(),
                        format!("pick count {n} picks nothing; use at least 1"),
                    );
                    return None;
                }
                Some(Pick::Count(*n as usize))
            }
            Some((key, toml::Value::Integer(n))) if key == "percent" => {
                if !(1..=100).contains(n) {
                    p.at(raw.span(), format!("pick percent {n} is not 1 to 100"));
                    return None;
                }
                Some(Pick::Percent(*n as u8))
            }
            _ => {
                p.at(raw.span(), bad);
                None
            }
        },
        _ => {
            p.at(raw.span(), bad);
            None
        }
    }
}

fn check_step(
    raw: &Spanned<RawStep>,
    guardrails: &Guardrails,
    p: &mut Problems<'_>,
) -> Option<Step> {
    let step = raw.get_ref();
    let select = match step.select.get_ref().parse::<Selector>() {
        Ok(selector) => Some(selector),
        Err(error) => {
            // Point into the selector: its text starts one past the opening quote.
            let start = step.select.span().start + error.column;
            p.at(start..start, format!("select: {}", error.message));
            None
        }
    };
    let pick = check_pick(&step.pick, p);
    if let Some(Pick::Count(count)) = pick
        && count > guardrails.max_concurrent
    {
        p.at(
            step.pick.span(),
            format!(
                "pick count {count} can never happen: guardrails.max_concurrent is {}",
                guardrails.max_concurrent
            ),
        );
    }
    let duration = match &step.duration {
        Some(duration) => p.duration(duration, "duration"),
        None => Some(Duration::ZERO),
    };
    let fault = check_fault(&step.fault, duration.unwrap_or_default(), p);
    let watch = match &step.watch {
        Some(watch) => p.duration(watch, "watch").and_then(|duration| {
            if duration > MAX_WATCH {
                p.at(watch.span(), "watch: at most 1h".to_string());
                return None;
            }
            Some(duration)
        }),
        None => Some(Duration::ZERO),
    };
    let group_by = step.group_by.as_ref().map(|g| g.get_ref().clone());
    Some(Step {
        select: select?,
        group_by,
        pick: pick?,
        fault: fault?,
        duration: duration?,
        watch: watch?,
    })
}

#[cfg(test)]
mod tests;
