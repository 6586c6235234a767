//! A "serial port" for simulated devices: a pseudo-terminal pair whose host end is reached through
//! a path of our choosing, a symlink to `/dev/pts/N` (as udev's `/dev/serial/by-id/...` links are).
//!
//! [`PtyPort::plug`] makes a new pty, points the link at its host end and returns the device end;
//! [`PtyPort::unplug`] removes the link. Dropping the device end closes the pty, so the host's reads
//! fail as when a USB adapter is pulled, and its reopen attempts fail until the next `plug`, which
//! gets a new `/dev/pts/N` behind the same path. (`SerialStream::pair` alone cannot model a replug:
//! its path changes every time.)
//!
//! The device end is made close-on-exec: `SerialStream::pair` opens the pty without `O_CLOEXEC`, so
//! every process spawned afterwards (a Python peer, a `brume` binary) would inherit a copy, and
//! dropping the device end would then not close the pty: the host would not see the unplug until
//! those processes exit.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_serial::{SerialPort, SerialStream};

/// A pty-backed port at a fixed path.
#[derive(Debug, Clone)]
pub struct PtyPort {
    link: PathBuf,
}

impl PtyPort {
    /// A port to be reached at `link` once plugged.
    pub fn new(link: impl Into<PathBuf>) -> Self {
        Self { link: link.into() }
    }

    /// The path the host opens.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// Makes a new pty behind the path; returns the device end. The host end is closed here and
    /// opened by the host through the path.
    pub fn plug(&self) -> anyhow::Result<SerialStream> {
        let (device, host) = SerialStream::pair().context("create a pty pair")?;
        close_on_exec(&device)?;
        let target = host.name().context("the pty has no name")?;
        drop(host);
        let file_name = self
            .link
            .file_name()
            .and_then(|n| n.to_str())
            .context("the link path has no file name")?;
        let staging = self
            .link
            .with_file_name(format!(".{file_name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&target, &staging)
            .with_context(|| format!("link {} to {target}", staging.display()))?;
        std::fs::rename(&staging, &self.link)
            .with_context(|| format!("move the link to {}", self.link.display()))?;
        Ok(device)
    }

    /// Removes the path (the device end is closed by dropping it).
    pub fn unplug(&self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// Keeps `fd` out of processes spawned later.
fn close_on_exec(fd: &impl AsRawFd) -> anyhow::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .context("mark the pty close-on-exec")?;
    Ok(())
}
