//! Local events into the queue: one in-process session subscribed (losslessly) to every
//! forwarding rule, and the things service's [tap](super::tap), batching what arrives into one
//! queue transaction at a time and answering the tap's fences after that transaction.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use device_models::{Commit, CommitError};

use super::Shared;
use super::queue::{Kind, NewEvent};
use super::tap::{TapItem, TapReceiver};
use crate::client::{Client, ClientError, Subscription};
use crate::config::uplink::Rule;
use crate::wamp::{Dict, Value};

/// Most events written in one transaction.
const BATCH: usize = 2048;

/// Subscribes to every rule.
pub(super) async fn subscribe(
    feed: &Client,
    rules: &[Rule],
) -> Result<Vec<(Subscription, Rule)>, ClientError> {
    let mut out = Vec::new();
    for rule in rules {
        let mut options = Dict::new();
        options.insert("match".into(), Value::from(rule.policy.as_str()));
        let sub = feed.subscribe_lossless(&rule.topic, options).await?;
        out.push((sub, rule.clone()));
    }
    Ok(out)
}

/// Merges every subscription and the things service's tap into the queue until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    feed: Client,
    subscriptions: Vec<(Subscription, Rule)>,
    mut tap: Option<TapReceiver>,
    shutdown: CancellationToken,
) {
    device_models::fault::inject("uplink_ingest");
    let (tx, mut rx) = mpsc::channel::<(NewEvent, u64)>(BATCH * 4);
    for (mut sub, rule) in subscriptions {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = sub.next().await {
                let topic = ev.topic.clone().unwrap_or_else(|| rule.topic.clone());
                let new = NewEvent {
                    topic,
                    kind: rule.kind,
                    payload: ev.payload,
                    at_ms: device_models::now_ms(),
                };
                if tx.send((new, ev.publication)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // A publication matching two rules arrives twice (same publication id): queue it once.
    let mut recent: VecDeque<u64> = VecDeque::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut wamp_open = true;
    let mut shedding = Shedding::default();
    loop {
        let mut batch = Batch::default();
        tokio::select! {
            () = shutdown.cancelled() => {
                flush_at_shutdown(&shared, &feed, &mut rx, tap.as_mut(), &mut seen).await;
                return;
            }
            e = rx.recv(), if wamp_open => match e {
                Some(e) => batch.wamp.push(e),
                None => wamp_open = false,
            },
            item = next_tap(&mut tap) => match item {
                Some(item) => batch.add(item),
                None => tap = None,
            },
        }
        // Take whatever else is already waiting, briefly, so a burst costs few transactions.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
        while batch.len() < BATCH && !batch.is_empty() {
            tokio::select! {
                biased;
                Some(item) = next_tap(&mut tap) => batch.add(item),
                Some(e) = rx.recv(), if wamp_open => batch.wamp.push(e),
                () = tokio::time::sleep_until(deadline) => break,
                else => break,
            }
        }
        let Batch {
            wamp,
            mut tapped,
            fences,
        } = batch;
        let mut events = dedup(wamp, &mut recent, &mut seen);
        events.append(&mut tapped);
        let outcome = if events.is_empty() {
            Ok(())
        } else {
            queue_events(&shared, events).await.map_err(|lost| {
                shared.status.add_disk_error(lost);
                CommitError::WriteFailed
            })
        };
        for fence in fences {
            fence.answer(outcome);
        }
        shedding.check(&shared).await;
    }
}

/// Says on `brume.uplink.on_status` that the queue sheds for lack of disk: when it starts, and
/// at most every [`SHEDDING_ANNOUNCE`] while it goes on.
#[derive(Default)]
struct Shedding {
    seen: u64,
    announced: Option<tokio::time::Instant>,
}

/// Least time between two announcements of shedding.
const SHEDDING_ANNOUNCE: Duration = Duration::from_secs(10);

impl Shedding {
    async fn check(&mut self, shared: &Arc<Shared>) {
        let status = shared.status.get();
        let shed = status.drops.queue.disk_full;
        if shed == self.seen {
            return;
        }
        self.seen = shed;
        if self
            .announced
            .is_some_and(|at| at.elapsed() < SHEDDING_ANNOUNCE)
        {
            return;
        }
        self.announced = Some(tokio::time::Instant::now());
        tracing::warn!(
            shed,
            "the uplink queue is at the hub's disk budget; shedding the oldest telemetry"
        );
        super::status::announce(shared, status).await;
    }
}

/// What one turn of [`run`] writes: events from the WAMP subscriptions (with their publication
/// ids), events from the tap, and the fences behind them.
#[derive(Default)]
struct Batch {
    wamp: Vec<(NewEvent, u64)>,
    tapped: Vec<NewEvent>,
    fences: Vec<Commit>,
}

impl Batch {
    fn add(&mut self, item: TapItem) {
        match item {
            TapItem::Event(e) => self.tapped.push(e),
            TapItem::Fence(c) => self.fences.push(c),
        }
    }

    fn len(&self) -> usize {
        self.wamp.len() + self.tapped.len() + self.fences.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tap's next item; pending forever once there is no tap.
async fn next_tap(tap: &mut Option<TapReceiver>) -> Option<TapItem> {
    match tap {
        Some(t) => t.0.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps the first of each publication (one matching two rules arrives twice), remembering the
/// recent ones.
fn dedup(
    batch: Vec<(NewEvent, u64)>,
    recent: &mut VecDeque<u64>,
    seen: &mut HashSet<u64>,
) -> Vec<NewEvent> {
    batch
        .into_iter()
        .filter(|(_, publication)| {
            if !seen.insert(*publication) {
                return false;
            }
            recent.push_back(*publication);
            if recent.len() > 4 * BATCH
                && let Some(old) = recent.pop_front()
            {
                seen.remove(&old);
            }
            true
        })
        .map(|(e, _)| e)
        .collect()
}

/// Writes events in one transaction; `Err` is how many could not be written (logged).
async fn queue_events(shared: &Arc<Shared>, events: Vec<NewEvent>) -> Result<(), u64> {
    let n = events.len() as u64;
    let lifecycle = events.iter().filter(|e| e.kind == Kind::Lifecycle).count();
    match shared.with_queue(move |q| q.push(&events)).await {
        Ok(seqs) => {
            tracing::trace!(queued = seqs.len(), lifecycle, "uplink events queued");
            shared.status.add_accepted(seqs.len() as u64);
            shared.queued.notify_one();
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, lost = n, "cannot queue uplink events; they are lost and counted");
            Err(n)
        }
    }
}

/// At shutdown: writes what already arrived and is still in memory, so a stop loses nothing the
/// queue could take; what cannot be written is counted as lost at shutdown.
async fn flush_at_shutdown(
    shared: &Arc<Shared>,
    feed: &Client,
    rx: &mut mpsc::Receiver<(NewEvent, u64)>,
    tap: Option<&mut TapReceiver>,
    seen: &mut HashSet<u64>,
) {
    // Leaving delivers the events the feed's session still holds, then ends the subscriptions:
    // their forwarders pass on what they hold and close the channel, which is drained at the
    // same time (it is bounded, so leaving could otherwise wait for room). The things service
    // hands over its backlog and drops the tap as it stops.
    let leave = async {
        let _ = tokio::time::timeout(Duration::from_secs(2), feed.leave()).await;
    };
    let mut batch = Batch::default();
    let drain = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(e) = rx.recv().await {
            batch.wamp.push(e);
        }
        if let Some(tap) = tap {
            while let Some(item) = tap.0.recv().await {
                batch.add(item);
            }
        }
    });
    let ((), _) = tokio::join!(leave, drain);
    let Batch {
        wamp,
        mut tapped,
        fences,
    } = batch;
    let mut events = dedup(wamp, &mut VecDeque::new(), seen);
    events.append(&mut tapped);
    let n = events.len();
    let outcome = if n == 0 {
        Ok(())
    } else {
        match queue_events(shared, events).await {
            Ok(()) => {
                tracing::info!(events = n, "uplink events in memory written at shutdown");
                Ok(())
            }
            Err(lost) => {
                shared.status.add_shutdown(lost);
                Err(CommitError::WriteFailed)
            }
        }
    };
    for fence in fences {
        fence.answer(outcome);
    }
}

/// Applies the age bound every quarter of it (between 100 ms and 10 s), whether or not the link
/// is up, so old events leave a queue that is not being drained too.
pub(super) async fn expire(shared: Arc<Shared>, shutdown: CancellationToken) {
    let period = (super::queue::QueueLimits::of(&shared.config).max_age / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = device_models::now_ms();
        if let Err(e) = shared.with_queue(move |q| q.expire(now)).await {
            tracing::error!(error = %e, "cannot apply the uplink queue's age bound");
        }
    }
}
