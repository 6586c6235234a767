//! What the MQTT end-to-end tests drive: a hub on port 0, Autobahn-Python as the WAMP app
//! (`tests/peers/mqtt_wamp_app.py`, one JSON command per line), rumqttc devices, Debian's
//! mosquitto clients and a paho-mqtt Tasmota plug (`tests/peers/mqtt_tasmota.py`).
//!
//! Everything waits on what it expects (an event, a packet, a line) with a deadline; the only
//! fixed waits are the short quiet periods that check nothing more arrives.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use tests::hub::TestHub;
use tests::peers;

/// How long anything expected may take.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing more arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// A hub with every listener on port 0; MQTT devices may log in or (loopback) stay anonymous.
pub async fn start_hub() -> TestHub {
    TestHub::start_with(|_| {}).await
}

pub fn mqtt_addr(hub: &TestHub) -> SocketAddr {
    hub.hub.gateway_addrs().mqtt.expect("MQTT gateway running")
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Autobahn-Python, driven over stdin/stdout.

#[derive(Default)]
struct Routes {
    replies: HashMap<u64, oneshot::Sender<Json>>,
    subs: HashMap<String, mpsc::UnboundedSender<Json>>,
}

/// A running `mqtt_wamp_app.py`: one Autobahn session in realm `brume`.
pub struct App {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    next: AtomicU64,
    routes: Arc<Mutex<Routes>>,
    stderr: Arc<Mutex<String>>,
}

/// A WAMP error as the app saw it.
#[derive(Debug, Clone)]
pub struct AppError {
    pub uri: String,
    pub args: Json,
    pub kwargs: Json,
}

impl App {
    /// Starts the app over `transport` (`websocket` or `rawsocket`) with `ser` (`json` or
    /// `msgpack`) and waits for it to join.
    pub async fn start(hub: &TestHub, transport: &str, ser: &str) -> App {
        let python = tokio::task::spawn_blocking(peers::python)
            .await
            .expect("install task");
        let mut child = Command::new(python)
            .arg(peers::scripts_dir().join("mqtt_wamp_app.py"))
            .arg(hub.url(transport))
            .arg(ser)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the Autobahn app");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err_lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await;
        match ready {
            Ok(Ok(Some(l))) if l == "READY" => {}
            other => panic!(
                "the Autobahn app did not join: {other:?}\n{}",
                stderr.lock().unwrap()
            ),
        }
        let routes = Arc::new(Mutex::new(Routes::default()));
        let r = routes.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let doc: Json = match serde_json::from_str(&line) {
                    Ok(d) => d,
                    Err(e) => panic!("the Autobahn app wrote {line:?}: {e}"),
                };
                let mut routes = r.lock().unwrap();
                if let Some(id) = doc.get("id").and_then(Json::as_u64) {
                    if let Some(tx) = routes.replies.remove(&id) {
                        let _ = tx.send(doc);
                    }
                } else if let Some(sub) = doc.get("sub").and_then(Json::as_str)
                    && let Some(tx) = routes.subs.get(sub)
                {
                    let _ = tx.send(doc);
                }
            }
        });
        App {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            next: AtomicU64::new(1),
            routes,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn request(&self, mut cmd: Json) -> Json {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.routes.lock().unwrap().replies.insert(id, tx);
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .lock()
            .await
            .write_all(line.as_bytes())
            .await
            .expect("write to the Autobahn app");
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(doc)) => doc,
            _ => panic!(
                "no answer from the Autobahn app to {cmd}\n{}",
                self.stderr()
            ),
        }
    }

    /// Calls `procedure` with keyword arguments.
    pub async fn call(&self, procedure: &str, kwargs: Json) -> Result<Json, AppError> {
        let doc = self
            .request(json!({ "op": "call", "procedure": procedure, "kwargs": kwargs }))
            .await;
        match doc.get("error").and_then(Json::as_str) {
            Some("test.exception") => panic!("the Autobahn app failed: {doc}"),
            Some(uri) => Err(AppError {
                uri: uri.to_owned(),
                args: doc["args"].clone(),
                kwargs: doc["kwargs"].clone(),
            }),
            None => Ok(doc["result"].clone()),
        }
    }

    /// Calls and expects success.
    pub async fn ok(&self, procedure: &str, kwargs: Json) -> Json {
        self.call(procedure, kwargs)
            .await
            .unwrap_or_else(|e| panic!("{procedure} failed: {e:?}"))
    }

    /// Calls and expects the error `uri`.
    pub async fn err(&self, procedure: &str, kwargs: Json, uri: &str) -> AppError {
        match self.call(procedure, kwargs).await {
            Ok(v) => panic!("{procedure} succeeded with {v}; expected {uri}"),
            Err(e) => {
                assert_eq!(e.uri, uri, "{procedure}: {e:?}");
                e
            }
        }
    }

    /// Subscribes with a match policy (`exact`, `prefix`, `wildcard`).
    pub async fn subscribe(&self, topic: &str, policy: &str) -> AppSub {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap()
            .subs
            .insert(topic.to_owned(), tx);
        let doc = self
            .request(json!({ "op": "subscribe", "topic": topic, "match": policy }))
            .await;
        assert_eq!(doc["ok"], json!(true), "subscribe {topic}: {doc}");
        AppSub {
            topic: topic.to_owned(),
            rx,
        }
    }

    /// Publishes positional arguments, acknowledged by the router.
    pub async fn publish(&self, topic: &str, args: Json) {
        let doc = self
            .request(json!({ "op": "publish", "topic": topic, "args": args }))
            .await;
        assert_eq!(doc["ok"], json!(true), "publish {topic}: {doc}");
    }

    /// Provisions a thing and returns its secret.
    pub async fn provision(&self, thing: &str, type_id: &str) -> String {
        let r = self
            .ok(
                "brume.things.provision",
                json!({ "thing": thing, "type": type_id }),
            )
            .await;
        r["secret"].as_str().expect("a secret").to_owned()
    }

    /// Polls `brume.things.get` until `cond` holds.
    pub async fn wait_thing(&self, thing: &str, cond: impl Fn(&Json) -> bool) -> Json {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let t = self.ok("brume.things.get", json!({ "thing": thing })).await;
            if cond(&t) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "thing {thing} never reached the state wanted: {t}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves and waits for the script to exit.
    pub async fn quit(mut self) {
        let _ = self
            .stdin
            .get_mut()
            .write_all(b"{\"op\": \"quit\"}\n")
            .await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// Events of one subscription of the app: `{topic, args, kwargs}`.
pub struct AppSub {
    topic: String,
    rx: mpsc::UnboundedReceiver<Json>,
}

impl AppSub {
    pub async fn next(&mut self) -> Json {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event on {} in time", self.topic))
            .expect("the app's output ended")
    }

    /// The next event whose topic is `topic`, skipping others.
    pub async fn next_on(&mut self, topic: &str) -> Json {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no event on {topic} in time"))
                .expect("the app's output ended");
            if ev["topic"] == json!(topic) {
                return ev;
            }
        }
    }

    /// Asserts that no event arrives for [`QUIET`].
    pub async fn nothing(&mut self) {
        if let Ok(Some(ev)) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected event on {}: {ev}", self.topic);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc devices.

/// Options for a device logged in as `thing` with `secret`.
pub fn device_options(hub: &TestHub, client_id: &str, thing: &str, secret: &str) -> MqttOptions {
    let mut o = anonymous_options(hub, client_id);
    o.set_credentials(thing, secret);
    o
}

/// Options for a client without a login.
pub fn anonymous_options(hub: &TestHub, client_id: &str) -> MqttOptions {
    let addr = mqtt_addr(hub);
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// The last will a Brume device sets: `offline` on its status topic, retained.
pub fn offline_will(thing: &str) -> LastWill {
    LastWill::new(
        format!("things/{thing}/status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    )
}

/// A connected rumqttc client and the packets it receives.
pub struct Device {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    /// PUBLISH packets passed over while waiting for something else (an acknowledgement), kept
    /// in order for [`Device::next_publish`] and [`Device::no_publish`].
    held: VecDeque<Packet>,
    task: JoinHandle<()>,
    /// What the CONNACK said about a stored session.
    pub session_present: bool,
}

impl Device {
    /// Connects and waits for the CONNACK; `Err` holds the event loop's error.
    pub async fn connect(options: MqttOptions) -> Result<Device, String> {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, mut incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .map_err(|_| "no CONNACK".to_owned())?
            .ok_or("event loop ended")?;
        match first {
            Ok(Packet::ConnAck(ack)) => Ok(Device {
                client,
                incoming,
                held: VecDeque::new(),
                task,
                session_present: ack.session_present,
            }),
            Ok(other) => Err(format!("expected CONNACK, got {other:?}")),
            Err(e) => Err(e),
        }
    }

    /// The next packet `pick` accepts, skipping others (PUBLISH packets skipped are held for
    /// later and looked at first).
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        if let Some(i) = self.held.iter().position(|p| pick(p).is_some())
            && let Some(p) = self.held.remove(i)
            && let Some(t) = pick(&p)
        {
            return t;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("event loop ended")
                .expect("connection failed");
            if let Some(t) = pick(&p) {
                return t;
            }
            if matches!(p, Packet::Publish(_)) {
                self.held.push_back(p);
            }
        }
    }

    /// The next PUBLISH: (topic, payload, retain).
    pub async fn next_publish(&mut self) -> (String, Vec<u8>, bool) {
        self.expect(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.payload.to_vec(), p.retain)),
            _ => None,
        })
        .await
    }

    /// Asserts that no PUBLISH arrives for [`QUIET`], and that the connection stays up.
    pub async fn no_publish(&mut self) {
        if let Some(Packet::Publish(p)) = self.held.front() {
            panic!("unexpected PUBLISH on {}", p.topic);
        }
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(p) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            match p {
                Some(Ok(Packet::Publish(p))) => panic!("unexpected PUBLISH on {}", p.topic),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed: {e}"),
                None => panic!("event loop ended"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect(|p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes at QoS 1 and waits for the PUBACK, so the broker has it.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
        self.expect(|p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
    }

    /// Whether the connection is still up (its event loop has not failed).
    pub fn is_connected(&self) -> bool {
        !self.task.is_finished()
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }

    /// Drops the TCP connection without DISCONNECT, as a crashed device would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

// ---------------------------------------------------------------------------------------------
// Debian's mosquitto clients.

fn mosquitto_args(hub: &TestHub) -> Vec<String> {
    let addr = mqtt_addr(hub);
    vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
    ]
}

/// Runs `mosquitto_pub` with extra arguments at QoS 1 and returns how it ended.
pub async fn mosquitto_pub_status(hub: &TestHub, extra: &[&str]) -> std::process::Output {
    let bin = tokio::task::spawn_blocking(|| peers::apt("mosquitto_pub", "mosquitto-clients"))
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        Command::new(bin)
            .args(mosquitto_args(hub))
            .args(["-q", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub finished in time")
    .expect("mosquitto_pub ran")
}

/// Runs `mosquitto_pub` with extra arguments at QoS 1; panics unless it succeeds.
pub async fn mosquitto_pub(hub: &TestHub, extra: &[&str]) {
    let out = mosquitto_pub_status(hub, extra).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {extra:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `mosquitto_sub -v`, subscribed: each message as (topic, payload).
pub struct MosquittoSub {
    _child: Child,
    messages: mpsc::UnboundedReceiver<(String, String)>,
    filter: String,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub` on `filter` at QoS 1 and waits for its SUBACK.
    pub async fn start(hub: &TestHub, filter: &str) -> MosquittoSub {
        Self::start_with(hub, filter, &[]).await
    }

    /// [`MosquittoSub::start`] with extra arguments (`-u`, `-P`...).
    pub async fn start_with(hub: &TestHub, filter: &str, extra: &[&str]) -> MosquittoSub {
        let bin = tokio::task::spawn_blocking(|| peers::apt("mosquitto_sub", "mosquitto-clients"))
            .await
            .unwrap();
        // stdbuf: mosquitto_sub's debug lines are block-buffered on a pipe.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(bin)
            .args(mosquitto_args(hub))
            .args(extra)
            .args(["-q", "1", "-v", "-d", "-t", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto_sub");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, messages) = mpsc::unbounded_channel();
        let (sub_tx, sub_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut sub_tx = Some(sub_tx);
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(granted) = l.strip_prefix("Subscribed (mid: 1): ") {
                    if let Some(s) = sub_tx.take() {
                        let _ = s.send(granted.to_owned());
                    }
                } else if !l.starts_with("Client ") {
                    let (topic, payload) = l.split_once(' ').unwrap_or((&l, ""));
                    let _ = tx.send((topic.to_owned(), payload.to_owned()));
                }
            }
        });
        let granted = tokio::time::timeout(WAIT, sub_rx)
            .await
            .expect("mosquitto_sub subscribed in time")
            .expect("mosquitto_sub ended");
        assert_eq!(granted, "1", "mosquitto_sub granted QoS");
        MosquittoSub {
            _child: child,
            messages,
            filter: filter.to_owned(),
        }
    }

    pub async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(WAIT, self.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("mosquitto_sub on {} got nothing in time", self.filter))
            .expect("mosquitto_sub ended")
    }

    pub async fn nothing(&mut self) {
        if let Ok(Some(m)) = tokio::time::timeout(QUIET, self.messages.recv()).await {
            panic!("mosquitto_sub on {} got an unexpected {m:?}", self.filter);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The paho-mqtt Tasmota plug.

/// A running `mqtt_tasmota.py`.
pub struct Tasmota {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Tasmota {
    /// Starts the plug with Tasmota topic `topic`, logged in as `thing`, and waits until it is
    /// subscribed to its commands.
    pub async fn start(hub: &TestHub, topic: &str, thing: &str, secret: &str) -> Tasmota {
        let python = tokio::task::spawn_blocking(peers::python)
            .await
            .expect("install task");
        let addr = mqtt_addr(hub);
        let mut child = Command::new(python)
            .arg(peers::scripts_dir().join("mqtt_tasmota.py"))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args([topic, thing, secret])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the Tasmota plug");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                let _ = tx.send(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err_lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let mut plug = Tasmota {
            child,
            stdin,
            lines,
            stderr,
        };
        plug.expect_line("READY").await;
        plug
    }

    /// Waits for the line `want`, skipping others.
    pub async fn expect_line(&mut self, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l == want => return,
                Ok(Some(_)) => {}
                _ => panic!(
                    "the Tasmota plug never said {want:?}\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the Tasmota plug");
    }

    /// Kills the process: the broker publishes its last will.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
