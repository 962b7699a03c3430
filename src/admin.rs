//! The admin server: `GET /metrics` (Prometheus text), `/live`, `/ready`, on its own thread
//! with blocking std sockets, so a scrape never runs on (or waits for) a worker's event loop
//! beyond the worker copying its counters.
//!
//! One request per connection (`Connection: close`), read and write timeouts of one second:
//! admin traffic is a scraper and a kubelet, not a load to optimise, and a stuck client can
//! hold the thread for at most that long.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_channel::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::metrics::prom::{self, ListenerLabels, ProcessInfo};
use crate::metrics::{process, ScrapeCache};
use crate::sys;
use crate::worker::Control;

/// Readiness, shared between the supervisor, the workers (at start) and the admin thread.
#[derive(Debug)]
pub struct ReadyState {
    /// Workers whose listeners are accepting.
    pub listening: AtomicUsize,
    /// Total workers.
    pub workers: usize,
    /// Set once shutdown began.
    pub draining: AtomicBool,
    /// Workers running on io_uring.
    pub io_uring_workers: AtomicUsize,
    /// Workers running on epoll (io_uring refused, or `runtime.driver = "epoll"`).
    pub epoll_workers: AtomicUsize,
}

impl ReadyState {
    /// True while every worker listens and no drain has begun.
    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) == self.workers
            && !self.draining.load(Ordering::Acquire)
    }
}

/// Handle to the running admin thread.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the admin thread needs to answer scrapes.
pub struct Scrape {
    /// One control channel per worker.
    pub controls: Vec<UnboundedSender<Control>>,
    /// Each listener's labels in config order (`listener="…",direction="…",tls="…"`, from
    /// [`prom::listener_labels`]).
    pub listeners: Vec<ListenerLabels>,
    /// Each worker's last snapshot, standing in for a worker that misses a scrape.
    pub cache: ScrapeCache,
    /// Readiness.
    pub ready: Arc<ReadyState>,
    /// Process start, for `process_start_time_seconds`.
    pub started: SystemTime,
    /// Where `POST /shutdown` asks for a graceful shutdown; `None` when the endpoint is off
    /// (`admin.enable_shutdown = false`).
    pub shutdown: Option<std::sync::mpsc::SyncSender<()>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a scrape waits for one worker's snapshot before using its last one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_REQUEST_HEAD: usize = 8192;

impl Admin {
    /// Starts serving on `listener`.
    pub fn spawn(listener: TcpListener, scrape: Scrape) -> io::Result<Admin> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sidewire-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(c) => {
                            if let Err(e) = handle(c, &scrape) {
                                debug!(error = %e, "admin request failed");
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "admin accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(Admin {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut c: TcpStream, s: &Scrape) -> io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut c,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
                false,
            );
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    if path == b"/shutdown" {
        return shutdown(&mut c, s, method);
    }
    if method != b"GET" && !head_only {
        return respond(
            &mut c,
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            head_only,
        );
    }
    match path {
        b"/metrics" => {
            let body = render_metrics(s);
            respond(
                &mut c,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
        }
        b"/live" => respond(&mut c, "200 OK", "text/plain", "live\n", head_only),
        b"/ready" if s.ready.is_ready() => {
            respond(&mut c, "200 OK", "text/plain", "ready\n", head_only)
        }
        b"/ready" => respond(
            &mut c,
            "503 Service Unavailable",
            "text/plain",
            "not ready\n",
            head_only,
        ),
        _ => respond(
            &mut c,
            "404 Not Found",
            "text/plain",
            "not found: try /metrics, /live, /ready, POST /shutdown\n",
            head_only,
        ),
    }
}

/// `POST /shutdown`: a graceful shutdown, as SIGTERM (Linkerd's proxy has the same endpoint,
/// for Jobs: the app's last step calls it so the sidecar does not keep the pod alive).
fn shutdown(c: &mut TcpStream, s: &Scrape, method: &[u8]) -> io::Result<()> {
    let Some(tx) = &s.shutdown else {
        return respond(
            c,
            "404 Not Found",
            "text/plain",
            "the shutdown endpoint is off (admin.enable_shutdown = false)\n",
            false,
        );
    };
    // As Linkerd's: only from this pod (the admin port may listen on 0.0.0.0 for probes and
    // scrapes; a shutdown must not be anyone's on the network to ask for).
    if !c.peer_addr().is_ok_and(|a| a.ip().is_loopback()) {
        return respond(
            c,
            "403 Forbidden",
            "text/plain",
            "POST /shutdown is only accepted from loopback\n",
            false,
        );
    }
    if method != b"POST" {
        return respond(
            c,
            "405 Method Not Allowed",
            "text/plain",
            "POST /shutdown\n",
            false,
        );
    }
    // A full channel means a shutdown was already asked for: the answer is the same.
    let _ = tx.try_send(());
    tracing::info!("shutdown requested on the admin port");
    respond(c, "202 Accepted", "text/plain", "shutting down\n", false)
}

fn respond(
    c: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    if !head_only {
        c.write_all(body.as_bytes())?;
    }
    c.flush()
}

/// Asks every worker for its snapshot, merges them per listener (a worker that does not answer
/// in time contributes its last snapshot) and renders the text.
pub fn render_metrics(s: &Scrape) -> String {
    let pending: Vec<_> = s
        .controls
        .iter()
        .map(|ctl| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            ctl.unbounded_send(Control::Snapshot(tx)).ok().map(|()| rx)
        })
        .collect();
    // One deadline for the whole scrape, so a stuck worker costs it at most that once.
    let deadline = std::time::Instant::now() + SNAPSHOT_TIMEOUT;
    let answers = pending
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx?.recv_timeout(left) {
                Ok(core) => Some(core),
                Err(e) => {
                    debug!(worker = i, error = %e, "a worker did not answer the scrape; using its last snapshot");
                    None
                }
            }
        })
        .collect();
    let merged = s.cache.merge(answers, s.listeners.len());
    let named: Vec<_> = s.listeners.iter().zip(merged).collect();
    prom::render(&named, &process_info(s))
}

fn process_info(s: &Scrape) -> ProcessInfo {
    let status = process::status();
    ProcessInfo {
        io_uring_workers: s.ready.io_uring_workers.load(Ordering::Relaxed),
        epoll_workers: s.ready.epoll_workers.load(Ordering::Relaxed),
        cpu_seconds: sys::process_cpu_micros() as f64 / 1e6,
        resident_bytes: status.resident_bytes,
        virtual_bytes: status.virtual_bytes,
        threads: status.threads,
        open_fds: process::open_fds(),
        max_fds: process::max_fds(),
        start_time_seconds: s
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        workers: s.controls.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Direction;
    use crate::metrics::{CoreSnapshot, ListenerMetrics};
    use futures_channel::mpsc::{unbounded, UnboundedReceiver};
    use std::sync::atomic::AtomicU64;

    /// A fake worker: answers each snapshot request with `opened` connections, or, while
    /// `slow` is set, only after the scrape's deadline has passed.
    fn fake_worker(
        mut rx: UnboundedReceiver<Control>,
        opened: Arc<AtomicU64>,
        slow: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        std::thread::spawn(move || loop {
            match rx.try_recv() {
                Ok(Control::Snapshot(tx)) => {
                    if slow.load(Ordering::SeqCst) {
                        std::thread::sleep(SNAPSHOT_TIMEOUT + Duration::from_millis(300));
                    }
                    let m = ListenerMetrics::default();
                    let c = m.src_for("10.0.0.1:80".parse().unwrap());
                    for _ in 0..opened.load(Ordering::SeqCst) {
                        c.opened();
                    }
                    let _ = tx.send(CoreSnapshot {
                        listeners: vec![m.snapshot()],
                    });
                }
                Ok(Control::Drain) | Err(futures_channel::mpsc::TryRecvError::Closed) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        })
    }

    fn opened_total(text: &str) -> u64 {
        text.lines()
            .find(|l| l.starts_with("tcp_open_total{") && l.contains("peer=\"src\""))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no tcp_open_total in\n{text}"))
    }

    #[test]
    fn a_slow_worker_contributes_its_last_snapshot_and_counters_never_go_back() {
        let (fast_tx, fast_rx) = unbounded();
        let (slow_tx, slow_rx) = unbounded();
        let (fast_n, slow_n) = (Arc::new(AtomicU64::new(3)), Arc::new(AtomicU64::new(4)));
        let (never, slow) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let workers = [
            fake_worker(fast_rx, fast_n.clone(), never),
            fake_worker(slow_rx, slow_n.clone(), slow.clone()),
        ];
        let scrape = Scrape {
            controls: vec![fast_tx.clone(), slow_tx.clone()],
            listeners: vec![prom::listener_labels("t", Direction::Outbound)],
            cache: ScrapeCache::default(),
            ready: Arc::new(ReadyState {
                listening: AtomicUsize::new(2),
                workers: 2,
                draining: AtomicBool::new(false),
                io_uring_workers: AtomicUsize::new(2),
                epoll_workers: AtomicUsize::new(0),
            }),
            started: SystemTime::now(),
            shutdown: None,
        };
        assert_eq!(opened_total(&render_metrics(&scrape)), 7);
        // The second worker now misses the deadline: its last answer (4) stands in, so the
        // total does not drop to 5.
        fast_n.store(5, Ordering::SeqCst);
        slow_n.store(9, Ordering::SeqCst);
        slow.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        assert_eq!(opened_total(&render_metrics(&scrape)), 9);
        assert!(t.elapsed() < SNAPSHOT_TIMEOUT + Duration::from_millis(500));
        // Back in time: its new values count.
        slow.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400)); // the late answer is drained
        assert_eq!(opened_total(&render_metrics(&scrape)), 14);
        drop(scrape);
        drop((fast_tx, slow_tx));
        for w in workers {
            w.join().unwrap();
        }
    }
}
