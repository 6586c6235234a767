//! Simulated CoAP devices and the CoAP load generator, built on the gateways crate's CoAP engine.
//!
//! | module | holds |
//! | --- | --- |
//! | [`push`] | [`PushDevice`]: a thermostat that pushes its state to the hub (Confirmable POSTs), observes its commands resource (so it needs no open port, as behind NAT) and answers them |
//! | [`server`] | [`ServerDevice`]: a thermostat that is a CoAP server with observable resources, for the hub to observe as a client; [`SERVER_DEVICE_BINDING`] maps it |
//! | [`load`] | [`coap_load`]: many devices sending Confirmable POSTs as fast as they are answered, with throughput and latency percentiles |
//! | [`cli`] | the `brume-sim coap ...` and `brume-sim coap-load` subcommands |
//!
//! The wire conventions are the gateway's (see `gateways::coap::gateway`): resources under
//! `/things/<id>/`, the device secret as the Uri-Query parameter `s=<secret>`.

pub mod cli;
pub mod load;
pub mod push;
pub mod server;

pub use load::{LoadConfig, LoadReport, coap_load};
pub use push::{PushActivity, PushDevice, PushDeviceConfig};
pub use server::{SERVER_DEVICE_BINDING, ServerDevice, ServerDeviceConfig};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A local address to bind for talking to `peer`: loopback for a loopback peer, otherwise the
/// unspecified address of its family, with an ephemeral port.
pub(crate) fn local_bind_for(peer: SocketAddr) -> SocketAddr {
    let ip = match peer.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// `?s=<secret>` or nothing.
pub(crate) fn secret_query(secret: Option<&str>) -> String {
    secret.map(|s| format!("?s={s}")).unwrap_or_default()
}
