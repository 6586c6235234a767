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
