//! sidewire's load-test harness: built-in backends, load generators (open-loop HTTP/1 with
//! coordinated-omission correction, closed-loop max throughput, TCP bulk, connection churn,
//! server-first connect latency) and a suite runner that compares the no-proxy baseline,
//! sidewire and installed peers (HAProxy, nginx) in one run. Every load command takes a URL
//! (or `host:port`), counts HTTP responses by status class, can write the suite's JSON +
//! HTML report and HdrHistogram `.hgrm` files, and exits non-zero past an error threshold.

mod backends;
mod endpoint;
mod h2load;
mod load;
mod report;
mod ringfloor;
mod suite;
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use endpoint::Scheme;
use report::{Meta, Params, Report};

#[derive(Parser)]
#[command(version, about = "sidewire load-test harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Report and exit-status flags shared by the load commands.
#[derive(Args, Debug, Clone)]
struct Output {
    /// Write the report under DIR, as `suite` does: `latest.{json,html}` and a dated copy
    /// (`report-<date>.*`), with an HdrHistogram percentile distribution (`.hgrm`) beside each.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Also write the latency percentile distribution (`.hgrm` text) to FILE (`-`: stdout,
    /// and then the summary lines go to stderr, so stdout holds only the `.hgrm` text).
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Exit with status 1 when more than PERCENT of the operations failed (HTTP: 4xx, 5xx and
    /// requests without a response; TCP: failed connections or transfers).
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = percent)]
    max_error_rate: f64,
}

impl Output {
    /// Prints one summary line: to stdout, or to stderr when stdout carries the `.hgrm` text
    /// (`--hgrm -`).
    /// A closed or full stdout (`| head`, `> /dev/full`) loses the line, not the run.
    fn say(&self, line: std::fmt::Arguments) {
        use std::io::Write;
        if self.hgrm.as_deref() == Some(Path::new("-")) {
            let _ = writeln!(std::io::stderr(), "{line}");
        } else {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
}

/// What each HTTP request sends.
#[derive(Args, Debug, Clone)]
struct RequestArgs {
    /// Request method [default: GET, or POST with a body].
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// Request header, `Name: value` (repeatable; a `Host` header replaces the URL's).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Send the contents of FILE as every request's body.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario (or those named with --scenario) against the baseline, sidewire and
    /// installed peers; print a table, write JSON + HTML + .hgrm under target/loadtest/.
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
        /// Run only these scenarios (repeatable or comma-separated) [default: all].
        #[arg(long = "scenario", value_name = "NAME", value_delimiter = ',')]
        scenarios: Vec<String>,
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
        #[arg(long, visible_alias = "report", default_value = "target/loadtest")]
        out: PathBuf,
        /// Exit with status 1 when any result has more than PERCENT failed operations
        /// [default: only warn].
        #[arg(long, value_name = "PERCENT")]
        max_error_rate: Option<f64>,
    },
    /// HTTP/1.1 load against a URL (`http://host:port/path`, or `host:port` for `/`).
    Http {
        /// Target URL.
        #[arg(long, visible_alias = "url", value_name = "URL")]
        target: String,
        /// Connections.
        #[arg(long, default_value_t = 8, value_parser = at_least_one)]
        connections: usize,
        /// Requests per second in all (open loop); omit for closed loop (max throughput).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of load before measuring: requests due in it are sent at the same rate but
        /// not recorded, so connection setup is not in the figures.
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        /// One connection per request instead of keep-alive.
        #[arg(long)]
        close: bool,
        /// Request body of N generated bytes (POST unless --method says otherwise).
        #[arg(long, default_value_t = 0, conflicts_with = "body_file")]
        request_bytes: usize,
        #[command(flatten)]
        request: RequestArgs,
        #[command(flatten)]
        output: Output,
    },
    /// HTTP/2 (h2c prior knowledge) load against a URL: many concurrent streams per connection.
    H2 {
        /// Target URL.
        #[arg(long, visible_alias = "url", value_name = "URL")]
        target: String,
        /// Connections.
        #[arg(long, default_value_t = 2, value_parser = at_least_one)]
        connections: usize,
        /// Concurrent streams per connection.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        streams: usize,
        /// Requests per second in all (open loop); omit for closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of load before measuring: requests due in it are sent at the same rate but
        /// not recorded, so connection setup is not in the figures.
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        #[command(flatten)]
        request: RequestArgs,
        #[command(flatten)]
        output: Output,
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
        /// Target (`host:port` or `tcp://host:port`), in front of a sink.
        #[arg(long, visible_alias = "url", value_name = "URL")]
        target: String,
        /// Bytes to send.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        #[command(flatten)]
        output: Output,
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
    /// Reference: the least an io_uring proxy does per opaque TCP connection (accept,
    /// connect, recv/send both ways, shutdown, close; nothing else), to measure the kernel's
    /// share of a proxy's CPU per connection (`scripts/bench-ring-floor.sh`). Not a proxy to
    /// deploy: no timeouts, limits, metrics or short-write handling.
    RingFloor {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// The one upstream (IPv4).
        #[arg(long)]
        upstream: SocketAddr,
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
        /// Target (`host:port` or `tcp://host:port`), in front of a greeter.
        #[arg(long, visible_alias = "url", value_name = "URL")]
        target: String,
        /// Connections.
        #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
        count: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Connection churn: connect → N bytes → echo → close, in a loop per worker.
    Churn {
        /// Target (`host:port` or `tcp://host:port`), in front of an echo backend.
        #[arg(long, visible_alias = "url", value_name = "URL")]
        target: String,
        /// Concurrent client threads.
        #[arg(long, default_value_t = 4, value_parser = at_least_one)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Payload bytes per connection.
        #[arg(long, default_value_t = 64)]
        bytes: usize,
        #[command(flatten)]
        output: Output,
    },
}

fn print_latency(out: &Output, name: &str, s: &load::Sample) {
    out.say(format_args!(
        "{name} ops={} errors={} rate={:.0}/s p50={}us p99={}us p99.9={}us max={}us",
        s.ops,
        s.errors,
        s.rate(),
        s.hist.value_at_quantile(0.5),
        s.hist.value_at_quantile(0.99),
        s.hist.value_at_quantile(0.999),
        s.hist.max()
    ));
}

/// Announces a started backend and keeps the process alive for it.
fn serve_forever(what: &str, addr: SocketAddr) -> Result<()> {
    eprintln!("{what} listening on {addr}");
    loop {
        std::thread::park();
    }
}

/// The longest `--duration` or `--warmup` taken: a year, in seconds (a run's end must be
/// a time the clock can hold; review: `--warmup 1.8e19` overflowed it and panicked).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `--flag`'s value `v` in seconds as a duration: a number from 0 (when `zero_ok`) to
/// [`MAX_SECONDS`]; otherwise an error naming the flag, the value and what is allowed.
fn seconds(flag: &str, v: f64, zero_ok: bool) -> Result<Duration> {
    let what = if zero_ok {
        "zero or a positive"
    } else {
        "a positive"
    };
    anyhow::ensure!(
        v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)),
        "--{flag} must be {what} number of seconds, not {v}"
    );
    anyhow::ensure!(
        v <= MAX_SECONDS,
        "--{flag} {v} is too long: at most {MAX_SECONDS} seconds (a year)"
    );
    Ok(Duration::from_secs_f64(v))
}

/// A count flag (`--connections`, `--streams`, `--concurrency`, `--count`): 1 or more.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--max-error-rate`: a percentage from 0 to 100.
fn percent(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        Ok(_) => Err("must be a percentage from 0 to 100".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn check_duration(d: f64) -> Result<Duration> {
    seconds("duration", d, false)
}

fn check_warmup(w: f64) -> Result<Duration> {
    seconds("warmup", w, true)
}

fn check_rate(rate: Option<f64>) -> Result<()> {
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of requests per second");
    }
    Ok(())
}

/// Builds the request of `http`/`h2` and the parameters that describe it.
fn build_request(
    ep: &endpoint::Endpoint,
    r: &RequestArgs,
    generated_body: usize,
) -> Result<(load::Request, Params)> {
    let body = match &r.body_file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => vec![b'y'; generated_body],
    };
    let method = match &r.method {
        Some(m) => m.clone(),
        None if body.is_empty() => "GET".into(),
        None => "POST".into(),
    };
    load::Request::check_method(&method)?;
    let headers = r
        .headers
        .iter()
        .map(|h| load::Request::parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let params = Params {
        url: Some(ep.url.clone()),
        addrs: ep.addrs.iter().map(ToString::to_string).collect(),
        method: Some(method.clone()),
        headers: headers.iter().map(|(n, v)| format!("{n}: {v}")).collect(),
        body_file: r.body_file.as_ref().map(|p| p.display().to_string()),
        body_bytes: Some(body.len() as u64),
        ..Params::default()
    };
    let req = load::Request {
        method,
        authority: ep.authority.clone(),
        path: ep.path.clone(),
        headers,
        body,
    };
    Ok((req, params))
}

/// One finished load command: the report, the `.hgrm`, and the error threshold.
struct Done<'a> {
    command: &'a str,
    ep: &'a endpoint::Endpoint,
    unit: &'a str,
    bulk: bool,
    sample: &'a load::Sample,
    params: Params,
}

fn finish(d: Done, out: &Output) -> Result<()> {
    if let Some(st) = &d.sample.status {
        out.say(format_args!("status {}", st.line()));
    }
    let rec = suite::record(
        d.command,
        &d.ep.authority,
        d.unit,
        d.bulk,
        d.sample,
        None,
        None,
        Params {
            max_error_rate_pct: Some(out.max_error_rate),
            ..d.params
        },
    );
    if let Some(path) = &out.hgrm {
        let text = rec.hgrm.as_deref().unwrap_or_default();
        if path == Path::new("-") {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing the .hgrm text to stdout")?;
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(dir) = &out.report {
        let mut meta = Meta::here(d.command);
        meta.pinning = "not pinned".into();
        let report = Report {
            meta,
            records: vec![rec],
        };
        let stem = report
            .write_latest_and_dated(dir)
            .with_context(|| format!("writing the report under {}", dir.display()))?;
        eprintln!(
            "loadtest: wrote {} and {}",
            dir.join(format!("{{latest,{stem}}}.{{json,html}}"))
                .display(),
            report.records[0].hgrm_file("latest")
        );
    }
    let s = d.sample;
    if s.ops + s.errors == 0 {
        bail!("no operation was attempted against {}", d.ep.url);
    }
    if s.error_pct() > out.max_error_rate {
        bail!(
            "{:.2}% of {} operations against {} failed (over --max-error-rate {}%)",
            s.error_pct(),
            s.ops + s.errors,
            d.ep.url,
            out.max_error_rate
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Suite {
            quick,
            targets,
            scenarios,
            duration,
            proxy_cpu,
            load_cpu,
            sidewire,
            out,
            max_error_rate,
        } => {
            suite::check_scenarios(&scenarios)?;
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
                None if !targets.contains(&targets::Kind::Sidewire) => suite::default_sidewire(),
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
                scenarios,
            };
            let report = suite::run(&opts)?;
            let over: Vec<String> = report
                .records
                .iter()
                .filter(|r| {
                    let pct = r.errors as f64 * 100.0 / (r.ops + r.errors).max(1) as f64;
                    max_error_rate.is_some_and(|m| pct > m)
                })
                .map(|r| format!("{}/{}", r.scenario, r.target))
                .collect();
            if !over.is_empty() {
                bail!(
                    "over --max-error-rate {}%: {}",
                    max_error_rate.unwrap_or_default(),
                    over.join(", ")
                );
            }
            if report.records.iter().any(|r| r.errors > 0) {
                eprintln!("loadtest: some scenarios had errors (see the errors column)");
            }
        }
        Cmd::Http {
            target,
            connections,
            rate,
            duration,
            warmup,
            close,
            request_bytes,
            request,
            output,
        } => {
            let duration = check_duration(duration)?;
            let warmup = check_warmup(warmup)?;
            check_rate(rate)?;
            let ep = endpoint::endpoint(&target, Scheme::Http)?;
            let (req, params) = build_request(&ep, &request, request_bytes)?;
            let s = load::http1(&load::HttpLoad {
                target: ep.addrs.clone(),
                request: req,
                connections,
                rate,
                duration,
                warmup,
                keepalive: !close,
            })?;
            print_latency(&output, "http1", &s);
            let params = Params {
                connections: Some(connections),
                mode: Some(if rate.is_some() { "open" } else { "closed" }.into()),
                rate,
                duration_s: Some(duration.as_secs_f64()),
                warmup_s: Some(warmup.as_secs_f64()),
                keepalive: Some(!close),
                ..params
            };
            finish(
                Done {
                    command: "http",
                    ep: &ep,
                    unit: "req/s",
                    bulk: false,
                    sample: &s,
                    params,
                },
                &output,
            )?;
        }
        Cmd::H2 {
            target,
            connections,
            streams,
            rate,
            duration,
            warmup,
            request,
            output,
        } => {
            let duration = check_duration(duration)?;
            let warmup = check_warmup(warmup)?;
            check_rate(rate)?;
            let ep = endpoint::endpoint(&target, Scheme::Http)?;
            let (req, params) = build_request(&ep, &request, 0)?;
            let s = h2load::run(&h2load::H2Load {
                target: ep.addrs.clone(),
                request: req,
                connections,
                streams,
                rate,
                duration,
                warmup,
            })?;
            print_latency(&output, "h2", &s);
            let params = Params {
                connections: Some(connections),
                streams: Some(streams),
                mode: Some(if rate.is_some() { "open" } else { "closed" }.into()),
                rate,
                duration_s: Some(duration.as_secs_f64()),
                warmup_s: Some(warmup.as_secs_f64()),
                ..params
            };
            finish(
                Done {
                    command: "h2",
                    ep: &ep,
                    unit: "req/s",
                    bulk: false,
                    sample: &s,
                    params,
                },
                &output,
            )?;
        }
        Cmd::H2Server { listen, body_bytes } => {
            serve_forever("h2c", h2load::spawn_server(listen, body_bytes)?)?
        }
        Cmd::Bulk {
            target,
            bytes,
            output,
        } => {
            let ep = endpoint::endpoint(&target, Scheme::Tcp)?;
            let s = load::bulk(&ep.addrs, bytes)?;
            output.say(format_args!(
                "bulk bytes={} seconds={:.3} gbit_per_s={:.2}",
                s.bytes,
                s.elapsed.as_secs_f64(),
                s.bytes as f64 * 8.0 / s.elapsed.as_secs_f64() / 1e9
            ));
            let params = Params {
                url: Some(ep.url.clone()),
                addrs: ep.addrs.iter().map(ToString::to_string).collect(),
                connections: Some(1),
                bytes: Some(bytes),
                ..Params::default()
            };
            finish(
                Done {
                    command: "bulk",
                    ep: &ep,
                    unit: "Gbit/s",
                    bulk: true,
                    sample: &s,
                    params,
                },
                &output,
            )?;
        }
        Cmd::HttpServer { listen, body_bytes } => serve_forever(
            "http",
            backends::spawn(backends::Kind::Http { body_bytes }, listen, 4)?,
        )?,
        Cmd::Echo { listen, threads } => serve_forever(
            "echo",
            backends::spawn(backends::Kind::Echo, listen, threads)?,
        )?,
        Cmd::RingFloor { listen, upstream } => ringfloor::run(listen, upstream)?,
        Cmd::Sink { listen } => {
            serve_forever("sink", backends::spawn(backends::Kind::Sink, listen, 2)?)?
        }
        Cmd::Greeter { listen, threads } => serve_forever(
            "greeter",
            backends::spawn(backends::Kind::Greeter, listen, threads)?,
        )?,
        Cmd::FirstByte {
            target,
            count,
            output,
        } => {
            let ep = endpoint::endpoint(&target, Scheme::Tcp)?;
            let s = load::first_byte(&ep.addrs, count)?;
            if s.ops == 0 {
                bail!("no greeting received from {}", ep.url);
            }
            output.say(format_args!(
                "first_byte_us n={} p50={} p90={} p99={} max={}",
                s.ops,
                s.hist.value_at_quantile(0.5),
                s.hist.value_at_quantile(0.9),
                s.hist.value_at_quantile(0.99),
                s.hist.max()
            ));
            let params = Params {
                url: Some(ep.url.clone()),
                addrs: ep.addrs.iter().map(ToString::to_string).collect(),
                count: Some(count),
                ..Params::default()
            };
            finish(
                Done {
                    command: "first-byte",
                    ep: &ep,
                    unit: "conn/s",
                    bulk: false,
                    sample: &s,
                    params,
                },
                &output,
            )?;
        }
        Cmd::Churn {
            target,
            concurrency,
            duration,
            bytes,
            output,
        } => {
            let duration = check_duration(duration)?;
            let ep = endpoint::endpoint(&target, Scheme::Tcp)?;
            let s = load::churn(&ep.addrs, concurrency, duration, bytes)?;
            // Format parsed by scripts/bench-tcp.sh.
            output.say(format_args!(
                "connections={} errors={} seconds={:.3} rate={:.0}",
                s.ops,
                s.errors,
                s.elapsed.as_secs_f64(),
                s.rate()
            ));
            if s.ops == 0 {
                bail!("no connection completed against {}", ep.url);
            }
            let params = Params {
                url: Some(ep.url.clone()),
                addrs: ep.addrs.iter().map(ToString::to_string).collect(),
                connections: Some(concurrency),
                duration_s: Some(duration.as_secs_f64()),
                bytes: Some(bytes as u64),
                ..Params::default()
            };
            finish(
                Done {
                    command: "churn",
                    ep: &ep,
                    unit: "conn/s",
                    bulk: false,
                    sample: &s,
                    params,
                },
                &output,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_with_the_flag_named() {
        assert_eq!(check_warmup(0.0).unwrap(), Duration::ZERO);
        assert_eq!(check_duration(1.5).unwrap(), Duration::from_millis(1500));
        assert!(check_duration(0.0).is_err());
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = check_warmup(bad).unwrap_err().to_string();
            assert!(e.starts_with("--warmup must be zero or a positive"), "{e}");
        }
        // Far past any run (review: 1.8e19 panicked adding it to the clock).
        for long in [1.8e19, 1e20, MAX_SECONDS + 1.0] {
            let e = check_warmup(long).unwrap_err().to_string();
            assert!(e.contains("too long"), "{e}");
            assert!(check_duration(long).is_err());
        }
        assert!(check_warmup(MAX_SECONDS).is_ok());
    }
}
