//! sidewire's load-test harness. For now: the TCP pieces the core-proxy benchmark needs
//! (`scripts/bench-tcp.sh`): an echo backend and a connection-churn client. The full suite
//! (open-loop HTTP, h2, reports) grows here.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "sidewire load-test harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo backend: echoes every connection until EOF, then closes.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        /// Accepting threads (each serves its connections inline).
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// Server-first backend: sends a banner on accept (like SMTP/MySQL), then echoes.
    Greeter {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18025")]
        listen: SocketAddr,
        /// Accepting threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Server-first connect latency: time from connect() to the server's first byte.
    FirstByte {
        /// Target (the proxy, or the greeter itself for the baseline).
        #[arg(long)]
        target: SocketAddr,
        /// Connections to measure (one at a time).
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Connection churn: each worker loops connect → write N bytes → read them back → close.
    Churn {
        /// Target (the proxy or the backend itself for the baseline).
        #[arg(long)]
        target: SocketAddr,
        /// Concurrent client threads.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Payload bytes per connection.
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Echo { listen, threads } => echo(listen, threads),
        Cmd::Greeter { listen, threads } => greeter(listen, threads),
        Cmd::FirstByte { target, count } => first_byte(target, count),
        Cmd::Churn {
            target,
            concurrency,
            duration,
            bytes,
        } => churn(
            target,
            concurrency,
            Duration::from_secs_f64(duration),
            bytes,
        ),
    }
}

fn greeter(listen: SocketAddr, threads: usize) -> Result<()> {
    let l = Arc::new(TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?);
    eprintln!("greeter listening on {}", l.local_addr()?);
    let hs: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                for c in l.incoming() {
                    let Ok(mut c) = c else { continue };
                    let _ = c.set_nodelay(true);
                    if c.write_all(b"220 loadtest greeter ready\r\n").is_err() {
                        continue;
                    }
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    Ok(())
}

fn first_byte(target: SocketAddr, count: usize) -> Result<()> {
    let mut lat = Vec::with_capacity(count);
    let mut one = [0u8; 1];
    for _ in 0..count.max(1) {
        let t0 = Instant::now();
        let mut c = TcpStream::connect(target).with_context(|| format!("connect {target}"))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        if c.read(&mut one)? == 0 {
            bail!("{target} closed without a greeting");
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "first_byte_us n={} p50={:.0} p90={:.0} p99={:.0} max={:.0}",
        lat.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );
    Ok(())
}

fn echo(listen: SocketAddr, threads: usize) -> Result<()> {
    let l = Arc::new(TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?);
    eprintln!("echo listening on {}", l.local_addr()?);
    let hs: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                for c in l.incoming() {
                    let Ok(mut c) = c else { continue };
                    let _ = c.set_nodelay(true);
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    Ok(())
}

fn churn(target: SocketAddr, concurrency: usize, duration: Duration, bytes: usize) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
            std::thread::spawn(move || {
                let payload = vec![b'x'; bytes];
                let mut back = vec![0u8; bytes];
                while !stop.load(Ordering::Relaxed) {
                    match one_conn(target, &payload, &mut back) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let (n, e) = (done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    println!(
        "connections={n} errors={e} seconds={secs:.3} rate={:.0}",
        n as f64 / secs
    );
    if n == 0 {
        bail!("no connection completed against {target}");
    }
    Ok(())
}

fn one_conn(target: SocketAddr, payload: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    let mut c = TcpStream::connect(target)?;
    c.set_nodelay(true)?;
    c.write_all(payload)?;
    c.read_exact(back)?;
    c.shutdown(Shutdown::Write)?;
    // Wait for the server's close so every connection is fully torn down through the proxy.
    let mut one = [0u8; 1];
    let _ = c.read(&mut one)?;
    Ok(())
}
