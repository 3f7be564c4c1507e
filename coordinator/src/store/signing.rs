//! Signing-key rotations as the store keeps them: one row per generation, the newest
//! being the fleet's. Generation 0 is the config's `[signing] key` and has no row.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::sql::Value;
use super::{Store, StoreError};

/// One generation of a signing-key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningGeneration {
    pub generation: u64,
    /// The public keys agents trust from this generation on.
    pub public_keys: Vec<VerifyingKey>,
    /// The private key file serve signs commands with.
    pub signer: PathBuf,
    /// The private key file that signs this generation's announcement: one the agents of
    /// the generation before trust.
    pub announcer: PathBuf,
    pub created_by: String,
}

impl Store {
    /// The key file serve signs with: the newest generation's, else `configured`
    /// (troop.toml's `[signing] key`).
    pub fn signing_key_path(&self, configured: &Path) -> Result<PathBuf, StoreError> {
        Ok(self
            .signing_generation()?
            .map_or_else(|| configured.to_path_buf(), |newest| newest.signer))
    }

    /// The newest generation, if any rotation happened.
    pub fn signing_generation(&self) -> Result<Option<SigningGeneration>, StoreError> {
        self.read(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT generation, public_keys, signer, announcer, created_by
                 FROM signing_keys ORDER BY generation DESC LIMIT 1",
                &[],
            )?
            else {
                return Ok(None);
            };
            let keys = row.text(1)?;
            let public_keys = keys
                .split(',')
                .map(|hex_key| {
                    hex::decode(hex_key)
                        .ok()
                        .and_then(|raw| troop_proto::raw_public_key(&raw).ok())
                        .ok_or(StoreError::Decode {
                            column: 1,
                            expected: "Ed25519 public keys, 32 bytes each in hex",
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(SigningGeneration {
                generation: u64::try_from(row.int(0)?).unwrap_or(0),
                public_keys,
                signer: PathBuf::from(row.text(2)?),
                announcer: PathBuf::from(row.text(3)?),
                created_by: row.text(4)?,
            }))
        })
    }

    /// Adds `next` if the newest generation is still the one before it; false if another
    /// rotation got there first.
    pub fn add_signing_generation(&self, next: &SigningGeneration) -> Result<bool, StoreError> {
        let next = next.clone();
        let now = self.dialect().now_ms();
        self.write(move |tx| {
            let newest = tx
                .query_one("SELECT COALESCE(MAX(generation), 0) FROM signing_keys", &[])?
                .int(0)?;
            let generation = i64::try_from(next.generation).unwrap_or(i64::MAX);
            if newest + 1 != generation {
                return Ok(false);
            }
            let keys: Vec<String> = next
                .public_keys
                .iter()
                .map(|key| hex::encode(key.as_bytes()))
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO signing_keys
                         (generation, public_keys, signer, announcer, created_by, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, {now})"
                ),
                &[
                    Value::Int(generation),
                    Value::Text(&keys.join(",")),
                    Value::Text(&next.signer.to_string_lossy()),
                    Value::Text(&next.announcer.to_string_lossy()),
                    Value::Text(&next.created_by),
                ],
            )?;
            Ok(true)
        })
    }
}
