//! A campaign file's shape as TOML gives it (every value with its span), the keys each
//! table takes, and the problem list that turns spans into lines and columns.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use troop_common::units::parse_duration;

use super::Problem;

pub(super) const CAMPAIGN_KEYS: &[&str] = &["name", "seed", "schedule", "guardrails", "step"];
pub(super) const SCHEDULE_KEYS: &[&str] = &[
    "every",
    "jitter",
    "window",
    "timezone",
    "blackout",
    "mean_time_between",
    "min_time_between",
];
pub(super) const GUARDRAIL_KEYS: &[&str] = &[
    "max_concurrent",
    "min_healthy_percent",
    "error_threshold_percent",
    "lease",
    "stop_if",
];
pub(super) const PROBE_KEYS: &[&str] = &[
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
pub(super) const STEP_KEYS: &[&str] = &["select", "group_by", "pick", "fault", "duration", "watch"];
pub(super) const FAULT_KEYS: &[&str] = &[
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
    "latency",
    "jitter",
    "loss",
    "corrupt",
    "duplicate",
    "rate",
    "blackhole",
    "to",
    "port",
    "interface",
];

#[derive(Debug, Deserialize)]
pub(super) struct RawCampaign {
    pub(super) name: Spanned<String>,
    pub(super) seed: Option<Spanned<i64>>,
    pub(super) schedule: Option<Spanned<RawSchedule>>,
    pub(super) guardrails: Option<RawGuardrails>,
    #[serde(default, rename = "step")]
    pub(super) steps: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawSchedule {
    pub(super) every: Spanned<String>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) blackout: Vec<Spanned<String>>,
    pub(super) mean_time_between: Option<Spanned<String>>,
    pub(super) min_time_between: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawGuardrails {
    pub(super) max_concurrent: Option<Spanned<i64>>,
    pub(super) min_healthy_percent: Option<Spanned<i64>>,
    pub(super) error_threshold_percent: Option<Spanned<i64>>,
    pub(super) lease: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) stop_if: Vec<Spanned<RawProbe>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawProbe {
    pub(super) name: Option<String>,
    pub(super) http: Option<Spanned<String>>,
    pub(super) tcp: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<String>>,
    pub(super) expect_status: Option<Spanned<i64>>,
    pub(super) ca: Option<Spanned<PathBuf>>,
    pub(super) headers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) every: Option<Spanned<String>>,
    pub(super) failures: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawStep {
    pub(super) select: Spanned<String>,
    pub(super) group_by: Option<Spanned<String>>,
    pub(super) pick: Spanned<toml::Value>,
    pub(super) fault: Spanned<RawFault>,
    pub(super) duration: Option<Spanned<String>>,
    pub(super) watch: Option<Spanned<String>>,
}

/// Every key any fault kind takes; which ones a kind accepts is checked after parsing.
#[derive(Debug, Deserialize)]
pub(super) struct RawFault {
    pub(super) kind: Spanned<String>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) exe: Option<Spanned<String>>,
    pub(super) pattern: Option<Spanned<String>>,
    pub(super) pid: Option<Spanned<i64>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) signal: Option<Spanned<String>>,
    pub(super) all_matches: Option<Spanned<bool>>,
    pub(super) repeat: Option<Spanned<String>>,
    pub(super) load: Option<Spanned<i64>>,
    pub(super) cores: Option<Spanned<i64>>,
    pub(super) size: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) fill: Option<Spanned<i64>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) delay: Option<Spanned<String>>,
    pub(super) latency: Option<Spanned<String>>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) loss: Option<Spanned<toml::Value>>,
    pub(super) corrupt: Option<Spanned<toml::Value>>,
    pub(super) duplicate: Option<Spanned<toml::Value>>,
    pub(super) rate: Option<Spanned<String>>,
    pub(super) blackhole: Option<Spanned<bool>>,
    pub(super) to: Option<Spanned<Vec<String>>>,
    pub(super) port: Option<Spanned<Vec<i64>>>,
    pub(super) interface: Option<Spanned<String>>,
}

/// Collects problems, turning byte spans into lines and columns.
pub(super) struct Problems<'a> {
    pub(super) text: &'a str,
    pub(super) found: Vec<Problem>,
}

impl Problems<'_> {
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
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

    pub(super) fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.at(value.span(), format!("{key}: {error}"));
                None
            }
        }
    }

    pub(super) fn ranged(
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
