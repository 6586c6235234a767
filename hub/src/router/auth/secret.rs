//! Values that must never reach a log: a string wrapper whose `Debug` hides the content, and the
//! small encodings (hex, base64) the authentication methods share.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};

/// A secret string (a ticket hash, a WAMP-CRA key, a password). `Debug` prints `"***"`, so
/// configs and credentials can be logged whole without leaking it. Equality is for config
/// comparisons only; authentication compares in constant time elsewhere.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    s
}

/// Decodes hex (either case); `None` if the text is not hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Decodes exactly `N` bytes of hex.
pub fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    hex_decode(s)?.try_into().ok()
}

/// Standard base64 with padding (what WAMP-CRA uses).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64 with padding.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Standard base64 without padding (what PHC-style hash strings use).
pub fn b64_nopad(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64 without padding.
pub fn b64_nopad_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(s).ok()
}

/// `n` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRngCore as _;
    let mut out = [0u8; N];
    if rand::rngs::OsRng.try_fill_bytes(&mut out).is_err() {
        // The OS source failed (it practically never does): fall back to the thread RNG, which
        // is a CSPRNG seeded from the OS.
        use rand::RngCore as _;
        rand::rng().fill_bytes(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex_encode(&[0, 0xAB, 0xff]), "00abff");
        assert_eq!(hex_decode("00ABff"), Some(vec![0, 0xAB, 0xff]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_array::<2>("0102"), Some([1, 2]));
        assert_eq!(hex_array::<2>("010203"), None);
    }
}
