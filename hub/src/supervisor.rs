//! No part of the hub dies alone.
//!
//! Every long-lived task runs under the [`Supervisor`], one of two ways:
//! - [`Supervisor::critical`]: a part whose state cannot be rebuilt in place (the things
//!   service that owns the registry, its database writer, the gateways, the listeners). If it
//!   panics or ends before shutdown, the hub shuts down and the process exits with status
//!   [`EXIT_FAILED`], so the service manager restarts it from the durable state, instead of
//!   running on half alive.
//! - [`Supervisor::restartable`]: a part that holds nothing but a connection (the uplink's
//!   cloud link). It is started again with back-off (100 ms doubling to 30 s, back to 100 ms
//!   once it ran a minute), each restart logged and counted.
//!
//! Threads are watched through the channels they serve: the things service stops, and so
//! fails, when its database writer thread is gone; the MQTT gateway reports its router link
//! gone when rumqttd's router thread is.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The exit status after a part failed (`EX_SOFTWARE` of sysexits.h).
pub const EXIT_FAILED: i32 = 70;

/// First delay before a restartable part starts again.
const RESTART_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A part that ran this long before ending starts again after the first delay.
const RESTART_RESET: Duration = Duration::from_secs(60);

/// Watches the hub's tasks; cheap to clone.
#[derive(Clone, Debug)]
pub struct Supervisor(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    failed: CancellationToken,
    failure: Mutex<Option<String>>,
    restarts: AtomicU64,
    /// Every part started, by name: how many instances run now, and restarts.
    parts: Mutex<std::collections::BTreeMap<&'static str, PartStatus>>,
}

/// One named part of the hub as the supervisor sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartStatus {
    /// Instances running now (a listener part may have several).
    pub running: u32,
    /// Instances started since start.
    pub started: u32,
    /// Restarts after a panic or an early end (restartable parts only).
    pub restarts: u64,
}

impl Supervisor {
    /// A supervisor whose tasks run on `tracker` and stop on `shutdown`.
    pub fn new(shutdown: CancellationToken, tracker: TaskTracker) -> Supervisor {
        Supervisor(Arc::new(Inner {
            shutdown,
            tracker,
            failed: CancellationToken::new(),
            failure: Mutex::new(None),
            restarts: AtomicU64::new(0),
            parts: Mutex::new(std::collections::BTreeMap::new()),
        }))
    }

    /// The tracker the hub's tasks run on (for tasks that end on their own, like one per call).
    pub fn tracker(&self) -> &TaskTracker {
        &self.0.tracker
    }

    /// The hub's shutdown token.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Runs `part`, which must live until shutdown: a panic, or an end before shutdown, fails
    /// the hub.
    pub fn critical(&self, part: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let me = self.clone();
        self.mark(part, |p| {
            p.running += 1;
            p.started += 1;
        });
        // Its own task, so a panic ends only it and is seen here.
        let handle = tokio::spawn(task);
        self.0.tracker.spawn(async move {
            let outcome = handle.await;
            me.mark(part, |p| p.running = p.running.saturating_sub(1));
            if let Some(reason) = me.why_ended(outcome) {
                me.fail(part, &reason);
            }
        });
    }

    /// Runs `make()` and, whenever it panics or ends before shutdown, runs it again after a
    /// back-off.
    pub fn restartable<F, Fut>(&self, part: &'static str, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let me = self.clone();
        self.0.tracker.spawn(async move {
            let mut delay = RESTART_INITIAL;
            loop {
                let started = tokio::time::Instant::now();
                me.mark(part, |p| {
                    p.running += 1;
                    p.started += 1;
                });
                let outcome = tokio::spawn(make()).await;
                me.mark(part, |p| p.running = p.running.saturating_sub(1));
                let Some(reason) = me.why_ended(outcome) else {
                    return;
                };
                me.mark(part, |p| p.restarts += 1);
                if me.0.shutdown.is_cancelled() {
                    return;
                }
                if started.elapsed() >= RESTART_RESET {
                    delay = RESTART_INITIAL;
                }
                let restarts = me.0.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(part, %reason, restart_in = ?delay, restarts, "a part of the hub stopped; starting it again");
                tokio::select! {
                    () = me.0.shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RESTART_MAX);
            }
        });
    }

    fn mark(&self, part: &'static str, f: impl FnOnce(&mut PartStatus)) {
        let mut parts = self.0.parts.lock().unwrap_or_else(|e| e.into_inner());
        f(parts.entry(part).or_default());
    }

    /// Every part started so far, by name.
    pub fn parts(&self) -> Vec<(&'static str, PartStatus)> {
        let parts = self.0.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Why a task's end is a failure, or `None` when it ended with the hub.
    fn why_ended(&self, outcome: Result<(), JoinError>) -> Option<String> {
        match outcome {
            Err(e) if e.is_panic() => {
                let message = e.into_panic();
                let text = message
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| message.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Some(format!("panicked: {text}"))
            }
            Err(_) => Some("was cancelled".into()),
            Ok(()) if self.0.shutdown.is_cancelled() => None,
            Ok(()) => Some("stopped before the hub did".into()),
        }
    }

    /// Fails the hub: logs which part and why, records the first failure and starts the
    /// shutdown; the binary then exits with [`EXIT_FAILED`].
    pub fn fail(&self, part: &str, reason: &str) {
        {
            let mut failure = self.0.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                *failure = Some(format!("{part} {reason}"));
            }
        }
        tracing::error!(
            part,
            reason,
            "a part of the hub failed and cannot be restarted in place; stopping the hub so that \
             its service manager starts it again"
        );
        self.0.failed.cancel();
        self.0.shutdown.cancel();
    }

    /// The first failure, if a part failed.
    pub fn failure(&self) -> Option<String> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once a part failed.
    pub async fn failed(&self) {
        self.0.failed.cancelled().await;
    }

    /// Restarts of restartable parts since start.
    pub fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> Supervisor {
        Supervisor::new(CancellationToken::new(), TaskTracker::new())
    }

    #[tokio::test]
    async fn a_critical_part_that_panics_or_ends_early_fails_the_hub() {
        let s = supervisor();
        s.critical("quiet", std::future::pending());
        s.critical("crashing", async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(2), s.failed())
            .await
            .expect("the failure is seen");
        assert_eq!(s.failure().as_deref(), Some("crashing panicked: boom"));
        assert!(s.shutdown().is_cancelled(), "the hub stops");

        let s = supervisor();
        s.critical("leaving", async {});
        tokio::time::timeout(Duration::from_secs(2), s.failed())
            .await
            .expect("an early end is a failure");
        assert_eq!(
            s.failure().as_deref(),
            Some("leaving stopped before the hub did")
        );
    }

    #[tokio::test]
    async fn a_part_ending_with_the_hub_is_no_failure() {
        let s = supervisor();
        let stop = s.shutdown().clone();
        s.critical("serving", async move { stop.cancelled().await });
        s.shutdown().cancel();
        s.tracker().close();
        s.tracker().wait().await;
        assert_eq!(s.failure(), None);
    }

    #[tokio::test]
    async fn a_restartable_part_starts_again_with_back_off() {
        let s = supervisor();
        let runs = Arc::new(AtomicU64::new(0));
        let counter = runs.clone();
        let stop = s.shutdown().clone();
        s.restartable("flaky", move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                if n < 3 {
                    panic!("run {n} fails");
                }
                stop.cancelled().await;
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures, then it runs"
        );
        assert_eq!(s.restarts(), 3);
        assert_eq!(s.failure(), None, "a restartable part never fails the hub");
        s.shutdown().cancel();
        s.tracker().close();
        tokio::time::timeout(Duration::from_secs(5), s.tracker().wait())
            .await
            .expect("it stops with the hub");
    }
}
