//! Results: one [`Record`] per scenario and target, printed as a table, written as JSON and
//! as a self-contained HTML page with HdrHistogram-style percentile plots (inline SVG).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

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
    /// CPU model.
    pub cpu: String,
    /// Target versions.
    pub versions: std::collections::BTreeMap<String, String>,
    /// How load and proxy were pinned.
    pub pinning: String,
    /// `quick` or `full`.
    pub mode: String,
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

    /// Writes `<dir>/<stem>.json` and `<dir>/<stem>.html`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.html")), self.html())?;
        Ok(())
    }

    /// A self-contained HTML page: the table and one latency-percentile plot per scenario.
    pub fn html(&self) -> String {
        let mut h = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>sidewire loadtest</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}svg{background:#fafafa;border:1px solid #ddd;margin:1em 0}</style></head><body>");
        let m = &self.meta;
        let _ = write!(h, "<h1>sidewire loadtest ({})</h1><p>{} &middot; commit {} &middot; kernel {} &middot; {}<br>{}</p>", esc(&m.mode), esc(&m.date), esc(&m.commit), esc(&m.kernel), esc(&m.cpu), esc(&m.pinning));
        h += "<table><tr><th>scenario</th><th>target</th><th>throughput</th><th>unit</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>proxy CPU</th><th>peak RSS KiB</th><th>errors</th><th>ratios</th></tr>";
        for r in &self.records {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.scenario), esc(&r.target), r.throughput, esc(&r.unit), r.p50_us, r.p99_us, r.p999_us, r.max_us,
                r.cpu_per_op.map_or("-".into(), |c| format!("{c:.2} {}", esc(&r.cpu_unit))),
                r.peak_rss_kib.map_or("-".into(), |k| k.to_string()), r.errors, esc(&self.ratios(r))
            );
        }
        h += "</table>";
        let mut scenarios: Vec<&str> = self.records.iter().map(|r| r.scenario.as_str()).collect();
        scenarios.dedup();
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
        }
    }

    fn report() -> Report {
        Report {
            meta: Meta {
                date: "2026-11-24T00:00:00Z".into(),
                commit: "abc1234".into(),
                kernel: "6.18".into(),
                cpu: "test cpu".into(),
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
}
