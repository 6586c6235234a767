//! What a PUBLISH carries through rumqttd's router that the router drops, and the per-filter
//! subscription options of MQTT 5 that it parses but ignores: "no local", "retain as published"
//! and "retain handling"; and the rule that a subscriber gets a message at the lower of the
//! publisher's and its subscription's QoS (the router delivers at the subscription's).
//!
//! The connection marks every PUBLISH it hands the router with an internal user property
//! ([`MARK`]) holding the QoS and retain flag it was published with and the connection it came
//! from. Every connection takes that property off what it delivers (no client ever sees it, and
//! one a client sends is dropped on the way in) and decides from it and its own filters:
//! - its own message whose topic only its no-local filters match is dropped;
//! - a copy from the router's retained store (sent because of a SUBSCRIBE) is dropped when the
//!   filters matching it asked for no retained messages (retain handling 2, or 1 on a filter
//!   that already existed);
//! - a live message keeps its retain flag when a matching filter asked for retain as published;
//! - the QoS is capped at the publisher's.
//!
//! When a topic matches several filters of the connection, a message is kept if any of them
//! wants it: the options hold per connection, not per copy the router sends. Plain
//! per-connection state, owned by the connection's task.

use std::sync::atomic::{AtomicU64, Ordering};

use rumqttd::protocol::{Filter, PublishProperties, RetainForwardRule};

use crate::mqtt::topics::filters_overlap;

/// The user property carrying a PUBLISH's QoS, retain flag and publishing connection:
/// `<qos><retain 0|1><origin>`.
const MARK: &str = "brume.internal";

/// The origin of messages the gateway itself publishes (connections count from 1).
pub(super) const GATEWAY_ORIGIN: u64 = 0;

/// Source of connection identities.
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(GATEWAY_ORIGIN + 1);

/// One filter's MQTT 5 options.
#[derive(Debug)]
struct Options {
    path: String,
    no_local: bool,
    retain_as_published: bool,
    /// The retained messages this SUBSCRIBE brings are not wanted.
    skip_retained: bool,
}

/// One connection's identity and subscription options.
#[derive(Debug)]
pub(super) struct Envelope {
    origin: u64,
    filters: Vec<Options>,
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope {
            origin: NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed),
            filters: Vec::new(),
        }
    }
}

/// What to do with a message the router forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not for this client: the connection acknowledges it to the router itself.
    Drop,
    /// Deliver it at no more than `max_qos` (the publisher's), with this retain flag.
    Deliver { max_qos: u8, retain: bool },
}

/// Adds the mark to a PUBLISH handed to the router: `qos` and `retain` as published, by
/// `origin`. Any mark a client wrote is dropped first.
pub(super) fn mark(properties: &mut Option<PublishProperties>, qos: u8, retain: bool, origin: u64) {
    let p = properties.get_or_insert_with(PublishProperties::default);
    p.user_properties.retain(|(name, _)| name != MARK);
    p.user_properties.push((
        MARK.to_owned(),
        format!("{qos}{}{origin}", u8::from(retain)),
    ));
}

/// Takes the mark off a forwarded message: (qos, retain, origin), if it had a readable one.
fn unmark(properties: &mut Option<PublishProperties>) -> Option<(u8, bool, u64)> {
    let p = properties.as_mut()?;
    let at = p.user_properties.iter().position(|(n, _)| n == MARK)?;
    let value = p.user_properties.swap_remove(at).1;
    if p.user_properties.is_empty() && *p == PublishProperties::default() {
        *properties = None;
    }
    let mut chars = value.chars();
    let qos = chars.next()?.to_digit(10)?;
    let retain = chars.next()? == '1';
    let origin = chars.as_str().parse().ok()?;
    Some((u8::try_from(qos).ok().filter(|q| *q <= 2)?, retain, origin))
}

impl Envelope {
    /// This connection's origin, for [`mark`].
    pub(super) fn origin(&self) -> u64 {
        self.origin
    }

    /// A SUBSCRIBE of `filter`, which replaces that filter's options.
    pub(super) fn subscribed(&mut self, filter: &Filter) {
        let existed = self.unsubscribed(&filter.path);
        self.filters.push(Options {
            path: filter.path.clone(),
            no_local: filter.nolocal,
            retain_as_published: filter.preserve_retain,
            skip_retained: match filter.retain_forward_rule {
                RetainForwardRule::OnEverySubscribe => false,
                RetainForwardRule::OnNewSubscribe => existed,
                RetainForwardRule::Never => true,
            },
        });
    }

    /// An UNSUBSCRIBE of `filter`; whether it was subscribed.
    pub(super) fn unsubscribed(&mut self, filter: &str) -> bool {
        let before = self.filters.len();
        self.filters.retain(|f| f.path != filter);
        self.filters.len() != before
    }

    /// Decides on a message the router forwards to `topic`, taking the mark off its
    /// properties. `from_store`: the router sent it from its retained store (as it does after a
    /// SUBSCRIBE), not as it was published. An unmarked message is delivered as the router
    /// sent it.
    pub(super) fn forwarded(
        &self,
        topic: &str,
        from_store: bool,
        properties: &mut Option<PublishProperties>,
    ) -> Verdict {
        let Some((qos, retain, origin)) = unmark(properties) else {
            return Verdict::Deliver {
                max_qos: 2,
                retain: from_store,
            };
        };
        let mut matching = self
            .filters
            .iter()
            .filter(|f| filters_overlap(&f.path, topic))
            .peekable();
        if matching.peek().is_none() {
            // Options unknown here (a session resumed from before this connection).
            return Verdict::Deliver {
                max_qos: qos,
                retain: from_store,
            };
        }
        let own = origin == self.origin;
        let (mut wanted, mut as_published) = (false, false);
        for f in matching {
            if (own && f.no_local) || (from_store && f.skip_retained) {
                continue;
            }
            wanted = true;
            as_published |= f.retain_as_published;
        }
        if !wanted {
            return Verdict::Drop;
        }
        Verdict::Deliver {
            max_qos: qos,
            retain: from_store || (retain && as_published),
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::QoS;

    use super::*;

    fn filter(path: &str, nolocal: bool, rule: RetainForwardRule) -> Filter {
        Filter {
            path: path.into(),
            qos: QoS::ExactlyOnce,
            nolocal,
            preserve_retain: false,
            retain_forward_rule: rule,
        }
    }

    fn marked(qos: u8, retain: bool, origin: u64) -> Option<PublishProperties> {
        let mut p = Some(PublishProperties {
            // A client cannot forge the mark: its own is replaced.
            user_properties: vec![(MARK.into(), "21999".into()), ("k".into(), "v".into())],
            ..PublishProperties::default()
        });
        mark(&mut p, qos, retain, origin);
        p
    }

    #[test]
    fn own_messages_on_no_local_filters_are_dropped_and_the_mark_never_leaves() {
        let mut a = Envelope::default();
        let b = Envelope::default();
        a.subscribed(&filter("chat/#", true, RetainForwardRule::OnEverySubscribe));

        let props = marked(1, false, a.origin());
        let marks = props
            .iter()
            .flat_map(|p| &p.user_properties)
            .filter(|(n, _)| n == MARK)
            .count();
        assert_eq!(marks, 1);

        // Back at the publisher: dropped. At another connection: delivered, unmarked.
        assert_eq!(
            a.forwarded("chat/room", false, &mut props.clone()),
            Verdict::Drop
        );
        let mut other = props.clone();
        assert_eq!(
            b.forwarded("chat/room", false, &mut other),
            Verdict::Deliver {
                max_qos: 1,
                retain: false
            }
        );
        assert_eq!(
            other.unwrap().user_properties,
            vec![("k".to_owned(), "v".to_owned())]
        );

        // An ordinary filter matching too: delivered.
        a.subscribed(&filter(
            "chat/+",
            false,
            RetainForwardRule::OnEverySubscribe,
        ));
        assert!(matches!(
            a.forwarded("chat/room", false, &mut props.clone()),
            Verdict::Deliver { .. }
        ));
    }

    #[test]
    fn qos_is_capped_at_the_publishers_and_bare_marks_leave_no_properties() {
        let mut a = Envelope::default();
        a.subscribed(&filter("t", false, RetainForwardRule::OnEverySubscribe));
        for qos in 0..=2 {
            let mut p = None;
            mark(&mut p, qos, false, 99);
            assert_eq!(
                a.forwarded("t", false, &mut p),
                Verdict::Deliver {
                    max_qos: qos,
                    retain: false
                }
            );
            assert!(p.is_none());
        }
    }

    #[test]
    fn retain_handling_and_retain_as_published() {
        let mut a = Envelope::default();
        a.subscribed(&filter("r/+", false, RetainForwardRule::OnNewSubscribe));
        let stored = || marked(0, true, 7);
        // First subscribe: retained messages come.
        assert!(matches!(
            a.forwarded("r/x", true, &mut stored()),
            Verdict::Deliver { retain: true, .. }
        ));
        // The same filter again: they do not.
        a.subscribed(&filter("r/+", false, RetainForwardRule::OnNewSubscribe));
        assert_eq!(a.forwarded("r/x", true, &mut stored()), Verdict::Drop);
        a.subscribed(&filter("r/+", false, RetainForwardRule::Never));
        assert_eq!(a.forwarded("r/x", true, &mut stored()), Verdict::Drop);
        // A live retained publish: retain cleared, unless asked to keep it.
        assert_eq!(
            a.forwarded("r/x", false, &mut stored()),
            Verdict::Deliver {
                max_qos: 0,
                retain: false
            }
        );
        let mut keep = filter("r/+", false, RetainForwardRule::Never);
        keep.preserve_retain = true;
        a.subscribed(&keep);
        assert_eq!(
            a.forwarded("r/x", false, &mut stored()),
            Verdict::Deliver {
                max_qos: 0,
                retain: true
            }
        );
        // Unsubscribed: options gone.
        assert!(a.unsubscribed("r/+"));
        assert!(!a.unsubscribed("r/+"));
    }
}
