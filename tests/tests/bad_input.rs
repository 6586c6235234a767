//! Garbage, truncated, oversize and out-of-order input: the router answers with ABORT
//! `wamp.error.protocol_violation` or a RawSocket/HTTP error and closes, never panics, and keeps
//! serving everyone else.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hub::wamp::{Dict, Payload, Serializer, Value};
use serde_json::json;
use tests::hub::TestHub;
use tests::raw::RawConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(20);

/// Sends `frames` after a JSON RawSocket handshake and returns what the router said before closing.
async fn rawsocket_json(hub: &TestHub, frames: &[&[u8]]) -> Vec<serde_json::Value> {
    let (mut c, reply) = RawConn::handshake(hub.addr, 1).await;
    assert_eq!(reply[0], 0x7F);
    assert_eq!(reply[1] & 0x0F, 1, "JSON accepted");
    for f in frames {
        c.send(f).await;
    }
    c.recv_until_closed().await
}

fn is_protocol_violation(msgs: &[serde_json::Value]) -> bool {
    msgs.last()
        .is_some_and(|m| m[0] == json!(3) && m[2] == json!("wamp.error.protocol_violation"))
}

const HELLO: &[u8] = br#"[1, "brume", {"roles": {"subscriber": {}, "publisher": {}}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_protocol_violation_and_others_keep_working() {
    let hub = TestHub::start().await;
    // A well-behaved pair connected before the garbage, and used after it.
    let sub_client = hub.client("websocket", Serializer::Json).await;
    let mut sub = sub_client.subscribe("com.ok", Dict::new()).await.unwrap();
    let pub_client = hub.client("rawsocket", Serializer::MsgPack).await;

    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("not JSON", vec![b"\x00\x01garbage"]),
        ("not an array", vec![br#"{"a": 1}"#]),
        ("empty array", vec![b"[]"]),
        ("unknown message type", vec![b"[999, 1]"]),
        ("wrong field type in HELLO", vec![br#"[1, 123, {}]"#]),
        ("HELLO without roles", vec![br#"[1, "brume", {}]"#]),
        ("PUBLISH before HELLO", vec![br#"[16, 1, {}, "com.ok"]"#]),
        (
            "GOODBYE before HELLO",
            vec![br#"[6, {}, "wamp.close.normal"]"#],
        ),
        ("HELLO twice", vec![HELLO, HELLO]),
        ("WELCOME from a client", vec![HELLO, br#"[2, 5, {}]"#]),
        ("EVENT from a client", vec![HELLO, br#"[36, 1, 2, {}]"#]),
        (
            "ERROR for a non-invocation",
            vec![HELLO, br#"[8, 48, 1, {}, "x.y"]"#],
        ),
        (
            "negative request id",
            vec![HELLO, br#"[16, -5, {}, "com.ok"]"#],
        ),
        (
            "id above 2^53",
            vec![HELLO, br#"[16, 9007199254740993, {}, "com.ok"]"#],
        ),
        (
            "args not a list",
            vec![HELLO, br#"[16, 1, {}, "com.ok", {"a": 1}]"#],
        ),
        (
            "bad base64 binary",
            vec![HELLO, b"[16, 1, {}, \"com.ok\", [\"\\u0000%%%\"]]"],
        ),
        ("truncated JSON", vec![HELLO, br#"[16, 1, {}, "com.o"#]),
    ];
    let deep = format!(
        "[16, 1, {{}}, \"com.ok\", [{}{}]]",
        "[".repeat(200),
        "]".repeat(200)
    );
    for (what, frames) in &cases {
        let got = rawsocket_json(&hub, frames).await;
        assert!(is_protocol_violation(&got), "{what}: router said {got:?}");
    }
    let got = rawsocket_json(&hub, &[HELLO, deep.as_bytes()]).await;
    assert!(is_protocol_violation(&got), "deep nesting: {got:?}");

    // The router still serves the pair that was there all along.
    pub_client
        .publish_acked("com.ok", Payload::args(vec![Value::Int(1)]), Dict::new())
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.payload.arg(0), Some(&Value::Int(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rawsocket_handshake_and_framing_errors() {
    let hub = TestHub::start().await;
    // Unsupported serializer (CBOR): error 1.
    let (_, reply) = RawConn::handshake(hub.addr, 3).await;
    assert_eq!(reply, [0x7F, 0x10, 0, 0]);
    // Reserved bytes set: error 3.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(&[0x7F, 0xF1, 0x01, 0x00]).await.unwrap();
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [0x7F, 0x30, 0, 0]);

    // Our announced limit is the configured 1 MiB: L = 11.
    let (mut c, reply) = RawConn::handshake(hub.addr, 2).await;
    assert_eq!(reply, [0x7F, 0xB2, 0, 0]);
    // A frame over the limit fails the connection.
    c.stream.write_all(&[0x00, 0x20, 0x00, 0x00]).await.unwrap();
    let _ = c.recv_until_closed().await;

    // A reserved frame type.
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    c.stream.write_all(&[0x05, 0, 0, 1, b'x']).await.unwrap();
    let got = c.recv_until_closed().await;
    assert!(is_protocol_violation(&got), "{got:?}");

    // A PING is answered with a PONG echoing its body.
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    c.stream
        .write_all(&[0x01, 0, 0, 3, b'a', b'b', b'c'])
        .await
        .unwrap();
    assert_eq!(c.recv().await, Some((2, b"abc".to_vec())));

    // Truncated frame, then the peer vanishes: nothing to answer, nothing breaks.
    let (mut c, _) = RawConn::handshake(hub.addr, 1).await;
    c.stream
        .write_all(&[0x00, 0, 0, 100, b'[', b'1'])
        .await
        .unwrap();
    drop(c);

    // Bytes that are neither RawSocket nor HTTP.
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00 definitely not http\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the router closes a connection that speaks neither protocol"
    );

    // A connection that says nothing is closed after the hello timeout (not tested for time here);
    // meanwhile a good client joins fine.
    let _idle = TcpStream::connect(hub.addr).await.unwrap();
    let good = hub.client("rawsocket", Serializer::Json).await;
    assert!(good.subscribe("com.after", Dict::new()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_errors_and_garbage() {
    let hub = TestHub::start().await;
    let url = hub.ws_url();

    // No WAMP subprotocol offered: HTTP 400.
    let req = url.as_str().into_client_request().unwrap();
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| ())),
    }
    // Wrong path: 404.
    let mut req = format!("ws://{}/other", hub.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    match tokio_tungstenite::client_async(req, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected HTTP 404, got {:?}", other.map(|_| ())),
    }
    // A binary MessagePack frame of garbage: ABORT, then close.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wamp.2.msgpack".parse().unwrap());
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(WsMessage::Binary(vec![0xc1, 0xff, 0x00].into()))
        .await
        .unwrap();
    let mut saw_abort = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, ws.next()).await {
        if let WsMessage::Binary(b) = m {
            let msg = Serializer::MsgPack.decode(&b).unwrap();
            saw_abort |= matches!(msg, hub::wamp::Message::Abort { ref reason, .. } if reason == "wamp.error.protocol_violation");
        }
    }
    assert!(saw_abort);
    // An oversize WebSocket message (over max_message_size) closes the connection.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    let big = format!("[1, \"{}\", {{}}]", "x".repeat(2 * 1024 * 1024));
    let _ = ws.send(WsMessage::Text(big.into())).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed);

    let good = hub.client("websocket", Serializer::MsgPack).await;
    assert!(good.register("com.after", Dict::new()).await.is_ok());
}
