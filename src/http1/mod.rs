//! HTTP/1.x building blocks for the per-core HTTP/1 proxy: request/response head parsing with
//! limits and request-smuggling defences ([`head`]), and a streaming chunked-body decoder
//! ([`chunked`]). Pure code over byte slices, no I/O, no allocation per request beyond the
//! caller's header array.
//!
//! [`proxy`] is the keep-alive proxy loop built on them (on unless `[http1] enabled = false`,
//! which forwards HTTP/1 opaque).

pub mod chunked;
pub mod head;
pub mod proxy;
