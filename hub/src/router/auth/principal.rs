//! A realm's principals: who may authenticate, with which role, and with what credentials.
//!
//! The store is built once from the config and shared read-only (`Arc`) by every session of the
//! realm, so lookups take no lock. Credentials are stored in verifier form only: ticket hashes,
//! WAMP-CRA derived keys (or a plain secret read from a file or the environment), Ed25519 public
//! keys. `Debug` never shows a secret.
//!
//! For an authid the store does not know, [`PrincipalStore::decoy`] makes a stand-in principal
//! whose challenge looks like a real one (a salt derived from the authid, the parameters of a
//! real principal) and whose verification costs the same and always fails, so that a client
//! cannot tell an unknown authid from a wrong secret.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use hmac::{KeyInit as _, Mac as _};
use sha2::Sha256;

use super::AuthMethod;
use super::secret::{Secret, b64, b64_nopad, random_bytes};
use super::ticket::{self, TicketHash};
use super::wampcra::CraKey;

/// One principal: an authid, the role it gets, and its credentials (one or more methods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub authid: String,
    pub role: String,
    pub ticket: Option<TicketHash>,
    pub wampcra: Option<CraKey>,
    /// Ed25519 public keys, any of which may sign.
    pub cryptosign: Vec<VerifyingKey>,
}

impl Principal {
    /// Whether this principal has a credential for `method`.
    pub fn supports(&self, method: AuthMethod) -> bool {
        match method {
            AuthMethod::Anonymous => false,
            AuthMethod::Ticket => self.ticket.is_some(),
            AuthMethod::WampCra => self.wampcra.is_some(),
            AuthMethod::Cryptosign => !self.cryptosign.is_empty(),
        }
    }
}

/// Why a set of principals was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrincipalError {
    #[error("authid {0:?} is defined twice")]
    DuplicateAuthid(String),
    #[error("public key {key} is given to both {first:?} and {second:?}")]
    DuplicateKey {
        key: String,
        first: String,
        second: String,
    },
}

/// A realm's principals, by authid and by cryptosign public key.
#[derive(Default)]
pub struct PrincipalStore {
    principals: Vec<Arc<Principal>>,
    by_authid: HashMap<String, Arc<Principal>>,
    by_key: HashMap<[u8; 32], Arc<Principal>>,
    /// Keys the decoy salts and keys; random per store, so they cannot be predicted.
    decoy_key: [u8; 32],
}

impl PrincipalStore {
    /// Indexes `principals`; authids and public keys must be unique.
    pub fn new(principals: Vec<Principal>) -> Result<PrincipalStore, PrincipalError> {
        let mut store = PrincipalStore {
            decoy_key: random_bytes::<32>(),
            ..PrincipalStore::default()
        };
        for p in principals {
            let p = Arc::new(p);
            if store
                .by_authid
                .insert(p.authid.clone(), p.clone())
                .is_some()
            {
                return Err(PrincipalError::DuplicateAuthid(p.authid.clone()));
            }
            for key in &p.cryptosign {
                if let Some(first) = store.by_key.insert(key.to_bytes(), p.clone()) {
                    return Err(PrincipalError::DuplicateKey {
                        key: super::secret::hex_encode(key.as_bytes()),
                        first: first.authid.clone(),
                        second: p.authid.clone(),
                    });
                }
            }
            store.principals.push(p);
        }
        Ok(store)
    }

    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }

    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Every principal, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.principals.iter()
    }

    /// The principal with this authid.
    pub fn get(&self, authid: &str) -> Option<&Arc<Principal>> {
        self.by_authid.get(authid)
    }

    /// The principal holding this cryptosign public key.
    pub fn by_public_key(&self, key: &VerifyingKey) -> Option<&Arc<Principal>> {
        self.by_key.get(key.as_bytes())
    }

    /// Whether any principal can use `method`.
    pub fn any_supports(&self, method: AuthMethod) -> bool {
        self.principals.iter().any(|p| p.supports(method))
    }

    fn decoy_bytes(&self, label: &str, authid: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(mut m) = hmac::Hmac::<Sha256>::new_from_slice(&self.decoy_key) {
            m.update(label.as_bytes());
            m.update(&[0]);
            m.update(authid.as_bytes());
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// A stand-in for an unknown `authid`: the role and credential parameters of the first real
    /// principal using each method, with salts and keys derived from `authid` (the same on every
    /// attempt, as a real principal's would be). Verifying against it always fails.
    pub fn decoy(&self, authid: &str) -> Principal {
        let model = |m: AuthMethod| self.principals.iter().find(|p| p.supports(m));
        let role = model(AuthMethod::WampCra)
            .or_else(|| self.principals.first())
            .map_or_else(|| "anonymous".to_owned(), |p| p.role.clone());
        let ticket_iterations = model(AuthMethod::Ticket)
            .and_then(|p| p.ticket.as_ref())
            .map_or(ticket::DEFAULT_ITERATIONS, TicketHash::iterations);
        let key = Secret::new(b64(&self.decoy_bytes("key", authid)));
        let wampcra = match model(AuthMethod::WampCra).and_then(|p| p.wampcra.as_ref()) {
            Some(CraKey::Plain { .. }) => CraKey::Plain { secret: key },
            Some(CraKey::Salted {
                iterations, keylen, ..
            }) => CraKey::Salted {
                derived_key: key,
                salt: b64_nopad(&self.decoy_bytes("salt", authid)[..16]),
                iterations: *iterations,
                keylen: *keylen,
            },
            None => CraKey::Salted {
                derived_key: key,
                salt: b64_nopad(&self.decoy_bytes("salt", authid)[..16]),
                iterations: super::wampcra::DEFAULT_ITERATIONS,
                keylen: super::wampcra::DEFAULT_KEYLEN,
            },
        };
        Principal {
            authid: authid.to_owned(),
            role,
            ticket: Some(TicketHash::unmatchable(ticket_iterations)),
            wampcra: Some(wampcra),
            cryptosign: Vec::new(),
        }
    }
}

impl PartialEq for PrincipalStore {
    fn eq(&self, other: &Self) -> bool {
        self.principals == other.principals
    }
}

impl Eq for PrincipalStore {}

impl std::fmt::Debug for PrincipalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.principals.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::auth::cryptosign::PrivateKey;

    fn principal(authid: &str) -> Principal {
        Principal {
            authid: authid.into(),
            role: "app".into(),
            ticket: None,
            wampcra: Some(CraKey::salted("pw", "salty", 10, 32)),
            cryptosign: Vec::new(),
        }
    }

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(
            PrincipalStore::new(vec![principal("a"), principal("a")]).err(),
            Some(PrincipalError::DuplicateAuthid("a".into()))
        );
        let key = PrivateKey::generate().public_key();
        let mut a = principal("a");
        a.cryptosign.push(key);
        let mut b = principal("b");
        b.cryptosign.push(key);
        assert!(matches!(
            PrincipalStore::new(vec![a, b]),
            Err(PrincipalError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn lookups() {
        let key = PrivateKey::generate().public_key();
        let mut a = principal("a");
        a.cryptosign.push(key);
        let store = PrincipalStore::new(vec![a, principal("b")]).unwrap();
        assert_eq!(store.get("b").unwrap().authid, "b");
        assert!(store.get("c").is_none());
        assert_eq!(store.by_public_key(&key).unwrap().authid, "a");
        assert!(store.any_supports(AuthMethod::Cryptosign));
        assert!(!store.any_supports(AuthMethod::Ticket));
    }

    #[test]
    fn decoys_look_like_real_principals_and_are_stable() {
        let store = PrincipalStore::new(vec![principal("a")]).unwrap();
        let d1 = store.decoy("nobody");
        let d2 = store.decoy("nobody");
        let (
            Some(CraKey::Salted {
                salt: s1,
                iterations,
                keylen,
                ..
            }),
            Some(CraKey::Salted { salt: s2, .. }),
        ) = (&d1.wampcra, &d2.wampcra)
        else {
            panic!("salted decoys expected");
        };
        assert_eq!(s1, s2, "the same authid gets the same salt every time");
        assert_eq!(
            (*iterations, *keylen),
            (10, 32),
            "parameters of a real principal"
        );
        assert_eq!(s1.len(), "salty".len().max(22));
        assert_eq!(d1.role, "app");
        let Some(CraKey::Salted { salt: other, .. }) = store.decoy("someone else").wampcra else {
            panic!("salted decoy expected");
        };
        assert_ne!(&other, s1);
    }

    #[test]
    fn debug_shows_no_secret() {
        let store = PrincipalStore::new(vec![principal("a")]).unwrap();
        let text = format!("{store:?}");
        let Some(CraKey::Salted { derived_key, .. }) = &store.get("a").unwrap().wampcra else {
            panic!("salted");
        };
        assert!(!text.contains(derived_key.expose()), "{text}");
        assert!(text.contains("\"a\""));
    }
}
