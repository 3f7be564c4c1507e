//! The agent's stream to `troop serve` (agent config `coordinator = URL`): dialled out, so
//! a host behind NAT or a firewall that drops every inbound connection still takes
//! commands. It registers, sends heartbeats, and runs each command it receives through
//! [`AgentService::execute`], the very pipeline a direct `Execute` goes through: serve is
//! trusted with nothing a signature does not prove.
//!
//! Serve's certificate must chain to the fleet CA and name the coordinator, whatever
//! address was dialled. The agent's own certificate is renewed over the stream
//! ([`renewal`]). A lost link is redialled with capped exponential backoff and
//! jitter, so a fleet does not stampede a restarted serve.

mod renewal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::Rng;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use troop_common::identity::COORDINATOR_NAME;
use troop_proto::pb;
use troop_proto::serve_pb::coordinator_client::CoordinatorClient;
use troop_proto::serve_pb::{self, agent_message, answer, request, serve_message};

use crate::identity::TlsIdentity;
use crate::service::{AgentService, MAX_MESSAGE_BYTES};
use renewal::Renewal;

/// First wait after a failed dial; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// TCP plus TLS to serve.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings: a link that answers none within the timeout is dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Serve's `Registered` must come this soon after the stream opens.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests carried out at once; more wait (as a direct listener's stream limit does).
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Keeps one stream to the first `troop serve` of `coordinators` that answers.
pub struct Link {
    pub service: Arc<AgentService>,
    /// `host:port` of each serve, tried in turn.
    pub coordinators: Vec<String>,
    pub tls: Arc<ClientConfig>,
    /// The agent's certificate, which the stream renews.
    pub identity: Arc<TlsIdentity>,
    /// The fleet CA, which a renewed certificate must chain to.
    pub ca: PathBuf,
}

/// How a session ended.
enum Ended {
    Shutdown,
    /// Registered, then lost: the next dial starts with a short wait again.
    Lost(String),
}

impl Link {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut renewal = Renewal::new(
            self.identity.clone(),
            self.ca.clone(),
            self.service.id.clone(),
        );
        let mut failures = 0u32;
        let mut next = 0usize;
        loop {
            let address = self.coordinators[next % self.coordinators.len()].clone();
            match self.session(&address, &mut renewal, &mut shutdown).await {
                Ok(Ended::Shutdown) => return,
                Ok(Ended::Lost(reason)) => {
                    tracing::warn!(coordinator = %address, %reason, "lost the stream to the coordinator; redialling");
                    failures = 0;
                }
                Err(reason) => {
                    tracing::warn!(coordinator = %address, %reason, "cannot reach the coordinator");
                    failures = failures.saturating_add(1);
                    next += 1;
                }
            }
            let wait = backoff(failures, &mut rand::rng());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn session(
        &self,
        address: &str,
        renewal: &mut Renewal,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Ended, String> {
        let channel = self.connect(address).await?;
        let mut client = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outbox, outgoing) = mpsc::channel::<serve_pb::AgentMessage>(MAX_CONCURRENT_REQUESTS);
        let service = self.service.clone();
        let status = tokio::task::spawn_blocking(move || service.status())
            .await
            .map_err(|_| "status task failed".to_string())?;
        let register = serve_pb::Register {
            agent_id: status.agent_id,
            labels: status.labels,
            version: status.version,
            inventory: status.inventory,
            trust_generation: self.service.trust_generation(),
        };
        outbox
            .send(message(agent_message::Body::Register(register)))
            .await
            .map_err(|_| "stream closed".to_string())?;
        let mut incoming = client
            .attach(ReceiverStream::new(outgoing))
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))?
            .into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, incoming.message())
            .await
            .map_err(|_| "no answer to the registration".to_string())?
            .map_err(|status| format!("registration refused: {}", status.message()))?;
        let heartbeat_every = match first.and_then(|m| m.body) {
            Some(serve_message::Body::Registered(registered)) => {
                Duration::from_millis(registered.heartbeat_every_ms.clamp(200, 60_000))
            }
            _ => return Err("the coordinator did not confirm the registration".into()),
        };
        tracing::info!(coordinator = %address, "connected to the coordinator; taking commands on the stream");
        let mut heartbeats = tokio::time::interval(heartbeat_every);
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        loop {
            tokio::select! {
                () = stopped(shutdown) => return Ok(Ended::Shutdown),
                () = tokio::time::sleep_until(renewal.due()) => {
                    if let Some(request) = renewal.request()
                        && outbox.send(message(agent_message::Body::Renew(request))).await.is_err()
                    {
                        return Ok(Ended::Lost("stream closed".into()));
                    }
                }
                _ = heartbeats.tick() => {
                    let beat = serve_pb::Heartbeat { sent_at_unix_ms: troop_common::clock::now_unix_ms() };
                    if outbox.send(message(agent_message::Body::Heartbeat(beat))).await.is_err() {
                        return Ok(Ended::Lost("stream closed".into()));
                    }
                }
                received = incoming.message() => match received {
                    Ok(Some(serve_pb::ServeMessage { body: Some(serve_message::Body::Request(request)) })) => {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return Ok(Ended::Lost("shutting down".into()));
                        };
                        let service = self.service.clone();
                        let outbox = outbox.clone();
                        tokio::spawn(async move {
                            let answer = answer_request(service, request).await;
                            let _ = outbox.send(message(agent_message::Body::Answer(answer))).await;
                            drop(permit);
                        });
                    }
                    Ok(Some(serve_pb::ServeMessage { body: Some(serve_message::Body::Renewed(renewed)) })) => {
                        // A key file and a certificate written and synced, once per half
                        // lifetime: brief enough to do here.
                        renewal.answered(renewed);
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(message = ?other.body, "ignored an unexpected message from the coordinator");
                    }
                    Ok(None) => return Ok(Ended::Lost("the coordinator closed the stream".into())),
                    Err(status) => return Ok(Ended::Lost(format!("{}: {}", status.code(), status.message()))),
                },
            }
        }
    }

    /// TCP, then TLS checked against the fleet CA and the coordinator's name.
    async fn connect(&self, address: &str) -> Result<tonic::transport::Channel, String> {
        dial(address, self.tls.clone()).await
    }
}

/// A channel to the serve at `address` whose certificate `tls` accepts as the coordinator.
pub(crate) async fn dial(
    address: &str,
    tls: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, String> {
    let connector = TlsConnector::from(tls);
    let target = address.to_string();
    // The URI only labels requests; the connector decides where bytes go.
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| error.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(COORDINATOR_NAME).map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|error| troop_telemetry::error_chain(&error))
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn message(body: agent_message::Body) -> serve_pb::AgentMessage {
    serve_pb::AgentMessage { body: Some(body) }
}

/// Carries out one request off the async threads, as the gRPC service does.
async fn answer_request(
    service: Arc<AgentService>,
    request: serve_pb::Request,
) -> serve_pb::Answer {
    let request_id = request.request_id;
    let result = tokio::task::spawn_blocking(move || match request.call {
        Some(request::Call::Execute(signed)) => match service.execute(&signed) {
            Ok(receipt) => answer::Result::Receipt(receipt),
            Err(status) => failure(&status),
        },
        Some(request::Call::Status(pb::StatusRequest {})) => {
            answer::Result::Status(service.status())
        }
        None => failure(&tonic::Status::invalid_argument("empty request")),
    })
    .await
    .unwrap_or_else(|_| failure(&tonic::Status::internal("command task failed")));
    serve_pb::Answer {
        request_id,
        result: Some(result),
    }
}

fn failure(status: &tonic::Status) -> answer::Result {
    answer::Result::Failure(serve_pb::Failure {
        code: status.code() as i32,
        message: status.message().to_string(),
    })
}

/// The wait before the next dial after `failures` failed ones: jitter over the upper half of an
/// exponentially growing, capped window.
fn backoff(failures: u32, rng: &mut impl Rng) -> Duration {
    let window = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF);
    let millis = window.as_millis() as u64;
    Duration::from_millis(rng.random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_to_its_cap_and_spreads_agents_out() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert!(backoff(0, &mut rng) <= MIN_BACKOFF);
        assert!(backoff(3, &mut rng) >= MIN_BACKOFF * 4);
        let capped: Vec<Duration> = (0..100).map(|_| backoff(40, &mut rng)).collect();
        assert!(
            capped
                .iter()
                .all(|wait| *wait <= MAX_BACKOFF && *wait >= MAX_BACKOFF / 2)
        );
        let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter spreads reconnects: {distinct:?}"
        );
    }
}
