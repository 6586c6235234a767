//! A realm with a principal for every authentication method, and the secrets their clients use.
//!
//! Iteration counts are kept low so that tests stay fast; `brume new-principal` uses real ones.

use std::path::Path;

use hub::client::ClientAuth;
use hub::config::{CryptosignSection, PrincipalSection, RealmSection, WampCraSection};
use hub::router::auth::Secret;
use hub::router::auth::cryptosign::PrivateKey;
use hub::router::auth::ticket::TicketHash;
use hub::router::auth::wampcra;

/// The realm that requires authentication.
pub const REALM: &str = "secure";

pub const TICKET_AUTHID: &str = "ticket-user";
pub const TICKET: &str = "ticket-secret-1";
pub const CRA_SALTED_AUTHID: &str = "cra-salted";
pub const CRA_PASSWORD: &str = "cra-password-2";
pub const CRA_SALT: &str = "c2FsdHktc2FsdA";
pub const CRA_ITERATIONS: u32 = 1000;
pub const CRA_PLAIN_AUTHID: &str = "cra-plain";
pub const CRA_PLAIN_SECRET: &str = "plain-secret-3";
pub const DEVICE_AUTHID: &str = "device-1";
/// The device's Ed25519 seed (hex).
pub const DEVICE_KEY: &str = "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510";

/// The methods a client can be configured for, by test name.
pub const METHODS: [&str; 4] = ["ticket", "wampcra-salted", "wampcra-plain", "cryptosign"];

/// A principal `authid` of role `role` whose only credential is `ticket` (hashed cheaply: tests
/// only).
pub fn ticket_principal(authid: &str, role: &str, ticket: &str) -> PrincipalSection {
    PrincipalSection {
        authid: authid.to_owned(),
        role: role.to_owned(),
        ticket: Some(Secret::new(
            TicketHash::create(ticket, 1000).to_hash_string(),
        )),
        wampcra: None,
        cryptosign: None,
    }
}

/// The principals of [`REALM`], every role `role`; the plain WAMP-CRA secret goes into a file in
/// `dir`, as the config requires.
pub fn principals(dir: &Path, role: &str) -> Vec<PrincipalSection> {
    let secret_file = dir.join("cra-plain.secret");
    std::fs::write(&secret_file, format!("{CRA_PLAIN_SECRET}\n")).expect("write secret file");
    let device = PrivateKey::from_hex(DEVICE_KEY).expect("device key");
    let p = |authid: &str| PrincipalSection {
        authid: authid.to_owned(),
        role: role.to_owned(),
        ticket: None,
        wampcra: None,
        cryptosign: None,
    };
    vec![
        ticket_principal(TICKET_AUTHID, role, TICKET),
        PrincipalSection {
            wampcra: Some(WampCraSection {
                derived_key: Some(Secret::new(wampcra::derive_key(
                    CRA_PASSWORD,
                    CRA_SALT,
                    CRA_ITERATIONS,
                    32,
                ))),
                salt: Some(CRA_SALT.to_owned()),
                iterations: Some(CRA_ITERATIONS),
                keylen: Some(32),
                ..WampCraSection::default()
            }),
            ..p(CRA_SALTED_AUTHID)
        },
        PrincipalSection {
            wampcra: Some(WampCraSection {
                secret_file: Some(secret_file),
                ..WampCraSection::default()
            }),
            ..p(CRA_PLAIN_AUTHID)
        },
        PrincipalSection {
            cryptosign: Some(CryptosignSection {
                public_keys: vec![device.public_key_hex()],
            }),
            ..p(DEVICE_AUTHID)
        },
    ]
}

/// [`REALM`] without anonymous access and without roles (so everything is allowed).
pub fn realm(dir: &Path) -> RealmSection {
    RealmSection {
        history: Vec::new(),
        name: REALM.to_owned(),
        anonymous: false,
        strict_uris: false,
        roles: Default::default(),
        principals: principals(dir, "app"),
    }
}

/// The authid a method's principal has.
pub fn authid(method: &str) -> &'static str {
    match method {
        "ticket" => TICKET_AUTHID,
        "wampcra-salted" => CRA_SALTED_AUTHID,
        "wampcra-plain" => CRA_PLAIN_AUTHID,
        "cryptosign" => DEVICE_AUTHID,
        other => panic!("unknown method {other}"),
    }
}

/// The right credentials for a method.
pub fn good(method: &str) -> ClientAuth {
    creds(method, authid(method), false)
}

/// The right authid with a wrong secret (or another key).
pub fn wrong_secret(method: &str) -> ClientAuth {
    creds(method, authid(method), true)
}

/// An authid the realm does not know, with the secret of a known one.
pub fn unknown_authid(method: &str) -> ClientAuth {
    creds(method, "nobody", false)
}

fn creds(method: &str, authid: &str, wrong: bool) -> ClientAuth {
    let secret = |s: &str| {
        if wrong { format!("{s}x") } else { s.to_owned() }
    };
    match method {
        "ticket" => ClientAuth::Ticket {
            authid: authid.into(),
            ticket: secret(TICKET),
        },
        "wampcra-salted" => ClientAuth::WampCra {
            authid: authid.into(),
            secret: secret(CRA_PASSWORD),
        },
        "wampcra-plain" => ClientAuth::WampCra {
            authid: authid.into(),
            secret: secret(CRA_PLAIN_SECRET),
        },
        "cryptosign" => ClientAuth::Cryptosign {
            authid: Some(authid.into()),
            key: if wrong {
                PrivateKey::generate()
            } else {
                PrivateKey::from_hex(DEVICE_KEY).expect("device key")
            },
            channel_binding: false,
        },
        other => panic!("unknown method {other}"),
    }
}
