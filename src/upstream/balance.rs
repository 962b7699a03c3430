//! Per-request load balancing: power of two choices over a peak-EWMA latency estimate, as
//! Linkerd (and Finagle before it) does. Each endpoint's cost is its smoothed round-trip time
//! times its outstanding requests plus one; two distinct endpoints are drawn at random and the
//! cheaper one wins. "Peak" means a slower observation replaces the estimate at once while a
//! faster one only pulls it down gradually, so an endpoint that starts to struggle is avoided
//! quickly and trusted again slowly.
//!
//! Per core and single-threaded (`Cell`s): each worker balances its own traffic. Not wired
//! into the opaque path (one connection = one choice, least-connections is right there); it is
//! the balancer for per-request HTTP proxying.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::health::Health;

/// Endpoints balanced per request (a listener's own, or a route's). May be empty (upstream
/// names not resolved yet); [`EndpointSet::update`] replaces the endpoints (DNS answers).
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints, parallel to the balancer's.
    endpoints: RefCell<Vec<SocketAddr>>,
    /// P2C over peak-EWMA latency.
    pub balancer: PeakEwma,
    /// Which endpoints are ejected (the listener's, shared by its sets and its balancer).
    health: Rc<Health>,
}

impl EndpointSet {
    /// A set over `endpoints` (empty: every pick is `None` until an update), skipping those
    /// `health` has ejected; `seed` makes the random draws reproducible.
    pub fn new(endpoints: Vec<SocketAddr>, seed: u64, health: Rc<Health>) -> EndpointSet {
        EndpointSet {
            balancer: PeakEwma::new(endpoints.len(), DEFAULT_DECAY, seed),
            endpoints: RefCell::new(endpoints),
            health,
        }
    }

    /// The endpoint for one request, with its in-flight record (report the latency with
    /// [`InFlight::done`]); `None` when the set is empty. Ejected endpoints are drawn only
    /// when all are ejected.
    pub fn pick(&self) -> Option<(SocketAddr, InFlight)> {
        let endpoints = self.endpoints.borrow();
        let (idx, inflight) = if self.health.any_failing() {
            let now = Instant::now();
            let healthy: Vec<usize> = (0..endpoints.len())
                .filter(|&i| !self.health.is_ejected(endpoints[i], now))
                .collect();
            self.balancer.pick_among(&healthy)?
        } else {
            self.balancer.pick()?
        };
        Some((endpoints[idx], inflight))
    }

    /// A request goes to `addr` (a retry moved it there): its in-flight record, `None` when
    /// `addr` is not in the set.
    pub fn claim(&self, addr: SocketAddr) -> Option<InFlight> {
        let i = self.endpoints.borrow().iter().position(|e| *e == addr)?;
        Some(self.balancer.start(i).1)
    }

    /// After a failed connect to `not`: the cheapest other endpoint that is not ejected (any
    /// other when all are), for the retry; `None` when there is no other.
    pub fn other(&self, not: SocketAddr) -> Option<SocketAddr> {
        let now = Instant::now();
        let endpoints = self.endpoints.borrow();
        let cheapest = |skip_ejected: bool| {
            (0..endpoints.len())
                .filter(|&i| endpoints[i] != not)
                .filter(|&i| !skip_ejected || !self.health.is_ejected(endpoints[i], now))
                .min_by(|&a, &b| {
                    self.balancer
                        .cost(a, now)
                        .total_cmp(&self.balancer.cost(b, now))
                })
        };
        cheapest(true)
            .or_else(|| cheapest(false))
            .map(|i| endpoints[i])
    }

    /// The endpoints now, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.borrow().clone()
    }

    /// Replaces the endpoints with `endpoints` (a new DNS answer): an endpoint that stays
    /// keeps its latency estimate and pending count; one that goes is forgotten here, while
    /// the requests in flight on it keep their records (each holds its endpoint's state).
    pub fn update(&self, endpoints: &[SocketAddr]) {
        let old = self.endpoints.replace(endpoints.to_vec());
        let keep: Vec<Option<usize>> = endpoints
            .iter()
            .map(|a| old.iter().position(|o| o == a))
            .collect();
        self.balancer.remap(&keep);
    }
}

/// The estimate an endpoint starts with, before any observation (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old observations fade (Linkerd's default decay).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Endpoint {
    /// Smoothed RTT in nanoseconds.
    rtt_ns: Cell<f64>,
    /// When `rtt_ns` was last updated.
    stamp: Cell<Instant>,
    /// Requests in flight.
    pending: Cell<u32>,
}

impl Endpoint {
    fn new(now: Instant) -> Rc<Endpoint> {
        Rc::new(Endpoint {
            rtt_ns: Cell::new(DEFAULT_RTT.as_nanos() as f64),
            stamp: Cell::new(now),
            pending: Cell::new(0),
        })
    }
}

/// Power-of-two-choices over peak-EWMA costs.
#[derive(Debug)]
pub struct PeakEwma {
    /// Each endpoint's state, shared with the requests in flight on it (so an endpoint
    /// removed by an update stays valid for them).
    endpoints: RefCell<Vec<Rc<Endpoint>>>,
    decay_ns: f64,
    rng: Cell<u64>,
}

/// One request in flight on an endpoint: report its latency with [`InFlight::done`]; dropping
/// it without a report (a failure) still releases the pending count.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Rc<Endpoint>,
    decay_ns: f64,
}

impl PeakEwma {
    /// A balancer over `n` endpoints (0: every pick is `None`); `seed` makes the random
    /// draws reproducible.
    pub fn new(n: usize, decay: Duration, seed: u64) -> PeakEwma {
        let now = Instant::now();
        PeakEwma {
            endpoints: RefCell::new((0..n).map(|_| Endpoint::new(now)).collect()),
            decay_ns: decay.as_nanos().max(1) as f64,
            rng: Cell::new(seed | 1),
        }
    }

    /// New endpoint list: `keep[i]` is the old index of new endpoint `i`, `None` for a new
    /// endpoint (which starts at the default estimate).
    fn remap(&self, keep: &[Option<usize>]) {
        let now = Instant::now();
        let old = self.endpoints.take();
        let next = keep
            .iter()
            .map(|k| match k.and_then(|i| old.get(i)) {
                Some(e) => e.clone(),
                None => Endpoint::new(now),
            })
            .collect();
        *self.endpoints.borrow_mut() = next;
    }

    fn next_rand(&self) -> u64 {
        // xorshift64*: fast, good enough to break ties between endpoints.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn cost(&self, i: usize, now: Instant) -> f64 {
        let e = &self.endpoints.borrow()[i];
        // Decay the estimate toward zero while idle, so a penalised endpoint gets retried.
        let idle = now.saturating_duration_since(e.stamp.get()).as_nanos() as f64;
        let rtt = e.rtt_ns.get() * (-idle / self.decay_ns).exp();
        rtt * (e.pending.get() as f64 + 1.0)
    }

    /// Chooses an endpoint for one request; `None` when there is none.
    pub fn pick(&self) -> Option<(usize, InFlight)> {
        let n = self.endpoints.borrow().len();
        let index = match n {
            0 => return None,
            1 => 0,
            _ => {
                let (a, b) = self.two(n);
                self.cheaper(a, b)
            }
        };
        Some(self.start(index))
    }

    /// Chooses an endpoint for one request among the indices in `among` (each below the
    /// endpoint count); among all when `among` is empty. `None` when there is none.
    pub fn pick_among(&self, among: &[usize]) -> Option<(usize, InFlight)> {
        match among {
            [] => self.pick(),
            [i] => Some(self.start(*i)),
            _ => {
                let (a, b) = self.two(among.len());
                Some(self.start(self.cheaper(among[a], among[b])))
            }
        }
    }

    /// Two distinct random indices below `n` (n ≥ 2).
    fn two(&self, n: usize) -> (usize, usize) {
        let r = self.next_rand();
        let a = (r % n as u64) as usize;
        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
        (a, b)
    }

    fn cheaper(&self, a: usize, b: usize) -> usize {
        let now = Instant::now();
        if self.cost(a, now) <= self.cost(b, now) {
            a
        } else {
            b
        }
    }

    /// Counts a request in flight on endpoint `index`.
    fn start(&self, index: usize) -> (usize, InFlight) {
        let e = self.endpoints.borrow()[index].clone();
        e.pending.set(e.pending.get() + 1);
        (
            index,
            InFlight {
                endpoint: e,
                decay_ns: self.decay_ns,
            },
        )
    }

    /// The current cost of endpoint `i` (for tests and debugging).
    pub fn cost_of(&self, i: usize) -> f64 {
        self.cost(i, Instant::now())
    }
}

impl InFlight {
    /// The request finished after `rtt` (time to the response's first byte).
    pub fn done(self, rtt: Duration) {
        let e = &self.endpoint;
        let now = Instant::now();
        let sample = rtt.as_nanos() as f64;
        let prev = e.rtt_ns.get();
        let next = if sample > prev {
            sample // peak: jump up at once
        } else {
            let elapsed = now.saturating_duration_since(e.stamp.get()).as_nanos() as f64;
            let w = (-elapsed / self.decay_ns).exp();
            prev * w + sample * (1.0 - w)
        };
        e.rtt_ns.set(next);
        e.stamp.set(now);
        // `drop` releases the pending count.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let p = &self.endpoint.pending;
        p.set(p.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_endpoint_gets_less_traffic() {
        let b = PeakEwma::new(3, DEFAULT_DECAY, 42);
        let rtts = [
            Duration::from_millis(2),
            Duration::from_millis(2),
            Duration::from_millis(40),
        ];
        let mut hits = [0usize; 3];
        for _ in 0..3000 {
            let (i, f) = b.pick().unwrap();
            hits[i] += 1;
            f.done(rtts[i]);
        }
        // The slow endpoint is only chosen when drawn against... nothing cheaper: rarely.
        assert!(hits[2] < 150, "slow endpoint got {hits:?}");
        assert!(
            hits[0] > 1000 && hits[1] > 1000,
            "fast endpoints share the rest: {hits:?}"
        );
    }

    #[test]
    fn outstanding_requests_raise_the_cost() {
        let b = PeakEwma::new(2, DEFAULT_DECAY, 7);
        let held: Vec<(usize, InFlight)> = (0..10).map(|_| b.pick().unwrap()).collect();
        // Equal RTTs, so the draws spread the load: neither endpoint holds all ten.
        let on0 = held.iter().filter(|(i, _)| *i == 0).count();
        assert!((3..=7).contains(&on0), "{on0} of 10 on endpoint 0");
        drop(held);
        assert_eq!(
            b.endpoints
                .borrow()
                .iter()
                .map(|e| e.pending.get())
                .sum::<u32>(),
            0,
            "drops release pending"
        );
    }

    #[test]
    fn peak_jumps_up_and_decays_down() {
        let b = PeakEwma::new(1, Duration::from_millis(50), 1);
        b.pick().unwrap().1.done(Duration::from_millis(100));
        let after_peak = b.cost_of(0);
        assert!(after_peak >= 90e6, "peak taken at once: {after_peak}");
        std::thread::sleep(Duration::from_millis(60));
        b.pick().unwrap().1.done(Duration::from_millis(1));
        assert!(
            b.cost_of(0) < after_peak / 2.0,
            "a fast sample after a quiet period pulls it down"
        );
    }

    #[test]
    fn ejected_endpoints_get_no_requests_unless_all_are() {
        use super::super::health::EjectionPolicy;
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let policy = EjectionPolicy {
            after: 2,
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let h = Rc::new(Health::new(policy, eps.clone(), Default::default()));
        let set = EndpointSet::new(eps.clone(), 3, h.clone());
        h.failed(eps[1]);
        h.failed(eps[1]);
        let mut hits = [0usize; 3];
        for _ in 0..300 {
            let (a, f) = set.pick().unwrap();
            hits[eps.iter().position(|e| *e == a).unwrap()] += 1;
            f.done(Duration::from_millis(1));
        }
        assert_eq!(hits[1], 0, "{hits:?}");
        assert!(hits[0] > 50 && hits[2] > 50, "{hits:?}");
        assert_ne!(set.other(eps[0]), Some(eps[1]));
        h.failed(eps[0]);
        h.failed(eps[0]);
        h.failed(eps[2]);
        h.failed(eps[2]);
        // All ejected: requests still go somewhere, and a retry still has another endpoint.
        assert!(eps.contains(&set.pick().unwrap().0));
        assert!(set.other(eps[0]).is_some());
    }

    #[test]
    fn an_update_keeps_state_of_endpoints_that_stay_and_in_flight_records_of_removed_ones() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let h = Rc::new(Health::new(
            super::super::health::EjectionPolicy::OFF,
            [],
            Default::default(),
        ));
        let set = EndpointSet::new(Vec::new(), 3, h);
        assert!(set.pick().is_none(), "an empty set picks nothing");
        assert!(set.other(a).is_none());
        set.update(&[a, b]);
        // Hold a request on each.
        let mut on_b = None;
        let mut on_a = None;
        while on_a.is_none() || on_b.is_none() {
            let (addr, f) = set.pick().unwrap();
            if addr == b && on_b.is_none() {
                on_b = Some(f);
            } else if addr == a && on_a.is_none() {
                on_a = Some(f);
            }
        }
        let b_cost = set.balancer.cost_of(1);
        // b stays (now first), a goes, c comes.
        set.update(&[b, c]);
        assert_eq!(set.addrs(), [b, c]);
        // Its cost only decays a little with time; it would be 30 ms × 1 if reset.
        let kept = set.balancer.cost_of(0);
        assert!(
            kept > b_cost * 0.99 && kept <= b_cost,
            "b keeps its estimate and pending: {kept} vs {b_cost}"
        );
        // The request on the removed endpoint still reports and drops without panicking.
        on_a.unwrap().done(Duration::from_millis(1));
        drop(on_b);
        assert!(
            set.balancer.cost_of(0) < b_cost,
            "b's pending request was released"
        );
        assert!(set.other(b) == Some(c));
        set.update(&[]);
        assert!(set.pick().is_none());
    }
}
