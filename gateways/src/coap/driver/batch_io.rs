//! Many datagrams per system call: on Linux, `recvmmsg` and `sendmmsg` (through `nix`), so a
//! burst of requests costs the server one system call to read and one to answer instead of
//! one per datagram each way (entering and leaving the kernel is a large part of a small
//! datagram's cost). Elsewhere, one datagram per call.
//!
//! Both are non-blocking and meant for tokio's `try_io`: they return `WouldBlock` when nothing
//! can be read or written, which clears the socket's readiness.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

use crate::coap::transmission::Transmit;

/// Most datagrams one call reads or writes.
pub(super) const BATCH: usize = 32;

/// One datagram read into a [`RecvBuffers`] slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    peer: Option<SocketAddr>,
    len: usize,
    truncated: bool,
}

/// Room for [`BATCH`] datagrams of at most `max_datagram` bytes, and what the last read put
/// there. Each slot is one byte larger than `max_datagram`, so that a datagram the kernel had
/// to cut is seen as too large (see the driver's module docs).
#[derive(Debug)]
pub(super) struct RecvBuffers {
    buf: Vec<u8>,
    slot: usize,
    read: Vec<Slot>,
}

impl RecvBuffers {
    /// Buffers for datagrams of at most `max_datagram` bytes.
    pub(super) fn new(max_datagram: usize) -> Self {
        let slot = max_datagram.max(4) + 1;
        Self {
            buf: vec![0; slot * BATCH],
            slot,
            read: Vec::with_capacity(BATCH),
        }
    }

    /// Reads the datagrams waiting on `socket`, up to [`BATCH`], without waiting: how many it
    /// read (at least one), or `WouldBlock` when none was waiting.
    pub(super) fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.read.clear();
        let Self { buf, slot, read } = self;
        socket.try_io(Interest::READABLE, || recv_many(socket, buf, *slot, read))
    }

    /// Datagram `i` of the last read: its sender and bytes, or `Err` with the sender (if
    /// known) when it was larger than the slot or came from an address that is not IP.
    pub(super) fn datagram(&self, i: usize) -> Result<(SocketAddr, &[u8]), Option<SocketAddr>> {
        let Some(s) = self.read.get(i) else {
            return Err(None);
        };
        match s.peer {
            Some(peer) if !s.truncated && s.len < self.slot => {
                let start = i * self.slot;
                self.buf
                    .get(start..start + s.len)
                    .map(|bytes| (peer, bytes))
                    .ok_or(Some(peer))
            }
            peer => Err(peer),
        }
    }
}

/// Sends every datagram of `batch` to its peer, as many per call as the kernel takes, waiting
/// while the socket's buffer is full. A datagram the kernel refuses (an unreachable peer, an
/// address it cannot reach) is logged and skipped: CoAP's own retransmission recovers.
pub(super) async fn send_all(socket: &UdpSocket, batch: &[Transmit]) {
    let mut next = 0;
    while let Some(rest) = batch.get(next..).filter(|r| !r.is_empty()) {
        match socket.try_io(Interest::WRITABLE, || send_many(socket, rest)) {
            Ok(sent) => next += sent.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    debug!(error = %e, "socket no longer writable; datagrams dropped");
                    return;
                }
            }
            Err(e) => {
                // The first datagram of `rest` failed alone (the kernel reports a failure for
                // the first message of a call, and sends nothing after it).
                if let Some(t) = rest.first() {
                    debug!(peer = %t.peer, error = %e, "send failed");
                }
                next += 1;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn recv_many(
    socket: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    read: &mut Vec<Slot>,
) -> io::Result<usize> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let slices: Vec<[IoSliceMut<'_>; 1]> = buf
        .chunks_mut(slot)
        .take(BATCH)
        .map(|c| [IoSliceMut::new(c)])
        .collect();
    let results = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.iter(),
        MsgFlags::empty(),
        None,
    )?;
    for r in results {
        read.push(Slot {
            peer: r.address.as_ref().and_then(ip_address),
            len: r.bytes,
            truncated: r.flags.contains(MsgFlags::MSG_TRUNC),
        });
    }
    if read.is_empty() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(read.len())
}

#[cfg(target_os = "linux")]
fn send_many(socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let batch = batch.get(..BATCH).unwrap_or(batch);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|t| [IoSlice::new(&t.bytes)]).collect();
    let peers: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|t| Some(SockaddrStorage::from(t.peer)))
        .collect();
    let none: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.iter(),
        peers,
        none,
        MsgFlags::empty(),
    )?;
    Ok(sent.count())
}

#[cfg(target_os = "linux")]
fn ip_address(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(not(target_os = "linux"))]
fn recv_many(
    socket: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    read: &mut Vec<Slot>,
) -> io::Result<usize> {
    let into = buf.get_mut(..slot).unwrap_or(buf);
    let (len, peer) = socket.try_recv_from(into)?;
    read.push(Slot {
        peer: Some(peer),
        len,
        truncated: len >= slot,
    });
    Ok(1)
}

#[cfg(not(target_os = "linux"))]
fn send_many(socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
    match batch.first() {
        Some(t) => socket.try_send_to(&t.bytes, t.peer).map(|_| 1),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// More datagrams than one call takes, from two senders, one of them too large: every one
    /// is read, in the order each sender sent them, the large one marked, never cut.
    #[tokio::test]
    async fn reads_a_burst_in_batches_and_marks_what_does_not_fit() {
        let server = bound().await;
        let (a, b) = (bound().await, bound().await);
        let to = server.local_addr().unwrap();
        let total = BATCH + 8;
        for i in 0..total {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(format!("m{i}").as_bytes(), to).await.unwrap();
        }
        a.send_to(&[7u8; 65], to).await.unwrap();
        let mut rx = RecvBuffers::new(64);
        let (mut got, mut calls, mut too_large) = (Vec::new(), 0, Vec::new());
        while got.len() + too_large.len() < total + 1 {
            server.readable().await.unwrap();
            let n = match rx.try_recv(&server) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            assert!(n <= BATCH);
            calls += 1;
            for i in 0..n {
                match rx.datagram(i) {
                    Ok((peer, bytes)) => {
                        got.push((peer, String::from_utf8(bytes.to_vec()).unwrap()))
                    }
                    Err(peer) => too_large.push(peer),
                }
            }
        }
        assert_eq!(too_large, [Some(a.local_addr().unwrap())]);
        assert!(calls < total, "{calls} reads for {total} datagrams");
        let mut by_peer: HashMap<SocketAddr, Vec<String>> = HashMap::new();
        for (peer, text) in got {
            by_peer.entry(peer).or_default().push(text);
        }
        let expect = |parity: usize| -> Vec<String> {
            (0..total)
                .filter(|i| i % 2 == parity)
                .map(|i| format!("m{i}"))
                .collect()
        };
        assert_eq!(by_peer[&a.local_addr().unwrap()], expect(0));
        assert_eq!(by_peer[&b.local_addr().unwrap()], expect(1));
    }

    /// A batch larger than one call, to two peers, arrives whole and in order at each.
    #[tokio::test]
    async fn sends_a_batch_to_several_peers() {
        let server = bound().await;
        let (a, b) = (bound().await, bound().await);
        let total = BATCH * 2 + 3;
        let batch: Vec<Transmit> = (0..total)
            .map(|i| Transmit {
                peer: if i % 2 == 0 {
                    a.local_addr().unwrap()
                } else {
                    b.local_addr().unwrap()
                },
                bytes: Bytes::from(format!("r{i}")),
            })
            .collect();
        send_all(&server, &batch).await;
        for (socket, parity) in [(&a, 0), (&b, 1)] {
            let mut buf = [0u8; 16];
            for i in (0..total).filter(|i| i % 2 == parity) {
                let (n, from) =
                    tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                assert_eq!(from, server.local_addr().unwrap());
                assert_eq!(&buf[..n], format!("r{i}").as_bytes());
            }
        }
    }
}
