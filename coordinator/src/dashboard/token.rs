//! Operator tokens for the dashboard: `troop pki operator-token` signs a name and an expiry
//! with serve's signing key (domain-separated from commands, so a token is never a
//! command and a command never a token); serve checks the signature and the expiry, and
//! takes the role from `[[operators]]` at each request, so a changed role applies at once.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// What tokens are signed under; commands use `troop/v1/command\0`.
const DOMAIN: &[u8] = b"troop/v1/operator-token\0";
const PREFIX: &str = "troop-operator-1";
/// Longest token text read at all: a real one is about 330 characters.
const MAX_TOKEN: usize = 2048;
/// Longest lifetime `troop pki operator-token` issues.
pub const MAX_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// What a token says, once its signature and expiry hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorToken {
    /// The operator, as `[[operators]]` names them.
    pub name: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    /// Names this token in the access log without showing it.
    pub id: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired { at_ms: i64 },
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("this is not an operator token"),
            TokenError::BadSignature => {
                f.write_str("the token is not signed by this serve's signing key")
            }
            TokenError::Expired { .. } => f.write_str("the token has expired"),
        }
    }
}

impl std::error::Error for TokenError {}

/// A new token for `name`, valid from `now_ms` for `ttl_ms`.
pub fn issue(key: &SigningKey, name: &str, now_ms: i64, ttl_ms: i64) -> String {
    let token = OperatorToken {
        name: name.to_string(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        id: uuid::Uuid::new_v4().to_string(),
    };
    let payload = serde_json::to_vec(&token).unwrap_or_default();
    let signature = key.sign(&signed(&payload));
    format!(
        "{PREFIX}.{}.{}",
        hex::encode(&payload),
        hex::encode(signature.to_bytes())
    )
}

/// The token `text` names, if `key` signed it and it has not expired at `now_ms`.
pub fn verify(text: &str, key: &VerifyingKey, now_ms: i64) -> Result<OperatorToken, TokenError> {
    let text = text.trim();
    if text.len() > MAX_TOKEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = text.split('.');
    let (Some(PREFIX), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let payload = hex::decode(payload).map_err(|_| TokenError::Malformed)?;
    let signature: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    key.verify(&signed(&payload), &Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    let token: OperatorToken =
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if now_ms >= token.expires_at_ms {
        return Err(TokenError::Expired {
            at_ms: token.expires_at_ms,
        });
    }
    Ok(token)
}

fn signed(payload: &[u8]) -> Vec<u8> {
    [DOMAIN, payload].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_token_names_its_operator_until_it_expires() {
        let text = issue(&key(1), "alice", 1_000, 60_000);
        let token = verify(&text, &key(1).verifying_key(), 2_000).unwrap();
        assert_eq!(token.name, "alice");
        assert_eq!(token.expires_at_ms, 61_000);
        assert_eq!(
            verify(&text, &key(1).verifying_key(), 61_000),
            Err(TokenError::Expired { at_ms: 61_000 })
        );
    }

    #[test]
    fn another_keys_token_a_tampered_one_and_garbage_are_refused() {
        let text = issue(&key(2), "alice", 1_000, 60_000);
        assert_eq!(
            verify(&text, &key(1).verifying_key(), 2_000),
            Err(TokenError::BadSignature)
        );
        // Rename alice to admin, keeping the signature.
        let mut parts: Vec<String> = text.split('.').map(str::to_string).collect();
        let payload = String::from_utf8(hex::decode(&parts[1]).unwrap()).unwrap();
        parts[1] = hex::encode(payload.replace("alice", "admin"));
        let tampered = parts.join(".");
        assert_eq!(
            verify(&tampered, &key(2).verifying_key(), 2_000),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", "troop-operator-1", "a.b.c", &"x".repeat(5000)] {
            assert_eq!(
                verify(garbage, &key(2).verifying_key(), 2_000),
                Err(TokenError::Malformed),
                "{garbage:.20}"
            );
        }
    }

    #[test]
    fn a_command_signature_is_no_token() {
        // The same bytes signed as a command (another domain) do not verify as a token.
        let payload =
            br#"{"name":"alice","issued_at_ms":0,"expires_at_ms":9999999999999,"id":"x"}"#;
        let as_command = key(1).sign(&[b"troop/v1/command\0".as_slice(), payload].concat());
        let text = format!(
            "{PREFIX}.{}.{}",
            hex::encode(payload),
            hex::encode(as_command.to_bytes())
        );
        assert_eq!(
            verify(&text, &key(1).verifying_key(), 1),
            Err(TokenError::BadSignature)
        );
    }
}
