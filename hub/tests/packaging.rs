//! The install files: the systemd unit passes `systemd-analyze verify` (where systemd is
//! installed) with the paths pointed at this build, and the packaged config is valid.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn packaging() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging"))
}

#[test]
fn the_packaged_config_is_valid_and_keeps_data_in_var_lib() {
    let file = packaging().join("brume.toml");
    let config = hub::config::Config::load(&file).unwrap();
    assert_eq!(config.hub.data_dir, Path::new("/var/lib/brume"));
    let out = Command::new(env!("CARGO_BIN_EXE_brume"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(packaging().join("brume.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/brume run --config /etc/brume/brume.toml",
        "Restart=on-failure",
        "StateDirectory=brume",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // No systemd on this machine (a container without it): the text checks above stand.
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let local = unit
        .replace("/usr/bin/brume", env!("CARGO_BIN_EXE_brume"))
        .replace(
            "/etc/brume/brume.toml",
            &packaging().join("brume.toml").display().to_string(),
        );
    let path = dir.path().join("brume.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
