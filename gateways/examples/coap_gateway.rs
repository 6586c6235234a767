//! The CoAP gateway on its own, with a stand-in hub that logs (or only counts) device events and
//! admits every thing `load-0` .. `load-9999` and `dev-0` .. `dev-99` with the secret
//! `load-secret`: for trying devices against it and for measuring it apart from the load
//! generator (`brume-sim coap-load --target ...`).
//!
//! `cargo run --release -p gateways --example coap_gateway -- [ADDR] [--quiet]`
//!
//! The per-address rate limit is off, since a load generator sends from one address.

#![allow(clippy::print_stderr, reason = "an example reports on stderr")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use device_models::{DeviceEvent, TypeCatalog};
use gateways::coap::gateway::{CoapConfig, CoapGateway};
use gateways::{GatewayIo, StaticCredentials};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quiet = args.iter().any(|a| a == "--quiet");
    let bind = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("127.0.0.1:5683", String::as_str)
        .parse()?;
    let secrets = (0..10_000)
        .map(|n| format!("load-{n}"))
        .chain((0..100).map(|n| format!("dev-{n}")))
        .map(|t| (t, "load-secret".to_owned()))
        .collect::<HashMap<_, _>>();
    let (io, mut hub) = GatewayIo::pair("coap", 8_192, Arc::new(StaticCredentials(secrets)));
    let config = CoapConfig {
        bind,
        rate_limit_per_second: 0.0,
        ..CoapConfig::default()
    };
    let shutdown = CancellationToken::new();
    let gateway =
        CoapGateway::start(&config, &TypeCatalog::builtin()?, io, shutdown.clone()).await?;
    eprintln!("CoAP gateway on {}", gateway.local_addr());
    let mut reported = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if reported > 0 {
                    eprintln!("{reported} reports in the last second");
                    reported = 0;
                }
            }
            event = hub.events.recv() => match event {
                Some(e) => {
                    if matches!(e, DeviceEvent::Reported { .. }) {
                        reported += 1;
                    }
                    if !quiet {
                        eprintln!("{}", serde_json::to_string(&e)?);
                    }
                }
                None => break,
            },
        }
    }
    shutdown.cancel();
    gateway.join().await?;
    Ok(())
}
