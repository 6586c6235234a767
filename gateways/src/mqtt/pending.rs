//! [`PendingActions`]: invocations sent to devices and not answered yet, so that a reply can be
//! checked against its action's output schema, and so that firmware that answers without a
//! correlation id (Tasmota's `stat/<name>/POWER`) can be matched to the oldest call waiting on
//! that topic.
//!
//! Bounded: at most `capacity` entries (the oldest is forgotten first), entries past their
//! deadline are dropped as new ones come in, and the bookkeeping queues are compacted when stale
//! entries pile up. Owned behind a short `Mutex` by the gateway (never held across `.await`).

use std::collections::{HashMap, VecDeque};

use device_models::ThingId;

/// One call waiting for its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The device.
    pub thing: ThingId,
    /// The action's name.
    pub action: String,
    /// When the hub gives up, ms since the Unix epoch.
    pub deadline_ms: u64,
}

/// Pending calls by correlation id.
#[derive(Debug)]
pub struct PendingActions {
    capacity: usize,
    by_correlation: HashMap<String, Pending>,
    /// Correlations in arrival order (may hold answered ones until compacted).
    order: VecDeque<String>,
    /// Per thing, correlations in arrival order (may hold answered ones).
    by_thing: HashMap<ThingId, VecDeque<String>>,
}

impl PendingActions {
    /// An empty table holding at most `capacity` calls.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_correlation: HashMap::new(),
            order: VecDeque::new(),
            by_thing: HashMap::new(),
        }
    }

    /// Number of calls waiting.
    pub fn len(&self) -> usize {
        self.by_correlation.len()
    }

    /// True when no call waits.
    pub fn is_empty(&self) -> bool {
        self.by_correlation.is_empty()
    }

    /// Remembers a call.
    pub fn insert(&mut self, correlation: String, pending: Pending, now_ms: u64) {
        self.expire(now_ms);
        while self.by_correlation.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.forget(&oldest);
        }
        self.by_thing
            .entry(pending.thing.clone())
            .or_default()
            .push_back(correlation.clone());
        self.order.push_back(correlation.clone());
        self.by_correlation.insert(correlation, pending);
        if self.order.len() > 2 * self.capacity {
            self.compact();
        }
    }

    /// Takes the call with this correlation id.
    pub fn take(&mut self, correlation: &str) -> Option<Pending> {
        let pending = self.by_correlation.remove(correlation)?;
        if let Some(queue) = self.by_thing.get_mut(&pending.thing) {
            queue.retain(|c| c != correlation);
            if queue.is_empty() {
                self.by_thing.remove(&pending.thing);
            }
        }
        Some(pending)
    }

    /// Takes the oldest live call of `thing` whose action satisfies `answers`.
    pub fn take_oldest(
        &mut self,
        thing: &ThingId,
        now_ms: u64,
        answers: impl Fn(&str) -> bool,
    ) -> Option<(String, Pending)> {
        let queue = self.by_thing.get(thing)?;
        let correlation = queue
            .iter()
            .find(|c| {
                self.by_correlation
                    .get(*c)
                    .is_some_and(|p| p.deadline_ms >= now_ms && answers(&p.action))
            })?
            .clone();
        let pending = self.take(&correlation)?;
        Some((correlation, pending))
    }

    fn forget(&mut self, correlation: &str) {
        let _ = self.take(correlation);
    }

    /// Drops answered and expired calls from the front of the arrival queue.
    fn expire(&mut self, now_ms: u64) {
        while let Some(front) = self.order.front() {
            match self.by_correlation.get(front) {
                Some(p) if p.deadline_ms >= now_ms => break,
                Some(_) => {
                    let c = front.clone();
                    self.order.pop_front();
                    self.forget(&c);
                }
                None => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Rebuilds the arrival queue with the live calls only.
    fn compact(&mut self) {
        let live = &self.by_correlation;
        self.order.retain(|c| live.contains_key(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(thing: &str, action: &str, deadline_ms: u64) -> Pending {
        Pending {
            thing: ThingId::new(thing).unwrap(),
            action: action.into(),
            deadline_ms,
        }
    }

    #[test]
    fn take_by_correlation_and_oldest() {
        let mut t = PendingActions::new(10);
        t.insert("c1".into(), p("a", "on", 100), 0);
        t.insert("c2".into(), p("a", "toggle", 100), 0);
        t.insert("c3".into(), p("b", "on", 100), 0);
        assert_eq!(t.take("c3").unwrap().action, "on");
        assert!(t.take("c3").is_none());
        let a = ThingId::new("a").unwrap();
        let (c, _) = t.take_oldest(&a, 50, |_| true).unwrap();
        assert_eq!(c, "c1");
        assert!(t.take_oldest(&a, 50, |x| x == "off").is_none());
        assert!(t.take_oldest(&a, 101, |_| true).is_none(), "expired");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bounded_by_capacity_and_deadline() {
        let mut t = PendingActions::new(3);
        for i in 0..100u64 {
            t.insert(format!("c{i}"), p("a", "on", 1_000 + i), i);
            assert!(t.len() <= 3);
            assert!(t.order.len() <= 6);
        }
        assert!(t.take("c0").is_none(), "oldest forgotten");
        assert!(t.take("c99").is_some());
        // Everything past its deadline goes when the next call comes in.
        t.insert("late".into(), p("b", "on", 10_000), 5_000);
        assert_eq!(t.len(), 1);
        // Answered calls do not pile up in the queues.
        for i in 0..100u64 {
            t.insert(format!("x{i}"), p("b", "on", 20_000), 6_000);
            t.take(&format!("x{i}"));
        }
        assert!(t.order.len() <= 6);
        assert!(t.by_thing.values().map(VecDeque::len).sum::<usize>() <= 3);
    }
}
