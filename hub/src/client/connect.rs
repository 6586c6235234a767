//! Joining a realm over the network: address parsing, the transport handshake, HELLO, and the
//! authentication exchange.

use std::time::Duration;

use tokio::net::TcpStream;

use super::conn::{ClientConn, RemoteConn};
use super::driver::Driver;
use super::{Client, ClientError};
use crate::transport::WampTransport;
use crate::transport::rawsocket::RawSocket;
use crate::transport::websocket::WebSocket;
use crate::wamp::{Dict, Message, Serializer, Value, dict};

/// How the client proves who it is.
#[derive(Clone, Default)]
pub enum ClientAuth {
    #[default]
    Anonymous,
    /// A shared secret sent in clear (use TLS on untrusted networks).
    Ticket { authid: String, ticket: String },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Anonymous => f.write_str("Anonymous"),
            ClientAuth::Ticket { authid, .. } => write!(f, "Ticket {{ authid: {authid:?}, .. }}"),
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `ws://host:port/path` for WebSocket, `rs://host:port` (or `tcp://`) for RawSocket.
    pub url: String,
    pub realm: String,
    pub serializer: Serializer,
    pub auth: ClientAuth,
    /// Largest message accepted from the router.
    pub max_message: usize,
    /// Deadline for the whole connect and join.
    pub timeout: Duration,
    /// Ping the router when idle this long, and give up on the link after twice as long without
    /// hearing anything (detects half-open connections). `None`: no keepalive.
    pub keepalive: Option<Duration>,
}

impl ConnectOptions {
    pub fn new(url: &str, realm: &str) -> Self {
        ConnectOptions {
            url: url.to_owned(),
            realm: realm.to_owned(),
            serializer: Serializer::MsgPack,
            auth: ClientAuth::Anonymous,
            max_message: 16 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            keepalive: None,
        }
    }

    pub fn serializer(mut self, s: Serializer) -> Self {
        self.serializer = s;
        self
    }

    pub fn auth(mut self, a: ClientAuth) -> Self {
        self.auth = a;
        self
    }
}

/// The parts of a WAMP URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Address {
    pub websocket: bool,
    pub host_port: String,
}

pub(crate) fn parse_url(url: &str) -> Result<Address, ClientError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ClientError::Address(format!("{url}: missing scheme")))?;
    let host_port = rest.split('/').next().unwrap_or_default().to_owned();
    if host_port.is_empty() {
        return Err(ClientError::Address(format!("{url}: missing host")));
    }
    let websocket = match scheme {
        "ws" => true,
        "rs" | "tcp" | "rawsocket" => false,
        other => {
            return Err(ClientError::Address(format!(
                "{url}: unsupported scheme {other}"
            )));
        }
    };
    Ok(Address {
        websocket,
        host_port,
    })
}

/// The roles and features this client announces.
fn client_roles() -> Dict {
    let f = |names: &[&str]| {
        Value::Dict(dict([(
            "features",
            Value::Dict(
                names
                    .iter()
                    .map(|n| ((*n).to_owned(), Value::Bool(true)))
                    .collect(),
            ),
        )]))
    };
    dict([
        (
            "caller",
            f(&["progressive_call_results", "caller_identification"]),
        ),
        (
            "callee",
            f(&[
                "progressive_call_results",
                "pattern_based_registration",
                "shared_registration",
                "caller_identification",
            ]),
        ),
        (
            "publisher",
            f(&[
                "publisher_exclusion",
                "publisher_identification",
                "subscriber_blackwhite_listing",
            ]),
        ),
        (
            "subscriber",
            f(&["pattern_based_subscription", "publisher_identification"]),
        ),
    ])
}

impl Client {
    /// Connects to a router and joins a realm.
    pub async fn connect(opts: &ConnectOptions) -> Result<Client, ClientError> {
        tokio::time::timeout(opts.timeout, connect_inner(opts))
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

async fn connect_inner(opts: &ConnectOptions) -> Result<Client, ClientError> {
    let addr = parse_url(&opts.url)?;
    let tcp = TcpStream::connect(&addr.host_port)
        .await
        .map_err(|e| ClientError::Transport(e.into()))?;
    let _ = tcp.set_nodelay(true);
    if addr.websocket {
        let t = WebSocket::connect(tcp, &opts.url, opts.serializer, opts.max_message).await?;
        join(t, opts).await
    } else {
        let t = RawSocket::connect(tcp, opts.serializer, opts.max_message).await?;
        join(t, opts).await
    }
}

async fn join<T: WampTransport + 'static>(
    transport: T,
    opts: &ConnectOptions,
) -> Result<Client, ClientError> {
    let mut conn = RemoteConn {
        transport,
        serializer: opts.serializer,
    };
    let mut details = dict([
        ("roles", Value::Dict(client_roles())),
        ("agent", Value::from(crate::router::session::AGENT)),
    ]);
    match &opts.auth {
        ClientAuth::Anonymous => {
            details.insert("authmethods".into(), Value::List(vec!["anonymous".into()]));
        }
        ClientAuth::Ticket { authid, .. } => {
            details.insert("authmethods".into(), Value::List(vec!["ticket".into()]));
            details.insert("authid".into(), Value::from(authid.as_str()));
        }
    }
    conn.send(Message::Hello {
        realm: opts.realm.clone(),
        details,
    })
    .await?;
    loop {
        match conn.recv().await? {
            Some(Message::Welcome { session, details }) => {
                return Ok(Driver::spawn(conn, session, details, opts.keepalive));
            }
            Some(Message::Abort { reason, details }) => {
                return Err(ClientError::Aborted {
                    reason,
                    message: details
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
            Some(Message::Challenge { method, extra: _ }) => {
                let signature = match (&opts.auth, method.as_str()) {
                    (ClientAuth::Ticket { ticket, .. }, "ticket") => ticket.clone(),
                    _ => {
                        return Err(ClientError::Auth(format!(
                            "router challenged with {method}, which this client was not configured for"
                        )));
                    }
                };
                conn.send(Message::Authenticate {
                    signature,
                    extra: Dict::new(),
                })
                .await?;
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected WELCOME, got {}",
                    other.name()
                )));
            }
            None => return Err(ClientError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            Address {
                websocket: true,
                host_port: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(
            parse_url("rs://localhost:8081").unwrap(),
            Address {
                websocket: false,
                host_port: "localhost:8081".into()
            }
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("ws://").is_err());
        assert!(parse_url("nothing").is_err());
    }
}
