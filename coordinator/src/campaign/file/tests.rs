use super::*;
use crate::campaign::probe::Check;

const GOOD: &str = r#"name = "monkey-web"
seed = 42

[schedule]
every = "1h"
jitter = "30m"
window = "Mon-Fri 09:00-17:00"
timezone = "Europe/Berlin"
blackout = ["2026-12-24"]

[guardrails]
max_concurrent = 2
min_healthy_percent = 75
error_threshold_percent = 20

[[guardrails.stop_if]]
http = "http://127.0.0.1:8080/health"
expect_status = 200
every = "5s"
failures = 3

[[step]]
select = "role=web"
group_by = "cluster"
pick = { count = 1 }
fault = { kind = "kill", name = "nginx", signal = "KILL" }

[[step]]
select = "role=db"
pick = { count = 1 }
fault = { kind = "cpu", load = 80 }
duration = "2m"
"#;

fn problems(text: &str) -> Vec<(usize, usize, String)> {
    Campaign::parse(text, Path::new("c.toml"))
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| (p.line, p.column, p.message))
        .collect()
}

#[test]
fn the_design_example_validates() {
    let campaign = Campaign::parse(GOOD, Path::new("c.toml")).unwrap();
    assert_eq!(campaign.name, "monkey-web");
    assert_eq!(campaign.steps.len(), 2);
    assert_eq!(campaign.steps[1].duration, Duration::from_secs(120));
    assert_eq!(campaign.guardrails.max_concurrent, 2);
    assert_eq!(campaign.probes[0].failures, 3);
    assert!(campaign.schedule.is_some());
}

#[test]
fn https_probes_name_their_ca_and_headers_and_misuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    crate::pki::init(dir.path()).unwrap();
    let probe = |lines: &str| {
        GOOD.replace(
            "http = \"http://127.0.0.1:8080/health\"\n",
            &format!("{lines}\n"),
        )
    };
    let file = dir.path().join("c.toml");
    let good = probe(
        "http = \"https://svc.internal/health\"\nca = \"ca.pem\"\nheaders = { Authorization = \"Bearer x\" }",
    );
    let campaign = Campaign::parse(&good, &file).unwrap();
    assert_eq!(
        campaign.probes[0].check,
        Check::Http {
            url: "https://svc.internal/health".into(),
            expect_status: 200,
            // Relative to the campaign file.
            ca: Some(dir.path().join("ca.pem")),
            headers: vec![("Authorization".into(), "Bearer x".into())],
        }
    );
    let refused = |lines: &str, expected: &str| {
        let error = Campaign::parse(&probe(lines), &file)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{lines}: {error}");
    };
    refused(
        "http = \"http://svc/health\"\nca = \"ca.pem\"",
        "ca is only for https:// URLs",
    );
    refused(
        "http = \"https://svc/health\"\nca = \"missing.pem\"",
        "missing.pem",
    );
    refused(
        "http = \"https://svc/health\"\nheaders = { \"Bad Name\" = \"x\" }",
        "not an HTTP header name",
    );
    refused(
        "tcp = \"svc:80\"\nca = \"ca.pem\"",
        "ca is only for http probes",
    );
    refused("http = \"ftp://svc/\"", "only http:// and https://");
}

#[test]
fn every_problem_is_reported_at_its_line_and_column() {
    let text = GOOD
        .replace("every = \"1h\"", "every = \"1 hour\"")
        .replace("max_concurrent = 2", "max_concurrent = 0")
        .replace("load = 80", "load = 180")
        .replace("select = \"role=db\"", "select = \"role==\"");
    let found = problems(&text);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found
            .iter()
            .any(|(line, _, m)| *line == 5 && m.contains("schedule.every")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(line, _, m)| *line == 12 && m.contains("max_concurrent")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|(_, _, m)| m.contains("load is 180")),
        "{found:?}"
    );
    let select = found
        .iter()
        .find(|(_, _, m)| m.starts_with("select"))
        .unwrap();
    assert_eq!(select.0, 29, "{found:?}");
}

#[test]
fn every_unknown_key_and_every_other_problem_in_one_pass() {
    let text = GOOD
        .replace("group_by", "grup_by")
        .replace("jitter", "jiter")
        .replace("failures = 3", "failure = 3")
        .replace("signal = \"KILL\"", "sig = \"KILL\"")
        .replace("load = 80", "load = 180");
    let found = problems(&text);
    for key in [
        "step.grup_by",
        "schedule.jiter",
        "guardrails.stop_if.failure",
        "step.fault.sig",
    ] {
        assert!(
            found
                .iter()
                .any(|(_, _, m)| m.contains(&format!("unknown key `{key}`"))),
            "{key}: {found:?}"
        );
    }
    assert!(
        found.iter().any(|(_, _, m)| m.contains("load is 180")),
        "{found:?}"
    );
    let grup = found
        .iter()
        .find(|(_, _, m)| m.contains("grup_by"))
        .unwrap();
    assert_eq!((grup.0, grup.1), (24, 1), "at the key itself");
}

#[test]
fn messages_quote_the_file_not_a_default() {
    let found = problems(
        &GOOD
            .replace("max_concurrent = 2", "max_concurrent = 0")
            .replace("pick = { count = 1 }", "pick = { count = 2 }"),
    );
    assert!(
        found
            .iter()
            .all(|(_, _, m)| !m.contains("max_concurrent is 1")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(_, _, m)| m.contains("max_concurrent is 0")),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_kinds_and_impossible_picks_are_errors() {
    let unknown = problems(&GOOD.replace("group_by", "grup_by"));
    assert!(unknown[0].2.contains("grup_by"), "{unknown:?}");
    assert_eq!(unknown[0].0, 24);
    let kind = problems(&GOOD.replace("kind = \"cpu\"", "kind = \"cpuu\""));
    assert!(kind[0].2.contains("unknown fault kind"), "{kind:?}");
    let pick = problems(&GOOD.replace(
        "pick = { count = 1 }\nfault = { kind = \"cpu\"",
        "pick = { count = 3 }\nfault = { kind = \"cpu\"",
    ));
    assert!(pick[0].2.contains("can never happen"), "{pick:?}");
    let zero = problems(&GOOD.replacen("count = 1", "count = 0", 1));
    assert!(zero[0].2.contains("picks nothing"), "{zero:?}");
    let stray = problems(&GOOD.replace("load = 80", "load = 80, name = \"x\""));
    assert!(
        stray[0].2.contains("name does not apply to a cpu fault"),
        "{stray:?}"
    );
    let no_duration = problems(&GOOD.replace("duration = \"2m\"\n", ""));
    assert!(
        no_duration[0].2.contains("needs a step duration"),
        "{no_duration:?}"
    );
    let bad_zone = problems(&GOOD.replace("Europe/Berlin", "Europe/Atlantis"));
    assert!(bad_zone[0].2.contains("unknown time zone"), "{bad_zone:?}");
    let bad_window = problems(&GOOD.replace("Mon-Fri 09:00-17:00", "Mon-Fri 09:00-25:00"));
    assert!(
        bad_window[0].2.contains("schedule.window"),
        "{bad_window:?}"
    );
    let no_steps = problems("name = \"x\"\n");
    assert!(
        no_steps[0].2.contains("at least one [[step]]"),
        "{no_steps:?}"
    );
    let syntax = problems("name = \"x\n");
    assert_eq!(syntax.len(), 1);
}

#[test]
fn network_and_dns_steps_take_the_flags_keys() {
    let text = r#"name = "net"
[[step]]
select = "role=db"
pick = { count = 1 }
fault = { kind = "network", latency = "100ms", jitter = "10ms", loss = "0.5%", rate = "10mbit", to = ["10.0.2.0/24", "db-1:5432"], port = [5432], interface = "eth0" }
duration = "1m"

[[step]]
select = "role=web"
pick = { count = 1 }
fault = { kind = "dns" }
duration = "30s"
"#;
    let campaign = Campaign::parse(text, Path::new("c.toml")).unwrap();
    let pb::start_fault::Fault::Network(network) = &campaign.steps[0].fault else {
        panic!("not a network fault: {:?}", campaign.steps[0].fault);
    };
    assert_eq!((network.latency_ms, network.jitter_ms), (100, 10));
    assert_eq!(network.loss_percent, 0.5);
    assert_eq!(network.rate_bits_per_second, 10_000_000);
    assert_eq!(network.to, ["10.0.2.0/24", "db-1:5432"]);
    assert_eq!(
        (network.ports.as_slice(), network.interface.as_str()),
        (&[5432][..], "eth0")
    );
    assert!(matches!(
        campaign.steps[1].fault,
        pb::start_fault::Fault::Dns(_)
    ));

    let bad = r#"name = "net"
[[step]]
select = "role=db"
pick = { count = 1 }
fault = { kind = "network", loss = "150%", rate = "10Mbps", port = [70000], name = "x" }
duration = "1m"

[[step]]
select = "role=db"
pick = { count = 1 }
fault = { kind = "network", to = ["10.0.0.0/8"] }
duration = "1m"
"#;
    let found: Vec<String> = problems(bad).into_iter().map(|(_, _, m)| m).collect();
    for says in [
        "loss: \"150%\"",
        "rate: \"10Mbps\"",
        "port 70000",
        "name does not apply to a network fault",
        "needs at least one of latency",
    ] {
        assert!(found.iter().any(|m| m.contains(says)), "{says}: {found:?}");
    }
}

#[test]
fn a_step_may_watch_its_probes_for_a_while_up_to_an_hour() {
    let watched = GOOD.replace(
        "signal = \"KILL\" }\n",
        "signal = \"KILL\" }\nwatch = \"30s\"\n",
    );
    let campaign = Campaign::parse(&watched, Path::new("c.toml")).unwrap();
    assert_eq!(campaign.steps[0].watch, Duration::from_secs(30));
    assert_eq!(campaign.steps[1].watch, Duration::ZERO);
    let too_long = problems(&GOOD.replace(
        "signal = \"KILL\" }\n",
        "signal = \"KILL\" }\nwatch = \"2h\"\n",
    ));
    assert_eq!(too_long, vec![(27, 9, "watch: at most 1h".to_string())]);
    let garbage = problems(&GOOD.replace(
        "signal = \"KILL\" }\n",
        "signal = \"KILL\" }\nwatch = \"soon\"\n",
    ));
    assert!(garbage[0].2.starts_with("watch: "), "{garbage:?}");
}
