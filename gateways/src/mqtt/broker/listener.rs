//! The accept loop: one task per connection, at most `max_connections` at once (a connection over
//! the limit is closed at once and counted), and a back-off on accept errors (file descriptors
//! exhausted...) instead of a dead listener.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{Hooks, Shared, connection};

const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(super) async fn run<H: Hooks>(
    listener: TcpListener,
    shared: Arc<Shared<H>>,
    permits: Arc<Semaphore>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(error) => {
                warn!(%error, ?backoff, "MQTT accept failed; backing off");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !shared.hooks.admits_connection() {
            shared
                .stats
                .connections_refused_memory
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "MQTT connection refused: the hub is over its memory budget");
            drop(stream);
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared
                .stats
                .connections_refused_full
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "MQTT connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            connection::serve(task_shared, stream, peer).await;
            drop(permit);
        });
    }
}
