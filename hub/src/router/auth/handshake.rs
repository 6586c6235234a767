//! The router's side of authentication, without I/O: [`start`] turns a HELLO into a WELCOME, a
//! CHALLENGE (with the [`Pending`] state to keep until AUTHENTICATE) or a refusal, and
//! [`Pending::finish`] checks the AUTHENTICATE signature.
//!
//! Method choice: the first method the client offers that the realm allows for that authid
//! (`anonymous` only if the realm admits anonymous sessions). If the authid is unknown, or has
//! no credential for any offered method, the client is still challenged, with the first offered
//! method any principal of the realm uses, against a decoy that always fails: an unknown authid
//! and a wrong secret end the same way. (A client offering several methods can still learn which
//! one a known authid uses; one offering a single method learns nothing.)

use std::sync::Arc;
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;

use super::cryptosign::{self, ChannelBindingType};
use super::principal::{Principal, PrincipalStore};
use super::secret::hex_encode;
use super::{AuthMethod, wampcra};
use crate::router::outbound::AuthInfo;
use crate::wamp::{Dict, Id, Value, ids, uris};

/// Who vouches for authenticated sessions: principals come from the static config.
pub const AUTHPROVIDER: &str = "static";

/// Longest AUTHENTICATE signature looked at; anything longer fails unread.
const MAX_SIGNATURE: usize = 8 * 1024;

/// What to do after HELLO.
#[derive(Debug)]
pub enum Step {
    /// Admit the session at once (anonymous).
    Welcome(AuthInfo),
    /// Send CHALLENGE with `method` and `extra`, and keep `pending` for the AUTHENTICATE.
    Challenge {
        method: AuthMethod,
        extra: Dict,
        pending: Box<Pending>,
    },
}

/// HELLO refused: ABORT with `reason` and `message`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// A failed AUTHENTICATE, for the log (the client only learns that it failed).
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// The authid the client claimed (or its public key, for cryptosign without authid).
    pub authid: String,
    pub method: AuthMethod,
    pub cause: &'static str,
}

/// What the router remembers between CHALLENGE and AUTHENTICATE.
pub struct Pending {
    method: AuthMethod,
    principal: Arc<Principal>,
    /// False for a decoy: verification runs, then fails whatever the result.
    genuine: bool,
    claimed: String,
    check: Check,
}

enum Check {
    Ticket,
    WampCra {
        challenge: String,
    },
    Cryptosign {
        key: Box<VerifyingKey>,
        challenge: [u8; 32],
        channel: Option<[u8; 32]>,
    },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("method", &self.method)
            .field("authid", &self.claimed)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The method being used.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// The authid the client claimed.
    pub fn claimed_authid(&self) -> &str {
        &self.claimed
    }

    /// Checks the AUTHENTICATE signature; on success, who the session is.
    pub fn finish(self, signature: &str) -> Result<AuthInfo, Failure> {
        let verified = signature.len() <= MAX_SIGNATURE
            && match &self.check {
                Check::Ticket => self
                    .principal
                    .ticket
                    .as_ref()
                    .is_some_and(|h| super::off_the_runtime(|| h.verify(signature))),
                Check::WampCra { challenge } => self
                    .principal
                    .wampcra
                    .as_ref()
                    .is_some_and(|k| wampcra::verify(k.hmac_key(), challenge, signature)),
                Check::Cryptosign {
                    key,
                    challenge,
                    channel,
                } => cryptosign::verify(key, challenge, channel.as_ref(), signature),
            };
        if verified && self.genuine {
            return Ok(AuthInfo {
                authid: self.principal.authid.clone(),
                authrole: self.principal.role.clone(),
                authmethod: self.method.as_str().to_owned(),
                authprovider: AUTHPROVIDER.to_owned(),
            });
        }
        Err(Failure {
            authid: self.claimed,
            method: self.method,
            cause: if self.genuine {
                "wrong secret or signature"
            } else {
                "unknown authid or no credential for this method"
            },
        })
    }
}

/// Identity of an anonymous session.
pub fn anonymous_info() -> AuthInfo {
    AuthInfo {
        authid: format!("anonymous-{:x}", ids::random_id()),
        authrole: "anonymous".into(),
        authmethod: AuthMethod::Anonymous.as_str().into(),
        authprovider: AUTHPROVIDER.into(),
    }
}

/// Everything from HELLO that authentication looks at.
#[derive(Debug)]
pub struct HelloAuth<'a> {
    /// `authmethods` as offered, in order.
    pub methods: &'a [&'a str],
    pub authid: Option<&'a str>,
    pub authextra: Option<&'a Dict>,
}

impl<'a> HelloAuth<'a> {
    /// Reads `authid` and `authextra` from HELLO.Details.
    pub fn new(methods: &'a [&'a str], details: &'a Dict) -> Self {
        HelloAuth {
            methods,
            authid: details.get("authid").and_then(Value::as_str),
            authextra: details.get("authextra").and_then(Value::as_dict),
        }
    }

    fn pubkey(&self) -> Option<VerifyingKey> {
        self.authextra?
            .get("pubkey")
            .and_then(Value::as_str)
            .and_then(cryptosign::parse_public_key)
    }
}

/// The realm-level facts a handshake needs.
#[derive(Clone, Copy, Debug)]
pub struct RealmAuth<'a> {
    pub anonymous: bool,
    pub principals: &'a PrincipalStore,
}

/// The connection-level facts a handshake needs.
#[derive(Clone, Copy, Debug)]
pub struct Channel<'a> {
    /// The RFC 9266 tls-exporter value, on TLS 1.3 connections.
    pub tls_exporter: Option<&'a [u8; 32]>,
    /// The session id the session will get (WAMP-CRA puts it in the challenge).
    pub session: Id,
    pub now: SystemTime,
}

/// Decides what HELLO gets.
pub fn start(
    realm: RealmAuth<'_>,
    hello: &HelloAuth<'_>,
    channel: Channel<'_>,
) -> Result<Step, Refusal> {
    let store = realm.principals;
    let offered: Vec<AuthMethod> = hello
        .methods
        .iter()
        .filter_map(|m| AuthMethod::parse(m))
        .collect();
    let pubkey = hello.pubkey();

    for &m in &offered {
        match m {
            AuthMethod::Anonymous => {
                if realm.anonymous {
                    return Ok(Step::Welcome(anonymous_info()));
                }
            }
            AuthMethod::Ticket | AuthMethod::WampCra => {
                if let Some(authid) = hello.authid
                    && let Some(p) = store.get(authid)
                    && p.supports(m)
                {
                    return challenge(m, p.clone(), true, authid, None, hello, channel);
                }
            }
            AuthMethod::Cryptosign => {
                let Some(key) = pubkey else { continue };
                let p = match hello.authid {
                    Some(a) => store.get(a),
                    None => store.by_public_key(&key),
                };
                if let Some(p) = p
                    && p.cryptosign.contains(&key)
                {
                    let claimed = hello.authid.unwrap_or(&p.authid);
                    return challenge(m, p.clone(), true, claimed, Some(key), hello, channel);
                }
            }
        }
    }

    // Nobody genuine: challenge against a decoy with the first method the realm uses at all.
    for &m in &offered {
        if m == AuthMethod::Anonymous || !store.any_supports(m) {
            continue;
        }
        match m {
            AuthMethod::Ticket | AuthMethod::WampCra => {
                let Some(authid) = hello.authid else { continue };
                let decoy = Arc::new(store.decoy(authid));
                return challenge(m, decoy, false, authid, None, hello, channel);
            }
            AuthMethod::Cryptosign => {
                let Some(key) = pubkey else {
                    return Err(Refusal {
                        reason: uris::AUTHENTICATION_FAILED,
                        message: "cryptosign needs HELLO.Details.authextra.pubkey: the Ed25519 \
                                  public key as 64 hex digits"
                            .into(),
                    });
                };
                let key_hex = hex_encode(key.as_bytes());
                let claimed = hello.authid.unwrap_or(&key_hex);
                let decoy = Arc::new(store.decoy(claimed));
                return challenge(m, decoy, false, claimed, Some(key), hello, channel);
            }
            AuthMethod::Anonymous => {}
        }
    }
    Err(Refusal {
        reason: uris::NO_MATCHING_AUTH_METHOD,
        message: "no acceptable authentication method".into(),
    })
}

fn challenge(
    method: AuthMethod,
    principal: Arc<Principal>,
    genuine: bool,
    claimed: &str,
    key: Option<VerifyingKey>,
    hello: &HelloAuth<'_>,
    channel: Channel<'_>,
) -> Result<Step, Refusal> {
    let mut extra = Dict::new();
    let check = match method {
        AuthMethod::Ticket => Check::Ticket,
        AuthMethod::WampCra => {
            let text = wampcra::challenge_text(
                &principal.authid,
                &principal.role,
                channel.session,
                channel.now,
            );
            if let Some(k) = &principal.wampcra {
                extra = k.challenge_extra(&text);
            }
            Check::WampCra { challenge: text }
        }
        AuthMethod::Cryptosign => {
            let binding = match hello.authextra.and_then(|e| e.get("channel_binding")) {
                None | Some(Value::Null) => None,
                Some(Value::Str(name)) => {
                    Some(ChannelBindingType::parse(name).map_err(|m| Refusal {
                        reason: uris::AUTHENTICATION_FAILED,
                        message: m,
                    })?)
                }
                Some(_) => {
                    return Err(Refusal {
                        reason: uris::AUTHENTICATION_FAILED,
                        message: "authextra.channel_binding must be a string".into(),
                    });
                }
            };
            let bound = match binding {
                None => None,
                Some(ChannelBindingType::TlsExporter) => {
                    Some(*channel.tls_exporter.ok_or_else(|| Refusal {
                        reason: uris::AUTHENTICATION_FAILED,
                        message:
                            "channel binding \"tls-exporter\" needs a TLS 1.3 connection".into(),
                    })?)
                }
            };
            let Some(key) = key else {
                return Err(Refusal {
                    reason: uris::AUTHENTICATION_FAILED,
                    message: "cryptosign needs authextra.pubkey".into(),
                });
            };
            let challenge = cryptosign::new_challenge();
            extra.insert("challenge".into(), Value::from(hex_encode(&challenge)));
            if let Some(b) = binding {
                extra.insert("channel_binding".into(), Value::from(b.as_str()));
            }
            Check::Cryptosign {
                key: Box::new(key),
                challenge,
                channel: bound,
            }
        }
        AuthMethod::Anonymous => {
            return Err(Refusal {
                reason: uris::AUTHENTICATION_FAILED,
                message: "anonymous has no challenge".into(),
            });
        }
    };
    Ok(Step::Challenge {
        method,
        extra,
        pending: Box::new(Pending {
            method,
            principal,
            genuine,
            claimed: claimed.to_owned(),
            check,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::auth::cryptosign::PrivateKey;
    use crate::router::auth::secret::{Secret, hex_array};
    use crate::router::auth::ticket::TicketHash;
    use crate::router::auth::wampcra::CraKey;

    struct Fixture {
        store: PrincipalStore,
        device_key: PrivateKey,
    }

    fn fixture() -> Fixture {
        let device_key = PrivateKey::generate();
        let store = PrincipalStore::new(vec![
            Principal {
                authid: "app1".into(),
                role: "app".into(),
                ticket: Some(TicketHash::create("t1", 10)),
                wampcra: None,
                cryptosign: vec![],
            },
            Principal {
                authid: "svc".into(),
                role: "service".into(),
                ticket: None,
                wampcra: Some(CraKey::salted("pw", "salt", 10, 32)),
                cryptosign: vec![],
            },
            Principal {
                authid: "legacy".into(),
                role: "service".into(),
                ticket: None,
                wampcra: Some(CraKey::Plain {
                    secret: Secret::new("plain"),
                }),
                cryptosign: vec![],
            },
            Principal {
                authid: "dev".into(),
                role: "device".into(),
                ticket: Some(TicketHash::create("t2", 10)),
                wampcra: None,
                cryptosign: vec![device_key.public_key()],
            },
        ])
        .unwrap();
        Fixture { store, device_key }
    }

    fn run(
        f: &Fixture,
        anonymous: bool,
        methods: &[&str],
        details: &Dict,
        tls: Option<&[u8; 32]>,
    ) -> Result<Step, Refusal> {
        let hello = HelloAuth::new(methods, details);
        start(
            RealmAuth {
                anonymous,
                principals: &f.store,
            },
            &hello,
            Channel {
                tls_exporter: tls,
                session: 77,
                now: SystemTime::now(),
            },
        )
    }

    fn details(authid: Option<&str>, extra: &[(&str, &str)]) -> Dict {
        let mut d = Dict::new();
        if let Some(a) = authid {
            d.insert("authid".into(), Value::from(a));
        }
        if !extra.is_empty() {
            let e: Dict = extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            d.insert("authextra".into(), Value::Dict(e));
        }
        d
    }

    fn pending(step: Result<Step, Refusal>) -> (AuthMethod, Dict, Box<Pending>) {
        match step {
            Ok(Step::Challenge {
                method,
                extra,
                pending,
            }) => (method, extra, pending),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn anonymous_only_where_admitted() {
        let f = fixture();
        let d = Dict::new();
        assert!(matches!(
            run(&f, true, &["anonymous"], &d, None),
            Ok(Step::Welcome(a)) if a.authrole == "anonymous" && a.authmethod == "anonymous"
        ));
        let r = run(&f, false, &["anonymous"], &d, None).unwrap_err();
        assert_eq!(r.reason, uris::NO_MATCHING_AUTH_METHOD);
    }

    #[test]
    fn ticket_success_and_failures_look_alike() {
        let f = fixture();
        let (m, extra, p) = pending(run(
            &f,
            false,
            &["ticket"],
            &details(Some("app1"), &[]),
            None,
        ));
        assert_eq!(m, AuthMethod::Ticket);
        assert!(extra.is_empty());
        let who = p.finish("t1").unwrap();
        assert_eq!(
            (
                who.authid.as_str(),
                who.authrole.as_str(),
                who.authmethod.as_str()
            ),
            ("app1", "app", "ticket")
        );
        assert_eq!(who.authprovider, "static");

        let (_, _, p) = pending(run(
            &f,
            false,
            &["ticket"],
            &details(Some("app1"), &[]),
            None,
        ));
        assert_eq!(
            p.finish("t2").unwrap_err().cause,
            "wrong secret or signature"
        );
        // Unknown authid: still challenged, same empty extra, then fails.
        let (m, extra, p) = pending(run(
            &f,
            false,
            &["ticket"],
            &details(Some("ghost"), &[]),
            None,
        ));
        assert_eq!(m, AuthMethod::Ticket);
        assert!(extra.is_empty());
        assert_eq!(p.finish("t1").unwrap_err().authid, "ghost");
    }

    #[test]
    fn first_offered_method_the_principal_has() {
        let f = fixture();
        // dev has ticket and cryptosign; app1 only ticket.
        let d = details(Some("app1"), &[]);
        let (m, _, _) = pending(run(&f, false, &["wampcra", "ticket"], &d, None));
        assert_eq!(m, AuthMethod::Ticket);
        // Anonymous first wins when admitted.
        assert!(matches!(
            run(&f, true, &["anonymous", "ticket"], &d, None),
            Ok(Step::Welcome(_))
        ));
        // Unknown methods are skipped; none left is no_matching_auth_method.
        let r = run(&f, false, &["scram", "x"], &d, None).unwrap_err();
        assert_eq!(r.reason, uris::NO_MATCHING_AUTH_METHOD);
    }

    #[test]
    fn salted_and_plain_wampcra() {
        let f = fixture();
        let (m, extra, p) = pending(run(
            &f,
            false,
            &["wampcra"],
            &details(Some("svc"), &[]),
            None,
        ));
        assert_eq!(m, AuthMethod::WampCra);
        let challenge = extra
            .get("challenge")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        let salt = extra.get("salt").and_then(Value::as_str).unwrap();
        let iterations = extra.get("iterations").and_then(Value::as_u64).unwrap();
        let keylen = extra.get("keylen").and_then(Value::as_u64).unwrap();
        let text: serde_json::Value = serde_json::from_str(&challenge).unwrap();
        assert_eq!(text["session"], 77);
        assert_eq!(text["authrole"], "service");
        let key = wampcra::derive_key("pw", salt, iterations as u32, keylen as u32);
        let sig = wampcra::sign(key.as_bytes(), &challenge);
        assert_eq!(p.finish(&sig).unwrap().authid, "svc");

        let (_, extra, p) = pending(run(
            &f,
            false,
            &["wampcra"],
            &details(Some("legacy"), &[]),
            None,
        ));
        assert!(!extra.contains_key("salt"));
        let challenge = extra.get("challenge").and_then(Value::as_str).unwrap();
        assert!(p.finish(&wampcra::sign(b"plain", challenge)).is_ok());
    }

    #[test]
    fn unknown_wampcra_authid_gets_a_stable_realistic_challenge() {
        let f = fixture();
        let salt_of = |authid: &str| {
            let (_, extra, _) = pending(run(
                &f,
                false,
                &["wampcra"],
                &details(Some(authid), &[]),
                None,
            ));
            (
                extra
                    .get("salt")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_owned(),
                extra.get("iterations").cloned(),
            )
        };
        let (s1, i1) = salt_of("ghost");
        let (s2, _) = salt_of("ghost");
        assert_eq!(s1, s2);
        assert_eq!(i1, Some(Value::Int(10)));
        let (_, extra, p) = pending(run(
            &f,
            false,
            &["wampcra"],
            &details(Some("ghost"), &[]),
            None,
        ));
        let challenge = extra.get("challenge").and_then(Value::as_str).unwrap();
        let key = wampcra::derive_key("pw", &s1, 10, 32);
        assert!(p.finish(&wampcra::sign(key.as_bytes(), challenge)).is_err());
    }

    #[test]
    fn cryptosign_by_authid_or_by_key() {
        let f = fixture();
        let pk = f.device_key.public_key_hex();
        for authid in [Some("dev"), None] {
            let (m, extra, p) = pending(run(
                &f,
                false,
                &["cryptosign"],
                &details(authid, &[("pubkey", &pk)]),
                None,
            ));
            assert_eq!(m, AuthMethod::Cryptosign);
            assert!(!extra.contains_key("channel_binding"));
            let c =
                hex_array::<32>(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
            let who = p.finish(&f.device_key.sign_challenge(&c, None)).unwrap();
            assert_eq!(
                (who.authid.as_str(), who.authrole.as_str()),
                ("dev", "device")
            );
        }
        // A key the store does not know, with or without authid: challenged, then refused even
        // though the signature itself is valid for that key.
        let stranger = PrivateKey::generate();
        for authid in [Some("dev"), None, Some("ghost")] {
            let (_, extra, p) = pending(run(
                &f,
                false,
                &["cryptosign"],
                &details(authid, &[("pubkey", &stranger.public_key_hex())]),
                None,
            ));
            let c =
                hex_array::<32>(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
            assert!(p.finish(&stranger.sign_challenge(&c, None)).is_err());
        }
    }

    #[test]
    fn cryptosign_channel_binding() {
        let f = fixture();
        let pk = f.device_key.public_key_hex();
        let exporter = [9u8; 32];
        let d = details(
            Some("dev"),
            &[("pubkey", &pk), ("channel_binding", "tls-exporter")],
        );
        let (_, extra, p) = pending(run(&f, false, &["cryptosign"], &d, Some(&exporter)));
        assert_eq!(
            extra.get("channel_binding"),
            Some(&Value::from("tls-exporter"))
        );
        let c = hex_array::<32>(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
        assert!(
            p.finish(&f.device_key.sign_challenge(&c, Some(&exporter)))
                .is_ok()
        );

        // Signed for another channel, or unbound.
        for other in [Some(&[8u8; 32]), None] {
            let (_, extra, p) = pending(run(&f, false, &["cryptosign"], &d, Some(&exporter)));
            let c =
                hex_array::<32>(extra.get("challenge").and_then(Value::as_str).unwrap()).unwrap();
            assert!(p.finish(&f.device_key.sign_challenge(&c, other)).is_err());
        }

        // Not TLS 1.3: refused with a reason.
        let r = run(&f, false, &["cryptosign"], &d, None).unwrap_err();
        assert_eq!(r.reason, uris::AUTHENTICATION_FAILED);
        assert!(r.message.contains("TLS 1.3"), "{}", r.message);

        // tls-unique: refused with a clear reason.
        let d = details(
            Some("dev"),
            &[("pubkey", &pk), ("channel_binding", "tls-unique")],
        );
        let r = run(&f, false, &["cryptosign"], &d, Some(&exporter)).unwrap_err();
        assert!(r.message.contains("tls-unique") && r.message.contains("tls-exporter"));
    }

    #[test]
    fn cryptosign_without_a_public_key_is_refused() {
        let f = fixture();
        let r = run(&f, false, &["cryptosign"], &details(Some("dev"), &[]), None).unwrap_err();
        assert_eq!(r.reason, uris::AUTHENTICATION_FAILED);
    }
}
