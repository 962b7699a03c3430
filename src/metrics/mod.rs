//! Per-core metrics: plain counters in `Cell`s and hdrhistograms in `RefCell`s, owned by one
//! worker, never shared. The admin thread asks each worker for a [`ListenerSnapshot`] per
//! listener, merges them and renders Prometheus text ([`prom`]).
//!
//! Hot-path cost is an add on a core-local integer: no atomics, locks, hashing or strings.
//! Byte counters are bumped per `splice` chunk (up to 256 KiB), so long-lived connections show
//! progress while they run, unlike Linkerd's update-on-close.
//!
//! HTTP metrics of an original-destination listener are kept per destination (the
//! `target_addr` label) for requests that no route takes: at most [`MAX_DESTINATIONS`] per
//! listener and worker, the rest counted under `target_addr="other"`.

pub mod prom;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::detect::{DetectReason, DetectResult};
use crate::error::{ConnectErrorKind, Refusal};

/// Distinct original destinations with their own HTTP series, per listener and worker.
pub const MAX_DESTINATIONS: usize = 1024;

/// Bucket bounds of `response_latency_ms`, in milliseconds: Linkerd's, so dashboards port.
pub const RESPONSE_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Counters for one side of proxied connections (`peer="src"`: clients, `peer="dst"`: upstreams).
#[derive(Debug, Default)]
pub struct PeerCounters {
    open_total: Cell<u64>,
    open: Cell<u64>,
    close_ok: Cell<u64>,
    close_err: Cell<u64>,
    read_bytes: Cell<u64>,
    write_bytes: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl PeerCounters {
    /// A connection on this side opened.
    pub fn opened(&self) {
        bump(&self.open_total, 1);
        bump(&self.open, 1);
    }

    /// A connection on this side closed, cleanly (`ok`) or by error.
    pub fn closed(&self, ok: bool) {
        self.open.set(self.open.get().saturating_sub(1));
        bump(if ok { &self.close_ok } else { &self.close_err }, 1);
    }

    /// Bytes read from this peer.
    pub fn read(&self, n: u64) {
        bump(&self.read_bytes, n);
    }

    /// Bytes written to this peer.
    pub fn wrote(&self, n: u64) {
        bump(&self.write_bytes, n);
    }

    pub(crate) fn snapshot(&self) -> PeerSnapshot {
        PeerSnapshot {
            open_total: self.open_total.get(),
            open: self.open.get(),
            close_ok: self.close_ok.get(),
            close_err: self.close_err.get(),
            read_bytes: self.read_bytes.get(),
            write_bytes: self.write_bytes.get(),
        }
    }
}

/// One open connection on a side, counted from its creation to its drop: `open` goes up now
/// and down on drop, closing as clean unless [`Opened::failed`] was called. The one way every
/// stage counts a connection (opaque upstreams, pooled HTTP/1 upstreams, HTTP/2 upstream
/// drivers).
#[derive(Debug)]
pub struct Opened {
    counters: std::rc::Rc<PeerCounters>,
    ok: bool,
}

impl Opened {
    /// Counts a connection as open in `counters` until dropped.
    pub fn new(counters: &std::rc::Rc<PeerCounters>) -> Opened {
        counters.opened();
        Opened {
            counters: counters.clone(),
            ok: true,
        }
    }

    /// The counters of this connection's side.
    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Marks the connection as ended by an error (counted on drop).
    pub fn failed(&mut self) {
        self.ok = false;
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.counters.closed(self.ok);
    }
}

/// Highest recordable duration: one week, in microseconds. Longer values are clamped.
const HIST_MAX_US: u64 = 7 * 24 * 3600 * 1_000_000;

/// A latency/duration histogram in microseconds with 2 significant digits (1% error).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 2)
        .expect("invariant: constant histogram bounds are valid")
}

/// Records a duration, clamped to the histogram's range; never fails.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, HIST_MAX_US);
    h.saturating_record(us);
}

/// All metrics of one listener on one core.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// Client side.
    pub src: PeerCounters,
    /// Upstream side.
    pub dst: std::rc::Rc<PeerCounters>,
    connect_errors: [Cell<u64>; 4],
    duration: RefCell<Histogram<u64>>,
    /// Verdicts by `[reason][result]`.
    detect: [[Cell<u64>; 8]; 5],
    detect_latency: RefCell<Histogram<u64>>,
    refused: [Cell<u64>; 2],
    tls_sni: [Cell<u64>; 2],
    early_dials: Cell<u64>,
    early_unused: Cell<u64>,
    h2_errors: Cell<u64>,
    /// HTTP-level metrics (HTTP/1 proxying), per route: `default` first, then the routes.
    pub http: Vec<HttpMetrics>,
    /// HTTP/2 metrics per route, same order as `http`.
    pub h2: Vec<HttpMetrics>,
    /// Original-destination listeners: HTTP metrics per destination, for requests no route
    /// takes (at most [`MAX_DESTINATIONS`], then `other`).
    by_dst: RefCell<HashMap<SocketAddr, Rc<DstHttpMetrics>>>,
    other_dst: RefCell<Option<Rc<DstHttpMetrics>>>,
}

/// The HTTP metrics of one original destination (route `default`), both protocols.
#[derive(Debug)]
pub struct DstHttpMetrics {
    /// HTTP/1 requests.
    pub http1: HttpMetrics,
    /// HTTP/2 streams.
    pub http2: HttpMetrics,
}

impl DstHttpMetrics {
    fn new(target_addr: String) -> DstHttpMetrics {
        let mut http1 = HttpMetrics::new("default", Protocol::Http1);
        let mut http2 = HttpMetrics::new("default", Protocol::Http2);
        http1.target_addr = Some(target_addr.clone());
        http2.target_addr = Some(target_addr);
        DstHttpMetrics { http1, http2 }
    }

    /// The metrics of `protocol`.
    pub fn get(&self, protocol: Protocol) -> &HttpMetrics {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
        }
    }
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        ListenerMetrics {
            src: PeerCounters::default(),
            dst: std::rc::Rc::default(),
            connect_errors: Default::default(),
            duration: RefCell::new(new_histogram()),
            detect: Default::default(),
            detect_latency: RefCell::new(new_histogram()),
            refused: Default::default(),
            tls_sni: Default::default(),
            early_dials: Cell::new(0),
            early_unused: Cell::new(0),
            h2_errors: Cell::new(0),
            http: vec![HttpMetrics::new("default", Protocol::Http1)],
            h2: vec![HttpMetrics::new("default", Protocol::Http2)],
            by_dst: RefCell::new(HashMap::new()),
            other_dst: RefCell::new(None),
        }
    }
}

impl ListenerMetrics {
    /// An upstream connect failed.
    pub fn connect_failed(&self, kind: ConnectErrorKind) {
        bump(&self.connect_errors[kind as usize], 1);
    }

    /// A connection was classified, for `reason` (`took`: accept → verdict, when detection
    /// ran).
    pub fn detected(&self, result: DetectResult, reason: DetectReason, took: Option<Duration>) {
        bump(&self.detect[reason as usize][result as usize], 1);
        if let Some(d) = took {
            record(&mut self.detect_latency.borrow_mut(), d);
        }
    }

    /// An original-destination connection was refused.
    pub fn refused(&self, why: Refusal) {
        bump(&self.refused[why as usize], 1);
    }

    /// The HTTP metrics of original destination `addr` (created on first use; past
    /// [`MAX_DESTINATIONS`] destinations, the shared `other` entry).
    pub fn for_dst(&self, addr: SocketAddr) -> Rc<DstHttpMetrics> {
        let mut map = self.by_dst.borrow_mut();
        if let Some(m) = map.get(&addr) {
            return m.clone();
        }
        if map.len() < MAX_DESTINATIONS {
            let m = Rc::new(DstHttpMetrics::new(addr.to_string()));
            map.insert(addr, m.clone());
            return m;
        }
        self.other_dst
            .borrow_mut()
            .get_or_insert_with(|| Rc::new(DstHttpMetrics::new("other".into())))
            .clone()
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

    /// A TLS ClientHello was seen, with or without SNI.
    pub fn tls_hello(&self, has_sni: bool) {
        bump(&self.tls_sni[usize::from(!has_sni)], 1);
    }

    /// A client connection ended after `d`.
    pub fn record_duration(&self, d: Duration) {
        record(&mut self.duration.borrow_mut(), d);
    }

    /// A copy of the current values, sent to the admin thread.
    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            src: self.src.snapshot(),
            dst: self.dst.snapshot(),
            connect_errors: std::array::from_fn(|i| self.connect_errors[i].get()),
            duration: self.duration.borrow().clone(),
            detect: std::array::from_fn(|r| std::array::from_fn(|i| self.detect[r][i].get())),
            detect_latency: self.detect_latency.borrow().clone(),
            refused: std::array::from_fn(|i| self.refused[i].get()),
            tls_sni: std::array::from_fn(|i| self.tls_sni[i].get()),
            early_dials: self.early_dials.get(),
            early_unused: self.early_unused.get(),
            h2_errors: self.h2_errors.get(),
            http: {
                let by_dst = self.by_dst.borrow();
                let other = self.other_dst.borrow();
                let dsts = by_dst.values().chain(other.iter());
                self.http
                    .iter()
                    .chain(&self.h2)
                    .chain(dsts.flat_map(|d| [&d.http1, &d.http2]))
                    .map(HttpMetrics::snapshot)
                    .collect()
            },
        }
    }
}

/// The `protocol` label of the HTTP families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.x.
    #[default]
    Http1,
    /// HTTP/2 (including gRPC).
    Http2,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1",
            Protocol::Http2 => "http/2",
        }
    }
}

/// `grpc-status` absent (not a gRPC response, or no status seen).
pub const NO_GRPC_STATUS: u8 = u8::MAX;

/// HTTP metrics of one listener on one core (Linkerd's `request_total`, `response_total`,
/// `response_latency_ms`).
#[derive(Debug)]
pub struct HttpMetrics {
    route: String,
    protocol: Protocol,
    /// The original destination, for an original-destination listener's per-destination
    /// series.
    target_addr: Option<String>,
    requests: Cell<u64>,
    /// (status code, gRPC status or [`NO_GRPC_STATUS`], count): codes 100–599 times gRPC
    /// codes 0–16, so bounded.
    responses: RefCell<Vec<(u16, u8, u64)>>,
    latency: LatencyBuckets,
}

/// Exact counts per `response_latency_ms` bucket ([`RESPONSE_BUCKETS_MS`]) and the sum: 27
/// integers, cheap enough to keep per destination.
#[derive(Debug, Default)]
struct LatencyBuckets {
    /// `counts[i]`: values above bound `i - 1` and up to bound `i`; the last one: above all.
    counts: [Cell<u64>; 26],
    sum_us: Cell<u64>,
}

impl LatencyBuckets {
    fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = RESPONSE_BUCKETS_MS.partition_point(|b| (b * 1e3) < us as f64);
        bump(&self.counts[i], 1);
        bump(&self.sum_us, us);
    }

    fn snapshot(&self) -> BucketCounts {
        BucketCounts {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_us: self.sum_us.get(),
        }
    }
}

/// Plain values of a response latency histogram: per-bucket (not cumulative) counts over
/// [`RESPONSE_BUCKETS_MS`] plus the overflow, and the sum in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCounts {
    /// Per bucket; the last one counts values above every bound.
    pub counts: [u64; 26],
    /// Sum of the recorded values (µs).
    pub sum_us: u64,
}

impl BucketCounts {
    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn merge(&mut self, o: &BucketCounts) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_us += o.sum_us;
    }
}

impl HttpMetrics {
    /// Metrics for the route named `route` (`default`: the listener's own endpoints).
    pub fn new(route: &str, protocol: Protocol) -> HttpMetrics {
        HttpMetrics {
            route: route.to_string(),
            protocol,
            target_addr: None,
            requests: Cell::new(0),
            responses: RefCell::new(Vec::new()),
            latency: LatencyBuckets::default(),
        }
    }

    /// A request head was read.
    pub fn request(&self) {
        bump(&self.requests, 1);
    }

    /// A response started after `ttfb` (or the proxy answered itself): latency and count.
    pub fn response(&self, code: u16, ttfb: Duration) {
        self.first_byte(ttfb);
        self.completed(code, None);
    }

    /// The response's first byte (its head) after `ttfb`.
    pub fn first_byte(&self, ttfb: Duration) {
        self.latency.record(ttfb);
    }

    /// A response ended (gRPC: with `grpc-status` from its trailers, if any). Counted at the
    /// end, as Linkerd does, because gRPC's outcome is known only then.
    pub fn completed(&self, code: u16, grpc: Option<u8>) {
        let code = code.clamp(100, 599);
        let grpc = grpc.map_or(NO_GRPC_STATUS, |g| g.min(NO_GRPC_STATUS - 1));
        let mut r = self.responses.borrow_mut();
        match r.iter_mut().find(|(c, g, _)| *c == code && *g == grpc) {
            Some((_, _, n)) => *n += 1,
            None => r.push((code, grpc, 1)),
        }
    }

    /// A copy for the admin thread.
    pub fn snapshot(&self) -> HttpSnapshot {
        HttpSnapshot {
            route: self.route.clone(),
            protocol: self.protocol,
            target_addr: self.target_addr.clone(),
            requests: self.requests.get(),
            responses: self.responses.borrow().clone(),
            latency: self.latency.snapshot(),
        }
    }
}

/// Plain values of [`HttpMetrics`].
#[derive(Debug, Clone, Default)]
pub struct HttpSnapshot {
    /// The `route` label.
    pub route: String,
    /// The `protocol` label.
    pub protocol: Protocol,
    /// The `target_addr` label (original destination), if the series has one.
    pub target_addr: Option<String>,
    /// Requests.
    pub requests: u64,
    /// (status, gRPC status or [`NO_GRPC_STATUS`], count).
    pub responses: Vec<(u16, u8, u64)>,
    /// Time to first response byte, per `response_latency_ms` bucket.
    pub latency: BucketCounts,
}

impl HttpSnapshot {
    /// What identifies the series across cores.
    fn key(&self) -> (&str, Protocol, Option<&str>) {
        (&self.route, self.protocol, self.target_addr.as_deref())
    }

    /// Adds another core's values.
    pub fn merge(&mut self, o: &HttpSnapshot) {
        self.requests += o.requests;
        for &(code, grpc, n) in &o.responses {
            match self
                .responses
                .iter_mut()
                .find(|(c, g, _)| *c == code && *g == grpc)
            {
                Some((_, _, m)) => *m += n,
                None => self.responses.push((code, grpc, n)),
            }
        }
        self.responses.sort_unstable();
        self.latency.merge(&o.latency);
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
    /// Connections closed by an error.
    pub close_err: u64,
    /// Bytes read from the peer.
    pub read_bytes: u64,
    /// Bytes written to the peer.
    pub write_bytes: u64,
}

impl PeerSnapshot {
    fn merge(&mut self, o: &PeerSnapshot) {
        self.open_total += o.open_total;
        self.open += o.open;
        self.close_ok += o.close_ok;
        self.close_err += o.close_err;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
    }
}

/// Plain values of [`ListenerMetrics`], mergeable across cores.
#[derive(Debug, Clone)]
pub struct ListenerSnapshot {
    /// Client side.
    pub src: PeerSnapshot,
    /// Upstream side.
    pub dst: PeerSnapshot,
    /// Upstream connect failures, indexed by [`ConnectErrorKind`].
    pub connect_errors: [u64; 4],
    /// Client connection durations (µs).
    pub duration: Histogram<u64>,
    /// Detection results, indexed by `[`[`DetectReason`]`][`[`DetectResult`]`]`.
    pub detect: [[u64; 8]; 5],
    /// Accept → verdict (µs), for connections that went through detection.
    pub detect_latency: Histogram<u64>,
    /// Refused original-destination connections, indexed by [`Refusal`].
    pub refused: [u64; 2],
    /// TLS ClientHellos with SNI `[0]` and without `[1]`.
    pub tls_sni: [u64; 2],
    /// Upstream dials made during detection because the client was silent.
    pub early_dials: u64,
    /// Of those, connections closed unused.
    pub early_unused: u64,
    /// HTTP/2 connections closed on a protocol error.
    pub h2_errors: u64,
    /// HTTP metrics per route (`default` first), then per original destination.
    pub http: Vec<HttpSnapshot>,
}

impl Default for ListenerSnapshot {
    fn default() -> Self {
        ListenerSnapshot {
            src: PeerSnapshot::default(),
            dst: PeerSnapshot::default(),
            connect_errors: [0; 4],
            duration: new_histogram(),
            detect: [[0; 8]; 5],
            detect_latency: new_histogram(),
            refused: [0; 2],
            tls_sni: [0; 2],
            early_dials: 0,
            early_unused: 0,
            h2_errors: 0,
            http: Vec::new(),
        }
    }
}

impl ListenerSnapshot {
    /// Adds another core's values into this one.
    pub fn merge(&mut self, o: &ListenerSnapshot) {
        self.src.merge(&o.src);
        self.dst.merge(&o.dst);
        for (a, b) in self.connect_errors.iter_mut().zip(o.connect_errors) {
            *a += b;
        }
        // Same bounds on both sides, so `add` cannot fail; a failure would only lose one
        // core's histogram for one scrape.
        let _ = self.duration.add(&o.duration);
        let _ = self.detect_latency.add(&o.detect_latency);
        for (ra, rb) in self.detect.iter_mut().zip(o.detect) {
            for (a, b) in ra.iter_mut().zip(rb) {
                *a += b;
            }
        }
        for (a, b) in self.refused.iter_mut().zip(o.refused) {
            *a += b;
        }
        for (a, b) in self.tls_sni.iter_mut().zip(o.tls_sni) {
            *a += b;
        }
        self.early_dials += o.early_dials;
        self.early_unused += o.early_unused;
        self.h2_errors += o.h2_errors;
        // Per-destination series differ between cores: match by labels, not position.
        let mut index: HashMap<(String, Protocol, Option<String>), usize> = self
            .http
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (r, p, t) = h.key();
                ((r.to_string(), p, t.map(str::to_string)), i)
            })
            .collect();
        for h in &o.http {
            let (r, p, t) = h.key();
            let k = (r.to_string(), p, t.map(str::to_string));
            match index.get(&k) {
                Some(&i) => self.http[i].merge(h),
                None => {
                    index.insert(k, self.http.len());
                    self.http.push(h.clone());
                }
            }
        }
    }
}

/// Everything one core reports: one snapshot per listener, in config order.
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    /// Per-listener values.
    pub listeners: Vec<ListenerSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_snapshot_and_merge() {
        let a = ListenerMetrics::default();
        a.src.opened();
        a.src.read(10);
        a.src.closed(true);
        a.dst.opened();
        a.connect_failed(ConnectErrorKind::Timeout);
        a.record_duration(Duration::from_millis(5));
        let b = ListenerMetrics::default();
        b.src.opened();
        b.src.read(5);
        b.record_duration(Duration::from_secs(2));

        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        assert_eq!(m.src.open_total, 2);
        assert_eq!(m.src.open, 1);
        assert_eq!(m.src.close_ok, 1);
        assert_eq!(m.src.read_bytes, 15);
        assert_eq!(m.dst.open, 1);
        assert_eq!(m.connect_errors[ConnectErrorKind::Timeout as usize], 1);
        assert_eq!(m.duration.len(), 2);
        assert_eq!(m.duration.count_between(0, 10_000), 1);
    }

    #[test]
    fn per_destination_http_series_merge_by_label_and_are_capped() {
        let a = ListenerMetrics::default();
        let b = ListenerMetrics::default();
        let d1: SocketAddr = "198.18.0.2:80".parse().unwrap();
        let d2: SocketAddr = "198.18.0.3:80".parse().unwrap();
        // Core a saw d1 then d2; core b saw d2 only: merged by label, not by position.
        a.for_dst(d1).http1.request();
        a.for_dst(d2).http1.request();
        b.for_dst(d2).http1.request();
        b.for_dst(d2)
            .http1
            .response(200, Duration::from_micros(1500));
        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        let find = |t: &str| {
            m.http
                .iter()
                .find(|h| h.target_addr.as_deref() == Some(t) && h.protocol == Protocol::Http1)
                .unwrap()
        };
        assert_eq!(find("198.18.0.2:80").requests, 1);
        let h = find("198.18.0.3:80");
        assert_eq!(h.requests, 2);
        assert_eq!(h.latency.counts[1], 1, "1.5 ms is in the (1, 2] ms bucket");
        assert_eq!(h.latency.sum_us, 1500);
        // Past the cap, destinations share "other".
        let c = ListenerMetrics::default();
        for i in 0..MAX_DESTINATIONS as u16 + 3 {
            c.for_dst(SocketAddr::from(([198, 18, 1, 1], 1000 + i)))
                .http1
                .request();
        }
        let s = c.snapshot();
        let other = s
            .http
            .iter()
            .find(|h| h.target_addr.as_deref() == Some("other") && h.protocol == Protocol::Http1)
            .unwrap();
        assert_eq!(other.requests, 3);
    }

    #[test]
    fn latency_buckets_are_exact_at_the_bounds() {
        let l = LatencyBuckets::default();
        for us in [1_000, 1_001, 50_000_000, 50_000_001] {
            l.record(Duration::from_micros(us));
        }
        let s = l.snapshot();
        assert_eq!(s.counts[0], 1, "1 ms is in le=1");
        assert_eq!(s.counts[1], 1, "1.001 ms is in le=2");
        assert_eq!(s.counts[24], 1, "50 s is in le=50000");
        assert_eq!(s.counts[25], 1, "above every bound");
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn record_clamps_out_of_range() {
        let mut h = new_histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(365 * 24 * 3600));
        assert_eq!(h.len(), 2);
    }
}
