//! Device secrets: generated at provisioning, shown once, stored only as a salted SHA-256 hash.
//!
//! Gateways that authenticate devices (MQTT passwords, CoAP PSKs) will check a presented secret
//! with [`SecretHash::verify`]; the clear secret never reaches the database or the logs.

use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

pub use crate::router::auth::Secret;
use crate::router::auth::secret::hex_encode;

/// Bytes of randomness in a secret (shown as twice as many hex digits).
pub const SECRET_BYTES: usize = 24;
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

/// A new random device secret, as returned once by `brume.things.provision`:
/// [`SECRET_BYTES`] random bytes as lowercase hex, in the hub's one [`Secret`] type (hidden from
/// `Debug`).
pub fn generate() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(hex_encode(&bytes))
}

/// SHA-256 of a random salt followed by the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    salt: [u8; SALT_BYTES],
    hash: [u8; HASH_BYTES],
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    /// Hashes `secret` with a new random salt.
    pub fn new(secret: &Secret) -> SecretHash {
        let mut salt = [0u8; SALT_BYTES];
        rand::rng().fill_bytes(&mut salt);
        SecretHash {
            salt,
            hash: digest(&salt, secret.expose().as_bytes()),
        }
    }

    /// Rebuilds a hash read from the database; `None` if the lengths are wrong.
    pub fn from_parts(salt: &[u8], hash: &[u8]) -> Option<SecretHash> {
        Some(SecretHash {
            salt: salt.try_into().ok()?,
            hash: hash.try_into().ok()?,
        })
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn hash(&self) -> &[u8] {
        &self.hash
    }

    /// Whether `presented` is the secret this hash was made from (constant-time comparison).
    pub fn verify(&self, presented: &str) -> bool {
        let got = digest(&self.salt, presented.as_bytes());
        got.ct_eq(&self.hash).into()
    }
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; HASH_BYTES] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_themselves() {
        let s = generate();
        assert_eq!(s.expose().len(), SECRET_BYTES * 2);
        let h = SecretHash::new(&s);
        assert!(h.verify(s.expose()));
        assert!(!h.verify("wrong"));
        let again = SecretHash::from_parts(h.salt(), h.hash()).unwrap();
        assert!(again.verify(s.expose()));
        assert!(SecretHash::from_parts(&[1, 2], h.hash()).is_none());
        assert_ne!(generate(), s);
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
