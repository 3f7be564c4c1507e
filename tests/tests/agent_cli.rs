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

/// `validate` with the config's text edited by `edit`: exit code 2 and what it said.
fn refused(pki: &TestPki, edit: impl Fn(String) -> String) -> String {
    let path = config(pki, "pki/signing.pub");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    let output = Command::new(binary("troop-agent"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn validate_checks_what_the_agent_and_its_coordinator_will_hit() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::new(&["web-1", "web-2"]);
    // A certificate that names another agent.
    let said = refused(&pki, |t| {
        t.replace("pki/web-1.pem", "pki/web-2.pem")
            .replace("pki/web-1.key", "pki/web-2.key")
    });
    assert!(
        said.contains("tls.cert") && said.contains("does not name") && said.contains("web-2.pem"),
        "{said}"
    );
    // `tls.ca` pointing at a certificate that is not the fleet's CA.
    let said = refused(&pki, |t| {
        t.replace("ca = \"pki/ca.pem\"", "ca = \"pki/web-2.pem\"")
    });
    assert!(
        said.contains("tls.cert") && said.contains("web-2.pem") && said.contains("CA"),
        "{said}"
    );
    // A disk path and a state dir that do not exist.
    let said = refused(&pki, |t| {
        t.replace(
            "[policy]\n",
            "[policy]\ndisk_paths = [\"/nonexistent/fill\"]\n",
        )
    });
    assert!(
        said.contains("policy.disk_paths") && said.contains("/nonexistent/fill"),
        "{said}"
    );
    let said = refused(&pki, |t| {
        t.replace(
            "state_dir = \"state\"",
            "state_dir = \"/nonexistent/troop/state\"",
        )
    });
    assert!(
        said.contains("state_dir") && said.contains("/nonexistent/troop/state"),
        "{said}"
    );
    // A private key others can read.
    let key = pki.path("web-1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = refused(&pki, |t| t);
    assert!(
        said.contains("web-1.key") && said.contains("0644"),
        "{said}"
    );
}

/// Both ways an agent cannot start exit 2, and say so once.
#[test]
fn a_taken_port_and_a_taken_state_dir_both_exit_2_saying_so_once() {
    let pki = TestPki::new(&["web-1"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = config(&pki, "pki/signing.pub");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let output = Command::new(binary("troop-agent"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("cannot listen").count(), 1, "{stderr}");

    // The state dir held by a running agent (a second agent on another port).
    drop(taken);
    let mut first = Command::new(binary("troop-agent"))
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = pki.dir.path().join("state/agent.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second_path = pki.dir.path().join("second.toml");
    std::fs::write(
        &second_path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace(&format!(":{port}"), ":0"),
    )
    .unwrap();
    let output = Command::new(binary("troop-agent"))
        .arg("--config")
        .arg(&second_path)
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr
            .matches("in use by another running troop-agent")
            .count(),
        1,
        "{stderr}"
    );
}

/// `--config agent.toml` from the config's own folder: relative paths are from there.
#[test]
fn a_bare_config_file_name_resolves_paths_from_the_current_folder() {
    let pki = TestPki::new(&["web-1"]);
    config(&pki, "pki/signing.pub");
    let output = Command::new(binary("troop-agent"))
        .args(["validate", "--config", "agent.toml"])
        .current_dir(pki.dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}
