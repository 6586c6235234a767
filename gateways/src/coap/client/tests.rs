//! Client engine tests: a scripted device answers with hand-built packets.

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
use crate::coap::message::{BlockOpt, CONTENT_FORMAT_JSON, decode_uint, encode_uint};

fn device() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 9], 5683))
}

fn config() -> ClientConfig {
    ClientConfig {
        rng_seed: Some(3),
        ..ClientConfig::default()
    }
}

fn sent(c: &mut Client) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit())
        .map(|t| {
            assert_eq!(t.peer, device());
            Packet::from_bytes(&t.bytes).unwrap()
        })
        .collect()
}

fn one_sent(c: &mut Client) -> Packet {
    let mut all = sent(c);
    assert_eq!(all.len(), 1, "expected one datagram, got {all:?}");
    all.remove(0)
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn opt_uint(p: &Packet, n: u16) -> Option<u32> {
    p.get_first_option(CoapOption::from(n))
        .and_then(|v| decode_uint(v, 4))
}

fn path_of(p: &Packet) -> Vec<String> {
    p.get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8(s.clone()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// A response to `req` of the given type (ACK uses the request's message ID).
fn reply(req: &Packet, mtype: MessageType, mid: u16, code: ResponseType, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(mtype);
    p.header.code = MessageClass::Response(code);
    p.header.message_id = if mtype == MessageType::Acknowledgement {
        req.header.message_id
    } else {
        mid
    };
    p.set_token(req.get_token().to_vec());
    if !payload.is_empty() {
        p.add_option(CoapOption::ContentFormat, encode_uint(50));
        p.payload = payload.to_vec();
    }
    p
}

fn with_observe(mut p: Packet, seq: u32) -> Packet {
    p.add_option(CoapOption::Observe, encode_uint(seq));
    p
}

fn feed(c: &mut Client, now: Instant, p: &Packet) {
    c.handle_datagram(now, device(), &p.to_bytes_unlimited().unwrap());
}

fn notification_payloads(evs: &[ClientEvent]) -> Vec<Vec<u8>> {
    evs.iter()
        .filter_map(|e| match e {
            ClientEvent::Notification { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn get_with_piggybacked_response() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let id = c.get(t0, device(), "/sensors/temp?unit=c").unwrap();
    let req = one_sent(&mut c);
    assert_eq!(req.header.get_type(), MessageType::Confirmable);
    assert_eq!(req.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(path_of(&req), vec!["sensors", "temp"]);
    assert_eq!(
        req.get_first_option(CoapOption::UriQuery),
        Some(&b"unit=c".to_vec())
    );
    assert!(!req.get_token().is_empty() && req.get_token().len() <= 8);
    feed(
        &mut c,
        t0,
        &reply(
            &req,
            MessageType::Acknowledgement,
            0,
            ResponseType::Content,
            b"21.5",
        ),
    );
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Response {
            id,
            code: ResponseType::Content,
            content_format: Some(CONTENT_FORMAT_JSON),
            payload: Bytes::from_static(b"21.5")
        }]
    );
    c.handle_timeout(t0 + Duration::from_secs(100));
    assert!(
        sent(&mut c).is_empty(),
        "no retransmission after the answer"
    );
}

#[test]
fn put_with_separate_response_is_acked_once_and_reported_once() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let id = c
        .put(
            t0,
            device(),
            "cfg",
            CONTENT_FORMAT_JSON,
            Bytes::from_static(b"{}"),
        )
        .unwrap();
    let req = one_sent(&mut c);
    assert_eq!(req.payload, b"{}");
    assert_eq!(opt_uint(&req, 12), Some(50));
    c.handle_datagram(
        t0,
        device(),
        &crate::coap::message::empty_ack(req.header.message_id),
    );
    c.handle_timeout(t0 + Duration::from_secs(10));
    assert!(
        sent(&mut c).is_empty(),
        "the empty ACK stopped retransmission"
    );
    let resp = reply(
        &req,
        MessageType::Confirmable,
        0x7777,
        ResponseType::Changed,
        b"",
    );
    feed(&mut c, t0 + Duration::from_secs(11), &resp);
    let ack = one_sent(&mut c);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x7777);
    // The device did not get our ACK and retransmits: ACK again, no new event.
    feed(&mut c, t0 + Duration::from_secs(13), &resp);
    assert_eq!(one_sent(&mut c).header.message_id, 0x7777);
    let evs = events(&mut c);
    assert_eq!(evs.len(), 1);
    assert!(
        matches!(&evs[0], ClientEvent::Response { id: i, code: ResponseType::Changed, .. } if *i == id)
    );
}

#[test]
fn unanswered_request_is_retransmitted_then_fails() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let id = c.get(t0, device(), "x").unwrap();
    let first = one_sent(&mut c);
    let mut count = 1;
    while let Some(at) = c.poll_timeout() {
        c.handle_timeout(at);
        for p in sent(&mut c) {
            assert_eq!(p, first);
            count += 1;
        }
        if !events(&mut c).is_empty() {
            assert!(at - t0 >= Duration::from_secs(62) && at - t0 <= Duration::from_secs(93));
            assert_eq!(count, 5);
            return;
        }
    }
    panic!("request {id} never failed");
}

#[test]
fn reset_fails_the_request() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let id = c.get(t0, device(), "x").unwrap();
    let req = one_sent(&mut c);
    c.handle_datagram(
        t0,
        device(),
        &crate::coap::message::reset(req.header.message_id),
    );
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Failed {
            op: Operation::Request(id),
            error: ClientError::Reset
        }]
    );
}

fn registered(c: &mut Client, t0: Instant, seq: u32) -> (ObservationId, Packet) {
    let id = c.observe(t0, device(), "/things/t1/state");
    let req = one_sent(c);
    assert_eq!(opt_uint(&req, 6), Some(0), "registration carries Observe=0");
    feed(
        c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::Acknowledgement,
                0,
                ResponseType::Content,
                b"0",
            ),
            seq,
        ),
    );
    assert_eq!(notification_payloads(&events(c)), vec![b"0".to_vec()]);
    (id, req)
}

#[test]
fn observe_orders_notifications_by_freshness_and_acks_cons() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let (_, req) = registered(&mut c, t0, 10);
    let t1 = t0 + Duration::from_secs(1);
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                100,
                ResponseType::Content,
                b"12",
            ),
            12,
        ),
    );
    // An older one overtaken in the network must not overwrite 12.
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                101,
                ResponseType::Content,
                b"11",
            ),
            11,
        ),
    );
    assert!(sent(&mut c).is_empty());
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &req,
                MessageType::Confirmable,
                102,
                ResponseType::Content,
                b"13",
            ),
            13,
        ),
    );
    let ack = one_sent(&mut c);
    assert_eq!(
        (ack.header.get_type(), ack.header.message_id),
        (MessageType::Acknowledgement, 102)
    );
    // A jump of more than 2^23 backwards in value reads as an old one.
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                103,
                ResponseType::Content,
                b"old",
            ),
            0xFF_FFFF,
        ),
    );
    assert_eq!(
        notification_payloads(&events(&mut c)),
        vec![b"12".to_vec(), b"13".to_vec()]
    );
    // After 128 s even a lower value is taken as newer.
    feed(
        &mut c,
        t1 + Duration::from_secs(129),
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                105,
                ResponseType::Content,
                b"late",
            ),
            0,
        ),
    );
    assert_eq!(
        notification_payloads(&events(&mut c)),
        vec![b"late".to_vec()]
    );
}

#[test]
fn observe_sequence_wraps_at_24_bits() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let (_, req) = registered(&mut c, t0, 0xFF_FFFE);
    feed(
        &mut c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                1,
                ResponseType::Content,
                b"a",
            ),
            0xFF_FFFF,
        ),
    );
    feed(
        &mut c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                2,
                ResponseType::Content,
                b"b",
            ),
            0,
        ),
    );
    feed(
        &mut c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                3,
                ResponseType::Content,
                b"c",
            ),
            1,
        ),
    );
    feed(
        &mut c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                4,
                ResponseType::Content,
                b"stale",
            ),
            0xFF_FFFF,
        ),
    );
    assert_eq!(
        notification_payloads(&events(&mut c)),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn lapsed_observation_is_reregistered_with_the_same_token() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.lapse_margin = Duration::from_secs(5);
    let mut c = Client::new(cfg);
    let id = c.observe(t0, device(), "r");
    let req = one_sent(&mut c);
    let mut first = with_observe(
        reply(
            &req,
            MessageType::Acknowledgement,
            0,
            ResponseType::Content,
            b"a",
        ),
        1,
    );
    first.add_option(CoapOption::MaxAge, encode_uint(20));
    feed(&mut c, t0, &first);
    events(&mut c);
    c.handle_timeout(t0 + Duration::from_secs(24));
    assert!(
        sent(&mut c).is_empty(),
        "not lapsed before Max-Age + margin"
    );
    c.handle_timeout(t0 + Duration::from_secs(25));
    let again = one_sent(&mut c);
    assert_eq!(opt_uint(&again, 6), Some(0));
    assert_eq!(again.get_token(), req.get_token());
    assert_ne!(again.header.message_id, req.header.message_id);
    // The device is gone: the re-registration times out, is reported and retried.
    let mut now = t0 + Duration::from_secs(25);
    while events(&mut c).is_empty() {
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        sent(&mut c);
    }
    let retry_at = c.poll_timeout().unwrap();
    assert_eq!(retry_at, now + Duration::from_secs(30));
    c.handle_timeout(retry_at);
    let retry = one_sent(&mut c);
    assert_eq!(opt_uint(&retry, 6), Some(0));
    // This time the device answers, and notifications flow again.
    feed(
        &mut c,
        retry_at,
        &with_observe(
            reply(
                &retry,
                MessageType::Acknowledgement,
                0,
                ResponseType::Content,
                b"b",
            ),
            2,
        ),
    );
    let evs = events(&mut c);
    assert!(matches!(&evs[..], [ClientEvent::Notification { id: i, .. }] if *i == id));
}

#[test]
fn device_without_observe_is_polled() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    c.observe(t0, device(), "r");
    let req = one_sent(&mut c);
    feed(
        &mut c,
        t0,
        &reply(
            &req,
            MessageType::Acknowledgement,
            0,
            ResponseType::Content,
            b"p0",
        ),
    );
    assert_eq!(notification_payloads(&events(&mut c)), vec![b"p0".to_vec()]);
    c.handle_timeout(t0 + Duration::from_secs(30));
    let poll = one_sent(&mut c);
    assert_eq!(opt_uint(&poll, 6), None, "a poll is a plain GET");
    feed(
        &mut c,
        t0 + Duration::from_secs(30),
        &reply(
            &poll,
            MessageType::Acknowledgement,
            0,
            ResponseType::Content,
            b"p1",
        ),
    );
    assert_eq!(notification_payloads(&events(&mut c)), vec![b"p1".to_vec()]);
    c.handle_timeout(t0 + Duration::from_secs(59));
    assert!(sent(&mut c).is_empty());
    c.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(
        opt_uint(&one_sent(&mut c), 6),
        None,
        "polled again after the interval"
    );
}

#[test]
fn failed_registration_is_reported_and_retried() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let id = c.observe(t0, device(), "nope");
    let req = one_sent(&mut c);
    feed(
        &mut c,
        t0,
        &reply(
            &req,
            MessageType::Acknowledgement,
            0,
            ResponseType::NotFound,
            b"",
        ),
    );
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Failed {
            op: Operation::Observation(id),
            error: ClientError::Status(ResponseType::NotFound)
        }]
    );
    c.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(opt_uint(&one_sent(&mut c), 6), Some(0));
}

#[test]
fn cancelled_observation_deregisters_and_resets_later_notifications() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let (id, req) = registered(&mut c, t0, 1);
    c.cancel_observation(t0, id).unwrap();
    let dereg = one_sent(&mut c);
    assert_eq!(opt_uint(&dereg, 6), Some(1));
    assert_eq!(dereg.get_token(), req.get_token());
    feed(
        &mut c,
        t0,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                9,
                ResponseType::Content,
                b"x",
            ),
            2,
        ),
    );
    let rst = one_sent(&mut c);
    assert_eq!(
        (rst.header.get_type(), rst.header.message_id),
        (MessageType::Reset, 9)
    );
    assert!(events(&mut c).is_empty());
    assert_eq!(c.cancel_observation(t0, id), Err(ClientError::Unknown));
}

#[test]
fn block2_response_is_downloaded_and_reassembled() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let body: Vec<u8> = (0..2500u32).map(|i| (i % 256) as u8).collect();
    let id = c.get(t0, device(), "big").unwrap();
    let mut req = one_sent(&mut c);
    for num in 0..3u32 {
        if num > 0 {
            assert_eq!(
                BlockOpt::decode(req.get_first_option(CoapOption::Block2).unwrap()),
                Some(BlockOpt {
                    num,
                    more: false,
                    szx: 6
                })
            );
        }
        let start = num as usize * 1024;
        let end = (start + 1024).min(body.len());
        let mut r = reply(
            &req,
            MessageType::Acknowledgement,
            0,
            ResponseType::Content,
            &body[start..end],
        );
        r.add_option(
            CoapOption::Block2,
            BlockOpt {
                num,
                more: end < body.len(),
                szx: 6,
            }
            .encode(),
        );
        r.add_option(CoapOption::ETag, vec![1, 2]);
        feed(&mut c, t0, &r);
        if end < body.len() {
            req = one_sent(&mut c);
        }
    }
    let evs = events(&mut c);
    assert!(
        matches!(&evs[..], [ClientEvent::Response { id: i, payload, .. }] if *i == id && payload.as_ref() == body.as_slice())
    );
}

#[test]
fn large_put_is_uploaded_with_block1() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let body: Bytes = vec![7u8; 3000].into();
    let id = c
        .put(t0, device(), "fw", CONTENT_FORMAT_JSON, body.clone())
        .unwrap();
    let mut got = Vec::new();
    loop {
        let req = one_sent(&mut c);
        let b1 = BlockOpt::decode(req.get_first_option(CoapOption::Block1).unwrap()).unwrap();
        if b1.num == 0 {
            assert_eq!(opt_uint(&req, 60), Some(3000), "Size1 announces the total");
        }
        assert_eq!(b1.offset(), got.len());
        got.extend_from_slice(&req.payload);
        let code = if b1.more {
            ResponseType::Continue
        } else {
            ResponseType::Changed
        };
        let mut r = reply(&req, MessageType::Acknowledgement, 0, code, b"");
        r.add_option(
            CoapOption::Block1,
            BlockOpt {
                more: b1.more,
                ..b1
            }
            .encode(),
        );
        feed(&mut c, t0, &r);
        if !b1.more {
            break;
        }
    }
    assert_eq!(got, body.as_ref());
    assert!(
        matches!(&events(&mut c)[..], [ClientEvent::Response { id: i, code: ResponseType::Changed, .. }] if *i == id)
    );
}

#[test]
fn requests_to_the_client_and_garbage_are_rejected_safely() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    c.handle_datagram(t0, device(), &[0x40, 0x01, 0x00, 0x05]);
    let rst = one_sent(&mut c);
    assert_eq!(
        (rst.header.get_type(), rst.header.message_id),
        (MessageType::Reset, 5)
    );
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        c.handle_datagram(t0, device(), &bytes);
    }
    sent(&mut c);
    assert!(events(&mut c).is_empty());
}

#[test]
fn stale_notification_racing_a_reregistration_is_ignored() {
    let t0 = Instant::now();
    let mut c = Client::new(config());
    let (id, req) = registered(&mut c, t0, 50);
    c.handle_timeout(t0 + Duration::from_secs(70));
    let rereg = one_sent(&mut c);
    assert_eq!(opt_uint(&rereg, 6), Some(0));
    // A notification sent before the re-registration arrives late.
    let t1 = t0 + Duration::from_secs(71);
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &req,
                MessageType::NonConfirmable,
                5,
                ResponseType::Content,
                b"old",
            ),
            49,
        ),
    );
    assert!(events(&mut c).is_empty());
    // The real answer still completes the re-registration.
    feed(
        &mut c,
        t1,
        &with_observe(
            reply(
                &rereg,
                MessageType::Acknowledgement,
                0,
                ResponseType::Content,
                b"new",
            ),
            51,
        ),
    );
    assert_eq!(
        notification_payloads(&events(&mut c)),
        vec![b"new".to_vec()]
    );
    c.handle_timeout(t1 + Duration::from_secs(1));
    assert!(
        sent(&mut c).is_empty(),
        "no retransmission of the answered re-registration"
    );
    let _ = id;
}
