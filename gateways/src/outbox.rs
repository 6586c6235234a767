//! Fire-and-forget events on their way to the hub, for gateways whose devices need no
//! acknowledgement (raw UDP, TCP and serial; Modbus): what one turn of a gateway's loop produced
//! goes in as few channel sends as possible, one [`DeviceEvent::Batch`] (with no barrier) per
//! [`EventBatch::MAX_EVENTS`] events, or a lone event as itself.

use device_models::{DeviceEvent, EventBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The hub is gone (its event receiver was dropped) or shutdown was asked for.
#[derive(Debug)]
pub(crate) struct Stopped;

/// Events of the current turn, in order, not yet sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    events: Vec<DeviceEvent>,
}

impl Outbox {
    /// Queues an event behind those already waiting.
    pub(crate) fn push(&mut self, event: DeviceEvent) {
        self.events.push(event);
    }

    /// Sends every event waiting, in order, waiting for room in the hub's queue (back-pressure:
    /// the caller's loop stalls, nothing is dropped) but not past shutdown.
    pub(crate) async fn flush(
        &mut self,
        events: &mpsc::Sender<DeviceEvent>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        while let Some(event) = self.next_send() {
            tokio::select! {
                sent = events.send(event) => sent.map_err(|_| Stopped)?,
                () = shutdown.cancelled() => return Err(Stopped),
            }
        }
        Ok(())
    }

    /// What the next channel send carries: up to [`EventBatch::MAX_EVENTS`] of the first events
    /// waiting, as a batch, or the one event as itself; `None` when nothing waits.
    fn next_send(&mut self) -> Option<DeviceEvent> {
        let chunk = match self.events.len() {
            0 | 1 => return self.events.pop(),
            n if n <= EventBatch::MAX_EVENTS => std::mem::take(&mut self.events),
            _ => {
                let rest = self.events.split_off(EventBatch::MAX_EVENTS);
                std::mem::replace(&mut self.events, rest)
            }
        };
        Some(DeviceEvent::Batch(Box::new(EventBatch {
            events: chunk,
            covered: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use device_models::ThingId;

    use super::*;

    fn online(n: usize) -> DeviceEvent {
        DeviceEvent::Online {
            thing: ThingId::new(format!("dev-{n}")).expect("valid id"),
        }
    }

    fn filled(n: usize) -> Outbox {
        let mut outbox = Outbox::default();
        (0..n).for_each(|i| outbox.push(online(i)));
        outbox
    }

    /// The events of an uncovered batch; panics on anything else.
    fn batched(event: Option<DeviceEvent>) -> Vec<DeviceEvent> {
        match event {
            Some(DeviceEvent::Batch(batch)) => {
                assert_eq!(batch.covered, None, "fire-and-forget: no barrier");
                batch.events
            }
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn one_event_goes_as_itself() {
        let mut outbox = filled(1);
        assert_eq!(outbox.next_send(), Some(online(0)));
        assert_eq!(outbox.next_send(), None);
    }

    #[test]
    fn many_events_go_in_batches_of_32_in_order() {
        let mut outbox = filled(40);
        assert_eq!(
            batched(outbox.next_send()),
            (0..32).map(online).collect::<Vec<_>>()
        );
        assert_eq!(
            batched(outbox.next_send()),
            (32..40).map(online).collect::<Vec<_>>()
        );
        assert_eq!(outbox.next_send(), None);
        // Two are a batch; one left over after a full batch goes as itself.
        assert_eq!(batched(filled(2).next_send()).len(), 2);
        let mut outbox = filled(33);
        assert_eq!(batched(outbox.next_send()).len(), 32);
        assert_eq!(outbox.next_send(), Some(online(32)));
    }

    #[tokio::test]
    async fn flush_sends_a_batch_per_channel_send_and_stops_at_shutdown() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut outbox = filled(3);
        outbox
            .flush(&tx, &CancellationToken::new())
            .await
            .expect("room for one send");
        assert_eq!(batched(rx.try_recv().ok()).len(), 3);
        assert!(rx.try_recv().is_err(), "one send");

        // The hub's queue stays full: the flush waits, and gives up at shutdown.
        tx.send(online(9)).await.expect("room");
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(filled(1).flush(&tx, &shutdown).await.is_err());
        // The hub is gone.
        drop(rx);
        let hub_gone = filled(1).flush(&tx, &CancellationToken::new()).await;
        assert!(hub_gone.is_err());
    }
}
