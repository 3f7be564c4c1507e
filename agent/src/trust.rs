//! Keys learned from signing-key rotations (`troop pki rotate-signing-key`): a
//! `TrustKeys` command, signed by a key the agent trusts and admitted like every command,
//! replaces the set of keys the agent trusts to sign commands. The set is kept in the
//! state dir (`trusted-keys.json`) and, once there, wins over the config's
//! `trust.coordinator_keys` at every start and SIGHUP: the rotation is the newer word.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use troop_proto::{Refusal, key_id, pb, raw_public_key};

pub const FILE: &str = "trusted-keys.json";
/// Keys one rotation may name: a current and a next, with room to spare.
pub const MAX_KEYS: usize = 8;

/// The trusted set a rotation gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub generation: u64,
    pub keys: Vec<VerifyingKey>,
}

impl Learned {
    /// `keys`' ids, for receipts and logs.
    pub fn key_ids(&self) -> String {
        self.keys.iter().map(key_id).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    generation: u64,
    /// Raw public keys, hex.
    keys: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a trusted-key file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
}

/// The learned set in `state_dir`, if a rotation reached this agent.
pub fn load(state_dir: &Path) -> Result<Option<Learned>, TrustFileError> {
    let path = state_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TrustFileError::Read { path, source }),
    };
    let malformed = |reason: String| TrustFileError::Malformed {
        path: path.clone(),
        reason,
    };
    let stored: Stored = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let keys = stored
        .keys
        .iter()
        .map(|hex_key| {
            let raw = hex::decode(hex_key).map_err(|e| malformed(format!("{hex_key:?}: {e}")))?;
            raw_public_key(&raw).map_err(|e| malformed(format!("{hex_key:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(malformed("it names no key".into()));
    }
    Ok(Some(Learned {
        generation: stored.generation,
        keys,
    }))
}

/// Writes `learned` to `state_dir` whole or not at all.
pub fn save(state_dir: &Path, learned: &Learned) -> std::io::Result<()> {
    let stored = Stored {
        generation: learned.generation,
        keys: learned
            .keys
            .iter()
            .map(|k| hex::encode(k.as_bytes()))
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
    crate::state_file::write_atomic(&state_dir.join(FILE), &text)
}

/// What a `TrustKeys` command does to the agent's trust.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The generation the agent follows already, with the same keys: nothing to do.
    Same,
    Replace(Learned),
}

/// Judges `command`, signed by the key `signed_by` (a key id), against the generation the
/// agent follows (0 when it trusts its config's keys).
pub fn decide(
    current: Option<&Learned>,
    command: &pb::TrustKeys,
    signed_by: &str,
) -> Result<Decision, Refusal> {
    let invalid = |m: String| Refusal::InvalidArgument(m);
    if command.public_keys.is_empty() || command.public_keys.len() > MAX_KEYS {
        return Err(invalid(format!(
            "a trusted set has 1 to {MAX_KEYS} keys, not {}",
            command.public_keys.len()
        )));
    }
    let keys = command
        .public_keys
        .iter()
        .map(|raw| raw_public_key(raw).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    if !keys.iter().any(|key| key_id(key) == signed_by) {
        return Err(invalid(format!(
            "the new set does not hold key {signed_by}, which signed it: that would lock its own coordinator out"
        )));
    }
    if command.generation == 0 {
        return Err(invalid("generation 0 is the config's own keys".into()));
    }
    let learned = Learned {
        generation: command.generation,
        keys,
    };
    match current {
        Some(now) if now.generation > learned.generation => Err(Refusal::StaleTrust(format!(
            "signing-key generation {} is older than generation {}, which this agent follows",
            learned.generation, now.generation
        ))),
        Some(now) if now.generation == learned.generation && same_keys(now, &learned) => {
            Ok(Decision::Same)
        }
        Some(now) if now.generation == learned.generation => Err(Refusal::StaleTrust(format!(
            "signing-key generation {} names other keys than the generation {} this agent follows",
            learned.generation, now.generation
        ))),
        _ => Ok(Decision::Replace(learned)),
    }
}

fn same_keys(a: &Learned, b: &Learned) -> bool {
    let ids = |l: &Learned| {
        let mut ids: Vec<String> = l.keys.iter().map(key_id).collect();
        ids.sort();
        ids
    };
    ids(a) == ids(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    fn trust(generation: u64, keys: &[u8]) -> pb::TrustKeys {
        pb::TrustKeys {
            generation,
            public_keys: keys.iter().map(|s| key(*s).as_bytes().to_vec()).collect(),
        }
    }

    fn learned(generation: u64, keys: &[u8]) -> Learned {
        Learned {
            generation,
            keys: keys.iter().map(|s| key(*s)).collect(),
        }
    }

    #[test]
    fn rotations_only_go_forward_and_keep_their_signer() {
        let old = key_id(&key(1));
        let new = key_id(&key(2));
        // From the config's keys: an overlap, signed by the old key.
        assert_eq!(
            decide(None, &trust(1, &[1, 2]), &old).unwrap(),
            Decision::Replace(learned(1, &[1, 2]))
        );
        let overlap = learned(1, &[1, 2]);
        assert_eq!(
            decide(Some(&overlap), &trust(1, &[2, 1]), &old).unwrap(),
            Decision::Same
        );
        // Retiring the old key, signed by the new one.
        assert_eq!(
            decide(Some(&overlap), &trust(2, &[2]), &new).unwrap(),
            Decision::Replace(learned(2, &[2]))
        );
        let retired = learned(2, &[2]);
        for (command, signer, code, says) in [
            (
                trust(1, &[1, 2]),
                &old,
                "stale_trust",
                "generation 1 is older than generation 2",
            ),
            (trust(2, &[2, 3]), &new, "stale_trust", "other keys"),
            (
                trust(3, &[3]),
                &new,
                "invalid_argument",
                "lock its own coordinator out",
            ),
            (trust(3, &[]), &new, "invalid_argument", "1 to 8 keys"),
            (trust(0, &[2]), &new, "invalid_argument", "generation 0"),
        ] {
            let refusal = decide(Some(&retired), &command, signer).unwrap_err();
            assert_eq!(refusal.reason(), code, "{refusal}");
            assert!(refusal.to_string().contains(says), "{refusal}");
        }
        let short = pb::TrustKeys {
            generation: 3,
            public_keys: vec![vec![0; 31]],
        };
        assert!(
            decide(None, &short, &new)
                .unwrap_err()
                .to_string()
                .contains("31 bytes")
        );
    }

    #[test]
    fn the_learned_set_survives_a_restart_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), &learned(4, &[7, 8])).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(learned(4, &[7, 8])));
        std::fs::write(
            dir.path().join(FILE),
            "{\"generation\": 1, \"keys\": [\"ab\"]}",
        )
        .unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("trusted-keys.json is not a trusted-key file"),
            "{error}"
        );
    }
}
