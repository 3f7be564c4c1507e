//! A campaign run's events and outcome on the operator API, for both ends: serve runs
//! the campaign, the CLI prints what it did exactly as for a run of its own.

use troop_proto::serve_pb::{self, run_event::Event};

use crate::campaign::events::{RunEvent, RunReport};

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn event_out(event: RunEvent) -> serve_pb::RunEvent {
    let agent = |agent_id: String, outcome: String, text: String| serve_pb::AgentResult {
        agent_id,
        outcome,
        text,
    };
    let event = match event {
        RunEvent::Started {
            campaign,
            run,
            seed,
        } => Event::Started(serve_pb::RunStarted {
            campaign,
            run: run.unwrap_or(0),
            seed,
        }),
        RunEvent::Step {
            index,
            action,
            targets,
            held_back,
        } => Event::Step(serve_pb::StepSent {
            index: count(index),
            action,
            targets: count(targets),
            held_back: count(held_back),
        }),
        RunEvent::WouldFault { index, target } => Event::WouldFault(serve_pb::WouldFault {
            index: count(index),
            target,
        }),
        RunEvent::Applied { agent: id, summary } => {
            Event::Applied(agent(id, String::new(), summary))
        }
        RunEvent::NotApplied {
            agent: id,
            outcome,
            error,
        } => Event::NotApplied(agent(id, outcome, error)),
        RunEvent::ProbeFailed {
            probe,
            detail,
            failed,
            of,
        } => Event::ProbeFailed(serve_pb::ProbeFailed {
            probe,
            detail,
            failed,
            of,
        }),
        RunEvent::Aborting { reason, faults } => Event::Aborting(serve_pb::Aborting {
            reason,
            faults: count(faults),
        }),
        RunEvent::AbortNotApplied { agent: id, error } => {
            Event::AbortNotApplied(agent(id, String::new(), error))
        }
        RunEvent::AbortsNotSent { error } => Event::AbortsNotSent(error),
    };
    serve_pb::RunEvent { event: Some(event) }
}

/// `None` for an event this CLI does not know (a newer serve's).
pub fn event_in(event: serve_pb::RunEvent) -> Option<RunEvent> {
    Some(match event.event? {
        Event::Started(started) => RunEvent::Started {
            campaign: started.campaign,
            run: (started.run != 0).then_some(started.run),
            seed: started.seed,
        },
        Event::Step(step) => RunEvent::Step {
            index: step.index as usize,
            action: step.action,
            targets: step.targets as usize,
            held_back: step.held_back as usize,
        },
        Event::WouldFault(would) => RunEvent::WouldFault {
            index: would.index as usize,
            target: would.target,
        },
        Event::Applied(result) => RunEvent::Applied {
            agent: result.agent_id,
            summary: result.text,
        },
        Event::NotApplied(result) => RunEvent::NotApplied {
            agent: result.agent_id,
            outcome: result.outcome,
            error: result.text,
        },
        Event::ProbeFailed(probe) => RunEvent::ProbeFailed {
            probe: probe.probe,
            detail: probe.detail,
            failed: probe.failed,
            of: probe.of,
        },
        Event::Aborting(aborting) => RunEvent::Aborting {
            reason: aborting.reason,
            faults: aborting.faults as usize,
        },
        Event::AbortNotApplied(result) => RunEvent::AbortNotApplied {
            agent: result.agent_id,
            error: result.text,
        },
        Event::AbortsNotSent(error) => RunEvent::AbortsNotSent { error },
    })
}

pub fn outcome_out(report: &RunReport) -> serve_pb::RunOutcome {
    serve_pb::RunOutcome {
        run: report.run_id.unwrap_or(0),
        status: report.status.clone(),
        reason: report.reason.clone(),
        sent: count(report.sent),
        applied: count(report.applied),
        not_applied: count(report.not_applied),
        reverted_early: count(report.reverted_early),
    }
}

pub fn report_in(outcome: serve_pb::RunOutcome) -> RunReport {
    RunReport {
        run_id: (outcome.run != 0).then_some(outcome.run),
        status: outcome.status,
        reason: outcome.reason,
        sent: outcome.sent as usize,
        applied: outcome.applied as usize,
        not_applied: outcome.not_applied as usize,
        reverted_early: outcome.reverted_early as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_trip() {
        let events = [
            RunEvent::Started {
                campaign: "monkey".into(),
                run: Some(7),
                seed: 42,
            },
            RunEvent::Started {
                campaign: "dry".into(),
                run: None,
                seed: 1,
            },
            RunEvent::Step {
                index: 2,
                action: "kill nginx".into(),
                targets: 3,
                held_back: 1,
            },
            RunEvent::WouldFault {
                index: 0,
                target: "web-1".into(),
            },
            RunEvent::Applied {
                agent: "web-1".into(),
                summary: "killed 1".into(),
            },
            RunEvent::NotApplied {
                agent: "web-2".into(),
                outcome: "refused".into(),
                error: "policy".into(),
            },
            RunEvent::ProbeFailed {
                probe: "checkout".into(),
                detail: "503".into(),
                failed: 2,
                of: 3,
            },
            RunEvent::Aborting {
                reason: "probe".into(),
                faults: 4,
            },
            RunEvent::AbortNotApplied {
                agent: "web-3".into(),
                error: "unreachable".into(),
            },
            RunEvent::AbortsNotSent {
                error: "disk full".into(),
            },
        ];
        for event in events {
            assert_eq!(event_in(event_out(event.clone())), Some(event));
        }
    }

    #[test]
    fn a_report_survives_the_trip() {
        let report = RunReport {
            run_id: Some(3),
            status: "aborted".into(),
            reason: "Ctrl-C".into(),
            sent: 5,
            applied: 4,
            not_applied: 1,
            reverted_early: 2,
        };
        assert_eq!(report_in(outcome_out(&report)), report);
    }
}
