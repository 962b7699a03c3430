//! Load generators. Every generator returns a [`Sample`]: operations, errors, bytes, wall
//! time and a latency histogram in microseconds.
//!
//! Open-loop HTTP (a constant request rate, wrk2 style) measures each request from the time
//! it *should* have been sent, not from when it was sent: when the target stalls, requests
//! that were due meanwhile carry the stall in their latency instead of silently not being
//! sent (coordinated omission). Closed-loop mode sends the next request as soon as the
//! previous answer arrives (maximum throughput).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The result of one generator run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Completed operations (requests, connections, transfers).
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies in microseconds (HTTP: every response, whatever its status).
    pub hist: Histogram<u64>,
    /// Responses by status class (the HTTP generators; `None` for the TCP ones).
    pub status: Option<Statuses>,
}

/// A latency histogram: 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Where an open-loop latency is measured from. If the previous request of this worker was
/// still in flight at `intended`, the system made this one late: measure from `intended`
/// (coordinated-omission correction). If the worker was idle, any lateness is the generator's
/// own timer (tokio's has 1 ms granularity): measure from the actual send.
pub fn measure_from(intended: Instant, prev_done: Instant, sent: Instant) -> Instant {
    if prev_done > intended {
        intended
    } else {
        sent
    }
}

/// When one load worker sends: at a fixed interval (open loop) or as soon as it can (closed
/// loop), never before `start`.
pub struct Pacer {
    next: Instant,
    start: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    /// Worker `index` of `workers` sharing `rate` requests/s (None = closed loop); open-loop
    /// workers are staggered so sends spread evenly over each interval.
    pub fn new(start: Instant, rate: Option<f64>, index: usize, workers: usize) -> Pacer {
        let interval = rate.map(|r| Duration::from_secs_f64(workers as f64 / r));
        let next = start + interval.map_or(Duration::ZERO, |iv| iv * index as u32 / workers as u32);
        Pacer {
            next,
            start,
            interval,
        }
    }

    /// Waits for the next send slot and returns its intended time, or `None` at once when
    /// that slot is at or after `end` (so a worker whose next slot falls after the run's window
    /// ends with its last response, not a slot interval later).
    pub async fn wait(&mut self, end: Instant) -> Option<Instant> {
        let t = match self.interval {
            Some(iv) => {
                if self.next >= end {
                    return None;
                }
                tokio::time::sleep_until(self.next.into()).await;
                let t = self.next;
                self.next += iv;
                t
            }
            None => {
                if Instant::now() < self.start {
                    tokio::time::sleep_until(self.start.into()).await;
                }
                Instant::now()
            }
        };
        (t < end).then_some(t)
    }
}

/// The part of a run that is measured: requests are sent from `start`, recorded when due at
/// or after `measure` (the end of the warm-up), and no more are sent once due at `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First send.
    pub start: Instant,
    /// End of the warm-up: requests due from here on are recorded.
    pub measure: Instant,
    /// No request due at or after this is sent.
    pub end: Instant,
}

impl Window {
    /// A warm-up of `warmup` from `start`, then `duration` measured.
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Window {
        let measure = start + warmup;
        Window {
            start,
            measure,
            end: measure + duration,
        }
    }

    /// Whether a request due (open loop) or sent (closed loop) at `intended` is recorded.
    pub fn records(&self, intended: Instant) -> bool {
        intended >= self.measure
    }

    /// The measured part's wall time as of now (call it when the last request finished):
    /// from the end of the warm-up to now, and never less than the window's own length. A
    /// target slower than the open-loop rate finishes the requests due in the window late,
    /// so its throughput is what it achieved, not the rate asked for.
    pub fn elapsed(&self) -> Duration {
        let planned = self.end.saturating_duration_since(self.measure);
        planned.max(Instant::now().saturating_duration_since(self.measure))
    }
}

/// Records one latency: from `from` (see [`measure_from`]) to completion.
pub fn record_corrected(h: &mut Histogram<u64>, intended: Instant, done: Instant) {
    let us = done.saturating_duration_since(intended).as_micros() as u64;
    h.saturating_record(us.max(1));
}

impl Sample {
    /// A sample with nothing recorded.
    pub fn empty() -> Sample {
        Sample {
            ops: 0,
            errors: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            hist: histogram(),
            status: None,
        }
    }

    fn merge(&mut self, o: &Sample) {
        self.ops += o.ops;
        self.errors += o.errors;
        self.bytes += o.bytes;
        let _ = self.hist.add(&o.hist);
        if let Some(os) = &o.status {
            self.status.get_or_insert_with(Statuses::default).add(os);
        }
    }

    /// Failed operations as a percentage of all attempted (0 when none were attempted).
    pub fn error_pct(&self) -> f64 {
        let all = self.ops + self.errors;
        if all == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / all as f64
        }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Responses by status class, and requests that got no response (connect refused, reset,
/// timeout, a malformed response): what an HTTP generator counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statuses {
    /// Final 1xx responses (101 Switching Protocols; interim 1xx are skipped).
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    /// 2xx responses.
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    /// 3xx responses.
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    /// 4xx responses.
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    /// 5xx responses.
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    /// Requests without a response.
    pub transport: u64,
}

impl Statuses {
    /// Counts one response with `status`.
    pub fn count(&mut self, status: u16) {
        match status {
            100..=199 => self.s1xx += 1,
            200..=299 => self.s2xx += 1,
            300..=399 => self.s3xx += 1,
            400..=499 => self.s4xx += 1,
            _ => self.s5xx += 1,
        }
    }

    /// Whether a response with `status` is a success (1xx-3xx) or an error (4xx, 5xx).
    pub fn ok(status: u16) -> bool {
        status < 400
    }

    fn add(&mut self, o: &Statuses) {
        self.s1xx += o.s1xx;
        self.s2xx += o.s2xx;
        self.s3xx += o.s3xx;
        self.s4xx += o.s4xx;
        self.s5xx += o.s5xx;
        self.transport += o.transport;
    }

    /// The non-zero counts of [`Statuses::line`] (`2xx=10 5xx=2`), or `none`.
    pub fn compact(&self) -> String {
        let line = self.line();
        let parts: Vec<&str> = line.split(' ').filter(|kv| !kv.ends_with("=0")).collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }

    /// `1xx=0 2xx=10 3xx=0 4xx=0 5xx=2 transport=1`
    pub fn line(&self) -> String {
        format!(
            "1xx={} 2xx={} 3xx={} 4xx={} 5xx={} transport={}",
            self.s1xx, self.s2xx, self.s3xx, self.s4xx, self.s5xx, self.transport
        )
    }
}

/// What each request sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method (`GET`, `POST`, any token).
    pub method: String,
    /// `Host` header / `:authority` (a `Host` in `headers` overrides it).
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body (sent with `content-length` when non-empty or when the method is POST, PUT or
    /// PATCH).
    pub body: Vec<u8>,
}

/// Headers loadtest sets itself and so refuses from `--header`.
const OWN_HEADERS: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

impl Request {
    /// `GET path` with no extra headers.
    pub fn get(authority: &str, path: &str) -> Request {
        Request {
            method: "GET".into(),
            authority: authority.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Parses `Name: value` (curl's `-H` form) and checks name and value are valid HTTP.
    pub fn parse_header(h: &str) -> Result<(String, String)> {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {h:?} is not `Name: value`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| anyhow::anyhow!("header {h:?}: invalid name"))?;
        let value = value.trim();
        http::HeaderValue::from_str(value)
            .map_err(|_| anyhow::anyhow!("header {h:?}: invalid value"))?;
        if OWN_HEADERS.contains(&name.as_str()) {
            anyhow::bail!("header {h:?}: loadtest sets {name} itself (see --close, --body-file)");
        }
        Ok((name.as_str().to_string(), value.to_string()))
    }

    /// Checks the method is an HTTP token.
    pub fn check_method(m: &str) -> Result<()> {
        http::Method::from_bytes(m.as_bytes())
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("invalid method {m:?}"))
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The HTTP/1.1 bytes of one request.
    pub fn encode(&self, keepalive: bool) -> Vec<u8> {
        let mut r = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has_header("host") {
            r += &format!("host: {}\r\n", self.authority);
        }
        for (n, v) in &self.headers {
            r += &format!("{n}: {v}\r\n");
        }
        r += if keepalive {
            "connection: keep-alive\r\n"
        } else {
            "connection: close\r\n"
        };
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            r += &format!("content-length: {}\r\n", self.body.len());
        }
        r += "\r\n";
        let mut r = r.into_bytes();
        r.extend_from_slice(&self.body);
        r
    }
}

/// HTTP/1.1 load settings.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    /// Where to connect (in order of preference) and what to send.
    pub target: Vec<SocketAddr>,
    /// The request every connection sends.
    pub request: Request,
    /// Concurrent connections (one task each).
    pub connections: usize,
    /// Total requests per second across connections; `None` = closed loop.
    pub rate: Option<f64>,
    /// How long to measure, after `warmup`.
    pub duration: Duration,
    /// How long to send at the same rate before measuring: requests due in this first part
    /// are sent but not recorded (latency, counts, bytes), so the connections' setup (and,
    /// through a proxy, its upstream connections' setup) is not in the figures.
    pub warmup: Duration,
    /// Reuse connections (keep-alive) or open one per request.
    pub keepalive: bool,
}

impl HttpLoad {
    /// `GET /load` to `addr` (the suite's scenarios and the harness's own backends).
    pub fn get(addr: SocketAddr) -> Request {
        Request::get(&addr.to_string(), "/load")
    }
}

/// Runs HTTP/1.1 load and returns the merged sample. All connections run as tasks on one
/// tokio current-thread runtime on the calling thread (one thread per load core: the suite
/// pins it), so a few hundred connections cost no more threads than one.
pub fn http1(cfg: &HttpLoad) -> Result<Sample> {
    anyhow::ensure!(!cfg.target.is_empty(), "no address to send to");
    let conns = cfg.connections.max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let req: std::rc::Rc<[u8]> = cfg.request.encode(cfg.keepalive).into();
    let cfg = cfg.clone();
    let total = local.block_on(&rt, async move {
        let start = Instant::now() + Duration::from_millis(20);
        let window = Window::new(start, cfg.warmup, cfg.duration);
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                let cfg = cfg.clone();
                let req = req.clone();
                let pacer = Pacer::new(start, cfg.rate, i, conns);
                tokio::task::spawn_local(async move { http1_conn(&cfg, &req, pacer, window).await })
            })
            .collect();
        let mut total = Sample::empty();
        total.status = Some(Statuses::default());
        for t in tasks {
            if let Ok(s) = t.await {
                total.merge(&s);
            }
        }
        total.elapsed = window.elapsed();
        total
    });
    Ok(total)
}

async fn http1_conn(cfg: &HttpLoad, req: &[u8], mut pacer: Pacer, window: Window) -> Sample {
    let mut s = Sample::empty();
    let mut st = Statuses::default();
    let mut conn: Option<Conn> = None;
    let head = cfg.request.method == "HEAD";
    let mut prev_done = window.start;
    loop {
        let Some(intended) = pacer.wait(window.end).await else {
            break;
        };
        let from = measure_from(intended, prev_done, Instant::now());
        let recorded = window.records(intended);
        let reused = conn.is_some();
        let mut result = exchange(cfg, &mut conn, req, head).await;
        if result.is_err() && reused {
            // A reused connection the server closed between requests (keep-alive limits):
            // like any HTTP client, retry once on a fresh connection; only then it is an error.
            conn = None;
            result = exchange(cfg, &mut conn, req, head).await;
        }
        prev_done = Instant::now();
        match result {
            Ok(r) => {
                if recorded {
                    record_corrected(&mut s.hist, from, prev_done);
                    st.count(r.status);
                    if Statuses::ok(r.status) {
                        s.ops += 1;
                    } else {
                        s.errors += 1;
                    }
                    s.bytes += r.body as u64;
                }
                if !cfg.keepalive || !r.reusable {
                    conn = None;
                }
            }
            Err(_) => {
                if recorded {
                    st.transport += 1;
                    s.errors += 1;
                }
                conn = None;
            }
        }
    }
    s.status = Some(st);
    s
}

/// A connection and the bytes read from it but not yet parsed.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A response read by [`read_response`].
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Final status.
    pub status: u16,
    /// Body bytes (decoded length, for chunked).
    pub body: usize,
    /// Whether the connection can carry the next request.
    pub reusable: bool,
}

/// Sends one request (connecting first if needed) and reads its response.
async fn exchange(
    cfg: &HttpLoad,
    conn: &mut Option<Conn>,
    req: &[u8],
    head: bool,
) -> std::io::Result<Response> {
    use tokio::io::AsyncWriteExt;
    if conn.is_none() {
        let c = tokio::net::TcpStream::connect(&cfg.target[..]).await?;
        c.set_nodelay(true)?;
        *conn = Some(Conn {
            stream: c,
            buf: vec![0u8; 64 * 1024],
            start: 0,
            end: 0,
        });
    }
    let c = conn.as_mut().expect("connected above");
    c.stream.write_all(req).await?;
    match tokio::time::timeout(Duration::from_secs(10), read_response(c, head)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Response heads larger than this are an error.
const MAX_HEAD: usize = 1 << 20;

impl Conn {
    /// Reads more bytes after `end` (compacting or growing the buffer first); EOF is an error
    /// unless `eof_ok`, when it returns 0.
    async fn fill(&mut self, eof_ok: bool) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 && !eof_ok {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(n)
    }

    fn have(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Consumes `n` body bytes, reading as needed.
    async fn skip(&mut self, mut n: usize) -> std::io::Result<()> {
        loop {
            let take = n.min(self.end - self.start);
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill(false).await?;
        }
    }

    /// Reads a chunked body (RFC 9112 §7.1: sizes, extensions, trailers); returns its length.
    async fn chunked(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        loop {
            let (used, size) = loop {
                match httparse::parse_chunk_size(self.have()) {
                    Ok(httparse::Status::Complete(r)) => break r,
                    Ok(httparse::Status::Partial) if self.end - self.start < 1024 => {
                        self.fill(false).await?;
                    }
                    _ => return Err(std::io::Error::other("bad chunk size")),
                }
            };
            self.start += used;
            if size == 0 {
                // Trailer section: header lines up to an empty line.
                loop {
                    let mut trailers = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(self.have(), &mut trailers) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            self.start += n;
                            return Ok(total);
                        }
                        Ok(httparse::Status::Partial) if self.end - self.start < MAX_HEAD => {
                            self.fill(false).await?;
                        }
                        _ => return Err(std::io::Error::other("bad chunked trailer")),
                    }
                }
            }
            let size =
                usize::try_from(size).map_err(|_| std::io::Error::other("chunk too large"))?;
            self.skip(size).await?;
            total += size;
            while self.end - self.start < 2 {
                self.fill(false).await?;
            }
            if self.have()[..2] != *b"\r\n" {
                return Err(std::io::Error::other("chunk not followed by CRLF"));
            }
            self.start += 2;
        }
    }
}

/// How a response body is framed (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(
    status: u16,
    head_request: bool,
    headers: &[httparse::Header],
) -> std::io::Result<Framing> {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    let te: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    if !te.is_empty() {
        // Chunked if it is the last coding applied; any other final coding runs to close.
        let last = te
            .last()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|c| c.trim().eq_ignore_ascii_case("chunked"))
            .unwrap_or(false);
        return Ok(if last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut len: Option<usize> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for v in h.value.split(|b| *b == b',') {
            let n: usize = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("bad content-length"))?;
            if len.is_some_and(|l| l != n) {
                return Err(std::io::Error::other("conflicting content-length"));
            }
            len = Some(n);
        }
    }
    Ok(len.map_or(Framing::UntilClose, Framing::Length))
}

/// Reads one response: skips interim 1xx responses, then reads the final one's head and its
/// body, however framed (Content-Length, chunked, or until the server closes).
async fn read_response(c: &mut Conn, head_request: bool) -> std::io::Result<Response> {
    loop {
        let (status, used, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(c.have()) {
                Ok(httparse::Status::Complete(used)) => {
                    let status = resp.code.unwrap_or(0);
                    if !(100..=599).contains(&status) {
                        // RFC 9110 §15: a status code is 100 to 599; anything else is a
                        // malformed response, not an answer of some class.
                        return Err(std::io::Error::other(format!("status code {status}")));
                    }
                    let close = resp.version == Some(0)
                        || resp.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value.eq_ignore_ascii_case(b"close")
                        });
                    let f = framing(status, head_request, resp.headers)?;
                    break (status, used, f, close);
                }
                Ok(httparse::Status::Partial) if c.end - c.start < MAX_HEAD => {
                    c.fill(false).await?;
                }
                Ok(httparse::Status::Partial) => {
                    return Err(std::io::Error::other("response head too large"))
                }
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        };
        c.start += used;
        if (100..200).contains(&status) && status != 101 {
            continue; // interim (100 Continue, 103 Early Hints): the final response follows
        }
        let (body, reusable) = match framing {
            Framing::None => (0, status != 101),
            Framing::Length(n) => {
                c.skip(n).await?;
                (n, true)
            }
            Framing::Chunked => (c.chunked().await?, true),
            Framing::UntilClose => {
                let mut n = c.end - c.start;
                c.start = c.end;
                loop {
                    let got = c.fill(true).await?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                    c.start = c.end;
                }
                (n, false)
            }
        };
        return Ok(Response {
            status,
            body,
            reusable: reusable && !close,
        });
    }
}

/// Sends `total` bytes to a sink through `target`, half-closes, waits for the close.
pub fn bulk(target: &[SocketAddr], total: u64) -> Result<Sample> {
    let mut s = Sample::empty();
    let t0 = Instant::now();
    let mut c = TcpStream::connect(target)?;
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        c.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    c.shutdown(Shutdown::Write)?;
    let mut one = [0u8; 1];
    let _ = c.read(&mut one)?;
    s.elapsed = t0.elapsed();
    s.ops = 1;
    s.bytes = total;
    s.hist.saturating_record(s.elapsed.as_micros() as u64);
    Ok(s)
}

/// Connection churn: `concurrency` threads loop connect → `bytes` out → echo back → close.
pub fn churn(
    target: &[SocketAddr],
    concurrency: usize,
    duration: Duration,
    bytes: usize,
) -> Result<Sample> {
    let start = Instant::now();
    let end = start + duration;
    let target: std::sync::Arc<[SocketAddr]> = target.into();
    let handles: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut s = Sample::empty();
                let payload = vec![b'x'; bytes];
                let mut back = vec![0u8; bytes];
                while Instant::now() < end {
                    let t0 = Instant::now();
                    match one_conn(&target, &payload, &mut back) {
                        Ok(()) => {
                            record_corrected(&mut s.hist, t0, Instant::now());
                            s.ops += 1;
                            s.bytes += bytes as u64;
                        }
                        Err(_) => s.errors += 1,
                    }
                }
                s
            })
        })
        .collect();
    let mut total = Sample::empty();
    for h in handles {
        total.merge(
            &h.join()
                .map_err(|_| anyhow::anyhow!("a churn thread panicked"))?,
        );
    }
    // Until the last connection finished (each one started before `end` runs to its end).
    total.elapsed = duration.max(start.elapsed());
    Ok(total)
}

fn one_conn(target: &[SocketAddr], payload: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    let mut c = TcpStream::connect(target)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(payload)?;
    c.read_exact(back)?;
    c.shutdown(Shutdown::Write)?;
    let mut one = [0u8; 1];
    let _ = c.read(&mut one)?;
    Ok(())
}

/// Server-first connect latency: `count` sequential connections, connect → first byte.
pub fn first_byte(target: &[SocketAddr], count: usize) -> Result<Sample> {
    let mut s = Sample::empty();
    let t_all = Instant::now();
    let mut one = [0u8; 1];
    for _ in 0..count.max(1) {
        let t0 = Instant::now();
        let r = (|| -> std::io::Result<()> {
            let mut c = TcpStream::connect(target)?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            if c.read(&mut one)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        })();
        match r {
            Ok(()) => {
                record_corrected(&mut s.hist, t0, Instant::now());
                s.ops += 1;
            }
            Err(_) => s.errors += 1,
        }
    }
    s.elapsed = t_all.elapsed();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_windows_elapsed_time_is_its_length_or_the_overrun() {
        let second = Duration::from_secs(1);
        // Finished on time: the window's own length (warm-up not counted).
        let on_time = Window::new(Instant::now(), second, second);
        assert_eq!(on_time.elapsed(), second);
        // Finished 2 s after a 1 s window began measuring: the 2 s it took.
        let late = Window::new(Instant::now() - 3 * second, second, second);
        let e = late.elapsed();
        assert!(e >= 2 * second && e < 3 * second, "{e:?}");
    }

    /// An HTTP/1.1 server whose first response is `stall` late, then answers at once.
    fn stalling_server(stall: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut first = true;
            for c in l.incoming() {
                let mut c = c.unwrap();
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        if first {
                            std::thread::sleep(stall);
                            first = false;
                        }
                        c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .unwrap();
                    }
                }
            }
        });
        addr
    }

    /// Open-loop load of 1,000 GET/s on one keep-alive connection to `addr`.
    fn one_connection_at_1000(addr: SocketAddr, duration: Duration, warmup: Duration) -> Sample {
        http1(&HttpLoad {
            target: vec![addr],
            request: HttpLoad::get(addr),
            connections: 1,
            rate: Some(1000.0),
            duration,
            warmup,
            keepalive: true,
        })
        .unwrap()
    }

    #[test]
    fn a_stall_shows_up_in_p99_under_open_loop() {
        // 1,000 req/s on one connection for 1 s; the first answer stalls 200 ms. Requests due
        // during the stall could not be sent; measured from their intended send times, about
        // 200 of them wait up to 200 ms, so p99 must be near the stall, not near the
        // sub-millisecond service time (which is what an uncorrected client would report).
        let addr = stalling_server(Duration::from_millis(200));
        let s = one_connection_at_1000(addr, Duration::from_secs(1), Duration::ZERO);
        assert_eq!(s.errors, 0);
        assert!(s.ops >= 900, "ops {}", s.ops);
        let p99 = s.hist.value_at_quantile(0.99);
        let p50 = s.hist.value_at_quantile(0.50);
        assert!(p99 >= 150_000, "p99 {p99}us should carry the 200 ms stall");
        assert!(p50 < 150_000, "p50 {p50}us: most requests are unaffected");
        // At least ~15% of requests were due during the stall.
        let slow = s.hist.count_between(50_000, 300_000);
        assert!(
            slow as f64 >= 0.15 * s.ops as f64,
            "only {slow} slow of {}",
            s.ops
        );
    }

    #[test]
    fn a_stall_in_the_warmup_is_not_recorded() {
        // The same stall, inside a 400 ms warm-up: the requests it delayed were all due in the
        // warm-up, so none is recorded, and what is measured is the 600 ms after it.
        let addr = stalling_server(Duration::from_millis(200));
        let warmup = Duration::from_millis(400);
        let s = one_connection_at_1000(addr, Duration::from_millis(600), warmup);
        assert_eq!(s.errors, 0);
        // 600 requests were due in the measured part (a few may miss the end by a tick).
        assert!((590..=600).contains(&s.ops), "ops {}", s.ops);
        assert_eq!(
            s.hist.len(),
            s.ops,
            "only measured requests are in the histogram"
        );
        assert_eq!(s.status.as_ref().map(|st| st.s2xx), Some(s.ops));
        let max = s.hist.max();
        assert!(max < 100_000, "max {max}us: the stall was in the warm-up");
    }

    #[test]
    fn late_because_busy_is_corrected_late_because_of_the_timer_is_not() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(10);
        let sent = t0 + Duration::from_millis(11);
        // Previous answer came at 12 ms: the system held this request back.
        assert_eq!(
            measure_from(intended, t0 + Duration::from_millis(12), sent),
            intended
        );
        // Previous answer came at 5 ms: the worker idled; 1 ms late is the timer's doing.
        assert_eq!(
            measure_from(intended, t0 + Duration::from_millis(5), sent),
            sent
        );
    }

    #[test]
    fn record_corrected_measures_from_the_intended_time() {
        let mut h = histogram();
        let t0 = Instant::now();
        record_corrected(&mut h, t0, t0 + Duration::from_millis(5));
        record_corrected(&mut h, t0 + Duration::from_millis(9), t0); // done "before" intended: 1 µs
        assert_eq!(h.len(), 2);
        assert!(h.max() >= 4_990 && h.max() <= 5_010);
        assert_eq!(h.min(), 1);
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let h = |name, value| httparse::Header { name, value };
        let cl = [h("Content-Length", b"12".as_slice())];
        assert_eq!(framing(200, false, &cl).unwrap(), Framing::Length(12));
        // HEAD, 1xx, 204 and 304 have no body whatever the headers say.
        assert_eq!(framing(200, true, &cl).unwrap(), Framing::None);
        assert_eq!(framing(204, false, &cl).unwrap(), Framing::None);
        assert_eq!(framing(304, false, &cl).unwrap(), Framing::None);
        assert_eq!(framing(101, false, &cl).unwrap(), Framing::None);
        // Transfer-Encoding wins over Content-Length; chunked only if it is the last coding.
        let te = [h("transfer-encoding", b"gzip, Chunked".as_slice()), cl[0]];
        assert_eq!(framing(200, false, &te).unwrap(), Framing::Chunked);
        let te = [h("transfer-encoding", b"chunked, gzip".as_slice())];
        assert_eq!(framing(200, false, &te).unwrap(), Framing::UntilClose);
        assert_eq!(framing(200, false, &[]).unwrap(), Framing::UntilClose);
        // Repeated equal lengths are one length; differing ones are an error.
        let same = [h("content-length", b"5, 5".as_slice())];
        assert_eq!(framing(500, false, &same).unwrap(), Framing::Length(5));
        let bad = [
            h("content-length", b"5".as_slice()),
            h("content-length", b"6".as_slice()),
        ];
        assert!(framing(200, false, &bad).is_err());
    }

    #[test]
    fn request_bytes_and_header_checks() {
        let mut r = Request::get("localhost:8080", "/a?b=1");
        r.headers
            .push(Request::parse_header("X-Token:  abc ").unwrap());
        assert_eq!(
            r.encode(true),
            b"GET /a?b=1 HTTP/1.1\r\nhost: localhost:8080\r\nx-token: abc\r\nconnection: keep-alive\r\n\r\n"
        );
        r.method = "POST".into();
        r.body = b"hi".to_vec();
        r.headers = vec![Request::parse_header("Host: example").unwrap()];
        assert_eq!(
            r.encode(false),
            b"POST /a?b=1 HTTP/1.1\r\nhost: example\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi"
        );
        assert!(Request::parse_header("no colon").is_err());
        assert!(Request::parse_header("bad name: x").is_err());
        assert!(Request::parse_header("Content-Length: 3").is_err());
        assert!(Request::check_method("PURGE").is_ok());
        assert!(Request::check_method("GE T").is_err());
    }
}
