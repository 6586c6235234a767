//! The naming rule for thing type ids and for property, action, event and binding names.
//!
//! These names end up as one component of a WAMP URI (`brume.thing.<id>.action.<name>`) and as one
//! MQTT topic level (`things/<id>/events/<name>`), so they must be valid in both: the strict WAMP
//! component alphabet (`[a-z0-9_]`), which is also free of MQTT's `/`, `+` and `#`.

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// True when `name` is 1 to [`MAX_NAME_LEN`] characters of `a-z`, `0-9` and `_`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule() {
        let good = [
            "a",
            "setpoint",
            "temperature_sensor",
            "x1",
            "_",
            &"a".repeat(64),
        ];
        let bad = [
            "",
            "Setpoint",
            "set-point",
            "set.point",
            "set/point",
            "a+",
            "#",
            "é",
            " a",
            &"a".repeat(65),
        ];
        for name in good {
            assert!(is_valid_name(name), "{name:?} should be valid");
        }
        for name in bad {
            assert!(!is_valid_name(name), "{name:?} should be invalid");
        }
    }
}
