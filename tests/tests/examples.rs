//! Every example config shipped in `deploy/` parses with the validator the binaries use.

use std::path::Path;

use troop_agent::config::AgentConfig;
use troop_coordinator::config::CoordinatorConfig;

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

#[test]
fn every_example_config_is_valid() {
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.starts_with("agent") {
            let config = AgentConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.id, "web-1");
        } else {
            let config = CoordinatorConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.agents.len(), 3);
        }
    }
}

#[test]
fn every_example_campaign_passes_campaign_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/campaigns");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let output = std::process::Command::new(troop_tests::binary("troop"))
            .args(["campaign", "validate"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}: {output:?}", path.display());
        count += 1;
    }
    assert!(count >= 2);
}
