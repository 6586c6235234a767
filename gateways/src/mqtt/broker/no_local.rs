//! MQTT 5 "no local" for one connection, which rumqttd's router parses but ignores.
//!
//! The router does not say who published a message it forwards, so the connection marks its own:
//! while it holds a no-local filter matching a topic it publishes to, its PUBLISH carries an
//! internal user property ([`ORIGIN`]) naming the connection. Every connection strips that
//! property from what it delivers (no client ever sees it, and one a client sends is dropped on
//! the way in), and a connection drops a message of its own whose topic only its no-local
//! filters match; the connection then acknowledges it to the router itself.
//!
//! When a topic matches both a no-local and an ordinary filter of the connection, its own
//! message is delivered (as many times as the router sends it): "no local" holds per
//! connection, not per copy. Plain per-connection state, owned by the connection's task.

use std::sync::atomic::{AtomicU64, Ordering};

use rumqttd::protocol::{Filter, PublishProperties};

use crate::mqtt::topics::filters_overlap;

/// The user property naming the connection a PUBLISH came from.
const ORIGIN: &str = "brume.internal.origin";

/// Source of connection identities.
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);

/// One connection's no-local filters and identity.
#[derive(Debug)]
pub(super) struct NoLocal {
    origin: String,
    filters: Vec<String>,
}

impl Default for NoLocal {
    fn default() -> Self {
        NoLocal {
            origin: NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed).to_string(),
            filters: Vec::new(),
        }
    }
}

impl NoLocal {
    /// A SUBSCRIBE of `filter` (which replaces that filter's options).
    pub(super) fn subscribed(&mut self, filter: &Filter) {
        self.unsubscribed(&filter.path);
        if filter.nolocal {
            self.filters.push(filter.path.clone());
        }
    }

    /// An UNSUBSCRIBE of `filter`.
    pub(super) fn unsubscribed(&mut self, filter: &str) {
        self.filters.retain(|f| f != filter);
    }

    /// Prepares the properties of a PUBLISH this connection sends to `topic`: drops any
    /// [`ORIGIN`] the client wrote, and adds this connection's when a no-local filter of it
    /// matches the topic.
    pub(super) fn outgoing(&self, topic: &str, properties: &mut Option<PublishProperties>) {
        if let Some(p) = properties.as_mut() {
            p.user_properties.retain(|(name, _)| name != ORIGIN);
        }
        if self.filters.iter().any(|f| filters_overlap(f, topic)) {
            properties
                .get_or_insert_with(PublishProperties::default)
                .user_properties
                .push((ORIGIN.to_owned(), self.origin.clone()));
        }
    }

    /// Takes [`ORIGIN`] off a message the router forwards to this connection, and says whether
    /// to drop it: it is this connection's own, and of the connection's filters (`subscribed`)
    /// only no-local ones match its topic.
    pub(super) fn drops(
        &self,
        topic: &str,
        properties: &mut Option<PublishProperties>,
        subscribed: &[String],
    ) -> bool {
        let Some(p) = properties.as_mut() else {
            return false;
        };
        let Some(at) = p.user_properties.iter().position(|(n, _)| n == ORIGIN) else {
            return false;
        };
        let own = p.user_properties.swap_remove(at).1 == self.origin;
        own && self.filters.iter().any(|f| filters_overlap(f, topic))
            && !subscribed
                .iter()
                .any(|f| !self.filters.contains(f) && filters_overlap(f, topic))
    }
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{QoS, RetainForwardRule};

    use super::*;

    fn filter(path: &str, nolocal: bool) -> Filter {
        Filter {
            path: path.into(),
            qos: QoS::AtLeastOnce,
            nolocal,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }
    }

    #[test]
    fn own_messages_on_no_local_filters_are_dropped_and_the_mark_never_leaves() {
        let mut a = NoLocal::default();
        let b = NoLocal::default();
        a.subscribed(&filter("chat/#", true));
        let subscribed = vec!["chat/#".to_owned()];

        // A client cannot forge the mark.
        let mut props = Some(PublishProperties {
            user_properties: vec![(ORIGIN.into(), "1".into()), ("k".into(), "v".into())],
            ..PublishProperties::default()
        });
        a.outgoing("chat/room", &mut props);
        let marks: Vec<_> = props
            .iter()
            .flat_map(|p| &p.user_properties)
            .filter(|(n, _)| n == ORIGIN)
            .collect();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].1, a.origin);

        // Back at the publisher: dropped. At another connection: delivered, unmarked.
        let mut back = props.clone();
        assert!(a.drops("chat/room", &mut back, &subscribed));
        let mut other = props.clone();
        assert!(!b.drops("chat/room", &mut other, &["chat/#".to_owned()]));
        assert_eq!(
            other.unwrap().user_properties,
            vec![("k".to_owned(), "v".to_owned())]
        );

        // An ordinary filter matching too: delivered.
        let mut both = props.clone();
        let subscribed = vec!["chat/#".to_owned(), "chat/+".to_owned()];
        assert!(!a.drops("chat/room", &mut both, &subscribed));

        // Subscribing again without no-local, or unsubscribing, ends it.
        a.subscribed(&filter("chat/#", false));
        let mut none = None;
        a.outgoing("chat/room", &mut none);
        assert!(none.is_none());
    }
}
