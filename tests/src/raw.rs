//! Raw access to the router's sockets, for sending bytes no well-behaved client would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A RawSocket connection driven byte by byte.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    /// Connects and completes a handshake for serializer `ser` (1 JSON, 2 MessagePack), returning
    /// the router's 4-byte reply.
    pub async fn handshake(addr: SocketAddr, ser: u8) -> (RawConn, [u8; 4]) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&[0x7F, 0xF0 | ser, 0, 0])
            .await
            .expect("write handshake");
        let mut reply = [0u8; 4];
        stream
            .read_exact(&mut reply)
            .await
            .expect("handshake reply");
        (RawConn { stream }, reply)
    }

    /// Sends one message frame.
    pub async fn send(&mut self, body: &[u8]) {
        let len = body.len();
        let header = [0u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        let _ = self.stream.write_all(&header).await;
        let _ = self.stream.write_all(body).await;
    }

    /// Reads one frame (type, body), or `None` once the router closed the connection. Panics if
    /// neither happens within [`WAIT`]: a silent router is a failure, never taken for a close.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let fut = async {
            let mut h = [0u8; 4];
            self.stream.read_exact(&mut h).await.ok()?;
            let len = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((h[0] & 0x07, body))
        };
        match tokio::time::timeout(WAIT, fut).await {
            Ok(frame) => frame,
            Err(_) => panic!("the router neither sent a frame nor closed within {WAIT:?}"),
        }
    }

    /// Reads one message frame and parses it as JSON; panics on a close or a non-JSON body.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        let (kind, body) = self.recv().await.expect("a message, not a close");
        assert_eq!(kind, 0, "a message frame");
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
    }

    /// Reads frames until the router closes the connection; returns the JSON messages seen.
    /// Panics if the router stays silent for [`WAIT`] without closing.
    pub async fn recv_until_closed(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some((kind, body)) = self.recv().await {
            if kind == 0 {
                out.push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
            }
        }
        out
    }
}

/// How long the router may stay silent before a read fails the test: far above any answer time,
/// so that only a router that never answers reaches it.
pub const WAIT: Duration = Duration::from_secs(20);
