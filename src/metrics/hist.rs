//! Exact fixed-bucket histograms: one counter per bucket and the sum, as Prometheus renders
//! them, so a value on a bound lands in that bound's bucket and nowhere else (no HdrHistogram
//! rounding). Values are microseconds; the bounds are given in the unit the family renders
//! (`le="0.005"` seconds, `le="5"` milliseconds) together with their value in microseconds.

use std::cell::Cell;
use std::time::Duration;

/// Adds `n` to a core-local counter (wrapping: a counter never panics).
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// A family's bucket bounds: `le` as rendered and in microseconds, ascending.
#[derive(Debug)]
pub struct Bounds {
    /// The `le` label values (the family's unit).
    pub le: &'static [&'static str],
    /// The same bounds in microseconds.
    pub us: &'static [u64],
    /// Microseconds per unit of the family (1e6 for seconds, 1e3 for milliseconds): `_sum`.
    pub us_per_unit: f64,
}

/// `response_latency_ms`: Linkerd's buckets (linkerd2-proxy `linkerd/metrics/src/latency.rs`),
/// 1 ms … 50 s.
pub static RESPONSE_MS: Bounds = Bounds {
    le: &[
        "1", "2", "3", "4", "5", "10", "20", "30", "40", "50", "100", "200", "300", "400", "500",
        "1000", "2000", "3000", "4000", "5000", "10000", "20000", "30000", "40000", "50000",
    ],
    us: &[
        1_000, 2_000, 3_000, 4_000, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 100_000,
        200_000, 300_000, 400_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000,
        10_000_000, 20_000_000, 30_000_000, 40_000_000, 50_000_000,
    ],
    us_per_unit: 1e3,
};

/// `tcp_connection_duration_seconds`: 1 ms … 1 h.
pub static DURATION_S: Bounds = Bounds {
    le: &[
        "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "30", "60", "300", "1800",
        "3600",
    ],
    us: &[
        1_000,
        5_000,
        10_000,
        50_000,
        100_000,
        500_000,
        1_000_000,
        5_000_000,
        10_000_000,
        30_000_000,
        60_000_000,
        300_000_000,
        1_800_000_000,
        3_600_000_000,
    ],
    us_per_unit: 1e6,
};

/// `tcp_detect_duration_seconds`: 10 µs … 30 s, fine where detection normally lands (tens of
/// µs) and where timeouts sit (seconds). Includes Linkerd's two detection bounds (0.001 and
/// 0.1 s), so `*_tcp_detect_http_duration_seconds` is rendered exactly from the same counts.
pub static DETECT_S: Bounds = Bounds {
    le: &[
        "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30",
    ],
    us: &[
        10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
    ],
    us_per_unit: 1e6,
};

/// Linkerd's `{inbound,outbound}_tcp_detect_http_duration_seconds` bounds (a subset of
/// [`DETECT_S`]).
pub static LINKERD_DETECT_S: Bounds = Bounds {
    le: &["0.001", "0.1"],
    us: &[1_000, 100_000],
    us_per_unit: 1e6,
};

/// A histogram over `bounds`, owned by one core.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static Bounds,
    /// `counts[i]`: values above bound `i - 1` and up to bound `i`; the last: above all.
    counts: Box<[Cell<u64>]>,
    sum_us: Cell<u64>,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static Bounds) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.us.len()).map(|_| Cell::new(0)).collect(),
            sum_us: Cell::new(0),
        }
    }

    /// Records `d` (a bound is inclusive: `le`).
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = self.bounds.us.partition_point(|&b| b < us);
        bump(&self.counts[i], 1);
        bump(&self.sum_us, us);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BucketCounts {
        BucketCounts {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// Plain values of a [`Histogram`]: per-bucket (not cumulative) counts, the last one above
/// every bound, and the sum in microseconds. Empty (no counts) stands for all zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCounts {
    /// Per bucket.
    pub counts: Vec<u64>,
    /// Sum of the recorded values (µs).
    pub sum_us: u64,
}

impl BucketCounts {
    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values at or below the bound with index `i` (cumulative, as `le` counts).
    pub fn cumulative(&self, i: usize) -> u64 {
        self.counts.iter().take(i + 1).sum()
    }

    /// Adds another core's counts (same bounds).
    pub fn merge(&mut self, o: &BucketCounts) {
        if self.counts.len() < o.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a = a.wrapping_add(*b);
        }
        self.sum_us = self.sum_us.wrapping_add(o.sum_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for b in [&RESPONSE_MS, &DURATION_S, &DETECT_S, &LINKERD_DETECT_S] {
            assert_eq!(b.le.len(), b.us.len());
            for (le, us) in b.le.iter().zip(b.us) {
                let v: f64 = le.parse().unwrap();
                assert_eq!((v * b.us_per_unit).round() as u64, *us, "{le}");
            }
            assert!(b.us.windows(2).all(|w| w[0] < w[1]));
        }
        for us in LINKERD_DETECT_S.us {
            assert!(DETECT_S.us.contains(us), "Linkerd's bounds are a subset");
        }
    }

    #[test]
    fn buckets_are_exact_at_the_bounds() {
        let h = Histogram::new(&RESPONSE_MS);
        for us in [0, 1_000, 1_001, 50_000_000, 50_000_001] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2, "0 and 1 ms are in le=1");
        assert_eq!(s.counts[1], 1, "1.001 ms is in le=2");
        assert_eq!(s.counts[24], 1, "50 s is in le=50000");
        assert_eq!(s.counts[25], 1, "above every bound");
        assert_eq!(s.len(), 5);
        assert_eq!(s.cumulative(1), 3);
        assert_eq!(s.sum_us, 1_000 + 1_001 + 50_000_000 + 50_000_001);
    }

    #[test]
    fn merge_adds_and_fills_an_empty_side() {
        let a = Histogram::new(&DETECT_S);
        a.record(Duration::from_micros(20));
        let mut m = BucketCounts::default();
        m.merge(&a.snapshot());
        m.merge(&a.snapshot());
        assert_eq!(m.counts[1], 2);
        assert_eq!(m.sum_us, 40);
        // A huge duration neither panics nor wraps the bucket index.
        a.record(Duration::from_secs(u64::MAX));
        assert_eq!(a.snapshot().counts[20], 1);
    }
}
