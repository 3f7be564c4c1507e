//! A small lab of hosts on this machine: each a PID and mount namespace with its own
//! /proc, a size-capped tmpfs for disk faults, a real `troop-agent` process, and services
//! to attack; driven with the real `troop` CLI. Everything ends when the lab is dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use troop_coordinator::local_fleet::{HostSpec, LocalHost, can_make_hosts, free_port};

use crate::{TestPki, binary};

/// Size of each host's tmpfs.
pub const DISK_BYTES: u64 = 64 << 20;

pub struct LabHost {
    pub host: LocalHost,
    pub port: u16,
    /// Where the host's tmpfs is mounted (inside the host).
    pub disk: PathBuf,
    config: PathBuf,
    services: Vec<Vec<OsString>>,
}

impl LabHost {
    /// The `troop-agent` process of the host, as this machine sees it.
    pub fn agent_pid(&self) -> Option<i32> {
        self.host
            .processes()
            .into_iter()
            .find(|p| p.name == "troop-agent")
            .map(|p| p.pid)
    }

    /// statvfs of the host's tmpfs, read from outside: (used bytes, total bytes).
    pub fn disk_usage(&self) -> (u64, u64) {
        let path = self.host.path_inside(&self.disk).expect("host is running");
        let usage = troop_agent::host::disk::usage(&path).expect("statvfs");
        (usage.used, usage.total)
    }
}

pub struct Lab {
    pub pki: TestPki,
    pub hosts: BTreeMap<String, LabHost>,
}

impl Lab {
    /// A lab, or `None` (the reason printed) where PID namespaces cannot be made; as
    /// root that is a failure, not a skip.
    pub fn new() -> Option<Self> {
        if let Err(reason) = can_make_hosts() {
            assert!(
                !nix::unistd::geteuid().is_root(),
                "as root, hosts must work: {reason}"
            );
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        Some(Self {
            pki: TestPki::new(&[]),
            hosts: BTreeMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    /// Adds a host running `troop-agent` with `policy` (TOML lines of `[policy]`).
    pub fn add_host(&mut self, id: &str, role: &str, policy: &str, services: Vec<Vec<OsString>>) {
        troop_coordinator::pki::issue_agent(&self.dir().join("pki"), id, &["127.0.0.1".into()])
            .unwrap();
        let disk = self.dir().join(format!("{id}-disk"));
        let config = self.dir().join(format!("{id}.toml"));
        let port = free_port().unwrap();
        std::fs::write(
            &config,
            format!(
                "id = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state/{id}\"\nlabels = {{ role = \"{role}\" }}\n\
                 [tls]\ncert = \"pki/{id}.pem\"\nkey = \"pki/{id}.key\"\nca = \"pki/ca.pem\"\n\
                 [trust]\ncoordinator_keys = [\"pki/signing.pub\"]\n\
                 [policy]\ndisk_paths = [\"{}\"]\n{policy}\n",
                disk.display()
            ),
        )
        .unwrap();
        let host = self.launch(id, &config, &disk, &services);
        self.hosts.insert(
            id.to_string(),
            LabHost {
                host,
                port,
                disk,
                config,
                services,
            },
        );
        self.write_coordinator_config();
        self.wait_reachable(id);
    }

    fn launch(
        &self,
        id: &str,
        config: &Path,
        disk: &Path,
        services: &[Vec<OsString>],
    ) -> LocalHost {
        let agent: Vec<OsString> = vec![
            binary("troop-agent").into(),
            "--config".into(),
            config.into(),
        ];
        let log = self.dir().join(format!("{id}.log"));
        LocalHost::start_spec(&HostSpec {
            name: id,
            agent: &agent,
            services,
            tmpfs: Some((disk.to_path_buf(), DISK_BYTES)),
            log: &log,
        })
        .unwrap()
    }

    /// Powers a stopped host on again: a new namespace, the same config and state dir.
    pub fn power_on(&mut self, id: &str) {
        let (config, disk, services) = {
            let host = &self.hosts[id];
            (
                host.config.clone(),
                host.disk.clone(),
                host.services.clone(),
            )
        };
        let host = self.launch(id, &config, &disk, &services);
        self.hosts.get_mut(id).unwrap().host = host;
        self.wait_reachable(id);
    }

    /// The agent's log so far, for failure messages.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("{id}.log"))).unwrap_or_default()
    }

    fn write_coordinator_config(&self) {
        let mut text = String::from(
            "[signing]\nkey = \"pki/signing.key\"\n[tls]\ncert = \"pki/coordinator.pem\"\nkey = \"pki/coordinator.key\"\nca = \"pki/ca.pem\"\n",
        );
        for (id, host) in &self.hosts {
            let role = std::fs::read_to_string(&host.config)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("labels = ").map(str::to_string))
                .unwrap();
            text.push_str(&format!(
                "[[agents]]\nid = \"{id}\"\naddress = \"127.0.0.1:{}\"\nlabels = {role}\n",
                host.port
            ));
        }
        std::fs::write(self.dir().join("troop.toml"), text).unwrap();
    }

    /// Runs the `troop` CLI against this lab.
    pub fn troop(&self, args: &[&str]) -> Output {
        Command::new(binary("troop"))
            .current_dir(self.dir())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `troop ... --output json` and parses what it printed.
    pub fn troop_json(&self, args: &[&str]) -> (Option<i32>, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.troop(&all);
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "troop {args:?}: not JSON ({error}): {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), value)
    }

    /// `troop status` for one agent: its JSON entry.
    pub fn status(&self, id: &str) -> Value {
        let (_, value) = self.troop_json(&["agents", "--select", ""]);
        value["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent"] == id)
            .cloned()
            .unwrap()
    }

    pub fn wait_reachable(&self, id: &str) {
        let reachable = wait_for(Duration::from_secs(20), || {
            self.status(id)["reachable"] == true
        });
        assert!(reachable, "{id} not reachable; its log:\n{}", self.log(id));
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) of a process, from /proc/PID/stat.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    ticks as f64 / hz
}

/// Resident memory of a process, from /proc/PID/status.
pub fn resident_bytes(pid: i32) -> Option<u64> {
    troop_agent::host::process::resident_bytes(pid as u32)
}
