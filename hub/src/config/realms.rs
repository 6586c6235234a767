//! `[[realms]]`: realms, their event history, and who may authenticate (principals and their
//! credentials) and do what (roles and their rules).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid, section_error};
use crate::router::RealmConfig;
use crate::router::auth::cryptosign;
use crate::router::auth::ticket::TicketHash;
use crate::router::auth::wampcra::{self, CraKey};
use crate::router::auth::{Principal, PrincipalStore, Secret};
use crate::router::authz::{self, Action, Authorizer, Rule};
use crate::wamp::{MatchPolicy, uri};

/// `[[realms]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSection {
    pub name: String,
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default)]
    pub strict_uris: bool,
    /// Topic patterns whose last events are kept for `wamp.subscription.get_events`.
    #[serde(default)]
    pub history: Vec<HistorySection>,
    /// `[realms.roles.NAME]`: what each role may do. None configured means no restriction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleSection>,
    /// `[[realms.principals]]`: who may authenticate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<PrincipalSection>,
}

/// `[realms.roles.NAME]`
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

/// One authorization rule: `{ uri, match, allow }`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub uri: String,
    #[serde(rename = "match", default)]
    pub policy: UriMatch,
    pub allow: Vec<Action>,
}

/// How a rule's URI matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UriMatch {
    #[default]
    Exact,
    Prefix,
    Wildcard,
}

impl From<UriMatch> for MatchPolicy {
    fn from(m: UriMatch) -> Self {
        match m {
            UriMatch::Exact => MatchPolicy::Exact,
            UriMatch::Prefix => MatchPolicy::Prefix,
            UriMatch::Wildcard => MatchPolicy::Wildcard,
        }
    }
}

/// `[[realms.principals]]`: an authid, its role, and one or more credentials, all in verifier
/// form. `Debug` hides every secret.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSection {
    pub authid: String,
    pub role: String,
    /// A ticket hash, `$pbkdf2-sha256$i=N$SALT$HASH`, never the ticket itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wampcra: Option<WampCraSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cryptosign: Option<CryptosignSection>,
}

/// A principal's WAMP-CRA credential: salted (`derived_key` with `salt`, `iterations`, `keylen`)
/// or plain (the secret itself, read from `secret_file` or `secret_env`, never inline).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WampCraSection {
    /// base64(PBKDF2-HMAC-SHA256(password, salt, iterations, keylen)), as Autobahn's
    /// `derive_key` computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keylen: Option<u32>,
    /// A file holding a plain secret (one line; a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding a plain secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Always refused; accepted by the parser only so the error can say what to do instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// A principal's cryptosign credential.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CryptosignSection {
    /// Ed25519 public keys, 64 hex digits each; any of them may sign.
    pub public_keys: Vec<String>,
}

/// `[[realms.history]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    pub topic: String,
    #[serde(default = "exact", rename = "match")]
    pub policy: String,
    pub limit: usize,
}

fn yes() -> bool {
    true
}

fn exact() -> String {
    "exact".into()
}

/// The default `[[realms]]`: one open realm, `brume`.
pub(super) fn default_realms() -> Vec<RealmSection> {
    vec![RealmSection {
        name: "brume".into(),
        anonymous: true,
        strict_uris: false,
        history: Vec::new(),
        roles: BTreeMap::new(),
        principals: Vec::new(),
    }]
}

/// Checks the realms' names and history sections.
pub(super) fn validate(realms: &[RealmSection]) -> Result<(), ConfigError> {
    if realms.is_empty() {
        return Err(invalid("realms", "at least one realm is needed"));
    }
    let mut names = HashSet::new();
    for (i, realm) in realms.iter().enumerate() {
        if !uri::is_valid(&realm.name, MatchPolicy::Exact, false) {
            return Err(invalid(
                format!("realms[{i}].name"),
                format!("{:?} is not a valid URI", realm.name),
            ));
        }
        if !names.insert(realm.name.as_str()) {
            return Err(invalid(
                format!("realms[{i}].name"),
                format!("realm {:?} is defined twice", realm.name),
            ));
        }
        for (j, h) in realm.history.iter().enumerate() {
            let key = |k: &str| format!("realms[{i}].history[{j}].{k}");
            let policy = history_policy(&h.policy).map_err(|e| invalid(key("match"), e))?;
            if !uri::is_valid(&h.topic, policy, realm.strict_uris) {
                return Err(invalid(
                    key("topic"),
                    format!("{:?} is not a valid {} pattern", h.topic, h.policy),
                ));
            }
            if !(1..=100_000).contains(&h.limit) {
                return Err(invalid(key("limit"), "must be between 1 and 100000"));
            }
        }
    }
    Ok(())
}

impl Config {
    /// Validated realms with their principals and roles, secrets read from their files and
    /// environment variables.
    pub fn realm_configs(&self) -> Result<Vec<RealmConfig>, ConfigError> {
        self.realms
            .iter()
            .enumerate()
            .map(|(i, realm)| {
                let at = format!("realms[{i}]");
                Ok(RealmConfig {
                    name: realm.name.clone(),
                    strict_uris: realm.strict_uris,
                    anonymous: realm.anonymous,
                    history: realm
                        .history
                        .iter()
                        .filter_map(|h| {
                            Some(crate::router::broker::HistorySpec {
                                uri: h.topic.clone(),
                                policy: history_policy(&h.policy).ok()?,
                                limit: h.limit,
                            })
                        })
                        .collect(),
                    principals: Arc::new(principal_store(realm, &at)?),
                    authorizer: Arc::new(authorizer(realm, &at)?),
                })
            })
            .collect()
    }
}

fn history_policy(name: &str) -> Result<MatchPolicy, String> {
    match name {
        "exact" => Ok(MatchPolicy::Exact),
        "prefix" => Ok(MatchPolicy::Prefix),
        "wildcard" => Ok(MatchPolicy::Wildcard),
        other => Err(format!(
            "unknown match policy {other:?} (exact, prefix, wildcard)"
        )),
    }
}

/// A realm's authorizer: no roles, no restriction.
fn authorizer(realm: &RealmSection, at: &str) -> Result<Authorizer, ConfigError> {
    if realm.roles.is_empty() {
        return Ok(Authorizer::allow_all());
    }
    let mut roles = Vec::new();
    for (name, role) in &realm.roles {
        let at = format!("{at}.roles.{name}");
        if name == authz::TRUSTED_ROLE {
            return Err(invalid(
                at,
                "role \"trusted\" is reserved for in-process sessions",
            ));
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for (j, r) in role.rules.iter().enumerate() {
            let policy = MatchPolicy::from(r.policy);
            if !uri::is_valid(&r.uri, policy, false) {
                return Err(invalid(
                    format!("{at}.rules[{j}].uri"),
                    format!("{:?} is not a valid {} URI", r.uri, policy.as_str()),
                ));
            }
            if !seen.insert((r.uri.as_str(), r.policy)) {
                return Err(invalid(
                    format!("{at}.rules[{j}]"),
                    format!("a second rule for {} URI {:?}", policy.as_str(), r.uri),
                ));
            }
            rules.push(Rule {
                uri: r.uri.clone(),
                policy,
                allow: r.allow.clone(),
            });
        }
        roles.push((name.clone(), rules));
    }
    Authorizer::new(roles).map_err(|e| section_error(format!("{at}.roles"), e))
}

/// A realm's principals, credentials parsed and plain secrets read.
fn principal_store(realm: &RealmSection, at: &str) -> Result<PrincipalStore, ConfigError> {
    let mut authids = HashSet::new();
    let mut keys = HashSet::new();
    let mut principals = Vec::new();
    for (j, p) in realm.principals.iter().enumerate() {
        let at = format!("{at}.principals[{j}]");
        let key = |k: &str| format!("{at}.{k}");
        if p.authid.is_empty() {
            return Err(invalid(key("authid"), "must not be empty"));
        }
        if !authids.insert(p.authid.as_str()) {
            return Err(invalid(
                key("authid"),
                format!("authid {:?} is defined twice in this realm", p.authid),
            ));
        }
        if p.role.is_empty() {
            return Err(invalid(key("role"), "must not be empty"));
        }
        if p.role == authz::TRUSTED_ROLE {
            return Err(invalid(
                key("role"),
                "role \"trusted\" is reserved for in-process sessions",
            ));
        }
        if !realm.roles.is_empty() && !realm.roles.contains_key(&p.role) {
            return Err(invalid(
                key("role"),
                format!("role {:?} is not defined in this realm's roles", p.role),
            ));
        }
        let ticket = match &p.ticket {
            None => None,
            Some(t) => {
                Some(TicketHash::parse(t.expose()).map_err(|e| section_error(key("ticket"), e))?)
            }
        };
        let wampcra = match &p.wampcra {
            None => None,
            Some(w) => Some(cra_key(w, &key("wampcra"))?),
        };
        let mut cryptosign_keys = Vec::new();
        if let Some(c) = &p.cryptosign {
            if c.public_keys.is_empty() {
                return Err(invalid(
                    key("cryptosign.public_keys"),
                    "at least one public key is needed",
                ));
            }
            for (k, hex) in c.public_keys.iter().enumerate() {
                let at = key(&format!("cryptosign.public_keys[{k}]"));
                let pk = cryptosign::parse_public_key(hex).ok_or_else(|| {
                    invalid(&at, "must be an Ed25519 public key as 64 hex digits")
                })?;
                if !keys.insert(pk.to_bytes()) {
                    return Err(invalid(
                        &at,
                        "this key already belongs to another principal",
                    ));
                }
                cryptosign_keys.push(pk);
            }
        }
        if ticket.is_none() && wampcra.is_none() && cryptosign_keys.is_empty() {
            return Err(invalid(
                at,
                "a principal needs a credential: ticket, wampcra or cryptosign",
            ));
        }
        principals.push(Principal {
            authid: p.authid.clone(),
            role: p.role.clone(),
            ticket,
            wampcra,
            cryptosign: cryptosign_keys,
        });
    }
    PrincipalStore::new(principals).map_err(|e| section_error(format!("{at}.principals"), e))
}

/// A WAMP-CRA credential: salted from the config, or plain from a file or the environment.
fn cra_key(w: &WampCraSection, at: &str) -> Result<CraKey, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    if w.secret.is_some() {
        return Err(invalid(
            key("secret"),
            "a plain WAMP-CRA secret may not be written in the config; put it in a file \
             (secret_file) or an environment variable (secret_env), or store a salted \
             derived_key instead (brume new-principal --method wampcra prints one)",
        ));
    }
    let salted =
        w.derived_key.is_some() || w.salt.is_some() || w.iterations.is_some() || w.keylen.is_some();
    let plain = w.secret_file.is_some() || w.secret_env.is_some();
    if salted && plain {
        return Err(invalid(
            at,
            "either derived_key with salt, iterations and keylen (salted), or secret_file or \
             secret_env (plain), not both",
        ));
    }
    if salted {
        let missing = |k: &str| {
            invalid(
                key(k),
                "missing: a salted WAMP-CRA key needs derived_key, salt, iterations and keylen",
            )
        };
        let derived_key = w
            .derived_key
            .clone()
            .ok_or_else(|| missing("derived_key"))?;
        let salt = w.salt.clone().ok_or_else(|| missing("salt"))?;
        let iterations = w.iterations.ok_or_else(|| missing("iterations"))?;
        let keylen = w.keylen.ok_or_else(|| missing("keylen"))?;
        if salt.is_empty() {
            return Err(invalid(key("salt"), "must not be empty"));
        }
        if !(1..=wampcra::MAX_ITERATIONS).contains(&iterations) {
            return Err(invalid(
                key("iterations"),
                format!("must be between 1 and {}", wampcra::MAX_ITERATIONS),
            ));
        }
        if !(1..=wampcra::MAX_KEYLEN).contains(&keylen) {
            return Err(invalid(
                key("keylen"),
                format!("must be between 1 and {}", wampcra::MAX_KEYLEN),
            ));
        }
        let decoded = crate::router::auth::secret::b64_decode(derived_key.expose());
        if decoded.map(|d| d.len()) != usize::try_from(keylen).ok() {
            return Err(invalid(
                key("derived_key"),
                "must be the base64 of `keylen` bytes, as Autobahn's derive_key prints it",
            ));
        }
        return Ok(CraKey::Salted {
            derived_key,
            salt,
            iterations,
            keylen,
        });
    }
    let secret = match (&w.secret_file, &w.secret_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(at, "give secret_file or secret_env, not both"));
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    key("secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(
                key("secret_env"),
                format!("environment variable {var} is not set (or not UTF-8)"),
            )
        })?,
        (None, None) => {
            return Err(invalid(
                at,
                "needs derived_key, salt, iterations and keylen (salted), or secret_file or \
                 secret_env (plain)",
            ));
        }
    };
    if secret.is_empty() {
        let k = if w.secret_file.is_some() {
            "secret_file"
        } else {
            "secret_env"
        };
        return Err(invalid(key(k), "the secret is empty"));
    }
    Ok(CraKey::Plain {
        secret: Secret::new(secret),
    })
}
