//! The suite runner: start the built-in backends and every target, run each scenario against
//! each target, and report. Load and backends run on one CPU, the proxy on the other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backends::{self, Kind as Backend};
use crate::h2load::{self, H2Load};
use crate::load::{self, HttpLoad, Sample};
use crate::report::{Meta, Params, Record, Report};
use crate::targets::{self, Kind};

/// Suite settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short runs (the whole suite well under 2 minutes).
    pub quick: bool,
    /// Targets to run (unavailable ones are skipped with a note).
    pub targets: Vec<Kind>,
    /// Seconds per timed scenario (overrides the mode's default).
    pub duration: Option<f64>,
    /// CPU for the proxy; load and backends get `load_cpu`.
    pub proxy_cpu: usize,
    /// CPU for load and backends.
    pub load_cpu: usize,
    /// The sidewire binary.
    pub sidewire: PathBuf,
    /// Where reports go.
    pub out_dir: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
    /// Pin the load threads to `load_cpu` (off in tests that share a process).
    pub pin: bool,
    /// Scenarios to run, by name (empty: all); check them with [`check_scenarios`].
    pub scenarios: Vec<String>,
}

/// The scenario names, in run order.
pub const SCENARIOS: [&str; 8] = [
    "http1-keepalive",
    "http1-max",
    "http1-conn-per-req",
    "h2-streams",
    "h2-to-h1",
    "tcp-bulk",
    "tcp-churn",
    "server-first",
];

/// Checks `names` are scenarios; the error lists the valid ones.
pub fn check_scenarios(names: &[String]) -> Result<()> {
    let unknown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !SCENARIOS.contains(n))
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "unknown scenario {} (valid: {})",
            unknown.join(", "),
            SCENARIOS.join(", ")
        );
    }
    Ok(())
}

/// A scenario: a name and how to run it against a route address.
struct Scenario {
    name: &'static str,
    route: &'static str,
    run: Box<dyn Fn(SocketAddr) -> Result<Sample>>,
    /// The load parameters, for the report (the URL is filled in per target).
    params: Params,
    /// Bulk reports Gbit/s and CPU-s per GiB; the rest ops/s and CPU-µs per op.
    bulk: bool,
    unit: &'static str,
}

fn scenarios(quick: bool, secs: Option<f64>) -> Vec<Scenario> {
    let d = Duration::from_secs_f64(secs.unwrap_or(if quick { 2.0 } else { 15.0 }));
    let (rate, conns) = if quick { (2000.0, 8) } else { (10_000.0, 32) };
    let bulk_bytes: u64 = if quick { 1 << 30 } else { 8 << 30 };
    let churn_secs = d;
    let greets = if quick { 300 } else { 3000 };
    let streams = if quick { 16 } else { 64 };
    let open = |connections: usize, rate: f64, keepalive: bool| Params {
        method: Some("GET".into()),
        connections: Some(connections),
        mode: Some("open".into()),
        rate: Some(rate),
        duration_s: Some(d.as_secs_f64()),
        keepalive: Some(keepalive),
        ..Params::default()
    };
    let h2_scenario = |name: &'static str, route: &'static str| Scenario {
        name,
        route,
        unit: "req/s",
        bulk: false,
        params: Params {
            streams: Some(streams),
            ..open(2, rate, true)
        },
        run: Box::new(move |t| {
            h2load::run(&H2Load {
                target: vec![t],
                request: HttpLoad::get(t),
                connections: 2,
                streams,
                rate: Some(rate),
                duration: d,
                warmup: Duration::ZERO,
            })
        }),
    };
    vec![
        Scenario {
            name: "http1-keepalive",
            route: "http",
            unit: "req/s",
            bulk: false,
            params: open(conns, rate, true),
            run: Box::new(move |t| {
                load::http1(&HttpLoad {
                    target: vec![t],
                    request: HttpLoad::get(t),
                    connections: conns,
                    rate: Some(rate),
                    duration: d,
                    warmup: Duration::ZERO,
                    keepalive: true,
                })
            }),
        },
        Scenario {
            name: "http1-max",
            route: "http",
            unit: "req/s",
            bulk: false,
            params: Params {
                mode: Some("closed".into()),
                rate: None,
                ..open(conns, 0.0, true)
            },
            run: Box::new(move |t| {
                load::http1(&HttpLoad {
                    target: vec![t],
                    request: HttpLoad::get(t),
                    connections: conns,
                    rate: None,
                    duration: d,
                    warmup: Duration::ZERO,
                    keepalive: true,
                })
            }),
        },
        Scenario {
            name: "http1-conn-per-req",
            route: "http",
            unit: "req/s",
            bulk: false,
            params: open(4, rate / 4.0, false),
            run: Box::new(move |t| {
                load::http1(&HttpLoad {
                    target: vec![t],
                    request: HttpLoad::get(t),
                    connections: 4,
                    rate: Some(rate / 4.0),
                    duration: d,
                    warmup: Duration::ZERO,
                    keepalive: false,
                })
            }),
        },
        // The same h2c load, to the h2c backend and (translated) to the HTTP/1.1 backend.
        h2_scenario("h2-streams", "h2"),
        h2_scenario("h2-to-h1", "h2h1"),
        Scenario {
            name: "tcp-bulk",
            route: "bulk",
            unit: "Gbit/s",
            bulk: true,
            params: Params {
                connections: Some(1),
                bytes: Some(bulk_bytes),
                ..Params::default()
            },
            run: Box::new(move |t| load::bulk(&[t], bulk_bytes)),
        },
        Scenario {
            name: "tcp-churn",
            route: "churn",
            unit: "conn/s",
            bulk: false,
            params: Params {
                connections: Some(4),
                duration_s: Some(churn_secs.as_secs_f64()),
                bytes: Some(64),
                ..Params::default()
            },
            run: Box::new(move |t| load::churn(&[t], 4, churn_secs, 64)),
        },
        Scenario {
            name: "server-first",
            route: "greet",
            unit: "conn/s",
            bulk: false,
            params: Params {
                count: Some(greets),
                ..Params::default()
            },
            run: Box::new(move |t| load::first_byte(&[t], greets)),
        },
    ]
}

/// Pins the calling thread (and the threads it spawns later) to `cpu`.
fn pin(cpu: usize) {
    if let Some(id) =
        core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|c| c.id == cpu))
    {
        core_affinity::set_for_current(id);
    }
}

/// The plot's (percentile, µs) points.
pub fn curve(s: &Sample) -> Vec<(f64, u64)> {
    [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    ]
    .iter()
    .map(|&p| (p, s.hist.value_at_quantile(p)))
    .collect()
}

/// A record of one sample: throughput in ops/s, or in Gbit/s when `bulk`; proxy CPU per op
/// (µs) or per GiB (s).
#[allow(clippy::too_many_arguments)]
pub fn record(
    scenario: &str,
    target: &str,
    unit: &str,
    bulk: bool,
    s: &Sample,
    cpu: Option<f64>,
    rss: Option<u64>,
    params: Params,
) -> Record {
    let (throughput, cpu_per_op, cpu_unit) = if bulk {
        let gib = s.bytes as f64 / (1u64 << 30) as f64;
        (
            s.bytes as f64 * 8.0 / s.elapsed.as_secs_f64().max(1e-9) / 1e9,
            cpu.map(|c| c / gib.max(1e-9)),
            "s/GiB",
        )
    } else {
        (
            s.rate(),
            cpu.map(|c| c * 1e6 / (s.ops.max(1) as f64)),
            "us/op",
        )
    };
    Record {
        scenario: scenario.into(),
        target: target.into(),
        throughput,
        unit: unit.into(),
        p50_us: s.hist.value_at_quantile(0.5),
        p99_us: s.hist.value_at_quantile(0.99),
        p999_us: s.hist.value_at_quantile(0.999),
        max_us: s.hist.max(),
        ops: s.ops,
        errors: s.errors,
        cpu_per_op,
        cpu_unit: cpu_unit.into(),
        peak_rss_kib: rss,
        curve: curve(s),
        status: s.status,
        params,
        hgrm: Some(crate::report::hgrm(&s.hist)),
    }
}

/// Runs the suite; prints the table; writes `latest.{json,html}` and a dated copy.
pub fn run(o: &Options) -> Result<Report> {
    check_scenarios(&o.scenarios)?;
    if o.pin {
        pin(o.load_cpu);
    }
    let mut backends = BTreeMap::new();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    backends.insert(
        "http",
        backends::spawn(Backend::Http { body_bytes: 1024 }, any, 4)?,
    );
    backends.insert("h2", h2load::spawn_server(any, 1024)?);
    backends.insert("h2h1", backends["http"]);
    backends.insert("bulk", backends::spawn(Backend::Sink, any, 2)?);
    backends.insert("churn", backends::spawn(Backend::Echo, any, 4)?);
    backends.insert("greet", backends::spawn(Backend::Greeter, any, 2)?);

    let targets: Vec<Kind> = o
        .targets
        .iter()
        .copied()
        .filter(|k| {
            let ok = k.available();
            if !ok {
                eprintln!("loadtest: {} not installed, skipped", k.name());
            }
            ok
        })
        .collect();
    let scenarios: Vec<Scenario> = scenarios(o.quick, o.duration)
        .into_iter()
        .filter(|s| o.scenarios.is_empty() || o.scenarios.iter().any(|n| n == s.name))
        .collect();
    let bar = if o.progress {
        ProgressBar::new((targets.len() * scenarios.len()) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );

    let mut records = Vec::new();
    for &t in &targets {
        let running = targets::start(t, &backends, o.proxy_cpu, &o.sidewire)
            .with_context(|| format!("starting {}", t.name()))?;
        for sc in &scenarios {
            bar.set_message(format!("{} / {}", t.name(), sc.name));
            let c0 = running.cpu_seconds();
            let sample = (sc.run)(running.routes[sc.route])
                .with_context(|| format!("{} against {}", sc.name, t.name()))?;
            let cpu = running.cpu_seconds().zip(c0).map(|(b, a)| b - a);
            let addr = running.routes[sc.route];
            let params = Params {
                url: Some(if sc.route.starts_with('h') {
                    format!("http://{addr}/load")
                } else {
                    format!("tcp://{addr}")
                }),
                ..sc.params.clone()
            };
            records.push(record(
                sc.name,
                t.name(),
                sc.unit,
                sc.bulk,
                &sample,
                cpu,
                running.peak_rss_kib(),
                params,
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut meta = Meta::here(if o.quick { "quick" } else { "full" });
    meta.versions
        .extend(targets::versions(&o.sidewire, &o.targets));
    meta.pinning = format!(
        "proxy (one worker/thread) on CPU {}, load generator and backends on CPU {}",
        o.proxy_cpu, o.load_cpu
    );
    let report = Report { meta, records };
    print!("{}", report.table());
    let stem = report.write_latest_and_dated(&o.out_dir)?;
    eprintln!(
        "loadtest: wrote {} and .hgrm files",
        o.out_dir
            .join(format!("{{latest,{stem}}}.{{json,html}}"))
            .display()
    );
    Ok(report)
}

/// The default sidewire binary: `target/release/sidewire` next to this workspace.
pub fn default_sidewire() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sidewire")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_suite_against_the_built_in_backends() {
        let out = std::env::temp_dir().join(format!("loadtest-suite-{}", std::process::id()));
        let o = Options {
            quick: true,
            targets: vec![Kind::Baseline],
            duration: Some(0.3),
            proxy_cpu: 0,
            load_cpu: 0,
            sidewire: default_sidewire(),
            out_dir: out.clone(),
            progress: false,
            pin: false,
            scenarios: Vec::new(),
        };
        let r = run(&o).unwrap();
        let names: Vec<&str> = r.records.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(
            names,
            [
                "http1-keepalive",
                "http1-max",
                "http1-conn-per-req",
                "h2-streams",
                "h2-to-h1",
                "tcp-bulk",
                "tcp-churn",
                "server-first"
            ]
        );
        for rec in &r.records {
            assert_eq!(rec.errors, 0, "{}", rec.scenario);
            assert!(
                rec.ops > 0 && rec.throughput > 0.0,
                "{}: {rec:?}",
                rec.scenario
            );
            assert!(
                rec.p50_us <= rec.p99_us && rec.p99_us <= rec.max_us,
                "{}",
                rec.scenario
            );
            assert!(rec.cpu_per_op.is_none(), "no proxy CPU for the baseline");
        }
        let json = std::fs::read_to_string(out.join("latest.json")).unwrap();
        assert!(json.contains("\"tcp-bulk\""));
        assert!(std::fs::read_to_string(out.join("latest.html"))
            .unwrap()
            .contains("<svg"));
        std::fs::remove_dir_all(out).unwrap();
    }
}
