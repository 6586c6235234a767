//! One MQTT client connection: reads its CONNECT within the connect timeout, asks the hooks to
//! authenticate it, attaches it to rumqttd's router through a local link, then moves packets both
//! ways until it ends, checking every PUBLISH and SUBSCRIBE against the ACL on the way in.
//!
//! This replaces rumqttd's own connection handling, which has no per-topic ACL hook, closes the
//! socket without a CONNACK on a failed login, and has no connect or disconnect events. Here:
//! - a refused login gets a CONNACK with the reason (3.1.1: 4 or 5; MQTT 5: 0x86 or 0x87);
//! - a refused PUBLISH is dropped before the router sees it; QoS 1 gets a PUBACK and QoS 2 a
//!   PUBREC (MQTT 5 with reason 0x87 "not authorized"; 3.1.1 has no negative ack, and the QoS 2
//!   flow is completed locally so the client does not resend forever);
//! - a SUBSCRIBE with any refused filter is refused whole: every filter gets 0x80 (3.1.1) or
//!   0x87 (MQTT 5), and nothing is subscribed;
//! - the last will is kept here, not in the router, and published through the client's own link
//!   when the connection is lost (not on DISCONNECT, session takeover or broker shutdown);
//! - MQTT 5 topic aliases are not offered (CONNACK says 0), so every PUBLISH names its topic and
//!   the ACL sees it.
//!
//! - a QoS 1 PUBACK (and a QoS 2 PUBREC) goes out only once the hub has committed what the
//!   PUBLISH carried ([`Hooks::published`] returns the wait); the connection keeps reading while
//!   acks are held, up to its in-flight limit. If the hub cannot write it, an MQTT 5 client gets
//!   the ack with reason 0x80 and a 3.1.1 client is disconnected without one, so it sends the
//!   message again.
//!
//! Per-connection state lives in this task only. A panic inside rumqttd's codec is caught, and
//! the connection is cleaned up as if the network had failed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use device_models::{CommitError, CommitWait};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt as _};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, QoS,
    SubAck, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, Span, debug, error, field, info, warn};

use super::codec::{Codec, CodecError};
use super::hub_link::build_publish;
use super::{ConnectRequest, Hooks, Outbound, Refusal, SessionEnd, Shared, Slot};
use crate::mqtt::topics::{is_filter, is_topic_name};

/// Characters rumqttd refuses in a client id.
const BAD_CLIENT_ID_CHARS: [char; 4] = ['+', '$', '#', '/'];

/// How long the final writes of a closing connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn serve<H: Hooks>(shared: Arc<Shared<H>>, stream: TcpStream, peer: SocketAddr) {
    let span = tracing::info_span!(
        "mqtt_connection",
        %peer,
        client = field::Empty,
        thing = field::Empty
    );
    run(shared, stream, peer).instrument(span).await;
}

async fn run<H: Hooks>(shared: Arc<Shared<H>>, mut stream: TcpStream, peer: SocketAddr) {
    let stats = shared.stats.clone();
    stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
    let limits = shared.limits.clone();
    let mut rbuf = BytesMut::with_capacity(256);

    let handshake = tokio::time::timeout(
        limits.connect_timeout,
        read_connect(&mut stream, &mut rbuf, limits.max_packet_bytes),
    )
    .await;
    let (codec, packet) = match handshake {
        Err(_) => {
            debug!("no CONNECT within the connect timeout");
            return;
        }
        Ok(Err(CodecError::UnsupportedLevel(level))) => {
            debug!(level, "unsupported protocol level");
            let mut out = BytesMut::new();
            let refuse = ConnAck {
                session_present: false,
                code: ConnectReturnCode::RefusedProtocolVersion,
            };
            let v4 = Codec::V4(rumqttd::protocol::v4::V4);
            if v4.write(Packet::ConnAck(refuse, None), &mut out).is_ok() {
                let _ = stream.write_all(&out).await;
            }
            return;
        }
        Ok(Err(error)) => {
            debug!(%error, "bad CONNECT");
            return;
        }
        Ok(Ok(x)) => x,
    };
    let Packet::Connect(connect, _props, will, _will_props, login) = packet else {
        return;
    };
    Span::current().record("client", connect.client_id.as_str());

    let request = ConnectRequest {
        client_id: &connect.client_id,
        username: login.as_ref().map(|l| l.username.as_str()),
        password: login.as_ref().map(|l| l.password.as_str()),
        peer,
    };
    let accepted = match shared.hooks.connect(&request) {
        Ok(a) => a,
        Err(refusal) => {
            stats
                .connections_refused_auth
                .fetch_add(1, Ordering::Relaxed);
            info!(?refusal, "MQTT connection refused");
            refuse(&mut stream, &codec, refusal).await;
            return;
        }
    };
    if let Some(key) = &accepted.key {
        Span::current().record("thing", key.as_str());
    }

    let will = match will {
        None => None,
        Some(w) => match will_topic(&w) {
            Some(topic) if shared.hooks.may_publish(&accepted.session, &topic) => Some((topic, w)),
            _ => {
                stats.acl_denied_publish.fetch_add(1, Ordering::Relaxed);
                warn!(topic = ?w.topic, "last will on a topic the client may not publish to");
                refuse(&mut stream, &codec, Refusal::NotAuthorized).await;
                shared
                    .hooks
                    .closed(accepted.session, SessionEnd::Clean)
                    .await;
                return;
            }
        },
    };

    let mut slot = None;
    let router_id = match (&accepted.key, connect.clean_session) {
        (Some(key), _) => format!("t.{key}"),
        (None, true) => {
            let s = Slot::take(&shared.slots);
            let id = format!("s.{}", s.n);
            slot = Some(s);
            id
        }
        (None, false) => {
            if connect.client_id.is_empty() || connect.client_id.contains(BAD_CLIENT_ID_CHARS) {
                refuse(&mut stream, &codec, Refusal::BadClientId).await;
                shared
                    .hooks
                    .closed(accepted.session, SessionEnd::Clean)
                    .await;
                return;
            }
            format!("a.{}", connect.client_id)
        }
    };

    let links = shared.links.clone();
    let (id, clean) = (router_id.clone(), connect.clean_session);
    let built = tokio::task::spawn_blocking(move || links(&id, clean)).await;
    let clean = connect.clean_session;
    let (link_tx, link_rx, ack) = match built {
        Ok(Ok(link)) => link,
        Ok(Err(error)) => {
            warn!(%error, %router_id, "the MQTT router refused the connection");
            refuse(&mut stream, &codec, Refusal::Unavailable).await;
            shared
                .hooks
                .closed(accepted.session, SessionEnd::Clean)
                .await;
            return;
        }
        Err(error) => {
            error!(%error, "link task failed");
            return;
        }
    };
    let session_present = match Option::<Packet>::from(ack) {
        Some(Packet::ConnAck(ack, _)) => ack.session_present,
        _ => false,
    };

    // Keep-alive: 0 means none, which is replaced by the server's ceiling; MQTT 5 clients are
    // told the value the server applies.
    let asked = connect.keep_alive;
    let applied = if asked == 0 || (codec.is_v5() && asked > limits.max_keep_alive_s) {
        limits.max_keep_alive_s
    } else {
        asked
    };
    let idle = Duration::from_millis(u64::from(applied) * 1500);
    let properties = codec.is_v5().then(|| ConnAckProperties {
        max_packet_size: u32::try_from(limits.max_packet_bytes).ok(),
        topic_alias_max: Some(0),
        server_keep_alive: (applied != asked).then_some(applied),
        assigned_client_identifier: connect.client_id.is_empty().then(|| router_id.clone()),
        ..ConnAckProperties::default()
    });

    let mut conn = Connection {
        hooks: shared.hooks.clone(),
        session: Some(accepted.session),
        stream,
        codec,
        rbuf,
        wbuf: BytesMut::with_capacity(256),
        link_tx,
        link_rx,
        refused_qos2: HashSet::new(),
        will,
        idle,
        limits,
        subscribed: Vec::new(),
        clean,
        held: FuturesOrdered::new(),
        awaiting: HashMap::new(),
    };
    let ack = ConnAck {
        session_present,
        code: ConnectReturnCode::Success,
    };
    conn.queue(Packet::ConnAck(ack, properties));
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    debug!(%router_id, session_present, "MQTT client connected");

    let end = match AssertUnwindSafe(conn.run(&shared)).catch_unwind().await {
        Ok(end) => end,
        Err(_) => {
            error!("MQTT connection task panicked; closing it");
            SessionEnd::Lost
        }
    };
    debug!(?end, "MQTT client disconnected");
    conn.finish(end, &shared).await;
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
}

/// Reads until a CONNECT is decoded.
async fn read_connect(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    max_packet_bytes: usize,
) -> Result<(Codec, Packet), CodecError> {
    let mut codec = None;
    loop {
        if codec.is_none() {
            codec = Codec::detect(rbuf)?;
        }
        if let Some(c) = codec.as_mut()
            && let Some(packet) = c.read(rbuf, max_packet_bytes, false)?
        {
            return Ok((c.clone(), packet));
        }
        match stream.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(CodecError::NotConnect),
            Ok(_) => {}
        }
    }
}

fn will_topic(will: &LastWill) -> Option<String> {
    let topic = std::str::from_utf8(&will.topic).ok()?;
    is_topic_name(topic).then(|| topic.to_owned())
}

/// Answers a refused CONNECT with the return code of the client's protocol version.
async fn refuse(stream: &mut TcpStream, codec: &Codec, refusal: Refusal) {
    let v5 = codec.is_v5();
    let code = match refusal {
        Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
        Refusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
        Refusal::BadClientId => ConnectReturnCode::ClientIdentifierNotValid,
        Refusal::Unavailable if v5 => ConnectReturnCode::ServerUnavailable,
        Refusal::Unavailable => ConnectReturnCode::ServiceUnavailable,
    };
    let mut out = BytesMut::new();
    let ack = ConnAck {
        session_present: false,
        code,
    };
    if codec.write(Packet::ConnAck(ack, None), &mut out).is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.write_all(&out)).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
}

/// What to do after one packet.
enum Flow {
    Continue,
    End(SessionEnd),
}

struct Connection<H: Hooks> {
    hooks: Arc<H>,
    /// Taken by `finish`.
    session: Option<H::Session>,
    stream: TcpStream,
    codec: Codec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    link_tx: LinkTx,
    link_rx: LinkRx,
    /// QoS 2 packet ids refused under 3.1.1, whose PUBREL is answered here.
    refused_qos2: HashSet<u16>,
    will: Option<(String, LastWill)>,
    idle: Duration,
    limits: super::Limits,
    /// Filters this connection counted in the broker's [`Interest`](super::interest::Interest).
    subscribed: Vec<String>,
    /// A clean session: its subscriptions end with the connection.
    clean: bool,
    /// Acks held until the hub committed their message, in the order they are due.
    held: FuturesOrdered<HeldAck>,
    /// Routed PUBLISHes whose commit is awaited, by packet id, until the router's ack for them
    /// comes and joins `held`.
    awaiting: HashMap<u16, CommitWait>,
}

/// An ack (PUBACK or PUBREC) and the commit it waits for.
type HeldAck = std::pin::Pin<Box<dyn Future<Output = (Packet, Result<(), CommitError>)> + Send>>;

fn hold(packet: Packet, wait: CommitWait) -> HeldAck {
    Box::pin(async move { (packet, wait.await) })
}

impl<H: Hooks> Connection<H> {
    async fn run(&mut self, shared: &Shared<H>) -> SessionEnd {
        loop {
            if let Err(end) = self.flush().await {
                return end;
            }
            tokio::select! {
                () = shared.shutdown.cancelled() => {
                    if self.codec.is_v5() {
                        self.disconnect_v5(DisconnectReasonCode::ServerShuttingDown);
                        let _ = self.flush().await;
                    }
                    return SessionEnd::Shutdown;
                }
                Some((packet, outcome)) = self.held.next(), if !self.held.is_empty() => {
                    if let Flow::End(end) = self.release(packet, outcome) {
                        let _ = self.flush().await;
                        return end;
                    }
                }
                read = tokio::time::timeout(self.idle, self.stream.read_buf(&mut self.rbuf)),
                    if self.held.len() + self.awaiting.len() < self.limits.max_inflight => {
                    match read {
                        Err(_) => {
                            debug!("keep-alive expired");
                            return SessionEnd::Lost;
                        }
                        Ok(Ok(0)) => return SessionEnd::Lost,
                        Ok(Err(error)) => {
                            debug!(%error, "read failed");
                            return SessionEnd::Lost;
                        }
                        Ok(Ok(_)) => {}
                    }
                    if let Flow::End(end) = self.read_packets(shared).await {
                        let _ = self.flush().await;
                        return end;
                    }
                }
                notification = self.link_rx.next() => match notification {
                    Ok(Some(Notification::Unschedule)) => {
                        if let Err(end) = self.flush().await {
                            return end;
                        }
                        if self.link_rx.wake().await.is_err() {
                            return SessionEnd::TakenOver;
                        }
                    }
                    Ok(Some(Notification::Disconnect(disconnect, _))) => {
                        debug!(reason = ?disconnect.reason_code, "the router closed the connection");
                        if self.codec.is_v5() {
                            self.disconnect_v5(disconnect.reason_code);
                        }
                        let _ = self.flush().await;
                        return SessionEnd::Lost;
                    }
                    Ok(Some(notification)) => {
                        match Option::<Packet>::from(notification) {
                            // The router's ack of a PUBLISH whose commit is awaited waits for it.
                            Some(packet @ (Packet::PubAck(..) | Packet::PubRec(..))) => {
                                let pkid = match &packet {
                                    Packet::PubAck(a, _) => a.pkid,
                                    Packet::PubRec(r, _) => r.pkid,
                                    _ => 0,
                                };
                                match self.awaiting.remove(&pkid) {
                                    Some(wait) => self.held.push_back(hold(packet, wait)),
                                    None => self.queue(packet),
                                }
                            }
                            Some(packet) => self.queue(packet),
                            None => {}
                        }
                    }
                    Ok(None) => {}
                    // The router dropped this link: another connection took the identity over.
                    Err(_) => return SessionEnd::TakenOver,
                },
            }
        }
    }

    async fn read_packets(&mut self, shared: &Shared<H>) -> Flow {
        let mut count = 0;
        loop {
            let delivery = publish_delivery(&self.rbuf);
            match self
                .codec
                .read(&mut self.rbuf, self.limits.max_packet_bytes, true)
            {
                Ok(Some(packet)) => {
                    if let Flow::End(end) = self.incoming(packet, delivery, shared).await {
                        return Flow::End(end);
                    }
                    count += 1;
                    if count >= self.limits.max_inflight {
                        // Let acks go out before reading on.
                        return Flow::Continue;
                    }
                }
                Ok(None) => return Flow::Continue,
                Err(error) => {
                    debug!(%error, "protocol error; closing");
                    if self.codec.is_v5() {
                        let reason = match error {
                            CodecError::Protocol(
                                rumqttd::protocol::Error::PayloadSizeLimitExceeded(_),
                            ) => DisconnectReasonCode::PacketTooLarge,
                            _ => DisconnectReasonCode::ProtocolError,
                        };
                        self.disconnect_v5(reason);
                    }
                    return Flow::End(SessionEnd::Lost);
                }
            }
        }
    }

    /// Handles one packet from the client; `delivery` is the QoS and packet id of a PUBLISH, read
    /// from its bytes (rumqttd keeps them private).
    async fn incoming(
        &mut self,
        packet: Packet,
        delivery: Option<(u8, u16)>,
        shared: &Shared<H>,
    ) -> Flow {
        let Some(session) = self.session.as_mut() else {
            return Flow::End(SessionEnd::Lost);
        };
        match packet {
            Packet::Publish(publish, mut properties) => {
                let Some(topic) = std::str::from_utf8(&publish.topic)
                    .ok()
                    .filter(|t| is_topic_name(t))
                    .map(str::to_owned)
                else {
                    debug!("PUBLISH without a valid topic name; closing");
                    return Flow::End(SessionEnd::Lost);
                };
                if !self.hooks.may_publish(session, &topic) {
                    shared
                        .stats
                        .acl_denied_publish
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(%topic, "PUBLISH refused by the ACL");
                    return self.ack_refused(&publish.serialize());
                }
                let qos = delivery.map_or(0, |(qos, _)| qos);
                let commit = self
                    .hooks
                    .published(session, &topic, &publish.payload, publish.retain, qos)
                    .await;
                // Nobody can be subscribed: skip the router (see `interest`). Retained messages and
                // QoS 2 always go to the router, which stores the one and runs the other's flow.
                let qos = delivery.map(|(qos, _)| qos);
                if !publish.retain && matches!(qos, Some(0 | 1)) && !shared.interest_in(&topic) {
                    shared.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                    if let Some((1, pkid)) = delivery {
                        let ack = Packet::PubAck(
                            PubAck {
                                pkid,
                                reason: PubAckReason::Success,
                            },
                            None,
                        );
                        match commit {
                            Some(wait) => self.held.push_back(hold(ack, wait)),
                            None => self.queue(ack),
                        }
                    }
                    return Flow::Continue;
                }
                if let (Some(wait), Some((1 | 2, pkid))) = (commit, delivery) {
                    self.awaiting.insert(pkid, wait);
                }
                if let Some(p) = properties.as_mut() {
                    p.topic_alias = None;
                }
                self.forward(Packet::Publish(publish, properties)).await
            }
            Packet::PubRel(pubrel, properties) => {
                if self.refused_qos2.remove(&pubrel.pkid) {
                    let comp = PubComp {
                        pkid: pubrel.pkid,
                        reason: PubCompReason::Success,
                    };
                    self.queue(Packet::PubComp(comp, None));
                    Flow::Continue
                } else {
                    self.forward(Packet::PubRel(pubrel, properties)).await
                }
            }
            Packet::Subscribe(subscribe, properties) => {
                let refused = subscribe
                    .filters
                    .iter()
                    .find(|f| !is_filter(&f.path) || !self.hooks.may_subscribe(session, &f.path));
                if let Some(filter) = refused {
                    shared
                        .stats
                        .acl_denied_subscribe
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(filter = %filter.path, "SUBSCRIBE refused by the ACL");
                    let code = if self.codec.is_v5() {
                        SubscribeReasonCode::NotAuthorized
                    } else {
                        SubscribeReasonCode::Failure
                    };
                    let ack = SubAck {
                        pkid: subscribe.pkid,
                        return_codes: vec![code; subscribe.filters.len()],
                    };
                    self.queue(Packet::SubAck(ack, None));
                    Flow::Continue
                } else {
                    shared.subscribed(subscribe.filters.iter().map(|f| f.path.as_str()));
                    self.subscribed
                        .extend(subscribe.filters.iter().map(|f| f.path.clone()));
                    self.forward(Packet::Subscribe(subscribe, properties)).await
                }
            }
            Packet::Unsubscribe(unsubscribe, properties) => {
                for filter in &unsubscribe.filters {
                    if let Some(at) = self.subscribed.iter().position(|f| f == filter) {
                        self.subscribed.swap_remove(at);
                        shared.unsubscribed([filter.as_str()]);
                    }
                }
                self.forward(Packet::Unsubscribe(unsubscribe, properties))
                    .await
            }
            Packet::PingReq(_) => {
                self.queue(Packet::PingResp(PingResp));
                Flow::Continue
            }
            Packet::Disconnect(disconnect, _) => {
                if disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage {
                    Flow::End(SessionEnd::Lost)
                } else {
                    Flow::End(SessionEnd::Clean)
                }
            }
            Packet::Connect(..) => {
                debug!("second CONNECT; closing");
                Flow::End(SessionEnd::Lost)
            }
            other => self.forward(other).await,
        }
    }

    /// Acknowledges a refused PUBLISH (rumqttd keeps its QoS and packet id private; its storage
    /// form starts with the flags byte and the packet id).
    fn ack_refused(&mut self, raw: &Bytes) -> Flow {
        let (Some(&flags), Some(&hi), Some(&lo)) = (raw.first(), raw.get(1), raw.get(2)) else {
            return Flow::Continue;
        };
        let pkid = u16::from_be_bytes([hi, lo]);
        match (flags >> 1) & 0b11 {
            1 => {
                let ack = PubAck {
                    pkid,
                    reason: PubAckReason::NotAuthorized,
                };
                self.queue(Packet::PubAck(ack, None));
            }
            2 => {
                let rec = PubRec {
                    pkid,
                    reason: PubRecReason::NotAuthorized,
                };
                self.queue(Packet::PubRec(rec, None));
                if !self.codec.is_v5() {
                    self.refused_qos2.insert(pkid);
                    if self.refused_qos2.len() > self.limits.max_inflight {
                        return Flow::End(SessionEnd::Lost);
                    }
                }
            }
            _ => {}
        }
        Flow::Continue
    }

    /// Sends a held ack once its commit is answered: as it is on success; on failure, MQTT 5
    /// gets it with reason 0x80 and 3.1.1 (which has no negative ack) loses the connection, so
    /// the client sends the message again.
    fn release(&mut self, packet: Packet, outcome: Result<(), CommitError>) -> Flow {
        match outcome {
            Ok(()) => {
                self.queue(packet);
                Flow::Continue
            }
            Err(error) => {
                warn!(%error, "a message could not be made durable; not acknowledged");
                if !self.codec.is_v5() {
                    return Flow::End(SessionEnd::Lost);
                }
                let packet = match packet {
                    Packet::PubAck(ack, p) => Packet::PubAck(
                        PubAck {
                            pkid: ack.pkid,
                            reason: PubAckReason::UnspecifiedError,
                        },
                        p,
                    ),
                    Packet::PubRec(rec, p) => Packet::PubRec(
                        PubRec {
                            pkid: rec.pkid,
                            reason: PubRecReason::UnspecifiedError,
                        },
                        p,
                    ),
                    other => other,
                };
                self.queue(packet);
                Flow::Continue
            }
        }
    }

    async fn forward(&mut self, packet: Packet) -> Flow {
        match self.link_tx.send(packet).await {
            Ok(_) => Flow::Continue,
            Err(error) => {
                debug!(%error, "router link closed");
                Flow::End(SessionEnd::TakenOver)
            }
        }
    }

    fn queue(&mut self, packet: Packet) {
        if let Err(error) = self.codec.write(packet, &mut self.wbuf) {
            warn!(%error, "cannot encode a packet for the client");
        }
    }

    fn disconnect_v5(&mut self, reason_code: DisconnectReasonCode) {
        self.queue(Packet::Disconnect(Disconnect { reason_code }, None));
    }

    async fn flush(&mut self) -> Result<(), SessionEnd> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(self.idle, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                debug!(%error, "write failed");
                Err(SessionEnd::Lost)
            }
            Err(_) => {
                debug!("client stopped reading");
                Err(SessionEnd::Lost)
            }
        }
    }

    /// Publishes the will when the connection was lost, detaches from the router, tells the
    /// hooks, and closes the socket.
    async fn finish(&mut self, end: SessionEnd, shared: &Shared<H>) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        if end == SessionEnd::Lost
            && let Some((topic, will)) = self.will.take()
        {
            // Nobody acknowledges a will: no commit to wait for.
            let _ = self
                .hooks
                .published(&mut session, &topic, &will.message, will.retain, 0)
                .await;
            let message = Outbound {
                topic,
                payload: will.message,
                retain: will.retain,
                at_least_once: will.qos != QoS::AtMostOnce,
            };
            let pkid = if message.at_least_once { 1 } else { 0 };
            if let Some(publish) = build_publish(&message, pkid) {
                let _ = self.link_tx.send(Packet::Publish(publish, None)).await;
            }
            shared.stats.wills_published.fetch_add(1, Ordering::Relaxed);
        }
        if self.clean {
            shared.unsubscribed(
                self.subscribed
                    .drain(..)
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            );
        }
        if end != SessionEnd::TakenOver {
            let bye = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            let _ = self.link_tx.send(Packet::Disconnect(bye, None)).await;
        }
        self.hooks.closed(session, end).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
    }
}

/// The QoS and packet id (0 for QoS 0) of the PUBLISH at the start of `buf`, if one is there
/// whole enough to read them.
fn publish_delivery(buf: &[u8]) -> Option<(u8, u16)> {
    let &first = buf.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    // Remaining length: 1 to 4 bytes with a continuation bit.
    let mut at = 1;
    loop {
        let b = *buf.get(at)?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    if qos == 0 {
        return Some((0, 0));
    }
    let topic_len = usize::from(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]));
    let pkid_at = at + 2 + topic_len;
    let pkid = u16::from_be_bytes([*buf.get(pkid_at)?, *buf.get(pkid_at + 1)?]);
    Some((qos, pkid))
}
