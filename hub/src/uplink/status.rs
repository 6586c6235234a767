//! The uplink's visible state: `brume.uplink.status` (a procedure) and `brume.uplink.on_status`
//! (a topic published on every change of connection state).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::router::meta::iso8601;
use crate::wamp::{Dict, Payload, Value, dict};

/// A snapshot of the uplink's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UplinkStatus {
    pub url: String,
    pub connected: bool,
    pub since: SystemTime,
    pub queued: u64,
    pub queued_bytes: u64,
    /// Events dropped (bounds, undeliverable) since start, reported or not.
    pub dropped: u64,
    pub last_error: Option<String>,
}

impl UplinkStatus {
    pub fn to_dict(&self) -> Dict {
        dict([
            ("url", Value::from(self.url.as_str())),
            ("connected", Value::Bool(self.connected)),
            ("since", Value::from(iso8601(self.since))),
            ("queued", Value::from(self.queued)),
            ("queued_bytes", Value::from(self.queued_bytes)),
            ("dropped", Value::from(self.dropped)),
            (
                "last_error",
                self.last_error.clone().map_or(Value::Null, Value::from),
            ),
        ])
    }
}

/// The shared, lock-protected status (short locks only).
pub(crate) struct StatusCell(Mutex<UplinkStatus>);

impl StatusCell {
    pub fn new(url: &str, queued: u64, queued_bytes: u64) -> Self {
        StatusCell(Mutex::new(UplinkStatus {
            url: url.to_owned(),
            connected: false,
            since: SystemTime::now(),
            queued,
            queued_bytes,
            dropped: 0,
            last_error: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UplinkStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> UplinkStatus {
        self.lock().clone()
    }

    pub fn set_queue(&self, queued: u64, bytes: u64) {
        let mut s = self.lock();
        s.queued = queued;
        s.queued_bytes = bytes;
    }

    pub fn add_dropped(&self, n: u64) {
        self.lock().dropped += n;
    }

    /// Records a connection state change; returns the new snapshot if it changed.
    pub fn set_connected(&self, connected: bool, error: Option<String>) -> Option<UplinkStatus> {
        let mut s = self.lock();
        if error.is_some() {
            s.last_error = error;
        }
        if s.connected == connected {
            return None;
        }
        s.connected = connected;
        s.since = SystemTime::now();
        Some(s.clone())
    }
}

/// Publishes a status change on `brume.uplink.on_status`.
pub(crate) async fn announce(shared: &Shared, status: UplinkStatus) {
    let _ = shared
        .local
        .publish(
            crate::wamp::uris::uplink::ON_STATUS,
            Payload::kwargs(status.to_dict()),
            Dict::new(),
        )
        .await;
}

/// Serves `brume.uplink.status` (registered by the caller) until shutdown.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut reg: crate::client::Registration,
    shutdown: CancellationToken,
) {
    loop {
        let inv = tokio::select! {
            () = shutdown.cancelled() => return,
            inv = reg.next() => match inv { Some(i) => i, None => return },
        };
        let status = shared.status.get();
        let _ = inv.reply(Payload::kwargs(status.to_dict())).await;
    }
}
