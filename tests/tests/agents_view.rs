//! `troop agents` tells the truth about each agent: labels in troop.toml that differ from
//! what the agent reports are flagged, not shown silently as the configured ones.

use troop_coordinator::config::ConfigFile;
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
    let mut file: ConfigFile = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let labels = &mut file.agents[0].labels;
    labels.insert("zone".into(), "b".into());
    labels.insert("tier".into(), "1".into());
    troop_lab::files::write(&config, &file).unwrap();
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
