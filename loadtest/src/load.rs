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
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
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

    /// Waits for the next send slot and returns its intended time.
    pub async fn wait(&mut self) -> Instant {
        match self.interval {
            Some(iv) => {
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
        }
    }
}

/// Records one latency: from `from` (see [`measure_from`]) to completion.
pub fn record_corrected(h: &mut Histogram<u64>, intended: Instant, done: Instant) {
    let us = done.saturating_duration_since(intended).as_micros() as u64;
    h.saturating_record(us.max(1));
}

impl Sample {
    fn empty() -> Sample {
        Sample {
            ops: 0,
            errors: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            hist: histogram(),
        }
    }

    fn merge(&mut self, o: &Sample) {
        self.ops += o.ops;
        self.errors += o.errors;
        self.bytes += o.bytes;
        let _ = self.hist.add(&o.hist);
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// HTTP/1.1 load settings.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    /// Where to send requests.
    pub target: SocketAddr,
    /// Concurrent connections (one thread each).
    pub connections: usize,
    /// Total requests per second across connections; `None` = closed loop.
    pub rate: Option<f64>,
    /// How long to run.
    pub duration: Duration,
    /// Reuse connections (keep-alive) or open one per request.
    pub keepalive: bool,
    /// Request body bytes (POST when > 0).
    pub request_bytes: usize,
}

/// Runs HTTP/1.1 load and returns the merged sample. All connections run as tasks on one
/// tokio current-thread runtime on the calling thread (one thread per load core: the suite
/// pins it), so a few hundred connections cost no more threads than one.
pub fn http1(cfg: &HttpLoad) -> Result<Sample> {
    let conns = cfg.connections.max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let req: std::rc::Rc<[u8]> = request(cfg.request_bytes, cfg.keepalive).into();
    let duration = cfg.duration;
    let cfg = cfg.clone();
    let total = local.block_on(&rt, async move {
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + cfg.duration;
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                let cfg = cfg.clone();
                let req = req.clone();
                let pacer = Pacer::new(start, cfg.rate, i, conns);
                tokio::task::spawn_local(
                    async move { http1_conn(&cfg, &req, pacer, start, end).await },
                )
            })
            .collect();
        let mut total = Sample::empty();
        for t in tasks {
            if let Ok(s) = t.await {
                total.merge(&s);
            }
        }
        total
    });
    let mut total = total;
    total.elapsed = duration;
    Ok(total)
}

fn request(body: usize, keepalive: bool) -> Vec<u8> {
    let conn = if keepalive { "keep-alive" } else { "close" };
    let mut r = if body > 0 {
        format!("POST /load HTTP/1.1\r\nhost: loadtest\r\nconnection: {conn}\r\ncontent-length: {body}\r\n\r\n")
    } else {
        format!("GET /load HTTP/1.1\r\nhost: loadtest\r\nconnection: {conn}\r\n\r\n")
    }
    .into_bytes();
    r.extend(std::iter::repeat_n(b'y', body));
    r
}

async fn http1_conn(
    cfg: &HttpLoad,
    req: &[u8],
    mut pacer: Pacer,
    start: Instant,
    end: Instant,
) -> Sample {
    let mut s = Sample::empty();
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut prev_done = start;
    loop {
        let intended = pacer.wait().await;
        if intended >= end {
            break;
        }
        let from = measure_from(intended, prev_done, Instant::now());
        let reused = conn.is_some();
        let mut result = exchange(cfg, &mut conn, req, &mut buf).await;
        if result.is_err() && reused {
            // A reused connection the server closed between requests (keep-alive limits):
            // like any HTTP client, retry once on a fresh connection; only then it is an error.
            conn = None;
            result = exchange(cfg, &mut conn, req, &mut buf).await;
        }
        prev_done = Instant::now();
        match result {
            Ok(n) => {
                record_corrected(&mut s.hist, from, prev_done);
                s.ops += 1;
                s.bytes += n as u64;
                if !cfg.keepalive {
                    conn = None;
                }
            }
            Err(_) => {
                s.errors += 1;
                conn = None;
            }
        }
    }
    s
}

/// Sends one request (connecting first if needed) and reads its response.
async fn exchange(
    cfg: &HttpLoad,
    conn: &mut Option<tokio::net::TcpStream>,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use tokio::io::AsyncWriteExt;
    if conn.is_none() {
        let c = tokio::net::TcpStream::connect(cfg.target).await?;
        c.set_nodelay(true)?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    c.write_all(req).await?;
    match tokio::time::timeout(Duration::from_secs(10), read_response(c, buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads one response (head + Content-Length body); returns the body length.
async fn read_response(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut have = 0;
    loop {
        let n = c.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..have]) {
            Ok(httparse::Status::Complete(head)) => {
                if resp.code != Some(200) {
                    return Err(std::io::Error::other(format!("status {:?}", resp.code)));
                }
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .ok_or_else(|| std::io::Error::other("no content-length"))?;
                let mut got = have - head;
                while got < len {
                    let n = c.read(&mut buf[..]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    got += n;
                }
                return Ok(len);
            }
            Ok(httparse::Status::Partial) => {
                if have == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// Sends `total` bytes to a sink through `target`, half-closes, waits for the close.
pub fn bulk(target: SocketAddr, total: u64) -> Result<Sample> {
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
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
    bytes: usize,
) -> Result<Sample> {
    let end = Instant::now() + duration;
    let handles: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = Sample::empty();
                let payload = vec![b'x'; bytes];
                let mut back = vec![0u8; bytes];
                while Instant::now() < end {
                    let t0 = Instant::now();
                    match one_conn(target, &payload, &mut back) {
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
    total.elapsed = duration;
    Ok(total)
}

fn one_conn(target: SocketAddr, payload: &[u8], back: &mut [u8]) -> std::io::Result<()> {
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
pub fn first_byte(target: SocketAddr, count: usize) -> Result<Sample> {
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

    #[test]
    fn a_stall_shows_up_in_p99_under_open_loop() {
        // 1,000 req/s on one connection for 1 s; the first answer stalls 200 ms. Requests due
        // during the stall could not be sent; measured from their intended send times, about
        // 200 of them wait up to 200 ms, so p99 must be near the stall, not near the
        // sub-millisecond service time (which is what an uncorrected client would report).
        let addr = stalling_server(Duration::from_millis(200));
        let s = http1(&HttpLoad {
            target: addr,
            connections: 1,
            rate: Some(1000.0),
            duration: Duration::from_secs(1),
            keepalive: true,
            request_bytes: 0,
        })
        .unwrap();
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
}
