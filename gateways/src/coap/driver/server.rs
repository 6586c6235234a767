//! The server driver: a task running a [`Server`] engine on a UDP socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::batch_io::{BATCH, RecvBuffers};
use super::{DEFAULT_MAX_DATAGRAM, now, sleep_until};
use crate::coap::error::DriverError;
use crate::coap::server::{
    Notification, RequestId, Response, Server, ServerConfig, ServerEvent, ServerStats,
};
use crate::coap::transmission::Transmit;
use device_models::{LogLimiter, LogPermit};

/// Settings of the server driver.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerDriverConfig {
    /// The engine's settings.
    pub engine: ServerConfig,
    /// Capacity of the event channel to the application (default 1 024).
    /// When it is full, a new request is answered 5.03 Service Unavailable
    /// with Max-Age at once, and observer events are dropped with a warning.
    pub event_queue: usize,
    /// Capacity of the command channel from handles (default 1 024).
    pub command_queue: usize,
    /// Largest datagram accepted (default 1 500 bytes).
    pub max_datagram: usize,
}

impl Default for ServerDriverConfig {
    fn default() -> Self {
        Self {
            engine: ServerConfig::default(),
            event_queue: 1_024,
            command_queue: 1_024,
            max_datagram: DEFAULT_MAX_DATAGRAM,
        }
    }
}

enum Command {
    Respond(RequestId, Response),
    Notify(String, Notification, oneshot::Sender<usize>),
}

/// Cloneable handle through which the application answers requests and
/// sends notifications.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    tx: mpsc::Sender<Command>,
}

impl ServerHandle {
    /// Queues the answer to a request. Answers to requests that already
    /// timed out are dropped by the engine (logged at debug level).
    pub async fn respond(&self, id: RequestId, response: Response) -> Result<(), DriverError> {
        self.tx
            .send(Command::Respond(id, response))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Notifies the observers of `path`; returns how many there were.
    pub async fn notify(
        &self,
        path: &str,
        notification: Notification,
    ) -> Result<usize, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Notify(path.to_owned(), notification, tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Shorthand for a 2.05 notification with the default CON/NON policy.
    pub async fn notify_content(
        &self,
        path: &str,
        content_format: u16,
        payload: Bytes,
    ) -> Result<usize, DriverError> {
        self.notify(path, Notification::new(content_format, payload))
            .await
    }
}

/// The engine's counters and observer count, as the driver task last copied them (after every
/// datagram, command or timer), readable from any thread without asking the task.
#[derive(Debug, Default)]
pub struct ServerCounters {
    datagrams: AtomicU64,
    rate_limited: AtomicU64,
    malformed: AtomicU64,
    duplicates: AtomicU64,
    requests: AtomicU64,
    retransmissions: AtomicU64,
    gave_up: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
    /// New requests answered 5.03 by the driver because the application's queue was full.
    queue_full: AtomicU64,
    /// Datagrams the driver dropped unread as larger than `max_datagram` (the engine never
    /// sees them): counted as received and malformed.
    oversized: AtomicU64,
    /// Observer events (added, removed) dropped because the application's queue was full.
    observer_events_dropped: AtomicU64,
    /// Warnings about those drops: at most ten per ten seconds.
    observer_log: LogLimiter,
    observers: AtomicU64,
}

impl ServerCounters {
    fn publish(&self, engine: &Server) {
        let s = engine.stats();
        let set = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        set(&self.datagrams, s.datagrams);
        set(&self.rate_limited, s.rate_limited);
        set(&self.malformed, s.malformed);
        set(&self.duplicates, s.duplicates);
        set(&self.requests, s.requests);
        set(&self.retransmissions, s.retransmissions);
        set(&self.gave_up, s.gave_up);
        set(&self.refused, s.refused);
        set(&self.busy, s.busy);
        set(&self.observers, engine.observer_count() as u64);
    }

    /// The engine's counters.
    pub fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            datagrams: get(&self.datagrams) + get(&self.oversized),
            rate_limited: get(&self.rate_limited),
            malformed: get(&self.malformed) + get(&self.oversized),
            duplicates: get(&self.duplicates),
            requests: get(&self.requests),
            retransmissions: get(&self.retransmissions),
            gave_up: get(&self.gave_up),
            refused: get(&self.refused),
            busy: get(&self.busy) + get(&self.queue_full),
        }
    }

    /// Observations registered now.
    pub fn observers(&self) -> u64 {
        self.observers.load(Ordering::Relaxed)
    }

    /// Observer events (an observation added or removed) the application never saw because
    /// its queue was full.
    pub fn observer_events_dropped(&self) -> u64 {
        self.observer_events_dropped.load(Ordering::Relaxed)
    }
}

/// What `spawn_server` returns.
#[derive(Debug)]
pub struct ServerParts {
    /// Handle for responses and notifications.
    pub handle: ServerHandle,
    /// Requests and observer events.
    pub events: mpsc::Receiver<ServerEvent>,
    /// The socket's address (useful after binding port 0).
    pub local_addr: SocketAddr,
    /// The task; resolves when shut down or on a fatal socket error.
    pub task: JoinHandle<Result<(), DriverError>>,
    /// The engine's counters, kept current by the task.
    pub counters: Arc<ServerCounters>,
}

/// Starts a server on `socket` until `shutdown` is cancelled.
pub fn spawn_server(
    socket: UdpSocket,
    config: ServerDriverConfig,
    shutdown: CancellationToken,
) -> Result<ServerParts, DriverError> {
    let local_addr = socket.local_addr().map_err(DriverError::Socket)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
    let (ev_tx, ev_rx) = mpsc::channel(config.event_queue.max(1));
    let engine = Server::new(config.engine.clone());
    let counters = Arc::new(ServerCounters::default());
    let socket = Arc::new(socket);
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    tokio::spawn(send_loop(socket.clone(), out_rx));
    let task = tokio::spawn(run(
        Datagrams {
            socket,
            outgoing: out_tx,
        },
        engine,
        cmd_rx,
        ev_tx,
        shutdown,
        config.max_datagram,
        counters.clone(),
    ));
    Ok(ServerParts {
        handle: ServerHandle { tx: cmd_tx },
        events: ev_rx,
        local_addr,
        task,
        counters,
    })
}

/// Datagrams waiting for the sending task; when full, the server's loop waits for room, as it
/// would for the socket.
const OUTGOING_QUEUE: usize = 1_024;

/// Sends what the engine produced, in order. Its own task, so that the kernel's work for each
/// datagram (a third of the server's cost per request) runs beside the engine instead of in
/// its loop: the engine's task, which every request goes through, is the one to keep short.
/// Ends when the server's loop drops its sender, after sending what was queued.
/// What is queued goes out in as few system calls as the kernel allows
/// ([`send_all`](super::batch_io::send_all)).
async fn send_loop(socket: Arc<UdpSocket>, mut outgoing: mpsc::Receiver<Transmit>) {
    let mut batch = Vec::with_capacity(BURST);
    while outgoing.recv_many(&mut batch, BURST).await > 0 {
        super::batch_io::send_all(&socket, &batch).await;
        batch.clear();
    }
}

/// The server's socket: read by its loop, written by [`send_loop`] through `outgoing`.
struct Datagrams {
    socket: Arc<UdpSocket>,
    outgoing: mpsc::Sender<Transmit>,
}

#[tracing::instrument(name = "coap_server", skip_all, fields(local = ?datagrams.socket.local_addr().ok()))]
async fn run(
    datagrams: Datagrams,
    mut engine: Server,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ServerEvent>,
    shutdown: CancellationToken,
    max_datagram: usize,
    counters: Arc<ServerCounters>,
) -> Result<(), DriverError> {
    let Datagrams { socket, outgoing } = datagrams;
    let mut received = RecvBuffers::new(max_datagram);
    let mut handles_alive = true;
    loop {
        forward_events(&mut engine, &events, &counters);
        counters.publish(&engine);
        while let Some(t) = engine.poll_transmit() {
            // The sending task only stops once this sender is dropped.
            if outgoing.send(t).await.is_err() {
                return Err(DriverError::Stopped);
            }
        }
        let deadline = engine.poll_timeout();
        tokio::select! {
            () = shutdown.cancelled() => {
                debug!("CoAP server shutting down");
                return Ok(());
            }
            readable = socket.readable() => {
                readable.map_err(DriverError::Socket)?;
                // Take what is waiting, up to a burst, before answering and going back to
                // wait: one turn of this loop per burst, not per datagram, and a system call
                // per batch of datagrams.
                let mut taken = 0;
                while taken < BURST {
                    match received.try_recv(&socket) {
                        Ok(n) => {
                            for i in 0..n {
                                match received.datagram(i) {
                                    Ok((peer, bytes)) => engine.handle_datagram(now(), peer, bytes),
                                    Err(peer) => {
                                        counters.oversized.fetch_add(1, Ordering::Relaxed);
                                        debug!(?peer, "oversized datagram dropped");
                                    }
                                }
                            }
                            taken += n;
                            if n < BATCH {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if crate::udp::is_transient(&e) => {
                            debug!(error = %e, "per-datagram receive error ignored");
                            taken += 1;
                        }
                        Err(e) => return Err(DriverError::Socket(e)),
                    }
                }
            }
            command = commands.recv(), if handles_alive => {
                let Some(command) = command else {
                    handles_alive = false;
                    continue;
                };
                handle_command(&mut engine, command);
                for _ in 1..BURST {
                    match commands.try_recv() {
                        Ok(c) => handle_command(&mut engine, c),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            handles_alive = false;
                            break;
                        }
                    }
                }
            }
            () = sleep_until(deadline) => engine.handle_timeout(now()),
        }
    }
}

/// Datagrams (or commands) handled in one turn of the server's loop at most.
const BURST: usize = 64;

/// Carries out one command from a [`ServerHandle`].
fn handle_command(engine: &mut Server, command: Command) {
    match command {
        Command::Respond(id, response) => {
            if let Err(e) = engine.respond(now(), id, response) {
                debug!(error = %e, "response dropped");
            }
        }
        Command::Notify(path, notification, reply) => {
            let _ = reply.send(engine.notify_with(now(), &path, notification));
        }
    }
}

/// Hands events to the application without waiting; see
/// [`ServerDriverConfig::event_queue`] for what happens when it is full.
fn forward_events(
    engine: &mut Server,
    events: &mpsc::Sender<ServerEvent>,
    counters: &ServerCounters,
) {
    while let Some(event) = engine.poll_event() {
        let Err(err) = events.try_send(event) else {
            continue;
        };
        let event = err.into_inner();
        match event {
            ServerEvent::Request(r) => {
                debug!(request = %r.id, peer = %r.peer, "application queue full; answering 5.03");
                counters.queue_full.fetch_add(1, Ordering::Relaxed);
                let busy =
                    Response::new(coap_lite::ResponseType::ServiceUnavailable).with_max_age(2);
                if let Err(e) = engine.respond(now(), r.id, busy) {
                    debug!(error = %e, "busy answer not sent");
                }
            }
            other => {
                counters
                    .observer_events_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if let LogPermit::Log { suppressed } =
                    counters.observer_log.permit(std::time::Instant::now())
                {
                    warn!(event = ?other, suppressed, "application queue full; observer event dropped");
                }
            }
        }
    }
}
