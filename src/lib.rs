//! sidewire: a thread-per-core io_uring sidecar TCP proxy.
//!
//! # Layout (data flow order)
//! - [`config`]: TOML → validated [`config::Config`]; errors name file, key and problem.
//! - [`server`]: the supervisor: binds sockets, starts workers and the admin thread, shutdown.
//! - [`core`]: one pinned worker: io_uring runtime, its `SO_REUSEPORT` listeners, accept loop,
//!   per-core state (metrics, pipe pool, drain).
//! - [`conn`]: the spine of one connection: accept → detect → {opaque splice | HTTP/1 |
//!   HTTP/2} → upstream → metrics.
//! - [`detect`]: protocol detection by peeking (HTTP/1, HTTP/2, TLS ClientHello, opaque),
//!   with a bounded timeout and server-speaks-first support.
//! - [`balance`]: per-request P2C over peak-EWMA latency (HTTP/1 and HTTP/2 endpoint sets).
//! - [`upstream`]: endpoint choice (least connections) and non-blocking connect with timeout.
//! - [`forward`]: opaque forwarding with `splice(2)` in both directions, half-close, reset.
//! - [`http1`]: HTTP/1 head parsing with smuggling defences, a chunked decoder, and the
//!   keep-alive proxy loop with its per-core upstream pool.
//! - [`http2`]: HTTP/2 (h2c prior knowledge, gRPC) proxying per stream, to HTTP/2 or HTTP/1.1
//!   upstreams.
//! - [`metrics`]: per-core counters and histograms, merged and rendered on scrape.
//! - [`admin`]: `/metrics`, `/live`, `/ready` on their own thread.
//! - [`sys`]: the raw syscalls (the only `unsafe` in the crate).

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::await_holding_refcell_ref)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod conn;
pub mod core;
pub mod detect;
pub mod forward;
pub mod http1;
pub mod http2;
pub mod metrics;
pub mod server;
pub mod sys;
pub mod upstream;
