//! The things service's direct way into the uplink queue: its events (state, info, lifecycle)
//! and the device barriers behind them, in one ordered channel, without a WAMP session in
//! between.
//!
//! A device's QoS 1 PUBACK (or confirmable CoAP response) waits for a barrier; with the uplink
//! on, that barrier is split and one part travels here behind the events it covers, so the
//! device is acknowledged only once the uplink queue holds them too: a crash right after the
//! acknowledgement loses nothing the cloud was to receive.
//!
//! The channel is bounded; the things service keeps what does not fit in a backlog and stops
//! reading device events while that backlog is long, so a slow disk pushes back on devices
//! instead of losing events.

use tokio::sync::mpsc;

use device_models::Commit;

use super::queue::{Kind, NewEvent};
use crate::config::uplink::Rule;
use crate::router::broker::pattern_matches;
use crate::wamp::Payload;

/// Items waiting in the tap's channel.
pub const TAP_QUEUE: usize = 4096;

/// What the things service hands the uplink.
#[derive(Debug)]
pub enum TapItem {
    /// An event matching a forwarding rule.
    Event(NewEvent),
    /// Answered once every event sent before it is committed to the queue.
    Fence(Commit),
}

/// The things service's end: which of its topics the uplink forwards, and the channel.
#[derive(Debug, Clone)]
pub struct UplinkTap {
    rules: Vec<Rule>,
    pub(crate) tx: mpsc::Sender<TapItem>,
}

/// The uplink's end.
#[derive(Debug)]
pub struct TapReceiver(pub(crate) mpsc::Receiver<TapItem>);

/// A tap for `rules`, and its receiving end for [`super::start`].
pub fn tap(rules: Vec<Rule>) -> (UplinkTap, TapReceiver) {
    let (tx, rx) = mpsc::channel(TAP_QUEUE);
    (UplinkTap { rules, tx }, TapReceiver(rx))
}

impl UplinkTap {
    /// The kind of the first rule forwarding `topic`, if one does.
    pub fn kind(&self, topic: &str) -> Option<Kind> {
        self.rules
            .iter()
            .find(|r| pattern_matches(&r.topic, r.policy, topic))
            .map(|r| r.kind)
    }

    /// The event to queue for a publication on `topic`, if a rule forwards it.
    pub fn event(&self, topic: &str, payload: &Payload, at_ms: u64) -> Option<TapItem> {
        self.kind(topic).map(|kind| {
            TapItem::Event(NewEvent {
                topic: topic.to_owned(),
                kind,
                payload: payload.clone(),
                at_ms,
            })
        })
    }

    /// The uplink's authid: publications the tap carries are published to WAMP excluding it,
    /// so the uplink's own subscriptions do not queue them twice.
    pub fn authid(&self) -> &'static str {
        super::AUTHID
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wamp::MatchPolicy;

    #[test]
    fn the_first_matching_rule_decides_the_kind() {
        let rules = vec![
            Rule {
                topic: "brume.thing.".into(),
                policy: MatchPolicy::Prefix,
                kind: Kind::Telemetry,
            },
            Rule {
                topic: "brume.thing..state".into(),
                policy: MatchPolicy::Wildcard,
                kind: Kind::Lifecycle,
            },
            Rule {
                topic: "brume.things.on_".into(),
                policy: MatchPolicy::Prefix,
                kind: Kind::Lifecycle,
            },
        ];
        let (tap, _rx) = tap(rules);
        assert_eq!(tap.kind("brume.thing.t1.state"), Some(Kind::Telemetry));
        assert_eq!(tap.kind("brume.things.on_create"), Some(Kind::Lifecycle));
        assert_eq!(tap.kind("brume.things.list"), None);
        assert_eq!(tap.kind("com.app.x"), None);
    }
}
