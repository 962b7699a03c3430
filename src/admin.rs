//! The admin server: `GET /metrics` (Prometheus text), `/live`, `/ready`, `/connections`
//! ([`connections`]), on its own thread
//! with blocking std sockets, so a scrape never runs on (or waits for) a worker's event loop
//! beyond the worker copying its counters.
//!
//! One request per connection (`Connection: close`), read and write timeouts of one second:
//! admin traffic is a scraper and a kubelet, not a load to optimise, and a stuck client can
//! hold the thread for at most that long.

pub mod connections;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_channel::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::metrics::prom::{self, ProcessInfo};
use crate::metrics::ListenerSnapshot;
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
    /// Each listener's labels in config order (`listener="…",direction="…"`, from
    /// [`prom::listener_labels`]).
    pub listeners: Vec<String>,
    /// Readiness.
    pub ready: Arc<ReadyState>,
    /// Process start, for `process_start_time_seconds`.
    pub started: SystemTime,
    /// Where `POST /shutdown` asks for a graceful shutdown; `None` when the endpoint is off
    /// (`admin.enable_shutdown = false`).
    pub shutdown: Option<std::sync::mpsc::SyncSender<()>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a scrape waits for one worker's snapshot before leaving it out.
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
    let query = target.get(path.len() + 1..).unwrap_or_default();
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
        b"/connections" => {
            let answer = std::str::from_utf8(query)
                .map_err(|_| "the query is not UTF-8\n".to_string())
                .and_then(|q| render_connections(s, q));
            match answer {
                Ok((ctype, body)) => respond(&mut c, "200 OK", ctype, &body, head_only),
                Err(e) => respond(&mut c, "400 Bad Request", "text/plain", &e, head_only),
            }
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
            "not found: try /metrics, /live, /ready, /connections, POST /shutdown\n",
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

/// Asks every worker for its snapshot, merges them per listener and renders the text.
pub fn render_metrics(s: &Scrape) -> String {
    let mut merged: Vec<ListenerSnapshot> = s
        .listeners
        .iter()
        .map(|_| ListenerSnapshot::default())
        .collect();
    let mut pending = Vec::with_capacity(s.controls.len());
    for ctl in &s.controls {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if ctl.unbounded_send(Control::Snapshot(tx)).is_ok() {
            pending.push(rx);
        }
    }
    for rx in pending {
        match rx.recv_timeout(SNAPSHOT_TIMEOUT) {
            Ok(core) => {
                for (m, l) in merged.iter_mut().zip(&core.listeners) {
                    m.merge(l);
                }
            }
            Err(e) => debug!(error = %e, "a worker did not answer the scrape"),
        }
    }
    let named: Vec<(&str, ListenerSnapshot)> =
        s.listeners.iter().map(String::as_str).zip(merged).collect();
    prom::render(&named, &process_info(s))
}

/// `GET /connections?QUERY` (the query without `?`): asks every worker for its connections
/// and renders them; `Ok((content type, body))`, or `Err(message)` for a bad query (a 400).
/// A worker that does not answer within [`SNAPSHOT_TIMEOUT`] is left out (the reply counts
/// the workers that answered).
pub fn render_connections(s: &Scrape, query: &str) -> Result<(&'static str, String), String> {
    let params = connections::parse(query)?;
    let mut pending = Vec::with_capacity(s.controls.len());
    for ctl in &s.controls {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if ctl
            .unbounded_send(Control::Connections(params.query.clone(), tx))
            .is_ok()
        {
            pending.push(rx);
        }
    }
    let mut reports = Vec::with_capacity(pending.len());
    for rx in pending {
        match rx.recv_timeout(SNAPSHOT_TIMEOUT) {
            Ok(r) => reports.push(r),
            Err(e) => debug!(error = %e, "a worker did not answer /connections"),
        }
    }
    connections::render(&params, reports, s.controls.len())
}

fn process_info(s: &Scrape) -> ProcessInfo {
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    ProcessInfo {
        io_uring_workers: s.ready.io_uring_workers.load(Ordering::Relaxed),
        epoll_workers: s.ready.epoll_workers.load(Ordering::Relaxed),
        cpu_seconds: sys::process_cpu_micros() as f64 / 1e6,
        resident_bytes: rss_kb * 1024,
        open_fds: std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        start_time_seconds: s
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        workers: s.controls.len(),
    }
}
