//! HTTP metrics of one series (listener, route, protocol, target, authority) on one core:
//! Linkerd's `request_total`, `response_total` and `response_latency_ms`, with Linkerd's
//! labels and semantics (linkerd2-proxy `linkerd/app/core/src/classify.rs`, `metrics.rs`):
//!
//! - a response is counted when it ends, with `status_code`, `classification`, `grpc_status`
//!   (`""` unless gRPC) and `error` (`""` unless the proxy, not the upstream, ended it);
//! - `classification` follows `grpc-status` when there is one (failure only for the configured
//!   codes, Linkerd's by default), else the HTTP status (5xx = failure); an `error` is always a
//!   failure;
//! - `response_latency_ms` is labelled by `status_code` and measures request head → the
//!   response's first body byte, or its end when it has no body.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use super::hist::{bump, BucketCounts, Histogram, RESPONSE_MS};

/// The `protocol` label of the HTTP families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// HTTP/1.x.
    #[default]
    Http1,
    /// HTTP/2 (including gRPC).
    Http2,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1",
            Protocol::Http2 => "http/2",
        }
    }
}

/// Why the proxy, not the upstream, ended an exchange: the `error` label of `response_total`.
/// Linkerd's values where the cause is the same (`timeout`, `h2(REASON)`), else sidewire's own
/// short names; bounded either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorLabel {
    /// The upstream's response did not start in time (the proxy answered 504).
    Timeout,
    /// No connection to the upstream (502).
    Connect,
    /// The upstream answered badly, not at all, or stopped taking the request (502), or its
    /// response body failed midway.
    Upstream,
    /// A request the proxy does not carry (CONNECT over HTTP/2: 501).
    Unsupported,
    /// The HTTP/1 client went away or stopped reading before its response ended (the
    /// response was cut; over HTTP/2 the same shows as `h2(CANCEL)` or another reset).
    Client,
    /// The stream was reset with this HTTP/2 error code (RFC 9113 §7), before or during the
    /// response.
    H2(u32),
}

/// RFC 9113 §7 error code names.
const H2_REASONS: [&str; 14] = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
];

impl ErrorLabel {
    /// The label value (`h2(CANCEL)` as Linkerd writes it; unknown codes `h2(UNKNOWN)`).
    pub fn label(self) -> std::borrow::Cow<'static, str> {
        match self {
            ErrorLabel::Timeout => "timeout".into(),
            ErrorLabel::Connect => "connect".into(),
            ErrorLabel::Upstream => "upstream".into(),
            ErrorLabel::Unsupported => "unsupported".into(),
            ErrorLabel::Client => "client".into(),
            ErrorLabel::H2(r) => {
                let name = H2_REASONS.get(r as usize).copied().unwrap_or("UNKNOWN");
                format!("h2({name})").into()
            }
        }
    }

    /// The error of a proxy-made answer with HTTP status `code` and `reason` (its
    /// `sidewire-error`): `connect` when no upstream connection could be made
    /// ([`CONNECT_FAILED`]), else as [`ErrorLabel::of_status`]: none for a 4xx, which
    /// answers the client's own mistake (a malformed or stalled request) and is counted like
    /// any 4xx, not as a failure of the service.
    pub fn of_answer(code: u16, reason: &str) -> Option<ErrorLabel> {
        if reason == CONNECT_FAILED {
            return Some(ErrorLabel::Connect);
        }
        Self::of_status(code)
    }

    /// The error of a proxy-made answer with HTTP status `code` whose cause is not known
    /// better: `timeout` (504), `unsupported` (501), none for a 4xx, else `upstream`.
    pub fn of_status(code: u16) -> Option<ErrorLabel> {
        match code {
            504 => Some(ErrorLabel::Timeout),
            501 => Some(ErrorLabel::Unsupported),
            400..=499 => None,
            _ => Some(ErrorLabel::Upstream),
        }
    }
}

/// The `sidewire-error` reason of a 502 for an upstream that could not be dialled.
pub const CONNECT_FAILED: &str = "upstream connect failed";

/// No `grpc-status` (not gRPC, or none seen): `grpc_status=""`.
pub const NO_GRPC_STATUS: u8 = u8::MAX;

/// How one response ended, beyond its status: the labels of one `response_total` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outcome {
    /// `grpc-status` (0–16; a higher code is counted as UNKNOWN, 2) or [`NO_GRPC_STATUS`].
    pub grpc: u8,
    /// Set when the proxy ended the exchange.
    pub error: Option<ErrorLabel>,
    /// `classification="failure"`.
    pub failed: bool,
}

/// The responses and latency of one status code.
#[derive(Debug)]
struct ByStatus {
    /// HTTP status, or 0 for an exchange that ended with no response (a reset stream).
    code: u16,
    latency: Histogram,
    outcomes: Vec<(Outcome, u64)>,
}

/// HTTP metrics of one series on one core.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Cell<u64>,
    /// Bit `c`: `grpc-status` `c` is a failure (`[metrics] grpc_failure_codes`).
    grpc_failures: u32,
    /// Few per series (the status codes seen), so scanned linearly.
    statuses: RefCell<Vec<ByStatus>>,
}

impl HttpMetrics {
    /// An empty series classifying gRPC statuses with the `grpc_failures` bit set.
    pub fn new(grpc_failures: u32) -> HttpMetrics {
        HttpMetrics {
            requests: Cell::new(0),
            grpc_failures,
            statuses: RefCell::new(Vec::new()),
        }
    }

    /// A request head was read.
    pub fn request(&self) {
        bump(&self.requests, 1);
    }

    fn with_status<R>(&self, code: u16, f: impl FnOnce(&mut ByStatus) -> R) -> R {
        let mut s = self.statuses.borrow_mut();
        let i = match s.iter().position(|b| b.code == code) {
            Some(i) => i,
            None => {
                s.push(ByStatus {
                    code,
                    latency: Histogram::new(&RESPONSE_MS),
                    outcomes: Vec::new(),
                });
                s.len() - 1
            }
        };
        f(&mut s[i])
    }

    /// The response with status `code` had its first body byte (or its end, when it has no
    /// body) `ttfb` after the request head: `response_latency_ms{status_code}`.
    pub fn first_byte(&self, code: u16, ttfb: Duration) {
        let code = code.clamp(100, 599);
        self.with_status(code, |b| b.latency.record(ttfb));
    }

    /// A response with status `code` ended (`code` 0: the exchange ended with no response),
    /// with `grpc-status` `grpc` if any, or ended by the proxy with `error`. Counted at the
    /// end, as Linkerd does, because gRPC's outcome is known only then.
    pub fn completed(&self, code: u16, grpc: Option<u8>, error: Option<ErrorLabel>) {
        let code = if code == 0 { 0 } else { code.clamp(100, 599) };
        let grpc = grpc.map_or(NO_GRPC_STATUS, |g| if g > 16 { 2 } else { g });
        let failed = error.is_some()
            || if grpc == NO_GRPC_STATUS {
                code >= 500
            } else {
                self.grpc_failures & (1 << grpc) != 0
            };
        let o = Outcome {
            grpc,
            error,
            failed,
        };
        self.with_status(code, |b| {
            match b.outcomes.iter_mut().find(|(k, _)| *k == o) {
                Some((_, n)) => *n += 1,
                None => b.outcomes.push((o, 1)),
            }
        });
    }

    /// A whole response from the upstream with status `code`, its first body byte after
    /// `ttfb` (HTTP/1, no gRPC).
    pub fn response(&self, code: u16, ttfb: Duration) {
        self.first_byte(code, ttfb);
        self.completed(code, None, None);
    }

    /// An answer the proxy made itself with status `code` after `ttfb`, for `error` (none:
    /// the client's own mistake, see [`ErrorLabel::of_status`]).
    pub fn proxy_answer(&self, code: u16, error: Option<ErrorLabel>, ttfb: Duration) {
        self.first_byte(code, ttfb);
        self.completed(code, None, error);
    }

    /// A copy for the admin thread.
    pub fn snapshot(&self) -> HttpValues {
        HttpValues {
            requests: self.requests.get(),
            statuses: self
                .statuses
                .borrow()
                .iter()
                .map(|b| StatusValues {
                    code: b.code,
                    latency: b.latency.snapshot(),
                    outcomes: b.outcomes.clone(),
                })
                .collect(),
        }
    }
}

/// Plain values of one status code of a series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusValues {
    /// HTTP status (0: no response).
    pub code: u16,
    /// `response_latency_ms` for this status.
    pub latency: BucketCounts,
    /// `response_total` per outcome.
    pub outcomes: Vec<(Outcome, u64)>,
}

/// Plain values of [`HttpMetrics`], mergeable across cores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpValues {
    /// Requests.
    pub requests: u64,
    /// Per status code, sorted by code once merged.
    pub statuses: Vec<StatusValues>,
}

impl HttpValues {
    /// Adds another core's values.
    pub fn merge(&mut self, o: &HttpValues) {
        self.requests = self.requests.wrapping_add(o.requests);
        for s in &o.statuses {
            let mine = match self.statuses.iter_mut().position(|m| m.code == s.code) {
                Some(i) => &mut self.statuses[i],
                None => {
                    self.statuses.push(StatusValues {
                        code: s.code,
                        ..StatusValues::default()
                    });
                    self.statuses.last_mut().expect("invariant: just pushed")
                }
            };
            mine.latency.merge(&s.latency);
            for &(k, n) in &s.outcomes {
                match mine.outcomes.iter_mut().find(|(m, _)| *m == k) {
                    Some((_, m)) => *m = m.wrapping_add(n),
                    None => mine.outcomes.push((k, n)),
                }
            }
            mine.outcomes.sort_unstable();
        }
        self.statuses.sort_unstable_by_key(|s| s.code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linkerd's default failure codes.
    const LINKERD: u32 = 1 << 2 | 1 << 4 | 1 << 7 | 1 << 13 | 1 << 14 | 1 << 15;

    fn outcome(v: &HttpValues, code: u16) -> Vec<(Outcome, u64)> {
        v.statuses
            .iter()
            .find(|s| s.code == code)
            .map(|s| s.outcomes.clone())
            .unwrap_or_default()
    }

    #[test]
    fn classification_follows_grpc_status_then_http_status() {
        let m = HttpMetrics::new(LINKERD);
        m.completed(200, Some(5), None); // NOT_FOUND: an answer, not a failure
        m.completed(200, Some(14), None); // UNAVAILABLE
        m.completed(200, Some(99), None); // unknown code: UNKNOWN, a failure
        m.completed(503, None, None);
        m.completed(404, None, None);
        m.completed(502, None, Some(ErrorLabel::Connect));
        m.completed(0, None, Some(ErrorLabel::H2(8)));
        let v = m.snapshot();
        let ok = outcome(&v, 200);
        assert!(ok.iter().any(|(o, _)| o.grpc == 5 && !o.failed));
        assert!(ok.iter().any(|(o, _)| o.grpc == 14 && o.failed));
        assert!(ok.iter().any(|(o, _)| o.grpc == 2 && o.failed));
        assert!(outcome(&v, 503)[0].0.failed);
        assert!(!outcome(&v, 404)[0].0.failed);
        let e = outcome(&v, 502)[0].0;
        assert!(e.failed && e.error == Some(ErrorLabel::Connect));
        assert_eq!(outcome(&v, 0)[0].0.error.unwrap().label(), "h2(CANCEL)");
        assert_eq!(ErrorLabel::H2(1000).label(), "h2(UNKNOWN)");
    }

    #[test]
    fn latency_is_per_status_and_merges() {
        let a = HttpMetrics::new(0);
        a.response(200, Duration::from_micros(1500));
        a.response(500, Duration::from_millis(30));
        let b = HttpMetrics::new(0);
        b.request();
        b.response(200, Duration::from_millis(7));
        let mut v = a.snapshot();
        v.merge(&b.snapshot());
        assert_eq!(v.requests, 1);
        assert_eq!(
            v.statuses.iter().map(|s| s.code).collect::<Vec<_>>(),
            [200, 500]
        );
        let l200 = &v.statuses[0].latency;
        assert_eq!(l200.len(), 2);
        assert_eq!(l200.counts[1], 1, "1.5 ms is in le=2");
        assert_eq!(l200.counts[5], 1, "7 ms is in le=10");
        assert_eq!(v.statuses[0].outcomes[0].1, 2);
    }
}
