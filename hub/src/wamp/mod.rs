//! The WAMP protocol as data: values, typed messages, serializers, URIs and ids.
//!
//! Nothing here does I/O; the router, the client and the transports build on it.

pub mod codec;
pub mod ids;
pub mod message;
pub mod uri;
pub mod uris;
pub mod value;

pub use codec::{CodecError, Serializer};
pub use message::{Id, Message, Payload, dict};
pub use uri::MatchPolicy;
pub use value::{Dict, List, Value};
