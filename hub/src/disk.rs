//! The disk reserve: a file of a few MiB kept in the data directory so that, when the disk
//! fills up for real (another program, a log that grew), the things database still has room
//! to commit provisioning, desired state and reports, and the uplink queue room to shed its
//! oldest telemetry and checkpoint.
//!
//! The first write that fails for lack of space releases the reserve (deletes the file); the
//! uplink queue then stops growing (see `uplink::queue`). Once the filesystem has room again
//! (twice the reserve free), the reserve is written anew.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The reserve's file name in the data directory.
pub const RESERVE_FILE: &str = "disk-reserve";

/// The largest reserve: enough for many commits of the things database and a checkpoint.
pub const MAX_RESERVE_BYTES: u64 = 4 * 1024 * 1024;

/// The reserve, held (the file exists) or released.
#[derive(Debug)]
pub struct DiskReserve {
    path: PathBuf,
    bytes: u64,
    held: Mutex<bool>,
    releases: AtomicU64,
}

impl DiskReserve {
    /// A reserve of `bytes` in `data_dir`, written now if the filesystem has room for four times
    /// as much (an existing reserve file is kept).
    pub fn new(data_dir: &Path, bytes: u64) -> DiskReserve {
        let reserve = DiskReserve::existing(data_dir, bytes);
        reserve.restore_if_room();
        reserve
    }

    /// The reserve of `bytes` in `data_dir` as it is on disk, writing nothing: held if its file
    /// is there. [`Self::restore_if_room`] writes it (the hub does so off its start path).
    pub fn existing(data_dir: &Path, bytes: u64) -> DiskReserve {
        let path = data_dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes);
        DiskReserve {
            path,
            bytes,
            held: Mutex::new(held),
            releases: AtomicU64::new(0),
        }
    }

    /// The reserve's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the reserve's file is on disk.
    pub fn held(&self) -> bool {
        *self.lock()
    }

    /// Times the reserve was released since start.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the reserve (the disk is full): returns whether space was freed.
    pub fn release(&self) -> bool {
        let mut held = self.lock();
        if !*held {
            return false;
        }
        *held = false;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                self.releases.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    reserve = self.bytes,
                    path = %self.path.display(),
                    "the disk is full: released the disk reserve; the uplink queue sheds its oldest telemetry to stay within its file"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "the disk is full and the disk reserve cannot be released");
                false
            }
        }
    }

    /// Writes the reserve again if it is released and the filesystem has room for four times
    /// as much; returns whether it is held.
    pub fn restore_if_room(&self) -> bool {
        let mut held = self.lock();
        if *held {
            return true;
        }
        if free_bytes(self.path.parent().unwrap_or(Path::new("."))).unwrap_or(0) < 4 * self.bytes {
            return false;
        }
        match write_zeros(&self.path, self.bytes) {
            Ok(()) => {
                *held = true;
                if self.releases() > 0 {
                    tracing::info!(
                        reserve = self.bytes,
                        "the disk has room again: disk reserve restored"
                    );
                }
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                tracing::warn!(error = %e, path = %self.path.display(), "cannot write the disk reserve");
                false
            }
        }
    }
}

/// Bytes free for unprivileged use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    // The field types differ between platforms.
    #[allow(clippy::unnecessary_cast)]
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// Writes `bytes` zero bytes to `path` (real blocks, not a sparse file) and syncs them.
fn write_zeros(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_once_and_restored_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = DiskReserve::new(dir.path(), 64 * 1024);
        let file = dir.path().join(RESERVE_FILE);
        assert!(r.held());
        assert_eq!(
            std::fs::metadata(&file).map(|m| m.len()).ok(),
            Some(64 * 1024)
        );
        assert!(r.release());
        assert!(!r.release(), "released once");
        assert!(!file.exists());
        assert_eq!(r.releases(), 1);
        assert!(r.restore_if_room());
        assert!(file.exists());
        // A restart finds the reserve in place.
        assert!(DiskReserve::new(dir.path(), 64 * 1024).held());
    }
}
