//! sidewire's load-test harness: built-in backends, load generators (open-loop HTTP/1 with
//! coordinated-omission correction, closed-loop max throughput, TCP bulk, connection churn,
//! server-first connect latency) and a suite runner that compares the no-proxy baseline,
//! sidewire and installed peers (HAProxy, nginx) in one run.

mod backends;
mod h2load;
mod load;
mod report;
mod suite;
mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "sidewire load-test harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario against the baseline, sidewire and installed peers; print a table,
    /// write JSON + HTML under target/loadtest/.
    Suite {
        /// Short runs (under 2 minutes in all).
        #[arg(long)]
        quick: bool,
        /// Comma-separated targets.
        #[arg(
            long,
            default_value = "baseline,sidewire,haproxy,nginx",
            value_delimiter = ','
        )]
        targets: Vec<String>,
        /// Seconds per timed scenario (default: 2 quick, 15 full).
        #[arg(long)]
        duration: Option<f64>,
        /// CPU for the proxy.
        #[arg(long, default_value_t = 1)]
        proxy_cpu: usize,
        /// CPU for load and backends.
        #[arg(long, default_value_t = 0)]
        load_cpu: usize,
        /// sidewire binary (default: build and use target/release/sidewire).
        #[arg(long)]
        sidewire: Option<PathBuf>,
        /// Report directory.
        #[arg(long, default_value = "target/loadtest")]
        out: PathBuf,
    },
    /// HTTP/1.1 load against one address.
    Http {
        /// Target address.
        #[arg(long)]
        target: SocketAddr,
        /// Connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests per second in all (open loop); omit for closed loop (max throughput).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// One connection per request instead of keep-alive.
        #[arg(long)]
        close: bool,
        /// Request body bytes (POST when > 0).
        #[arg(long, default_value_t = 0)]
        request_bytes: usize,
    },
    /// HTTP/2 (h2c prior knowledge) load: many concurrent streams per connection.
    H2 {
        /// Target address.
        #[arg(long)]
        target: SocketAddr,
        /// Connections.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Concurrent streams per connection.
        #[arg(long, default_value_t = 32)]
        streams: usize,
        /// Requests per second in all (open loop); omit for closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Backend: h2c server with a fixed response body.
    H2Server {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18083")]
        listen: SocketAddr,
        /// Response body bytes.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// Push bytes through a target to a sink; report Gbit/s.
    Bulk {
        /// Target address (in front of a sink).
        #[arg(long)]
        target: SocketAddr,
        /// Bytes to send.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
    /// Backend: HTTP/1.1 keep-alive server with a fixed response body.
    HttpServer {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        /// Response body bytes.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// Backend: echo every connection until EOF.
    Echo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        /// Accepting threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// Backend: read and discard until EOF.
    Sink {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18082")]
        listen: SocketAddr,
    },
    /// Backend: server-first greeter (banner on accept, like SMTP/MySQL), then echo.
    Greeter {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:18025")]
        listen: SocketAddr,
        /// Accepting threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Server-first connect latency: connect → server's first byte, one at a time.
    FirstByte {
        /// Target address (in front of a greeter).
        #[arg(long)]
        target: SocketAddr,
        /// Connections.
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Connection churn: connect → N bytes → echo → close, in a loop per worker.
    Churn {
        /// Target address (in front of an echo backend).
        #[arg(long)]
        target: SocketAddr,
        /// Concurrent client threads.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Payload bytes per connection.
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
}

fn print_latency(name: &str, s: &load::Sample) {
    println!(
        "{name} ops={} errors={} rate={:.0}/s p50={}us p99={}us p99.9={}us max={}us",
        s.ops,
        s.errors,
        s.rate(),
        s.hist.value_at_quantile(0.5),
        s.hist.value_at_quantile(0.99),
        s.hist.value_at_quantile(0.999),
        s.hist.max()
    );
}

/// Announces a started backend and keeps the process alive for it.
fn serve_forever(what: &str, addr: SocketAddr) -> Result<()> {
    eprintln!("{what} listening on {addr}");
    loop {
        std::thread::park();
    }
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Suite {
            quick,
            targets,
            duration,
            proxy_cpu,
            load_cpu,
            sidewire,
            out,
        } => {
            let targets = targets
                .iter()
                .map(|t| {
                    targets::Kind::parse(t).ok_or_else(|| {
                        anyhow::anyhow!("unknown target {t:?} (baseline, sidewire, haproxy, nginx)")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let sidewire = match sidewire {
                Some(p) => p,
                None => {
                    let ok = std::process::Command::new("cargo")
                        .args(["build", "--release", "--quiet", "-p", "sidewire"])
                        .current_dir(env!("CARGO_MANIFEST_DIR"))
                        .status()?
                        .success();
                    if !ok {
                        bail!("cargo build --release -p sidewire failed");
                    }
                    suite::default_sidewire()
                }
            };
            let opts = suite::Options {
                quick,
                targets,
                duration,
                proxy_cpu,
                load_cpu,
                sidewire,
                out_dir: out,
                progress: true,
                pin: true,
            };
            let report = suite::run(&opts)?;
            if report.records.iter().any(|r| r.errors > 0) {
                eprintln!("loadtest: some scenarios had errors (see the errors column)");
            }
        }
        Cmd::Http {
            target,
            connections,
            rate,
            duration,
            close,
            request_bytes,
        } => {
            let s = load::http1(&load::HttpLoad {
                target,
                connections,
                rate,
                duration: Duration::from_secs_f64(duration),
                keepalive: !close,
                request_bytes,
            })?;
            print_latency("http1", &s);
        }
        Cmd::H2 {
            target,
            connections,
            streams,
            rate,
            duration,
        } => {
            let s = h2load::run(&h2load::H2Load {
                target,
                connections,
                streams,
                rate,
                duration: Duration::from_secs_f64(duration),
            })?;
            print_latency("h2", &s);
        }
        Cmd::H2Server { listen, body_bytes } => {
            serve_forever("h2c", h2load::spawn_server(listen, body_bytes)?)?
        }
        Cmd::Bulk { target, bytes } => {
            let s = load::bulk(target, bytes)?;
            println!(
                "bulk bytes={} seconds={:.3} gbit_per_s={:.2}",
                s.bytes,
                s.elapsed.as_secs_f64(),
                s.bytes as f64 * 8.0 / s.elapsed.as_secs_f64() / 1e9
            );
        }
        Cmd::HttpServer { listen, body_bytes } => serve_forever(
            "http",
            backends::spawn(backends::Kind::Http { body_bytes }, listen, 4)?,
        )?,
        Cmd::Echo { listen, threads } => serve_forever(
            "echo",
            backends::spawn(backends::Kind::Echo, listen, threads)?,
        )?,
        Cmd::Sink { listen } => {
            serve_forever("sink", backends::spawn(backends::Kind::Sink, listen, 2)?)?
        }
        Cmd::Greeter { listen, threads } => serve_forever(
            "greeter",
            backends::spawn(backends::Kind::Greeter, listen, threads)?,
        )?,
        Cmd::FirstByte { target, count } => {
            let s = load::first_byte(target, count)?;
            if s.ops == 0 {
                bail!("no greeting received from {target}");
            }
            println!(
                "first_byte_us n={} p50={} p90={} p99={} max={}",
                s.ops,
                s.hist.value_at_quantile(0.5),
                s.hist.value_at_quantile(0.9),
                s.hist.value_at_quantile(0.99),
                s.hist.max()
            );
        }
        Cmd::Churn {
            target,
            concurrency,
            duration,
            bytes,
        } => {
            let s = load::churn(
                target,
                concurrency,
                Duration::from_secs_f64(duration),
                bytes,
            )?;
            // Format parsed by scripts/bench-tcp.sh.
            println!(
                "connections={} errors={} seconds={:.3} rate={:.0}",
                s.ops,
                s.errors,
                s.elapsed.as_secs_f64(),
                s.rate()
            );
            if s.ops == 0 {
                bail!("no connection completed against {target}");
            }
        }
    }
    Ok(())
}
