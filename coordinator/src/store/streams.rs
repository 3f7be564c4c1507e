//! Where each agent's stream is, when several `troop serve` share one store: every replica
//! publishes the streams it holds every few seconds (stamped by the database's clock), and
//! reads the others', so a command for an agent attached elsewhere is relayed through the
//! replica that holds it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::sql::Value;
use super::{Store, StoreError};

/// One agent's stream, as the replica holding it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub agent: String,
    pub labels: BTreeMap<String, String>,
    /// Where the stream comes from.
    pub address: String,
    pub connected_since_ms: i64,
}

/// A stream another replica published: which one holds it, where it takes relays, and
/// when it last said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedStream {
    pub entry: StreamEntry,
    pub replica: String,
    pub relay: String,
    pub seen_at_ms: i64,
}

impl Store {
    /// Replaces what `replica` (taking relays at `relay`) published with `streams`, seen
    /// now, and says `replica` is alive. An agent another replica had published moves to
    /// this one.
    pub fn publish_streams(
        &self,
        replica: &str,
        relay: &str,
        streams: &[StreamEntry],
    ) -> Result<(), StoreError> {
        let (replica, relay, streams) = (replica.to_owned(), relay.to_owned(), streams.to_vec());
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO replicas (name, seen_at_ms) VALUES ($1, {now})
                     ON CONFLICT (name) DO UPDATE SET seen_at_ms = excluded.seen_at_ms"
                ),
                &[Value::Text(&replica)],
            )?;
            tx.execute(
                "DELETE FROM agent_streams WHERE replica = $1",
                &[Value::Text(&replica)],
            )?;
            for stream in &streams {
                let labels = serde_json::to_string(&stream.labels).expect("a map of strings");
                tx.execute(
                    &format!(
                        "INSERT INTO agent_streams (agent, replica, relay, labels, address,
                                                    connected_since_ms, seen_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, {now})
                         ON CONFLICT (agent) DO UPDATE SET replica = excluded.replica,
                             relay = excluded.relay, labels = excluded.labels,
                             address = excluded.address,
                             connected_since_ms = excluded.connected_since_ms,
                             seen_at_ms = excluded.seen_at_ms"
                    ),
                    &[
                        Value::Text(&stream.agent),
                        Value::Text(&replica),
                        Value::Text(&relay),
                        Value::Text(&labels),
                        Value::Text(&stream.address),
                        Value::Int(stream.connected_since_ms),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The streams replicas other than `replica` published within `fresh`.
    pub fn streams_elsewhere(
        &self,
        replica: &str,
        fresh: Duration,
    ) -> Result<Vec<PublishedStream>, StoreError> {
        let replica = replica.to_owned();
        let fresh_ms = i64::try_from(fresh.as_millis()).unwrap_or(i64::MAX);
        let now = self.dialect().now_ms();
        self.read(move |tx| {
            tx.query(
                &format!(
                    "SELECT agent, replica, relay, labels, address, connected_since_ms, seen_at_ms
                     FROM agent_streams WHERE replica <> $1 AND seen_at_ms > {now} - $2
                     ORDER BY agent"
                ),
                &[Value::Text(&replica), Value::Int(fresh_ms)],
            )?
            .iter()
            .map(|row| {
                let labels =
                    serde_json::from_str(&row.text(3)?).map_err(|_| StoreError::Decode {
                        column: 3,
                        expected: "labels as a JSON object of strings",
                    })?;
                Ok(PublishedStream {
                    entry: StreamEntry {
                        agent: row.text(0)?,
                        labels,
                        address: row.text(4)?,
                        connected_since_ms: row.int(5)?,
                    },
                    replica: row.text(1)?,
                    relay: row.text(2)?,
                    seen_at_ms: row.int(6)?,
                })
            })
            .collect()
        })
    }
}
