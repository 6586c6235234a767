//! The client driver: a task running a [`Client`] engine on a UDP socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{DEFAULT_MAX_DATAGRAM, Received, now, receive, sleep_until, transmit};
use crate::coap::client::{Client, ClientConfig, ClientEvent, ObservationId, RequestId};
use crate::coap::error::{ClientError, DriverError};
use crate::coap::message::CONTENT_FORMAT_JSON;
use coap_lite::RequestType;
use device_models::{LogLimiter, LogPermit};

/// Settings of the client driver.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientDriverConfig {
    /// The engine's settings.
    pub engine: ClientConfig,
    /// Capacity of the event channel to the application (default 1 024).
    pub event_queue: usize,
    /// Events waiting in the driver while that channel is full (default
    /// 1 024). `Response` and `Failed` events are always kept (there is one
    /// per request, and requests in flight are bounded); a `Notification`
    /// that finds the backlog full is dropped, since a later one carries newer
    /// state: counted in [`ClientCounters::notifications_dropped`] and logged, at
    /// most ten warnings per ten seconds.
    pub backlog: usize,
    /// Capacity of the command channel from handles (default 256).
    pub command_queue: usize,
    /// Largest datagram accepted (default 1 500 bytes).
    pub max_datagram: usize,
}

impl Default for ClientDriverConfig {
    fn default() -> Self {
        Self {
            engine: ClientConfig::default(),
            event_queue: 1_024,
            backlog: 1_024,
            command_queue: 256,
            max_datagram: DEFAULT_MAX_DATAGRAM,
        }
    }
}

enum Command {
    Request {
        peer: SocketAddr,
        method: RequestType,
        uri: String,
        content_format: Option<u16>,
        payload: Bytes,
        reply: oneshot::Sender<Result<RequestId, ClientError>>,
    },
    Observe {
        peer: SocketAddr,
        uri: String,
        reply: oneshot::Sender<ObservationId>,
    },
    Cancel {
        id: ObservationId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// Cloneable handle to start requests and observations; results arrive on
/// the events channel of [`ClientParts`].
#[derive(Clone, Debug)]
pub struct ClientHandle {
    tx: mpsc::Sender<Command>,
}

impl ClientHandle {
    /// Sends a CON request; its result comes as a `Response` or `Failed`
    /// event carrying the returned id.
    pub async fn request(
        &self,
        peer: SocketAddr,
        method: RequestType,
        uri: &str,
        content_format: Option<u16>,
        payload: Bytes,
    ) -> Result<RequestId, DriverError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Request {
            peer,
            method,
            uri: uri.to_owned(),
            content_format,
            payload,
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| DriverError::Stopped)?;
        Ok(rx.await.map_err(|_| DriverError::Stopped)??)
    }

    /// GET `uri` from `peer`.
    pub async fn get(&self, peer: SocketAddr, uri: &str) -> Result<RequestId, DriverError> {
        self.request(peer, RequestType::Get, uri, None, Bytes::new())
            .await
    }

    /// PUT a body to `uri` on `peer` (JSON if `content_format` is `None`).
    pub async fn put(
        &self,
        peer: SocketAddr,
        uri: &str,
        content_format: Option<u16>,
        payload: Bytes,
    ) -> Result<RequestId, DriverError> {
        let cf = content_format.unwrap_or(CONTENT_FORMAT_JSON);
        self.request(peer, RequestType::Put, uri, Some(cf), payload)
            .await
    }

    /// Observes `uri` on `peer` until cancelled.
    pub async fn observe(&self, peer: SocketAddr, uri: &str) -> Result<ObservationId, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Observe {
                peer,
                uri: uri.to_owned(),
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Cancels an observation.
    pub async fn cancel_observation(&self, id: ObservationId) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Cancel { id, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(rx.await.map_err(|_| DriverError::Stopped)??)
    }
}

/// What `spawn_client` returns.
#[derive(Debug)]
pub struct ClientParts {
    /// Handle for requests and observations.
    pub handle: ClientHandle,
    /// Responses, failures and notifications.
    pub events: mpsc::Receiver<ClientEvent>,
    /// The socket's address.
    pub local_addr: SocketAddr,
    /// What the driver dropped, for metrics.
    pub counters: Arc<ClientCounters>,
    /// The task; resolves when shut down or on a fatal socket error.
    pub task: JoinHandle<Result<(), DriverError>>,
}

/// What a client driver dropped, counted as it happens and read by metrics.
#[derive(Debug, Default)]
pub struct ClientCounters {
    notifications_dropped: AtomicU64,
    malformed: AtomicU64,
}

impl ClientCounters {
    /// Notifications dropped because the application lagged (its channel and
    /// the driver's backlog were full).
    pub fn notifications_dropped(&self) -> u64 {
        self.notifications_dropped.load(Ordering::Relaxed)
    }

    /// Datagrams dropped unread: larger than `max_datagram`, or not a CoAP
    /// message (a Confirmable one is answered with a Reset).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Starts a client on `socket` until `shutdown` is cancelled.
pub fn spawn_client(
    socket: UdpSocket,
    config: ClientDriverConfig,
    shutdown: CancellationToken,
) -> Result<ClientParts, DriverError> {
    let local_addr = socket.local_addr().map_err(DriverError::Socket)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
    let (ev_tx, ev_rx) = mpsc::channel(config.event_queue.max(1));
    let engine = Client::new(config.engine.clone());
    let counters = Arc::new(ClientCounters::default());
    let backlog = Backlog {
        events: VecDeque::new(),
        cap: config.backlog,
        counters: counters.clone(),
        log: LogLimiter::default(),
    };
    let task = tokio::spawn(run(
        socket,
        engine,
        cmd_rx,
        ev_tx,
        shutdown,
        config.max_datagram,
        backlog,
    ));
    Ok(ClientParts {
        handle: ClientHandle { tx: cmd_tx },
        events: ev_rx,
        local_addr,
        counters,
        task,
    })
}

#[tracing::instrument(name = "coap_client", skip_all, fields(local = ?socket.local_addr().ok()))]
async fn run(
    socket: UdpSocket,
    mut engine: Client,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClientEvent>,
    shutdown: CancellationToken,
    max_datagram: usize,
    mut backlog: Backlog,
) -> Result<(), DriverError> {
    let mut buf = vec![0u8; max_datagram.max(4) + 1];
    let mut handles_alive = true;
    loop {
        while let Some(event) = engine.poll_event() {
            backlog.queue(&events, event);
        }
        while let Some(t) = engine.poll_transmit() {
            transmit(&socket, t).await;
        }
        let deadline = engine.poll_timeout();
        tokio::select! {
            () = shutdown.cancelled() => {
                debug!("CoAP client shutting down");
                return Ok(());
            }
            received = receive(&socket, &mut buf) => {
                match received? {
                    Received::Datagram(n, peer) => {
                        if !engine.handle_datagram(now(), peer, buf.get(..n).unwrap_or_default()) {
                            backlog.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Received::Oversized => {
                        backlog.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                    Received::Skip => {}
                }
            }
            permit = events.reserve(), if !backlog.events.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(event) = backlog.events.pop_front() {
                        permit.send(event);
                    }
                }
                Err(_) => backlog.events.clear(),
            },
            command = commands.recv(), if handles_alive => match command {
                Some(Command::Request { peer, method, uri, content_format, payload, reply }) => {
                    let _ = reply.send(engine.request(now(), peer, method, &uri, content_format, payload));
                }
                Some(Command::Observe { peer, uri, reply }) => {
                    let _ = reply.send(engine.observe(now(), peer, &uri));
                }
                Some(Command::Cancel { id, reply }) => {
                    let _ = reply.send(engine.cancel_observation(now(), id));
                }
                None => handles_alive = false,
            },
            () = sleep_until(deadline) => engine.handle_timeout(now()),
        }
    }
}

/// Events waiting in the driver while the application's channel is full.
struct Backlog {
    events: VecDeque<ClientEvent>,
    cap: usize,
    counters: Arc<ClientCounters>,
    log: LogLimiter,
}

impl Backlog {
    /// Delivers at once when the channel has room, else keeps the event in the
    /// backlog; see [`ClientDriverConfig::backlog`] for the overflow policy.
    fn queue(&mut self, events: &mpsc::Sender<ClientEvent>, event: ClientEvent) {
        let event = if self.events.is_empty() {
            match events.try_send(event) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(e)) => e,
            }
        } else {
            event
        };
        if matches!(event, ClientEvent::Notification { .. }) && self.events.len() >= self.cap {
            let dropped = self
                .counters
                .notifications_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if let LogPermit::Log { suppressed } = self.log.permit(Instant::now()) {
                warn!(
                    dropped,
                    suppressed, "event consumer is lagging; notification dropped"
                );
            }
            return;
        }
        self.events.push_back(event);
    }
}
