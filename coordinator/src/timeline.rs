//! A run's timeline as an SVG picture: one row per host hit, one bar per fault from its
//! apply to its revert coloured by kind, aborts marked, and each probe's results as a
//! strip of ticks beneath (`troop campaign show RUN --svg FILE`).
//!
//! Drawn from what the store recorded, never from what was planned: a fault's bar starts
//! when its agent answered, and ends at the first of an abort that reached that host, its
//! duration, and the run's end.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::store::{CommandRow, RunDetail};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const ROW: f64 = 28.0;
const BAR: f64 = 16.0;

/// One fault as drawn: on `host`, `kind`, from `start` to `end` (ms), and whether an
/// abort ended it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub host: String,
    pub kind: String,
    /// The fault in words, as recorded (`kill name "postgres" with signal 9 ...`).
    pub what: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub aborted: bool,
}

fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "kill" => "#b91c1c",
        "cpu" => "#c2410c",
        "memory" => "#7c3aed",
        "disk" => "#0369a1",
        "network" => "#047857",
        "dns" => "#0f766e",
        "stop-host" => "#111827",
        _ => "#6b7280",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a command recorded as a start asks: (kind, duration in ms).
fn start_of(command: &CommandRow) -> Option<(String, i64)> {
    let parameters: Value = serde_json::from_str(&command.parameters).ok()?;
    let kind = parameters["fault"]["kind"].as_str()?.to_string();
    let duration = parameters["duration_ms"].as_i64().unwrap_or(0);
    Some((kind, duration))
}

/// Whether `command` is an abort that reaches the fault `fault_id` on `host`.
fn aborts(command: &CommandRow, host: &str, fault_id: &str) -> bool {
    command.target == host
        && command.outcome == "applied"
        && (command.fault_kind == "abort every active fault"
            || command.fault_kind == format!("abort fault {fault_id}")
            || command.fault_kind.starts_with("emergency stop"))
}

/// The faults of a run, as bars, in the order they were applied.
pub fn bars(detail: &RunDetail) -> Vec<Bar> {
    let run_end = detail
        .run
        .finished_at_ms
        .or_else(|| {
            detail
                .commands
                .iter()
                .filter_map(|c| c.answered_at_ms)
                .max()
        })
        .unwrap_or(detail.run.started_at_ms);
    let mut bars = Vec::new();
    for command in &detail.commands {
        let (Some((kind, duration)), Some(applied)) = (start_of(command), command.answered_at_ms)
        else {
            continue;
        };
        if command.outcome != "applied" {
            continue;
        }
        let abort = detail
            .commands
            .iter()
            .filter(|later| {
                later.sent_at_ms >= applied && aborts(later, &command.target, &command.command_id)
            })
            .filter_map(|later| later.answered_at_ms)
            .min();
        let planned = applied.saturating_add(duration);
        let end = abort
            .map_or(planned, |at| at.min(planned))
            .min(run_end.max(applied));
        bars.push(Bar {
            host: command.target.clone(),
            kind,
            what: command.fault_kind.clone(),
            start_ms: applied,
            end_ms: end.max(applied),
            aborted: abort.is_some_and(|at| at < planned),
        });
    }
    bars
}

/// The run drawn as a standalone SVG document.
pub fn svg(detail: &RunDetail) -> String {
    let bars = bars(detail);
    let mut hosts: Vec<&str> = bars.iter().map(|bar| bar.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut probes: BTreeMap<&str, Vec<(i64, bool, &str)>> = BTreeMap::new();
    for probe in &detail.probes {
        probes.entry(probe.probe.as_str()).or_default().push((
            probe.at_ms,
            probe.ok,
            probe.detail.as_str(),
        ));
    }
    let start = detail.run.started_at_ms;
    let end = [
        detail.run.finished_at_ms.unwrap_or(start),
        bars.iter().map(|bar| bar.end_ms).max().unwrap_or(start),
        detail.probes.iter().map(|p| p.at_ms).max().unwrap_or(start),
    ]
    .into_iter()
    .max()
    .unwrap_or(start)
    .max(start + 1000);
    let x = |ms: i64| LEFT + (ms - start) as f64 / (end - start) as f64 * (WIDTH - LEFT - RIGHT);
    let rows = hosts.len() + probes.len();
    let height = TOP + rows as f64 * ROW + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12" role="img" aria-labelledby="title">"##
    );
    let title = format!(
        "run {} of campaign {}: {} {}",
        detail.run.id, detail.run.campaign, detail.run.status, detail.run.reason
    );
    let _ = writeln!(out, r##"<title id="title">{}</title>"##, escape(&title));
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##,
        escape(&title)
    );
    let seconds = (end - start) as f64 / 1000.0;
    for tick in 0..=4 {
        let at = start + (end - start) * tick / 4;
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#e5e7eb"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#374151">{4:.1}s</text>"##,
            x(at),
            TOP - 8.0,
            height - 30.0,
            height - 14.0,
            seconds * tick as f64 / 4.0
        );
    }
    for (index, host) in hosts.iter().enumerate() {
        let y = TOP + index as f64 * ROW;
        let _ = writeln!(
            out,
            r##"<g class="host"><text x="10" y="{:.1}">{}</text>"##,
            y + BAR - 3.0,
            escape(host)
        );
        for bar in bars.iter().filter(|bar| bar.host == *host) {
            let (from, to) = (x(bar.start_ms), x(bar.end_ms));
            let _ = writeln!(
                out,
                r##"<rect class="fault" x="{from:.1}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="{}"><title>{} on {}: {:.1}s{}</title></rect>"##,
                (to - from).max(2.0),
                kind_colour(&bar.kind),
                escape(&bar.kind),
                escape(host),
                (bar.end_ms - bar.start_ms) as f64 / 1000.0,
                if bar.aborted { ", aborted" } else { "" }
            );
            if bar.aborted {
                let _ = writeln!(
                    out,
                    r##"<text class="abort" x="{to:.1}" y="{:.1}" fill="#b91c1c" font-weight="bold">✕</text>"##,
                    y + BAR - 3.0
                );
            }
        }
        out.push_str("</g>\n");
    }
    for (index, (probe, results)) in probes.iter().enumerate() {
        let y = TOP + (hosts.len() + index) as f64 * ROW;
        let _ = writeln!(
            out,
            r##"<g class="probe"><text x="10" y="{:.1}" fill="#374151">probe {}</text>"##,
            y + BAR - 3.0,
            escape(probe)
        );
        for (at, ok, detail) in results {
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="3" height="{}" fill="{}"><title>{}</title></rect>"##,
                x(*at) - 1.5,
                y + 4.0,
                BAR - 8.0,
                if *ok { "#16a34a" } else { "#dc2626" },
                escape(detail)
            );
        }
        out.push_str("</g>\n");
    }
    if detail.run.status == "aborted" {
        let at = x(detail.run.finished_at_ms.unwrap_or(end));
        let _ = writeln!(
            out,
            r##"<line class="run-abort" x1="{at:.1}" y1="{}" x2="{at:.1}" y2="{}" stroke="#b91c1c" stroke-width="2" stroke-dasharray="4 3"><title>{}</title></line>"##,
            TOP - 8.0,
            height - 30.0,
            escape(&detail.run.reason)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests;
