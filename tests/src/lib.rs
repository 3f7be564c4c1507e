//! Helpers for troop's integration tests: a throwaway PKI, agents in this process on
//! real mutual-TLS sockets, gRPC clients with chosen (and wrong) credentials, victim
//! processes the tests start themselves, and the workspace's built binaries.
#![forbid(unsafe_code)]

pub mod fuzz;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use troop_agent::Agent;
use troop_agent::config::AgentConfig;
use troop_common::tls::{load_certs, load_key, provider, root_store};
use troop_coordinator::client::{DialError, Dialer};
use troop_coordinator::dispatch::CONNECT_TIMEOUT;
use troop_proto::freshness::DEFAULT_VALIDITY;
use troop_proto::pb;
use troop_proto::pb::agent_client::AgentClient;

pub use troop_lab::Pki as TestPki;
pub use troop_lab::{lab, net};

/// Agent configs for in-process agents of a [`TestPki`].
pub trait AgentConfigs {
    /// A minimal agent config for `id` on a free loopback port, trusting this PKI's
    /// signing key; `policy` holds `[policy]` lines.
    fn agent_config(&self, id: &str, policy: &str) -> AgentConfig;
}

impl AgentConfigs for TestPki {
    fn agent_config(&self, id: &str, policy: &str) -> AgentConfig {
        let mut file = troop_lab::files::agent_file(
            id,
            "127.0.0.1:0",
            &Default::default(),
            troop_lab::files::policy(policy),
        );
        file.state_dir = Some(format!("state-{id}").into());
        let text = toml::to_string(&file).unwrap();
        AgentConfig::parse(&text, &self.dir.path().join(format!("{id}.toml"))).unwrap()
    }
}

/// An agent serving in this process on a loopback port.
pub struct RunningAgent {
    pub address: std::net::SocketAddr,
    pub id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningAgent {
    pub async fn start(config: AgentConfig) -> Self {
        let id = config.id.clone();
        // Helpers (memory holder, fill guard) come from the real agent binary: this test
        // binary cannot be one.
        let processes = Arc::new(troop_agent::host::process::LinuxProcessTable);
        let agent = Agent::with_host(config, processes, binary("troop-agent")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            agent
                .serve(Some(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            address,
            id,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the agent has let go of its state.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Client credentials to try against an agent.
pub enum Credentials<'a> {
    /// The coordinator's certificate from this PKI.
    Coordinator(&'a TestPki),
    /// Trusts the agent's CA but presents no client certificate.
    NoClientCert(&'a TestPki),
    /// A client certificate from a different CA.
    OtherCa {
        agent_ca: &'a TestPki,
        other: &'a TestPki,
    },
    /// Another agent's certificate (same CA), presented as a client certificate.
    AgentCert { pki: &'a TestPki, agent: &'a str },
    /// The coordinator's certificate, but offering only TLS 1.2.
    Tls12Only(&'a TestPki),
}

/// Opens a gRPC channel to `address` over TLS with `credentials`, expecting the server
/// to be `server_name`: the coordinator's own dialer with the identity swapped.
pub async fn connect(
    address: std::net::SocketAddr,
    server_name: &str,
    credentials: Credentials<'_>,
) -> Result<AgentClient<Channel>, DialError> {
    let builder = |ca: &TestPki, version: &'static rustls::SupportedProtocolVersion| {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(root_store(&ca.path("ca.pem")).unwrap())
    };
    let identity = |pki: &TestPki, name: &str| {
        (
            load_certs(&pki.path(&format!("{name}.pem"))).unwrap(),
            load_key(&pki.path(&format!("{name}.key"))).unwrap(),
        )
    };
    let tls13 = &rustls::version::TLS13;
    let (builder, identity) = match credentials {
        Credentials::Coordinator(pki) => (builder(pki, tls13), Some(identity(pki, "coordinator"))),
        Credentials::NoClientCert(pki) => (builder(pki, tls13), None),
        Credentials::OtherCa { agent_ca, other } => (
            builder(agent_ca, tls13),
            Some(identity(other, "coordinator")),
        ),
        Credentials::AgentCert { pki, agent } => (builder(pki, tls13), Some(identity(pki, agent))),
        Credentials::Tls12Only(pki) => (
            builder(pki, &rustls::version::TLS12),
            Some(identity(pki, "coordinator")),
        ),
    };
    let mut config = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Dialer::with_config(config, CONNECT_TIMEOUT)
        .dial_at(&address.to_string(), server_name)
        .await
}

/// For a bench run as `cargo bench ... -- PART...`: whether `part` was asked for (every
/// part is when none is named).
pub fn bench_wants() -> impl Fn(&str) -> bool {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |part| only.is_empty() || only.iter().any(|o| o == part)
}

pub fn now_ms() -> i64 {
    troop_coordinator::signer::now_unix_ms()
}

/// A fresh, valid command for `agent_id`.
pub fn command(agent_id: &str, action: pb::command::Action) -> pb::Command {
    troop_coordinator::signer::new_command(agent_id, action, DEFAULT_VALIDITY)
}

/// The action that kills `pid` with SIGKILL.
pub fn kill_pid(pid: i32) -> pb::command::Action {
    kill(pb::process_match::By::Pid(pid), 9, false)
}

pub fn kill(by: pb::process_match::By, signal: i32, all_matches: bool) -> pb::command::Action {
    pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms: 0,
        fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
            target: Some(pb::ProcessMatch { by: Some(by) }),
            signal,
            all_matches,
            repeat_every_ms: 0,
        })),
    })
}

/// A process this test started and may kill: `sleep`, with a marker in its arguments so
/// commands can match it (and only it) by cmdline pattern.
pub struct Victim {
    child: Child,
    pub marker: String,
}

impl Victim {
    pub fn start() -> Self {
        Self::with_marker(&format!("troop-victim-{}", uuid::Uuid::new_v4().simple()))
    }

    /// A victim with a given marker: a second one with the same marker is what a command
    /// that ran twice would hit.
    pub fn with_marker(marker: &str) -> Self {
        let marker = marker.to_string();
        // bash's `exec -a` makes the marker sleep's argv[0]; its name stays `sleep`.
        let child = Command::new("bash")
            .args(["-c", "exec -a \"$0\" sleep 600", &marker])
            .spawn()
            .unwrap();
        let victim = Self { child, marker };
        victim.wait_until_exec();
        victim
    }

    /// Waits until the child runs `sleep` (before exec it still looks like the shell).
    fn wait_until_exec(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", self.pid())).unwrap_or_default();
            if comm.trim() == "sleep" {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("victim never became sleep");
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Alive means not exited: a killed child is reaped here, so a zombie counts as dead.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Still alive after `grace`: a signal, once sent, would have ended it by then.
    pub fn survives(&mut self, grace: Duration) -> bool {
        self.wait_killed(grace).is_none() && self.is_alive()
    }

    /// Waits for the victim to die and returns the signal that ended it.
    pub fn wait_killed(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.signal();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary built from this workspace (`troop` or `troop-agent`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/this-test -> target/debug/NAME
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}
