//! troop-agent: the daemon on every host.
//!
//! It listens for gRPC over mutual TLS ([`tls`]) and/or keeps a stream to `troop serve`
//! ([`link`]), verifies each signed command and checks
//! binding, freshness and replay ([`service`], [`ledger`]), applies local [`policy`], and
//! carries out faults ([`faults`]) through narrow host traits ([`host`]).
//!
//! Start reading at [`Agent::new`] and [`service::AgentService::execute`].
#![deny(unsafe_code)]

pub mod config;
pub mod enrol;
pub mod faults;
pub mod host;
pub mod identity;
pub mod inventory;
pub mod latch;
pub mod ledger;
pub mod link;
pub mod metrics;
pub mod policy;
pub mod service;
pub mod signals;
pub mod state_file;
pub mod tls;
pub mod trust;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use tokio::net::TcpListener;
use troop_proto::TrustedKeys;
use troop_proto::pb::agent_server::AgentServer;

use crate::config::AgentConfig;
use crate::faults::engine::Engine;
use crate::faults::journal::FaultJournal;
use crate::faults::network::ControlPath;
use crate::faults::runner::Runner;
use crate::host::process::{LinuxProcessTable, ProcessTable};
use crate::ledger::ReplayLedger;
use crate::service::{AgentService, GrpcAgent};

pub use service::MAX_MESSAGE_BYTES;
/// HTTP/2 streams one coordinator connection may hold open at once.
const MAX_CONCURRENT_STREAMS: u32 = 64;
/// No request may hold the agent longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read coordinator key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::pkcs8::spki::Error,
    },
    #[error("cannot read coordinator key {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS identity")]
    Tls(#[from] troop_common::tls::TlsError),
    #[error("keys learned from a signing-key rotation")]
    Trust(#[from] trust::TrustFileError),
    #[error("state")]
    ReplayLedger(#[from] ledger::LedgerError),
    #[error("state")]
    FaultJournal(#[from] faults::journal::JournalError),
    #[error("cannot find this program's own path (for the memory holder)")]
    Helper(#[source] std::io::Error),
    #[error("gRPC server")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot listen on {address} (metrics_listen)")]
    MetricsListen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("config {}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Reads an SPKI PEM ("PUBLIC KEY") Ed25519 key.
pub fn load_public_key(path: &std::path::Path) -> Result<VerifyingKey, StartError> {
    let pem = std::fs::read_to_string(path).map_err(|source| StartError::KeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|source| StartError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// A fully loaded agent: keys, TLS identity and ledger read, ready to serve.
pub struct Agent {
    config: AgentConfig,
    tls: Arc<rustls::ServerConfig>,
    /// The client side of the agent's identity, for its streams to `troop serve`.
    link_tls: Option<Arc<rustls::ClientConfig>>,
    /// Its certificate and key, renewed over the stream and reloaded on SIGHUP.
    identity: Arc<identity::TlsIdentity>,
    service: Arc<AgentService>,
    engine: Arc<Engine>,
}

/// What `troop-agent validate` found.
#[derive(Debug)]
pub struct Validated {
    pub trusted_keys: usize,
    pub remembered_commands: usize,
    /// Faults a previous run left applied; the agent undoes them when it starts.
    pub journaled_faults: usize,
}

/// Loads every key, certificate and the ledger the config points at, changing nothing:
/// safe to run (as systemd's ExecStartPre, or by hand) beside a live agent.
pub fn validate(config: &AgentConfig) -> Result<Validated, StartError> {
    let (keys, _) = trusted_keys(config)?;
    let identity = Arc::new(identity::TlsIdentity::load(
        &config.tls.cert,
        &config.tls.key,
    )?);
    tls::server_config(&config.tls, identity)?;
    let invalid = |key, message: String| StartError::Invalid {
        path: config.path.clone(),
        key,
        message,
    };
    tls::check_identity(&config.tls, &config.id).map_err(|message| invalid("tls.cert", message))?;
    // The agent makes its state dir, but not a whole missing tree: that is a typo.
    let state_parent = config
        .state_dir
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    if !config.state_dir.is_dir() && !state_parent.is_dir() {
        return Err(invalid(
            "state_dir",
            format!(
                "neither {} nor its parent exists",
                config.state_dir.display()
            ),
        ));
    }
    for dir in &config.policy.disk_paths {
        if !dir.is_dir() {
            return Err(invalid(
                "policy.disk_paths",
                format!("{} is not an existing directory", dir.display()),
            ));
        }
    }
    let remembered_commands = ReplayLedger::check(&config.state_dir)?;
    let journaled_faults = FaultJournal::check(&config.state_dir)?;
    Ok(Validated {
        trusted_keys: keys.len(),
        remembered_commands,
        journaled_faults,
    })
}

/// The keys the agent trusts: those a signing-key rotation gave (kept in the state dir),
/// else the config's; and that rotation's set, if there was one.
fn trusted_keys(config: &AgentConfig) -> Result<(TrustedKeys, Option<trust::Learned>), StartError> {
    let learned = trust::load(&config.state_dir)?;
    let keys = match &learned {
        Some(learned) => learned.keys.clone(),
        None => config
            .coordinator_keys
            .iter()
            .map(|path| load_public_key(path))
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok((TrustedKeys::new(keys), learned))
}

impl Agent {
    /// Loads everything the config points at and takes the state dir for itself; any
    /// problem is reported here, before the agent listens.
    pub fn new(config: AgentConfig) -> Result<Self, StartError> {
        let helper_exe = std::env::current_exe().map_err(StartError::Helper)?;
        Self::with_host(config, Arc::new(LinuxProcessTable), helper_exe)
    }

    /// As [`Agent::new`], with the process table and the memory-holder binary chosen
    /// (tests run agents inside a test binary that cannot hold memory itself).
    pub fn with_host(
        config: AgentConfig,
        processes: Arc<dyn ProcessTable>,
        helper_exe: PathBuf,
    ) -> Result<Self, StartError> {
        let (trusted, learned) = trusted_keys(&config)?;
        let identity = Arc::new(identity::TlsIdentity::load(
            &config.tls.cert,
            &config.tls.key,
        )?);
        let tls = tls::server_config(&config.tls, identity.clone())?;
        let link_tls = if config.coordinators.is_empty() {
            None
        } else {
            Some(tls::client_config(&config.tls, identity.clone())?)
        };
        let ledger = ReplayLedger::open(&config.state_dir, troop_common::clock::now_unix_ms())?;
        // The ledger holds the state dir's lock, so no other agent is undoing this too.
        let (journal, left) = FaultJournal::open(&config.state_dir)?;
        let engine = Arc::new(Engine::new(journal));
        faults::recover(&config.state_dir, &engine, left);
        let service = Arc::new(
            AgentService::new(
                config.id.clone(),
                config.labels.clone(),
                trusted,
                config.max_clock_skew,
                ledger,
                Runner::new(
                    config.id.clone(),
                    config.policy.clone(),
                    engine.clone(),
                    processes,
                    helper_exe,
                )
                .with_control_path(ControlPath {
                    listen_port: config
                        .listen
                        .map(|address| address.port())
                        .filter(|p| *p != 0),
                    coordinators: config.coordinators.clone(),
                }),
                faults::load_last_stop(&config.state_dir).map(Into::into),
            )
            .learning_keys(config.state_dir.clone(), learned),
        );
        Ok(Self {
            config,
            tls,
            link_tls,
            identity,
            service,
            engine,
        })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Serves direct calls on `listener` (if any) and keeps the streams to the configured
    /// coordinators, until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let address = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        tracing::info!(
            agent_id = %self.config.id,
            listen = %address,
            coordinators = %self.config.coordinators.join(", "),
            trusted_keys = self.config.coordinator_keys.len(),
            signing_key_generation = self.service.trust_generation(),
            allow = %self.config.policy.allowed_names(),
            "agent started"
        );
        let metrics = match self.config.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::MetricsListen { address, source })?;
                tracing::info!(%address, "serving /metrics");
                Some(tokio::spawn(serve_metrics(listener, self.service.clone())))
            }
            None => None,
        };
        let deadlines = self.engine.supervise();
        let housekeeping = start_housekeeping(self.service.clone());
        let (stop_links, links_stopped) = tokio::sync::watch::channel(false);
        let link = self.link_tls.map(|tls| {
            tokio::spawn(
                link::Link {
                    service: self.service.clone(),
                    coordinators: self.config.coordinators.clone(),
                    tls,
                    identity: self.identity.clone(),
                    ca: self.config.tls.ca.clone(),
                }
                .run(links_stopped),
            )
        });
        let served = match listener {
            Some(listener) => {
                let grpc = AgentServer::new(GrpcAgent(self.service))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                tonic::transport::Server::builder()
                    .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                    .http2_max_pending_accept_reset_streams(Some(32))
                    .http2_max_header_list_size(16 * 1024)
                    .timeout(REQUEST_TIMEOUT)
                    .add_service(grpc)
                    .serve_with_incoming_shutdown(tls::incoming(listener, self.tls), shutdown)
                    .await
            }
            None => {
                shutdown.await;
                Ok(())
            }
        };
        let _ = stop_links.send(true);
        drop(housekeeping);
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        if let Some(link) = link {
            let _ = link.await;
        }
        // Whatever ended the server, nothing it started may outlive it.
        let engine = self.engine;
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .ok();
        let _ = deadlines.join();
        served?;
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// Answers Prometheus' scrapes of `/metrics`, read off the async threads (the gauges
/// list processes and read directories).
async fn serve_metrics(listener: TcpListener, service: Arc<AgentService>) {
    let scrape = move || {
        let service = service.clone();
        async move {
            let text = tokio::task::spawn_blocking(move || service.metrics_text())
                .await
                .unwrap_or_default();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    troop_telemetry::metrics::CONTENT_TYPE,
                )],
                text,
            )
        }
    };
    let routes = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    if let Err(error) = axum::serve(listener, routes).await {
        tracing::error!(%error, "/metrics stopped");
    }
}

/// How often the inventory is read again and freed memory given back.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Runs housekeeping on a thread of its own until the returned sender is dropped. A thread
/// of tokio's blocking pool would exit ten seconds after each round, and so fault in its
/// exit path's code right after an idle round unmapped it.
fn start_housekeeping(service: Arc<AgentService>) -> std::sync::mpsc::Sender<()> {
    // The first round is a period away: the service read the host at start.
    let (stop, _thread) = repeat_on_own_thread("housekeeping", HOUSEKEEPING_EVERY, move || {
        service.housekeeping();
    });
    stop
}

/// Runs `round` every `period` (the first a period away) on a thread named `name`, until
/// the returned sender is dropped. A thread that cannot start is logged.
fn repeat_on_own_thread(
    name: &str,
    period: Duration,
    mut round: impl FnMut() + Send + 'static,
) -> (
    std::sync::mpsc::Sender<()>,
    Option<std::thread::JoinHandle<()>>,
) {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period)
            {
                round();
            }
        });
    let thread = spawned
        .inspect_err(|error| tracing::error!(%error, thread = name, "cannot start a thread"))
        .ok();
    (stop, thread)
}

/// Reloads what can change without a restart: trusted keys, skew, labels and policy.
#[derive(Clone)]
pub struct Reloader {
    service: Arc<AgentService>,
    identity: Arc<identity::TlsIdentity>,
    running: Arc<AgentConfig>,
}

impl Reloader {
    /// Loads every key `config` names and the agent's certificate and key files again,
    /// then swaps them in with its policy; active faults and open connections are
    /// untouched. Says which changes wait for a restart.
    pub fn reload(&self, config: &AgentConfig) -> Result<(), StartError> {
        let (trusted, learned) = trusted_keys(config)?;
        let keys = trusted.len();
        self.identity.reload()?;
        self.service.reload(
            service::Settings {
                labels: config.labels.clone(),
                trusted: Arc::new(trusted),
                max_clock_skew: config.max_clock_skew,
            },
            config.policy.clone(),
            learned,
        );
        let running = &self.running;
        let pending: Vec<&str> = [
            ("id", running.id != config.id),
            ("listen", running.listen != config.listen),
            (
                "metrics_listen",
                running.metrics_listen != config.metrics_listen,
            ),
            ("state_dir", running.state_dir != config.state_dir),
            ("tls (paths)", running.tls != config.tls),
            ("coordinator", running.coordinators != config.coordinators),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        tracing::info!(
            trusted_keys = keys,
            // Above 0, the keys a rotation gave (state_dir/trusted-keys.json) are the
            // ones trusted, whatever `trust.coordinator_keys` says.
            signing_key_generation = self.service.trust_generation(),
            certificate_serial = %self.identity.validity().map(|v| v.serial).unwrap_or_default(),
            allow = %config.policy.allowed_names(),
            "reloaded trusted keys, certificate, clock skew, labels and policy; active faults keep running"
        );
        if !pending.is_empty() {
            tracing::warn!(keys = %pending.join(", "), "changed keys take effect at the next restart");
        }
        Ok(())
    }
}

impl Agent {
    pub fn reloader(&self) -> Reloader {
        Reloader {
            service: self.service.clone(),
            identity: self.identity.clone(),
            running: Arc::new(self.config.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_repeating_thread_runs_its_rounds_and_ends_when_its_sender_is_dropped() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let (stop, thread) =
            repeat_on_own_thread("test-rounds", Duration::from_millis(5), move || {
                counted.fetch_add(1, Ordering::SeqCst);
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rounds.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "no rounds ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stop);
        // Joined only if it ends: a loop that ignored the dropped sender would hang here,
        // so the check runs on a helper with a deadline.
        let (ended, joined) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            thread.unwrap().join().unwrap();
            let _ = ended.send(());
        });
        joined
            .recv_timeout(Duration::from_secs(10))
            .expect("the thread went on after its sender was dropped");
    }
}
