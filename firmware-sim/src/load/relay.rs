//! The machine's limit: a RawSocket relay that answers the WAMP handshake with canned replies and
//! then copies every frame from the publisher's connection to each subscriber's, with no
//! decoding and no routing. Driven by the same generator as the routers, it shows how far the
//! loopback and the generator alone can go.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use hub::transport::rawsocket::{FrameKind, Handshake, decode_frame, encode_header};
use hub::wamp::{Dict, Message, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Subscribers' frame queues (bounded: the relay waits on a slow subscriber, as a byte pipe would).
type Subscribers = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

/// Starts the relay on a free loopback port; returns its `rs://` URL.
pub async fn start() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let subs: Subscribers = Arc::default();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s, subs.clone()));
        }
    });
    Ok(format!("rs://{addr}"))
}

fn frame(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + body.len());
    b.extend_from_slice(&encode_header(FrameKind::Message, body.len()));
    b.extend_from_slice(body);
    b.freeze()
}

async fn serve(stream: TcpStream, subs: Subscribers) -> anyhow::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = [0u8; 4];
    rd.read_exact(&mut hello).await?;
    let hs = Handshake::parse(hello)
        .context("not RawSocket")?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let ser = Serializer::from_rawsocket_code(hs.serializer).context("serializer")?;
    wr.write_all(&Handshake::encode(16 << 20, hs.serializer))
        .await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut writer: Option<mpsc::Sender<Bytes>> = None;
    let mut own_tx = Some(wr);
    // Only HELLO and the message after it are decoded; once a connection has shown it is a
    // publisher, its frames are copied without looking inside.
    let mut decoded = 0;
    loop {
        while let Some((_, body)) = decode_frame(&mut buf, 16 << 20)? {
            let msg = if decoded < 2 {
                decoded += 1;
                ser.decode(&body).ok()
            } else {
                None
            };
            match msg {
                Some(Message::Hello { .. }) => {
                    reply(
                        &mut own_tx,
                        &mut writer,
                        ser,
                        Message::Welcome {
                            session: 1,
                            details: Dict::new(),
                        },
                    )
                    .await?;
                }
                Some(Message::Subscribe { request, .. }) => {
                    reply(
                        &mut own_tx,
                        &mut writer,
                        ser,
                        Message::Subscribed {
                            request,
                            subscription: 1,
                        },
                    )
                    .await?;
                    if let Some(w) = own_tx.take() {
                        let (tx, rx) = mpsc::channel(1024);
                        tokio::spawn(pump(w, rx));
                        writer = Some(tx.clone());
                        subs.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
                    }
                }
                _ => {
                    let f = frame(&body);
                    let targets = subs.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for t in targets {
                        let _ = t.send(f.clone()).await;
                    }
                }
            }
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn reply(
    own: &mut Option<OwnedWriteHalf>,
    queued: &mut Option<mpsc::Sender<Bytes>>,
    ser: Serializer,
    m: Message,
) -> anyhow::Result<()> {
    let f = frame(&ser.encode(&m)?);
    if let Some(w) = own.as_mut() {
        w.write_all(&f).await?;
    } else if let Some(q) = queued {
        let _ = q.send(f).await;
    }
    Ok(())
}

/// Writes queued frames, batching whatever is waiting into one write.
async fn pump(mut w: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        out.extend_from_slice(&f);
        while let Ok(f) = rx.try_recv() {
            out.extend_from_slice(&f);
            if out.len() > 256 * 1024 {
                break;
            }
        }
        if w.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
