//! The hub's WAMP URIs in one place: the spec's (from [`wamp_proto::uris`]) and Brume's own.

pub use wamp_proto::uris::*;

/// Brume's ABORT reason when a session's outbound queue overflowed.
pub const CLOSE_SLOW_CONSUMER: &str = "brume.close.slow_consumer";

/// The default reason when a session is removed through `wamp.registration.remove` or
/// `wamp.subscription.remove` and the caller gave none.
pub const REVOKED_REMOVED: &str = "brume.error.removed";

/// The things registry's procedures, topics and errors; they live in `device-models`, which the
/// Thing Descriptions it exports also use.
pub use device_models::uris::things;

/// The uplink's procedure and topic.
pub mod uplink {
    pub const STATUS: &str = "brume.uplink.status";
    pub const ON_STATUS: &str = "brume.uplink.on_status";
}

/// The hub's own status procedure and its memory-budget topic.
pub mod hub {
    pub const STATUS: &str = "brume.hub.status";
    pub const ON_MEMORY: &str = "brume.hub.on_memory";
}
