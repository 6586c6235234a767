//! CoAP (RFC 7252) with Observe (RFC 7641) and block-wise transfers
//! (RFC 7959), built as protocol logic without I/O plus a thin tokio driver.
//!
//! coap-lite provides the message codec; everything stateful is here.
//!
//! | module | holds |
//! | --- | --- |
//! | `message` | validated decoding, option codecs (uint, Block), option checks, tokens |
//! | `transmission` | RFC 7252 §4.8 parameters, CON back-off, message IDs, the timer queue, [`Transmit`] |
//! | `dedup` | duplicate detection cache keyed by (peer, message ID), bounded |
//! | `ratelimit` | per-peer token buckets that keep one flooding address from starving others |
//! | `blockwise` | Block1 reassembly and the Block2 body cache of the server |
//! | `observe` | the server's observer registry and the client's freshness rule |
//! | [`server`] | the server endpoint engine: `handle_datagram` / `poll_transmit` / `poll_event` |
//! | [`client`] | the client endpoint engine: requests and observations of CoAP devices |
//! | [`driver`] | tokio tasks owning a `UdpSocket` and an engine, with bounded channels |
//! | [`gateway`] | the CoAP gateway on top: device resources, auth, presence, observed devices |
//! | `error` | error enums per layer |
//!
//! The engines take the current `Instant` as an argument and never read the
//! clock, so tests drive them with synthetic time.

mod blockwise;
pub mod client;
mod dedup;
pub mod driver;
mod error;
pub mod gateway;
mod message;
mod message_layer;
mod observe;
mod ratelimit;
pub mod server;
mod transmission;

/// The engines' maps keyed by peer address, message id or request, which every datagram goes
/// through several times: aHash instead of SipHash, keyed at random per map as SipHash is, so a
/// peer still cannot choose colliding keys.
pub(crate) type PeerMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

pub use blockwise::BlockwiseConfig;
pub use coap_lite::{RequestType as Method, ResponseType};
pub use dedup::DedupLimits;
pub use error::{ClientError, DecodeError, DriverError, EncodeError, RawHeader, ServerError};
pub use message::{CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, Token, split_path};
pub use observe::{ObserveConfig, ObserverRemoved};
pub use ratelimit::{RateLimitConfig, RateLimitKey};
pub use transmission::{TransmissionParams, Transmit};
