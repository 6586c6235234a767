//! The gateway task: one actor that owns both cores ([`PushDevices`], [`ObservedDevices`]) and
//! talks to the CoAP drivers and the hub through bounded channels.
//!
//! **Shared state rule.** Nothing is shared: the actor owns all device state, so no locks. It
//! never waits on a device, and never waits on the hub either:
//! - a request's events go out through permits reserved *before* the request is handled, so
//!   either all of them are queued or the device gets 5.03 Service Unavailable (Max-Age 1) and
//!   retries: a hub that cannot keep up pushes back on devices instead of losing their data;
//! - other events (offline, values from observed devices, command refusals) go through a
//!   bounded [`Outbox`] drained as the hub makes room.
//!
//! A confirmable POST or PUT whose events reached the hub is answered only once the hub has
//! committed them: one barrier follows the events of every such request the actor handled in
//! one burst, and their responses wait for it together beside the actor's other inputs (if that
//! takes longer than the ACK delay, the server sends an empty ACK and the response follows as a
//! separate one, after the commit). If the hub cannot write them, the devices get 5.03 and
//! retry. Non-confirmable requests stay fire-and-forget.
//!
//! Waiting happens only on the drivers' command channels, which their tasks drain without ever
//! waiting on the actor, so the two cannot deadlock. A device reading its own `state` or `info`
//! is answered from the hub's registry: the actor polls those reads itself beside its other
//! inputs (at most [`MAX_READS`] at once, beyond which the device gets 5.03), so a slow read
//! holds up nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use device_models::{CommitError, DeviceCommand, DeviceEvent, ThingId};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::error::GatewayError;
use super::observed::{ObservedDevices, Planned};
use super::push::{MAX_EVENTS_PER_REQUEST, PushDevices, Read};
use super::stats::CoapStats;
use crate::coap::client::ClientEvent;
use crate::coap::driver::{ClientHandle, ServerHandle};
use crate::coap::server::{Request, RequestId, Response, ServerEvent};
use crate::coap::{DriverError, ResponseType};
use crate::link::{ThingReader, ThingView};

/// Most events held in the outbox; past it, `Reported` values are dropped (newer ones follow)
/// and other events are dropped with an error log.
const OUTBOX_CAP: usize = 4_096;

/// Reads of the registry in flight at once.
pub(crate) const MAX_READS: usize = 64;

/// A registry read in progress, yielding its answer with the request that asked.
pub(crate) type PendingRead = std::pin::Pin<
    Box<dyn std::future::Future<Output = (RequestId, Read, Option<ThingView>)> + Send>,
>;

/// The responses held until the events of their requests (one burst's) are committed.
pub(crate) type PendingCommit = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (Vec<(RequestId, Response)>, Result<(), CommitError>)>
            + Send,
    >,
>;

/// Everything the actor receives from.
pub(crate) struct Inputs {
    pub server_events: mpsc::Receiver<ServerEvent>,
    pub commands: mpsc::Receiver<DeviceCommand>,
    pub client_events: Option<mpsc::Receiver<ClientEvent>>,
    pub sweep: Interval,
}

/// The actor's state.
pub(crate) struct Actor {
    pub push: PushDevices,
    pub observed: ObservedDevices,
    pub server: ServerHandle,
    pub server_task: JoinHandle<Result<(), DriverError>>,
    pub client: Option<ClientHandle>,
    pub events: mpsc::Sender<DeviceEvent>,
    pub outbox: Outbox,
    /// The gateway's counters.
    pub stats: Arc<CoapStats>,
    pub shutdown: CancellationToken,
    /// The registry, for devices that read their thing back.
    pub things: Arc<dyn ThingReader>,
    /// Registry reads in progress.
    pub reads: FuturesUnordered<PendingRead>,
    /// Responses waiting for their request's events to be committed.
    pub commits: FuturesUnordered<PendingCommit>,
    /// The responses of this burst's durable requests, sent once the barrier that
    /// [`end_burst`](Actor::end_burst) queues behind their events is answered.
    pub held: Vec<(RequestId, Response)>,
}

/// A sweep interval for an offline timeout: a quarter of it, between 100 ms and 1 s.
pub(crate) fn sweep_interval(offline_after: Duration) -> Interval {
    let period = (offline_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Milliseconds since the Unix epoch, for event timestamps.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The engines' clock: tokio's, so paused-time tests work.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn recv_client(rx: &mut Option<mpsc::Receiver<ClientEvent>>) -> Option<ClientEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Events (or answered commits) handled in one turn of the gateway's loop at most.
const BURST: usize = 64;

/// Runs until `shutdown` is cancelled or the server driver stops.
pub(crate) async fn run(mut actor: Actor, mut inputs: Inputs) -> Result<(), GatewayError> {
    device_models::fault::inject("coap_gateway");
    let events = actor.events.clone();
    let shutdown = actor.shutdown.clone();
    let mut commands_open = true;
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            event = inputs.server_events.recv() => match event {
                Some(event) => {
                    if let Err(e) = actor.on_server_event(event).await {
                        break Err(e);
                    }
                    // The rest of a burst, without going back to wait.
                    let mut failed = None;
                    for _ in 1..BURST {
                        let Ok(event) = inputs.server_events.try_recv() else {
                            break;
                        };
                        if let Err(e) = actor.on_server_event(event).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    // One barrier behind the whole burst's events.
                    actor.end_burst();
                    if let Some(e) = failed {
                        break Err(e);
                    }
                }
                None => break actor.server_stopped().await,
            },
            command = inputs.commands.recv(), if commands_open => match command {
                Some(command) => {
                    if let Err(e) = actor.on_command(command).await {
                        break Err(e);
                    }
                }
                None => {
                    debug!("hub closed the command channel");
                    commands_open = false;
                }
            },
            event = recv_client(&mut inputs.client_events) => match event {
                Some(event) => {
                    for e in actor.observed.on_event(event, wall_ms()) {
                        actor.outbox.push(&actor.events, e);
                    }
                }
                None => {
                    error!("CoAP client driver stopped; devices that are servers are no longer observed");
                    inputs.client_events = None;
                }
            },
            permit = events.reserve(), if !actor.outbox.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(e) = actor.outbox.queue.pop_front() {
                        actor.stats.sent(&e);
                        permit.send(e);
                    }
                }
                Err(_) => {
                    debug!("hub closed the event channel");
                    actor.outbox.queue.clear();
                }
            },
            Some((id, read, view)) = actor.reads.next(), if !actor.reads.is_empty() => {
                let response = read.answer(view.as_ref());
                if let Err(e) = actor.respond(id, response).await {
                    break Err(GatewayError::Driver(e));
                }
            }
            Some(done) = actor.commits.next(), if !actor.commits.is_empty() => {
                // One commit answers many requests: all that are ready go out in this turn.
                let mut done = done;
                let mut failed = None;
                for taken in 1.. {
                    let (held, outcome) = done;
                    if let Err(e) = &outcome {
                        warn!(requests = held.len(), error = %e, "requests' data could not be made durable; asking the devices to retry");
                    }
                    for (id, response) in held {
                        let response = if outcome.is_ok() { response } else { busy() };
                        if let Err(e) = actor.respond(id, response).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    if failed.is_some() || taken == BURST {
                        break;
                    }
                    match actor.commits.next().now_or_never() {
                        Some(Some(next)) => done = next,
                        _ => break,
                    }
                }
                if let Some(e) = failed {
                    break Err(GatewayError::Driver(e));
                }
            }
            _ = inputs.sweep.tick() => {
                if let Err(e) = actor.on_sweep().await {
                    break Err(e);
                }
            }
        }
    };
    // Stops the drivers too (their tokens are children of this one).
    actor.shutdown.cancel();
    result
}

impl Actor {
    async fn on_server_event(&mut self, event: ServerEvent) -> Result<(), GatewayError> {
        match event {
            ServerEvent::Request(request) => self.on_request(request).await,
            ServerEvent::ObserverAdded { path, .. } => {
                self.push.on_observer(&path, true);
                Ok(())
            }
            ServerEvent::ObserverRemoved { path, peer, reason } => {
                debug!(%path, %peer, ?reason, "observer removed");
                self.push.on_observer(&path, false);
                Ok(())
            }
        }
    }

    async fn on_request(&mut self, request: Request) -> Result<(), GatewayError> {
        let id = request.id;
        let (response, notify, read, durable) = self.react(&request);
        if durable {
            self.held.push((id, response));
            if let Some(thing) = notify {
                self.notify(&thing).await?;
            }
            return Ok(());
        }
        let response = match read {
            Some(read) => match self.start_read(id, read) {
                // Answered when the registry replies.
                None => return Ok(()),
                Some(refused) => refused,
            },
            None => response,
        };
        self.respond(id, response)
            .await
            .map_err(GatewayError::Driver)?;
        if let Some(thing) = notify {
            self.notify(&thing).await?;
        }
        Ok(())
    }

    /// Answers request `id`, counting refusals.
    async fn respond(&mut self, id: RequestId, response: Response) -> Result<(), DriverError> {
        self.stats.answered(response.code);
        self.server.respond(id, response).await
    }

    /// Starts reading a thing for request `id`; `Some` is the answer when it cannot start.
    fn start_read(&mut self, id: RequestId, read: Read) -> Option<Response> {
        if self.reads.len() >= MAX_READS {
            debug!(thing = %read.thing, "too many registry reads in flight; asking the device to retry");
            return Some(busy());
        }
        let pending = self.things.read(&read.thing);
        self.reads
            .push(Box::pin(async move { (id, read, pending.await) }));
        None
    }

    /// Queues one barrier behind the events of the burst's durable requests, whose responses
    /// then wait for it together. The barrier's channel slot was left free by the last
    /// [`react`](Self::react) (the actor is the channel's only sender), so it goes at once
    /// unless older events wait in the outbox, behind which it queues.
    pub(crate) fn end_burst(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let (commit, wait) = device_models::gateway::commit();
        self.outbox.push(&self.events, DeviceEvent::Barrier(commit));
        self.commits
            .push(Box::pin(async move { (held, wait.await) }));
    }

    /// Handles a request with its events' channel slots reserved first (see the module docs),
    /// one more left free for the burst's barrier; true (last) for a confirmable request that
    /// produced events: its response waits for their commit (see [`end_burst`](Self::end_burst)).
    fn react(&mut self, request: &Request) -> (Response, Option<ThingId>, Option<Read>, bool) {
        // One more slot for the barrier that follows the events.
        let wanted = (MAX_EVENTS_PER_REQUEST + 1).min(self.events.max_capacity());
        let permits = if self.outbox.is_empty() {
            self.events.try_reserve_many(wanted)
        } else {
            // Older events wait in the outbox; new ones must not overtake them.
            Err(TrySendError::Full(()))
        };
        match permits {
            Ok(mut permits) => {
                let reaction = self.push.on_request(now(), wall_ms(), request);
                // What a device delivers (POST, PUT) is acknowledged once durable; a GET's
                // events are only presence, and its answer (the commands waiting, an Observe
                // registration) must not wait: notifications sent before it would be lost.
                let delivers = !matches!(request.method, coap_lite::RequestType::Get);
                let durable = request.confirmable && delivers && !reaction.events.is_empty();
                for event in reaction.events {
                    match permits.next() {
                        Some(permit) => {
                            self.stats.sent(&event);
                            permit.send(event);
                        }
                        None => self.outbox.push(&self.events, event),
                    }
                }
                (reaction.response, reaction.notify, reaction.read, durable)
            }
            Err(TrySendError::Full(())) => {
                debug!(peer = %request.peer, "hub queue full; asking the device to retry");
                (busy(), None, None, false)
            }
            Err(TrySendError::Closed(())) => {
                debug!("hub closed the event channel");
                (busy(), None, None, false)
            }
        }
    }

    async fn on_command(&mut self, command: DeviceCommand) -> Result<(), GatewayError> {
        self.stats.command();
        if self.observed.owns(command.thing()) {
            match self.observed.plan(&command) {
                Ok(planned) => {
                    for p in planned {
                        self.start_request(p).await;
                    }
                }
                Err(events) => self.queue_events(events),
            }
            return Ok(());
        }
        let outcome = self.push.on_command(wall_ms(), command);
        self.queue_events(outcome.events);
        if let Some(thing) = outcome.notify {
            self.notify(&thing).await?;
        }
        Ok(())
    }

    async fn start_request(&mut self, p: Planned) {
        let Some(client) = &self.client else {
            self.queue_events(ObservedDevices::not_started(
                p.purpose,
                "CoAP client not running",
            ));
            return;
        };
        match client
            .request(p.peer, p.method, &p.uri, p.content_format, p.payload)
            .await
        {
            Ok(id) => self.observed.requested(id, p.purpose),
            Err(e) => {
                let events = ObservedDevices::not_started(p.purpose, &e.to_string());
                self.queue_events(events);
            }
        }
    }

    /// Sends `thing`'s commands to its observers, and keeps the observer count the engine
    /// reports.
    async fn notify(&mut self, thing: &ThingId) -> Result<(), GatewayError> {
        let Some((path, notification)) = self.push.notification(thing) else {
            return Ok(());
        };
        let count = self
            .server
            .notify(&path, notification)
            .await
            .map_err(GatewayError::Driver)?;
        debug!(%thing, observers = count, "commands notified");
        self.push.set_observers(thing, count);
        Ok(())
    }

    async fn on_sweep(&mut self) -> Result<(), GatewayError> {
        let sweep = self.push.sweep(now(), wall_ms());
        self.queue_events(sweep.offline);
        for thing in sweep.probes {
            debug!(%thing, "probing a silent observer");
            self.notify(&thing).await?;
        }
        Ok(())
    }

    fn queue_events(&mut self, events: Vec<DeviceEvent>) {
        for e in events {
            self.outbox.push(&self.events, e);
        }
    }

    /// The server driver's event channel closed: report why.
    async fn server_stopped(&mut self) -> Result<(), GatewayError> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        match (&mut self.server_task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(GatewayError::Driver(e)),
            Err(e) => Err(GatewayError::Task(e)),
        }
    }
}

/// 5.03 with a short Max-Age: the device retries after a second.
fn busy() -> Response {
    Response::new(ResponseType::ServiceUnavailable).with_max_age(1)
}

/// Events waiting for room in the hub's channel, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<DeviceEvent>,
    dropped: u64,
    stats: Arc<CoapStats>,
}

impl Outbox {
    pub(crate) fn new(stats: Arc<CoapStats>) -> Self {
        Self {
            queue: VecDeque::new(),
            dropped: 0,
            stats,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends at once when the channel has room and nothing is waiting; else queues, within
    /// [`OUTBOX_CAP`].
    fn push(&mut self, tx: &mpsc::Sender<DeviceEvent>, event: DeviceEvent) {
        let event = if self.queue.is_empty() {
            let counted = !matches!(event, DeviceEvent::Barrier(_));
            match tx.try_send(event) {
                Ok(()) => {
                    if counted {
                        self.stats.event_out();
                    }
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(e)) => e,
            }
        } else {
            event
        };
        if self.queue.len() >= OUTBOX_CAP {
            self.dropped += 1;
            self.stats.dropped();
            if matches!(event, DeviceEvent::Reported { .. }) {
                warn!(
                    dropped = self.dropped,
                    "hub is lagging; reported values dropped"
                );
            } else {
                error!(dropped = self.dropped, event = ?event, "hub is lagging; event dropped");
            }
            return;
        }
        self.queue.push_back(event);
    }
}
