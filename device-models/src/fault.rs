//! Fault injection for drills: `BRUME_FAULT=<part>[,<part>…]` makes each named part panic once,
//! when it starts, so tests can prove that no part of the hub dies alone (see the hub's
//! supervisor). Unset, it costs one environment read per process.
//!
//! Parts: `things_service`, `things_store`, `things_session`, `uplink_ingest`, `uplink_link`,
//! `mqtt_router_link`, `coap_gateway`, `wamp_listener`, `memory_watch`, `http_listener`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the parts to fail.
pub const ENV: &str = "BRUME_FAULT";

/// Panics if `part` is named in [`ENV`] and has not panicked yet in this process.
pub fn inject(part: &str) {
    static NAMED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let named = NAMED.get_or_init(|| {
        let parts = std::env::var(ENV).unwrap_or_default();
        Mutex::new(
            parts
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    });
    let fire = named.lock().unwrap_or_else(|e| e.into_inner()).remove(part);
    if fire {
        panic!("fault injected into {part} ({ENV})");
    }
}
