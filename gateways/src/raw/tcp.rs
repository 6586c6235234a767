//! The TCP listener: an accept loop, a task per connection, and one engine task.
//!
//! - **Accept loop**: never dies; accept errors back off (up to a second). At `max_connections`
//!   open, a new connection is accepted and closed at once (counted), so a device learns quickly.
//! - **Connection task** (span `raw.tcp.conn` with `peer` and `conn`): reads, frames and decodes its
//!   own bytes and sends decoded frames to the engine task; writes the command frames the engine
//!   queues for it, each within `write_timeout`. It closes the connection after `idle_timeout`
//!   without a byte, after `max_bad_frames` bad frames in a row (or as many frames' worth of bytes
//!   with no good frame), and at once when a length prefix loses the stream position. Its frame
//!   rate is capped by a token bucket: a device sending faster is simply read more slowly.
//! - **Engine task**: owns the engine and the table of connections; sees connections open and
//!   close; takes what connection tasks sent, with what is already queued behind it (up to
//!   `MAX_INPUTS_PER_TURN` in a turn), so frames from many connections reach the hub together;
//!   hands events to the hub and command frames to connections with `try_send` (a device whose
//!   queue is full is not reading: its connection is closed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use device_models::ThingId;
use device_models::frames::DecodedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::config::PreparedTcp;
use super::engine::{Clock, Engine};
use super::ratelimit::Bucket;
use super::reader::{FrameReader, report_bad_frame};
use super::stats::ListenerStats;
use super::{MAX_INPUTS_PER_TURN, RawError, deliver, sleep_until};
use crate::link::GatewayIo;
use crate::outbox::{Outbox, Stopped};
use device_models::LogLimiter;

/// Connection ids, unique for the listener's life.
type ConnId = u64;

/// What connection tasks tell the engine task.
#[derive(Debug)]
enum ConnEvent {
    Opened {
        id: ConnId,
        mapped: Option<ThingId>,
        outbound: mpsc::Sender<Bytes>,
        closer: CancellationToken,
    },
    Frame {
        id: ConnId,
        frame: DecodedFrame,
    },
    Closed {
        id: ConnId,
    },
}

/// Capacity of the channel from connection tasks to the engine task.
const CONN_EVENT_QUEUE: usize = 1024;

/// Read buffer per connection.
const READ_CHUNK: usize = 4096;

/// Binds the port and spawns the accept loop and the engine task; returns the bound address.
pub(super) async fn start(
    p: PreparedTcp,
    io: GatewayIo,
    stats: Arc<ListenerStats>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RawError> {
    let bind = |source| RawError::Bind {
        address: p.address,
        source,
    };
    let listener = TcpListener::bind(p.address).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let span = info_span!("raw.tcp", listener = %p.common.name, address = %local);
    let (conn_tx, conn_rx) = mpsc::channel(CONN_EVENT_QUEUE);
    let p = Arc::new(p);
    let memory = io.memory.clone();
    tasks.spawn(
        engine_task(
            Arc::clone(&p),
            io,
            conn_rx,
            Arc::clone(&stats),
            shutdown.clone(),
        )
        .instrument(span.clone()),
    );
    tasks.spawn(
        accept_loop(listener, p, conn_tx, stats, memory, tasks.clone(), shutdown).instrument(span),
    );
    Ok(local)
}

async fn accept_loop(
    listener: TcpListener,
    p: Arc<PreparedTcp>,
    conn_tx: mpsc::Sender<ConnEvent>,
    stats: Arc<ListenerStats>,
    memory: device_models::MemoryPressure,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(p.max_connections));
    let log = Arc::new(LogLimiter::default());
    let mut backoff = Duration::from_millis(10);
    let mut next_id: ConnId = 0;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            () = conn_tx.closed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if !p.peers.admits(peer) {
            ListenerStats::bump(&stats.unlisted_peer);
            debug!(%peer, "connection from an unlisted peer refused");
            continue;
        }
        if !memory.admit_connection() {
            ListenerStats::bump(&stats.connections_refused_memory);
            debug!(%peer, "connection refused: the hub is over its memory budget");
            continue;
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            ListenerStats::bump(&stats.connections_refused);
            debug!(%peer, "connection refused: max_connections open");
            continue;
        };
        ListenerStats::bump(&stats.connections);
        next_id += 1;
        let conn = Connection {
            id: next_id,
            peer,
            p: Arc::clone(&p),
            stats: Arc::clone(&stats),
            log: Arc::clone(&log),
            closer: shutdown.child_token(),
        };
        let span = info_span!("raw.tcp.conn", %peer, conn = next_id);
        let conn_tx = conn_tx.clone();
        tasks.spawn(
            async move {
                conn.run(stream, conn_tx).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// One connection's task state.
struct Connection {
    id: ConnId,
    peer: SocketAddr,
    p: Arc<PreparedTcp>,
    stats: Arc<ListenerStats>,
    log: Arc<LogLimiter>,
    /// Cancelled by shutdown, or by the engine task to drop a device that does not read.
    closer: CancellationToken,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Closed,
    Garbage,
    Idle,
    Failed,
}

impl Connection {
    async fn run(self, stream: TcpStream, conn_tx: mpsc::Sender<ConnEvent>) {
        let (outbound_tx, outbound) = mpsc::channel(self.p.common.engine.max_queued);
        let opened = ConnEvent::Opened {
            id: self.id,
            mapped: self.p.peers.lookup(self.peer).cloned(),
            outbound: outbound_tx,
            closer: self.closer.clone(),
        };
        if conn_tx.send(opened).await.is_err() {
            return;
        }
        debug!("connected");
        let end = self.serve(stream, outbound, &conn_tx).await;
        match end {
            End::Garbage => ListenerStats::bump(&self.stats.garbage_disconnects),
            End::Idle => ListenerStats::bump(&self.stats.idle_disconnects),
            End::Closed | End::Failed => {}
        }
        debug!(?end, "disconnected");
        let _ = conn_tx.send(ConnEvent::Closed { id: self.id }).await;
    }

    async fn serve(
        &self,
        mut stream: TcpStream,
        mut outbound: mpsc::Receiver<Bytes>,
        conn_tx: &mpsc::Sender<ConnEvent>,
    ) -> End {
        let model = &self.p.common.model;
        let mut reader = FrameReader::new(Arc::clone(model));
        let mut bucket = Bucket::new(self.p.rate_per_sec, self.p.burst, Clock::now().mono);
        let max_bad = self.p.max_bad_frames;
        let garbage_bytes = u64::from(max_bad)
            .saturating_mul(model.codec().framer().max_frame() as u64)
            .max(1);
        let mut bad_in_a_row = 0u32;
        let mut bytes_since_good = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut last_read = Clock::now().mono;
        loop {
            let idle = self.p.idle_timeout.map(|t| last_read + t);
            let n = tokio::select! {
                () = self.closer.cancelled() => return End::Closed,
                bytes = outbound.recv() => {
                    let Some(bytes) = bytes else { return End::Closed };
                    match tokio::time::timeout(self.p.write_timeout, stream.write_all(&bytes)).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => {
                            debug!(error = %e, "write failed");
                            return End::Failed;
                        }
                        Err(_) => {
                            ListenerStats::bump(&self.stats.slow_disconnects);
                            return End::Failed;
                        }
                    }
                }
                () = sleep_until(idle) => return End::Idle,
                read = stream.read(&mut buf) => match read {
                    Ok(0) => return End::Closed,
                    Ok(n) => {
                        last_read = Clock::now().mono;
                        n
                    }
                    Err(e) => {
                        debug!(error = %e, "read failed");
                        return End::Failed;
                    }
                },
            };
            reader.push(buf.get(..n).unwrap_or_default());
            bytes_since_good = bytes_since_good.saturating_add(n as u64);
            while let Some(frame) = reader.next() {
                match frame {
                    Ok(frame) => {
                        bad_in_a_row = 0;
                        bytes_since_good = 0;
                        if let Err(wait) = bucket.take(Clock::now().mono) {
                            tokio::select! {
                                () = self.closer.cancelled() => return End::Closed,
                                () = tokio::time::sleep(wait) => {}
                            }
                            let _ = bucket.take(Clock::now().mono);
                        }
                        let event = ConnEvent::Frame { id: self.id, frame };
                        tokio::select! {
                            () = self.closer.cancelled() => return End::Closed,
                            sent = conn_tx.send(event) => if sent.is_err() { return End::Closed },
                        }
                    }
                    Err(bad) => {
                        report_bad_frame(&bad, &self.peer, &self.stats, &self.log);
                        bad_in_a_row += 1;
                        if bad.loses_sync(&model.binding().framing) || bad_in_a_row >= max_bad {
                            return End::Garbage;
                        }
                    }
                }
            }
            if bytes_since_good > garbage_bytes {
                return End::Garbage;
            }
        }
    }
}

/// What the engine task knows of a connection.
struct ConnEntry {
    mapped: Option<ThingId>,
    outbound: mpsc::Sender<Bytes>,
    closer: CancellationToken,
}

async fn engine_task(
    p: Arc<PreparedTcp>,
    io: GatewayIo,
    mut conn_rx: mpsc::Receiver<ConnEvent>,
    stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
) {
    let GatewayIo {
        events,
        mut commands,
        ..
    } = io;
    let mut engine: Engine<ConnId> = Engine::new(
        Arc::clone(&p.common.model),
        p.common.engine.clone(),
        Arc::clone(&stats),
    );
    let mut conns: HashMap<ConnId, ConnEntry> = HashMap::new();
    let mut outbox = Outbox::default();
    let mut commands_open = true;
    debug!("listening");
    loop {
        let timeout = engine.poll_timeout();
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = conn_rx.recv() => match event {
                None => break,
                Some(event) => {
                    on_conn_event(&mut engine, &mut conns, event);
                    // What other connections queued meanwhile joins this turn's events.
                    for _ in 1..MAX_INPUTS_PER_TURN {
                        let Ok(event) = conn_rx.try_recv() else { break };
                        on_conn_event(&mut engine, &mut conns, event);
                    }
                }
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => engine.handle_command(command, Clock::now()),
                None => commands_open = false,
            },
            () = sleep_until(timeout) => engine.handle_timeout(Clock::now().mono),
        }
        while let Some(t) = engine.poll_transmit() {
            let Some(conn) = conns.get(&t.peer) else {
                continue;
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = conn.outbound.try_send(t.bytes) {
                ListenerStats::bump(&stats.slow_disconnects);
                warn!(
                    conn = t.peer,
                    "device does not read its commands; disconnecting"
                );
                conn.closer.cancel();
            }
        }
        if let Err(Stopped) = deliver(&mut engine, &mut outbox, &events, &shutdown).await {
            break;
        }
    }
    for conn in conns.values() {
        conn.closer.cancel();
    }
    debug!("stopped");
}

/// Tells the engine what a connection task reported, keeping the table of connections.
fn on_conn_event(
    engine: &mut Engine<ConnId>,
    conns: &mut HashMap<ConnId, ConnEntry>,
    event: ConnEvent,
) {
    match event {
        ConnEvent::Opened {
            id,
            mapped,
            outbound,
            closer,
        } => {
            conns.insert(
                id,
                ConnEntry {
                    mapped,
                    outbound,
                    closer,
                },
            );
            engine.handle_link_up(&id, Clock::now().mono);
        }
        ConnEvent::Frame { id, frame } => {
            let mapped = conns.get(&id).and_then(|c| c.mapped.as_ref());
            engine.handle_frame(&id, mapped, frame, Clock::now());
        }
        ConnEvent::Closed { id } => {
            conns.remove(&id);
            engine.handle_link_down(&id, true);
        }
    }
}
