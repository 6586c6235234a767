//! Local events into the queue: one in-process session subscribed (losslessly) to every
//! forwarding rule, batching what arrives into one queue transaction at a time.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::queue::{Kind, NewEvent};
use crate::client::{ClientError, Subscription};
use crate::config::uplink::Rule;
use crate::wamp::{Dict, Value};

/// Most events written in one transaction.
const BATCH: usize = 2048;

/// Subscribes to every rule.
pub(super) async fn subscribe(
    shared: &Arc<Shared>,
    rules: &[Rule],
) -> Result<Vec<(Subscription, Rule)>, ClientError> {
    let mut out = Vec::new();
    for rule in rules {
        let mut options = Dict::new();
        options.insert("match".into(), Value::from(rule.policy.as_str()));
        let sub = shared
            .local
            .subscribe_lossless(&rule.topic, options)
            .await?;
        out.push((sub, rule.clone()));
    }
    Ok(out)
}

/// Merges every subscription into the queue until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    subscriptions: Vec<(Subscription, Rule)>,
    shutdown: CancellationToken,
) {
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
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => {
                flush_at_shutdown(&shared, &mut rx, &mut seen).await;
                return;
            }
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let mut batch = vec![first];
        // Take whatever else is already waiting, briefly, so a burst costs few transactions.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        let events = dedup(batch, &mut recent, &mut seen);
        if let Err(lost) = queue_events(&shared, events).await {
            shared.status.add_disk_error(lost);
        }
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
    rx: &mut mpsc::Receiver<(NewEvent, u64)>,
    seen: &mut HashSet<u64>,
) {
    // Leaving ends the subscriptions: their forwarders pass on what they still hold, then close
    // the channel.
    let _ = tokio::time::timeout(Duration::from_secs(1), shared.local.leave()).await;
    let mut batch = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(e) = rx.recv().await {
            batch.push(e);
        }
    })
    .await;
    if batch.is_empty() {
        return;
    }
    let events = dedup(batch, &mut VecDeque::new(), seen);
    let n = events.len();
    match queue_events(shared, events).await {
        Ok(()) => tracing::info!(events = n, "uplink events in memory written at shutdown"),
        Err(lost) => shared.status.add_shutdown(lost),
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
