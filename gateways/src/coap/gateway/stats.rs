//! Counters of the CoAP gateway: relaxed atomics bumped by the gateway task where things happen,
//! beside the engine's own counters as its driver task keeps them ([`ServerCounters`]). Read as
//! a [`CoapStatsSnapshot`] (metrics, tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use device_models::DeviceEvent;

use crate::coap::ResponseType;
use crate::coap::driver::{ClientCounters, ServerCounters};
use crate::coap::server::ServerStats;

/// Live counters of one CoAP gateway, shared by its task and whoever reads them.
#[derive(Debug, Default)]
pub struct CoapStats {
    engine: Arc<ServerCounters>,
    /// The client driver's drop counters, when devices are observed.
    client: Option<Arc<ClientCounters>>,
    events_out: AtomicU64,
    events_dropped: AtomicU64,
    commands: AtomicU64,
    rejected_auth: AtomicU64,
    rejected_not_found: AtomicU64,
    rejected_method: AtomicU64,
    rejected_bad_request: AtomicU64,
    rejected_other: AtomicU64,
    busy: AtomicU64,
}

/// The counters of a [`CoapStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoapStatsSnapshot {
    /// The protocol engine's counters: datagrams, requests, duplicates, retransmissions, and
    /// what it refused itself (rate limit, malformed, 4.xx, 5.03).
    pub engine: ServerStats,
    /// Observations (of commands resources) registered now.
    pub observers: u64,
    /// Device events handed to the hub (barriers aside).
    pub events_out: u64,
    /// Device events dropped because the hub lagged and the gateway's outbox was full.
    pub events_dropped: u64,
    /// Notifications from observed devices dropped because the gateway lagged behind its
    /// client driver (a later notification carries newer state).
    pub notifications_dropped: u64,
    /// Datagrams from observed devices dropped unread: over the size limit, or not CoAP.
    pub observed_malformed: u64,
    /// Observations added or removed by devices that the gateway never heard of, because its
    /// queue from the server driver was full.
    pub observer_events_dropped: u64,
    /// Commands taken from the hub.
    pub commands: u64,
    /// Requests answered 4.01 or 4.03 (credentials).
    pub rejected_auth: u64,
    /// Requests answered 4.04 (no such resource or thing).
    pub rejected_not_found: u64,
    /// Requests answered 4.05.
    pub rejected_method: u64,
    /// Requests answered 4.00, 4.06, 4.13 or 4.15 (a body or an Accept the gateway cannot take).
    pub rejected_bad_request: u64,
    /// Requests answered with another 4.xx or 5.xx, 5.03 aside.
    pub rejected_other: u64,
    /// Requests answered 5.03 by the gateway (the hub's queue full, too many reads, a commit
    /// that failed, the thing table full): the device retries.
    pub busy: u64,
}

impl CoapStats {
    /// Counters around the server engine's `engine` and, when the gateway observes devices,
    /// the client driver's `client`.
    pub(crate) fn new(engine: Arc<ServerCounters>, client: Option<Arc<ClientCounters>>) -> Self {
        Self {
            engine,
            client,
            ..Self::default()
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CoapStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoapStatsSnapshot {
            engine: self.engine.snapshot(),
            observers: self.engine.observers(),
            events_out: get(&self.events_out),
            events_dropped: get(&self.events_dropped),
            notifications_dropped: self
                .client
                .as_deref()
                .map_or(0, ClientCounters::notifications_dropped),
            observed_malformed: self.client.as_deref().map_or(0, ClientCounters::malformed),
            observer_events_dropped: self.engine.observer_events_dropped(),
            commands: get(&self.commands),
            rejected_auth: get(&self.rejected_auth),
            rejected_not_found: get(&self.rejected_not_found),
            rejected_method: get(&self.rejected_method),
            rejected_bad_request: get(&self.rejected_bad_request),
            rejected_other: get(&self.rejected_other),
            busy: get(&self.busy),
        }
    }

    /// `event` goes to the hub (a barrier is not counted, a batch counts its events).
    pub(crate) fn sent(&self, event: &DeviceEvent) {
        self.events_out(Self::counted(event));
    }

    /// `n` device events went to the hub.
    pub(crate) fn events_out(&self, n: u64) {
        self.events_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The device events `event` holds: none in a barrier, a batch's own.
    pub(crate) fn counted(event: &DeviceEvent) -> u64 {
        match event {
            DeviceEvent::Barrier(_) => 0,
            DeviceEvent::Batch(batch) => batch.events.len() as u64,
            _ => 1,
        }
    }

    /// An event was dropped.
    pub(crate) fn dropped(&self) {
        bump(&self.events_dropped);
    }

    /// A command came from the hub.
    pub(crate) fn command(&self) {
        bump(&self.commands);
    }

    /// The gateway answered a request with `code`.
    pub(crate) fn answered(&self, code: ResponseType) {
        let counter = match code {
            ResponseType::Unauthorized | ResponseType::Forbidden => &self.rejected_auth,
            ResponseType::NotFound => &self.rejected_not_found,
            ResponseType::MethodNotAllowed => &self.rejected_method,
            ResponseType::BadRequest
            | ResponseType::NotAcceptable
            | ResponseType::RequestEntityTooLarge
            | ResponseType::UnsupportedContentFormat => &self.rejected_bad_request,
            ResponseType::ServiceUnavailable => &self.busy,
            other if other.is_error() => &self.rejected_other,
            _ => return,
        };
        bump(counter);
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_cause_and_barriers_are_not_events() {
        let stats = CoapStats::default();
        for code in [
            ResponseType::Changed,
            ResponseType::Content,
            ResponseType::Unauthorized,
            ResponseType::NotFound,
            ResponseType::NotFound,
            ResponseType::MethodNotAllowed,
            ResponseType::UnsupportedContentFormat,
            ResponseType::ServiceUnavailable,
            ResponseType::InternalServerError,
        ] {
            stats.answered(code);
        }
        let (commit, _wait) = device_models::gateway::commit();
        stats.sent(&DeviceEvent::Barrier(commit));
        stats.sent(&DeviceEvent::Online {
            thing: device_models::ThingId::new("t1").unwrap(),
        });
        let s = stats.snapshot();
        assert_eq!(
            (
                s.rejected_auth,
                s.rejected_not_found,
                s.rejected_method,
                s.rejected_bad_request,
                s.busy,
                s.rejected_other,
            ),
            (1, 2, 1, 1, 1, 1)
        );
        assert_eq!(s.events_out, 1);
    }
}
