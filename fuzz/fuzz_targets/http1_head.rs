//! The HTTP/1 request-head parser and the chunked decoder on arbitrary bytes: never panic, and
//! the chunked decoder finds the same body end whether fed at once or in two pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidewire::config::Limits;
use sidewire::http1::chunked::Decoder;
use sidewire::http1::head::parse_request;

fuzz_target!(|data: &[u8]| {
    let mut st = [httparse::EMPTY_HEADER; 100];
    let _ = parse_request(data, Limits::default(), &mut st);

    let mut whole = Decoder::default();
    let a = whole.feed(data);
    let split = data.len() / 2;
    let mut parts = Decoder::default();
    let b = parts.feed(&data[..split]).and_then(|n| {
        if parts.is_done() {
            Ok(n)
        } else {
            parts.feed(&data[split..]).map(|m| n + m)
        }
    });
    if let (Ok(x), Ok(y)) = (a, b) {
        if whole.is_done() && parts.is_done() {
            assert_eq!(x, y, "body end depends on how the bytes were split");
        }
    }
});
