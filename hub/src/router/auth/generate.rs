//! New principals with fresh credentials, for `brume new-principal`: the config entry to paste
//! (verifier form only: a ticket hash, a WAMP-CRA derived key, a public key) and, separately,
//! the secret the client needs, which the router never stores.

use super::AuthMethod;
use super::cryptosign::PrivateKey;
use super::secret::{Secret, hex_encode, random_bytes};
use super::ticket::{self, TicketHash};
use super::wampcra;

/// A generated principal.
#[derive(Debug)]
pub struct NewPrincipal {
    /// The `[[realms.principals]]` entry, with a comment naming the realm.
    pub toml: String,
    /// What the secret is ("ticket", "WAMP-CRA secret", "cryptosign private key (hex seed)").
    pub secret_kind: &'static str,
    /// The secret for the client, to show once.
    pub secret: Secret,
}

/// Why no principal was generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerateError {
    #[error("authid must not be empty")]
    EmptyAuthid,
    #[error("role must not be empty")]
    EmptyRole,
    #[error("role \"trusted\" is reserved for in-process sessions")]
    ReservedRole,
    #[error("anonymous sessions need no principal")]
    Anonymous,
}

/// A quoted TOML string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Generates a principal for `method` with a strong random secret (256 bits) or key pair.
pub fn new_principal(
    realm: &str,
    authid: &str,
    role: &str,
    method: AuthMethod,
) -> Result<NewPrincipal, GenerateError> {
    if authid.is_empty() {
        return Err(GenerateError::EmptyAuthid);
    }
    if role.is_empty() {
        return Err(GenerateError::EmptyRole);
    }
    if role == crate::router::authz::TRUSTED_ROLE {
        return Err(GenerateError::ReservedRole);
    }
    let (credential, secret_kind, secret) = match method {
        AuthMethod::Anonymous => return Err(GenerateError::Anonymous),
        AuthMethod::Ticket => {
            let ticket = hex_encode(&random_bytes::<32>());
            let hash = TicketHash::create(&ticket, ticket::DEFAULT_ITERATIONS);
            (
                format!("ticket = {}", quote(&hash.to_hash_string())),
                "ticket",
                ticket,
            )
        }
        AuthMethod::WampCra => {
            let password = hex_encode(&random_bytes::<32>());
            let salt = wampcra::new_salt();
            let key = wampcra::derive_key(
                &password,
                &salt,
                wampcra::DEFAULT_ITERATIONS,
                wampcra::DEFAULT_KEYLEN,
            );
            (
                format!(
                    "wampcra = {{ derived_key = {}, salt = {}, iterations = {}, keylen = {} }}",
                    quote(&key),
                    quote(&salt),
                    wampcra::DEFAULT_ITERATIONS,
                    wampcra::DEFAULT_KEYLEN
                ),
                "WAMP-CRA secret",
                password,
            )
        }
        AuthMethod::Cryptosign => {
            let key = PrivateKey::generate();
            (
                format!(
                    "cryptosign = {{ public_keys = [{}] }}",
                    quote(&key.public_key_hex())
                ),
                "cryptosign private key (hex seed)",
                key.to_hex(),
            )
        }
    };
    let toml = format!(
        "# Principal {} of realm {}: paste under that realm's [[realms]] entry.\n\
         [[realms.principals]]\n\
         authid = {}\n\
         role = {}\n\
         {credential}\n",
        quote(authid),
        quote(realm),
        quote(authid),
        quote(role),
    );
    Ok(NewPrincipal {
        toml,
        secret_kind,
        secret: Secret::new(secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_hold_only_the_verifier() {
        for m in [
            AuthMethod::Ticket,
            AuthMethod::WampCra,
            AuthMethod::Cryptosign,
        ] {
            let p = new_principal("brume", "app \"1\"", "app", m).unwrap();
            assert!(!p.toml.contains(p.secret.expose()), "{m}: {}", p.toml);
            assert!(p.toml.contains("[[realms.principals]]"));
            let parsed: toml::Table = toml::from_str(&p.toml).unwrap();
            let entry = &parsed["realms"]["principals"][0];
            assert_eq!(entry["authid"].as_str(), Some("app \"1\""));
            assert_eq!(p.secret.expose().len(), 64);
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            new_principal("r", "", "app", AuthMethod::Ticket).unwrap_err(),
            GenerateError::EmptyAuthid
        );
        assert_eq!(
            new_principal("r", "a", "trusted", AuthMethod::Ticket).unwrap_err(),
            GenerateError::ReservedRole
        );
        assert_eq!(
            new_principal("r", "a", "x", AuthMethod::Anonymous).unwrap_err(),
            GenerateError::Anonymous
        );
    }
}
