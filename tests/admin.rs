//! The admin server over real sockets: concurrent connections (an idle or half-sent client
//! delays no probe), its bounds, every endpoint's answer, and `admin.listen = "0.0.0.0:…"`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use sidewire::admin::{HEADER_TIMEOUT, MAX_CONNECTIONS};
use sidewire::server::Server;

/// A proxy whose admin server listens on `admin` (its one listener goes nowhere).
fn proxy_with_admin(admin: &str, extra: &str) -> Server {
    start_toml(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"{admin}\"\n{extra}\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{}\"]\n",
        dead_addr()
    ))
}

/// One request on a new connection to `addr`; returns the whole answer (the server closes).
fn request(addr: SocketAddr, req: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    request(addr, &format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n"))
}

fn status(answer: &str) -> u16 {
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Whether the server still holds `c` open: nothing to read, and no EOF.
fn still_open(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let open = matches!(c.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    c.set_nonblocking(false).unwrap();
    open
}

/// Connections that sent nothing, and connections that sent part of a request head.
fn idle_clients(addr: SocketAddr, silent: usize, half: usize) -> Vec<TcpStream> {
    let mut out: Vec<TcpStream> = (0..silent)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for i in 0..half {
        let mut c = TcpStream::connect(addr).unwrap();
        let part: &[u8] = if i % 2 == 0 {
            b"GET /ready HTTP/1.1\r\nhost: x\r\n"
        } else {
            b"GE"
        };
        c.write_all(part).unwrap();
        out.push(c);
    }
    out
}

/// Issue 15: the old admin served one connection at a time, so each idle connection ahead
/// of a probe held it up for a second. Now `/ready` answers at once with 100 idle connections
/// and 10 half-sent heads open, and they stay open.
#[test]
fn ready_answers_at_once_with_100_idle_connections_open() {
    let p = proxy(&[dead_addr()], "");
    let admin = p.admin_addr();
    let mut idle = idle_clients(admin, 100, 10);
    // Let the admin accept them all before the probe (they are ahead of it in any case).
    std::thread::sleep(Duration::from_millis(100));
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let answer = get(admin, "/ready");
        took.push(t.elapsed());
        assert_eq!(status(&answer), 200, "{answer}");
        assert_eq!(body(&answer), "ready\n");
    }
    took.sort();
    eprintln!(
        "/ready with 110 idle admin connections open: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] < Duration::from_secs(1),
        "a probe waited for idle connections: {took:?}"
    );
    // A scrape too, while they are still open.
    let (code, text) = admin_get(&p, "/metrics");
    assert_eq!(code, 200);
    assert!(text.contains("sidewire_workers"), "{text}");
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(still_open(c), "idle connection {i} was closed");
    }
}

/// At most MAX_CONNECTIONS are served at once: the next connection waits (in the listen
/// backlog) until one of them ends, then is answered.
#[test]
fn connections_past_the_limit_wait_for_a_free_slot() {
    let p = proxy(&[dead_addr()], "");
    let admin = p.admin_addr();
    let mut idle = idle_clients(admin, MAX_CONNECTIONS, 0);
    std::thread::sleep(Duration::from_millis(100));
    let mut probe = TcpStream::connect(admin).unwrap();
    probe
        .write_all(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        probe.read(&mut buf).is_err(),
        "answered beyond {MAX_CONNECTIONS} connections"
    );
    let t = Instant::now();
    drop(idle.pop());
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// A connection that sends no complete head is closed after HEADER_TIMEOUT (slowloris).
#[test]
fn a_connection_without_a_complete_head_is_closed_after_the_header_timeout() {
    let p = proxy(&[dead_addr()], "");
    let mut idle = idle_clients(p.admin_addr(), 1, 1);
    let t = Instant::now();
    for c in &mut idle {
        c.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
        let mut rest = Vec::new();
        // EOF (or a reset), not our read timeout.
        let r = c.read_to_end(&mut rest);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "{r:?}"
        );
    }
    let took = t.elapsed();
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(200) && took < HEADER_TIMEOUT * 2,
        "{took:?}"
    );
}

/// Every endpoint's answer as before the server changed: statuses, texts, HEAD, limits.
#[test]
fn answers_keep_their_status_and_text() {
    let p = proxy(&[dead_addr()], "");
    let admin = p.admin_addr();
    let a = get(admin, "/live");
    assert_eq!((status(&a), body(&a)), (200, "live\n"), "{a}");
    assert!(a.to_ascii_lowercase().contains("connection: close"), "{a}");
    let a = get(admin, "/ready?verbose");
    assert_eq!((status(&a), body(&a)), (200, "ready\n"), "{a}");
    let a = get(admin, "/nope");
    assert_eq!(
        (status(&a), body(&a)),
        (
            404,
            "not found: try /metrics, /live, /ready, /connections, /log-level, POST /reload, POST /shutdown\n"
        )
    );
    let a = request(admin, "POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert_eq!((status(&a), body(&a)), (405, "only GET and HEAD\n"));
    assert!(
        a.contains("\r\nallow: GET, HEAD\r\n"),
        "RFC 9110 §15.5.6: {a}"
    );
    let a = request(admin, "GET /reload HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!((status(&a), body(&a)), (405, "POST /reload\n"));
    assert!(a.contains("\r\nallow: POST\r\n"), "{a}");
    let a = request(admin, "HEAD /live HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(status(&a), 200);
    assert!(
        a.contains("content-length: 5\r\n") && body(&a).is_empty(),
        "{a}"
    );
    let a = request(admin, "HEAD /metrics HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(status(&a), 200);
    assert!(body(&a).is_empty(), "{a}");
    let a = request(
        admin,
        "POST /shutdown HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(
        (status(&a), body(&a)),
        (
            404,
            "the shutdown endpoint is off (admin.enable_shutdown = false)\n"
        )
    );
    // No subscriber of sidewire's own in this process (tests/logs.rs runs the binary).
    assert_eq!(status(&get(admin, "/log-level")), 404);
    let huge = format!(
        "GET /live HTTP/1.1\r\nx-pad: {}\r\n\r\n",
        "a".repeat(sidewire::admin::MAX_REQUEST_HEAD)
    );
    assert_eq!(status(&request(admin, &huge)), 431);
    // The scrape, and the access log's own counter at its end.
    let (code, text) = admin_get(&p, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "sidewire_access_log_dropped_total"),
        Some(0.0)
    );
}

/// A non-loopback address of this host, if it has one (the source address of a route out).
fn non_loopback_ip() -> Option<IpAddr> {
    ["192.0.2.1:9", "198.51.100.1:9", "10.255.255.1:9"]
        .iter()
        .find_map(|dst| {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.connect(dst).ok()?;
            let ip = s.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
}

/// `admin.listen = "0.0.0.0:…"` (the sidecar preset's, for the kubelet and Prometheus):
/// probes and scrapes from any address, `POST /shutdown` only from loopback.
#[test]
fn admin_on_all_addresses_serves_probes_from_anywhere_and_shutdown_only_locally() {
    let p = proxy_with_admin("0.0.0.0:0", "enable_shutdown = true");
    let port = p.admin_addr().port();
    assert!(p.admin_addr().ip().is_unspecified(), "{}", p.admin_addr());
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(status(&get(local, "/ready")), 200);
    match non_loopback_ip() {
        Some(ip) => {
            let outside = SocketAddr::new(ip, port);
            assert_eq!(status(&get(outside, "/ready")), 200);
            let (code, text) = {
                let a = get(outside, "/metrics");
                (status(&a), body(&a).to_string())
            };
            assert_eq!(code, 200);
            assert!(text.contains("sidewire_workers 1"), "{text}");
            let a = request(
                outside,
                "POST /shutdown HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            );
            assert_eq!(
                (status(&a), body(&a)),
                (403, "POST /shutdown is only accepted from loopback\n")
            );
        }
        None => eprintln!("no non-loopback address here: only loopback checked"),
    }
    let a = request(local, "GET /shutdown HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!((status(&a), body(&a)), (405, "POST /shutdown\n"));
    assert!(a.contains("\r\nallow: POST\r\n"), "{a}");
    let a = request(
        local,
        "POST /shutdown HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!((status(&a), body(&a)), (202, "shutting down\n"));
}
