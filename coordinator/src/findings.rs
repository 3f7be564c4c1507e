//! What a run found, in the words Chaos Monkey is for: for each fault, whether the
//! service's probes held while it was applied, or which probe failed and how soon: a
//! single point of failure, named.
//!
//! A probe failure counts against every fault applied on any host when it happened
//! (from the agent's answer to the fault's revert), so two faults at once share it. A
//! single kill has nothing to revert: what it did lasts, so its window runs to the run's
//! end.

use serde::Serialize;

use crate::store::RunDetail;
use crate::timeline;

/// One fault's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub host: String,
    pub kind: String,
    pub fault: String,
    /// The first probe that failed while the fault held, and how long after its apply.
    pub broke: Option<Broke>,
    /// What it means, for people.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broke {
    pub probe: String,
    pub after_ms: i64,
    pub detail: String,
}

/// Every applied fault of the run with its verdict; empty when no probe watched the run
/// (there is nothing to judge by).
pub fn findings(detail: &RunDetail) -> Vec<Finding> {
    if detail.probes.is_empty() {
        return Vec::new();
    }
    let run_end = detail.run.finished_at_ms.unwrap_or(i64::MAX);
    timeline::bars(detail)
        .into_iter()
        .map(|bar| {
            let until = if bar.end_ms == bar.start_ms {
                run_end
            } else {
                bar.end_ms
            };
            let broke = detail
                .probes
                .iter()
                .filter(|p| !p.ok && p.at_ms >= bar.start_ms && p.at_ms <= until)
                .min_by_key(|p| p.at_ms)
                .map(|p| Broke {
                    probe: p.probe.clone(),
                    after_ms: p.at_ms - bar.start_ms,
                    detail: p.detail.clone(),
                });
            let text = match &broke {
                Some(broke) => format!(
                    "{} on {} made probe {} fail within {} ({}): single point of failure",
                    bar.what,
                    bar.host,
                    broke.probe,
                    after(broke.after_ms),
                    broke.detail
                ),
                None => format!("{} on {}: every probe held, survived", bar.what, bar.host),
            };
            Finding {
                host: bar.host,
                kind: bar.kind,
                fault: bar.what,
                broke,
                text,
            }
        })
        .collect()
}

/// How soon a probe failed: milliseconds under a second, where tenths would say 0.0.
fn after(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommandRow, ProbeRow, RunSummary};

    fn kill(id: i64, host: &str, sent: i64) -> CommandRow {
        CommandRow {
            id,
            run: 1,
            step: None,
            target: host.into(),
            command_id: format!("c{id}"),
            fault_kind: "kill name \"postgres\" with signal 9 (one match)".into(),
            parameters: r#"{"fault": {"kind": "kill"}, "duration_ms": 0}"#.into(),
            signature_sha256: String::new(),
            key_id: String::new(),
            sent_at_ms: sent,
            outcome: "applied".into(),
            code: None,
            message: String::new(),
            answered_at_ms: Some(sent),
        }
    }

    fn probe(at_ms: i64, ok: bool) -> ProbeRow {
        ProbeRow {
            id: at_ms,
            run: 1,
            probe: "checkout".into(),
            ok,
            detail: if ok { "200" } else { "503" }.into(),
            at_ms,
        }
    }

    fn run(commands: Vec<CommandRow>, probes: Vec<ProbeRow>) -> RunDetail {
        RunDetail {
            run: RunSummary {
                id: 1,
                campaign: "db".into(),
                status: "completed".into(),
                reason: String::new(),
                dry_run: false,
                seed: 1,
                started_at_ms: 0,
                finished_at_ms: Some(10_000),
                operator: String::new(),
                commands: 0,
                applied: 0,
                refused: 0,
                failed: 0,
            },
            steps: Vec::new(),
            commands,
            probes,
        }
    }

    #[test]
    fn a_probe_failing_while_a_fault_held_names_it_a_single_point_of_failure() {
        // A single kill holds for the run's rest: the failure 600 ms later is its.
        let detail = run(
            vec![kill(1, "db-1", 1_000)],
            vec![probe(500, true), probe(1_600, false)],
        );
        let found = findings(&detail);
        assert_eq!(found.len(), 1);
        let broke = found[0].broke.as_ref().unwrap();
        assert_eq!((broke.probe.as_str(), broke.after_ms), ("checkout", 600));
        assert_eq!(
            found[0].text,
            "kill name \"postgres\" with signal 9 (one match) on db-1 made probe checkout fail within 600 ms (503): single point of failure"
        );
    }

    #[test]
    fn faults_the_probes_held_through_survived_and_without_probes_nothing_is_judged() {
        let detail = run(
            vec![kill(1, "db-2", 1_000)],
            vec![probe(1_500, true), probe(400, false)],
        );
        let found = findings(&detail);
        assert!(found[0].broke.is_none());
        assert!(
            found[0]
                .text
                .ends_with("on db-2: every probe held, survived")
        );
        assert!(findings(&run(vec![kill(1, "db-2", 1_000)], Vec::new())).is_empty());
    }
}
