//! `[http]`: the operator's HTTP listener (health, readiness, metrics, status, the REST API and
//! the web console).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::listeners::{TlsSection, tls_acceptor};
use super::{Config, ConfigError, invalid};
use crate::transport::tls::TlsAcceptor;

/// `[http]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve the operator's HTTP listener.
    pub enabled: bool,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Answer on a non-loopback address although the things realm admits anonymous sessions
    /// (which then may use the REST API and console without credentials).
    pub allow_anonymous_remote: bool,
    /// `[http.tls]`: serve HTTPS with this certificate and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            allow_anonymous_remote: false,
            tls: None,
        }
    }
}

/// The HTTP listener, validated: its TLS acceptor if any.
#[derive(Clone, Debug)]
pub struct HttpPlan {
    pub address: SocketAddr,
    pub tls: Option<TlsAcceptor>,
}

impl Config {
    /// The validated `[http]` listener, `None` when disabled. Like the WAMP listeners, it refuses
    /// a non-loopback address when the things realm admits anonymous sessions, unless
    /// `allow_anonymous_remote` says so.
    pub fn http_plan(&self) -> Result<Option<HttpPlan>, ConfigError> {
        let h = &self.http;
        if !h.enabled {
            return Ok(None);
        }
        let realm = self.things.realm_name(&self.realms);
        let anonymous = self.realms.iter().any(|r| r.name == realm && r.anonymous);
        if anonymous && !h.listen.ip().is_loopback() && !h.allow_anonymous_remote {
            return Err(invalid(
                "http.listen",
                format!(
                    "{} is not a loopback address and realm {realm:?} admits anonymous sessions; \
                     require authentication or set http.allow_anonymous_remote = true explicitly",
                    h.listen
                ),
            ));
        }
        let tls = match &h.tls {
            None => None,
            Some(t) => Some(tls_acceptor(t, "http.tls")?),
        };
        Ok(Some(HttpPlan {
            address: h.listen,
            tls,
        }))
    }
}
