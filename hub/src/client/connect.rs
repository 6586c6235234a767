//! Joining a realm over the network: address parsing, TLS, the transport handshake, HELLO, and
//! the authentication exchange (ticket, WAMP-CRA plain and salted, cryptosign with optional
//! `tls-exporter` channel binding).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::conn::{ClientConn, RemoteConn};
use super::driver::Driver;
use super::{Client, ClientError};
use crate::router::auth::cryptosign::{ChannelBindingType, PrivateKey};
use crate::router::auth::secret::hex_array;
use crate::router::auth::wampcra;
use crate::transport::WampTransport;
use crate::transport::rawsocket::RawSocket;
use crate::transport::tls::{self, ChannelBinding, TlsClientConfig};
use crate::transport::websocket::WebSocket;
use crate::wamp::{Dict, Message, Serializer, Value, dict};

/// How the client proves who it is. `Debug` hides every secret.
#[derive(Clone, Default)]
pub enum ClientAuth {
    #[default]
    Anonymous,
    /// A shared secret sent in clear (use TLS on untrusted networks).
    Ticket { authid: String, ticket: String },
    /// WAMP-CRA: the secret never travels. If the CHALLENGE carries salt, iterations and keylen,
    /// `secret` is the password the key is derived from; otherwise it is the key itself.
    WampCra { authid: String, secret: String },
    /// WAMP-cryptosign with an Ed25519 key. `authid` may be left for the router to find from the
    /// public key. With `channel_binding`, the signature is bound to this TLS 1.3 connection
    /// (`tls-exporter`), so it is worthless to a man in the middle; it needs `wss://` or `rss://`.
    Cryptosign {
        authid: Option<String>,
        key: PrivateKey,
        channel_binding: bool,
    },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Anonymous => f.write_str("Anonymous"),
            ClientAuth::Ticket { authid, .. } => write!(f, "Ticket {{ authid: {authid:?}, .. }}"),
            ClientAuth::WampCra { authid, .. } => {
                write!(f, "WampCra {{ authid: {authid:?}, .. }}")
            }
            ClientAuth::Cryptosign {
                authid,
                key,
                channel_binding,
            } => write!(
                f,
                "Cryptosign {{ authid: {authid:?}, public_key: {}, channel_binding: {channel_binding} }}",
                key.public_key_hex()
            ),
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `ws://host:port/path` for WebSocket, `rs://host:port` (or `tcp://`) for RawSocket;
    /// `wss://` and `rss://` for the same over TLS.
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
    /// Which certificates to trust for `wss://` and `rss://`.
    pub tls: TlsClientConfig,
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
            tls: TlsClientConfig::default(),
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

    /// Which certificates to trust over TLS (by default Mozilla's roots).
    pub fn tls(mut self, t: TlsClientConfig) -> Self {
        self.tls = t;
        self
    }
}

/// The parts of a WAMP URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Address {
    pub websocket: bool,
    pub tls: bool,
    /// The host alone, the TLS server name.
    pub host: String,
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
    let (websocket, tls) = match scheme {
        "ws" => (true, false),
        "wss" => (true, true),
        "rs" | "tcp" | "rawsocket" => (false, false),
        "rss" | "tls" | "rawsockets" => (false, true),
        other => {
            return Err(ClientError::Address(format!(
                "{url}: unsupported scheme {other}"
            )));
        }
    };
    let host = match host_port.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
        None => host_port
            .rsplit_once(':')
            .map_or(host_port.as_str(), |(h, _)| h)
            .to_owned(),
    };
    Ok(Address {
        websocket,
        tls,
        host,
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
                "registration_revocation",
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
            f(&[
                "pattern_based_subscription",
                "publisher_identification",
                "subscription_revocation",
            ]),
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
    if let ClientAuth::Cryptosign {
        channel_binding: true,
        ..
    } = &opts.auth
        && !addr.tls
    {
        return Err(ClientError::Auth(
            "cryptosign channel binding needs a TLS connection (wss:// or rss://)".into(),
        ));
    }
    let tcp = TcpStream::connect(&addr.host_port)
        .await
        .map_err(|e| ClientError::Transport(e.into()))?;
    let _ = tcp.set_nodelay(true);
    if addr.tls {
        let stream = opts.tls.connect(tcp, &addr.host).await?;
        let binding = tls::client_channel_binding(&stream);
        over(stream, &addr, opts, binding).await
    } else {
        over(tcp, &addr, opts, None).await
    }
}

/// The WAMP transport handshake over an open stream, then the join.
async fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    addr: &Address,
    opts: &ConnectOptions,
    binding: Option<ChannelBinding>,
) -> Result<Client, ClientError> {
    if addr.websocket {
        let t = WebSocket::connect(stream, &opts.url, opts.serializer, opts.max_message).await?;
        join(t, opts, binding).await
    } else {
        let t = RawSocket::connect(stream, opts.serializer, opts.max_message).await?;
        join(t, opts, binding).await
    }
}

/// HELLO.Details for `auth`.
fn hello_details(auth: &ClientAuth) -> Dict {
    let mut details = dict([
        ("roles", Value::Dict(client_roles())),
        ("agent", Value::from(crate::router::session::AGENT)),
    ]);
    let methods = |m: &str| Value::List(vec![Value::from(m)]);
    match auth {
        ClientAuth::Anonymous => {
            details.insert("authmethods".into(), methods("anonymous"));
        }
        ClientAuth::Ticket { authid, .. } => {
            details.insert("authmethods".into(), methods("ticket"));
            details.insert("authid".into(), Value::from(authid.as_str()));
        }
        ClientAuth::WampCra { authid, .. } => {
            details.insert("authmethods".into(), methods("wampcra"));
            details.insert("authid".into(), Value::from(authid.as_str()));
        }
        ClientAuth::Cryptosign {
            authid,
            key,
            channel_binding,
        } => {
            details.insert("authmethods".into(), methods("cryptosign"));
            if let Some(a) = authid {
                details.insert("authid".into(), Value::from(a.as_str()));
            }
            let mut extra = dict([("pubkey", Value::from(key.public_key_hex()))]);
            if *channel_binding {
                extra.insert(
                    "channel_binding".into(),
                    Value::from(ChannelBindingType::TlsExporter.as_str()),
                );
            }
            details.insert("authextra".into(), Value::Dict(extra));
        }
    }
    details
}

/// The AUTHENTICATE signature for a CHALLENGE.
pub fn answer_challenge(
    auth: &ClientAuth,
    method: &str,
    extra: &Dict,
    binding: Option<&ChannelBinding>,
) -> Result<String, ClientError> {
    let text = |k: &str| {
        extra
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::Auth(format!("{method} CHALLENGE without {k}")))
    };
    match (auth, method) {
        (ClientAuth::Ticket { ticket, .. }, "ticket") => Ok(ticket.clone()),
        (ClientAuth::WampCra { secret, .. }, "wampcra") => {
            let challenge = text("challenge")?;
            let key = match extra.get("salt").and_then(Value::as_str) {
                None => secret.clone(),
                Some(salt) => {
                    let number = |k: &str, max: u32| {
                        extra
                            .get(k)
                            .and_then(Value::as_u64)
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| (1..=max).contains(n))
                            .ok_or_else(|| {
                                ClientError::Auth(format!(
                                    "salted wampcra CHALLENGE with a missing or unreasonable {k}"
                                ))
                            })
                    };
                    let iterations = number("iterations", wampcra::MAX_ITERATIONS)?;
                    let keylen = number("keylen", wampcra::MAX_KEYLEN)?;
                    wampcra::derive_key(secret, salt, iterations, keylen)
                }
            };
            Ok(wampcra::sign(key.as_bytes(), challenge))
        }
        (
            ClientAuth::Cryptosign {
                key,
                channel_binding,
                ..
            },
            "cryptosign",
        ) => {
            let challenge = hex_array::<32>(text("challenge")?).ok_or_else(|| {
                ClientError::Auth("cryptosign challenge is not 32 bytes of hex".into())
            })?;
            let channel = if *channel_binding {
                Some(binding.ok_or_else(|| {
                    ClientError::Auth(
                        "channel binding needs TLS 1.3, which this connection did not negotiate"
                            .into(),
                    )
                })?)
            } else {
                None
            };
            Ok(key.sign_challenge(&challenge, channel.map(ChannelBinding::as_bytes)))
        }
        _ => Err(ClientError::Auth(format!(
            "router challenged with {method}, which this client was not configured for"
        ))),
    }
}

async fn join<T: WampTransport + 'static>(
    transport: T,
    opts: &ConnectOptions,
    binding: Option<ChannelBinding>,
) -> Result<Client, ClientError> {
    let mut conn = RemoteConn {
        transport,
        serializer: opts.serializer,
    };
    conn.send(Message::Hello {
        realm: opts.realm.clone(),
        details: hello_details(&opts.auth),
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
            Some(Message::Challenge { method, extra }) => {
                let signature = answer_challenge(&opts.auth, &method, &extra, binding.as_ref())?;
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
    fn debug_hides_client_secrets() {
        let key = PrivateKey::generate();
        for auth in [
            ClientAuth::Ticket {
                authid: "a".into(),
                ticket: "tkt-secret".into(),
            },
            ClientAuth::WampCra {
                authid: "a".into(),
                secret: "cra-secret".into(),
            },
            ClientAuth::Cryptosign {
                authid: None,
                key: key.clone(),
                channel_binding: true,
            },
        ] {
            let text = format!("{auth:?}");
            assert!(
                !text.contains("secret") && !text.contains(&key.to_hex()),
                "{text}"
            );
        }
    }

    #[test]
    fn answers_salted_and_plain_wampcra() {
        let auth = ClientAuth::WampCra {
            authid: "a".into(),
            secret: "secret123".into(),
        };
        let salted = dict([
            ("challenge", Value::from("{\"nonce\":\"abc\"}")),
            ("salt", Value::from("salt123")),
            ("iterations", Value::from(1000u64)),
            ("keylen", Value::from(32u64)),
        ]);
        // Vectors from Autobahn's derive_key + compute_wcs (see the router's wampcra tests).
        assert_eq!(
            answer_challenge(&auth, "wampcra", &salted, None).unwrap(),
            "8xAPKbPsxfCFKz6H1roFoJf8DBlJFWc2j8HYr3YUB+Y="
        );
        let plain = dict([("challenge", Value::from("{\"nonce\":\"abc\"}"))]);
        assert_eq!(
            answer_challenge(&auth, "wampcra", &plain, None).unwrap(),
            "lYIB7ZG/9J/87flwH78c09VppbgU99xcrOLMMilJsrw="
        );
        let mut absurd = salted.clone();
        absurd.insert("iterations".into(), Value::from(u64::MAX));
        assert!(answer_challenge(&auth, "wampcra", &absurd, None).is_err());
        assert!(answer_challenge(&auth, "ticket", &plain, None).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            Address {
                websocket: true,
                tls: false,
                host: "127.0.0.1".into(),
                host_port: "127.0.0.1:8080".into()
            }
        );
        assert_eq!(
            parse_url("rs://localhost:8081").unwrap(),
            Address {
                websocket: false,
                tls: false,
                host: "localhost".into(),
                host_port: "localhost:8081".into()
            }
        );
        assert_eq!(
            parse_url("wss://hub.example:443/ws").unwrap(),
            Address {
                websocket: true,
                tls: true,
                host: "hub.example".into(),
                host_port: "hub.example:443".into()
            }
        );
        let v6 = parse_url("rss://[::1]:8443").unwrap();
        assert!(v6.tls && !v6.websocket);
        assert_eq!(v6.host, "::1");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("ws://").is_err());
        assert!(parse_url("nothing").is_err());
    }
}
