//! sidewire: a thread-per-core io_uring sidecar TCP proxy.
//!
//! # Layout (data flow order)
//! - [`init`]: `sidewire init`: the nftables interception rules (transparent sidecar mode).
//! - [`inject`]: `sidewire inject`: adds the sidecar (init container, proxy, config) to
//!   Kubernetes manifests.
//! - [`server`]: the supervisor: binds sockets, starts workers and the admin thread, shutdown.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/live`, `/ready`, `/connections`,
//!   `/log-level`, `/shutdown`) on its own thread.
//! - [`dns`]: upstream names resolved after start (every A/AAAA record, refreshed on the
//!   TTL, last good answer kept through failures), delivered to the workers.
//! - [`worker`]: one worker: its runtime (io_uring, or epoll where refused), accept loops and control channel.
//! - [`accept`]: one listener's accept loop on one worker.
//! - [`conn`]: the spine of one connection: target → detect → {opaque splice | HTTP/1 |
//!   HTTP/2} → upstream → metrics.
//! - [`http2`]: HTTP/2 (h2c prior knowledge, gRPC) proxying per stream, to HTTP/2 or HTTP/1.1
//!   upstreams.
//! - [`http1`]: the HTTP/1 keep-alive proxy loop, HTTP/1 message I/O shared with h2→h1, head
//!   parsing with smuggling defences and a chunked decoder.
//! - [`core`]: per-core state: listeners (config, metrics, balancers, pools), pipe pool, drain,
//!   the table of open and recently closed connections.
//! - [`forward`]: opaque forwarding with `splice(2)` in both directions; the pipe pool.
//! - [`upstream`]: where connections and requests go (target, balancers), connect, and the
//!   HTTP/1 and HTTP/2 upstream pools.
//! - [`io`]: byte I/O shared by the HTTP proxies (`Peer`, counted and coalesced poll-IO).
//! - [`metrics`]: per-core counters and histograms, merged and rendered on scrape.
//! - [`detect`]: protocol detection by peeking (HTTP/1, HTTP/2, TLS ClientHello, opaque),
//!   with a bounded timeout and server-speaks-first support.
//! - [`logging`]: the log subscriber (plain or JSON, filter reloadable at run time) and the
//!   rate-limited access log.
//! - [`task`]: spawning a connection's or a stream's task with its panics contained (a panic
//!   ends that task, logged and counted, not the worker).
//! - [`h2wire`]: the HTTP/2 wire codec, sans-IO (frames; HPACK).
//! - [`cpus`]: how many CPUs the process may use (affinity mask, cgroup quota), and pinning.
//! - [`config`]: TOML → validated [`config::Config`]; errors name file, key and problem.
//! - [`error`]: the error taxonomy (which side failed, connect errors, stream failures).
//! - [`sys`]: the raw syscalls (the only `unsafe` in the crate).
//!
//! # Layers
//!
//! Each module may import only modules in lower layers (further down this list); inside a
//! folder, files import each other without cycles. `scripts/check-layers.py` checks this (CI
//! runs it through `tests/layers.rs`).
//!
//! 1. `main`
//! 2. `init`, `inject`, `server`
//! 3. `admin`
//! 4. `dns`
//! 5. `worker`
//! 6. `accept`
//! 7. `conn`
//! 8. `http2`
//! 9. `http1`
//! 10. `core`
//! 11. `forward`
//! 12. `upstream`
//! 13. `io`
//! 14. `metrics`
//! 15. `detect`, `cpus`, `h2wire`, `logging`, `task`
//! 16. `config`
//! 17. `error`, `sys`

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::await_holding_refcell_ref)]

pub mod accept;
pub mod admin;
pub mod config;
pub mod conn;
pub mod core;
pub mod cpus;
pub mod detect;
pub mod dns;
pub mod error;
pub mod forward;
pub mod h2wire;
pub mod http1;
pub mod http2;
pub mod init;
pub mod inject;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod sys;
pub mod task;
pub mod upstream;
pub mod worker;
