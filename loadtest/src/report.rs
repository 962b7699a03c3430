//! Results: one [`Record`] per scenario and target, printed as a table, written as JSON, as
//! a self-contained HTML page with HdrHistogram-style percentile plots (inline SVG), and as
//! one HdrHistogram percentile-distribution text (`.hgrm`) per record.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::Statuses;

/// One scenario run against one target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Scenario name.
    pub scenario: String,
    /// Target name.
    pub target: String,
    /// Throughput value.
    pub throughput: f64,
    /// Its unit (`req/s`, `conn/s`, `Gbit/s`).
    pub unit: String,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Completed operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Proxy CPU per operation in microseconds (per GiB in seconds for bulk); None for baseline.
    pub cpu_per_op: Option<f64>,
    /// Unit of `cpu_per_op`.
    pub cpu_unit: String,
    /// Proxy peak RSS in KiB.
    pub peak_rss_kib: Option<u64>,
    /// (percentile, µs) points for the plot.
    pub curve: Vec<(f64, u64)>,
    /// Responses by status class (HTTP scenarios only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Statuses>,
    /// The load that produced this record.
    #[serde(default)]
    pub params: Params,
    /// The latency histogram's percentile distribution (`.hgrm` text), written beside the
    /// JSON as `<stem>-<scenario>-<target>.hgrm`; not part of the JSON.
    #[serde(skip)]
    pub hgrm: Option<String>,
}

/// The load parameters of one record (those that apply to its generator).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Target URL (or the harness route's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The addresses it resolved to, preferred first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Extra request headers, `Name: value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Request body file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<String>,
    /// Request body bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// Connections (HTTP) or client threads (churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// Concurrent streams per connection (h2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<usize>,
    /// `open` (constant rate, coordinated-omission corrected) or `closed` (max throughput).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Target rate in requests/s (open loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Seconds of load measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Seconds of load sent before measuring (not in the figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// Keep-alive (true) or a connection per request (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<bool>,
    /// Bytes per transfer (bulk) or per connection (churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Sequential connections (first-byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The error threshold, percent of operations, past which the command exits non-zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_pct: Option<f64>,
}

impl Params {
    /// `key=value` pairs for the HTML page.
    pub fn summary(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
}

/// Run metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// UTC time of the run.
    pub date: String,
    /// `git rev-parse --short HEAD`, if any.
    pub commit: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model, and the number of CPUs.
    pub cpu: String,
    /// CPU model alone.
    #[serde(default)]
    pub cpu_model: String,
    /// Online CPUs of the machine.
    #[serde(default)]
    pub cores: usize,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
    /// The command line that produced the report.
    #[serde(default)]
    pub command: String,
    /// Target versions.
    pub versions: std::collections::BTreeMap<String, String>,
    /// How load and proxy were pinned.
    pub pinning: String,
    /// `quick` or `full` (suite), or the load command (`http`, `h2`, ...).
    pub mode: String,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Meta {
    /// This machine and run: date, commit (of the working directory's git checkout, if any),
    /// kernel, CPU model and count, host name, the command line, and loadtest's version.
    /// Callers add target versions, pinning and mode.
    pub fn here(mode: &str) -> Meta {
        // Online CPUs: not `available_parallelism`, which is 1 once the suite has pinned itself.
        // SAFETY: sysconf reads a system value and has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let cores = usize::try_from(online)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_default();
        let mut versions = std::collections::BTreeMap::new();
        versions.insert(
            "loadtest".to_string(),
            format!("loadtest {}", env!("CARGO_PKG_VERSION")),
        );
        Meta {
            date: sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            commit: sh("git", &["rev-parse", "--short", "HEAD"]),
            kernel: sh("uname", &["-r"]),
            cpu: format!("{cpu_model}, {cores} CPUs"),
            cpu_model,
            cores,
            hostname: sh("uname", &["-n"]),
            command: shell_line(std::env::args_os().map(|a| a.to_string_lossy().into_owned())),
            versions,
            pinning: String::new(),
            mode: mode.into(),
        }
    }
}

/// `args` as one POSIX shell line (`shlex` quoting: `-H 'content-type: application/json'`),
/// so the report's command pastes back into a shell; an argument with a NUL byte (which no
/// shell word holds) is shown as `<nul>`.
fn shell_line(args: impl Iterator<Item = String>) -> String {
    let args: Vec<String> = args.collect();
    shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| {
        let plain: Vec<String> = args.iter().map(|a| a.replace('\0', "<nul>")).collect();
        shlex::try_join(plain.iter().map(String::as_str)).unwrap_or_default()
    })
}

/// The HdrHistogram percentile distribution of `h` (values in µs) in milliseconds, as
/// HdrHistogram's `outputPercentileDistribution(out, 5, 1000.0)` and wrk2 print it: the `.hgrm`
/// text that HdrHistogram's plotter and HistogramLogAnalyzer load.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0; // µs → ms
    let digits = usize::from(h.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10}");
        }
    }
    // HdrHistogram's sub-bucket count: the power of two holding 2 * 10^sigfig.
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// A file-name-safe form of `s`.
fn slug(s: &str) -> String {
    let s: String = s
        .trim_start_matches("http://")
        .trim_start_matches("tcp://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

impl Record {
    /// The `.hgrm` file name of this record under `stem`.
    pub fn hgrm_file(&self, stem: &str) -> String {
        format!(
            "{stem}-{}-{}.hgrm",
            slug(&self.scenario),
            slug(&self.target)
        )
    }
}

/// A whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Metadata.
    pub meta: Meta,
    /// Results.
    pub records: Vec<Record>,
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

impl Report {
    /// The text table, with ratios against the baseline and each peer.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.meta;
        let _ = writeln!(
            out,
            "# loadtest {} {} commit {} | kernel {} | {}",
            m.mode, m.date, m.commit, m.kernel, m.cpu
        );
        let _ = writeln!(out, "# {}", m.pinning);
        let _ = writeln!(
            out,
            "{:<18} {:<9} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>14} {:>9} {:>6}  ratios",
            "scenario",
            "target",
            "throughput",
            "unit",
            "p50",
            "p99",
            "p99.9",
            "max",
            "proxy CPU",
            "peak RSS",
            "errors"
        );
        for r in &self.records {
            let cpu = r
                .cpu_per_op
                .map_or("-".to_string(), |c| format!("{c:.2} {}", r.cpu_unit));
            let rss = r
                .peak_rss_kib
                .map_or("-".to_string(), |k| format!("{:.1}MiB", k as f64 / 1024.0));
            let _ = writeln!(
                out,
                "{:<18} {:<9} {:>12.1} {:>8} {:>9} {:>9} {:>9} {:>9} {:>14} {:>9} {:>6}  {}",
                r.scenario,
                r.target,
                r.throughput,
                r.unit,
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.p999_us),
                fmt_us(r.max_us),
                cpu,
                rss,
                r.errors,
                self.ratios(r)
            );
        }
        out
    }

    /// "p99 vs baseline 1.8x, CPU vs haproxy 0.7x" for one record.
    pub fn ratios(&self, r: &Record) -> String {
        let mut parts = Vec::new();
        let find = |t: &str| {
            self.records
                .iter()
                .find(|o| o.scenario == r.scenario && o.target == t)
        };
        if r.target != "baseline" {
            if let Some(b) = find("baseline") {
                if b.p99_us > 0 {
                    parts.push(format!(
                        "p99/base {:.2}x",
                        r.p99_us as f64 / b.p99_us as f64
                    ));
                }
            }
            for peer in ["sidewire", "haproxy", "nginx"] {
                if peer == r.target {
                    continue;
                }
                if let (Some(p), Some(mine)) = (find(peer), r.cpu_per_op) {
                    if let Some(theirs) = p.cpu_per_op.filter(|c| *c > 0.0) {
                        parts.push(format!("CPU/{peer} {:.2}x", mine / theirs));
                    }
                }
            }
        }
        parts.join(", ")
    }

    /// Writes `<dir>/<stem>.json`, `<dir>/<stem>.html` and a `.hgrm` per record that has a
    /// histogram (see [`Record::hgrm_file`]).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.html")), self.html())?;
        for r in &self.records {
            if let Some(text) = &r.hgrm {
                std::fs::write(dir.join(r.hgrm_file(stem)), text)?;
            }
        }
        Ok(())
    }

    /// Writes the report as `latest.*` and as a dated copy (`report-<date>.*`) under `dir`;
    /// returns the dated stem.
    pub fn write_latest_and_dated(&self, dir: &Path) -> Result<String> {
        let stem = format!("report-{}", self.meta.date.replace(':', ""));
        self.write(dir, &stem)?;
        self.write(dir, "latest")?;
        Ok(stem)
    }

    /// A self-contained HTML page: the table and one latency-percentile plot per scenario.
    pub fn html(&self) -> String {
        let mut h = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>sidewire loadtest</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#eee}svg{background:#fafafa;border:1px solid #ddd;margin:1em 0}</style></head><body>");
        let m = &self.meta;
        let versions: Vec<&str> = m.versions.values().map(String::as_str).collect();
        let _ = write!(h, "<h1>sidewire loadtest ({})</h1><p>{} &middot; commit {} &middot; host {} &middot; kernel {} &middot; {}<br>{}<br>{}</p>", esc(&m.mode), esc(&m.date), esc(&m.commit), esc(&m.hostname), esc(&m.kernel), esc(&m.cpu), esc(&versions.join(" · ")), esc(&m.pinning));
        if !m.command.is_empty() {
            let _ = write!(h, "<p><code>{}</code></p>", esc(&m.command));
        }
        h += "<table><tr><th>scenario</th><th>target</th><th>throughput</th><th>unit</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>proxy CPU</th><th>peak RSS KiB</th><th>errors</th><th>responses</th><th>ratios</th></tr>";
        for r in &self.records {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.scenario), esc(&r.target), r.throughput, esc(&r.unit), r.p50_us, r.p99_us, r.p999_us, r.max_us,
                r.cpu_per_op.map_or("-".into(), |c| format!("{c:.2} {}", esc(&r.cpu_unit))),
                r.peak_rss_kib.map_or("-".into(), |k| k.to_string()), r.errors,
                r.status.map_or("-".into(), |s| esc(&s.compact())), esc(&self.ratios(r))
            );
        }
        h += "</table><h2>Load parameters</h2><table><tr><th>scenario</th><th>target</th><th>parameters</th></tr>";
        for r in &self.records {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                esc(&r.scenario),
                esc(&r.target),
                esc(&r.params.summary())
            );
        }
        h += "</table>";
        // Each scenario once, in first-seen order (the suite's records are target by target).
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.records {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for s in scenarios {
            let rs: Vec<&Record> = self
                .records
                .iter()
                .filter(|r| r.scenario == s && !r.curve.is_empty())
                .collect();
            if !rs.is_empty() {
                let _ = write!(h, "<h2>{}</h2>{}", esc(s), plot(&rs));
            }
        }
        h += "</body></html>\n";
        h
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 4] = ["#555", "#d62728", "#1f77b4", "#2ca02c"];

/// Latency by percentile, both axes log-scaled: x = 1/(1-p) (50% → 2, 99.9% → 1000).
fn plot(rs: &[&Record]) -> String {
    let (w, hgt, pad) = (640.0, 320.0, 50.0);
    let max_us = rs
        .iter()
        .flat_map(|r| r.curve.iter().map(|c| c.1))
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let x = |p: f64| pad + (1.0 / (1.0 - p.min(0.99999))).log10() / 5.0 * (w - 2.0 * pad);
    let y = |us: f64| hgt - pad - (us.max(1.0).log10() / max_us.log10()) * (hgt - 2.0 * pad);
    let mut s =
        format!("<svg width=\"{w}\" height=\"{hgt}\" xmlns=\"http://www.w3.org/2000/svg\">");
    for (p, label) in [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ] {
        let _ = write!(s, "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>", x(p), pad, hgt - pad, hgt - pad + 15.0);
    }
    let mut decade = 1.0;
    while decade <= max_us {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            pad - 4.0,
            y(decade) + 4.0,
            fmt_us(decade as u64)
        );
        decade *= 10.0;
    }
    for (i, r) in rs.iter().enumerate() {
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|(p, us)| format!("{:.1},{:.1}", x(*p), y(*us as f64)))
            .collect();
        let c = COLORS[i % COLORS.len()];
        let _ = write!(s, "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{c}\" font-size=\"12\">{}</text>", pts.join(" "), w - pad - 60.0, pad + 14.0 * i as f64, esc(&r.target));
    }
    s += "</svg>";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(target: &str, p99: u64, cpu: Option<f64>) -> Record {
        Record {
            scenario: "http1-keepalive".into(),
            target: target.into(),
            throughput: 1000.0,
            unit: "req/s".into(),
            p50_us: 50,
            p99_us: p99,
            p999_us: p99 * 2,
            max_us: p99 * 3,
            ops: 1000,
            errors: 0,
            cpu_per_op: cpu,
            cpu_unit: "us/req".into(),
            peak_rss_kib: cpu.map(|_| 4096),
            curve: vec![(0.5, 50), (0.99, p99), (0.999, p99 * 2)],
            status: None,
            params: Params {
                rate: Some(2000.0),
                connections: Some(8),
                ..Params::default()
            },
            hgrm: None,
        }
    }

    fn report() -> Report {
        Report {
            meta: Meta {
                date: "2026-11-24T00:00:00Z".into(),
                commit: "abc1234".into(),
                kernel: "6.18".into(),
                cpu: "test cpu, 2 CPUs".into(),
                cpu_model: "test cpu".into(),
                cores: 2,
                hostname: "h".into(),
                command: "loadtest suite".into(),
                versions: Default::default(),
                pinning: "proxy on CPU 1".into(),
                mode: "quick".into(),
            },
            records: vec![
                rec("baseline", 100, None),
                rec("sidewire", 150, Some(8.0)),
                rec("haproxy", 200, Some(10.0)),
            ],
        }
    }

    #[test]
    fn ratios_against_baseline_and_peers() {
        let r = report();
        assert_eq!(r.ratios(&r.records[1]), "p99/base 1.50x, CPU/haproxy 0.80x");
        assert_eq!(
            r.ratios(&r.records[2]),
            "p99/base 2.00x, CPU/sidewire 1.25x"
        );
        assert_eq!(r.ratios(&r.records[0]), "");
        let t = r.table();
        assert!(
            t.contains("sidewire") && t.contains("CPU/haproxy 0.80x"),
            "{t}"
        );
    }

    #[test]
    fn json_round_trips_and_html_is_self_contained() {
        let r = report();
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        r.write(&dir, "t").unwrap();
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(dir.join("t.json")).unwrap()).unwrap();
        assert_eq!(back, r);
        let html = std::fs::read_to_string(dir.join("t.html")).unwrap();
        assert!(html.contains("<table>") && html.contains("<svg") && html.contains("<polyline"));
        assert!(
            !html.contains("<script") && !html.contains("http-equiv"),
            "no external resources"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn one_plot_per_scenario_whatever_the_record_order() {
        let mut r = report();
        let mut other = rec("baseline", 10, None);
        other.scenario = "tcp-churn".into();
        r.records.insert(1, other.clone());
        other.target = "sidewire".into();
        r.records.push(other);
        let html = r.html();
        assert_eq!(html.matches("<h2>http1-keepalive</h2>").count(), 1);
        assert_eq!(html.matches("<h2>tcp-churn</h2>").count(), 1);
        assert!(html.find("<h2>http1-keepalive</h2>") < html.find("<h2>tcp-churn</h2>"));
    }

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args = [
            "loadtest",
            "http",
            "-H",
            "content-type: application/json",
            "--url",
            "it's",
        ];
        assert_eq!(
            shell_line(args.iter().map(|a| a.to_string())),
            "loadtest http -H 'content-type: application/json' --url \"it's\""
        );
        let nul = ["a", "b\0c"];
        assert_eq!(shell_line(nul.iter().map(|a| a.to_string())), "a 'b<nul>c'");
    }

    #[test]
    fn hgrm_is_hdrhistograms_percentile_distribution_in_ms() {
        let mut h = crate::load::histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let text = hgrm(&h);
        let lines: Vec<&str> = text.lines().collect();
        // HdrHistogram's (Java) outputPercentileDistribution(out, 5, 1000.0) layout; ticks
        // accumulate in floating point as there (0.1 + 0.1 + 0.1 > 0.3: 301, 751, 776).
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        assert_eq!(
            lines[3],
            "       0.100 0.100000000000        100           1.11"
        );
        assert!(lines.contains(&"       0.500 0.500000000000        500           2.00"));
        assert!(lines.contains(&"       0.550 0.550000000000        550           2.22"));
        assert!(lines.contains(&"       0.751 0.750000000000        751           4.00"));
        assert!(lines.contains(&"       0.776 0.775000000000        776           4.44"));
        let n = lines.len();
        assert_eq!(lines[n - 4], "       1.000 1.000000000000       1000");
        assert!(
            lines[n - 3].starts_with("#[Mean    =        0.50"),
            "{}",
            lines[n - 3]
        );
        assert!(
            lines[n - 3].contains(", StdDeviation   =        0.289]"),
            "{}",
            lines[n - 3]
        );
        assert_eq!(
            lines[n - 2],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert_eq!(
            lines[n - 1],
            "#[Buckets =           16, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn record_file_names_are_safe() {
        let mut r = rec("baseline", 1, None);
        assert_eq!(
            r.hgrm_file("latest"),
            "latest-http1-keepalive-baseline.hgrm"
        );
        r.target = "[::1]:8080".into();
        assert_eq!(r.hgrm_file("x"), "x-http1-keepalive-1__8080.hgrm");
    }
}
