//! Enrolment's state: join tokens (kept only as their SHA-256, with what they bind and how
//! many uses are left), the agent certificates serve issued, and revoked names. Times come
//! from the database's clock, the one every replica and the serve host's CLI share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::sql::Value;
use super::{Store, StoreError};

/// What a new join token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The only agent id it enrols, if it binds one.
    pub agent_id: Option<String>,
    /// Labels every agent it enrols gets.
    pub labels: BTreeMap<String, String>,
    pub uses: u32,
    pub ttl: Duration,
    pub created_by: String,
}

/// Why a token was not redeemed, or what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    Granted {
        agent_id: String,
        labels: BTreeMap<String, String>,
    },
    Unknown,
    Expired {
        expired_at_ms: i64,
    },
    UsedUp,
    /// The token binds another id than the agent asked for.
    OtherId {
        bound: String,
    },
}

/// A revoked name and the certificates for it issued since, which stay good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub name: String,
    pub revoked_at_ms: i64,
    pub reissued: BTreeSet<String>,
}

impl Store {
    /// Stores a token by its SHA-256 (hex); returns when it expires (Unix ms).
    pub fn add_join_token(&self, token_sha256: &str, token: &JoinToken) -> Result<i64, StoreError> {
        let (hash, token) = (token_sha256.to_owned(), token.clone());
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            let labels = serde_json::to_string(&token.labels).expect("a map of strings");
            let ttl_ms = i64::try_from(token.ttl.as_millis()).unwrap_or(i64::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO join_tokens (token_sha256, agent_id, labels, uses_left,
                                              expires_at_ms, created_by, created_at_ms)
                     VALUES ($1, $2, $3, $4, {now} + $5, $6, {now})"
                ),
                &[
                    Value::Text(&hash),
                    Value::OptText(token.agent_id.as_deref()),
                    Value::Text(&labels),
                    Value::Int(i64::from(token.uses)),
                    Value::Int(ttl_ms),
                    Value::Text(&token.created_by),
                ],
            )?;
            tx.query_one(
                "SELECT expires_at_ms FROM join_tokens WHERE token_sha256 = $1",
                &[Value::Text(&hash)],
            )?
            .int(0)
        })
    }

    /// What the token with this hash would grant an agent asking to be `asked_id` (empty:
    /// whatever id the token binds), without using it.
    pub fn check_join_token(
        &self,
        token_sha256: &str,
        asked_id: &str,
    ) -> Result<Redeemed, StoreError> {
        self.use_join_token(token_sha256, asked_id, false)
    }

    /// Uses up one use of the token with this hash for an agent asking to be `asked_id`.
    /// A refused token is left as it was.
    pub fn redeem_join_token(
        &self,
        token_sha256: &str,
        asked_id: &str,
    ) -> Result<Redeemed, StoreError> {
        self.use_join_token(token_sha256, asked_id, true)
    }

    fn use_join_token(
        &self,
        token_sha256: &str,
        asked_id: &str,
        spend: bool,
    ) -> Result<Redeemed, StoreError> {
        let (hash, asked) = (token_sha256.to_owned(), asked_id.to_owned());
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            let Some(row) = tx.query_opt(
                &format!(
                    "SELECT agent_id, labels, uses_left, expires_at_ms, expires_at_ms <= {now}
                     FROM join_tokens WHERE token_sha256 = $1"
                ),
                &[Value::Text(&hash)],
            )?
            else {
                return Ok(Redeemed::Unknown);
            };
            let bound = row.opt_text(0)?;
            if row.flag(4)? {
                return Ok(Redeemed::Expired {
                    expired_at_ms: row.int(3)?,
                });
            }
            if row.int(2)? <= 0 {
                return Ok(Redeemed::UsedUp);
            }
            let agent_id = match bound {
                Some(bound) if !asked.is_empty() && !bound.eq_ignore_ascii_case(&asked) => {
                    return Ok(Redeemed::OtherId { bound });
                }
                Some(bound) => bound,
                None => asked.clone(),
            };
            let labels = serde_json::from_str(&row.text(1)?).map_err(|_| StoreError::Decode {
                column: 1,
                expected: "labels as a JSON object of strings",
            })?;
            if !spend {
                return Ok(Redeemed::Granted { agent_id, labels });
            }
            // The guard makes two replicas racing for a token's last use count once.
            let taken = tx.execute(
                "UPDATE join_tokens SET uses_left = uses_left - 1
                 WHERE token_sha256 = $1 AND uses_left > 0",
                &[Value::Text(&hash)],
            )?;
            Ok(if taken == 1 {
                Redeemed::Granted { agent_id, labels }
            } else {
                Redeemed::UsedUp
            })
        })
    }

    /// Remembers a certificate serve issued for `name`.
    pub fn record_certificate(
        &self,
        serial: &str,
        name: &str,
        not_after_ms: i64,
    ) -> Result<(), StoreError> {
        let (serial, name) = (serial.to_owned(), name.to_owned());
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO certificates (serial, name, not_after_ms, issued_at_ms)
                     VALUES ($1, $2, $3, {now})"
                ),
                &[
                    Value::Text(&serial),
                    Value::Text(&name),
                    Value::Int(not_after_ms),
                ],
            )?;
            Ok(())
        })
    }

    /// Revokes every certificate for `name` issued until now; returns when (Unix ms).
    pub fn revoke(&self, name: &str, by: &str) -> Result<i64, StoreError> {
        let (name, by) = (name.to_owned(), by.to_owned());
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO revocations (name, revoked_at_ms, revoked_by) VALUES ($1, {now}, $2)
                     ON CONFLICT (name) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms,
                         revoked_by = excluded.revoked_by"
                ),
                &[Value::Text(&name), Value::Text(&by)],
            )?;
            tx.query_one(
                "SELECT revoked_at_ms FROM revocations WHERE name = $1",
                &[Value::Text(&name)],
            )?
            .int(0)
        })
    }

    /// Every revoked name, with the serials issued for it since.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.read(|tx| {
            let mut revoked: BTreeMap<String, Revocation> = BTreeMap::new();
            for row in tx.query(
                "SELECT r.name, r.revoked_at_ms, c.serial FROM revocations r
                 LEFT JOIN certificates c
                   ON c.name = r.name AND c.issued_at_ms > r.revoked_at_ms
                 ORDER BY r.name",
                &[],
            )? {
                let name = row.text(0)?;
                let entry = revoked.entry(name.clone()).or_insert(Revocation {
                    name,
                    revoked_at_ms: row.int(1)?,
                    reissued: BTreeSet::new(),
                });
                if let Some(serial) = row.opt_text(2)? {
                    entry.reissued.insert(serial);
                }
            }
            Ok(revoked.into_values().collect())
        })
    }
}
