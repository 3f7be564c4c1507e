//! `troop-agent validate`, as systemd's ExecStartPre runs it, on a config whose files exist
//! and on one whose key file is missing.

use std::process::Command;

use troop_tests::{TestPki, binary};

fn config(pki: &TestPki, key_path: &str) -> std::path::PathBuf {
    let path = pki.dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "id = \"web-1\"\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
             [tls]\ncert = \"pki/web-1.pem\"\nkey = \"pki/web-1.key\"\nca = \"pki/ca.pem\"\n\
             [trust]\ncoordinator_keys = [\"{key_path}\"]\n[policy]\nallow = [\"kill\", \"stop-host\"]\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn validate_accepts_a_good_config() {
    let pki = TestPki::new(&["web-1"]);
    let output = Command::new(binary("troop-agent"))
        .arg("validate")
        .arg("--config")
        .arg(config(&pki, "pki/signing.pub"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("valid") && stdout.contains("kill, stop-host"),
        "{stdout}"
    );
}

#[test]
fn validate_names_a_missing_key_file() {
    let pki = TestPki::new(&["web-1"]);
    let output = Command::new(binary("troop-agent"))
        .args(["validate", "--config"])
        .arg(config(&pki, "pki/nope.pub"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nope.pub"), "{stderr}");
}
