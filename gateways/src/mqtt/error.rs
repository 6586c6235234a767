//! Error enums of the MQTT gateway, one per layer: config, start and run, bindings, publishing,
//! and the reasons a device's message is rejected.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

/// A `[mqtt]` config that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A limit that must be positive is zero.
    #[error("mqtt.{key}: must be greater than 0")]
    Zero {
        /// The key, relative to `[mqtt]`.
        key: &'static str,
    },
    /// Messages could never reach their own size limit.
    #[error("mqtt.max_message_bytes ({message}) must not exceed mqtt.max_packet_bytes ({packet})")]
    MessageOverPacket {
        /// `max_message_bytes`.
        message: usize,
        /// `max_packet_bytes`.
        packet: usize,
    },
    /// A packet could not fit in one segment of the router's log.
    #[error(
        "mqtt.max_packet_bytes ({packet}) must not exceed mqtt.router.segment_bytes ({segment})"
    )]
    PacketOverSegment {
        /// `max_packet_bytes`.
        packet: usize,
        /// `router.segment_bytes`.
        segment: usize,
    },
}

/// Why the gateway could not start, or stopped working.
#[derive(Debug, Error)]
pub enum MqttError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be opened.
    #[error("cannot listen for MQTT on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The gateway's own link to the broker's router was refused.
    #[error("cannot attach the gateway to the MQTT router")]
    HubLink {
        /// What rumqttd said.
        #[source]
        source: Box<rumqttd::local::LinkError>,
    },
    /// A blocking task that builds the link could not run.
    #[error("cannot attach the gateway to the MQTT router: the task failed")]
    LinkTask(#[source] tokio::task::JoinError),
    /// The gateway has stopped.
    #[error("the MQTT gateway has stopped")]
    Stopped,
}

/// A `[bindings.mqtt]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BindingError {
    /// The table does not have the expected shape (unknown key, wrong type).
    #[error("bindings.mqtt of type {type_id:?}: {message}")]
    Shape {
        /// The thing type.
        type_id: String,
        /// What the TOML deserializer said.
        message: String,
    },
    /// The type has no `[bindings.mqtt]`.
    #[error("type {type_id:?} has no [bindings.mqtt]")]
    Missing {
        /// The thing type.
        type_id: String,
    },
    /// A key names something that is wrong for its place.
    #[error("bindings.mqtt.{at} of type {type_id:?}: {problem}")]
    Invalid {
        /// The thing type.
        type_id: String,
        /// The key path inside `[bindings.mqtt]`.
        at: String,
        /// What is wrong.
        problem: String,
    },
}

/// Why a topic template (`tele/{name}/SENSOR`) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// Empty, or holds `+`, `#` or NUL, or starts with `$`.
    #[error("{0:?} is not a valid MQTT topic")]
    InvalidTopic(String),
    /// A placeholder that is not a whole level, or unknown.
    #[error("{0:?}: placeholders are whole levels, either {{id}} or {{name}}")]
    BadPlaceholder(String),
    /// No placeholder, or more than one: the device could not be told from the topic.
    #[error("{0:?} must hold exactly one {{id}} or {{name}} level")]
    PlaceholderCount(String),
    /// Under `things/`, which the conventions own.
    #[error("{0:?} is under things/, which the default conventions own")]
    ThingNamespace(String),
}

/// Why [`MqttHandle::publish_raw`](super::MqttHandle::publish_raw) refused a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// Not a valid topic to publish to (empty, wildcards, `$`).
    #[error("{0:?} is not a topic the bridge may publish to")]
    InvalidTopic(String),
    /// The topic belongs to a thing (`things/...` or a bound device's topic).
    #[error("{0:?} belongs to a thing; use thing commands instead")]
    ThingTopic(String),
    /// The payload is over `max_message_bytes`.
    #[error("payload of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// `max_message_bytes`.
        max: usize,
    },
    /// The raw bridge is turned off in the config.
    #[error("the raw MQTT bridge is disabled")]
    Disabled,
    /// The gateway has stopped.
    #[error("the MQTT gateway has stopped")]
    Stopped,
}

/// Why the gateway did not pass on a message a device published. Each is logged and counted;
/// the device stays connected, and MQTT subscribers still get the message.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    /// The payload is over `max_message_bytes`.
    #[error("payload of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not the JSON (or text) the topic needs.
    #[error("payload is not valid: {0}")]
    Malformed(String),
    /// A `things/<id>/...` topic the conventions do not define.
    #[error("no convention for topic level {0:?}")]
    UnknownTopic(String),
}

/// Why [`MqttHandle::register`](super::MqttHandle::register) refused a thing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RegisterError {
    /// The type's `[bindings.mqtt]` is invalid.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// Another thing already uses this device name.
    #[error("device name {name:?} is already used by thing {owner}")]
    NameTaken {
        /// The name.
        name: String,
        /// The thing using it.
        owner: device_models::ThingId,
    },
    /// The name cannot be a topic level.
    #[error("{0:?} cannot be a device name (one topic level, no + # / or $ at the start)")]
    InvalidName(String),
}
