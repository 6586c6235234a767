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
//!   the ACL sees it; a PUBLISH that uses one anyway gets DISCONNECT 0x94;
//! - a QoS 1 message of an MQTT 5 client that the hooks rejected (too large, not what its
//!   thing's type takes) gets its PUBACK with the reason (0x97 or 0x99, with a reason string);
//!   it still reaches MQTT subscribers. 3.1.1 has no negative ack; QoS 2 keeps reason 0 so
//!   that its flow completes;
//! - what the router drops or ignores is applied here (`envelope`): delivery at the lower of the
//!   publisher's and the subscription's QoS, MQTT 5 "no local", retain as published, retain
//!   handling, and the client's Maximum Packet Size;
//! - MQTT 5 session expiry and will delay are kept here (`expiry`): a clean start discards the
//!   old session, a session outlives its connection for its expiry interval (a DISCONNECT may
//!   change it), and a delayed will waits, unless the client comes back first.
//!
//! - a QoS 1 PUBACK (and a QoS 2 PUBREC) goes out only once the hub has committed what the
//!   PUBLISH carried ([`Hooks::published`] returns the wait); the connection keeps reading while
//!   acks are held, up to its in-flight limit. If the hub cannot write it, an MQTT 5 client gets
//!   the ack with reason 0x80 and a 3.1.1 client is disconnected without one, so it sends the
//!   message again.
//!
//! Per-connection state lives in this task only. A panic inside rumqttd's codec is caught, and
//! the connection is cleaned up as if the network had failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use device_models::{CommitError, CommitWait};
use futures_util::FutureExt;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    LastWillProperties, Packet, PingResp, PubAck, PubAckProperties, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecReason, Publish, PublishProperties, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, error, field, info, warn};

use super::codec::{Codec, CodecError};
use super::envelope::{self, Envelope, Verdict};
use super::hub_link::build_publish;
use super::local::{self, Delivery};
use super::{
    ConnectRequest, Hooks, Outbound, Published, Refusal, Rejected, SessionEnd, Shared, Slot,
};
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

async fn run<H: Hooks>(shared: Arc<Shared<H>>, stream: TcpStream, peer: SocketAddr) {
    // Boxed, and a function of its own: the handshake's locals (the CONNECT, its properties and
    // login, the will) are gone by the time the connection waits, so an idle connection's task
    // holds only the connection and what its loop waits on.
    let Some((mut conn, slot)) = Box::pin(accept(&shared, stream, peer)).await else {
        return;
    };
    let stats = shared.stats.clone();
    let end = match AssertUnwindSafe(conn.run(&shared)).catch_unwind().await {
        Ok(end) => end,
        Err(_) => {
            error!("MQTT connection task panicked; closing it");
            SessionEnd::Lost
        }
    };
    debug!(?end, "MQTT client disconnected");
    Box::pin(conn.finish(end, &shared)).await;
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
}

/// Reads the CONNECT, asks the hooks, opens what the session needs and queues the CONNACK;
/// `None` when the connection was refused or ended (answered and logged here). The slot is the
/// router id's number for an anonymous clean session, held as long as the connection.
async fn accept<H: Hooks>(
    shared: &Arc<Shared<H>>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(Connection<H>, Option<Slot>)> {
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
            return None;
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
            return None;
        }
        Ok(Err(error)) => {
            debug!(%error, "bad CONNECT");
            return None;
        }
        Ok(Ok(x)) => x,
    };
    let Packet::Connect(connect, props, will, will_props, login) = packet else {
        return None;
    };
    Span::current().record("client", connect.client_id.as_str());
    // MQTT 5 keeps a session after the connection for its Session Expiry Interval (0 when
    // absent); 3.1.1's clean session means 0, and a persistent one never expires.
    let session_expiry = match (&props, codec.is_v5()) {
        (Some(p), true) => p.session_expiry_interval.unwrap_or(0),
        (None, true) => 0,
        (_, false) if connect.clean_session => 0,
        (_, false) => NEVER_EXPIRES,
    };
    let receive_max = props
        .as_ref()
        .and_then(|p| p.receive_maximum)
        .filter(|m| *m > 0)
        .unwrap_or(u16::MAX);
    let max_out = props
        .as_ref()
        .and_then(|p| p.max_packet_size)
        .and_then(|m| usize::try_from(m).ok());

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
            return None;
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
                return None;
            }
        },
    };

    // A router session outlives the connection when the client may come back to it (clean start
    // off) or asked for it to be kept; an MQTT 5 client without a client id gets a fresh one.
    let persistent = (!connect.clean_session || session_expiry > 0)
        && !(codec.is_v5() && connect.client_id.is_empty() && accepted.key.is_none());
    let mut slot = None;
    let router_id = match (&accepted.key, persistent) {
        (Some(key), _) => format!("t.{key}"),
        (None, false) => {
            let s = Slot::take(&shared.slots);
            let id = format!("s.{}", s.n);
            slot = Some(s);
            id
        }
        (None, true) => {
            if connect.client_id.is_empty() || connect.client_id.contains(BAD_CLIENT_ID_CHARS) {
                refuse(&mut stream, &codec, Refusal::BadClientId).await;
                shared
                    .hooks
                    .closed(accepted.session, SessionEnd::Clean)
                    .await;
                return None;
            }
            format!("a.{}", connect.client_id)
        }
    };

    // A wait left by the session's previous connection (delayed will, expiry) is over.
    shared.pending.resume(&router_id);
    // The router session lives as long as the client asked (see `persistent`), and a clean
    // start discards an old one first.
    if persistent && connect.clean_session {
        purge_session(shared, &router_id).await;
    }
    let clean = connect.clean_session;
    // A thing device starts without a router link (see `local`); any other client takes one now.
    // Only a device logged in as its thing: an anonymous client (a tool, an app, a test suite
    // using MQTT 5 properties) keeps the router's full behaviour from its first packet.
    let local = accepted
        .key
        .as_ref()
        .filter(|_| login.is_some())
        .map(|key| {
            let attached = shared.local.attach(key, clean);
            LocalConn {
                key: key.clone(),
                mailbox: attached.mailbox,
                taken_over: attached.taken_over,
                generation: attached.generation,
                inflight: HashMap::new(),
                next_pkid: FIRST_LOCAL_PKID,
                has_filters: attached.session_present,
                session_present: attached.session_present,
                backlog: attached.backlog,
                was_linked: attached.was_linked,
            }
        });
    let mut link = None;
    let mut session_present = local.as_ref().is_some_and(|l| l.session_present);
    if local.as_ref().is_none_or(|l| l.was_linked) {
        match open_link(shared, &router_id, !persistent).await {
            Ok((opened, present)) => {
                session_present |= present;
                link = Some(Box::new(opened));
            }
            Err(()) => {
                refuse(&mut stream, &codec, Refusal::Unavailable).await;
                if let Some(l) = &local {
                    shared.local.detach(&l.key, l.generation, Vec::new());
                }
                shared
                    .hooks
                    .closed(accepted.session, SessionEnd::Clean)
                    .await;
                return None;
            }
        }
        if let Some(l) = &local {
            shared.local.set_linked(&l.key, l.generation);
        }
    }

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
        read_chunk: BUF_CHUNK as u16,
        wbuf: BytesMut::new(),
        link,
        local,
        router_id: router_id.clone(),
        refused_qos2: HashSet::new(),
        will,
        idle,
        limits,
        held: VecDeque::new(),
        held_acks: VecDeque::new(),
        awaiting: HashMap::new(),
        max_out,
        receive_max,
        inflight_out: 0,
        will_props: will_props.map(Box::new),
        persistent,
        session_expiry,
        routed: None,
    };
    let ack = ConnAck {
        session_present,
        code: ConnectReturnCode::Success,
    };
    conn.queue(Packet::ConnAck(ack, properties));
    if let Some(l) = conn.local.as_mut() {
        for d in std::mem::take(&mut l.backlog) {
            conn.deliver(d);
        }
    }
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    debug!(%router_id, session_present, "MQTT client connected");

    Some((conn, slot))
}

/// A connection's link into rumqttd's router.
struct Link {
    tx: LinkTx,
    rx: LinkRx,
}

/// Opens a router link under `router_id`, counted while the connection holds it; returns it
/// and whether the router kept a session for that id. Logged when the router refuses.
async fn open_link<H>(
    shared: &Shared<H>,
    router_id: &str,
    clean: bool,
) -> Result<(Link, bool), ()> {
    let links = shared.links.clone();
    let id = router_id.to_owned();
    match tokio::task::spawn_blocking(move || links(&id, clean)).await {
        Ok(Ok((tx, rx, ack))) => {
            shared.stats.linked.fetch_add(1, Ordering::Relaxed);
            let present = match Option::<Packet>::from(ack) {
                Some(Packet::ConnAck(ack, _)) => ack.session_present,
                _ => false,
            };
            Ok((Link { tx, rx }, present))
        }
        Ok(Err(error)) => {
            warn!(%error, %router_id, "the MQTT router refused the connection");
            Err(())
        }
        Err(error) => {
            error!(%error, "link task failed");
            Err(())
        }
    }
}

/// A thing device's local session (see [`super::local`]).
struct LocalConn {
    key: String,
    mailbox: Arc<local::Mailbox>,
    /// Cancelled when a newer connection of the same thing takes over.
    taken_over: CancellationToken,
    generation: u64,
    /// QoS 1 messages sent and not yet acknowledged, by packet id.
    inflight: HashMap<u16, Delivery>,
    next_pkid: u16,
    /// Whether the session has local filters (a device's own messages may then match them).
    has_filters: bool,
    session_present: bool,
    /// Sent right after the CONNACK.
    backlog: Vec<Delivery>,
    was_linked: bool,
}

/// Packet ids of local deliveries start here, above the router's (it numbers its own from 1 to
/// 100 on each link), so a device's PUBACK tells which side sent the message.
const FIRST_LOCAL_PKID: u16 = 1000;

/// Local QoS 1 deliveries unacknowledged at once; beyond it, the device's queue waits.
const MAX_LOCAL_INFLIGHT: usize = 32;

impl LocalConn {
    /// A packet id for a QoS 1 delivery, not in flight.
    fn pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(FIRST_LOCAL_PKID);
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }
}

/// What a router link's receiver gives.
type LinkNotification = Result<Option<Notification>, rumqttd::local::LinkError>;

/// The next notification of the router link, if there is one. The wait and its outcome are
/// boxed: most thing devices have no link, and their idle task should not reserve room for
/// either.
async fn next_notification(link: &mut Option<Box<Link>>) -> Box<LinkNotification> {
    match link {
        Some(l) => Box::new(Box::pin(l.rx.next()).await),
        None => std::future::pending().await,
    }
}

/// The next local delivery, if the connection has a local session.
async fn next_delivery(local: &Option<LocalConn>) -> Delivery {
    match local {
        Some(l) => l.mailbox.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a newer connection of the same thing took over.
async fn taken_over(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
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
    /// How much the next read asks for (see [`next_read_chunk`]).
    read_chunk: u16,
    wbuf: BytesMut,
    /// Taken at CONNECT, or by a thing device at its first filter outside its own topics (boxed:
    /// most thing devices never take one).
    link: Option<Box<Link>>,
    /// A thing device's own topics, served without the router.
    local: Option<LocalConn>,
    /// The id the router knows (or would know) this client by.
    router_id: String,
    /// QoS 2 packet ids refused under 3.1.1, whose PUBREL is answered here.
    refused_qos2: HashSet<u16>,
    will: Option<(String, LastWill)>,
    idle: Duration,
    limits: super::Limits,
    /// The commits that held acks wait for, in the order the acks are due; only the first is
    /// waited for (see [`first_answer`]).
    held: VecDeque<CommitWait>,
    /// The held acks (PUBACK or PUBREC), in the same order as `held`.
    held_acks: VecDeque<Packet>,
    /// Routed PUBLISHes whose commit is awaited, by packet id, until the router's ack for them
    /// comes and joins `held`.
    awaiting: HashMap<u16, CommitWait>,
    /// The largest packet the client takes (MQTT 5 Maximum Packet Size).
    max_out: Option<usize>,
    /// QoS 1 and 2 messages the client may have unacknowledged (MQTT 5 Receive Maximum).
    receive_max: u16,
    /// Router messages sent to the client at QoS 1 or 2 and not yet acknowledged by it.
    inflight_out: u16,
    /// MQTT 5 properties of the last will (delay, user properties and the like).
    will_props: Option<Box<LastWillProperties>>,
    /// The router keeps this client's session after the connection (see `run`).
    persistent: bool,
    /// Seconds the session outlives the connection ([`NEVER_EXPIRES`]: for ever); a DISCONNECT
    /// may change it.
    session_expiry: u32,
    /// The state of routed traffic, taken when the connection first has some: most thing
    /// devices never do, and an idle connection should not carry it (see [`Routed`]).
    routed: Option<Box<Routed>>,
}

/// What a connection keeps about traffic through its router link (subscriptions, ordered acks,
/// messages parked for the client's Receive Maximum).
#[derive(Default)]
struct Routed {
    /// Filters this connection counted in the broker's [`Interest`](super::interest::Interest).
    subscribed: Vec<String>,
    /// The mark of routed messages and the MQTT 5 subscription options (see [`Envelope`]).
    envelope: Envelope,
    /// Packet ids of QoS 2 messages from the router that this task acknowledged itself (dropped
    /// for a subscription option, or delivered at a lower QoS), whose PUBREL from the router it
    /// answers itself.
    own_qos2: HashSet<u16>,
    /// Routed QoS 1 messages the hooks rejected, by packet id: the router's PUBACK for them goes
    /// out with the reason.
    rejected: HashMap<u16, Rejected>,
    /// Packet ids of the router's QoS 2 messages delivered at QoS 1: the client's PUBACK
    /// becomes the router's PUBREC.
    downgraded: HashSet<u16>,
    /// Router messages sent at QoS 1 or 2 whose ack the router has not had, in the order it sent
    /// them, with the ack once it is known (the client's, or this task's own).
    router_acks: InOrder,
    /// The same for PUBCOMPs answering the router's PUBRELs.
    router_comps: InOrder,
    /// Router messages waiting for room under `receive_max`.
    parked: VecDeque<(Publish, Option<PublishProperties>)>,
}

/// Acks for the router's messages, in the order it sent them: rumqttd takes PUBACKs, PUBRECs
/// and PUBCOMPs only in that order, and this task answers some itself (messages it does not
/// deliver or delivers at a lower QoS) while the client still owes earlier ones. Bounded by the
/// router's in-flight limit per client.
#[derive(Default)]
struct InOrder(VecDeque<(u16, Option<Packet>)>);

impl InOrder {
    /// A message the router sent, with its ack if it is already known.
    fn push(&mut self, pkid: u16, ack: Option<Packet>) {
        self.0.push_back((pkid, ack));
    }

    /// The client's ack for `pkid`; given back if no message waits for it.
    fn fill(&mut self, pkid: u16, ack: Packet) -> Option<Packet> {
        match self.0.iter_mut().find(|(p, a)| *p == pkid && a.is_none()) {
            Some((_, slot)) => {
                *slot = Some(ack);
                None
            }
            None => Some(ack),
        }
    }

    /// The ack at the front, if it is known.
    fn pop_ready(&mut self) -> Option<Packet> {
        if !matches!(self.0.front(), Some((_, Some(_)))) {
            return None;
        }
        self.0.pop_front().and_then(|(_, ack)| ack)
    }
}

/// Router messages a connection holds back for the client's Receive Maximum; beyond it they go
/// out regardless (the router itself keeps at most 100 QoS 1 and 2 messages in flight per
/// client, so only a flood of QoS 0 messages can get here).
const MAX_PARKED: usize = 1024;

/// Bytes a connection's read or write buffer starts with once it has something to hold (it
/// grows for larger packets).
const BUF_CHUNK: usize = 512;
/// The most a connection reads at once: a device that sends faster than it is read is read in
/// chunks up to this size, so a burst costs a few system calls, not one per [`BUF_CHUNK`].
const MAX_READ_CHUNK: u16 = 16 * 1024;

/// The next read size: doubled when a read filled all the room it had (more is likely
/// waiting), halved when it used less than a quarter, between [`BUF_CHUNK`] and
/// [`MAX_READ_CHUNK`].
fn next_read_chunk(chunk: u16, read: usize, room: usize) -> u16 {
    const MIN: u16 = BUF_CHUNK as u16;
    if read >= room {
        chunk.saturating_mul(2).min(MAX_READ_CHUNK)
    } else if read < usize::from(chunk / 4) {
        (chunk / 2).max(MIN)
    } else {
        chunk
    }
}

/// The answer for the first of the held acks. Acks go out in order, so the others are only
/// looked at once it is answered (a commit answers in order what it covers).
fn first_answer(
    held: &mut VecDeque<CommitWait>,
) -> impl Future<Output = Result<(), CommitError>> + '_ {
    std::future::poll_fn(move |cx| match held.front_mut() {
        Some(wait) => std::pin::Pin::new(wait).poll(cx),
        None => std::task::Poll::Pending,
    })
}

/// A Session Expiry Interval that never ends.
const NEVER_EXPIRES: u32 = u32::MAX;

impl<H: Hooks> Connection<H> {
    /// The connection's loop until it ends. What handles a packet or a router message is boxed
    /// where it is awaited: this future is what an idle connection holds, so it keeps only the
    /// waits themselves, not the deepest state of handling something.
    async fn run(&mut self, shared: &Shared<H>) -> SessionEnd {
        let taken = self.local.as_ref().map(|l| l.taken_over.clone());
        loop {
            if let Err(end) = self.flush().await {
                return end;
            }
            // Waiting holds no buffer: the read waits for readiness, and buffers with nothing in
            // them are given back (a fresh one is taken when bytes come or go), so an idle
            // connection costs its task and little else.
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
            if self.wbuf.capacity() > 0 {
                self.wbuf = BytesMut::new();
            }
            tokio::select! {
                () = shared.shutdown.cancelled() => {
                    if self.codec.is_v5() {
                        self.disconnect_v5(DisconnectReasonCode::ServerShuttingDown);
                        let _ = self.flush().await;
                    }
                    return SessionEnd::Shutdown;
                }
                outcome = first_answer(&mut self.held), if !self.held.is_empty() => {
                    // One commit answers many acks: every ack it released goes out in one
                    // write, not one system call each.
                    let mut outcome = outcome;
                    loop {
                        self.held.pop_front();
                        let Some(packet) = self.held_acks.pop_front() else {
                            break;
                        };
                        if let Flow::End(end) = self.release(packet, outcome) {
                            let _ = self.flush().await;
                            return end;
                        }
                        match self.held.front_mut().and_then(CommitWait::try_answer) {
                            Some(next) => outcome = next,
                            None => break,
                        }
                    }
                }
                ready = tokio::time::timeout(self.idle, self.stream.readable()),
                    if self.held.len() + self.awaiting.len() < self.limits.max_inflight => {
                    match ready {
                        Err(_) => {
                            debug!("keep-alive expired");
                            return SessionEnd::Lost;
                        }
                        Ok(Err(error)) => {
                            debug!(%error, "read failed");
                            return SessionEnd::Lost;
                        }
                        Ok(Ok(())) => {}
                    }
                    let chunk = usize::from(self.read_chunk);
                    if self.rbuf.capacity() - self.rbuf.len() < chunk {
                        self.rbuf.reserve(chunk);
                    }
                    let room = self.rbuf.capacity() - self.rbuf.len();
                    match self.stream.try_read_buf(&mut self.rbuf) {
                        Ok(0) => return SessionEnd::Lost,
                        Ok(n) => self.read_chunk = next_read_chunk(self.read_chunk, n, room),
                        // Readiness can be spurious.
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(error) => {
                            debug!(%error, "read failed");
                            return SessionEnd::Lost;
                        }
                    }
                    // Boxed: an idle connection's task then holds only what waits, not the
                    // deepest state of handling a packet (several KiB per connection).
                    if let Flow::End(end) = Box::pin(self.read_packets(shared)).await {
                        let _ = self.flush().await;
                        return end;
                    }
                }
                () = taken_over(taken.as_ref()) => {
                    debug!("another connection of the same thing took over");
                    return SessionEnd::TakenOver;
                }
                delivery = next_delivery(&self.local),
                    if self.local.as_ref().is_some_and(|l| l.inflight.len() < MAX_LOCAL_INFLIGHT) => {
                    self.deliver(delivery);
                }
                notification = next_notification(&mut self.link) => {
                    if let Some(end) = Box::pin(self.notified(*notification, shared)).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Handles what the router sent this connection's link; `Some` when the connection ends.
    async fn notified(
        &mut self,
        notification: LinkNotification,
        shared: &Shared<H>,
    ) -> Option<SessionEnd> {
        match notification {
            Ok(Some(Notification::Unschedule)) => {
                if let Err(end) = self.flush().await {
                    return Some(end);
                }
                let woken = match self.link.as_mut() {
                    Some(l) => l.rx.wake().await.is_ok(),
                    None => true,
                };
                if !woken {
                    return Some(SessionEnd::TakenOver);
                }
            }
            Ok(Some(Notification::Disconnect(disconnect, _))) => {
                debug!(reason = ?disconnect.reason_code, "the router closed the connection");
                if self.codec.is_v5() {
                    self.disconnect_v5(disconnect.reason_code);
                }
                let _ = self.flush().await;
                return Some(SessionEnd::Lost);
            }
            Ok(Some(Notification::Forward(forward))) => {
                // MQTT 5 Receive Maximum: beyond the client's limit of unacknowledged
                // QoS 1 and 2 messages, the router's messages wait here, in order.
                let flow = if (self.routed().parked.is_empty()
                    && self.inflight_out < self.receive_max)
                    || self.routed().parked.len() >= MAX_PARKED
                {
                    self.forwarded(forward.publish, forward.properties, shared)
                        .await
                } else {
                    self.routed()
                        .parked
                        .push_back((forward.publish, forward.properties));
                    Flow::Continue
                };
                if let Flow::End(end) = flow {
                    return Some(end);
                }
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
                        let packet = match self.routed().rejected.remove(&pkid) {
                            Some(why) => with_reason(packet, why),
                            None => packet,
                        };
                        let wait = self.awaiting.remove(&pkid);
                        self.ack_in_order(packet, wait);
                    }
                    // The release of a QoS 2 message this task acknowledged itself.
                    Some(Packet::PubRel(rel, _)) if self.routed().own_qos2.remove(&rel.pkid) => {
                        let comp = PubComp {
                            pkid: rel.pkid,
                            reason: PubCompReason::Success,
                        };
                        self.routed()
                            .router_comps
                            .push(rel.pkid, Some(Packet::PubComp(comp, None)));
                        if let Flow::End(end) = self.send_router_acks().await {
                            return Some(end);
                        }
                    }
                    Some(Packet::PubRel(rel, props)) => {
                        self.routed().router_comps.push(rel.pkid, None);
                        self.queue(Packet::PubRel(rel, props));
                    }
                    Some(packet) => self.queue(packet),
                    None => {}
                }
            }
            Ok(None) => {}
            // The router dropped this link: another connection took the identity over.
            Err(_) => return Some(SessionEnd::TakenOver),
        }
        None
    }

    /// Handles the packets one read brought, then lets the hooks hand on what they gathered.
    async fn read_packets(&mut self, shared: &Shared<H>) -> Flow {
        let flow = self.parse_packets(shared).await;
        if let Some(session) = self.session.as_mut() {
            self.hooks.read_done(session).await;
        }
        flow
    }

    async fn parse_packets(&mut self, shared: &Shared<H>) -> Flow {
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
                // CONNACK granted no topic aliases (Topic Alias Maximum 0).
                if properties.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
                    debug!("PUBLISH with a topic alias, none granted; closing");
                    self.disconnect_v5(DisconnectReasonCode::TopicAliasInvalid);
                    return Flow::End(SessionEnd::Lost);
                }
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
                let Published { commit, rejected } = self
                    .hooks
                    .published(session, &topic, &publish.payload, publish.retain, qos)
                    .await;
                // Only MQTT 5 has negative acks.
                let rejected = rejected.filter(|_| self.codec.is_v5());
                if self.link.is_none() {
                    return self
                        .publish_linkless(
                            topic,
                            publish.payload,
                            publish.retain,
                            delivery,
                            Published { commit, rejected },
                            shared,
                        )
                        .await;
                }
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
                        let ack = match rejected {
                            Some(why) => with_reason(ack, why),
                            None => ack,
                        };
                        self.ack_in_order(ack, commit);
                    }
                    return Flow::Continue;
                }
                if let (Some(wait), Some((1 | 2, pkid))) = (commit, delivery) {
                    self.awaiting.insert(pkid, wait);
                }
                if let (Some(why), Some((1, pkid))) = (rejected, delivery) {
                    self.routed().rejected.insert(pkid, why);
                }
                envelope::mark(
                    &mut properties,
                    qos.unwrap_or(0),
                    publish.retain,
                    self.routed().envelope.origin(),
                );
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
                let local_key = self.local.as_ref().map(|l| l.key.clone());
                if refused.is_none()
                    && let Some(key) = local_key
                    && subscribe
                        .filters
                        .iter()
                        .all(|f| local::is_local_filter(&key, &f.path))
                {
                    let granted: Vec<(String, u8)> = subscribe
                        .filters
                        .iter()
                        .map(|f| (f.path.clone(), (f.qos as u8).min(1)))
                        .collect();
                    let retained = shared.local.subscribe(&key, &granted);
                    if let Some(l) = self.local.as_mut() {
                        l.has_filters = true;
                    }
                    let ack = SubAck {
                        pkid: subscribe.pkid,
                        return_codes: granted
                            .iter()
                            .map(|(_, q)| {
                                SubscribeReasonCode::Success(if *q == 0 {
                                    QoS::AtMostOnce
                                } else {
                                    QoS::AtLeastOnce
                                })
                            })
                            .collect(),
                    };
                    self.queue(Packet::SubAck(ack, None));
                    for d in retained {
                        self.deliver(d);
                    }
                    return Flow::Continue;
                }
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
                } else if !self.ensure_link(shared).await {
                    let ack = SubAck {
                        pkid: subscribe.pkid,
                        return_codes: vec![SubscribeReasonCode::Failure; subscribe.filters.len()],
                    };
                    self.queue(Packet::SubAck(ack, None));
                    Flow::Continue
                } else {
                    for f in &subscribe.filters {
                        self.routed().envelope.subscribed(f);
                    }
                    shared.subscribed(subscribe.filters.iter().map(|f| f.path.as_str()));
                    self.routed()
                        .subscribed
                        .extend(subscribe.filters.iter().map(|f| f.path.clone()));
                    self.forward(Packet::Subscribe(subscribe, properties)).await
                }
            }
            Packet::Unsubscribe(unsubscribe, properties) => {
                let had_local = match &self.local {
                    Some(l) => shared.local.unsubscribe(&l.key, &unsubscribe.filters),
                    None => Vec::new(),
                };
                if self.link.is_none() {
                    let ack = UnsubAck {
                        pkid: unsubscribe.pkid,
                        reasons: had_local
                            .iter()
                            .map(|had| {
                                if *had {
                                    UnsubAckReason::Success
                                } else {
                                    UnsubAckReason::NoSubscriptionExisted
                                }
                            })
                            .collect(),
                    };
                    self.queue(Packet::UnsubAck(ack, None));
                    return Flow::Continue;
                }
                for filter in &unsubscribe.filters {
                    self.routed().envelope.unsubscribed(filter);
                    if let Some(at) = self.routed().subscribed.iter().position(|f| f == filter) {
                        self.routed().subscribed.swap_remove(at);
                        shared.unsubscribed([filter.as_str()]);
                    }
                }
                self.forward(Packet::Unsubscribe(unsubscribe, properties))
                    .await
            }
            Packet::PubAck(ack, properties) => {
                let ours = self
                    .local
                    .as_mut()
                    .is_some_and(|l| l.inflight.remove(&ack.pkid).is_some());
                if ours {
                    return Flow::Continue;
                }
                let pkid = ack.pkid;
                if let Flow::End(end) = self
                    .client_acked(pkid, Packet::PubAck(ack, properties))
                    .await
                {
                    return Flow::End(end);
                }
                self.acknowledged(shared).await
            }
            Packet::PubRec(rec, properties) => {
                let pkid = rec.pkid;
                self.client_acked(pkid, Packet::PubRec(rec, properties))
                    .await
            }
            Packet::PubComp(comp, properties) => {
                let flow = match self
                    .routed()
                    .router_comps
                    .fill(comp.pkid, Packet::PubComp(comp, properties))
                {
                    None => self.send_router_acks().await,
                    Some(packet) => self.forward(packet).await,
                };
                if let Flow::End(end) = flow {
                    return Flow::End(end);
                }
                self.acknowledged(shared).await
            }
            Packet::PingReq(_) => {
                self.queue(Packet::PingResp(PingResp));
                Flow::Continue
            }
            Packet::Disconnect(disconnect, properties) => {
                // MQTT 5: a DISCONNECT may shorten or lengthen the session's expiry, but not
                // give one to a session that had none (that is a protocol error; ignored).
                if let Some(expiry) = properties.and_then(|p| p.session_expiry_interval)
                    && self.session_expiry > 0
                {
                    self.session_expiry = expiry;
                }
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

    /// Acknowledges a refused PUBLISH.
    fn ack_refused(&mut self, raw: &Bytes) -> Flow {
        let Some((qos, pkid)) = stored_delivery(raw) else {
            return Flow::Continue;
        };
        match qos {
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

    /// The state of routed traffic, taken on first use.
    fn routed(&mut self) -> &mut Routed {
        self.routed.get_or_insert_with(Box::default)
    }

    /// Holds `ack` until `wait` is answered, behind the acks held before it.
    fn hold(&mut self, ack: Packet, wait: CommitWait) {
        self.held.push_back(wait);
        self.held_acks.push_back(ack);
    }

    /// Sends the ack of a PUBLISH once `commit` is answered, or at once if it has none, but
    /// never ahead of acks held before it: acks go out in the order of their PUBLISHes (MQTT
    /// 4.6).
    fn ack_in_order(&mut self, ack: Packet, commit: Option<CommitWait>) {
        match commit {
            Some(wait) => self.hold(ack, wait),
            None if self.held.is_empty() => self.queue(ack),
            None => self.hold(ack, CommitWait::ready(Ok(()))),
        }
    }

    /// Sends a held ack once its commit is answered: as it is on success; refused by the hub's
    /// type check, with reason 0x99 under MQTT 5 (3.1.1: as it is); on a failed write, MQTT 5
    /// gets it with reason 0x80 and 3.1.1 (which has no negative ack) loses the connection, so
    /// the client sends the message again.
    fn release(&mut self, packet: Packet, outcome: Result<(), CommitError>) -> Flow {
        match outcome {
            Ok(()) => {
                self.queue(packet);
                Flow::Continue
            }
            // The hub's type check refused it: MQTT 5 hears why; 3.1.1 has no negative ack,
            // and sending the same message again would not help.
            Err(CommitError::Rejected) => {
                let packet = if self.codec.is_v5() {
                    with_reason(packet, Rejected::Invalid)
                } else {
                    packet
                };
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

    /// A PUBLISH from a thing device without a router link (the hooks have it). It goes
    /// through the gateway's own link when anyone could want it: a client subscribed to it
    /// through the router, the router's retained store, or the device's own local filters (the
    /// gateway's link hands thing topics to the local session first). Acks are answered here,
    /// held until the hub committed the message; a QoS 2 flow is completed here too.
    async fn publish_linkless(
        &mut self,
        topic: String,
        payload: Bytes,
        retain: bool,
        delivery: Option<(u8, u16)>,
        published: Published,
        shared: &Shared<H>,
    ) -> Flow {
        let Published { commit, rejected } = published;
        let qos = delivery.map_or(0, |(qos, _)| qos);
        let own_filters = self
            .local
            .as_ref()
            .is_some_and(|l| l.has_filters && local::thing_key(&topic) == Some(l.key.as_str()));
        if retain || own_filters || shared.interest_in(&topic) {
            let message = Outbound {
                topic,
                payload,
                retain,
                at_least_once: qos > 0,
            };
            if shared.outbound.send(message).await.is_err() {
                debug!("the gateway's router link is gone");
                return Flow::End(SessionEnd::Lost);
            }
        } else {
            shared.stats.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        let Some((qos, pkid)) = delivery else {
            return Flow::Continue;
        };
        let Some(ack) = success_ack(qos, pkid) else {
            return Flow::Continue;
        };
        if qos == 2 {
            self.refused_qos2.insert(pkid);
        }
        let ack = match rejected {
            Some(why) => with_reason(ack, why),
            None => ack,
        };
        self.ack_in_order(ack, commit);
        Flow::Continue
    }

    /// Sends a MQTT message from the local session to the device.
    fn deliver(&mut self, d: Delivery) {
        let Some(l) = self.local.as_mut() else {
            return;
        };
        let pkid = if d.at_least_once { l.pkid() } else { 0 };
        let message = Outbound {
            topic: d.topic.clone(),
            payload: d.payload.clone(),
            retain: d.retain,
            at_least_once: d.at_least_once,
        };
        let Some(publish) = build_publish(&message, pkid) else {
            return;
        };
        if pkid != 0 {
            l.inflight.insert(pkid, d);
        }
        self.queue(Packet::Publish(publish, None));
    }

    /// Takes a router link now if the connection has none (a thing device subscribing outside
    /// its own topics); false if the router refused.
    async fn ensure_link(&mut self, shared: &Shared<H>) -> bool {
        if self.link.is_some() {
            return true;
        }
        match open_link(shared, &self.router_id, !self.persistent).await {
            Ok((link, _)) => {
                self.link = Some(Box::new(link));
                if let Some(l) = &self.local {
                    shared.local.set_linked(&l.key, l.generation);
                }
                true
            }
            Err(()) => false,
        }
    }

    /// Hands a message from the router to the client as its subscription options and the
    /// publisher's QoS say (see [`Envelope`]), and within the client's Maximum Packet Size. A
    /// message not delivered, or delivered at QoS 0 though the router sent it at 1 or 2, is
    /// acknowledged to the router here, as the client would have.
    async fn forwarded(
        &mut self,
        publish: Publish,
        mut properties: Option<PublishProperties>,
        shared: &Shared<H>,
    ) -> Flow {
        let topic = std::str::from_utf8(&publish.topic).unwrap_or_default();
        // The router clears the retain flag of live messages: a set one means its store.
        let verdict = self
            .routed()
            .envelope
            .forwarded(topic, publish.retain, &mut properties);
        let at_most_once = match verdict {
            Verdict::Deliver { max_qos: 0, retain } => Some((
                Publish::new(publish.topic.clone(), publish.payload.clone(), retain),
                properties.clone(),
            )),
            _ => None,
        };
        let start = self.wbuf.len();
        self.queue(Packet::Publish(publish, properties));
        let Some((qos, pkid)) = self.wbuf.get(start..).and_then(publish_delivery) else {
            return Flow::Continue;
        };
        let too_large = self
            .max_out
            .is_some_and(|max| self.wbuf.len() - start > max);
        let Verdict::Deliver { max_qos, retain } = verdict else {
            self.wbuf.truncate(start);
            return self.ack_for_client(qos, pkid).await;
        };
        if too_large {
            self.wbuf.truncate(start);
            shared.stats.over_client_max.fetch_add(1, Ordering::Relaxed);
            return self.ack_for_client(qos, pkid).await;
        }
        if qos > max_qos {
            if let Some((publish, properties)) = at_most_once {
                self.wbuf.truncate(start);
                self.queue(Packet::Publish(publish, properties));
                return self.ack_for_client(qos, pkid).await;
            }
            // 2 down to 1: same length, only the QoS bits of the fixed header change.
            if let Some(flags) = self.wbuf.get_mut(start) {
                *flags = (*flags & !0b0110) | (max_qos << 1);
            }
            self.routed().downgraded.insert(pkid);
        }
        if retain && let Some(flags) = self.wbuf.get_mut(start) {
            *flags |= 1;
        }
        if qos > 0 {
            self.inflight_out = self.inflight_out.saturating_add(1);
            self.routed().router_acks.push(pkid, None);
        }
        Flow::Continue
    }

    /// The client finished a QoS 1 or 2 delivery: messages waiting for its Receive Maximum
    /// go out while it has room.
    async fn acknowledged(&mut self, shared: &Shared<H>) -> Flow {
        self.inflight_out = self.inflight_out.saturating_sub(1);
        while self.inflight_out < self.receive_max
            && let Some((publish, properties)) = self.routed().parked.pop_front()
        {
            if let Flow::End(end) = Box::pin(self.forwarded(publish, properties, shared)).await {
                return Flow::End(end);
            }
        }
        Flow::Continue
    }

    /// Acknowledges to the router a message it sent at `qos` that the client will not
    /// acknowledge: a PUBACK, or a PUBREC whose PUBREL is answered here. It goes out in turn,
    /// after the acks the client still owes for earlier messages: the router takes acks only
    /// in the order it sent the messages.
    async fn ack_for_client(&mut self, qos: u8, pkid: u16) -> Flow {
        let Some(ack) = success_ack(qos, pkid) else {
            return Flow::Continue;
        };
        if qos == 2 {
            self.routed().own_qos2.insert(pkid);
        }
        self.routed().router_acks.push(pkid, Some(ack));
        self.send_router_acks().await
    }

    /// The client's PUBACK or PUBREC of a router message, passed on in turn (see
    /// [`Self::ack_for_client`]); a PUBACK of a message delivered at QoS 1 that the router
    /// sent at 2 becomes a PUBREC, whose PUBREL is answered here.
    async fn client_acked(&mut self, pkid: u16, packet: Packet) -> Flow {
        let packet = match self.routed().downgraded.remove(&pkid) {
            true => {
                self.routed().own_qos2.insert(pkid);
                success_ack(2, pkid).unwrap_or(packet)
            }
            false => packet,
        };
        match self.routed().router_acks.fill(pkid, packet) {
            None => self.send_router_acks().await,
            // Not one this connection sent (a session resumed from an earlier connection).
            Some(packet) => self.forward(packet).await,
        }
    }

    /// Sends the router every ack (then every PUBCOMP) at the front of its queue that is ready.
    async fn send_router_acks(&mut self) -> Flow {
        while let Some(ack) = self
            .routed()
            .router_acks
            .pop_ready()
            .or_else(|| self.routed().router_comps.pop_ready())
        {
            if let Flow::End(end) = self.forward(ack).await {
                return Flow::End(end);
            }
        }
        Flow::Continue
    }

    async fn forward(&mut self, packet: Packet) -> Flow {
        let Some(link) = self.link.as_mut() else {
            // Nothing routed for a linkless connection: acks of router messages cannot come.
            return Flow::Continue;
        };
        match link.tx.send(packet).await {
            Ok(_) => Flow::Continue,
            Err(error) => {
                debug!(%error, "router link closed");
                Flow::End(SessionEnd::TakenOver)
            }
        }
    }

    fn queue(&mut self, packet: Packet) {
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(BUF_CHUNK);
        }
        if let Err(error) = self.codec.write(packet, &mut self.wbuf) {
            warn!(%error, "cannot encode a packet for the client");
        }
    }

    /// Queues an MQTT 5 DISCONNECT with `reason_code` and no properties (remaining length 1,
    /// MQTT 5 3.14.2.2.1). Written here: rumqttd's encoder gives such a packet remaining length
    /// 1 followed by a property length byte, which clients read as a malformed stream.
    fn disconnect_v5(&mut self, reason_code: DisconnectReasonCode) {
        self.wbuf
            .extend_from_slice(&[0xE0, 0x01, disconnect_reason(reason_code)]);
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

    /// Publishes the will when the connection was lost (at once, or after its MQTT 5 delay),
    /// detaches from the router, purges a session whose expiry is over or schedules that, tells
    /// the hooks, and closes the socket.
    async fn finish(&mut self, end: SessionEnd, shared: &Arc<Shared<H>>) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        let will = self.will.take().filter(|_| end == SessionEnd::Lost);
        let will_props = self.will_props.take();
        // The session ends with the connection unless the router keeps it; a will waits for
        // its delay, but not beyond the session.
        let expiry = if self.persistent {
            self.session_expiry
        } else {
            0
        };
        let delay = will_props
            .as_ref()
            .and_then(|p| p.delay_interval)
            .unwrap_or(0)
            .min(expiry);
        let mut delayed_will = None;
        if let Some((topic, will)) = will {
            let will = Will {
                properties: will_properties(
                    will_props.as_deref(),
                    &will,
                    self.routed().envelope.origin(),
                ),
                topic,
                will,
            };
            if delay == 0 {
                let link = self.link.as_mut().map(|l| &mut l.tx);
                publish_will(&*self.hooks, &mut session, shared, link, will).await;
            } else {
                delayed_will = Some(will);
            }
        }
        if !self.persistent
            && let Some(routed) = self.routed.as_mut()
        {
            shared.unsubscribed(routed.subscribed.iter().map(String::as_str));
            routed.subscribed.clear();
        }
        if let Some(link) = self.link.as_mut() {
            if end != SessionEnd::TakenOver {
                let bye = Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                };
                let _ = link.tx.send(Packet::Disconnect(bye, None)).await;
            }
            shared.stats.linked.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(l) = self.local.take() {
            let mut unacked: Vec<(u16, Delivery)> = l.inflight.into_iter().collect();
            unacked.sort_by_key(|(pkid, _)| *pkid);
            let unacked = unacked.into_iter().map(|(_, d)| d).collect();
            shared.local.detach(&l.key, l.generation, unacked);
        }
        let purge = (self.persistent && end != SessionEnd::TakenOver && expiry != NEVER_EXPIRES)
            .then_some(expiry)
            .filter(|e| *e <= MAX_TIMED_EXPIRY);
        if purge == Some(0) {
            purge_session(shared, &self.router_id).await;
        }
        let purge = purge.filter(|e| *e > 0);
        if delayed_will.is_some() || purge.is_some() {
            let after = AfterClose {
                key: self.router_id.clone(),
                will: delayed_will.map(|w| (w, delay)),
                purge: purge.map(|e| (self.router_id.clone(), e)),
                end,
            };
            let (shared, hooks) = (shared.clone(), self.hooks.clone());
            shared
                .tracker
                .clone()
                .spawn(after_close(shared, hooks, session, after).in_current_span());
        } else {
            self.hooks.closed(session, end).await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
    }
}

/// Session expiries beyond this (about a year) are kept for as long as the broker runs.
const MAX_TIMED_EXPIRY: u32 = 366 * 24 * 3600;

/// A last will ready to publish.
struct Will {
    topic: String,
    will: LastWill,
    properties: Option<PublishProperties>,
}

/// The PUBLISH properties a will carries (MQTT 5), marked as its connection's.
fn will_properties(
    props: Option<&LastWillProperties>,
    will: &LastWill,
    origin: u64,
) -> Option<PublishProperties> {
    let mut properties = props.map(|p| PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        content_type: p.content_type.clone(),
        ..PublishProperties::default()
    });
    let qos = u8::from(will.qos != QoS::AtMostOnce);
    envelope::mark(&mut properties, qos, will.retain, origin);
    properties
}

/// Tells the hooks of the will and routes it: through the connection's router link when it
/// has one, else through the gateway's (a linkless thing device; MQTT 5 properties are not
/// passed on there).
async fn publish_will<H: Hooks>(
    hooks: &H,
    session: &mut H::Session,
    shared: &Shared<H>,
    link: Option<&mut LinkTx>,
    will: Will,
) {
    // Nobody acknowledges a will: no commit to wait for.
    let Will {
        topic,
        will,
        properties,
    } = will;
    let _ = hooks
        .published(session, &topic, &will.message, will.retain, 0)
        .await;
    // What the will said goes to the hub now, not with whatever the connection's end sends.
    hooks.read_done(session).await;
    let message = Outbound {
        topic,
        payload: will.message,
        retain: will.retain,
        at_least_once: will.qos != QoS::AtMostOnce,
    };
    let routed = match link {
        Some(tx) => {
            let pkid = u16::from(message.at_least_once);
            match build_publish(&message, pkid) {
                Some(publish) => tx.send(Packet::Publish(publish, properties)).await.is_ok(),
                None => false,
            }
        }
        None => shared.outbound.send(message).await.is_ok(),
    };
    let counter = match routed {
        true => &shared.stats.wills_published,
        false => &shared.stats.wills_dropped,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What waits after a connection ended (see [`super::expiry`]).
struct AfterClose {
    /// The session's router id, under which a new connection cancels the wait.
    key: String,
    /// The will and its delay in seconds.
    will: Option<(Will, u32)>,
    /// The router session and the seconds after which it is purged.
    purge: Option<(String, u32)>,
    end: SessionEnd,
}

/// Waits out a delayed will and a session's expiry, unless the client comes back (or the
/// broker stops) first; the hooks hear of the connection's end once its will is settled.
async fn after_close<H: Hooks>(
    shared: Arc<Shared<H>>,
    hooks: Arc<H>,
    mut session: H::Session,
    after: AfterClose,
) {
    let (ticket, back) = shared.pending.hold(&after.key);
    let started = tokio::time::Instant::now();
    let wait = |seconds: u32| {
        let back = back.clone();
        let shutdown = shared.shutdown.clone();
        async move {
            tokio::select! {
                () = back.cancelled() => false,
                () = shutdown.cancelled() => false,
                () = tokio::time::sleep_until(started + Duration::from_secs(u64::from(seconds))) => true,
            }
        }
    };
    if let Some((will, delay)) = after.will
        && wait(delay).await
        && shared
            .pending
            .finish(&after.key, ticket, after.purge.is_none())
    {
        // The connection's link is gone: a short-lived one of the broker's own carries it.
        let slot = Slot::take(&shared.slots);
        match open_link(&shared, &format!("s.{}", slot.n), true).await {
            Ok((mut link, _)) => {
                publish_will(&*hooks, &mut session, &shared, Some(&mut link.tx), will).await;
                close_link(&shared, &mut link).await;
            }
            Err(()) => {
                shared.stats.wills_dropped.fetch_add(1, Ordering::Relaxed);
                warn!("delayed last will not published: no router link");
            }
        }
    }
    hooks.closed(session, after.end).await;
    if let Some((router_id, expiry)) = after.purge
        && wait(expiry).await
        && shared.pending.finish(&after.key, ticket, true)
    {
        debug!(%router_id, "MQTT session expired");
        purge_session(&shared, &router_id).await;
    }
}

/// Discards the router's session under `router_id`: a clean link under that id replaces it,
/// and is closed at once.
async fn purge_session<H>(shared: &Shared<H>, router_id: &str) {
    if let Ok((mut link, _)) = open_link(shared, router_id, true).await {
        close_link(shared, &mut link).await;
    }
}

/// Ends a link of the broker's own (see [`open_link`]) with a normal DISCONNECT.
async fn close_link<H>(shared: &Shared<H>, link: &mut Link) {
    let bye = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    let _ = link.tx.send(Packet::Disconnect(bye, None)).await;
    shared.stats.linked.fetch_sub(1, Ordering::Relaxed);
}

/// The successful ack of a message received at `qos` (1: PUBACK, 2: PUBREC; 0 has none).
fn success_ack(qos: u8, pkid: u16) -> Option<Packet> {
    match qos {
        1 => Some(Packet::PubAck(
            PubAck {
                pkid,
                reason: PubAckReason::Success,
            },
            None,
        )),
        2 => Some(Packet::PubRec(
            PubRec {
                pkid,
                reason: PubRecReason::Success,
            },
            None,
        )),
        _ => None,
    }
}

/// A PUBACK carrying why the hooks rejected its message (other packets as they are).
fn with_reason(packet: Packet, why: Rejected) -> Packet {
    let Packet::PubAck(ack, _) = packet else {
        return packet;
    };
    let (reason, text) = match why {
        Rejected::TooLarge => (
            PubAckReason::QuotaExceeded,
            "payload over the size the hub interprets (max_message_bytes)",
        ),
        Rejected::Invalid => (
            PubAckReason::PayloadFormatInvalid,
            "payload is not what the topic takes",
        ),
    };
    let properties = PubAckProperties {
        reason_string: Some(text.to_owned()),
        user_properties: Vec::new(),
    };
    Packet::PubAck(
        PubAck {
            pkid: ack.pkid,
            reason,
        },
        Some(properties),
    )
}

/// The QoS and packet id of a PUBLISH in rumqttd's storage form (`Publish::serialize`: the
/// flags byte, then the packet id), which rumqttd keeps private otherwise.
fn stored_delivery(raw: &[u8]) -> Option<(u8, u16)> {
    let (&flags, &hi, &lo) = (raw.first()?, raw.get(1)?, raw.get(2)?);
    Some(((flags >> 1) & 0b11, u16::from_be_bytes([hi, lo])))
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

/// The wire value of a DISCONNECT reason code (MQTT 5 3.14.2.1).
fn disconnect_reason(code: DisconnectReasonCode) -> u8 {
    use DisconnectReasonCode as C;
    match code {
        C::NormalDisconnection => 0x00,
        C::DisconnectWithWillMessage => 0x04,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::NotAuthorized => 0x87,
        C::ServerBusy => 0x89,
        C::ServerShuttingDown => 0x8B,
        C::KeepAliveTimeout => 0x8D,
        C::SessionTakenOver => 0x8E,
        C::TopicFilterInvalid => 0x8F,
        C::TopicNameInvalid => 0x90,
        C::ReceiveMaximumExceeded => 0x93,
        C::TopicAliasInvalid => 0x94,
        C::PacketTooLarge => 0x95,
        C::MessageRateTooHigh => 0x96,
        C::QuotaExceeded => 0x97,
        C::AdministrativeAction => 0x98,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::SharedSubscriptionNotSupported => 0x9E,
        C::ConnectionRateExceeded => 0x9F,
        C::MaximumConnectTime => 0xA0,
        C::SubscriptionIdentifiersNotSupported => 0xA1,
        C::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_they_fill_and_shrink_when_they_do_not() {
        let min = BUF_CHUNK as u16;
        let mut chunk = min;
        for _ in 0..10 {
            chunk = next_read_chunk(chunk, 100_000, 100_000);
        }
        assert_eq!(chunk, MAX_READ_CHUNK);
        assert_eq!(next_read_chunk(chunk, 8_000, 16_384), chunk);
        for _ in 0..10 {
            chunk = next_read_chunk(chunk, 10, 16_384);
        }
        assert_eq!(chunk, min);
    }
}
