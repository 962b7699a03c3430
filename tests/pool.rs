//! The HTTP/1 upstream pool's liveness (issue 12): an idle pooled connection is dropped when
//! its upstream closes it, whether or not traffic comes, and a closed connection is never
//! handed to a request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;

/// Reads one request head (and a Content-Length body) from `r`; `None` at EOF or timeout.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(head)
}

/// An HTTP/1.1 upstream that answers `200 ok` with keep-alive, then closes a connection
/// after `idle` without a request (`None`: right after each answer). Returns its address,
/// the count of connections it accepted, and a channel that reports each close.
fn closing_upstream(idle: Option<Duration>) -> (SocketAddr, Arc<AtomicUsize>, mpsc::Receiver<()>) {
    let l = listen_any();
    let a = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(idle).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while read_request(&mut r).is_some() {
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                    if idle.is_none() {
                        break;
                    }
                }
                let _ = w.shutdown(std::net::Shutdown::Both);
                drop((w, r));
                let _ = tx.send(());
            });
        }
    });
    (a, accepted, rx)
}

/// Sends `req` on a new connection to `target` and reads the answer until close.
fn exchange(target: SocketAddr, req: &[u8]) -> String {
    let mut c = TcpStream::connect(target).unwrap();
    c.write_all(req).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

/// Sockets in CLOSE_WAIT whose peer is `port` on loopback (from /proc/net/tcp).
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f[2].rsplit(':').next().unwrap();
            f[3] == "08" && u16::from_str_radix(remote_port, 16).unwrap() == port
        })
        .count()
}

/// Issue 12 example: the upstream closes idle connections after 0.2 s; four concurrent GETs
/// with `Connection: close`, then nothing. Before, the four pooled connections stayed in
/// CLOSE_WAIT (and counted as open upstream connections) until the pool was next used.
#[test]
fn idle_pooled_connections_close_when_the_upstream_closes_them() {
    let (up, accepted, closed) = closing_upstream(Some(Duration::from_millis(200)));
    let p = proxy(&[up], "");
    let target = addr(&p);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                exchange(
                    target,
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    for c in clients {
        let answer = c.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Every upstream connection (up to four: the pool may reuse one) has been closed by the
    // upstream.
    for _ in 0..accepted.load(Ordering::SeqCst) {
        closed.recv().unwrap();
    }
    wait_metric(
        &p,
        "tcp_open_connections{listener=\"t\",direction=\"outbound\",peer=\"dst\"}",
        0.0,
    );
    assert_eq!(
        close_wait_to(up.port()),
        0,
        "no proxy socket left in CLOSE_WAIT"
    );
}

/// The upstream closes each connection right after answering (while still saying
/// keep-alive). The next request, of any method, with a body or not, must not be sent on
/// that closed connection: a POST with a body cannot be resent, so it got a 502 before.
#[test]
fn a_closed_pooled_connection_is_never_handed_to_a_request() {
    let (up, _, closed) = closing_upstream(None);
    let p = proxy(&[up], "");
    let target = addr(&p);
    let requests: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"PUT /item HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"DELETE /item HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let mut c = TcpStream::connect(target).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for req in requests {
        c.write_all(req).unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{}: {status}",
            String::from_utf8_lossy(&req[..12])
        );
        // The rest of the head and the 2-byte body.
        let mut line = String::new();
        while {
            line.clear();
            r.read_line(&mut line).unwrap();
            line != "\r\n"
        } {}
        let mut body = [0u8; 2];
        r.read_exact(&mut body).unwrap();
        // The upstream has closed the connection this answer came on.
        closed.recv().unwrap();
    }
}

/// Waits until one exchange is counted as ended by its client's reset: `response_total` with
/// `error="client"` and the client's close with errno `ECONNRESET`.
fn wait_client_reset_counted(p: &sidewire::server::Server) {
    wait_metric(
        p,
        "response_total{listener=\"t\",classification=\"failure\",error=\"client\"}",
        1.0,
    );
    wait_metric(
        p,
        "tcp_close_total{listener=\"t\",peer=\"src\",errno=\"ECONNRESET\"}",
        1.0,
    );
}

/// Review: an HTTP/1 request waiting for its turn under `max_connections_per_endpoint` was
/// still sent upstream after its client had reset (HTTP/2 streams were cancelled). Client A
/// holds the one connection; B's request queues behind it and B resets; once A is answered,
/// the connection's next request is C's, and B's is counted as a client error, never sent.
#[test]
fn a_queued_request_whose_client_reset_is_not_sent() {
    let (seen_tx, seen) = mpsc::channel::<String>();
    let (release, held) = mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    let seen_tx = Arc::new(std::sync::Mutex::new(seen_tx));
    // Reports each request line; answers each once the test releases it.
    let (up, _h) = upstream(move |c: TcpStream| {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        while let Some(head) = read_request(&mut r) {
            let line = head.lines().next().unwrap_or_default().to_string();
            let _ = seen_tx.lock().unwrap().send(line);
            if held.lock().unwrap().recv().is_err() {
                return;
            }
            if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let p = one_worker(
        up,
        "[detect]\nserver_first = \"off\"\n",
        "max_connections_per_endpoint = 1\n",
    );
    let get = |path: &str| {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        c
    };
    let wait = Duration::from_secs(10);
    let mut a = get("/a");
    assert_eq!(seen.recv_timeout(wait).unwrap(), "GET /a HTTP/1.1");
    let b = get("/b");
    // B's request has been read (the connection table counts it) and waits for A's
    // connection.
    let me = b.local_addr().unwrap().to_string();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let (_, body) = admin_get(&p, "/connections");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let requests = v["connections"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["client"] == me.as_str()))
            .map(|r| r["requests"].clone());
        if requests == Some(serde_json::json!(1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never queued: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    reset(b);
    // B's close counts its reset (review: errno "").
    wait_client_reset_counted(&p);
    release.send(()).unwrap();
    let mut resp = String::new();
    a.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let mut c = get("/c");
    assert_eq!(
        seen.recv_timeout(wait).unwrap(),
        "GET /c HTTP/1.1",
        "B's request was sent"
    );
    release.send(()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// An upstream that reads one request per connection and never answers: it reports
/// `"request"` when the request has arrived and `"closed"` when the proxy closes the
/// connection (EOF or reset). Answers `"late"` (a 200) only if the test sends on the returned
/// channel, for the half-close case.
fn silent_upstream() -> (SocketAddr, mpsc::Receiver<&'static str>, mpsc::Sender<()>) {
    pausing_upstream(
        Vec::new(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate",
    )
}

/// A proxy in front of [`silent_upstream`] (response timeout 60 s) and a client whose GET the
/// upstream has received and holds.
fn held_request() -> (
    sidewire::server::Server,
    TcpStream,
    mpsc::Receiver<&'static str>,
    mpsc::Sender<()>,
) {
    let (up, seen, answer) = silent_upstream();
    let p = one_worker(
        up,
        "[detect]\nserver_first = \"off\"\n[http1]\nresponse_timeout_ms = 60000\n",
        "",
    );
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(seen.recv_timeout(Duration::from_secs(10)), Ok("request"));
    (p, c, seen, answer)
}

/// Review item (session 15's list): an HTTP/1 client that reset while its response was
/// awaited left the upstream connection, its request in flight, open until the upstream
/// answered or `response_timeout_ms` passed (a long poll the client gave up on held the
/// connection, and its endpoint slot, for the whole poll). It is now closed at once.
#[test]
fn a_client_that_resets_while_its_response_is_awaited_closes_the_upstream_connection() {
    let (p, c, seen, _answer) = held_request();
    let wait = Duration::from_secs(10);
    reset(c);
    assert_eq!(
        seen.recv_timeout(wait),
        Ok("closed"),
        "the upstream connection was held after its client reset"
    );
    wait_client_reset_counted(&p);
    wait_metric(
        &p,
        "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"failure\"}",
        1.0,
    );
}

/// The counterpart: a client that half-closes (FIN) after its request is still answered,
/// however long the upstream takes (HTTP/1 allows the half-close; only a reset cuts). The
/// upstream answers once the client's FIN is out; whether the proxy's watch has seen it by
/// then or not, the answer must arrive whole.
#[test]
fn a_client_that_half_closes_while_its_response_is_awaited_still_gets_it() {
    let (p, mut c, seen, answer) = held_request();
    let wait = Duration::from_secs(10);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // The proxy's watch is armed 10 ms into the wait; the FIN it sees must not cut anything.
    // Either way the exchange must finish normally, so this is not synchronisation.
    assert_eq!(
        seen.recv_timeout(Duration::from_millis(50)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the upstream connection was closed after the client's FIN"
    );
    answer.send(()).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("late"), "{resp}");
    wait_metric(
        &p,
        "response_total{listener=\"t\",route=\"default\",protocol=\"http/1\",status_code=\"200\",classification=\"success\"}",
        1.0,
    );
}

/// An upstream that answers a request with `first` (a response head and the start of its
/// body; nothing, for [`silent_upstream`]) and then pauses: it reports `"request"` when the
/// request has arrived, `"paused"` once a non-empty `first` is written and `"closed"` when the
/// proxy closes the connection (EOF or reset). It sends `last` (the rest of the response) and
/// half-closes only if the test sends on the returned channel.
fn pausing_upstream(
    first: Vec<u8>,
    last: &'static [u8],
) -> (SocketAddr, mpsc::Receiver<&'static str>, mpsc::Sender<()>) {
    let (seen_tx, seen) = mpsc::channel::<&'static str>();
    let (go, go_rx) = mpsc::channel::<()>();
    let seen_tx = Arc::new(std::sync::Mutex::new(seen_tx));
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let (up, _h) = upstream(move |c: TcpStream| {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        if read_request(&mut r).is_none() {
            return;
        }
        let tx = seen_tx.lock().unwrap().clone();
        let _ = tx.send("request");
        if !first.is_empty() {
            if w.write_all(&first).is_err() {
                return;
            }
            let _ = tx.send("paused");
        }
        let watcher = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            let _ = tx.send("closed");
        });
        if go_rx.lock().unwrap().recv().is_ok() {
            let _ = w.write_all(last);
            let _ = w.shutdown(std::net::Shutdown::Write);
        }
        let _ = watcher.join();
    });
    (up, seen, go)
}

/// Reads from `c` until `marker` has come (a response's first body bytes); the bytes read.
fn read_until(c: &mut TcpStream, marker: &[u8]) -> Vec<u8> {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 65536];
    while !got.windows(marker.len()).any(|w| w == marker) {
        let n = c.read(&mut b).unwrap();
        assert!(
            n > 0,
            "closed before {marker:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    got
}

/// Review item (session 20's list): an HTTP/1 client that reset while the upstream paused
/// in the middle of the response *body* left the upstream connection open until the
/// upstream's next bytes or `stream_idle_timeout_ms` (5 minutes by default): the client was
/// watched only while the response head was awaited. Now the body's waits watch it too, on
/// every way a response body moves: copied (a short `Content-Length` body), spliced (a long
/// one), chunked, and de-chunked for an HTTP/1.0 client.
#[test]
fn a_client_that_resets_while_the_response_body_pauses_closes_the_upstream_connection() {
    let mut spliced = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n0123456789".to_vec();
    spliced.resize(spliced.len() + 40_000, b'x');
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n";
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("copied", STALLS_MID_BODY.to_vec(), "1.1"),
        ("spliced", spliced, "1.1"),
        ("chunked", chunked.to_vec(), "1.1"),
        ("de-chunked for HTTP/1.0", chunked.to_vec(), "1.0"),
    ];
    for (what, first, version) in cases {
        let (up, seen, _go) = pausing_upstream(first, b"");
        let p = one_worker(
            up,
            "[detect]\nserver_first = \"off\"\n[http1]\nstream_idle_timeout_ms = 60000\n",
            "",
        );
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        write!(c, "GET /stream HTTP/{version}\r\nHost: a\r\n\r\n").unwrap();
        let wait = Duration::from_secs(10);
        assert_eq!(seen.recv_timeout(wait), Ok("request"), "{what}");
        assert_eq!(seen.recv_timeout(wait), Ok("paused"), "{what}");
        read_until(&mut c, b"0123456789");
        reset(c);
        assert_eq!(
            seen.recv_timeout(wait),
            Ok("closed"),
            "{what}: the upstream connection was held after its client reset mid-body"
        );
        wait_client_reset_counted(&p);
    }
}

/// The counterpart: a client that half-closes (FIN) while the response body pauses still
/// gets the rest of it (HTTP/1 allows the half-close; only a reset cuts).
#[test]
fn a_client_that_half_closes_while_the_response_body_pauses_still_gets_it() {
    let (up, seen, go) = pausing_upstream(STALLS_MID_BODY.to_vec(), &[b'y'; 90]);
    let p = one_worker(up, "[detect]\nserver_first = \"off\"\n", "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let wait = Duration::from_secs(10);
    assert_eq!(seen.recv_timeout(wait), Ok("request"));
    assert_eq!(seen.recv_timeout(wait), Ok("paused"));
    let mut got = read_until(&mut c, b"0123456789");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // The proxy's watch is armed 10 ms into the wait; the FIN it sees must not cut anything.
    // Either way the exchange must finish normally, so this is not synchronisation.
    assert_eq!(
        seen.recv_timeout(Duration::from_millis(50)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the upstream connection was closed after the client's FIN"
    );
    go.send(()).unwrap();
    c.read_to_end(&mut got).unwrap();
    assert!(
        got.ends_with(&[b'y'; 90]),
        "{}",
        String::from_utf8_lossy(&got)
    );
    wait_metric(
        &p,
        "response_total{listener=\"t\",route=\"default\",protocol=\"http/1\",status_code=\"200\",classification=\"success\"}",
        1.0,
    );
}
