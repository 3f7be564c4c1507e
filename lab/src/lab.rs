//! A small lab of hosts on this machine: each a PID and mount namespace with its own
//! /proc, a size-capped tmpfs for disk faults, a real `troop-agent` process, and services
//! to attack; driven with the real `troop` CLI. Everything ends when the lab is dropped.
//!
//! Hosts are added one by one ([`Lab::add_host`]); after each, `troop.toml` lists the
//! whole fleet. Configs are typed values of the agent's and coordinator's own file shapes.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use troop_common::agent_file::Coordinators;
use troop_coordinator::config::OperatorFile;

use crate::files;
use crate::host::{HostSpec, LocalHost, can_make_hosts, free_port};
use crate::net::LabNet;
use crate::pki::Pki;

/// Size of each host's tmpfs.
pub const DISK_BYTES: u64 = 64 << 20;

pub struct LabHost {
    pub host: LocalHost,
    /// `ip:port` the coordinator dials.
    pub address: String,
    /// Where the host's tmpfs is mounted (inside the host; the same path on every host).
    pub disk: PathBuf,
    index: usize,
    netns: Option<String>,
    labels: BTreeMap<String, String>,
    config: PathBuf,
    services: Vec<Vec<OsString>>,
}

impl LabHost {
    /// The `troop-agent` process of the host, as this machine sees it (not one of its
    /// helpers, which run the same binary with a `__` subcommand).
    pub fn agent_pid(&self) -> Option<i32> {
        self.host
            .processes()
            .into_iter()
            .find(|p| p.name == "troop-agent" && !p.cmdline.iter().any(|a| a.starts_with("__")))
            .map(|p| p.pid)
    }

    /// The host's pid 1 as this machine sees it, after checking that its PID namespace
    /// is not the test's own: only then may anything on the host call reboot(2).
    pub fn checked_init(&self) -> i32 {
        let init = self.host.init_pid().expect("host is running");
        let theirs = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
        assert_ne!(
            theirs, ours,
            "refusing to stop a host in the test's own PID namespace"
        );
        init
    }

    /// The host's network namespace (`/run/netns/...`), in a networked lab.
    pub fn network_namespace(&self) -> Option<PathBuf> {
        self.netns
            .as_ref()
            .map(|name| Path::new("/run/netns").join(name))
    }

    /// statvfs of the host's tmpfs, read from outside: (used bytes, total bytes).
    pub fn disk_usage(&self) -> (u64, u64) {
        let path = self.host.path_inside(&self.disk).expect("host is running");
        let usage = troop_common::observe::usage(&path).expect("statvfs");
        (usage.used, usage.total)
    }
}

/// Whether a scenario that needs the lab must not be skipped (CI sets it).
fn required() -> bool {
    std::env::var_os("TROOP_LAB_REQUIRED").is_some_and(|v| v == "1")
}

/// Says why a scenario is skipped, or fails it where skipping is not allowed.
pub fn skip(scenario: &str, reason: &str) {
    assert!(
        !required(),
        "lab scenario {scenario:?} cannot run here ({reason}) and TROOP_LAB_REQUIRED=1"
    );
    eprintln!("SKIPPED {scenario}: {reason}");
}

/// Where the lab finds the two binaries it runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub troop: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// The workspace's own build, seen from a test or benchmark binary
    /// (`target/PROFILE/deps/NAME` → `target/PROFILE/`).
    pub fn built() -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let found = |name: &str| {
            let path = dir.join(name);
            assert!(
                path.exists(),
                "{} is not built; run the tests with `cargo test --workspace`",
                path.display()
            );
            path
        };
        Self {
            troop: found("troop"),
            agent: found("troop-agent"),
        }
    }
}

/// The environment that has a troop process export its spans to `endpoint` soon after
/// each ends (the batch processor's default is every 5 s).
fn otlp_env(endpoint: &str) -> [(&'static str, String); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
    ]
}

/// The hosts, then the network, then the files: fields drop in this order.
pub struct Lab {
    pub hosts: BTreeMap<String, LabHost>,
    pub net: Option<LabNet>,
    pub pki: Pki,
    pub binaries: Binaries,
    /// Hosts that dial out to `troop serve` and take no inbound connection: not listed
    /// in `troop.toml`, which is what serve's operators see them through.
    dial_in: std::collections::BTreeSet<String>,
    operators: Vec<OperatorFile>,
    /// Where serve, the CLI and agents started from now on export their spans (OTLP/gRPC
    /// on this port of the lab's gateway, or of loopback without a lab network).
    otlp_port: Option<u16>,
    /// Whether serve also serves its dashboard, on [`UI_PORT`].
    dashboard: bool,
    /// Whether serve enrols agents, and the lifetime of the certificates it issues.
    enrolment: Option<String>,
}

/// Where the lab's `troop serve` takes agents and operators, in the lab's network.
pub const SERVE_PORT: u16 = 7444;
/// Where the lab's `troop serve` serves its dashboard (plain HTTP on loopback), in the
/// lab's network, once [`Lab::serve_dashboard`] asked for it.
pub const UI_PORT: u16 = 7081;
/// Where each networked host's agent serves `/metrics`, on the host's own address.
pub const METRICS_PORT: u16 = 9464;

impl Lab {
    /// A lab on loopback (`networked: false`) or on a lab bridge with a network namespace
    /// per host (root only). Says why where this machine cannot make hosts.
    pub fn start(binaries: Binaries, networked: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
        Self::start_in(dir, binaries, networked)
    }

    /// As [`Lab::start`], in `dir` (removed with the lab).
    pub fn start_in(
        dir: tempfile::TempDir,
        binaries: Binaries,
        networked: bool,
    ) -> Result<Self, String> {
        can_make_hosts()?;
        if networked && !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        Ok(Self {
            hosts: BTreeMap::new(),
            net: networked.then(LabNet::create),
            pki: Pki::new_in(dir, &[]),
            binaries,
            dial_in: Default::default(),
            operators: Vec::new(),
            otlp_port: None,
            dashboard: false,
            enrolment: None,
        })
    }

    /// A lab: as root every host gets its own network namespace on a lab bridge; without
    /// root, hosts share loopback (in user namespaces, where the kernel allows them).
    /// `None` (the reason printed) where no hosts can be made at all.
    pub fn new(scenario: &str) -> Option<Self> {
        if let Err(reason) = can_make_hosts() {
            assert!(
                !nix::unistd::geteuid().is_root(),
                "as root, hosts must work: {reason}"
            );
            skip(scenario, &reason);
            return None;
        }
        let networked = nix::unistd::geteuid().is_root();
        Some(Self::start(Binaries::built(), networked).expect("lab"))
    }

    /// A lab whose hosts have their own network (partitions need it), or `None` with the
    /// scenario reported as skipped.
    pub fn networked(scenario: &str) -> Option<Self> {
        let lab = Self::new(scenario)?;
        if lab.net.is_none() {
            skip(scenario, "needs network namespaces, which need root");
            return None;
        }
        Some(lab)
    }

    pub fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    /// Adds a host running `troop-agent` with `labels` and `policy` (TOML lines of
    /// `[policy]`), running `services`, and waits until the coordinator reaches it.
    pub fn add_host(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        policy: &str,
        services: Vec<Vec<OsString>>,
    ) {
        self.start_host(id, labels, policy, services);
        self.wait_reachable(id);
    }

    /// Adds a host as [`Lab::add_host`] does, without waiting for its agent to answer.
    pub fn start_host(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        policy: &str,
        services: Vec<Vec<OsString>>,
    ) {
        self.start_host_dialling(id, labels, policy, services, None);
    }

    /// Adds a host behind a firewall that drops every inbound connection (nftables in
    /// the host's own network namespace; outbound allowed), whose agent dials out to the
    /// lab's `troop serve` (and still listens, so a direct dial shows the firewall).
    /// Not listed in `troop.toml`: operators reach it through serve. Needs a networked lab.
    pub fn start_dial_in_host(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        policy: &str,
        services: Vec<Vec<OsString>>,
    ) {
        let serve = format!("https://{}:{SERVE_PORT}", crate::net::GATEWAY);
        self.start_dial_in_host_to(id, labels, policy, services, &[serve]);
    }

    /// As [`Lab::start_dial_in_host`], dialling `coordinators` (URLs, tried in turn) instead
    /// of the lab's one serve: replicas of serve on other ports.
    pub fn start_dial_in_host_to(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        policy: &str,
        services: Vec<Vec<OsString>>,
        coordinators: &[String],
    ) {
        assert!(self.net.is_some(), "dial-in hosts need a networked lab");
        self.dial_in.insert(id.to_string());
        self.start_host_dialling(id, labels, policy, services, Some(coordinators));
    }

    fn start_host_dialling(
        &mut self,
        id: &str,
        labels: &[(&str, &str)],
        policy: &str,
        services: Vec<Vec<OsString>>,
        serve: Option<&[String]>,
    ) {
        let index = self.hosts.len();
        let (netns, ip, port) = match &mut self.net {
            Some(net) => {
                let (ns, ip) = net.add_host(index);
                (Some(ns), ip, 7443)
            }
            None => (
                None,
                "127.0.0.1".to_string(),
                free_port().expect("free port"),
            ),
        };
        self.pki.issue_agent(id, &[]);
        let address = format!("{ip}:{port}");
        let labels = files::labels(labels);
        // The same path on every host, as a fleet would have it; each host mounts its own
        // tmpfs there in its own mount namespace.
        let disk = self.dir().join("disk");
        let mut policy = files::policy(policy);
        policy.disk_paths.push(disk.clone());
        let config = self.dir().join(format!("{id}.toml"));
        let mut agent = files::agent_file(id, &address, &labels, policy);
        if netns.is_some() {
            // Each networked host has its own address, so one port serves them all.
            agent.metrics_listen = Some(format!("{ip}:{METRICS_PORT}"));
        }
        if let Some(serve) = serve {
            agent.coordinator = Some(match serve {
                [one] => Coordinators::One(one.clone()),
                many => Coordinators::Many(many.to_vec()),
            });
            let ns = netns.as_deref().expect("a networked host");
            crate::net::drop_inbound(ns);
        }
        files::write(&config, &agent).expect("write agent config");
        let host = self.launch(id, &config, &disk, &services, netns.as_deref());
        self.hosts.insert(
            id.to_string(),
            LabHost {
                host,
                address,
                disk,
                index,
                netns,
                labels,
                config,
                services,
            },
        );
        self.write_coordinator_config();
    }

    fn launch(
        &self,
        id: &str,
        config: &Path,
        disk: &Path,
        services: &[Vec<OsString>],
        netns: Option<&str>,
    ) -> LocalHost {
        let mut agent: Vec<OsString> = Vec::new();
        if let Some(port) = self.otlp_port {
            let collector = match &self.net {
                Some(_) => crate::net::GATEWAY,
                None => "127.0.0.1",
            };
            agent.push("env".into());
            agent.extend(
                otlp_env(&format!("http://{collector}:{port}"))
                    .map(|(key, value)| format!("{key}={value}").into()),
            );
        }
        agent.extend([
            self.binaries.agent.clone().into(),
            "--config".into(),
            config.into(),
        ]);
        let log = self.dir().join(format!("{id}.log"));
        LocalHost::start_spec(&HostSpec {
            name: id,
            agent: &agent,
            services,
            tmpfs: Some((disk.to_path_buf(), DISK_BYTES)),
            netns,
            log: &log,
        })
        .unwrap()
    }

    /// Adds a dial-in host (inbound dropped, as [`Lab::start_dial_in_host`]) that has the
    /// agent binary and nothing else: no key, certificate or config, which
    /// `troop-agent enroll` is to write to [`Lab::enrolment_dir`]. Its agent is started
    /// with [`Lab::spawn_agent`]. Needs a networked lab.
    pub fn start_bare_host(&mut self, id: &str, services: Vec<Vec<OsString>>) {
        let index = self.hosts.len();
        let net = self.net.as_mut().expect("bare hosts need a networked lab");
        let (netns, ip) = net.add_host(index);
        crate::net::drop_inbound(&netns);
        self.dial_in.insert(id.to_string());
        let dir = self.enrolment_dir(id);
        std::fs::create_dir_all(&dir).expect("enrolment dir");
        let disk = self.dir().join("disk");
        let log = self.dir().join(format!("{id}.log"));
        let idle: Vec<OsString> = vec!["sleep".into(), "infinity".into()];
        let host = LocalHost::start_spec(&HostSpec {
            name: id,
            agent: &idle,
            services: &services,
            tmpfs: Some((disk.clone(), DISK_BYTES)),
            netns: Some(&netns),
            log: &log,
        })
        .unwrap();
        self.hosts.insert(
            id.to_string(),
            LabHost {
                host,
                address: format!("{ip}:7443"),
                disk,
                index,
                netns: Some(netns),
                labels: BTreeMap::new(),
                config: dir.join("agent.toml"),
                services,
            },
        );
        self.write_coordinator_config();
    }

    /// Where a bare host's enrolment writes its config (`agent.toml`) and files.
    pub fn enrolment_dir(&self, id: &str) -> PathBuf {
        self.dir().join("enrolled").join(id)
    }

    /// Starts the host's agent with its config (as [`Lab::restart_agent`], without
    /// waiting), its log appended to the host's.
    pub fn spawn_agent(&self, id: &str) -> std::process::Child {
        let host = &self.hosts[id];
        let argv: Vec<OsString> = vec![
            self.binaries.agent.clone().into(),
            "--config".into(),
            host.config.clone().into(),
        ];
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir().join(format!("{id}.log")))
            .unwrap();
        host.host
            .command_inside(&argv)
            .expect("host is running")
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Powers a stopped host on again: a new PID namespace, the same network, config
    /// and state dir.
    pub fn power_on(&mut self, id: &str) {
        let old = &self.hosts[id];
        let host = self.launch(
            id,
            &old.config,
            &old.disk,
            &old.services,
            old.netns.as_deref(),
        );
        self.hosts.get_mut(id).unwrap().host = host;
        self.wait_reachable(id);
    }

    /// Cuts a host off the network (`false`) or heals it (`true`).
    pub fn set_connected(&self, id: &str, connected: bool) {
        let net = self.net.as_ref().expect("partitions need a networked lab");
        net.set_connected(self.hosts[id].index, connected);
    }

    /// The lab's own network namespace (where the coordinator is), in a networked lab.
    pub fn network_namespace(&self) -> Option<PathBuf> {
        self.net
            .as_ref()
            .map(|net| Path::new("/run/netns").join(&net.ns))
    }

    /// Moves the calling thread into the lab's network, so sockets it opens reach the
    /// hosts by address (a no-op for loopback labs). For single-threaded async tests.
    pub fn enter_network(&self) {
        if let Some(net) = &self.net {
            let file = std::fs::File::open(format!("/run/netns/{}", net.ns)).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        }
    }

    /// Starts the host's agent again inside the same host (same tmpfs, config and state
    /// dir), as systemd would after a crash; waits until it answers.
    pub fn restart_agent(&self, id: &str) -> std::process::Child {
        let child = self.spawn_agent(id);
        self.wait_reachable(id);
        child
    }

    /// Runs `argv` inside the host (its PID, mount and network namespaces).
    pub fn run_inside(&self, id: &str, argv: &[&str]) -> Output {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        self.hosts[id]
            .host
            .command_inside(&argv)
            .expect("host is running")
            .output()
            .unwrap()
    }

    /// The agent's log so far, for failure messages.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("{id}.log"))).unwrap_or_default()
    }

    fn write_coordinator_config(&self) {
        let agents = self
            .hosts
            .iter()
            .filter(|(id, _)| !self.dial_in.contains(*id))
            .map(|(id, host)| (id.as_str(), host.address.as_str(), &host.labels));
        let mut config = files::coordinator_file(agents);
        config.operators = self.operators.clone();
        let serve = config.serve.get_or_insert_default();
        if self.dashboard {
            serve.ui_listen = Some(format!("127.0.0.1:{UI_PORT}"));
        }
        if let Some(lifetime) = &self.enrolment {
            serve.ca_key = Some(self.pki.path("ca.key"));
            serve.agent_certificate_lifetime = Some(lifetime.clone());
        }
        files::write(&self.dir().join("troop.toml"), &config).expect("write troop.toml");
    }

    /// Has the lab's serve (started from now on) enrol agents with join tokens, issuing
    /// certificates that last `lifetime` (e.g. `30d`, or `90s` to watch renewals).
    pub fn serve_enrolment(&mut self, lifetime: &str) {
        self.enrolment = Some(lifetime.to_string());
        self.write_coordinator_config();
    }

    /// Has the lab's serve (started from now on) serve its dashboard on [`UI_PORT`].
    pub fn serve_dashboard(&mut self) {
        self.dashboard = true;
        self.write_coordinator_config();
    }

    /// A dashboard sign-in token for `name`, from `troop pki operator-token` on the serve
    /// host (the key troop.toml names).
    pub fn operator_token(&self, name: &str) -> String {
        let output = self
            .troop_command()
            .args(["pki", "operator-token", "--name", name, "--ttl", "1h"])
            .output()
            .expect("troop pki operator-token");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Issues an operator certificate for `name`, lists it in serve's `[[operators]]`
    /// with `role` (unlisted for `None`), and writes `NAME.toml`, a CLI config that goes
    /// through the lab's serve. Returns that config's path.
    pub fn add_operator(&mut self, name: &str, role: Option<&str>) -> PathBuf {
        troop_coordinator::pki::issue_operator(&self.pki.path(""), name, 30)
            .expect("pki issue-operator");
        if let Some(role) = role {
            self.operators.push(OperatorFile {
                name: name.to_string(),
                role: role.to_string(),
            });
        }
        self.write_coordinator_config();
        let path = self.dir().join(format!("{name}.toml"));
        files::write(
            &path,
            &files::operator_file(name, &format!("https://127.0.0.1:{SERVE_PORT}")),
        )
        .expect("write operator config");
        path
    }

    /// Has serve, the CLI and the agents started from now on export their spans to an
    /// OTLP/gRPC collector listening on `port` of the lab's network (its gateway address,
    /// which is loopback inside the lab's namespace).
    pub fn export_traces_to(&mut self, port: u16) {
        self.otlp_port = Some(port);
    }

    /// The `troop` CLI as the coordinator runs it: inside the lab's network.
    pub fn troop_command(&self) -> Command {
        self.troop_command_run_by(None)
    }

    /// The `troop` CLI as [`Self::troop_command`] runs it, killed with the thread that
    /// starts it: for `troop serve`, which must not outlive a test or bench that is killed
    /// outright, when no guard is dropped (the lab's hosts end the same way).
    pub fn troop_command_ending_with_this_thread(&self) -> Command {
        self.troop_command_run_by(Some(crate::host::ending_with_this_thread()))
    }

    /// The `troop` CLI inside the lab's network, run by `launcher` if any (a program that
    /// execs onwards, so the child's pid is troop's).
    fn troop_command_run_by(&self, launcher: Option<Command>) -> Command {
        let mut words: Vec<&OsStr> = Vec::new();
        if let Some(net) = &self.net {
            words.extend(net.exec_words().map(OsStr::new));
        }
        words.push(self.binaries.troop.as_os_str());
        let mut command = match launcher {
            Some(mut launcher) => {
                launcher.args(&words);
                launcher
            }
            None => {
                let mut command = Command::new(words[0]);
                command.args(&words[1..]);
                command
            }
        };
        command.current_dir(self.dir());
        if let Some(port) = self.otlp_port {
            command.envs(otlp_env(&format!("http://127.0.0.1:{port}")));
        }
        command
    }

    /// Starts `troop serve` in the lab's network, its log (level info) appended to
    /// `serve.log`; it ends when the guard is dropped.
    pub fn start_serve(&self) -> Reaped {
        self.start_serve_with(&self.dir().join("troop.toml"), "serve.log")
    }

    /// Starts `troop serve` with `config` (a replica's), its log appended to `log` in the
    /// lab's directory.
    pub fn start_serve_with(&self, config: &Path, log: &str) -> Reaped {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(log))
            .unwrap();
        Reaped(
            self.troop_command_ending_with_this_thread()
                .arg("--config")
                .arg(config)
                .arg("serve")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// What `troop serve` logged so far, for failure messages.
    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("serve.log")).unwrap_or_default()
    }

    /// `troop agents --output json` as the operator whose config is `config` (through
    /// serve); `Null` when it printed no JSON.
    pub fn agents_as(&self, config: &Path) -> Value {
        let output = self.troop_as(config, &["agents", "--output", "json"]);
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// Whether serve shows agent `id` reachable, asked as the operator of `config`.
    pub fn reachable_as(&self, config: &Path, id: &str) -> bool {
        agent_entry(&self.agents_as(config), id).is_some_and(|a| a["reachable"] == true)
    }

    /// Runs the `troop` CLI with another config (an operator's).
    pub fn troop_as(&self, config: &Path, args: &[&str]) -> Output {
        self.troop_command()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts the `troop` CLI in the background, its output discarded (attached attacks,
    /// `serve`).
    pub fn spawn_troop(&self, args: &[&str]) -> std::process::Child {
        self.troop_command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs the `troop` CLI against this lab.
    pub fn troop(&self, args: &[&str]) -> Output {
        self.troop_command().args(args).output().unwrap()
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

    /// `troop agents` for one agent: its JSON entry.
    pub fn status(&self, id: &str) -> Value {
        let (_, value) = self.troop_json(&["agents"]);
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

/// A child process killed and reaped when dropped (serve, a restarted agent).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command's stdout and stderr, for assertions and failure messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// How full a host's tmpfs is, in percent, read from outside by statvfs.
pub fn used_percent(lab: &Lab, id: &str) -> f64 {
    let (used, total) = lab.hosts[id].disk_usage();
    used as f64 * 100.0 / total as f64
}

/// The entry for agent `id` in a `troop agents --output json` listing.
pub fn agent_entry<'a>(agents: &'a Value, id: &str) -> Option<&'a Value> {
    agents["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent"] == id)
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
    troop_common::observe::cpu_seconds(pid).expect("process is running")
}

/// The agent's CPU burner threads (`troop-cpu-N`), from /proc/PID/task.
pub fn burner_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|comm| comm.starts_with("troop-cpu"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Resident memory of a process, from /proc/PID/status.
pub fn resident_bytes(pid: i32) -> Option<u64> {
    troop_common::observe::resident_bytes(pid as u32)
}
