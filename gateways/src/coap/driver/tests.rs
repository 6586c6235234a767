//! End-to-end over real UDP sockets on 127.0.0.1: the server driver and the
//! client driver talking to each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::time::Duration;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::coap::client::{ClientEvent, ObservationId, RequestId};
use crate::coap::message::CONTENT_FORMAT_JSON;
use crate::coap::server::{ObserveFlag, Response, ServerEvent};

const WAIT: Duration = Duration::from_secs(10);

/// A small application: echoes PUT bodies' sizes, serves /hello, a large
/// /big, and accepts observations of /things/a/commands.
async fn serve(mut events: mpsc::Receiver<ServerEvent>, handle: ServerHandle) {
    while let Some(event) = events.recv().await {
        let ServerEvent::Request(r) = event else {
            continue;
        };
        let response = match (r.method, r.path.join("/").as_str()) {
            (RequestType::Get, "hello") => Response::content(CONTENT_FORMAT_JSON, "\"world\""),
            (RequestType::Get, "big") => Response::content(CONTENT_FORMAT_JSON, vec![b'b'; 3000]),
            (RequestType::Put, "upload") => Response {
                code: ResponseType::Changed,
                ..Response::content(CONTENT_FORMAT_JSON, r.payload.len().to_string())
            },
            (RequestType::Get, "things/a/commands") => {
                assert_eq!(r.observe, Some(ObserveFlag::Register));
                Response::content(CONTENT_FORMAT_JSON, "\"idle\"")
            }
            _ => Response::new(ResponseType::NotFound),
        };
        if handle.respond(r.id, response).await.is_err() {
            return;
        }
    }
}

async fn next_event(events: &mut mpsc::Receiver<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("event in time")
        .expect("driver alive")
}

async fn response_of(
    events: &mut mpsc::Receiver<ClientEvent>,
    want: RequestId,
) -> (ResponseType, Bytes) {
    match next_event(events).await {
        ClientEvent::Response {
            id, code, payload, ..
        } if id == want => (code, payload),
        other => panic!("unexpected {other:?}"),
    }
}

async fn notification_of(events: &mut mpsc::Receiver<ClientEvent>, want: ObservationId) -> Bytes {
    match next_event(events).await {
        ClientEvent::Notification { id, payload, .. } if id == want => payload,
        other => panic!("unexpected {other:?}"),
    }
}

/// A server and a client driver, each on its own socket on 127.0.0.1.
async fn drivers(
    server: ServerDriverConfig,
    client: ClientDriverConfig,
    shutdown: &CancellationToken,
) -> (ServerParts, ClientParts) {
    let server = spawn_server(
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        server,
        shutdown.clone(),
    )
    .unwrap();
    let client = spawn_client(
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        client,
        shutdown.clone(),
    )
    .unwrap();
    (server, client)
}

/// Waits until `done` holds, failing with `what` after [`WAIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn server_and_client_drivers_talk_over_udp() {
    let shutdown = CancellationToken::new();
    let (server, client) = drivers(
        ServerDriverConfig::default(),
        ClientDriverConfig::default(),
        &shutdown,
    )
    .await;
    let addr = server.local_addr;
    let notifier = server.handle.clone();
    let app = tokio::spawn(serve(server.events, server.handle));
    let (handle, mut events) = (client.handle, client.events);

    // Plain GET, piggy-backed.
    let id = handle.get(addr, "/hello").await.unwrap();
    assert_eq!(
        response_of(&mut events, id).await,
        (ResponseType::Content, Bytes::from_static(b"\"world\""))
    );

    // 4 KiB PUT through Block1.
    let id = handle
        .put(addr, "/upload", None, Bytes::from(vec![b'x'; 4096]))
        .await
        .unwrap();
    assert_eq!(
        response_of(&mut events, id).await,
        (ResponseType::Changed, Bytes::from_static(b"4096"))
    );

    // 3000-byte GET through Block2.
    let id = handle.get(addr, "/big").await.unwrap();
    let (code, body) = response_of(&mut events, id).await;
    assert_eq!((code, body.len()), (ResponseType::Content, 3000));

    // 4.04 comes back as a response.
    let id = handle.get(addr, "/missing").await.unwrap();
    assert_eq!(response_of(&mut events, id).await.0, ResponseType::NotFound);

    // Observe: registration answer, then notifications in order, including
    // one large enough to need Block2.
    let obs = handle.observe(addr, "/things/a/commands").await.unwrap();
    assert_eq!(
        notification_of(&mut events, obs).await.as_ref(),
        b"\"idle\""
    );
    for i in 0..3 {
        let n = notifier
            .notify_content(
                "/things/a/commands",
                CONTENT_FORMAT_JSON,
                Bytes::from(format!("{i}")),
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            notification_of(&mut events, obs).await,
            Bytes::from(format!("{i}"))
        );
    }
    let large = Bytes::from(vec![b'n'; 2500]);
    notifier
        .notify_content("/things/a/commands", CONTENT_FORMAT_JSON, large.clone())
        .await
        .unwrap();
    assert_eq!(notification_of(&mut events, obs).await, large);

    // Cancelling deregisters on the server.
    handle.cancel_observation(obs).await.unwrap();
    let mut observers = 1;
    for _ in 0..100 {
        observers = notifier
            .notify_content("/things/a/commands", CONTENT_FORMAT_JSON, Bytes::new())
            .await
            .unwrap();
        if observers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(observers, 0);

    shutdown.cancel();
    assert!(server.task.await.unwrap().is_ok());
    assert!(client.task.await.unwrap().is_ok());
    app.abort();
}

#[tokio::test]
async fn oversized_datagrams_are_dropped_and_full_queue_answers_5_03() {
    let shutdown = CancellationToken::new();
    let config = ServerDriverConfig {
        event_queue: 1,
        max_datagram: 200,
        ..Default::default()
    };
    let server = spawn_server(
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        config,
        shutdown.clone(),
    )
    .unwrap();
    let addr = server.local_addr;
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 1600];

    // A CON GET padded with a 300-byte payload: over the cap, so dropped
    // although it is well formed.
    let mut big = vec![0x40, 0x01, 0x00, 0x01, 0xFF];
    big.extend_from_slice(&[b'p'; 300]);
    raw.send_to(&big, addr).await.unwrap();
    // Nobody reads the server's events: the first request fills the queue,
    // the second is answered 5.03 at once.
    raw.send_to(&[0x40, 0x01, 0x00, 0x02], addr).await.unwrap();
    raw.send_to(&[0x40, 0x01, 0x00, 0x03], addr).await.unwrap();
    let (n, _) = tokio::time::timeout(WAIT, raw.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = coap_lite::Packet::from_bytes(&buf[..n]).unwrap();
    assert_eq!(reply.header.message_id, 3);
    assert_eq!(
        reply.header.code,
        coap_lite::MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    // The first request is the one waiting in the queue.
    let mut events = server.events;
    match events.recv().await {
        Some(ServerEvent::Request(r)) => assert!(r.payload.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    // The dropped one is counted: received, and malformed.
    let stats = server.counters.snapshot();
    assert_eq!(stats.malformed, 1, "{stats:?}");
    assert_eq!(stats.datagrams, 3, "{stats:?}");
    shutdown.cancel();
    assert!(server.task.await.unwrap().is_ok());
}

/// An observation answered while the application's queue is full: the observer is registered,
/// but the event saying so cannot be queued; it is dropped and counted, not lost unseen.
#[tokio::test]
async fn observer_events_a_full_queue_cannot_take_are_counted() {
    let shutdown = CancellationToken::new();
    let (server, client) = drivers(
        ServerDriverConfig {
            event_queue: 1,
            ..Default::default()
        },
        ClientDriverConfig::default(),
        &shutdown,
    )
    .await;
    let addr = server.local_addr;
    let (handle, mut events, counters) = (server.handle, server.events, server.counters);
    let _obs = client
        .handle
        .observe(addr, "/things/a/commands")
        .await
        .unwrap();
    let registration = match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(ServerEvent::Request(r))) => r,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(registration.observe, Some(ObserveFlag::Register));
    // Another request fills the queue, and nobody reads it.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.send_to(&[0x50, 0x01, 0x00, 0x09], addr).await.unwrap();
    wait_until("second request not seen", || {
        counters.snapshot().requests >= 2
    })
    .await;
    assert_eq!(counters.observer_events_dropped(), 0);
    handle
        .respond(
            registration.id,
            Response::content(CONTENT_FORMAT_JSON, "\"idle\""),
        )
        .await
        .unwrap();
    wait_until("drop not counted", || {
        counters.observer_events_dropped() >= 1
    })
    .await;
    assert_eq!(counters.observers(), 1, "the observer itself is registered");
    // The queue still holds the unread request, not the observer event.
    assert!(matches!(events.recv().await, Some(ServerEvent::Request(_))));
    assert_eq!(counters.observer_events_dropped(), 1);
    shutdown.cancel();
    assert!(server.task.await.unwrap().is_ok());
    assert!(client.task.await.unwrap().is_ok());
}

/// An application that reads no events: once its channel and the driver's backlog are full,
/// further notifications are dropped and counted (where a reader can see them), while what was
/// kept arrives in order once it reads again.
#[tokio::test]
async fn notifications_a_lagging_application_cannot_take_are_dropped_and_counted() {
    let shutdown = CancellationToken::new();
    let (server, client) = drivers(
        ServerDriverConfig::default(),
        ClientDriverConfig {
            event_queue: 1,
            backlog: 1,
            ..ClientDriverConfig::default()
        },
        &shutdown,
    )
    .await;
    let addr = server.local_addr;
    let notifier = server.handle.clone();
    let app = tokio::spawn(serve(server.events, server.handle));
    let (handle, mut events, counters) = (client.handle, client.events, client.counters);
    let obs = handle.observe(addr, "/things/a/commands").await.unwrap();
    // The registration's answer fills the channel; "0" waits in the backlog; "1" to "4" find
    // no room. Each is sent once the one before has been dropped, so none is superseded
    // before the driver sees it. "0" goes once the server has registered the observer (it
    // sends nothing to no one), after the registration's answer.
    let deadline = tokio::time::Instant::now() + WAIT;
    while notifier
        .notify_content("/things/a/commands", CONTENT_FORMAT_JSON, Bytes::from("0"))
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 1..5 {
        notifier
            .notify_content(
                "/things/a/commands",
                CONTENT_FORMAT_JSON,
                Bytes::from(format!("{i}")),
            )
            .await
            .unwrap();
        wait_until(&format!("notification {i} not dropped"), || {
            counters.notifications_dropped() >= i
        })
        .await;
    }
    assert_eq!(counters.notifications_dropped(), 4);
    assert_eq!(
        notification_of(&mut events, obs).await.as_ref(),
        b"\"idle\""
    );
    assert_eq!(notification_of(&mut events, obs).await.as_ref(), b"0");
    // Reading again, the application gets what comes next.
    notifier
        .notify_content("/things/a/commands", CONTENT_FORMAT_JSON, Bytes::from("5"))
        .await
        .unwrap();
    assert_eq!(notification_of(&mut events, obs).await.as_ref(), b"5");
    assert_eq!(counters.notifications_dropped(), 4);

    shutdown.cancel();
    assert!(server.task.await.unwrap().is_ok());
    assert!(client.task.await.unwrap().is_ok());
    app.abort();
}

/// Datagrams the client cannot read (over `max_datagram`, or not CoAP) are dropped and counted,
/// a Confirmable one is answered with a Reset, and the client goes on.
#[tokio::test]
async fn datagrams_the_client_cannot_read_are_dropped_and_counted() {
    let shutdown = CancellationToken::new();
    let client = spawn_client(
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        ClientDriverConfig {
            max_datagram: 64,
            ..ClientDriverConfig::default()
        },
        shutdown.clone(),
    )
    .unwrap();
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = client.local_addr;
    // Over the limit (a valid header, then a long payload).
    let mut big = vec![0x50, 0x45, 0x00, 0x01, 0xFF];
    big.resize(200, b'x');
    device.send_to(&big, to).await.unwrap();
    // A Confirmable header with an invalid token length (9).
    device.send_to(&[0x49, 0x45, 0x01, 0x02], to).await.unwrap();
    let mut reset = [0u8; 16];
    let (n, _) = tokio::time::timeout(WAIT, device.recv_from(&mut reset))
        .await
        .expect("a Reset for the malformed Confirmable")
        .unwrap();
    assert_eq!(&reset[..n], &[0x70, 0x00, 0x01, 0x02], "a Reset");
    let counters = client.counters.clone();
    wait_until("both datagrams counted", || counters.malformed() == 2).await;
    assert_eq!(counters.notifications_dropped(), 0);
    shutdown.cancel();
    assert!(client.task.await.unwrap().is_ok());
}
