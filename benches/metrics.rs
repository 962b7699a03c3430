//! Cost of a `/metrics` scrape on the admin thread: merging per-core snapshots and rendering
//! the Prometheus text. Workers only copy their counters; this is the rest of the work.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sidewire::config::Direction;
use sidewire::metrics::prom::{listener_labels, render, ProcessInfo};
use sidewire::metrics::{ListenerMetrics, ListenerSnapshot};

fn busy_listener(seed: u64) -> ListenerSnapshot {
    let m = ListenerMetrics::default();
    for i in 0..1000u64 {
        m.src.opened();
        m.src.read(i * seed);
        m.record_duration(Duration::from_micros(i * i * seed + 1));
        m.src.closed(i % 7 != 0);
    }
    m.snapshot()
}

fn scrape(c: &mut Criterion) {
    // 2 cores x 4 listeners, as a sidecar with a few ports would have.
    let cores: Vec<Vec<ListenerSnapshot>> = (1..=2)
        .map(|s| (0..4).map(|l| busy_listener(s + l)).collect())
        .collect();
    let names: Vec<String> = ["inbound", "outbound", "db", "cache"]
        .iter()
        .map(|n| listener_labels(n, Direction::Outbound))
        .collect();
    c.bench_function("merge_and_render_2cores_4listeners", |b| {
        b.iter(|| {
            let mut merged: Vec<ListenerSnapshot> =
                (0..4).map(|_| ListenerSnapshot::default()).collect();
            for core in &cores {
                for (m, l) in merged.iter_mut().zip(core) {
                    m.merge(l);
                }
            }
            let named: Vec<(&str, ListenerSnapshot)> =
                names.iter().map(String::as_str).zip(merged).collect();
            black_box(render(&named, &ProcessInfo::default()))
        })
    });
    let m = ListenerMetrics::default();
    c.bench_function("hot_path_counters_per_chunk", |b| {
        b.iter(|| {
            m.src.read(black_box(65536));
            m.dst.wrote(black_box(65536));
        })
    });
}

criterion_group!(benches, scrape);
criterion_main!(benches);
