//! [`ThingsService`]: the task that owns the registry and runs the service.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use device_models::DeviceEvent;
use futures_util::StreamExt as _;
use futures_util::stream::{self, SelectAll, Stream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::core::{Core, Publication};
use super::link::{Attach, GatewayId, ThingsStats};
use super::request::{Reply, Request};
use super::store::{StoreOp, StoreStats};
use crate::router::Realm;
use crate::router::broker::{Audience, Publisher};
use crate::uplink::tap::{TapItem, UplinkTap};
use device_models::now_ms;

/// Most device events handled in a row before the loop looks at its other inputs, so a device
/// flood cannot starve API calls.
const EVENT_BURST: usize = 256;

type GatewayStream = Pin<Box<dyn Stream<Item = (GatewayId, Option<DeviceEvent>)> + Send>>;

/// A gateway's event receiver as a stream that says once, with `None`, that it ended.
fn gateway_stream(id: GatewayId, rx: mpsc::Receiver<DeviceEvent>) -> GatewayStream {
    let mut rx = Some(rx);
    Box::pin(stream::poll_fn(move |cx| {
        let Some(r) = rx.as_mut() else {
            return Poll::Ready(None);
        };
        match r.poll_recv(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Some((id, Some(e)))),
            Poll::Ready(None) => {
                rx = None;
                Poll::Ready(Some((id, None)))
            }
            Poll::Pending => Poll::Pending,
        }
    }))
}

/// The things service task.
///
/// Rule for shared state: **this one task owns the registry** ([`Core`]); nothing else touches
/// it, so there is no lock. Everything reaches it through bounded channels: gateway events
/// (one channel per gateway, drained fairly), API requests from the WAMP handlers, and gateway
/// attachments. It never waits on anything slow:
/// - commands to gateways are `try_send` (see [`link`](super::link));
/// - publications go straight into the realm's broker ([`Publish`]), one read lock per turn:
///   the broker queues each EVENT, encoded once per serializer, on its subscribers' outbound
///   queues without waiting, and a subscriber too slow to keep up is handled by the router's
///   slow-consumer policy (and counted there), never by holding this task;
/// - database writes go to the writer thread with `try_send`; what does not fit waits in a
///   local backlog, and while the backlog is long, device events are not read (their gateways'
///   channels fill and push back), so the backlog is bounded and no write is lost;
/// - with the uplink on, events its rules forward and the device barriers behind them go to its
///   [tap](crate::uplink::tap) the same way (backlog, then push back), so no event is lost
///   between the registry and the uplink queue and a device is acknowledged only once both
///   hold what it said.
pub struct ThingsService {
    pub(crate) core: Core,
    pub(crate) attach: mpsc::Receiver<Attach>,
    pub(crate) requests: mpsc::Receiver<(Request, Reply)>,
    pub(crate) publish: Publish,
    pub(crate) store: mpsc::Sender<StoreOp>,
    /// Room in the writer's queue, in operations ([`Store::room`](super::store::Store::room)):
    /// `store_backlog_max` permits, one taken (and forgotten) for every operation sent.
    pub(crate) store_room: Arc<Semaphore>,
    /// Ends the writer's lazy wait once a barrier, flush or reply is queued.
    pub(crate) store_waker: super::store::WriterWaker,
    pub(crate) stats: Arc<ThingsStats>,
    pub(crate) store_backlog_max: usize,
    pub(crate) store_stats: Arc<StoreStats>,
    pub(crate) tap: Option<UplinkTap>,
    /// Publications for in-process watchers (the HTTP event stream); sent only while someone
    /// watches, never waited on: a watcher that falls behind misses publications and is told.
    pub(crate) watch: broadcast::Sender<Arc<super::link::Watched>>,
}

/// Where the service's publications go: straight into its realm's broker, under the identity
/// and audience its WAMP session would publish with, with no channel, task or session between
/// a device's report and its subscribers.
pub(crate) struct Publish {
    pub realm: Arc<Realm>,
    pub publisher: Publisher,
    /// With the uplink's tap on, the uplink's own session is excluded (the tap already carries
    /// these events to it).
    pub audience: Audience,
}

impl Publish {
    /// Publishes a turn's publications under one read lock of the broker.
    fn all(&self, publications: impl Iterator<Item = Publication>) {
        let mut publications = publications.peekable();
        if publications.peek().is_none() {
            return;
        }
        let broker = self.realm.broker();
        for p in publications {
            broker.publish(
                &self.publisher,
                &p.topic,
                &self.audience,
                false,
                false,
                &p.payload,
            );
        }
    }
}

/// Why [`ThingsService::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The hub is stopping.
    Shutdown,
    /// The database writer thread is gone: nothing the service does could be kept.
    WriterGone,
}

/// What waits for the database writer and for the uplink's tap.
#[derive(Default)]
struct Backlogs {
    store: VecDeque<StoreOp>,
    tap: VecDeque<TapItem>,
}

impl ThingsService {
    /// Runs until `shutdown` is cancelled; pending calls are then failed and the queued writes
    /// handed to the writer.
    /// Returns early, with [`Ended::WriterGone`], if the database writer is gone.
    pub async fn run(mut self, shutdown: CancellationToken) -> Ended {
        device_models::fault::inject("things_service");
        let mut gateways: SelectAll<GatewayStream> = SelectAll::new();
        let mut backlogs = Backlogs::default();
        let store = self.store.clone();
        let room = self.store_room.clone();
        let tap = self.tap.as_ref().map(|t| t.tx.clone());
        let mut ended = Ended::Shutdown;
        loop {
            let deadline = self.core.next_deadline();
            let read_events = !gateways.is_empty()
                && backlogs.store.len() < self.store_backlog_max
                && backlogs.tap.len() < self.store_backlog_max;
            let read_requests = backlogs.store.len() < self.store_backlog_max * 2
                && backlogs.tap.len() < self.store_backlog_max * 2;
            // The backlog goes out in messages of at most this many operations, never more than
            // the queue's whole room (or the wait for room would never end).
            let chunk = backlogs
                .store
                .len()
                .min(TURN_MAX)
                .min(self.store_backlog_max)
                .max(1);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                () = store.closed() => {
                    tracing::error!("the things database writer has stopped; the things service cannot go on");
                    ended = Ended::WriterGone;
                    break;
                }
                Some(a) = self.attach.recv() => match a {
                    Attach::Gateway { id, name, events, commands } => {
                        self.core.attach(id, name, commands);
                        gateways.push(gateway_stream(id, events));
                    }
                    Attach::Follow { listener, done } => {
                        self.core.follow(listener);
                        let _ = done.send(());
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.core.expire(tokio::time::Instant::now(), now_ms());
                }
                Some((req, reply)) = self.requests.recv(), if read_requests => {
                    tracing::trace!(request = req.name(), "API request");
                    if matches!(req, Request::Stats) {
                        let queued = self.store_backlog_max.saturating_sub(room.available_permits());
                        let pending = backlogs.store.len() + queued;
                        let _ = reply.send(Ok(self.stats.to_json(&self.store_stats, pending)));
                    } else {
                        self.core.handle_request(req, reply, tokio::time::Instant::now(), now_ms());
                    }
                }
                Some((gw, event)) = gateways.next(), if read_events => {
                    let now = tokio::time::Instant::now();
                    let ms = now_ms();
                    let mut taken = self.event(gw, event, now, ms);
                    // Take what else is ready, up to a burst, without going back to select.
                    while taken < EVENT_BURST {
                        match futures_util::FutureExt::now_or_never(gateways.next()) {
                            Some(Some((gw, event))) => taken += self.event(gw, event, now, ms),
                            _ => break,
                        }
                    }
                }
                permit = room.acquire_many(permits(chunk)), if !backlogs.store.is_empty() => {
                    if let Ok(p) = permit {
                        p.forget();
                        let turn = StoreOp::Turn(backlogs.store.drain(..chunk).collect());
                        send_turn(&store, &room, &self.store_waker, turn, chunk, &mut backlogs.store);
                    }
                }
                permit = reserve(tap.as_ref()), if !backlogs.tap.is_empty() => {
                    match permit {
                        Some(p) => if let Some(item) = backlogs.tap.pop_front() { p.send(item) },
                        None => {
                            tracing::error!(events = backlogs.tap.len(), "the uplink has stopped taking events");
                            backlogs.tap.clear();
                        }
                    }
                }
            }
            self.flush(&mut backlogs);
        }
        self.core.cancel_all(now_ms());
        self.flush(&mut backlogs);
        // Handed over before the writer and the uplink's ingest commit what is left and stop.
        if let Some(tap) = &tap {
            for item in backlogs.tap.drain(..) {
                if tap.send(item).await.is_err() {
                    break;
                }
            }
        }
        for op in backlogs.store {
            if self.store.send(op).await.is_err() {
                break;
            }
        }
        drop(tap);
        self.tap = None;
        drop(store);
        tracing::debug!("things service stopped");
        ended
    }

    /// Handles what a gateway sent; says how many events that was (a batch's, or one).
    fn event(
        &mut self,
        gw: GatewayId,
        event: Option<DeviceEvent>,
        now: tokio::time::Instant,
        ms: u64,
    ) -> usize {
        match event {
            Some(e) => {
                let n = match &e {
                    DeviceEvent::Batch(batch) => batch.events.len().max(1),
                    _ => 1,
                };
                self.core.handle_event(gw, e, now, ms);
                n
            }
            None => {
                self.core.detach(gw);
                1
            }
        }
    }

    /// Hands the core's outbox to the router's broker, the uplink's tap and the writer, never
    /// waiting.
    fn flush(&mut self, backlogs: &mut Backlogs) {
        let at_ms = now_ms();
        let watched = self.watch.receiver_count() > 0;
        let (watch, tap) = (&self.watch, &self.tap);
        // Drained in place, so the outbox keeps its capacity from one burst to the next.
        self.publish
            .all(self.core.out.publications.drain(..).inspect(|p| {
                if watched {
                    let _ = watch.send(Arc::new(super::link::Watched::new(p.clone())));
                }
                if let Some(tap) = tap
                    && let Some(item) = tap.event(&p.topic, &p.payload, at_ms)
                {
                    hand_over(&tap.tx, &mut backlogs.tap, item);
                }
            }));
        super::store::coalesce_reported(&mut self.core.out.store);
        let ops = &mut self.core.out.store;
        if ops.is_empty() {
            return;
        }
        // A barrier's second part follows this turn's events into the uplink queue.
        if let Some(tap) = &self.tap {
            for op in ops.iter() {
                if let StoreOp::Barrier(commit) = op {
                    hand_over(&tap.tx, &mut backlogs.tap, TapItem::Fence(commit.part()));
                }
            }
        }
        if !backlogs.store.is_empty() {
            backlogs.store.extend(ops.drain(..));
            return;
        }
        // The whole turn in one message, so the writer commits it in one batch.
        let n = ops.len();
        let turn = if n == 1 {
            ops.pop()
        } else {
            // Moved out, so the outbox keeps its capacity for the next turn.
            let mut turn = Vec::with_capacity(n);
            turn.append(ops);
            Some(StoreOp::Turn(turn))
        };
        let Some(turn) = turn else { return };
        match self.store_room.try_acquire_many(permits(n)) {
            Ok(p) => {
                p.forget();
                send_turn(
                    &self.store,
                    &self.store_room,
                    &self.store_waker,
                    turn,
                    n,
                    &mut backlogs.store,
                );
            }
            // No room for the whole turn: it waits in the backlog, which goes out as room is
            // made.
            Err(_) => take_apart(turn, &mut backlogs.store),
        }
    }
}

/// Most operations sent from the backlog in one message.
const TURN_MAX: usize = 256;

/// Permits for `n` operations (more than a semaphore can count never fit, and wait).
fn permits(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Sends a turn of `n` operations, whose room was taken, to the writer; wakes the writer if
/// something waits for the turn's commit. The queue holds at least as many messages as
/// operations fit in its room, so it is never full here; if it were, the turn would go back to
/// the front of `backlog` with its room given back.
fn send_turn(
    store: &mpsc::Sender<StoreOp>,
    room: &Semaphore,
    waker: &super::store::WriterWaker,
    turn: StoreOp,
    n: usize,
    backlog: &mut VecDeque<StoreOp>,
) {
    let waits = !turn.writes();
    match store.try_send(turn) {
        Ok(()) => {
            if waits {
                waker.wake();
            }
        }
        Err(mpsc::error::TrySendError::Full(turn)) => {
            room.add_permits(n);
            let mut ops = Vec::with_capacity(n);
            take_apart(turn, &mut ops);
            for op in ops.into_iter().rev() {
                backlog.push_front(op);
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::error!(
                ops = n,
                "the things database writer has stopped; writes lost"
            );
        }
    }
}

/// Appends a turn's operations (or the one operation) to `out`, in order.
fn take_apart(op: StoreOp, out: &mut impl Extend<StoreOp>) {
    match op {
        StoreOp::Turn(ops) => out.extend(ops),
        op => out.extend(std::iter::once(op)),
    }
}

/// Sends `item` now if nothing waits before it and there is room, else queues it.
fn hand_over(tx: &mpsc::Sender<TapItem>, backlog: &mut VecDeque<TapItem>, item: TapItem) {
    if !backlog.is_empty() {
        backlog.push_back(item);
        return;
    }
    match tx.try_send(item) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(item)) => backlog.push_back(item),
        // The uplink stopped: its part of a barrier drops unanswered, so the device is not
        // acknowledged and sends again.
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::error!("the uplink has stopped taking events; an event was not queued");
        }
    }
}

/// A slot in the tap's channel; `None` once the uplink is gone.
async fn reserve(tap: Option<&mpsc::Sender<TapItem>>) -> Option<mpsc::Permit<'_, TapItem>> {
    match tap {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use device_models::{TdContext, ThingId, TypeCatalog};
    use serde_json::json;
    use tokio::sync::oneshot;

    use super::*;
    use crate::config::Provisioning;
    use crate::things::core::CoreSettings;
    use crate::things::credentials::RegistryCredentials;
    use crate::things::link::GatewayLink;
    use crate::things::store::Loaded;

    /// A database writer that never writes: device events keep flowing until the backlog is
    /// full, then wait in their gateway's channel, and API calls keep being answered.
    #[tokio::test]
    async fn a_stuck_writer_never_stalls_the_service() {
        let stats = Arc::new(ThingsStats::default());
        let settings = CoreSettings {
            provisioning: Provisioning::Auto,
            auto_type: Some("temperature_sensor".into()),
            set_timeout: Duration::from_secs(1),
            td: TdContext::new("h", ""),
        };
        let core = Core::new(
            settings,
            TypeCatalog::builtin().unwrap(),
            Loaded::default(),
            stats.clone(),
            Arc::new(RegistryCredentials::new(true)),
        )
        .unwrap();
        let (attach_tx, attach) = mpsc::channel(1);
        let (requests_tx, requests) = mpsc::channel(8);
        let (store, mut stuck_store) = mpsc::channel(64);
        let service = ThingsService {
            core,
            attach,
            requests,
            publish: Publish {
                realm: Arc::new(crate::router::Realm::new(crate::router::RealmConfig::open(
                    "r",
                ))),
                publisher: Publisher::router(),
                audience: Audience::default(),
            },
            store,
            store_room: Arc::new(Semaphore::new(64)),
            store_waker: Default::default(),
            stats: stats.clone(),
            store_backlog_max: 64,
            store_stats: Arc::new(StoreStats::default()),
            tap: None,
            watch: tokio::sync::broadcast::channel(1).0,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(service.run(shutdown.clone()));
        let link = GatewayLink::new(
            attach_tx,
            16,
            16,
            stats.clone(),
            Arc::new(RegistryCredentials::new(true)),
            requests_tx.clone(),
        );
        let gw = link.attach("flood").await.unwrap();
        let thing = ThingId::new("s1").unwrap();
        // Far more than every queue together holds: the backlog fills and events wait. One
        // thing each, as the reports of one thing in a turn are merged into one write.
        let flood = tokio::spawn({
            let events = gw.events.clone();
            async move {
                for i in 0..1000u64 {
                    let values = json!({ "temperature": (i % 100) as f64 })
                        .as_object()
                        .cloned()
                        .unwrap();
                    let e = DeviceEvent::Reported {
                        thing: ThingId::new(format!("s{i}")).unwrap(),
                        values,
                        at_ms: i + 1,
                    };
                    if events.send(e).await.is_err() {
                        break;
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            requests_tx
                .send((
                    Request::Get {
                        thing: thing.clone(),
                        property: Some("temperature".into()),
                    },
                    tx,
                ))
                .await
                .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(2), rx)
                .await
                .expect("the service answers while its outputs are stuck")
                .unwrap()
                .unwrap();
            assert!(answer["value"].is_number(), "{answer}");
        }
        assert!(ThingsStats::get(&stats.state_events) > 0);
        assert!(
            !flood.is_finished(),
            "events are held back while the writer is stuck"
        );
        // The writer's queue is bounded in operations, not messages: turns of many
        // operations never hold more than its room.
        let mut queued = 0;
        while let Ok(op) = stuck_store.try_recv() {
            let mut ops = Vec::new();
            take_apart(op, &mut ops);
            queued += ops.len();
        }
        assert!(queued > 0 && queued <= 64, "{queued} operations queued");
        shutdown.cancel();
        flood.abort();
        drop(stuck_store);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
