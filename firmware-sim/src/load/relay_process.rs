//! The relay run as its own process (`brume-sim relay`), so it does not share the generator's
//! CPU time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

pub struct RelayProcess {
    child: Child,
    pub url: String,
}

impl RelayProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `brume-sim relay` (this executable) and reads the URL it prints.
pub fn start() -> anyhow::Result<RelayProcess> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("relay")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if read.is_err() || !line.starts_with("rs://") {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("relay did not start: {line:?}");
    }
    Ok(RelayProcess {
        child,
        url: line.trim().to_owned(),
    })
}
