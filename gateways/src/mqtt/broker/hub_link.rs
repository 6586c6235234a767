//! The gateway's own link into rumqttd's router, used to publish commands, desired state and
//! bridged messages.
//!
//! rumqttd's `LinkTx::publish` only sends QoS 0 without retain, and `Publish.qos` is private. The
//! router, though, takes any `Packet::Publish` a link hands it, and `Publish::deserialize` (its
//! storage format: flags byte, packet id, topic length, topic, payload) builds one with any QoS
//! and retain flag. That is how the gateway publishes retained desired state and QoS 1 commands
//! that reach persistent sessions. The router answers QoS 1 with PUBACKs on this link; they and
//! anything else it sends here are drained, and an `Unschedule` (sent when the link falls about
//! 200 notifications behind) is answered with `wake`, or the router would stop serving the link.

use bytes::{BufMut, BytesMut};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Publish};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::local::{self, Local};
use super::{Outbound, envelope};

/// Publishes what the gateway hands over: to a thing's own connection first when the topic is
/// one of its `things/<id>/...` topics (see [`local`]), then into the router for every other
/// subscriber and for the router's retained store.
pub(super) async fn run(
    mut tx: LinkTx,
    mut rx: LinkRx,
    mut outbound: mpsc::Receiver<Outbound>,
    local: std::sync::Arc<Local>,
    shutdown: CancellationToken,
) {
    device_models::fault::inject("mqtt_router_link");
    let mut pkid: u16 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            message = outbound.recv() => {
                let Some(message) = message else { break };
                if let Some(key) = local::thing_key(&message.topic) {
                    local.publish(
                        key,
                        &message.topic,
                        &message.payload,
                        message.retain,
                        message.at_least_once,
                    );
                }
                let id = if message.at_least_once {
                    pkid = pkid.checked_add(1).unwrap_or(1);
                    pkid
                } else {
                    0
                };
                let Some(publish) = build_publish(&message, id) else {
                    warn!(topic = %message.topic, "topic too long to publish");
                    continue;
                };
                let mut properties = None;
                envelope::mark(
                    &mut properties,
                    u8::from(message.at_least_once),
                    message.retain,
                    envelope::GATEWAY_ORIGIN,
                );
                if let Err(error) = tx.send(Packet::Publish(publish, properties)).await {
                    warn!(%error, "the MQTT router refused a publish from the gateway");
                    break;
                }
            }
            notification = rx.next() => match notification {
                Ok(Some(Notification::Unschedule)) => {
                    if rx.wake().await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "the MQTT router closed the gateway link");
                    break;
                }
            },
        }
    }
    let bye = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    let _ = tx.send(Packet::Disconnect(bye, None)).await;
}

/// A router `Publish` with the given QoS (1 when `pkid` is non-zero) and retain flag.
pub(super) fn build_publish(message: &Outbound, pkid: u16) -> Option<Publish> {
    let topic_len = u16::try_from(message.topic.len()).ok()?;
    let qos: u8 = if pkid == 0 { 0 } else { 1 };
    let mut raw = BytesMut::with_capacity(5 + message.topic.len() + message.payload.len());
    raw.put_u8(0b0011_0000 | u8::from(message.retain) | (qos << 1));
    raw.put_u16(pkid);
    raw.put_u16(topic_len);
    raw.put_slice(message.topic.as_bytes());
    raw.put_slice(&message.payload);
    Some(Publish::deserialize(raw.freeze()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn builds_qos1_retained_publishes() {
        let message = Outbound {
            topic: "things/a/desired".into(),
            payload: Bytes::from_static(b"{\"on\":true}"),
            retain: true,
            at_least_once: true,
        };
        let p = build_publish(&message, 7).unwrap();
        assert!(p.retain);
        assert_eq!(&p.topic[..], b"things/a/desired");
        assert_eq!(&p.payload[..], b"{\"on\":true}");
        // The flags byte and packet id survive a round trip through rumqttd's own serializer.
        let raw = p.serialize();
        assert_eq!(raw[0], 0b0011_0011);
        assert_eq!(u16::from_be_bytes([raw[1], raw[2]]), 7);
        let q0 = build_publish(
            &Outbound {
                at_least_once: false,
                retain: false,
                ..message
            },
            0,
        )
        .unwrap()
        .serialize();
        assert_eq!(q0[0], 0b0011_0000);
    }
}
