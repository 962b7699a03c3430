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
