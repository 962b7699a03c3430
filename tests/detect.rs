//! Protocol detection through a running proxy, with real loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn detect_total(result: &str) -> String {
    format!("tcp_detect_total{{listener=\"t\",result=\"{result}\"}}")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// An upstream that reads one HTTP/1 request head and answers it.
fn http_upstream(mut c: TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).unwrap_or(0) == 0 {
            return;
        }
        head.push(b[0]);
    }
    let body = format!("saw {}", String::from_utf8_lossy(&head));
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn dribbling_http1_client_is_detected_and_forwarded_intact() {
    let (up, _h) = upstream(http_upstream);
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let req = b"GET /dribble HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n";
    // A slow client: "G", a pause, "E", a pause, then the rest (the pauses are the behaviour
    // under test, not synchronisation: the verdict is the same however the bytes arrive).
    c.write_all(&req[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    c.write_all(&req[1..2]).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    c.write_all(&req[2..]).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    // The request arrived whole (HTTP/1 proxying drops only the hop-by-hop Connection field).
    assert!(
        resp.contains("saw GET /dribble HTTP/1.1\r\nHost: example\r\n"),
        "{resp}"
    );
    wait_metric(&p, &detect_total("http/1"), 1.0);
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(metric(&m, &detect_total("timeout")), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "tcp_detect_duration_seconds_count{listener=\"t\"}"),
        Some(1.0)
    );
}

#[test]
fn silent_client_goes_opaque_after_the_timeout_without_losing_data() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "detect_timeout_ms = 150");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // Nothing sent until the proxy has given up on detection.
    wait_metric(&p, &detect_total("timeout"), 1.0);
    c.write_all(b"GET / HTTP/1.1\r\n\r\n and then some")
        .unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n and then some");
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(
        metric(&m, &detect_total("http/1")),
        Some(0.0),
        "verdict is the timeout, once"
    );
}

/// An upstream that greets on accept, like MySQL or SMTP, then echoes.
fn greeter(mut c: TcpStream) {
    c.write_all(b"220 smtp.example ESMTP ready\r\n").unwrap();
    echo(c)
}

#[test]
fn server_first_greeting_arrives_without_waiting_for_the_timeout() {
    let (up, _h) = upstream(greeter);
    // The default 10 s detect timeout: the greeting must not wait for it.
    let p = proxy(&[up], "");
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let mut greeting = [0u8; 30];
    c.read_exact(&mut greeting).unwrap();
    let waited = t0.elapsed();
    assert_eq!(&greeting, b"220 smtp.example ESMTP ready\r\n");
    assert!(waited < Duration::from_secs(2), "greeting took {waited:?}");
    c.write_all(b"EHLO me\r\n").unwrap();
    let mut echoed = [0u8; 9];
    c.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"EHLO me\r\n");
    wait_metric(&p, &detect_total("server_first"), 1.0);
    wait_metric(&p, "tcp_detect_early_dials_total{listener=\"t\"}", 1.0);
}

#[test]
fn server_first_off_waits_for_the_detect_timeout() {
    let (up, _h) = upstream(greeter);
    let p = proxy_with(
        &[up],
        "[detect]\nserver_first = \"off\"\n",
        "detect_timeout_ms = 200",
    );
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let mut greeting = [0u8; 30];
    c.read_exact(&mut greeting).unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "no dial before the timeout"
    );
    wait_metric(&p, &detect_total("timeout"), 1.0);
}

#[test]
fn h2_server_settings_before_the_preface_is_not_server_first() {
    const SETTINGS: &[u8] = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64";
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (tx, rx) = mpsc::channel();
    let (up, _h) = upstream(move |mut c: TcpStream| {
        c.write_all(SETTINGS).unwrap(); // as grpcio does on accept
        let mut pre = [0u8; 24];
        c.read_exact(&mut pre).unwrap();
        tx.send(pre.to_vec()).unwrap();
    });
    // HTTP/2 forwarded opaque, so the bytes on both sides are the endpoints' own.
    let p = proxy_with(&[up], "[http2]\nenabled = false\n", "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // Like a client that takes a moment before its preface: the proxy dials meanwhile and sees
    // the server's SETTINGS first.
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(PREFACE).unwrap();
    let mut s = [0u8; 15];
    c.read_exact(&mut s).unwrap();
    assert_eq!(
        &s, SETTINGS,
        "the server's SETTINGS reach the client untouched"
    );
    assert_eq!(rx.recv().unwrap(), PREFACE);
    wait_metric(&p, &detect_total("http/2"), 1.0);
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(metric(&m, &detect_total("server_first")), Some(0.0), "{m}");
}

#[test]
fn opaque_port_skips_detection() {
    let (up, _h) = upstream(echo);
    let p = proxy_with(
        &[up],
        &format!("[detect]\nopaque_ports = [{}]\n", up.port()),
        "",
    );
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    wait_metric(&p, &detect_total("opaque_port"), 1.0);
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(metric(&m, &detect_total("http/1")), Some(0.0));
    assert_eq!(
        metric(&m, "tcp_detect_duration_seconds_count{listener=\"t\"}"),
        Some(0.0),
        "no detection ran"
    );
}

#[test]
fn listener_protocol_opaque_skips_detection() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "protocol = \"opaque\"");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"\x16\x03\x01").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"\x16\x03\x01");
    wait_metric(&p, &detect_total("opaque_port"), 1.0);
}

#[test]
fn tls_passthrough_is_byte_exact_and_counts_sni() {
    let (tx, rx) = mpsc::channel();
    let (up, _h) = upstream(move |c: TcpStream| {
        tx.send(recv_all(c)).unwrap();
    });
    let p = proxy(&[up], "");
    let hello = fixture("chromium-pq.bin");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // The hello in two segments, split mid-record: detection must wait for the whole of it.
    c.write_all(&hello[..700]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(&hello[700..]).unwrap();
    let mut body = vec![0u8; 1 << 20];
    Gen::new(7).fill(&mut body);
    c.write_all(&body).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (n, hash) = rx.recv().unwrap();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&hello);
    h.update(&body);
    assert_eq!(n as usize, hello.len() + body.len());
    assert_eq!(
        hash,
        h.digest128(),
        "bytes reach the upstream exactly as sent"
    );
    wait_metric(&p, &detect_total("tls"), 1.0);
    wait_metric(
        &p,
        "tcp_detect_tls_total{listener=\"t\",sni=\"present\"}",
        1.0,
    );
}

#[test]
fn client_that_closes_silently_is_counted_closed() {
    let (up, _h) = upstream(echo);
    // Server-first off, so the proxy cannot have dialled: nothing to proxy at all.
    let p = proxy_with(&[up], "[detect]\nserver_first = \"off\"\n", "");
    drop(TcpStream::connect(addr(&p)).unwrap());
    wait_metric(&p, &detect_total("closed"), 1.0);
    wait_metric(&p, "tcp_open_total{listener=\"t\",peer=\"dst\"}", 0.0);
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"src\",classification=\"success\"}",
        1.0,
    );
}

#[test]
fn every_detect_result_is_exported() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let (_, m) = admin_get(&p, "/metrics");
    for r in [
        "http/1",
        "http/2",
        "tls",
        "opaque",
        "timeout",
        "server_first",
        "opaque_port",
        "closed",
    ] {
        assert_eq!(metric(&m, &detect_total(r)), Some(0.0), "{r}");
    }
    assert!(
        m.contains("tcp_detect_duration_seconds_bucket{listener=\"t\",direction=\"outbound\",tls=\"disabled\",le=\"0.00001\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("tcp_detect_tls_total{listener=\"t\",direction=\"outbound\",tls=\"disabled\",sni=\"absent\"} 0")
    );
}

#[test]
fn client_that_speaks_at_once_causes_no_early_dial() {
    let (up, _h) = upstream(http_upstream);
    // A long dial delay makes this deterministic on a loaded machine: a client that speaks
    // within the delay never causes a dial. (The default delay's cost is measured in the
    // README, not asserted here.)
    let p = proxy_with(&[up], "[detect]\nserver_first_dial_delay_ms = 1000\n", "");
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    wait_metric(&p, &detect_total("http/1"), 20.0);
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(
        metric(&m, "tcp_detect_early_dials_total{listener=\"t\"}"),
        Some(0.0),
        "{m}"
    );
}

#[test]
fn client_that_closes_after_the_early_dial_closes_the_upstream_too() {
    let (tx, rx) = mpsc::channel();
    let (up, _h) = upstream(move |mut c: TcpStream| {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest); // EOF once the proxy drops its side
        tx.send(rest.len()).unwrap();
    });
    let p = proxy(&[up], "");
    let c = TcpStream::connect(addr(&p)).unwrap();
    // Silent long enough for the server-first dial to happen...
    wait_metric(&p, "tcp_detect_early_dials_total{listener=\"t\"}", 1.0);
    // ...then gone without a word.
    drop(c);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        0,
        "upstream saw EOF, no bytes"
    );
    wait_metric(&p, &detect_total("closed"), 1.0);
}

/// An upstream that answers every request on a connection with `name` and the length of the
/// request line it saw.
fn named_line_upstream(name: &'static str) -> std::net::SocketAddr {
    upstream(move |mut c: TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let line = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            buf.drain(..end);
            let body = format!("{name} {line}");
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    })
    .0
}

/// Reads one response with a Content-Length body; returns (head, body).
fn read_one_response(c: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        buf.push(b[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn request_line_longer_than_the_peek_window_is_http1_and_routed() {
    // Issue 12: with `max_head_bytes = 65536` and a `/search` route, a 20,000-byte query was
    // classified opaque and spliced to the default upstream, skipping routing, metrics and the
    // smuggling checks for every request on the connection.
    let (default, search) = (
        named_line_upstream("default"),
        named_line_upstream("search"),
    );
    let p = proxy_with(
        &[default],
        "[http1]\nmax_head_bytes = 65536\n",
        &format!(
            "[[listener.route]]\nname = \"search\"\npath_prefix = \"/search\"\nupstream = [\"{search}\"]\n"
        ),
    );
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let line = format!("GET /search?{} HTTP/1.1", "q".repeat(20_000));
    write!(c, "{line}\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_one_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, format!("search {}", line.len()));
    // Later requests on the connection are HTTP/1 too: routed, and checked.
    c.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (_, body) = read_one_response(&mut c);
    assert_eq!(body, "default 19");
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 400"), "{rest}");
    wait_metric(&p, &detect_total("http/1"), 1.0);
    wait_metric(
        &p,
        "request_total{listener=\"t\",route=\"search\",protocol=\"http/1\"}",
        1.0,
    );
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(metric(&m, &detect_total("opaque")), Some(0.0), "{m}");
}

#[test]
fn request_line_past_the_head_limit_gets_414_however_long() {
    // Issue 12: with default limits, lines of 17,000 bytes and more went opaque instead of
    // getting 414.
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    for len in [17_000, 40_000] {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(len)).unwrap();
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 414"), "{len}: {resp:.200}");
    }
    wait_metric(&p, &detect_total("http/1"), 2.0);
}

/// Review: a client that sent part of a prefix and then reset looked like one that
/// half-closed (the bytes stay peekable and stop growing either way): it was forwarded opaque
/// as `client_half_closed`, to a fresh upstream connection, for a client already gone. The
/// reset is now a client error during detection, and nothing is dialled.
#[test]
fn a_client_that_resets_mid_prefix_is_an_error_not_a_half_close() {
    let (up, _h) = upstream(echo);
    let p = proxy_with(&[up], "[detect]\nserver_first = \"off\"\n", "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"GE").unwrap();
    reset(c);
    wait_metric(
        &p,
        "outbound_tcp_detect_http_results_total{result=\"error\"}",
        1.0,
    );
    let (_, m) = admin_get(&p, "/metrics");
    let count = |series: &str| metric(&m, series).unwrap_or(0.0);
    assert_eq!(
        count("tcp_open_total{listener=\"t\",peer=\"dst\"}"),
        0.0,
        "an upstream was dialled for a client that reset"
    );
    assert_eq!(count(&detect_total("opaque")), 0.0);
}

/// The other side of the above: a client that sends part of a prefix and then half-closes is
/// forwarded as it is (the bytes are all there will be), and gets its answer.
#[test]
fn a_client_that_half_closes_mid_prefix_is_forwarded_as_is() {
    let (up, _h) = upstream(echo);
    let p = proxy_with(&[up], "[detect]\nserver_first = \"off\"\n", "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"GE").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"GE");
    wait_metric(&p, &detect_total("opaque"), 1.0);
}
