//! `/metrics`: the hub's counters in Prometheus text format, read from the live state at each
//! scrape (a [`Collector`]), plus the things database's commit histograms. One registry per
//! hub, no global recorder. Labels are bounded: gateways by configured name, drops by cause,
//! sessions by transport and serializer, router traffic by realm (configured), calls by outcome;
//! never one series per thing or per session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::HubView;

/// The registry of one hub: its collector and the store's histograms.
pub fn registry(view: &HubView) -> Registry {
    let mut r = Registry::with_prefix("brume");
    r.register(
        "things_store_commit_seconds",
        "Time to commit one batch of the things database (with its fsync)",
        view.store.commit_seconds.clone(),
    );
    r.register(
        "things_store_commit_writes",
        "Writes per commit of the things database (group commit)",
        view.store.commit_ops.clone(),
    );
    r.register_collector(Box::new(HubCollector(Arc::new(view.clone()))));
    r
}

/// Renders the registry as a `/metrics` answer.
pub fn render(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Debug)]
struct HubCollector(Arc<HubView>);

/// Writes metric families into one [`DescriptorEncoder`].
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
        let m = ConstCounter::new(v);
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
        let m = ConstGauge::new(v);
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    /// A counter family with one label.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: &[(&str, u64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (value, v) in series {
            let labels = [(label, *value)];
            ConstCounter::new(*v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A counter family with labels.
    fn labeled_counters(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Vec<(&str, &str)>, u64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in series {
            ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A gauge family with labels.
    fn gauges(
        &mut self,
        name: &str,
        help: &str,
        series: &[(Vec<(&str, &str)>, f64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.0;
        let mut out = Out(&mut encoder);
        process(&mut out, v)?;
        router(&mut out, v)?;
        things(&mut out, v)?;
        gateways(&mut out, v)?;
        uplink(&mut out, v)
    }
}

fn process(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    out.gauge(
        "uptime_seconds",
        "Seconds since the hub started",
        v.started.elapsed().as_secs_f64(),
    )?;
    out.gauge(
        "process_resident_memory_bytes",
        "Resident memory of the hub process",
        crate::memory::rss_bytes().unwrap_or(0) as f64,
    )?;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    out.gauge("process_open_fds", "Open file descriptors", fds as f64)?;
    out.gauge(
        "memory_budget_bytes",
        "The memory budget (hub.max_memory_bytes)",
        v.memory.budget() as f64,
    )?;
    out.gauge(
        "memory_shedding",
        "1 while the hub is over its memory budget and sheds",
        if v.memory.shedding() { 1.0 } else { 0.0 },
    )?;
    let p = v.memory.pressure();
    out.counter(
        "memory_shed_events",
        "Events dropped for slow subscribers because the hub was over its memory budget",
        p.shed_events(),
    )?;
    out.counter(
        "memory_refused_connections",
        "Connections refused because the hub was over its memory budget",
        p.refused_connections(),
    )?;
    let parts = v.supervisor.parts();
    let restarts: Vec<(&str, u64)> = parts.iter().map(|(n, p)| (*n, p.restarts)).collect();
    out.counters(
        "part_restarts",
        "Restarts of a part of the hub after a panic or an early end",
        "part",
        &restarts,
    )
}

fn router(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    let mut by_kind: std::collections::BTreeMap<(&'static str, &'static str), usize> =
        std::collections::BTreeMap::new();
    let mut queued = 0usize;
    let mut dropped = 0u64;
    for realm in v.router.realms() {
        for s in realm.sessions() {
            let ser = match s.transport.serializer {
                Some(crate::wamp::Serializer::Json) => "json",
                Some(crate::wamp::Serializer::MsgPack) => "msgpack",
                None => "none",
            };
            *by_kind.entry((s.transport.kind, ser)).or_default() += 1;
            queued += s.backlog();
            dropped += s.dropped_events();
        }
    }
    let series: Vec<(Vec<(&str, &str)>, f64)> = by_kind
        .iter()
        .map(|((t, s), n)| (vec![("transport", *t), ("serializer", *s)], *n as f64))
        .collect();
    out.gauges(
        "router_sessions",
        "WAMP sessions open now, by transport and serializer",
        &series,
    )?;
    out.gauge(
        "router_outbound_queued",
        "Messages queued towards sessions now, over all sessions",
        queued as f64,
    )?;
    out.gauge(
        "router_dropped_events_open_sessions",
        "Events dropped for slow consumers, over the sessions open now",
        dropped as f64,
    )?;
    let d = v.router.write_drops();
    out.counters(
        "router_messages_dropped",
        "Outgoing messages a connection could not send as they were, by cause: too_large (over \
         the peer's maximum message size; a reply or an invocation becomes an error, so no peer \
         waits) or unencodable",
        "cause",
        &[
            ("too_large", get(&d.too_large)),
            ("unencodable", get(&d.unencodable)),
        ],
    )?;
    traffic(out, v)
}

/// Picks one counter of a realm's [`crate::router::realm::Traffic`].
type Pick = fn(&crate::router::realm::Traffic) -> &AtomicU64;

/// Publications, events and calls, by realm (realms come from the config).
fn traffic(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    let mut realms: Vec<_> = v.router.realms().collect();
    realms.sort_by(|a, b| a.name().cmp(b.name()));
    let by_realm = |f: Pick| -> Vec<(&str, u64)> {
        realms
            .iter()
            .map(|r| (r.name(), get(f(r.traffic()))))
            .collect()
    };
    out.counters(
        "router_publications",
        "Publications the broker took (sessions' PUBLISH and the router's meta events), by realm",
        "realm",
        &by_realm(|t| &t.publications),
    )?;
    out.counters(
        "router_events_sent",
        "EVENT messages queued to subscribers, by realm",
        "realm",
        &by_realm(|t| &t.events),
    )?;
    out.counters(
        "router_calls",
        "CALLs the dealer took (meta procedures aside), by realm",
        "realm",
        &by_realm(|t| &t.calls),
    )?;
    let outcomes: [(&str, Pick); 5] = [
        ("result", |t| &t.results),
        ("error", |t| &t.errors),
        ("timeout", |t| &t.timeouts),
        ("canceled", |t| &t.canceled),
        ("refused", |t| &t.refused),
    ];
    let series: Vec<(Vec<(&str, &str)>, u64)> = realms
        .iter()
        .flat_map(|r| {
            outcomes.iter().map(|(outcome, f)| {
                (
                    vec![("realm", r.name()), ("outcome", *outcome)],
                    get(f(r.traffic())),
                )
            })
        })
        .collect();
    out.labeled_counters(
        "router_call_outcomes",
        "How routed calls ended, by realm: result, the callee's error, timeout, canceled (by the \
         caller, or a side left), refused (no callee, or one that cannot take more)",
        &series,
    )
}

fn things(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    let t = v.things.stats();
    let s = &v.store;
    out.counter(
        "things_events_in",
        "Device events taken from the gateways",
        get(&t.events_in),
    )?;
    out.counter(
        "things_state_events",
        "State change events published",
        get(&t.state_events),
    )?;
    out.counter(
        "things_auto_provisioned",
        "Things provisioned automatically",
        get(&t.auto_provisioned),
    )?;
    out.counters(
        "things_dropped",
        "Device messages and commands the things service dropped, by cause",
        "cause",
        &[
            (
                "rejected_by_type",
                get(&t.invalid_reports) + get(&t.invalid_messages),
            ),
            ("unknown_device", get(&t.unknown_devices)),
            ("command_queue", get(&t.dropped_commands)),
            ("write_failed", get(&s.failed_ops)),
        ],
    )?;
    out.counter(
        "things_store_batches",
        "Commits of the things database",
        get(&s.batches),
    )?;
    out.counter(
        "things_store_writes",
        "Writes committed to the things database",
        get(&s.ops),
    )?;
    out.counter(
        "things_store_retries",
        "Commits of the things database tried again",
        get(&s.retries),
    )?;
    out.counter(
        "things_acknowledged_after_commit",
        "Device messages acknowledged after the commit that holds them",
        get(&s.barriers),
    )?;
    out.counter(
        "things_set_calls",
        "Calls of brume.things.set taken",
        get(&t.sets.called),
    )?;
    out.counters(
        "things_set_outcomes",
        "How set calls ended: succeeded (the device reported the values), refused (at once, \
         nothing sent), failed (thing deleted or offline while waiting), timed_out, canceled",
        "outcome",
        &call_outcomes(&t.sets),
    )?;
    out.counter(
        "things_action_calls",
        "Action calls taken",
        get(&t.actions.called),
    )?;
    out.counters(
        "things_action_outcomes",
        "How action calls ended: succeeded, refused (at once, nothing sent), failed (the device \
         answered an error, or the thing went away), timed_out, canceled",
        "outcome",
        &call_outcomes(&t.actions),
    )
}

fn call_outcomes(c: &crate::things::link::CallStats) -> [(&'static str, u64); 5] {
    [
        ("succeeded", get(&c.succeeded)),
        ("refused", get(&c.refused)),
        ("failed", get(&c.failed)),
        ("timed_out", get(&c.timed_out)),
        ("canceled", get(&c.canceled)),
    ]
}

fn gateways(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    if let Some(mqtt) = &v.mqtt {
        let s = mqtt.stats();
        out.gauge(
            "mqtt_connections",
            "MQTT sessions open now",
            s.connections_open as f64,
        )?;
        out.counter(
            "mqtt_connections_accepted",
            "MQTT TCP connections accepted",
            s.connections_accepted,
        )?;
        out.counters(
            "mqtt_connections_refused",
            "MQTT connections refused, by cause",
            "cause",
            &[
                ("auth", s.connections_refused_auth),
                ("max_connections", s.connections_refused_full),
                ("memory", s.connections_refused_memory),
            ],
        )?;
        out.counter(
            "mqtt_messages_in",
            "MQTT messages published by clients",
            s.messages_in,
        )?;
        out.counter(
            "mqtt_events_out",
            "Device events the MQTT gateway handed to the hub",
            s.events_out,
        )?;
        out.counters(
            "mqtt_rejected",
            "MQTT messages and requests rejected, by cause",
            "cause",
            &[
                ("payload", s.rejected_payloads),
                ("acl_publish", s.acl_denied_publish),
                ("acl_subscribe", s.acl_denied_subscribe),
            ],
        )?;
        out.counter("mqtt_commands", "Commands sent to MQTT devices", s.commands)?;
        out.counters(
            "mqtt_dropped",
            "MQTT messages the gateway could not pass on, by cause",
            "cause",
            &[
                ("bridge_queue", s.raw_dropped),
                ("hub_stopped", s.events_dropped),
                ("device_queue", s.deliveries_dropped),
                ("client_max_packet", s.over_client_max),
                ("will", s.wills_dropped),
            ],
        )?;
        out.gauge(
            "mqtt_router_links",
            "Open MQTT connections holding a link into the MQTT router (thing devices that keep to their own topics hold none)",
            s.linked as f64,
        )?;
    }
    if let Some(coap) = &v.coap {
        coap_gateway(out, &coap.snapshot())?;
    }
    if !v.raw.is_empty() {
        let snaps: Vec<(&str, gateways::raw::StatsSnapshot)> = v
            .raw
            .iter()
            .map(|(n, s)| (n.as_str(), s.snapshot()))
            .collect();
        let pick = |f: fn(&gateways::raw::StatsSnapshot) -> u64| -> Vec<(&str, u64)> {
            snaps.iter().map(|(n, s)| (*n, f(s))).collect()
        };
        out.counters(
            "raw_frames",
            "Frames decoded and accepted, by raw listener",
            "listener",
            &pick(|s| s.frames),
        )?;
        out.counters(
            "raw_bad_frames",
            "Frames rejected (checksum, size, layout), by raw listener",
            "listener",
            &pick(|s| s.bad_checksum + s.oversize + s.truncated),
        )?;
        out.counters(
            "raw_connections",
            "TCP connections accepted, by raw listener",
            "listener",
            &pick(|s| s.connections),
        )?;
    }
    if !v.modbus.is_empty() {
        modbus_buses(out, &v.modbus)?;
    }
    Ok(())
}

fn modbus_buses(
    out: &mut Out<'_, '_>,
    buses: &[(String, Arc<gateways::modbus::BusStats>)],
) -> Result<(), std::fmt::Error> {
    let snaps: Vec<(&str, gateways::modbus::BusSnapshot)> = buses
        .iter()
        .map(|(n, s)| (n.as_str(), s.snapshot()))
        .collect();
    let pick = |f: fn(&gateways::modbus::BusSnapshot) -> u64| -> Vec<(&str, u64)> {
        snaps.iter().map(|(n, s)| (*n, f(s))).collect()
    };
    type Pick = fn(&gateways::modbus::BusSnapshot) -> u64;
    let families: [(&str, &str, Pick); 11] = [
        (
            "modbus_requests",
            "Modbus requests sent (reads and writes), by bus",
            |s| s.requests,
        ),
        (
            "modbus_answered",
            "Modbus requests answered, with data or an exception, by bus",
            |s| s.answered,
        ),
        (
            "modbus_timeouts",
            "Modbus requests not answered in time, by bus",
            |s| s.timeouts,
        ),
        (
            "modbus_transport_errors",
            "Modbus requests lost with their connection or serial port, by bus",
            |s| s.transport_errors,
        ),
        (
            "modbus_protocol_errors",
            "Modbus answers that did not match their request, by bus",
            |s| s.protocol_errors,
        ),
        (
            "modbus_registers_read",
            "Modbus registers and bits read, by bus",
            |s| s.registers_read,
        ),
        (
            "modbus_value_errors",
            "Polled Modbus values that could not be decoded (not reported), by bus",
            |s| s.value_errors,
        ),
        (
            "modbus_writes",
            "Modbus write requests that succeeded, by bus",
            |s| s.writes,
        ),
        (
            "modbus_writes_failed",
            "Modbus writes that failed (exception, no answer, value out of range), by bus",
            |s| s.writes_failed,
        ),
        (
            "modbus_commands_refused",
            "Sets and actions refused before any request (device offline, queue full, line closed), by bus",
            |s| s.commands_refused,
        ),
        (
            "modbus_connect_failures",
            "Failed attempts to connect to a Modbus server or open a serial line, by bus",
            |s| s.connect_failures,
        ),
    ];
    for (name, help, f) in families {
        out.counters(name, help, "bus", &pick(f))?;
    }
    let exceptions: Vec<(Vec<(&str, &str)>, u64)> = snaps
        .iter()
        .flat_map(|(bus, s)| {
            s.exceptions
                .iter()
                .map(move |(code, n)| (vec![("bus", *bus), ("code", *code)], *n))
        })
        .collect();
    out.labeled_counters(
        "modbus_exceptions",
        "Modbus exception answers, by bus and exception",
        &exceptions,
    )?;
    let online: Vec<(Vec<(&str, &str)>, f64)> = snaps
        .iter()
        .map(|(bus, s)| (vec![("bus", *bus)], s.devices_online as f64))
        .collect();
    out.gauges(
        "modbus_devices_online",
        "Modbus devices answering now, by bus",
        &online,
    )?;
    let faults: Vec<(Vec<(&str, &str)>, f64)> = snaps
        .iter()
        .map(|(bus, s)| (vec![("bus", *bus)], s.faults.len() as f64))
        .collect();
    out.gauges(
        "modbus_properties_failing",
        "Modbus properties whose last read failed (exception or undecodable value), by bus; brume status lists them",
        &faults,
    )
}

fn coap_gateway(
    out: &mut Out<'_, '_>,
    s: &gateways::coap::gateway::CoapStatsSnapshot,
) -> Result<(), std::fmt::Error> {
    let e = &s.engine;
    out.counter(
        "coap_datagrams",
        "UDP datagrams the CoAP gateway received",
        e.datagrams,
    )?;
    out.counter(
        "coap_requests",
        "CoAP requests (exchanges) handed to the CoAP gateway, duplicates aside",
        e.requests,
    )?;
    out.counter(
        "coap_duplicates",
        "Retransmitted CoAP requests answered from the cache or dropped",
        e.duplicates,
    )?;
    out.counter(
        "coap_retransmissions",
        "Confirmable CoAP messages (notifications, separate responses) sent again",
        e.retransmissions,
    )?;
    out.counter(
        "coap_gave_up",
        "Confirmable CoAP messages never acknowledged after their last retransmission",
        e.gave_up,
    )?;
    out.gauge(
        "coap_observers",
        "Observe relations (of commands resources) registered now",
        s.observers as f64,
    )?;
    out.counter(
        "coap_events_out",
        "Device events the CoAP gateway handed to the hub",
        s.events_out,
    )?;
    out.counter(
        "coap_events_dropped",
        "Device events the CoAP gateway dropped because the hub lagged",
        s.events_dropped,
    )?;
    out.counter(
        "coap_observed_notifications_dropped",
        "Notifications from observed CoAP devices dropped because the gateway lagged (a later one carries newer state)",
        s.notifications_dropped,
    )?;
    out.counter(
        "coap_observed_datagrams_malformed",
        "Datagrams from observed CoAP devices dropped unread: over the size limit, or not CoAP",
        s.observed_malformed,
    )?;
    out.counter(
        "coap_observer_events_dropped",
        "Observations added or removed by CoAP devices that the gateway missed because its queue from the server was full",
        s.observer_events_dropped,
    )?;
    out.counter(
        "coap_commands",
        "Commands the CoAP gateway took for its devices",
        s.commands,
    )?;
    out.counters(
        "coap_rejected",
        "CoAP datagrams and requests rejected, by cause (busy: 5.03, the device retries)",
        "cause",
        &[
            ("rate_limited", e.rate_limited),
            ("malformed", e.malformed),
            ("protocol", e.refused),
            ("auth", s.rejected_auth),
            ("not_found", s.rejected_not_found),
            ("method", s.rejected_method),
            ("bad_request", s.rejected_bad_request),
            ("other", s.rejected_other),
            ("busy", e.busy + s.busy),
        ],
    )
}

fn uplink(out: &mut Out<'_, '_>, v: &HubView) -> Result<(), std::fmt::Error> {
    let Some(u) = &v.uplink else {
        return Ok(());
    };
    let s = u.status();
    out.gauge(
        "uplink_connected",
        "1 while the cloud link is up",
        if s.connected { 1.0 } else { 0.0 },
    )?;
    out.gauge(
        "uplink_round_trip_seconds",
        "The last end-to-end probe through the cloud router (0 if none since the link came up)",
        s.round_trip.map_or(0.0, |(_, rtt)| rtt.as_secs_f64()),
    )?;
    out.gauge(
        "uplink_queued_events",
        "Events in the uplink queue",
        s.queued as f64,
    )?;
    out.gauge(
        "uplink_queued_bytes",
        "Bytes in the uplink queue",
        s.queued_bytes as f64,
    )?;
    let oldest_age = s.oldest_at_ms.map_or(0.0, |at| {
        device_models::now_ms().saturating_sub(at) as f64 / 1000.0
    });
    out.gauge(
        "uplink_queue_oldest_age_seconds",
        "Age of the event at the head of the uplink queue, the next to go up (0 when empty)",
        oldest_age,
    )?;
    out.counter(
        "uplink_accepted",
        "Events taken into the uplink queue",
        s.accepted,
    )?;
    out.counter(
        "uplink_forwarded",
        "Events replayed from the uplink queue and acknowledged by the cloud router",
        s.forwarded,
    )?;
    let d = &s.drops;
    let q = &d.queue;
    out.counters(
        "uplink_dropped",
        "Events the uplink dropped, by cause",
        "cause",
        &[
            ("queue_bound", q.bound),
            ("age", q.age),
            ("oversize", q.oversize),
            ("rejected", q.rejected),
            ("unreadable", q.unreadable),
            ("disk_full", q.disk_full),
            ("disk_error", d.disk_error),
            ("shutdown", d.shutdown),
            ("slow_consumer", d.slow_consumer),
            ("memory", d.memory),
        ],
    )
}
