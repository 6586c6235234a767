//! A realm: a routing and administrative domain with its own sessions, broker and dealer.
//!
//! Shared state rule: the session table, broker and dealer each sit behind a std lock that is held
//! only for a synchronous routing step and never across an `.await`. Deliveries inside those steps
//! use `try_send`, so a lock is never held while waiting on a peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::auth::PrincipalStore;
use super::authz::Authorizer;
use super::broker::Broker;
use super::dealer::Dealer;
use super::outbound::SessionHandle;
use crate::wamp::Id;

/// Per-realm settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmConfig {
    pub name: String,
    /// Enforce the strict URI rule (`[0-9a-z_]` components) instead of the loose one.
    pub strict_uris: bool,
    /// Admit sessions that do not authenticate.
    pub anonymous: bool,
    /// Topic patterns whose events are kept for `wamp.subscription.get_events`.
    pub history: Vec<super::broker::HistorySpec>,
    /// Who may authenticate, and how.
    pub principals: Arc<PrincipalStore>,
    /// What each role may do.
    pub authorizer: Arc<Authorizer>,
}

impl RealmConfig {
    /// A realm with loose URIs, anonymous access, no principals and no restrictions.
    pub fn open(name: &str) -> Self {
        RealmConfig {
            name: name.to_owned(),
            strict_uris: false,
            anonymous: true,
            history: Vec::new(),
            principals: Arc::default(),
            authorizer: Arc::new(Authorizer::allow_all()),
        }
    }
}

/// One realm's routing state.
#[derive(Debug)]
pub struct Realm {
    pub config: RealmConfig,
    sessions: RwLock<HashMap<Id, Arc<SessionHandle>>>,
    broker: RwLock<Broker>,
    dealer: Mutex<Dealer>,
}

impl Realm {
    pub fn new(config: RealmConfig) -> Self {
        Realm {
            sessions: RwLock::default(),
            broker: RwLock::new(Broker::with_history(&config.history)),
            dealer: Mutex::default(),
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn broker(&self) -> RwLockReadGuard<'_, Broker> {
        self.broker.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn broker_mut(&self) -> RwLockWriteGuard<'_, Broker> {
        self.broker.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn dealer(&self) -> MutexGuard<'_, Dealer> {
        self.dealer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session; fails if its id is taken (the caller draws another).
    pub(crate) fn insert_session(&self, s: Arc<SessionHandle>) -> bool {
        let mut map = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&s.id) {
            return false;
        }
        map.insert(s.id, s);
        true
    }

    pub(crate) fn remove_session(&self, id: Id) -> Option<Arc<SessionHandle>> {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// The session with this id, if it is in this realm.
    pub fn session(&self, id: Id) -> Option<Arc<SessionHandle>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// A snapshot of every session in the realm.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
