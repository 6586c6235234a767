//! The WAMP router: realms, sessions, the broker and the dealer.
//!
//! - [`auth`]: authentication (principals, ticket, WAMP-CRA, cryptosign) between HELLO and WELCOME.
//! - [`authz`]: authorization: roles and their rules for call, register, publish and subscribe.
//! - [`patterns`]: the URI pattern index (hash + tries) behind both broker and dealer.
//! - [`outbound`]: messages on their way out, encoded once per serializer, and the session handle
//!   with its bounded queue and slow-consumer policy.
//! - [`realm`]: one realm's sessions, broker and dealer, and the lock rule that guards them.
//! - [`broker`], [`dealer`]: publish/subscribe (with retention and history) and routed calls
//!   (with timeouts, canceling, progressive results and shared registrations).
//! - [`meta`]: the meta API (sessions, registrations, subscriptions, testaments) and meta events.
//! - [`session`]: the per-session protocol state machine, fed one message at a time by a transport
//!   task or an in-process client, with no I/O of its own.

pub mod auth;
pub mod authz;
pub mod broker;
pub mod dealer;
pub mod meta;
pub mod outbound;
pub mod patterns;
pub mod realm;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

pub use outbound::{
    AuthInfo, Outgoing, SessionHandle, SlowConsumerPolicy, TransportInfo, WriteDrops,
};
pub use realm::{Realm, RealmConfig};
pub use session::{Flow, RouterSession};

use crate::wamp::ids::IdSequence;

/// Router-wide settings.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub realms: Vec<RealmConfig>,
    /// Messages a session may have queued towards it before the slow-consumer policy applies.
    pub outbound_queue: usize,
    pub slow_consumer: SlowConsumerPolicy,
    /// The hub's memory budget: while over it, events for sessions that are behind are shed
    /// (see [`outbound::PRESSURE_BACKLOG`]) and listeners accept no new connection.
    pub memory: device_models::MemoryPressure,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            realms: vec![RealmConfig::open("brume")],
            outbound_queue: 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            memory: device_models::MemoryPressure::default(),
        }
    }
}

/// The router: a fixed set of realms and the id sequences they share.
#[derive(Debug)]
pub struct Router {
    realms: HashMap<String, Arc<Realm>>,
    pub(crate) config: RouterConfig,
    /// Router-scope ids (subscriptions, registrations).
    pub(crate) ids: IdSequence,
    /// Messages connections could not send.
    write_drops: WriteDrops,
}

impl Router {
    pub fn new(config: RouterConfig) -> Arc<Router> {
        let realms = config
            .realms
            .iter()
            .map(|r| (r.name.clone(), Arc::new(Realm::new(r.clone()))))
            .collect();
        Arc::new(Router {
            realms,
            config,
            ids: IdSequence::default(),
            write_drops: WriteDrops::default(),
        })
    }

    /// Outgoing messages connections dropped at the socket, by cause.
    pub fn write_drops(&self) -> &WriteDrops {
        &self.write_drops
    }

    /// The realm with this name.
    pub fn realm(&self, name: &str) -> Option<&Arc<Realm>> {
        self.realms.get(name)
    }

    /// Every realm.
    pub fn realms(&self) -> impl Iterator<Item = &Arc<Realm>> {
        self.realms.values()
    }

    /// Messages a session may have queued before the slow-consumer policy applies.
    pub fn outbound_queue(&self) -> usize {
        self.config.outbound_queue
    }

    /// The hub's memory budget flag, shared with the listeners and gateways.
    pub fn memory(&self) -> &device_models::MemoryPressure {
        &self.config.memory
    }

    /// Asks every session of every realm to close with `reason` (used at shutdown).
    pub fn close_all(&self, reason: &str) {
        for realm in self.realms.values() {
            for s in realm.sessions() {
                s.close_with(outbound::CloseRequest {
                    abort: false,
                    reason: reason.to_owned(),
                    message: None,
                });
            }
        }
    }
}
