//! Prometheus text exposition (format 0.0.4) of merged snapshots, written directly into a
//! `String`: no registry, no global state.
//!
//! Names follow Linkerd's transport metrics (`tcp_open_total`, `tcp_read_bytes_total`, …) so
//! existing dashboards keep working; labels are `listener` (from config) and `peer`
//! (`src` = client side, `dst` = upstream side): bounded sets only.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::{ListenerSnapshot, PeerSnapshot, NO_GRPC_STATUS};
use crate::detect::DetectResult;
use crate::error::ConnectErrorKind;

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

/// Bucket bounds of `response_latency_ms`, in milliseconds: Linkerd's, so dashboards port.
pub const RESPONSE_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

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
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric family. `listeners` pairs each listener's name with its merged values.
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
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{l}\",peer=\"{peer}\"}} {}",
                    field(p)
                );
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
                    "tcp_close_total{{listener=\"{l}\",peer=\"{peer}\",classification=\"{class}\"}} {v}"
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
                "tcp_connect_errors_total{{listener=\"{l}\",error=\"{}\"}} {}",
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
            &format!("listener=\"{l}\""),
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
        for r in DetectResult::ALL {
            let _ = writeln!(
                out,
                "tcp_detect_total{{listener=\"{l}\",result=\"{}\"}} {}",
                r.as_str(),
                s.detect[r as usize]
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
            &format!("listener=\"{l}\""),
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
                "tcp_detect_tls_total{{listener=\"{l}\",sni=\"{sni}\"}} {}",
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
    for (l, s) in listeners {
        for h in &s.http {
            let _ = writeln!(
                out,
                "request_total{{listener=\"{l}\",route=\"{}\",protocol=\"{}\"}} {}",
                h.route,
                h.protocol.as_str(),
                h.requests
            );
        }
    }
    header(
        &mut out,
        "response_total",
        "counter",
        "HTTP responses by status (and gRPC status); 5xx and non-zero grpc-status are failures.",
    );
    for (l, s) in listeners {
        for h in &s.http {
            for &(code, grpc, n) in &h.responses {
                let failed = code >= 500 || (grpc != NO_GRPC_STATUS && grpc != 0);
                let class = if failed { "failure" } else { "success" };
                let _ = write!(
                    out,
                    "response_total{{listener=\"{l}\",route=\"{}\",protocol=\"{}\",status_code=\"{code}\",classification=\"{class}\"",
                    h.route,
                    h.protocol.as_str()
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
    for (l, s) in listeners {
        for h in &s.http {
            histogram_in(
                &mut out,
                "response_latency_ms",
                &format!(
                    "listener=\"{l}\",route=\"{}\",protocol=\"{}\"",
                    h.route,
                    h.protocol.as_str()
                ),
                &h.latency,
                &RESPONSE_BUCKETS_MS,
                1e3,
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
        let _ = writeln!(
            out,
            "tcp_detect_early_dials_total{{listener=\"{l}\"}} {}",
            s.early_dials
        );
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
            "tcp_detect_early_dials_unused_total{{listener=\"{l}\"}} {}",
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
        let _ = writeln!(
            out,
            "http2_connection_errors_total{{listener=\"{l}\"}} {}",
            s.h2_errors
        );
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
        let text = render(&[("out", m.snapshot())], &ProcessInfo::default());
        assert!(
            text.contains("tcp_open_total{listener=\"out\",peer=\"src\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tcp_read_bytes_total{listener=\"out\",peer=\"src\"} 1234\n"));
        assert!(text.contains("tcp_write_bytes_total{listener=\"out\",peer=\"dst\"} 1234\n"));
        assert!(text.contains("tcp_connect_errors_total{listener=\"out\",error=\"refused\"} 1\n"));
        assert!(text
            .contains("tcp_connection_duration_seconds_bucket{listener=\"out\",le=\"0.001\"} 0\n"));
        assert!(text
            .contains("tcp_connection_duration_seconds_bucket{listener=\"out\",le=\"0.005\"} 1\n"));
        assert!(text.contains("tcp_connection_duration_seconds_count{listener=\"out\"} 1\n"));
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
