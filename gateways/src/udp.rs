//! What the UDP listeners (CoAP and raw UDP) share: which socket errors concern one datagram and
//! which the socket itself.

use std::io;

/// An error number by platform: Linux (and the others), the BSDs with macOS, Windows.
const fn per_os(linux: i32, bsd: i32, windows: i32) -> i32 {
    if cfg!(windows) {
        windows
    } else if cfg!(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )) {
        bsd
    } else {
        linux
    }
}

/// `EMSGSIZE`: a datagram larger than the receive buffer (Windows reports this on receive) or
/// than the path allows on send.
const EMSGSIZE: i32 = per_os(90, 40, 10040);

/// `ENOBUFS`: the kernel had no buffer for this datagram.
const ENOBUFS: i32 = per_os(105, 55, 10055);

/// Whether a UDP socket error concerns one datagram (ICMP feedback from a peer, an oversized
/// datagram, a momentarily full buffer) rather than the socket. Such an error is logged and the
/// listener goes on: one peer's bad datagram must never stop a listener.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset
            | ConnectionRefused
            | ConnectionAborted
            | HostUnreachable
            | NetworkUnreachable
            | Interrupted
            | WouldBlock
            | TimedOut
    ) || e
        .raw_os_error()
        .is_some_and(|c| c == EMSGSIZE || c == ENOBUFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_datagram_errors_are_transient() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
        ] {
            assert!(is_transient(&io::Error::from(kind)), "{kind:?}");
        }
        // An oversized datagram is one peer's problem, for CoAP and raw UDP alike.
        assert!(is_transient(&io::Error::from_raw_os_error(EMSGSIZE)));
        assert!(is_transient(&io::Error::from_raw_os_error(ENOBUFS)));
    }

    #[test]
    fn socket_errors_are_not_transient() {
        assert!(!is_transient(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        assert!(!is_transient(&io::Error::other("socket closed")));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_oversized_datagram_error_is_linux_emsgsize() {
        // What recv/send report on Linux for a datagram that is too long.
        let e = io::Error::from_raw_os_error(90);
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(is_transient(&e));
    }
}
