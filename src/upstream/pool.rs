//! Upstream connections of the HTTP proxies and their per-core pools.
//!
//! - [`UpConn`]: an upstream connection counted in the listener's `peer="dst"` metrics from
//!   dial to close, readable and writable as an [`io::Peer`](crate::io::Peer).
//! - [`Pools`]: one listener's idle HTTP/1 connections per endpoint, its HTTP/2 connections
//!   per endpoint (each shared by as many streams as its upstream allows, [`H2Slot`]), and
//!   what `upstream_protocol = "auto"` learned about each endpoint.
//! - [`dial_h1`], [`handshake_h2`], [`probe_h2`]: how those connections are made.
//!
//! Pools are small `Vec`s scanned linearly: a listener has a handful of endpoints per core.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{LocalBoxFuture, Shared};
use h2::client::SendRequest;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, IntoPollIo};
use monoio::net::TcpStream;
use tracing::debug;

use super::gate::{Gate, Granted, OpenSlot};
use super::health::Health;
use super::{connect, connect_retrying, keepalive};
use crate::config::{Http2Config, KeepaliveConfig};
use crate::detect::http::{probe_h2_server_settings, H2_PREFACE};
use crate::detect::Probe;
use crate::error::{ConnectErrorKind, Failure, Side};
use crate::io::{coalesce::Coalesce, counted::Counted, Peer};
use crate::metrics::{ConnectRetry, ListenerMetrics, Opened, PeerCounters};
use crate::sys;
use crate::task;

/// An upstream connection of the HTTP proxies (pooled between requests), counted in the
/// listener's `peer="dst"` metrics from dial to close.
///
/// Closed (dropped) in the middle of an exchange ([`UpConn::begin`] without
/// [`UpConn::end`]), whatever the reason (its client reset, left or stalled; the upstream's
/// answer was bad or late; the exchange was cancelled), its close counts as a `failure`: the
/// proxy cut it, as a side closed because the other failed.
#[derive(Debug)]
pub struct UpConn {
    stream: TcpStream,
    open: Opened,
    /// Counts it against its endpoint's [`Gate`] bound, when it has one.
    _slot: Option<OpenSlot>,
    /// A request was started on it and its response has not ended.
    in_exchange: bool,
}

impl UpConn {
    /// Counts `stream` as an open upstream connection until dropped.
    pub fn new(stream: TcpStream, counters: &Rc<PeerCounters>) -> UpConn {
        UpConn {
            stream,
            open: Opened::new(counters),
            _slot: None,
            in_exchange: false,
        }
    }

    /// An exchange starts on it: until [`UpConn::end`], dropping it counts its close as a
    /// `failure`.
    pub fn begin(&mut self) {
        self.in_exchange = true;
    }

    /// The exchange's response has ended (read to its framed end, or to the upstream's close
    /// that delimits it): closing it now is no failure.
    pub fn end(&mut self) {
        self.in_exchange = false;
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for UpConn {
    fn drop(&mut self) {
        if self.in_exchange {
            self.open.failed();
        }
    }
}

impl Peer for UpConn {
    type Io = TcpStream;
    fn io(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
    fn counters(&self) -> &PeerCounters {
        self.open.counters()
    }
    fn side(&self) -> Side {
        Side::Upstream
    }
    fn note_error(&mut self, e: &std::io::Error) {
        self.open.failed_with(e);
    }
    fn tcp(&self) -> Option<&TcpStream> {
        Some(&self.stream)
    }
}

/// A pooled HTTP/2 upstream connection: the dial in progress, then its sender. Shared, so
/// streams that arrive together wait for one dial instead of each opening a connection.
pub type H2Conn = Shared<LocalBoxFuture<'static, Result<SendRequest<Bytes>, Failure>>>;

/// How many streams an HTTP/2 upstream connection is taken to allow until its SETTINGS say
/// (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 §6.5.2: no limit until then, and it SHOULD be
/// at least 100): the streams that join a connection still being dialled, and `h2`'s
/// `initial_max_send_streams` ([`handshake_h2`]).
pub const ASSUMED_MAX_STREAMS: usize = 100;

/// The HTTP/2 connections to endpoints, each with its count of open streams.
type H2Conns = Rc<RefCell<Vec<(SocketAddr, H2Slot)>>>;

/// One pooled HTTP/2 upstream connection and how many streams are open on it: a stream is
/// opened on a connection with room ([`Pools::h2`]) and counted from then until its
/// [`InFlight`] is dropped (its response body's end, or its failure). Past the upstream's
/// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2) `h2` would queue a stream on the
/// connection until another ends (a fresh-user review: one client's 150 long streams on an
/// upstream allowing 100 made 6 of 8 other clients' requests wait 10 s for a 504); a full
/// connection is passed over instead, and a new one dialled when all are full.
#[derive(Debug, Clone)]
pub struct H2Slot {
    conn: H2Conn,
    streams: Rc<Cell<usize>>,
    /// The streams it takes until its upstream's SETTINGS say: the endpoint's limit seen on
    /// its other connections, else [`ASSUMED_MAX_STREAMS`].
    assumed: usize,
}

impl H2Slot {
    /// The connection (its dial may still be in progress).
    pub fn conn(&self) -> H2Conn {
        self.conn.clone()
    }

    /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS, once its SETTINGS said (`h2` reports
    /// [`ASSUMED_MAX_STREAMS`] until then: a limit of exactly that reads as not said, and
    /// comes to the same).
    fn said(&self) -> Option<usize> {
        match self.conn.peek() {
            Some(Ok(s)) => Some(s.current_max_send_streams()).filter(|&n| n != ASSUMED_MAX_STREAMS),
            _ => None,
        }
    }

    /// How many streams the connection takes: what its upstream said, else `assumed`; none
    /// once its dial failed.
    fn limit(&self) -> usize {
        match self.conn.peek() {
            Some(Err(_)) => 0,
            _ => self.said().unwrap_or(self.assumed),
        }
    }

    fn has_room(&self) -> bool {
        self.streams.get() < self.limit()
    }
}

/// One stream counted on a pooled HTTP/2 connection ([`H2Slot`]) while it is alive. When the
/// last stream on a connection ends and another connection to the endpoint is idle too, this
/// one leaves the pool (its connection closes once nothing holds its sender): a burst that
/// needed more connections leaves one idle connection per endpoint behind, not all of them.
#[derive(Debug)]
pub struct InFlight {
    addr: SocketAddr,
    slot: H2Slot,
    conns: H2Conns,
}

impl InFlight {
    /// The connection the stream was counted on.
    pub fn conn(&self) -> H2Conn {
        self.slot.conn()
    }

    /// Whether more streams are counted on the connection than it takes now (its SETTINGS
    /// came with a lower limit than it was assumed to have).
    pub fn over_limit(&self) -> bool {
        self.slot.streams.get() > self.slot.limit()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.slot.streams.get().saturating_sub(1);
        self.slot.streams.set(left);
        if left > 0 {
            return;
        }
        // (Never borrowed across an await: a borrow here is a bug elsewhere, and the pruning
        // waits for the next stream's end.)
        let Ok(mut conns) = self.conns.try_borrow_mut() else {
            return;
        };
        let idle = |s: &H2Slot| s.streams.get() == 0 && matches!(s.conn.peek(), Some(Ok(_)));
        let other_idle = conns
            .iter()
            .any(|(a, s)| *a == self.addr && !s.conn.ptr_eq(&self.slot.conn) && idle(s));
        if other_idle {
            conns.retain(|(_, s)| !s.conn.ptr_eq(&self.slot.conn));
        }
    }
}

/// How often idle HTTP/1 connections are checked for an upstream close or an expired idle
/// timeout while the pool holds any (at most; a shorter idle timeout checks more often).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One listener's upstream pools on one core.
#[derive(Debug)]
pub struct Pools {
    /// Idle HTTP/1 connections.
    h1: Rc<IdleH1>,
    /// HTTP/2 upstream connections: per endpoint as many as its streams need ([`H2Slot`]).
    h2: H2Conns,
    /// Per endpoint: the SETTINGS_MAX_CONCURRENT_STREAMS its connections last said, for the
    /// connections dialled next (which take that many before their own SETTINGS come).
    h2_limits: RefCell<Vec<(SocketAddr, usize)>>,
    /// `upstream_protocol = "auto"`: endpoints learned to speak HTTP/2 (true) or not.
    learned: RefCell<Vec<(SocketAddr, bool)>>,
    /// Per endpoint: the bounds on HTTP/1 connects and connections (created on first use).
    gates: RefCell<Vec<(SocketAddr, Rc<Gate>)>>,
    /// `max_connections_per_endpoint`, `max_connects_per_endpoint` (0: no bound).
    bounds: (u32, u32),
    /// TCP keepalive for the HTTP/1 connections it dials (`None`: off).
    keepalive: Option<KeepaliveConfig>,
}

/// Idle HTTP/1 upstream connections of one listener on one core.
#[derive(Debug)]
struct IdleH1 {
    /// Connections are closed after idling this long.
    timeout: Duration,
    /// At most this many are kept.
    max: usize,
    /// (endpoint, connection, idle since), oldest first.
    conns: RefCell<Vec<(SocketAddr, UpConn, Instant)>>,
    /// A sweeper task is running (see [`IdleH1::sweep`]).
    sweeping: Cell<bool>,
}

impl IdleH1 {
    /// Drops every connection that idled past the timeout or that the upstream closed (or
    /// wrote to unasked, which leaves it unusable). Returns how many are left.
    fn sweep(&self, now: Instant) -> usize {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|(_, c, since)| now.duration_since(*since) < self.timeout && idle_alive(c));
        conns.len()
    }

    /// Sweeps every [`SWEEP_EVERY`] (or idle timeout, if shorter) while any connection is
    /// idle, so an upstream's close is noticed (and the socket leaves CLOSE_WAIT) whether or
    /// not traffic comes.
    async fn sweeper(this: Rc<IdleH1>) {
        let every = SWEEP_EVERY.min(this.timeout);
        loop {
            monoio::time::sleep(every).await;
            if this.sweep(Instant::now()) == 0 {
                break;
            }
        }
        this.sweeping.set(false);
    }
}

/// Whether an idle HTTP/1 connection can carry a request: the upstream has neither closed it
/// (a peek sees EOF or an error) nor sent bytes nobody asked for (a peek sees data). One
/// non-blocking `recv(MSG_PEEK)`.
fn idle_alive(c: &UpConn) -> bool {
    let mut byte = [0u8; 1];
    match sys::peek(c.stream().as_raw_fd(), &mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

impl Pools {
    /// Empty pools keeping idle HTTP/1 connections up to `h1_idle_timeout`, at most
    /// `h1_max_idle` of them; per endpoint at most `max_open` HTTP/1 connections open and
    /// `max_dialling` being dialled (0: no bound); the HTTP/1 connections it dials get TCP
    /// keepalive `keepalive`.
    pub fn new(
        h1_idle_timeout: Duration,
        h1_max_idle: usize,
        max_open: u32,
        max_dialling: u32,
        keepalive: Option<KeepaliveConfig>,
    ) -> Pools {
        Pools {
            h1: Rc::new(IdleH1 {
                timeout: h1_idle_timeout,
                max: h1_max_idle,
                conns: RefCell::new(Vec::new()),
                sweeping: Cell::new(false),
            }),
            h2: Rc::new(RefCell::new(Vec::new())),
            h2_limits: RefCell::new(Vec::new()),
            learned: RefCell::new(Vec::new()),
            gates: RefCell::new(Vec::new()),
            bounds: (max_open, max_dialling),
            keepalive,
        }
    }

    /// The gate of endpoint `addr` (created on first use).
    pub fn gate(&self, addr: SocketAddr) -> Rc<Gate> {
        let mut gates = self.gates.borrow_mut();
        if let Some((_, g)) = gates.iter().find(|(a, _)| *a == addr) {
            return g.clone();
        }
        let g = Gate::new(self.bounds.0, self.bounds.1);
        gates.push((addr, g.clone()));
        g
    }

    /// Pools `u`, an upstream connection to `addr` dialled during detection whose client
    /// speaks HTTP/1 (or HTTP/2 to an HTTP/1 upstream), counted against the endpoint's bound.
    /// Returns whether it was pooled (`false`: the pool was full and it was closed);
    /// `Err(u)` back, untouched, when the pool already has an idle connection to `addr` (the
    /// request takes that one, and a second would only idle out) or the endpoint is at its
    /// `max_connections_per_endpoint` (review: ten silent clients opened ten connections to
    /// an endpoint bounded to one); the caller closes it as a spare.
    pub fn adopt_early_h1(
        &self,
        m: &ListenerMetrics,
        addr: SocketAddr,
        u: TcpStream,
    ) -> Result<bool, TcpStream> {
        let gate = self.gate(addr);
        if self.has_idle_h1(addr) || gate.at_bound() {
            return Err(u);
        }
        keepalive(&u, self.keepalive);
        let Some(mut c) = adopt_h1(m, addr, u) else {
            return Ok(false);
        };
        c._slot = Some(gate.count_open());
        Ok(self.put_h1(addr, c))
    }

    /// An HTTP/1 connection for one request to `addr`, and whether it came from the pool.
    /// An idle pooled one if there is one; else, within the endpoint's bounds on connects
    /// and connections (waiting its turn beyond them, and then taking a connection returned
    /// to the pool meanwhile), a new one. A connect that fails is tried on the endpoint
    /// `other()` names, if any; else a timed-out one once more on `addr`. Counted in `m`.
    ///
    /// Returns the endpoint the connection goes to (`addr`, or the other one).
    ///
    /// Errors: the `sidewire-error` reason for the client's 502, with the cause in a debug
    /// log.
    pub async fn h1(
        &self,
        m: &ListenerMetrics,
        h: &Health,
        addr: SocketAddr,
        timeout: Duration,
        other: impl FnOnce() -> Option<SocketAddr>,
    ) -> Result<(SocketAddr, UpConn, bool), &'static str> {
        let first = self.h1_at(m, h, addr, timeout, false).await;
        let Err((reason, kind)) = first else {
            return first.map(|(c, pooled)| (addr, c, pooled)).map_err(|e| e.0);
        };
        match other().filter(|o| *o != addr) {
            Some(o) => {
                m.connect_retried(ConnectRetry::Other);
                debug!(upstream = %addr, other = %o, "upstream connect failed; trying another endpoint");
                let (c, pooled) = self.h1_at(m, h, o, timeout, true).await.map_err(|e| e.0)?;
                Ok((o, c, pooled))
            }
            None if kind == Some(ConnectErrorKind::Timeout) => {
                m.connect_retried(ConnectRetry::Same);
                debug!(upstream = %addr, "upstream connect timed out; trying once more");
                let (c, pooled) = self
                    .h1_at(m, h, addr, timeout, true)
                    .await
                    .map_err(|e| e.0)?;
                Ok((addr, c, pooled))
            }
            None => Err(reason),
        }
    }

    /// One try of [`Pools::h1`] at `addr`: a pooled connection, or a dial within the bounds.
    async fn h1_at(
        &self,
        m: &ListenerMetrics,
        h: &Health,
        addr: SocketAddr,
        timeout: Duration,
        retry: bool,
    ) -> Result<(UpConn, bool), (&'static str, Option<ConnectErrorKind>)> {
        let gate = self.gate(addr);
        let (open, dialling) = match gate.turn(|| self.take_h1(addr)).await {
            Granted::Take(c) => return Ok((c, true)),
            Granted::Dial(open, dialling) => (open, dialling),
        };
        let dialled = connect(addr, timeout).await;
        drop(dialling);
        match dialled {
            Ok(u) => {
                h.connected(addr);
                keepalive(&u, self.keepalive);
                let mut c = adopt_h1(m, addr, u).ok_or(("upstream socket error", None))?;
                c._slot = Some(open);
                Ok((c, false))
            }
            Err(e) => {
                h.failed(addr);
                m.connect_failed(e.kind);
                debug!(upstream = %addr, error = %e, retry, "upstream connect failed");
                Err((crate::metrics::CONNECT_FAILED, Some(e.kind)))
            }
        }
    }

    /// What [`Pools::h1`] gives at once when it need not wait: an idle pooled connection to
    /// `addr`, if there is one and no request waits for its turn at the endpoint. The
    /// request path tries this first, so the usual case (a pooled connection) does not
    /// build the waiting, dialling future, whose state (3.5 KB with its timers) would
    /// otherwise size every request's.
    pub fn h1_now(&self, addr: SocketAddr) -> Option<UpConn> {
        if self.gate(addr).nobody_waits() {
            self.take_h1(addr)
        } else {
            None
        }
    }

    /// Whether the pool holds an idle HTTP/1 connection to `addr` (not checked for liveness:
    /// [`Pools::take_h1`] does that when one is taken).
    pub fn has_idle_h1(&self, addr: SocketAddr) -> bool {
        self.h1.conns.borrow().iter().any(|(a, _, _)| *a == addr)
    }

    /// Whether `addr` is known to speak HTTP: the pool holds an idle HTTP/1 connection to it
    /// (it answered a request whole) or an HTTP/2 connection (pooled or dialling). Such an
    /// endpoint does not speak first, so detection dials it no early connection.
    pub fn speaks_http(&self, addr: SocketAddr) -> bool {
        self.has_idle_h1(addr) || self.h2(addr).is_some()
    }

    /// A pooled idle HTTP/1 connection to `addr` that has not idled past the pool timeout
    /// and that the upstream has not closed (checked with a peek: a closed connection is
    /// never handed to a request).
    pub fn take_h1(&self, addr: SocketAddr) -> Option<UpConn> {
        let mut conns = self.h1.conns.borrow_mut();
        let now = Instant::now();
        let timeout = self.h1.timeout;
        conns.retain(|(_, _, since)| now.duration_since(*since) < timeout);
        while let Some(at) = conns.iter().rposition(|(a, _, _)| *a == addr) {
            let (_, c, _) = conns.swap_remove(at);
            if idle_alive(&c) {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection whose last response was fully read, if the pool has room. While
    /// the pool holds connections, a sweeper task on this core drops those the upstream
    /// closes or that idle past the timeout.
    ///
    /// Returns whether it was pooled (false: the pool is full and `c` was closed).
    pub fn put_h1(&self, addr: SocketAddr, c: UpConn) -> bool {
        debug_assert!(!c.in_exchange, "pooled only once its response has ended");
        let mut conns = self.h1.conns.borrow_mut();
        let pooled = conns.len() < self.h1.max;
        if pooled {
            conns.push((addr, c, Instant::now()));
        }
        drop(conns);
        // A request waiting at the endpoint's bound may take it.
        if pooled {
            if let Some((_, g)) = self.gates.borrow().iter().find(|(a, _)| *a == addr) {
                g.notify();
            }
        }
        if !self.h1.sweeping.replace(true) {
            monoio::spawn(IdleH1::sweeper(self.h1.clone()));
        }
        pooled
    }

    /// A pooled (or still dialling) HTTP/2 connection to `addr` with room for one more stream
    /// ([`H2Slot`]), if any: the first one, so streams fill one connection before the next.
    pub fn h2(&self, addr: SocketAddr) -> Option<H2Slot> {
        let conns = self.h2.borrow();
        let said = conns
            .iter()
            .filter(|(a, _)| *a == addr)
            .find_map(|(_, s)| s.said());
        self.learn_h2_limit(addr, said);
        conns
            .iter()
            .find(|(a, s)| *a == addr && s.has_room())
            .map(|(_, s)| s.clone())
    }

    /// Whether any HTTP/2 connection to `addr` is pooled, full or not.
    pub fn has_h2(&self, addr: SocketAddr) -> bool {
        self.h2.borrow().iter().any(|(a, _)| *a == addr)
    }

    /// Pools `c` as one more HTTP/2 connection to `addr`; returns its slot.
    pub fn put_h2(&self, addr: SocketAddr, c: H2Conn) -> H2Slot {
        let assumed = self
            .h2_limits
            .borrow()
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(ASSUMED_MAX_STREAMS, |(_, n)| *n);
        let slot = H2Slot {
            conn: c,
            streams: Rc::new(Cell::new(0)),
            assumed,
        };
        self.h2.borrow_mut().push((addr, slot.clone()));
        slot
    }

    /// Counts one stream on `slot`, a connection to `addr`, until the returned guard drops.
    pub fn enter_h2(&self, addr: SocketAddr, slot: H2Slot) -> InFlight {
        slot.streams.set(slot.streams.get() + 1);
        InFlight {
            addr,
            slot,
            conns: self.h2.clone(),
        }
    }

    /// Drops the pooled HTTP/2 connection `c` (it failed, or went away); streams open on it
    /// go on. What its upstream said of its concurrency limit is kept for the next ones.
    pub fn forget_h2(&self, c: &H2Conn) {
        let mut conns = self.h2.borrow_mut();
        if let Some((addr, s)) = conns.iter().find(|(_, s)| s.conn.ptr_eq(c)) {
            self.learn_h2_limit(*addr, s.said());
        }
        conns.retain(|(_, s)| !s.conn.ptr_eq(c));
    }

    /// Keeps `said`, the concurrency limit an upstream connection to `addr` said, for the
    /// connections dialled to it next.
    fn learn_h2_limit(&self, addr: SocketAddr, said: Option<usize>) {
        if let Some(n) = said {
            let mut limits = self.h2_limits.borrow_mut();
            limits.retain(|(a, _)| *a != addr);
            limits.push((addr, n));
        }
    }

    /// What `upstream_protocol = "auto"` learned about `addr`: speaks HTTP/2 or not.
    pub fn learned(&self, addr: SocketAddr) -> Option<bool> {
        let learned = self.learned.borrow();
        learned.iter().find(|(a, _)| *a == addr).map(|(_, h2)| *h2)
    }

    /// Records what `addr` speaks.
    pub fn learn(&self, addr: SocketAddr, h2: bool) {
        let mut learned = self.learned.borrow_mut();
        learned.retain(|(a, _)| *a != addr);
        learned.push((addr, h2));
    }
}

/// A new HTTP/1 upstream connection to `addr` in blocking mode (for completion I/O), counted
/// in `m`'s `peer="dst"` series for `addr`, outside the endpoint's bounds (a resend after a
/// stale pooled connection; requests use [`Pools::h1`]). A connect failure is counted in
/// `tcp_connect_errors_total`; a timed-out one is tried once more.
///
/// Errors: the `sidewire-error` reason for the client's 502, with the cause in a debug log.
pub async fn dial_h1(
    m: &ListenerMetrics,
    h: &Health,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<UpConn, &'static str> {
    match connect_retrying(m, h, addr, timeout).await {
        Ok(u) => adopt_h1(m, addr, u).ok_or("upstream socket error"),
        Err(e) => {
            m.connect_failed(e.kind);
            debug!(upstream = %addr, error = %e, "upstream connect failed");
            Err(crate::metrics::CONNECT_FAILED)
        }
    }
}

/// Takes a connected non-blocking stream (one dialled during detection, say) as an HTTP/1
/// upstream connection to `addr`: switched to the driver's mode
/// ([`crate::io::set_driver_mode`]) and counted in `m`'s `peer="dst"` series for `addr`.
/// `None` if the mode switch fails.
pub fn adopt_h1(m: &ListenerMetrics, addr: SocketAddr, u: TcpStream) -> Option<UpConn> {
    crate::io::set_driver_mode(u.as_raw_fd()).ok()?;
    Some(UpConn::new(u, &m.dst_for(addr)))
}

/// An HTTP/2 client handshake on `tcp` (h2c prior knowledge) with the `[http2]` limits, under
/// `timeout`; the connection's driver is spawned on this core and counted in `dst` while it
/// runs.
///
/// Errors: a 502 [`Failure`] naming what failed.
pub async fn handshake_h2(
    addr: SocketAddr,
    tcp: TcpStream,
    c: &Http2Config,
    timeout: Duration,
    dst: &Rc<PeerCounters>,
) -> Result<SendRequest<Bytes>, Failure> {
    let fd = tcp.as_raw_fd();
    let io = tcp
        .into_poll_io()
        .map(|io| Coalesce::new(Counted::new(io, dst.clone()), fd, dst.clone()))
        .map_err(|_| Failure::Status(502, "upstream socket error"))?;
    let errno = io.last_errno();
    let mut b = h2::client::Builder::new();
    b.initial_window_size(c.initial_stream_window)
        .initial_max_send_streams(ASSUMED_MAX_STREAMS)
        .initial_connection_window_size(c.initial_connection_window)
        .max_frame_size(c.max_frame_size)
        .max_header_list_size(c.max_header_list_size)
        .max_send_buffer_size(c.max_send_buffer_bytes)
        .max_local_error_reset_streams(Some(c.max_local_error_reset_streams));
    let (sender, conn) = monoio::time::timeout(timeout, b.handshake::<_, Bytes>(io))
        .await
        .map_err(|_| Failure::Status(502, "upstream HTTP/2 handshake timed out"))?
        .map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: upstream handshake failed");
            Failure::Status(502, "upstream HTTP/2 handshake failed")
        })?;
    let mut open = Opened::new(dst);
    task::spawn(async move {
        if let Err(e) = conn.await {
            debug!(upstream = %addr, error = %e, "http2: upstream connection ended");
            match e.get_io() {
                Some(io) => open.failed_with_io(io, errno.get()),
                None => open.failed(),
            }
        }
    });
    Ok(sender)
}

/// Whether `addr` speaks HTTP/2 prior knowledge: a probe connection sends the client preface
/// and an empty SETTINGS frame; an h2c server answers with its own preface, a SETTINGS frame
/// (RFC 9113 §3.4), an HTTP/1 server with an error response, a close, or nothing within
/// `timeout` (each of those: `false`). `None` when `addr` cannot be reached (nothing learned).
///
/// The probe connection counts in `dst` as every upstream connection does
/// (`tcp_open_total{peer="dst"}`, its bytes, its close: `failure` with the errno when its
/// socket failed).
pub async fn probe_h2(addr: SocketAddr, timeout: Duration, dst: &Rc<PeerCounters>) -> Option<bool> {
    let mut s = connect(addr, timeout).await.ok()?;
    let mut open = Opened::new(dst);
    if let Err(e) = crate::io::set_driver_mode(s.as_raw_fd()) {
        open.failed_with(&e);
        return None;
    }
    let mut probe = H2_PREFACE.to_vec();
    probe.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let sent = probe.len() as u64;
    let counters = open.counters();
    let answer = async {
        let (r, _) = s.write_all(probe).await;
        r?;
        counters.wrote(sent);
        let mut got = Vec::new();
        loop {
            let (r, buf) = s.read(Vec::with_capacity(64)).await;
            let n = r?;
            if n == 0 {
                return Ok(false);
            }
            counters.read(n as u64);
            got.extend_from_slice(&buf[..n]);
            match probe_h2_server_settings(&got) {
                Probe::Yes(()) => return Ok(true),
                Probe::No => return Ok(false),
                Probe::NeedMore(_) => {}
            }
        }
    };
    let answer: Result<io::Result<bool>, _> = monoio::time::timeout(timeout, answer).await;
    Some(match answer {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            open.failed_with(&e);
            false
        }
        // Silence: an HTTP/1 server waiting for the rest of a request it cannot parse.
        Err(_) => false,
    })
}
