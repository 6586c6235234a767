//! WAMP RawSocket: the 4-byte handshake and the framing of messages, PINGs and PONGs over a byte
//! stream (TCP or TLS). All integers are big-endian.
//!
//! The codec is plain functions over buffers ([`Handshake`], [`decode_frame`], [`encode_header`]);
//! [`RawSocket`] wraps them around an async stream. A frame longer than the limit we announced
//! fails the connection, as the spec requires.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{TransportError, WampTransport};
use crate::wamp::Serializer;

/// The magic first byte of every RawSocket handshake (no HTTP request starts with it).
pub const MAGIC: u8 = 0x7F;

/// A parsed handshake: the largest message the sender accepts and its serializer code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub max_len: usize,
    pub serializer: u8,
}

/// Handshake error codes the router may answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    SerializerUnsupported = 1,
    LengthUnacceptable = 2,
    ReservedBitsUsed = 3,
    ConnectionLimit = 4,
}

impl Handshake {
    /// Parses a 4-byte handshake. A bad magic byte is `None` (not RawSocket at all).
    pub fn parse(b: [u8; 4]) -> Option<Result<Handshake, HandshakeError>> {
        if b[0] != MAGIC {
            return None;
        }
        if b[2] != 0 || b[3] != 0 {
            return Some(Err(HandshakeError::ReservedBitsUsed));
        }
        let l = b[1] >> 4;
        Some(Ok(Handshake {
            max_len: 1usize << (9 + l),
            serializer: b[1] & 0x0F,
        }))
    }

    /// Encodes a handshake announcing `max_len` (rounded down to a power of two in
    /// [512 B, 16 MiB]).
    pub fn encode(max_len: usize, serializer: u8) -> [u8; 4] {
        let l = length_exponent(max_len);
        [MAGIC, (l << 4) | (serializer & 0x0F), 0, 0]
    }

    /// The error reply for a refused handshake.
    pub fn encode_error(e: HandshakeError) -> [u8; 4] {
        [MAGIC, (e as u8) << 4, 0, 0]
    }
}

/// The `L` nibble for the largest power of two 2^(9+L) not above `max_len`.
fn length_exponent(max_len: usize) -> u8 {
    let mut l = 0u8;
    while l < 15 && (1usize << (9 + l + 1)) <= max_len {
        l += 1;
    }
    l
}

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Message = 0,
    Ping = 1,
    Pong = 2,
}

/// Largest body a frame header can describe: 2^24 (with the 25th bit).
pub const MAX_FRAME: usize = 1 << 24;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("reserved frame type {0}")]
    ReservedType(u8),
    #[error("reserved header bits set")]
    ReservedBits,
}

/// Decodes one frame from the front of `buf`, or `Ok(None)` if more bytes are needed.
pub fn decode_frame(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<(FrameKind, Bytes)>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let b0 = header[0];
    if b0 & 0xF0 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let kind = match b0 & 0x07 {
        0 => FrameKind::Message,
        1 => FrameKind::Ping,
        2 => FrameKind::Pong,
        t => return Err(FrameError::ReservedType(t)),
    };
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    // The X bit is a 25th length bit, valid only for a length of exactly 2^24.
    let len = if b0 & 0x08 != 0 {
        if len != 0 {
            return Err(FrameError::ReservedBits);
        }
        MAX_FRAME
    } else {
        len
    };
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some((kind, buf.split_to(len).freeze())))
}

/// The 4-byte header for a frame of `len` bytes (`len` ≤ 2^24).
pub fn encode_header(kind: FrameKind, len: usize) -> [u8; 4] {
    if len == MAX_FRAME {
        return [kind as u8 | 0x08, 0, 0, 0];
    }
    [kind as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// A RawSocket connection after the handshake.
#[derive(Debug)]
pub struct RawSocket<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Largest frame we accept (what we announced).
    max_in: usize,
    /// Largest frame the peer accepts (what it announced).
    max_out: usize,
    last_activity: std::time::Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> RawSocket<S> {
    /// Completes the server side of the handshake, given the 4 bytes already read, refusing
    /// serializers not in `supported` with the spec's error reply.
    pub async fn accept(
        mut io: S,
        hello: [u8; 4],
        max_in: usize,
        supported: &[Serializer],
    ) -> Result<(RawSocket<S>, Serializer), TransportError> {
        let hs = match Handshake::parse(hello) {
            None => {
                return Err(TransportError::Handshake(
                    "not a RawSocket handshake".into(),
                ));
            }
            Some(Err(e)) => {
                io.write_all(&Handshake::encode_error(e)).await?;
                return Err(TransportError::Handshake(format!("refused: {e:?}")));
            }
            Some(Ok(hs)) => hs,
        };
        let Some(ser) =
            Serializer::from_rawsocket_code(hs.serializer).filter(|s| supported.contains(s))
        else {
            io.write_all(&Handshake::encode_error(
                HandshakeError::SerializerUnsupported,
            ))
            .await?;
            return Err(TransportError::Handshake(format!(
                "unsupported serializer {}",
                hs.serializer
            )));
        };
        let max_in = max_in.clamp(512, MAX_FRAME);
        let reply = Handshake::encode(max_in, hs.serializer);
        io.write_all(&reply).await?;
        // Announce exactly what the reply says, since it rounds down to a power of two.
        let announced = 1usize << (9 + (reply[1] >> 4));
        Ok((RawSocket::new(io, announced, hs.max_len), ser))
    }

    /// Performs the client side of the handshake.
    pub async fn connect(
        mut io: S,
        ser: Serializer,
        max_in: usize,
    ) -> Result<RawSocket<S>, TransportError> {
        let hello = Handshake::encode(max_in, ser.rawsocket_code());
        io.write_all(&hello).await?;
        let mut reply = [0u8; 4];
        io.read_exact(&mut reply).await?;
        match Handshake::parse(reply) {
            Some(Ok(hs)) if hs.serializer == ser.rawsocket_code() => {
                let announced = 1usize << (9 + (hello[1] >> 4));
                Ok(RawSocket::new(io, announced, hs.max_len))
            }
            Some(Ok(hs)) if hs.serializer == 0 => Err(TransportError::Handshake(format!(
                "router refused the handshake (error {})",
                reply[1] >> 4
            ))),
            _ => Err(TransportError::Handshake(format!(
                "bad handshake reply {reply:02x?}"
            ))),
        }
    }

    fn new(io: S, max_in: usize, max_out: usize) -> Self {
        RawSocket {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            max_in,
            max_out,
            last_activity: std::time::Instant::now(),
        }
    }

    fn push_frame(&mut self, kind: FrameKind, body: &[u8]) {
        self.wbuf
            .extend_from_slice(&encode_header(kind, body.len()));
        self.wbuf.extend_from_slice(body);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WampTransport for RawSocket<S> {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            let frame = decode_frame(&mut self.rbuf, self.max_in)?;
            if frame.is_some() {
                self.last_activity = std::time::Instant::now();
            }
            match frame {
                Some((FrameKind::Message, body)) => return Ok(Some(body)),
                Some((FrameKind::Ping, body)) => {
                    // A PONG must echo the PING at once.
                    self.push_frame(FrameKind::Pong, &body);
                    self.flush().await?;
                }
                Some((FrameKind::Pong, _)) => {}
                None => {
                    if self.io.read_buf(&mut self.rbuf).await? == 0 {
                        if self.rbuf.is_empty() {
                            return Ok(None);
                        }
                        return Err(TransportError::Truncated);
                    }
                }
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
        self.push_frame(FrameKind::Message, msg);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    fn max_outgoing(&self) -> usize {
        self.max_out
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        self.push_frame(FrameKind::Ping, b"brume");
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
    fn handshake_vectors() {
        // msgpack, 16 MiB both ways.
        assert_eq!(Handshake::encode(16 << 20, 2), [0x7F, 0xF2, 0, 0]);
        assert_eq!(Handshake::encode(512, 1), [0x7F, 0x01, 0, 0]);
        assert_eq!(Handshake::encode(1000, 1), [0x7F, 0x01, 0, 0]);
        assert_eq!(Handshake::encode(1 << 20, 1), [0x7F, 0xB1, 0, 0]);
        assert_eq!(
            Handshake::parse([0x7F, 0xF2, 0, 0]),
            Some(Ok(Handshake {
                max_len: 16 << 20,
                serializer: 2
            }))
        );
        assert_eq!(Handshake::parse([0x16, 0x03, 1, 0]), None);
        assert_eq!(
            Handshake::parse([0x7F, 0xF2, 1, 0]),
            Some(Err(HandshakeError::ReservedBitsUsed))
        );
        assert_eq!(
            Handshake::encode_error(HandshakeError::SerializerUnsupported),
            [0x7F, 0x10, 0, 0]
        );
    }

    #[test]
    fn frames_need_more_bytes_then_decode() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode_header(FrameKind::Message, 3));
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&encode_header(FrameKind::Ping, 1));
        wire.extend_from_slice(b"p");
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode_frame(&mut buf, 1024).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (FrameKind::Message, Bytes::from_static(b"abc")),
                (FrameKind::Ping, Bytes::from_static(b"p"))
            ]
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x10, 0x00][..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::TooLong {
                len: 4096,
                limit: 1024
            })
        );
        let mut buf = BytesMut::from(&[0x03, 0, 0, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::ReservedType(3))
        );
        let mut buf = BytesMut::from(&[0x10, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut buf, 1024), Err(FrameError::ReservedBits));
        let mut buf = BytesMut::from(&[0x08, 0, 0, 1][..]);
        assert_eq!(
            decode_frame(&mut buf, MAX_FRAME),
            Err(FrameError::ReservedBits)
        );
    }

    #[test]
    fn the_25th_length_bit() {
        assert_eq!(
            encode_header(FrameKind::Message, MAX_FRAME),
            [0x08, 0, 0, 0]
        );
        let mut buf = BytesMut::from(&[0x08, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut buf, MAX_FRAME), Ok(None));
        assert_eq!(
            decode_frame(&mut buf, MAX_FRAME - 1),
            Err(FrameError::TooLong {
                len: MAX_FRAME,
                limit: MAX_FRAME - 1
            })
        );
    }
}
