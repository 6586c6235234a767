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
            () = shutdown.cancelled() => return,
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
        let events: Vec<NewEvent> = batch
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
            .collect();
        let lifecycle = events.iter().filter(|e| e.kind == Kind::Lifecycle).count();
        match shared.with_queue(move |q| q.push(&events)).await {
            Ok(seqs) => {
                tracing::trace!(queued = seqs.len(), lifecycle, "uplink events queued");
                shared.queued.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "cannot queue uplink events; they are lost"),
        }
    }
}
