use super::*;
use crate::store::{ProbeRow, RunSummary};

fn run(status: &str, finished_at_ms: Option<i64>) -> RunSummary {
    RunSummary {
        id: 7,
        campaign: "monkey <web>".into(),
        status: status.into(),
        reason: "probe checkout failed 3 time(s)".into(),
        dry_run: false,
        seed: 1,
        started_at_ms: 1_000,
        finished_at_ms,
        operator: String::new(),
        commands: 0,
        applied: 0,
        refused: 0,
        failed: 0,
    }
}

fn command(id: i64, target: &str, action: &str, parameters: &str, sent: i64) -> CommandRow {
    CommandRow {
        id,
        run: 7,
        step: None,
        target: target.into(),
        command_id: format!("c{id}"),
        fault_kind: action.into(),
        parameters: parameters.into(),
        signature_sha256: String::new(),
        key_id: String::new(),
        sent_at_ms: sent,
        outcome: "applied".into(),
        code: None,
        message: String::new(),
        answered_at_ms: Some(sent + 10),
    }
}

fn cpu(duration_ms: i64) -> String {
    format!(r#"{{"fault": {{"kind": "cpu", "load": 50}}, "duration_ms": {duration_ms}}}"#)
}

fn detail() -> RunDetail {
    let mut refused = command(4, "web-3", "cpu 50%", &cpu(5_000), 1_100);
    refused.outcome = "refused".into();
    RunDetail {
        run: run("aborted", Some(9_000)),
        steps: Vec::new(),
        commands: vec![
            command(1, "web-1", "cpu 50%", &cpu(5_000), 1_100),
            command(2, "web-2", "cpu 50%", &cpu(60_000), 1_100),
            refused,
            command(5, "web-2", "abort every active fault", "{}", 4_000),
        ],
        probes: vec![
            ProbeRow {
                id: 1,
                run: 7,
                probe: "checkout".into(),
                ok: true,
                detail: "200".into(),
                at_ms: 2_000,
            },
            ProbeRow {
                id: 2,
                run: 7,
                probe: "checkout".into(),
                ok: false,
                detail: "503 <oops>".into(),
                at_ms: 3_000,
            },
        ],
    }
}

#[test]
fn a_bar_ends_at_its_duration_or_at_the_abort_that_reached_its_host() {
    let bars = bars(&detail());
    assert_eq!(bars.len(), 2, "the refused start is no bar: {bars:?}");
    assert_eq!(
        (bars[0].host.as_str(), bars[0].start_ms, bars[0].end_ms),
        ("web-1", 1_110, 6_110)
    );
    assert!(!bars[0].aborted);
    assert_eq!((bars[1].host.as_str(), bars[1].end_ms), ("web-2", 4_010));
    assert!(bars[1].aborted);
}

#[test]
fn the_picture_is_svg_with_a_row_per_host_hit_and_a_strip_per_probe() {
    let text = svg(&detail());
    let document = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let class = |name: &str| {
        document
            .descendants()
            .filter(|node| node.attribute("class") == Some(name))
            .count()
    };
    assert_eq!(class("host"), 2);
    assert_eq!(class("fault"), 2);
    assert_eq!(class("abort"), 1);
    assert_eq!(class("probe"), 1);
    assert_eq!(class("run-abort"), 1);
    // Names from the store are escaped, never markup.
    assert!(text.contains("monkey &lt;web&gt;") && text.contains("503 &lt;oops&gt;"));
}
