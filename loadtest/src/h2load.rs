//! HTTP/2 (h2c, prior knowledge) pieces: a backend answering every stream with a fixed body,
//! and a load generator with many concurrent streams per connection. Both run a tokio
//! current-thread runtime on their own thread: the harness is not the system under test.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

use crate::load::{record_corrected, Request, Sample, Statuses};

/// Starts an h2c server on `listen`; every request gets 200 with `body_bytes` of body.
pub fn spawn_server(listen: SocketAddr, body_bytes: usize) -> Result<SocketAddr> {
    spawn(listen, body_bytes, Default::default())
}

/// [`spawn_server`], counting the connections it accepts in `accepted`.
fn spawn(
    listen: SocketAddr,
    body_bytes: usize,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Result<SocketAddr> {
    let std_l = crate::backends::listen_deep(listen)?;
    std_l.set_nonblocking(true)?;
    let addr = std_l.local_addr()?;
    let body = Bytes::from(vec![b'z'; body_bytes]);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let l = tokio::net::TcpListener::from_std(std_l).expect("listener");
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = s.set_nodelay(true);
                let body = body.clone();
                tokio::task::spawn_local(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let body = body.clone();
                        tokio::task::spawn_local(async move {
                            // Drain the request body, then answer.
                            let mut rb = req.into_body();
                            while let Some(Ok(chunk)) = rb.data().await {
                                let _ = rb.flow_control().release_capacity(chunk.len());
                            }
                            let resp = http::Response::builder()
                                .status(200)
                                .body(())
                                .expect("static response");
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let _ = send.send_data(body, true);
                            }
                        });
                    }
                });
            }
        });
    });
    Ok(addr)
}

/// h2 load settings.
#[derive(Debug, Clone)]
pub struct H2Load {
    /// Target addresses, in order of preference.
    pub target: Vec<SocketAddr>,
    /// What every stream sends (connection-specific headers are dropped: HTTP/2 forbids
    /// them; a `Host` header becomes the `:authority`).
    pub request: Request,
    /// Connections.
    pub connections: usize,
    /// Concurrent streams per connection.
    pub streams: usize,
    /// Requests per second in all; `None` = closed loop.
    pub rate: Option<f64>,
    /// How long to measure, after `warmup`.
    pub duration: Duration,
    /// How long to send at the same rate before measuring (see
    /// [`HttpLoad::warmup`](crate::load::HttpLoad::warmup)).
    pub warmup: Duration,
}

/// Runs h2 load on the calling thread and returns the merged sample.
pub fn run(cfg: &H2Load) -> Result<Sample> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    anyhow::ensure!(!cfg.target.is_empty(), "no address to send to");
    let mut sample = Sample::empty();
    sample.status = Some(Statuses::default());
    let total = Rc::new(RefCell::new(sample));
    let template = Rc::new(h2_request(&cfg.request)?);
    let body = Bytes::from(cfg.request.body.clone());
    let t2 = total.clone();
    let cfg = cfg.clone();
    local.block_on(&rt, async move {
        let workers = cfg.connections.max(1) * cfg.streams.max(1);
        let start = Instant::now() + Duration::from_millis(20);
        let window = crate::load::Window::new(start, cfg.warmup, cfg.duration);
        let mut tasks = Vec::new();
        for c in 0..cfg.connections.max(1) {
            // One shared client connection per `c`; a worker that finds it gone (GOAWAY after
            // a server's max-requests, reset) reconnects it, as real h2 clients do.
            let conn: Rc<Slot> = Rc::new(tokio::sync::Mutex::new((0, None)));
            for k in 0..cfg.streams.max(1) {
                let conn = conn.clone();
                let total = t2.clone();
                let w = c * cfg.streams.max(1) + k;
                let mut pacer = crate::load::Pacer::new(start, cfg.rate, w, workers);
                let target: Rc<[SocketAddr]> = cfg.target.clone().into();
                let template = template.clone();
                let body = body.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let mut prev_done = start;
                    loop {
                        let Some(intended) = pacer.wait(window.end).await else {
                            break;
                        };
                        let from = crate::load::measure_from(intended, prev_done, Instant::now());
                        let recorded = window.records(intended);
                        let mut result = Err(anyhow::anyhow!("not sent"));
                        for _attempt in 0..2 {
                            let (used, sender) = match sender(&conn, &target).await {
                                Ok(s) => s,
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            };
                            result = one(sender, &template, &body).await;
                            if result.is_ok() {
                                break;
                            }
                            forget(&conn, used).await; // retry once on a fresh connection
                        }
                        prev_done = Instant::now();
                        if !recorded {
                            continue;
                        }
                        let mut t = total.borrow_mut();
                        match result {
                            Ok((status, n)) => {
                                record_corrected(&mut t.hist, from, prev_done);
                                if Statuses::ok(status) {
                                    t.ops += 1;
                                } else {
                                    t.errors += 1;
                                }
                                t.bytes += n as u64;
                                t.status.get_or_insert_with(Default::default).count(status);
                            }
                            Err(_) => {
                                t.errors += 1;
                                t.status.get_or_insert_with(Default::default).transport += 1;
                            }
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        t2.borrow_mut().elapsed = window.elapsed();
    });
    let s = total.borrow().clone();
    Ok(s)
}

/// One client connection shared by its stream workers. The lock is held while connecting,
/// so the workers that find no connection wait for one connect instead of each opening
/// their own (at the start of a run, and after the connection is lost).
/// The `u64` numbers the connections a slot has had, so that a worker whose request failed
/// drops only the connection it used.
type Slot = tokio::sync::Mutex<(u64, Option<h2::client::SendRequest<Bytes>>)>;

/// The connection's number and sender, connecting (h2c prior knowledge) if there is none.
async fn sender(
    conn: &Slot,
    target: &[SocketAddr],
) -> Result<(u64, h2::client::SendRequest<Bytes>)> {
    let mut slot = conn.lock().await;
    if let Some(s) = slot.1.as_ref() {
        return Ok((slot.0, s.clone()));
    }
    let s = tokio::net::TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let (send, driver) = h2::client::handshake(s).await?;
    tokio::task::spawn_local(async move {
        let _ = driver.await;
    });
    slot.0 += 1;
    slot.1 = Some(send.clone());
    Ok((slot.0, send))
}

/// Drops the slot's connection number `used` after a request failed on it, unless another
/// worker has already replaced it (then that newer connection is kept).
async fn forget(conn: &Slot, used: u64) {
    let mut slot = conn.lock().await;
    if slot.0 == used {
        slot.1 = None;
    }
}

/// The request head every stream sends (cloned per stream).
fn h2_request(r: &Request) -> Result<http::Request<()>> {
    let authority = r
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or(r.authority.as_str(), |(_, v)| v.as_str());
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(r.method.as_bytes())?)
        .uri(format!("http://{authority}{}", r.path));
    for (n, v) in &r.headers {
        if ![
            "host",
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "te",
        ]
        .iter()
        .any(|h| n.eq_ignore_ascii_case(h))
        {
            b = b.header(n.as_str(), v.as_str());
        }
    }
    if !r.body.is_empty() {
        b = b.header("content-length", r.body.len());
    }
    Ok(b.body(())?)
}

fn clone_request(t: &http::Request<()>) -> http::Request<()> {
    let mut r = http::Request::new(());
    *r.method_mut() = t.method().clone();
    *r.uri_mut() = t.uri().clone();
    *r.headers_mut() = t.headers().clone();
    r
}

/// One stream: sends the request (and body); returns the status and the response body length.
async fn one(
    sender: h2::client::SendRequest<Bytes>,
    template: &http::Request<()>,
    req_body: &Bytes,
) -> Result<(u16, usize)> {
    let mut sender = sender.ready().await?;
    let (resp, mut stream) = sender.send_request(clone_request(template), req_body.is_empty())?;
    if !req_body.is_empty() {
        stream.send_data(req_body.clone(), true)?;
    }
    let resp = resp.await?;
    let status = resp.status().as_u16();
    // RFC 9110 §15: 100 to 599 (the `http` crate takes up to 999).
    anyhow::ensure!(status <= 599, "status code {status}");
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        n += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok((status, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn h2_load_against_the_h2c_backend() {
        let addr = spawn_server("127.0.0.1:0".parse().unwrap(), 512).unwrap();
        let s = run(&H2Load {
            target: vec![addr],
            request: crate::load::HttpLoad::get(addr),
            connections: 2,
            streams: 8,
            rate: Some(2000.0),
            duration: Duration::from_millis(500),
            warmup: Duration::ZERO,
        })
        .unwrap();
        assert_eq!(s.errors, 0);
        assert!(s.ops >= 800, "ops {}", s.ops);
        assert_eq!(s.bytes, s.ops * 512);
    }

    #[test]
    fn the_stream_workers_of_a_connection_share_one_connect() {
        // 16 workers per connection all start with no connection: one connects, the others
        // wait for it (before, each opened its own and all but the last were thrown away).
        let accepted = std::sync::Arc::default();
        let addr = spawn("127.0.0.1:0".parse().unwrap(), 64, Arc::clone(&accepted)).unwrap();
        let s = run(&H2Load {
            target: vec![addr],
            request: crate::load::HttpLoad::get(addr),
            connections: 2,
            streams: 16,
            rate: Some(4000.0),
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
        })
        .unwrap();
        assert_eq!(s.errors, 0);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
        // 1,200 requests were due after the warm-up; the 400 before it are not counted.
        assert!((1180..=1200).contains(&s.ops), "ops {}", s.ops);
        assert_eq!(s.hist.len(), s.ops);
    }
}
