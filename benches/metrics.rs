//! Cost of a `/metrics` scrape on the admin thread: merging per-core snapshots and rendering
//! the Prometheus text. Workers only copy their counters; this is the rest of the work.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sidewire::config::Direction;
use sidewire::metrics::prom::{listener_labels, render, ProcessInfo};
use sidewire::metrics::{Close, ListenerMetrics, ListenerSnapshot, Protocol};

fn busy_listener(seed: u64) -> ListenerSnapshot {
    let m = ListenerMetrics::default();
    for i in 0..1000u64 {
        // 10 destinations, 4 endpoints, 5 authorities, a few statuses.
        let src = m.src_for(std::net::SocketAddr::from(([10, 0, 0, (i % 10) as u8], 80)));
        src.opened();
        src.read(i * seed);
        m.record_duration(Duration::from_micros(i * i * seed + 1));
        src.closed(Close::ok(i % 7 != 0));
        let up = std::net::SocketAddr::from(([10, 1, 0, (i % 4) as u8], 8080));
        let h = m.http(
            0,
            Protocol::Http1,
            m.target(up),
            m.authority(Some(&format!("svc{}.ns:80", i % 5))),
        );
        h.request();
        h.response(
            [200, 200, 404, 503][(i % 4) as usize],
            Duration::from_micros(i * 37 % 90_000),
        );
    }
    m.snapshot()
}

fn scrape(c: &mut Criterion) {
    // 2 cores x 4 listeners, as a sidecar with a few ports would have.
    let cores: Vec<Vec<ListenerSnapshot>> = (1..=2)
        .map(|s| (0..4).map(|l| busy_listener(s + l)).collect())
        .collect();
    let names: Vec<_> = ["inbound", "outbound", "db", "cache"]
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
            let named: Vec<_> = names.iter().zip(merged).collect();
            black_box(render(&named, &ProcessInfo::default()))
        })
    });
    let m = ListenerMetrics::default();
    let a = std::net::SocketAddr::from(([10, 0, 0, 1], 80));
    let (src, dst) = (m.src_for(a), m.dst_for(a));
    c.bench_function("hot_path_counters_per_chunk", |b| {
        b.iter(|| {
            src.read(black_box(65536));
            dst.wrote(black_box(65536));
        })
    });
    c.bench_function("http_series_lookup_per_request", |b| {
        b.iter(|| {
            let t = m.target(black_box(a));
            let au = m.authority(black_box(Some("web.ns.svc.cluster.local:80")));
            let h = m.http(0, Protocol::Http1, t, au);
            h.request();
            h.response(200, black_box(Duration::from_micros(1500)));
        })
    });
}

criterion_group!(benches, scrape);
criterion_main!(benches);
