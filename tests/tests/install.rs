//! `deploy/install.sh`, run as a packager would run it: always into a `DESTDIR` under a
//! temporary directory and always with `--no-start`, so the real system is never touched.
//! Each test copies `deploy/` to its own temporary directory (with stand-in systemd units
//! where the real ones are missing) and installs stub binaries from there.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use troop_agent::config::AgentConfig;
use troop_agent::policy::FaultKind;
use troop_coordinator::config::CoordinatorConfig;
use troop_tests::TestPki;

const STUB: &str = "#!/bin/sh\necho stub\n";
const AGENT_UNIT: &str = "lib/systemd/system/troop-agent.service";
const COORDINATOR_UNIT: &str = "lib/systemd/system/troop-coordinator.service";
const MANIFEST: &str = "var/lib/troop-install/manifest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // fs::copy keeps the permission bits (install.sh stays executable).
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A copy of `deploy/`, a folder of stub binaries and an empty DESTDIR.
struct Setup {
    dir: tempfile::TempDir,
    deploy: PathBuf,
    bin: PathBuf,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deploy = dir.path().join("deploy");
        copy_dir(&repo().join("deploy"), &deploy);
        let systemd = deploy.join("systemd");
        fs::create_dir_all(&systemd).unwrap();
        for unit in ["troop-agent.service", "troop-coordinator.service"] {
            let path = systemd.join(unit);
            if !path.exists() {
                fs::write(
                    &path,
                    format!("# stand-in for {unit}\n[Service]\nExecStart=/bin/true\n"),
                )
                .unwrap();
            }
        }
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for name in ["troop-agent", "troop"] {
            let path = bin.join(name);
            fs::write(&path, STUB).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        Self {
            dir,
            deploy,
            bin,
            root,
        }
    }

    /// Runs install.sh with `args`, always with DESTDIR and `--no-start`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(self.deploy.join("install.sh"))
            .arg("--no-start")
            .args(args)
            .env("DESTDIR", &self.root)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs install.sh, asserts it succeeded and returns what it printed.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "install.sh {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn install(&self, extra: &[&str]) -> String {
        let bin = self.bin.to_str().unwrap();
        let mut args = vec!["--bin-dir", bin];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// `rel` inside the DESTDIR, e.g. `etc/troop/agent.toml`.
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|error| panic!("{rel}: {error}"))
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// Every path under the DESTDIR with its mode and, for files, its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    out.insert(rel, (mode(&path), None));
                    walk(&path, root, out);
                } else {
                    out.insert(rel, (mode(&path), Some(fs::read(&path).unwrap())));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// Regular files (and symlinks) left anywhere under the DESTDIR.
    fn files(&self) -> Vec<PathBuf> {
        self.snapshot()
            .into_iter()
            .filter(|(_, (_, content))| content.is_some())
            .map(|(path, _)| path)
            .collect()
    }

    fn manifest(&self) -> Vec<String> {
        self.read(MANIFEST).lines().map(str::to_string).collect()
    }
}

#[test]
fn install_lays_out_the_agent() {
    let setup = Setup::new();
    setup.install(&[]);

    let binary = setup.path("usr/bin/troop-agent");
    assert_eq!(fs::read_to_string(&binary).unwrap(), STUB);
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(
        setup.read(AGENT_UNIT),
        fs::read_to_string(setup.deploy.join("systemd/troop-agent.service")).unwrap()
    );
    assert_eq!(mode(&setup.path(AGENT_UNIT)), 0o644);
    assert_eq!(mode(&setup.path("etc/troop")), 0o750);
    assert_eq!(
        setup.read("etc/troop/agent.toml"),
        fs::read_to_string(repo().join("deploy/agent.toml.skeleton")).unwrap()
    );
    assert_eq!(mode(&setup.path("etc/troop/agent.toml")), 0o640);
    assert_eq!(mode(&setup.path("var/lib/troop-agent")), 0o700);
    assert_eq!(mode(&setup.path("var/tmp/troop")), 0o700);
    // Agent hosts need only the agent.
    assert!(!setup.exists("usr/bin/troop"));
    assert!(!setup.exists(COORDINATOR_UNIT));

    let manifest = setup.manifest();
    for path in [
        "/usr/bin/troop-agent",
        "/lib/systemd/system/troop-agent.service",
        "/etc/troop/agent.toml",
        "/var/lib/troop-agent",
        "/var/tmp/troop",
    ] {
        assert!(
            manifest.iter().any(|line| line == path),
            "{path} not in {manifest:?}"
        );
    }
    assert!(
        manifest
            .iter()
            .all(|line| !line.contains(setup.root.to_str().unwrap())),
        "the manifest holds target paths, not DESTDIR paths: {manifest:?}"
    );
}

#[test]
fn a_second_run_changes_nothing() {
    let setup = Setup::new();
    setup.install(&["--agent", "--coordinator"]);
    let before = setup.snapshot();
    let stdout = setup.install(&["--agent", "--coordinator"]);
    assert_eq!(
        setup.snapshot(),
        before,
        "second run changed files:\n{stdout}"
    );
    assert!(!stdout.contains("installed"), "{stdout}");
    assert!(!stdout.contains("created"), "{stdout}");
}

#[test]
fn an_existing_config_and_keys_are_kept() {
    let setup = Setup::new();
    // As cloud-init leaves a host: config and keys in place before the first install.
    fs::create_dir_all(setup.path("etc/troop")).unwrap();
    let edited = "id = \"web-1\"\n# edited by hand\n";
    fs::write(setup.path("etc/troop/agent.toml"), edited).unwrap();
    fs::set_permissions(
        setup.path("etc/troop/agent.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(setup.path("etc/troop/web-1.key"), "KEY").unwrap();
    fs::set_permissions(
        setup.path("etc/troop/web-1.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    let stdout = setup.install(&[]);
    assert!(stdout.contains("kept"), "{stdout}");
    assert_eq!(setup.read("etc/troop/agent.toml"), edited);
    assert_eq!(mode(&setup.path("etc/troop/agent.toml")), 0o600);
    assert_eq!(setup.read("etc/troop/web-1.key"), "KEY");
    assert_eq!(mode(&setup.path("etc/troop/web-1.key")), 0o600);

    // Edited after the install, and installed again: still the operator's.
    let edited_again = format!("{edited}# and again\n");
    fs::write(setup.path("etc/troop/agent.toml"), &edited_again).unwrap();
    setup.install(&[]);
    assert_eq!(setup.read("etc/troop/agent.toml"), edited_again);
}

#[test]
fn a_new_binary_replaces_the_old_one() {
    let setup = Setup::new();
    setup.install(&[]);
    let newer = "#!/bin/sh\necho newer\n";
    fs::write(setup.bin.join("troop-agent"), newer).unwrap();
    let stdout = setup.install(&[]);
    assert!(
        stdout.contains("installed /usr/bin/troop-agent"),
        "{stdout}"
    );
    assert_eq!(setup.read("usr/bin/troop-agent"), newer);
    assert_eq!(mode(&setup.path("usr/bin/troop-agent")), 0o755);
}

#[test]
fn uninstall_keeps_configs_keys_and_state() {
    let setup = Setup::new();
    setup.install(&[]);
    fs::write(setup.path("etc/troop/web-1.key"), "KEY").unwrap();
    fs::write(setup.path("var/lib/troop-agent/ledger"), "LEDGER").unwrap();

    setup.ok(&["--uninstall"]);
    assert!(!setup.exists("usr/bin/troop-agent"));
    assert!(!setup.exists(AGENT_UNIT));
    assert!(setup.exists("etc/troop/agent.toml"));
    assert_eq!(setup.read("etc/troop/web-1.key"), "KEY");
    assert_eq!(setup.read("var/lib/troop-agent/ledger"), "LEDGER");
    assert!(setup.exists("var/tmp/troop"));

    // Uninstalling again is harmless.
    setup.ok(&["--uninstall"]);
    assert!(setup.exists("etc/troop/agent.toml"));

    // And --purge afterwards takes the rest.
    setup.ok(&["--uninstall", "--purge"]);
    assert_eq!(setup.files(), Vec::<PathBuf>::new());
    for gone in [
        "etc/troop",
        "var/lib/troop-agent",
        "var/tmp/troop",
        "var/lib/troop-install",
    ] {
        assert!(!setup.exists(gone), "{gone} is still there");
    }
}

#[test]
fn purge_removes_everything() {
    let setup = Setup::new();
    setup.install(&["--agent", "--coordinator"]);
    fs::write(setup.path("etc/troop/web-1.key"), "KEY").unwrap();
    fs::write(setup.path("var/lib/troop-agent/ledger"), "LEDGER").unwrap();
    fs::write(setup.path("var/lib/troop/troop.db"), "DB").unwrap();

    setup.ok(&["--uninstall", "--purge"]);
    assert_eq!(setup.files(), Vec::<PathBuf>::new());
    for gone in [
        "etc/troop",
        "var/lib/troop-agent",
        "var/tmp/troop",
        "var/lib/troop",
        "var/lib/troop-install",
    ] {
        assert!(!setup.exists(gone), "{gone} is still there");
    }
}

#[test]
fn purge_never_deletes_the_fleet_ca_or_signing_key() {
    let setup = Setup::new();
    setup.install(&["--coordinator"]);
    fs::create_dir(setup.path("etc/troop/pki")).unwrap();
    fs::write(setup.path("etc/troop/pki/ca.key"), "CA KEY").unwrap();
    fs::write(setup.path("etc/troop/pki/signing.key"), "SIGNING KEY").unwrap();

    let output = setup.run(&["--uninstall", "--purge"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ca.key"),
        "{output:?}"
    );
    assert_eq!(setup.read("etc/troop/pki/ca.key"), "CA KEY");
    assert_eq!(setup.read("etc/troop/pki/signing.key"), "SIGNING KEY");
    assert!(!setup.exists("usr/bin/troop"));
    assert!(!setup.exists("var/lib/troop"));
}

#[test]
fn purging_one_role_keeps_the_others_config() {
    let setup = Setup::new();
    setup.install(&["--agent", "--coordinator"]);
    setup.ok(&["--uninstall", "--purge", "--agent"]);
    assert!(!setup.exists("usr/bin/troop-agent"));
    assert!(!setup.exists("etc/troop/agent.toml"));
    assert!(!setup.exists("var/lib/troop-agent"));
    assert!(setup.exists("usr/bin/troop"));
    assert!(setup.exists("etc/troop/troop.toml"));
    assert!(
        setup
            .manifest()
            .iter()
            .all(|line| !line.contains("troop-agent"))
    );
}

#[test]
fn install_lays_out_the_coordinator() {
    let setup = Setup::new();
    setup.install(&["--coordinator"]);
    assert_eq!(setup.read("usr/bin/troop"), STUB);
    assert_eq!(mode(&setup.path("usr/bin/troop")), 0o755);
    assert_eq!(mode(&setup.path(COORDINATOR_UNIT)), 0o644);
    assert_eq!(mode(&setup.path("var/lib/troop")), 0o700);
    assert_eq!(mode(&setup.path("etc/troop/campaigns")), 0o750);
    assert_eq!(mode(&setup.path("etc/troop/troop.toml")), 0o640);
    assert!(!setup.exists("usr/bin/troop-agent"));
    assert!(!setup.exists("etc/troop/agent.toml"));

    // The example config, with the store in the state dir the service may write.
    let path = Path::new("/etc/troop/troop.toml");
    let config = CoordinatorConfig::parse(&setup.read("etc/troop/troop.toml"), path)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.store_url, "sqlite:///var/lib/troop/troop.db");
    assert_eq!(
        config.signing_key.as_deref(),
        Some(Path::new("/etc/troop/pki/signing.key"))
    );
}

#[test]
fn bad_arguments_and_missing_binaries_change_nothing() {
    let setup = Setup::new();
    let usage_errors: [&[&str]; 3] = [&["--purge"], &["--bogus"], &["--bin-dir"]];
    for args in usage_errors {
        let output = setup.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
    let empty = setup.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let output = setup.run(&["--bin-dir", empty.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("troop-agent"),
        "{output:?}"
    );
    assert!(setup.snapshot().is_empty(), "{:?}", setup.snapshot());
}

#[test]
fn the_skeleton_is_valid_as_shipped() {
    let path = repo().join("deploy/agent.toml.skeleton");
    let text = fs::read_to_string(&path).unwrap();
    let config = AgentConfig::parse(&text, Path::new("/etc/troop/agent.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.id, "change-me");
    assert_eq!(config.listen.unwrap().to_string(), "0.0.0.0:7443");
    assert_eq!(config.state_dir, Path::new("/var/lib/troop-agent"));
    assert_eq!(config.tls.cert, Path::new("/etc/troop/change-me.pem"));
    assert_eq!(config.tls.key, Path::new("/etc/troop/change-me.key"));
    assert_eq!(config.tls.ca, Path::new("/etc/troop/ca.pem"));
    assert_eq!(
        config.coordinator_keys,
        [Path::new("/etc/troop/signing.pub")]
    );
    assert_eq!(config.policy.disk_paths, [Path::new("/var/tmp/troop")]);
    assert!(!config.policy.allow.contains(&FaultKind::StopHost));
    assert!(config.policy.protected_processes.contains("sshd"));
    assert!(config.labels.values().all(|value| value == "change-me"));
}

#[test]
fn the_skeleton_filled_in_passes_the_agents_own_checks() {
    // What an operator does: the placeholders become this host's id, the paths point at
    // the files from `troop pki`, and the agent's validation (ExecStartPre) accepts it.
    let pki = TestPki::new(&["web-1"]);
    let fill = pki.dir.path().join("fill");
    fs::create_dir(&fill).unwrap();
    let text = fs::read_to_string(repo().join("deploy/agent.toml.skeleton"))
        .unwrap()
        .replace("change-me", "web-1")
        .replace("\"/etc/troop/", "\"pki/")
        .replace("\"/var/lib/troop-agent\"", "\"state\"")
        .replace(
            "\"/var/tmp/troop\"",
            &format!("{:?}", fill.to_str().unwrap()),
        );
    let path = pki.dir.path().join("agent.toml");
    let config = AgentConfig::parse(&text, &path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.id, "web-1");
    assert_eq!(config.tls.cert, pki.path("web-1.pem"));
    let found = troop_agent::validate(&config).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(found.trusted_keys, 1);
}

#[test]
fn the_cloud_init_template_enrols_with_a_valid_policy() {
    let text = fs::read_to_string(repo().join("deploy/cloud-init/agent-user-data.yaml")).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    // The literal block under `path: /etc/troop/policy.toml`, indented six spaces.
    let lines = text
        .lines()
        .skip_while(|line| line.trim() != "- path: /etc/troop/policy.toml")
        .skip_while(|line| line.trim() != "content: |")
        .skip(1);
    let mut policy = String::new();
    for line in lines {
        if !line.is_empty() && !line.starts_with("      ") {
            break;
        }
        policy.push_str(line.strip_prefix("      ").unwrap_or(line));
        policy.push('\n');
    }
    let parsed = troop_agent::enrol::parse_policy(&policy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parsed.allow.as_deref(),
        Some(&["kill", "cpu", "memory", "disk"].map(String::from)[..])
    );
    // The agent reads it as part of a config, as enroll writes it.
    let config = format!(
        "id = \"web-1\"\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n\
         [trust]\ncoordinator_keys = [\"signing-1.pub\"]\n{policy}"
    );
    AgentConfig::parse(&config, Path::new("/etc/troop/agent.toml"))
        .unwrap_or_else(|error| panic!("{error}\n{config}"));
    // It enrols, with the token out of `ps`, and no key ever travels in it.
    assert!(
        text.contains("TROOP_JOIN_TOKEN=\"{{ JOIN_TOKEN }}\" troop-agent"),
        "{text}"
    );
    assert!(text.contains("--policy /etc/troop/policy.toml"));
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(".key"),
        "a key in user-data"
    );
}

#[test]
fn enrolment_flags_are_checked_before_anything_is_installed() {
    let setup = Setup::new();
    for (args, token, says) in [
        (
            &["--enroll", "https://coord:7444", "--ca-sha256", "ab"][..],
            Some("troop-join-1.x"),
            "without DESTDIR",
        ),
        (&["--ca-sha256", "ab"][..], None, "only go with --enroll"),
        (&["--policy", "p.toml"][..], None, "only go with --enroll"),
        (
            &["--uninstall", "--enroll", "https://coord"][..],
            None,
            "only goes with an install",
        ),
    ] {
        let mut command = Command::new("bash");
        command
            .arg(setup.deploy.join("install.sh"))
            .arg("--no-start")
            .args(args)
            .env("DESTDIR", &setup.root)
            .current_dir(setup.dir.path());
        match token {
            Some(token) => command.env("TROOP_JOIN_TOKEN", token),
            None => command.env_remove("TROOP_JOIN_TOKEN"),
        };
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            setup.files().is_empty(),
            "{args:?} installed {:?}",
            setup.files()
        );
    }
    // Without DESTDIR, the token is asked for before root is: nothing runs without it.
    let output = Command::new("bash")
        .arg(setup.deploy.join("install.sh"))
        .args([
            "--no-start",
            "--enroll",
            "https://coord:7444",
            "--ca-sha256",
            "ab",
        ])
        .env_remove("DESTDIR")
        .env_remove("TROOP_JOIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TROOP_JOIN_TOKEN"));
}
