//! The server endpoint engine: requests in, responses and notifications
//! out, with deduplication, piggy-backed and separate responses,
//! retransmission, Observe and block-wise transfers. No I/O: feed it with
//! `handle_datagram` / `handle_timeout` and drain `poll_transmit`,
//! `poll_event` and `poll_timeout`.

#[cfg(test)]
mod tests;
mod types;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use tracing::{debug, trace, warn};

pub use types::{
    Notification, ObserveFlag, Request, RequestId, Response, ServerConfig, ServerEvent, ServerStats,
};

use super::PeerMap;
use super::blockwise::{Block1Assembler, Block1Outcome, Block1Part, Block2Cache, slice_block};
use super::dedup::Seen;
use super::error::ServerError;
use super::message::{
    self, BlockOpt, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON, OptionProblem, Token, opt,
};
use super::message_layer::{Duplicate, MessageLayer};
use super::observe::{ObserverKey, ObserverRegistry, ObserverRemoved, next_seq};
use super::ratelimit::RateLimiter;
use super::transmission::{Retransmit, Transmit};

/// How often caches are swept for expired entries.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// Max-Age sent with 5.03 when the server is busy.
const BUSY_MAX_AGE: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    AckDelay(RequestId),
    ResponseDeadline(RequestId),
    Retransmit(SocketAddr, u16),
    Housekeeping,
}

/// A request the application has not answered yet.
#[derive(Debug)]
struct Exchange {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    confirmable: bool,
    empty_ack_sent: bool,
    observe: Option<ObserveFlag>,
    path_key: String,
    uri_key: String,
    /// Block1 option to echo in the final response of an upload.
    block1: Option<BlockOpt>,
    /// Block2 option of the request (size negotiation or a later block).
    block2: Option<BlockOpt>,
    /// When the request arrived; the response deadline counts from here.
    received: Instant,
}

/// Where to send an immediate answer.
#[derive(Clone, Copy, Debug)]
struct ReplyTo {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    confirmable: bool,
}

/// A CON we sent and retransmit until it is acknowledged.
#[derive(Debug)]
struct Outgoing {
    bytes: Bytes,
    retransmit: Retransmit,
    kind: OutKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutKind {
    /// A separate response after an empty ACK.
    Separate,
    /// A CON notification to this observer.
    Notification(ObserverKey),
}

/// Body and metadata of a response or notification, before blocking.
struct Body<'a> {
    code: MessageClass,
    content_format: Option<u16>,
    payload: &'a Bytes,
    max_age: Option<u32>,
    etag: Option<&'a [u8]>,
    location_path: &'a [String],
}

/// The server engine.
///
/// State is owned by one driver task (or test); nothing is shared, so no
/// locks. Every collection is bounded by a limit in [`ServerConfig`].
pub struct Server {
    config: ServerConfig,
    layer: MessageLayer<Timer, ServerEvent>,
    next_request: u64,
    limiter: Option<RateLimiter>,
    pending: PeerMap<RequestId, Exchange>,
    pending_by_mid: PeerMap<(SocketAddr, u16), RequestId>,
    pending_per_peer: PeerMap<SocketAddr, usize>,
    outgoing: PeerMap<(SocketAddr, u16), Outgoing>,
    observers: ObserverRegistry,
    uploads: Block1Assembler,
    block2: Block2Cache,
    stats: ServerStats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pending", &self.pending.len())
            .field("outgoing", &self.outgoing.len())
            .field("observers", &self.observers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates an engine.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            layer: MessageLayer::new(
                config.rng_seed,
                config.dedup.clone(),
                (Timer::Housekeeping, HOUSEKEEPING_INTERVAL),
            ),
            limiter: config.rate_limit.clone().map(RateLimiter::new),
            config,
            next_request: 0,
            pending: PeerMap::default(),
            pending_by_mid: PeerMap::default(),
            pending_per_peer: PeerMap::default(),
            outgoing: PeerMap::default(),
            observers: ObserverRegistry::default(),
            uploads: Block1Assembler::default(),
            block2: Block2Cache::default(),
            stats: ServerStats::default(),
        }
    }

    /// Lets any Content-Format through for paths under `prefix` (segments,
    /// leading slash optional), e.g. for firmware images.
    pub fn allow_any_content_format(&mut self, prefix: &str) {
        self.config.any_content_format.push(prefix.to_owned());
    }

    /// Counters since creation.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Number of registered observers.
    pub fn observer_count(&self) -> usize {
        self.observers.len()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.layer.poll_event()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.layer.poll_timeout()
    }

    /// Feeds one received datagram. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams += 1;
        if let Some(limiter) = &mut self.limiter
            && !limiter.admit(now, peer)
        {
            self.stats.rate_limited += 1;
            trace!(%peer, "datagram dropped by rate limit");
            return;
        }
        self.layer.ensure_housekeeping(now);
        let Some(packet) = self.layer.decode(peer, bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement, _) => self.on_ack(peer, mid),
            (MessageType::Reset, _) => self.on_reset(peer, mid),
            // CoAP ping (RFC 7252 §4.3): answer with a Reset.
            (MessageType::Confirmable, MessageClass::Empty) => {
                self.layer.send(peer, message::reset(mid))
            }
            (MessageType::NonConfirmable, MessageClass::Empty) => {}
            (_, MessageClass::Request(_)) => self.on_request(now, peer, packet),
            (_, MessageClass::Reserved(code)) if code >> 5 == 0 => {
                self.on_request(now, peer, packet)
            }
            (MessageType::Confirmable, _) => {
                // A response to a request we never sent.
                self.layer.send(peer, message::reset(mid));
            }
            (MessageType::NonConfirmable, _) => {}
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self.layer.timers.pop_due(now) {
            match timer {
                Timer::AckDelay(id) => {
                    // Only requests still unanswered after the ACK delay get
                    // a deadline timer, so prompt answers cost one entry.
                    if let Some(ex) = self.pending.get(&id) {
                        let deadline = ex.received + self.config.response_timeout;
                        self.layer
                            .timers
                            .schedule(deadline, Timer::ResponseDeadline(id));
                        self.send_empty_ack(id);
                    }
                }
                Timer::ResponseDeadline(id) => {
                    if self.pending.contains_key(&id) {
                        warn!(request = %id, "application did not answer in time; sending 5.03");
                        self.stats.busy += 1;
                        let _ =
                            self.respond(now, id, Response::new(ResponseType::ServiceUnavailable));
                    }
                }
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::Housekeeping => {
                    let timeout = self.config.blockwise.transfer_timeout;
                    self.uploads.expire(now, timeout);
                    self.block2.expire(now, timeout);
                    let uploading = self.uploads.len() > 0;
                    self.layer.on_housekeeping(now, uploading);
                }
            }
        }
    }

    /// Answers request `id`. Within `ack_delay` of a CON this is a
    /// piggy-backed ACK; later it is a separate CON response, retransmitted
    /// until acknowledged. Bodies larger than a block go out with Block2.
    pub fn respond(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response,
    ) -> Result<(), ServerError> {
        let ex = self
            .take_pending(id)
            .ok_or(ServerError::UnknownRequest(id.0))?;
        let code = MessageClass::Response(response.code);
        let key = (ex.peer, ex.token);
        let mut observe_value = None;
        if ex.observe == Some(ObserveFlag::Register) {
            if message::is_success(code) {
                let existed = self.observers.get_mut(&key).is_some();
                observe_value = self
                    .observers
                    .register(&self.config.observe, key, &ex.path_key);
                if observe_value.is_some() && !existed {
                    self.layer.emit(ServerEvent::ObserverAdded {
                        peer: ex.peer,
                        path: ex.path_key.clone(),
                    });
                } else if observe_value.is_none() {
                    debug!(peer = %ex.peer, path = %ex.path_key, "observer limit reached; answering without Observe");
                }
            } else if let Some(o) = self.observers.remove(key) {
                self.layer.emit(ServerEvent::ObserverRemoved {
                    peer: ex.peer,
                    path: o.path,
                    reason: ObserverRemoved::ErrorNotified,
                });
            }
        }
        let (mtype, mid) = if ex.confirmable && !ex.empty_ack_sent {
            (MessageType::Acknowledgement, ex.mid)
        } else if ex.confirmable {
            (MessageType::Confirmable, self.alloc_mid(ex.peer))
        } else {
            (MessageType::NonConfirmable, self.alloc_mid(ex.peer))
        };
        let mut packet = message::new_packet(mtype, code, mid, ex.token);
        if let Some(seq) = observe_value {
            message::set_uint_option(&mut packet, opt::OBSERVE, seq);
        }
        if let Some(b1) = ex.block1 {
            message::set_option(&mut packet, opt::BLOCK1, b1.encode());
        }
        let body = Body {
            code,
            content_format: response.content_format,
            payload: &response.payload,
            max_age: response.max_age,
            etag: response.etag.as_deref(),
            location_path: &response.location_path,
        };
        if !self.put_body(now, &mut packet, ex.peer, &ex.uri_key, &body, ex.block2) {
            packet = message::new_packet(
                mtype,
                MessageClass::Response(ResponseType::BadOption),
                mid,
                ex.token,
            );
        }
        let bytes = message::encode(&packet)?;
        self.layer.send(ex.peer, bytes.clone());
        match mtype {
            MessageType::Acknowledgement => {
                self.layer.dedup.update(ex.peer, ex.mid, Seen::Reply(bytes))
            }
            MessageType::Confirmable => {
                self.track_con(now, ex.peer, mid, bytes, OutKind::Separate, None)
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends `payload` to every observer of `path` as a 2.05 notification.
    /// Returns how many observers it went to.
    pub fn notify(
        &mut self,
        now: Instant,
        path: &str,
        content_format: u16,
        payload: Bytes,
    ) -> usize {
        self.notify_with(now, path, Notification::new(content_format, payload))
    }

    /// Sends a notification to every observer of `path`; an error code ends
    /// the observations. Returns how many observers it went to.
    pub fn notify_with(&mut self, now: Instant, path: &str, notification: Notification) -> usize {
        let key = message::path_key(&message::split_path(path));
        let observers = self.observers.of_path(&key);
        let ends = !message::is_success(MessageClass::Response(notification.code));
        for observer in &observers {
            if let Err(e) = self.send_notification(now, *observer, &key, &notification) {
                warn!(error = %e, "notification not sent");
            }
            if ends && let Some(o) = self.observers.remove(*observer) {
                self.layer.emit(ServerEvent::ObserverRemoved {
                    peer: observer.0,
                    path: o.path,
                    reason: ObserverRemoved::ErrorNotified,
                });
            }
        }
        observers.len()
    }

    fn send_notification(
        &mut self,
        now: Instant,
        key: ObserverKey,
        path: &str,
        n: &Notification,
    ) -> Result<(), ServerError> {
        let code = MessageClass::Response(n.code);
        let success = message::is_success(code);
        let con_every = self.config.observe.con_every.max(1);
        let Some(o) = self.observers.get_mut(&key) else {
            return Ok(());
        };
        o.seq = next_seq(o.seq);
        let seq = o.seq;
        let con = n.confirmable.unwrap_or(o.since_con + 1 >= con_every) || !success;
        if con {
            o.since_con = 0;
        } else {
            o.since_con += 1;
        }
        let previous = o.inflight.take();
        // RFC 7641 §4.5.2: a newer notification replaces one still in flight,
        // keeping its retransmission counter and timeout, so an observer
        // that stopped answering is still dropped in time.
        let inherited = previous
            .and_then(|mid| self.outgoing.remove(&(key.0, mid)))
            .map(|out| out.retransmit);
        let con = con || inherited.is_some();
        let mid = self.alloc_mid(key.0);
        let mtype = if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let mut packet = message::new_packet(mtype, code, mid, key.1);
        if success {
            message::set_uint_option(&mut packet, opt::OBSERVE, seq);
        }
        let body = Body {
            code,
            content_format: n.content_format,
            payload: &n.payload,
            max_age: n.max_age,
            etag: None,
            location_path: &[],
        };
        self.put_body(now, &mut packet, key.0, path, &body, None);
        let bytes = message::encode(&packet)?;
        self.layer.send(key.0, bytes.clone());
        if con {
            self.track_con(
                now,
                key.0,
                mid,
                bytes,
                OutKind::Notification(key),
                inherited,
            );
            if let Some(o) = self.observers.get_mut(&key) {
                o.inflight = Some(mid);
            }
        } else if let Some(o) = self.observers.get_mut(&key) {
            o.last_non = Some(mid);
        }
        Ok(())
    }

    fn on_request(&mut self, now: Instant, peer: SocketAddr, packet: Packet) {
        let mid = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        match self.layer.check_duplicate(now, peer, mid) {
            Duplicate::New => {}
            Duplicate::Replayed => {
                self.stats.duplicates += 1;
                trace!(%peer, mid, "duplicate CON answered from cache");
                return;
            }
            Duplicate::Pending => {
                self.stats.duplicates += 1;
                // The client is retransmitting: acknowledge now, answer later.
                if let Some(id) = self.pending_by_mid.get(&(peer, mid)).copied() {
                    self.send_empty_ack(id);
                }
                return;
            }
            Duplicate::Dropped => {
                self.stats.duplicates += 1;
                return;
            }
        }
        let params = &self.config.transmission;
        let (seen, lifetime) = if confirmable {
            (Seen::Pending, params.exchange_lifetime())
        } else {
            (Seen::Dropped, params.non_lifetime())
        };
        self.layer.dedup.insert(now, peer, mid, seen, lifetime);
        let reply = ReplyTo {
            peer,
            mid,
            token: message::token_of(&packet),
            confirmable,
        };
        if let Err(answer) = self.admit_request(now, reply, packet) {
            let Answer {
                code,
                diagnostic,
                size1,
                block1,
                max_age,
            } = answer;
            if code == ResponseType::ServiceUnavailable {
                self.stats.busy += 1;
            } else if code.is_error() {
                self.stats.refused += 1;
            }
            self.answer_now(now, reply, code, |p| {
                if let Some(s) = size1 {
                    message::set_uint_option(p, opt::SIZE1, s);
                }
                if let Some(b) = block1 {
                    message::set_option(p, opt::BLOCK1, b.encode());
                }
                if let Some(age) = max_age {
                    message::set_uint_option(p, opt::MAX_AGE, age);
                }
                if !diagnostic.is_empty() {
                    p.payload = diagnostic.as_bytes().to_vec();
                }
            });
        }
    }

    /// Validates a request and either hands it to the application (`Ok`) or
    /// says what to answer at once (`Err`).
    fn admit_request(
        &mut self,
        now: Instant,
        reply: ReplyTo,
        mut packet: Packet,
    ) -> Result<(), Answer> {
        let peer = reply.peer;
        let method = match packet.header.code {
            MessageClass::Request(m) if m != RequestType::UnKnown => m,
            _ => return Err(Answer::code(ResponseType::MethodNotAllowed)),
        };
        match message::check_request_options(&packet) {
            Ok(()) => {}
            Err(OptionProblem::BadOption(n)) => {
                debug!(%peer, option = n, "unrecognised critical option");
                return Err(Answer::diag(
                    ResponseType::BadOption,
                    "unrecognised critical option",
                ));
            }
            Err(OptionProblem::Proxy) => {
                return Err(Answer::code(ResponseType::ProxyingNotSupported));
            }
        }
        let Some(path) = message::string_options(&packet, opt::URI_PATH) else {
            return Err(Answer::diag(
                ResponseType::BadRequest,
                "Uri-Path is not UTF-8",
            ));
        };
        let Some(query) = message::string_options(&packet, opt::URI_QUERY) else {
            return Err(Answer::diag(
                ResponseType::BadRequest,
                "Uri-Query is not UTF-8",
            ));
        };
        let (Ok(block1), Ok(block2)) = (
            message::block_option(&packet, opt::BLOCK1),
            message::block_option(&packet, opt::BLOCK2),
        ) else {
            return Err(Answer::diag(
                ResponseType::BadRequest,
                "malformed Block option",
            ));
        };
        let content_format = message::content_format(&packet);
        let has_body = !packet.payload.is_empty() || block1.is_some();
        if has_body
            && let Some(cf) = content_format
            && cf != CONTENT_FORMAT_JSON
            && cf != CONTENT_FORMAT_CBOR
            && !self.accepts_any_content_format(&path)
        {
            return Err(Answer::code(ResponseType::UnsupportedContentFormat));
        }
        let max_body = self.config.blockwise.max_body_size;
        let too_large = || Answer {
            size1: u32::try_from(max_body).ok(),
            ..Answer::code(ResponseType::RequestEntityTooLarge)
        };
        if message::uint_option(&packet, opt::SIZE1, 4).is_some_and(|s| s as usize > max_body) {
            return Err(too_large());
        }
        let path_key = message::path_key(&path);
        let uri_key = if query.is_empty() {
            path_key.clone()
        } else {
            format!("{path_key}?{}", query.join("&"))
        };
        let mut payload = Bytes::from(std::mem::take(&mut packet.payload));
        let mut echo_block1 = None;
        if let Some(b1) = block1 {
            let our_szx = message::szx_for(self.config.blockwise.block_size);
            let part = Block1Part {
                block: b1,
                content_format,
                payload: &payload,
            };
            let outcome = self
                .uploads
                .feed(now, &self.config.blockwise, peer, &uri_key, part);
            match outcome {
                Block1Outcome::Continue => {
                    let ack = BlockOpt {
                        num: b1.num,
                        more: true,
                        szx: b1.szx.min(our_szx),
                    };
                    return Err(Answer {
                        block1: Some(ack),
                        ..Answer::code(ResponseType::Continue)
                    });
                }
                Block1Outcome::Complete(body) => {
                    payload = body;
                    echo_block1 = Some(BlockOpt { more: false, ..b1 });
                }
                Block1Outcome::Incomplete => {
                    return Err(Answer::diag(
                        ResponseType::RequestEntityIncomplete,
                        "missing blocks",
                    ));
                }
                Block1Outcome::TooLarge => return Err(too_large()),
                Block1Outcome::BadBlock => {
                    return Err(Answer::diag(
                        ResponseType::BadRequest,
                        "block with M=1 is not full size",
                    ));
                }
                Block1Outcome::Busy => {
                    return Err(Answer {
                        max_age: Some(BUSY_MAX_AGE),
                        ..Answer::code(ResponseType::ServiceUnavailable)
                    });
                }
            }
        } else if payload.len() > max_body {
            return Err(too_large());
        }
        if let Some(b2) = block2
            && b2.num > 0
            && let Some(cached) = self.block2.get(now, peer, &uri_key)
        {
            self.serve_cached_block(now, reply, &uri_key, cached, b2);
            return Ok(());
        }
        let observe = match (method, message::uint_option(&packet, opt::OBSERVE, 3)) {
            (RequestType::Get, Some(0)) => Some(ObserveFlag::Register),
            (RequestType::Get, Some(1)) => Some(ObserveFlag::Deregister),
            _ => None,
        };
        if observe == Some(ObserveFlag::Deregister)
            && let Some(o) = self.observers.remove((peer, reply.token))
        {
            self.layer.emit(ServerEvent::ObserverRemoved {
                peer,
                path: o.path,
                reason: ObserverRemoved::Deregistered,
            });
        }
        let of_peer = self.pending_per_peer.get(&peer).copied().unwrap_or(0);
        if self.pending.len() >= self.config.max_pending
            || of_peer >= self.config.max_pending_per_peer
        {
            return Err(Answer {
                max_age: Some(BUSY_MAX_AGE),
                ..Answer::code(ResponseType::ServiceUnavailable)
            });
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let accept =
            message::uint_option(&packet, opt::ACCEPT, 2).and_then(|v| u16::try_from(v).ok());
        self.pending.insert(
            id,
            Exchange {
                peer,
                mid: reply.mid,
                token: reply.token,
                confirmable: reply.confirmable,
                empty_ack_sent: false,
                observe,
                path_key,
                uri_key,
                block1: echo_block1,
                block2,
                received: now,
            },
        );
        self.pending_by_mid.insert((peer, reply.mid), id);
        *self.pending_per_peer.entry(peer).or_default() += 1;
        self.layer
            .timers
            .schedule(now + self.config.ack_delay, Timer::AckDelay(id));
        self.stats.requests += 1;
        self.layer.emit(ServerEvent::Request(Request {
            id,
            peer,
            method,
            path,
            query,
            content_format,
            accept,
            payload,
            observe,
            confirmable: reply.confirmable,
        }));
        Ok(())
    }

    /// Serves block `b2.num` of a body cached by an earlier response.
    fn serve_cached_block(
        &mut self,
        now: Instant,
        reply: ReplyTo,
        uri_key: &str,
        cached: super::blockwise::CachedBody,
        b2: BlockOpt,
    ) {
        let (mtype, mid) = self.immediate_type(reply);
        let mut packet = message::new_packet(mtype, cached.code, mid, reply.token);
        let body = Body {
            code: cached.code,
            content_format: cached.content_format,
            payload: &cached.body,
            max_age: cached.max_age,
            etag: cached.etag.as_deref(),
            location_path: &[],
        };
        if !self.put_body(now, &mut packet, reply.peer, uri_key, &body, Some(b2)) {
            packet = message::new_packet(
                mtype,
                MessageClass::Response(ResponseType::BadOption),
                mid,
                reply.token,
            );
        }
        self.finish_immediate(reply, mtype, &packet);
    }

    /// Sends an answer decided by the engine itself (errors, 2.31 Continue).
    fn answer_now(
        &mut self,
        _now: Instant,
        reply: ReplyTo,
        code: ResponseType,
        fill: impl FnOnce(&mut Packet),
    ) {
        let (mtype, mid) = self.immediate_type(reply);
        let mut packet = message::new_packet(mtype, MessageClass::Response(code), mid, reply.token);
        fill(&mut packet);
        self.finish_immediate(reply, mtype, &packet);
    }

    fn immediate_type(&mut self, reply: ReplyTo) -> (MessageType, u16) {
        if reply.confirmable {
            (MessageType::Acknowledgement, reply.mid)
        } else {
            (MessageType::NonConfirmable, self.alloc_mid(reply.peer))
        }
    }

    fn finish_immediate(&mut self, reply: ReplyTo, mtype: MessageType, packet: &Packet) {
        match message::encode(packet) {
            Ok(bytes) => {
                self.layer.send(reply.peer, bytes.clone());
                if mtype == MessageType::Acknowledgement {
                    self.layer
                        .dedup
                        .update(reply.peer, reply.mid, Seen::Reply(bytes));
                }
            }
            Err(e) => warn!(error = %e, "cannot encode answer"),
        }
    }

    /// Puts the body into `packet`, as one block when it does not fit or a
    /// block was asked for, caching the whole body for the later blocks.
    /// Returns `false` when the requested block lies past the end.
    fn put_body(
        &mut self,
        now: Instant,
        packet: &mut Packet,
        peer: SocketAddr,
        uri_key: &str,
        body: &Body<'_>,
        block2: Option<BlockOpt>,
    ) -> bool {
        if let Some(cf) = body.content_format {
            message::set_uint_option(packet, opt::CONTENT_FORMAT, u32::from(cf));
        }
        if let Some(age) = body.max_age {
            message::set_uint_option(packet, opt::MAX_AGE, age);
        }
        message::add_segments(packet, opt::LOCATION_PATH, body.location_path);
        let our_szx = message::szx_for(self.config.blockwise.block_size);
        let szx = block2.map_or(our_szx, |b| b.szx.min(our_szx));
        let size = message::szx_size(szx);
        // A block number in the client's (maybe larger) size unit.
        let num = block2.map_or(0, |b| b.offset() / size);
        let Ok(num) = u32::try_from(num) else {
            return false;
        };
        if body.payload.len() <= size && num == 0 {
            if let Some(etag) = body.etag {
                message::set_option(packet, opt::ETAG, etag.to_vec());
            }
            if block2.is_some() {
                message::set_option(
                    packet,
                    opt::BLOCK2,
                    BlockOpt {
                        num: 0,
                        more: false,
                        szx,
                    }
                    .encode(),
                );
            }
            packet.payload = body.payload.to_vec();
            return true;
        }
        let Some((chunk, more)) = slice_block(body.payload, num, szx) else {
            return false;
        };
        let etag = body
            .etag
            .map_or_else(|| etag_of(body.payload), <[u8]>::to_vec);
        message::set_option(packet, opt::ETAG, etag.clone());
        message::set_option(packet, opt::BLOCK2, BlockOpt { num, more, szx }.encode());
        if let Ok(total) = u32::try_from(body.payload.len()) {
            message::set_uint_option(packet, opt::SIZE2, total);
        }
        packet.payload = chunk.to_vec();
        if more {
            self.block2.store(
                now,
                &self.config.blockwise,
                peer,
                uri_key.to_owned(),
                body.code,
                body.content_format,
                Some(etag),
                body.max_age,
                body.payload.clone(),
            );
        } else {
            self.block2.remove(peer, uri_key);
        }
        true
    }

    fn send_empty_ack(&mut self, id: RequestId) {
        let Some(ex) = self.pending.get_mut(&id) else {
            return;
        };
        if !ex.confirmable || ex.empty_ack_sent {
            if ex.empty_ack_sent {
                let ack = message::empty_ack(ex.mid);
                let peer = ex.peer;
                self.layer.send(peer, ack);
            }
            return;
        }
        ex.empty_ack_sent = true;
        let (peer, mid) = (ex.peer, ex.mid);
        let ack = message::empty_ack(mid);
        self.layer.dedup.update(peer, mid, Seen::Reply(ack.clone()));
        self.layer.send(peer, ack);
    }

    fn take_pending(&mut self, id: RequestId) -> Option<Exchange> {
        let ex = self.pending.remove(&id)?;
        self.pending_by_mid.remove(&(ex.peer, ex.mid));
        if let Some(n) = self.pending_per_peer.get_mut(&ex.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_per_peer.remove(&ex.peer);
            }
        }
        Some(ex)
    }

    fn track_con(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Bytes,
        kind: OutKind,
        inherited: Option<Retransmit>,
    ) {
        let retransmit = inherited
            .unwrap_or_else(|| self.layer.start_retransmit(now, &self.config.transmission));
        self.layer
            .timers
            .schedule(retransmit.deadline, Timer::Retransmit(peer, mid));
        self.outgoing.insert(
            (peer, mid),
            Outgoing {
                bytes,
                retransmit,
                kind,
            },
        );
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let params = &self.config.transmission;
        let Some(out) = self.outgoing.get_mut(&(peer, mid)) else {
            return;
        };
        if out.retransmit.deadline > now {
            return;
        }
        let timer = Timer::Retransmit(peer, mid);
        if self
            .layer
            .retransmit(now, peer, &mut out.retransmit, &out.bytes, params, timer)
        {
            self.stats.retransmissions += 1;
            return;
        }
        self.stats.gave_up += 1;
        let kind = out.kind;
        self.outgoing.remove(&(peer, mid));
        debug!(%peer, mid, "CON not acknowledged; giving up");
        if let OutKind::Notification(key) = kind {
            self.drop_observer_if_inflight(key, mid, ObserverRemoved::Timeout);
        }
    }

    fn on_ack(&mut self, peer: SocketAddr, mid: u16) {
        let Some(out) = self.outgoing.remove(&(peer, mid)) else {
            return;
        };
        if let OutKind::Notification(key) = out.kind
            && let Some(o) = self.observers.get_mut(&key)
            && o.inflight == Some(mid)
        {
            o.inflight = None;
        }
    }

    fn on_reset(&mut self, peer: SocketAddr, mid: u16) {
        if let Some(out) = self.outgoing.remove(&(peer, mid)) {
            match out.kind {
                OutKind::Notification(key) => {
                    self.drop_observer_if_inflight(key, mid, ObserverRemoved::Reset)
                }
                OutKind::Separate => debug!(%peer, mid, "separate response rejected with Reset"),
            }
        } else if let Some(key) = self.observers.by_non_mid(peer, mid) {
            self.remove_observer(key, ObserverRemoved::Reset);
        }
    }

    fn drop_observer_if_inflight(&mut self, key: ObserverKey, mid: u16, reason: ObserverRemoved) {
        if self
            .observers
            .get_mut(&key)
            .is_some_and(|o| o.inflight == Some(mid))
        {
            self.remove_observer(key, reason);
        }
    }

    fn remove_observer(&mut self, key: ObserverKey, reason: ObserverRemoved) {
        if let Some(o) = self.observers.remove(key) {
            debug!(peer = %key.0, path = %o.path, ?reason, "observer removed");
            self.layer.emit(ServerEvent::ObserverRemoved {
                peer: key.0,
                path: o.path,
                reason,
            });
        }
    }

    fn accepts_any_content_format(&self, path: &[String]) -> bool {
        self.config.any_content_format.iter().any(|prefix| {
            let prefix = message::split_path(prefix);
            prefix.len() <= path.len() && prefix.iter().zip(path).all(|(a, b)| a == b)
        })
    }

    fn alloc_mid(&mut self, peer: SocketAddr) -> u16 {
        let outgoing = &self.outgoing;
        self.layer.alloc_mid(peer, |key| outgoing.contains_key(key))
    }
}

/// An answer the engine gives without asking the application.
#[derive(Debug)]
struct Answer {
    code: ResponseType,
    diagnostic: &'static str,
    size1: Option<u32>,
    block1: Option<BlockOpt>,
    max_age: Option<u32>,
}

impl Answer {
    fn code(code: ResponseType) -> Self {
        Self {
            code,
            diagnostic: "",
            size1: None,
            block1: None,
            max_age: None,
        }
    }

    fn diag(code: ResponseType, diagnostic: &'static str) -> Self {
        Self {
            diagnostic,
            ..Self::code(code)
        }
    }
}

/// A 4-byte ETag derived from a body, so that clients fetching blocks can
/// tell when the representation changed between blocks (RFC 7959 §2.4).
fn etag_of(body: &[u8]) -> Vec<u8> {
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
        .to_be_bytes()
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}
