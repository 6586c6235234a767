//! `[bindings.coap]`: how the resources of a device that is itself a CoAP server map onto its
//! thing type, read from the type file (or given inline in a device's gateway config).
//!
//! ```toml
//! [bindings.coap]
//! format = "json"                       # payload format of writes and action inputs: json, cbor, text
//! state_path = "/state"                 # optional: one resource holding an object of state values
//!
//! [bindings.coap.properties.temperature]
//! path = "/sensors/temperature"         # observed; its payload is the property's value
//!
//! [bindings.coap.properties.setpoint]
//! path = "/config/setpoint"             # observed, and written with PUT on a desired value
//!
//! [bindings.coap.actions.boost]
//! path = "/actions/boost"               # POST with the input; the response body is the output
//! ```
//!
//! Every path listed is observed (RFC 7641); a device that answers without Observe is polled
//! instead, and a lapsed observation is re-registered (the client engine does both). Reads accept
//! JSON, CBOR and text whatever `format` says: the notification's Content-Format decides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::payload::PayloadFormat;

/// The CoAP binding of a thing type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapBinding {
    /// Encoding of what the hub sends (PUT values, action inputs).
    #[serde(default)]
    pub format: PayloadFormat,
    /// A resource whose representation is an object of several state values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_path: Option<String>,
    /// Per property, the resource holding its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, ResourceBinding>,
    /// Per action, the resource a POST invokes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, ResourceBinding>,
}

/// One resource of the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceBinding {
    /// Absolute Uri-Path on the device (`/sensors/temperature`), optionally with `?query`.
    pub path: String,
}

/// Why a binding is not usable.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The table does not have the binding's shape.
    #[error("bindings.coap.{key}: {source}")]
    Parse {
        /// Where in the table.
        key: String,
        /// What serde said.
        #[source]
        source: toml::de::Error,
    },
    /// A path does not start with `/`.
    #[error("bindings.coap.{key}: path {path:?} must start with '/'")]
    RelativePath {
        /// Which key.
        key: String,
        /// The path given.
        path: String,
    },
    /// Nothing to observe and nothing to invoke.
    #[error("bindings.coap: no state_path, properties or actions")]
    Empty,
}

impl CoapBinding {
    /// Reads a `[bindings.coap]` table, naming the key of the first problem, and validates it.
    pub fn from_toml(table: &toml::Table) -> Result<Self, BindingError> {
        let value = toml::Value::Table(table.clone());
        let binding: Self =
            serde_path_to_error::deserialize(value).map_err(|err| BindingError::Parse {
                key: err.path().to_string(),
                source: err.into_inner(),
            })?;
        binding.validate()?;
        Ok(binding)
    }

    /// Checks paths and that the binding maps something.
    pub fn validate(&self) -> Result<(), BindingError> {
        let check = |key: String, path: &str| {
            if path.starts_with('/') {
                Ok(())
            } else {
                Err(BindingError::RelativePath {
                    key,
                    path: path.to_owned(),
                })
            }
        };
        if let Some(p) = &self.state_path {
            check("state_path".into(), p)?;
        }
        for (name, r) in &self.properties {
            check(format!("properties.{name}.path"), &r.path)?;
        }
        for (name, r) in &self.actions {
            check(format!("actions.{name}.path"), &r.path)?;
        }
        if self.state_path.is_none() && self.properties.is_empty() && self.actions.is_empty() {
            return Err(BindingError::Empty);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn reads_the_documented_shape() {
        let b = CoapBinding::from_toml(&table(
            r#"
            format = "cbor"
            state_path = "/state"
            properties.temperature.path = "/sensors/temperature"
            actions.boost.path = "/actions/boost"
            "#,
        ))
        .unwrap();
        assert_eq!(b.format, PayloadFormat::Cbor);
        assert_eq!(b.properties["temperature"].path, "/sensors/temperature");
        assert_eq!(b.actions["boost"].path, "/actions/boost");
    }

    #[test]
    fn names_the_bad_key() {
        let e = CoapBinding::from_toml(&table("properties.t.paht = \"/x\"")).unwrap_err();
        assert!(e.to_string().contains("properties.t"), "{e}");
        let e = CoapBinding::from_toml(&table("properties.t.path = \"x\"")).unwrap_err();
        assert!(matches!(e, BindingError::RelativePath { .. }), "{e}");
        let e = CoapBinding::from_toml(&table("format = \"json\"")).unwrap_err();
        assert!(matches!(e, BindingError::Empty), "{e}");
    }
}
