//! HTTP/1.x building blocks for the per-core HTTP/1 proxy: request/response head parsing with
//! limits and request-smuggling defences ([`head`]), and a streaming chunked-body decoder
//! ([`chunked`]). Pure code over byte slices, no I/O, no allocation per request beyond the
//! caller's header array.
//!
//! [`proxy`] is the keep-alive proxy loop built on them. It is experimental and off unless
//! `[http1] enabled = true`; otherwise HTTP/1 verdicts are forwarded opaque.

pub mod chunked;
pub mod head;
pub mod proxy;
