//! Opaque TCP forwarding through a running proxy, with real loopback sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const GIB: u64 = 1 << 30;

#[test]
fn one_gib_each_way_is_byte_exact_and_counted() {
    let (to_test, from_upstream) = mpsc::channel();
    let (up, _h) = upstream(move |c: TcpStream| {
        let w = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || send_all(w, 2, GIB));
        let received = recv_all(c);
        let sent = sender.join().unwrap();
        to_test.send((received, sent)).unwrap();
    });
    let p = proxy(&[up], "");
    let c = TcpStream::connect(addr(&p)).unwrap();
    let w = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || send_all(w, 1, GIB));
    let (got_bytes, got_hash) = recv_all(c);
    let sent_hash = sender.join().unwrap();
    let ((up_bytes, up_hash), up_sent_hash) = from_upstream.recv().unwrap();

    assert_eq!(up_bytes, GIB, "upstream received every byte");
    assert_eq!(up_hash, sent_hash, "client → upstream is byte-exact");
    assert_eq!(got_bytes, GIB, "client received every byte");
    assert_eq!(got_hash, up_sent_hash, "upstream → client is byte-exact");

    // The byte counters show exactly what moved, on both peers.
    let g = GIB as f64;
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(
        metric(&m, "tcp_read_bytes_total{listener=\"t\",peer=\"src\"}"),
        Some(g),
        "{m}"
    );
    assert_eq!(
        metric(&m, "tcp_write_bytes_total{listener=\"t\",peer=\"src\"}"),
        Some(g)
    );
    assert_eq!(
        metric(&m, "tcp_read_bytes_total{listener=\"t\",peer=\"dst\"}"),
        Some(g)
    );
    assert_eq!(
        metric(&m, "tcp_write_bytes_total{listener=\"t\",peer=\"dst\"}"),
        Some(g)
    );
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"src\",classification=\"success\"}",
        1.0,
    );
    wait_metric(
        &p,
        "tcp_connection_duration_seconds_count{listener=\"t\"}",
        1.0,
    );
}

#[test]
fn client_half_close_reaches_upstream_which_still_answers() {
    let (up, _h) = upstream(|mut c: TcpStream| {
        let mut req = Vec::new();
        c.read_to_end(&mut req).unwrap(); // returns only at the client's FIN
        assert_eq!(req, b"question");
        c.write_all(b"answer after your EOF").unwrap();
    });
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"question").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert_eq!(resp, "answer after your EOF");
}

#[test]
fn upstream_half_close_reaches_client_which_still_sends() {
    let (tx, rx) = mpsc::channel();
    let (up, _h) = upstream(move |mut c: TcpStream| {
        c.write_all(b"banner").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        tx.send(rest).unwrap();
    });
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let mut banner = Vec::new();
    c.read_to_end(&mut banner).unwrap(); // EOF arrives while our write side is still open
    assert_eq!(banner, b"banner");
    c.write_all(b"late words").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv().unwrap(), b"late words");
}

#[test]
fn thousand_concurrent_connections_all_complete() {
    const N: usize = 1000;
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let a = addr(&p);
    let mut conns: Vec<TcpStream> = (0..N).map(|_| TcpStream::connect(a).unwrap()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("message {i:04}").as_bytes()).unwrap();
    }
    // All N are open through the proxy at the same time.
    wait_metric(
        &p,
        "tcp_open_connections{listener=\"t\",peer=\"dst\"}",
        N as f64,
    );
    for (i, mut c) in conns.into_iter().enumerate() {
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("message {i:04}"));
    }
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"src\",classification=\"success\"}",
        N as f64,
    );
    wait_metric(&p, "tcp_open_connections{listener=\"t\",peer=\"src\"}", 0.0);
}

#[test]
fn upstream_refused_closes_client_promptly_and_counts() {
    // A long connect timeout: a prompt close proves the refusal was noticed, not timed out.
    let p = proxy(&[dead_addr()], "connect_timeout_ms = 30000");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected close, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        t0.elapsed()
    );
    wait_metric(
        &p,
        "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
        1.0,
    );
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"src\",classification=\"failure\"}",
        1.0,
    );
    wait_metric(&p, "tcp_open_total{listener=\"t\",peer=\"dst\"}", 0.0);
}

#[test]
fn upstream_silent_on_syn_times_out_and_counts() {
    // A listener whose accept queue is full drops further SYNs: the connect can only time out.
    let (full, _listener, _fillers) = blackholed();
    let p = proxy(&[full], "connect_timeout_ms = 200");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    // A timed-out connect is tried once more (the set has no other endpoint): two timeouts.
    wait_metric(
        &p,
        "tcp_connect_errors_total{listener=\"t\",error=\"timeout\"}",
        2.0,
    );
    wait_metric(
        &p,
        "sidewire_connect_retries_total{listener=\"t\",endpoint=\"same\"}",
        1.0,
    );
}

/// Issue 16: with one of two endpoints dead, every connection reaches the live one: a
/// refused connect is retried on the other endpoint, and counted.
#[test]
fn a_refused_connect_is_retried_on_the_other_endpoint() {
    let (live, _h) = upstream(echo);
    let p = proxy(&[dead_addr(), live], "");
    for _ in 0..8 {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }
    let (_, text) = admin_get(&p, "/metrics");
    let retries = metric(
        &text,
        "sidewire_connect_retries_total{listener=\"t\",endpoint=\"other\"}",
    )
    .unwrap();
    let refused = metric(
        &text,
        "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
    )
    .unwrap();
    assert!(
        retries >= 1.0 && retries == refused,
        "{retries} retries, {refused} refused"
    );
}

/// Opens a connection through `p`, sends one byte and expects it echoed.
fn echo_once(p: &sidewire::server::Server) {
    let mut c = TcpStream::connect(addr(p)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
}

/// Issue 16: an endpoint that keeps refusing is ejected after `eject_after_failures`
/// consecutive failures on a worker: later connections are not dialled to it at all.
#[test]
fn an_endpoint_that_keeps_failing_is_ejected() {
    let (live, _h) = upstream(echo);
    let p = proxy(
        &[dead_addr(), live],
        "eject_after_failures = 2\neject_base_ms = 600000\neject_max_ms = 600000",
    );
    for _ in 0..40 {
        echo_once(&p);
    }
    let (_, text) = admin_get(&p, "/metrics");
    let refused = metric(
        &text,
        "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
    )
    .unwrap();
    let ejections = metric(&text, "sidewire_endpoint_ejections_total{listener=\"t\"}").unwrap();
    // Two workers, each ejecting after its own 2 failures: at most 4 refused of 40 (about 20
    // without ejection, as picks alternate between two idle endpoints).
    assert!(refused <= 4.0, "{refused} refused connects:\n{text}");
    assert!((1.0..=2.0).contains(&ejections), "{ejections} ejections");
}

/// Issue 16: when the back-off ends an ejected endpoint is tried again, and one more failure
/// ejects it again at once (for twice as long).
#[test]
fn an_ejected_endpoint_is_tried_again_after_the_back_off() {
    let (live, _h) = upstream(echo);
    let p = proxy(
        &[dead_addr(), live],
        "eject_after_failures = 1\neject_base_ms = 50\neject_max_ms = 100",
    );
    let refused = |p: &sidewire::server::Server| {
        let (_, text) = admin_get(p, "/metrics");
        metric(
            &text,
            "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Each worker's first refusal ejects; after 50 ms it is dialled again, refused and
    // ejected again: keep connecting until some worker has done that.
    loop {
        echo_once(&p);
        let (_, text) = admin_get(&p, "/metrics");
        let ejections =
            metric(&text, "sidewire_endpoint_ejections_total{listener=\"t\"}").unwrap_or(0.0);
        if ejections >= 3.0 {
            assert!(
                refused(&p) >= ejections,
                "every ejection followed a refusal"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint was never tried again: {ejections} ejections"
        );
    }
}

#[test]
fn upstream_reset_resets_client() {
    let (up, _h) = upstream(|c: TcpStream| {
        let mut c = c;
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST
    });
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "client should see the reset, got {r:?}"
    );
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"failure\"}",
        1.0,
    );
}

#[test]
fn connections_spread_over_endpoints() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let counted = |n: Arc<AtomicUsize>| {
        upstream(move |c: TcpStream| {
            n.fetch_add(1, Ordering::SeqCst);
            echo(c)
        })
    };
    let (na, nb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, _ha) = counted(na.clone());
    let (b, _hb) = counted(nb.clone());
    let p = proxy(&[a, b], "");
    // Connections are held open, so each worker's least-connections choice alternates.
    let conns: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr(&p)).unwrap())
        .collect();
    for mut c in &conns {
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap(); // echoed: the upstream has counted this connection
    }
    let (na, nb) = (na.load(Ordering::SeqCst), nb.load(Ordering::SeqCst));
    assert_eq!(na + nb, 8);
    // Per worker the split is even (±1); two workers: at worst 6/2.
    assert!(na >= 2 && nb >= 2, "uneven spread: {na}/{nb}");
}

#[test]
fn admin_endpoints_and_drain() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    assert_eq!(admin_get(&p, "/live"), (200, "live\n".into()));
    assert_eq!(admin_get(&p, "/ready"), (200, "ready\n".into()));
    assert_eq!(admin_get(&p, "/nope").0, 404);
    let (code, text) = admin_get(&p, "/metrics");
    assert_eq!(code, 200);
    assert!(text.contains("# TYPE tcp_open_total counter"));
    assert_eq!(metric(&text, "sidewire_workers"), Some(2.0));

    let a = addr(&p);
    let mut open = TcpStream::connect(a).unwrap();
    open.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    open.read_exact(&mut b).unwrap();

    p.drain();
    assert_eq!(admin_get(&p, "/ready"), (503, "not ready\n".into()));
    // The open connection keeps working while draining.
    open.write_all(b"pong").unwrap();
    open.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    // New connections are no longer accepted (all listeners closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(a).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still accepting after drain"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(open);
    let report = p.shutdown();
    assert_eq!(report.finished, report.workers, "every worker drained");
}

/// A client that dials an original-destination listener itself (no redirect) is refused,
/// not proxied to the proxy: the original destination is the listener (`loop`), or, where no
/// NAT rule made conntrack track the connection, there is none (`no_original_dst`). The
/// redirected case runs in network namespaces in `tests/sidecar.rs`.
#[test]
fn original_dst_listener_refuses_a_direct_connection() {
    let text = "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = \"original-dst\"\n";
    let p = start_toml(text);
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a close without data, got {other:?}"),
    }
    wait_metric(
        &p,
        "tcp_refused_total{listener=\"t\",direction=\"outbound\"}",
        1.0,
    );
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"src\",classification=\"failure\"}",
        1.0,
    );
    let (_, m) = admin_get(&p, "/metrics");
    // No upstream connection: no destination has a `peer="dst"` series yet.
    assert_eq!(
        metric(&m, "tcp_open_total{listener=\"t\",peer=\"dst\"}").unwrap_or(0.0),
        0.0,
        "{m}"
    );
}
