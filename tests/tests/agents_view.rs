//! `troop agents` tells the truth about each agent: labels in troop.toml that differ from
//! what the agent reports are flagged, not shown silently as the configured ones.

use troop_tests::lab::Lab;

#[test]
fn labels_that_drift_from_what_the_agent_reports_are_flagged() {
    let Some(mut lab) = Lab::new("label drift") else {
        return;
    };
    lab.add_host(
        "web-1",
        &[("role", "web"), ("zone", "a")],
        "allow = [\"kill\"]",
        vec![],
    );
    assert_eq!(lab.status("web-1")["label_drift"], serde_json::json!([]));
    let config = lab.dir().join("troop.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("zone = \"a\"", "zone = \"b\", tier = \"1\""),
    )
    .unwrap();
    let status = lab.status("web-1");
    assert_eq!(
        status["label_drift"],
        serde_json::json!(["tier: 1 -> -", "zone: b -> a"]),
        "{status}"
    );
    let table = lab.troop(&["agents"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("agent reports otherwise: tier: 1 -> -; zone: b -> a"),
        "{table}"
    );
}
