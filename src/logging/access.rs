//! The access log: one line per HTTP request (HTTP/1 request or HTTP/2 stream) when
//! `[log] access = true`, written through the process's subscriber (so plain or JSON like
//! every other line) with target [`TARGET`].
//!
//! The proxies call [`log`] where they count a finished response (`response_total`), and
//! [`Request::capture`] when they read a request head; both cost one thread-local load when
//! the access log is off. When it is on, each worker spends at most its token bucket
//! (`access_lines_per_second`, `access_burst_lines`): a line costs a few microseconds to
//! format and write, so a flood of requests cannot turn into a core spent logging. Lines over
//! the budget are dropped and counted ([`AccessStats`], `sidewire_access_log_dropped_total`).
//!
//! Per worker, not per process: each worker thread keeps its own bucket in a thread-local
//! ([`start_worker`]), so taking a token touches nothing shared; only a dropped line writes
//! its worker's own counter slot.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::AccessLogConfig;

/// The `tracing` target of access log lines: they pass the log level filter regardless.
pub const TARGET: &str = "sidewire::access";

/// Dropped access log lines, one counter per worker (each written by its own worker only).
#[derive(Debug)]
pub struct AccessStats {
    dropped: Box<[Slot]>,
}

/// One worker's counter, alone on its cache line (workers that drop at once do not share one).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

impl AccessStats {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Arc<AccessStats> {
        Arc::new(AccessStats {
            dropped: (0..workers).map(|_| Slot::default()).collect(),
        })
    }

    /// Lines dropped by every worker so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }

    /// `sidewire_access_log_dropped_total` in the Prometheus text format.
    pub fn render(&self) -> String {
        format!(
            "# HELP sidewire_access_log_dropped_total Access log lines dropped by the per-worker rate limit ([log] access_lines_per_second, access_burst_lines).\n\
             # TYPE sidewire_access_log_dropped_total counter\n\
             sidewire_access_log_dropped_total {}\n",
            self.dropped()
        )
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` held; starts full.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(cfg: AccessLogConfig, now: Instant) -> Bucket {
        Bucket {
            rate: f64::from(cfg.lines_per_second),
            burst: f64::from(cfg.burst_lines),
            tokens: f64::from(cfg.burst_lines),
            last: now,
        }
    }

    /// Takes a token if one is there.
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// This worker's bucket and where its drops are counted.
#[derive(Debug)]
struct Limiter {
    bucket: Bucket,
    stats: Arc<AccessStats>,
    worker: usize,
}

thread_local! {
    /// Whether this thread's requests are logged (the fast check on every request).
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIMITER: RefCell<Option<Limiter>> = const { RefCell::new(None) };
}

/// Sets up the access log of the worker running on this thread: off for `None`, else with
/// its own token bucket, its drops counted in `stats` slot `worker`.
pub fn start_worker(cfg: Option<AccessLogConfig>, stats: Arc<AccessStats>, worker: usize) {
    let limiter = cfg.map(|cfg| Limiter {
        bucket: Bucket::new(cfg, Instant::now()),
        stats,
        worker,
    });
    ON.with(|on| on.set(limiter.is_some()));
    LIMITER.with(|l| *l.borrow_mut() = limiter);
}

/// Whether this thread logs requests.
#[inline]
pub fn enabled() -> bool {
    ON.with(Cell::get)
}

/// A token for one line, or `false` (and the drop counted).
fn allowed() -> bool {
    LIMITER.with(|l| {
        let mut l = l.borrow_mut();
        let Some(l) = l.as_mut() else {
            return false;
        };
        if l.bucket.take(Instant::now()) {
            return true;
        }
        if let Some(slot) = l.stats.dropped.get(l.worker) {
            // One writer per slot: no read-modify-write needed.
            slot.0
                .store(slot.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        false
    })
}

/// What the access log keeps of a request head: captured when it is read, because the head
/// itself is forwarded (and gone) by the time the response ends.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    authority: String,
    path: String,
}

impl Request {
    /// A copy of the request's method, authority (Host or `:authority`) and target, when this
    /// thread logs requests; else `None`, at no cost.
    #[inline]
    pub fn capture(method: &str, authority: Option<&str>, path: &str) -> Option<Request> {
        enabled().then(|| Request {
            method: method.to_string(),
            authority: authority.unwrap_or("-").to_string(),
            path: path.to_string(),
        })
    }
}

/// One finished request, as the access log line tells it.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `http/1` or `http/2`.
    pub protocol: &'static str,
    /// The client's address.
    pub client: SocketAddr,
    /// The request ([`Request::capture`]); `None` for a head that could not be parsed.
    pub request: Option<&'a Request>,
    /// The status sent to the client (the proxy's own, for its own answers).
    pub status: u16,
    /// When the request head had been read.
    pub started: Instant,
    /// Response body bytes sent to the client (HTTP/1: as framed on the wire).
    pub bytes: u64,
    /// The endpoint the request went to, if one was picked.
    pub upstream: Option<SocketAddr>,
}

/// Writes `e`'s access log line, if this thread logs requests and its token bucket allows;
/// the one place access log lines come from.
#[inline]
pub fn log(e: &Entry<'_>) {
    if enabled() && allowed() {
        write(e, e.started.elapsed());
    }
}

#[cold]
fn write(e: &Entry<'_>, duration: Duration) {
    let (method, authority, path) = e.request.map_or(("-", "-", "-"), |r| {
        (r.method.as_str(), r.authority.as_str(), r.path.as_str())
    });
    let upstream = e
        .upstream
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    tracing::info!(
        target: TARGET,
        listener = e.listener,
        direction = e.direction,
        protocol = e.protocol,
        client = %e.client,
        method,
        authority,
        path,
        status = e.status,
        duration_us = duration.as_micros() as u64,
        bytes = e.bytes,
        upstream = upstream.as_str(),
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            AccessLogConfig {
                lines_per_second: 10,
                burst_lines: 3,
            },
            t0,
        );
        assert!((0..3).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0), "then empty");
        // 10 a second: one token per 100 ms, never more than the burst.
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..10).filter(|_| b.take(later)).count(),
            3,
            "capped at the burst"
        );
    }

    #[test]
    fn drops_are_counted_per_worker_and_off_logs_nothing() {
        let stats = AccessStats::new(2);
        start_worker(None, stats.clone(), 1);
        assert!(!enabled() && Request::capture("GET", None, "/").is_none());
        assert!(!allowed());
        start_worker(
            Some(AccessLogConfig {
                lines_per_second: 1,
                burst_lines: 2,
            }),
            stats.clone(),
            1,
        );
        let r = Request::capture("GET", None, "/x").expect("on");
        assert_eq!((r.method.as_str(), r.authority.as_str()), ("GET", "-"));
        let allowed_now = (0..5).filter(|_| allowed()).count();
        assert_eq!(allowed_now, 2);
        assert_eq!(stats.dropped(), 3);
        assert!(stats
            .render()
            .contains("sidewire_access_log_dropped_total 3\n"));
        start_worker(None, stats, 0);
    }
}
