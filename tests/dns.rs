//! Upstreams given by name: resolved after start from a test DNS server (tests/common/dns.rs)
//! whose answers and TTLs the tests change, on the opaque (TCP) and HTTP/1 paths. Each
//! endpoint is a loopback address (127.0.0.2, 127.0.0.3) on one shared port, answering with
//! its tag.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::dns::TestDns;
use common::*;
use sidewire::config::Config;
use sidewire::server::Server;

const NAME: &str = "svc.sidewire.test";
const A: [u8; 4] = [127, 0, 0, 2];
const B: [u8; 4] = [127, 0, 0, 3];

/// Two upstreams on one port, at 127.0.0.2 (tag "A") and 127.0.0.3 (tag "B"). Each reads
/// what the client sent first; an HTTP request gets `200` with the tag as body, anything else
/// the tag alone; then it closes.
fn tagged_pair() -> u16 {
    loop {
        let a = TcpListener::bind(SocketAddr::from((A, 0))).unwrap();
        let port = a.local_addr().unwrap().port();
        // The port is free on 127.0.0.2; on 127.0.0.3 another test may hold it: try again.
        let Ok(b) = TcpListener::bind(SocketAddr::from((B, port))) else {
            continue;
        };
        serve_tag(a, "A");
        serve_tag(b, "B");
        return port;
    }
}

fn serve_tag(l: TcpListener, tag: &'static str) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                // An HTTP request: until the end of its head; else the first bytes.
                loop {
                    let Ok(n) = c.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if !got.starts_with(b"GET") || got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let reply = if got.starts_with(b"GET") {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{tag}",
                        tag.len()
                    )
                } else {
                    tag.to_string()
                };
                let _ = c.write_all(reply.as_bytes());
            });
        }
    });
}

/// The proxy: listener `t` forwards opaque, `h` proxies HTTP/1, `g` HTTP/2 (to HTTP/1.1
/// upstreams), all to `upstream` (TOML list items), resolving through `dns`.
fn proxy_via(dns: &TestDns, upstream: &str, dns_extra: &str) -> Server {
    start_toml(&config_text(dns, upstream, dns_extra))
}

fn config_text(dns: &TestDns, upstream: &str, dns_extra: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\nshutdown_grace_ms = 2000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nnameservers = [\"{}\"]\nmin_ttl_ms = 100\nmax_ttl_ms = 1000\ntimeout_ms = 300\nretry_max_ms = 200\n{dns_extra}\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [{upstream}]\nprotocol = \"opaque\"\nconnect_timeout_ms = 1000\n\
         [[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:0\"\nupstream = [{upstream}]\nprotocol = \"http1\"\nconnect_timeout_ms = 1000\n\
         [[listener]]\nname = \"g\"\nlisten = \"127.0.0.1:0\"\nupstream = [{upstream}]\nprotocol = \"http2\"\nupstream_protocol = \"http1\"\nconnect_timeout_ms = 1000\n",
        dns.addr
    )
}

/// One opaque connection: the upstream's tag, or "" when the proxy closed it without one.
fn tcp_tag(p: &Server) -> String {
    let mut c = TcpStream::connect(p.listener_addr("t").unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"\x00hello\n").unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got
}

/// One HTTP/1 request on its own connection: (status, body, whole response).
fn http_get(p: &Server) -> (u16, String, String) {
    let mut c = TcpStream::connect(p.listener_addr("h").unwrap()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, resp)
}

/// One HTTP/2 request (h2c prior knowledge) on its own connection: (status, body, the
/// `sidewire-error` header).
fn h2_get(p: &Server) -> (u16, String, String) {
    let addr = p.listener_addr("g").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(s).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        let req = http::Request::get(format!("http://{addr}/"))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let (head, mut body) = resp.await.unwrap().into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let error = head
            .headers
            .get("sidewire-error")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (
            head.status.as_u16(),
            String::from_utf8_lossy(&data).into_owned(),
            error,
        )
    })
}

/// Polls `f` until it holds, failing after 10 s with `what`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scrape(p: &Server, series: &str) -> f64 {
    metric(&admin_get(p, "/metrics").1, series).unwrap_or(0.0)
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

#[test]
fn a_name_with_two_a_records_sends_traffic_to_both() {
    let port = tagged_pair();
    let dns = TestDns::start(30);
    dns.set(NAME, &[ip(A), ip(B)]);
    let p = proxy_via(&dns, &format!("\"{NAME}:{port}\""), "");
    let name = format!("{NAME}:{port}");
    assert_eq!(
        scrape(&p, &format!("sidewire_dns_endpoints{{name=\"{name}\"}}")),
        2.0
    );
    assert!(
        scrape(
            &p,
            &format!("sidewire_dns_resolutions_total{{name=\"{name}\",result=\"ok\"}}")
        ) >= 1.0
    );

    let tcp: Vec<String> = (0..20).map(|_| tcp_tag(&p)).collect();
    assert!(
        tcp.iter().any(|t| t == "A") && tcp.iter().any(|t| t == "B"),
        "opaque connections reach both addresses: {tcp:?}"
    );
    let http: Vec<String> = (0..40)
        .map(|_| {
            let (status, body, resp) = http_get(&p);
            assert_eq!(status, 200, "{resp}");
            body
        })
        .collect();
    assert!(
        http.iter().any(|t| t == "A") && http.iter().any(|t| t == "B"),
        "HTTP requests reach both addresses: {http:?}"
    );
    let h2: Vec<String> = (0..40).map(|_| h2_get(&p).1).collect();
    assert!(
        h2.iter().any(|t| t == "A") && h2.iter().any(|t| t == "B"),
        "HTTP/2 streams reach both addresses: {h2:?}"
    );
}

/// Review finding: a server that answers A but never AAAA still yields the A addresses (one
/// lookup asking both failed whole when the AAAA query timed out).
#[test]
fn an_unanswered_aaaa_query_does_not_discard_the_a_answer() {
    let port = tagged_pair();
    let dns = TestDns::start(1);
    dns.silence_aaaa(true);
    dns.set(NAME, &[ip(A)]);
    let p = proxy_via(&dns, &format!("\"{NAME}:{port}\""), "");
    eventually("opaque connections reach A", || tcp_tag(&p) == "A");
    assert_eq!(http_get(&p).1, "A");
    // And the answer follows changes while AAAA stays unanswered.
    dns.set(NAME, &[ip(B)]);
    eventually("HTTP requests reach B", || http_get(&p).1 == "B");
}

#[test]
fn a_changed_answer_moves_new_traffic_without_a_reload() {
    let port = tagged_pair();
    let dns = TestDns::start(1);
    dns.set(NAME, &[ip(A)]);
    let p = proxy_via(&dns, &format!("\"{NAME}:{port}\""), "");
    assert_eq!(tcp_tag(&p), "A");
    assert_eq!(http_get(&p).1, "A");

    // TTL 1 s: within a few seconds new connections and requests go to the new address.
    dns.set(NAME, &[ip(B)]);
    eventually("opaque connections reach B", || tcp_tag(&p) == "B");
    eventually("HTTP requests reach B", || http_get(&p).1 == "B");
    eventually("HTTP/2 streams reach B", || h2_get(&p).1 == "B");
    for _ in 0..5 {
        assert_eq!(tcp_tag(&p), "B", "A left the set");
        assert_eq!(http_get(&p).1, "B", "A left the set");
    }
}

#[test]
fn a_silent_or_nxdomain_dns_server_keeps_the_last_good_answer() {
    let port = tagged_pair();
    let dns = TestDns::start(1);
    dns.set(NAME, &[ip(A)]);
    let p = proxy_via(&dns, &format!("\"{NAME}:{port}\""), "");
    let name = format!("{NAME}:{port}");
    assert_eq!(tcp_tag(&p), "A");

    // The server goes quiet: resolutions time out, the endpoints stay.
    dns.silence(true);
    let timeouts = format!("sidewire_dns_resolutions_total{{name=\"{name}\",result=\"timeout\"}}");
    eventually("two timed-out resolutions", || scrape(&p, &timeouts) >= 2.0);
    assert_eq!(tcp_tag(&p), "A", "opaque still served");
    assert_eq!(http_get(&p).1, "A", "HTTP still served");
    assert_eq!(
        scrape(&p, &format!("sidewire_dns_endpoints{{name=\"{name}\"}}")),
        1.0
    );

    // It answers again, NXDOMAIN: the last good answer is kept through that too.
    dns.remove(NAME);
    dns.silence(false);
    let nx = format!("sidewire_dns_resolutions_total{{name=\"{name}\",result=\"no_records\"}}");
    eventually("an NXDOMAIN answer", || scrape(&p, &nx) >= 1.0);
    assert_eq!(tcp_tag(&p), "A");
    assert_eq!(http_get(&p).1, "A");
}

#[test]
fn a_name_unresolvable_at_start_is_served_once_it_resolves() {
    let port = tagged_pair();
    let dns = TestDns::start(1);
    // NXDOMAIN at start: the proxy starts anyway (start-up waits `timeout_ms` at most).
    let p = proxy_via(&dns, &format!("\"{NAME}:{port}\""), "");

    // Meanwhile: HTTP gets a 503 naming the reason, opaque connections are closed, counted.
    let (status, _, resp) = http_get(&p);
    assert_eq!(status, 503, "{resp}");
    assert!(resp.contains("no upstream endpoint"), "{resp}");
    let (status, _, error) = h2_get(&p);
    assert_eq!(status, 503);
    assert!(error.contains("no upstream endpoint"), "{error}");
    assert_eq!(tcp_tag(&p), "", "closed without an upstream");
    wait_metric(
        &p,
        "tcp_refused_total{listener=\"t\",reason=\"no_endpoints\"}",
        1.0,
    );

    dns.set(NAME, &[ip(A)]);
    eventually("HTTP served once the name resolves", || {
        http_get(&p).0 == 200
    });
    assert_eq!(http_get(&p).1, "A");
    eventually("opaque served once the name resolves", || {
        tcp_tag(&p) == "A"
    });
}

#[test]
fn literals_and_names_mix_and_a_reload_follows_the_new_names() {
    let port = tagged_pair();
    let dns = TestDns::start(30);
    dns.set(NAME, &[ip(A)]);
    dns.set("other.sidewire.test", &[ip(B)]);
    // A literal and a name for the same endpoint count once.
    let p = proxy_via(
        &dns,
        &format!("\"127.0.0.2:{port}\", \"{NAME}:{port}\""),
        "",
    );
    let mut p = p;
    for _ in 0..4 {
        assert_eq!(tcp_tag(&p), "A");
    }
    // A reload to another name: the reload resolves it first (`dns.timeout_ms` at most), so
    // the very first connection and request after it reach its address (review finding:
    // they got 503 / a close until the resolver thread's first answer).
    let text = config_text(&dns, &format!("\"other.sidewire.test:{port}\""), "");
    let text = text.replacen(
        "[runtime]\n",
        &format!("[runtime]\ndriver = \"{}\"\n", driver()),
        1,
    );
    let t0 = Instant::now();
    p.reload(Config::parse(&text, "reload.toml").unwrap())
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the reload waits for DNS only up to dns.timeout_ms"
    );
    assert_eq!(http_get(&p).1, "B", "the first request after the reload");
    assert_eq!(tcp_tag(&p), "B", "the first connection after the reload");
    assert_eq!(h2_get(&p).1, "B", "the first stream after the reload");
    let (_, m) = admin_get(&p, "/metrics");
    assert!(
        !m.contains(&format!("name=\"{NAME}:{port}\"")),
        "the removed name is no longer reported"
    );
}

/// `GET /metrics` from a binary's admin address.
fn scrape_at(admin: SocketAddr) -> String {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn the_binary_starts_with_an_unresolvable_name_and_does_not_exit_on_dns_failures() {
    let dns = TestDns::start(1);
    dns.silence(true);
    let text = config_text(&dns, &format!("\"{NAME}:80\""), "").replacen(
        "[runtime]\n",
        &format!("[runtime]\ndriver = \"{}\"\n", driver()),
        1,
    );

    // `check` reports the name (the server is silent: a timeout) and still exits 0.
    let path = common::bin::write_config(&text);
    let out = std::process::Command::new(common::bin::BIN)
        .args(["--config", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "# warning: upstream {NAME}:80 does not resolve now (timeout"
        )),
        "{stdout}"
    );

    // The proxy starts, warns, and keeps running while every resolution fails.
    let mut p = common::bin::Proc::start(&text, &[], "info");
    let (admin, lines) = p.started();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("upstream name has no address yet")),
        "{lines:#?}"
    );
    let timeouts =
        format!("sidewire_dns_resolutions_total{{name=\"{NAME}:80\",result=\"timeout\"}}");
    eventually("three timed-out resolutions", || {
        metric(&scrape_at(admin), &timeouts).unwrap_or(0.0) >= 3.0
    });
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the proxy is still running"
    );
    let (code, _) = p.stop();
    assert_eq!(code, Some(0));
}
