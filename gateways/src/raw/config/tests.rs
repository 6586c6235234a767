//! Parsing and validation of the `[raw]` section.

use super::*;

/// The example in the module docs, read from the source so that the two cannot drift apart.
fn documented_example() -> String {
    let source = include_str!("../config.rs");
    source
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| !l.starts_with("```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    raw: RawConfig,
}

fn parse(text: &str) -> Result<RawConfig, toml::de::Error> {
    toml::from_str::<Document>(text).map(|d| d.raw)
}

fn catalog() -> TypeCatalog {
    firmware_sim::raw::types::catalog().unwrap()
}

#[test]
fn the_documented_example_parses_and_validates() {
    let example = documented_example();
    assert!(example.contains("[[raw.serial]]"), "{example}");
    let config = parse(&example).unwrap();
    let prepared = config.prepare(&catalog()).unwrap();
    let names: Vec<&str> = prepared.iter().map(PreparedListener::name).collect();
    assert_eq!(
        names,
        ["beacons", "tcp:127.0.0.1:7001", "serial:/dev/ttyUSB0"]
    );
    let PreparedListener::Udp(udp) = &prepared[0] else {
        panic!("udp first");
    };
    let mapped = |a: &str| udp.peers.lookup(a.parse().unwrap()).map(ThingId::as_str);
    assert_eq!(mapped("192.0.2.10:1234"), Some("beacon-10"));
    assert_eq!(mapped("192.0.2.11:5000"), Some("beacon-11"));
    assert_eq!(mapped("192.0.2.11:5001"), None);
    let PreparedListener::Serial(serial) = &prepared[2] else {
        panic!("serial last");
    };
    assert_eq!(serial.common.engine.max_in_flight, 1, "half duplex");
    // Defaults fill every key left out, and the config round-trips.
    let text = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<RawConfig>(&text).unwrap(), config);
    assert_eq!(config.tcp[0].write_timeout_ms, 5_000);
}

#[test]
fn unknown_keys_are_refused() {
    let err = parse("[[raw.udp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"x\"\nport = 3\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `port`"), "{err}");
    let err = parse("[[raw.serial]]\npath = \"/dev/x\"\nthing_type = \"x\"\nparity = \"mark\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("mark"), "{err}");
}

fn problem(text: &str) -> String {
    parse(text)
        .unwrap()
        .prepare(&catalog())
        .unwrap_err()
        .to_string()
}

#[test]
fn validation_names_the_key_and_the_reason() {
    let cases = [
        (
            "[[raw.udp]]\naddress = \"0.0.0.0:1\"\nthing_type = \"udp_beacon\"",
            "raw.udp[0].address: raw devices cannot authenticate",
        ),
        (
            "[[raw.tcp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"udp_beacon\"",
            "raw.tcp[0].thing_type: type `udp_beacon` uses the datagram framing",
        ),
        (
            "[[raw.tcp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"nope\"",
            "raw.tcp[0].thing_type: no thing type `nope`",
        ),
        (
            "[[raw.udp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"thermostat\"",
            "raw.udp[0].thing_type: thing type `thermostat` has no [bindings.frame]",
        ),
        (
            "[[raw.udp]]\naddress = \"localhost\"\nthing_type = \"udp_beacon\"",
            "raw.udp[0].address: `localhost` is not an `ip:port` address",
        ),
        (
            "[[raw.udp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"udp_beacon\"\npeers = { \"10.0.0.1\" = \"a/b\" }",
            "raw.udp[0].peers.\"10.0.0.1\": `a/b` is not a thing id",
        ),
        (
            "[[raw.udp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"udp_beacon\"\npeers = { \"host\" = \"a\" }",
            "raw.udp[0].peers.\"host\": not an `ip` or `ip:port`",
        ),
        (
            "[[raw.tcp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"tcp_thermostat\"\nmax_bad_frames = 0",
            "raw.tcp[0].max_bad_frames: must be at least 1",
        ),
        (
            "[[raw.serial]]\npath = \"/dev/x\"\nthing_type = \"serial_meter\"\ndata_bits = 9",
            "raw.serial[0].data_bits: must be 5, 6, 7 or 8",
        ),
        (
            "[[raw.serial]]\npath = \"/dev/x\"\nthing_type = \"serial_meter\"\nreopen_max_ms = 10",
            "raw.serial[0].reopen_max_ms: must be at least reopen_min_ms",
        ),
        (
            "[[raw.serial]]\npath = \"/dev/x\"\nthing_type = \"serial_meter\"\n[[raw.serial]]\npath = \"/dev/x\"\nthing_type = \"serial_meter\"",
            "two listeners are named `serial:/dev/x`",
        ),
    ];
    for (text, expected) in cases {
        let got = problem(text);
        assert!(
            got.contains(expected),
            "{text}\n  gave: {got}\n  want: {expected}"
        );
    }
}

#[test]
fn a_broken_frame_binding_is_reported_with_its_key() {
    let mut catalog = catalog();
    let ty = device_models::ThingType::from_toml(
        r#"
        id = "broken"
        title = "Broken"
        version = "1"
        [bindings.frame]
        framing = { kind = "fixed", length = 0 }
        layout = { kind = "json" }
        "#,
        "broken.toml",
    )
    .unwrap();
    catalog
        .insert(ty, device_models::TypeOrigin::Builtin)
        .unwrap();
    let config = parse("[[raw.udp]]\naddress = \"127.0.0.1:1\"\nthing_type = \"broken\"").unwrap();
    let err = config.prepare(&catalog).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "raw.udp[0].thing_type: thing type `broken`: bindings.frame.framing.length"
        ),
        "{err}"
    );
}
