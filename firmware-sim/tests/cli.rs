//! The `brume-sim` binary's commands start and report (not a timed test: the figures are not
//! checked, only that the command runs to its report).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn coap_load_runs_against_its_in_process_gateway_and_reports() {
    let out = Command::new(env!("CARGO_BIN_EXE_brume-sim"))
        .args(["coap-load", "--seconds", "1", "--devices", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "brume-sim coap-load failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("confirmable POSTs/s"), "{stdout}");
    assert!(stdout.contains(" 0 refused"), "{stdout}");
}

#[test]
fn raw_types_writes_the_simulated_devices_thing_types() {
    let dir = std::env::temp_dir().join(format!("brume-sim-types-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_brume-sim"))
        .args(["raw", "types", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let written: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "brume-sim raw types failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        written.iter().any(|f| f.starts_with("udp_beacon")),
        "{written:?}"
    );
}
