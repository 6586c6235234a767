//! Errors of the gateway as a whole.

use std::net::SocketAddr;

use super::config::CoapConfigError;
use crate::coap::DriverError;

/// Why the gateway could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] CoapConfigError),
    /// A socket could not be bound.
    #[error("cannot bind CoAP socket {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A device's host name did not resolve.
    #[error("cannot resolve CoAP device {thing} at {host}:{port}")]
    Resolve {
        /// The thing.
        thing: String,
        /// Its host.
        host: String,
        /// Its port.
        port: u16,
        /// The resolver's error, if it gave one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A CoAP driver task failed.
    #[error("CoAP driver failed")]
    Driver(#[source] DriverError),
    /// A task of the gateway panicked or was aborted.
    #[error("CoAP gateway task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}
