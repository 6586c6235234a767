//! A small CoAP server on the engine, for trying it with other CoAP tools
//! (libcoap's `coap-client`, aiocoap):
//!
//! - `GET /hello` answers `"world"` (JSON);
//! - `GET /big` answers 3000 bytes (Block2);
//! - `PUT`/`POST` anywhere answers 2.04 with the body's size (Block1 welcome);
//! - `GET /clock` with Observe gets a notification every second.
//!
//! `cargo run -p gateways --example coap_demo_server -- 127.0.0.1:5683`

#![allow(clippy::print_stderr, reason = "a demo prints its address")]

use std::time::Duration;

use bytes::Bytes;
use gateways::coap::driver::{ServerDriverConfig, spawn_server};
use gateways::coap::server::{Response, ServerEvent};
use gateways::coap::{CONTENT_FORMAT_JSON, Method, ResponseType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5683".to_owned());
    let shutdown = CancellationToken::new();
    let socket = UdpSocket::bind(&addr).await?;
    let mut server = spawn_server(socket, ServerDriverConfig::default(), shutdown.clone())?;
    eprintln!("CoAP demo server on {}", server.local_addr);
    let notifier = server.handle.clone();
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let payload = Bytes::from(tick.to_string());
            if notifier
                .notify_content("clock", CONTENT_FORMAT_JSON, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => break,
            event = server.events.recv() => event,
        };
        let Some(ServerEvent::Request(r)) = event else {
            continue;
        };
        let response = match (r.method, r.path.join("/").as_str()) {
            (Method::Get, "hello") => Response::content(CONTENT_FORMAT_JSON, "\"world\""),
            (Method::Get, "big") => Response::content(CONTENT_FORMAT_JSON, vec![b'b'; 3000]),
            (Method::Get, "clock") => Response::content(CONTENT_FORMAT_JSON, "0"),
            (Method::Put | Method::Post, _) => Response {
                code: ResponseType::Changed,
                ..Response::content(CONTENT_FORMAT_JSON, r.payload.len().to_string())
            },
            _ => Response::new(ResponseType::NotFound),
        };
        server.handle.respond(r.id, response).await?;
    }
    shutdown.cancel();
    server.task.await??;
    Ok(())
}
