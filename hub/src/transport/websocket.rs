//! WAMP over WebSocket: one WAMP message per WebSocket message, serializer chosen by subprotocol
//! (`wamp.2.json` in text frames, `wamp.2.msgpack` in binary frames).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use super::{TransportError, WampTransport};
use crate::wamp::Serializer;

/// A WAMP session's WebSocket.
#[derive(Debug)]
pub struct WebSocket<S> {
    ws: WebSocketStream<S>,
    serializer: Serializer,
    pending: Vec<WsMessage>,
    max_out: usize,
    last_activity: std::time::Instant,
}

fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Picks the first subprotocol the client offers that we support.
fn negotiate(offered: &str, supported: &[Serializer]) -> Option<Serializer> {
    offered
        .split(',')
        .filter_map(Serializer::from_subprotocol)
        .find(|s| supported.contains(s))
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WebSocket<S> {
    /// Completes the server handshake: the request path must be `path` and the client must offer
    /// a supported WAMP subprotocol.
    // tungstenite fixes the callback's error type (a whole HTTP response), hence the large Err.
    #[allow(clippy::result_large_err)]
    pub async fn accept(
        io: S,
        path: &str,
        supported: &[Serializer],
        max_message: usize,
    ) -> Result<(WebSocket<S>, Serializer), TransportError> {
        let mut chosen = None;
        let callback = |req: &Request, mut resp: Response| {
            if req.uri().path() != path {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    "no WAMP endpoint at this path",
                ));
            }
            let offered: Vec<&str> = req
                .headers()
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let Some(ser) = negotiate(&offered.join(","), supported) else {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "offer a WAMP subprotocol: wamp.2.json or wamp.2.msgpack",
                ));
            };
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(ser.subprotocol()),
            );
            chosen = Some(ser);
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(
            io,
            callback,
            Some(ws_config(max_message)),
        )
        .await
        .map_err(|e| TransportError::WebSocketHandshake(Box::new(e)))?;
        let ser =
            chosen.ok_or_else(|| TransportError::Handshake("no subprotocol chosen".into()))?;
        Ok((WebSocket::new(ws, ser, max_message), ser))
    }

    /// Performs the client handshake for `url` (`ws://host:port/path`) over an open stream.
    pub async fn connect(
        io: S,
        url: &str,
        ser: Serializer,
        max_message: usize,
    ) -> Result<WebSocket<S>, TransportError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url
            .into_client_request()
            .map_err(|e| TransportError::WebSocketHandshake(Box::new(e)))?;
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(ser.subprotocol()),
        );
        let (ws, resp) =
            tokio_tungstenite::client_async_with_config(req, io, Some(ws_config(max_message)))
                .await
                .map_err(|e| TransportError::WebSocketHandshake(Box::new(e)))?;
        let agreed = resp
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if agreed != Some(ser.subprotocol()) {
            return Err(TransportError::Handshake(format!(
                "server did not agree to {} (answered {agreed:?})",
                ser.subprotocol()
            )));
        }
        Ok(WebSocket::new(ws, ser, max_message))
    }

    fn new(ws: WebSocketStream<S>, serializer: Serializer, max_out: usize) -> Self {
        WebSocket {
            ws,
            serializer,
            pending: Vec::new(),
            max_out,
            last_activity: std::time::Instant::now(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WampTransport for WebSocket<S> {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            let next = self.ws.next().await;
            self.last_activity = std::time::Instant::now();
            match next {
                None => return Ok(None),
                Some(Err(e)) => return Err(TransportError::WebSocket(Box::new(e))),
                Some(Ok(WsMessage::Text(t))) => return Ok(Some(Bytes::from(t))),
                Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b)),
                Some(Ok(WsMessage::Close(_))) => return Ok(None),
                // Pings are answered by tungstenite itself.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
            }
        }
    }

    fn queue(&mut self, msg: &Bytes) -> Result<(), TransportError> {
        if msg.len() > self.max_out {
            return Err(TransportError::TooLarge {
                len: msg.len(),
                limit: self.max_out,
            });
        }
        let m = if self.serializer.is_text() {
            let text = Utf8Bytes::try_from(msg.clone()).map_err(|_| TransportError::NotUtf8)?;
            WsMessage::Text(text)
        } else {
            WsMessage::Binary(msg.clone())
        };
        self.pending.push(m);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        for m in self.pending.drain(..) {
            self.ws
                .feed(m)
                .await
                .map_err(|e| TransportError::WebSocket(Box::new(e)))?;
        }
        self.ws
            .flush()
            .await
            .map_err(|e| TransportError::WebSocket(Box::new(e)))
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.ws.close(None).await;
    }

    fn max_outgoing(&self) -> usize {
        self.max_out
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.pending
            .push(WsMessage::Ping(bytes::Bytes::from_static(b"brume")));
        self.flush().await
    }

    fn last_activity(&self) -> std::time::Instant {
        self.last_activity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_negotiation_follows_client_order() {
        let both = [Serializer::Json, Serializer::MsgPack];
        assert_eq!(
            negotiate("wamp.2.msgpack, wamp.2.json", &both),
            Some(Serializer::MsgPack)
        );
        assert_eq!(
            negotiate("wamp.2.cbor,wamp.2.json", &both),
            Some(Serializer::Json)
        );
        assert_eq!(negotiate("wamp.2.json", &[Serializer::MsgPack]), None);
        assert_eq!(negotiate("", &both), None);
    }
}
