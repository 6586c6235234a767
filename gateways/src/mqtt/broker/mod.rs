//! The embedded MQTT broker: rumqttd's router (topic matching, retained messages, QoS 0/1/2 state,
//! persistent sessions) behind our own listener and per-connection tasks, which own
//! authentication, the per-topic ACL and presence. Everything rumqttd-specific lives in this
//! module; the gateway sees [`Broker`], the [`Hooks`] it implements and [`Outbound`] messages, so
//! the broker could be replaced without touching the gateway.
//!
//! | module | holds |
//! | --- | --- |
//! | `codec` | picks MQTT 3.1.1 or 5 from the CONNECT; guards around rumqttd's codecs |
//! | `connection` | one task per client: CONNECT, auth, ACL, keep-alive, last will, cleanup |
//! | `hub_link` | the gateway's own router link: publishes at QoS 0/1, drains the router |
//! | `interest` | the filters clients subscribed, so that unwanted PUBLISHes skip the router |
//! | `listener` | the accept loop with admission control and back-off |
//! | `envelope` | what a PUBLISH carries through the router (QoS, retain, origin) and the MQTT 5 subscription options applied on the way out |
//! | `expiry` | MQTT 5 session expiry and will delay, cancelled when the client comes back |
//! | `local` | thing devices served without a router link: their own topics, retained messages and persistent sessions |
//!
//! Shared state: the hooks (behind `Arc`, their own locking rule), a connection-slot pool (a
//! short `Mutex`, never held across `.await`), and rumqttd's router, which is an actor on its own
//! OS thread fed through its channel.

pub mod codec;
mod connection;
mod envelope;
mod expiry;
mod hub_link;
mod interest;
mod listener;
mod local;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::config::MqttConfig;
use super::error::MqttError;
use super::stats::Stats;

/// Client id of the gateway's own link to the router.
const HUB_LINK_ID: &str = "brume.gateway";

/// What a client's CONNECT asked for, as the hooks see it.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// The MQTT client id (possibly empty).
    pub client_id: &'a str,
    /// Login user name, if any.
    pub username: Option<&'a str>,
    /// Login password, if any.
    pub password: Option<&'a str>,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// A connection the hooks admit.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The hooks' per-connection state.
    pub session: S,
    /// A stable identity (a thing id) under which the broker keeps the client's session, whatever
    /// client id it uses; `None` for clients known only by their client id.
    pub key: Option<String>,
}

/// Why a connection is refused; each maps to a CONNACK return code of the client's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name or password, or a login the policy requires is missing.
    BadCredentials,
    /// Authenticated, but not allowed (a will on a foreign topic, an identity taken).
    NotAuthorized,
    /// The client id cannot be used.
    BadClientId,
    /// The broker cannot take the connection.
    Unavailable,
}

/// How a connection ended, for [`Hooks::closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent DISCONNECT.
    Clean,
    /// The network failed, the keep-alive ran out, or the client broke the protocol; its last
    /// will (if any) was published just before.
    Lost,
    /// Another connection with the same identity replaced this one; no will is published.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// What the broker asks of the code that embeds it. Calls for one connection come from that
/// connection's task, in order; calls for different connections run concurrently.
pub trait Hooks: Send + Sync + 'static {
    /// Per-connection state.
    type Session: Send + 'static;

    /// Whether a new TCP connection may be accepted now; false while the hub is over its
    /// memory budget (the connection is closed at accept and counted).
    fn admits_connection(&self) -> bool {
        true
    }

    /// Authenticates a CONNECT and creates the connection's state.
    fn connect(&self, request: &ConnectRequest<'_>) -> Result<Accepted<Self::Session>, Refusal>;

    /// Whether the client may publish to `topic` (also asked for its last will at CONNECT).
    fn may_publish(&self, session: &Self::Session, topic: &str) -> bool;

    /// Whether the client may subscribe to `filter`.
    fn may_subscribe(&self, session: &Self::Session, filter: &str) -> bool;

    /// A message the client published (and that the ACL allowed), before the router has it.
    /// For QoS 1 and 2 (`qos`), the hooks may return a wait that the connection holds the
    /// PUBACK (PUBREC) behind: the message is acknowledged only once it is durable; and they
    /// say whether they rejected it, which an MQTT 5 client publishing at QoS 1 is told.
    fn published(
        &self,
        session: &mut Self::Session,
        topic: &str,
        payload: &Bytes,
        retain: bool,
        qos: u8,
    ) -> impl Future<Output = Published> + Send;

    /// What one read of the connection brought has been handled: the hooks hand on what they
    /// gathered from its PUBLISHes. A wait returned by [`Hooks::published`] may be answered only
    /// after this.
    fn read_done(&self, session: &mut Self::Session) -> impl Future<Output = ()> + Send {
        let _ = session;
        std::future::ready(())
    }

    /// The connection is over.
    fn closed(&self, session: Self::Session, end: SessionEnd) -> impl Future<Output = ()> + Send;
}

/// What the hooks made of a PUBLISH.
#[derive(Debug, Default)]
pub struct Published {
    /// The commit the acknowledgement waits for; `None`: acknowledged at once.
    pub commit: Option<device_models::CommitWait>,
    /// Why the hooks rejected the message, if they did. It is still routed to MQTT
    /// subscribers; an MQTT 5 client publishing at QoS 1 gets the reason in its PUBACK.
    pub rejected: Option<Rejected>,
}

/// Why the hooks rejected a message, as a PUBACK reason of MQTT 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Over the size the hooks interpret. A PUBACK cannot say 0x95 "packet too large" (that
    /// code is for DISCONNECT only), so this is 0x97 "quota exceeded", with a reason string.
    TooLarge,
    /// Not what the topic takes (not JSON, wrong types, out of the type's limits): 0x99
    /// "payload format invalid", with a reason string.
    Invalid,
}

/// A message the gateway publishes into the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Whether the broker keeps it as the topic's retained message.
    pub retain: bool,
    /// QoS 1 (true) or 0; subscribers get the lower of this and their subscription's QoS.
    pub at_least_once: bool,
}

/// Builds a router link: (router client id, clean session). rumqttd does not export the type of
/// its router channel, so the channel is kept inside this closure.
/// rumqttd's `LinkError` is over 800 bytes, hence the box.
type LinkFactory =
    Arc<dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), Box<LinkError>> + Send + Sync>;

/// Limits a connection task needs.
#[derive(Debug, Clone)]
struct Limits {
    max_packet_bytes: usize,
    max_inflight: usize,
    connect_timeout: Duration,
    max_keep_alive_s: u16,
}

/// What the listener and every connection task share.
struct Shared<H> {
    hooks: Arc<H>,
    links: LinkFactory,
    limits: Limits,
    stats: Arc<Stats>,
    slots: Arc<Mutex<SlotPool>>,
    /// Filters clients subscribed through the router (a short `RwLock`, never held across
    /// `.await`).
    interest: RwLock<interest::Interest>,
    /// Thing devices' own subscriptions, served without the router.
    local: Arc<local::Local>,
    /// The gateway's publisher (through its own router link), for linkless connections.
    outbound: mpsc::Sender<Outbound>,
    /// Wills and session expiries waiting after their connection ended.
    pending: expiry::Pending,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl<H> Shared<H> {
    /// Whether some client may be subscribed to `topic`.
    fn interest_in(&self, topic: &str) -> bool {
        self.interest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .matches(topic)
    }

    fn subscribed<'f>(&self, filters: impl IntoIterator<Item = &'f str>) {
        let mut interest = self.interest.write().unwrap_or_else(|e| e.into_inner());
        for f in filters {
            interest.add(f);
        }
    }

    fn unsubscribed<'f>(&self, filters: impl IntoIterator<Item = &'f str>) {
        let mut interest = self.interest.write().unwrap_or_else(|e| e.into_inner());
        for f in filters {
            interest.remove(f);
        }
    }
}

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    outbound: mpsc::Sender<Outbound>,
    shutdown: CancellationToken,
    /// Cancelled if the gateway's link into rumqttd's router ends while the broker runs: the
    /// router thread is gone (or the link task panicked), and MQTT routing with it.
    failed: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Starts the router thread, the gateway's link, and the listener. Must run inside a tokio
    /// runtime; everything but the router thread runs on it.
    pub async fn start<H: Hooks>(
        config: &MqttConfig,
        hooks: Arc<H>,
        stats: Arc<Stats>,
    ) -> Result<Broker, MqttError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MqttError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| MqttError::Bind {
            addr: config.listen,
            source,
        })?;

        let router_config = RouterConfig {
            // One more for the gateway's own link.
            max_connections: config.max_connections + 1,
            max_outgoing_packet_count: config.router.max_outgoing_packets,
            max_segment_size: config.router.segment_bytes,
            max_segment_count: config.router.segment_count,
            ..RouterConfig::default()
        };
        let router_tx = Router::new(0, router_config).spawn();
        let links: LinkFactory = Arc::new(move |id: &str, clean: bool| {
            LinkBuilder::new(id, router_tx.clone())
                .clean_session(clean)
                .build()
                .map_err(Box::new)
        });

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let factory = links.clone();
        let (link_tx, link_rx, _ack) =
            tokio::task::spawn_blocking(move || factory(HUB_LINK_ID, true))
                .await
                .map_err(MqttError::LinkTask)?
                .map_err(|source| MqttError::HubLink { source })?;
        let (outbound, outbound_rx) = mpsc::channel(1024);
        let failed = CancellationToken::new();
        let local = Arc::new(local::Local::new(stats.clone()));
        let link = tokio::spawn(hub_link::run(
            link_tx,
            link_rx,
            outbound_rx,
            local.clone(),
            shutdown.clone(),
        ));
        let (gone, stopping) = (failed.clone(), shutdown.clone());
        tracker.spawn(async move {
            let outcome = link.await;
            if !stopping.is_cancelled() {
                tracing::error!(?outcome, "the MQTT gateway's link into the router ended");
                gone.cancel();
            }
        });

        let shared = Arc::new(Shared {
            hooks,
            links,
            limits: Limits {
                max_packet_bytes: config.max_packet_bytes,
                max_inflight: config.max_inflight,
                connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                max_keep_alive_s: config.max_keep_alive_s,
            },
            stats,
            slots: Arc::new(Mutex::new(SlotPool::default())),
            interest: RwLock::default(),
            local,
            outbound: outbound.clone(),
            pending: expiry::Pending::default(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let permits = Arc::new(Semaphore::new(config.max_connections));
        tracker.spawn(listener::run(listener, shared, permits));
        info!(%local_addr, "MQTT broker listening (3.1.1 and 5)");
        Ok(Broker {
            local_addr,
            outbound,
            shutdown,
            failed,
            tracker,
            grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves if the broker failed: its link into rumqttd's router ended while it ran.
    pub async fn failed(&self) {
        self.failed.cancelled().await;
    }

    /// Whether the broker has failed (see [`Self::failed`]), without waiting.
    pub fn has_failed(&self) -> bool {
        self.failed.is_cancelled()
    }

    /// A sender of messages to publish; bounded, so publishers wait when the router lags.
    pub fn publisher(&self) -> mpsc::Sender<Outbound> {
        self.outbound.clone()
    }

    /// Stops accepting, tells every connection to close, and waits for them up to the grace
    /// period. rumqttd's router thread has no stop: it stays parked, idle, until the process
    /// exits (retained messages stay in its memory).
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("MQTT connections still closing after the grace period");
        }
    }
}

/// Router client ids for anonymous clean sessions, reused so that rumqttd's never-pruned map of
/// past client ids ("graveyard") grows only with the peak number of such connections, not with
/// every random client id ever seen.
#[derive(Debug, Default)]
struct SlotPool {
    free: Vec<usize>,
    next: usize,
}

impl SlotPool {
    fn take(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give_back(&mut self, slot: usize) {
        self.free.push(slot);
    }
}

/// A slot taken from the pool, returned on drop.
struct Slot {
    pool: Arc<Mutex<SlotPool>>,
    n: usize,
}

impl Slot {
    fn take(pool: &Arc<Mutex<SlotPool>>) -> Slot {
        let n = pool
            .lock()
            .map(|mut p| p.take())
            .unwrap_or_else(|poisoned| {
                // The pool is two integers; a panic elsewhere cannot leave it inconsistent.
                poisoned.into_inner().take()
            });
        Slot {
            pool: pool.clone(),
            n,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.pool.lock() {
            Ok(mut p) => p.give_back(self.n),
            Err(poisoned) => poisoned.into_inner().give_back(self.n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused() {
        let pool = Arc::new(Mutex::new(SlotPool::default()));
        let a = Slot::take(&pool);
        let b = Slot::take(&pool);
        assert_eq!((a.n, b.n), (0, 1));
        drop(a);
        let c = Slot::take(&pool);
        assert_eq!(c.n, 0);
        drop((b, c));
        for _ in 0..100 {
            let s = Slot::take(&pool);
            assert!(s.n < 2);
        }
    }
}
