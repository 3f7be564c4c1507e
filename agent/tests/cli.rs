//! `troop-agent` on a bad config: the key is named and the agent does not start.
//! (The good-config path is in the workspace's `tests/` crate, which has a PKI at hand.)

use std::process::Command;

#[test]
fn an_unknown_key_is_named_and_the_agent_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "id = \"web-1\"\nstate_dir = \"state\"\ncolour = \"blue\"\n\
         [tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n\
         [trust]\ncoordinator_keys = [\"signing.pub\"]\n",
    )
    .unwrap();
    for args in [vec!["validate", "--config"], vec!["--config"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_troop-agent"))
            .args(&args)
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("unknown field `colour`"), "{stderr}");
        assert!(stderr.contains("agent.toml"), "{stderr}");
    }
    assert!(
        !dir.path().join("state").exists(),
        "nothing may happen on a bad config"
    );
}
