//! The two ways a client reaches a router: in-process (messages handed over as values) and over a
//! transport (messages serialized).

use std::future::Future;

use tokio::sync::mpsc;

use super::ClientError;
use crate::router::{Flow, Outgoing, RouterSession};
use crate::transport::WampTransport;
use crate::wamp::{Message, Serializer};

/// A message pipe to a router, as the client driver sees it.
pub trait ClientConn: Send + 'static {
    /// Sends one message.
    fn send(&mut self, msg: Message) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// The next message from the router; `Ok(None)` when the connection ended. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Message>, ClientError>> + Send;
    /// Closes the connection.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// Sends a keepalive ping, if the connection has such a thing.
    fn ping(&mut self) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// When the router was last heard from (`None` for connections that cannot go half-open).
    fn last_activity(&self) -> Option<std::time::Instant>;
}

/// An in-process connection: sending runs the router's session state machine directly, receiving
/// reads the session's outbound queue. Nothing is serialized.
#[derive(Debug)]
pub struct LocalConn {
    pub(crate) session: Option<RouterSession>,
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    /// Cancelled when the router ends this session (meta-API kill, slow consumer, shutdown).
    pub(crate) kill: tokio_util::sync::CancellationToken,
}

impl ClientConn for LocalConn {
    async fn send(&mut self, msg: Message) -> Result<(), ClientError> {
        let session = self.session.as_mut().ok_or(ClientError::Closed)?;
        if session.handle(msg) == Flow::Close {
            self.session = None;
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Message>, ClientError> {
        tokio::select! {
            biased;
            m = self.rx.recv() => Ok(m.map(|o| o.message().clone())),
            () = self.kill.cancelled() => {
                // The router ended the session: say why, as a network peer would hear it.
                let close = self.session.as_ref().and_then(|s| s.handle_ref()).and_then(|h| h.close_request());
                self.session = None;
                Ok(close.map(|c| {
                    if c.abort {
                        Message::abort(&c.reason, c.message.as_deref())
                    } else {
                        Message::Goodbye { details: Default::default(), reason: c.reason }
                    }
                }))
            }
        }
    }

    async fn close(&mut self) {
        self.session = None;
        self.rx.close();
    }

    async fn ping(&mut self) -> Result<(), ClientError> {
        Ok(())
    }

    fn last_activity(&self) -> Option<std::time::Instant> {
        None
    }
}

/// A connection over RawSocket or WebSocket.
#[derive(Debug)]
pub struct RemoteConn<T> {
    pub(crate) transport: T,
    pub(crate) serializer: Serializer,
}

impl<T: WampTransport + 'static> ClientConn for RemoteConn<T> {
    async fn send(&mut self, msg: Message) -> Result<(), ClientError> {
        let bytes = self.serializer.encode(&msg)?;
        self.transport.queue(&bytes)?;
        self.transport.flush().await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Message>, ClientError> {
        match self.transport.recv().await? {
            None => Ok(None),
            Some(bytes) => Ok(Some(self.serializer.decode(&bytes)?)),
        }
    }

    async fn close(&mut self) {
        self.transport.close().await;
    }

    async fn ping(&mut self) -> Result<(), ClientError> {
        Ok(self.transport.ping().await?)
    }

    fn last_activity(&self) -> Option<std::time::Instant> {
        Some(self.transport.last_activity())
    }
}
