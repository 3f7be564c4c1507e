//! The live fleet of `troop serve`: agents that dialled in and keep a stream open
//! ([`streams`] accepts them), by id. A request to one goes down its stream and its answer
//! comes back by request id. An agent whose heartbeats stop is dropped, so it is shown
//! unreachable and never picked; a second stream for an id replaces the first.

pub mod flood;
pub mod peers;
pub mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use troop_proto::serve_pb::{self, answer, request, serve_message};

use crate::config::AgentEntry;
use crate::enrolment::certificate::CertInfo;
use crate::signer::now_unix_ms;

/// An agent's stream messages (and a relayed request or answer) are commands and
/// answers: small.
pub const MAX_STREAM_MESSAGE: usize = 64 * 1024;

/// How often agents are asked to send a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A stream silent for this long (three heartbeats missed) is dropped.
pub const SILENT_AFTER: Duration = Duration::from_secs(6);

/// Why a request over a stream got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

/// One agent's stream.
pub struct Link {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    /// Where the stream comes from.
    pub address: String,
    /// The certificate the stream was opened with, or the one serve renewed it with since.
    certificate: RwLock<Option<CertInfo>>,
    pub connected_since_unix_ms: i64,
    generation: u64,
    last_seen_unix_ms: AtomicI64,
    outbox: mpsc::Sender<serve_pb::ServeMessage>,
    pending: Mutex<HashMap<u64, oneshot::Sender<answer::Result>>>,
    next_request: AtomicU64,
    closed: watch::Sender<bool>,
}

impl Link {
    /// The agent's newest certificate serve knows of.
    pub fn certificate(&self) -> Option<CertInfo> {
        self.certificate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a renewal on this stream: the certificate the agent uses from now on.
    pub fn renewed(&self, certificate: CertInfo) {
        *self.certificate.write().unwrap_or_else(|e| e.into_inner()) = Some(certificate);
    }

    /// Queues a message to the agent that answers nothing. Dropped if the stream is gone
    /// or its outbox full: the agent asks again (a renewal), or was never told (a closed
    /// stream).
    pub fn tell(&self, message: serve_pb::ServeMessage) {
        if *self.closed.borrow() || self.outbox.try_send(message).is_err() {
            tracing::debug!(agent = %self.id, "a message to the agent was dropped: its stream is closed or full");
        }
    }

    pub fn last_seen_unix_ms(&self) -> i64 {
        self.last_seen_unix_ms.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_seen_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
    }

    /// Whether heartbeats are current.
    pub fn is_fresh(&self, now_unix_ms: i64) -> bool {
        now_unix_ms - self.last_seen_unix_ms() <= SILENT_AFTER.as_millis() as i64
    }

    /// Sends `call` down the stream and waits for its answer (the caller bounds the wait).
    pub async fn call(&self, call: request::Call) -> Result<answer::Result, LinkError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        self.pending_lock().insert(request_id, answered);
        let message = serve_pb::ServeMessage {
            body: Some(serve_message::Body::Request(serve_pb::Request {
                request_id,
                call: Some(call),
            })),
        };
        if *self.closed.borrow() || self.outbox.send(message).await.is_err() {
            self.pending_lock().remove(&request_id);
            return Err(LinkError("the agent's stream is closed".into()));
        }
        answer.await.map_err(|_| {
            LinkError(
                "the agent's stream closed before it answered: the command may or may not have run"
                    .into(),
            )
        })
    }

    fn answered(&self, answer: serve_pb::Answer) {
        self.touch();
        let waiting = self.pending_lock().remove(&answer.request_id);
        match (waiting, answer.result) {
            (Some(waiting), Some(result)) => {
                let _ = waiting.send(result);
            }
            _ => {
                tracing::warn!(agent = %self.id, request_id = answer.request_id, "an answer to no open request, ignored")
            }
        }
    }

    /// Ends the stream; whoever waits for an answer is told the stream closed.
    fn close(&self) {
        self.closed.send_replace(true);
        self.pending_lock().clear();
    }

    fn pending_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<answer::Result>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn departed(&self) -> Departed {
        Departed {
            id: self.id.clone(),
            labels: self.labels.clone(),
            address: self.address.clone(),
            last_seen_unix_ms: self.last_seen_unix_ms(),
        }
    }

    /// The agent as the dispatcher and selectors see it.
    pub fn entry(&self) -> AgentEntry {
        AgentEntry {
            id: self.id.clone(),
            address: self.address.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// What a registering stream brings.
pub struct Registration {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub address: String,
    pub certificate: Option<CertInfo>,
}

/// An agent whose stream ended: still shown (unreachable, last seen when), never picked.
#[derive(Debug, Clone)]
pub struct Departed {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub address: String,
    pub last_seen_unix_ms: i64,
}

/// The agents connected right now, and those that were since serve started.
#[derive(Default)]
pub struct Registry {
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Agents whose streams other replicas of serve hold (with a shared store).
    pub elsewhere: peers::Elsewhere,
    departed: Mutex<BTreeMap<String, Departed>>,
    generations: AtomicU64,
}

impl Registry {
    /// Adds a stream, replacing (and closing) any earlier one of the same id. Returns the
    /// link and the receiving end of its outbox, which feeds the stream to the agent.
    fn insert(
        &self,
        registration: Registration,
        outbox_size: usize,
    ) -> (
        Arc<Link>,
        mpsc::Receiver<serve_pb::ServeMessage>,
        watch::Receiver<bool>,
    ) {
        let (outbox, sent) = mpsc::channel(outbox_size);
        let (closed, close_seen) = watch::channel(false);
        let now = now_unix_ms();
        let link = Arc::new(Link {
            id: registration.id,
            labels: registration.labels,
            version: registration.version,
            address: registration.address,
            certificate: RwLock::new(registration.certificate),
            connected_since_unix_ms: now,
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            last_seen_unix_ms: AtomicI64::new(now),
            outbox,
            pending: Mutex::default(),
            next_request: AtomicU64::new(1),
            closed,
        });
        self.departed_lock().remove(&link.id);
        let replaced = self.lock().insert(link.id.clone(), link.clone());
        if let Some(old) = replaced {
            tracing::warn!(agent = %link.id, old = %old.address, new = %link.address, "a second stream for this agent replaces the first");
            old.close();
        }
        (link, sent, close_seen)
    }

    /// Removes `link` if it is still the current stream of its id.
    fn remove(&self, link: &Link) {
        let mut links = self.lock();
        if links
            .get(&link.id)
            .is_some_and(|current| current.generation == link.generation)
        {
            links.remove(&link.id);
            self.departed_lock()
                .insert(link.id.clone(), link.departed());
        }
        drop(links);
        link.close();
    }

    /// Ends the streams `refusal` gives a reason to end; returns each agent and reason.
    pub fn cut_off(&self, refusal: impl Fn(&Link) -> Option<String>) -> Vec<(String, String)> {
        let links: Vec<Arc<Link>> = self.lock().values().cloned().collect();
        let mut cut = Vec::new();
        for link in links {
            if let Some(reason) = refusal(&link) {
                self.remove(&link);
                cut.push((link.id.clone(), reason));
            }
        }
        cut
    }

    /// Ends every stream (serve is stopping): each agent dials back in to a serve that runs.
    pub fn close_all(&self) {
        let links: Vec<Arc<Link>> = self.lock().values().cloned().collect();
        for link in links {
            link.close();
        }
    }

    /// Agents whose streams ended (or went silent) and have not come back, by id.
    pub fn departed(&self) -> Vec<Departed> {
        let now = now_unix_ms();
        let mut gone: BTreeMap<String, Departed> = self.departed_lock().clone();
        for link in self.lock().values().filter(|link| !link.is_fresh(now)) {
            gone.insert(link.id.clone(), link.departed());
        }
        gone.into_values().collect()
    }

    fn departed_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Departed>> {
        self.departed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream of `id`, if it is open and its heartbeats are current.
    pub fn get(&self, id: &str) -> Option<Arc<Link>> {
        let now = now_unix_ms();
        self.lock()
            .get(id)
            .filter(|link| link.is_fresh(now))
            .cloned()
    }

    /// Every open stream whose heartbeats are current, by id.
    pub fn connected(&self) -> Vec<Arc<Link>> {
        let now = now_unix_ms();
        let mut links: Vec<Arc<Link>> = self
            .lock()
            .values()
            .filter(|link| link.is_fresh(now))
            .cloned()
            .collect();
        links.sort_by(|a, b| a.id.cmp(&b.id));
        links
    }

    /// (streams whose heartbeats are current, streams open).
    pub fn counts(&self) -> (usize, usize) {
        let now = now_unix_ms();
        let links = self.lock();
        let fresh = links.values().filter(|link| link.is_fresh(now)).count();
        (fresh, links.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves once a link is closed.
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|closed| *closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str, address: &str) -> Registration {
        Registration {
            id: id.into(),
            labels: BTreeMap::new(),
            version: "test".into(),
            address: address.into(),
            certificate: None,
        }
    }

    #[tokio::test]
    async fn a_second_stream_replaces_the_first_and_fails_its_open_requests() {
        let registry = Registry::default();
        let (first, mut first_out, first_closed) = registry.insert(registration("web-1", "a"), 4);
        let waiting = tokio::spawn({
            let first = first.clone();
            async move { first.call(request::Call::Status(Default::default())).await }
        });
        assert!(
            first_out.recv().await.is_some(),
            "the request went down the stream"
        );
        let (second, _out, _) = registry.insert(registration("web-1", "b"), 4);
        assert!(*first_closed.borrow());
        assert!(
            waiting
                .await
                .unwrap()
                .unwrap_err()
                .0
                .contains("closed before it answered")
        );
        assert_eq!(registry.get("web-1").unwrap().address, "b");
        // The old stream ending later does not remove the new one.
        registry.remove(&first);
        assert_eq!(registry.get("web-1").unwrap().generation, second.generation);
        registry.remove(&second);
        assert!(registry.get("web-1").is_none());
        let gone = registry.departed();
        assert_eq!((gone.len(), gone[0].address.as_str()), (1, "b"));
        registry.insert(registration("web-1", "c"), 4);
        assert!(registry.departed().is_empty(), "back again");
    }

    #[tokio::test]
    async fn an_answer_reaches_the_request_that_asked() {
        let registry = Registry::default();
        let (link, mut out, _) = registry.insert(registration("web-1", "a"), 4);
        let asking = tokio::spawn({
            let link = link.clone();
            async move { link.call(request::Call::Status(Default::default())).await }
        });
        let Some(serve_message::Body::Request(sent)) = out.recv().await.unwrap().body else {
            panic!("not a request")
        };
        link.answered(serve_pb::Answer {
            request_id: sent.request_id + 100,
            result: Some(answer::Result::Failure(Default::default())),
        });
        link.answered(serve_pb::Answer {
            request_id: sent.request_id,
            result: Some(answer::Result::Status(Default::default())),
        });
        assert!(matches!(
            asking.await.unwrap(),
            Ok(answer::Result::Status(_))
        ));
    }

    #[test]
    fn a_silent_stream_is_not_offered() {
        let registry = Registry::default();
        let (link, _out, _) = registry.insert(registration("web-1", "a"), 4);
        link.last_seen_unix_ms.store(
            now_unix_ms() - SILENT_AFTER.as_millis() as i64 - 1,
            Ordering::Relaxed,
        );
        assert!(registry.get("web-1").is_none());
        assert!(registry.connected().is_empty());
        assert_eq!(registry.departed()[0].id, "web-1");
    }
}
