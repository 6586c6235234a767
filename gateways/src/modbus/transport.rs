//! Opening a bus: a TCP connection or a serial port, wrapped so that every request starts on a
//! clean line, and handed to tokio-modbus's client.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_modbus::client::Context;
use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};

use super::config::{Endpoint, RtuLine};
use crate::raw::Parity;

/// A byte stream that throws away whatever is waiting to be read before it writes.
///
/// A Modbus client sends one request and reads one answer. An answer that comes after its
/// request timed out would otherwise be read as the answer to the next request, to another
/// device; discarding stale input before each request keeps answers with their requests.
#[derive(Debug)]
pub(super) struct Drained<T> {
    inner: T,
    discarded: u64,
}

impl<T> Drained<T> {
    fn new(inner: T) -> Self {
        Drained {
            inner,
            discarded: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Drained<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Drained<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut scratch = [0u8; 256];
        // Bounded: a peer that streams without end cannot keep the writer here.
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let n = buf.filled().len() as u64;
                    self.discarded = self.discarded.saturating_add(n);
                    tracing::debug!(bytes = n, "stale input discarded before a request");
                }
                // End of stream: the write below fails or the next read sees it.
                Poll::Ready(Ok(())) => break,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to a TCP bus or opens a serial line.
pub(super) async fn open(endpoint: &Endpoint) -> io::Result<Context> {
    match endpoint {
        Endpoint::Tcp {
            address,
            connect_timeout,
        } => {
            let stream =
                tokio::time::timeout(*connect_timeout, TcpStream::connect(address.as_str()))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
                    })??;
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::tcp::attach(Drained::new(stream)))
        }
        Endpoint::Rtu(line) => {
            let port = open_serial(line)?;
            Ok(tokio_modbus::client::rtu::attach(Drained::new(port)))
        }
    }
}

fn open_serial(line: &RtuLine) -> io::Result<tokio_serial::SerialStream> {
    let data_bits = if line.data_bits == 7 {
        DataBits::Seven
    } else {
        DataBits::Eight
    };
    let stop_bits = if line.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let parity = match line.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let port = tokio_serial::new(&line.path, line.baud_rate)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(io::Error::other)?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn stale_input_is_dropped_before_a_write() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = Drained::new(a);
        b.write_all(b"late answer").await.expect("write");
        tokio::task::yield_now().await;
        a.write_all(b"request").await.expect("write");
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"request");
        b.write_all(b"answer").await.expect("write");
        let mut got = [0u8; 6];
        a.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"answer");
        assert_eq!(a.discarded, 11);
    }
}
