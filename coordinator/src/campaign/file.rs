//! Campaign files (TOML): parsed, then checked all the way through, with every problem
//! reported at its line and column. A file that validates is a [`Campaign`] the runner
//! and the scheduler can trust.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use troop_common::units::{parse_duration, parse_percent, parse_size};
use troop_proto::pb;

use super::planner::Pick;
use super::probe::{Check, Probe};
use super::schedule::{Schedule, Window};
use crate::selector::Selector;

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
}

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
const CAMPAIGN_KEYS: &[&str] = &["name", "seed", "schedule", "guardrails", "step"];
const SCHEDULE_KEYS: &[&str] = &[
    "every",
    "jitter",
    "window",
    "timezone",
    "blackout",
    "mean_time_between",
    "min_time_between",
];
const GUARDRAIL_KEYS: &[&str] = &[
    "max_concurrent",
    "min_healthy_percent",
    "error_threshold_percent",
    "lease",
    "stop_if",
];
const PROBE_KEYS: &[&str] = &[
    "name",
    "http",
    "tcp",
    "command",
    "expect_status",
    "ca",
    "headers",
    "every",
    "failures",
    "timeout",
];
const STEP_KEYS: &[&str] = &["select", "group_by", "pick", "fault", "duration"];
const FAULT_KEYS: &[&str] = &[
    "kind",
    "name",
    "exe",
    "pattern",
    "pid",
    "user",
    "signal",
    "all_matches",
    "repeat",
    "load",
    "cores",
    "size",
    "path",
    "fill",
    "mode",
    "delay",
];

#[derive(Debug, Deserialize)]
struct RawCampaign {
    name: Spanned<String>,
    seed: Option<Spanned<i64>>,
    schedule: Option<Spanned<RawSchedule>>,
    guardrails: Option<RawGuardrails>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
struct RawSchedule {
    every: Spanned<String>,
    jitter: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    blackout: Vec<Spanned<String>>,
    mean_time_between: Option<Spanned<String>>,
    min_time_between: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGuardrails {
    max_concurrent: Option<Spanned<i64>>,
    min_healthy_percent: Option<Spanned<i64>>,
    error_threshold_percent: Option<Spanned<i64>>,
    lease: Option<Spanned<String>>,
    #[serde(default)]
    stop_if: Vec<Spanned<RawProbe>>,
}

#[derive(Debug, Deserialize)]
struct RawProbe {
    name: Option<String>,
    http: Option<Spanned<String>>,
    tcp: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    expect_status: Option<Spanned<i64>>,
    ca: Option<Spanned<PathBuf>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    every: Option<Spanned<String>>,
    failures: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawStep {
    select: Spanned<String>,
    group_by: Option<Spanned<String>>,
    pick: Spanned<toml::Value>,
    fault: Spanned<RawFault>,
    duration: Option<Spanned<String>>,
}

/// Every key any fault kind takes; which ones a kind accepts is checked after parsing.
#[derive(Debug, Deserialize)]
struct RawFault {
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    pid: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    signal: Option<Spanned<String>>,
    all_matches: Option<Spanned<bool>>,
    repeat: Option<Spanned<String>>,
    load: Option<Spanned<i64>>,
    cores: Option<Spanned<i64>>,
    size: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    fill: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
}

/// Collects problems, turning byte spans into lines and columns.
struct Problems<'a> {
    text: &'a str,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.found.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.at(value.span(), format!("{key}: {error}"));
                None
            }
        }
    }

    fn ranged(
        &mut self,
        value: &Spanned<i64>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let number = *value.get_ref();
        if range.contains(&number) {
            Some(number)
        } else {
            self.at(
                value.span(),
                format!(
                    "{key} is {number}, it must be {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

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

/// `base`: the campaign file's directory, which a relative `ca` is read from.
fn check_probe(
    index: usize,
    raw: &Spanned<RawProbe>,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<Probe> {
    let probe = raw.get_ref();
    let checks = [
        probe.http.is_some(),
        probe.tcp.is_some(),
        probe.command.is_some(),
    ];
    if checks.iter().filter(|set| **set).count() != 1 {
        p.at(
            raw.span(),
            "a stop_if probe needs exactly one of http, tcp or command",
        );
        return None;
    }
    let expect_status = match &probe.expect_status {
        Some(status) => p.ranged(status, "expect_status", 100..=599)? as u16,
        None => 200,
    };
    if probe.http.is_none() {
        for (key, span) in [
            ("ca", probe.ca.as_ref().map(Spanned::span)),
            ("headers", probe.headers.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                p.at(span, format!("{key} is only for http probes"));
            }
        }
    }
    let check = if let Some(url) = &probe.http {
        let parsed = match super::probe::check_http_url(url.get_ref()) {
            Ok(parsed) => parsed,
            Err(error) => {
                p.at(url.span(), error);
                return None;
            }
        };
        let ca = match &probe.ca {
            Some(ca) if parsed.scheme() != "https" => {
                p.at(ca.span(), "ca is only for https:// URLs");
                return None;
            }
            Some(ca) => {
                let path = base.join(ca.get_ref());
                if let Err(error) = super::probe::trusted_roots(Some(&path)) {
                    p.at(ca.span(), format!("ca: {error}"));
                    return None;
                }
                Some(path)
            }
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in probe
            .headers
            .as_ref()
            .map(Spanned::get_ref)
            .into_iter()
            .flatten()
        {
            if let Err(error) = super::probe::check_header(name, value) {
                p.at(probe.headers.as_ref()?.span(), error);
                return None;
            }
            headers.push((name.clone(), value.clone()));
        }
        Check::Http {
            url: url.get_ref().clone(),
            expect_status,
            ca,
            headers,
        }
    } else if let Some(address) = &probe.tcp {
        if !address.get_ref().contains(':') {
            p.at(address.span(), "tcp probe needs host:port");
            return None;
        }
        Check::Tcp {
            address: address.get_ref().clone(),
        }
    } else {
        let command = probe.command.as_ref()?;
        Check::Command {
            command: command.get_ref().clone(),
        }
    };
    let every = match &probe.every {
        Some(every) => p.duration(every, "stop_if.every")?,
        None => Duration::from_secs(5),
    };
    if every < Duration::from_millis(100) {
        p.at(raw.span(), "stop_if.every must be at least 100ms");
    }
    Some(Probe {
        name: probe
            .name
            .clone()
            .unwrap_or_else(|| format!("stop_if[{index}]")),
        check,
        every,
        failures: match &probe.failures {
            Some(failures) => p.ranged(failures, "stop_if.failures", 1..=1000)? as u32,
            None => 3,
        },
        timeout: match &probe.timeout {
            Some(timeout) => p.duration(timeout, "stop_if.timeout")?,
            None => Duration::from_secs(2),
        },
    })
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
    let group_by = step.group_by.as_ref().map(|g| g.get_ref().clone());
    Some(Step {
        select: select?,
        group_by,
        pick: pick?,
        fault: fault?,
        duration: duration?,
    })
}

fn check_fault(
    raw: &Spanned<RawFault>,
    duration: Duration,
    p: &mut Problems<'_>,
) -> Option<pb::start_fault::Fault> {
    use pb::start_fault::Fault;
    let f = raw.get_ref();
    let kind = f.kind.get_ref().as_str();
    // Which keys each kind accepts; any other key present is a mistake worth naming.
    let allowed: &[&str] = match kind {
        "kill" => &[
            "name",
            "exe",
            "pattern",
            "pid",
            "user",
            "signal",
            "all_matches",
            "repeat",
        ],
        "cpu" => &["load", "cores"],
        "memory" => &["size"],
        "disk" => &["path", "fill", "size"],
        "stop-host" => &["mode", "delay"],
        other => {
            p.at(
                f.kind.span(),
                format!("unknown fault kind {other:?}; known: kill, cpu, memory, disk, stop-host"),
            );
            return None;
        }
    };
    let present: [(&str, Option<Range<usize>>); 15] = [
        ("name", f.name.as_ref().map(Spanned::span)),
        ("exe", f.exe.as_ref().map(Spanned::span)),
        ("pattern", f.pattern.as_ref().map(Spanned::span)),
        ("pid", f.pid.as_ref().map(Spanned::span)),
        ("user", f.user.as_ref().map(Spanned::span)),
        ("signal", f.signal.as_ref().map(Spanned::span)),
        ("all_matches", f.all_matches.as_ref().map(Spanned::span)),
        ("repeat", f.repeat.as_ref().map(Spanned::span)),
        ("load", f.load.as_ref().map(Spanned::span)),
        ("cores", f.cores.as_ref().map(Spanned::span)),
        ("size", f.size.as_ref().map(Spanned::span)),
        ("path", f.path.as_ref().map(Spanned::span)),
        ("fill", f.fill.as_ref().map(Spanned::span)),
        ("mode", f.mode.as_ref().map(Spanned::span)),
        ("delay", f.delay.as_ref().map(Spanned::span)),
    ];
    let before = p.found.len();
    for (key, span) in &present {
        if let Some(span) = span
            && !allowed.contains(key)
        {
            p.at(
                span.clone(),
                format!("{key} does not apply to a {kind} fault"),
            );
        }
    }
    let holds = kind != "kill" && kind != "stop-host";
    if holds && duration.is_zero() {
        p.at(raw.span(), format!("a {kind} fault needs a step duration"));
    }
    let fault = match kind {
        "kill" => check_kill(f, raw.span(), duration, p).map(Fault::Kill),
        "cpu" => {
            let load = match &f.load {
                Some(load) => p.ranged(load, "load", 1..=100)?,
                None => {
                    p.at(raw.span(), "a cpu fault needs load (1 to 100)");
                    return None;
                }
            };
            let cores = match &f.cores {
                Some(cores) => p.ranged(cores, "cores", 1..=4096)?,
                None => 0,
            };
            Some(Fault::Cpu(pb::Cpu {
                load_percent: load as u32,
                cores: cores as u32,
            }))
        }
        "memory" => {
            let Some(size) = &f.size else {
                p.at(
                    raw.span(),
                    "a memory fault needs size (\"512MiB\" or \"25%\")",
                );
                return None;
            };
            let text = size.get_ref();
            let amount = if text.trim_end().ends_with('%') {
                parse_percent(text).map(|pct| pb::memory::Amount::Percent(u32::from(pct)))
            } else {
                parse_size(text).map(pb::memory::Amount::Bytes)
            };
            match amount {
                Ok(amount) => Some(Fault::Memory(pb::Memory {
                    amount: Some(amount),
                })),
                Err(error) => {
                    p.at(size.span(), format!("size: {error}"));
                    None
                }
            }
        }
        "disk" => {
            let Some(path) = &f.path else {
                p.at(raw.span(), "a disk fault needs path");
                return None;
            };
            if !path.get_ref().starts_with('/') {
                p.at(path.span(), "path must be absolute");
            }
            let amount = match (&f.fill, &f.size) {
                (Some(fill), None) => {
                    Some(pb::disk::Amount::FillPercent(
                        p.ranged(fill, "fill", 1..=100)? as u32,
                    ))
                }
                (None, Some(size)) => match parse_size(size.get_ref()) {
                    Ok(bytes) => Some(pb::disk::Amount::Bytes(bytes)),
                    Err(error) => {
                        p.at(size.span(), format!("size: {error}"));
                        None
                    }
                },
                _ => {
                    p.at(raw.span(), "a disk fault needs exactly one of fill or size");
                    None
                }
            };
            Some(Fault::Disk(pb::Disk {
                path: path.get_ref().clone(),
                amount: Some(amount?),
            }))
        }
        _ => {
            let mode = match f.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
                Some((_, "poweroff")) => pb::stop_host::Mode::Poweroff,
                Some((_, "reboot")) => pb::stop_host::Mode::Reboot,
                Some((_, "halt")) => pb::stop_host::Mode::Halt,
                Some((m, other)) => {
                    p.at(
                        m.span(),
                        format!("mode {other:?} is not poweroff, reboot or halt"),
                    );
                    return None;
                }
                None => {
                    p.at(raw.span(), "a stop-host fault needs mode");
                    return None;
                }
            };
            let delay = match &f.delay {
                Some(delay) => p.duration(delay, "delay")?,
                None => Duration::ZERO,
            };
            Some(Fault::StopHost(pb::StopHost {
                mode: mode as i32,
                delay_ms: delay.as_millis() as u64,
            }))
        }
    };
    if p.found.len() > before {
        return None;
    }
    fault
}

fn check_kill(
    f: &RawFault,
    span: Range<usize>,
    duration: Duration,
    p: &mut Problems<'_>,
) -> Option<pb::Kill> {
    use pb::process_match::By;
    let targets = [
        f.name.as_ref().map(|v| By::Name(v.get_ref().clone())),
        f.exe.as_ref().map(|v| By::Exe(v.get_ref().clone())),
        f.pattern
            .as_ref()
            .map(|v| By::CmdlinePattern(v.get_ref().clone())),
        f.pid.as_ref().map(|v| By::Pid(*v.get_ref() as i32)),
        f.user.as_ref().map(|v| By::User(v.get_ref().clone())),
    ];
    let mut chosen = targets.into_iter().flatten();
    let (Some(by), None) = (chosen.next(), chosen.next()) else {
        p.at(
            span,
            "a kill fault needs exactly one of name, exe, pattern, pid or user",
        );
        return None;
    };
    let signal = match &f.signal {
        Some(signal) => match crate::signal::parse_signal(signal.get_ref()) {
            Ok(signal) => signal,
            Err(error) => {
                p.at(signal.span(), error);
                return None;
            }
        },
        None => 9,
    };
    let repeat = match &f.repeat {
        Some(repeat) => {
            let every = p.duration(repeat, "repeat")?;
            if duration.is_zero() {
                p.at(repeat.span(), "a repeating kill needs a step duration");
            }
            every.as_millis() as u64
        }
        None => {
            if !duration.is_zero() {
                p.at(
                    span,
                    "a kill without repeat is over at once; drop the step duration or add repeat",
                );
            }
            0
        }
    };
    Some(pb::Kill {
        target: Some(pb::ProcessMatch { by: Some(by) }),
        signal,
        all_matches: f.all_matches.as_ref().is_some_and(|a| *a.get_ref()),
        repeat_every_ms: repeat,
    })
}

#[cfg(test)]
mod tests;
