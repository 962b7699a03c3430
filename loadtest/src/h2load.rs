//! HTTP/2 (h2c, prior knowledge) pieces: a backend answering every stream with a fixed body,
//! and a load generator with many concurrent streams per connection. Both run a tokio
//! current-thread runtime on their own thread: the harness is not the system under test.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

use crate::load::{histogram, record_corrected, Sample};

/// Starts an h2c server on `listen`; every request gets 200 with `body_bytes` of body.
pub fn spawn_server(listen: SocketAddr, body_bytes: usize) -> Result<SocketAddr> {
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
    /// Target address.
    pub target: SocketAddr,
    /// Connections.
    pub connections: usize,
    /// Concurrent streams per connection.
    pub streams: usize,
    /// Requests per second in all; `None` = closed loop.
    pub rate: Option<f64>,
    /// How long to run.
    pub duration: Duration,
}

/// Runs h2 load on the calling thread and returns the merged sample.
pub fn run(cfg: &H2Load) -> Result<Sample> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let total = Rc::new(RefCell::new(Sample {
        ops: 0,
        errors: 0,
        bytes: 0,
        elapsed: cfg.duration,
        hist: histogram(),
    }));
    let t2 = total.clone();
    let cfg = cfg.clone();
    local.block_on(&rt, async move {
        let workers = cfg.connections.max(1) * cfg.streams.max(1);
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + cfg.duration;
        let mut tasks = Vec::new();
        for c in 0..cfg.connections.max(1) {
            // One shared client connection per `c`; a worker that finds it gone (GOAWAY after
            // a server's max-requests, reset) reconnects it, as real h2 clients do.
            let conn: Rc<RefCell<Option<h2::client::SendRequest<Bytes>>>> =
                Rc::new(RefCell::new(None));
            for k in 0..cfg.streams.max(1) {
                let conn = conn.clone();
                let total = t2.clone();
                let w = c * cfg.streams.max(1) + k;
                let mut pacer = crate::load::Pacer::new(start, cfg.rate, w, workers);
                let target = cfg.target;
                tasks.push(tokio::task::spawn_local(async move {
                    let mut prev_done = start;
                    loop {
                        let intended = pacer.wait().await;
                        if intended >= end {
                            break;
                        }
                        let from = crate::load::measure_from(intended, prev_done, Instant::now());
                        let mut result = Err(anyhow::anyhow!("not sent"));
                        for _attempt in 0..2 {
                            let sender = match sender(&conn, target).await {
                                Ok(s) => s,
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            };
                            result = one(sender, target).await;
                            if result.is_ok() {
                                break;
                            }
                            conn.borrow_mut().take(); // retry once on a fresh connection
                        }
                        prev_done = Instant::now();
                        match result {
                            Ok(n) => {
                                let mut t = total.borrow_mut();
                                record_corrected(&mut t.hist, from, prev_done);
                                t.ops += 1;
                                t.bytes += n as u64;
                            }
                            Err(_) => total.borrow_mut().errors += 1,
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let s = total.borrow().clone();
    Ok(s)
}

/// The connection's sender, connecting (h2c prior knowledge) if there is none.
async fn sender(
    conn: &RefCell<Option<h2::client::SendRequest<Bytes>>>,
    target: SocketAddr,
) -> Result<h2::client::SendRequest<Bytes>> {
    if let Some(s) = conn.borrow().as_ref() {
        return Ok(s.clone());
    }
    let s = tokio::net::TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let (send, driver) = h2::client::handshake(s).await?;
    tokio::task::spawn_local(async move {
        let _ = driver.await;
    });
    *conn.borrow_mut() = Some(send.clone());
    Ok(send)
}

async fn one(sender: h2::client::SendRequest<Bytes>, target: SocketAddr) -> Result<usize> {
    let mut sender = sender.ready().await?;
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{target}/load"))
        .body(())?;
    let (resp, _) = sender.send_request(req, true)?;
    let resp = resp.await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        n += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_load_against_the_h2c_backend() {
        let addr = spawn_server("127.0.0.1:0".parse().unwrap(), 512).unwrap();
        let s = run(&H2Load {
            target: addr,
            connections: 2,
            streams: 8,
            rate: Some(2000.0),
            duration: Duration::from_millis(500),
        })
        .unwrap();
        assert_eq!(s.errors, 0);
        assert!(s.ops >= 800, "ops {}", s.ops);
        assert_eq!(s.bytes, s.ops * 512);
    }
}
