//! One worker: a pinned thread running a monoio io_uring runtime that owns its own
//! `SO_REUSEPORT` listeners, its connections, its metrics and its pipe pool.
//!
//! Everything here is `Rc`/`Cell`/`RefCell`: nothing is shared with other workers. The only
//! cross-thread traffic is the [`Control`] channel from the admin thread and the supervisor
//! (metric snapshots, drain), which never touches a connection.
//!
//! Not here: binding sockets (the supervisor in `server` binds them so bind errors are
//! reported before any thread starts), per-connection logic (`conn`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::balance::{PeakEwma, DEFAULT_DECAY};
use crate::config::{Config, Http1Config, Http2Config, ListenerConfig, ServerFirst};
use crate::conn;
use crate::detect::{DetectSettings, PEEK_CAP};
use crate::metrics::{CoreSnapshot, HttpMetrics, ListenerMetrics, Protocol};
use crate::sys::Pipe;
use crate::upstream::{Balancer, UpConn};

/// Requests a worker answers from other threads.
#[derive(Debug)]
pub enum Control {
    /// Send a copy of this core's metrics.
    Snapshot(std::sync::mpsc::SyncSender<CoreSnapshot>),
    /// Stop accepting, let open connections finish within the grace period, then exit.
    Drain,
}

/// Empty pipes kept per core for reuse: creating one costs `pipe2` + `fcntl`, two syscalls
/// per direction per connection that churn-heavy traffic would otherwise pay. 128 pipes are
/// 256 fds and no pinned memory (an empty pipe holds no pages).
const PIPE_POOL_MAX: usize = 128;

/// One listener's per-core state.
#[derive(Debug)]
pub struct Listener {
    /// Its configuration.
    pub cfg: ListenerConfig,
    /// Its metrics on this core.
    pub metrics: ListenerMetrics,
    /// Endpoint choice on this core.
    pub balancer: Balancer,
    /// Detection settings for this listener.
    pub detect: DetectSettings,
    /// Destination ports that skip detection.
    pub opaque_ports: std::collections::BTreeSet<u16>,
    /// HTTP/1 proxy settings.
    pub http1: Http1Config,
    /// HTTP/2 proxy settings.
    pub http2: Http2Config,
    /// HTTP endpoint sets: `[0]` the listener's `upstream`, then one per route.
    pub http_sets: Vec<EndpointSet>,
    /// Idle upstream connections for HTTP/1: (endpoint, connection, idle since).
    pool: RefCell<Vec<(SocketAddr, UpConn, std::time::Instant)>>,
    /// HTTP/2 upstream connections (`upstream_protocol = "http2"`): one sender per endpoint.
    h2_conns: RefCell<Vec<(SocketAddr, crate::http2::H2Conn)>>,
    /// `upstream_protocol = "auto"`: endpoints learned to speak HTTP/2 (true) or not.
    h2_learned: RefCell<Vec<(SocketAddr, bool)>>,
}

/// Endpoints balanced per request (the listener's own, or a route's).
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// P2C over peak-EWMA latency.
    pub balancer: PeakEwma,
}

impl Listener {
    /// A pooled idle connection to endpoint `idx` that has not idled past the pool timeout.
    pub fn take_pooled(&self, addr: SocketAddr) -> Option<UpConn> {
        let mut pool = self.pool.borrow_mut();
        let timeout = self.http1.pool_idle_timeout;
        let now = std::time::Instant::now();
        pool.retain(|(_, _, since)| now.duration_since(*since) < timeout);
        let at = pool.iter().rposition(|(a, _, _)| *a == addr)?;
        Some(pool.swap_remove(at).1)
    }

    /// The pooled (or still dialling) HTTP/2 connection to `addr`, if any.
    pub fn h2_conn(&self, addr: SocketAddr) -> Option<crate::http2::H2Conn> {
        let conns = self.h2_conns.borrow();
        conns
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, s)| s.clone())
    }

    /// Pools `c` as the HTTP/2 connection to `addr` (replacing any older one).
    pub fn h2_pool(&self, addr: SocketAddr, c: crate::http2::H2Conn) {
        let mut conns = self.h2_conns.borrow_mut();
        conns.retain(|(a, _)| *a != addr);
        conns.push((addr, c));
    }

    /// What `upstream_protocol = "auto"` learned about `addr`: speaks HTTP/2 or not.
    pub fn h2_learned(&self, addr: SocketAddr) -> Option<bool> {
        let learned = self.h2_learned.borrow();
        learned.iter().find(|(a, _)| *a == addr).map(|(_, h2)| *h2)
    }

    /// Records what `addr` speaks.
    pub fn h2_learn(&self, addr: SocketAddr, h2: bool) {
        let mut learned = self.h2_learned.borrow_mut();
        learned.retain(|(a, _)| *a != addr);
        learned.push((addr, h2));
    }

    /// Drops the pooled HTTP/2 connection to `addr` (it failed).
    pub fn h2_forget(&self, addr: SocketAddr) {
        self.h2_conns.borrow_mut().retain(|(a, _)| *a != addr);
    }

    /// Returns a connection whose last response was fully read, if the pool has room.
    pub fn put_pooled(&self, addr: SocketAddr, s: UpConn) {
        let mut pool = self.pool.borrow_mut();
        if pool.len() < self.http1.pool_max_idle {
            pool.push((addr, s, std::time::Instant::now()));
        }
    }
}

/// A worker's state.
#[derive(Debug)]
pub struct Core {
    /// Worker index (0-based).
    pub id: usize,
    /// Listeners in config order.
    pub listeners: Vec<Rc<Listener>>,
    /// Capacity asked for each new pipe (`runtime.splice_pipe_bytes`).
    pub pipe_bytes: usize,
    /// Scratch buffer for detection peeks: borrowed only synchronously, never across an await.
    pub peek_buf: RefCell<Box<[u8]>>,
    pipes: RefCell<Vec<Pipe>>,
    pipe_size_refused: Cell<bool>,
    open: Cell<usize>,
    drained: RefCell<Option<oneshot::Sender<()>>>,
    /// Fires when the worker starts draining: accept loops stop, HTTP/2 connections send GOAWAY.
    stop: StopSignal,
}

/// A one-shot, core-local "start draining" signal. Awaiting it takes no lock and no atomic
/// (a cross-thread channel would, once per accepted connection). Waiters that go away free
/// their slot, so long-lived workers do not collect stale wakers.
#[derive(Debug, Default)]
struct StopSignal {
    fired: Cell<bool>,
    /// Wakers by slot; `None` marks a free slot.
    waiters: RefCell<Vec<Option<Waker>>>,
}

impl StopSignal {
    fn fire(&self) {
        self.fired.set(true);
        for w in self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
        {
            w.wake();
        }
    }
}

/// Resolves once the worker starts draining; see [`Core::draining`].
#[derive(Debug)]
pub struct Draining<'a> {
    signal: &'a StopSignal,
    slot: Option<usize>,
}

impl Future for Draining<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut waiters[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let i = match waiters.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        waiters.push(None);
                        waiters.len() - 1
                    }
                };
                waiters[i] = Some(cx.waker().clone());
                drop(waiters);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(w) = self.signal.waiters.borrow_mut().get_mut(i) {
                *w = None;
            }
        }
    }
}

/// Counts a connection as open for the drain until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    core: Rc<Core>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let n = self.core.open.get() - 1;
        self.core.open.set(n);
        if n == 0 {
            if let Some(tx) = self.core.drained.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Core {
    /// State for worker `id` serving `cfg`'s listeners.
    pub fn new(id: usize, cfg: &Config) -> Core {
        Core {
            id,
            listeners: cfg
                .listeners
                .iter()
                .map(|l| {
                    let mut metrics = ListenerMetrics::default();
                    for r in &l.routes {
                        metrics
                            .http
                            .push(HttpMetrics::new(&r.name, Protocol::Http1));
                        metrics.h2.push(HttpMetrics::new(&r.name, Protocol::Http2));
                    }
                    Rc::new(Listener {
                        cfg: l.clone(),
                        metrics,
                        balancer: Balancer::new(l.upstream.clone()),
                        detect: DetectSettings {
                            timeout: l.detect_timeout,
                            eager_dial: cfg.detect.server_first == ServerFirst::Eager,
                            dial_delay: cfg.detect.dial_delay,
                        },
                        opaque_ports: cfg.detect.opaque_ports.clone(),
                        http1: cfg.http1.clone(),
                        http2: cfg.http2.clone(),
                        http_sets: std::iter::once(&l.upstream)
                            .chain(l.routes.iter().map(|r| &r.upstream))
                            .enumerate()
                            .map(|(k, eps)| EndpointSet {
                                endpoints: eps.clone(),
                                balancer: PeakEwma::new(
                                    eps.len(),
                                    DEFAULT_DECAY,
                                    0x5eed ^ (id * 131 + k) as u64,
                                ),
                            })
                            .collect(),
                        pool: RefCell::new(Vec::new()),
                        h2_conns: RefCell::new(Vec::new()),
                        h2_learned: RefCell::new(Vec::new()),
                    })
                })
                .collect(),
            pipe_bytes: cfg.runtime.splice_pipe_bytes,
            peek_buf: RefCell::new(vec![0u8; PEEK_CAP].into_boxed_slice()),
            pipes: RefCell::new(Vec::new()),
            pipe_size_refused: Cell::new(false),
            open: Cell::new(0),
            drained: RefCell::new(None),
            stop: StopSignal::default(),
        }
    }

    /// Marks a connection open until the guard drops.
    pub fn track(self: &Rc<Self>) -> ConnGuard {
        self.open.set(self.open.get() + 1);
        ConnGuard { core: self.clone() }
    }

    /// Resolves when the worker starts draining.
    pub fn draining(&self) -> Draining<'_> {
        Draining {
            signal: &self.stop,
            slot: None,
        }
    }

    /// Open connections on this core.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// An empty pipe, from the pool or new.
    pub fn take_pipe(&self) -> io::Result<Pipe> {
        if let Some(p) = self.pipes.borrow_mut().pop() {
            return Ok(p);
        }
        let (p, granted) = Pipe::new(self.pipe_bytes)?;
        if !granted && !self.pipe_size_refused.replace(true) {
            warn!(
                core = self.id,
                bytes = self.pipe_bytes,
                "the kernel refused the splice pipe size (pipe-user-pages-soft or pipe-max-size); \
                 forwarding continues with smaller pipes and more syscalls"
            );
        }
        Ok(p)
    }

    /// Returns an **empty** pipe to the pool (or closes it when the pool is full).
    pub fn put_pipe(&self, p: Pipe) {
        let mut pool = self.pipes.borrow_mut();
        if pool.len() < PIPE_POOL_MAX {
            pool.push(p);
        }
    }

    /// This core's metric values.
    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            listeners: self
                .listeners
                .iter()
                .map(|l| l.metrics.snapshot())
                .collect(),
        }
    }

    /// Resolves once no connection is open.
    async fn wait_drained(&self) {
        if self.open.get() == 0 {
            return;
        }
        let (tx, rx) = oneshot::channel();
        *self.drained.borrow_mut() = Some(tx);
        let _ = rx.await;
    }
}

/// Accepts on one listener until `stop` fires, spawning a task per connection.
async fn accept_loop(core: Rc<Core>, listener: Rc<Listener>, socket: TcpListener) {
    let mut stop = pin!(core.draining());
    loop {
        let accepted = monoio::select! {
            _ = &mut stop => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(core.clone(), listener.clone(), stream, peer));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                debug!(listener = %listener.cfg.name, "accept: connection aborted by peer");
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the backlog keeps the clients; back off so the
                // worker does not spin while it cannot accept.
                warn!(listener = %listener.cfg.name, core = core.id, error = %e, "accept failed; retrying in 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!(listener = %listener.cfg.name, core = core.id, "stopped accepting");
}

/// The worker's main future: serve until drained, answering control requests throughout.
pub async fn run(
    core: Rc<Core>,
    sockets: Vec<std::net::TcpListener>,
    mut control: mpsc::UnboundedReceiver<Control>,
    grace: Duration,
    started: impl FnOnce(io::Result<()>),
) {
    let mut listening = Vec::with_capacity(sockets.len());
    for s in sockets {
        match TcpListener::from_std(s) {
            Ok(l) => listening.push(l),
            Err(e) => return started(Err(e)),
        }
    }
    for (l, socket) in core.listeners.iter().zip(listening) {
        monoio::spawn(accept_loop(core.clone(), l.clone(), socket));
    }
    started(Ok(()));

    // Serve control requests until told to drain (or the supervisor is gone).
    while let Some(msg) = control.next().await {
        match msg {
            Control::Snapshot(tx) => {
                let _ = tx.send(core.snapshot());
            }
            Control::Drain => break,
        }
    }
    core.stop.fire();
    let open = core.open_connections();
    if open > 0 {
        info!(
            core = core.id,
            open,
            grace_ms = grace.as_millis() as u64,
            "draining"
        );
    }
    let mut drained = pin!(core.wait_drained());
    let mut deadline = pin!(monoio::time::sleep(grace));
    let mut control_open = true;
    loop {
        monoio::select! {
            _ = &mut drained => break,
            _ = &mut deadline => {
                warn!(core = core.id, open = core.open_connections(), "grace period over; closing open connections");
                break;
            }
            msg = control.next(), if control_open => match msg {
                Some(Control::Snapshot(tx)) => { let _ = tx.send(core.snapshot()); }
                Some(Control::Drain) => {}
                None => control_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn stop_signal_wakes_every_waiter_and_frees_slots_of_dropped_ones() {
        let signal = StopSignal::default();
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let wait = || Draining {
            signal: &signal,
            slot: None,
        };

        let mut a = Box::pin(wait());
        let mut b = Box::pin(wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        // Polling again keeps one slot per waiter.
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters.borrow().len(), 2);

        // A waiter that goes away frees its slot for the next one.
        drop(b);
        let mut c = Box::pin(wait());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters.borrow().len(), 2);

        signal.fire();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(c.as_mut().poll(&mut cx).is_ready());
        // After the signal fired, a new waiter is ready at once.
        assert!(Box::pin(wait()).as_mut().poll(&mut cx).is_ready());
    }
}
