//! HTTP/1.x: the per-core keep-alive proxy loop ([`proxy`], on unless `[http1] enabled =
//! false`, which forwards HTTP/1 opaque), the message I/O it shares with the h2→h1 bridge
//! ([`message`]), and the pure building blocks under both: request/response head parsing with
//! limits and request-smuggling defences ([`head`]) and a streaming chunked-body decoder
//! ([`chunked`]).

pub mod chunked;
pub mod duplex;
pub mod head;
pub mod message;
pub mod proxy;
