//! MQTT 5 session expiry and will delay, which rumqttd's router does not keep time for.
//!
//! When a connection ends, its last will may have to wait (the Will Delay Interval) and its
//! router session may be kept only for a while (the Session Expiry Interval). Both wait in one
//! task per ended connection, registered here under the session's router id: a new connection to
//! that session cancels it, so the will is not sent and the session is not purged. The map is
//! behind a short `Mutex`, never held across `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

/// Ended connections whose will or session expiry still waits, by router id.
#[derive(Debug, Default)]
pub(super) struct Pending {
    waiting: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
}

impl Pending {
    /// A connection with `client_id` starts: whatever waited for its previous one is
    /// cancelled.
    pub(super) fn resume(&self, client_id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, token)) = waiting.remove(client_id) {
            token.cancel();
        }
    }

    /// Registers a wait for `client_id` (cancelling an older one); returns its ticket and the
    /// token a new connection cancels.
    pub(super) fn hold(&self, client_id: &str) -> (u64, CancellationToken) {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = waiting.insert(client_id.to_owned(), (ticket, token.clone())) {
            old.cancel();
        }
        (ticket, token)
    }

    /// Ends the wait `ticket` for `client_id` if it is still registered and not cancelled;
    /// true when the caller may go ahead (publish the will, purge the session).
    pub(super) fn finish(&self, client_id: &str, ticket: u64, last: bool) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get(client_id) {
            Some((t, token)) if *t == ticket && !token.is_cancelled() => {
                if last {
                    waiting.remove(client_id);
                }
                true
            }
            _ => false,
        }
    }

    /// How many ended connections still wait.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_cancels_what_waited() {
        let p = Pending::default();
        let (ticket, token) = p.hold("a");
        assert!(p.finish("a", ticket, false));
        p.resume("a");
        assert!(token.is_cancelled());
        assert!(!p.finish("a", ticket, true));
        assert_eq!(p.len(), 0);

        // A newer wait replaces an older one.
        let (old, old_token) = p.hold("b");
        let (new, _) = p.hold("b");
        assert!(old_token.is_cancelled());
        assert!(!p.finish("b", old, true));
        assert!(p.finish("b", new, true));
        assert_eq!(p.len(), 0);
    }
}
