//! `[hub]`: who this hub is, where it keeps its data, how long shutdown may take.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[hub]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    pub id: String,
    pub data_dir: PathBuf,
    pub shutdown_grace_secs: u64,
    /// The most disk the hub's data may take, in bytes; 0: a quarter of the space free on the
    /// data directory's filesystem at start. What can be shed (the uplink queue's oldest
    /// telemetry first) is shed to stay within it; provisioning and desired state never are.
    pub max_disk_bytes: u64,
    /// The most resident memory the hub may use, in bytes; 0: half of the memory the machine
    /// (or the hub's cgroup) has. Past it the hub sheds what a slow subscriber has queued and
    /// accepts no new connection (see [`crate::memory`]).
    pub max_memory_bytes: u64,
    /// Threads of the async runtime that runs the connections, the gateways, the things service
    /// and the router; 0: one fewer than the CPUs this process may use, at least one. The things
    /// database writer has a thread of its own and the kernel's network stack works on the same
    /// CPUs; on a 2-core box one runtime thread carries more of every device path and of the
    /// router than two (no task moves between threads, no wake-up crosses them: see README).
    pub worker_threads: usize,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            id: "brume".into(),
            data_dir: "./brume-data".into(),
            shutdown_grace_secs: 5,
            max_disk_bytes: 0,
            max_memory_bytes: 0,
            worker_threads: 0,
        }
    }
}

/// Most runtime threads `hub.worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 256;

/// Smallest memory budget the hub runs with.
pub const MIN_MEMORY_BYTES: u64 = 32 * 1024 * 1024;

/// Smallest disk budget the hub runs with.
pub const MIN_DISK_BYTES: u64 = 4 * 1024 * 1024;

impl HubSection {
    /// The disk budget: `max_disk_bytes`, or a quarter of the free space on the data
    /// directory's filesystem (64 GiB when that cannot be read).
    pub fn disk_budget(&self) -> u64 {
        if self.max_disk_bytes > 0 {
            return self.max_disk_bytes;
        }
        match nix::sys::statvfs::statvfs(&self.data_dir) {
            Ok(s) => {
                // The field types differ between platforms.
                #[allow(clippy::unnecessary_cast)]
                let free = (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64);
                (free / 4).max(MIN_DISK_BYTES)
            }
            Err(e) => {
                tracing::warn!(data_dir = %self.data_dir.display(), error = %e, "cannot read the free disk space; assuming 64 GiB for the disk budget");
                64 << 30
            }
        }
    }

    /// The async runtime's threads: `worker_threads`, or one fewer than the CPUs this process
    /// may use (its affinity and cgroup quota count), at least one.
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .saturating_sub(1)
            .max(1)
    }

    /// The memory budget: `max_memory_bytes`, or half of the memory this process may have
    /// (the machine's, or its cgroup's limit when lower; 1 GiB when neither can be read).
    pub fn memory_budget(&self) -> u64 {
        if self.max_memory_bytes > 0 {
            return self.max_memory_bytes;
        }
        match crate::memory::available_memory() {
            Some(total) => (total / 2).max(MIN_MEMORY_BYTES),
            None => {
                tracing::warn!(
                    "cannot read the machine's memory; assuming 1 GiB for the memory budget"
                );
                1 << 30
            }
        }
    }

    /// Checks `[hub]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "hub.id",
                "must be 1-64 letters, digits, `_` or `-`",
            ));
        }
        if self.max_disk_bytes != 0 && self.max_disk_bytes < MIN_DISK_BYTES {
            return Err(invalid(
                "hub.max_disk_bytes",
                "must be 0 (automatic) or at least 4194304 (4 MiB)",
            ));
        }
        if self.max_memory_bytes != 0 && self.max_memory_bytes < MIN_MEMORY_BYTES {
            return Err(invalid(
                "hub.max_memory_bytes",
                "must be 0 (automatic) or at least 33554432 (32 MiB)",
            ));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(invalid(
                "hub.worker_threads",
                "must be 0 (automatic) or at most 256",
            ));
        }
        Ok(())
    }
}
