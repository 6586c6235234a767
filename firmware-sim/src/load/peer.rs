//! A lean WAMP peer for load generation: the hub's own codecs and transports, no client actor,
//! so the generator costs as little as possible and measures the router, not itself.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hub::transport::rawsocket::RawSocket;
use hub::transport::websocket::WebSocket;
use hub::transport::{TransportError, WampTransport};
use hub::wamp::{Dict, Id, Message, Serializer, Value, dict};
use tokio::net::TcpStream;

/// RawSocket or WebSocket, chosen by the URL scheme (`rs://` or `ws://`).
pub enum AnyTransport {
    Raw(RawSocket<TcpStream>),
    Ws(Box<WebSocket<TcpStream>>),
}

impl WampTransport for AnyTransport {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self {
            AnyTransport::Raw(t) => t.recv().await,
            AnyTransport::Ws(t) => t.recv().await,
        }
    }
    fn queue(&mut self, msg: &Bytes) -> Result<(), TransportError> {
        match self {
            AnyTransport::Raw(t) => t.queue(msg),
            AnyTransport::Ws(t) => t.queue(msg),
        }
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            AnyTransport::Raw(t) => t.flush().await,
            AnyTransport::Ws(t) => t.flush().await,
        }
    }
    async fn close(&mut self) {
        match self {
            AnyTransport::Raw(t) => t.close().await,
            AnyTransport::Ws(t) => t.close().await,
        }
    }
    fn max_outgoing(&self) -> usize {
        match self {
            AnyTransport::Raw(t) => t.max_outgoing(),
            AnyTransport::Ws(t) => t.max_outgoing(),
        }
    }
    async fn ping(&mut self) -> Result<(), TransportError> {
        match self {
            AnyTransport::Raw(t) => t.ping().await,
            AnyTransport::Ws(t) => t.ping().await,
        }
    }
    fn last_activity(&self) -> std::time::Instant {
        match self {
            AnyTransport::Raw(t) => t.last_activity(),
            AnyTransport::Ws(t) => t.last_activity(),
        }
    }
}

/// A joined session driven message by message.
pub struct Peer {
    pub t: AnyTransport,
    pub ser: Serializer,
    pub session: Id,
    next_request: Id,
}

impl Peer {
    /// Connects and joins `realm` anonymously.
    pub async fn join(url: &str, realm: &str, ser: Serializer) -> anyhow::Result<Peer> {
        let (scheme, rest) = url.split_once("://").context("URL needs a scheme")?;
        let host = rest.split('/').next().unwrap_or_default();
        let tcp = TcpStream::connect(host)
            .await
            .with_context(|| format!("connect {host}"))?;
        tcp.set_nodelay(true)?;
        let t = match scheme {
            "rs" | "tcp" => AnyTransport::Raw(RawSocket::connect(tcp, ser, 16 << 20).await?),
            "ws" => AnyTransport::Ws(Box::new(WebSocket::connect(tcp, url, ser, 16 << 20).await?)),
            other => bail!("unsupported scheme {other}"),
        };
        let mut peer = Peer {
            t,
            ser,
            session: 0,
            next_request: 1,
        };
        let roles = dict([
            ("publisher", Value::Dict(Dict::new())),
            ("subscriber", Value::Dict(Dict::new())),
            ("caller", Value::Dict(Dict::new())),
            ("callee", Value::Dict(Dict::new())),
        ]);
        peer.send(&Message::Hello {
            realm: realm.to_owned(),
            details: dict([("roles", Value::Dict(roles))]),
        })
        .await?;
        match peer.recv().await? {
            Message::Welcome { session, .. } => peer.session = session,
            other => bail!("expected WELCOME, got {other:?}"),
        }
        Ok(peer)
    }

    pub fn request_id(&mut self) -> Id {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Queues a message without flushing.
    pub fn queue(&mut self, m: &Message) -> anyhow::Result<()> {
        let bytes = self.ser.encode(m)?;
        self.t.queue(&bytes)?;
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.t.flush().await?;
        Ok(())
    }

    pub async fn send(&mut self, m: &Message) -> anyhow::Result<()> {
        self.queue(m)?;
        self.flush().await
    }

    pub async fn recv(&mut self) -> anyhow::Result<Message> {
        let bytes = self.t.recv().await?.context("connection closed")?;
        Ok(self.ser.decode(&bytes)?)
    }

    /// Subscribes and waits for SUBSCRIBED.
    pub async fn subscribe(&mut self, topic: &str) -> anyhow::Result<Id> {
        self.subscribe_with(topic, Dict::new()).await
    }

    /// Subscribes with options (e.g. `match`) and waits for SUBSCRIBED.
    pub async fn subscribe_with(&mut self, topic: &str, options: Dict) -> anyhow::Result<Id> {
        let request = self.request_id();
        self.send(&Message::Subscribe {
            request,
            options,
            topic: topic.to_owned(),
        })
        .await?;
        match self.recv().await? {
            Message::Subscribed { subscription, .. } => Ok(subscription),
            other => bail!("expected SUBSCRIBED, got {other:?}"),
        }
    }

    /// Registers and waits for REGISTERED.
    pub async fn register(&mut self, procedure: &str) -> anyhow::Result<Id> {
        let request = self.request_id();
        self.send(&Message::Register {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
        })
        .await?;
        match self.recv().await? {
            Message::Registered { registration, .. } => Ok(registration),
            other => bail!("expected REGISTERED, got {other:?}"),
        }
    }
}
