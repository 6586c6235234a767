//! Error types of the CoAP engine, one enum per layer.

use std::io;

/// Header fields that can be read even when the rest of a datagram is
/// malformed; enough to send a matching Reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// Message ID of the malformed message.
    pub message_id: u16,
    /// Whether it was a Confirmable message (only those get a Reset).
    pub confirmable: bool,
}

/// Why a datagram could not be decoded. Decoding errors are never fatal: the
/// datagram is dropped, or answered with a Reset when it was a readable
/// Confirmable message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 4 header bytes.
    #[error("datagram of {0} bytes is shorter than the CoAP header")]
    TooShort(usize),
    /// Version field other than 1; RFC 7252 §3 says to ignore it silently.
    #[error("unsupported CoAP version {0}")]
    Version(u8),
    /// The header is readable but the rest breaks RFC 7252 §3.
    #[error("malformed CoAP message {}: {reason}", header.message_id)]
    Malformed {
        /// The readable part of the header, to reject a Confirmable message.
        header: RawHeader,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A message we built could not be encoded (a bug, not a peer's fault).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("cannot encode CoAP message: {0}")]
pub struct EncodeError(#[source] pub coap_lite::error::MessageError);

/// Errors returned to the application by the server engine.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request was already answered, timed out, or never existed.
    #[error("no pending request with id {0}")]
    UnknownRequest(u64),
    /// The response could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Errors returned to the application by the client engine, and carried by
/// its `Failed` events.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// An observation's registration was answered with an error code (or a
    /// notification carried one, which ends the observation on the server).
    #[error("peer answered {0:?}")]
    Status(coap_lite::ResponseType),
    /// No answer after the last retransmission, or no separate response in
    /// time after an empty ACK.
    #[error("request timed out")]
    Timeout,
    /// The peer rejected the message with a Reset.
    #[error("peer answered with a Reset")]
    Reset,
    /// The response body would exceed the configured size cap.
    #[error("response body exceeds {0} bytes")]
    TooLarge(usize),
    /// The peer broke block-wise transfer rules.
    #[error("block-wise transfer failed: {0}")]
    Blockwise(&'static str),
    /// Too many requests in flight; try again later.
    #[error("too many requests in flight")]
    Busy,
    /// The request could not be encoded.
    #[error("cannot encode request: {0}")]
    Encode(#[source] std::sync::Arc<EncodeError>),
    /// The observation or request is unknown (cancelled or finished).
    #[error("unknown observation or request")]
    Unknown,
}

/// Errors of the tokio drivers.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The UDP socket failed in a way that is not per-datagram.
    #[error("CoAP socket error")]
    Socket(#[source] io::Error),
    /// The driver task has stopped; commands can no longer be delivered.
    #[error("CoAP driver has stopped")]
    Stopped,
    /// The server engine refused the command.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The client engine refused the command or the request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}
