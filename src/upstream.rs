//! Upstream selection and connect: pick an endpoint (least open connections on this core,
//! rotating among ties), dial it non-blocking under the listener's connect timeout.
//!
//! Not here: retries on another endpoint, health checking, DNS re-resolution, connection
//! pools (those come with HTTP proxying). The dial does not use io_uring's CONNECT op under a
//! timeout: monoio 0.2.4 leaks the fd when that op is cancelled as it completes (monoio #318);
//! a non-blocking `connect` plus a POLLOUT wait has no such race.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::ConnectErrorKind;
use crate::sys;

/// Per-core endpoint choice for one listener.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Vec<SocketAddr>,
    /// Open connections per endpoint on this core.
    active: Rc<[Cell<u32>]>,
    /// Where the next tie-break scan starts, so equal endpoints take turns.
    next: Cell<usize>,
}

/// Holds one endpoint's open-connection count up while the connection lives.
#[derive(Debug)]
pub struct EndpointLease {
    active: Rc<[Cell<u32>]>,
    index: usize,
}

impl Drop for EndpointLease {
    fn drop(&mut self) {
        let c = &self.active[self.index];
        c.set(c.get().saturating_sub(1));
    }
}

impl Balancer {
    /// A balancer over `endpoints` (non-empty, checked by config validation).
    pub fn new(endpoints: Vec<SocketAddr>) -> Balancer {
        let active: Rc<[Cell<u32>]> = endpoints.iter().map(|_| Cell::new(0)).collect();
        Balancer {
            endpoints,
            active,
            next: Cell::new(0),
        }
    }

    /// Picks the endpoint with the fewest open connections; ties go round-robin.
    pub fn pick(&self) -> (SocketAddr, EndpointLease) {
        let n = self.endpoints.len();
        let start = self.next.get();
        let mut best = start % n;
        for k in 1..n {
            let i = (start + k) % n;
            if self.active[i].get() < self.active[best].get() {
                best = i;
            }
        }
        self.next.set((best + 1) % n);
        let c = &self.active[best];
        c.set(c.get() + 1);
        (
            self.endpoints[best],
            EndpointLease {
                active: self.active.clone(),
                index: best,
            },
        )
    }
}

/// Why a connect failed, with the OS error when there is one.
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr}: connect {}: {detail}", kind.as_str())]
pub struct ConnectError {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The metric label.
    pub kind: ConnectErrorKind,
    /// Human-readable cause.
    pub detail: String,
}

fn classify(addr: SocketAddr, e: io::Error) -> ConnectError {
    let kind = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectErrorKind::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EADDRNOTAVAIL) => {
            ConnectErrorKind::Unreachable
        }
        Some(libc::ETIMEDOUT) => ConnectErrorKind::Timeout,
        _ => ConnectErrorKind::Other,
    };
    ConnectError {
        addr,
        kind,
        detail: e.to_string(),
    }
}

/// An upstream connection of the HTTP proxies (pooled between requests), counted in the
/// listener's `peer="dst"` metrics from dial to close.
#[derive(Debug)]
pub struct UpConn {
    stream: TcpStream,
    counters: std::rc::Rc<crate::metrics::PeerCounters>,
}

impl UpConn {
    /// Counts `stream` as an open upstream connection until dropped.
    pub fn new(stream: TcpStream, counters: &std::rc::Rc<crate::metrics::PeerCounters>) -> UpConn {
        counters.opened();
        UpConn {
            stream,
            counters: counters.clone(),
        }
    }
}

impl std::ops::Deref for UpConn {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::ops::DerefMut for UpConn {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl crate::http1::proxy::Peer for UpConn {
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
    fn counters(&self) -> &crate::metrics::PeerCounters {
        &self.counters
    }
}

impl Drop for UpConn {
    fn drop(&mut self) {
        self.counters.closed(true);
    }
}

/// Dials `addr` with `TCP_NODELAY`, giving up after `timeout`. The returned socket is
/// non-blocking (as `forward` needs it).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(|e| classify(addr, e))?;
    sock.set_nodelay(true).map_err(|e| classify(addr, e))?;
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
            Err(e) => return Err(classify(addr, e)),
        },
        Err(e) => return Err(classify(addr, e)),
    };
    let stream =
        TcpStream::from_std(std::net::TcpStream::from(sock)).map_err(|e| classify(addr, e))?;
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
        Ok(Err(e)) => return Err(classify(addr, e)),
        Ok(Ok(())) => {}
    }
    match sys::take_socket_error(stream.as_raw_fd()) {
        Ok(None) => Ok(stream),
        Ok(Some(e)) | Err(e) => Err(classify(addr, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_connections_with_round_robin_ties() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let b = Balancer::new(eps.clone());
        // Ties rotate: 1, 2, 3.
        let l1 = b.pick();
        let l2 = b.pick();
        let l3 = b.pick();
        assert_eq!([l1.0, l2.0, l3.0], [eps[0], eps[1], eps[2]]);
        // Endpoint 2 frees up: it has the fewest and is chosen next.
        drop(l2);
        let l4 = b.pick();
        assert_eq!(l4.0, eps[1]);
        drop((l1, l3, l4));
        assert!(b.active.iter().all(|c| c.get() == 0));
    }
}
