//! [`RegistryCredentials`]: the gateways' [`DeviceCredentials`] check, answered from the things
//! registry's salted secret hashes.
//!
//! Rule for shared state: a **short `RwLock`**, never held across an `.await`. The service task
//! (the registry's owner) takes the write lock to add or remove one thing, at provisioning and
//! deletion only; gateways take the read lock on their accept path. A lock fits better than a
//! message to the service here because the gateway interface asks for a synchronous answer.

use std::collections::HashMap;
use std::sync::RwLock;

use device_models::ThingId;
use gateways::{CredentialCheck, DeviceCredentials};

use super::secret::SecretHash;

/// Device secrets by thing, as the registry holds them.
#[derive(Debug)]
pub struct RegistryCredentials {
    /// `None` for a thing without a secret (auto-provisioned).
    secrets: RwLock<HashMap<ThingId, Option<SecretHash>>>,
    /// Whether unknown devices are admitted (`provisioning = "auto"`).
    admit_unknown: bool,
}

impl RegistryCredentials {
    pub fn new(admit_unknown: bool) -> RegistryCredentials {
        RegistryCredentials {
            secrets: RwLock::new(HashMap::new()),
            admit_unknown,
        }
    }

    /// Records a thing's secret hash (or that it has none).
    pub fn insert(&self, thing: ThingId, secret: Option<SecretHash>) {
        if let Ok(mut m) = self.secrets.write() {
            m.insert(thing, secret);
        }
    }

    /// Forgets a thing.
    pub fn remove(&self, thing: &ThingId) {
        if let Ok(mut m) = self.secrets.write() {
            m.remove(thing);
        }
    }
}

impl DeviceCredentials for RegistryCredentials {
    /// A thing with a secret must present it; a thing provisioned without one (automatically) is
    /// admitted; an unknown thing is admitted only under automatic provisioning.
    fn check(&self, thing: &ThingId, secret: &str) -> CredentialCheck {
        let Ok(m) = self.secrets.read() else {
            return CredentialCheck::UnknownThing;
        };
        match m.get(thing) {
            Some(Some(hash)) if hash.verify(secret) => CredentialCheck::Valid,
            Some(Some(_)) => CredentialCheck::Invalid,
            Some(None) => CredentialCheck::Valid,
            None if self.admit_unknown => CredentialCheck::Valid,
            None => CredentialCheck::UnknownThing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::things::secret;

    #[test]
    fn checks_follow_the_registry_and_the_policy() {
        let id = |s: &str| ThingId::new(s).unwrap();
        let secret = secret::generate();
        let explicit = RegistryCredentials::new(false);
        explicit.insert(id("a"), Some(SecretHash::new(&secret)));
        explicit.insert(id("auto"), None);
        assert_eq!(
            explicit.check(&id("a"), secret.expose()),
            CredentialCheck::Valid
        );
        assert_eq!(explicit.check(&id("a"), "nope"), CredentialCheck::Invalid);
        assert_eq!(explicit.check(&id("auto"), ""), CredentialCheck::Valid);
        assert_eq!(explicit.check(&id("b"), "x"), CredentialCheck::UnknownThing);
        explicit.remove(&id("a"));
        assert_eq!(
            explicit.check(&id("a"), secret.expose()),
            CredentialCheck::UnknownThing
        );
        let auto = RegistryCredentials::new(true);
        assert_eq!(auto.check(&id("b"), "x"), CredentialCheck::Valid);
    }
}
