//! Non-blocking connect under a timeout, with `TCP_NODELAY`.
//!
//! The dial does not use io_uring's CONNECT op under a timeout: monoio 0.2.4 leaks the fd when
//! that op is cancelled as it completes (monoio #318); a non-blocking `connect` plus a POLLOUT
//! wait has no such race.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{ConnectError, ConnectErrorKind};
use crate::sys;

/// Dials `addr` with `TCP_NODELAY`, giving up after `timeout`. The returned socket is
/// non-blocking (as opaque forwarding needs it).
///
/// Errors: [`ConnectError`] with the metric label (refused, timeout, unreachable, other).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let classify = |e| ConnectError::from_io(addr, e);
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(classify)?;
    sock.set_nodelay(true).map_err(classify)?;
    let sa = addr.into();
    let in_progress = match sock.connect(&sa) {
        Ok(()) => false,
        // A local upstream (the sidecar's usual case) has finished the handshake by the time
        // `connect` returns, since loopback runs it inline. Asking again costs one syscall
        // and saves a poll through the ring: 0 = connected, EALREADY = still going, or the
        // error (ECONNREFUSED) that ended it.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => match sock.connect(&sa) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EALREADY) => true,
            Err(e) => return Err(classify(e)),
        },
        Err(e) => return Err(classify(e)),
    };
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock)).map_err(classify)?;
    if !in_progress {
        return Ok(stream);
    }
    match monoio::time::timeout(timeout, stream.writable(false)).await {
        Err(_elapsed) => {
            return Err(ConnectError {
                addr,
                kind: ConnectErrorKind::Timeout,
                detail: format!("no answer within {}ms", timeout.as_millis()),
            })
        }
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(())) => {}
    }
    match sys::take_socket_error(stream.as_raw_fd()) {
        Ok(None) => Ok(stream),
        Ok(Some(e)) | Err(e) => Err(classify(e)),
    }
}
