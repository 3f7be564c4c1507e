//! The dashboard's HTML, rendered on the server (maud escapes every value), and its
//! stylesheet and script, embedded.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use troop_common::latch::MAX_REASON_CHARS;
use troop_proto::pb;
use troop_proto::serve_pb::LiveAgent;

use super::Session;
use crate::campaign::Campaign;
use crate::config::AgentEntry;
use crate::describe;
use crate::dispatch::{CallError, Delivery};
use crate::signer::now_unix_ms;
use crate::store::{AccessRecord, RunDetail, RunSummary};

pub const STYLE: &str = include_str!("style.css");
pub const SCRIPT: &str = include_str!("live.js");

/// What `fleet.statuses` answers: each agent and its Status, or why there is none.
pub type Statuses = [(AgentEntry, Result<pb::AgentStatus, CallError>)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Fleet,
    Faults,
    Campaigns,
    Runs,
    Audit,
    None,
}

fn layout(
    session: &Session,
    latch: Option<&pb::Latch>,
    title: &str,
    nav: Nav,
    content: Markup,
) -> Markup {
    let link = |to: Nav, href: &str, text: &str| {
        html! {
            @if nav == to {
                a href=(href) aria-current="page" { (text) }
            } @else {
                a href=(href) { (text) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    div.brand { "troop" }
                    nav aria-label="Pages" {
                        (link(Nav::Fleet, "/ui/", "Fleet"))
                        (link(Nav::Faults, "/ui/faults", "Live faults"))
                        (link(Nav::Campaigns, "/ui/campaigns", "Campaigns"))
                        (link(Nav::Runs, "/ui/runs", "Runs"))
                        (link(Nav::Audit, "/ui/audit", "Audit log"))
                    }
                    div.who {
                        span { (session.name) " (" (session.role.name()) ")" }
                        form method="post" action="/ui/signout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                @if session.may_act() {
                    (stop_controls(session, latch))
                }
                div #latch { (latch_banner(latch)) }
                main #main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A page's head; `live` pages take the live updates.
fn head(title: &str, live: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · troop" }
            link rel="stylesheet" href="/ui/style.css";
            @if live { script src="/ui/live.js" defer {} }
        }
    }
}

/// The emergency stop, on every page for those who may use it, and the resume.
fn stop_controls(session: &Session, latch: Option<&pb::Latch>) -> Markup {
    html! {
        section.stop aria-label="Emergency stop" {
            form #stop-form method="post" action="/ui/stop" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="stop-reason" { "Reason" }
                input #stop-reason type="text" name="reason" required maxlength=(MAX_REASON_CHARS)
                    placeholder="why everything must stop";
                button #emergency-stop.danger type="submit" { "Emergency stop" }
            }
            @if latch.is_some() {
                form #resume-form method="post" action="/ui/resume" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="resume-reason" { "Reason" }
                    input #resume-reason type="text" name="reason" required maxlength=(MAX_REASON_CHARS)
                        placeholder="why it is safe again";
                    button #resume type="submit" { "Resume" }
                }
            }
        }
    }
}

/// Whether the fleet is latched by an emergency stop, and by whom.
pub fn latch_banner(latch: Option<&pb::Latch>) -> Markup {
    html! {
        @if let Some(latch) = latch {
            p.banner.latched role="alert" {
                strong { "Emergency stop" } " by " (latch.by) " " (ago(latch.at_unix_ms))
                ": " (latch.reason) ". No fault starts until someone resumes."
            }
        } @else {
            p.banner.clear { "No emergency stop is in force." }
        }
    }
}

pub fn fleet(
    session: &Session,
    latch: Option<&pb::Latch>,
    agents: &[LiveAgent],
    statuses: &Statuses,
) -> Markup {
    let status: BTreeMap<&str, &Result<pb::AgentStatus, CallError>> = statuses
        .iter()
        .map(|(agent, result)| (agent.id.as_str(), result))
        .collect();
    let content = html! {
        table #fleet {
            caption { (agents.len()) " agents" }
            thead { tr {
                th scope="col" { "Agent" } th scope="col" { "Labels" } th scope="col" { "Reached" }
                th scope="col" { "Address" } th scope="col" { "Last seen" }
                th scope="col" { "Certificate" }
                th scope="col" { "Faults" } th scope="col" { "Latch" }
            } }
            tbody {
                @for agent in agents {
                    @let answer = status.get(agent.agent_id.as_str());
                    tr data-agent=(agent.agent_id) {
                        th scope="row" { (agent.agent_id) }
                        td { (labels(&agent.labels)) }
                        td {
                            (agent.via) " · "
                            @if agent.reachable { span.ok { "reachable" } }
                            @else { span.bad { "unreachable" } }
                        }
                        td { (agent.address) }
                        td { (ago(agent.last_seen_unix_ms)) }
                        td.certificate { (certificate_expiry(agent.certificate_expires_unix_ms)) }
                        @match answer {
                            Some(Ok(status)) => {
                                td { (status.active_faults.len()) }
                                td.latch-cell {
                                    @if let Some(latch) = &status.latch {
                                        span.bad { "latched" } " (" (latch.by) ")"
                                    } @else { "—" }
                                }
                            }
                            Some(Err(error)) => { td colspan="2" { span.bad { (error) } } }
                            None => { td colspan="2" { "—" } }
                        }
                    }
                }
            }
        }
    };
    layout(session, latch, "Fleet", Nav::Fleet, content)
}

/// Every active fault the agents report, with time left and what it achieves now.
pub fn faults_table(statuses: &Statuses) -> Markup {
    let now = now_unix_ms();
    let mut rows = Vec::new();
    let mut silent = Vec::new();
    for (agent, result) in statuses {
        match result {
            Ok(status) => rows.extend(status.active_faults.iter().map(|f| (&agent.id, f))),
            Err(error) => silent.push((&agent.id, error)),
        }
    }
    html! {
        table #faults {
            caption { (rows.len()) " active faults, as the agents report them" }
            thead { tr {
                th scope="col" { "Agent" } th scope="col" { "Kind" } th scope="col" { "Fault" }
                th scope="col" { "Time left" } th scope="col" { "Achieved" }
            } }
            tbody {
                @for (agent, fault) in &rows {
                    tr.fault data-agent=(agent) data-kind=(fault.kind) {
                        th scope="row" { (agent) }
                        td { (fault.kind) }
                        td { code { (fault.fault_id) } }
                        td.time-left { (left(fault.ends_at_unix_ms, now)) }
                        td { (fault.effect) }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="5" { "No fault is active anywhere." } }
                }
            }
        }
        @if !silent.is_empty() {
            p.bad { "No answer from: "
                @for (index, (agent, error)) in silent.iter().enumerate() {
                    @if index > 0 { "; " }
                    (agent) " (" (error) ")"
                }
            }
        }
    }
}

pub fn faults(session: &Session, latch: Option<&pb::Latch>, table: Markup) -> Markup {
    let content = html! {
        p { "Updated every second from each agent's Status." }
        div #live-faults aria-live="polite" { (table) }
    };
    layout(session, latch, "Live faults", Nav::Faults, content)
}

pub fn campaigns(
    session: &Session,
    latch: Option<&pb::Latch>,
    campaigns: &[Campaign],
    next: &BTreeMap<String, i64>,
    runs: &[RunSummary],
) -> Markup {
    let content = html! {
        table #campaigns {
            caption { (campaigns.len()) " campaigns in serve's campaigns directory" }
            thead { tr {
                th scope="col" { "Campaign" } th scope="col" { "Schedule" } th scope="col" { "Next firing" }
                th scope="col" { "Steps" } th scope="col" { "Last run" }
            } }
            tbody {
                @for campaign in campaigns {
                    @let last = runs.iter().find(|r| r.campaign == campaign.name);
                    tr {
                        th scope="row" { (campaign.name) }
                        td { @match &campaign.schedule {
                            Some(schedule) => { "every " (humantime(schedule.every))
                                @if !schedule.jitter.is_zero() { " + up to " (humantime(schedule.jitter)) } }
                            None => { "run by hand" }
                        } }
                        td { @match next.get(&campaign.name) {
                            Some(at) => { (when(*at)) }
                            None => { "—" }
                        } }
                        td { (campaign.steps.len()) }
                        td { @match last {
                            Some(run) => { a href={ "/ui/runs/" (run.id) } { "run " (run.id) } " " (run.status) }
                            None => { "never" }
                        } }
                    }
                }
            }
        }
    };
    layout(session, latch, "Campaigns", Nav::Campaigns, content)
}

pub fn runs(session: &Session, latch: Option<&pb::Latch>, runs: &[RunSummary]) -> Markup {
    let content = html! {
        table #runs {
            caption { "The newest " (runs.len()) " runs" }
            thead { tr {
                th scope="col" { "Run" } th scope="col" { "Campaign" } th scope="col" { "Status" }
                th scope="col" { "Started" } th scope="col" { "By" } th scope="col" { "Why it ended" }
            } }
            tbody {
                @for run in runs {
                    tr {
                        th scope="row" { a href={ "/ui/runs/" (run.id) } { (run.id) } }
                        td { (run.campaign) }
                        td { (run.status) }
                        td { (when(run.started_at_ms)) }
                        td { (run.operator) }
                        td { (run.reason) }
                    }
                }
            }
        }
    };
    layout(session, latch, "Runs", Nav::Runs, content)
}

pub fn run(
    session: &Session,
    latch: Option<&pb::Latch>,
    id: i64,
    detail: Option<&RunDetail>,
) -> Markup {
    let title = format!("Run {id}");
    let Some(detail) = detail else {
        let content = html! { p { "There is no run " (id) "." } };
        return layout(session, latch, &title, Nav::Runs, content);
    };
    let findings = crate::findings::findings(detail);
    let content = html! {
        p { (detail.run.campaign) ": " strong { (detail.run.status) }
            @if !detail.run.reason.is_empty() { " — " (detail.run.reason) } }
        figure {
            // The timeline escapes every text it takes from the store.
            (PreEscaped(crate::timeline::svg(detail)))
            figcaption { "One row per host, a bar per fault, probe results beneath." }
        }
        @if !findings.is_empty() {
            h2 { "Findings" }
            ul #findings { @for finding in &findings {
                li class=(if finding.broke.is_some() { "bad" } else { "ok" }) { (finding.text) }
            } }
        }
        h2 { "Commands" }
        table #commands {
            thead { tr {
                th scope="col" { "Sent" } th scope="col" { "Agent" } th scope="col" { "Command" }
                th scope="col" { "Outcome" } th scope="col" { "Detail" }
            } }
            tbody { @for command in &detail.commands {
                tr {
                    td { (when(command.sent_at_ms)) }
                    th scope="row" { (command.target) }
                    td { (command.fault_kind) }
                    td { (command.outcome) }
                    td { (command.message) }
                }
            } }
        }
    };
    layout(session, latch, &title, Nav::Runs, content)
}

pub fn audit(session: &Session, latch: Option<&pb::Latch>, log: &[AccessRecord]) -> Markup {
    let content = html! {
        table #audit {
            caption { "The newest " (log.len()) " calls, allowed or refused" }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Call" }
                th scope="col" { "Allowed" } th scope="col" { "Detail" }
            } }
            tbody { @for entry in log {
                tr {
                    td { (when(entry.at_ms)) }
                    td { (entry.caller) }
                    td { (entry.call) }
                    td { @if entry.allowed { span.ok { "yes" } } @else { span.bad { "refused" } } }
                    td { (entry.detail) }
                }
            } }
        }
    };
    layout(session, latch, "Audit log", Nav::Audit, content)
}

/// What an emergency stop or a resume reached.
pub fn latched(
    session: &Session,
    latch: Option<&pb::Latch>,
    stop: bool,
    run: i64,
    deliveries: &[Delivery],
) -> Markup {
    let title = if stop {
        "Emergency stop sent"
    } else {
        "Resumed"
    };
    let content = html! {
        p { "Recorded as " a href={ "/ui/runs/" (run) } { "run " (run) } "." }
        table #reached {
            thead { tr { th scope="col" { "Agent" } th scope="col" { "Outcome" } th scope="col" { "Detail" } } }
            tbody { @for delivery in deliveries {
                tr {
                    th scope="row" { (delivery.agent.id) }
                    td { (describe::outcome_word(&delivery.result)) }
                    td { @match &delivery.result {
                        Ok(receipt) => { (receipt.summary) }
                        Err(error) => { (error) }
                    } }
                }
            } }
        }
    };
    layout(session, latch, title, Nav::None, content)
}

pub fn signin(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in", false))
            body {
                main #main.signin {
                    h1 { "troop" }
                    @if let Some(error) = error {
                        p.banner.latched role="alert" { "Not signed in: " (error) }
                    }
                    form method="post" action="/ui/signin" {
                        label for="token" { "Operator token" }
                        input #token type="password" name="token" required autocomplete="off";
                        p.hint { "From " code { "troop pki operator-token --name NAME" } " on the serve host." }
                        button #sign-in type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

fn labels(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    sorted
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn when(at_ms: i64) -> String {
    crate::describe::unix_ms_text(at_ms)
}

/// When a stream's certificate expires (serve renews enrolled agents' before); `—` when
/// serve does not know (a static agent, or not connected).
fn certificate_expiry(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "—".into();
    }
    let now = now_unix_ms();
    if at_ms <= now {
        return format!("expired {}", ago(at_ms));
    }
    let seconds = (at_ms - now) / 1000;
    match seconds / 86_400 {
        0 => format!(
            "expires in {}",
            humantime(std::time::Duration::from_secs(seconds as u64))
        ),
        days => format!("expires in {days}d {}h", seconds % 86_400 / 3600),
    }
}

fn ago(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "never".into();
    }
    let seconds = (now_unix_ms() - at_ms).max(0) / 1000;
    format!(
        "{} ago",
        humantime(std::time::Duration::from_secs(seconds as u64))
    )
}

fn left(ends_at_ms: i64, now_ms: i64) -> String {
    if ends_at_ms <= 0 {
        return "until stopped".into();
    }
    let seconds = (ends_at_ms - now_ms).max(0) / 1000;
    humantime(std::time::Duration::from_secs(seconds as u64))
}

/// `1h 2m`, `3m 4s`, `5s`.
fn humantime(duration: std::time::Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(humantime(std::time::Duration::from_secs(5)), "5s");
        assert_eq!(humantime(std::time::Duration::from_secs(184)), "3m 4s");
        assert_eq!(humantime(std::time::Duration::from_secs(3720)), "1h 2m");
        assert_eq!(left(0, 5), "until stopped");
        assert_eq!(left(10_500, 1_000), "9s");
        assert_eq!(ago(0), "never");
    }

    #[test]
    fn store_text_is_escaped() {
        let banner = latch_banner(Some(&pb::Latch {
            by: "<script>alert(1)</script>".into(),
            reason: "a & b".into(),
            ..Default::default()
        }))
        .into_string();
        assert!(!banner.contains("<script>"), "{banner}");
        assert!(banner.contains("&lt;script&gt;"), "{banner}");
        assert!(banner.contains("a &amp; b"), "{banner}");
    }
}
