//! The WAMP URIs of Brume's things API, in one place: the hub registers and publishes them and the
//! Thing Descriptions ([`crate::td`]) point at them. They are public interface: never rename.

/// The things registry's procedures, topics and errors (`brume.things.*`, `brume.thing.<id>.*`,
/// `brume.types.*`, `brume.error.*`).
pub mod things {
    pub const LIST: &str = "brume.things.list";
    pub const GET: &str = "brume.things.get";
    pub const PROVISION: &str = "brume.things.provision";
    pub const DELETE: &str = "brume.things.delete";
    pub const UPDATE_INFO: &str = "brume.things.update_info";
    pub const SET: &str = "brume.things.set";
    pub const DESCRIBE: &str = "brume.things.describe";
    pub const TYPES_LIST: &str = "brume.types.list";
    pub const TYPES_GET: &str = "brume.types.get";
    /// The things service's counters, with every loss by cause.
    pub const STATS: &str = "brume.things.stats";

    /// The prefix of every `brume.things.*` procedure and topic.
    pub const PREFIX: &str = "brume.things.";
    pub const ON_PROVISION: &str = "brume.things.on_provision";
    pub const ON_DELETE: &str = "brume.things.on_delete";
    pub const ON_ONLINE: &str = "brume.things.on_online";
    pub const ON_OFFLINE: &str = "brume.things.on_offline";
    /// The prefix of every lifecycle topic above.
    pub const LIFECYCLE_PREFIX: &str = "brume.things.on_";

    /// The prefix of one thing's URIs: `brume.thing.<id>.…`.
    pub const THING_PREFIX: &str = "brume.thing.";
    /// The wildcard registration that serves every thing's actions.
    pub const ACTION_PATTERN: &str = "brume.thing..action.";

    /// `brume.thing.<id>.state`: a thing's reported state. Built on every state change, so
    /// joined directly rather than through `format!`.
    pub fn state_topic(thing: &str) -> String {
        const SUFFIX: &str = ".state";
        let mut topic = String::with_capacity(THING_PREFIX.len() + thing.len() + SUFFIX.len());
        topic.push_str(THING_PREFIX);
        topic.push_str(thing);
        topic.push_str(SUFFIX);
        topic
    }

    /// `brume.thing.<id>.action.<name>`: a thing's action, served by [`ACTION_PATTERN`].
    pub fn action_uri(thing: impl std::fmt::Display, action: impl std::fmt::Display) -> String {
        format!("{THING_PREFIX}{thing}.action.{action}")
    }

    /// `brume.thing.<id>.event.<name>`: an event a thing emitted.
    pub fn event_topic(thing: impl std::fmt::Display, event: impl std::fmt::Display) -> String {
        format!("{THING_PREFIX}{thing}.event.{event}")
    }

    /// The authid of the things service's own session.
    pub const SERVICE_AUTHID: &str = "brume.things";

    /// The thing id is not provisioned.
    pub const NO_SUCH_THING: &str = "brume.error.no_such_thing";
    /// The thing's type has no action of that name.
    pub const NO_SUCH_ACTION: &str = "brume.error.no_such_action";
    /// No thing type has that id.
    pub const NO_SUCH_TYPE: &str = "brume.error.no_such_type";
    /// The thing is known to be offline (or no gateway carries it).
    pub const THING_OFFLINE: &str = "brume.error.thing_offline";
    /// The device answered an action with an error, or with an output its type forbids.
    pub const ACTION_FAILED: &str = "brume.error.action_failed";
    /// The hub's database could not hold the change (disk full, I/O error), even after retries:
    /// nothing was acknowledged, so the caller may try again.
    pub const WRITE_FAILED: &str = "brume.error.write_failed";
}
