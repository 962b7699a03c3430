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

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::health::Health;

/// Endpoints balanced per request (a listener's own, or a route's).
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// P2C over peak-EWMA latency.
    pub balancer: PeakEwma,
    /// Which endpoints are ejected (the listener's, shared by its sets and its balancer).
    health: Rc<Health>,
}

impl EndpointSet {
    /// A set over `endpoints` (non-empty), skipping those `health` has ejected; `seed` makes
    /// the random draws reproducible.
    pub fn new(endpoints: Vec<SocketAddr>, seed: u64, health: Rc<Health>) -> EndpointSet {
        EndpointSet {
            balancer: PeakEwma::new(endpoints.len(), DEFAULT_DECAY, seed),
            endpoints,
            health,
        }
    }

    /// The endpoint for one request, with its in-flight record (report the latency with
    /// [`InFlight::done`]). Ejected endpoints are drawn only when all are ejected.
    pub fn pick(&self) -> (SocketAddr, InFlight) {
        let (idx, inflight) = if self.health.any_failing() {
            let now = Instant::now();
            let healthy: Vec<usize> = (0..self.endpoints.len())
                .filter(|&i| !self.health.is_ejected(self.endpoints[i], now))
                .collect();
            self.balancer.pick_among(&healthy)
        } else {
            self.balancer.pick()
        };
        (self.endpoints[idx], inflight)
    }

    /// A request goes to `addr` (a retry moved it there): its in-flight record, `None` when
    /// `addr` is not in the set.
    pub fn claim(&self, addr: SocketAddr) -> Option<InFlight> {
        let i = self.endpoints.iter().position(|e| *e == addr)?;
        Some(self.balancer.start(i).1)
    }

    /// After a failed connect to `not`: the cheapest other endpoint that is not ejected (any
    /// other when all are), for the retry; `None` when there is no other.
    pub fn other(&self, not: SocketAddr) -> Option<SocketAddr> {
        let now = Instant::now();
        let cheapest = |skip_ejected: bool| {
            (0..self.endpoints.len())
                .filter(|&i| self.endpoints[i] != not)
                .filter(|&i| !skip_ejected || !self.health.is_ejected(self.endpoints[i], now))
                .min_by(|&a, &b| {
                    self.balancer
                        .cost(a, now)
                        .total_cmp(&self.balancer.cost(b, now))
                })
        };
        cheapest(true)
            .or_else(|| cheapest(false))
            .map(|i| self.endpoints[i])
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

/// Power-of-two-choices over peak-EWMA costs.
#[derive(Debug)]
pub struct PeakEwma {
    endpoints: Rc<[Endpoint]>,
    decay_ns: f64,
    rng: Cell<u64>,
}

/// One request in flight on an endpoint: report its latency with [`InFlight::done`]; dropping
/// it without a report (a failure) still releases the pending count.
#[derive(Debug)]
pub struct InFlight {
    endpoints: Rc<[Endpoint]>,
    index: usize,
    decay_ns: f64,
}

impl PeakEwma {
    /// A balancer over `n` endpoints (n ≥ 1); `seed` makes the random draws reproducible.
    pub fn new(n: usize, decay: Duration, seed: u64) -> PeakEwma {
        let now = Instant::now();
        let endpoints: Rc<[Endpoint]> = (0..n.max(1))
            .map(|_| Endpoint {
                rtt_ns: Cell::new(DEFAULT_RTT.as_nanos() as f64),
                stamp: Cell::new(now),
                pending: Cell::new(0),
            })
            .collect();
        PeakEwma {
            endpoints,
            decay_ns: decay.as_nanos().max(1) as f64,
            rng: Cell::new(seed | 1),
        }
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
        let e = &self.endpoints[i];
        // Decay the estimate toward zero while idle, so a penalised endpoint gets retried.
        let idle = now.saturating_duration_since(e.stamp.get()).as_nanos() as f64;
        let rtt = e.rtt_ns.get() * (-idle / self.decay_ns).exp();
        rtt * (e.pending.get() as f64 + 1.0)
    }

    /// Chooses an endpoint for one request.
    pub fn pick(&self) -> (usize, InFlight) {
        let n = self.endpoints.len();
        let index = if n == 1 {
            0
        } else {
            let (a, b) = self.two(n);
            self.cheaper(a, b)
        };
        self.start(index)
    }

    /// Chooses an endpoint for one request among the indices in `among` (each below the
    /// endpoint count); among all when `among` is empty.
    pub fn pick_among(&self, among: &[usize]) -> (usize, InFlight) {
        match among {
            [] => self.pick(),
            [i] => self.start(*i),
            _ => {
                let (a, b) = self.two(among.len());
                self.start(self.cheaper(among[a], among[b]))
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
        let e = &self.endpoints[index];
        e.pending.set(e.pending.get() + 1);
        (
            index,
            InFlight {
                endpoints: self.endpoints.clone(),
                index,
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
        let e = &self.endpoints[self.index];
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
        let p = &self.endpoints[self.index].pending;
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
            let (i, f) = b.pick();
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
        let held: Vec<InFlight> = (0..10).map(|_| b.pick().1).collect();
        // Equal RTTs, so the draws spread the load: neither endpoint holds all ten.
        let on0 = held.iter().filter(|f| f.index == 0).count();
        assert!((3..=7).contains(&on0), "{on0} of 10 on endpoint 0");
        drop(held);
        assert_eq!(
            b.endpoints.iter().map(|e| e.pending.get()).sum::<u32>(),
            0,
            "drops release pending"
        );
    }

    #[test]
    fn peak_jumps_up_and_decays_down() {
        let b = PeakEwma::new(1, Duration::from_millis(50), 1);
        b.pick().1.done(Duration::from_millis(100));
        let after_peak = b.cost_of(0);
        assert!(after_peak >= 90e6, "peak taken at once: {after_peak}");
        std::thread::sleep(Duration::from_millis(60));
        b.pick().1.done(Duration::from_millis(1));
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
            let (a, f) = set.pick();
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
        assert!(eps.contains(&set.pick().0));
        assert!(set.other(eps[0]).is_some());
    }
}
