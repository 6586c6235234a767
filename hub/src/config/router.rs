//! `[router]`: session queues, the slow-consumer policy and connection limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, invalid};
use crate::router::{RouterConfig, SlowConsumerPolicy};
use crate::transport::connection::SessionLimits;

/// `[router]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSection {
    pub outbound_queue: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub max_connections: usize,
    pub hello_timeout_secs: u64,
    pub write_timeout_secs: u64,
}

impl Default for RouterSection {
    fn default() -> Self {
        RouterSection {
            outbound_queue: 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_connections: 10_000,
            hello_timeout_secs: 10,
            write_timeout_secs: 10,
        }
    }
}

impl RouterSection {
    /// Checks `[router]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if !(1..=1_000_000).contains(&r.outbound_queue) {
            return Err(invalid(
                "router.outbound_queue",
                "must be between 1 and 1000000",
            ));
        }
        if r.max_connections == 0 {
            return Err(invalid("router.max_connections", "must be at least 1"));
        }
        if r.hello_timeout_secs == 0 {
            return Err(invalid("router.hello_timeout_secs", "must be at least 1"));
        }
        if r.write_timeout_secs == 0 {
            return Err(invalid("router.write_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

impl Config {
    /// Session time limits from `[router]`.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            hello_timeout: Duration::from_secs(self.router.hello_timeout_secs),
            write_timeout: Duration::from_secs(self.router.write_timeout_secs),
            ..SessionLimits::default()
        }
    }

    /// The router's settings (reading the secrets the realms refer to).
    pub fn router_config(&self) -> Result<RouterConfig, ConfigError> {
        Ok(RouterConfig {
            realms: self.realm_configs()?,
            outbound_queue: self.router.outbound_queue,
            slow_consumer: self.router.slow_consumer,
            memory: device_models::MemoryPressure::default(),
        })
    }
}
