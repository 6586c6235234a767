//! `[http]`: the operator's HTTP listener (health, readiness, metrics, status).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[http]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub enabled: bool,
    /// Where to listen.
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
        }
    }
}
