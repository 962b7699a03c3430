//! The own HTTP/2 codec's CPU per request, without I/O: what `h2wire::server` costs a
//! gRPC-style unary exchange (HEADERS + DATA in; response HEADERS, DATA and trailers out,
//! WINDOW_UPDATEs as the connection's window is consumed), and HPACK decoding of a request
//! header block alone. A baseline for the proxy's HTTP/2 path (issue 17 §1); the end-to-end
//! figures come from `scripts/bench-h2.sh` and `scripts/bench-latency.sh`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use sidewire::h2wire::frame::{self, Settings, PREFACE};
use sidewire::h2wire::hpack::{Decoder, Encoder};
use sidewire::h2wire::server::{Config, Event, Server};

fn cfg() -> Config {
    Config {
        max_concurrent_streams: 256,
        max_header_list_size: 16 * 1024,
        initial_stream_window: 65_535,
        initial_connection_window: 1 << 20,
        max_frame_size: 16_384,
        max_pending_accept_reset_streams: 20,
        max_local_error_reset_streams: 1024,
    }
}

/// A gRPC client's request fields, as grpc-go sends them.
const REQUEST: [(&str, &str); 8] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/helloworld.Greeter/SayHello"),
    (":authority", "greeter.default.svc.cluster.local:50051"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-go/1.64.0"),
    ("te", "trailers"),
    ("grpc-timeout", "4999867u"),
];

fn request_block(enc: &mut Encoder) -> Vec<u8> {
    let mut block = Vec::new();
    enc.begin_block(&mut block);
    for (n, v) in REQUEST {
        enc.field(n.as_bytes(), v.as_bytes(), false, &mut block);
    }
    block
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("h2wire");

    // One unary exchange per iteration on one long-lived connection (stream ids grow).
    let mut server = Server::new(cfg());
    let mut input = PREFACE.to_vec();
    frame::write_settings(&mut input, &Settings::default());
    frame::write_settings_ack(&mut input);
    server.recv(&input, &mut |_| {}).unwrap();
    server.take_output();
    let mut enc = Encoder::new();
    let block = request_block(&mut enc);
    let message = [0u8, 0, 0, 0, 7, 10, 5, b'w', b'o', b'r', b'l', b'd'];
    let mut fields = HeaderMap::new();
    fields.insert("content-type", HeaderValue::from_static("application/grpc"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut stream = 1u32;
    let mut bytes = Vec::with_capacity(256);
    g.bench_function("grpc_unary_exchange", |b| {
        b.iter(|| {
            bytes.clear();
            frame::write_headers(&mut bytes, stream, &block, false, 16_384);
            frame::write_data(&mut bytes, stream, &message, true);
            let mut delivered = 0u32;
            server
                .recv(black_box(&bytes), &mut |e| {
                    if let Event::Data { data, .. } = e {
                        delivered += data.len() as u32;
                    }
                })
                .unwrap();
            server.release(stream, delivered);
            server.send_response(stream, 200, &fields, false).unwrap();
            server.send_data(stream, &message, false).unwrap();
            server.send_trailers(stream, &trailers).unwrap();
            black_box(server.take_output());
            stream += 2;
        })
    });

    // HPACK decoding alone: the first block of a connection (every field literal, Huffman).
    let mut scratch = Vec::new();
    g.bench_function("hpack_decode_first_request_block", |b| {
        b.iter(|| {
            let mut dec = Decoder::new(4096);
            let mut n = 0;
            dec.decode(black_box(&block), &mut scratch, |name, value| {
                n += name.len() + value.len()
            })
            .unwrap();
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
