//! HTTP/1.x building blocks for the per-core HTTP/1 proxy: request/response head parsing with
//! limits and request-smuggling defences ([`head`]), and a streaming chunked-body decoder
//! ([`chunked`]). Pure code over byte slices, no I/O, no allocation per request beyond the
//! caller's header array.
//!
//! Not wired into `conn` yet: until the keep-alive proxy loop, the upstream pool and upgrade
//! handling land (issue 4), HTTP/1 verdicts are forwarded opaque, which keeps WebSocket and
//! CONNECT working untouched.

pub mod chunked;
pub mod head;
