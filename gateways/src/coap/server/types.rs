//! Public types of the server engine: configuration, the requests handed to
//! the application, its responses and notifications, and events.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};

use crate::coap::blockwise::BlockwiseConfig;
use crate::coap::dedup::DedupLimits;
use crate::coap::observe::{ObserveConfig, ObserverRemoved};
use crate::coap::ratelimit::RateLimitConfig;
use crate::coap::transmission::TransmissionParams;

/// Identifies a request handed to the application until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The Observe option of a GET request (RFC 7641 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObserveFlag {
    /// Observe=0: the client wants to observe the resource. The observer is
    /// added when the application answers with a 2.xx code.
    Register,
    /// Observe=1: the client stops observing; the observer is already gone.
    Deregister,
}

/// A request for the application, body reassembled if it came in blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Pass this to `Server::respond`.
    pub id: RequestId,
    /// The client's address.
    pub peer: SocketAddr,
    /// GET, POST, PUT, DELETE, FETCH, PATCH or iPATCH.
    pub method: RequestType,
    /// Uri-Path segments (`/things/a/state` is `["things", "a", "state"]`).
    pub path: Vec<String>,
    /// Uri-Query values (`k=v` each).
    pub query: Vec<String>,
    /// Content-Format of the payload, if the client said.
    pub content_format: Option<u16>,
    /// The Accept option, if any.
    pub accept: Option<u16>,
    /// The whole body.
    pub payload: Bytes,
    /// Observe option of a GET.
    pub observe: Option<ObserveFlag>,
    /// Whether the request was Confirmable.
    pub confirmable: bool,
}

/// The application's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// Response code, e.g. `ResponseType::Content` (2.05).
    pub code: ResponseType,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// The whole body; split into Block2 blocks when larger than a block.
    pub payload: Bytes,
    /// Max-Age in seconds (RFC 7252 §5.10.5); absent means 60.
    pub max_age: Option<u32>,
    /// ETag; one is derived from the body when it goes out in blocks.
    pub etag: Option<Vec<u8>>,
    /// Location-Path segments, for 2.01 Created.
    pub location_path: Vec<String>,
}

impl Response {
    /// A response with a code and no payload.
    pub fn new(code: ResponseType) -> Self {
        Self {
            code,
            content_format: None,
            payload: Bytes::new(),
            max_age: None,
            etag: None,
            location_path: Vec::new(),
        }
    }

    /// 2.05 Content with a body.
    pub fn content(content_format: u16, payload: impl Into<Bytes>) -> Self {
        Self {
            content_format: Some(content_format),
            payload: payload.into(),
            ..Self::new(ResponseType::Content)
        }
    }

    /// Sets Max-Age.
    pub fn with_max_age(mut self, seconds: u32) -> Self {
        self.max_age = Some(seconds);
        self
    }
}

/// A notification to send to the observers of a path.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Usually 2.05. An error code ends the observations (RFC 7641 §4.2).
    pub code: ResponseType,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// The new representation.
    pub payload: Bytes,
    /// Max-Age in seconds; observers re-register when it lapses.
    pub max_age: Option<u32>,
    /// `Some(true)` forces CON, `Some(false)` forces NON, `None` follows the
    /// `con_every` policy.
    pub confirmable: Option<bool>,
}

impl Notification {
    /// A 2.05 notification following the CON/NON policy.
    pub fn new(content_format: u16, payload: impl Into<Bytes>) -> Self {
        Self {
            code: ResponseType::Content,
            content_format: Some(content_format),
            payload: payload.into(),
            max_age: None,
            confirmable: None,
        }
    }
}

/// What the server engine reports to the application.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// A request to answer with `Server::respond`.
    Request(Request),
    /// An observer was added (the registration was answered with 2.xx).
    ObserverAdded {
        /// The client.
        peer: SocketAddr,
        /// The observed path, segments joined with `/`.
        path: String,
    },
    /// An observer was dropped.
    ObserverRemoved {
        /// The client.
        peer: SocketAddr,
        /// The observed path, segments joined with `/`.
        path: String,
        /// Why.
        reason: ObserverRemoved,
    },
}

/// Configuration of the server engine. `Default` gives the RFC values and
/// the limits documented on each field.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// RFC 7252 transmission parameters.
    pub transmission: TransmissionParams,
    /// How long to wait for the application before sending an empty ACK and
    /// answering later with a separate response (default 1 s, well under
    /// ACK_TIMEOUT so the client does not retransmit).
    pub ack_delay: Duration,
    /// An unanswered request is answered with 5.03 after this (default 30 s).
    pub response_timeout: Duration,
    /// Requests waiting for the application, in total (default 1 024) and
    /// per peer (default 64); beyond them the server answers 5.03.
    pub max_pending: usize,
    /// See `max_pending`.
    pub max_pending_per_peer: usize,
    /// Duplicate-detection cache bounds.
    pub dedup: DedupLimits,
    /// Observe limits and CON/NON policy.
    pub observe: ObserveConfig,
    /// Block-wise limits, block size and body cap.
    pub blockwise: BlockwiseConfig,
    /// Per-peer rate limit; `None` turns it off.
    pub rate_limit: Option<RateLimitConfig>,
    /// Path prefixes (like `"raw"` or `"fw/upload"`) that accept any
    /// Content-Format; everywhere else a payload must be JSON or CBOR.
    pub any_content_format: Vec<String>,
    /// Seed for back-off jitter and message IDs; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transmission: TransmissionParams::default(),
            ack_delay: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            max_pending: 1_024,
            max_pending_per_peer: 64,
            dedup: DedupLimits::default(),
            observe: ObserveConfig::default(),
            blockwise: BlockwiseConfig::default(),
            rate_limit: Some(RateLimitConfig::default()),
            any_content_format: Vec::new(),
            rng_seed: None,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Datagrams fed in.
    pub datagrams: u64,
    /// Dropped by the rate limit.
    pub rate_limited: u64,
    /// Dropped or reset as malformed.
    pub malformed: u64,
    /// Duplicates answered from the cache or dropped.
    pub duplicates: u64,
    /// Requests handed to the application.
    pub requests: u64,
    /// CON retransmissions sent.
    pub retransmissions: u64,
    /// CONs given up after MAX_RETRANSMIT.
    pub gave_up: u64,
    /// Requests the engine refused itself with a 4.xx (unknown critical option, method, size,
    /// Content-Format, block-wise errors).
    pub refused: u64,
    /// Requests the engine answered 5.03: too many pending, or the application did not answer
    /// in time.
    pub busy: u64,
}
