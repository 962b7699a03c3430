//! Prometheus text exposition (format 0.0.4) of merged snapshots, written directly into a
//! `String`: no registry, no global state.
//!
//! Families and labels are linkerd2-proxy's, as its code renders them (not only as its docs
//! say), so Linkerd's Grafana dashboards and `linkerd viz` queries select sidewire's series:
//!
//! - every listener series starts with `listener` (from config), `direction`
//!   (`inbound`/`outbound`) and `tls="disabled"`: what linkerd2-proxy writes when it runs
//!   without identity, which sidewire always does (dashboards only ask `tls="true"` or
//!   `tls!="true"`);
//! - TCP series add `peer` (`src` = client side, `dst` = upstream side) and `target_addr`,
//!   `target_ip`, `target_port` (the connection's destination for `src`, the endpoint for
//!   `dst`); `tcp_close_total` adds `classification` and `errno` (`""` unless the socket
//!   failed with an OS error);
//! - HTTP series add `route`, `protocol`, the target labels and, on outbound listeners,
//!   `authority`; `response_total` adds `status_code`, `classification`, `grpc_status` and
//!   `error`; `response_latency_ms` adds `status_code`.
//!
//! Label values are bounded (see [`super::MAX_TARGETS`] and friends) and escaped where they
//! come from the network (`authority`).

use std::fmt::Write;

use super::hist::{Bounds, BucketCounts, DETECT_S, DURATION_S, LINKERD_DETECT_S, RESPONSE_MS};
use super::{
    errno, AcceptErrno, ConnectRetry, HttpSeries, ListenerSnapshot, Overflow, PeerSnapshot,
    StreamTimeout, TcpSeries, NO_GRPC_STATUS,
};
use crate::config::Direction;
use crate::detect::{DetectReason, LinkerdDetect};
use crate::error::{ConnectErrorKind, Refusal};

/// The `tls` label of every listener series: sidewire has no identity (no mTLS), which
/// linkerd2-proxy renders as `tls="disabled"` (`TlsAccept`/`TlsConnect` in
/// `linkerd/app/core/src/transport/labels.rs`).
pub const TLS_LABEL: &str = "tls=\"disabled\"";

/// The labels every series of one listener starts with, and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLabels {
    /// `listener="NAME",direction="inbound|outbound",tls="disabled"`.
    pub labels: String,
    /// The listener's direction (which `{inbound,outbound}_tcp_detect_*` family it is in).
    pub direction: Direction,
}

/// The labels every series of listener `name` starts with (names are `[A-Za-z0-9_-]+`,
/// checked by the config, so no escaping is needed).
pub fn listener_labels(name: &str, direction: Direction) -> ListenerLabels {
    ListenerLabels {
        labels: format!(
            "listener=\"{name}\",direction=\"{}\",{TLS_LABEL}",
            direction.as_str()
        ),
        direction,
    }
}

/// Process-wide values the admin thread reads from `/proc`.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// OS threads of the process.
    pub threads: u64,
    /// Process start, seconds since the epoch.
    pub start_time_seconds: f64,
    /// Worker threads.
    pub workers: usize,
    /// Workers on the io_uring driver.
    pub io_uring_workers: usize,
    /// Workers on the epoll driver.
    pub epoll_workers: usize,
    /// Configuration reloads applied.
    pub reloads_ok: u64,
    /// Configuration reloads rejected (the running configuration stayed).
    pub reloads_failed: u64,
    /// The last reload was applied (or none was tried).
    pub last_reload_ok: bool,
    /// When the running configuration was loaded, seconds since the epoch.
    pub config_loaded_seconds: f64,
    /// Connection and stream tasks that panicked (each ended alone; see `task`).
    pub task_panics: u64,
}

/// What `proxy_build_info` says: set by `build.rs`.
pub mod build {
    /// The crate version.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// The commit built (`git rev-parse HEAD`), `unknown` outside a git checkout.
    pub const GIT_SHA: &str = env!("SIDEWIRE_GIT_SHA");
    /// The commit's date (ISO 8601), `unknown` outside a git checkout.
    pub const DATE: &str = env!("SIDEWIRE_BUILD_DATE");
    /// The cargo profile (`release`, `debug`).
    pub const PROFILE: &str = env!("SIDEWIRE_BUILD_PROFILE");
    /// Who built it.
    pub const VENDOR: &str = "sidewire";
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (Prometheus text format: `\`, `"` and newline).
pub fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

/// `target_addr="…",target_ip="…",target_port="…"` of a target (`ip:port` or `other`).
fn target_labels(target: &str) -> String {
    match target.parse::<std::net::SocketAddr>() {
        Ok(a) => format!(
            "target_addr=\"{a}\",target_ip=\"{}\",target_port=\"{}\"",
            a.ip(),
            a.port()
        ),
        Err(_) => {
            let t = escape(target);
            format!("target_addr=\"{t}\",target_ip=\"{t}\",target_port=\"{t}\"")
        }
    }
}

fn tcp_labels(t: &TcpSeries) -> String {
    format!("peer=\"{}\",{}", t.peer.as_str(), target_labels(&t.target))
}

fn http_labels(h: &HttpSeries) -> String {
    let mut s = format!(
        "route=\"{}\",protocol=\"{}\",{}",
        h.route,
        h.protocol.as_str(),
        target_labels(&h.target)
    );
    if let Some(a) = &h.authority {
        let _ = write!(s, ",authority=\"{}\"", escape(a));
    }
    s
}

/// Renders every metric family. `listeners` pairs each listener's labels (from
/// [`listener_labels`]) with its merged values.
pub fn render(listeners: &[(&ListenerLabels, ListenerSnapshot)], process: &ProcessInfo) -> String {
    let series: usize = listeners
        .iter()
        .map(|(_, s)| s.tcp.len() + 8 * s.http.len())
        .sum();
    let mut out = String::with_capacity(8192 + listeners.len() * 4096 + series * 512);
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
    let tcp: Vec<Vec<(String, &TcpSeries)>> = listeners
        .iter()
        .map(|(_, s)| s.tcp.iter().map(|t| (tcp_labels(t), t)).collect())
        .collect();
    for (name, kind, help, field) in peer_families {
        header(&mut out, name, kind, help);
        for ((l, _), ts) in listeners.iter().zip(&tcp) {
            for (labels, t) in ts {
                let _ = writeln!(out, "{name}{{{},{labels}}} {}", l.labels, field(&t.values));
            }
        }
    }
    header(
        &mut out,
        "tcp_close_total",
        "counter",
        "Connections closed, by outcome: errno is the OS error that ended the connection, empty if none.",
    );
    for ((l, _), ts) in listeners.iter().zip(&tcp) {
        for (labels, t) in ts {
            let p = &t.values;
            for (class, e, v) in [("success", "", p.close_ok), ("failure", "", p.close_failed)]
                .into_iter()
                .chain(
                    p.close_errno
                        .iter()
                        .map(|&(e, v)| ("failure", errno::name(e).unwrap_or("EUNKNOWN"), v)),
                )
            {
                let _ = writeln!(
                    out,
                    "tcp_close_total{{{},{labels},classification=\"{class}\",errno=\"{e}\"}} {v}",
                    l.labels
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
                "tcp_connect_errors_total{{{},error=\"{}\"}} {}",
                l.labels,
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
            &l.labels,
            &s.duration,
            &DURATION_S,
        );
    }
    header(
        &mut out,
        "tcp_detect_total",
        "counter",
        "Protocol detection verdicts, and why.",
    );
    for (l, s) in listeners {
        for reason in DetectReason::ALL {
            for &r in reason.results() {
                let _ = writeln!(
                    out,
                    "tcp_detect_total{{{},result=\"{}\",reason=\"{}\"}} {}",
                    l.labels,
                    r.as_str(),
                    reason.as_str(),
                    s.detect[reason as usize][r as usize]
                );
            }
        }
    }
    for dir in [Direction::Inbound, Direction::Outbound] {
        let mine: Vec<_> = listeners
            .iter()
            .filter(|(l, _)| l.direction == dir)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let results = format!("{}_tcp_detect_http_results_total", dir.as_str());
        header(
            &mut out,
            &results,
            "counter",
            "HTTP detection results, as Linkerd counts them (connections that ran detection).",
        );
        for (l, s) in &mine {
            for r in LinkerdDetect::ALL {
                let _ = writeln!(
                    out,
                    "{results}{{{},result=\"{}\"}} {}",
                    l.labels,
                    r.as_str(),
                    s.linkerd_detect[r as usize]
                );
            }
        }
        let duration = format!("{}_tcp_detect_http_duration_seconds", dir.as_str());
        header(
            &mut out,
            &duration,
            "histogram",
            "Time taken for HTTP detection, in Linkerd's buckets.",
        );
        for (l, s) in &mine {
            histogram(
                &mut out,
                &duration,
                &l.labels,
                &coarsen(&s.detect_latency, &DETECT_S, &LINKERD_DETECT_S),
                &LINKERD_DETECT_S,
            );
        }
    }
    header(
        &mut out,
        "tcp_refused_total",
        "counter",
        "Connections refused: loop (the original destination is the proxy itself), no_original_dst, or no_endpoints (opaque, the listener's upstream names have not resolved).",
    );
    for (l, s) in listeners {
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "tcp_refused_total{{{},reason=\"{}\"}} {}",
                l.labels,
                r.as_str(),
                s.refused[r as usize]
            );
        }
    }
    header(
        &mut out,
        "tcp_detect_duration_seconds",
        "histogram",
        "Time from accept to the end of detection.",
    );
    for (l, s) in listeners {
        histogram(
            &mut out,
            "tcp_detect_duration_seconds",
            &l.labels,
            &s.detect_latency,
            &DETECT_S,
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
                "tcp_detect_tls_total{{{},sni=\"{sni}\"}} {}",
                l.labels, s.tls_sni[i]
            );
        }
    }
    let http: Vec<Vec<(String, &HttpSeries)>> = listeners
        .iter()
        .map(|(l, s)| {
            s.http
                .iter()
                .map(|h| (format!("{},{}", l.labels, http_labels(h)), h))
                .collect()
        })
        .collect();
    header(
        &mut out,
        "request_total",
        "counter",
        "HTTP requests (HTTP/2: streams).",
    );
    for (labels, h) in http.iter().flatten() {
        let _ = writeln!(out, "request_total{{{labels}}} {}", h.values.requests);
    }
    header(
        &mut out,
        "response_total",
        "counter",
        "HTTP responses, counted when they end: failure = 5xx, a failing grpc-status, or an error the proxy ended the exchange with.",
    );
    for (labels, h) in http.iter().flatten() {
        for st in &h.values.statuses {
            let code = match st.code {
                0 => String::new(),
                c => format!(",status_code=\"{c}\""),
            };
            for (o, n) in &st.outcomes {
                let class = if o.failed { "failure" } else { "success" };
                let grpc = match o.grpc {
                    NO_GRPC_STATUS => String::new(),
                    g => g.to_string(),
                };
                let error = o.error.map(|e| e.label()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "response_total{{{labels}{code},classification=\"{class}\",grpc_status=\"{grpc}\",error=\"{error}\"}} {n}"
                );
            }
        }
    }
    header(
        &mut out,
        "response_latency_ms",
        "histogram",
        "Time from the request head to the response's first body byte (or its end), by status.",
    );
    for (labels, h) in http.iter().flatten() {
        for st in h.values.statuses.iter().filter(|s| s.code != 0) {
            histogram(
                &mut out,
                "response_latency_ms",
                &format!("{labels},status_code=\"{}\"", st.code),
                &st.latency,
                &RESPONSE_MS,
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
            "tcp_detect_early_dials_total{{{}}} {}",
            l.labels, s.early_dials
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
            "tcp_detect_early_dials_unused_total{{{}}} {}",
            l.labels, s.early_unused
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
            "http2_connection_errors_total{{{}}} {}",
            l.labels, s.h2_errors
        );
    }
    header(
        &mut out,
        "sidewire_connect_retries_total",
        "counter",
        "Failed upstream connects tried again: on another endpoint of the set (endpoint=\"other\"), or a timed-out one once more on the same endpoint when the set has no other (endpoint=\"same\").",
    );
    for (l, s) in listeners {
        for k in ConnectRetry::ALL {
            let _ = writeln!(
                out,
                "sidewire_connect_retries_total{{{},endpoint=\"{}\"}} {}",
                l.labels,
                k.as_str(),
                s.connect_retries[k as usize]
            );
        }
    }
    header(
        &mut out,
        "sidewire_endpoint_ejections_total",
        "counter",
        "Upstream endpoints ejected by passive health after consecutive failed connects (listener[].eject_after_failures); each worker keeps its own record.",
    );
    for (l, s) in listeners {
        let _ = writeln!(
            out,
            "sidewire_endpoint_ejections_total{{{}}} {}",
            l.labels, s.endpoint_ejections
        );
    }
    header(
        &mut out,
        "sidewire_http1_spliced_bytes_total",
        "counter",
        "HTTP/1 body bytes (both directions) moved socket to socket with splice(2), never entering user space: the rest of Content-Length bodies and chunks of at least http1.splice_body_bytes. Also counted in tcp_read_bytes_total and tcp_write_bytes_total.",
    );
    for (l, s) in listeners {
        let _ = writeln!(
            out,
            "sidewire_http1_spliced_bytes_total{{{}}} {}",
            l.labels, s.spliced_body_bytes
        );
    }
    header(
        &mut out,
        "tcp_stream_timeouts_total",
        "counter",
        "Opaque streams the proxy cut (both sockets reset) because no byte moved for idle_timeout_ms, or for half_close_timeout_ms after one side's FIN.",
    );
    for (l, s) in listeners {
        for t in StreamTimeout::ALL {
            let _ = writeln!(
                out,
                "tcp_stream_timeouts_total{{{},timeout=\"{}\"}} {}",
                l.labels,
                t.as_str(),
                s.stream_timeouts[t as usize]
            );
        }
    }
    header(
        &mut out,
        "tcp_accept_errors_total",
        "counter",
        "Failed accepts (out of descriptors or kernel memory); the listener backs off, the clients wait in the backlog.",
    );
    for (l, s) in listeners {
        for e in AcceptErrno::ALL {
            let _ = writeln!(
                out,
                "tcp_accept_errors_total{{{},errno=\"{}\"}} {}",
                l.labels,
                e.as_str(),
                s.accept_errors[e as usize]
            );
        }
    }
    header(
        &mut out,
        "sidewire_metrics_overflow_total",
        "counter",
        "Connections and requests whose target_addr, authority or HTTP series did not fit the per-listener, per-worker cap and were counted under \"other\".",
    );
    for (l, s) in listeners {
        for o in Overflow::ALL {
            let _ = writeln!(
                out,
                "sidewire_metrics_overflow_total{{{},label=\"{}\"}} {}",
                l.labels,
                o.as_str(),
                s.overflow[o as usize]
            );
        }
    }
    render_process(&mut out, process);
    out
}

fn render_process(out: &mut String, process: &ProcessInfo) {
    let gauges: [(&str, &str, &str, String); 7] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
            process.cpu_seconds.to_string(),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
            process.resident_bytes.to_string(),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size.",
            process.virtual_bytes.to_string(),
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            process.open_fds.to_string(),
        ),
        (
            "process_max_fds",
            "gauge",
            "The soft limit on open file descriptors.",
            process.max_fds.to_string(),
        ),
        (
            "process_threads",
            "gauge",
            "OS threads.",
            process.threads.to_string(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time since the epoch.",
            process.start_time_seconds.to_string(),
        ),
    ];
    for (name, kind, help, v) in gauges {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        out,
        "sidewire_workers",
        "gauge",
        "Worker threads (one per core).",
    );
    let _ = writeln!(out, "sidewire_workers {}", process.workers);
    header(
        out,
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
        out,
        "proxy_build_info",
        "gauge",
        "Build information (Linkerd's family).",
    );
    let _ = writeln!(
        out,
        "proxy_build_info{{version=\"{}\",git_sha=\"{}\",profile=\"{}\",vendor=\"{}\",date=\"{}\"}} 1",
        build::VERSION,
        escape(build::GIT_SHA),
        escape(build::PROFILE),
        build::VENDOR,
        escape(build::DATE)
    );
    header(
        out,
        "sidewire_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, POST /reload): result=ok applied, result=error rejected.",
    );
    let _ = writeln!(
        out,
        "sidewire_config_reloads_total{{result=\"ok\"}} {}\nsidewire_config_reloads_total{{result=\"error\"}} {}",
        process.reloads_ok, process.reloads_failed
    );
    header(
        out,
        "sidewire_task_panics_total",
        "counter",
        "Connection and stream tasks that panicked: a bug (logged at ERROR); the task's connection closed, every other one carried on.",
    );
    let _ = writeln!(out, "sidewire_task_panics_total {}", process.task_panics);
    header(
        out,
        "sidewire_config_last_reload_successful",
        "gauge",
        "1 if the last reload was applied (or none was tried), 0 if it was rejected.",
    );
    let _ = writeln!(
        out,
        "sidewire_config_last_reload_successful {}",
        u8::from(process.last_reload_ok)
    );
    header(
        out,
        "sidewire_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the running configuration was loaded (start, or the last applied reload).",
    );
    let _ = writeln!(
        out,
        "sidewire_config_last_reload_success_timestamp_seconds {}",
        process.config_loaded_seconds
    );
    header(out, "sidewire_build_info", "gauge", "Build information.");
    let _ = writeln!(
        out,
        "sidewire_build_info{{version=\"{}\",git_sha=\"{}\"}} 1",
        build::VERSION,
        escape(build::GIT_SHA)
    );
}

/// Re-buckets `b` (over `from`) onto `to`, whose bounds are a subset of `from`'s: exact.
fn coarsen(b: &BucketCounts, from: &Bounds, to: &Bounds) -> BucketCounts {
    if b.counts.is_empty() {
        return BucketCounts::default();
    }
    let mut counts = Vec::with_capacity(to.us.len() + 1);
    let mut done = 0;
    for bound in to.us {
        let i = from
            .us
            .iter()
            .position(|x| x == bound)
            .expect("invariant: the coarse bounds are a subset (tested in hist)");
        let upto = b.cumulative(i);
        counts.push(upto - done);
        done = upto;
    }
    counts.push(b.len() - done);
    BucketCounts {
        counts,
        sum_us: b.sum_us,
    }
}

/// Writes one Prometheus histogram (`_bucket` cumulative per `le`, `+Inf`, `_sum` in the
/// family's unit, `_count`) from exact per-bucket counts.
pub fn histogram(out: &mut String, name: &str, labels: &str, b: &BucketCounts, bounds: &Bounds) {
    let mut n = 0u64;
    for (i, le) in bounds.le.iter().enumerate() {
        n += b.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let total = b.len();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        b.sum_us as f64 / bounds.us_per_unit
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Close, ListenerMetrics, Protocol};
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn renders_linkerd_labels() {
        let m = ListenerMetrics::default();
        let a: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let src = m.src_for(a);
        src.opened();
        src.read(1234);
        src.closed(Close::Errno(libc::ECONNRESET as u16));
        m.dst_for(a).wrote(1234);
        m.connect_failed(ConnectErrorKind::Refused);
        m.record_duration(Duration::from_millis(3));
        let h = m.http(0, Protocol::Http2, m.target(a), m.authority(Some("web:80")));
        h.request();
        h.first_byte(200, Duration::from_millis(3));
        h.completed(200, Some(14), None);
        let labels = listener_labels("out", Direction::Outbound);
        let mut s = m.snapshot();
        s.sort();
        let text = render(&[(&labels, s)], &ProcessInfo::default());
        let l = "listener=\"out\",direction=\"outbound\",tls=\"disabled\"";
        let t = "target_addr=\"10.1.2.3:8080\",target_ip=\"10.1.2.3\",target_port=\"8080\"";
        for want in [
            format!("tcp_open_total{{{l},peer=\"src\",{t}}} 1\n"),
            format!("tcp_read_bytes_total{{{l},peer=\"src\",{t}}} 1234\n"),
            format!("tcp_write_bytes_total{{{l},peer=\"dst\",{t}}} 1234\n"),
            format!("tcp_close_total{{{l},peer=\"src\",{t},classification=\"failure\",errno=\"ECONNRESET\"}} 1\n"),
            format!("tcp_close_total{{{l},peer=\"src\",{t},classification=\"success\",errno=\"\"}} 0\n"),
            format!("tcp_connect_errors_total{{{l},error=\"refused\"}} 1\n"),
            format!("tcp_connection_duration_seconds_bucket{{{l},le=\"0.001\"}} 0\n"),
            format!("tcp_connection_duration_seconds_bucket{{{l},le=\"0.005\"}} 1\n"),
            format!("tcp_connection_duration_seconds_count{{{l}}} 1\n"),
            format!("request_total{{{l},route=\"default\",protocol=\"http/2\",{t},authority=\"web:80\"}} 1\n"),
            format!("response_total{{{l},route=\"default\",protocol=\"http/2\",{t},authority=\"web:80\",status_code=\"200\",classification=\"failure\",grpc_status=\"14\",error=\"\"}} 1\n"),
            format!("response_latency_ms_bucket{{{l},route=\"default\",protocol=\"http/2\",{t},authority=\"web:80\",status_code=\"200\",le=\"3\"}} 1\n"),
            format!("outbound_tcp_detect_http_results_total{{{l},result=\"not_http\"}} 0\n"),
            format!("outbound_tcp_detect_http_duration_seconds_bucket{{{l},le=\"0.1\"}} 0\n"),
            "proxy_build_info{version=\"".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want}\n{text}");
        }
        assert!(!text.contains("inbound_tcp_detect"), "no inbound listener");
        // Every sample line is "name{labels} value" or "name value".
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').expect(line);
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
        }
    }

    #[test]
    fn histogram_sum_is_in_the_family_unit_and_coarsening_is_exact() {
        let m = ListenerMetrics::default();
        m.record_duration(Duration::from_secs(2));
        let s = m.snapshot();
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &s.duration, &DURATION_S);
        assert!(out.contains("x_sum{a=\"b\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"5\"} 1\n"), "{out}");

        let d = crate::metrics::hist::Histogram::new(&DETECT_S);
        for us in [5, 1_000, 1_001, 100_000, 2_000_000] {
            d.record(Duration::from_micros(us));
        }
        let c = coarsen(&d.snapshot(), &DETECT_S, &LINKERD_DETECT_S);
        assert_eq!(c.counts, [2, 2, 1]);
        assert_eq!(c.sum_us, d.snapshot().sum_us);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("web:80"), "web:80");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
