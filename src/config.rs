//! Configuration: TOML text → [`RawConfig`] (serde, unknown keys rejected) → [`Config`]
//! (validated, typed, ready to run).
//!
//! Two phases so that every error names the file, the key and the problem in one line:
//! syntax and unknown keys are caught while deserializing (with the key path), everything else
//! (addresses, ranges, duplicates) by [`RawConfig::validate`]. Binding the addresses happens at
//! start-up, not here (see `server`), so "port in use" is reported there with the same shape.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The configuration compiled into the binary: the same text as `config/sidewire.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../config/sidewire.toml");

/// Name shown in errors for the embedded default configuration.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded config/sidewire.toml>";

/// A configuration error: `{file}: {key}: {problem}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: String,
    /// The key (path such as `listener[0].listen`) or the position for syntax errors.
    pub key: String,
    /// What is wrong, in a few words.
    pub problem: String,
}

// === Raw (as written) ===

/// The configuration as written, with defaults filled in. Serializes back to TOML for
/// `sidewire check`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[runtime]`
    #[serde(default)]
    pub runtime: RawRuntime,
    /// `[admin]`
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[detect]`
    #[serde(default)]
    pub detect: RawDetect,
    /// `[http1]`
    #[serde(default)]
    pub http1: RawHttp1,
    /// `[http2]`
    #[serde(default)]
    pub http2: RawHttp2,
    /// `[[listener]]`
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
}

/// `[runtime]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    /// Worker threads; 0 = one per CPU in the affinity mask.
    pub workers: usize,
    /// Pin each worker to one CPU.
    pub pin_cores: bool,
    /// Drain period on SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    /// io_uring submission queue size per worker.
    pub ring_entries: u32,
    /// Capacity of each splice pipe.
    pub splice_pipe_bytes: usize,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            workers: 0,
            pin_cores: true,
            shutdown_grace_ms: 30_000,
            ring_entries: 4096,
            splice_pipe_bytes: 256 * 1024,
        }
    }
}

/// `[admin]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Admin server address.
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:4191".into(),
        }
    }
}

/// `[detect]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDetect {
    /// Detection timeout; then the connection is forwarded opaque.
    pub timeout_ms: u64,
    /// Dial the upstream while the client is silent.
    pub server_first: ServerFirst,
    /// How long a silent client waits before that dial.
    pub server_first_dial_delay_ms: u64,
    /// Extra opaque destination ports (added to the built-in list).
    pub opaque_ports: Vec<u16>,
    /// Whether the built-in opaque ports apply.
    pub builtin_opaque_ports: bool,
}

impl Default for RawDetect {
    fn default() -> Self {
        RawDetect {
            timeout_ms: 10_000,
            server_first: ServerFirst::Eager,
            server_first_dial_delay_ms: DEFAULT_DIAL_DELAY_MS,
            opaque_ports: Vec::new(),
            builtin_opaque_ports: true,
        }
    }
}

/// `[http1]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp1 {
    /// Proxy HTTP/1 request by request (experimental); off = forward HTTP/1 opaque.
    pub enabled: bool,
    /// Largest request head.
    pub max_head_bytes: usize,
    /// Most header fields per request.
    pub max_headers: usize,
    /// A request head must arrive within this long.
    pub header_timeout_ms: u64,
    /// A kept-alive client connection may idle this long between requests.
    pub idle_timeout_ms: u64,
    /// The response must start within this long.
    pub response_timeout_ms: u64,
    /// A request body may pause at most this long between two reads, and the upstream may
    /// take this long to accept each write of it.
    pub body_timeout_ms: u64,
    /// A response body may pause at most this long: between two reads from the upstream,
    /// and for each write to the client.
    pub stream_idle_timeout_ms: u64,
    /// Idle pooled upstream connections are dropped after this long.
    pub pool_idle_timeout_ms: u64,
    /// Idle pooled upstream connections kept per listener and worker.
    pub pool_max_idle: usize,
}

impl Default for RawHttp1 {
    fn default() -> Self {
        RawHttp1 {
            enabled: true,
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            response_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            stream_idle_timeout_ms: 300_000,
            pool_idle_timeout_ms: 3_000,
            pool_max_idle: 1024,
        }
    }
}

/// `[http2]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp2 {
    /// Proxy HTTP/2 stream by stream; off = forward HTTP/2 opaque.
    pub enabled: bool,
    /// Concurrent streams a client may open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list a client may send (also bounds CONTINUATION frames).
    pub max_header_list_size: u32,
    /// Flow-control window per stream, both directions.
    pub initial_stream_window: u32,
    /// Flow-control window per connection, both directions.
    pub initial_connection_window: u32,
    /// Largest frame payload accepted.
    pub max_frame_size: u32,
    /// Streams a client may reset before they are accepted (rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the proxy may reset because of peer errors before it sends GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Bytes buffered per stream towards a peer before back-pressure.
    pub max_send_buffer_bytes: usize,
    /// The response (headers) must start within this long; 504 (gRPC: DEADLINE_EXCEEDED).
    pub response_timeout_ms: u64,
    /// A client connection without streams for this long gets GOAWAY.
    pub idle_timeout_ms: u64,
}

impl Default for RawHttp2 {
    fn default() -> Self {
        RawHttp2 {
            enabled: true,
            max_concurrent_streams: 256,
            max_header_list_size: 16 * 1024,
            initial_stream_window: 65_535,
            initial_connection_window: 1 << 20,
            max_frame_size: 16_384,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_send_buffer_bytes: 400 * 1024,
            response_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
        }
    }
}

/// `[[listener]] upstream_protocol`: what the upstream speaks for proxied HTTP/2 streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1: each stream becomes a request on the HTTP/1 pool.
    #[default]
    Http1,
    /// HTTP/2 prior knowledge (h2c): streams are multiplexed on one pooled connection.
    Http2,
    /// Learned per endpoint on first use: a probe sends the h2c preface, and an endpoint that
    /// answers with SETTINGS gets HTTP/2, any other an HTTP/1.1 translation.
    Auto,
}

/// `[detect] server_first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerFirst {
    /// Dial the upstream in parallel with detection; a server that speaks first is forwarded
    /// at once.
    Eager,
    /// Dial only after detection (a server-first protocol waits for the detect timeout).
    Off,
}

/// `[[listener]] protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// Detect per connection.
    #[default]
    Detect,
    /// Forward every connection opaque, no detection.
    Opaque,
    /// Treat every connection as HTTP/1 (no detection).
    Http1,
    /// Treat every connection as HTTP/2 prior knowledge (no detection).
    Http2,
}

/// Server-speaks-first ports that skip detection by default: SMTP (25, 587), MySQL (3306),
/// NATS (4222), Galera (4444), PostgreSQL (5432), Redis (6379), Elasticsearch transport
/// (9300), Memcached (11211).
pub const BUILTIN_OPAQUE_PORTS: [u16; 9] = [25, 587, 3306, 4222, 4444, 5432, 6379, 9300, 11211];

/// Default silence before the server-first dial. Measured (README, "Protocol detection"):
/// HTTP clients' first bytes are already queued when the connection is accepted, so they
/// never reach this timer, while a server-first greeting is delayed by about this much.
pub const DEFAULT_DIAL_DELAY_MS: u64 = 1;

/// One `[[listener]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, the `listener` metric label.
    pub name: String,
    /// Address to listen on.
    pub listen: String,
    /// Upstream endpoints.
    pub upstream: Vec<String>,
    /// Upstream connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Detect, or force a protocol.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// What the upstream speaks for proxied HTTP/2 streams.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// Overrides `[detect] timeout_ms` for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_timeout_ms: Option<u64>,
    /// `[[listener.route]]`: HTTP routes to other endpoint sets.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
}

/// One `[[listener.route]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The `route` metric label; default `route-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match this Host (port ignored, case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Match targets whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Endpoints for matching requests.
    pub upstream: Vec<String>,
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

// === Validated ===

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker and shutdown settings.
    pub runtime: RuntimeConfig,
    /// Admin server settings.
    pub admin: AdminConfig,
    /// Detection settings shared by all listeners.
    pub detect: DetectConfig,
    /// HTTP/1 proxy settings.
    pub http1: Http1Config,
    /// HTTP/2 proxy settings.
    pub http2: Http2Config,
    /// Listeners, in file order (the index is used by workers and metrics).
    pub listeners: Vec<ListenerConfig>,
}

/// Validated `[runtime]`.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Worker count; 0 = one per CPU in the affinity mask (resolved at start).
    pub workers: usize,
    /// Pin workers to CPUs.
    pub pin_cores: bool,
    /// How long open connections may drain after a shutdown signal.
    pub shutdown_grace: Duration,
    /// io_uring entries per worker.
    pub ring_entries: u32,
    /// Capacity of each splice pipe (the most one direction moves per syscall).
    pub splice_pipe_bytes: usize,
}

/// Validated `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin server address.
    pub listen: SocketAddr,
}

/// Validated `[detect]`.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// Default detection timeout.
    pub timeout: Duration,
    /// Server-first dialling.
    pub server_first: ServerFirst,
    /// Silence before the server-first dial.
    pub dial_delay: Duration,
    /// Effective opaque ports: the built-in list (unless disabled) plus the user's.
    pub opaque_ports: BTreeSet<u16>,
}

/// Validated `[http1]`.
#[derive(Debug, Clone)]
pub struct Http1Config {
    /// Proxy HTTP/1 per request.
    pub enabled: bool,
    /// Head limits.
    pub limits: crate::http1::head::Limits,
    /// Slowloris bound.
    pub header_timeout: Duration,
    /// Keep-alive idle bound.
    pub idle_timeout: Duration,
    /// Time to the response head.
    pub response_timeout: Duration,
    /// Longest pause inside a request body, on either side of the proxy.
    pub body_timeout: Duration,
    /// Longest pause inside a response body, on either side of the proxy.
    pub stream_idle_timeout: Duration,
    /// Pool idle timeout.
    pub pool_idle_timeout: Duration,
    /// Pool size per listener and worker.
    pub pool_max_idle: usize,
}

/// Validated `[http2]` (see [`RawHttp2`] for the meaning of each field).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Http2Config {
    pub enabled: bool,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
    pub max_frame_size: u32,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    pub max_send_buffer_bytes: usize,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One validated `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, the `listener` metric label.
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Upstream endpoints (resolved).
    pub upstream: Vec<SocketAddr>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Detect or force a protocol.
    pub protocol: ListenerProtocol,
    /// What the upstream speaks for proxied HTTP/2 streams.
    pub upstream_protocol: UpstreamProtocol,
    /// Detection timeout (listener override or `[detect] timeout_ms`).
    pub detect_timeout: Duration,
    /// HTTP routes, first match wins; requests matching none use `upstream`.
    pub routes: Vec<RouteConfig>,
}

/// One validated HTTP route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The `route` metric label.
    pub name: String,
    /// Lower-case host to match, if any.
    pub host: Option<String>,
    /// Path prefix to match, if any.
    pub path_prefix: Option<String>,
    /// Endpoints.
    pub upstream: Vec<SocketAddr>,
}

impl RouteConfig {
    /// Whether a request with this Host header value and target matches.
    pub fn matches(&self, host: Option<&str>, target: &str) -> bool {
        if let Some(want) = &self.host {
            let Some(h) = host else { return false };
            let h = h
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h);
            if !h.eq_ignore_ascii_case(want) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            // absolute-form ("http://host/path") routes by its path.
            let path = match target.find("://") {
                Some(i) => target[i + 3..]
                    .find('/')
                    .map_or("/", |j| &target[i + 3 + j..]),
                None => target,
            };
            if !path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        true
    }
}

/// Upper bound on `workers`: far above any sidecar's need, low enough to catch typos.
const MAX_WORKERS: usize = 1024;
/// Upper bound on timeouts (10 minutes): a larger value is almost certainly a unit mistake.
const MAX_TIMEOUT_MS: u64 = 600_000;

impl Config {
    /// Parses and validates configuration text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        RawConfig::parse(text, file)?.validate(file)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME)
            .expect("invariant: the embedded default config is valid (tested)")
    }

    /// Index of the listener named `name`.
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.name == name)
    }
}

impl RawConfig {
    /// Phase one: syntax, types and unknown keys.
    pub fn parse(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // toml's messages can span lines ("invalid table header\nexpected `.`, `]`"): one line.
            let msg = inner
                .message()
                .trim()
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; ");
            let at = inner
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(" (line {line}, column {col})")
                })
                .unwrap_or_default();
            // serde reports an unknown key at its parent's path; name the key itself.
            let key = match unknown_field(&msg) {
                Some(field) if path == "." || path.is_empty() => field.to_string(),
                Some(field) if path.ends_with(&format!(".{field}")) => path,
                Some(field) => format!("{path}.{field}"),
                None if path == "." || path.is_empty() => "(syntax)".to_string(),
                None => path,
            };
            ConfigError {
                file: file.into(),
                key,
                problem: format!("{msg}{at}"),
            }
        })
    }

    /// Phase two: values, ranges, addresses and cross-key rules.
    pub fn validate(&self, file: &str) -> Result<Config, ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.into(),
            key,
            problem,
        };
        let rt = &self.runtime;
        let http2 = self.validate_http2(file)?;
        if rt.workers > MAX_WORKERS {
            return Err(err(
                "runtime.workers".into(),
                format!("{} is more than the maximum of {MAX_WORKERS}", rt.workers),
            ));
        }
        if !(64..=32768).contains(&rt.ring_entries) || !rt.ring_entries.is_power_of_two() {
            return Err(err(
                "runtime.ring_entries".into(),
                format!(
                    "{} must be a power of two from 64 to 32768",
                    rt.ring_entries
                ),
            ));
        }
        if rt.shutdown_grace_ms > MAX_TIMEOUT_MS {
            return Err(err(
                "runtime.shutdown_grace_ms".into(),
                format!(
                    "{} is more than the maximum of {MAX_TIMEOUT_MS}",
                    rt.shutdown_grace_ms
                ),
            ));
        }
        if !(4096..=1 << 20).contains(&rt.splice_pipe_bytes) {
            return Err(err(
                "runtime.splice_pipe_bytes".into(),
                format!(
                    "{} must be from 4096 to 1048576 (the kernel's default pipe-max-size)",
                    rt.splice_pipe_bytes
                ),
            ));
        }
        let admin_listen =
            parse_listen(&self.admin.listen).map_err(|p| err("admin.listen".into(), p))?;

        let d = &self.detect;
        if d.timeout_ms == 0 || d.timeout_ms > MAX_TIMEOUT_MS {
            return Err(err(
                "detect.timeout_ms".into(),
                format!("{} must be from 1 to {MAX_TIMEOUT_MS}", d.timeout_ms),
            ));
        }
        if d.server_first_dial_delay_ms > 1000 {
            return Err(err(
                "detect.server_first_dial_delay_ms".into(),
                format!(
                    "{} is more than 1000: server-first greetings would wait that long",
                    d.server_first_dial_delay_ms
                ),
            ));
        }
        if let Some(i) = d.opaque_ports.iter().position(|&p| p == 0) {
            return Err(err(
                format!("detect.opaque_ports[{i}]"),
                "port 0 is not a valid port".into(),
            ));
        }
        let h = &self.http1;
        if !(1024..=1 << 20).contains(&h.max_head_bytes) {
            return Err(err(
                "http1.max_head_bytes".into(),
                format!("{} must be from 1024 to 1048576", h.max_head_bytes),
            ));
        }
        if !(1..=1000).contains(&h.max_headers) {
            return Err(err(
                "http1.max_headers".into(),
                format!("{} must be from 1 to 1000", h.max_headers),
            ));
        }
        for (k, v) in [
            ("http1.header_timeout_ms", h.header_timeout_ms),
            ("http1.idle_timeout_ms", h.idle_timeout_ms),
            ("http1.response_timeout_ms", h.response_timeout_ms),
            ("http1.body_timeout_ms", h.body_timeout_ms),
            ("http1.stream_idle_timeout_ms", h.stream_idle_timeout_ms),
            ("http1.pool_idle_timeout_ms", h.pool_idle_timeout_ms),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                return Err(err(
                    k.into(),
                    format!("{v} must be from 1 to {MAX_TIMEOUT_MS}"),
                ));
            }
        }
        let mut opaque_ports: BTreeSet<u16> = d.opaque_ports.iter().copied().collect();
        if d.builtin_opaque_ports {
            opaque_ports.extend(BUILTIN_OPAQUE_PORTS);
        }
        if self.listeners.is_empty() {
            return Err(err(
                "listener".into(),
                "at least one [[listener]] is required".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut addrs: Vec<(SocketAddr, &str)> = vec![(admin_listen, "the admin server")];
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            if l.name.is_empty()
                || !l
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    key("name"),
                    format!(
                        "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                        l.name
                    ),
                ));
            }
            if !names.insert(l.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            let listen = parse_listen(&l.listen).map_err(|p| err(key("listen"), p))?;
            if listen.port() != 0 {
                if let Some((_, owner)) = addrs.iter().find(|(a, _)| *a == listen) {
                    return Err(err(
                        key("listen"),
                        format!("{listen} is already used by {owner}"),
                    ));
                }
            }
            if l.upstream.is_empty() {
                return Err(err(
                    key("upstream"),
                    "at least one endpoint is required".into(),
                ));
            }
            let mut upstream = Vec::with_capacity(l.upstream.len());
            for (j, u) in l.upstream.iter().enumerate() {
                let addr = resolve_endpoint(u)
                    .map_err(|p| err(format!("listener[{i}].upstream[{j}]"), p))?;
                upstream.push(addr);
            }
            if l.connect_timeout_ms == 0 || l.connect_timeout_ms > MAX_TIMEOUT_MS {
                return Err(err(
                    key("connect_timeout_ms"),
                    format!(
                        "{} must be from 1 to {MAX_TIMEOUT_MS}",
                        l.connect_timeout_ms
                    ),
                ));
            }
            let detect_timeout_ms = l.detect_timeout_ms.unwrap_or(d.timeout_ms);
            if detect_timeout_ms == 0 || detect_timeout_ms > MAX_TIMEOUT_MS {
                return Err(err(
                    key("detect_timeout_ms"),
                    format!("{detect_timeout_ms} must be from 1 to {MAX_TIMEOUT_MS}"),
                ));
            }
            let mut routes = Vec::with_capacity(l.routes.len());
            for (j, r) in l.routes.iter().enumerate() {
                let rkey = |k: &str| format!("listener[{i}].route[{j}].{k}");
                if r.host.is_none() && r.path_prefix.is_none() {
                    return Err(err(
                        rkey("host"),
                        "a route needs host, path_prefix or both".into(),
                    ));
                }
                if let Some(p) = &r.path_prefix {
                    if !p.starts_with('/') {
                        return Err(err(
                            rkey("path_prefix"),
                            format!("{p:?} must start with '/'"),
                        ));
                    }
                }
                if r.upstream.is_empty() {
                    return Err(err(
                        rkey("upstream"),
                        "at least one endpoint is required".into(),
                    ));
                }
                let mut ups = Vec::with_capacity(r.upstream.len());
                for (k, u) in r.upstream.iter().enumerate() {
                    ups.push(
                        resolve_endpoint(u).map_err(|p| {
                            err(format!("listener[{i}].route[{j}].upstream[{k}]"), p)
                        })?,
                    );
                }
                let name = r.name.clone().unwrap_or_else(|| format!("route-{j}"));
                if name == "default"
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(err(
                        rkey("name"),
                        format!("{name:?}: use letters, digits, '-' and '_' (and not \"default\")"),
                    ));
                }
                routes.push(RouteConfig {
                    name,
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    upstream: ups,
                });
            }
            listeners.push(ListenerConfig {
                routes,
                name: l.name.clone(),
                listen,
                upstream,
                connect_timeout: Duration::from_millis(l.connect_timeout_ms),
                protocol: l.protocol,
                upstream_protocol: l.upstream_protocol,
                detect_timeout: Duration::from_millis(detect_timeout_ms),
            });
            addrs.push((listen, "another listener"));
        }
        Ok(Config {
            runtime: RuntimeConfig {
                workers: rt.workers,
                pin_cores: rt.pin_cores,
                shutdown_grace: Duration::from_millis(rt.shutdown_grace_ms),
                ring_entries: rt.ring_entries,
                splice_pipe_bytes: rt.splice_pipe_bytes,
            },
            admin: AdminConfig {
                listen: admin_listen,
            },
            http1: Http1Config {
                enabled: self.http1.enabled,
                limits: crate::http1::head::Limits {
                    max_head_bytes: self.http1.max_head_bytes,
                    max_headers: self.http1.max_headers,
                },
                header_timeout: Duration::from_millis(self.http1.header_timeout_ms),
                idle_timeout: Duration::from_millis(self.http1.idle_timeout_ms),
                response_timeout: Duration::from_millis(self.http1.response_timeout_ms),
                body_timeout: Duration::from_millis(self.http1.body_timeout_ms),
                stream_idle_timeout: Duration::from_millis(self.http1.stream_idle_timeout_ms),
                pool_idle_timeout: Duration::from_millis(self.http1.pool_idle_timeout_ms),
                pool_max_idle: self.http1.pool_max_idle,
            },
            http2,
            detect: DetectConfig {
                timeout: Duration::from_millis(d.timeout_ms),
                server_first: d.server_first,
                dial_delay: Duration::from_millis(d.server_first_dial_delay_ms),
                opaque_ports,
            },
            listeners,
        })
    }

    /// `[http2]`: ranges from RFC 9113 §6.5.2 and sane bounds.
    fn validate_http2(&self, file: &str) -> Result<Http2Config, ConfigError> {
        let h = &self.http2;
        let check = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError {
                    file: file.into(),
                    key: format!("http2.{key}"),
                    problem: format!("{v} must be from {lo} to {hi}"),
                })
            }
        };
        check(
            "max_concurrent_streams",
            h.max_concurrent_streams.into(),
            1,
            65_536,
        )?;
        check(
            "max_header_list_size",
            h.max_header_list_size.into(),
            1024,
            1 << 20,
        )?;
        check(
            "initial_stream_window",
            h.initial_stream_window.into(),
            1024,
            (1 << 31) - 1,
        )?;
        check(
            "initial_connection_window",
            h.initial_connection_window.into(),
            65_535,
            (1 << 31) - 1,
        )?;
        check(
            "max_frame_size",
            h.max_frame_size.into(),
            16_384,
            (1 << 24) - 1,
        )?;
        check(
            "max_pending_accept_reset_streams",
            h.max_pending_accept_reset_streams as u64,
            1,
            100_000,
        )?;
        check(
            "max_local_error_reset_streams",
            h.max_local_error_reset_streams as u64,
            1,
            100_000,
        )?;
        check(
            "max_send_buffer_bytes",
            h.max_send_buffer_bytes as u64,
            16_384,
            1 << 30,
        )?;
        check("idle_timeout_ms", h.idle_timeout_ms, 1, 24 * 3600 * 1000)?;
        check(
            "response_timeout_ms",
            h.response_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?;
        Ok(Http2Config {
            enabled: h.enabled,
            max_concurrent_streams: h.max_concurrent_streams,
            max_header_list_size: h.max_header_list_size,
            initial_stream_window: h.initial_stream_window,
            initial_connection_window: h.initial_connection_window,
            max_frame_size: h.max_frame_size,
            max_pending_accept_reset_streams: h.max_pending_accept_reset_streams,
            max_local_error_reset_streams: h.max_local_error_reset_streams,
            max_send_buffer_bytes: h.max_send_buffer_bytes,
            response_timeout: Duration::from_millis(h.response_timeout_ms),
            idle_timeout: Duration::from_millis(h.idle_timeout_ms),
        })
    }

    /// The effective configuration as TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("invariant: RawConfig serializes (plain strings and numbers)")
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.listeners {
            writeln!(f, "listener {:?}: {} -> {:?}", l.name, l.listen, l.upstream)?;
        }
        write!(f, "admin: {}", self.admin.listen)
    }
}

/// A listen address must be a literal `ip:port` (no DNS at bind time).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an ip:port address (e.g. \"127.0.0.1:4140\" or \"[::1]:4140\")")
    })
}

/// An endpoint is `ip:port`, or `host:port` resolved once now (the first address wins).
fn resolve_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("{s:?}: port 0 is not a valid upstream port"));
        }
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!("{s:?} has no port (expected \"host:port\")"));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{s:?} resolved to no address")),
        Err(e) => Err(format!("{s:?} is not an ip:port and does not resolve: {e}")),
    }
}

/// The field name in serde's "unknown field `x`, expected …" message.
fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").expect_err("config should be rejected")
    }

    const OK: &str = r#"
        [[listener]]
        name = "a"
        listen = "127.0.0.1:0"
        upstream = ["127.0.0.1:9"]
    "#;

    #[test]
    fn embedded_default_is_valid_and_documented_defaults_hold() {
        let c = Config::embedded_default();
        assert_eq!(c.runtime.workers, 0);
        assert!(c.runtime.pin_cores);
        assert_eq!(c.runtime.shutdown_grace, Duration::from_millis(30_000));
        assert_eq!(c.admin.listen, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "outbound");
        assert_eq!(c.listeners[0].connect_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1, "no config files found in {}", dir.display());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(OK, "t.toml").unwrap();
        assert_eq!(c.runtime.ring_entries, 4096);
        assert_eq!(c.listeners[0].connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = parse_err(&format!("{OK}\nbogus = 1\n"));
        assert_eq!(e.key, "listener[0].bogus", "{e}");
        let e = parse_err("[runtime]\nworkerz = 2\n");
        assert_eq!(e.key, "runtime.workerz", "{e}");
        assert!(e.problem.contains("unknown field"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml: runtime.workerz: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse_err("[runtime\nworkers = 1\n");
        assert!(e.problem.contains("line 1"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse_err("[runtime]\nworkers = \"two\"\n");
        assert_eq!(e.key, "runtime.workers", "{e}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[listener]]\nname = \"a\"\nlisten = \"nope\"\nupstream = [\"127.0.0.1:9\"]",
                "listener[0].listen",
            ),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = []",
                "listener[0].upstream",
            ),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1\"]",
                "listener[0].upstream[0]",
            ),
            (
                "[[listener]]\nname = \"a b\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]",
                "listener[0].name",
            ),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\nconnect_timeout_ms = 0",
                "listener[0].connect_timeout_ms",
            ),
            ("[admin]\nlisten = \"localhost\"", "admin.listen"),
            ("[runtime]\nring_entries = 1000", "runtime.ring_entries"),
            ("[runtime]\nworkers = 100000", "runtime.workers"),
            ("[runtime]\nsplice_pipe_bytes = 100", "runtime.splice_pipe_bytes"),
            ("[detect]\ntimeout_ms = 0", "detect.timeout_ms"),
            ("[detect]\nserver_first = \"sometimes\"", "detect.server_first"),
            ("[detect]\nopaque_ports = [5432, 0]", "detect.opaque_ports[1]"),
            ("[detect]\nopaque_ports = [70000]", "detect.opaque_ports[0]"),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\nprotocol = \"gopher\"",
                "listener[0].protocol",
            ),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\ndetect_timeout_ms = 0",
                "listener[0].detect_timeout_ms",
            ),
            ("[http2]\nmax_frame_size = 100", "http2.max_frame_size"),
            ("[http2]\nmax_concurrent_streams = 0", "http2.max_concurrent_streams"),
            ("[http2]\ninitial_stream_window = 4294967295", "http2.initial_stream_window"),
            ("[http2]\nresponse_timeout_ms = 0", "http2.response_timeout_ms"),
            ("[http1]\nbody_timeout_ms = 0", "http1.body_timeout_ms"),
            (
                "[http1]\nstream_idle_timeout_ms = 0",
                "http1.stream_idle_timeout_ms",
            ),
            (
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\nupstream_protocol = \"spdy\"",
                "listener[0].upstream_protocol",
            ),
            ("", "listener"),
        ];
        for (text, key) in cases {
            assert_eq!(&parse_err(text).key, key, "{text}");
        }
    }

    #[test]
    fn duplicate_names_and_addresses_are_rejected() {
        let dup = format!("{OK}\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n");
        let e = parse_err(&dup);
        assert_eq!(e.key, "listener[1].name");
        assert!(e.problem.contains("duplicate"), "{e}");
        let clash = "[admin]\nlisten = \"127.0.0.1:5000\"\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:5000\"\nupstream = [\"127.0.0.1:9\"]\n";
        let e = parse_err(clash);
        assert_eq!(e.key, "listener[0].listen");
        assert!(e.problem.contains("admin"), "{e}");
    }

    #[test]
    fn opaque_ports_add_to_the_builtin_list() {
        let c = Config::parse(&format!("[detect]\nopaque_ports = [9092]\n{OK}"), "t.toml").unwrap();
        assert!(c.detect.opaque_ports.contains(&9092));
        assert!(BUILTIN_OPAQUE_PORTS
            .iter()
            .all(|p| c.detect.opaque_ports.contains(p)));
        let c = Config::parse(
            &format!("[detect]\nopaque_ports = [9092]\nbuiltin_opaque_ports = false\n{OK}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.detect.opaque_ports.iter().copied().collect::<Vec<_>>(),
            vec![9092]
        );
    }

    #[test]
    fn listener_detect_timeout_overrides_the_default() {
        let c = Config::parse(
            &format!("[detect]\ntimeout_ms = 300\n{OK}detect_timeout_ms = 50\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.detect.timeout, Duration::from_millis(300));
        assert_eq!(c.listeners[0].detect_timeout, Duration::from_millis(50));
        assert_eq!(c.listeners[0].protocol, ListenerProtocol::Detect);
    }

    #[test]
    fn routes_parse_validate_and_match() {
        let text = format!(
            "{OK}[[listener.route]]\nhost = \"API.example\"\npath_prefix = \"/v1/\"\nupstream = [\"127.0.0.1:9001\"]\n\
             [[listener.route]]\nname = \"static\"\npath_prefix = \"/static/\"\nupstream = [\"127.0.0.1:9002\"]\n"
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        let r = &c.listeners[0].routes;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].name.as_str(), r[1].name.as_str()),
            ("route-0", "static")
        );
        assert!(r[0].matches(Some("api.example:8080"), "/v1/users"));
        assert!(!r[0].matches(Some("other.example"), "/v1/users"));
        assert!(!r[0].matches(None, "/v1/users"));
        assert!(!r[0].matches(Some("api.example"), "/v2/"));
        assert!(r[1].matches(None, "http://cdn.example/static/a.css"));
        let bad = format!("{OK}[[listener.route]]\nupstream = [\"127.0.0.1:9001\"]\n");
        assert_eq!(parse_err(&bad).key, "listener[0].route[0].host");
        let bad = format!(
            "{OK}[[listener.route]]\npath_prefix = \"v1\"\nupstream = [\"127.0.0.1:9001\"]\n"
        );
        assert_eq!(parse_err(&bad).key, "listener[0].route[0].path_prefix");
    }

    #[test]
    fn effective_config_round_trips() {
        let raw = RawConfig::parse(OK, "t.toml").unwrap();
        let again = RawConfig::parse(&raw.to_toml(), "t.toml").unwrap();
        assert_eq!(again.runtime.ring_entries, 4096);
        assert_eq!(again.listeners[0].name, "a");
    }
}
