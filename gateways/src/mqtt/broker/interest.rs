//! Which topics some MQTT client may be subscribed to: a trie of the filters clients subscribed
//! through this broker, so that a PUBLISH no filter matches skips rumqttd's router.
//!
//! Most device traffic (`things/<id>/state`, telemetry) has no MQTT subscriber at all: the hub
//! reads it in the connection task and apps get it over WAMP. Handing each such message to the
//! router anyway costs a channel send, a wake-up of the router thread and its own matching, about
//! a fifth of the hub's CPU under MQTT telemetry load, for nothing.
//!
//! The index over-approximates and never under-approximates: a filter is counted from the
//! SUBSCRIBE that the ACL let through (even if the router then refused it) until the same
//! connection unsubscribes it or, for a clean session, the connection ends. Filters of persistent
//! sessions stay counted after their connection ends, as the router keeps them too. A shared
//! subscription (`$share/<group>/<filter>`) counts as its filter.

use std::collections::HashMap;

/// Counted subscription filters, level by level.
#[derive(Debug, Default)]
pub(super) struct Interest {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Filters that end at this level.
    ends: usize,
    /// Filters that end with `#` after this level.
    rest: usize,
    /// `+` at the next level.
    any: Option<Box<Node>>,
    /// Literal next levels.
    levels: HashMap<Box<str>, Node>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.ends == 0 && self.rest == 0 && self.any.is_none() && self.levels.is_empty()
    }
}

/// The filter a subscription matches topics with (`$share/<group>/f` → `f`).
fn effective(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

impl Interest {
    /// Counts one more subscription of `filter` (a valid filter).
    pub(super) fn add(&mut self, filter: &str) {
        let mut node = &mut self.root;
        let mut levels = effective(filter).split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                node.rest += 1;
                return;
            }
            node = if level == "+" {
                node.any.get_or_insert_with(Box::default)
            } else {
                node.levels.entry(level.into()).or_default()
            };
        }
        node.ends += 1;
    }

    /// Counts one subscription of `filter` fewer; prunes levels nothing uses any more.
    pub(super) fn remove(&mut self, filter: &str) {
        let levels: Vec<&str> = effective(filter).split('/').collect();
        remove_from(&mut self.root, &levels);
    }

    /// Whether some counted filter matches the topic name `topic`.
    /// Asked for every PUBLISH a client sends, so it walks the topic without collecting its
    /// levels.
    pub(super) fn matches(&self, topic: &str) -> bool {
        if self.root.is_empty() {
            return false;
        }
        // Wildcards at the first level do not match topics starting with `$` (MQTT 4.7.2).
        matches_from(&self.root, topic.split('/'), topic.starts_with('$'))
    }

    /// Whether no filter is counted.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

fn remove_from(node: &mut Node, levels: &[&str]) {
    let Some((&level, rest)) = levels.split_first() else {
        node.ends = node.ends.saturating_sub(1);
        return;
    };
    if level == "#" && rest.is_empty() {
        node.rest = node.rest.saturating_sub(1);
        return;
    }
    if level == "+" {
        if let Some(any) = node.any.as_deref_mut() {
            remove_from(any, rest);
            if any.is_empty() {
                node.any = None;
            }
        }
    } else if let Some(next) = node.levels.get_mut(level) {
        remove_from(next, rest);
        if next.is_empty() {
            node.levels.remove(level);
        }
    }
}

fn matches_from(node: &Node, mut levels: std::str::Split<'_, char>, dollar: bool) -> bool {
    if node.rest > 0 && !dollar {
        // `a/#` matches `a` and everything under it.
        return true;
    }
    let Some(level) = levels.next() else {
        return node.ends > 0;
    };
    if let Some(next) = node.levels.get(level)
        && matches_from(next, levels.clone(), false)
    {
        return true;
    }
    match node.any.as_deref() {
        Some(any) if !dollar => matches_from(any, levels, false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(filters: &[&str]) -> Interest {
        let mut interest = Interest::default();
        for f in filters {
            interest.add(f);
        }
        interest
    }

    #[test]
    fn literal_plus_and_hash() {
        let i = with(&["things/a/desired", "things/+/state", "raw/#"]);
        assert!(i.matches("things/a/desired"));
        assert!(!i.matches("things/b/desired"));
        assert!(i.matches("things/b/state"));
        assert!(!i.matches("things/b/state/x"));
        assert!(!i.matches("things/state"));
        assert!(i.matches("raw"));
        assert!(i.matches("raw/x/y"));
        assert!(!i.matches("rawx"));
        assert!(!with(&[]).matches("a"));
        assert!(with(&["#"]).matches("a/b"));
        assert!(with(&["+/+"]).matches("a/b"));
        assert!(!with(&["+/+"]).matches("a"));
        assert!(with(&["a/+"]).matches("a/"));
    }

    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        assert!(!with(&["#"]).matches("$SYS/x"));
        assert!(!with(&["+/x"]).matches("$SYS/x"));
        assert!(with(&["$SYS/#"]).matches("$SYS/x"));
    }

    #[test]
    fn shared_subscriptions_count_as_their_filter() {
        let i = with(&["$share/g/things/+/state"]);
        assert!(i.matches("things/a/state"));
        assert!(!i.matches("$share/g/things/a/state"));
    }

    #[test]
    fn counted_until_every_subscription_is_removed() {
        let mut i = with(&["a/+", "a/+", "b/#", "c"]);
        i.remove("a/+");
        assert!(i.matches("a/x"));
        i.remove("a/+");
        assert!(!i.matches("a/x"));
        i.remove("b/#");
        i.remove("c");
        // Removing what was never added changes nothing.
        i.remove("d/e");
        assert!(i.is_empty());
    }
}
