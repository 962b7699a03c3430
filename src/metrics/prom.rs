//! Prometheus text exposition (format 0.0.4) of merged snapshots, written directly into a
//! `String`: no registry, no global state.
//!
//! Names follow Linkerd's transport metrics (`tcp_open_total`, `tcp_read_bytes_total`, …) so
//! existing dashboards keep working; every listener's series start with `listener` (from
//! config) and `direction` (`inbound`/`outbound`), then e.g. `peer` (`src` = client side,
//! `dst` = upstream side). Bounded sets only: per-destination HTTP series (`target_addr`)
//! are capped per worker (see [`super::MAX_DESTINATIONS`]).

use std::fmt::Write;

use hdrhistogram::Histogram;

pub use super::RESPONSE_BUCKETS_MS;
use super::{BucketCounts, HttpSnapshot, ListenerSnapshot, PeerSnapshot, NO_GRPC_STATUS};
use crate::config::Direction;
use crate::detect::DetectReason;
use crate::error::{ConnectErrorKind, Refusal};

/// Bucket bounds of `tcp_connection_duration_seconds`, in seconds.
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Bucket bounds of `tcp_detect_duration_seconds`: 10 µs to 30 s, fine where detection
/// normally lands (tens of µs) and where timeouts sit (seconds).
pub const DETECT_BUCKETS_S: [f64; 20] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The labels every series of listener `name` starts with:
/// `listener="NAME",direction="inbound|outbound"` (names are `[A-Za-z0-9_-]+`, checked by the
/// config, so no escaping is needed).
pub fn listener_labels(name: &str, direction: Direction) -> String {
    format!("listener=\"{name}\",direction=\"{}\"", direction.as_str())
}

/// Process-wide values the admin thread reads from `/proc`.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Process start, seconds since the epoch.
    pub start_time_seconds: f64,
    /// Worker threads.
    pub workers: usize,
    /// Workers on the io_uring driver.
    pub io_uring_workers: usize,
    /// Workers on the epoll driver.
    pub epoll_workers: usize,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric family. `listeners` pairs each listener's labels (from
/// [`listener_labels`]) with its merged values.
pub fn render(listeners: &[(&str, ListenerSnapshot)], process: &ProcessInfo) -> String {
    let mut out = String::with_capacity(4096 + listeners.len() * 4096);
    type PeerField = fn(&PeerSnapshot) -> u64;
    let peer_families: [(&str, &str, &str, PeerField); 4] = [
        ("tcp_open_total", "counter", "Connections opened.", |p| {
            p.open_total
        }),
        (
            "tcp_open_connections",
            "gauge",
            "Connections open now.",
            |p| p.open,
        ),
        (
            "tcp_read_bytes_total",
            "counter",
            "Bytes read from the peer.",
            |p| p.read_bytes,
        ),
        (
            "tcp_write_bytes_total",
            "counter",
            "Bytes written to the peer.",
            |p| p.write_bytes,
        ),
    ];
    for (name, kind, help, field) in peer_families {
        header(&mut out, name, kind, help);
        for (l, s) in listeners {
            for (peer, p) in [("src", &s.src), ("dst", &s.dst)] {
                let _ = writeln!(out, "{name}{{{l},peer=\"{peer}\"}} {}", field(p));
            }
        }
    }
    header(
        &mut out,
        "tcp_close_total",
        "counter",
        "Connections closed, by outcome.",
    );
    for (l, s) in listeners {
        for (peer, p) in [("src", &s.src), ("dst", &s.dst)] {
            for (class, v) in [("success", p.close_ok), ("failure", p.close_err)] {
                let _ = writeln!(
                    out,
                    "tcp_close_total{{{l},peer=\"{peer}\",classification=\"{class}\"}} {v}"
                );
            }
        }
    }
    header(
        &mut out,
        "tcp_connect_errors_total",
        "counter",
        "Failed upstream connects, by cause.",
    );
    for (l, s) in listeners {
        for k in ConnectErrorKind::ALL {
            let _ = writeln!(
                out,
                "tcp_connect_errors_total{{{l},error=\"{}\"}} {}",
                k.as_str(),
                s.connect_errors[k as usize]
            );
        }
    }
    header(
        &mut out,
        "tcp_connection_duration_seconds",
        "histogram",
        "Lifetime of client connections.",
    );
    for (l, s) in listeners {
        histogram(
            &mut out,
            "tcp_connection_duration_seconds",
            l,
            &s.duration,
            &DURATION_BUCKETS_S,
        );
    }
    header(
        &mut out,
        "tcp_detect_total",
        "counter",
        "Protocol detection verdicts.",
    );
    for (l, s) in listeners {
        for reason in DetectReason::ALL {
            for &r in reason.results() {
                let _ = writeln!(
                    out,
                    "tcp_detect_total{{{l},result=\"{}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    reason.as_str(),
                    s.detect[reason as usize][r as usize]
                );
            }
        }
    }
    header(
        &mut out,
        "tcp_refused_total",
        "counter",
        "Connections an original-destination listener refused: loop (the destination is the proxy itself) or no_original_dst.",
    );
    for (l, s) in listeners {
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "tcp_refused_total{{{l},reason=\"{}\"}} {}",
                r.as_str(),
                s.refused[r as usize]
            );
        }
    }
    header(
        &mut out,
        "tcp_detect_duration_seconds",
        "histogram",
        "Time from accept to the detection verdict.",
    );
    for (l, s) in listeners {
        histogram(
            &mut out,
            "tcp_detect_duration_seconds",
            l,
            &s.detect_latency,
            &DETECT_BUCKETS_S,
        );
    }
    header(
        &mut out,
        "tcp_detect_tls_total",
        "counter",
        "TLS ClientHellos, with and without SNI.",
    );
    for (l, s) in listeners {
        for (i, sni) in ["present", "absent"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tcp_detect_tls_total{{{l},sni=\"{sni}\"}} {}",
                s.tls_sni[i]
            );
        }
    }
    header(
        &mut out,
        "request_total",
        "counter",
        "HTTP requests (HTTP/1 and HTTP/2 proxying).",
    );
    let http: Vec<Vec<(String, &HttpSnapshot)>> =
        listeners.iter().map(|(_, s)| http_series(s)).collect();
    for ((l, _), hs) in listeners.iter().zip(&http) {
        for (labels, h) in hs {
            let _ = writeln!(out, "request_total{{{l},{labels}}} {}", h.requests);
        }
    }
    header(
        &mut out,
        "response_total",
        "counter",
        "HTTP responses by status (and gRPC status); 5xx and non-zero grpc-status are failures.",
    );
    for ((l, _), hs) in listeners.iter().zip(&http) {
        for (labels, h) in hs {
            for &(code, grpc, n) in &h.responses {
                let failed = code >= 500 || (grpc != NO_GRPC_STATUS && grpc != 0);
                let class = if failed { "failure" } else { "success" };
                let _ = write!(
                    out,
                    "response_total{{{l},{labels},status_code=\"{code}\",classification=\"{class}\""
                );
                if grpc != NO_GRPC_STATUS {
                    let _ = write!(out, ",grpc_status_code=\"{grpc}\"");
                }
                let _ = writeln!(out, "}} {n}");
            }
        }
    }
    header(
        &mut out,
        "response_latency_ms",
        "histogram",
        "Time to the response's first byte.",
    );
    for ((l, _), hs) in listeners.iter().zip(&http) {
        for (labels, h) in hs {
            buckets(
                &mut out,
                "response_latency_ms",
                &format!("{l},{labels}"),
                &h.latency,
            );
        }
    }
    header(
        &mut out,
        "tcp_detect_early_dials_total",
        "counter",
        "Upstream dials made during detection because the client was silent (server-speaks-first).",
    );
    for (l, s) in listeners {
        let _ = writeln!(out, "tcp_detect_early_dials_total{{{l}}} {}", s.early_dials);
    }
    header(
        &mut out,
        "tcp_detect_early_dials_unused_total",
        "counter",
        "Upstream connections dialled during detection that were closed unused.",
    );
    for (l, s) in listeners {
        let _ = writeln!(
            out,
            "tcp_detect_early_dials_unused_total{{{l}}} {}",
            s.early_unused
        );
    }
    header(
        &mut out,
        "http2_connection_errors_total",
        "counter",
        "HTTP/2 client connections closed on a protocol error or a broken [http2] limit (GOAWAY sent).",
    );
    for (l, s) in listeners {
        let _ = writeln!(out, "http2_connection_errors_total{{{l}}} {}", s.h2_errors);
    }
    header(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", process.cpu_seconds);
    header(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
    );
    let _ = writeln!(
        out,
        "process_resident_memory_bytes {}",
        process.resident_bytes
    );
    header(
        &mut out,
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
    );
    let _ = writeln!(out, "process_open_fds {}", process.open_fds);
    header(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time since the epoch.",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        process.start_time_seconds
    );
    header(
        &mut out,
        "sidewire_workers",
        "gauge",
        "Worker threads (one per core).",
    );
    let _ = writeln!(out, "sidewire_workers {}", process.workers);
    header(
        &mut out,
        "sidewire_runtime_driver",
        "gauge",
        "Worker threads per I/O driver: io_uring, or epoll where io_uring is refused.",
    );
    let _ = writeln!(
        out,
        "sidewire_runtime_driver{{driver=\"io_uring\"}} {}\nsidewire_runtime_driver{{driver=\"epoll\"}} {}",
        process.io_uring_workers, process.epoll_workers
    );
    header(
        &mut out,
        "sidewire_build_info",
        "gauge",
        "Build information.",
    );
    let _ = writeln!(
        out,
        "sidewire_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// A listener's HTTP series with their labels after `listener` and `direction`
/// (`route`, `target_addr` if any, `protocol`). Per-destination series appear once they have a
/// request (an original destination gets both protocols' entries on first use).
fn http_series(s: &ListenerSnapshot) -> Vec<(String, &HttpSnapshot)> {
    s.http
        .iter()
        .filter(|h| h.target_addr.is_none() || h.requests > 0)
        .map(|h| {
            let dst = h
                .target_addr
                .as_deref()
                .map(|t| format!(",target_addr=\"{t}\""))
                .unwrap_or_default();
            let labels = format!(
                "route=\"{}\"{dst},protocol=\"{}\"",
                h.route,
                h.protocol.as_str()
            );
            (labels, h)
        })
        .collect()
}

/// Writes `response_latency_ms` (bounds [`RESPONSE_BUCKETS_MS`], sum in ms) from exact
/// per-bucket counts.
fn buckets(out: &mut String, name: &str, labels: &str, b: &BucketCounts) {
    let mut n = 0;
    for (bound, c) in RESPONSE_BUCKETS_MS.iter().zip(b.counts) {
        n += c;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", b.len());
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", b.sum_us as f64 / 1e3);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", b.len());
}

/// Writes one Prometheus histogram from an hdrhistogram in microseconds. Bucket counts are
/// cumulative (`le` includes every value up to the bound, within hdrhistogram's 1% precision).
pub fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>, bounds_s: &[f64]) {
    histogram_in(out, name, labels, h, bounds_s, 1e6)
}

/// Like [`histogram`] with bounds (and sum) in a unit of `us_per_unit` microseconds.
pub fn histogram_in(
    out: &mut String,
    name: &str,
    labels: &str,
    h: &Histogram<u64>,
    bounds: &[f64],
    us_per_unit: f64,
) {
    for b in bounds {
        let le_us = (b * us_per_unit) as u64;
        let n = h.count_between(0, le_us);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
    let sum_s = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / us_per_unit;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_s}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{record, ListenerMetrics};
    use std::time::Duration;

    #[test]
    fn renders_counters_and_histogram() {
        let m = ListenerMetrics::default();
        m.src.opened();
        m.src.read(1234);
        m.dst.wrote(1234);
        m.connect_failed(ConnectErrorKind::Refused);
        m.record_duration(Duration::from_millis(3));
        let labels = listener_labels("out", Direction::Inbound);
        let text = render(&[(&labels, m.snapshot())], &ProcessInfo::default());
        assert!(
            text.contains(
                "tcp_open_total{listener=\"out\",direction=\"inbound\",peer=\"src\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "tcp_read_bytes_total{listener=\"out\",direction=\"inbound\",peer=\"src\"} 1234\n"
        ));
        assert!(text.contains(
            "tcp_write_bytes_total{listener=\"out\",direction=\"inbound\",peer=\"dst\"} 1234\n"
        ));
        assert!(text.contains("tcp_connect_errors_total{listener=\"out\",direction=\"inbound\",error=\"refused\"} 1\n"));
        assert!(text
            .contains("tcp_connection_duration_seconds_bucket{listener=\"out\",direction=\"inbound\",le=\"0.001\"} 0\n"));
        assert!(text
            .contains("tcp_connection_duration_seconds_bucket{listener=\"out\",direction=\"inbound\",le=\"0.005\"} 1\n"));
        assert!(text.contains(
            "tcp_connection_duration_seconds_count{listener=\"out\",direction=\"inbound\"} 1\n"
        ));
        // Every sample line is "name{labels} value" or "name value".
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').expect(line);
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
        }
    }

    #[test]
    fn histogram_sum_is_in_seconds() {
        let mut h = crate::metrics::new_histogram();
        record(&mut h, Duration::from_secs(2));
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &h, &[1.0, 10.0]);
        let sum: f64 = out
            .lines()
            .find(|l| l.starts_with("x_sum"))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        assert!((sum - 2.0).abs() < 0.05, "{out}");
    }
}
