//! Dialling agents: TLS 1.3 with the coordinator's client certificate, and the agent's
//! certificate checked against the fleet CA *and* the agent id that was dialled, so a host
//! holding another agent's certificate cannot stand in for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use troop_proto::pb::agent_client::AgentClient;

use crate::config::{AgentEntry, ClientTls};

pub use troop_common::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("agent id {0:?} cannot be checked against a certificate")]
    BadName(String),
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// HTTP/2 pings on idle channels, and how long an answer may take.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Opens mutual-TLS gRPC channels to agents.
#[derive(Clone)]
pub struct Dialer {
    tls: Arc<ClientConfig>,
    connect_timeout: Duration,
}

impl Dialer {
    pub fn new(paths: &ClientTls, connect_timeout: Duration) -> Result<Self, TlsError> {
        Ok(Self::with_config(paths.client_config()?, connect_timeout))
    }

    /// A dialer with a TLS client config made elsewhere (shared with the operator API's
    /// channel; tests present wrong identities).
    pub fn with_config(config: impl Into<Arc<ClientConfig>>, connect_timeout: Duration) -> Self {
        Self {
            tls: config.into(),
            connect_timeout,
        }
    }

    /// Connects now (not lazily), so an unreachable agent shows up as such.
    pub async fn dial(&self, agent: &AgentEntry) -> Result<AgentClient<Channel>, DialError> {
        self.dial_at(&agent.address, &agent.id).await
    }

    /// Connects to `address`, where the certificate must name `agent_id`.
    pub async fn dial_at(
        &self,
        address: &str,
        agent_id: &str,
    ) -> Result<AgentClient<Channel>, DialError> {
        Ok(AgentClient::new(self.channel(address, agent_id).await?))
    }

    /// A channel to `address`, whose certificate must name `name` (an agent's id, or the
    /// coordinator's name for another replica of serve).
    pub async fn channel(&self, address: &str, name: &str) -> Result<Channel, DialError> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| DialError::BadName(name.to_string()))?;
        let connector = TlsConnector::from(self.tls.clone());
        let target = address.to_string();
        let named = name.to_string();
        // The URI only labels requests; the connector below decides where bytes go.
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| DialError::Connect {
                address: address.to_string(),
                source,
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A kept channel to a host that vanished is noticed, not trusted for hours.
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                let server_name = server_name.clone();
                let target = target.clone();
                let named = named.clone();
                async move {
                    let tcp = TcpStream::connect(&target).await?;
                    tcp.set_nodelay(true)?;
                    let tls = connector
                        .connect(server_name, tcp)
                        .await
                        .map_err(|error| readable_tls_error(error, &named, &target))?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|source| DialError::Connect {
                address: address.to_string(),
                source,
            })
    }
}

/// Channels kept open to static agents between calls (in `troop serve`, which commands
/// the same hosts all day): no TCP and TLS handshake per command. A channel whose call
/// failed in transport is dropped, so the next call dials afresh and reports plainly.
#[derive(Default)]
pub struct KeptChannels {
    channels: Mutex<HashMap<(String, String), AgentClient<Channel>>>,
}

impl KeptChannels {
    /// The open channel to `agent` at its current address, dialled if there is none.
    pub async fn client(
        &self,
        dialer: &Dialer,
        agent: &AgentEntry,
    ) -> Result<AgentClient<Channel>, DialError> {
        let key = (agent.id.clone(), agent.address.clone());
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = dialer.dial(agent).await?;
        self.lock().insert(key, client.clone());
        Ok(client)
    }

    pub fn forget(&self, agent: &AgentEntry) {
        self.lock()
            .remove(&(agent.id.clone(), agent.address.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), AgentClient<Channel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// rustls names the expected host in Debug form (`DnsName("web-1")`); say it plainly.
fn readable_tls_error(error: std::io::Error, agent_id: &str, address: &str) -> std::io::Error {
    use rustls::{CertificateError, Error};
    let not_for_name = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            )
        });
    if not_for_name {
        std::io::Error::new(
            error.kind(),
            format!(
                "the certificate at {address} does not name agent {agent_id}: another host answers there"
            ),
        )
    } else {
        error
    }
}
