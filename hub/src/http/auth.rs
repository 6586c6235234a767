//! Who an HTTP request comes from, and what it may do: the things realm's own principals and
//! roles, so the REST API and the console grant exactly what a WAMP session of the same
//! principal gets.
//!
//! - Credentials: `Authorization: Bearer <ticket>` (a principal's WAMP ticket) or
//!   `Authorization: Basic base64(authid:ticket)`. Without credentials a request is anonymous,
//!   which only a realm admitting anonymous sessions accepts.
//! - Authorization: the realm's role rules, checked against the WAMP URI the endpoint stands
//!   for (a call for each procedure, a subscription for the event stream).
//! - Cost: a ticket is checked against its PBKDF2 hash (100,000 iterations by default), so a
//!   verified credential is remembered for [`TRUST_FOR`] by its SHA-256 digest, a refused one for
//!   [`REFUSE_FOR`]; checks run off the async threads, one at a time, so a flood of wrong
//!   credentials takes at most one core. A bearer token names no authid, so its first check
//!   tries every principal holding a ticket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::error::HttpError;
use crate::router::authz::{ANONYMOUS_ROLE, Action};
use crate::router::realm::Realm;
use crate::wamp::{MatchPolicy, uris};

/// How long a verified credential is trusted without checking its hash again.
pub const TRUST_FOR: Duration = Duration::from_secs(300);
/// How long a refused credential is refused without checking again.
pub const REFUSE_FOR: Duration = Duration::from_secs(30);
/// Remembered credentials at most; past that the expired ones go, then all.
const CACHE_MAX: usize = 4096;
/// The longest `Authorization` header taken.
const MAX_HEADER: usize = 4096;

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub authid: String,
    pub authrole: String,
    pub anonymous: bool,
}

/// The realm's principals and rules, with the memory of recent checks.
#[derive(Debug)]
pub struct HttpAuth {
    realm: Arc<Realm>,
    cache: Mutex<HashMap<[u8; 32], Remembered>>,
    verifying: Semaphore,
}

/// A checked credential: who it named (`None`: refused), until when that holds.
type Remembered = (Option<Caller>, Instant);

/// What the `Authorization` header holds.
enum Credential<'a> {
    Bearer(&'a str),
    Basic { authid: String, ticket: String },
}

impl HttpAuth {
    pub fn new(realm: Arc<Realm>) -> HttpAuth {
        HttpAuth {
            realm,
            cache: Mutex::new(HashMap::new()),
            verifying: Semaphore::new(1),
        }
    }

    /// The realm requests are authorized in.
    pub fn realm(&self) -> &str {
        self.realm.name()
    }

    /// Who sent a request with these headers; 401 when credentials are missing (and the realm
    /// wants them), malformed or wrong.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, HttpError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            if self.realm.config.anonymous {
                return Ok(Caller {
                    authid: "anonymous".to_owned(),
                    authrole: ANONYMOUS_ROLE.to_owned(),
                    anonymous: true,
                });
            }
            return Err(unauthenticated(
                "credentials are required: Authorization: Bearer <ticket> or Basic <authid:ticket>",
            ));
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.len() <= MAX_HEADER)
            .ok_or_else(|| unauthenticated("the Authorization header is not readable"))?;
        let credential = parse(value)?;
        let digest = digest(&credential);
        if let Some(known) = self.remembered(&digest) {
            return known.ok_or_else(refused);
        }
        let _turn = self
            .verifying
            .acquire()
            .await
            .map_err(|_| HttpError::new(uris::UNAVAILABLE, "the hub is stopping"))?;
        // Someone may have checked the same credential while this one waited.
        if let Some(known) = self.remembered(&digest) {
            return known.ok_or_else(refused);
        }
        let realm = self.realm.clone();
        let owned = match credential {
            Credential::Bearer(t) => (None, t.to_owned()),
            Credential::Basic { authid, ticket } => (Some(authid), ticket),
        };
        let found = tokio::task::spawn_blocking(move || verify(&realm, owned.0, &owned.1))
            .await
            .map_err(|_| HttpError::new(uris::RUNTIME_ERROR, "the credential check failed"))?;
        let ttl = if found.is_some() {
            TRUST_FOR
        } else {
            REFUSE_FOR
        };
        self.remember(digest, found.clone(), ttl);
        found.ok_or_else(refused)
    }

    /// 403 unless `caller`'s role may do `action` on `uri` in the realm.
    pub fn authorize(&self, caller: &Caller, action: Action, uri: &str) -> Result<(), HttpError> {
        let policy = match action {
            Action::Subscribe | Action::Register if uri.ends_with('.') => MatchPolicy::Prefix,
            _ => MatchPolicy::Exact,
        };
        if self
            .realm
            .config
            .authorizer
            .allows(&caller.authrole, action, uri, policy)
        {
            return Ok(());
        }
        Err(HttpError::new(
            uris::NOT_AUTHORIZED,
            format!(
                "role {:?} is not authorized to {action} {uri:?}",
                caller.authrole
            ),
        ))
    }

    /// Whether `caller` may receive publications on `topic` (checked per publication by the
    /// event stream).
    pub fn may_receive(&self, caller: &Caller, topic: &str) -> bool {
        self.realm.config.authorizer.allows(
            &caller.authrole,
            Action::Subscribe,
            topic,
            MatchPolicy::Exact,
        )
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Option<Caller>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(digest) {
            Some((caller, until)) if *until > Instant::now() => Some(caller.clone()),
            _ => None,
        }
    }

    fn remember(&self, digest: [u8; 32], caller: Option<Caller>, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (caller, now + ttl));
    }
}

fn unauthenticated(message: &str) -> HttpError {
    HttpError::new(uris::AUTHENTICATION_FAILED, message)
}

fn refused() -> HttpError {
    unauthenticated("wrong credentials")
}

fn parse(value: &str) -> Result<Credential<'_>, HttpError> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credential::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthenticated("Basic credentials are not base64 of authid:ticket"))?;
        let (authid, ticket) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credentials must be authid:ticket"))?;
        return Ok(Credential::Basic {
            authid: authid.to_owned(),
            ticket: ticket.to_owned(),
        });
    }
    Err(unauthenticated(
        "unknown Authorization scheme (use Bearer <ticket> or Basic <authid:ticket>)",
    ))
}

fn digest(c: &Credential<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    match c {
        Credential::Bearer(t) => {
            h.update(b"bearer\0");
            h.update(t.as_bytes());
        }
        Credential::Basic { authid, ticket } => {
            h.update(b"basic\0");
            h.update(authid.as_bytes());
            h.update(b"\0");
            h.update(ticket.as_bytes());
        }
    }
    h.finalize().into()
}

/// Checks a ticket: against `authid`'s hash, or (a bearer token) against every principal's.
/// An unknown authid costs a decoy's check, so it cannot be told from a wrong ticket.
fn verify(realm: &Realm, authid: Option<String>, ticket: &str) -> Option<Caller> {
    let principals = &realm.config.principals;
    let caller = |p: &crate::router::auth::principal::Principal| Caller {
        authid: p.authid.clone(),
        authrole: p.role.clone(),
        anonymous: false,
    };
    match authid {
        Some(authid) => match principals.get(&authid) {
            Some(p) => p
                .ticket
                .as_ref()
                .is_some_and(|h| h.verify(ticket))
                .then(|| caller(p)),
            None => {
                let decoy = principals.decoy(&authid);
                let _ = decoy.ticket.as_ref().is_some_and(|h| h.verify(ticket));
                None
            }
        },
        None => principals
            .iter()
            .find(|p| p.ticket.as_ref().is_some_and(|h| h.verify(ticket)))
            .map(|p| caller(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::auth::principal::{Principal, PrincipalStore};
    use crate::router::auth::ticket::TicketHash;
    use crate::router::authz::{Authorizer, Rule};
    use crate::router::realm::RealmConfig;

    fn auth(anonymous: bool) -> HttpAuth {
        let principal = |authid: &str, role: &str, ticket: &str| Principal {
            authid: authid.into(),
            role: role.into(),
            ticket: Some(TicketHash::create(ticket, 10)),
            wampcra: None,
            cryptosign: Vec::new(),
        };
        let mut config = RealmConfig::open("r");
        config.anonymous = anonymous;
        config.principals = Arc::new(
            PrincipalStore::new(vec![
                principal("ops", "admin", "s3cret"),
                principal("viewer", "reader", "look"),
            ])
            .unwrap(),
        );
        let rule = |uri: &str, policy, allow: &[Action]| Rule {
            uri: uri.into(),
            policy,
            allow: allow.to_vec(),
        };
        config.authorizer = Arc::new(
            Authorizer::new([
                (
                    "admin".to_owned(),
                    vec![rule("brume.", MatchPolicy::Prefix, &[Action::Call])],
                ),
                (
                    "reader".to_owned(),
                    vec![rule(
                        "brume.things.list",
                        MatchPolicy::Exact,
                        &[Action::Call],
                    )],
                ),
            ])
            .unwrap(),
        );
        HttpAuth::new(Arc::new(Realm::new(config)))
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn basic(authid: &str, ticket: &str) -> HeaderMap {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{authid}:{ticket}"));
        headers(&format!("Basic {b}"))
    }

    #[tokio::test]
    async fn tickets_as_bearer_or_basic_get_the_principal_and_its_role() {
        let a = auth(false);
        let c = a.authenticate(&headers("Bearer s3cret")).await.unwrap();
        assert_eq!((c.authid.as_str(), c.authrole.as_str()), ("ops", "admin"));
        let c = a.authenticate(&basic("viewer", "look")).await.unwrap();
        assert_eq!(c.authrole, "reader");
        // Remembered: the same answer again, wrong ones still refused.
        assert_eq!(
            a.authenticate(&headers("Bearer s3cret"))
                .await
                .unwrap()
                .authid,
            "ops"
        );
        for wrong in [
            headers("Bearer nope"),
            basic("viewer", "s3cret"),
            basic("nobody", "look"),
            headers("Digest x"),
            headers("Basic !!!"),
            HeaderMap::new(),
        ] {
            let e = a.authenticate(&wrong).await.unwrap_err();
            assert_eq!(e.uri, uris::AUTHENTICATION_FAILED, "{wrong:?}");
            assert_eq!(e.status().as_u16(), 401);
        }
        let viewer = a.authenticate(&basic("viewer", "look")).await.unwrap();
        assert!(
            a.authorize(&viewer, Action::Call, "brume.things.list")
                .is_ok()
        );
        let e = a
            .authorize(&viewer, Action::Call, "brume.things.set")
            .unwrap_err();
        assert_eq!((e.uri, e.status().as_u16()), (uris::NOT_AUTHORIZED, 403));
    }

    #[tokio::test]
    async fn without_credentials_a_request_is_anonymous_only_where_the_realm_admits_it() {
        let c = auth(true).authenticate(&HeaderMap::new()).await.unwrap();
        assert!(c.anonymous);
        assert_eq!(c.authrole, ANONYMOUS_ROLE);
        // No rule for "anonymous" in a realm with roles: denied.
        assert!(
            auth(true)
                .authorize(&c, Action::Call, "brume.things.list")
                .is_err()
        );
    }
}
