//! Per-core metrics: plain counters in `Cell`s and exact bucket histograms ([`hist`]), owned
//! by one worker, never shared. The admin thread asks each worker for a [`CoreSnapshot`],
//! merges them per listener ([`ScrapeCache`], which keeps each worker's last answer so a
//! worker that misses a scrape never makes a counter go backwards) and renders Prometheus
//! text ([`prom`]).
//!
//! Hot-path cost is an add on a core-local integer: no atomics or locks. Labels are resolved
//! where a connection or request starts (a small hash lookup per connection, per upstream
//! connection and per HTTP request; HTTP/1 connections cache the last request's series), and
//! byte counters are bumped per `splice` chunk (up to 256 KiB), so long-lived connections
//! show progress while they run, unlike Linkerd's update-on-close.
//!
//! Series carry Linkerd's labels (see `prom`): TCP series per target (`target_addr`, the
//! connection's destination for `peer="src"` and the upstream endpoint for `peer="dst"`), HTTP
//! series per route, protocol, target and, on outbound listeners, `authority`. Every label set
//! is bounded per listener and worker: [`MAX_TARGETS`] targets, [`MAX_AUTHORITIES`]
//! authorities and [`MAX_HTTP_SERIES`] HTTP series; past a cap the value is `other` and
//! `sidewire_metrics_overflow_total{label}` counts what was folded.

pub mod errno;
pub mod hist;
pub mod http;
pub mod process;
pub mod prom;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use self::hist::{bump, BucketCounts, Histogram, DETECT_S, DURATION_S};
pub use self::http::{
    ErrorLabel, HttpMetrics, HttpValues, Protocol, CONNECT_FAILED, NO_GRPC_STATUS,
};
use crate::config::{Direction, ListenerConfig, MetricsConfig};
use crate::detect::{DetectReason, DetectResult, LinkerdDetect};
use crate::error::{ConnectErrorKind, Refusal};

/// Distinct targets (`target_addr`) per listener and worker; then `other`.
pub const MAX_TARGETS: usize = 1024;
/// Distinct `authority` values per outbound listener and worker; then `other`.
pub const MAX_AUTHORITIES: usize = 256;
/// Longest `authority` kept (a DNS name and a port); a longer one counts as `other`.
pub const MAX_AUTHORITY_LEN: usize = 260;
/// HTTP series (route × protocol × target × authority) per listener and worker; past it, new
/// combinations share their route's `target_addr="other",authority="other"` series.
pub const MAX_HTTP_SERIES: usize = 4096;

/// How a connection ended: `tcp_close_total`'s `classification` and `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Cleanly: `classification="success",errno=""`.
    Clean,
    /// By an error with no OS error number on this socket (the other side failed, a timeout,
    /// a protocol error, an upstream that could not be reached): `errno=""`.
    Failed,
    /// By an OS error on this socket (`ECONNRESET`, `EPIPE`, …).
    Errno(u16),
}

impl Close {
    /// The close after `e`, an error on this connection's socket.
    pub fn of_error(e: &io::Error) -> Close {
        match e.raw_os_error() {
            Some(n) if n > 0 && errno::name(n as u16).is_some() => Close::Errno(n as u16),
            _ => Close::Failed,
        }
    }

    /// The close after `e`, an I/O error reported by a layer that may have dropped its OS
    /// error number (`h2`): then by `last`, the number the socket itself last returned, if any.
    pub fn of_io(e: &io::Error, last: Option<i32>) -> Close {
        match (Close::of_error(e), last) {
            (Close::Failed, Some(n)) => Close::of_error(&io::Error::from_raw_os_error(n)),
            (c, _) => c,
        }
    }

    /// `Clean` or `Failed`.
    pub fn ok(ok: bool) -> Close {
        if ok {
            Close::Clean
        } else {
            Close::Failed
        }
    }

    /// Whether it ended cleanly.
    pub fn is_ok(self) -> bool {
        self == Close::Clean
    }

    /// Keeps the more specific of two outcomes (an errno over a bare failure over clean).
    pub fn worst(self, other: Close) -> Close {
        match (self, other) {
            (Close::Errno(_), _) => self,
            (_, Close::Errno(_)) => other,
            (Close::Failed, _) | (_, Close::Failed) => Close::Failed,
            _ => Close::Clean,
        }
    }
}

/// Counters for one side of proxied connections to one target (`peer="src"`: clients,
/// `peer="dst"`: upstreams).
#[derive(Debug, Default)]
pub struct PeerCounters {
    open_total: Cell<u64>,
    open: Cell<u64>,
    close_ok: Cell<u64>,
    close_failed: Cell<u64>,
    /// Closes by errno: few distinct values, scanned linearly (bounded by [`errno::MAX`]).
    close_errno: RefCell<Vec<(u16, u64)>>,
    read_bytes: Cell<u64>,
    write_bytes: Cell<u64>,
}

impl PeerCounters {
    /// A connection on this side opened.
    pub fn opened(&self) {
        bump(&self.open_total, 1);
        bump(&self.open, 1);
    }

    /// A connection on this side closed.
    pub fn closed(&self, how: Close) {
        self.open.set(self.open.get().saturating_sub(1));
        match how {
            Close::Clean => bump(&self.close_ok, 1),
            Close::Failed => bump(&self.close_failed, 1),
            Close::Errno(n) => {
                let mut v = self.close_errno.borrow_mut();
                match v.iter_mut().find(|(e, _)| *e == n) {
                    Some((_, c)) => *c += 1,
                    None => v.push((n, 1)),
                }
            }
        }
    }

    /// Bytes read from this peer.
    pub fn read(&self, n: u64) {
        bump(&self.read_bytes, n);
    }

    /// Bytes written to this peer.
    pub fn wrote(&self, n: u64) {
        bump(&self.write_bytes, n);
    }

    /// A copy of the values.
    pub fn snapshot(&self) -> PeerSnapshot {
        PeerSnapshot {
            open_total: self.open_total.get(),
            open: self.open.get(),
            close_ok: self.close_ok.get(),
            close_failed: self.close_failed.get(),
            close_errno: self.close_errno.borrow().clone(),
            read_bytes: self.read_bytes.get(),
            write_bytes: self.write_bytes.get(),
        }
    }
}

/// One open connection on a side, counted from its creation to its drop: `open` goes up now
/// and down on drop, closing as clean unless [`Opened::failed`] or [`Opened::failed_with`]
/// was called. The one way every stage counts an upstream connection (opaque upstreams,
/// pooled HTTP/1 upstreams, HTTP/2 upstream drivers).
#[derive(Debug)]
pub struct Opened {
    counters: Rc<PeerCounters>,
    close: Close,
}

impl Opened {
    /// Counts a connection as open in `counters` until dropped.
    pub fn new(counters: &Rc<PeerCounters>) -> Opened {
        counters.opened();
        Opened {
            counters: counters.clone(),
            close: Close::Clean,
        }
    }

    /// The counters of this connection's side.
    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Marks the connection as ended by an error (counted on drop).
    pub fn failed(&mut self) {
        self.close = self.close.worst(Close::Failed);
    }

    /// Marks the connection as ended by `e`, an error on its socket (its errno is counted).
    pub fn failed_with(&mut self, e: &io::Error) {
        self.close = self.close.worst(Close::of_error(e));
    }

    /// [`Opened::failed_with`] for an error from a layer that may have dropped its errno
    /// (see [`Close::of_io`]; `last`: the socket's own last one).
    pub fn failed_with_io(&mut self, e: &io::Error, last: Option<i32>) {
        self.close = self.close.worst(Close::of_io(e, last));
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.counters.closed(self.close);
    }
}

/// A target's index in its listener's table: 0 is `other` (the table was full).
pub type TargetId = u16;
/// An authority's index: 0 is none (`authority=""`, and every request of an inbound
/// listener), 1 is `other`.
pub type AuthorityId = u16;

/// Which values `sidewire_metrics_overflow_total` counts as folded into `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// A connection or request whose target did not fit [`MAX_TARGETS`].
    TargetAddr,
    /// A request whose authority did not fit [`MAX_AUTHORITIES`] (or was too long).
    Authority,
    /// A request whose label combination did not fit [`MAX_HTTP_SERIES`].
    Series,
}

impl Overflow {
    /// Every kind, in label order.
    pub const ALL: [Overflow; 3] = [Overflow::TargetAddr, Overflow::Authority, Overflow::Series];

    /// The `label` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::TargetAddr => "target_addr",
            Overflow::Authority => "authority",
            Overflow::Series => "series",
        }
    }
}

/// The labels of one HTTP series after the listener's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HttpKey {
    route: u16,
    protocol: Protocol,
    target: TargetId,
    authority: AuthorityId,
}

/// An interned label table: values to ids, capped.
#[derive(Debug)]
struct Interner<K> {
    ids: HashMap<K, u16>,
    values: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            values: Vec::new(),
        }
    }
}

/// All metrics of one listener on one core.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// The listener's name: with `direction`, what identifies these series across reloads.
    name: String,
    direction: Direction,
    /// `authority` is a label of this listener's HTTP series (outbound only, as Linkerd).
    authority_label: bool,
    grpc_failures: u32,
    /// Route names by route id: `default`, then the listener's routes; a reload that adds a
    /// route appends it (ids never change while the series live).
    routes: RefCell<Vec<String>>,
    targets: RefCell<Interner<SocketAddr>>,
    authorities: RefCell<Interner<Box<str>>>,
    /// TCP counters by target id, per peer.
    src: RefCell<Vec<Option<Rc<PeerCounters>>>>,
    dst: RefCell<Vec<Option<Rc<PeerCounters>>>>,
    http: RefCell<HashMap<HttpKey, Rc<HttpMetrics>>>,
    overflow: [Cell<u64>; 3],
    connect_errors: [Cell<u64>; 4],
    duration: Histogram,
    /// Verdicts by `[reason][result]`.
    detect: [[Cell<u64>; 8]; 5],
    /// Linkerd's detection results, by [`LinkerdDetect`].
    linkerd_detect: [Cell<u64>; 5],
    detect_latency: Histogram,
    refused: [Cell<u64>; 3],
    tls_sni: [Cell<u64>; 2],
    early_dials: Cell<u64>,
    early_unused: Cell<u64>,
    h2_errors: Cell<u64>,
    /// Opaque streams cut by a timeout, indexed by [`StreamTimeout`].
    stream_timeouts: [Cell<u64>; 2],
    /// Failed accepts, indexed by [`AcceptErrno`].
    accept_errors: [Cell<u64>; 5],
    /// Upstream connects tried again, by [`ConnectRetry`].
    connect_retries: [Cell<u64>; 2],
    /// Upstream endpoints ejected by passive health.
    endpoint_ejections: Cell<u64>,
    /// HTTP/1 body bytes moved with `splice(2)`.
    spliced_body_bytes: Cell<u64>,
}

impl Default for ListenerMetrics {
    /// An outbound listener with no routes and Linkerd's gRPC failure codes.
    fn default() -> Self {
        ListenerMetrics::with(
            Direction::Outbound,
            Vec::new(),
            MetricsConfig::default().grpc_failures,
        )
    }
}

/// How a failed upstream connect was tried again: the `endpoint` label of
/// `sidewire_connect_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRetry {
    /// A timed-out connect dialled once more to the same endpoint (the set has no other).
    Same = 0,
    /// A failed connect retried on another endpoint of the set.
    Other = 1,
}

impl ConnectRetry {
    /// Every value, in index order.
    pub const ALL: [ConnectRetry; 2] = [ConnectRetry::Same, ConnectRetry::Other];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectRetry::Same => "same",
            ConnectRetry::Other => "other",
        }
    }
}

impl ListenerMetrics {
    fn with(direction: Direction, routes: Vec<String>, grpc_failures: u32) -> ListenerMetrics {
        ListenerMetrics {
            name: String::new(),
            direction,
            authority_label: direction == Direction::Outbound,
            grpc_failures,
            routes: RefCell::new(
                std::iter::once("default".to_string())
                    .chain(routes)
                    .collect(),
            ),
            targets: RefCell::default(),
            authorities: RefCell::default(),
            src: RefCell::new(vec![None]),
            dst: RefCell::new(vec![None]),
            http: RefCell::default(),
            overflow: Default::default(),
            connect_errors: Default::default(),
            duration: Histogram::new(&DURATION_S),
            detect: Default::default(),
            linkerd_detect: Default::default(),
            detect_latency: Histogram::new(&DETECT_S),
            refused: Default::default(),
            tls_sni: Default::default(),
            early_dials: Cell::new(0),
            early_unused: Cell::new(0),
            h2_errors: Cell::new(0),
            stream_timeouts: Default::default(),
            accept_errors: Default::default(),
            connect_retries: Default::default(),
            endpoint_ejections: Cell::new(0),
            spliced_body_bytes: Cell::new(0),
        }
    }

    /// The metrics of listener `l`: its configured targets (its own address, its endpoints and
    /// its routes') have series from the start.
    pub fn new(l: &ListenerConfig, m: &MetricsConfig) -> ListenerMetrics {
        let mut metrics = ListenerMetrics::with(
            l.direction,
            l.routes.iter().map(|r| r.name.clone()).collect(),
            m.grpc_failures,
        );
        metrics.name = l.name.clone();
        metrics.adopt(l);
        metrics
    }

    /// The listener's name and direction: the `listener` and `direction` labels.
    pub fn identity(&self) -> (&str, Direction) {
        (&self.name, self.direction)
    }

    /// Takes over the series of a listener reconfigured by a reload (same name and
    /// direction): `l`'s targets get series, its routes ids. Returns the id of each of `l`'s
    /// route indexes (0 = `default`, i + 1 = route i) for [`ListenerMetrics::http`]: a route
    /// keeps its id (and its counts) by name; a new route gets the next one.
    pub fn adopt(&self, l: &ListenerConfig) -> Vec<usize> {
        if !l.original_dst {
            self.src_for(l.listen);
        }
        for ep in l
            .upstream
            .iter()
            .chain(l.routes.iter().flat_map(|r| &r.upstream))
        {
            self.dst_for(*ep);
        }
        let mut routes = self.routes.borrow_mut();
        std::iter::once("default")
            .chain(l.routes.iter().map(|r| r.name.as_str()))
            .map(|name| match routes.iter().position(|r| r == name) {
                Some(i) => i,
                None => {
                    routes.push(name.to_string());
                    routes.len() - 1
                }
            })
            .collect()
    }

    /// Whether nothing can count into these series any more: no connection, stream or
    /// pooled upstream holds one of its counters. A retired listener's series are dropped
    /// once this holds (its counts are final).
    pub fn is_quiescent(&self) -> bool {
        let held = |t: &RefCell<Vec<Option<Rc<PeerCounters>>>>| {
            t.borrow().iter().flatten().any(|c| Rc::strong_count(c) > 1)
        };
        !held(&self.src)
            && !held(&self.dst)
            && self
                .http
                .borrow()
                .values()
                .all(|m| Rc::strong_count(m) == 1)
    }

    fn count_overflow(&self, o: Overflow) {
        bump(&self.overflow[o as usize], 1);
    }

    /// The id of target `addr` (interned on first use; past [`MAX_TARGETS`], `other`).
    pub fn target(&self, addr: SocketAddr) -> TargetId {
        let mut t = self.targets.borrow_mut();
        if let Some(&id) = t.ids.get(&addr) {
            return id;
        }
        if t.values.len() >= MAX_TARGETS {
            drop(t);
            self.count_overflow(Overflow::TargetAddr);
            return 0;
        }
        t.values.push(addr);
        let id = t.values.len() as u16;
        t.ids.insert(addr, id);
        id
    }

    fn peer_for(
        &self,
        table: &RefCell<Vec<Option<Rc<PeerCounters>>>>,
        addr: SocketAddr,
    ) -> Rc<PeerCounters> {
        let id = usize::from(self.target(addr));
        let mut v = table.borrow_mut();
        if v.len() <= id {
            v.resize(id + 1, None);
        }
        v[id].get_or_insert_with(Rc::default).clone()
    }

    /// The client-side counters of connections to `addr` (the original destination, or the
    /// listener's own address).
    pub fn src_for(&self, addr: SocketAddr) -> Rc<PeerCounters> {
        self.peer_for(&self.src, addr)
    }

    /// The upstream-side counters of connections to endpoint `addr`.
    pub fn dst_for(&self, addr: SocketAddr) -> Rc<PeerCounters> {
        self.peer_for(&self.dst, addr)
    }

    /// The id of a request's authority: 0 (no label) on inbound listeners or without one,
    /// else interned on first use (past [`MAX_AUTHORITIES`] or [`MAX_AUTHORITY_LEN`],
    /// `other`). Lower-cased, as hosts compare.
    pub fn authority(&self, authority: Option<&str>) -> AuthorityId {
        let a = match authority {
            Some(a) if self.authority_label && !a.is_empty() => a,
            _ => return 0,
        };
        let mut t = self.authorities.borrow_mut();
        if let Some(&id) = t.ids.get(a) {
            return id;
        }
        let lower = a.to_ascii_lowercase();
        if let Some(&id) = t.ids.get(lower.as_str()) {
            return id;
        }
        if t.values.len() >= MAX_AUTHORITIES || a.len() > MAX_AUTHORITY_LEN {
            drop(t);
            self.count_overflow(Overflow::Authority);
            return 1;
        }
        let key: Box<str> = lower.into();
        t.values.push(key.clone());
        let id = t.values.len() as u16 + 1;
        t.ids.insert(key, id);
        id
    }

    /// The HTTP series of route index `route` (0 = none matched), `protocol`, `target` and
    /// `authority` (created on first use; past [`MAX_HTTP_SERIES`], the route's `other`).
    pub fn http(
        &self,
        route: usize,
        protocol: Protocol,
        target: TargetId,
        authority: AuthorityId,
    ) -> Rc<HttpMetrics> {
        let mut key = HttpKey {
            route: route.min(self.routes.borrow().len() - 1) as u16,
            protocol,
            target,
            authority,
        };
        let mut map = self.http.borrow_mut();
        if let Some(m) = map.get(&key) {
            return m.clone();
        }
        if map.len() >= MAX_HTTP_SERIES {
            self.count_overflow(Overflow::Series);
            key.target = 0;
            key.authority = if self.authority_label { 1 } else { 0 };
            if let Some(m) = map.get(&key) {
                return m.clone();
            }
        }
        map.entry(key)
            .or_insert_with(|| Rc::new(HttpMetrics::new(self.grpc_failures)))
            .clone()
    }

    /// An upstream connect failed.
    pub fn connect_failed(&self, kind: ConnectErrorKind) {
        bump(&self.connect_errors[kind as usize], 1);
    }

    /// A failed upstream connect is tried again (`sidewire_connect_retries_total`).
    pub fn connect_retried(&self, how: ConnectRetry) {
        bump(&self.connect_retries[how as usize], 1);
    }

    /// Passive health ejected an endpoint (`sidewire_endpoint_ejections_total`).
    pub fn endpoint_ejected(&self) {
        bump(&self.endpoint_ejections, 1);
    }

    /// `n` bytes of an HTTP/1 body went socket to socket with `splice(2)`
    /// (`sidewire_http1_spliced_bytes_total`).
    pub fn body_spliced(&self, n: u64) {
        bump(&self.spliced_body_bytes, n);
    }

    /// A connection was classified, for `reason` (`took`: accept → verdict, when detection
    /// ran).
    pub fn detected(&self, result: DetectResult, reason: DetectReason, took: Option<Duration>) {
        bump(&self.detect[reason as usize][result as usize], 1);
        if reason == DetectReason::Detected {
            bump(&self.linkerd_detect[LinkerdDetect::of(result) as usize], 1);
        }
        if let Some(d) = took {
            self.detect_latency.record(d);
        }
    }

    /// Detection ended without a verdict after `took`: the client connection failed
    /// (`Error`), or the deadline passed with a failed early dial (`ReadTimeout`). Counted in
    /// Linkerd's results and the detection durations, not in `tcp_detect_total`.
    pub fn detect_ended(&self, result: LinkerdDetect, took: Duration) {
        bump(&self.linkerd_detect[result as usize], 1);
        self.detect_latency.record(took);
    }

    /// A connection was refused (original destination, or no endpoint).
    pub fn refused(&self, why: Refusal) {
        bump(&self.refused[why as usize], 1);
    }

    /// Detection dialled the upstream while the client was silent (server-first support).
    pub fn early_dial(&self) {
        bump(&self.early_dials, 1);
    }

    /// A connection dialled during detection was closed unused (the client left, or spoke a
    /// protocol whose upstream connections come from elsewhere).
    pub fn early_dial_unused(&self) {
        bump(&self.early_unused, 1);
    }

    /// An HTTP/2 connection failed on a protocol error or a broken limit (h2 sent GOAWAY).
    pub fn h2_error(&self) {
        bump(&self.h2_errors, 1);
    }

    /// An opaque stream was cut by its idle or half-close timeout.
    pub fn stream_timeout(&self, which: StreamTimeout) {
        bump(&self.stream_timeouts[which as usize], 1);
    }

    /// An `accept` on this listener failed with `e`.
    pub fn accept_failed(&self, e: &io::Error) {
        bump(&self.accept_errors[AcceptErrno::of(e) as usize], 1);
    }

    /// A TLS ClientHello was seen, with or without SNI.
    pub fn tls_hello(&self, has_sni: bool) {
        bump(&self.tls_sni[usize::from(!has_sni)], 1);
    }

    /// A client connection ended after `d`.
    pub fn record_duration(&self, d: Duration) {
        self.duration.record(d);
    }

    fn target_label(&self, id: TargetId) -> String {
        match id {
            0 => OTHER.to_string(),
            id => self.targets.borrow().values[usize::from(id) - 1].to_string(),
        }
    }

    fn authority_label(&self, id: AuthorityId) -> Option<String> {
        if !self.authority_label {
            return None;
        }
        Some(match id {
            0 => String::new(),
            1 => OTHER.to_string(),
            id => self.authorities.borrow().values[usize::from(id) - 2].to_string(),
        })
    }

    /// A copy of the current values, sent to the admin thread.
    pub fn snapshot(&self) -> ListenerSnapshot {
        let mut tcp = Vec::new();
        for (peer, table) in [(Peer::Src, &self.src), (Peer::Dst, &self.dst)] {
            for (id, c) in table.borrow().iter().enumerate() {
                if let Some(c) = c {
                    tcp.push(TcpSeries {
                        peer,
                        target: self.target_label(id as TargetId),
                        values: c.snapshot(),
                    });
                }
            }
        }
        let routes = self.routes.borrow();
        let http = self
            .http
            .borrow()
            .iter()
            .map(|(k, m)| HttpSeries {
                route: routes[usize::from(k.route)].clone(),
                protocol: k.protocol,
                target: self.target_label(k.target),
                authority: self.authority_label(k.authority),
                values: m.snapshot(),
            })
            .collect();
        ListenerSnapshot {
            listener: self.name.clone(),
            direction: self.direction,
            tcp,
            http,
            overflow: std::array::from_fn(|i| self.overflow[i].get()),
            connect_errors: std::array::from_fn(|i| self.connect_errors[i].get()),
            duration: self.duration.snapshot(),
            detect: std::array::from_fn(|r| std::array::from_fn(|i| self.detect[r][i].get())),
            linkerd_detect: std::array::from_fn(|i| self.linkerd_detect[i].get()),
            detect_latency: self.detect_latency.snapshot(),
            refused: std::array::from_fn(|i| self.refused[i].get()),
            tls_sni: std::array::from_fn(|i| self.tls_sni[i].get()),
            early_dials: self.early_dials.get(),
            early_unused: self.early_unused.get(),
            h2_errors: self.h2_errors.get(),
            connect_retries: std::array::from_fn(|i| self.connect_retries[i].get()),
            endpoint_ejections: self.endpoint_ejections.get(),
            spliced_body_bytes: self.spliced_body_bytes.get(),
            stream_timeouts: std::array::from_fn(|i| self.stream_timeouts[i].get()),
            accept_errors: std::array::from_fn(|i| self.accept_errors[i].get()),
        }
    }
}

/// Which timeout cut an opaque stream: `tcp_stream_timeouts_total`'s `timeout` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTimeout {
    /// `idle_timeout_ms`: no byte either way while both directions were open.
    Idle,
    /// `half_close_timeout_ms`: no byte after one side sent FIN.
    HalfClose,
}

impl StreamTimeout {
    /// Every value, in index order.
    pub const ALL: [StreamTimeout; 2] = [StreamTimeout::Idle, StreamTimeout::HalfClose];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamTimeout::Idle => "idle",
            StreamTimeout::HalfClose => "half_close",
        }
    }
}

/// Why an `accept` failed: `tcp_accept_errors_total`'s `errno` label. Out of descriptors
/// (`EMFILE` per process, `ENFILE` system-wide) or kernel memory (`ENOBUFS`, `ENOMEM`), the
/// errors a loaded proxy meets; anything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptErrno {
    /// The process is at its descriptor limit.
    Emfile,
    /// The system is at its descriptor limit.
    Enfile,
    /// No socket buffer memory.
    Enobufs,
    /// No kernel memory.
    Enomem,
    /// Any other error.
    Other,
}

impl AcceptErrno {
    /// Every value, in index order.
    pub const ALL: [AcceptErrno; 5] = [
        AcceptErrno::Emfile,
        AcceptErrno::Enfile,
        AcceptErrno::Enobufs,
        AcceptErrno::Enomem,
        AcceptErrno::Other,
    ];

    /// The class of `e`.
    pub fn of(e: &io::Error) -> AcceptErrno {
        match e.raw_os_error() {
            Some(libc::EMFILE) => AcceptErrno::Emfile,
            Some(libc::ENFILE) => AcceptErrno::Enfile,
            Some(libc::ENOBUFS) => AcceptErrno::Enobufs,
            Some(libc::ENOMEM) => AcceptErrno::Enomem,
            _ => AcceptErrno::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AcceptErrno::Emfile => "EMFILE",
            AcceptErrno::Enfile => "ENFILE",
            AcceptErrno::Enobufs => "ENOBUFS",
            AcceptErrno::Enomem => "ENOMEM",
            AcceptErrno::Other => "other",
        }
    }
}

/// The label value of a target or authority that did not fit its table.
pub const OTHER: &str = "other";

/// The `peer` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// The client side.
    Src,
    /// The upstream side.
    Dst,
}

impl Peer {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Src => "src",
            Peer::Dst => "dst",
        }
    }
}

/// Plain values of [`PeerCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Connections opened.
    pub open_total: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed cleanly.
    pub close_ok: u64,
    /// Connections closed by an error without an errno.
    pub close_failed: u64,
    /// Connections closed by an error, per errno.
    pub close_errno: Vec<(u16, u64)>,
    /// Bytes read from the peer.
    pub read_bytes: u64,
    /// Bytes written to the peer.
    pub write_bytes: u64,
}

impl PeerSnapshot {
    fn merge(&mut self, o: &PeerSnapshot) {
        self.open_total = self.open_total.wrapping_add(o.open_total);
        self.open = self.open.wrapping_add(o.open);
        self.close_ok = self.close_ok.wrapping_add(o.close_ok);
        self.close_failed = self.close_failed.wrapping_add(o.close_failed);
        for &(e, n) in &o.close_errno {
            match self.close_errno.iter_mut().find(|(m, _)| *m == e) {
                Some((_, m)) => *m = m.wrapping_add(n),
                None => self.close_errno.push((e, n)),
            }
        }
        self.close_errno.sort_unstable();
        self.read_bytes = self.read_bytes.wrapping_add(o.read_bytes);
        self.write_bytes = self.write_bytes.wrapping_add(o.write_bytes);
    }
}

/// One TCP series: a peer side and a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSeries {
    /// `peer`.
    pub peer: Peer,
    /// `target_addr` (`ip:port`, or [`OTHER`]).
    pub target: String,
    /// The values.
    pub values: PeerSnapshot,
}

/// One HTTP series: its labels after the listener's, and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSeries {
    /// `route`.
    pub route: String,
    /// `protocol`.
    pub protocol: Protocol,
    /// `target_addr` (`ip:port`, or [`OTHER`]).
    pub target: String,
    /// `authority` (outbound listeners only; `""` for none).
    pub authority: Option<String>,
    /// The values.
    pub values: HttpValues,
}

/// Plain values of [`ListenerMetrics`], mergeable across cores.
#[derive(Debug, Clone, Default)]
pub struct ListenerSnapshot {
    /// The listener's name (the `listener` label).
    pub listener: String,
    /// Its direction (the `direction` label).
    pub direction: Direction,
    /// TCP series by peer and target.
    pub tcp: Vec<TcpSeries>,
    /// HTTP series.
    pub http: Vec<HttpSeries>,
    /// Values folded into `other`, indexed by [`Overflow`].
    pub overflow: [u64; 3],
    /// Upstream connect failures, indexed by [`ConnectErrorKind`].
    pub connect_errors: [u64; 4],
    /// Client connection durations.
    pub duration: BucketCounts,
    /// Detection results, indexed by `[`[`DetectReason`]`][`[`DetectResult`]`]`.
    pub detect: [[u64; 8]; 5],
    /// Linkerd's detection results, indexed by [`LinkerdDetect`].
    pub linkerd_detect: [u64; 5],
    /// Accept → end of detection, for connections that ran detection.
    pub detect_latency: BucketCounts,
    /// Refused original-destination connections, indexed by [`Refusal`].
    pub refused: [u64; 3],
    /// TLS ClientHellos with SNI `[0]` and without `[1]`.
    pub tls_sni: [u64; 2],
    /// Upstream dials made during detection because the client was silent.
    pub early_dials: u64,
    /// Of those, connections closed unused.
    pub early_unused: u64,
    /// HTTP/2 connections closed on a protocol error.
    pub h2_errors: u64,
    /// Opaque streams cut by a timeout, indexed by [`StreamTimeout`].
    pub stream_timeouts: [u64; 2],
    /// Failed accepts, indexed by [`AcceptErrno`].
    pub accept_errors: [u64; 5],
    /// Upstream connects tried again, indexed by [`ConnectRetry`].
    pub connect_retries: [u64; 2],
    /// Upstream endpoints ejected by passive health.
    pub endpoint_ejections: u64,
    /// HTTP/1 body bytes moved with `splice(2)`.
    pub spliced_body_bytes: u64,
}

fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(*y);
    }
}

impl ListenerSnapshot {
    /// Adds another core's values into this one. Series are matched by their labels (each
    /// core interns targets and authorities in its own order).
    pub fn merge(&mut self, o: &ListenerSnapshot) {
        let mut tcp: HashMap<(Peer, String), usize> = self
            .tcp
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.peer, t.target.clone()), i))
            .collect();
        for t in &o.tcp {
            match tcp.get(&(t.peer, t.target.clone())) {
                Some(&i) => self.tcp[i].values.merge(&t.values),
                None => {
                    tcp.insert((t.peer, t.target.clone()), self.tcp.len());
                    self.tcp.push(t.clone());
                }
            }
        }
        type Key = (String, Protocol, String, Option<String>);
        let key = |h: &HttpSeries| -> Key {
            (
                h.route.clone(),
                h.protocol,
                h.target.clone(),
                h.authority.clone(),
            )
        };
        let mut http: HashMap<Key, usize> = self
            .http
            .iter()
            .enumerate()
            .map(|(i, h)| (key(h), i))
            .collect();
        for h in &o.http {
            let k = key(h);
            match http.get(&k) {
                Some(&i) => self.http[i].values.merge(&h.values),
                None => {
                    http.insert(k, self.http.len());
                    self.http.push(h.clone());
                }
            }
        }
        add(&mut self.overflow, &o.overflow);
        add(&mut self.connect_errors, &o.connect_errors);
        self.duration.merge(&o.duration);
        for (a, b) in self.detect.iter_mut().zip(&o.detect) {
            add(a, b);
        }
        add(&mut self.linkerd_detect, &o.linkerd_detect);
        self.detect_latency.merge(&o.detect_latency);
        add(&mut self.refused, &o.refused);
        add(&mut self.tls_sni, &o.tls_sni);
        self.early_dials = self.early_dials.wrapping_add(o.early_dials);
        self.early_unused = self.early_unused.wrapping_add(o.early_unused);
        self.h2_errors = self.h2_errors.wrapping_add(o.h2_errors);
        add(&mut self.stream_timeouts, &o.stream_timeouts);
        add(&mut self.accept_errors, &o.accept_errors);
        add(&mut self.connect_retries, &o.connect_retries);
        self.endpoint_ejections = self.endpoint_ejections.wrapping_add(o.endpoint_ejections);
        self.spliced_body_bytes = self.spliced_body_bytes.wrapping_add(o.spliced_body_bytes);
    }

    /// Sorts the series by their labels, so the rendered text is stable scrape to scrape.
    pub fn sort(&mut self) {
        self.tcp
            .sort_by(|a, b| (a.peer, &a.target).cmp(&(b.peer, &b.target)));
        self.http.sort_by(|a, b| {
            (&a.route, a.protocol, &a.target, &a.authority).cmp(&(
                &b.route,
                b.protocol,
                &b.target,
                &b.authority,
            ))
        });
    }
}

/// Everything one core reports: one snapshot per listener, in config order, then listeners a
/// reload removed whose connections are still open.
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    /// Per-listener values.
    pub listeners: Vec<ListenerSnapshot>,
}

/// The admin side's memory of each worker's last snapshot: a worker that misses a scrape's
/// deadline (busy, stuck, or gone) contributes what it last reported, never nothing, so the
/// merged counters never go backwards (Prometheus would read a drop as a counter reset).
#[derive(Debug, Default)]
pub struct ScrapeCache {
    last: Mutex<Vec<Option<CoreSnapshot>>>,
}

impl ScrapeCache {
    /// Merges one scrape's answers, one per worker in worker order (`None`: no answer in
    /// time), into one snapshot per listener (by name and direction, in the order the workers
    /// list them), remembering each answer for next time.
    pub fn merge(&self, answers: Vec<Option<CoreSnapshot>>) -> Vec<ListenerSnapshot> {
        // A poisoned lock only means a scrape panicked midway: the values are still whole.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() < answers.len() {
            last.resize(answers.len(), None);
        }
        let mut merged: Vec<ListenerSnapshot> = Vec::new();
        for (slot, answer) in last.iter_mut().zip(answers) {
            if let Some(a) = answer {
                *slot = Some(a);
            }
            if let Some(core) = slot {
                for l in &core.listeners {
                    match merged
                        .iter_mut()
                        .find(|m| m.listener == l.listener && m.direction == l.direction)
                    {
                        Some(m) => m.merge(l),
                        None => merged.push(l.clone()),
                    }
                }
            }
        }
        for m in &mut merged {
            m.sort();
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp<'a>(s: &'a ListenerSnapshot, peer: Peer, target: &str) -> &'a PeerSnapshot {
        &s.tcp
            .iter()
            .find(|t| t.peer == peer && t.target == target)
            .unwrap_or_else(|| panic!("no {peer:?} {target}"))
            .values
    }

    #[test]
    fn counters_snapshot_and_merge_by_target() {
        let a = ListenerMetrics::default();
        let src = a.src_for(addr("10.0.0.1:80"));
        src.opened();
        src.read(10);
        src.closed(Close::Clean);
        let mut up = Opened::new(&a.dst_for(addr("10.0.0.9:8080")));
        up.failed_with(&io::Error::from_raw_os_error(libc::ECONNRESET));
        drop(up);
        a.connect_failed(ConnectErrorKind::Timeout);
        a.record_duration(Duration::from_millis(5));
        let b = ListenerMetrics::default();
        // Another core interns another target first: merged by label, not by id.
        b.src_for(addr("10.0.0.2:80")).opened();
        let src_b = b.src_for(addr("10.0.0.1:80"));
        src_b.opened();
        src_b.read(5);
        src_b.closed(Close::Failed);
        b.record_duration(Duration::from_secs(2));

        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        let s = tcp(&m, Peer::Src, "10.0.0.1:80");
        assert_eq!(
            (s.open_total, s.open, s.close_ok, s.close_failed),
            (2, 0, 1, 1)
        );
        assert_eq!(s.read_bytes, 15);
        assert_eq!(tcp(&m, Peer::Src, "10.0.0.2:80").open, 1);
        let d = tcp(&m, Peer::Dst, "10.0.0.9:8080");
        assert_eq!(d.close_errno, [(libc::ECONNRESET as u16, 1)]);
        assert_eq!(m.connect_errors[ConnectErrorKind::Timeout as usize], 1);
        assert_eq!(m.duration.len(), 2);
        assert_eq!(m.duration.cumulative(1), 1, "5 ms is in le=0.005");
    }

    #[test]
    fn targets_authorities_and_series_are_capped() {
        let m = ListenerMetrics::default();
        for i in 0..MAX_TARGETS as u16 + 3 {
            m.src_for(SocketAddr::from(([198, 18, 1, 1], 1000 + i)))
                .opened();
        }
        let s = m.snapshot();
        assert_eq!(tcp(&s, Peer::Src, OTHER).open_total, 3);
        assert_eq!(s.overflow[Overflow::TargetAddr as usize], 3);

        let m = ListenerMetrics::default();
        let first = m.authority(Some("Web.NS.svc.cluster.local:80"));
        assert_eq!(m.authority(Some("web.ns.svc.cluster.local:80")), first);
        assert_eq!(m.authority(None), 0);
        assert_eq!(m.authority(Some(&"x".repeat(MAX_AUTHORITY_LEN + 1))), 1);
        // One slot is taken: the last of these overflows, and so does the next new one.
        for i in 0..MAX_AUTHORITIES {
            m.authority(Some(&format!("svc{i}")));
        }
        assert_eq!(m.authority(Some("one-too-many")), 1);
        assert_eq!(m.authority(Some("svc0")), 3, "known values keep their id");
        assert_eq!(m.snapshot().overflow[Overflow::Authority as usize], 3);

        // Inbound listeners have no authority label.
        let inbound = ListenerMetrics::with(Direction::Inbound, Vec::new(), 0);
        assert_eq!(inbound.authority(Some("web")), 0);

        // 1,000 targets × 5 authorities: 904 combinations past the series cap.
        let m = ListenerMetrics::default();
        for i in 0..1000u16 {
            let t = m.target(SocketAddr::from(([198, 18, 2, 1], i)));
            for a in 0..5 {
                let a = m.authority(Some(&format!("svc{a}")));
                m.http(0, Protocol::Http1, t, a).request();
            }
        }
        let s = m.snapshot();
        let past = 1000 * 5 - MAX_HTTP_SERIES as u64;
        assert_eq!(s.overflow[Overflow::Series as usize], past);
        assert_eq!(s.http.len(), MAX_HTTP_SERIES + 1);
        let other = s
            .http
            .iter()
            .find(|h| h.target == OTHER && h.authority.as_deref() == Some(OTHER))
            .unwrap();
        assert_eq!(other.values.requests, past);
    }

    #[test]
    fn http_series_merge_by_label() {
        let a = ListenerMetrics::with(Direction::Outbound, vec!["api".into()], 0);
        let b = ListenerMetrics::with(Direction::Outbound, vec!["api".into()], 0);
        let t = addr("198.18.0.3:80");
        b.target(addr("198.18.0.2:80"));
        for m in [&a, &b] {
            let h = m.http(1, Protocol::Http2, m.target(t), m.authority(Some("web:80")));
            h.request();
            h.response(200, Duration::from_micros(1500));
        }
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.http.len(), 1);
        let h = &s.http[0];
        assert_eq!(
            (h.route.as_str(), h.target.as_str()),
            ("api", "198.18.0.3:80")
        );
        assert_eq!(h.authority.as_deref(), Some("web:80"));
        assert_eq!(h.values.requests, 2);
    }

    #[test]
    fn a_worker_that_misses_a_scrape_contributes_its_last_snapshot() {
        let cache = ScrapeCache::default();
        let core = |n: u64| {
            let m = ListenerMetrics::default();
            let c = m.src_for(addr("10.0.0.1:80"));
            for _ in 0..n {
                c.opened();
            }
            Some(CoreSnapshot {
                listeners: vec![m.snapshot()],
            })
        };
        let opened = |s: &[ListenerSnapshot]| tcp(&s[0], Peer::Src, "10.0.0.1:80").open_total;
        assert_eq!(opened(&cache.merge(vec![core(3), core(4)])), 7);
        // Worker 1 misses the deadline: its last answer stands in.
        assert_eq!(opened(&cache.merge(vec![core(5), None])), 9);
        assert_eq!(opened(&cache.merge(vec![None, None])), 9);
        assert_eq!(opened(&cache.merge(vec![core(6), core(4)])), 10);
    }

    #[test]
    fn close_keeps_the_most_specific_outcome() {
        let reset = Close::of_error(&io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(reset, Close::Errno(libc::ECONNRESET as u16));
        assert_eq!(
            Close::of_error(&io::ErrorKind::TimedOut.into()),
            Close::Failed
        );
        assert_eq!(Close::Clean.worst(Close::Failed), Close::Failed);
        assert_eq!(Close::Failed.worst(reset), reset);
        assert_eq!(reset.worst(Close::Clean), reset);
    }

    #[test]
    fn an_io_error_without_its_number_takes_the_sockets_last() {
        let kind_only: io::Error = io::ErrorKind::ConnectionReset.into();
        let reset = Close::Errno(libc::ECONNRESET as u16);
        assert_eq!(Close::of_io(&kind_only, Some(libc::ECONNRESET)), reset);
        assert_eq!(Close::of_io(&kind_only, None), Close::Failed);
        // Its own number wins.
        let pipe = io::Error::from_raw_os_error(libc::EPIPE);
        assert_eq!(
            Close::of_io(&pipe, Some(libc::ECONNRESET)),
            Close::Errno(libc::EPIPE as u16)
        );
    }
}
