//! Raw UDP, TCP and serial devices, whose framing and payload codec are declared in their thing
//! type's `[bindings.frame]` (see `device_models::frames`), so a new kind of device needs no code.
//!
//! | module | holds |
//! | --- | --- |
//! | [`config`] | `[[raw.udp]]`, `[[raw.tcp]]`, `[[raw.serial]]` as serde types, validated into [`PreparedListener`]s before any port opens |
//! | [`model`] | [`DeviceModel`]: a thing type plus its compiled frame codec; which values are state, info or an action's output |
//! | `reader` | bytes → frames → decoded frames, with bad frames classified, counted and logged (rate-limited) with their peer |
//! | `engine` | the protocol logic without I/O: identification, presence, commands → frames, reply matching, timeouts |
//! | `ratelimit` | token buckets: per UDP source (drop) and per TCP connection (read slower) |
//! | [`stats`] | per-listener counters ([`ListenerStats`]) and the log limiter |
//! | `udp` | the UDP socket task |
//! | `tcp` | the accept loop, a task per connection, and the engine task they feed |
//! | `serial` | the serial port task: open, read, write one request at a time, reopen with back-off |
//!
//! Use: [`RawConfig::prepare`] against the [`TypeCatalog`](device_models::TypeCatalog), then for
//! each [`PreparedListener`] attach a gateway to the hub (one [`GatewayIo`] per listener, named by
//! [`PreparedListener::name`]) and [`start`] it with the hub's shutdown token.
//!
//! Shared state: each listener's engine is owned by one task (actor style). TCP
//! connection tasks frame and decode their own bytes and send decoded frames to that task over a
//! bounded channel; it writes commands back through each connection's bounded queue with
//! `try_send`, and drops a connection whose queue is full, so a device that does not read cannot
//! stall the others. Counters are atomics; the log limiter is a short mutex never held across an
//! `.await`.
//!
//! Towards the hub: the events of one turn of a listener's loop (a read of the port; a datagram
//! and those already waiting behind it, or a connection's frame and the others already queued, up
//! to `MAX_INPUTS_PER_TURN` in all; a command; a timeout) go to the hub together: a lone event as
//! itself, several as [`DeviceEvent::Batch`]es of at most 32, one channel send each (with no
//! barrier: nothing is acknowledged to devices). Back-pressure: sends wait (`send().await`). When
//! the hub's queue is full, a listener stops reading its socket or port until there is room (UDP
//! datagrams then queue in, and overflow, the kernel's buffer), rather than dropping reports
//! silently.

pub mod config;
mod engine;
pub mod model;
mod ratelimit;
mod reader;
mod serial;
pub mod stats;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use device_models::DeviceEvent;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    FlowControl, Parity, PreparedListener, PreparedSerial, PreparedTcp, PreparedUdp, RawConfig,
    RawConfigError, SerialConfig, TcpConfig, UdpConfig,
};
pub use model::{DeviceModel, ModelError};
pub use stats::{ListenerStats, StatsSnapshot};

use crate::link::GatewayIo;
use crate::outbox::{Outbox, Stopped};

/// A listener that could not start.
#[derive(Debug, Error)]
pub enum RawError {
    /// The UDP or TCP address could not be bound.
    #[error("cannot bind {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running listener: its address, its counters, and its tasks.
#[derive(Debug)]
pub struct RawListener {
    name: String,
    local_addr: Option<SocketAddr>,
    stats: Arc<ListenerStats>,
    tasks: TaskTracker,
}

impl RawListener {
    /// The gateway name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address of a UDP or TCP listener (useful with port 0); `None` for serial ports.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Waits until every task of the listener has ended (after the shutdown token fired, or the
    /// hub dropped the gateway's event channel).
    pub async fn join(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts a listener: binds its socket (or begins opening its serial port) and spawns its tasks,
/// which run until `shutdown` is cancelled or the hub drops `io.events`.
pub async fn start(
    listener: PreparedListener,
    io: GatewayIo,
    shutdown: CancellationToken,
) -> Result<RawListener, RawError> {
    let stats = Arc::new(ListenerStats::default());
    let tasks = TaskTracker::new();
    let name = listener.name().to_owned();
    let local_addr = match listener {
        PreparedListener::Udp(p) => {
            Some(udp::start(p, io, Arc::clone(&stats), &tasks, shutdown).await?)
        }
        PreparedListener::Tcp(p) => {
            Some(tcp::start(p, io, Arc::clone(&stats), &tasks, shutdown).await?)
        }
        PreparedListener::Serial(p) => {
            serial::start(p, io, Arc::clone(&stats), &tasks, shutdown);
            None
        }
    };
    Ok(RawListener {
        name,
        local_addr,
        stats,
        tasks,
    })
}

/// Most datagrams, or frames and other news from connections, one turn of a listener's loop
/// takes (the first awaited, the rest already waiting) before handing their events to the hub.
const MAX_INPUTS_PER_TURN: usize = 32;

/// Hands the events the engine has ready to the hub, in one channel send when they fit one
/// batch (see [`Outbox`]), waiting for room in the hub's queue but not past shutdown.
async fn deliver<P>(
    engine: &mut engine::Engine<P>,
    outbox: &mut Outbox,
    events: &mpsc::Sender<DeviceEvent>,
    shutdown: &CancellationToken,
) -> Result<(), Stopped>
where
    P: Clone + Eq + std::hash::Hash + std::fmt::Display,
{
    while let Some(event) = engine.poll_event() {
        outbox.push(event);
    }
    outbox.flush(events, shutdown).await
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
