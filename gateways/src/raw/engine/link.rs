//! Requests to one peer (a UDP address, a TCP connection, a serial port): the queue of commands
//! waiting to be written and the requests written and waiting for their reply.
//!
//! A peer takes at most `max_in_flight` requests at once: 1 on a half-duplex bus or with
//! `next_frame` correlation, where the next reply frame answers the oldest request, so only one may
//! be outstanding. The rest wait in the queue, in order.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use device_models::ThingId;
use device_models::frames::Correlation;

/// Why a command frame was written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Purpose {
    /// An action invocation; its reply (or failure) becomes an `ActionReply`.
    Action {
        /// The action's name.
        name: String,
        /// The hub's correlation id, echoed in the `ActionReply`.
        correlation: String,
    },
    /// A desired-state change (one frame of it); the device confirms by reporting.
    Set,
}

/// One command frame on its way to a device.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub thing: ThingId,
    pub purpose: Purpose,
    pub bytes: Bytes,
    /// The reply to wait for; `None` when the device does not answer this command.
    pub reply: Option<Correlation>,
    /// Past this, the request fails, whether or not it was written.
    pub deadline: Instant,
}

/// The requests of one peer.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Whether frames can be written now (false while a serial port is closed).
    pub up: bool,
    pub queue: VecDeque<Request>,
    pub in_flight: VecDeque<Request>,
}

impl Link {
    pub fn new(up: bool) -> Self {
        Self {
            up,
            ..Self::default()
        }
    }

    /// Whether no request is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// Removes the in-flight request that `correlation` answers. A sequence number must match
    /// exactly; `next_frame` takes the oldest request waiting for a next frame. When the reply
    /// names a thing, the request must be for that thing.
    pub fn take_reply(
        &mut self,
        correlation: &Correlation,
        thing: Option<&ThingId>,
    ) -> Option<Request> {
        let position = self.in_flight.iter().position(|r| {
            r.reply.as_ref() == Some(correlation) && thing.is_none_or(|t| *t == r.thing)
        })?;
        self.in_flight.remove(position)
    }

    /// Removes every request whose deadline has passed, in-flight ones first.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(Request, bool)> {
        let mut expired = Vec::new();
        for (queue, was_sent) in [(&mut self.in_flight, true), (&mut self.queue, false)] {
            let mut i = 0;
            while i < queue.len() {
                if queue.get(i).is_some_and(|r| r.deadline <= now) {
                    if let Some(r) = queue.remove(i) {
                        expired.push((r, was_sent));
                    }
                } else {
                    i += 1;
                }
            }
        }
        expired
    }

    /// The earliest deadline of any request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .iter()
            .chain(&self.queue)
            .map(|r| r.deadline)
            .min()
    }
}
