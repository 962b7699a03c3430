//! The admin server: `GET /metrics` (Prometheus text), `/live`, `/ready`, `/connections`
//! ([`connections`]), `GET`/`PUT /log-level`, `POST /reload` and `POST /shutdown`, served by hyper's HTTP/1
//! server on a tokio
//! current-thread runtime on the admin's own thread: never on a worker's core or event loop.
//! A scrape asks every worker for a copy of its counters and waits for them on a thread of
//! the runtime's blocking pool, so a slow scrape holds up no other admin request.
//!
//! Connections are served concurrently, one task each: an idle or slow client delays no probe
//! (kubelet's probes time out after 1 s). What a client can hold, and for how long:
//! - [`MAX_CONNECTIONS`] connections at once; past that, new ones wait in the listen backlog
//!   until one ends (mini-redis's semaphore before `accept`);
//! - a request head must arrive within [`HEADER_TIMEOUT`] (slowloris) and fit in
//!   [`MAX_REQUEST_HEAD`] bytes (431 otherwise); a `PUT /log-level` body within
//!   [`HEADER_TIMEOUT`] and [`logging::MAX_FILTER_BYTES`];
//! - one request per connection (`connection: close`), and a connection lives at most
//!   [`CONNECTION_DEADLINE`], whatever it waits for.
//!
//! `POST /shutdown`, `POST /reload`, `/log-level` and `/connections` are answered only from
//! loopback (the pod itself): the port may listen on `0.0.0.0` for the kubelet and
//! Prometheus, who only read probes and metrics.

pub mod connections;

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::mpsc::UnboundedSender;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::logging::{self, access::AccessStats};
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
    /// Configuration reloads: `[0]` applied, `[1]` rejected.
    pub reloads: [AtomicU64; 2],
    /// The last reload was applied (or none was tried).
    pub last_reload_ok: AtomicBool,
    /// When the running configuration was loaded (at start or by the last applied reload),
    /// milliseconds since the epoch.
    pub config_loaded_unix_ms: AtomicU64,
}

impl ReadyState {
    /// Readiness of `workers` workers, none listening yet.
    pub fn new(workers: usize) -> ReadyState {
        ReadyState {
            listening: AtomicUsize::new(0),
            workers,
            draining: AtomicBool::new(false),
            io_uring_workers: AtomicUsize::new(0),
            epoll_workers: AtomicUsize::new(0),
            reloads: Default::default(),
            last_reload_ok: AtomicBool::new(true),
            config_loaded_unix_ms: AtomicU64::new(unix_ms(SystemTime::now())),
        }
    }

    /// Counts a reload: applied (`ok`) or rejected.
    pub fn count_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        self.last_reload_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.config_loaded_unix_ms
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A `POST /reload`, handed to whoever owns the [`crate::server::Server`] (the binary's
/// main thread): it re-reads the configuration file, applies it, and answers on this
/// channel with a summary (`Ok`) or the reason it was rejected (`Err`, one line).
pub type ReloadRequest = std::sync::mpsc::SyncSender<Result<String, String>>;

impl ReadyState {
    /// True while every worker listens and no drain has begun.
    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) == self.workers
            && !self.draining.load(Ordering::Acquire)
    }
}

/// Handle to the running admin thread. Dropping it stops the server too (without waiting).
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the admin thread needs to answer scrapes.
pub struct Scrape {
    /// One control channel per worker.
    pub controls: Vec<UnboundedSender<Control>>,
    /// Each worker's last snapshot, standing in for a worker that misses a scrape.
    pub cache: ScrapeCache,
    /// Readiness.
    pub ready: Arc<ReadyState>,
    /// Process start, for `process_start_time_seconds`.
    pub started: SystemTime,
    /// Where `POST /shutdown` asks for a graceful shutdown; `None` when the endpoint is off
    /// (`admin.enable_shutdown = false`).
    pub shutdown: Option<std::sync::mpsc::SyncSender<()>>,
    /// Where `POST /reload` sends its request (see [`ReloadRequest`]).
    pub reload: std::sync::mpsc::Sender<ReloadRequest>,
    /// The access log's dropped-line counters (`sidewire_access_log_dropped_total`).
    pub access_log: Arc<AccessStats>,
    /// Upstream name resolutions (`sidewire_dns_*`).
    pub dns: Arc<crate::dns::DnsStats>,
}

/// Connections served at once: far more than a kubelet and a few scrapers open, few enough
/// that idle ones cost little (a task and a buffer of at most [`MAX_REQUEST_HEAD`] each).
pub const MAX_CONNECTIONS: usize = 256;
/// A request head (and a `PUT /log-level` body) must arrive within this long. Probes and
/// scrapers send theirs at once; an idle connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (hyper's smallest read buffer): admin requests are one line and a
/// few headers.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Longest life of one admin connection, whatever it waits for (a client that does not read
/// its answer, say): longer than any scrape, which waits [`SNAPSHOT_TIMEOUT`] per worker at
/// most.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);
/// Threads that render scrapes at once (the runtime's blocking pool); more scrapes queue.
const SCRAPE_THREADS: usize = 2;
/// Pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a scrape waits for one worker's snapshot before using its last one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `POST /reload` waits for the reload to be applied (binding new listeners and
/// every worker's answer take milliseconds; a worker that does not answer is reported).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

impl Admin {
    /// Starts serving on `listener`, on a new thread with its own (current-thread) runtime.
    pub fn spawn(listener: TcpListener, scrape: Scrape) -> io::Result<Admin> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(SCRAPE_THREADS)
            .thread_name("sidewire-scrape")
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sidewire-admin".into())
            .spawn(move || {
                rt.block_on(serve(listener, Arc::new(scrape), stopped));
                // A scrape still rendering is given up on, not waited for.
                rt.shutdown_timeout(SNAPSHOT_TIMEOUT);
            })?;
        Ok(Admin {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (open admin connections are dropped) and waits for its thread.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop: one task per connection, at most [`MAX_CONNECTIONS`] at once, until
/// `stopped` fires (or its sender is dropped).
async fn serve(listener: TcpListener, s: Arc<Scrape>, mut stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "admin server cannot use its socket");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            biased;
            _ = &mut stopped => return,
            slot = slots.clone().acquire_owned() => {
                slot.expect("invariant: the connection semaphore is never closed")
            }
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(tcp, peer, s.clone(), slot));
    }
}

/// Serves one connection (one request: `connection: close`) under the bounds in the module
/// docs; `slot` is its place among the [`MAX_CONNECTIONS`].
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    s: Arc<Scrape>,
    slot: OwnedSemaphorePermit,
) {
    let svc = service_fn(move |req| handle(req, peer, s.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), svc);
    match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, error = %e, "admin connection failed"),
        Err(_) => debug!(%peer, "admin connection closed after its deadline"),
    }
    drop(slot);
}

/// The body of every admin answer.
type Body = Full<Bytes>;

/// Routes one request. Paths and answers are those of the first, one-connection-at-a-time
/// server, texts included.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    s: Arc<Scrape>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if path == "/log-level" {
        return Ok(log_level(req, peer).await);
    }
    let method = req.method();
    let get = method == Method::GET || method == Method::HEAD;
    Ok(match path {
        "/shutdown" => shutdown(&s, method, peer),
        "/reload" => reload(s, method, peer).await,
        _ if !get => not_allowed("GET, HEAD", "only GET and HEAD\n"),
        "/metrics" => metrics(s).await,
        // Rows carry client addresses, SNI and the first bytes clients sent: for the pod
        // itself (and `kubectl port-forward`, which arrives on loopback), not the network.
        "/connections" if !is_local(peer) => text(
            StatusCode::FORBIDDEN,
            "/connections is only accepted from loopback\n",
        ),
        "/connections" => {
            let query = req.uri().query().unwrap_or_default().to_string();
            connections_answer(s, query).await
        }
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if s.ready.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /live, /ready, /connections, /log-level, POST /reload, POST /shutdown\n",
        ),
    })
}

/// `GET /metrics`: rendered on the blocking pool (it waits up to [`SNAPSHOT_TIMEOUT`] for
/// each worker), so other admin requests are answered meanwhile.
async fn metrics(s: Arc<Scrape>) -> Response<Body> {
    let rendered = tokio::task::spawn_blocking(move || {
        let mut text = render_metrics(&s);
        text.push_str(&s.access_log.render());
        text.push_str(&s.dns.render());
        text
    })
    .await;
    match rendered {
        Ok(body) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            body,
        ),
        Err(e) => {
            warn!(error = %e, "rendering metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
        }
    }
}

/// `GET /connections`: rendered on the blocking pool, as a scrape (it waits for the workers).
async fn connections_answer(s: Arc<Scrape>, query: String) -> Response<Body> {
    match tokio::task::spawn_blocking(move || render_connections(&s, &query)).await {
        Ok(Ok((ctype, body))) => respond(StatusCode::OK, ctype, body),
        Ok(Err(problem)) => text(StatusCode::BAD_REQUEST, problem),
        Err(e) => {
            warn!(error = %e, "listing connections failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "listing connections failed\n",
            )
        }
    }
}

/// Whether `peer` is this host's loopback (an IPv4 client of a dual-stack `[::]` socket
/// shows as `::ffff:127.0.0.1`).
fn is_local(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// `POST /shutdown`: a graceful shutdown, as SIGTERM (Linkerd's proxy has the same endpoint,
/// for Jobs: the app's last step calls it so the sidecar does not keep the pod alive).
fn shutdown(s: &Scrape, method: &Method, peer: SocketAddr) -> Response<Body> {
    let Some(tx) = &s.shutdown else {
        return text(
            StatusCode::NOT_FOUND,
            "the shutdown endpoint is off (admin.enable_shutdown = false)\n",
        );
    };
    // As Linkerd's: only from this pod (the admin port may listen on 0.0.0.0 for probes and
    // scrapes; a shutdown must not be anyone's on the network to ask for).
    if !is_local(peer) {
        return text(
            StatusCode::FORBIDDEN,
            "POST /shutdown is only accepted from loopback\n",
        );
    }
    if method != Method::POST {
        return not_allowed("POST", "POST /shutdown\n");
    }
    // A full channel means a shutdown was already asked for: the answer is the same.
    let _ = tx.try_send(());
    info!("shutdown requested on the admin port");
    text(StatusCode::ACCEPTED, "shutting down\n")
}

/// `POST /reload`: re-reads the configuration file and applies it, as SIGHUP; `200` with what
/// changed, `400` with the one-line reason a new configuration was rejected (the running one
/// stays), `503` when nothing serves reloads (a library embedding without a handler) or the
/// reload did not finish in [`RELOAD_TIMEOUT`]. Loopback only.
async fn reload(s: Arc<Scrape>, method: &Method, peer: SocketAddr) -> Response<Body> {
    if !is_local(peer) {
        return text(
            StatusCode::FORBIDDEN,
            "POST /reload is only accepted from loopback\n",
        );
    }
    if method != Method::POST {
        return not_allowed("POST", "POST /reload\n");
    }
    let answer = tokio::task::spawn_blocking(move || {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        s.reload.send(tx).ok()?;
        rx.recv_timeout(RELOAD_TIMEOUT).ok()
    })
    .await
    .ok()
    .flatten();
    match answer {
        Some(Ok(summary)) => text(StatusCode::OK, format!("{summary}\n")),
        Some(Err(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload not available, or it did not finish in time (see the log)\n",
        ),
    }
}

/// `GET /log-level`: the log filter in force; `PUT /log-level` with a filter (`RUST_LOG`
/// syntax) in the body: replaces it (400 with the parse error if it does not parse). Only
/// from loopback, as Linkerd's `/proxy-log-level`: a `trace` filter would have every
/// connection write lines, which is not for anyone on the network to switch on.
async fn log_level(req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(level) = logging::level() else {
        return text(
            StatusCode::NOT_FOUND,
            "/log-level is off: this process did not install sidewire's log subscriber\n",
        );
    };
    if !is_local(peer) {
        return text(
            StatusCode::FORBIDDEN,
            "/log-level is only accepted from loopback\n",
        );
    }
    match *req.method() {
        Method::GET | Method::HEAD => text(StatusCode::OK, format!("{}\n", level.current())),
        Method::PUT => {
            // A declared length over the limit is refused before waiting for the body (which
            // would end in a 408 after the body timeout).
            let declared = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > logging::MAX_FILTER_BYTES as u64) {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a filter has at most {} bytes\n", logging::MAX_FILTER_BYTES),
                );
            }
            let body = Limited::new(req.into_body(), logging::MAX_FILTER_BYTES).collect();
            let body = match tokio::time::timeout(HEADER_TIMEOUT, body).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a filter has at most {} bytes\n", logging::MAX_FILTER_BYTES),
                    )
                }
                Ok(Err(e)) => {
                    return text(StatusCode::BAD_REQUEST, format!("bad request body: {e}\n"))
                }
                Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body timeout\n"),
            };
            let Ok(filter) = std::str::from_utf8(&body) else {
                return text(StatusCode::BAD_REQUEST, "the filter is not UTF-8\n");
            };
            let was = level.current();
            match level.set(filter) {
                Ok(now) => {
                    info!(from = %was, to = %now, "log level changed on the admin port");
                    text(StatusCode::OK, format!("{now}\n"))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("bad filter: {e}\n")),
            }
        }
        _ => not_allowed("GET, HEAD, PUT", "GET or PUT /log-level\n"),
    }
}

/// A `405` with the `Allow` header RFC 9110 §15.5.6 requires: the methods the path accepts.
fn not_allowed(allow: &'static str, body: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, body);
    r.headers_mut()
        .insert(ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// A `text/plain` answer.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain", body)
}

/// An answer with `content-length` (hyper's, from the body; HEAD requests get the head
/// only) and `connection: close`.
fn respond(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    h.insert(CONNECTION, http::HeaderValue::from_static("close"));
    r
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
    let merged = s.cache.merge(answers);
    let labels: Vec<ListenerLabels> = merged
        .iter()
        .map(|l| prom::listener_labels(&l.listener, l.direction))
        .collect();
    let named: Vec<_> = labels.iter().zip(merged).collect();
    prom::render(&named, &process_info(s))
}

/// `GET /connections?QUERY` (the query without `?`): asks every worker for its connections
/// and renders them; `Ok((content type, body))`, or `Err(message)` for a bad query (a 400).
/// Workers that do not answer within [`SNAPSHOT_TIMEOUT`] (one deadline for all) are left
/// out; the reply counts the workers that answered.
pub fn render_connections(s: &Scrape, query: &str) -> Result<(&'static str, String), String> {
    let params = connections::parse(query)?;
    let pending: Vec<_> = s
        .controls
        .iter()
        .filter_map(|ctl| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let ask = Control::Connections(params.query.clone(), tx);
            ctl.unbounded_send(ask).ok().map(|()| rx)
        })
        .collect();
    let deadline = std::time::Instant::now() + SNAPSHOT_TIMEOUT;
    let reports = pending
        .into_iter()
        .filter_map(|rx| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            rx.recv_timeout(left)
                .map_err(|e| debug!(error = %e, "a worker did not answer /connections"))
                .ok()
        })
        .collect();
    connections::render(&params, reports, s.controls.len())
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
        reloads_ok: s.ready.reloads[0].load(Ordering::Relaxed),
        reloads_failed: s.ready.reloads[1].load(Ordering::Relaxed),
        last_reload_ok: s.ready.last_reload_ok.load(Ordering::Relaxed),
        config_loaded_seconds: s.ready.config_loaded_unix_ms.load(Ordering::Relaxed) as f64 / 1e3,
        task_panics: crate::task::panics(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_includes_ipv4_mapped_clients_of_dual_stack_sockets() {
        for (a, local) in [
            ("127.0.0.1:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("10.0.0.7:1", false),
            ("[::ffff:10.0.0.7]:1", false),
            ("[fd00::7]:1", false),
        ] {
            assert_eq!(is_local(a.parse().unwrap()), local, "{a}");
        }
    }

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
                Ok(Control::Connections(..) | Control::Reload { .. } | Control::Dns { .. }) => {}
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
            cache: ScrapeCache::default(),
            ready: Arc::new({
                let r = ReadyState::new(2);
                r.listening.store(2, Ordering::SeqCst);
                r.io_uring_workers.store(2, Ordering::SeqCst);
                r
            }),
            started: SystemTime::now(),
            shutdown: None,
            reload: std::sync::mpsc::channel().0,
            access_log: AccessStats::new(2),
            dns: Default::default(),
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
