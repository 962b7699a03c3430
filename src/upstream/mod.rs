//! The upstream side: where a connection or request goes and how it gets there.
//!
//! - [`Target`]: where one accepted connection goes: a least-connections pick from the
//!   listener's endpoints, or (transparent mode) the connection's original destination.
//! - [`Balancer`]: least open connections per endpoint on this core, ties round-robin (the
//!   opaque path: one connection, one choice).
//! - [`balance`]: per-request P2C over peak-EWMA for the HTTP proxies ([`balance::EndpointSet`]).
//! - [`connect`](mod@connect): non-blocking dial under the connect timeout, and the second
//!   try after a failure (another endpoint, or a timed-out one once more).
//! - [`health`]: passive health: endpoints whose connects keep failing are ejected for a
//!   doubling back-off; both balancers skip them.
//! - [`gate`]: per-endpoint bounds on HTTP/1 connects and connections; requests beyond them
//!   wait for a pooled connection or their turn to dial.
//! - [`pool`]: [`pool::UpConn`] (a counted upstream connection) and the per-core HTTP/1 idle
//!   pool and HTTP/2 connection pool.
//!
//! Endpoint sets change at run time when upstream names resolve anew (`dns`, applied by
//! `core`): [`Balancer::update`] and [`balance::EndpointSet::update`] keep the state of
//! endpoints that stay, and leases and in-flight records of removed ones stay valid (each
//! holds its endpoint's own counters). A set may be empty (a name not resolved yet).
//!
//! Not here: active health checking, resolving names (`dns`).

pub mod balance;
pub mod connect;
pub mod gate;
pub mod health;
pub mod pool;

pub use connect::{connect, connect_any, connect_retrying, keepalive, keepalive_h2, second_try};

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::error::Refusal;
use crate::sys;

use health::Health;

/// Where one accepted connection goes: the endpoint, and the lease that counts it as open
/// on that endpoint while the connection (or its detection) lasts.
#[derive(Debug)]
pub struct Target {
    /// The upstream address connections and detection dial.
    pub addr: SocketAddr,
    /// Whether `addr` is the connection's original destination (transparent mode): its
    /// HTTP requests go there too, unless a route matches.
    pub original: bool,
    lease: Option<EndpointLease>,
    /// No endpoint was picked (see [`Target::placeholder`]).
    placeholder: bool,
}

impl Target {
    /// The original destination of `client`, accepted by a listener with
    /// `upstream = "original-dst"` (read with `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`).
    ///
    /// Errors: [`Refusal::Loop`] when the original destination is the accepting socket's own
    /// address (nobody redirected the connection, or it was redirected back to the proxy);
    /// [`Refusal::NoOriginalDst`] when the kernel has none; each with the detail for logs.
    pub fn original_dst(client: &TcpStream) -> Result<Target, (Refusal, io::Error)> {
        let local = client
            .local_addr()
            .map_err(|e| (Refusal::NoOriginalDst, e))?;
        // IPv6 sockets (listeners bind IPv6 addresses IPv6-only) ask the IPv6 table.
        let ipv6 = matches!(local, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none());
        let addr =
            sys::original_dst(client.as_raw_fd(), ipv6).map_err(|e| (Refusal::NoOriginalDst, e))?;
        if same_endpoint(addr, local) {
            return Err((
                Refusal::Loop,
                io::Error::other(format!("original destination {addr} is this listener")),
            ));
        }
        Ok(Target {
            addr,
            original: true,
            lease: None,
            placeholder: false,
        })
    }

    /// The endpoint with the fewest open connections among the listener's; `None` when it
    /// has none (its upstream names have not resolved).
    pub fn pick(b: &Balancer) -> Option<Target> {
        let (addr, lease) = b.pick()?;
        Some(Target {
            addr,
            original: false,
            lease: Some(lease),
            placeholder: false,
        })
    }

    /// A connection accepted while the listener had no endpoint: `addr` stands in for the
    /// destination (its port picks the detection plan; nothing dials it: see
    /// [`Target::is_placeholder`]) until [`Target::retry_pick`] finds a real one.
    pub fn placeholder(addr: SocketAddr) -> Target {
        Target {
            addr,
            original: false,
            lease: None,
            placeholder: true,
        }
    }

    /// Whether this target is a [`Target::placeholder`]: no endpoint was picked.
    pub fn is_placeholder(&self) -> bool {
        self.placeholder
    }

    /// For a placeholder: picks an endpoint now (the names may have resolved meanwhile).
    /// Returns whether it has one.
    pub fn retry_pick(&mut self, b: &Balancer) -> bool {
        match Target::pick(b) {
            Some(t) => {
                *self = t;
                true
            }
            None => false,
        }
    }

    /// After a failed connect to `addr`: moves this connection to another of `b`'s endpoints
    /// (the least loaded; its lease moves too) and returns it. `None` for an original
    /// destination or a balancer with one endpoint.
    pub fn other(&mut self, b: &Balancer) -> Option<SocketAddr> {
        if self.original || self.placeholder {
            return None;
        }
        let (addr, lease) = b.pick_except(self.addr)?;
        self.addr = addr;
        self.lease = Some(lease);
        Some(addr)
    }

    /// Stops counting this connection against its endpoint (the HTTP proxies pick an
    /// endpoint per request instead).
    pub fn release(&mut self) {
        self.lease = None;
    }
}

/// Whether two socket addresses name the same endpoint (an IPv4-mapped IPv6 address equals
/// its IPv4 form; flow info and scope are ignored).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => SocketAddr::from((*v6.ip(), v6.port())),
        },
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Per-core endpoint choice for one listener. May be empty (upstream names not resolved
/// yet); [`Balancer::update`] replaces the endpoints.
#[derive(Debug)]
pub struct Balancer {
    /// Each endpoint with its open-connection count on this core (shared with the leases).
    endpoints: RefCell<Vec<(SocketAddr, Rc<Cell<u32>>)>>,
    /// Where the next tie-break scan starts, so equal endpoints take turns.
    next: Cell<usize>,
    /// Which endpoints are ejected (shared with the listener's HTTP endpoint sets).
    health: Rc<Health>,
}

/// Holds one endpoint's open-connection count up while the connection lives.
#[derive(Debug)]
pub struct EndpointLease {
    active: Rc<Cell<u32>>,
}

impl Drop for EndpointLease {
    fn drop(&mut self) {
        let c = &self.active;
        c.set(c.get().saturating_sub(1));
    }
}

impl Balancer {
    /// A balancer over `endpoints` (empty: every pick is `None` until an update), skipping
    /// those `health` has ejected.
    pub fn new(endpoints: Vec<SocketAddr>, health: Rc<Health>) -> Balancer {
        Balancer {
            endpoints: RefCell::new(
                endpoints
                    .into_iter()
                    .map(|a| (a, Rc::new(Cell::new(0))))
                    .collect(),
            ),
            next: Cell::new(0),
            health,
        }
    }

    /// Replaces the endpoints with `endpoints` (a new DNS answer): one that stays keeps its
    /// open count; the leases of one that goes keep counting on their own (and vanish with
    /// their connections).
    pub fn update(&self, endpoints: &[SocketAddr]) {
        let old = self.endpoints.take();
        let next = endpoints
            .iter()
            .map(|a| match old.iter().find(|(o, _)| o == a) {
                Some((_, c)) => (*a, c.clone()),
                None => (*a, Rc::new(Cell::new(0))),
            })
            .collect();
        *self.endpoints.borrow_mut() = next;
    }

    /// The endpoints now, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.borrow().iter().map(|(a, _)| *a).collect()
    }

    /// The endpoint of `endpoints` with the fewest open connections among those `allowed`,
    /// scanning from `start` (the first in scan order wins a tie); `None` when none is
    /// allowed. Ejected endpoints are left out unless every allowed one is ejected.
    fn least(
        &self,
        endpoints: &[(SocketAddr, Rc<Cell<u32>>)],
        start: usize,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        let scan = |ok: &dyn Fn(usize) -> bool| {
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| ok(i))
                .min_by_key(|&i| endpoints[i].1.get())
        };
        if self.health.any_failing() {
            let now = Instant::now();
            let healthy = |i| allowed(i) && !self.health.is_ejected(endpoints[i].0, now);
            if let Some(i) = scan(&healthy) {
                return Some(i);
            }
        }
        scan(&allowed)
    }

    /// The endpoint other than `not` with the fewest open connections (first in order on a
    /// tie), skipping ejected ones unless all others are, for a retry; `None` when there is
    /// no other.
    pub fn pick_except(&self, not: SocketAddr) -> Option<(SocketAddr, EndpointLease)> {
        let endpoints = self.endpoints.borrow();
        let best = self.least(&endpoints, 0, |i| endpoints[i].0 != not)?;
        Some(lease(&endpoints[best]))
    }

    /// Picks the endpoint with the fewest open connections, skipping ejected ones unless all
    /// are; ties go round-robin. `None` when there is none.
    pub fn pick(&self) -> Option<(SocketAddr, EndpointLease)> {
        let endpoints = self.endpoints.borrow();
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let best = self
            .least(&endpoints, self.next.get() % n, |_| true)
            .unwrap_or(0);
        self.next.set((best + 1) % n);
        Some(lease(&endpoints[best]))
    }
}

/// Counts one more open connection on an endpoint.
fn lease((addr, active): &(SocketAddr, Rc<Cell<u32>>)) -> (SocketAddr, EndpointLease) {
    active.set(active.get() + 1);
    (
        *addr,
        EndpointLease {
            active: active.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_endpoint_ignores_mapping_and_scope() {
        let v4: SocketAddr = "127.0.0.1:4140".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4140".parse().unwrap();
        assert!(same_endpoint(v4, mapped));
        assert!(!same_endpoint(v4, "127.0.0.1:4141".parse().unwrap()));
        assert!(same_endpoint(
            "[::1]:1".parse().unwrap(),
            std::net::SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 1, 7, 0).into()
        ));
    }

    #[test]
    fn least_connections_with_round_robin_ties() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let b = Balancer::new(
            eps.clone(),
            Rc::new(Health::new(
                health::EjectionPolicy::OFF,
                [],
                Default::default(),
            )),
        );
        // Ties rotate: 1, 2, 3.
        let l1 = b.pick().unwrap();
        let l2 = b.pick().unwrap();
        let l3 = b.pick().unwrap();
        assert_eq!([l1.0, l2.0, l3.0], [eps[0], eps[1], eps[2]]);
        // Endpoint 2 frees up: it has the fewest and is chosen next.
        drop(l2);
        let l4 = b.pick().unwrap();
        assert_eq!(l4.0, eps[1]);
        drop((l1, l3, l4));
        assert!(b.endpoints.borrow().iter().all(|(_, c)| c.get() == 0));
    }

    #[test]
    fn an_update_keeps_open_counts_and_leases_of_removed_endpoints_stay_valid() {
        let [a, b, c]: [SocketAddr; 3] = [1, 2, 3].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let bal = Balancer::new(
            Vec::new(),
            Rc::new(Health::new(
                health::EjectionPolicy::OFF,
                [],
                Default::default(),
            )),
        );
        assert!(bal.pick().is_none(), "an empty balancer picks nothing");
        bal.update(&[a, b]);
        let on_a = bal.pick().unwrap();
        let on_b = bal.pick().unwrap();
        assert_eq!([on_a.0, on_b.0], [a, b]);
        let on_b2 = bal.pick().unwrap();
        // a goes, c comes; b keeps its two open connections, so c gets the next one.
        bal.update(&[b, c]);
        assert_eq!(bal.addrs(), [b, c]);
        let next = bal.pick().unwrap();
        assert_eq!(next.0, c);
        // The lease on the removed endpoint drops without touching the new ones.
        drop(on_a);
        drop((on_b, on_b2, next));
        assert!(bal.endpoints.borrow().iter().all(|(_, c)| c.get() == 0));
        assert_eq!(bal.pick_except(b).map(|l| l.0), Some(c));
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let policy = health::EjectionPolicy {
            after: 1,
            base: std::time::Duration::from_secs(60),
            max: std::time::Duration::from_secs(60),
        };
        let h = Rc::new(Health::new(policy, eps.clone(), Default::default()));
        let b = Balancer::new(eps.clone(), h.clone());
        assert!(h.failed(eps[0]));
        let picks: Vec<_> = (0..6).map(|_| b.pick().unwrap()).collect();
        assert!(picks.iter().all(|p| p.0 != eps[0]), "{picks:?}");
        // A retry after endpoint 2 failed goes to 3, not to the ejected 1.
        assert_eq!(b.pick_except(eps[1]).unwrap().0, eps[2]);
        assert!(h.failed(eps[1]));
        assert!(h.failed(eps[2]));
        // All ejected: picks go on (least connections over all).
        drop(picks);
        let all: Vec<_> = (0..3).map(|_| b.pick().unwrap().0).collect();
        assert_eq!(all.len(), 3);
        assert!(eps.iter().all(|e| all.contains(e)), "{all:?}");
        // A success brings endpoint 1 back; the others stay out.
        h.connected(eps[0]);
        assert!((0..4).all(|_| b.pick().unwrap().0 == eps[0]));
    }
}
