//! A small CoAP client on the engine, for trying it against other CoAP
//! servers (libcoap's `coap-server`, aiocoap-fileserver, the demo server):
//! GETs a resource, then observes it for a few seconds, printing events.
//!
//! `cargo run -p gateways --example coap_demo_client -- 127.0.0.1:5683 /time 5`

#![allow(clippy::print_stderr, reason = "a demo prints what it receives")]

use std::net::SocketAddr;
use std::time::Duration;

use gateways::coap::client::ClientEvent;
use gateways::coap::driver::{ClientDriverConfig, spawn_client};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let peer: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:5683".to_owned())
        .parse()?;
    let uri = args.next().unwrap_or_else(|| "/time".to_owned());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let shutdown = CancellationToken::new();
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let mut client = spawn_client(socket, ClientDriverConfig::default(), shutdown.clone())?;
    let id = client.handle.get(peer, &uri).await?;
    eprintln!("GET {uri} as {id}");
    let obs = client.handle.observe(peer, &uri).await?;
    eprintln!("observing {uri} as {obs}");
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            event = client.events.recv() => match event {
                Some(ClientEvent::Response { id, code, payload, .. }) => {
                    eprintln!("{id}: {code:?} {}", String::from_utf8_lossy(&payload));
                }
                Some(ClientEvent::Notification { id, payload, .. }) => {
                    eprintln!("{id}: {}", String::from_utf8_lossy(&payload));
                }
                Some(ClientEvent::Failed { op, error }) => eprintln!("{op:?} failed: {error}"),
                None => break,
            },
        }
    }
    client.handle.cancel_observation(obs).await?;
    shutdown.cancel();
    client.task.await??;
    Ok(())
}
