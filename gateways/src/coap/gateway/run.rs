//! The gateway task: one actor that owns both cores ([`PushDevices`], [`ObservedDevices`]) and
//! talks to the CoAP drivers and the hub through bounded channels.
//!
//! **Shared state rule.** Nothing is shared: the actor owns all device state, so no locks. It
//! never waits on a device, and never waits on the hub either:
//! - the events of the requests handled in one burst go to the hub as one batch
//!   ([`DeviceEvent::Batch`], closed at [`EventBatch::MAX_EVENTS`]), for which a slot of the hub's
//!   channel is free *before* its first request is handled (the actor is the channel's only
//!   sender, so the slot stays free until the batch goes at the burst's end); without one, the
//!   device gets 5.03 Service Unavailable (Max-Age 1) and retries: a hub that cannot keep up
//!   pushes back on devices instead of losing their data;
//! - other events (offline, values from observed devices, command refusals) go through a
//!   bounded [`Outbox`] drained as the hub makes room.
//!
//! A confirmable POST or PUT whose events reached the hub is answered only once the hub has
//! committed them: the batch carries one barrier ([`group`](device_models::gateway::group))
//! covering every such request in it, and their responses wait for it beside the actor's other
//! inputs (if that takes longer than the ACK delay, the server sends an empty ACK and the
//! response follows as a separate one, after the commit). If the hub cannot write them, the
//! devices get 5.03 and retry. A request whose report, info or event the hub refused (it does
//! not fit the thing's type: the hub checks every gateway's reports in one place) gets 4.00 Bad
//! Request, the others of its batch their success. Non-confirmable requests stay
//! fire-and-forget.
//!
//! Waiting happens only on the drivers' command channels, which their tasks drain without ever
//! waiting on the actor, so the two cannot deadlock. A device reading its own `state` or `info`
//! is answered from the hub's registry: the actor polls those reads itself beside its other
//! inputs (at most [`MAX_READS`] at once, beyond which the device gets 5.03), so a slow read
//! holds up nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use device_models::{
    CommitError, CommitGroup, CommitWait, DeviceCommand, DeviceEvent, EventBatch, LogLimiter,
    LogPermit, ThingId,
};
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
use super::push::{PushDevices, Read};
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

/// The responses held until the events of their requests (one batch's) are committed, each
/// as it is to go out once they are.
pub(crate) type PendingCommit =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<(RequestId, Response)>> + Send>>;

/// What the requests of the current burst gave the hub, not sent yet.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    /// Their events, in order, with the barrier covering the durable requests.
    batch: EventBatch,
    /// The gateway's end of that barrier, handing out a wait per durable request.
    group: Option<CommitGroup>,
    /// The durable requests' responses, each with its wait.
    held: Vec<(RequestId, Response, CommitWait)>,
}

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
    /// This burst's events and its durable requests' responses, until
    /// [`end_burst`](Actor::end_burst) sends the batch.
    pub burst: Burst,
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
                    for (id, response) in done {
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
        if let Some(wait) = durable {
            self.burst.held.push((id, response, wait));
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

    /// Sends the burst's batch to the hub, its durable requests' responses then waiting for
    /// the barrier it carries. Its channel slot was free when its first request was handled
    /// and the actor is the channel's only sender, so it goes at once unless older events
    /// wait in the outbox, behind which it queues.
    pub(crate) fn end_burst(&mut self) {
        let Burst { batch, held, .. } = std::mem::take(&mut self.burst);
        if batch.is_empty() {
            return;
        }
        self.outbox
            .push(&self.events, DeviceEvent::Batch(Box::new(batch)));
        if !held.is_empty() {
            self.commits.push(Box::pin(answers(held)));
        }
    }

    /// Handles a request whose events join the burst's batch, for which a channel slot must be
    /// free (see the module docs). The last item, for a confirmable request that delivered
    /// something, is the wait its response is held behind (see [`end_burst`](Self::end_burst)).
    fn react(
        &mut self,
        request: &Request,
    ) -> (Response, Option<ThingId>, Option<Read>, Option<CommitWait>) {
        if self.burst.batch.events.len() >= EventBatch::MAX_EVENTS {
            self.end_burst();
        }
        // Older events wait in the outbox: new ones must not overtake them. Else the burst's
        // batch has its slot already, or needs one.
        let room = if !self.outbox.is_empty() {
            Err(TrySendError::Full(()))
        } else if self.events.is_closed() {
            Err(TrySendError::Closed(()))
        } else if self.burst.batch.is_empty() && self.events.capacity() == 0 {
            Err(TrySendError::Full(()))
        } else {
            Ok(())
        };
        match room {
            Ok(()) => {
                let reaction = self.push.on_request(now(), wall_ms(), request);
                // What a device delivers (POST, PUT) is acknowledged once durable; a GET's
                // events are only presence, and its answer (the commands waiting, an Observe
                // registration) must not wait: notifications sent before it would be lost.
                let delivers = !matches!(request.method, coap_lite::RequestType::Get);
                let durable = request.confirmable && delivers && !reaction.events.is_empty();
                let wait = self.burst.gather(reaction.events, durable);
                (reaction.response, reaction.notify, reaction.read, wait)
            }
            Err(TrySendError::Full(())) => {
                debug!(peer = %request.peer, "hub queue full; asking the device to retry");
                (busy(), None, None, None)
            }
            Err(TrySendError::Closed(())) => {
                debug!("hub closed the event channel");
                (busy(), None, None, None)
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

impl Burst {
    /// Adds a request's events to the batch; for a durable request that gave any, the wait its
    /// response is held behind.
    fn gather(&mut self, events: Vec<DeviceEvent>, durable: bool) -> Option<CommitWait> {
        let start = self.batch.events.len();
        self.batch.events.extend(events);
        if !durable {
            return None;
        }
        self.batch.cover(&mut self.group, start)
    }
}

/// The held responses as they go out once their batch's barrier is answered: as prepared,
/// 4.00 for a request the hub refused, 5.03 (retry) if the hub could not write the batch.
async fn answers(held: Vec<(RequestId, Response, CommitWait)>) -> Vec<(RequestId, Response)> {
    let mut out = Vec::with_capacity(held.len());
    let mut failed = None;
    for (id, response, wait) in held {
        let response = match wait.await {
            Ok(()) => response,
            Err(CommitError::Rejected) => refused(),
            Err(e) => {
                failed = Some(e);
                busy()
            }
        };
        out.push((id, response));
    }
    if let Some(e) = failed {
        warn!(requests = out.len(), error = %e, "requests' data could not be made durable; asking the devices to retry");
    }
    out
}

/// 5.03 with a short Max-Age: the device retries after a second.
fn busy() -> Response {
    Response::new(ResponseType::ServiceUnavailable).with_max_age(1)
}

/// 4.00 with a diagnostic payload (RFC 7252, 5.5.2): the hub refused what the request said, as
/// it does not fit the thing's type; sending it again changes nothing.
fn refused() -> Response {
    let mut response = Response::new(ResponseType::BadRequest);
    response.payload = bytes::Bytes::from_static(b"does not fit the thing's type");
    response
}

/// Events waiting for room in the hub's channel, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<DeviceEvent>,
    dropped: u64,
    stats: Arc<CoapStats>,
    /// Warnings about drops: at most ten per ten seconds (each drop is counted).
    log: LogLimiter,
}

impl Outbox {
    pub(crate) fn new(stats: Arc<CoapStats>) -> Self {
        Self {
            queue: VecDeque::new(),
            dropped: 0,
            stats,
            log: LogLimiter::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends at once when the channel has room and nothing is waiting; else queues, within
    /// [`OUTBOX_CAP`].
    fn push(&mut self, tx: &mpsc::Sender<DeviceEvent>, event: DeviceEvent) {
        let event = if self.queue.is_empty() {
            let counted = CoapStats::counted(&event);
            match tx.try_send(event) {
                Ok(()) => {
                    self.stats.events_out(counted);
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
            if let LogPermit::Log { suppressed } = self.log.permit(std::time::Instant::now()) {
                if matches!(event, DeviceEvent::Reported { .. }) {
                    warn!(
                        dropped = self.dropped,
                        suppressed, "hub is lagging; reported values dropped"
                    );
                } else {
                    error!(dropped = self.dropped, suppressed, event = ?event, "hub is lagging; event dropped");
                }
            }
            return;
        }
        self.queue.push_back(event);
    }
}
