//! Counters of the MQTT gateway and its broker: plain atomics, bumped where things happen and read
//! as a [`MqttStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the broker's connection tasks and the gateway.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused_full: AtomicU64,
    pub(crate) connections_refused_memory: AtomicU64,
    pub(crate) connections_refused_auth: AtomicU64,
    pub(crate) acl_denied_publish: AtomicU64,
    pub(crate) acl_denied_subscribe: AtomicU64,
    pub(crate) wills_published: AtomicU64,
    pub(crate) wills_dropped: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) events_out: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) rejected_payloads: AtomicU64,
    pub(crate) raw_in: AtomicU64,
    pub(crate) raw_out: AtomicU64,
    pub(crate) raw_dropped: AtomicU64,
    pub(crate) deliveries_dropped: AtomicU64,
    pub(crate) over_client_max: AtomicU64,
    pub(crate) linked: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) commands_dropped: AtomicU64,
    pub(crate) replies_unmatched: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// TCP connections accepted (before CONNECT).
    pub connections_accepted: u64,
    /// MQTT sessions open now.
    pub connections_open: u64,
    /// Connections closed at accept because `max_connections` were open.
    pub connections_refused_full: u64,
    /// Connections closed at accept because the hub was over its memory budget.
    pub connections_refused_memory: u64,
    /// CONNECTs refused (credentials, client id, will topic, router full).
    pub connections_refused_auth: u64,
    /// PUBLISH packets (and wills) refused by the ACL.
    pub acl_denied_publish: u64,
    /// SUBSCRIBE packets refused by the ACL.
    pub acl_denied_subscribe: u64,
    /// Last wills published for lost connections.
    pub wills_published: u64,
    /// Last wills that could not be routed (no router link for a delayed will, or the router
    /// or the hub gone).
    pub wills_dropped: u64,
    /// Messages published by clients that the ACL let through.
    pub messages_in: u64,
    /// Of those, PUBLISHes no MQTT client was subscribed to, which skipped the MQTT router.
    pub unrouted: u64,
    /// Device events handed to the hub.
    pub events_out: u64,
    /// Device events lost because the hub's side of the channel is gone.
    pub events_dropped: u64,
    /// Device messages the gateway rejected (not JSON, wrong types, out of range, too large).
    pub rejected_payloads: u64,
    /// Raw (unmodelled) messages bridged to the hub.
    pub raw_in: u64,
    /// Raw messages the hub published into MQTT.
    pub raw_out: u64,
    /// Raw messages not bridged because the bridge's queue was full (the bridge never holds a
    /// device's connection back).
    pub raw_dropped: u64,
    /// Messages for a thing's device not delivered: its queue was full, or its persistent
    /// session's offline queue overflowed.
    pub deliveries_dropped: u64,
    /// Messages not sent to an MQTT 5 client because the PUBLISH would exceed the Maximum
    /// Packet Size its CONNECT set (the spec says to drop them).
    pub over_client_max: u64,
    /// Open connections that hold a link into the MQTT router (every client but a thing device
    /// that keeps to its own topics).
    pub linked: u64,
    /// Commands turned into MQTT messages.
    pub commands: u64,
    /// Commands dropped (past their deadline, or not encodable).
    pub commands_dropped: u64,
    /// Replies that matched no pending action (late, duplicate, or unknown correlation).
    pub replies_unmatched: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> MqttStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttStats {
            connections_accepted: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
            connections_refused_full: get(&self.connections_refused_full),
            connections_refused_memory: get(&self.connections_refused_memory),
            connections_refused_auth: get(&self.connections_refused_auth),
            acl_denied_publish: get(&self.acl_denied_publish),
            acl_denied_subscribe: get(&self.acl_denied_subscribe),
            wills_published: get(&self.wills_published),
            wills_dropped: get(&self.wills_dropped),
            messages_in: get(&self.messages_in),
            unrouted: get(&self.unrouted),
            events_out: get(&self.events_out),
            events_dropped: get(&self.events_dropped),
            rejected_payloads: get(&self.rejected_payloads),
            raw_in: get(&self.raw_in),
            raw_out: get(&self.raw_out),
            raw_dropped: get(&self.raw_dropped),
            deliveries_dropped: get(&self.deliveries_dropped),
            over_client_max: get(&self.over_client_max),
            linked: get(&self.linked),
            commands: get(&self.commands),
            commands_dropped: get(&self.commands_dropped),
            replies_unmatched: get(&self.replies_unmatched),
        }
    }
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
