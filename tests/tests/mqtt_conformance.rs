//! MQTT conformance of the embedded broker, each test a case where it once differed from
//! mosquitto or from the MQTT 5 specification: real sockets, real clients (rumqttc 3.1.1 and
//! 5, Debian's mosquitto_sub), a hub on port 0 per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mqtt_e2e/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Device, MosquittoSub, QUIET, WAIT, anonymous_options, mqtt_addr, until};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason, RetainForwardRule};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tests::hub::TestHub;
use tokio::sync::mpsc;

fn mqtt_stats(hub: &TestHub) -> gateways::mqtt::MqttStats {
    hub.hub
        .gateways()
        .mqtt
        .as_ref()
        .expect("MQTT gateway")
        .stats()
}

/// An MQTT 5 client and the packets it receives.
struct Client5 {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
}

impl Client5 {
    /// Connects anonymously as `client_id` and waits for the CONNACK.
    async fn connect(hub: &TestHub, client_id: &str) -> Client5 {
        Client5::connect_with(hub, client_id, None).await
    }

    /// Connects as `client_id`, logged in with `login` (username, password) if given.
    async fn connect_with(hub: &TestHub, client_id: &str, login: Option<(&str, &str)>) -> Client5 {
        let addr = mqtt_addr(hub);
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event
                    && tx.send(p).is_err()
                {
                    return;
                }
            }
        });
        let mut c = Client5 { client, incoming };
        c.expect(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        c
    }

    /// The next packet `pick` accepts, skipping others.
    async fn expect<T>(&mut self, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("connection ended");
            if let Some(t) = pick(&p) {
                return t;
            }
        }
    }

    async fn subscribe(&mut self, path: &str, nolocal: bool) {
        let filter = Filter {
            path: path.to_owned(),
            qos: QoS::AtLeastOnce,
            nolocal,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        };
        self.client.subscribe_many([filter]).await.unwrap();
        let codes = self
            .expect(|p| match p {
                Packet::SubAck(a) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes.len(), 1);
    }

    /// Publishes at `qos` and waits for its flow to end; for QoS 1, the reason of its PUBACK.
    async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) -> Option<PubAckReason> {
        self.client
            .publish(topic, qos, false, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => return None,
            QoS::ExactlyOnce => {
                self.expect(|p| matches!(p, Packet::PubComp(_)).then_some(()))
                    .await;
                return None;
            }
            QoS::AtLeastOnce => {}
        }
        Some(
            self.expect(|p| match p {
                Packet::PubAck(a) => Some(a.reason),
                _ => None,
            })
            .await,
        )
    }

    /// The next PUBLISH: (topic, payload).
    async fn next_publish(&mut self) -> (String, Vec<u8>) {
        self.expect(|p| match p {
            Packet::Publish(p) => Some((
                String::from_utf8_lossy(&p.topic).into_owned(),
                p.payload.to_vec(),
            )),
            _ => None,
        })
        .await
    }

    /// Asserts that no PUBLISH arrives for [`QUIET`].
    async fn no_publish(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            if let Packet::Publish(p) = p {
                panic!(
                    "unexpected PUBLISH on {}",
                    String::from_utf8_lossy(&p.topic)
                );
            }
        }
    }
}

/// `mosquitto_sub -t '#'` (and Paho's `+/+`) from an anonymous loopback client works as it does
/// against mosquitto: on a listener that requires no login, a client without one reads every
/// topic but `$` ones, including other things' topics it cannot publish to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_loopback_client_may_subscribe_to_everything() {
    let hub = TestHub::start().await;
    let mut everything = MosquittoSub::start(&hub, "#").await;
    let mut two_levels = Device::connect(anonymous_options(&hub, "observer"))
        .await
        .unwrap();
    assert_eq!(
        two_levels.subscribe("+/+").await,
        [rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    assert_eq!(
        two_levels.subscribe("$SYS/#").await,
        [rumqttc::SubscribeReasonCode::Failure],
        "$ topics stay closed"
    );

    // A device speaking for itself (anonymous, client id = thing id) and a raw publisher.
    let mut dev = Device::connect(anonymous_options(&hub, "dev-1"))
        .await
        .unwrap();
    dev.publish("things/dev-1/state", r#"{"t": 1}"#, false)
        .await;
    assert_eq!(
        everything.next().await,
        ("things/dev-1/state".into(), r#"{"t": 1}"#.into())
    );
    dev.publish("plant/line1", "42", false).await;
    assert_eq!(everything.next().await, ("plant/line1".into(), "42".into()));
    let (topic, payload, _) = two_levels.next_publish().await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("plant/line1", &b"42"[..])
    );
    everything.nothing().await;
    dev.disconnect().await;
    two_levels.disconnect().await;
}

/// MQTT 5 "no local": a subscriber that asked for it does not get its own messages (QoS 0, 1
/// and 2), others on the same topic do, and it still gets everyone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_subscriber_does_not_get_its_own_messages() {
    let hub = TestHub::start().await;
    let mut a = Client5::connect(&hub, "chat-a").await;
    let mut b = Client5::connect(&hub, "chat-b").await;
    a.subscribe("chat/#", true).await;
    b.subscribe("chat/#", true).await;

    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let payload = format!("from a {i}");
        a.publish("chat/room", payload.as_bytes(), qos).await;
        assert_eq!(
            b.next_publish().await,
            ("chat/room".to_owned(), payload.into_bytes())
        );
    }
    a.no_publish().await;

    b.publish("chat/room", b"from b", QoS::AtLeastOnce).await;
    assert_eq!(
        a.next_publish().await,
        ("chat/room".to_owned(), b"from b".to_vec())
    );
    b.no_publish().await;

    // The router's QoS 2 flow for the dropped copy was completed: a keeps working.
    a.publish("chat/room", b"again", QoS::ExactlyOnce).await;
    assert_eq!(
        b.next_publish().await,
        ("chat/room".to_owned(), b"again".to_vec())
    );
    a.no_publish().await;
}

/// An MQTT 5 client publishing at QoS 1 is told why the hub rejected its message: 0x99
/// (payload format invalid) for a report its thing's topic cannot take, 0x97 (quota exceeded;
/// a PUBACK cannot carry 0x95) for one over `max_message_bytes`. The connection stays up, and
/// the rejections are counted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_puback_says_why_a_message_was_rejected() {
    let hub = TestHub::start_with(|c| c.mqtt.max_message_bytes = 64).await;
    let mut dev = Client5::connect(&hub, "dev-9").await;

    let before = mqtt_stats(&hub).rejected_payloads;
    assert_eq!(
        dev.publish("things/dev-9/state", b"not json", QoS::AtLeastOnce)
            .await,
        Some(PubAckReason::PayloadFormatInvalid)
    );
    assert_eq!(
        dev.publish("plant/big", &[b'x'; 100], QoS::AtLeastOnce)
            .await,
        Some(PubAckReason::QuotaExceeded)
    );
    assert_eq!(
        dev.publish("plant/ok", b"1", QoS::AtLeastOnce).await,
        Some(PubAckReason::Success)
    );

    // 300 bad reports: every one answered and counted (the log holds one line per cause and
    // interval, see `gateways::mqtt::log_limit`).
    for _ in 0..300 {
        assert_eq!(
            dev.publish("things/dev-9/state", b"[1]", QoS::AtLeastOnce)
                .await,
            Some(PubAckReason::PayloadFormatInvalid)
        );
    }
    until("302 rejections counted", || {
        mqtt_stats(&hub).rejected_payloads == before + 302
    })
    .await;
}

/// A report that breaks its thing's type is refused where every report is checked, the things
/// service, and an MQTT 5 device still hears why in its PUBACK (0x99), through the barrier that
/// follows its message; good reports around it are acknowledged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_puback_carries_the_hubs_type_check() {
    let hub = TestHub::start().await;
    let app = hub.local_client("conformance-app");
    let provisioned = app
        .call(
            "brume.things.provision",
            vec![],
            hub::wamp::dict([
                ("thing", hub::wamp::Value::from("th-5")),
                ("type", hub::wamp::Value::from("thermostat")),
            ]),
        )
        .await
        .unwrap();
    let secret = serde_json::Value::from(provisioned.payload.arg(0).unwrap())["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut dev = Client5::connect_with(&hub, "th-5-fw", Some(("th-5", &secret))).await;
    let invalid = || hub::things::ThingsStats::get(&hub.hub.things().stats().invalid_reports);
    let before = invalid();
    assert_eq!(
        dev.publish(
            "things/th-5/state",
            br#"{"temperature": 21}"#,
            QoS::AtLeastOnce
        )
        .await,
        Some(PubAckReason::Success)
    );
    assert_eq!(
        dev.publish(
            "things/th-5/state",
            br#"{"temperature": 500}"#,
            QoS::AtLeastOnce
        )
        .await,
        Some(PubAckReason::PayloadFormatInvalid)
    );
    assert_eq!(
        dev.publish(
            "things/th-5/state",
            br#"{"mode": "party"}"#,
            QoS::AtLeastOnce
        )
        .await,
        Some(PubAckReason::PayloadFormatInvalid)
    );
    assert_eq!(
        dev.publish(
            "things/th-5/state",
            br#"{"temperature": 22}"#,
            QoS::AtLeastOnce
        )
        .await,
        Some(PubAckReason::Success)
    );
    assert_eq!(invalid(), before + 2);
    let thing = app
        .call(
            "brume.things.get",
            vec![],
            hub::wamp::dict([("thing", hub::wamp::Value::from("th-5"))]),
        )
        .await
        .unwrap();
    let thing = serde_json::Value::from(thing.payload.arg(0).unwrap());
    assert_eq!(thing["reported"]["temperature"]["value"], 22, "{thing}");
}
