//! WAMP-CRA: the router sends a challenge text, the client answers
//! base64(HMAC-SHA256(key, challenge)). With a plain secret the key is the secret's UTF-8 bytes;
//! salted, the key is the base64 *text* of PBKDF2-HMAC-SHA256(password, salt, iterations, keylen)
//! (Autobahn's `derive_key`), and the CHALLENGE carries salt, iterations and keylen so the client
//! can derive it. The router therefore only ever needs the derived key, never the password.

use std::time::SystemTime;

use hmac::{KeyInit as _, Mac as _};
use sha2::Sha256;

use super::secret::{Secret, b64, b64_decode, b64_nopad, random_bytes};
use crate::router::meta::iso8601;
use crate::wamp::{Dict, Id, Value};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Iterations for keys made by `brume new-principal` (Autobahn's default is 1000; the client
/// pays this once per login, the router never does).
pub const DEFAULT_ITERATIONS: u32 = 100_000;
/// Derived key length made by `brume new-principal` (Autobahn's default).
pub const DEFAULT_KEYLEN: u32 = 32;
/// Upper bounds accepted in config and in a CHALLENGE (a client refuses absurd work).
pub const MAX_ITERATIONS: u32 = 10_000_000;
pub const MAX_KEYLEN: u32 = 256;

/// What the router holds to check a WAMP-CRA answer. `Debug` hides the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CraKey {
    /// The derived key (base64 text) and the parameters that made it.
    Salted {
        derived_key: Secret,
        salt: String,
        iterations: u32,
        keylen: u32,
    },
    /// A plain secret, used as the HMAC key as is.
    Plain { secret: Secret },
}

impl CraKey {
    /// Derives the salted form from a password.
    pub fn salted(password: &str, salt: &str, iterations: u32, keylen: u32) -> CraKey {
        CraKey::Salted {
            derived_key: Secret::new(derive_key(password, salt, iterations, keylen)),
            salt: salt.to_owned(),
            iterations,
            keylen,
        }
    }

    /// The HMAC key.
    pub fn hmac_key(&self) -> &[u8] {
        match self {
            CraKey::Salted { derived_key, .. } => derived_key.expose().as_bytes(),
            CraKey::Plain { secret } => secret.expose().as_bytes(),
        }
    }

    /// CHALLENGE.Extra for `challenge`: the challenge text, plus the salt parameters if salted.
    pub fn challenge_extra(&self, challenge: &str) -> Dict {
        let mut extra = Dict::new();
        extra.insert("challenge".into(), Value::from(challenge));
        if let CraKey::Salted {
            salt,
            iterations,
            keylen,
            ..
        } = self
        {
            extra.insert("salt".into(), Value::from(salt.as_str()));
            extra.insert("iterations".into(), Value::from(u64::from(*iterations)));
            extra.insert("keylen".into(), Value::from(u64::from(*keylen)));
        }
        extra
    }
}

/// A fresh random salt, as text (WAMP-CRA salts travel as strings and are used as UTF-8).
pub fn new_salt() -> String {
    b64_nopad(&random_bytes::<16>())
}

/// Autobahn's `derive_key`: base64(PBKDF2-HMAC-SHA256(password, salt, iterations, keylen)).
pub fn derive_key(password: &str, salt: &str, iterations: u32, keylen: u32) -> String {
    let len = usize::try_from(keylen).unwrap_or(32);
    let mut out = vec![0u8; len];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
    b64(&out)
}

/// HMAC-SHA256 over `challenge`. HMAC takes keys of any length, so this is `None` only in theory.
fn mac(key: &[u8], challenge: &str) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(challenge.as_bytes());
    Some(m)
}

/// Autobahn's `compute_wcs`: base64(HMAC-SHA256(key, challenge)).
pub fn sign(key: &[u8], challenge: &str) -> String {
    mac(key, challenge)
        .map(|m| b64(&m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `signature` is the right answer to `challenge` under `key` (constant-time).
pub fn verify(key: &[u8], challenge: &str, signature: &str) -> bool {
    let Some(sig) = b64_decode(signature.trim()) else {
        return false;
    };
    mac(key, challenge).is_some_and(|m| m.verify_slice(&sig).is_ok())
}

/// The challenge text: JSON with who is being challenged, a nonce, the time and the session id
/// the session will get. The client signs it exactly as received.
pub fn challenge_text(authid: &str, authrole: &str, session: Id, now: SystemTime) -> String {
    let challenge = serde_json::json!({
        "authid": authid,
        "authrole": authrole,
        "authmethod": "wampcra",
        "authprovider": "static",
        "nonce": b64(&random_bytes::<16>()),
        "timestamp": iso8601(now),
        "session": session,
    });
    challenge.to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use std::time::UNIX_EPOCH;

    // Vectors computed with Python's hashlib/hmac, which Autobahn's derive_key/compute_wcs wrap.
    const DERIVED: &str = "Eu7CQLfR+/Ffb+275A4s9/6H/RGKYxM4s6IMrsNKzC8=";

    #[test]
    fn derive_key_matches_autobahn() {
        assert_eq!(derive_key("secret123", "salt123", 1000, 32), DERIVED);
    }

    #[test]
    fn signatures_match_autobahn() {
        let challenge = "{\"nonce\":\"abc\"}";
        assert_eq!(
            sign(DERIVED.as_bytes(), challenge),
            "8xAPKbPsxfCFKz6H1roFoJf8DBlJFWc2j8HYr3YUB+Y="
        );
        assert_eq!(
            sign(b"secret123", challenge),
            "lYIB7ZG/9J/87flwH78c09VppbgU99xcrOLMMilJsrw="
        );
        assert!(verify(
            b"secret123",
            challenge,
            "lYIB7ZG/9J/87flwH78c09VppbgU99xcrOLMMilJsrw="
        ));
        assert!(!verify(
            b"secret124",
            challenge,
            "lYIB7ZG/9J/87flwH78c09VppbgU99xcrOLMMilJsrw="
        ));
        assert!(!verify(b"secret123", challenge, "not base64"));
    }

    #[test]
    fn salted_key_carries_its_parameters() {
        let k = CraKey::salted("secret123", "salt123", 1000, 32);
        assert_eq!(k.hmac_key(), DERIVED.as_bytes());
        let extra = k.challenge_extra("c");
        assert_eq!(extra.get("salt"), Some(&Value::from("salt123")));
        assert_eq!(extra.get("iterations"), Some(&Value::Int(1000)));
        assert_eq!(extra.get("keylen"), Some(&Value::Int(32)));
        assert!(!format!("{k:?}").contains(DERIVED));
        let plain = CraKey::Plain {
            secret: Secret::new("s"),
        };
        assert_eq!(plain.challenge_extra("c").len(), 1);
    }

    #[test]
    fn challenge_is_json_with_the_identity() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = challenge_text("app1", "app", 42, t);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["authid"], "app1");
        assert_eq!(v["authrole"], "app");
        assert_eq!(v["authmethod"], "wampcra");
        assert_eq!(v["session"], 42);
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
