//! Issue 12: with the default `server_first_dial_delay_ms = 0`, a client that is silent at
//! the first peek gets its upstream dialled at once (so server-first greetings arrive about
//! 0.1 ms after the direct ones). A client that then speaks first after all reuses that
//! connection instead of wasting it: HTTP/1 pools it, HTTP/2 makes it its pooled connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use common::*;
use http::Request;

const EARLY: &str = "tcp_detect_early_dials_total{listener=\"t\",direction=\"outbound\"}";
const UNUSED: &str = "tcp_detect_early_dials_unused_total{listener=\"t\",direction=\"outbound\"}";
const DST_OPENED: &str = "tcp_open_total{listener=\"t\",direction=\"outbound\",peer=\"dst\"}";

/// An HTTP/1.1 keep-alive upstream answering every request with `200 ok`.
fn keep_alive(c: TcpStream) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn an_http1_client_silent_at_accept_reuses_the_early_connection() {
    let (up, _h) = upstream(keep_alive);
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The request went on the connection dialled during detection: one upstream connection.
    wait_metric(&p, DST_OPENED, 1.0);
    wait_metric(&p, UNUSED, 0.0);
}

/// A second silent client, while the pool holds the first one's connection idle: no early
/// dial at all (the endpoint answered HTTP, so it does not speak first), and the request
/// takes the pooled connection. Before, each such client dialled a spare that was closed
/// unused (a review counted 45 upstream connections for 100 curl requests, and a later one
/// 60-85 % of curl connections dialling early on a loaded machine, nearly all wasted).
#[test]
fn no_early_dial_to_an_endpoint_with_an_idle_pooled_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicUsize::new(0));
    // Answers each request with the number of the connection it came on (1, 2, ...).
    let (up, _h) = upstream(move |c: TcpStream| {
        let id = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n"
                && write!(w, "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{id}").is_err()
            {
                return;
            }
        }
    });
    // One worker: pools are per worker, and both clients must meet the same one.
    let p = one_worker(up, "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    // Keep-alive, so the first client's upstream connection goes back to the pool.
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (head, body) = common::h1::read_response(&mut c, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"1");
    for client in 2..5 {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        // A client slower than the proxy's first peek (the scenario, not a synchronisation:
        // the old code dialled early here every time).
        std::thread::sleep(std::time::Duration::from_millis(50));
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let (head, body) = common::h1::read_response(&mut c, &mut Vec::new());
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"1", "client {client}: on the pooled connection");
    }
    let (_, text) = admin_get(&p, "/metrics");
    assert_eq!(metric(&text, EARLY), Some(1.0), "{text}");
    assert_eq!(metric(&text, UNUSED), Some(0.0), "{text}");
    assert_eq!(metric(&text, DST_OPENED), Some(1.0), "{text}");
}

/// [`common::one_worker`] with no table before the listener.
fn one_worker(up: std::net::SocketAddr, extra: &str) -> sidewire::server::Server {
    common::one_worker(up, "", extra)
}

/// A current-thread tokio runtime for one side of an HTTP/2 exchange.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_http2_client_silent_at_accept_reuses_the_early_connection() {
    let (up, _h) = upstream(|c: TcpStream| {
        rt().block_on(async move {
            c.set_nonblocking(true).unwrap();
            let c = tokio::net::TcpStream::from_std(c).unwrap();
            let Ok(mut conn) = h2::server::handshake(c).await else {
                return;
            };
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                let resp = http::Response::new(());
                let mut s = respond.send_response(resp, false).unwrap();
                s.send_data(Bytes::from_static(b"ok"), true).unwrap();
            }
        })
    });
    // One worker: pools are per worker, and the second client must meet the first one's.
    let p = one_worker(up, "");
    let c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    rt().block_on(async move {
        c.set_nonblocking(true).unwrap();
        let c = tokio::net::TcpStream::from_std(c).unwrap();
        let (send, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for _ in 0..3 {
            let mut send = send.clone().ready().await.unwrap();
            let req = Request::get("http://a/").body(()).unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while let Some(chunk) = body.data().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(got, b"ok");
        }
    });
    // Every stream went on the connection dialled during detection.
    wait_metric(&p, DST_OPENED, 1.0);
    wait_metric(&p, UNUSED, 0.0);
    // A second silent client, the HTTP/2 connection now pooled: no early dial (the endpoint
    // speaks HTTP/2), and its stream goes on the pooled connection.
    let c = TcpStream::connect(addr(&p)).unwrap();
    // (Slower than the first peek: the scenario, not a synchronisation.)
    std::thread::sleep(std::time::Duration::from_millis(50));
    rt().block_on(async move {
        c.set_nonblocking(true).unwrap();
        let c = tokio::net::TcpStream::from_std(c).unwrap();
        let (send, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        let req = Request::get("http://a/").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    });
    let (_, text) = admin_get(&p, "/metrics");
    assert_eq!(metric(&text, EARLY), Some(1.0), "{text}");
    assert_eq!(metric(&text, DST_OPENED), Some(1.0), "{text}");
}

/// The kind behind a flaky `oversized_heads_get_431_and_414` and a gRPC BrokenPipe once the
/// dial delay became 0: an early dial that fails must not decide for a client that speaks a
/// moment later. The HTTP client still gets its HTTP answer (here a 502 from the proxy).
#[test]
fn a_client_that_speaks_after_a_failed_early_dial_still_gets_its_answer() {
    let p = proxy(&[dead_addr()], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // The dial to the dead upstream is refused at once; the request follows within the
    // grace a silent client keeps after that (`detect::AFTER_DIAL_FAILURE`, 100 ms).
    wait_metric(&p, EARLY, 1.0);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
}

/// A client that stays silent after the early dial failed (a server-first client whose
/// server is down) is closed after the listener's connect timeout, not the detect timeout.
#[test]
fn a_silent_client_is_closed_soon_after_a_failed_early_dial() {
    let p = proxy(&[dead_addr()], "connect_timeout_ms = 100\n");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // The detect timeout is 10 s: a close within 5 s came from the failed dial.
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("closed before the read timeout");
    assert!(rest.is_empty());
}

/// Review: an upstream that closes connections silent for longer than its first-request
/// timeout closed the early-dialled one before the client spoke; the close was taken for a
/// server speaking first, the connection went opaque and the client's request got an empty
/// reply. The closed connection is given up now and the request gets a fresh one.
#[test]
fn an_early_connection_the_upstream_closes_is_not_a_server_speaking_first() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicUsize::new(0));
    // Closes its first connection at once, without a byte; serves the others.
    let (up, _h) = upstream(move |c: TcpStream| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            return;
        }
        keep_alive(c)
    });
    let p = one_worker(up, "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // The early connection was dialled and the upstream closed it: given up, counted.
    wait_metric(&p, UNUSED, 1.0);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (head, body) = common::h1::read_response(&mut c, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    wait_metric(
        &p,
        "tcp_detect_total{listener=\"t\",result=\"http/1\"}",
        1.0,
    );
    wait_metric(&p, DST_OPENED, 2.0);
}

/// Review: an early connection the upstream *reset* before the client spoke was counted as
/// a clean close (`classification="success"`, no errno). Its close is a failure with the
/// reset's errno, and the client's request still gets a fresh connection.
#[test]
fn an_early_connection_the_upstream_resets_counts_its_errno() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicUsize::new(0));
    // Resets its first connection at once; serves the others.
    let (up, _h) = upstream(move |c: TcpStream| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            return reset(c);
        }
        keep_alive(c)
    });
    let p = one_worker(up, "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, UNUSED, 1.0);
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"failure\",errno=\"ECONNRESET\"}",
        1.0,
    );
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (head, body) = common::h1::read_response(&mut c, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    let (_, m) = admin_get(&p, "/metrics");
    assert_eq!(
        metric(
            &m,
            "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"success\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "{m}"
    );
}

/// Review: with the listener's upstream blackholed, an HTTP client that spoke while the early
/// dial was still connecting waited for that dial (`connect_timeout_ms`) before its request
/// was read, though its requests go where routes send them. The dial still in flight is now
/// dropped for HTTP (counted unused) and the request is served at once.
#[test]
fn an_http_client_does_not_wait_for_an_early_dial_still_connecting() {
    let (dead, _listener, _fillers) = blackholed();
    let (live, _h) = upstream(keep_alive);
    let p = proxy(
        &[dead],
        &format!(
            "connect_timeout_ms = 60000\n\
             [[listener.route]]\nname = \"live\"\nhost = \"live.example\"\nupstream = [\"{live}\"]\n"
        ),
    );
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    // The early dial has started (to the blackholed endpoint) and cannot finish.
    wait_metric(&p, EARLY, 1.0);
    // Well below the 60 s connect timeout the request waited for before.
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: live.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
    wait_metric(&p, UNUSED, 1.0);
    // The abandoned dial never connected: the route's connection is the only upstream one.
    wait_metric(&p, DST_OPENED, 1.0);
}

/// Review: with routes, a client that was silent past the grace after a failed early dial
/// (the listener's own upstream refused) was closed, or forwarded opaque to another endpoint
/// past its route. With routes a failed early dial no longer cuts detection short: the client
/// that thinks for 300 ms before its request is routed as usual, and the failed dial counts
/// as the connect error it was.
#[test]
fn a_slow_client_after_a_failed_early_dial_is_still_routed() {
    let (live, _h) = upstream(keep_alive);
    let p = proxy(
        &[dead_addr()],
        &format!(
            "[[listener.route]]\nname = \"live\"\nhost = \"live.example\"\nupstream = [\"{live}\"]\n"
        ),
    );
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    // The scenario, not a synchronisation: a client that pauses before it speaks, longer
    // than the 100 ms a silent client keeps after a failed dial on a listener without routes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.write_all(b"GET / HTTP/1.1\r\nHost: live.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
    wait_metric(
        &p,
        "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
        1.0,
    );
}

/// Review: a client that reset during detection dropped the early connection uncounted (an
/// upstream connection accepted, in no `dst` series, not in the unused early dials).
#[test]
fn an_early_connection_of_a_client_that_resets_is_counted() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let (up, _h) = upstream(move |c: TcpStream| {
        let _ = tx.lock().unwrap().send(());
        let mut c = c;
        let _ = c.read_to_end(&mut Vec::new());
    });
    let p = proxy(&[up], "");
    let c = TcpStream::connect(addr(&p)).unwrap();
    // The early connection is accepted by the upstream; then the client resets.
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    reset(c);
    wait_metric(&p, UNUSED, 1.0);
    wait_metric(&p, DST_OPENED, 1.0);
    wait_metric(
        &p,
        "tcp_open_connections{listener=\"t\",direction=\"outbound\",peer=\"dst\"}",
        0.0,
    );
}

/// Review: connections dialled during detection were pooled whatever the endpoint's
/// `max_connections_per_endpoint` (ten silent clients, ten upstream connections at once with
/// a bound of one). One is pooled only while the endpoint is under its bound; else it is
/// closed unused and the request waits its turn.
#[test]
fn an_early_connection_is_not_pooled_beyond_the_endpoint_bound() {
    use std::sync::{mpsc, Arc, Mutex};
    let (release, held) = mpsc::channel::<()>();
    let held = Arc::new(Mutex::new(held));
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Arc::new(Mutex::new(arrived_tx));
    // Answers each request (saying when one has arrived) once the test says so.
    let (up, _h) = upstream(move |c: TcpStream| {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                let _ = arrived_tx.lock().unwrap().send(());
                let _ = held.lock().unwrap().recv();
                if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let p = one_worker(up, "max_connections_per_endpoint = 1\n");
    let mut clients = Vec::new();
    for dials in [1.0, 2.0] {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        wait_metric(&p, EARLY, dials);
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        if dials == 1.0 {
            // The first request holds the one connection (not idle in the pool, which
            // would spare the second client its early dial) before the second client comes.
            arrived
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap();
        }
        clients.push(c);
    }
    // The second client's early connection found the endpoint at its bound (the first
    // request holds the one connection): closed unused.
    wait_metric(&p, UNUSED, 1.0);
    for _ in 0..2 {
        release.send(()).unwrap();
    }
    for mut c in clients {
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

/// Review: a client that sent part of its request before its early dial failed was closed
/// 100 ms later as one that "stayed silent" (no routes). It keeps the whole detect timeout:
/// its request, finished 300 ms later, gets the HTTP answer (a 502: nothing to connect to).
#[test]
fn a_client_that_sent_part_of_its_request_is_not_closed_as_silent() {
    let p = proxy(&[dead_addr()], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    c.write_all(b"GE").unwrap();
    // The scenario: the rest comes later than the 100 ms a silent client gets.
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.write_all(b"T / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp:?}");
}

/// Review: a client that reset after its early dial failed took the failure with it
/// uncounted (nor in the endpoint's health).
#[test]
fn a_failed_early_dial_counts_when_the_client_then_resets() {
    let p = proxy(
        &[dead_addr()],
        "[[listener.route]]\nname = \"r\"\nhost = \"r.example\"\nupstream = [\"127.0.0.1:9\"]\n",
    );
    let c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    reset(c);
    wait_metric(
        &p,
        "tcp_connect_errors_total{listener=\"t\",error=\"refused\"}",
        1.0,
    );
}
