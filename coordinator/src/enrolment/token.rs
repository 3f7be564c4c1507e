//! Join tokens: 256 random bits behind a versioned prefix, handed to a new host once and
//! kept by serve only as their SHA-256.

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

const PREFIX: &str = "troop-join-1.";
/// Anything longer is not a token; its hash is not worth a database lookup.
pub const MAX_TOKEN_LEN: usize = 128;

/// A new token.
pub fn new_token() -> Result<String, rand::rand_core::OsError> {
    let mut secret = [0u8; 32];
    OsRng.try_fill_bytes(&mut secret)?;
    Ok(format!("{PREFIX}{}", hex::encode(secret)))
}

/// The hash serve stores and looks a presented token up by.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a join token (says what it is not, never echoing it).
pub fn check_shape(token: &str) -> Result<(), String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "the join token has {} characters; a token has {}",
            token.len(),
            PREFIX.len() + 64
        ));
    }
    match token.strip_prefix(PREFIX) {
        Some(secret) if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(())
        }
        _ => Err(format!(
            "not a join token (one starts {PREFIX:?} and has 64 hex digits after it)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_new_each_time_and_hash_stably() {
        let (one, two) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(one, two);
        check_shape(&one).unwrap();
        assert_eq!(token_sha256(&one), token_sha256(&one));
        assert_ne!(token_sha256(&one), token_sha256(&two));
        assert!(!token_sha256(&one).contains(&one[PREFIX.len()..]));
    }

    #[test]
    fn a_malformed_token_is_named_without_being_echoed() {
        for bad in ["", "troop-join-1.", "troop-join-1.zz", "secret-value"] {
            let error = check_shape(bad).unwrap_err();
            assert!(error.contains("not a join token"), "{error}");
        }
        let long = "x".repeat(500);
        assert!(!check_shape(&long).unwrap_err().contains(&long));
    }
}
