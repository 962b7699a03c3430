//! Per-core state: one worker's listeners (config, metrics, balancers, pools), its pipe pool,
//! its detection scratch buffer, the drain bookkeeping (open connections, stop signal), and
//! its table of connections for `GET /connections` ([`connections`]).
//!
//! Everything here is `Rc`/`Cell`/`RefCell`: nothing is shared with other workers.
//!
//! Not here: the worker loop and its control channel (`worker`), the accept loop (`accept`),
//! binding sockets (`server`), per-connection logic (`conn`).

pub mod connections;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;

use self::connections::{Connections, ListenerInfo, Query, Report};
use crate::config::{Config, Http1Config, Http2Config, ListenerConfig};
use crate::detect::{DetectSettings, PortPlan, PEEK_CAP};
use crate::forward::PipePool;
use crate::metrics::{AuthorityId, CoreSnapshot, HttpMetrics, ListenerMetrics, Protocol, TargetId};
use crate::upstream::balance::{EndpointSet, InFlight};
use crate::upstream::pool::Pools;
use crate::upstream::{Balancer, Target};

/// One listener's per-core state.
#[derive(Debug)]
pub struct Listener {
    /// Its index in the config (and in [`Core::listeners`]).
    pub index: usize,
    /// Its configuration.
    pub cfg: ListenerConfig,
    /// Its metrics on this core.
    pub metrics: ListenerMetrics,
    /// Endpoint choice on this core.
    pub balancer: Balancer,
    /// Detection settings for this listener.
    pub detect: DetectSettings,
    /// Per destination port: skip detection (declared protocol, opaque port) or its timeout.
    pub ports: PortPlan,
    /// HTTP/1 proxy settings.
    pub http1: Http1Config,
    /// HTTP/2 proxy settings.
    pub http2: Http2Config,
    /// HTTP endpoint sets: `[0]` the listener's `upstream`, then one per route.
    pub http_sets: Vec<EndpointSet>,
    /// Upstream connection pools (HTTP/1 idle connections, HTTP/2 connections).
    pub pools: Pools,
}

impl Listener {
    /// The endpoint set for route index `route` (0 = the listener's own upstream, i + 1 =
    /// route i), as [`RouteConfig::select`](crate::config::RouteConfig::select) numbers them.
    pub fn endpoints(&self, route: usize) -> &EndpointSet {
        &self.http_sets[route]
    }
}

/// Where one connection's HTTP requests go when no route takes them, and the series they
/// count in: the listener's own endpoint set (route `default`), or, on an
/// original-destination listener, the connection's original destination. Routes keep their
/// own endpoints either way. Each request's series is labelled with the endpoint it went to
/// (`target_addr`) and, outbound, its authority; the last one is cached, since a connection's
/// requests usually share them.
#[derive(Debug, Clone)]
pub struct HttpDest {
    /// The connection's destination: its original destination, or the endpoint picked at
    /// accept (what a request answered before any endpoint was picked is counted under).
    addr: SocketAddr,
    /// `addr` is the original destination (requests no route takes go there).
    original: bool,
    /// The last series used, shared by the connection's HTTP/2 streams.
    last: Rc<RefCell<Option<LastSeries>>>,
}

/// The series a connection used last, with the key it was found by.
type LastSeries = (SeriesKey, Rc<HttpMetrics>);

/// What picks an HTTP series for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeriesKey {
    route: usize,
    protocol: Protocol,
    target: TargetId,
    authority: AuthorityId,
}

/// One request's claim on the endpoint it was sent to: report the time to the response head
/// with [`EndpointClaim::done`] (it feeds the balancer; an original destination has none).
#[derive(Debug)]
pub struct EndpointClaim(Option<InFlight>);

impl EndpointClaim {
    /// The response head arrived after `rtt`.
    pub fn done(self, rtt: Duration) {
        if let Some(f) = self.0 {
            f.done(rtt);
        }
    }
}

impl HttpDest {
    /// The destination of connections to `target`.
    pub fn new(target: &Target) -> HttpDest {
        HttpDest {
            addr: target.addr,
            original: target.original,
            last: Rc::default(),
        }
    }

    /// The series of a request on route index `route` (0 = no route matched) sent to
    /// endpoint `to` (`None`: answered before an endpoint was picked) for `authority`.
    pub fn metrics(
        &self,
        l: &Listener,
        route: usize,
        p: Protocol,
        to: Option<SocketAddr>,
        authority: Option<&str>,
    ) -> Rc<HttpMetrics> {
        let m = &l.metrics;
        let key = SeriesKey {
            route,
            protocol: p,
            target: m.target(to.unwrap_or(self.addr)),
            authority: m.authority(authority),
        };
        let mut last = self.last.borrow_mut();
        if let Some((k, s)) = &*last {
            if *k == key {
                return s.clone();
            }
        }
        let s = m.http(key.route, key.protocol, key.target, key.authority);
        *last = Some((key, s.clone()));
        s
    }

    /// The endpoint for a request on route index `route`: the original destination when no
    /// route matched on an original-destination listener, else a P2C pick from the set.
    pub fn pick(&self, l: &Listener, route: usize) -> (SocketAddr, EndpointClaim) {
        match (self.original, route) {
            (true, 0) => (self.addr, EndpointClaim(None)),
            _ => {
                let (addr, f) = l.endpoints(route).pick();
                (addr, EndpointClaim(Some(f)))
            }
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
    /// Empty splice pipes for opaque forwarding.
    pub pipes: PipePool,
    /// Scratch buffer for detection peeks: borrowed only synchronously, never across an await.
    pub peek_buf: RefCell<Box<[u8]>>,
    /// Open and recently closed connections, for `GET /connections`.
    pub connections: Connections,
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

/// The seed of endpoint set `k`'s random draws on worker `id`: distinct per worker and set,
/// so workers do not pick in lockstep, and reproducible run to run.
fn balancer_seed(id: usize, k: usize) -> u64 {
    0x5eed ^ (id * 131 + k) as u64
}

impl Core {
    /// State for worker `id` serving `cfg`'s listeners.
    pub fn new(id: usize, cfg: &Config) -> Core {
        Core {
            id,
            listeners: cfg
                .listeners
                .iter()
                .enumerate()
                .map(|(index, l)| {
                    Rc::new(Listener {
                        index,
                        cfg: l.clone(),
                        metrics: ListenerMetrics::new(l, &cfg.metrics),
                        balancer: Balancer::new(l.upstream.clone()),
                        detect: DetectSettings::new(l, &cfg.detect),
                        ports: PortPlan::new(l, &cfg.detect),
                        http1: cfg.http1.clone(),
                        http2: cfg.http2.clone(),
                        http_sets: std::iter::once(&l.upstream)
                            .chain(l.routes.iter().map(|r| &r.upstream))
                            .enumerate()
                            .map(|(k, eps)| EndpointSet::new(eps.clone(), balancer_seed(id, k)))
                            .collect(),
                        pools: Pools::new(cfg.http1.pool_idle_timeout, cfg.http1.pool_max_idle),
                    })
                })
                .collect(),
            pipes: PipePool::new(id, cfg.runtime.splice_pipe_bytes),
            peek_buf: RefCell::new(vec![0u8; PEEK_CAP].into_boxed_slice()),
            connections: Connections::new(cfg.admin.closed_connections),
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

    /// Whether the worker has started draining (a plain read of a core-local flag).
    pub fn is_draining(&self) -> bool {
        self.stop.fired.get()
    }

    /// Open connections on this core.
    pub fn open_connections(&self) -> usize {
        self.open.get()
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

    /// This core's connections matching `q`, for `GET /connections` (an unknown listener
    /// name matches none; the listeners in the report let the admin thread say so).
    pub fn connections_report(&self, q: &Query) -> Report {
        let listeners: Vec<ListenerInfo> = self
            .listeners
            .iter()
            .map(|l| ListenerInfo {
                name: l.cfg.name.clone(),
                direction: l.cfg.direction,
                http1: l.http1.enabled,
                http2: l.http2.enabled,
            })
            .collect();
        let mut report = match &q.listener {
            None => self.connections.report(self.id, q, None),
            Some(name) => match listeners.iter().position(|l| &l.name == name) {
                Some(i) => self.connections.report(self.id, q, Some(i)),
                None => Report {
                    worker: self.id,
                    ..Report::default()
                },
            },
        };
        report.listeners = listeners;
        report
    }

    /// Starts draining: every [`Core::draining`] future resolves (accept loops stop, HTTP/2
    /// connections send GOAWAY).
    pub fn start_draining(&self) {
        self.stop.fire();
    }

    /// Resolves once no connection is open.
    pub async fn wait_drained(&self) {
        if self.open.get() == 0 {
            return;
        }
        let (tx, rx) = oneshot::channel();
        *self.drained.borrow_mut() = Some(tx);
        let _ = rx.await;
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
