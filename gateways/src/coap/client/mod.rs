//! The client endpoint engine: the hub as a CoAP client of devices that are
//! CoAP servers. One-shot requests with CON retransmission and result events,
//! and observations (RFC 7641) that stay alive: re-registered when they
//! lapse, ordered by the freshness rule, and turned into polling when a
//! device does not support Observe. Block-wise in both directions. No I/O.

#[cfg(test)]
mod tests;
mod types;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use rand::Rng;
use tracing::{debug, trace};

pub use types::{ClientConfig, ClientEvent, ObservationId, Operation, RequestId};

use super::dedup::Seen;
use super::error::ClientError;
use super::message::{self, BlockOpt, Token, opt};
use super::message_layer::{Duplicate, MessageLayer};
use super::observe::is_fresher;
use super::transmission::{Retransmit, Transmit};

/// Max-Age assumed when a response carries none (RFC 7252 §5.10.5).
const DEFAULT_MAX_AGE: u64 = 60;
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit(SocketAddr, u16),
    Separate(SocketAddr, Token),
    Observation(ObservationId),
    Housekeeping,
}

/// Why an exchange exists, which decides where its result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Request(RequestId),
    /// Registration or re-registration (GET with Observe=0).
    Register(ObservationId),
    /// A GET standing in for notifications.
    Poll(ObservationId),
    /// Fetching the remaining blocks of notification `seq`.
    NotificationBlocks(ObservationId, u32),
}

impl Purpose {
    fn operation(self) -> Operation {
        match self {
            Purpose::Request(id) => Operation::Request(id),
            Purpose::Register(id) | Purpose::Poll(id) | Purpose::NotificationBlocks(id, _) => {
                Operation::Observation(id)
            }
        }
    }
}

/// A Block1 upload in progress.
#[derive(Debug)]
struct Upload {
    body: Bytes,
    offset: usize,
    szx: u8,
}

/// A Block2 download in progress.
#[derive(Debug)]
struct Download {
    body: BytesMut,
    szx: u8,
    etag: Option<Vec<u8>>,
    /// Observe value of the first block (registrations).
    observe: Option<u32>,
}

/// The final answer to a registration or poll.
#[derive(Debug)]
struct RegistrationAnswer {
    code: ResponseType,
    observe: Option<u32>,
    max_age: Option<u32>,
    content_format: Option<u16>,
    payload: Bytes,
}

/// One request in flight, possibly spanning several messages (blocks).
#[derive(Debug)]
struct Exchange {
    purpose: Purpose,
    method: RequestType,
    path: Vec<String>,
    query: Vec<String>,
    content_format: Option<u16>,
    upload: Option<Upload>,
    download: Option<Download>,
    /// Message ID of the CON currently out.
    mid: u16,
    bytes: Bytes,
    retransmit: Option<Retransmit>,
    /// Set after an empty ACK: when to stop waiting for the separate response.
    separate_deadline: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObsState {
    /// A registration (or poll) exchange is in flight.
    Busy,
    /// Registered; `next` is when it lapses.
    Active,
    /// The device does not do Observe; `next` is the next poll.
    Polling,
    /// Registration failed; `next` is the retry.
    Waiting,
}

#[derive(Debug)]
struct Observation {
    peer: SocketAddr,
    path: Vec<String>,
    query: Vec<String>,
    token: Token,
    state: ObsState,
    next: Option<Instant>,
    /// Observe value and arrival time of the newest accepted notification.
    last: Option<(u32, Instant)>,
}

/// The client engine. Owned by one driver task or test; no locks.
pub struct Client {
    config: ClientConfig,
    layer: MessageLayer<Timer, ClientEvent>,
    next_id: u64,
    exchanges: HashMap<(SocketAddr, Token), Exchange>,
    by_mid: HashMap<(SocketAddr, u16), Token>,
    observations: HashMap<ObservationId, Observation>,
    obs_by_token: HashMap<(SocketAddr, Token), ObservationId>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("exchanges", &self.exchanges.len())
            .field("observations", &self.observations.len())
            .finish_non_exhaustive()
    }
}

/// Splits `"/a/b?x=1&y=2"` into path segments and query values.
fn split_uri(uri: &str) -> (Vec<String>, Vec<String>) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let query = if query.is_empty() {
        Vec::new()
    } else {
        query.split('&').map(str::to_owned).collect()
    };
    (message::split_path(path), query)
}

impl Client {
    /// Creates an engine.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            layer: MessageLayer::new(
                config.rng_seed,
                config.dedup.clone(),
                (Timer::Housekeeping, HOUSEKEEPING_INTERVAL),
            ),
            config,
            next_id: 0,
            exchanges: HashMap::new(),
            by_mid: HashMap::new(),
            observations: HashMap::new(),
            obs_by_token: HashMap::new(),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.layer.poll_event()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.layer.poll_timeout()
    }

    /// GET `uri` (path, optionally `?query`) from `peer`.
    pub fn get(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        uri: &str,
    ) -> Result<RequestId, ClientError> {
        self.request(now, peer, RequestType::Get, uri, None, Bytes::new())
    }

    /// PUT a body to `uri` on `peer`; bodies larger than a block go out with
    /// Block1.
    pub fn put(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        uri: &str,
        content_format: u16,
        payload: Bytes,
    ) -> Result<RequestId, ClientError> {
        self.request(
            now,
            peer,
            RequestType::Put,
            uri,
            Some(content_format),
            payload,
        )
    }

    /// Sends a Confirmable request; the result comes as a `Response` or
    /// `Failed` event with the returned id.
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        method: RequestType,
        uri: &str,
        content_format: Option<u16>,
        payload: Bytes,
    ) -> Result<RequestId, ClientError> {
        if self.exchanges.len() >= self.config.max_in_flight {
            return Err(ClientError::Busy);
        }
        if payload.len() > self.config.max_body_size {
            return Err(ClientError::TooLarge(self.config.max_body_size));
        }
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let (path, query) = split_uri(uri);
        let token = self.fresh_token(peer);
        self.start_exchange(
            now,
            token,
            Purpose::Request(id),
            peer,
            method,
            path,
            query,
            content_format,
            payload,
        )?;
        Ok(id)
    }

    /// Starts observing `uri` on `peer`: GET with Observe=0 and a fresh
    /// token. Notifications arrive as events until `cancel_observation`.
    pub fn observe(&mut self, now: Instant, peer: SocketAddr, uri: &str) -> ObservationId {
        self.next_id += 1;
        let id = ObservationId(self.next_id);
        let (path, query) = split_uri(uri);
        let token = self.fresh_token(peer);
        self.observations.insert(
            id,
            Observation {
                peer,
                path,
                query,
                token,
                state: ObsState::Waiting,
                next: None,
                last: None,
            },
        );
        self.obs_by_token.insert((peer, token), id);
        self.register(now, id, Purpose::Register(id));
        id
    }

    /// Stops an observation: forgets it and tells the device with a NON GET
    /// carrying Observe=1 (RFC 7641 §3.6). Later notifications get a Reset.
    pub fn cancel_observation(
        &mut self,
        _now: Instant,
        id: ObservationId,
    ) -> Result<(), ClientError> {
        let obs = self.observations.remove(&id).ok_or(ClientError::Unknown)?;
        self.obs_by_token.remove(&(obs.peer, obs.token));
        if let Some(ex) = self.exchanges.remove(&(obs.peer, obs.token)) {
            self.by_mid.remove(&(obs.peer, ex.mid));
        }
        let mid = self.alloc_mid(obs.peer);
        let mut p = message::new_packet(
            MessageType::NonConfirmable,
            MessageClass::Request(RequestType::Get),
            mid,
            obs.token,
        );
        message::set_uint_option(&mut p, opt::OBSERVE, 1);
        message::add_segments(&mut p, opt::URI_PATH, &obs.path);
        message::add_segments(&mut p, opt::URI_QUERY, &obs.query);
        let bytes = message::encode(&p).map_err(|e| ClientError::Encode(std::sync::Arc::new(e)))?;
        self.layer.send(obs.peer, bytes);
        Ok(())
    }

    /// Feeds one received datagram; false if it was not a CoAP message (dropped,
    /// and answered with a Reset if its header says Confirmable). Never panics,
    /// whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) -> bool {
        self.layer.ensure_housekeeping(now);
        let Some(packet) = self.layer.decode(peer, bytes) else {
            return false;
        };
        let mid = packet.header.message_id;
        let mtype = packet.header.get_type();
        match (mtype, packet.header.code) {
            (MessageType::Acknowledgement, MessageClass::Empty) => {
                self.on_empty_ack(now, peer, mid)
            }
            (MessageType::Reset, _) => self.on_reset(now, peer, mid),
            (
                MessageType::Acknowledgement,
                MessageClass::Response(_) | MessageClass::Reserved(_),
            ) if self.by_mid.get(&(peer, mid)) == Some(&message::token_of(&packet)) => {
                self.by_mid.remove(&(peer, mid));
                self.on_response(now, peer, packet);
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, MessageClass::Response(_)) => {
                self.on_con_or_non_response(now, peer, packet);
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, MessageClass::Reserved(c))
                if c >> 5 != 0 =>
            {
                self.on_con_or_non_response(now, peer, packet);
            }
            // We serve nothing: requests and pings are rejected.
            (MessageType::Confirmable, _) => self.layer.send(peer, message::reset(mid)),
            _ => {}
        }
        true
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.layer.timers.pop_due(now) {
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::Separate(peer, token) => {
                    let expired = self
                        .exchanges
                        .get(&(peer, token))
                        .is_some_and(|ex| ex.separate_deadline.is_some_and(|d| d <= now));
                    if expired {
                        self.fail_exchange(now, (peer, token), ClientError::Timeout);
                    }
                }
                Timer::Observation(id) => {
                    let due = self
                        .observations
                        .get(&id)
                        .is_some_and(|o| o.next == Some(at));
                    if due {
                        self.on_observation_timer(now, id);
                    }
                }
                Timer::Housekeeping => self.layer.on_housekeeping(now, false),
            }
        }
    }

    fn on_observation_timer(&mut self, now: Instant, id: ObservationId) {
        let Some(obs) = self.observations.get_mut(&id) else {
            return;
        };
        obs.next = None;
        match obs.state {
            ObsState::Active => {
                debug!(observation = %id, "observation lapsed; re-registering");
                self.register(now, id, Purpose::Register(id));
            }
            ObsState::Waiting => self.register(now, id, Purpose::Register(id)),
            ObsState::Polling => self.register(now, id, Purpose::Poll(id)),
            ObsState::Busy => {}
        }
    }

    /// Sends a registration or poll for observation `id` with its token.
    fn register(&mut self, now: Instant, id: ObservationId, purpose: Purpose) {
        let Some(obs) = self.observations.get_mut(&id) else {
            return;
        };
        obs.state = ObsState::Busy;
        let (peer, token, path, query) = (obs.peer, obs.token, obs.path.clone(), obs.query.clone());
        if let Some(old) = self.exchanges.remove(&(peer, token)) {
            self.by_mid.remove(&(peer, old.mid));
        }
        if let Err(e) = self.start_exchange(
            now,
            token,
            purpose,
            peer,
            RequestType::Get,
            path,
            query,
            None,
            Bytes::new(),
        ) {
            self.observation_failed(now, id, e);
        }
    }

    #[allow(clippy::too_many_arguments, reason = "fields of a new exchange")]
    fn start_exchange(
        &mut self,
        now: Instant,
        token: Token,
        purpose: Purpose,
        peer: SocketAddr,
        method: RequestType,
        path: Vec<String>,
        query: Vec<String>,
        content_format: Option<u16>,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let szx = message::szx_for(self.config.block_size);
        let (upload, small_body) = if payload.len() > message::szx_size(szx) {
            (
                Some(Upload {
                    body: payload,
                    offset: 0,
                    szx,
                }),
                None,
            )
        } else {
            (None, (!payload.is_empty()).then_some(payload))
        };
        let ex = Exchange {
            purpose,
            method,
            path,
            query,
            content_format,
            upload,
            download: None,
            mid: 0,
            bytes: Bytes::new(),
            retransmit: None,
            separate_deadline: None,
        };
        self.exchanges.insert((peer, token), ex);
        let result = self.send_next(now, (peer, token), small_body);
        if result.is_err() {
            self.exchanges.remove(&(peer, token));
        }
        result
    }

    /// Builds and sends the next message of an exchange: the first, the next
    /// Block1 block or the next Block2 request. `small_body` carries a body
    /// that fits one message.
    fn send_next(
        &mut self,
        now: Instant,
        key: (SocketAddr, Token),
        small_body: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let mid = self.alloc_mid(key.0);
        let Some(ex) = self.exchanges.get_mut(&key) else {
            return Err(ClientError::Unknown);
        };
        let mut p = message::new_packet(
            MessageType::Confirmable,
            MessageClass::Request(ex.method),
            mid,
            key.1,
        );
        message::add_segments(&mut p, opt::URI_PATH, &ex.path);
        message::add_segments(&mut p, opt::URI_QUERY, &ex.query);
        if matches!(ex.purpose, Purpose::Register(_)) && ex.download.is_none() {
            message::set_uint_option(&mut p, opt::OBSERVE, 0);
        }
        if let Some(dl) = &ex.download {
            let size = message::szx_size(dl.szx);
            let num = u32::try_from(dl.body.len() / size).unwrap_or(BlockOpt::MAX_NUM);
            message::set_option(
                &mut p,
                opt::BLOCK2,
                BlockOpt {
                    num,
                    more: false,
                    szx: dl.szx,
                }
                .encode(),
            );
        } else if let Some(up) = &ex.upload {
            let size = message::szx_size(up.szx);
            let end = up.offset.saturating_add(size).min(up.body.len());
            let more = end < up.body.len();
            let num = u32::try_from(up.offset / size).unwrap_or(BlockOpt::MAX_NUM);
            message::set_option(
                &mut p,
                opt::BLOCK1,
                BlockOpt {
                    num,
                    more,
                    szx: up.szx,
                }
                .encode(),
            );
            if num == 0
                && let Ok(total) = u32::try_from(up.body.len())
            {
                message::set_uint_option(&mut p, opt::SIZE1, total);
            }
            if let Some(cf) = ex.content_format {
                message::set_uint_option(&mut p, opt::CONTENT_FORMAT, u32::from(cf));
            }
            p.payload = up
                .body
                .get(up.offset..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
        } else if let Some(body) = small_body {
            if let Some(cf) = ex.content_format {
                message::set_uint_option(&mut p, opt::CONTENT_FORMAT, u32::from(cf));
            }
            p.payload = body.to_vec();
        }
        let bytes = message::encode(&p).map_err(|e| ClientError::Encode(std::sync::Arc::new(e)))?;
        let retransmit = self.layer.start_retransmit(now, &self.config.transmission);
        ex.mid = mid;
        ex.bytes = bytes.clone();
        ex.retransmit = Some(retransmit);
        ex.separate_deadline = None;
        self.by_mid.insert((key.0, mid), key.1);
        self.layer
            .timers
            .schedule(retransmit.deadline, Timer::Retransmit(key.0, mid));
        self.layer.send(key.0, bytes);
        Ok(())
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(token) = self.by_mid.get(&(peer, mid)).copied() else {
            return;
        };
        let params = &self.config.transmission;
        let Some(ex) = self.exchanges.get_mut(&(peer, token)) else {
            self.by_mid.remove(&(peer, mid));
            return;
        };
        let Some(rt) = ex
            .retransmit
            .as_mut()
            .filter(|rt| ex.mid == mid && rt.deadline <= now)
        else {
            return;
        };
        let timer = Timer::Retransmit(peer, mid);
        if !self
            .layer
            .retransmit(now, peer, rt, &ex.bytes, params, timer)
        {
            self.fail_exchange(now, (peer, token), ClientError::Timeout);
        }
    }

    fn on_empty_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(token) = self.by_mid.remove(&(peer, mid)) else {
            return;
        };
        let Some(ex) = self.exchanges.get_mut(&(peer, token)) else {
            return;
        };
        ex.retransmit = None;
        let deadline = now + self.config.separate_response_timeout;
        ex.separate_deadline = Some(deadline);
        self.layer
            .timers
            .schedule(deadline, Timer::Separate(peer, token));
    }

    fn on_reset(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        if let Some(token) = self.by_mid.remove(&(peer, mid)) {
            self.fail_exchange(now, (peer, token), ClientError::Reset);
        }
    }

    /// A CON or NON carrying a response: a separate response or a
    /// notification. CONs are acknowledged; unknown tokens get a Reset.
    fn on_con_or_non_response(&mut self, now: Instant, peer: SocketAddr, packet: Packet) {
        let mid = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        if self.layer.check_duplicate(now, peer, mid) != Duplicate::New {
            return;
        }
        let key = (peer, message::token_of(&packet));
        let known = self.exchanges.contains_key(&key) || self.obs_by_token.contains_key(&key);
        let params = &self.config.transmission;
        let reply = if !known {
            trace!(%peer, mid, "response with unknown token rejected");
            message::reset(mid)
        } else {
            message::empty_ack(mid)
        };
        if confirmable || !known {
            self.layer.dedup.insert(
                now,
                peer,
                mid,
                Seen::Reply(reply.clone()),
                params.exchange_lifetime(),
            );
            self.layer.send(peer, reply);
        } else {
            self.layer
                .dedup
                .insert(now, peer, mid, Seen::Dropped, params.non_lifetime());
        }
        if known && self.is_stale_racing_notification(now, key, &packet) {
            trace!(%peer, mid, "stale notification during re-registration ignored");
            return;
        }
        if known {
            if let Some(ex) = self.exchanges.get(&key) {
                self.by_mid.remove(&(peer, ex.mid));
            }
            self.on_response(now, peer, packet);
        }
    }

    /// While a re-registration is in flight, a CON/NON carrying an older
    /// Observe value is a late notification, not the answer: it must neither
    /// complete the exchange nor reset the freshness baseline.
    fn is_stale_racing_notification(
        &self,
        now: Instant,
        key: (SocketAddr, Token),
        packet: &Packet,
    ) -> bool {
        let Some(Purpose::Register(id)) = self.exchanges.get(&key).map(|ex| ex.purpose) else {
            return false;
        };
        let last = self.observations.get(&id).and_then(|o| o.last);
        match (last, message::uint_option(packet, opt::OBSERVE, 3)) {
            (Some((v1, t1)), Some(v2)) => !is_fresher(v1, t1, v2, now),
            _ => false,
        }
    }

    fn on_response(&mut self, now: Instant, peer: SocketAddr, packet: Packet) {
        let key = (peer, message::token_of(&packet));
        if self.exchanges.contains_key(&key) {
            self.on_exchange_response(now, key, packet);
        } else if let Some(id) = self.obs_by_token.get(&key).copied() {
            self.on_notification(now, id, packet);
        }
    }

    fn on_exchange_response(&mut self, now: Instant, key: (SocketAddr, Token), packet: Packet) {
        let code = response_code(&packet);
        let Some(ex) = self.exchanges.get_mut(&key) else {
            return;
        };
        ex.retransmit = None;
        ex.separate_deadline = None;
        // Block1: the server wants the next block.
        if code == ResponseType::Continue
            && let Some(up) = ex.upload.as_mut()
        {
            let Ok(Some(b1)) = message::block_option(&packet, opt::BLOCK1) else {
                return self.fail_exchange(now, key, ClientError::Blockwise("2.31 without Block1"));
            };
            let sent = message::szx_size(up.szx).min(up.body.len().saturating_sub(up.offset));
            up.offset += sent;
            up.szx = up.szx.min(b1.szx);
            if up.offset >= up.body.len() {
                return self.fail_exchange(
                    now,
                    key,
                    ClientError::Blockwise("2.31 after the last block"),
                );
            }
            if let Err(e) = self.send_next(now, key, None) {
                self.fail_exchange(now, key, e);
            }
            return;
        }
        ex.upload = None;
        let block2 = message::block_option(&packet, opt::BLOCK2);
        let etag = message::first_option(&packet, opt::ETAG).map(<[u8]>::to_vec);
        let observe = message::uint_option(&packet, opt::OBSERVE, 3);
        let mut payload = Bytes::from(packet.payload.clone());
        if message::is_success(packet.header.code)
            && let Ok(Some(b2)) = block2
        {
            let dl = ex.download.get_or_insert_with(|| Download {
                body: BytesMut::new(),
                szx: b2.szx,
                etag: etag.clone(),
                observe,
            });
            if b2.offset() != dl.body.len() {
                return self.fail_exchange(
                    now,
                    key,
                    ClientError::Blockwise("unexpected block number"),
                );
            }
            if dl.etag != etag {
                return self.fail_exchange(
                    now,
                    key,
                    ClientError::Blockwise("representation changed during transfer"),
                );
            }
            if dl.body.len() + payload.len() > self.config.max_body_size {
                return self.fail_exchange(
                    now,
                    key,
                    ClientError::TooLarge(self.config.max_body_size),
                );
            }
            dl.body.extend_from_slice(&payload);
            dl.szx = b2.szx;
            if b2.more {
                if payload.len() != b2.size() {
                    return self.fail_exchange(
                        now,
                        key,
                        ClientError::Blockwise("short block with M=1"),
                    );
                }
                // Later blocks use a fresh token, so that notifications with
                // the observation's token are never taken for them.
                let Some(ex) = self.exchanges.remove(&key) else {
                    return;
                };
                let new_key = (key.0, self.fresh_token(key.0));
                self.exchanges.insert(new_key, ex);
                if let Err(e) = self.send_next(now, new_key, None) {
                    self.fail_exchange(now, new_key, e);
                }
                return;
            }
        }
        let Some(ex) = self.exchanges.remove(&key) else {
            return;
        };
        let mut observe = observe;
        if let Some(dl) = ex.download {
            payload = dl.body.freeze();
            observe = dl.observe;
        }
        let content_format = message::content_format(&packet);
        let max_age = message::uint_option(&packet, opt::MAX_AGE, 4);
        match ex.purpose {
            Purpose::Request(id) => {
                self.layer.emit(ClientEvent::Response {
                    id,
                    code,
                    content_format,
                    payload,
                });
            }
            Purpose::Register(id) | Purpose::Poll(id) => {
                let answer = RegistrationAnswer {
                    code,
                    observe,
                    max_age,
                    content_format,
                    payload,
                };
                self.on_registration_answer(now, id, answer);
            }
            Purpose::NotificationBlocks(id, seq) => {
                // Deliver only if no newer notification overtook it.
                let current = self
                    .observations
                    .get(&id)
                    .is_some_and(|o| o.last.map(|l| l.0) == Some(seq));
                if current && message::is_success(MessageClass::Response(code)) {
                    self.layer.emit(ClientEvent::Notification {
                        id,
                        content_format,
                        payload,
                    });
                }
            }
        }
    }

    fn on_registration_answer(
        &mut self,
        now: Instant,
        id: ObservationId,
        answer: RegistrationAnswer,
    ) {
        let RegistrationAnswer {
            code,
            observe,
            max_age,
            content_format,
            payload,
        } = answer;
        if !message::is_success(MessageClass::Response(code)) {
            return self.observation_failed(now, id, ClientError::Status(code));
        }
        let (lapse, poll) = (self.lapse_after(max_age), self.config.poll_interval);
        let Some(obs) = self.observations.get_mut(&id) else {
            return;
        };
        let next = if observe.is_some() {
            obs.state = ObsState::Active;
            now + lapse
        } else {
            obs.state = ObsState::Polling;
            now + poll
        };
        obs.next = Some(next);
        self.layer.timers.schedule(next, Timer::Observation(id));
        // The direct answer to our request is the newest state by definition
        // and resets the baseline of the freshness rule.
        obs.last = observe.map(|v| (v, now));
        self.layer.emit(ClientEvent::Notification {
            id,
            content_format,
            payload,
        });
    }

    /// A notification outside an exchange (the usual case).
    fn on_notification(&mut self, now: Instant, id: ObservationId, packet: Packet) {
        let code = response_code(&packet);
        if !message::is_success(packet.header.code) {
            // An error notification ends the observation on the server.
            return self.observation_failed(now, id, ClientError::Status(code));
        }
        let Some(seq) = message::uint_option(&packet, opt::OBSERVE, 3) else {
            // A response without Observe for the observation's token is not a
            // notification (maybe a late answer to a poll); ignore it.
            return;
        };
        let lapse = self.lapse_after(message::uint_option(&packet, opt::MAX_AGE, 4));
        let Some(obs) = self.observations.get_mut(&id) else {
            return;
        };
        if let Some((v1, t1)) = obs.last
            && !is_fresher(v1, t1, seq, now)
        {
            trace!(observation = %id, seq, "stale notification ignored");
            return;
        }
        obs.last = Some((seq, now));
        obs.state = ObsState::Active;
        obs.next = Some(now + lapse);
        self.layer
            .timers
            .schedule(now + lapse, Timer::Observation(id));
        let (peer, path, query) = (obs.peer, obs.path.clone(), obs.query.clone());
        let content_format = message::content_format(&packet);
        match message::block_option(&packet, opt::BLOCK2) {
            Ok(Some(b2)) if b2.more && b2.num == 0 => {
                // RFC 7959 §3.4: fetch the rest with plain GETs.
                let etag = message::first_option(&packet, opt::ETAG).map(<[u8]>::to_vec);
                let token = self.fresh_token(peer);
                let ex = Exchange {
                    purpose: Purpose::NotificationBlocks(id, seq),
                    method: RequestType::Get,
                    path,
                    query,
                    content_format,
                    upload: None,
                    download: Some(Download {
                        body: BytesMut::from(packet.payload.as_slice()),
                        szx: b2.szx,
                        etag,
                        observe: Some(seq),
                    }),
                    mid: 0,
                    bytes: Bytes::new(),
                    retransmit: None,
                    separate_deadline: None,
                };
                self.exchanges.insert((peer, token), ex);
                if let Err(e) = self.send_next(now, (peer, token), None) {
                    self.fail_exchange(now, (peer, token), e);
                }
            }
            _ => {
                let payload = Bytes::from(packet.payload);
                self.layer.emit(ClientEvent::Notification {
                    id,
                    content_format,
                    payload,
                });
            }
        }
    }

    fn lapse_after(&self, max_age: Option<u32>) -> Duration {
        let max_age = Duration::from_secs(max_age.map_or(DEFAULT_MAX_AGE, u64::from));
        (max_age + self.config.lapse_margin).min(self.config.max_silence)
    }

    fn fail_exchange(&mut self, now: Instant, key: (SocketAddr, Token), error: ClientError) {
        let Some(ex) = self.exchanges.remove(&key) else {
            return;
        };
        self.by_mid.remove(&(key.0, ex.mid));
        debug!(peer = %key.0, ?error, "exchange failed");
        match ex.purpose {
            Purpose::Request(id) => self.layer.emit(ClientEvent::Failed {
                op: Operation::Request(id),
                error,
            }),
            Purpose::Register(id) | Purpose::Poll(id) => self.observation_failed(now, id, error),
            Purpose::NotificationBlocks(..) => {
                self.layer.emit(ClientEvent::Failed {
                    op: ex.purpose.operation(),
                    error,
                });
            }
        }
    }

    fn observation_failed(&mut self, now: Instant, id: ObservationId, error: ClientError) {
        let retry = now + self.config.retry_interval;
        let Some(obs) = self.observations.get_mut(&id) else {
            return;
        };
        obs.state = ObsState::Waiting;
        obs.next = Some(retry);
        self.layer.timers.schedule(retry, Timer::Observation(id));
        self.layer.emit(ClientEvent::Failed {
            op: Operation::Observation(id),
            error,
        });
    }

    fn fresh_token(&mut self, peer: SocketAddr) -> Token {
        loop {
            let bytes: [u8; 4] = self.layer.rng.random();
            let Some(token) = Token::new(&bytes) else {
                continue;
            };
            if !self.exchanges.contains_key(&(peer, token))
                && !self.obs_by_token.contains_key(&(peer, token))
            {
                return token;
            }
        }
    }

    fn alloc_mid(&mut self, peer: SocketAddr) -> u16 {
        let by_mid = &self.by_mid;
        self.layer.alloc_mid(peer, |key| by_mid.contains_key(key))
    }
}

/// The response code of a packet; unknown codes map to `UnKnown`.
fn response_code(packet: &Packet) -> ResponseType {
    match packet.header.code {
        MessageClass::Response(c) => c,
        _ => ResponseType::UnKnown,
    }
}
