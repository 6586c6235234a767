//! A realm: a routing and administrative domain with its own sessions, broker and dealer.
//!
//! Shared state rule: the session table, broker and dealer each sit behind a std lock that is held
//! only for a synchronous routing step and never across an `.await`. Deliveries inside those steps
//! use `try_send`, so a lock is never held while waiting on a peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Message counters of one realm, bumped (relaxed) by the broker and the dealer in their routing
/// steps and read by the metrics without taking their locks.
///
/// Every call the dealer takes ends in exactly one outcome, so `calls` is the sum of `results`,
/// `errors`, `timeouts`, `canceled` and `refused`, plus the calls in flight.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Publications the broker took: sessions' PUBLISH and the router's meta events.
    pub publications: AtomicU64,
    /// EVENT messages queued to subscribers for those publications.
    pub events: AtomicU64,
    /// CALLs the dealer took (meta procedures are answered by the router itself, uncounted).
    pub calls: AtomicU64,
    /// Calls answered with a final RESULT.
    pub results: AtomicU64,
    /// Calls answered with the callee's ERROR.
    pub errors: AtomicU64,
    /// Calls that timed out (`timeout` option).
    pub timeouts: AtomicU64,
    /// Calls canceled by their caller, or ended because the caller or the callee left.
    pub canceled: AtomicU64,
    /// Calls not routed: no such procedure, no available callee, a callee that cannot take
    /// more, a bad `timeout` option.
    pub refused: AtomicU64,
}

impl Traffic {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of `counter` now.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One realm's routing state.
#[derive(Debug)]
pub struct Realm {
    pub config: RealmConfig,
    sessions: RwLock<HashMap<Id, Arc<SessionHandle>>>,
    broker: RwLock<Broker>,
    dealer: Mutex<Dealer>,
    traffic: Arc<Traffic>,
}

impl Realm {
    pub fn new(config: RealmConfig) -> Self {
        let traffic = Arc::new(Traffic::default());
        Realm {
            sessions: RwLock::default(),
            broker: RwLock::new(
                Broker::with_history(&config.history).with_traffic(traffic.clone()),
            ),
            dealer: Mutex::new(Dealer::default().with_traffic(traffic.clone())),
            traffic,
            config,
        }
    }

    /// The realm's message counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
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
