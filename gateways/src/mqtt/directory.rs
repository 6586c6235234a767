//! [`Directory`]: the things the hub told the gateway about (type, binding, device name), and
//! which binding topics are therefore reserved for whom.
//!
//! It is bounded by the hub's registry: entries come and go only through
//! [`MqttHandle::register`](super::MqttHandle::register) and
//! [`MqttHandle::unregister`](super::MqttHandle::unregister), never from device traffic.

use std::collections::HashMap;
use std::sync::Arc;

use device_models::{ThingId, ThingType};

use super::binding::MqttBinding;
use super::topics::{Placeholder, TopicTemplate};

/// One registered thing.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Its type, to check what it reports.
    pub ty: Arc<ThingType>,
    /// The type's compiled `[bindings.mqtt]`, if it has one.
    pub binding: Option<Arc<MqttBinding>>,
    /// The device's own name for `{name}` in binding topics.
    pub name: String,
}

/// Registered things by id and by device name, plus the binding templates in use.
#[derive(Debug, Default)]
pub struct Directory {
    things: HashMap<ThingId, Registered>,
    names: HashMap<String, ThingId>,
    /// Templates of all registered bindings, with how many things use each.
    templates: HashMap<TopicTemplate, usize>,
}

/// A device name already used by another thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken {
    /// The name.
    pub name: String,
    /// The thing that has it.
    pub owner: ThingId,
}

impl Directory {
    /// The registration of a thing.
    pub fn get(&self, id: &ThingId) -> Option<&Registered> {
        self.things.get(id)
    }

    /// Adds or replaces a thing's registration.
    pub fn insert(&mut self, id: ThingId, entry: Registered) -> Result<(), NameTaken> {
        if let Some(owner) = self.names.get(&entry.name)
            && owner != &id
        {
            return Err(NameTaken {
                name: entry.name,
                owner: owner.clone(),
            });
        }
        self.remove(&id);
        if let Some(binding) = &entry.binding {
            for t in binding.templates() {
                *self.templates.entry(t.clone()).or_insert(0) += 1;
            }
        }
        self.names.insert(entry.name.clone(), id.clone());
        self.things.insert(id, entry);
        Ok(())
    }

    /// Forgets a thing.
    pub fn remove(&mut self, id: &ThingId) -> Option<Registered> {
        let old = self.things.remove(id)?;
        self.names.remove(&old.name);
        if let Some(binding) = &old.binding {
            for t in binding.templates() {
                if let Some(n) = self.templates.get_mut(t) {
                    *n -= 1;
                    if *n == 0 {
                        self.templates.remove(t);
                    }
                }
            }
        }
        Some(old)
    }

    /// Number of registered things.
    pub fn len(&self) -> usize {
        self.things.len()
    }

    /// True when no thing is registered.
    pub fn is_empty(&self) -> bool {
        self.things.is_empty()
    }

    /// Binding templates in use.
    pub fn templates(&self) -> impl Iterator<Item = &TopicTemplate> {
        self.templates.keys()
    }

    /// The registered thing whose binding uses `template` with `value` in its placeholder.
    pub fn owner(&self, template: &TopicTemplate, value: &str) -> Option<(&ThingId, &Registered)> {
        let id = match template.placeholder() {
            Placeholder::Name => self.names.get(value)?,
            Placeholder::Id => self.things.get_key_value(value)?.0,
        };
        let entry = self.things.get(id)?;
        entry
            .binding
            .as_ref()?
            .templates()
            .any(|t| t == template)
            .then_some((id, entry))
    }

    /// The thing a bound topic belongs to, if any.
    pub fn bound_owner(&self, topic: &str) -> Option<(&ThingId, &Registered)> {
        self.templates()
            .find_map(|t| t.capture(topic).and_then(|v| self.owner(t, v)))
    }
}
