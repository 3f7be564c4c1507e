//! troop on a real systemd host, installed the way an operator would: a Debian root
//! filesystem (debootstrap, cached), booted with systemd-nspawn as its own PID 1 in a lab
//! network namespace, the agent's .deb installed inside, the agent started by
//! `systemctl`; then a coordinator outside kills a service inside and stops the host.
//!
//! Needs root, debootstrap, systemd-nspawn and the .deb (`cargo deb -p troop-agent`, which
//! `.ci/run` builds); elsewhere it reports itself skipped (CI refuses skips).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use troop_lab::host::ending_with_this_thread;
use troop_tests::lab::{skip, wait_for};
use troop_tests::net::LabNet;
use troop_tests::{TestPki, binary};

const SCENARIO: &str = "systemd host";

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent's .deb: the one `cargo deb` built; where none is built and the lab is
/// required (CI), built here (once per test process), failing if it cannot be.
fn agent_deb_or_build() -> Option<PathBuf> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let required = std::env::var_os("TROOP_LAB_REQUIRED").is_some_and(|v| v == "1");
    if agent_deb().is_none() && required {
        let status = Command::new("cargo")
            .args(["deb", "--locked", "-p", "troop-agent"])
            .current_dir(repo())
            .status()
            .expect(
                "TROOP_LAB_REQUIRED=1 and no .deb: `cargo deb` must run (cargo install cargo-deb)",
            );
        assert!(
            status.success(),
            "TROOP_LAB_REQUIRED=1 and `cargo deb -p troop-agent` failed"
        );
    }
    agent_deb()
}

/// The agent's .deb from `cargo deb`, if built.
fn agent_deb() -> Option<PathBuf> {
    let dir = repo().join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("troop-agent_") && name.ends_with(".deb"))
        })
        .max()
}

/// A bookworm root filesystem, made once and kept in a cache directory.
fn cached_rootfs() -> PathBuf {
    let cache = std::env::var_os("TROOP_ROOTFS_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/troop-lab"), PathBuf::from);
    let rootfs = cache.join("bookworm");
    if !rootfs.join("usr/lib/systemd/systemd").exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let staging = cache.join("bookworm-staging");
        let _ = std::fs::remove_dir_all(&staging);
        run(
            "debootstrap",
            &[
                "--variant=minbase",
                "--include=systemd,systemd-sysv,dbus,procps",
                "bookworm",
                staging.to_str().unwrap(),
                "http://deb.debian.org/debian",
            ],
        );
        std::fs::rename(&staging, &rootfs).unwrap();
    }
    rootfs
}

/// The booted container; dropping it ends it.
struct Container {
    nspawn: Child,
}

impl Container {
    /// The container's PID 1 (its systemd), as this machine sees it.
    fn leader(&self) -> Option<i32> {
        let nspawn = self.nspawn.id() as i32;
        let table = troop_agent::host::process::LinuxProcessTable;
        use troop_agent::host::process::ProcessTable;
        let processes = table.list().ok()?;
        let mut frontier = vec![nspawn];
        while let Some(parent) = frontier.pop() {
            for process in processes.iter().filter(|p| p.ppid == parent) {
                if process.name == "systemd" {
                    return Some(process.pid);
                }
                frontier.push(process.pid);
            }
        }
        None
    }

    fn inside(&self, args: &[&str]) -> std::process::Output {
        let leader = self.leader().expect("container running").to_string();
        Command::new("nsenter")
            .args(["-t", &leader, "-a", "--"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ended(&mut self) -> bool {
        self.nspawn.try_wait().unwrap().is_some()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

#[test]
fn the_deb_on_a_systemd_host_serves_a_kill_and_a_stop() {
    let missing: Vec<&str> = ["debootstrap", "systemd-nspawn", "nsenter"]
        .into_iter()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| !o.status.success())
        })
        .collect();
    if !nix::unistd::geteuid().is_root() || !missing.is_empty() {
        return skip(SCENARIO, &format!("needs root and {missing:?}"));
    }
    let Some(deb) = agent_deb_or_build() else {
        return skip(
            SCENARIO,
            "no target/debian/troop-agent_*.deb (run `cargo deb -p troop-agent`)",
        );
    };
    let rootfs = cached_rootfs();
    let pki = TestPki::new(&["box-1"]);
    let root = pki.dir.path().join("root");
    run(
        "cp",
        &["-a", rootfs.to_str().unwrap(), root.to_str().unwrap()],
    );

    // Install the .deb inside, as an operator would.
    std::fs::copy(&deb, root.join("tmp/troop-agent.deb")).unwrap();
    run(
        "chroot",
        &[root.to_str().unwrap(), "dpkg", "-i", "/tmp/troop-agent.deb"],
    );
    assert!(root.join("usr/bin/troop-agent").exists());
    assert!(root.join("lib/systemd/system/troop-agent.service").exists());

    // The host's identity and config, and a service to attack.
    let mut net = LabNet::create();
    let (host_ns, address) = net.add_host(0);
    let etc = root.join("etc/troop");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("signing.pub", "signing.pub"),
        ("box-1.pem", "box-1.pem"),
        ("box-1.key", "box-1.key"),
    ] {
        std::fs::copy(pki.path(from), etc.join(to)).unwrap();
    }
    // The packaged unit's defaults: the state dir is systemd's, paths next to agent.toml.
    let mut agent = troop_lab::files::agent_file(
        "box-1",
        &format!("{address}:7443"),
        &troop_lab::files::labels(&[("role", "box")]),
        troop_lab::files::policy("allow = [\"kill\", \"stop-host\"]"),
    );
    agent.state_dir = None;
    agent.tls.cert = "box-1.pem".into();
    agent.tls.key = "box-1.key".into();
    agent.tls.ca = "ca.pem".into();
    agent.trust.coordinator_keys = vec!["signing.pub".into()];
    troop_lab::files::write(&etc.join("agent.toml"), &agent).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/victim.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/victim.service",
        wants.join("victim.service"),
    )
    .unwrap();

    // Boot it: systemd as PID 1, in the lab network.
    let mut container = Container {
        nspawn: ending_with_this_thread()
            .args(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--network-namespace-path=/run/netns/{host_ns}"))
            .arg("-D")
            .arg(&root)
            .arg("-b")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    let booted = wait_for(Duration::from_secs(60), || {
        container.leader().is_some_and(|_| {
            let state = container.inside(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout);
            state.starts_with("running") || state.starts_with("degraded")
        })
    });
    assert!(booted, "the container did not boot");

    // The agent, started by systemctl, passes its ExecStartPre validate and notifies.
    let started = container.inside(&["systemctl", "start", "troop-agent"]);
    let status = container.inside(&["systemctl", "status", "--no-pager", "troop-agent"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // The coordinator, outside, in the lab network.
    let troop_toml = pki.dir.path().join("troop.toml");
    std::fs::write(
        &troop_toml,
        format!(
            "[signing]\nkey = \"pki/signing.key\"\n[tls]\ncert = \"pki/coordinator.pem\"\nkey = \"pki/coordinator.key\"\nca = \"pki/ca.pem\"\n\
             [[agents]]\nid = \"box-1\"\naddress = \"{address}:7443\"\nlabels = {{ role = \"box\" }}\n"
        ),
    )
    .unwrap();
    let troop = |args: &[&str]| {
        net.command(&binary("troop"))
            .current_dir(pki.dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let victim_pid = || {
        let out = container.inside(&["systemctl", "show", "-p", "MainPID", "--value", "victim"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = victim_pid();
    assert_ne!(before, "0", "victim not running");
    let killed = troop(&[
        "attack", "kill", "--select", "role=box", "--name", "sleep", "--output", "json",
    ]);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stdout)
    );
    assert!(
        wait_for(Duration::from_secs(10), || victim_pid() != before),
        "victim not killed"
    );

    let stopped = troop(&[
        "attack",
        "stop-host",
        "--select",
        "role=box",
        "--mode",
        "poweroff",
        "--output",
        "json",
    ]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stdout)
    );
    assert!(
        wait_for(Duration::from_secs(30), || container.ended()),
        "the container is still running"
    );
    net.set_connected(0, false);
}

#[test]
fn the_agent_deb_holds_the_binary_the_unit_and_its_conffile() {
    let Some(deb) = agent_deb_or_build() else {
        return skip(
            "agent .deb contents",
            "no target/debian/troop-agent_*.deb (run `cargo deb -p troop-agent`)",
        );
    };
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/troop-agent",
        "./lib/systemd/system/troop-agent.service",
        "./etc/troop/agent.toml",
    ] {
        assert!(
            listing.contains(path),
            "{path} missing from the .deb:\n{listing}"
        );
    }
    let conffiles = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/troop/agent.toml"
    );
}
