//! The WAMP protocol as data, from the `wamp-proto` crate (values, typed messages, serializers,
//! URIs and ids), plus the hub's own URIs in [`uris`].

pub mod uris;

pub use wamp_proto::{
    CodecError, Dict, Id, List, MatchPolicy, Message, Payload, Serializer, Value, dict,
};
pub use wamp_proto::{codec, ids, message, msgpack, uri, value};
