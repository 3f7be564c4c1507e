//! Replicas of `troop serve` sharing one store reach each other's agents. Each publishes
//! the streams it holds every [`PUBLISH_EVERY`] and reads the others'; a request for an
//! agent attached to another replica goes there through `Coordinator.Relay`, over mutual
//! TLS with the coordinator's certificate on both ends, and down that replica's stream.
//! Commands stay signed end to end: a relay can delay or drop one, never change it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use troop_common::identity::COORDINATOR_NAME;
use troop_proto::serve_pb::coordinator_client::CoordinatorClient;
use troop_proto::serve_pb::{self, answer, request};

use super::{LinkError, Registry, SILENT_AFTER};
use crate::client::Dialer;
use crate::store::{PublishedStream, Store, StreamEntry};

/// How often a replica publishes its streams and reads the others'.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// A stream not published again within this long is gone (its replica died or lost it).
pub const FRESH_FOR: Duration = SILENT_AFTER;

/// Agents attached to other replicas, as last read from the store, and the channels to
/// those replicas.
#[derive(Default)]
pub struct Elsewhere {
    streams: Mutex<BTreeMap<String, PublishedStream>>,
    channels: Mutex<HashMap<String, CoordinatorClient<Channel>>>,
}

impl Elsewhere {
    /// Where `id`'s stream is, if another replica holds it.
    pub fn get(&self, id: &str) -> Option<PublishedStream> {
        lock(&self.streams).get(id).cloned()
    }

    /// Every agent attached to another replica, by id.
    pub fn all(&self) -> Vec<PublishedStream> {
        lock(&self.streams).values().cloned().collect()
    }

    fn replace(&self, streams: Vec<PublishedStream>) {
        *lock(&self.streams) = streams
            .into_iter()
            .map(|stream| (stream.entry.agent.clone(), stream))
            .collect();
    }

    /// Sends `call` to the agent of `stream` through the replica that holds it.
    pub async fn relay(
        &self,
        dialer: &Dialer,
        stream: &PublishedStream,
        call: request::Call,
    ) -> Result<answer::Result, LinkError> {
        let via = |reason: String| {
            LinkError(format!(
                "through serve replica {}: {reason}",
                stream.replica
            ))
        };
        let mut client = self.client(dialer, &stream.relay).await.map_err(via)?;
        let relayed = client
            .relay(serve_pb::RelayRequest {
                agent_id: stream.entry.agent.clone(),
                request: Some(serve_pb::Request {
                    request_id: 0,
                    call: Some(call),
                }),
            })
            .await;
        match relayed {
            Ok(answer) => answer
                .into_inner()
                .result
                .ok_or_else(|| via("an empty answer".into())),
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) {
                    lock(&self.channels).remove(&stream.relay);
                }
                Err(via(format!(
                    "{}: {}",
                    troop_proto::refusal::code_name(status.code()),
                    status.message()
                )))
            }
        }
    }

    async fn client(
        &self,
        dialer: &Dialer,
        relay: &str,
    ) -> Result<CoordinatorClient<Channel>, String> {
        if let Some(client) = lock(&self.channels).get(relay) {
            return Ok(client.clone());
        }
        let channel = dialer
            .channel(relay, COORDINATOR_NAME)
            .await
            .map_err(|error| troop_telemetry::error_chain(&error))?;
        let client = CoordinatorClient::new(channel)
            .max_decoding_message_size(super::MAX_STREAM_MESSAGE)
            .max_encoding_message_size(super::MAX_STREAM_MESSAGE);
        lock(&self.channels).insert(relay.to_string(), client.clone());
        Ok(client)
    }
}

/// Until serve stops: publishes the streams `registry` holds as `replica` (taking relays
/// at `relay`), and reads where the other replicas' agents are.
pub async fn keep_published(
    registry: Arc<Registry>,
    store: Arc<Store>,
    replica: String,
    relay: String,
) {
    let mut every = tokio::time::interval(PUBLISH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let held: Vec<StreamEntry> = registry
            .connected()
            .iter()
            .map(|link| StreamEntry {
                agent: link.id.clone(),
                labels: link.labels.clone(),
                address: link.address.clone(),
                connected_since_ms: link.connected_since_unix_ms,
            })
            .collect();
        let (store, replica, relay) = (store.clone(), replica.clone(), relay.clone());
        let exchanged = tokio::task::spawn_blocking(move || {
            store.publish_streams(&replica, &relay, &held)?;
            store.streams_elsewhere(&replica, FRESH_FOR)
        })
        .await;
        match exchanged {
            Ok(Ok(elsewhere)) => registry.elsewhere.replace(elsewhere),
            Ok(Err(error)) => {
                // Not knowing is not reaching: relay to nobody until the store answers.
                tracing::warn!(%error, "audit store: cannot exchange where agents' streams are");
                registry.elsewhere.replace(Vec::new());
            }
            Err(_) => registry.elsewhere.replace(Vec::new()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
