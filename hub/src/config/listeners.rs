//! `[[listeners]]`: where WAMP clients connect (WebSocket, RawSocket, optionally TLS).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};
use crate::transport::listener::WampListener;
use crate::transport::tls::{TlsAcceptor, TlsError};
use crate::wamp::Serializer;

/// Which protocols a listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Websocket,
    Rawsocket,
    Both,
}

/// `[[listeners]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub name: String,
    pub kind: ListenerKind,
    pub address: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_serializers")]
    pub serializers: Vec<String>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default)]
    pub allow_anonymous_remote: bool,
    /// `[listeners.tls]`: serve TLS (`wss://`, `rss://`) with this certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

/// `[listeners.tls]`: PEM files, read and checked before any port opens.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The default `[[listeners]]`: WebSocket on 8080 and RawSocket on 8081, loopback only.
pub(super) fn default_listeners() -> Vec<ListenerSection> {
    let listener = |name: &str, kind, address: &str| ListenerSection {
        name: name.into(),
        kind,
        address: address.into(),
        path: default_path(),
        serializers: default_serializers(),
        max_message_size: default_max_message_size(),
        allow_anonymous_remote: false,
        tls: None,
    };
    vec![
        listener("websocket", ListenerKind::Websocket, "127.0.0.1:8080"),
        listener("rawsocket", ListenerKind::Rawsocket, "127.0.0.1:8081"),
    ]
}

fn default_path() -> String {
    "/ws".into()
}

fn default_serializers() -> Vec<String> {
    vec!["json".into(), "msgpack".into()]
}

fn default_max_message_size() -> usize {
    1024 * 1024
}

/// A listener ready to bind: its validated address and what it serves.
#[derive(Clone, Debug)]
pub struct ListenerPlan {
    pub address: SocketAddr,
    pub kind: ListenerKind,
    pub spec: WampListener,
}

impl Config {
    /// Validated listeners, ready to bind.
    pub fn listener_plans(&self) -> Result<Vec<ListenerPlan>, ConfigError> {
        let anonymous = self.realms.iter().any(|r| r.anonymous);
        let mut names = HashSet::new();
        let mut plans = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listeners[{i}].{k}");
            if !names.insert(l.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("listener {:?} is defined twice", l.name),
                ));
            }
            let address: SocketAddr = l.address.parse().map_err(|e| {
                invalid(
                    key("address"),
                    format!("{:?} is not an ip:port address ({e})", l.address),
                )
            })?;
            if !l.path.starts_with('/') {
                return Err(invalid(key("path"), "must start with `/`"));
            }
            if l.serializers.is_empty() {
                return Err(invalid(
                    key("serializers"),
                    "at least one serializer is needed",
                ));
            }
            let serializers = l
                .serializers
                .iter()
                .map(|s| match s.as_str() {
                    "json" => Ok(Serializer::Json),
                    "msgpack" => Ok(Serializer::MsgPack),
                    other => Err(invalid(
                        key("serializers"),
                        format!("unknown serializer {other:?} (known: json, msgpack)"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !(512..=16 * 1024 * 1024).contains(&l.max_message_size) {
                return Err(invalid(
                    key("max_message_size"),
                    "must be between 512 and 16777216",
                ));
            }
            let tls = match &l.tls {
                None => None,
                Some(t) => Some(tls_acceptor(t, &key("tls"))?),
            };
            if anonymous && !address.ip().is_loopback() && !l.allow_anonymous_remote {
                return Err(invalid(
                    key("address"),
                    format!(
                        "{address} is not a loopback address and a realm admits anonymous sessions; \
                         require authentication or set allow_anonymous_remote = true explicitly"
                    ),
                ));
            }
            plans.push(ListenerPlan {
                address,
                kind: l.kind,
                spec: WampListener {
                    name: l.name.clone(),
                    accept_websocket: l.kind != ListenerKind::Rawsocket,
                    accept_rawsocket: l.kind != ListenerKind::Websocket,
                    path: l.path.clone(),
                    serializers,
                    max_message: l.max_message_size,
                    limits: self.session_limits(),
                    tls,
                },
            });
        }
        Ok(plans)
    }
}

/// A listener's TLS acceptor; errors name `cert_file`, `key_file` or the section.
pub(super) fn tls_acceptor(t: &TlsSection, at: &str) -> Result<TlsAcceptor, ConfigError> {
    TlsAcceptor::from_pem_files(&t.cert_file, &t.key_file).map_err(|e| {
        let which = match &e {
            TlsError::Read { path, .. } if *path == t.key_file => "key_file",
            TlsError::Read { .. } | TlsError::NoCertificate { .. } | TlsError::Pem { .. } => {
                "cert_file"
            }
            TlsError::NoKey { .. } => "key_file",
            _ => "",
        };
        let key = if which.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{which}")
        };
        invalid(key, e.to_string())
    })
}
