//! Ticket hashes: the router stores a salted PBKDF2-HMAC-SHA256 hash of each ticket, never the
//! ticket, in a self-describing PHC-style string:
//!
//! ```text
//! $pbkdf2-sha256$i=<iterations>$<salt, base64 without padding>$<hash, base64 without padding>
//! ```
//!
//! Verification recomputes the hash and compares in constant time.

use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::secret::{b64_nopad, b64_nopad_decode, random_bytes};

/// The scheme tag at the start of every ticket hash.
pub const SCHEME: &str = "pbkdf2-sha256";

/// Iterations for hashes made by `brume new-principal`. Its tickets are 256 random bits, so the
/// count protects only hand-chosen tickets; it is kept moderate because the router runs it on
/// every ticket login. Hashes made elsewhere may use any count up to [`MAX_ITERATIONS`].
pub const DEFAULT_ITERATIONS: u32 = 100_000;

/// Refused above this, so a config cannot make every login take seconds.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// A parsed ticket hash. `Debug` hides the salt and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl std::fmt::Debug for TicketHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketHash {{ {SCHEME}, i={}, .. }}", self.iterations)
    }
}

/// Why a ticket hash string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketHashError {
    #[error(
        "not a ticket hash (expected \"${SCHEME}$i=ITERATIONS$SALT$HASH\"; `brume new-principal --method ticket` prints one)"
    )]
    Format,
    #[error("iterations must be between 1 and {MAX_ITERATIONS}")]
    Iterations,
    #[error("salt must be at least 8 bytes and the hash 16 to 64 bytes")]
    Lengths,
}

impl TicketHash {
    /// Hashes `ticket` with a fresh 16-byte salt.
    pub fn create(ticket: &str, iterations: u32) -> TicketHash {
        let salt = random_bytes::<16>().to_vec();
        let hash = derive(ticket.as_bytes(), &salt, iterations, 32);
        TicketHash {
            iterations,
            salt,
            hash,
        }
    }

    /// A hash no ticket is known to match (random salt and hash), with the cost of a real one:
    /// the stand-in for unknown authids. Making it costs nothing, so a HELLO for an unknown
    /// authid is not slower than one for a known authid.
    pub(crate) fn unmatchable(iterations: u32) -> TicketHash {
        TicketHash {
            iterations,
            salt: random_bytes::<16>().to_vec(),
            hash: random_bytes::<32>().to_vec(),
        }
    }

    /// Parses the string form.
    pub fn parse(s: &str) -> Result<TicketHash, TicketHashError> {
        let mut parts = s.split('$');
        let (Some(""), Some(SCHEME), Some(params), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TicketHashError::Format);
        };
        let iterations: u32 = params
            .strip_prefix("i=")
            .and_then(|n| n.parse().ok())
            .ok_or(TicketHashError::Format)?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(TicketHashError::Iterations);
        }
        let salt = b64_nopad_decode(salt).ok_or(TicketHashError::Format)?;
        let hash = b64_nopad_decode(hash).ok_or(TicketHashError::Format)?;
        if salt.len() < 8 || !(16..=64).contains(&hash.len()) {
            return Err(TicketHashError::Lengths);
        }
        Ok(TicketHash {
            iterations,
            salt,
            hash,
        })
    }

    /// The string form, as stored in the config.
    pub fn to_hash_string(&self) -> String {
        format!(
            "${SCHEME}$i={}${}${}",
            self.iterations,
            b64_nopad(&self.salt),
            b64_nopad(&self.hash)
        )
    }

    /// Whether `ticket` is the one this hash was made from (constant-time comparison).
    pub fn verify(&self, ticket: &str) -> bool {
        let candidate = derive(
            ticket.as_bytes(),
            &self.salt,
            self.iterations,
            self.hash.len(),
        );
        candidate.ct_eq(&self.hash).into()
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

fn derive(secret: &[u8], salt: &[u8], iterations: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_parse_verify() {
        let h = TicketHash::create("open sesame", 1000);
        let s = h.to_hash_string();
        assert!(s.starts_with("$pbkdf2-sha256$i=1000$"), "{s}");
        let back = TicketHash::parse(&s).unwrap();
        assert_eq!(back, h);
        assert!(back.verify("open sesame"));
        assert!(!back.verify("open sesame "));
        assert!(!back.verify(""));
        assert!(!format!("{h:?}").contains(&b64_nopad(&h.hash)));
    }

    #[test]
    fn known_vector() {
        // PBKDF2-HMAC-SHA256("password", "saltsalt", 1, 32), as Python's hashlib computes it.
        let s = "$pbkdf2-sha256$i=1$c2FsdHNhbHQ$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw";
        let h = TicketHash::parse(s).unwrap();
        assert!(h.verify("password"));
        assert!(!h.verify("Password"));
    }

    #[test]
    fn bad_strings_are_refused() {
        for s in [
            "plain-ticket",
            "$pbkdf2-sha1$i=1$c2FsdHNhbHQ$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw",
            "$pbkdf2-sha256$1$c2FsdHNhbHQ$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw",
            "$pbkdf2-sha256$i=1$c2FsdHNhbHQ$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw$x",
            "$pbkdf2-sha256$i=1$!!$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw",
        ] {
            assert_eq!(TicketHash::parse(s), Err(TicketHashError::Format), "{s}");
        }
        assert_eq!(
            TicketHash::parse(
                "$pbkdf2-sha256$i=0$c2FsdHNhbHQ$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw"
            ),
            Err(TicketHashError::Iterations)
        );
        assert_eq!(
            TicketHash::parse(
                "$pbkdf2-sha256$i=1$c2FsdA$O+xIxXdlOv3CQzuTp9jujq55iV7ZO/Yn6XZ0x/Rfikw"
            ),
            Err(TicketHashError::Lengths)
        );
    }
}
