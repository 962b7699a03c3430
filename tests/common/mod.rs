//! Helpers shared by the integration tests: an in-process proxy on port 0, simple upstream
//! servers on real loopback sockets, and a `/metrics` scraper.
#![allow(dead_code)]

pub mod bin;
pub mod dns;
pub mod h1;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sidewire::config::Config;
use sidewire::server::Server;

/// Starts the proxy with one listener `t` on port 0 in front of `upstream`, plus `extra` TOML
/// appended to the listener table (e.g. `connect_timeout_ms = 200`).
pub fn proxy(upstream: &[SocketAddr], extra: &str) -> Server {
    proxy_with(upstream, "", extra)
}

/// A proxy with one worker (pools and endpoint bounds are per worker: clients must meet the
/// same one) and one listener `t` in front of `up`: `top` TOML (e.g. a `[detect]` table)
/// before the listener, `extra` in the listener table.
pub fn one_worker(up: SocketAddr, top: &str, extra: &str) -> Server {
    start_toml(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{top}\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n{extra}"
    ))
}

/// Like [`proxy`], with `top` TOML (e.g. a `[detect]` table) before the listener.
pub fn proxy_with(upstream: &[SocketAddr], top: &str, extra: &str) -> Server {
    let ups: Vec<String> = upstream.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "[runtime]\nworkers = 2\npin_cores = false\nshutdown_grace_ms = 5000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{top}\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [{}]\n{extra}\n",
        ups.join(", ")
    );
    start_toml(&text)
}

/// The I/O driver the proxies of this test binary run on: `epoll` for the `*_epoll` test
/// targets (Cargo.toml builds each data-path test file a second time under that name), else
/// `io_uring` (named, not `auto`, so a machine without io_uring fails instead of silently
/// testing epoll twice).
pub fn driver() -> &'static str {
    if env!("CARGO_CRATE_NAME").ends_with("_epoll") {
        "epoll"
    } else {
        "io_uring"
    }
}

/// Starts a proxy from config text that has a `[runtime]` table, on this binary's [`driver`].
pub fn start_toml(text: &str) -> Server {
    let text = text.replacen(
        "[runtime]\n",
        &format!("[runtime]\ndriver = \"{}\"\n", driver()),
        1,
    );
    assert!(
        text.contains("driver = "),
        "test config needs a [runtime] table"
    );
    let cfg = Config::parse(&text, "test.toml").expect("test config is valid");
    let s = Server::start(cfg).expect("proxy starts");
    let (_, m) = admin_get(&s, "/metrics");
    let other = if driver() == "epoll" {
        "io_uring"
    } else {
        "epoll"
    };
    assert!(
        metric(
            &m,
            &format!("sidewire_runtime_driver{{driver=\"{}\"}}", driver())
        ) > Some(0.0)
            && metric(
                &m,
                &format!("sidewire_runtime_driver{{driver=\"{other}\"}}")
            ) == Some(0.0),
        "the proxy runs on {}",
        driver()
    );
    s
}

/// The listener `t`'s address.
pub fn addr(s: &Server) -> SocketAddr {
    s.listener_addr("t").expect("listener t")
}

/// A loopback address nothing listens on, for the rest of the test process: a socket bound
/// there and never listening holds the port (a connect gets ECONNREFUSED), so no port-0
/// listener opened later can take it over (a bound-then-released port could be handed out
/// again, and a test's "dead" endpoint would then answer).
pub fn dead_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let a = s.local_addr().unwrap().as_socket().unwrap();
    // Held for the process's life on purpose (one descriptor per call).
    std::mem::forget(s);
    a
}

/// A loopback listener on port 0 whose connections have a receive buffer of `bytes` (the
/// kernel doubles it): a peer that stops reading is soon acknowledged no more.
pub fn listen_small(bytes: usize) -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(bytes).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(64).unwrap();
    s.into()
}

/// A loopback listener on port 0 with a deep backlog (std's is 128: too shallow for a burst
/// of 1,000 connects, whose dropped SYNs would turn into upstream connect timeouts).
pub fn listen_any() -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(4096).unwrap();
    s.into()
}

/// An upstream that runs `f` on each accepted connection in its own thread.
pub fn upstream<F>(f: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) + Send + Sync + Clone + 'static,
{
    let l = listen_any();
    let a = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { break };
            let f = f.clone();
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || f(c))
                .unwrap();
        }
    });
    (a, h)
}

/// A response head promising 100 body bytes, and only 10 of them, for [`answers_and_holds`].
pub const STALLS_MID_BODY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";

/// An early answer to an upload, for [`answers_after_head`].
pub const TOO_LARGE: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large";

/// An upstream that reads a request head, answers with `response` at once without reading
/// any body, and closes (with body bytes unread the kernel resets the connection), as servers
/// that reject an upload do.
pub fn answers_after_head(response: &'static [u8]) -> SocketAddr {
    answering_upstream(response, None)
}

/// Like [`answers_after_head`], but the upstream then neither reads, sends nor closes until
/// the test waits on the returned barrier too.
pub fn answers_and_holds(
    response: &'static [u8],
) -> (SocketAddr, std::sync::Arc<std::sync::Barrier>) {
    let hold = std::sync::Arc::new(std::sync::Barrier::new(2));
    (answering_upstream(response, Some(hold.clone())), hold)
}

/// Reads from `c` until a request head's end (`CRLF CRLF`) has been read (body bytes read with
/// it are dropped). `false` when the peer closed or the read failed first.
pub fn read_past_head(c: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

fn answering_upstream(
    response: &'static [u8],
    hold: Option<std::sync::Arc<std::sync::Barrier>>,
) -> SocketAddr {
    upstream(move |mut c: TcpStream| {
        if !read_past_head(&mut c) {
            return;
        }
        let _ = c.write_all(response);
        if let Some(b) = &hold {
            b.wait();
        }
    })
    .0
}

/// An HTTP/1.1 upstream that answers each request with a head promising a 1 GB body and then
/// writes 64 KiB pieces of it until a write fails (the proxy closed the connection).
pub fn endless_body_upstream() -> SocketAddr {
    upstream(|mut c: TcpStream| {
        if !read_past_head(&mut c) {
            return;
        }
        if c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
            .is_err()
        {
            return;
        }
        let piece = vec![b'x'; 64 << 10];
        while c.write_all(&piece).is_ok() {}
    })
    .0
}

/// Waits until listener `t` of `p` has closed `failures` upstream connections as `failure`
/// (`tcp_close_total{peer="dst"}`), and checks none closed as `success`.
pub fn assert_upstream_closes_failed(p: &Server, failures: f64) {
    wait_metric(
        p,
        "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"failure\"}",
        failures,
    );
    let (_, m) = admin_get(p, "/metrics");
    let ok = metric(
        &m,
        "tcp_close_total{listener=\"t\",peer=\"dst\",classification=\"success\"}",
    );
    assert_eq!(ok.unwrap_or(0.0), 0.0, "{m}");
}

/// A listening socket whose accept queue is full, so further SYNs are dropped: a connect to
/// its address stays in SYN-SENT until it times out (a blackholed endpoint). Keep the socket
/// and the filler connections alive for as long as the endpoint must stay blackholed.
pub fn blackholed() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    (addr, s, fillers)
}

/// Resets `c` (`SO_LINGER` 0, then close): the peer's next write fails.
pub fn reset(c: TcpStream) {
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

/// A 413 that keeps the connection open, for [`answers_early_and_keeps_the_connection`].
pub const EARLY_413: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";

/// A 202 that keeps the connection open, for [`answers_early_and_keeps_the_connection`]: an
/// answer before the body that, unlike an error, does not stop the body (RFC 9112 §9.5 asks
/// a client to stop only for an error).
pub const EARLY_202: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-length: 8\r\n\r\naccepted";

/// An upstream that answers every request with `response` (in one write; [`EARLY_413`] is a
/// 413 with no `connection: close`) as soon as it has its head, then neither reads the body
/// nor closes for the rest of the test. Returns its address, its connection count, and a
/// receiver told of each answer once it is written.
pub fn answers_early_and_keeps_the_connection(
    response: &'static [u8],
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::mpsc::Receiver<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    let conns = Arc::new(AtomicUsize::new(0));
    let (answered, answers) = mpsc::channel::<()>();
    let answered = Arc::new(Mutex::new(answered));
    let seen = conns.clone();
    let (a, _) = upstream(move |mut c: TcpStream| {
        seen.fetch_add(1, Ordering::SeqCst);
        if !read_past_head(&mut c) {
            return;
        }
        let _ = c.write_all(response);
        let _ = answered.lock().unwrap().send(());
        // Holds the connection, body unread, for the rest of the test.
        loop {
            std::thread::park();
        }
    });
    (a, conns, answers)
}

/// An upstream that reads a request body slowly but steadily (a 16 KiB receive buffer,
/// 32 KiB every 10 ms, about 3 MB/s), then answers 200 with the byte count it read.
pub fn slow_reading_upstream() -> SocketAddr {
    let l = listen_small(16 << 10);
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut piece = vec![0u8; 32 << 10];
                let (head_len, cl) = loop {
                    let mut h = [httparse::EMPTY_HEADER; 32];
                    let mut r = httparse::Request::new(&mut h);
                    if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                        break (n, h1::framing(r.headers).0.unwrap_or(0));
                    }
                    match Read::read(&mut c, &mut piece) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&piece[..n]),
                    }
                };
                let mut n = buf.len() - head_len;
                while n < cl {
                    // Pacing is what the test is about, not synchronisation.
                    std::thread::sleep(Duration::from_millis(10));
                    match Read::read(&mut c, &mut piece) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{n}",
                    n.to_string().len()
                );
            });
        }
    });
    a
}

/// Echoes everything until EOF, then half-closes.
pub fn echo(mut c: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
}

/// `GET path` on the admin server; returns (status, body).
pub fn admin_get(s: &Server, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(s.admin_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Splits `name{a="x",b="y"}` into the name and its label pairs (values are plain: label
/// values sidewire renders contain no quotes or commas).
fn parse_series(series: &str) -> (&str, Vec<(&str, &str)>) {
    match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap_or(rest);
            let labels = body
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            (name, labels)
        }
    }
}

/// The value of `series` (a name with labels, as rendered): the sum over every sample of that
/// name whose labels include all the given ones, like PromQL's `sum(name{...})`, so a query
/// need not name labels it does not care about (`direction`, `reason`, ...). `None` if no
/// sample matches.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (want_name, want) = parse_series(series);
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((s, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = parse_series(s);
        if name == want_name && want.iter().all(|w| labels.contains(w)) {
            if let Ok(v) = v.parse::<f64>() {
                sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
    }
    sum
}

/// Scrapes until `series` equals `want` (metrics are updated by the worker after the client
/// may already have seen the effect), failing after 10 s.
pub fn wait_metric(s: &Server, series: &str, want: f64) {
    wait_metric_within(s, series, want, Duration::from_secs(10));
}

/// [`wait_metric`] with a deadline of `within` (for outcomes that take seconds to come, such
/// as a receive buffer filling at a paced rate).
pub fn wait_metric_within(s: &Server, series: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, text) = admin_get(s, "/metrics");
        let got = metric(&text, series);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series}: want {want}, last saw {got:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so both ends can hash what they move.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Sends `total` generated bytes, then half-closes; returns the hash of what was sent.
pub fn send_all(mut w: TcpStream, seed: u64, total: u64) -> u128 {
    let mut g = Gen::new(seed);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).expect("send");
        left -= n as u64;
    }
    w.shutdown(Shutdown::Write).expect("half-close");
    h.digest128()
}

/// Reads to EOF; returns (bytes, hash).
pub fn recv_all(mut r: TcpStream) -> (u64, u128) {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("recv");
        if n == 0 {
            return (total, h.digest128());
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// A number no other call in this process returns (for temporary file names).
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
