//! Public types of the client engine: configuration, identifiers and events.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::ResponseType;

use crate::coap::dedup::DedupLimits;
use crate::coap::error::ClientError;
use crate::coap::transmission::TransmissionParams;

/// Identifies a one-shot request (`get`, `put`, ...) until its result event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies an observation from `observe` until `cancel_observation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObservationId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

impl fmt::Display for ObservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "obs-{}", self.0)
    }
}

/// What a `Failed` event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A one-shot request; it is finished.
    Request(RequestId),
    /// An observation; it stays alive and is re-registered after
    /// `retry_interval` until cancelled.
    Observation(ObservationId),
}

/// What the client engine reports to the application.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// A newer representation of an observed resource: a notification, the
    /// answer to a (re-)registration, or a poll result.
    Notification {
        /// The observation.
        id: ObservationId,
        /// Content-Format of the payload.
        content_format: Option<u16>,
        /// The whole body, reassembled if it came in blocks.
        payload: Bytes,
    },
    /// The final response to a request (any code, 2.xx to 5.xx).
    Response {
        /// The request.
        id: RequestId,
        /// Response code.
        code: ResponseType,
        /// Content-Format of the payload.
        content_format: Option<u16>,
        /// The whole body, reassembled if it came in blocks.
        payload: Bytes,
    },
    /// A request or an observation's registration failed.
    Failed {
        /// Which one.
        op: Operation,
        /// Why.
        error: ClientError,
    },
}

/// Configuration of the client engine.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// RFC 7252 transmission parameters.
    pub transmission: TransmissionParams,
    /// After an empty ACK, how long to wait for the separate response
    /// (default 60 s).
    pub separate_response_timeout: Duration,
    /// Largest response body reassembled from Block2 blocks (default 64 KiB).
    pub max_body_size: usize,
    /// Block size for uploads and downloads, 16 to 1024 (default 1024).
    pub block_size: usize,
    /// An observation lapses this long after its Max-Age ran out without a
    /// notification; it is then re-registered (default 10 s).
    pub lapse_margin: Duration,
    /// Re-register anyway after this long without a notification, whatever
    /// the Max-Age (default 300 s).
    pub max_silence: Duration,
    /// When a device answers a registration without Observe, poll it with a
    /// GET this often (default 30 s).
    pub poll_interval: Duration,
    /// After a failed registration, try again this much later (default 30 s).
    pub retry_interval: Duration,
    /// Most exchanges in flight (default 256); `get`/`put` beyond it fail
    /// with `Busy`.
    pub max_in_flight: usize,
    /// Duplicate detection of separate responses and CON notifications.
    pub dedup: DedupLimits,
    /// Seed for tokens, message IDs and back-off; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transmission: TransmissionParams::default(),
            separate_response_timeout: Duration::from_secs(60),
            max_body_size: 64 * 1024,
            block_size: 1024,
            lapse_margin: Duration::from_secs(10),
            max_silence: Duration::from_secs(300),
            poll_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(30),
            max_in_flight: 256,
            dedup: DedupLimits {
                max_entries: 8_192,
                max_bytes: 1 << 20,
                max_per_peer: 1_024,
            },
            rng_seed: None,
        }
    }
}
