//! Non-blocking connect under a timeout, with `TCP_NODELAY`; and the second try after a
//! failed connect ([`connect_any`]: another endpoint, or a timed-out one once more).
//!
//! The dial does not use io_uring's CONNECT op under a timeout: monoio 0.2.4 leaks the fd when
//! that op is cancelled as it completes (monoio #318); a non-blocking `connect` plus a POLLOUT
//! wait has no such race.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use tracing::debug;

use crate::config::KeepaliveConfig;
use crate::error::{ConnectError, ConnectErrorKind};
use crate::metrics::{ConnectRetry, ListenerMetrics};
use crate::sys;

use super::health::Health;

/// Turns on TCP keepalive `k` (the listener's `tcp_keepalive_*`; `None`: nothing to do) on
/// upstream socket `s`, so an upstream that vanished without FIN or RST is found within about
/// `time + interval × probes` instead of when retransmission gives up (~15 min). Failures are
/// logged at debug, not fatal: the connection works without it.
pub fn keepalive(s: &TcpStream, k: Option<KeepaliveConfig>) {
    let Some(k) = k else { return };
    let secs = |d: Duration| d.as_secs() as u32;
    if let Err(e) = sys::set_keepalive(s.as_raw_fd(), secs(k.time), secs(k.interval), k.probes) {
        debug!(error = %e, "could not set TCP keepalive on an upstream socket");
    }
}

/// [`keepalive`] for an HTTP/2 upstream connection, plus the same bound on unacknowledged
/// data and on a closed receive window (`TCP_USER_TIMEOUT`, [`sys::set_user_timeout`]):
/// keepalive probes go out only while nothing is in flight, so a pooled HTTP/2 upstream
/// that vanished right after a stream was sent kept getting streams (each answered 504
/// after the response timeout) until retransmission gave up, ~15 min (review). An HTTP/2
/// peer reads its socket all the time (control frames, flow control), so one whose window
/// stays closed that long is stuck; clients and opaque peers may stop reading for longer,
/// and do not get this bound.
pub fn keepalive_h2(s: &TcpStream, k: Option<KeepaliveConfig>) {
    keepalive(s, k);
    let Some(k) = k else { return };
    let bound = k.time + k.interval * k.probes;
    let ms = u32::try_from(bound.as_millis()).unwrap_or(u32::MAX);
    if let Err(e) = sys::set_user_timeout(s.as_raw_fd(), ms) {
        debug!(error = %e, "could not set TCP_USER_TIMEOUT on an HTTP/2 upstream socket");
    }
}

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
    // Boxed: the timer is most of this future's size, and a connect that finished inline
    // (loopback) never waits, so the connection's task does not carry it.
    match Box::pin(monoio::time::timeout(timeout, stream.writable(false))).await {
        Err(_elapsed) => {
            return Err(ConnectError {
                addr,
                kind: ConnectErrorKind::Timeout,
                detail: format!("no answer within {}ms", timeout.as_millis()),
                reset: false,
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

/// Dials `addr` with [`connect`]; when that fails, tries once more: on the endpoint `other()`
/// names (another endpoint of the set), or, when there is none, on `addr` again if the
/// connect timed out (a SYN the upstream's full accept queue dropped). The first failure is
/// counted in `m` (`tcp_connect_errors_total`) and the retry in
/// `sidewire_connect_retries_total`; the caller counts a final failure. Each attempt's outcome
/// is recorded in `h` (passive health) before `other()` is asked.
///
/// Returns the endpoint connected to with the stream.
pub async fn connect_any(
    m: &ListenerMetrics,
    h: &Health,
    addr: SocketAddr,
    timeout: Duration,
    other: impl FnOnce() -> Option<SocketAddr>,
) -> Result<(SocketAddr, TcpStream), ConnectError> {
    match connect(addr, timeout).await {
        Ok(s) => {
            h.connected(addr);
            Ok((addr, s))
        }
        Err(e) => second_try(m, h, e, timeout, other).await,
    }
}

/// After the connect failure `e`, the second try of [`connect_any`] (when it applies; else
/// `e` back).
pub async fn second_try(
    m: &ListenerMetrics,
    h: &Health,
    e: ConnectError,
    timeout: Duration,
    other: impl FnOnce() -> Option<SocketAddr>,
) -> Result<(SocketAddr, TcpStream), ConnectError> {
    let addr = e.addr;
    h.failed(addr);
    let again = match other().filter(|o| *o != addr) {
        Some(o) => {
            m.connect_retried(ConnectRetry::Other);
            debug!(upstream = %addr, other = %o, error = %e, "upstream connect failed; trying another endpoint");
            o
        }
        None if e.kind == ConnectErrorKind::Timeout => {
            m.connect_retried(ConnectRetry::Same);
            debug!(upstream = %addr, error = %e, "upstream connect timed out; trying once more");
            addr
        }
        None => return Err(e),
    };
    m.connect_failed(e.kind);
    let r = connect(again, timeout).await;
    match &r {
        Ok(_) => h.connected(again),
        Err(e) => {
            h.failed(e.addr);
        }
    }
    r.map(|s| (again, s))
}

/// [`connect_any`] with no other endpoint: a timed-out connect is tried once more.
pub async fn connect_retrying(
    m: &ListenerMetrics,
    h: &Health,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    connect_any(m, h, addr, timeout, || None)
        .await
        .map(|(_, s)| s)
}
