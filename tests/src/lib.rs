//! Shared harness for Brume's end-to-end tests.
//!
//! - [`hub`]: a hub started in-process on port 0 with a temporary data directory.
//! - [`peers`]: third-party peers (Autobahn, Crossbar.io, mosquitto, aiocoap, libcoap, Playwright
//!   with Chromium), installed pinned on first use so the test command works on a fresh machine.
//! - [`cloud`]: Crossbar.io as the cloud router, and a switchable TCP proxy to stage outages.
//! - [`raw`]: a bare RawSocket/WebSocket speaker for feeding the router bad input.
//! - [`auth`]: a realm with one principal per authentication method, and their secrets.
//! - [`certs`]: a throwaway CA and a server certificate for TLS tests.
//!
//! The harness fails a test by panicking, so unwrap and expect are its error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod certs;
pub mod cloud;
pub mod hub;
pub mod peers;
pub mod raw;

/// Installs a test log subscriber once (`RUST_LOG` to see hub logs in failing tests).
pub fn init_logging() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
