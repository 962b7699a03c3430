//! The ClientHello parsers on arbitrary bytes: the record-level probe (with a valid record
//! header prepended so the fuzzer reaches the body parser) and the body parser alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidewire::detect::tls::{parse_hello, probe};

fuzz_target!(|data: &[u8]| {
    let _ = parse_hello(data);
    let _ = probe(data);
    let len = data.len().min(16 * 1024);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&((len + 4) as u16).to_be_bytes());
    rec.push(0x01);
    rec.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&data[..len]);
    let _ = probe(&rec);
});
