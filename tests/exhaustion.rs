//! Resource exhaustion (issue 16 §4): the `sidewire` binary under `prlimit --nofile=256`
//! meets 1,000 connection attempts: no crash, no busy loop, established streams keep flowing,
//! and service resumes once descriptors free up.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The proxy binary under a descriptor limit ([`common::bin::Proc`] run by `prlimit`).
struct Proc(common::bin::Proc);

impl Proc {
    fn start(nofile: u32, config: &str) -> Proc {
        let config = config.replacen(
            "[runtime]\n",
            &format!("[runtime]\ndriver = \"{}\"\n", common::driver()),
            1,
        );
        // Soft and hard limit both: the proxy raises its soft limit to the hard one at start.
        let limit = format!("--nofile={nofile}:{nofile}");
        Proc(common::bin::Proc::start_under(
            &["prlimit", &limit],
            &config,
            &[],
            "info",
        ))
    }

    /// Waits (up to 20 s) for a log line containing `needle`.
    fn expect_line(&self, needle: &str) -> String {
        self.0.until(|l| l.contains(needle)).0
    }

    /// User + system CPU time so far (`/proc/PID/stat` fields 14 and 15), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.child.id())).unwrap();
        // The command name may hold spaces: fields are counted after its closing ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Open descriptors of the proxy.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        self.0.child.try_wait().unwrap().is_none()
    }
}

/// The `addr=` field of a log line.
fn addr_field(line: &str) -> SocketAddr {
    let a = line.split("addr=").nth(1).unwrap();
    let a = a.split_whitespace().next().unwrap();
    a.parse().unwrap_or_else(|_| panic!("bad addr in {line}"))
}

/// An echo round trip of `msg` on `c`.
fn round_trip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    c.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

fn metrics(admin: SocketAddr) -> String {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn out_of_descriptors_backs_off_keeps_streams_and_recovers() {
    let (up, _h) = common::upstream(common::echo);
    let mut p = Proc::start(
        256,
        &format!(
            "[runtime]\nworkers = 1\npin_cores = false\nshutdown_grace_ms = 1000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\nprotocol = \"opaque\"\n"
        ),
    );
    let proxy = addr_field(&p.expect_line("listening listener=t"));
    let admin = addr_field(&p.expect_line("admin listening"));

    // One stream established before the flood.
    let mut first = TcpStream::connect(proxy).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    round_trip(&mut first, b"before").unwrap();

    // 1,000 connection attempts that stay open: about 120 fit in 256 descriptors (two each),
    // the rest wait in the listen backlog (4,096) while accept fails with EMFILE.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = TcpStream::connect_timeout(&proxy, Duration::from_secs(2)) {
            flood.push(c);
        }
    }
    assert!(
        flood.len() >= 900,
        "the backlog holds them: {}",
        flood.len()
    );
    p.expect_line("accept failed");
    let fds = p.open_fds();
    assert!(fds >= 250, "the proxy is at its limit: {fds} descriptors");

    // Out of descriptors, the worker backs off: measured over 2 s, it uses next to no CPU.
    let ticks0 = p.cpu_ticks();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = p.cpu_ticks() - ticks0;
    let secs = t0.elapsed().as_secs_f64();
    // The clock tick is 100 Hz on Linux (`getconf CLK_TCK`).
    let cpu = ticks as f64 / 100.0 / secs;
    println!("proxy CPU while out of descriptors: {:.1}% of a core ({ticks} ticks in {secs:.2}s), {fds} fds", cpu * 100.0);
    assert!(cpu < 0.05, "busy loop: {:.1}% of a core", cpu * 100.0);

    // The established stream keeps flowing, and the proxy is alive.
    round_trip(&mut first, b"during").unwrap();
    assert!(p.alive(), "no crash");

    // Descriptors free up: the flood leaves, and new connections are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = TcpStream::connect(proxy).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            round_trip(&mut c, b"after")
        });
        if ok.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume: {ok:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    round_trip(&mut first, b"still").unwrap();
    let m = metrics(admin);
    let emfile = common::metric(
        &m,
        "tcp_accept_errors_total{listener=\"t\",errno=\"EMFILE\"}",
    );
    assert!(emfile >= Some(1.0), "accept errors counted: {emfile:?}");
    println!("tcp_accept_errors_total{{errno=\"EMFILE\"}} = {emfile:?}");
    assert!(p.alive());
}

/// The proxy's resident set (`/proc/PID/status` VmRSS), in KiB.
fn rss_kib(p: &Proc) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{}/status", p.0.child.id())).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Bytes each slow stream sends each way before it stalls.
const SLOW_CHUNK: usize = 1024;

/// An HTTP/2 upstream that answers every stream with a head and [`SLOW_CHUNK`] body bytes,
/// then holds it open forever without reading the request body; counts the streams.
fn holding_h2_upstream(streams: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> SocketAddr {
    let l = common::listen_any();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                s.set_nodelay(true).unwrap();
                let streams = streams.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::Builder::new()
                        .max_concurrent_streams(100_000)
                        .handshake::<_, bytes::Bytes>(s)
                        .await
                    else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::spawn(async move {
                            let resp = http::Response::new(());
                            let Ok(mut body) = respond.send_response(resp, false) else {
                                return;
                            };
                            let _ =
                                body.send_data(bytes::Bytes::from(vec![b'u'; SLOW_CHUNK]), false);
                            // Hold the request body unread and the response open.
                            let _keep = (req, body);
                            std::future::pending::<()>().await;
                        });
                    }
                });
            }
        })
    });
    a
}

#[test]
fn slow_h2_streams_on_100_connections_stay_within_the_memory_bound() {
    const CONNS: usize = 100;
    const STREAMS: usize = 256; // http2.max_concurrent_streams (the default)
    let upstream_streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let up = holding_h2_upstream(upstream_streams.clone());
    let p = Proc::start(
        16_384,
        &format!(
            "[runtime]\nworkers = 1\npin_cores = false\nshutdown_grace_ms = 1000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[http2]\nmax_concurrent_streams = {STREAMS}\nresponse_timeout_ms = 60000\n\
             [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\nupstream_protocol = \"http2\"\n"
        ),
    );
    let proxy = addr_field(&p.expect_line("listening listener=t"));
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = rt();
    let (before, during, streams_seen, took) = runtime.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            let s = tokio::net::TcpStream::connect(proxy).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (send, conn) = h2::client::handshake(s).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            conns.push(send);
        }
        // The baseline: the proxy with 100 client connections and no streams.
        let before = rss_kib(&p);
        let t0 = Instant::now();
        let mut held = Vec::new();
        for send in &conns {
            for _ in 0..STREAMS {
                let send = send.clone();
                let heads = heads.clone();
                held.push(tokio::spawn(async move {
                    let mut send = send.ready().await.unwrap();
                    let req = http::Request::post("http://slow/").body(()).unwrap();
                    let (resp, mut body) = send.send_request(req, false).unwrap();
                    body.send_data(bytes::Bytes::from(vec![b'c'; SLOW_CHUNK]), false)
                        .unwrap();
                    let resp = resp.await.unwrap();
                    heads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Hold both directions open, reading nothing more.
                    let _keep = (body, resp);
                    std::future::pending::<()>().await;
                }));
            }
        }
        let total = CONNS * STREAMS;
        let deadline = Instant::now() + Duration::from_secs(60);
        while heads.load(std::sync::atomic::Ordering::Relaxed) < total {
            assert!(
                Instant::now() < deadline,
                "{} of {total} streams answered",
                heads.load(std::sync::atomic::Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        let during = rss_kib(&p);
        let seen = upstream_streams.load(std::sync::atomic::Ordering::Relaxed);
        for h in held {
            h.abort();
        }
        (before, during, seen, took)
    });
    let total = (CONNS * STREAMS) as u64;
    let per_stream = (during.saturating_sub(before)) * 1024 / total;
    println!(
        "{total} slow HTTP/2 streams on {CONNS} connections (open in {took:?}, upstream saw {streams_seen}): \
         proxy RSS {before} KiB before, {during} KiB with all open: +{} KiB, {per_stream} B/stream",
        during.saturating_sub(before)
    );
    // The README's bound: 16 KiB per open stream (measured: ~11.6 KiB for the h2 state of
    // both legs, the stream's task, and its first KiB of body each way in flight).
    assert!(
        during.saturating_sub(before) < total * 16,
        "RSS grew by {} KiB for {total} streams",
        during - before
    );
}
