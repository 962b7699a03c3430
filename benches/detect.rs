//! `classify` cost per verdict, per protocol: what every accepted connection pays once
//! (plus once per extra wake-up for a client that dribbles its first bytes).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sidewire::detect::classify;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn bench(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "http1_get",
            b"GET /api/v1/users/42?fields=name HTTP/1.1\r\nHost: api.example\r\nUser-Agent: curl/8\r\n\r\n".to_vec(),
        ),
        ("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec()),
        ("tls13_curl_517B", fixture("curl-tls13.bin")),
        ("tls13_chromium_pq_1922B", fixture("chromium-pq.bin")),
        ("opaque_ssh", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n".to_vec()),
        ("opaque_postgres", b"\x00\x00\x00\x13\x00\x03\x00\x00user\x00app\x00\x00".to_vec()),
        ("need_more_http1_prefix", b"GET /api/v1/users/42 HT".to_vec()),
    ];
    let mut g = c.benchmark_group("classify");
    for (name, bytes) in &cases {
        g.bench_function(*name, |b| b.iter(|| black_box(classify(black_box(bytes)))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
