//! The `troop` binary's contract: exit codes, errors that point at the problem, and the
//! demo, run as a user would and its report checked.

use std::process::Command;

use troop_lab::files;

fn troop(args: &[&str]) -> std::process::Output {
    troop_in(&std::env::temp_dir(), args)
}

#[test]
fn usage_errors_exit_2_and_point_at_the_column() {
    let output = troop(&["attack", "kill", "--select", "role=web,,x", "--name", "a"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("column 10"), "{stderr}");
}

#[test]
fn a_missing_config_exits_2_and_says_where_it_looked() {
    let output = troop(&["--config", "/nonexistent/troop.toml", "agents"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/troop.toml"));
}

#[test]
fn pki_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki = pki.to_str().unwrap();
    assert!(troop(&["pki", "init", "--dir", pki]).status.success());
    let again = troop(&["pki", "init", "--dir", pki]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn the_demo_attacks_a_local_fleet_and_reports_what_it_measured() {
    if let Err(reason) = troop_lab::host::can_make_hosts() {
        assert!(
            !nix::unistd::geteuid().is_root() && std::env::var_os("TROOP_LAB_REQUIRED").is_none(),
            "the demo must run here: {reason}"
        );
        eprintln!("SKIPPED demo: {reason}");
        return;
    }
    let output = troop(&["demo", "--seed", "5", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["campaign"]["status"], "completed", "{report}");
    let commands = report["campaign"]["commands"].as_array().unwrap();
    let (starts, renewals): (Vec<_>, Vec<_>) = commands.iter().partition(|c| !c["step"].is_null());
    assert_eq!(starts.len(), 3, "{report}");
    assert!(
        renewals
            .iter()
            .all(|c| c["fault_kind"].as_str().unwrap().starts_with("renew"))
    );
    assert!(
        commands.iter().all(|c| c["outcome"] == "applied"),
        "every start and every renewal lands: {report}"
    );
    let effects = report["effects"].as_array().unwrap();
    let lost: u64 = effects
        .iter()
        .map(|e| e["before"].as_u64().unwrap() - e["after"].as_u64().unwrap())
        .sum();
    assert_eq!(lost, 1, "exactly one replica killed: {report}");
    let peak = |key: &str| {
        effects
            .iter()
            .map(|e| e[key].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert!(peak("peak_cpu_percent") >= 25.0, "{report}");
    assert!(peak("peak_disk_percent") >= 40.0, "{report}");
    assert_eq!(report["probe"]["failed"], 0, "{report}");
    assert!(report["probe"]["checks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["reverted"], true, "{report}");
    let refusals = report["refusals"].as_array().unwrap();
    assert!(
        refusals.iter().all(|r| r["outcome"] == "refused"),
        "{report}"
    );
    // The replicated web service survived each fault; the one database did not.
    let survived = report["campaign"]["findings"].as_array().unwrap();
    assert_eq!(survived.len(), 3, "{report}");
    assert!(survived.iter().all(|f| f["broke"].is_null()), "{report}");
    let spof = &report["single_point_of_failure"];
    assert_eq!(spof["campaign"]["status"], "aborted", "{report}");
    assert_eq!(spof["found"]["host"], "db-1", "{report}");
    assert_eq!(spof["found"]["kind"], "kill", "{report}");
    assert_eq!(spof["found"]["broke"]["probe"], "checkout", "{report}");
    assert!(
        spof["found"]["text"]
            .as_str()
            .unwrap()
            .ends_with("single point of failure"),
        "{report}"
    );
    // Nothing left behind: no demo process survives the demo.
    let leftover = Command::new("pgrep")
        .args(["-f", "__demo-service|troop-demo-"])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

/// A fleet of two static agents nobody dials: enough for dry runs.
fn dry_fleet(signing_key: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    assert!(
        troop(&["pki", "init", "--dir", pki.to_str().unwrap()])
            .status
            .success()
    );
    let web = files::labels(&[("role", "web")]);
    let mut fleet = files::coordinator_file([
        ("web-1", "192.0.2.1:7443", &web),
        ("web-2", "192.0.2.2:7443", &web),
    ]);
    fleet.signing.as_mut().unwrap().key = format!("pki/{signing_key}").into();
    files::write(&dir.path().join("troop.toml"), &fleet).unwrap();
    dir
}

fn troop_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_troop"))
        .args(args)
        .env_remove("TROOP_CONFIG")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_dry_run_fails_where_the_real_run_would() {
    // A public key where the private signing key belongs.
    let dir = dry_fleet("signing.pub");
    let output = troop_in(
        dir.path(),
        &[
            "attack",
            "kill",
            "--select",
            "role=web",
            "--name",
            "x",
            "--dry-run",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("[signing] key"),
        "{output:?}"
    );
    // A pattern no agent could compile.
    let dir = dry_fleet("signing.key");
    let output = troop_in(
        dir.path(),
        &[
            "attack",
            "kill",
            "--select",
            "role=web",
            "--pattern",
            "victim[d",
            "--dry-run",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--pattern"),
        "{output:?}"
    );
}

#[test]
fn a_dry_run_shows_its_seed_and_any_shortfall_so_it_can_be_repeated() {
    let dir = dry_fleet("signing.key");
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec![
            "attack",
            "kill",
            "--select",
            "role=web",
            "--name",
            "x",
            "--dry-run",
            "--output",
            "json",
        ];
        all.extend(args);
        let output = troop_in(dir.path(), &all);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let first = json(&["--count", "1"]);
    let seed = first["seed"].as_u64().expect("the seed is shown");
    let again = json(&["--count", "1", "--seed", &seed.to_string()]);
    assert_eq!(
        first["commands"][0]["agent_id"],
        again["commands"][0]["agent_id"]
    );
    assert!(first["shortfall"].is_null());
    let short = json(&["--count", "3"]);
    assert_eq!(
        short["shortfall"],
        serde_json::json!({ "asked": 3, "matched": 2 })
    );
    assert_eq!(short["commands"].as_array().unwrap().len(), 2);
}

#[test]
fn config_validate_checks_troop_toml_and_what_it_points_at() {
    let dir = dry_fleet("signing.key");
    let output = troop_in(dir.path(), &["config", "validate"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("valid. 2 agent(s)"),
        "{output:?}"
    );
    // The public key where the signing key belongs is named.
    let wrong = dry_fleet("signing.pub");
    let output = troop_in(wrong.path(), &["config", "validate", "troop.toml"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("signing.key"),
        "{output:?}"
    );
    // A campaign in the campaigns folder with a problem: at its line.
    std::fs::create_dir(dir.path().join("campaigns")).unwrap();
    std::fs::write(
        dir.path().join("campaigns/bad.toml"),
        "name = \"bad\"\ncolour = 1\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("troop.toml")).unwrap();
    std::fs::write(
        dir.path().join("troop.toml"),
        format!("campaigns = \"campaigns\"\n{text}"),
    )
    .unwrap();
    let output = troop_in(dir.path(), &["config", "validate"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2:1") && stderr.contains("colour"),
        "{stderr}"
    );
}
