//! Passive health: an endpoint whose connects keep failing is ejected for a while.
//!
//! After `after` consecutive failed connects (refused, unreachable, timed out) to one endpoint,
//! the balancers of its listener skip it for a back-off that starts at `base` and doubles with
//! each ejection that follows without a success in between, up to `max` (Linkerd's failure
//! accrual, Envoy's consecutive-failure outlier detection). When the back-off ends the endpoint
//! is picked again: one more failure ejects it again at once, for twice as long; one success
//! clears its record. When every endpoint of a set is ejected, picks ignore ejection (the
//! connects might succeed; refusing them all would be a self-made outage).
//!
//! Per core and per listener, single-threaded (`Cell`, `RefCell`): each worker learns from its
//! own connects. The normal case (no endpoint failing) costs one `Cell` read per pick and per
//! successful connect; the table is only consulted while some endpoint is failing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tracing::warn;

pub use crate::config::EjectionPolicy;
use crate::metrics::ListenerMetrics;

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    /// Failed connects since the last success.
    failures: u32,
    /// Ejections since the last success (the back-off's exponent).
    ejections: u32,
    /// The end of the current or last ejection.
    until: Option<Instant>,
}

/// The health of one listener's endpoints on one core, shared by its balancers.
#[derive(Debug)]
pub struct Health {
    policy: EjectionPolicy,
    /// Records of the listener's endpoints (its own and its routes'); connects to other
    /// addresses (original destinations) are not recorded.
    records: RefCell<HashMap<SocketAddr, Record>>,
    /// Endpoints with a failure since their last success: 0 means nothing to look up.
    failing: Cell<u32>,
    /// Where ejections are counted (`sidewire_endpoint_ejections_total`).
    metrics: Rc<ListenerMetrics>,
}

impl Health {
    /// The health of `endpoints` (duplicates are fine) under `policy`, ejections counted in
    /// `metrics`.
    pub fn new(
        policy: EjectionPolicy,
        endpoints: impl IntoIterator<Item = SocketAddr>,
        metrics: Rc<ListenerMetrics>,
    ) -> Health {
        let records = if policy.after == 0 {
            HashMap::new()
        } else {
            endpoints
                .into_iter()
                .map(|a| (a, Record::default()))
                .collect()
        };
        Health {
            policy,
            records: RefCell::new(records),
            failing: Cell::new(0),
            metrics,
        }
    }

    /// Makes `endpoints` (duplicates are fine) the ones recorded, after an endpoint set
    /// changed (a DNS answer): new ones start with a clean record, ones that stay keep
    /// theirs, others are forgotten.
    pub fn track(&self, endpoints: impl IntoIterator<Item = SocketAddr>) {
        if self.policy.after == 0 {
            return;
        }
        let mut records = self.records.borrow_mut();
        let mut next: HashMap<SocketAddr, Record> = endpoints
            .into_iter()
            .map(|a| (a, records.get(&a).copied().unwrap_or_default()))
            .collect();
        std::mem::swap(&mut *records, &mut next);
        let failing = records.values().filter(|r| r.failures > 0).count();
        self.failing.set(failing as u32);
    }

    /// Whether any endpoint is failing (when not, nothing is ejected).
    #[inline]
    pub fn any_failing(&self) -> bool {
        self.failing.get() != 0
    }

    /// Whether `addr` is ejected at `now`.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        self.any_failing()
            && self
                .records
                .borrow()
                .get(&addr)
                .and_then(|r| r.until)
                .is_some_and(|u| u > now)
    }

    /// A connect to `addr` succeeded: its record is cleared.
    #[inline]
    pub fn connected(&self, addr: SocketAddr) {
        if !self.any_failing() {
            return;
        }
        if let Some(r) = self.records.borrow_mut().get_mut(&addr) {
            if r.failures > 0 {
                self.failing.set(self.failing.get() - 1);
            }
            *r = Record::default();
        }
    }

    /// A connect to `addr` failed. Returns whether that ejected it (logged at WARN).
    pub fn failed(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        let mut records = self.records.borrow_mut();
        let Some(r) = records.get_mut(&addr) else {
            return false;
        };
        if r.until.is_some_and(|u| u > now) {
            // Already ejected (a connect that started before the ejection).
            return false;
        }
        if r.failures == 0 {
            self.failing.set(self.failing.get() + 1);
        }
        r.failures = r.failures.saturating_add(1);
        if r.failures < self.policy.after {
            return false;
        }
        let length = self
            .policy
            .base
            .saturating_mul(1u32 << r.ejections.min(20))
            .min(self.policy.max);
        r.ejections = r.ejections.saturating_add(1);
        r.until = Some(now + length);
        self.metrics.endpoint_ejected();
        warn!(
            endpoint = %addr,
            failures = r.failures,
            for_ms = length.as_millis() as u64,
            "upstream endpoint ejected after consecutive connect failures"
        );
        true
    }

    /// Endpoints ejected at `now`.
    pub fn ejected_now(&self, now: Instant) -> usize {
        if !self.any_failing() {
            return 0;
        }
        self.records
            .borrow()
            .values()
            .filter(|r| r.until.is_some_and(|u| u > now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn health(policy: EjectionPolicy, eps: &[SocketAddr]) -> Health {
        Health::new(
            policy,
            eps.iter().copied(),
            Rc::new(ListenerMetrics::default()),
        )
    }

    fn ep(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn policy(after: u32) -> EjectionPolicy {
        EjectionPolicy {
            after,
            base: Duration::from_millis(40),
            max: Duration::from_millis(100),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_clears() {
        let h = health(policy(3), &[ep(1), ep(2)]);
        let now = Instant::now;
        assert!(!h.any_failing());
        assert!(!h.failed(ep(1)));
        assert!(!h.failed(ep(1)));
        // A success in between starts the count again.
        h.connected(ep(1));
        assert!(!h.any_failing());
        assert!(!h.failed(ep(1)));
        assert!(!h.failed(ep(1)));
        assert!(h.failed(ep(1)), "third in a row ejects");
        assert!(h.is_ejected(ep(1), now()));
        assert!(!h.is_ejected(ep(2), now()));
        assert_eq!(h.ejected_now(now()), 1);
        assert_eq!(h.metrics.snapshot().endpoint_ejections, 1);
        // Failures of connects begun before the ejection do not extend it.
        assert!(!h.failed(ep(1)));
        assert_eq!(h.metrics.snapshot().endpoint_ejections, 1);
    }

    #[test]
    fn tracking_new_endpoints_keeps_the_records_of_those_that_stay() {
        let h = health(policy(1), &[ep(1), ep(2)]);
        assert!(h.failed(ep(1)));
        // A DNS answer: 1 stays (still ejected), 2 goes, 3 comes and is tracked.
        h.track([ep(1), ep(3), ep(3)]);
        assert!(h.is_ejected(ep(1), Instant::now()));
        assert!(h.failed(ep(3)), "a new endpoint's failures count");
        assert!(!h.failed(ep(2)), "a removed endpoint is no longer recorded");
        // 1 goes: the failing count follows, and a success of 3 clears the rest.
        h.track([ep(3)]);
        h.connected(ep(3));
        assert!(!h.any_failing());
        // With ejection off nothing is recorded.
        let off = health(EjectionPolicy::OFF, &[]);
        off.track([ep(1)]);
        assert!(!off.failed(ep(1)));
    }

    #[test]
    fn back_off_doubles_up_to_the_max_and_ends() {
        let h = health(policy(1), &[ep(1)]);
        let t0 = Instant::now();
        assert!(h.failed(ep(1)));
        let first = h.records.borrow()[&ep(1)].until.unwrap();
        assert!(first >= t0 + Duration::from_millis(40));
        assert!(first < t0 + Duration::from_millis(80));
        assert!(!h.is_ejected(ep(1), first), "ends at `until`");
        // After it ends, one failure ejects again for twice as long: 80 ms.
        h.records.borrow_mut().get_mut(&ep(1)).unwrap().until = Some(Instant::now());
        let t1 = Instant::now();
        assert!(h.failed(ep(1)));
        let second = h.records.borrow()[&ep(1)].until.unwrap();
        assert!(second >= t1 + Duration::from_millis(80));
        // Then capped at 100 ms.
        h.records.borrow_mut().get_mut(&ep(1)).unwrap().until = Some(Instant::now());
        let t2 = Instant::now();
        assert!(h.failed(ep(1)));
        let third = h.records.borrow()[&ep(1)].until.unwrap();
        assert!(third <= Instant::now() + Duration::from_millis(100));
        assert!(third >= t2 + Duration::from_millis(100));
        // A success clears everything: the next ejection is the base length again.
        h.connected(ep(1));
        assert!(!h.is_ejected(ep(1), Instant::now()));
        assert_eq!(h.records.borrow()[&ep(1)].ejections, 0);
    }

    #[test]
    fn off_and_unknown_addresses_record_nothing() {
        let off = health(EjectionPolicy::OFF, &[ep(1)]);
        for _ in 0..10 {
            assert!(!off.failed(ep(1)));
        }
        assert!(!off.any_failing());
        let h = health(policy(1), &[ep(1)]);
        assert!(
            !h.failed(ep(9)),
            "an original destination is not an endpoint"
        );
        assert!(!h.any_failing());
    }
}
