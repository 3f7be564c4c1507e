//! The signed command envelope.
//!
//! The signature covers `SIGNING_DOMAIN || payload`, where `payload` is the exact bytes
//! that travel in `SignedCommand.payload`. Verification happens on those bytes before they
//! are decoded, so a forged command never reaches the protobuf decoder's output.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::pb;
use crate::refusal::Refusal;

/// Domain separation: a troop command signature can never be mistaken for a signature
/// over anything else made with the same key.
pub const SIGNING_DOMAIN: &[u8] = b"troop/v1/command\0";

/// Lowercase hex of the first 8 bytes of SHA-256 over the 32-byte raw public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// An Ed25519 public key from its 32 raw bytes, as `TrustKeys` carries them and stores
/// keep them; says what is wrong otherwise.
pub fn raw_public_key(raw: &[u8]) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| format!("a key of {} bytes; Ed25519 keys are 32", raw.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + payload.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(payload);
    message
}

/// Serializes `command` and signs the resulting bytes.
pub fn sign_command(command: &pb::Command, key: &SigningKey) -> pb::SignedCommand {
    sign_payload(command.encode_to_vec(), key)
}

/// Signs payload bytes as they are; callers that already hold encoded bytes use this.
pub fn sign_payload(payload: Vec<u8>, key: &SigningKey) -> pb::SignedCommand {
    let signature = key.sign(&signed_message(&payload));
    pb::SignedCommand {
        payload,
        signature: signature.to_bytes().to_vec(),
        key_id: key_id(&key.verifying_key()),
    }
}

/// The coordinator keys an agent trusts, by key id. Several at once allow rotation.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let keys = keys.into_iter().map(|key| (key_id(&key), key)).collect();
        Self { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature over the exact payload bytes, then decodes them.
    pub fn verify(&self, signed: &pb::SignedCommand) -> Result<pb::Command, Refusal> {
        if signed.key_id.is_empty() {
            return Err(Refusal::MissingKeyId);
        }
        let key = self
            .keys
            .get(&signed.key_id)
            .ok_or_else(|| Refusal::UnknownKey {
                key_id: printable(&signed.key_id),
            })?;
        let signature =
            Signature::from_slice(&signed.signature).map_err(|_| Refusal::MalformedSignature {
                len: signed.signature.len(),
            })?;
        key.verify_strict(&signed_message(&signed.payload), &signature)
            .map_err(|_| Refusal::BadSignature {
                key_id: signed.key_id.clone(),
            })?;
        pb::Command::decode(signed.payload.as_slice()).map_err(Refusal::MalformedPayload)
    }
}

/// Text from the network (key ids, command ids) as it may be logged or echoed back:
/// at most 64 characters, non-printable ones replaced.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn command() -> pb::Command {
        pb::Command {
            trace_context: None,
            command_id: "c1".into(),
            agent_id: "web-1".into(),
            issued_at_unix_ms: 1,
            expires_at_unix_ms: 2,
            action: Some(pb::command::Action::AbortAll(pb::AbortAll {})),
        }
    }

    #[test]
    fn key_id_is_sixteen_hex_digits_of_sha256() {
        let id = key_id(&key(1).verifying_key());
        let digest = Sha256::digest(key(1).verifying_key().as_bytes());
        assert_eq!(id, hex::encode(&digest[..8]));
        assert_eq!(id.len(), 16);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn round_trip() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let signed = sign_command(&command(), &key(1));
        assert_eq!(trusted.verify(&signed).unwrap(), command());
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let signed = sign_command(&command(), &key(1));
        for byte in 0..signed.payload.len() {
            let mut tampered = signed.clone();
            tampered.payload[byte] ^= 1;
            assert!(matches!(
                trusted.verify(&tampered),
                Err(Refusal::BadSignature { .. })
            ));
        }
        for byte in 0..signed.signature.len() {
            let mut tampered = signed.clone();
            tampered.signature[byte] ^= 0x80;
            assert!(trusted.verify(&tampered).is_err());
        }
    }

    #[test]
    fn a_trace_context_grafted_on_after_signing_is_refused() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let signed = sign_command(&command(), &key(1));
        let mut grafted = command();
        grafted.trace_context = Some(pb::TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: String::new(),
        });
        // The same signature over a payload that now names a trace.
        let tampered = pb::SignedCommand {
            payload: grafted.encode_to_vec(),
            ..signed
        };
        assert!(matches!(
            trusted.verify(&tampered),
            Err(Refusal::BadSignature { .. })
        ));
    }

    #[test]
    fn signature_without_domain_prefix_is_refused() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let payload = command().encode_to_vec();
        let mut signed = sign_payload(payload.clone(), &key(1));
        signed.signature = key(1).sign(&payload).to_bytes().to_vec();
        assert!(matches!(
            trusted.verify(&signed),
            Err(Refusal::BadSignature { .. })
        ));
    }

    #[test]
    fn trusted_key_id_with_another_keys_signature_is_refused() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let mut signed = sign_command(&command(), &key(2));
        signed.key_id = key_id(&key(1).verifying_key());
        assert!(matches!(
            trusted.verify(&signed),
            Err(Refusal::BadSignature { .. })
        ));
    }

    #[test]
    fn unknown_missing_and_malformed_are_distinct_reasons() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let signed = sign_command(&command(), &key(2));
        assert!(matches!(
            trusted.verify(&signed),
            Err(Refusal::UnknownKey { .. })
        ));
        let mut no_id = sign_command(&command(), &key(1));
        no_id.key_id.clear();
        assert!(matches!(trusted.verify(&no_id), Err(Refusal::MissingKeyId)));
        let mut empty = sign_command(&command(), &key(1));
        empty.signature.clear();
        assert!(matches!(
            trusted.verify(&empty),
            Err(Refusal::MalformedSignature { len: 0 })
        ));
    }

    #[test]
    fn signed_garbage_is_a_malformed_payload() {
        let trusted = TrustedKeys::new([key(1).verifying_key()]);
        let signed = sign_payload(vec![0xff; 16], &key(1));
        assert!(matches!(
            trusted.verify(&signed),
            Err(Refusal::MalformedPayload(_))
        ));
    }
}
