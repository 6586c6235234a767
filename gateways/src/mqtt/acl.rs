//! Who may publish and subscribe where. Pure functions over the [`Directory`], table-tested.
//!
//! - `things/<id>/...` belongs to thing `<id>`: only a client whose identity is that thing may
//!   publish or subscribe there.
//! - A registered thing's binding topics (`tele/<its name>/SENSOR`, `cmnd/<its name>/POWER`...)
//!   belong to it the same way. The same topic for a name no thing has registered is open.
//! - `$...` topics (`$SYS`...) are closed to clients.
//! - Everything else is the open raw namespace, bridged to WAMP as `mqtt.a.b.c`.
//!
//! A filter is allowed when every topic it could match is allowed: `things/#`, `+/x` and
//! `tele/+/SENSOR` (with that template in use) are refused, `things/<own id>/#` is not.
//!
//! Observers: where no login is required (an open listener, the default on loopback) anyone
//! can read every device topic by connecting without one, so for a client without a login the
//! subscribe rules guard nothing; [`may_observe`] lets it subscribe to any filter but `$` topics
//! (`mosquitto_sub -t '#'` works as it does against mosquitto). Where a login is required, an
//! observer login (a principal with one of `mqtt.observer_roles`) gets the same. A client that
//! logged in as a thing keeps the rules above, and publishing keeps them for everyone: nobody
//! can speak for a thing it is not.
//!
//! A shared subscription `$share/<group>/<filter>` is judged as its `<filter>`.

use device_models::ThingId;

use super::directory::Directory;
use super::topics::{THINGS, TopicTemplate, filters_overlap, is_filter};

/// Why the ACL refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A `$` topic.
    System,
    /// Another thing's topic.
    ForeignThing,
    /// A wildcard where thing ids or device names go.
    WildcardOverThings,
    /// Not a valid filter.
    InvalidFilter,
}

/// The pattern covering every conventional thing topic; level 1 is the thing id.
const THINGS_PATTERN: &str = "things/+/#";

/// Whether `who` may publish to `topic` (a valid topic name).
pub fn may_publish(dir: &Directory, who: Option<&ThingId>, topic: &str) -> Result<(), Denial> {
    if topic.starts_with('$') {
        return Err(Denial::System);
    }
    let mut levels = topic.split('/');
    if levels.next() == Some(THINGS)
        && let Some(id) = levels.next()
    {
        return owned_by(who, id);
    }
    for template in dir.templates() {
        if let Some(value) = template.capture(topic)
            && let Some((owner, _)) = dir.owner(template, value)
        {
            return owned_by(who, owner.as_str());
        }
    }
    Ok(())
}

/// Whether `who` may subscribe to `filter`.
pub fn may_subscribe(dir: &Directory, who: Option<&ThingId>, filter: &str) -> Result<(), Denial> {
    let filter = shared_filter(filter)?;
    if filter.starts_with('$') {
        return Err(Denial::System);
    }
    if !is_filter(filter) {
        return Err(Denial::InvalidFilter);
    }
    if filters_overlap(filter, THINGS_PATTERN) {
        match literal_at(filter, 1) {
            Some(id) => owned_by(who, id)?,
            None => return Err(Denial::WildcardOverThings),
        }
    }
    for template in dir.templates() {
        check_template(dir, who, filter, template)?;
    }
    Ok(())
}

/// Whether an observer (a client of a listener that requires no login) may subscribe to
/// `filter`: any valid filter but `$` topics.
pub fn may_observe(filter: &str) -> Result<(), Denial> {
    let filter = shared_filter(filter)?;
    if filter.starts_with('$') {
        return Err(Denial::System);
    }
    if !is_filter(filter) {
        return Err(Denial::InvalidFilter);
    }
    Ok(())
}

/// The filter a subscription matches with: `f` for `$share/<group>/f` (the group one level
/// without wildcards), the filter itself otherwise.
fn shared_filter(filter: &str) -> Result<&str, Denial> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(filter);
    };
    match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => Ok(inner),
        _ => Err(Denial::InvalidFilter),
    }
}

fn check_template(
    dir: &Directory,
    who: Option<&ThingId>,
    filter: &str,
    template: &TopicTemplate,
) -> Result<(), Denial> {
    if !filters_overlap(filter, &template.filter()) {
        return Ok(());
    }
    let Some(value) = literal_at(filter, template.slot()) else {
        return Err(Denial::WildcardOverThings);
    };
    match dir.owner(template, value) {
        Some((owner, _)) => owned_by(who, owner.as_str()),
        None => Ok(()),
    }
}

/// The filter's level `i` when it is a literal (not `+`, `#` or missing).
fn literal_at(filter: &str, i: usize) -> Option<&str> {
    filter.split('/').nth(i).filter(|l| *l != "+" && *l != "#")
}

fn owned_by(who: Option<&ThingId>, owner: &str) -> Result<(), Denial> {
    if who.is_some_and(|w| w.as_str() == owner) {
        Ok(())
    } else {
        Err(Denial::ForeignThing)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use device_models::TypeCatalog;

    use super::super::binding::MqttBinding;
    use super::super::directory::Registered;
    use super::*;

    fn dir() -> Directory {
        let catalog = TypeCatalog::builtin().unwrap();
        let ty = catalog.get("tasmota_plug").unwrap().clone();
        let binding = MqttBinding::from_type(&ty).unwrap().map(Arc::new);
        let mut dir = Directory::default();
        dir.insert(
            ThingId::new("plug-1").unwrap(),
            Registered {
                ty: ty.clone(),
                binding: binding.clone(),
                name: "kitchen".into(),
            },
        )
        .unwrap();
        dir.insert(
            ThingId::new("plug-2").unwrap(),
            Registered {
                ty,
                binding,
                name: "hall".into(),
            },
        )
        .unwrap();
        dir
    }

    #[test]
    fn publish_table() {
        let dir = dir();
        let a = ThingId::new("dev-a").unwrap();
        let plug = ThingId::new("plug-1").unwrap();
        let table: [(Option<&ThingId>, &str, Result<(), Denial>); 11] = [
            (Some(&a), "things/dev-a/state", Ok(())),
            (Some(&a), "things/dev-a/anything/deeper", Ok(())),
            (Some(&a), "things/dev-b/state", Err(Denial::ForeignThing)),
            (None, "things/dev-a/state", Err(Denial::ForeignThing)),
            (Some(&a), "$SYS/x", Err(Denial::System)),
            (Some(&a), "sensors/room/t", Ok(())),
            (None, "sensors/room/t", Ok(())),
            (Some(&plug), "tele/kitchen/SENSOR", Ok(())),
            (Some(&plug), "tele/hall/SENSOR", Err(Denial::ForeignThing)),
            (None, "cmnd/kitchen/POWER", Err(Denial::ForeignThing)),
            (None, "tele/unregistered/SENSOR", Ok(())),
        ];
        for (who, topic, want) in table {
            assert_eq!(may_publish(&dir, who, topic), want, "{who:?} {topic}");
        }
    }

    #[test]
    fn subscribe_table() {
        let dir = dir();
        let a = ThingId::new("dev-a").unwrap();
        let plug = ThingId::new("plug-1").unwrap();
        let table: [(Option<&ThingId>, &str, Result<(), Denial>); 20] = [
            (Some(&a), "things/dev-a/#", Ok(())),
            (Some(&a), "things/dev-a/actions/+", Ok(())),
            (Some(&a), "things/+/state", Err(Denial::WildcardOverThings)),
            (Some(&a), "things/#", Err(Denial::WildcardOverThings)),
            (Some(&a), "#", Err(Denial::WildcardOverThings)),
            (Some(&a), "+/dev-a/state", Ok(())),
            (Some(&a), "+/+/state", Err(Denial::WildcardOverThings)),
            (Some(&a), "things/dev-b/#", Err(Denial::ForeignThing)),
            (None, "sensors/#", Ok(())),
            (None, "things", Ok(())),
            (None, "$SYS/#", Err(Denial::System)),
            (None, "a/#/b", Err(Denial::InvalidFilter)),
            (Some(&plug), "cmnd/kitchen/#", Ok(())),
            (Some(&plug), "cmnd/+/POWER", Err(Denial::WildcardOverThings)),
            (Some(&plug), "cmnd/hall/POWER", Err(Denial::ForeignThing)),
            (None, "cmnd/nobody/POWER", Ok(())),
            (None, "$share/g/sensors/#", Ok(())),
            (Some(&a), "$share/g/things/dev-a/#", Ok(())),
            (
                Some(&a),
                "$share/g/things/+/state",
                Err(Denial::WildcardOverThings),
            ),
            (None, "$share/+/sensors", Err(Denial::InvalidFilter)),
        ];
        for (who, filter, want) in table {
            assert_eq!(may_subscribe(&dir, who, filter), want, "{who:?} {filter}");
        }
    }

    #[test]
    fn observe_table() {
        let table: [(&str, Result<(), Denial>); 8] = [
            ("#", Ok(())),
            ("+/+", Ok(())),
            ("things/+/state", Ok(())),
            ("things/dev-b/#", Ok(())),
            ("$SYS/#", Err(Denial::System)),
            ("$share/g/#", Ok(())),
            ("$share//#", Err(Denial::InvalidFilter)),
            ("a/#/b", Err(Denial::InvalidFilter)),
        ];
        for (filter, want) in table {
            assert_eq!(may_observe(filter), want, "{filter}");
        }
    }
}
