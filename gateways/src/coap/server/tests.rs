//! Server engine tests, driven with synthetic time and hand-built packets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

use super::*;
use crate::coap::message::{BlockOpt, decode_uint};
use crate::coap::ratelimit::RateLimitConfig;

fn peer(n: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 40_000 + n))
}

fn config() -> ServerConfig {
    ServerConfig {
        rng_seed: Some(7),
        rate_limit: None,
        ..ServerConfig::default()
    }
}

fn request(mtype: MessageType, method: RequestType, mid: u16, token: &[u8], path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(mtype);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    for seg in crate::coap::message::split_path(path) {
        p.add_option(CoapOption::UriPath, seg.into_bytes());
    }
    p
}

fn con_get(mid: u16, token: &[u8], path: &str) -> Packet {
    request(MessageType::Confirmable, RequestType::Get, mid, token, path)
}

fn feed(s: &mut Server, now: Instant, from: SocketAddr, p: &Packet) {
    s.handle_datagram(now, from, &p.to_bytes_unlimited().unwrap());
}

fn sent(s: &mut Server) -> Vec<(SocketAddr, Packet, Bytes)> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| (t.peer, Packet::from_bytes(&t.bytes).unwrap(), t.bytes))
        .collect()
}

fn one_sent(s: &mut Server) -> Packet {
    let mut all = sent(s);
    assert_eq!(all.len(), 1, "expected exactly one datagram, got {all:?}");
    all.remove(0).1
}

fn requests(s: &mut Server) -> Vec<Request> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| {
            if let ServerEvent::Request(r) = e {
                Some(r)
            } else {
                None
            }
        })
        .collect()
}

fn one_request(s: &mut Server) -> Request {
    let mut all = requests(s);
    assert_eq!(all.len(), 1, "expected exactly one request");
    all.remove(0)
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(c) => c,
        other => panic!("not a response: {other:?}"),
    }
}

fn opt_uint(p: &Packet, n: u16) -> Option<u32> {
    p.get_first_option(CoapOption::from(n))
        .and_then(|v| decode_uint(v, 4))
}

fn block(p: &Packet, n: u16) -> Option<BlockOpt> {
    p.get_first_option(CoapOption::from(n))
        .and_then(|v| BlockOpt::decode(v))
}

#[test]
fn prompt_answer_is_piggybacked_on_the_ack() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    feed(&mut s, t0, peer(1), &con_get(0x1234, b"tk", "/hello"));
    let r = one_request(&mut s);
    assert_eq!(r.path, vec!["hello"]);
    assert_eq!(r.method, RequestType::Get);
    assert!(r.confirmable);
    s.respond(t0, r.id, Response::content(CONTENT_FORMAT_JSON, "{}"))
        .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(p.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(p.header.message_id, 0x1234);
    assert_eq!(p.get_token(), b"tk");
    assert_eq!(code(&p), ResponseType::Content);
    assert_eq!(opt_uint(&p, opt::CONTENT_FORMAT), Some(50));
    assert_eq!(p.payload, b"{}");
    assert!(matches!(
        s.respond(t0, r.id, Response::new(ResponseType::Content)),
        Err(ServerError::UnknownRequest(_))
    ));
}

#[test]
fn slow_answer_gets_empty_ack_then_separate_con_response() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    feed(&mut s, t0, peer(1), &con_get(7, b"a", "/slow"));
    let r = one_request(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    s.handle_timeout(t0 + Duration::from_secs(1));
    let ack = sent(&mut s);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].2.as_ref(), &[0x60, 0, 0, 7], "empty ACK");
    let t1 = t0 + Duration::from_millis(1500);
    s.respond(t1, r.id, Response::content(CONTENT_FORMAT_CBOR, vec![0xA0]))
        .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_ne!(p.header.message_id, 7);
    assert_eq!(p.get_token(), b"a");
    // The client ACKs it: no retransmission follows.
    let mut ack = Packet::new();
    ack.header.set_type(MessageType::Acknowledgement);
    ack.header.code = MessageClass::Empty;
    ack.header.message_id = p.header.message_id;
    feed(&mut s, t1, peer(1), &ack);
    s.handle_timeout(t1 + Duration::from_secs(100));
    assert!(sent(&mut s).is_empty());
    assert_eq!(s.stats().retransmissions, 0);
}

#[test]
fn separate_response_follows_the_backoff_schedule_and_gives_up() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    feed(&mut s, t0, peer(1), &con_get(7, b"a", "/slow"));
    let r = one_request(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(1));
    sent(&mut s);
    let t1 = t0 + Duration::from_secs(2);
    s.respond(t1, r.id, Response::new(ResponseType::Changed))
        .unwrap();
    let first = sent(&mut s).remove(0).2;
    let mut sends = vec![t1];
    let mut gave_up_at = None;
    while let Some(now) = s.poll_timeout() {
        if now > t1 + Duration::from_secs(200) {
            break;
        }
        s.handle_timeout(now);
        for (_, _, b) in sent(&mut s) {
            assert_eq!(b, first, "retransmissions repeat the same bytes");
            sends.push(now);
        }
        if s.stats().gave_up == 1 && gave_up_at.is_none() {
            gave_up_at = Some(now);
        }
    }
    assert_eq!(
        sends.len(),
        5,
        "first send plus MAX_RETRANSMIT=4 retransmissions"
    );
    let t = sends[1] - sends[0];
    assert!(
        t >= Duration::from_secs(2) && t <= Duration::from_secs(3),
        "initial timeout {t:?}"
    );
    for i in 1..4 {
        assert_eq!(
            sends[i + 1] - sends[i],
            (sends[i] - sends[i - 1]) * 2,
            "timeout doubles"
        );
    }
    assert_eq!(s.stats().gave_up, 1);
    assert_eq!(
        gave_up_at.unwrap() - t1,
        t * 31,
        "gave up when the last timeout expired"
    );
}

#[test]
fn reset_stops_a_separate_response() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    feed(&mut s, t0, peer(1), &con_get(7, b"a", "/slow"));
    let r = one_request(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(1));
    sent(&mut s);
    s.respond(
        t0 + Duration::from_secs(1),
        r.id,
        Response::new(ResponseType::Changed),
    )
    .unwrap();
    let p = one_sent(&mut s);
    s.handle_datagram(
        t0 + Duration::from_secs(1),
        peer(1),
        &crate::coap::message::reset(p.header.message_id),
    );
    s.handle_timeout(t0 + Duration::from_secs(300));
    assert!(sent(&mut s).is_empty());
}

#[test]
fn duplicate_con_is_answered_from_the_cache_and_seen_once() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let mut req = request(
        MessageType::Confirmable,
        RequestType::Post,
        99,
        b"x",
        "/things/a/state",
    );
    req.set_content_format(coap_lite::ContentFormat::ApplicationJSON);
    req.payload = b"{\"t\":1}".to_vec();
    feed(&mut s, t0, peer(1), &req);
    let r = one_request(&mut s);
    assert_eq!(r.payload.as_ref(), b"{\"t\":1}");
    s.respond(t0, r.id, Response::new(ResponseType::Changed))
        .unwrap();
    let first = sent(&mut s).remove(0).2;
    feed(&mut s, t0 + Duration::from_secs(3), peer(1), &req);
    let again = sent(&mut s);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].2, first, "same bytes again");
    assert!(
        requests(&mut s).is_empty(),
        "the application saw the request once"
    );
    // Another peer may use the same message ID.
    feed(&mut s, t0, peer(2), &req);
    assert_eq!(requests(&mut s).len(), 1);
    // After EXCHANGE_LIFETIME the ID counts as new.
    feed(&mut s, t0 + Duration::from_secs(248), peer(1), &req);
    assert_eq!(requests(&mut s).len(), 1);
    assert_eq!(s.stats().duplicates, 1);
}

#[test]
fn duplicate_of_a_pending_con_gets_the_empty_ack() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let req = con_get(5, b"x", "/p");
    feed(&mut s, t0, peer(1), &req);
    let r = one_request(&mut s);
    feed(&mut s, t0 + Duration::from_millis(300), peer(1), &req);
    assert_eq!(sent(&mut s)[0].2.as_ref(), &[0x60, 0, 0, 5]);
    assert!(requests(&mut s).is_empty());
    feed(&mut s, t0 + Duration::from_millis(400), peer(1), &req);
    assert_eq!(sent(&mut s)[0].2.as_ref(), &[0x60, 0, 0, 5]);
    s.respond(
        t0 + Duration::from_millis(500),
        r.id,
        Response::new(ResponseType::Content),
    )
    .unwrap();
    assert_eq!(
        one_sent(&mut s).header.get_type(),
        MessageType::Confirmable,
        "separate, since the ACK went out"
    );
}

#[test]
fn non_request_gets_non_response_and_duplicates_are_dropped() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let req = request(
        MessageType::NonConfirmable,
        RequestType::Get,
        11,
        b"n",
        "/x",
    );
    feed(&mut s, t0, peer(1), &req);
    let r = one_request(&mut s);
    assert!(!r.confirmable);
    feed(&mut s, t0 + Duration::from_secs(1), peer(1), &req);
    assert!(requests(&mut s).is_empty());
    assert!(sent(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(5));
    assert!(sent(&mut s).is_empty(), "no empty ACK for a NON");
    s.respond(
        t0 + Duration::from_secs(5),
        r.id,
        Response::new(ResponseType::Content),
    )
    .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(p.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(p.get_token(), b"n");
}

fn observe_get(mid: u16, token: &[u8], path: &str, value: u32) -> Packet {
    let mut p = con_get(mid, token, path);
    p.add_option(
        CoapOption::Observe,
        crate::coap::message::encode_uint(value),
    );
    p
}

fn register(
    s: &mut Server,
    now: Instant,
    from: SocketAddr,
    mid: u16,
    token: &[u8],
    path: &str,
) -> Packet {
    feed(s, now, from, &observe_get(mid, token, path, 0));
    let r = one_request(s);
    assert_eq!(r.observe, Some(ObserveFlag::Register));
    s.respond(now, r.id, Response::content(CONTENT_FORMAT_JSON, "1"))
        .unwrap();
    one_sent(s)
}

fn ack_for(mid: u16) -> Bytes {
    crate::coap::message::empty_ack(mid)
}

#[test]
fn observe_register_notify_sequence_and_deregister() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.observe.con_every = 3;
    let mut s = Server::new(cfg);
    let reg = register(&mut s, t0, peer(1), 1, b"ob", "/things/a/commands");
    let mut last = opt_uint(&reg, opt::OBSERVE).expect("registration response carries Observe");
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::ObserverAdded { .. })
    ));
    assert_eq!(s.observer_count(), 1);
    let mut types = Vec::new();
    for i in 0..4u32 {
        let n = s.notify(
            t0 + Duration::from_secs(u64::from(i)),
            "things/a/commands",
            CONTENT_FORMAT_JSON,
            Bytes::from(format!("{i}")),
        );
        assert_eq!(n, 1);
        let p = one_sent(&mut s);
        assert_eq!(p.get_token(), b"ob");
        let seq = opt_uint(&p, opt::OBSERVE).unwrap();
        assert!(seq > last && seq <= 0xFF_FFFF, "sequence increases");
        last = seq;
        types.push(p.header.get_type());
        if p.header.get_type() == MessageType::Confirmable {
            s.handle_datagram(t0, peer(1), &ack_for(p.header.message_id));
        }
    }
    use MessageType::{Confirmable as C, NonConfirmable as N};
    assert_eq!(types, vec![N, N, C, N], "a CON every 3rd notification");
    // Forced CON.
    let mut n = Notification::new(CONTENT_FORMAT_JSON, "x");
    n.confirmable = Some(true);
    s.notify_with(t0, "/things/a/commands", n);
    assert_eq!(one_sent(&mut s).header.get_type(), C);
    // Deregistration: GET with Observe=1 is answered as a plain GET.
    feed(
        &mut s,
        t0,
        peer(1),
        &observe_get(2, b"ob", "/things/a/commands", 1),
    );
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::ObserverRemoved {
            reason: ObserverRemoved::Deregistered,
            ..
        })
    ));
    let r = one_request(&mut s);
    assert_eq!(r.observe, Some(ObserveFlag::Deregister));
    s.respond(t0, r.id, Response::new(ResponseType::Content))
        .unwrap();
    assert_eq!(opt_uint(&one_sent(&mut s), opt::OBSERVE), None);
    assert_eq!(s.observer_count(), 0);
    assert_eq!(
        s.notify(t0, "/things/a/commands", CONTENT_FORMAT_JSON, Bytes::new()),
        0
    );
}

#[test]
fn reregistration_with_the_same_token_replaces_the_observer() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    register(&mut s, t0, peer(1), 1, b"ob", "/r");
    for _ in 0..5 {
        s.notify(t0, "/r", CONTENT_FORMAT_JSON, Bytes::from_static(b"n"));
    }
    let last = sent(&mut s)
        .last()
        .and_then(|(_, p, _)| opt_uint(p, opt::OBSERVE))
        .unwrap();
    let again = register(&mut s, t0, peer(1), 2, b"ob", "/r");
    assert!(
        opt_uint(&again, opt::OBSERVE).unwrap() > last,
        "the sequence continues"
    );
    assert_eq!(s.observer_count(), 1);
    register(&mut s, t0, peer(1), 3, b"o2", "/r");
    assert_eq!(s.observer_count(), 2);
    assert_eq!(
        s.notify(t0, "r", CONTENT_FORMAT_JSON, Bytes::from_static(b"1")),
        2
    );
}

#[test]
fn reset_of_a_non_notification_cancels_the_observation() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    register(&mut s, t0, peer(1), 1, b"ob", "/r");
    s.notify(t0, "/r", CONTENT_FORMAT_JSON, Bytes::from_static(b"2"));
    let p = one_sent(&mut s);
    assert_eq!(p.header.get_type(), MessageType::NonConfirmable);
    s.handle_datagram(
        t0,
        peer(1),
        &crate::coap::message::reset(p.header.message_id),
    );
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        ServerEvent::ObserverRemoved {
            reason: ObserverRemoved::Reset,
            ..
        }
    )));
    assert_eq!(s.observer_count(), 0);
}

#[test]
fn unacknowledged_con_notification_drops_the_observer() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.observe.con_every = 1;
    let mut s = Server::new(cfg);
    register(&mut s, t0, peer(1), 1, b"ob", "/r");
    s.notify(t0, "/r", CONTENT_FORMAT_JSON, Bytes::from_static(b"2"));
    assert_eq!(one_sent(&mut s).header.get_type(), MessageType::Confirmable);
    // A newer notification replaces the one in flight, keeping its back-off.
    s.notify(
        t0 + Duration::from_secs(1),
        "/r",
        CONTENT_FORMAT_JSON,
        Bytes::from_static(b"3"),
    );
    sent(&mut s);
    let mut now = t0;
    let mut datagrams = 0;
    while let Some(at) = s.poll_timeout() {
        now = at;
        s.handle_timeout(now);
        datagrams += sent(&mut s).len();
        if s.observer_count() == 0 {
            break;
        }
    }
    assert_eq!(s.observer_count(), 0);
    assert_eq!(
        datagrams, 4,
        "four retransmissions of the newest notification"
    );
    assert!(now - t0 <= Duration::from_secs(94));
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        ServerEvent::ObserverRemoved {
            reason: ObserverRemoved::Timeout,
            ..
        }
    )));
}

#[test]
fn error_notification_ends_observations() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    register(&mut s, t0, peer(1), 1, b"ob", "/r");
    let mut n = Notification::new(CONTENT_FORMAT_JSON, "");
    n.code = ResponseType::NotFound;
    s.notify_with(t0, "/r", n);
    let p = one_sent(&mut s);
    assert_eq!(code(&p), ResponseType::NotFound);
    assert_eq!(opt_uint(&p, opt::OBSERVE), None);
    assert_eq!(s.observer_count(), 0);
}

fn block1_put(mid: u16, num: u32, more: bool, chunk: &[u8]) -> Packet {
    let mut p = request(
        MessageType::Confirmable,
        RequestType::Put,
        mid,
        &[mid as u8],
        "/things/a/blob",
    );
    p.add_option(CoapOption::ContentFormat, vec![60]);
    p.add_option(CoapOption::Block1, BlockOpt { num, more, szx: 6 }.encode());
    p.payload = chunk.to_vec();
    p
}

#[test]
fn block1_put_of_4_kib_is_reassembled() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let body: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    for (num, chunk) in body.chunks(1024).enumerate() {
        let more = num < 3;
        feed(
            &mut s,
            t0,
            peer(1),
            &block1_put(100 + num as u16, num as u32, more, chunk),
        );
        if more {
            let p = one_sent(&mut s);
            assert_eq!(code(&p), ResponseType::Continue);
            assert_eq!(p.header.message_id, 100 + num as u16);
            assert_eq!(
                block(&p, opt::BLOCK1),
                Some(BlockOpt {
                    num: num as u32,
                    more: true,
                    szx: 6
                })
            );
            assert!(requests(&mut s).is_empty());
        }
    }
    let r = one_request(&mut s);
    assert_eq!(r.payload.as_ref(), body.as_slice());
    assert_eq!(r.content_format, Some(CONTENT_FORMAT_CBOR));
    s.respond(t0, r.id, Response::new(ResponseType::Changed))
        .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(code(&p), ResponseType::Changed);
    assert_eq!(
        block(&p, opt::BLOCK1),
        Some(BlockOpt {
            num: 3,
            more: false,
            szx: 6
        })
    );
}

#[test]
fn block1_gap_is_request_entity_incomplete() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    feed(&mut s, t0, peer(1), &block1_put(1, 0, true, &[0; 1024]));
    sent(&mut s);
    feed(&mut s, t0, peer(1), &block1_put(2, 2, true, &[0; 1024]));
    assert_eq!(
        code(&one_sent(&mut s)),
        ResponseType::RequestEntityIncomplete
    );
}

#[test]
fn body_over_the_cap_is_rejected_with_4_13_and_size1() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.blockwise.max_body_size = 2048;
    let mut s = Server::new(cfg);
    feed(&mut s, t0, peer(1), &block1_put(1, 0, true, &[0; 1024]));
    feed(&mut s, t0, peer(1), &block1_put(2, 1, true, &[0; 1024]));
    sent(&mut s);
    feed(&mut s, t0, peer(1), &block1_put(3, 2, false, &[0; 10]));
    let p = one_sent(&mut s);
    assert_eq!(code(&p), ResponseType::RequestEntityTooLarge);
    assert_eq!(opt_uint(&p, opt::SIZE1), Some(2048));
    // Announced with Size1 up front: refused at the first block.
    let mut first = block1_put(4, 0, true, &[0; 1024]);
    first.add_option(CoapOption::Size1, crate::coap::message::encode_uint(10_000));
    feed(&mut s, t0, peer(1), &first);
    assert_eq!(code(&one_sent(&mut s)), ResponseType::RequestEntityTooLarge);
    assert!(requests(&mut s).is_empty());
}

#[test]
fn large_response_goes_out_in_block2_blocks() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let body: Bytes = (0..3000u32)
        .map(|i| (i % 256) as u8)
        .collect::<Vec<_>>()
        .into();
    feed(&mut s, t0, peer(1), &con_get(1, b"b", "/big"));
    let r = one_request(&mut s);
    s.respond(
        t0,
        r.id,
        Response::content(CONTENT_FORMAT_JSON, body.clone()),
    )
    .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(
        block(&p, opt::BLOCK2),
        Some(BlockOpt {
            num: 0,
            more: true,
            szx: 6
        })
    );
    assert_eq!(opt_uint(&p, opt::SIZE2), Some(3000));
    assert_eq!(p.payload.len(), 1024);
    let etag = p
        .get_first_option(CoapOption::ETag)
        .cloned()
        .expect("ETag on block-wise bodies");
    let mut got = p.payload.clone();
    for num in 1..=2u32 {
        let mut next = con_get(1 + num as u16, b"c", "/big");
        next.add_option(
            CoapOption::Block2,
            BlockOpt {
                num,
                more: false,
                szx: 6,
            }
            .encode(),
        );
        feed(&mut s, t0, peer(1), &next);
        assert!(requests(&mut s).is_empty(), "served from the cache");
        let p = one_sent(&mut s);
        assert_eq!(p.get_first_option(CoapOption::ETag), Some(&etag));
        assert_eq!(
            block(&p, opt::BLOCK2).map(|b| (b.num, b.more)),
            Some((num, num < 2))
        );
        got.extend_from_slice(&p.payload);
    }
    assert_eq!(got, body.as_ref());
    // A smaller block size asked for up front is honoured.
    let mut small = con_get(9, b"d", "/big");
    small.add_option(
        CoapOption::Block2,
        BlockOpt {
            num: 0,
            more: false,
            szx: 2,
        }
        .encode(),
    );
    feed(&mut s, t0, peer(2), &small);
    let r = one_request(&mut s);
    s.respond(t0, r.id, Response::content(CONTENT_FORMAT_JSON, body))
        .unwrap();
    let p = one_sent(&mut s);
    assert_eq!(
        block(&p, opt::BLOCK2),
        Some(BlockOpt {
            num: 0,
            more: true,
            szx: 2
        })
    );
    assert_eq!(p.payload.len(), 64);
}

#[test]
fn large_notification_sends_the_first_block() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    register(&mut s, t0, peer(1), 1, b"ob", "/r");
    s.notify(t0, "/r", CONTENT_FORMAT_JSON, Bytes::from(vec![b'x'; 2000]));
    let p = one_sent(&mut s);
    assert!(opt_uint(&p, opt::OBSERVE).is_some());
    assert_eq!(
        block(&p, opt::BLOCK2),
        Some(BlockOpt {
            num: 0,
            more: true,
            szx: 6
        })
    );
    let mut next = con_get(50, b"z", "/r");
    next.add_option(
        CoapOption::Block2,
        BlockOpt {
            num: 1,
            more: false,
            szx: 6,
        }
        .encode(),
    );
    feed(&mut s, t0, peer(1), &next);
    let p = one_sent(&mut s);
    assert_eq!(p.payload.len(), 2000 - 1024);
    assert_eq!(opt_uint(&p, opt::OBSERVE), None);
}

#[test]
fn unknown_critical_option_is_bad_option() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let mut p = con_get(3, b"q", "/x");
    p.add_option(CoapOption::Unknown(65001), vec![1]);
    feed(&mut s, t0, peer(1), &p);
    let r = one_sent(&mut s);
    assert_eq!(r.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(code(&r), ResponseType::BadOption);
    assert!(requests(&mut s).is_empty());
    // An unknown elective option is ignored.
    let mut p = con_get(4, b"q", "/x");
    p.add_option(CoapOption::Unknown(65000), vec![1]);
    feed(&mut s, t0, peer(1), &p);
    assert_eq!(requests(&mut s).len(), 1);
    assert_eq!((s.stats().refused, s.stats().requests), (1, 1));
}

#[test]
fn unsupported_content_format_is_4_15_unless_the_path_opts_out() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    let mut p = request(
        MessageType::Confirmable,
        RequestType::Post,
        3,
        b"q",
        "/things/a/state",
    );
    p.set_content_format(coap_lite::ContentFormat::TextPlain);
    p.payload = b"hello".to_vec();
    feed(&mut s, t0, peer(1), &p);
    assert_eq!(
        code(&one_sent(&mut s)),
        ResponseType::UnsupportedContentFormat
    );
    assert!(requests(&mut s).is_empty());
    s.allow_any_content_format("/raw");
    let mut p = request(
        MessageType::Confirmable,
        RequestType::Post,
        4,
        b"q",
        "/raw/dev1",
    );
    p.set_content_format(coap_lite::ContentFormat::TextPlain);
    p.payload = b"hello".to_vec();
    feed(&mut s, t0, peer(1), &p);
    assert_eq!(one_request(&mut s).content_format, Some(0));
}

#[test]
fn malformed_datagrams_are_dropped_or_reset_and_never_panic() {
    let t0 = Instant::now();
    let mut s = Server::new(config());
    s.handle_datagram(t0, peer(1), &[0x40]);
    s.handle_datagram(t0, peer(1), &[0x80, 1, 0, 1]);
    assert!(
        sent(&mut s).is_empty(),
        "unreadable or wrong version: silently dropped"
    );
    // Readable CON header, broken options: Reset.
    s.handle_datagram(t0, peer(1), &[0x40, 0x01, 0x12, 0x34, 0xF0]);
    assert_eq!(sent(&mut s)[0].2.as_ref(), &[0x70, 0, 0x12, 0x34]);
    // Same as NON: dropped.
    s.handle_datagram(t0, peer(1), &[0x50, 0x01, 0x12, 0x34, 0xF0]);
    assert!(sent(&mut s).is_empty());
    // CoAP ping.
    s.handle_datagram(t0, peer(1), &[0x40, 0x00, 0x00, 0x09]);
    assert_eq!(sent(&mut s)[0].2.as_ref(), &[0x70, 0, 0, 9]);
    // Unknown method code 0.31.
    s.handle_datagram(t0, peer(1), &[0x40, 0x1F, 0x00, 0x0A]);
    assert_eq!(code(&one_sent(&mut s)), ResponseType::MethodNotAllowed);
    // Pseudo-random garbage.
    let mut x: u32 = 0x1234_5678;
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..(len % 64))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        s.handle_datagram(t0, peer(3), &bytes);
        let mut with_header = vec![0x40 | (x as u8 & 0x3F), (x >> 8) as u8, 0, 0];
        with_header.extend_from_slice(&bytes);
        s.handle_datagram(t0, peer(3), &with_header);
        sent(&mut s);
        std::iter::from_fn(|| s.poll_event()).for_each(drop);
    }
    assert!(s.stats().malformed > 0);
}

#[test]
fn one_flooding_peer_does_not_starve_others() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.rate_limit = Some(RateLimitConfig {
        per_second: 10.0,
        burst: 20,
        ..RateLimitConfig::default()
    });
    let mut s = Server::new(cfg);
    for mid in 0..1000u16 {
        feed(
            &mut s,
            t0,
            peer(1),
            &request(
                MessageType::NonConfirmable,
                RequestType::Get,
                mid,
                b"f",
                "/x",
            ),
        );
    }
    feed(&mut s, t0, peer(2), &con_get(1, b"g", "/x"));
    let reqs = requests(&mut s);
    assert_eq!(
        reqs.iter().filter(|r| r.peer == peer(1)).count(),
        20,
        "burst only"
    );
    assert_eq!(
        reqs.iter().filter(|r| r.peer == peer(2)).count(),
        1,
        "the quiet peer is served"
    );
    assert_eq!(s.stats().rate_limited, 980);
    // One second later the flooder has 10 more tokens.
    for mid in 1000..1100u16 {
        feed(
            &mut s,
            t0 + Duration::from_secs(1),
            peer(1),
            &request(
                MessageType::NonConfirmable,
                RequestType::Get,
                mid,
                b"f",
                "/x",
            ),
        );
    }
    assert_eq!(requests(&mut s).len(), 10);
}

#[test]
fn unanswered_request_gets_5_03_and_pending_is_bounded() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_pending_per_peer = 2;
    let mut s = Server::new(cfg);
    for mid in 0..3 {
        feed(&mut s, t0, peer(1), &con_get(mid, b"p", "/x"));
    }
    assert_eq!(requests(&mut s).len(), 2);
    let busy = one_sent(&mut s);
    assert_eq!(code(&busy), ResponseType::ServiceUnavailable);
    assert!(opt_uint(&busy, opt::MAX_AGE).is_some());
    s.handle_timeout(t0 + Duration::from_secs(30));
    let answers: Vec<_> = sent(&mut s)
        .into_iter()
        .filter(|(_, p, _)| p.header.code != MessageClass::Empty)
        .collect();
    assert_eq!(answers.len(), 2);
    assert!(
        answers
            .iter()
            .all(|(_, p, _)| code(p) == ResponseType::ServiceUnavailable)
    );
}
