//! Per-core state: one worker's listeners (config, metrics, balancers, pools), its pipe pool,
//! its detection scratch buffer, the drain bookkeeping (open connections, stop signal), and
//! its table of connections for `GET /connections` ([`connections`]).
//!
//! A configuration reload ([`Core::reload`]) makes a new generation of the listeners it
//! changes: each accepted connection holds the [`Listener`] it was accepted under, so open
//! connections finish on the settings they started with while new ones get the new ones.
//! A replaced generation is *retired*: its HTTP/1 connections answer their next request with
//! `connection: close`, so clients move to the new settings without a failed request; opaque
//! streams run to their end. HTTP/2 connections are not closed (many clients, h2load among
//! them, do not retry the streams a GOAWAY refuses): their connection-level settings stay and
//! each new stream is routed under the listener's newest generation
//! ([`Listener::latest`]). A listener keeps its metrics (by name and direction) across
//! reloads.
//!
//! Everything here is `Rc`/`Cell`/`RefCell`: nothing is shared with other workers.
//!
//! Not here: the worker loop and its control channel (`worker`), the accept loop (`accept`),
//! binding sockets (`server`), per-connection logic (`conn`).

pub mod connections;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;

use self::connections::{Connections, ListenerInfo, Query, Report, ROWS_PER_TURN};
use crate::config::{Config, Http1Config, Http2Config, ListenerConfig, UpstreamName};
use crate::detect::{DetectSettings, PortPlan, PEEK_CAP};
use crate::forward::PipePool;
use crate::io::sweep::Sweep;
use crate::metrics::{AuthorityId, CoreSnapshot, HttpMetrics, ListenerMetrics, Protocol, TargetId};
use crate::upstream::balance::{EndpointSet, InFlight};
use crate::upstream::health::Health;
use crate::upstream::pool::Pools;
use crate::upstream::{Balancer, Target};

/// One listener's per-core state, for one configuration generation.
#[derive(Debug)]
pub struct Listener {
    /// Its number on this core, never reused across reloads (rows of `GET /connections`
    /// name their listener by it).
    pub id: usize,
    /// Its configuration.
    pub cfg: ListenerConfig,
    /// Its metrics on this core, shared with the generations before and after it.
    pub metrics: Rc<ListenerMetrics>,
    /// The metrics' route id of each route index (0 = `default`, i + 1 = route i).
    route_ids: Vec<usize>,
    /// Endpoint choice on this core.
    pub balancer: Balancer,
    /// Passive health of the listener's endpoints on this core (shared by `balancer` and
    /// `http_sets`).
    pub health: Rc<Health>,
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
    /// Fires when this generation takes no more new work: the worker drains, or a reload
    /// replaced or removed the listener.
    retired: StopSignal,
    /// The generation a reload replaced this one with (same name), if any.
    successor: RefCell<Option<Rc<Listener>>>,
}

impl Listener {
    /// Sets this listener's TCP keepalive (or none) on socket `fd` (failures are logged, not
    /// fatal: the connection works without it).
    pub fn set_keepalive(&self, fd: std::os::fd::RawFd) {
        let secs = |d: Duration| d.as_secs() as u32;
        let r = match self.cfg.keepalive {
            Some(k) => crate::sys::set_keepalive(fd, secs(k.time), secs(k.interval), k.probes),
            None => crate::sys::clear_keepalive(fd),
        };
        if let Err(e) = r {
            tracing::debug!(listener = %self.cfg.name, error = %e, "could not set TCP keepalive");
        }
    }

    /// Whether this generation is retired or the worker drains (a plain read of a core-local
    /// flag): HTTP/1 answers `connection: close`.
    pub fn is_retired(&self) -> bool {
        self.retired.fired.get()
    }

    /// The newest generation of this listener: itself unless reloads replaced it (a removed
    /// listener has none newer). Each HTTP/2 stream is routed under it. Follows the chain of
    /// replacements once, then remembers the end.
    pub fn latest(self: &Rc<Self>) -> Rc<Listener> {
        let mut cur = self.clone();
        loop {
            let next = cur.successor.borrow().clone();
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        if !Rc::ptr_eq(&cur, self) {
            *self.successor.borrow_mut() = Some(cur.clone());
        }
        cur
    }

    /// The endpoint set for route index `route` (0 = the listener's own upstream, i + 1 =
    /// route i), as [`RouteConfig::select`](crate::config::RouteConfig::select) numbers them.
    pub fn endpoints(&self, route: usize) -> &EndpointSet {
        &self.http_sets[route]
    }

    /// What a connection accepted without an endpoint stands in for (see
    /// [`Target::placeholder`]): the unspecified address with the port of the listener's
    /// first upstream name.
    pub fn placeholder_addr(&self) -> SocketAddr {
        let port = self.cfg.upstream_names.first().map_or(0, |n| n.port);
        SocketAddr::from(([0, 0, 0, 0], port))
    }

    /// The upstream names of route index `route` (0 = the listener's own upstream): what an
    /// empty set is waiting for.
    pub fn names(&self, route: usize) -> &[UpstreamName] {
        match route {
            0 => &self.cfg.upstream_names,
            r => self
                .cfg
                .routes
                .get(r - 1)
                .map_or(&[][..], |r| &r.upstream_names),
        }
    }

    /// Whether any endpoint set of this listener names `name`.
    fn uses(&self, name: &UpstreamName) -> bool {
        (0..self.http_sets.len()).any(|k| self.names(k).contains(name))
    }
}

/// The endpoints of a set: its literal addresses, then each name's current addresses (names
/// not resolved yet add none), each address once.
fn endpoints_of(
    literal: &[SocketAddr],
    names: &[UpstreamName],
    dns: &HashMap<UpstreamName, Arc<[SocketAddr]>>,
) -> Vec<SocketAddr> {
    let mut eps = literal.to_vec();
    for n in names {
        for a in dns.get(n).into_iter().flat_map(|a| a.iter()) {
            if !eps.contains(a) {
                eps.push(*a);
            }
        }
    }
    eps
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
    /// The metrics the series belongs to (a reload may give a listener new ones).
    metrics: *const ListenerMetrics,
    route: usize,
    protocol: Protocol,
    target: TargetId,
    authority: AuthorityId,
}

/// The reason of the 503 a request gets when its endpoint set is empty.
pub const NO_ENDPOINTS: &str =
    "no upstream endpoint: the upstream names have not resolved (see sidewire_dns_resolutions_total)";

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
        self.metrics_of(l, route, p, to, l.metrics.authority(authority))
    }

    /// [`HttpDest::metrics`] with the authority already interned (`ListenerMetrics::authority`),
    /// for a request whose endpoint is known only after the head's buffer is gone.
    pub fn metrics_of(
        &self,
        l: &Listener,
        route: usize,
        p: Protocol,
        to: Option<SocketAddr>,
        authority: AuthorityId,
    ) -> Rc<HttpMetrics> {
        let m = &l.metrics;
        let key = SeriesKey {
            metrics: Rc::as_ptr(&l.metrics),
            route: l.route_ids.get(route).copied().unwrap_or(route),
            protocol: p,
            target: m.target(to.unwrap_or(self.addr)),
            authority,
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

    /// After a failed connect to `addr` for a request on route index `route`: another
    /// endpoint of its set to try (none for the original destination).
    pub fn other(&self, l: &Listener, route: usize, addr: SocketAddr) -> Option<SocketAddr> {
        match (self.original, route) {
            (true, 0) => None,
            _ => l.endpoints(route).other(addr),
        }
    }

    /// After a retry moved a request on route index `route` to `addr`: its claim there (none
    /// for the original destination, or an address the set no longer has).
    pub fn claim(&self, l: &Listener, route: usize, addr: SocketAddr) -> EndpointClaim {
        match (self.original, route) {
            (true, 0) => EndpointClaim(None),
            _ => EndpointClaim(l.endpoints(route).claim(addr)),
        }
    }

    /// The endpoint for a request on route index `route`: the original destination when no
    /// route matched on an original-destination listener, else a P2C pick from the set;
    /// `None` when the set is empty (its upstream names have not resolved): answer
    /// [`NO_ENDPOINTS`] with 503.
    pub fn pick(&self, l: &Listener, route: usize) -> Option<(SocketAddr, EndpointClaim)> {
        match (self.original, route) {
            (true, 0) => Some((self.addr, EndpointClaim(None))),
            _ => {
                let (addr, f) = l.endpoints(route).pick()?;
                Some((addr, EndpointClaim(Some(f))))
            }
        }
    }
}

/// A worker's state.
#[derive(Debug)]
pub struct Core {
    /// Worker index (0-based).
    pub id: usize,
    /// The configuration in force (the last one applied).
    cfg: RefCell<Arc<Config>>,
    /// Listeners in config order: the current generation.
    listeners: RefCell<Vec<Rc<Listener>>>,
    /// Accept slots, one per listening socket, in config order (parallel to `listeners`).
    accepts: RefCell<Vec<Rc<AcceptSlot>>>,
    /// Every listener's metrics, current ones first in config order, then those of removed
    /// listeners whose connections are still open (dropped once quiescent).
    metrics: RefCell<Vec<Rc<ListenerMetrics>>>,
    /// Every listener generation's facts for `GET /connections`, by [`Listener::id`].
    infos: RefCell<Vec<ListenerInfo>>,
    /// The current addresses of each upstream name the listeners use (from the `dns`
    /// thread); new listener generations start with them.
    dns: RefCell<HashMap<UpstreamName, Arc<[SocketAddr]>>>,
    /// Empty splice pipes for opaque forwarding.
    pub pipes: PipePool,
    /// Scratch buffer for detection peeks: borrowed only synchronously, never across an await.
    pub peek_buf: RefCell<Box<[u8]>>,
    /// Open and recently closed connections, for `GET /connections`.
    pub connections: Connections,
    /// Idle bounds of this core's waiting connections (HTTP/1 keep-alive, HTTP/2 idle), one
    /// sweeper task instead of a timer each.
    pub sweep: Sweep,
    open: Cell<usize>,
    drained: RefCell<Option<oneshot::Sender<()>>>,
    /// Fires when the worker starts draining: accept loops stop, HTTP/2 connections send GOAWAY.
    stop: StopSignal,
}

/// One listening socket's accept loop state: the listener generation new connections get
/// (a reload that changes the listener but keeps its address swaps it), and the signal that
/// stops the loop (a reload removed the listener or moved its address).
#[derive(Debug)]
pub struct AcceptSlot {
    listener: RefCell<Rc<Listener>>,
    removed: StopSignal,
}

impl AcceptSlot {
    fn new(l: Rc<Listener>) -> AcceptSlot {
        AcceptSlot {
            listener: RefCell::new(l),
            removed: StopSignal::default(),
        }
    }

    /// The listener generation a connection accepted now belongs to.
    pub fn listener(&self) -> Rc<Listener> {
        self.listener.borrow().clone()
    }

    /// Resolves when a reload removed this socket's listener (or moved its address).
    pub fn removed(&self) -> Draining<'_> {
        Draining {
            signal: &self.removed,
            slot: None,
        }
    }
}

/// What a reload does with listener *i* of the new configuration's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketPlan {
    /// Keep accepting on the socket of the old configuration's listener at this index.
    Keep(usize),
    /// A socket bound for the reload: a new accept loop starts on it.
    New,
}

/// What a reload changed on one core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadStats {
    /// Listeners kept as they were (same settings: pools and balancer state kept).
    pub unchanged: usize,
    /// Listeners with new settings (a new generation; the old one retired).
    pub changed: usize,
    /// Listeners that did not exist before.
    pub added: usize,
    /// Listeners removed (their open connections finish).
    pub removed: usize,
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
    /// State for worker `id` serving `cfg`'s listeners, with `dns` the upstream names'
    /// addresses known at start (names missing from it have no endpoints until
    /// [`Core::apply_dns`]); [`Core::accept_slots`] lists the slot of each listener's socket,
    /// in config order.
    pub fn new(
        id: usize,
        cfg: &Arc<Config>,
        dns: &HashMap<UpstreamName, Arc<[SocketAddr]>>,
    ) -> Core {
        let core = Core {
            id,
            cfg: RefCell::new(cfg.clone()),
            listeners: RefCell::default(),
            accepts: RefCell::default(),
            metrics: RefCell::default(),
            infos: RefCell::default(),
            dns: RefCell::new(dns.clone()),
            pipes: PipePool::new(id, cfg.runtime.splice_pipe_bytes),
            peek_buf: RefCell::new(vec![0u8; PEEK_CAP].into_boxed_slice()),
            connections: Connections::new(cfg.admin.closed_connections),
            sweep: Sweep::new(),
            open: Cell::new(0),
            drained: RefCell::new(None),
            stop: StopSignal::default(),
        };
        let listeners: Vec<Rc<Listener>> = cfg
            .listeners
            .iter()
            .map(|l| Rc::new(core.build(l, cfg, None)))
            .collect();
        *core.accepts.borrow_mut() = listeners
            .iter()
            .map(|l| Rc::new(AcceptSlot::new(l.clone())))
            .collect();
        *core.metrics.borrow_mut() = listeners.iter().map(|l| l.metrics.clone()).collect();
        *core.listeners.borrow_mut() = listeners;
        core
    }

    /// A new generation of listener `l` under `cfg`, taking over `prev`'s metrics when it
    /// has the same name and direction.
    fn build(&self, l: &ListenerConfig, cfg: &Config, prev: Option<&Listener>) -> Listener {
        let metrics = match prev {
            Some(p) if p.cfg.direction == l.direction => p.metrics.clone(),
            _ => Rc::new(ListenerMetrics::new(l, &cfg.metrics)),
        };
        let route_ids = metrics.adopt(l);
        let mut infos = self.infos.borrow_mut();
        let id = infos.len();
        infos.push(ListenerInfo {
            name: l.name.clone(),
            direction: l.direction,
            http1: cfg.http1.enabled,
            http2: cfg.http2.enabled,
        });
        let dns = self.dns.borrow();
        let sets: Vec<Vec<SocketAddr>> = std::iter::once((&l.upstream, &l.upstream_names))
            .chain(l.routes.iter().map(|r| (&r.upstream, &r.upstream_names)))
            .map(|(lit, names)| endpoints_of(lit, names, &dns))
            .collect();
        let health = Rc::new(Health::new(
            l.ejection,
            sets.iter().flatten().copied(),
            metrics.clone(),
        ));
        Listener {
            id,
            cfg: l.clone(),
            metrics,
            route_ids,
            balancer: Balancer::new(sets[0].clone(), health.clone()),
            detect: DetectSettings::new(l, &cfg.detect),
            ports: PortPlan::new(l, &cfg.detect),
            http1: cfg.http1.clone(),
            http2: cfg.http2.clone(),
            http_sets: sets
                .into_iter()
                .enumerate()
                .map(|(k, eps)| EndpointSet::new(eps, balancer_seed(self.id, k), health.clone()))
                .collect(),
            pools: Pools::new(
                cfg.http1.pool_idle_timeout,
                cfg.http1.pool_max_idle,
                l.max_connections_per_endpoint,
                l.max_connects_per_endpoint,
                l.keepalive,
            ),
            retired: StopSignal::default(),
            successor: RefCell::new(None),
            health,
        }
    }

    /// The configuration in force on this core (the last reload applied, or the start's).
    pub fn config(&self) -> Arc<Config> {
        self.cfg.borrow().clone()
    }

    /// The accept slot of each listening socket, in config order.
    pub fn accept_slots(&self) -> Vec<Rc<AcceptSlot>> {
        self.accepts.borrow().clone()
    }

    /// Applies a reloaded configuration: `sockets[i]` says where listener *i* of `cfg`
    /// accepts (its `listen` is the bound address). A listener whose settings did not change
    /// is kept as it is; a changed one gets a new generation (found by name; its metrics
    /// carry over) and the old one retires; a removed one stops accepting and retires.
    /// Returns what changed and, for each [`SocketPlan::New`], the new listener's index and
    /// the slot its accept loop must serve.
    pub fn reload(
        &self,
        cfg: &Arc<Config>,
        sockets: &[SocketPlan],
    ) -> (ReloadStats, Vec<(usize, Rc<AcceptSlot>)>) {
        let old_cfg = self.cfg.replace(cfg.clone());
        let old = self.listeners.take();
        let old_slots = self.accepts.take();
        let shared_same = old_cfg.detect == cfg.detect
            && old_cfg.http1 == cfg.http1
            && old_cfg.http2 == cfg.http2
            && old_cfg.metrics == cfg.metrics;
        let mut stats = ReloadStats::default();
        let mut listeners = Vec::with_capacity(cfg.listeners.len());
        let mut slots = Vec::with_capacity(cfg.listeners.len());
        let mut fresh = Vec::new();
        let mut kept_slot = vec![false; old_slots.len()];
        for (i, (lc, plan)) in cfg.listeners.iter().zip(sockets).enumerate() {
            let prev = old.iter().find(|l| l.cfg.name == lc.name);
            let listener = match prev {
                Some(p) if shared_same && p.cfg == *lc => {
                    stats.unchanged += 1;
                    p.clone()
                }
                Some(p) => {
                    stats.changed += 1;
                    let next = Rc::new(self.build(lc, cfg, Some(p)));
                    *p.successor.borrow_mut() = Some(next.clone());
                    next
                }
                None => {
                    stats.added += 1;
                    Rc::new(self.build(lc, cfg, None))
                }
            };
            let slot = match *plan {
                SocketPlan::Keep(j) if j < old_slots.len() && !kept_slot[j] => {
                    kept_slot[j] = true;
                    *old_slots[j].listener.borrow_mut() = listener.clone();
                    old_slots[j].clone()
                }
                _ => {
                    let s = Rc::new(AcceptSlot::new(listener.clone()));
                    fresh.push((i, s.clone()));
                    s
                }
            };
            listeners.push(listener);
            slots.push(slot);
        }
        for (slot, kept) in old_slots.iter().zip(kept_slot) {
            if !kept {
                slot.removed.fire();
            }
        }
        for l in &old {
            if !listeners.iter().any(|n| Rc::ptr_eq(n, l)) {
                l.retired.fire();
                if !cfg.listeners.iter().any(|c| c.name == l.cfg.name) {
                    stats.removed += 1;
                }
            }
        }
        // Current metrics first, in config order; then those of removed listeners that may
        // still count (their connections are open).
        let mut metrics: Vec<Rc<ListenerMetrics>> =
            listeners.iter().map(|l| l.metrics.clone()).collect();
        for m in self.metrics.take() {
            if !metrics.iter().any(|n| Rc::ptr_eq(n, &m)) {
                metrics.push(m);
            }
        }
        *self.metrics.borrow_mut() = metrics;
        *self.listeners.borrow_mut() = listeners;
        *self.accepts.borrow_mut() = slots;
        drop(old);
        // Names no listener uses any more are forgotten (a later reload that brings one back
        // starts it empty until its first answer arrives).
        let names = cfg.upstream_names();
        self.dns.borrow_mut().retain(|n, _| names.contains(n));
        self.prune_metrics();
        (stats, fresh)
    }

    /// Takes `name`'s new addresses (from the `dns` thread): every current listener's
    /// endpoint sets that name it are updated in place, endpoints that stay keeping their
    /// state (open counts, latency estimates, pools), removed ones staying valid for the
    /// connections and requests that hold them. An answer for a name no current listener
    /// uses is kept for the listeners a reload is about to build (the server sends a
    /// reload's new names ahead of it); a reload prunes names it no longer uses.
    pub fn apply_dns(&self, name: UpstreamName, addrs: Arc<[SocketAddr]>) {
        // Kept even when no listener names it yet: a reload sends the answers for its new
        // names ahead of itself, and the new listeners start from this table.
        self.dns.borrow_mut().insert(name.clone(), addrs);
        let listeners = self.listeners.borrow();
        if !listeners.iter().any(|l| l.uses(&name)) {
            return;
        }
        let dns = self.dns.borrow();
        for l in listeners.iter().filter(|l| l.uses(&name)) {
            for (k, set) in l.http_sets.iter().enumerate() {
                if !l.names(k).contains(&name) {
                    continue;
                }
                let literal = match k {
                    0 => &l.cfg.upstream,
                    r => &l.cfg.routes[r - 1].upstream,
                };
                let eps = endpoints_of(literal, l.names(k), &dns);
                if k == 0 {
                    l.balancer.update(&eps);
                }
                set.update(&eps);
            }
            // Passive health follows the endpoints (it keys them by address).
            l.health.track(l.http_sets.iter().flat_map(|s| s.addrs()));
        }
    }

    /// Drops the metrics of removed listeners once nothing can count into them.
    fn prune_metrics(&self) {
        let current = self.listeners.borrow();
        self.metrics.borrow_mut().retain(|m| {
            current.iter().any(|l| Rc::ptr_eq(&l.metrics, m))
                || !(Rc::strong_count(m) == 1 && m.is_quiescent())
        });
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

    /// This core's metric values: every listener's, then removed listeners' whose
    /// connections are still open.
    pub fn snapshot(&self) -> CoreSnapshot {
        self.prune_metrics();
        CoreSnapshot {
            listeners: self.metrics.borrow().iter().map(|m| m.snapshot()).collect(),
        }
    }

    /// This core's connections matching `q`, for `GET /connections` (an unknown listener
    /// name matches none; the listeners in the report let the admin thread say so). The
    /// rows are built [`ROWS_PER_TURN`] at a time, yielding to the core's connections
    /// between chunks: a large report delays them by one chunk's time, not the whole
    /// report's.
    pub async fn connections_report(&self, q: &Query) -> Report {
        let listeners = self.infos.borrow().clone();
        let ids: Option<Vec<usize>> = q.listener.as_ref().map(|name| {
            (0..listeners.len())
                .filter(|&i| &listeners[i].name == name)
                .collect()
        });
        let mut building = self.connections.start_report(self.id, q, ids.as_deref());
        while !self.connections.add_rows(&mut building, ROWS_PER_TURN) {
            crate::io::yield_now().await;
        }
        let mut report = building.finish();
        report.listeners = listeners;
        report
    }

    /// Starts draining: every [`Core::draining`] future resolves (accept loops stop), and
    /// every listener generation retires (HTTP/2 connections send GOAWAY).
    pub fn start_draining(&self) {
        self.stop.fire();
        for l in self.listeners.borrow().iter() {
            l.retired.fire();
        }
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
