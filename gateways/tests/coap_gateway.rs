//! The CoAP gateway over real UDP on port 0, driven through a `GatewayIo` pair: devices are raw
//! packets (for exact control) or the engine's own client driver (for block-wise and Observe),
//! and a CoAP-server device is the engine's server driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use device_models::{DeviceCommand, DeviceEvent, ThingId, TypeCatalog};
use gateways::coap::client::ClientEvent;
use gateways::coap::driver::{
    ClientDriverConfig, ClientHandle, ServerDriverConfig, spawn_client, spawn_server,
};
use gateways::coap::gateway::{CoapBinding, CoapConfig, CoapGateway, DeviceConfig};
use gateways::coap::server::{Request, Response, ServerEvent};
use gateways::link::{HubEnds, StandInEvents};
use gateways::{GatewayIo, StaticCredentials};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(20);

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn credentials() -> Arc<StaticCredentials> {
    let mut m = HashMap::new();
    for t in ["t1", "t2", "t3", "flood", "calm", "boiler"] {
        m.insert(t.to_owned(), SECRET.to_owned());
    }
    Arc::new(StaticCredentials(m))
}

fn test_config() -> CoapConfig {
    CoapConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..CoapConfig::default()
    }
}

/// A running gateway and the hub's ends of its link.
struct Harness {
    addr: SocketAddr,
    hub: HubEnds,
    shutdown: CancellationToken,
    gateway: Option<CoapGateway>,
}

impl Harness {
    async fn start(config: CoapConfig) -> Self {
        Self::start_with(config, 256).await
    }

    /// A gateway whose stand-in hub takes every event and commits at once.
    async fn start_with(config: CoapConfig, capacity: usize) -> Self {
        let mut h = Self::paused(config, capacity).await;
        let (_, dummy) = tokio::sync::mpsc::channel(1);
        let events = std::mem::replace(&mut h.hub.events, StandInEvents::new(dummy));
        h.hub.events = events.relay(capacity);
        h
    }

    /// A gateway whose stand-in hub reads (and commits) only when the test reads an event.
    async fn paused(config: CoapConfig, capacity: usize) -> Self {
        init_logging();
        let (io, hub) = GatewayIo::pair("coap", capacity, credentials());
        let shutdown = CancellationToken::new();
        let gateway = CoapGateway::start(&config, &TypeCatalog::new(), io, shutdown.clone())
            .await
            .unwrap();
        Self {
            addr: gateway.local_addr(),
            hub,
            shutdown,
            gateway: Some(gateway),
        }
    }

    async fn event(&mut self) -> DeviceEvent {
        timeout(WAIT, self.hub.events.recv())
            .await
            .expect("an event in time")
            .expect("gateway alive")
    }

    /// The next event that is not presence (`Hello`/`Online`).
    async fn data_event(&mut self) -> DeviceEvent {
        loop {
            match self.event().await {
                DeviceEvent::Hello { .. } | DeviceEvent::Online { .. } => {}
                other => return other,
            }
        }
    }

    async fn no_event(&mut self, within: Duration) {
        if let Ok(Some(e)) = timeout(within, self.hub.events.recv()).await {
            panic!("unexpected event {e:?}");
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(g) = self.gateway.take() {
            timeout(WAIT, g.join()).await.unwrap().unwrap();
        }
    }
}

/// A device speaking raw CoAP, for exact control of what goes on the wire.
struct RawDevice {
    socket: UdpSocket,
    gateway: SocketAddr,
    mid: u16,
}

struct Msg {
    method: RequestType,
    path: String,
    query: Vec<String>,
    content_format: Option<u16>,
    accept: Option<u16>,
    payload: Vec<u8>,
    confirmable: bool,
}

impl Msg {
    fn new(method: RequestType, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            query: vec![format!("s={SECRET}")],
            content_format: None,
            accept: None,
            payload: Vec::new(),
            confirmable: true,
        }
    }
    fn post(path: &str, body: Value) -> Self {
        Self::new(RequestType::Post, path).body(50, body.to_string().into_bytes())
    }
    fn body(mut self, cf: u16, payload: Vec<u8>) -> Self {
        self.content_format = Some(cf);
        self.payload = payload;
        self
    }
    fn query(mut self, q: &[&str]) -> Self {
        self.query = q.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    fn non(mut self) -> Self {
        self.confirmable = false;
        self
    }
    fn packet(&self, mid: u16) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(if self.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.header.code = MessageClass::Request(self.method);
        p.header.message_id = mid;
        p.set_token(mid.to_be_bytes().to_vec());
        for seg in self.path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if let Some(cf) = self.content_format {
            p.add_option(CoapOption::ContentFormat, uint(cf));
        }
        for q in &self.query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        if let Some(a) = self.accept {
            p.add_option(CoapOption::Accept, uint(a));
        }
        p.payload = self.payload.clone();
        p
    }
}

fn uint(v: u16) -> Vec<u8> {
    let b = v.to_be_bytes();
    match v {
        0 => Vec::new(),
        1..=255 => vec![b[1]],
        _ => b.to_vec(),
    }
}

impl RawDevice {
    async fn new(gateway: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            gateway,
            mid: 100,
        }
    }

    async fn send_bytes(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.gateway).await.unwrap();
    }

    async fn recv(&self, within: Duration) -> Option<Packet> {
        let mut buf = vec![0u8; 2048];
        match timeout(within, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(Packet::from_bytes(&buf[..n]).unwrap()),
            _ => None,
        }
    }

    /// Sends a request and waits for the answer with its message ID (piggy-backed).
    async fn call(&mut self, msg: Msg) -> Packet {
        self.mid = self.mid.wrapping_add(1);
        let mid = self.mid;
        let bytes = msg.packet(mid).to_bytes().unwrap();
        self.send_bytes(&bytes).await;
        let token = mid.to_be_bytes().to_vec();
        loop {
            let p = self.recv(WAIT).await.expect("an answer in time");
            if p.get_token() == token.as_slice() {
                return p;
            }
        }
    }
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test]
async fn push_state_in_json_and_cbor() {
    let mut h = Harness::start(test_config()).await;
    let mut dev = RawDevice::new(h.addr).await;
    let p = dev
        .call(
            Msg::post("/things/t1/state", json!({"temperature": 21.5}))
                .query(&["s=s3cret", "t=thermostat"]),
        )
        .await;
    assert_eq!(code(&p), ResponseType::Changed);
    assert_eq!(p.header.get_type(), MessageType::Acknowledgement);
    match h.event().await {
        DeviceEvent::Hello {
            thing, type_hint, ..
        } => {
            assert_eq!(thing, id("t1"));
            assert_eq!(type_hint.as_deref(), Some("thermostat"));
        }
        other => panic!("{other:?}"),
    }
    match h.event().await {
        DeviceEvent::Reported { thing, values, .. } => {
            assert_eq!(thing, id("t1"));
            assert_eq!(values["temperature"], json!(21.5));
        }
        other => panic!("{other:?}"),
    }
    let mut cbor = Vec::new();
    ciborium::into_writer(&json!({"temperature": 22, "on": true}), &mut cbor).unwrap();
    let p = dev
        .call(Msg::new(RequestType::Post, "/things/t1/state").body(60, cbor))
        .await;
    assert_eq!(code(&p), ResponseType::Changed);
    match h.event().await {
        DeviceEvent::Reported { values, .. } => {
            assert_eq!(
                Value::Object(values),
                json!({"temperature": 22, "on": true})
            );
        }
        other => panic!("{other:?}"),
    }
    // A NON request works the same, with a NON answer.
    let p = dev
        .call(Msg::post("/things/t1/events/fault", json!({"code": 3})).non())
        .await;
    assert_eq!(code(&p), ResponseType::Created);
    assert_eq!(p.header.get_type(), MessageType::NonConfirmable);
    assert!(matches!(h.event().await, DeviceEvent::Event { name, .. } if name == "fault"));
    h.stop().await;
}

#[tokio::test]
async fn duplicate_con_is_answered_once_with_one_event() {
    let mut h = Harness::start(test_config()).await;
    let dev = RawDevice::new(h.addr).await;
    let bytes = Msg::post("/things/t1/state", json!({"n": 1}))
        .packet(4242)
        .to_bytes()
        .unwrap();
    dev.send_bytes(&bytes).await;
    let first = dev.recv(WAIT).await.unwrap();
    dev.send_bytes(&bytes).await;
    let second = dev.recv(WAIT).await.unwrap();
    assert_eq!(first.to_bytes().unwrap(), second.to_bytes().unwrap());
    assert_eq!(code(&first), ResponseType::Changed);
    assert!(matches!(h.data_event().await, DeviceEvent::Reported { .. }));
    h.no_event(Duration::from_millis(300)).await;
    h.stop().await;
}

async fn engine_client() -> (ClientHandle, mpsc::Receiver<ClientEvent>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let parts = spawn_client(
        socket,
        ClientDriverConfig::default(),
        CancellationToken::new(),
    )
    .unwrap();
    (parts.handle, parts.events)
}

async fn client_event(rx: &mut mpsc::Receiver<ClientEvent>) -> ClientEvent {
    timeout(WAIT, rx.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn info_put_of_4_kib_goes_block_wise() {
    let mut h = Harness::start(test_config()).await;
    let (client, mut events) = engine_client().await;
    let notes = "x".repeat(4096);
    let body = json!({"firmware": "2.0.1", "notes": notes}).to_string();
    assert!(body.len() > 4096);
    let req = client
        .put(
            h.addr,
            &format!("/things/t2/info?s={SECRET}"),
            Some(50),
            Bytes::from(body),
        )
        .await
        .unwrap();
    match client_event(&mut events).await {
        ClientEvent::Response { id, code, .. } => {
            assert_eq!(id, req);
            assert_eq!(code, ResponseType::Changed);
        }
        other => panic!("{other:?}"),
    }
    // First contact: the info travels in the Hello.
    match h.event().await {
        DeviceEvent::Hello { info, .. } => {
            assert_eq!(info["firmware"], json!("2.0.1"));
            assert_eq!(info["notes"].as_str().unwrap().len(), 4096);
        }
        other => panic!("{other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn commands_arrive_as_notifications_and_replies_come_back() {
    let mut h = Harness::start(test_config()).await;
    let (client, mut events) = engine_client().await;
    let obs = client
        .observe(h.addr, &format!("/things/t1/commands?s={SECRET}"))
        .await
        .unwrap();
    let commands = |e: ClientEvent| match e {
        ClientEvent::Notification {
            id,
            payload,
            content_format,
        } => {
            assert_eq!(id, obs);
            assert_eq!(content_format, Some(50));
            serde_json::from_slice::<Value>(&payload).unwrap()["commands"].clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(commands(client_event(&mut events).await), json!([]));
    assert!(matches!(h.event().await, DeviceEvent::Hello { .. }));

    h.hub
        .commands
        .send(DeviceCommand::SetDesired {
            thing: id("t1"),
            values: json!({"setpoint": 22}).as_object().cloned().unwrap(),
        })
        .await
        .unwrap();
    let list = commands(client_event(&mut events).await);
    assert_eq!(list[0]["kind"], "desired");
    assert_eq!(list[0]["values"], json!({"setpoint": 22}));

    h.hub
        .commands
        .send(DeviceCommand::InvokeAction {
            thing: id("t1"),
            action: "boost".into(),
            input: json!({"minutes": 5}),
            correlation: "77".into(),
            deadline_ms: u64::MAX,
        })
        .await
        .unwrap();
    let list = commands(client_event(&mut events).await);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["id"], "77");
    assert_eq!(list[1]["action"], "boost");
    assert_eq!(list[1]["input"], json!({"minutes": 5}));

    let addr = h.addr;
    let post = |path: &str, body: Value| {
        let client = client.clone();
        let uri = format!("{path}?s={SECRET}");
        async move {
            client
                .request(
                    addr,
                    RequestType::Post,
                    &uri,
                    Some(50),
                    Bytes::from(body.to_string()),
                )
                .await
                .unwrap()
        }
    };
    post("/things/t1/replies", json!({"id": "77", "output": true})).await;
    assert!(matches!(
        client_event(&mut events).await,
        ClientEvent::Response {
            code: ResponseType::Changed,
            ..
        }
    ));
    match h.event().await {
        DeviceEvent::ActionReply {
            correlation,
            outcome,
            ..
        } => {
            assert_eq!(correlation, "77");
            assert_eq!(outcome, Ok(json!(true)));
        }
        other => panic!("{other:?}"),
    }
    // Reporting the desired value confirms it.
    post("/things/t1/state", json!({"setpoint": 22})).await;
    assert!(matches!(
        client_event(&mut events).await,
        ClientEvent::Response {
            code: ResponseType::Changed,
            ..
        }
    ));
    assert!(matches!(h.event().await, DeviceEvent::Reported { .. }));
    let get = client
        .get(h.addr, &format!("/things/t1/desired?s={SECRET}"))
        .await
        .unwrap();
    match client_event(&mut events).await {
        ClientEvent::Response { id, payload, .. } => {
            assert_eq!(id, get);
            assert_eq!(
                serde_json::from_slice::<Value>(&payload).unwrap(),
                json!({})
            );
        }
        other => panic!("{other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_code_or_is_dropped() {
    let config = CoapConfig {
        max_body_size: 1024,
        ..test_config()
    };
    let mut h = Harness::start(config).await;
    let mut dev = RawDevice::new(h.addr).await;
    // Garbage of every short length, a wrong version, a truncated option: dropped or reset.
    for n in 0..12 {
        dev.send_bytes(&vec![0xffu8; n]).await;
    }
    dev.send_bytes(&[0x80, 0x01, 0x00, 0x01]).await;
    dev.send_bytes(&[0x40, 0x02, 0x00, 0x07, 0xbd]).await;
    let mut answered = 0;
    while let Some(p) = dev.recv(Duration::from_millis(200)).await {
        assert_eq!(p.header.get_type(), MessageType::Reset);
        answered += 1;
    }
    assert!(answered <= 2);

    // An unknown critical option (odd number): 4.02.
    let mut p = Msg::post("/things/t1/state", json!({"a": 1})).packet(900);
    p.add_option(CoapOption::Unknown(2049), b"x".to_vec());
    dev.send_bytes(&p.to_bytes().unwrap()).await;
    let answer = dev.recv(WAIT).await.unwrap();
    assert_eq!(code(&answer), ResponseType::BadOption);

    let big = json!({"blob": "y".repeat(1100)});
    let cases = [
        (
            Msg::post("/things/t1/state", big),
            ResponseType::RequestEntityTooLarge,
        ),
        (
            Msg::post("/things/nobody/state", json!({"a": 1})),
            ResponseType::NotFound,
        ),
        (
            Msg::post("/things/t1/state", json!({"a": 1})).query(&["s=wrong"]),
            ResponseType::Unauthorized,
        ),
        (
            Msg::new(RequestType::Post, "/things/t1/state").body(0, b"21".to_vec()),
            ResponseType::UnsupportedContentFormat,
        ),
        (
            Msg::new(RequestType::Post, "/things/t1/state").body(50, b"{oops".to_vec()),
            ResponseType::BadRequest,
        ),
        (
            Msg::post("/things/t1/state", json!([1, 2])),
            ResponseType::BadRequest,
        ),
        (
            Msg::new(RequestType::Put, "/things/t1/state"),
            ResponseType::MethodNotAllowed,
        ),
        (
            Msg::new(RequestType::Get, "/no/such/thing"),
            ResponseType::NotFound,
        ),
    ];
    for (msg, want) in cases {
        let path = msg.path.clone();
        let answer = dev.call(msg).await;
        assert_eq!(code(&answer), want, "{path}");
    }
    // The gateway is still fine, and none of the above made an event.
    let p = dev
        .call(Msg::post("/things/t1/state", json!({"ok": true})))
        .await;
    assert_eq!(code(&p), ResponseType::Changed);
    assert!(matches!(h.event().await, DeviceEvent::Hello { .. }));
    match h.event().await {
        DeviceEvent::Reported { values, .. } => assert_eq!(values["ok"], json!(true)),
        other => panic!("{other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn a_flood_from_one_address_does_not_starve_another() {
    let config = CoapConfig {
        rate_limit_per_second: 200.0,
        rate_limit_burst: 100,
        ..test_config()
    };
    let mut h = Harness::start_with(config, 16_384).await;
    let flood = RawDevice::new(h.addr).await;
    let mut calm = RawDevice::new(h.addr).await;
    // The flood goes on for as long as the calm device works, so every calm request meets it,
    // however fast or slow the machine runs either side.
    let (calm_done, mut stop) = tokio::sync::watch::channel(false);
    let flooding = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut sent = 0u32;
        while !*stop.borrow_and_update() || sent < 2_000 {
            for _ in 0..50 {
                sent += 1;
                let mid = sent as u16;
                let bytes = Msg::post("/things/flood/state", json!({"n": mid}))
                    .non()
                    .packet(mid)
                    .to_bytes()
                    .unwrap();
                flood.send_bytes(&bytes).await;
            }
            tokio::task::yield_now().await;
        }
        (sent, started.elapsed())
    });
    for n in 0..20 {
        let p = calm
            .call(Msg::post("/things/calm/state", json!({"n": n})))
            .await;
        assert_eq!(code(&p), ResponseType::Changed, "calm request {n}");
    }
    calm_done.send_replace(true);
    let (sent, flood_time) = flooding.await.unwrap();
    // One more calm request after the flood's last datagram: the gateway reads its socket in
    // order, so once this is answered every flood datagram has been admitted or dropped.
    let p = calm
        .call(Msg::post("/things/calm/state", json!({"n": 20})))
        .await;
    assert_eq!(code(&p), ResponseType::Changed);
    let (mut from_flood, mut from_calm) = (0u32, 0u32);
    while let Ok(e) = h.hub.events.try_recv() {
        if let DeviceEvent::Reported { thing, .. } = e {
            if thing == id("flood") {
                from_flood += 1;
            } else {
                from_calm += 1;
            }
        }
    }
    assert_eq!(from_calm, 21, "every calm request got through");
    // The burst plus the rate over the flood's duration at most; the rest were dropped before
    // parsing (and some may have been dropped by the kernel's socket buffer).
    let allowed = 100.0 + 200.0 * flood_time.as_secs_f64() + 1.0;
    assert!(
        f64::from(from_flood) <= allowed && from_flood < sent,
        "flood sent {sent} in {flood_time:?}, admitted {from_flood} (at most {allowed:.0})"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_hub_that_cannot_keep_up_gets_devices_to_retry() {
    // Room for one batch (one burst's events and their barrier); the hub reads nothing until
    // told.
    let mut h = Harness::paused(test_config(), 1).await;
    let mut first = RawDevice::new(h.addr).await;
    let mut dev = RawDevice::new(h.addr).await;
    // Queued, but not answered before the hub has committed it.
    let pending = tokio::spawn(async move {
        first
            .call(Msg::post("/things/t1/state", json!({"n": 1})))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "answered before the hub took it");
    let busy = dev
        .call(Msg::post("/things/t2/state", json!({"n": 2})))
        .await;
    assert_eq!(code(&busy), ResponseType::ServiceUnavailable);
    // Once the hub drains (and commits), the first device is answered and the other gets
    // through again.
    assert!(matches!(h.event().await, DeviceEvent::Hello { .. }));
    assert!(matches!(h.event().await, DeviceEvent::Reported { .. }));
    let events = h.hub.events;
    h.hub.events = events.relay(3);
    let ok = timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(code(&ok), ResponseType::Changed);
    let ok = dev
        .call(Msg::post("/things/t2/state", json!({"n": 3})))
        .await;
    assert_eq!(code(&ok), ResponseType::Changed);
    h.stop().await;
}

/// A confirmable report is answered only once the hub says its events are committed; a
/// failed commit gets 5.03, so the device sends it again.
#[tokio::test]
async fn a_confirmable_report_is_answered_after_its_commit() {
    let mut h = Harness::paused(test_config(), 16).await;
    let mut dev = RawDevice::new(h.addr).await;
    let mut raw = std::mem::replace(
        &mut h.hub.events,
        StandInEvents::new(tokio::sync::mpsc::channel(1).1),
    )
    .into_inner();
    let call = tokio::spawn(async move {
        let a = dev
            .call(Msg::post("/things/t1/state", json!({"n": 1})))
            .await;
        let b = dev
            .call(Msg::post("/things/t1/state", json!({"n": 2})))
            .await;
        (a, b)
    });
    let first = batch(&mut raw).await;
    assert!(matches!(
        &first.events[..],
        [DeviceEvent::Hello { .. }, DeviceEvent::Reported { .. }]
    ));
    let (commit, ranges) = first.covered.expect("the report is covered");
    assert_eq!(ranges, vec![0..2_u32]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "answered before the commit");
    commit.answer(Ok(()));
    let second = batch(&mut raw).await;
    let (commit, _) = second.covered.expect("the report is covered");
    commit.answer(Err(device_models::CommitError::WriteFailed));
    let (a, b) = timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(code(&a), ResponseType::Changed);
    assert_eq!(code(&b), ResponseType::ServiceUnavailable);
    h.stop().await;
}

/// The next event on the raw channel, which must be a batch.
async fn batch(raw: &mut tokio::sync::mpsc::Receiver<DeviceEvent>) -> device_models::EventBatch {
    match timeout(WAIT, raw.recv()).await.unwrap().unwrap() {
        DeviceEvent::Batch(batch) => *batch,
        other => panic!("{other:?}"),
    }
}

/// Sends a confirmable report (message id 7) for each of `things` from its own socket, never
/// yielding to the gateway's tasks (a current-thread runtime): they are queued on its socket
/// together and handled in one burst.
fn burst_of_reports(
    h: &Harness,
    things: &[&str],
    values: impl Fn(usize) -> Value,
) -> Vec<RawDevice> {
    let mut devices = Vec::new();
    for (i, thing) in things.iter().enumerate() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let msg = Msg::post(&format!("/things/{thing}/state"), values(i));
        socket
            .send_to(&msg.packet(7).to_bytes().unwrap(), h.addr)
            .unwrap();
        socket.set_nonblocking(true).unwrap();
        devices.push(RawDevice {
            socket: UdpSocket::from_std(socket).unwrap(),
            gateway: h.addr,
            mid: 7,
        });
    }
    devices
}

/// A request whose events the hub refused (marked in the barrier of their batch) gets 4.00
/// Bad Request with a diagnostic; the others of its batch get their success.
#[tokio::test]
async fn a_refused_report_gets_4_00_and_its_batch_neighbours_2_04() {
    let mut h = Harness::paused(test_config(), 64).await;
    let mut raw = std::mem::replace(
        &mut h.hub.events,
        StandInEvents::new(tokio::sync::mpsc::channel(1).1),
    )
    .into_inner();
    let devices = burst_of_reports(&h, &["t1", "t2", "t3"], |i| json!({"n": i}));
    let b = batch(&mut raw).await;
    let (commit, ranges) = b.covered.expect("the reports are covered");
    assert_eq!(
        ranges,
        [0..2, 2..4, 4..6],
        "one member per request, in order"
    );
    commit.refuse(1);
    commit.answer(Ok(()));
    let codes: Vec<_> = futures_util::future::join_all(devices.iter().map(|d| d.recv(WAIT)))
        .await
        .into_iter()
        .map(|a| a.expect("answered"))
        .collect();
    assert_eq!(code(&codes[0]), ResponseType::Changed);
    assert_eq!(code(&codes[1]), ResponseType::BadRequest);
    assert_eq!(codes[1].payload, b"does not fit the thing's type");
    assert_eq!(code(&codes[2]), ResponseType::Changed);
    h.stop().await;
}

/// Confirmable reports the gateway takes in one burst go as one batch with one barrier behind
/// all their events: the hub commits once for all of them, and each is answered only after
/// that commit.
#[tokio::test]
async fn reports_taken_in_one_burst_share_one_commit() {
    const THINGS: [&str; 6] = ["t1", "t2", "t3", "flood", "calm", "boiler"];
    const DEVICES: usize = THINGS.len();
    let mut h = Harness::paused(test_config(), 64).await;
    let mut raw = std::mem::replace(
        &mut h.hub.events,
        StandInEvents::new(tokio::sync::mpsc::channel(1).1),
    )
    .into_inner();
    let devices = burst_of_reports(&h, &THINGS, |i| json!({"n": i}));
    let b = batch(&mut raw).await;
    let reported = b
        .events
        .iter()
        .filter(|e| matches!(e, DeviceEvent::Reported { .. }))
        .count();
    assert_eq!(reported, DEVICES, "every report in the one batch");
    let (commit, ranges) = b.covered.expect("the reports are covered");
    assert_eq!(ranges.len(), DEVICES, "one member per request");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), raw.recv())
            .await
            .is_err(),
        "one batch for the burst"
    );
    for dev in &devices {
        assert!(
            dev.recv(Duration::from_millis(50)).await.is_none(),
            "answered before the commit"
        );
    }
    commit.answer(Ok(()));
    for dev in &devices {
        let answer = dev.recv(WAIT).await.expect("answered after the commit");
        assert_eq!(code(&answer), ResponseType::Changed);
    }
    h.stop().await;
}

#[tokio::test]
async fn silent_devices_go_offline_and_come_back() {
    let config = CoapConfig {
        offline_after_secs: 1,
        ..test_config()
    };
    let mut h = Harness::start(config).await;
    let mut dev = RawDevice::new(h.addr).await;
    dev.call(Msg::post("/things/t3/state", json!({"n": 1})))
        .await;
    assert!(matches!(h.event().await, DeviceEvent::Hello { .. }));
    assert!(matches!(h.event().await, DeviceEvent::Reported { .. }));
    assert!(matches!(h.event().await, DeviceEvent::Offline { thing } if thing == id("t3")));
    dev.call(Msg::post("/things/t3/state", json!({"n": 2})))
        .await;
    assert!(matches!(h.event().await, DeviceEvent::Online { .. }));
    h.stop().await;
}

#[tokio::test]
async fn a_remote_bind_requires_the_secret() {
    let config = CoapConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..CoapConfig::default()
    };
    assert!(config.auth_required());
    let h = Harness::start(config).await;
    let target = SocketAddr::from(([127, 0, 0, 1], h.addr.port()));
    let mut dev = RawDevice::new(target).await;
    let p = dev
        .call(Msg::post("/things/t1/state", json!({"n": 1})).query(&[]))
        .await;
    assert_eq!(code(&p), ResponseType::Unauthorized);
    let p = dev
        .call(Msg::post("/things/t1/state", json!({"n": 1})))
        .await;
    assert_eq!(code(&p), ResponseType::Changed);
    h.stop().await;
}

/// A tiny CoAP-server device on the engine's server driver: an observable temperature, a
/// writable setpoint and a `boost` action.
async fn server_device() -> (SocketAddr, mpsc::Sender<f64>, mpsc::Receiver<Request>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let parts = spawn_server(
        socket,
        ServerDriverConfig::default(),
        CancellationToken::new(),
    )
    .unwrap();
    let (temp_tx, mut temp_rx) = mpsc::channel::<f64>(8);
    let (seen_tx, seen_rx) = mpsc::channel::<Request>(8);
    let handle = parts.handle.clone();
    let mut events = parts.events;
    tokio::spawn(async move {
        let mut temperature = 20.0;
        loop {
            tokio::select! {
                Some(t) = temp_rx.recv() => {
                    temperature = t;
                    let body = Bytes::from(json!(t).to_string());
                    handle.notify_content("sensors/temperature", 50, body).await.unwrap();
                }
                Some(ev) = events.recv() => {
                    let ServerEvent::Request(req) = ev else { continue };
                    let response = match (req.method, req.path.join("/").as_str()) {
                        (RequestType::Get, "sensors/temperature") => {
                            Response::content(50, json!(temperature).to_string())
                        }
                        (RequestType::Get, "config/setpoint") => Response::content(50, "20"),
                        (RequestType::Put, "config/setpoint") => Response::new(ResponseType::Changed),
                        (RequestType::Post, "actions/boost") => {
                            Response { content_format: Some(50), payload: Bytes::from("true"), ..Response::new(ResponseType::Changed) }
                        }
                        _ => Response::new(ResponseType::NotFound),
                    };
                    let _ = seen_tx.try_send(req.clone());
                    handle.respond(req.id, response).await.unwrap();
                }
                else => break,
            }
        }
    });
    (parts.local_addr, temp_tx, seen_rx)
}

#[tokio::test]
async fn the_gateway_observes_a_coap_server_device() {
    let (device, temperature, mut seen) = server_device().await;
    let binding: CoapBinding = toml::from_str(
        r#"
        properties.temperature.path = "/sensors/temperature"
        properties.setpoint.path = "/config/setpoint"
        actions.boost.path = "/actions/boost"
        "#,
    )
    .unwrap();
    let config = CoapConfig {
        devices: vec![DeviceConfig {
            thing: id("boiler"),
            type_id: None,
            uri: format!("coap://{device}"),
            binding: Some(binding),
        }],
        ..test_config()
    };
    let mut h = Harness::start(config).await;
    assert!(matches!(h.event().await, DeviceEvent::Hello { thing, .. } if thing == id("boiler")));
    let mut first = serde_json::Map::new();
    for _ in 0..2 {
        match h.event().await {
            DeviceEvent::Reported { values, .. } => first.extend(values),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        Value::Object(first),
        json!({"temperature": 20.0, "setpoint": 20})
    );
    // Registrations went to the device as GETs with Observe.
    for _ in 0..2 {
        let req = seen.recv().await.unwrap();
        assert!(req.observe.is_some());
    }

    temperature.send(23.5).await.unwrap();
    match h.event().await {
        DeviceEvent::Reported { values, .. } => assert_eq!(values["temperature"], json!(23.5)),
        other => panic!("{other:?}"),
    }

    h.hub
        .commands
        .send(DeviceCommand::SetDesired {
            thing: id("boiler"),
            values: json!({"setpoint": 21.5}).as_object().cloned().unwrap(),
        })
        .await
        .unwrap();
    let put = timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    assert_eq!(put.method, RequestType::Put);
    assert_eq!(put.path, ["config", "setpoint"]);
    assert_eq!(put.payload, Bytes::from("21.5"));

    h.hub
        .commands
        .send(DeviceCommand::InvokeAction {
            thing: id("boiler"),
            action: "boost".into(),
            input: json!({"minutes": 5}),
            correlation: "c9".into(),
            deadline_ms: u64::MAX,
        })
        .await
        .unwrap();
    let post = timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    assert_eq!(post.method, RequestType::Post);
    assert_eq!(post.payload, Bytes::from("{\"minutes\":5}"));
    match h.data_event().await {
        DeviceEvent::ActionReply {
            correlation,
            outcome,
            ..
        } => {
            assert_eq!(correlation, "c9");
            assert_eq!(outcome, Ok(json!(true)));
        }
        other => panic!("{other:?}"),
    }
    h.stop().await;
}
