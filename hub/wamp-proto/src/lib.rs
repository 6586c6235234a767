//! The WAMP protocol as data: values, typed messages, serializers, URIs and ids.
//!
//! Nothing here does I/O, so the router, the client, the transports, the simulator and the fuzz
//! targets can all build on it without the rest of the hub.

// Tests may `expect`: a failed expectation is a failed test.
#![cfg_attr(test, allow(clippy::expect_used, clippy::unwrap_used))]

pub mod codec;
pub mod ids;
pub mod message;
pub mod msgpack;
pub mod uri;
pub mod uris;
pub mod value;

pub use codec::{CodecError, Serializer};
pub use message::{Id, Message, Payload, dict};
pub use uri::MatchPolicy;
pub use value::{Dict, List, Value};
