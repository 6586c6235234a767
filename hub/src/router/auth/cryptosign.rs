//! WAMP-cryptosign: Ed25519 signatures over a 32-byte random challenge.
//!
//! The client announces its public key in `HELLO.Details.authextra.pubkey` (hex); the router
//! answers with `CHALLENGE.Extra.challenge` (hex of 32 random bytes); the client replies with
//! hex(signature ‖ message), where the message is the challenge, or, with channel binding, the
//! challenge XOR the 32-byte channel id. Brume binds to the TLS channel with RFC 9266
//! `tls-exporter` (see [`crate::transport::tls`]); `tls-unique` (RFC 5929) is undefined for
//! TLS 1.3 and not offered by rustls, so it is refused.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use subtle::ConstantTimeEq as _;

use super::secret::{hex_array, hex_decode, hex_encode, random_bytes};

/// The 32-byte `tls-exporter` channel binding of a connection, which a cryptosign signature may
/// cover. The TLS layer computes it; it lives here so the router does not depend on the
/// transport. `Debug` hides the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding([u8; 32]);

impl ChannelBinding {
    pub fn new(exporter: [u8; 32]) -> Self {
        ChannelBinding(exporter)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelBinding(..)")
    }
}

/// The channel binding a client asked for in `authextra.channel_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBindingType {
    /// RFC 9266: the TLS exporter with label `EXPORTER-Channel-Binding`, 32 bytes.
    TlsExporter,
}

impl ChannelBindingType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
        }
    }

    /// Parses a requested binding, explaining a refusal in words a client can show.
    pub fn parse(s: &str) -> Result<ChannelBindingType, String> {
        match s {
            "tls-exporter" => Ok(ChannelBindingType::TlsExporter),
            "tls-unique" => Err(
                "channel binding \"tls-unique\" is not supported: it is undefined for TLS 1.3 \
                 and this router's TLS stack cannot provide it; use \"tls-exporter\" (RFC 9266) \
                 or no channel binding"
                    .into(),
            ),
            other => Err(format!(
                "unknown channel binding {other:?}; this router supports \"tls-exporter\""
            )),
        }
    }
}

/// Parses a public key from 64 hex digits.
pub fn parse_public_key(hex: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&hex_array::<32>(hex)?).ok()
}

/// A fresh challenge: 32 random bytes.
pub fn new_challenge() -> [u8; 32] {
    random_bytes::<32>()
}

/// What the client signs: the challenge, XORed with the channel id when bound.
pub fn message_to_sign(challenge: &[u8; 32], channel: Option<&[u8; 32]>) -> [u8; 32] {
    let mut m = *challenge;
    if let Some(c) = channel {
        for (a, b) in m.iter_mut().zip(c) {
            *a ^= b;
        }
    }
    m
}

/// Whether `reply` (hex of signature ‖ message) answers `challenge` under `key` on this channel.
pub fn verify(
    key: &VerifyingKey,
    challenge: &[u8; 32],
    channel: Option<&[u8; 32]>,
    reply: &str,
) -> bool {
    let Some(bytes) = hex_decode(reply.trim()) else {
        return false;
    };
    let Ok(bytes) = <[u8; 96]>::try_from(bytes) else {
        return false;
    };
    let (sig, message) = bytes.split_at(64);
    let expected = message_to_sign(challenge, channel);
    let mut sig_bytes = [0u8; 64];
    sig_bytes.copy_from_slice(sig);
    let sig = Signature::from_bytes(&sig_bytes);
    // Checks both, so timing does not tell which part was wrong.
    let message_ok: bool = message.ct_eq(&expected).into();
    let signature_ok = key.verify_strict(&expected, &sig).is_ok();
    message_ok & signature_ok
}

/// An Ed25519 private key (its 32-byte seed), for signing challenges as a client. `Debug` shows
/// only the public key.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> PrivateKey {
        PrivateKey(random_bytes::<32>())
    }

    /// From the 32-byte seed in hex (the form `brume new-principal` prints, and what Autobahn's
    /// `CryptosignKey.from_bytes` takes).
    pub fn from_hex(hex: &str) -> Option<PrivateKey> {
        Some(PrivateKey(hex_array::<32>(hex.trim())?))
    }

    /// The seed in hex. Handle with care: this is the secret.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.0)
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.signing_key().verifying_key()
    }

    /// The public key in hex, as sent in `authextra.pubkey`.
    pub fn public_key_hex(&self) -> String {
        hex_encode(self.public_key().as_bytes())
    }

    /// The AUTHENTICATE signature for `challenge`: hex(signature ‖ message).
    pub fn sign_challenge(&self, challenge: &[u8; 32], channel: Option<&[u8; 32]>) -> String {
        let message = message_to_sign(challenge, channel);
        let sig = self.signing_key().sign(&message);
        let mut out = sig.to_bytes().to_vec();
        out.extend_from_slice(&message);
        hex_encode(&out)
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey {{ public: {}, .. }}", self.public_key_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from autobahn-python's test_cryptosign.py (the WAMP spec's set).
    const KEY: &str = "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510";
    const CHANNEL: &str = "62e935ae755f3d48f80d4d59f6121358c435722a67e859cc0caa8b539027f2ff";
    const SIG_UNBOUND: &str = "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const SIG_BOUND: &str = "9b6f41540c9b95b4b7b281c3042fa9c54cef43c842d62ea3fd6030fcb66e70b3e80d49d44c29d1635da9348d02ec93f3ed1ef227dfb59a07b580095c2b82f80f9d16ca518aa0c2b707f2b2a609edeca73bca8dd59817a633f35574ac6fd80d00";

    #[test]
    fn spec_vectors() {
        let key = PrivateKey::from_hex(KEY).unwrap();
        let challenge = [0xffu8; 32];
        let channel = hex_array::<32>(CHANNEL).unwrap();
        assert_eq!(key.sign_challenge(&challenge, None), SIG_UNBOUND);
        assert_eq!(key.sign_challenge(&challenge, Some(&channel)), SIG_BOUND);
        let public = key.public_key();
        assert!(verify(&public, &challenge, None, SIG_UNBOUND));
        assert!(verify(&public, &challenge, Some(&channel), SIG_BOUND));
    }

    #[test]
    fn wrong_channel_key_or_challenge_fails() {
        let key = PrivateKey::from_hex(KEY).unwrap();
        let public = key.public_key();
        let challenge = [0xffu8; 32];
        let channel = hex_array::<32>(CHANNEL).unwrap();
        // Made for a channel, checked without one, and the other way round.
        assert!(!verify(&public, &challenge, None, SIG_BOUND));
        assert!(!verify(&public, &challenge, Some(&channel), SIG_UNBOUND));
        // Another channel.
        assert!(!verify(&public, &challenge, Some(&[7u8; 32]), SIG_BOUND));
        // Another key.
        let other = PrivateKey::generate().public_key();
        assert!(!verify(&other, &challenge, None, SIG_UNBOUND));
        // Another challenge.
        assert!(!verify(&public, &[0u8; 32], None, SIG_UNBOUND));
        // Garbage.
        assert!(!verify(&public, &challenge, None, "zz"));
        assert!(!verify(&public, &challenge, None, &SIG_UNBOUND[..190]));
    }

    #[test]
    fn keys_round_trip_and_hide() {
        let k = PrivateKey::generate();
        let back = PrivateKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(back.public_key_hex(), k.public_key_hex());
        assert!(parse_public_key(&k.public_key_hex()).is_some());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
        assert!(parse_public_key("abcd").is_none());
    }

    #[test]
    fn channel_binding_names() {
        assert_eq!(
            ChannelBindingType::parse("tls-exporter"),
            Ok(ChannelBindingType::TlsExporter)
        );
        let e = ChannelBindingType::parse("tls-unique").unwrap_err();
        assert!(
            e.contains("tls-unique") && e.contains("tls-exporter"),
            "{e}"
        );
        assert!(ChannelBindingType::parse("x").is_err());
    }
}
