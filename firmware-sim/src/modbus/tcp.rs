//! Modbus TCP for a [`SimBus`]: MBAP framing, one task per connection answering its requests in
//! order, and a [`TcpServer`] handle that can unplug the server (listener closed, connections
//! dropped) and plug it back on the same address.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::bus::{SimBus, Transport};

/// Largest MBAP length field: the unit id plus a PDU of at most 253 bytes.
const MAX_MBAP_LEN: u16 = 254;

/// A running Modbus TCP server of a [`SimBus`] (see [`SimBus::serve_tcp`]). Cloning gives
/// another handle on the same server. It runs until the shutdown token given to `serve_tcp` is
/// cancelled; dropping handles does not stop it.
#[derive(Debug, Clone)]
pub struct TcpServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: SimBus,
    addr: SocketAddr,
    shutdown: CancellationToken,
    plugged: Mutex<Option<Plugged>>,
}

/// The accept loop and connections of one plugged period.
#[derive(Debug)]
struct Plugged {
    stop: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

impl SimBus {
    /// Serves the bus over Modbus TCP on `listener` until `shutdown` is cancelled. The unit id of
    /// each request selects the device; see [`SimBus`] for unknown and dead units.
    pub fn serve_tcp(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<TcpServer> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            bus: self.clone(),
            addr,
            shutdown,
            plugged: Mutex::new(None),
        });
        let server = TcpServer { inner };
        server.start(listener);
        info!(%addr, "modbus tcp listening");
        Ok(server)
    }
}

impl TcpServer {
    /// The address it listens on (also while unplugged: the one it comes back on).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Whether it is listening.
    pub fn is_plugged(&self) -> bool {
        self.slot().is_some()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.slot().as_ref().map_or(0, |p| p.connections.len())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Plugged>> {
        self.inner
            .plugged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start(&self, listener: TcpListener) {
        let stop = self.inner.shutdown.child_token();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            self.inner.bus.clone(),
            stop.clone(),
            connections.clone(),
        ));
        *self.slot() = Some(Plugged {
            stop,
            accept,
            connections,
        });
    }

    /// Unplugs the server: stops listening (new connections are refused) and closes every open
    /// connection, as when a device's cable is pulled and the client's next attempt fails. Returns
    /// once the port is closed. Nothing happens if already unplugged.
    pub async fn unplug(&self) {
        let Some(plugged) = self.slot().take() else {
            return;
        };
        plugged.stop.cancel();
        let _ = plugged.accept.await;
        plugged.connections.close();
        plugged.connections.wait().await;
        info!(addr = %self.inner.addr, "modbus tcp unplugged");
    }

    /// Plugs the server back in on the same address. Nothing happens if already plugged.
    pub async fn plug(&self) -> io::Result<()> {
        if self.is_plugged() {
            return Ok(());
        }
        let socket = match self.inner.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // The closed connections linger in TIME_WAIT; rebinding the port must not wait for them.
        socket.set_reuseaddr(true)?;
        socket.bind(self.inner.addr)?;
        let listener = socket.listen(128)?;
        self.start(listener);
        info!(addr = %self.inner.addr, "modbus tcp plugged");
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    bus: SimBus,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(%peer, "modbus tcp connection");
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, peer, bus.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                warn!(error = %e, "modbus tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, bus: SimBus, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => debug!(%peer, "modbus tcp connection dropped"),
        r = serve_connection(stream, &bus) => match r {
            Ok(()) => debug!(%peer, "modbus tcp connection closed by the client"),
            Err(e) => debug!(%peer, error = %e, "modbus tcp connection ended"),
        },
    }
}

/// Reads MBAP frames and answers them in order until the client closes or breaks the framing.
async fn serve_connection(mut stream: TcpStream, bus: &SimBus) -> io::Result<()> {
    let mut header = [0u8; 7];
    loop {
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let transaction = [header[0], header[1]];
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        let length = u16::from_be_bytes([header[4], header[5]]);
        let unit = header[6];
        if protocol != 0 || !(2..=MAX_MBAP_LEN).contains(&length) {
            // Not Modbus, or a frame we cannot delimit: a device closes the connection.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad MBAP header (protocol {protocol}, length {length})"),
            ));
        }
        let mut pdu = vec![0u8; usize::from(length - 1)];
        stream.read_exact(&mut pdu).await?;
        let answer = bus.answer(unit, Transport::Tcp, &pdu);
        let Some(reply) = answer.pdu else {
            continue;
        };
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        let mut frame = Vec::with_capacity(7 + reply.len());
        frame.extend_from_slice(&transaction);
        frame.extend_from_slice(&[0, 0]);
        let len = u16::try_from(reply.len() + 1).unwrap_or(MAX_MBAP_LEN);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(&reply);
        stream.write_all(&frame).await?;
    }
}
