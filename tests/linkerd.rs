//! Linkerd compatibility of the scrape: after a fixed traffic mix (HTTP/1 inbound, HTTP/1 and
//! HTTP/2 outbound, gRPC, opaque TCP reset by its upstream, a failed connect), every selector
//! that Linkerd's Grafana dashboards and `linkerd viz` queries use (and the families
//! linkerd2-proxy's code exports) is evaluated against the scrape, so a lost label or a renamed
//! family shows up as a failed selector. The rendered text is also checked with the Prometheus
//! Python client's parser (`prometheus_client.parser`, Debian's python3-prometheus-client).
//!
//! Selectors are copied from linkerd/linkerd2 (commit b24cd405) `grafana/dashboards/*.json`
//! and `viz/metrics-api/*.go`, and from linkerd/linkerd2-proxy (commit 29637b64), with two
//! kinds of labels left out: those Prometheus adds by relabelling from pod metadata
//! (`namespace`, `deployment`, `pod`, `job`, …: not the proxy's) and `dst_*` (from Linkerd's
//! service discovery, which sidewire does not have; those panels stay empty).
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// What a selector must find.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// At least one series, whose values add up to at least this.
    AtLeast(f64),
    /// No series at all (a panel that stays empty, and why is said beside it).
    None,
}

use Want::*;

/// (source, selector, what it must find). Selectors take `=` and `!=` matchers, as PromQL:
/// `l!=""` means the label is there and not empty.
const SELECTORS: &[(&str, &str, Want)] = &[
    // linkerd2 grafana/dashboards/deployment.json (and daemonset, statefulset, replicaset,
    // job, cronjob, replicationcontroller, pod, namespace: the same queries per resource).
    ("deployment.json: success rate", r#"response_total{classification="success",direction="inbound"}"#, AtLeast(3.0)),
    ("deployment.json: success rate", r#"response_total{direction="inbound"}"#, AtLeast(3.0)),
    ("deployment.json: request rate, TLS (no mTLS in sidewire: empty)", r#"request_total{direction="inbound",tls="true"}"#, None),
    ("deployment.json: request rate, non-TLS", r#"request_total{direction="inbound",tls!="true"}"#, AtLeast(3.0)),
    ("deployment.json: latency", r#"response_latency_ms_bucket{direction="inbound",le="+Inf"}"#, AtLeast(3.0)),
    ("deployment.json: TCP connections", r#"tcp_open_connections{direction="inbound"}"#, AtLeast(0.0)),
    ("deployment.json: TCP connection failures", r#"tcp_close_total{direction="outbound",errno!=""}"#, AtLeast(1.0)),
    ("deployment.json: outbound success rate", r#"response_total{classification="success",direction="outbound"}"#, AtLeast(5.0)),
    ("deployment.json: outbound request rate, non-TLS", r#"request_total{direction="outbound",tls!="true"}"#, AtLeast(5.0)),
    ("deployment.json: outbound latency", r#"response_latency_ms_bucket{direction="outbound",le="+Inf"}"#, AtLeast(5.0)),
    ("deployment.json: TCP connections, outbound", r#"tcp_open_connections{direction="outbound"}"#, AtLeast(0.0)),
    ("deployment.json: TCP connection duration (removed from linkerd2-proxy in 2021: empty for both)", r#"tcp_connection_duration_ms_bucket{direction="inbound"}"#, None),
    // grafana/dashboards/authority.json (outbound: Linkerd has no inbound authority by default).
    ("authority.json: outbound success rate", r#"response_total{classification="success",authority="web.ns.svc.cluster.local:8080",direction="outbound"}"#, AtLeast(2.0)),
    ("authority.json: outbound request rate", r#"request_total{authority="web.ns.svc.cluster.local:8080",direction="outbound",tls!="true"}"#, AtLeast(2.0)),
    ("authority.json: outbound latency", r#"response_latency_ms_bucket{authority="web.ns.svc.cluster.local:8080",direction="outbound",le="+Inf"}"#, AtLeast(2.0)),
    // grafana/dashboards/health.json and prometheus-benchmark.json (process families).
    ("health.json: memory", "process_virtual_memory_bytes", AtLeast(1.0)),
    ("health.json: memory", "process_resident_memory_bytes", AtLeast(1.0)),
    ("health.json: file descriptors", "process_open_fds", AtLeast(1.0)),
    ("health.json: CPU", "process_cpu_seconds_total", AtLeast(0.0)),
    ("health.json: uptime", "process_start_time_seconds", AtLeast(1.0)),
    ("prometheus-benchmark.json: fd limit", "process_max_fds", AtLeast(1.0)),
    // linkerd2 viz/metrics-api/stat_summary.go: reqQuery groups by classification and tls,
    // latencyQuantileQuery by le, the TCP queries by direction and peer.
    ("stat_summary.go: reqQuery", r#"response_total{direction="inbound",classification!="",tls!=""}"#, AtLeast(3.0)),
    ("stat_summary.go: reqQuery", r#"response_total{direction="outbound",classification!="",tls!=""}"#, AtLeast(5.0)),
    ("stat_summary.go: latencyQuantileQuery", r#"response_latency_ms_bucket{direction="inbound",le!=""}"#, AtLeast(3.0)),
    ("stat_summary.go: tcpConnectionsQuery", r#"tcp_open_connections{direction="inbound",peer="src"}"#, AtLeast(0.0)),
    ("stat_summary.go: tcpReadBytesQuery", r#"tcp_read_bytes_total{direction="inbound",peer="src"}"#, AtLeast(1.0)),
    ("stat_summary.go: tcpWriteBytesQuery", r#"tcp_write_bytes_total{direction="inbound",peer="src"}"#, AtLeast(1.0)),
    ("stat_summary.go: service TCP stats", r#"tcp_read_bytes_total{direction="outbound",peer="dst"}"#, AtLeast(1.0)),
    // viz/metrics-api/edges.go: edgesQuery (grouped by no_tls_reason, absent here).
    ("edges.go: edgesQuery", r#"tcp_open_connections{direction="outbound"}"#, AtLeast(0.0)),
    // linkerd2-proxy linkerd/app/core/src/metrics.rs (Class::fmt_labels): grpc_status and
    // error on every response_total series; client-policy grpc.rs: NOT_FOUND is no failure.
    ("metrics.rs: HTTP responses", r#"response_total{grpc_status="",error="",status_code="200",direction="inbound"}"#, AtLeast(3.0)),
    ("metrics.rs: gRPC OK", r#"response_total{grpc_status="0",classification="success",error=""}"#, AtLeast(4.0)),
    ("grpc.rs: NOT_FOUND is a success", r#"response_total{grpc_status="5",classification="success"}"#, AtLeast(1.0)),
    ("metrics.rs: proxy error", r#"response_total{classification="failure",error!=""}"#, AtLeast(1.0)),
    ("metrics.rs: latency by status", r#"response_latency_ms_count{status_code="502",direction="outbound"}"#, AtLeast(1.0)),
    // linkerd2-proxy transport/labels.rs: target labels on TCP series.
    ("labels.rs: target labels", r#"tcp_open_total{direction="inbound",peer="src",target_addr!="",target_ip!="",target_port!=""}"#, AtLeast(3.0)),
    ("labels.rs: target labels", r#"tcp_open_total{direction="outbound",peer="dst",target_addr!="",target_ip!="",target_port!=""}"#, AtLeast(1.0)),
    ("labels.rs: tls without identity", r#"tcp_open_total{tls="disabled"}"#, AtLeast(1.0)),
    ("transport-metrics lib.rs: clean closes", r#"tcp_close_total{direction="inbound",errno=""}"#, AtLeast(3.0)),
    // linkerd2-proxy linkerd/http/detect/src/metrics.rs.
    ("detect metrics.rs", r#"inbound_tcp_detect_http_results_total{result="http/1"}"#, AtLeast(3.0)),
    ("detect metrics.rs", r#"outbound_tcp_detect_http_results_total{result="http/2"}"#, AtLeast(1.0)),
    ("detect metrics.rs", r#"outbound_tcp_detect_http_results_total{result="not_http"}"#, AtLeast(1.0)),
    ("detect metrics.rs", r#"outbound_tcp_detect_http_results_total{result="read_timeout"}"#, AtLeast(0.0)),
    ("detect metrics.rs", r#"outbound_tcp_detect_http_results_total{result="error"}"#, AtLeast(0.0)),
    ("detect metrics.rs", r#"inbound_tcp_detect_http_duration_seconds_bucket{le="0.1"}"#, AtLeast(3.0)),
    // linkerd2-proxy linkerd/app/src/lib.rs: build info.
    ("app lib.rs: build info", r#"proxy_build_info{version!="",git_sha!="",profile!="",vendor!="",date!=""}"#, AtLeast(1.0)),
];

/// A matcher: label, negated, value.
type Matcher<'a> = (&'a str, bool, &'a str);

fn parse_selector(sel: &str) -> (&str, Vec<Matcher<'_>>) {
    let Some((name, rest)) = sel.split_once('{') else {
        return (sel, Vec::new());
    };
    let mut body = rest.strip_suffix('}').expect("selector ends with }");
    let mut matchers = Vec::new();
    while !body.is_empty() {
        let op = body.find('=').expect("a matcher has =");
        let neg = body[..op].ends_with('!');
        let label = body[..op].trim_end_matches('!');
        let value_and_rest = body[op + 1..].strip_prefix('"').expect("quoted value");
        let end = value_and_rest.find('"').expect("closing quote");
        matchers.push((label, neg, &value_and_rest[..end]));
        body = value_and_rest[end + 1..].trim_start_matches(',');
    }
    (name, matchers)
}

/// One sample of the scrape: name, labels (unescaped values), value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the text with the Prometheus Python client (strict about the format: a malformed
/// line, a bad escape or a sample outside its family's TYPE fails), and returns its samples.
fn parse_with_prometheus_client(text: &str) -> Vec<Sample> {
    // Output: one line per family ("T", name, type) and per sample ("S", name, labels,
    // value), fields split by \x1e, labels by \x1f, label name and value by \x1d.
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    print("T\x1e%s\x1e%s" % (fam.name, fam.type))
    for s in fam.samples:
        labels = "\x1f".join("%s\x1d%s" % kv for kv in sorted(s.labels.items()))
        print("S\x1e%s\x1e%s\x1e%r" % (s.name, labels, s.value))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "python3-prometheus-client is required (.ci/run installs it)"
    );
    assert!(
        out.status.success(),
        "the scrape does not parse: {err}\n{text}"
    );
    let parsed = String::from_utf8(out.stdout).unwrap();
    let mut types = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in parsed.lines() {
        let f: Vec<&str> = line.split('\x1e').collect();
        match f[..] {
            ["T", name, kind] => {
                types.insert(name.to_string(), kind.to_string());
            }
            ["S", name, labels, value] => {
                let labels = labels
                    .split('\x1f')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('\x1d').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                let value = match value {
                    "inf" => f64::INFINITY,
                    v => v.parse().unwrap(),
                };
                samples.push((name.to_string(), labels, value));
            }
            _ => panic!("unexpected parser output {line:?}"),
        }
    }
    // Every family has its declared type, and histograms came out as histograms.
    for (fam, kind) in [
        ("response_latency_ms", "histogram"),
        ("inbound_tcp_detect_http_duration_seconds", "histogram"),
        ("tcp_close", "counter"),
        ("request", "counter"),
        ("tcp_open_connections", "gauge"),
        ("proxy_build_info", "gauge"),
    ] {
        assert_eq!(types.get(fam).map(String::as_str), Some(kind), "{fam}");
    }
    samples
}

/// The matching samples' count and sum.
fn select(samples: &[Sample], sel: &str) -> (usize, f64) {
    let (name, matchers) = parse_selector(sel);
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && matchers.iter().all(|&(k, neg, v)| {
                    let have = labels
                        .iter()
                        .find(|(l, _)| l == k)
                        .map_or("", |(_, x)| x.as_str());
                    (have == v) != neg
                })
        })
        .map(|s| s.2)
        .collect();
    (hits.len(), hits.iter().sum())
}

fn http1_get(to: SocketAddr, host: &str) -> String {
    let mut c = TcpStream::connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    resp
}

/// The Python interpreter that has grpcio.
fn python_with_grpc() -> &'static str {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 with grpcio is required (.ci/run installs python3-grpcio)"
    );
    "/usr/bin/python3"
}

#[test]
fn linkerd_dashboard_and_viz_selectors_match_the_scrape() {
    // Upstreams: an HTTP/1 app, a gRPC app, one that resets what it is sent, and nothing.
    let web = answers_after_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let (resets, _h) = upstream(|mut c: TcpStream| {
        let mut b = [0u8; 64];
        let _ = c.read(&mut b);
        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
    });
    let py = python_with_grpc();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/echo.py");
    let mut grpc_server = Command::new(py)
        .args([script, "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(grpc_server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grpc_port: u16 = line
        .trim()
        .parse()
        .expect("the gRPC server prints its port");
    let dead = dead_addr();

    let p = start_toml(&format!(
        "[runtime]\nworkers = 2\npin_cores = false\nshutdown_grace_ms = 2000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\ndirection = \"inbound\"\nupstream = [\"{web}\"]\n\
         [[listener]]\nname = \"outbound\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{web}\"]\nupstream_protocol = \"http1\"\n\
         [[listener]]\nname = \"grpc\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:{grpc_port}\"]\nupstream_protocol = \"http2\"\n\
         [[listener]]\nname = \"opaque\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{resets}\"]\n\
         [[listener]]\nname = \"dead\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{dead}\"]\n"
    ));
    let at = |name: &str| p.listener_addr(name).unwrap();

    // Inbound HTTP/1: 3 requests.
    for _ in 0..3 {
        assert!(http1_get(at("inbound"), "web:8080").starts_with("HTTP/1.1 200"));
    }
    // Outbound HTTP/1 with an authority (2), and HTTP/2 (h2load: 5 streams on 1 connection).
    for _ in 0..2 {
        let r = http1_get(at("outbound"), "web.ns.svc.cluster.local:8080");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let out = Command::new("h2load")
        .args(["-n", "5", "-c", "1", &format!("http://{}/", at("outbound"))])
        .output()
        .expect("h2load is required (.ci/run installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 succeeded"), "{text}");
    // gRPC: unary, server/client streaming, bidi (OK) and a NOT_FOUND.
    let out = Command::new(py)
        .args([script, "client", &at("grpc").to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        b"ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(grpc_server.stdin.take());
    let _ = grpc_server.wait();
    // Opaque bytes, reset by the upstream.
    let mut c = TcpStream::connect(at("opaque")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"\x00\x01\x02\x03 not http").unwrap();
    let _ = c.read(&mut [0u8; 16]);
    let _ = c.shutdown(Shutdown::Both);
    // A failed connect: 502.
    assert!(http1_get(at("dead"), "db:5432").starts_with("HTTP/1.1 502"));

    wait_metric(
        &p,
        "tcp_close_total{listener=\"opaque\",peer=\"dst\",errno=\"ECONNRESET\"}",
        1.0,
    );
    wait_metric(&p, "tcp_open_connections{listener=\"inbound\"}", 0.0);
    let (_, text) = admin_get(&p, "/metrics");
    std::fs::write("/tmp/wt-metrics-scrape.txt", &text).unwrap();
    let samples = parse_with_prometheus_client(&text);
    let mut failed = Vec::new();
    for &(source, sel, want) in SELECTORS {
        let (n, sum) = select(&samples, sel);
        let ok = match want {
            AtLeast(v) => n > 0 && sum >= v,
            None => n == 0,
        };
        if !ok {
            failed.push(format!(
                "{source}: {sel}: want {want:?}, got {n} series summing to {sum}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}\n\n{text}", failed.join("\n"));
}
