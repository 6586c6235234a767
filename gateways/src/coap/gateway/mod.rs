//! The CoAP gateway: constrained devices push state and receive commands (even behind NAT), and
//! devices that are CoAP servers are observed by the hub. Built on the protocol engine of
//! [`crate::coap`]; it speaks [`DeviceEvent`]s and [`DeviceCommand`]s through a [`GatewayIo`] and
//! knows nothing of WAMP.
//!
//! # Resources of push devices
//!
//! On UDP `127.0.0.1:5683` by default ([`CoapConfig::bind`]):
//!
//! | request | body | answer | event |
//! | --- | --- | --- | --- |
//! | `POST /things/<id>/state` | object of property values | 2.04 Changed | `Reported` |
//! | `POST /things/<id>/events/<name>` | any value, or empty for `null` | 2.01 Created | `Event` |
//! | `PUT /things/<id>/info` | object of info values | 2.04 Changed | `Info` |
//! | `GET /things/<id>/state` | | 2.05, object of reported values as the registry holds them (4.04 if it holds no such thing) | |
//! | `GET /things/<id>/info` | | 2.05, object of info values as the registry holds them | |
//! | `GET /things/<id>/desired` | | 2.05, object of pending desired values | |
//! | `GET /.well-known/core?ep=<id>` | | 2.05, RFC 6690 link format (40): that device's resources; no secret needed | |
//! | `GET /things/<id>/commands` (Observe) | | 2.05, pending commands; then CON notifications | |
//! | `POST /things/<id>/replies` | `{"id", "output"}` or `{"id", "error"}` | 2.04 Changed | `ActionReply` |
//!
//! Bodies are JSON (Content-Format 50, also assumed when none is given) or CBOR (60); other
//! formats get 4.15. GETs answer in JSON, or CBOR when the request has `Accept: 60` (a commands
//! observation keeps the format of its registration); other Accept values get 4.06.
//!
//! # Commands and replies
//!
//! The representation of `/things/<id>/commands` is always the whole list of commands not yet
//! settled, each with its own id. Every new command is notified as a Confirmable message (a lost
//! one is retransmitted; an observer that stopped answering is dropped); a command that leaves
//! the list (reported, answered, expired) is not notified on its own, so the next notification or
//! GET is the first to show it gone:
//!
//! ```json
//! {"commands": [
//!   {"id": "desired-7", "kind": "desired", "values": {"setpoint": 22}},
//!   {"id": "41", "kind": "action", "action": "boost", "input": {"minutes": 5}, "deadline_ms": 1767225600000}
//! ]}
//! ```
//!
//! Observe only promises the latest state (a newer notification replaces one in flight), so the
//! device acts on ids it has not seen yet and skips the others. `SetDesired` values merge into
//! one `desired` entry with a fresh `desired-<n>` id (a prefix reserved by the gateway); a
//! property leaves it when the device reports that value. An action carries the hub's
//! correlation id and stays until answered or past `deadline_ms`; at most
//! [`CoapConfig::max_pending_actions`] wait per device, and more are refused at once with an
//! error reply. The device answers with `POST /things/<id>/replies`:
//! `{"id": "41", "output": <value>}` (success), `{"id": "41", "error": "text"}` (failure), or
//! `{"id": "desired-7"}` (desired values applied; optional when it reports them). Pending
//! commands live in memory: a gateway restart forgets them, and the hub's calls time out.
//!
//! Errors: 4.04 for an unknown path or an unknown thing (the credentials' `UnknownThing`
//! verdict), 4.05 for the wrong method, 4.01 for bad credentials, 4.00 (with a diagnostic text)
//! for a body that cannot be read, and from the engine 4.02 for unknown critical options, 4.13 for
//! bodies over [`CoapConfig::max_body_size`], 4.15, and 5.03 (Max-Age 1) when the hub's queue is
//! full. Malformed datagrams are dropped or reset by the engine, never a panic; each source address
//! is rate-limited by the engine ([`CoapConfig::rate_limit_per_second`]) so a flood from one
//! address does not starve the others. A confirmable request retransmitted by a device is
//! answered from the engine's cache and produces its events once.
//!
//! # Presence
//!
//! A device's first request since the gateway started (an authenticated one) produces `Hello`
//! (with the type named by an optional `t=<type>` query parameter, and the info when the request
//! is `PUT info`, which then produces no separate `Info`); the first after it went offline
//! produces `Online`. A device that sent nothing for [`CoapConfig::offline_after_secs`] and holds
//! no observation of its commands goes `Offline`. An observed but silent device is probed with a
//! Confirmable notification every `offline_after_secs`; if it does not acknowledge, the engine
//! drops the observation once the notification's retransmissions are spent (about 93 s with the
//! default transmission parameters) and the device goes offline.
//!
//! # Authentication
//!
//! Without DTLS, a device proves itself with the secret issued at provisioning, sent in **every
//! request as the Uri-Query parameter `s=<secret>`** (`coap://hub/things/t1/state?s=…`), and
//! checked with [`GatewayIo::credentials`]. A query parameter works with every CoAP client and
//! library as is, unlike a custom option. **The secret travels in clear text**: anyone who can
//! see the traffic can take it, so this keeps honest mistakes and casual probes out but is no
//! protection on an untrusted network. By default the gateway binds loopback, where a known thing
//! may omit the secret; on a non-loopback bind every request must carry it unless the config sets
//! `allow_unauthenticated_remote` explicitly ([`CoapConfig::auth_required`]). A wrong secret is
//! always refused. The gateway never logs query strings.
//!
//! # Devices that are CoAP servers
//!
//! Listed in [`CoapConfig::devices`] with a `coap://host:port` URI and a thing type whose
//! `[bindings.coap]` table (see [`CoapBinding`]) maps resources to properties and actions (or
//! with that table inline). Each mapped resource is observed, polled every
//! [`CoapConfig::poll_interval_secs`] when the device does not do Observe, and re-registered when
//! an observation lapses; notifications become `Reported`; `SetDesired` becomes a PUT per property
//! resource; `InvokeAction` becomes a POST whose response is the `ActionReply`. The first answer
//! produces `Hello`; an observation that times out produces `Offline`, the next answer `Online`.
//!
//! # Module map
//!
//! | module | holds |
//! | --- | --- |
//! | `config` | [`CoapConfig`] (`[coap]`), its documented default [`DEFAULT_TOML`], validation |
//! | `binding` | [`CoapBinding`], the `[bindings.coap]` table of a thing type |
//! | `resource` | routing of Uri-Paths to resources, the Uri-Query parameters read |
//! | [`payload`] | JSON / CBOR / text bodies to and from JSON values |
//! | `commands` | a push device's pending commands, their representation, replies |
//! | `push` | the sans-I/O core of push devices: requests to responses and events, presence |
//! | `observed` | the sans-I/O core of the hub as client of devices that are CoAP servers |
//! | `run` | the actor task gluing both cores to the engine drivers and the hub |
//! | `stats` | [`CoapStats`], the gateway's counters for metrics |
//! | `error` | [`GatewayError`] |

mod binding;
mod commands;
mod config;
mod error;
mod observed;
pub mod payload;
mod push;
mod resource;
mod run;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_models::TypeCatalog;
#[cfg(doc)]
use device_models::{DeviceCommand, DeviceEvent};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

pub use binding::{BindingError, CoapBinding, ResourceBinding};
pub use config::{CoapConfig, CoapConfigError, DEFAULT_TOML, DeviceConfig, ServerDevice};
pub use error::GatewayError;
pub use payload::{CONTENT_FORMAT_TEXT, PayloadError, PayloadFormat};
pub use stats::{CoapStats, CoapStatsSnapshot};

use self::observed::ObservedDevices;
use self::push::{PushDevices, PushSettings};
use self::run::{Actor, Inputs, Outbox};
use crate::coap::driver::{spawn_client, spawn_server};
use crate::link::GatewayIo;

/// A running CoAP gateway.
#[derive(Debug)]
pub struct CoapGateway {
    local_addr: SocketAddr,
    client_addr: Option<SocketAddr>,
    stats: Arc<CoapStats>,
    task: JoinHandle<Result<(), GatewayError>>,
}

impl CoapGateway {
    /// Validates `config`, resolves its devices against `catalog`, binds the socket and starts
    /// the gateway, which runs until `shutdown` is cancelled. Nothing is bound when the config is
    /// invalid.
    pub async fn start(
        config: &CoapConfig,
        catalog: &TypeCatalog,
        io: GatewayIo,
        shutdown: CancellationToken,
    ) -> Result<Self, GatewayError> {
        let devices = config.resolve_devices(catalog)?;
        Self::start_resolved(config, devices, io, shutdown).await
    }

    /// Starts the gateway with `devices` already resolved against the catalog by
    /// [`CoapConfig::resolve_devices`] (as the hub does once, when it checks its config).
    pub async fn start_resolved(
        config: &CoapConfig,
        devices: Vec<ServerDevice>,
        io: GatewayIo,
        shutdown: CancellationToken,
    ) -> Result<Self, GatewayError> {
        let mut resolved = Vec::with_capacity(devices.len());
        for device in devices {
            let addr = resolve(&device).await?;
            resolved.push((device, addr));
        }
        let socket = bind_udp(config.bind, config.recv_buffer_bytes).map_err(|source| {
            GatewayError::Bind {
                addr: config.bind,
                source,
            }
        })?;
        let drivers = shutdown.child_token();
        let server = spawn_server(socket, config.server_driver(), drivers.clone())
            .map_err(GatewayError::Driver)?;
        let observed = ObservedDevices::new(resolved);
        let (client, client_events, client_addr, client_counters) = if observed.is_empty() {
            (None, None, None, None)
        } else {
            let socket = UdpSocket::bind(config.client_bind)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.client_bind,
                    source,
                })?;
            let parts = spawn_client(socket, config.client_driver(), drivers.clone())
                .map_err(GatewayError::Driver)?;
            (
                Some(parts.handle),
                Some(parts.events),
                Some(parts.local_addr),
                Some(parts.counters),
            )
        };
        let mut observed = observed;
        if let Some(client) = &client {
            for o in observed.to_observe() {
                let id = client
                    .observe(o.peer, &o.uri)
                    .await
                    .map_err(GatewayError::Driver)?;
                observed.observing(id, o.thing, o.target);
            }
        }
        let offline_after = Duration::from_secs(config.offline_after_secs);
        let settings = PushSettings {
            auth_required: config.auth_required(),
            offline_after,
            commands_max_age: config.commands_max_age_secs,
            max_things: config.max_things,
            max_pending_actions: config.max_pending_actions,
        };
        let GatewayIo {
            name,
            events,
            commands,
            credentials,
            things,
            directory: _,
            memory: _,
        } = io;
        let local_addr = server.local_addr;
        let stats = Arc::new(CoapStats::new(server.counters, client_counters));
        info!(
            %local_addr,
            auth_required = settings.auth_required,
            observed_devices = config.devices.len(),
            "CoAP gateway listening"
        );
        let actor = Actor {
            push: PushDevices::new(settings, credentials),
            observed,
            server: server.handle,
            server_task: server.task,
            client,
            events,
            outbox: Outbox::new(stats.clone()),
            stats: stats.clone(),
            shutdown: drivers,
            things,
            reads: futures_util::stream::FuturesUnordered::new(),
            commits: futures_util::stream::FuturesUnordered::new(),
            burst: run::Burst::default(),
        };
        let inputs = Inputs {
            server_events: server.events,
            commands,
            client_events,
            sweep: run::sweep_interval(offline_after),
        };
        let span = info_span!("coap_gateway", gateway = %name, local = %local_addr);
        let task = tokio::spawn(run::run(actor, inputs).instrument(span));
        Ok(Self {
            local_addr,
            client_addr,
            stats,
            task,
        })
    }

    /// The gateway's counters, live.
    pub fn stats(&self) -> &Arc<CoapStats> {
        &self.stats
    }

    /// The address devices send to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The local address of the client socket, when there are devices to observe.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// Waits for the gateway to stop: `Ok` after shutdown, an error if a driver failed.
    pub async fn join(self) -> Result<(), GatewayError> {
        self.task.await.map_err(GatewayError::Task)?
    }
}

/// Binds a UDP socket with a receive buffer of `recv_buffer` bytes (0: the OS default).
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The socket address of a device, resolving its host name if needed.
async fn resolve(device: &ServerDevice) -> Result<SocketAddr, GatewayError> {
    let fail = |source| GatewayError::Resolve {
        thing: device.thing.to_string(),
        host: device.host.clone(),
        port: device.port,
        source,
    };
    let mut addrs = tokio::net::lookup_host((device.host.as_str(), device.port))
        .await
        .map_err(|e| fail(Some(e)))?;
    addrs.next().ok_or_else(|| fail(None))
}
