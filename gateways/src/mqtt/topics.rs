//! Topic vocabulary: the default device conventions (`things/<id>/...`), binding topic templates
//! (`tele/{name}/SENSOR`), and the matching rules the ACL needs (topic names, filters, overlap).

use std::fmt;

use super::error::TemplateError;

/// First level of every conventional thing topic.
pub const THINGS: &str = "things";

/// What a `things/<id>/<...>` topic carries, per the device conventions (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThingTopic<'a> {
    /// `state`: reported values, device → hub.
    State,
    /// `events/<name>`: a device event, device → hub.
    Event(&'a str),
    /// `info`: info properties, device → hub.
    Info,
    /// `status`: `online` / `offline` (retained; the last will says `offline`), device → hub.
    Status,
    /// `replies`: answers to actions, device → hub.
    Replies,
    /// `desired`: desired values (retained), hub → device.
    Desired,
    /// `actions/<name>`: an action invocation, hub → device.
    Action(&'a str),
    /// Anything else under the thing's prefix.
    Other(&'a str),
}

/// Splits `things/<id>/<rest>` into the id and what the rest means; `None` for topics outside
/// `things/` or without a rest. The id is not checked here.
pub fn parse_thing_topic(topic: &str) -> Option<(&str, ThingTopic<'_>)> {
    let rest = topic.strip_prefix(THINGS)?.strip_prefix('/')?;
    let (id, rest) = rest.split_once('/')?;
    let kind = match rest.split_once('/') {
        None => match rest {
            "state" => ThingTopic::State,
            "info" => ThingTopic::Info,
            "status" => ThingTopic::Status,
            "replies" => ThingTopic::Replies,
            "desired" => ThingTopic::Desired,
            other => ThingTopic::Other(other),
        },
        Some(("events", name)) if !name.contains('/') => ThingTopic::Event(name),
        Some(("actions", name)) if !name.contains('/') => ThingTopic::Action(name),
        Some(_) => ThingTopic::Other(rest),
    };
    Some((id, kind))
}

/// The conventional topic of one thing: `things/<id>/<suffix>`.
pub fn thing_topic(id: &str, suffix: &str) -> String {
    format!("{THINGS}/{id}/{suffix}")
}

/// True for a topic a client may publish to: not empty, no wildcard, no NUL.
pub fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// True for a valid subscription filter: `#` only as a whole last level, `+` only as whole levels.
pub fn is_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        let wild = level.contains(['+', '#']);
        !wild || (level.len() == 1 && (*level == "+" || (*level == "#" && i == last)))
    })
}

/// True when some topic matches both filters (a topic name is a filter without wildcards).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => continue,
            (Some(_), Some(_)) => return false,
        }
    }
}

/// Which placeholder a template's variable level holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{id}`: the thing id.
    Id,
    /// `{name}`: the device's own name in its firmware (Tasmota's topic), the thing id unless
    /// registered otherwise.
    Name,
}

/// A binding topic such as `tele/{name}/SENSOR`: literal levels and exactly one placeholder level,
/// which tells the device apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicTemplate {
    levels: Vec<Level>,
    slot: usize,
    placeholder: Placeholder,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Level {
    Literal(String),
    Slot,
}

impl TopicTemplate {
    /// Parses a template; placeholders are whole levels.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if !is_topic_name(text) || text.starts_with('$') {
            return Err(TemplateError::InvalidTopic(text.to_owned()));
        }
        if text.split('/').next() == Some(THINGS) {
            return Err(TemplateError::ThingNamespace(text.to_owned()));
        }
        let mut slot = None;
        let mut levels = Vec::new();
        for (i, level) in text.split('/').enumerate() {
            let found = match level {
                "{id}" => Some(Placeholder::Id),
                "{name}" => Some(Placeholder::Name),
                l if l.contains(['{', '}']) => {
                    return Err(TemplateError::BadPlaceholder(text.to_owned()));
                }
                _ => None,
            };
            match found {
                Some(p) => {
                    if slot.is_some() {
                        return Err(TemplateError::PlaceholderCount(text.to_owned()));
                    }
                    slot = Some((i, p));
                    levels.push(Level::Slot);
                }
                None => levels.push(Level::Literal(level.to_owned())),
            }
        }
        let (slot, placeholder) = slot.ok_or(TemplateError::PlaceholderCount(text.to_owned()))?;
        Ok(Self {
            levels,
            slot,
            placeholder,
        })
    }

    /// The placeholder kind.
    pub fn placeholder(&self) -> Placeholder {
        self.placeholder
    }

    /// Index of the placeholder level.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The value of the placeholder level when `topic` fits the template.
    pub fn capture<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut captured = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(l) if l == part => {}
                Level::Literal(_) => return None,
                Level::Slot if part.is_empty() => return None,
                Level::Slot => captured = Some(part),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        captured
    }

    /// The topic for one device.
    pub fn render(&self, value: &str) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Slot => value,
            })
            .collect();
        parts.join("/")
    }

    /// The template as a filter, the placeholder as `+`.
    pub fn filter(&self) -> String {
        self.render("+")
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.render(match self.placeholder {
            Placeholder::Id => "{id}",
            Placeholder::Name => "{name}",
        });
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_topics() {
        let table = [
            ("things/a/state", Some(("a", ThingTopic::State))),
            ("things/a/info", Some(("a", ThingTopic::Info))),
            ("things/a/status", Some(("a", ThingTopic::Status))),
            ("things/a/replies", Some(("a", ThingTopic::Replies))),
            ("things/a/desired", Some(("a", ThingTopic::Desired))),
            (
                "things/a/events/fault",
                Some(("a", ThingTopic::Event("fault"))),
            ),
            (
                "things/a/actions/boost",
                Some(("a", ThingTopic::Action("boost"))),
            ),
            (
                "things/a/events/x/y",
                Some(("a", ThingTopic::Other("events/x/y"))),
            ),
            ("things/a/foo", Some(("a", ThingTopic::Other("foo")))),
            ("things/a/events/", Some(("a", ThingTopic::Event("")))),
            ("things/a", None),
            ("things", None),
            ("thingsx/a/state", None),
            ("other/a/state", None),
        ];
        for (topic, want) in table {
            assert_eq!(parse_thing_topic(topic), want, "{topic}");
        }
    }

    #[test]
    fn names_and_filters() {
        for good in ["a", "a/b", "/", "a//b", "$SYS/x"] {
            assert!(is_topic_name(good), "{good}");
        }
        for bad in ["", "a/+", "#", "a\0"] {
            assert!(!is_topic_name(bad), "{bad:?}");
        }
        for good in ["#", "+", "a/#", "a/+/b", "+/+", "a"] {
            assert!(is_filter(good), "{good}");
        }
        for bad in ["", "a#", "a/#/b", "a/b+", "++", "a/#/#"] {
            assert!(!is_filter(bad), "{bad}");
        }
    }

    #[test]
    fn overlap() {
        let table = [
            ("#", "things/+/#", true),
            ("+/a", "things/+/#", true),
            ("things", "things/+/#", false),
            ("things/a", "things/+/#", true),
            ("things/a/state", "things/b/state", false),
            ("things/+/state", "things/b/#", true),
            ("tele/#", "tele/+/SENSOR", true),
            ("tele/x/STATE", "tele/+/SENSOR", false),
            ("tele/x/SENSOR/y", "tele/+/SENSOR", false),
            ("tele", "tele/+/SENSOR", false),
            ("a/b", "a/b", true),
            ("a/b/#", "a/b", true),
        ];
        for (a, b, want) in table {
            assert_eq!(filters_overlap(a, b), want, "{a} vs {b}");
            assert_eq!(filters_overlap(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn templates() {
        let t = TopicTemplate::parse("tele/{name}/SENSOR").unwrap();
        assert_eq!(t.placeholder(), Placeholder::Name);
        assert_eq!(t.slot(), 1);
        assert_eq!(t.capture("tele/plug1/SENSOR"), Some("plug1"));
        assert_eq!(t.capture("tele/plug1/STATE"), None);
        assert_eq!(t.capture("tele//SENSOR"), None);
        assert_eq!(t.capture("tele/plug1/SENSOR/x"), None);
        assert_eq!(t.capture("tele/plug1"), None);
        assert_eq!(t.render("p"), "tele/p/SENSOR");
        assert_eq!(t.filter(), "tele/+/SENSOR");
        assert_eq!(t.to_string(), "tele/{name}/SENSOR");
        let by_id = TopicTemplate::parse("{id}/up").unwrap();
        assert_eq!(by_id.placeholder(), Placeholder::Id);
        assert_eq!(by_id.capture("dev/up"), Some("dev"));

        for (bad, want) in [
            (
                "tele/SENSOR",
                TemplateError::PlaceholderCount("tele/SENSOR".into()),
            ),
            (
                "{id}/{name}",
                TemplateError::PlaceholderCount("{id}/{name}".into()),
            ),
            (
                "tele/x{name}",
                TemplateError::BadPlaceholder("tele/x{name}".into()),
            ),
            (
                "tele/{nom}",
                TemplateError::BadPlaceholder("tele/{nom}".into()),
            ),
            (
                "tele/+/{id}",
                TemplateError::InvalidTopic("tele/+/{id}".into()),
            ),
            ("$SYS/{id}", TemplateError::InvalidTopic("$SYS/{id}".into())),
            (
                "things/{id}/x",
                TemplateError::ThingNamespace("things/{id}/x".into()),
            ),
        ] {
            assert_eq!(TopicTemplate::parse(bad), Err(want), "{bad}");
        }
    }
}
