//! The TOML schema: every section and key as written, with its default. Serializes back to
//! TOML for `sidewire check`.

use serde::{Deserialize, Serialize};

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
    /// `[log]`
    #[serde(default)]
    pub log: RawLog,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[dns]`
    #[serde(default)]
    pub dns: RawDns,
    /// `[[listener]]`
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
}

/// `[runtime]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    /// Worker threads; 0 = one per CPU the process may use (affinity mask and cgroup quota).
    pub workers: usize,
    /// Pin each worker to one CPU: `"auto"`, `true` or `false`.
    pub pin_cores: PinCores,
    /// The I/O driver: `"auto"`, `"io_uring"` or `"epoll"`.
    pub driver: Driver,
    /// Drain period on SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    /// io_uring submission queue size per worker.
    pub ring_entries: u32,
    /// Capacity of each splice pipe.
    pub splice_pipe_bytes: usize,
    /// Leave transparent huge pages on for this process (`false`: opt out at start).
    pub transparent_huge_pages: bool,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            workers: 0,
            pin_cores: PinCores::Auto,
            driver: Driver::Auto,
            shutdown_grace_ms: 30_000,
            ring_entries: 4096,
            splice_pipe_bytes: 256 * 1024,
            transparent_huge_pages: false,
        }
    }
}

/// `[admin]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Admin server address.
    pub listen: String,
    /// Serve `POST /shutdown` (for Jobs whose sidecar must stop with the app).
    pub enable_shutdown: bool,
    /// Closed connections each worker keeps for `GET /connections?closed=1`.
    pub closed_connections: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:4191".into(),
            enable_shutdown: false,
            closed_connections: 256,
        }
    }
}

/// `[log]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// Log line format; the `--log-format` flag overrides it.
    pub format: LogFormat,
    /// One log line per HTTP request (HTTP/1 requests and HTTP/2 streams).
    pub access: bool,
    /// Access log lines each worker may write per second, on average (token bucket refill).
    pub access_lines_per_second: u32,
    /// Access log lines a worker may write in a burst (token bucket capacity).
    pub access_burst_lines: u32,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Plain,
            access: false,
            access_lines_per_second: 1000,
            access_burst_lines: 1000,
        }
    }
}

/// `[log] format` and `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message, `key=value` fields.
    #[default]
    Plain,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the fields.
    Json,
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
    /// `[[detect.port]]`: per-port protocol declarations (Kubernetes' `appProtocol`).
    #[serde(default, rename = "port", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<RawPortRule>,
}

/// One `[[detect.port]]` as written: how connections to these ports are handled.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortRule {
    /// The ports: one port (`9092`) or a list with ranges (`"9092,10000-10100"`).
    pub ports: RawPorts,
    /// `"opaque"`, `"http1"`, `"http2"` (no detection) or `"detect"`.
    pub protocol: ListenerProtocol,
    /// Detection timeout for these ports (only with `protocol = "detect"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `[[detect.port]] ports`: a single port number or a `LIST` string.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "a port number or a string of ports and ranges such as \"9092,10000-10100\""
)]
pub enum RawPorts {
    /// `ports = 9092`
    One(u32),
    /// `ports = "9092,10000-10100"`
    List(String),
}

/// `[[listener]] upstream`: fixed endpoints, or the original destination of each connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "a list of endpoints (\"ip:port\" or \"host:port\") or the string \"original-dst\""
)]
pub enum RawUpstream {
    /// `upstream = ["127.0.0.1:8080", ...]`
    Endpoints(Vec<String>),
    /// `upstream = "original-dst"` (any other string is rejected by validation).
    Mode(String),
}

/// The `upstream` value that selects original-destination mode.
pub const ORIGINAL_DST: &str = "original-dst";

/// `[[listener]] direction`: which side of the workload the listener serves (the
/// `direction` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Connections into the workload (from other pods to the app).
    Inbound,
    /// Connections out of the workload (from the app to others).
    #[default]
    Outbound,
}

impl Direction {
    /// The label value: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl Default for RawDetect {
    fn default() -> Self {
        RawDetect {
            timeout_ms: 10_000,
            server_first: ServerFirst::Eager,
            server_first_dial_delay_ms: DEFAULT_DIAL_DELAY_MS,
            opaque_ports: Vec::new(),
            builtin_opaque_ports: true,
            ports: Vec::new(),
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
    /// The response must start within this long after the upstream acknowledged the whole
    /// request (a body may still be draining from the send buffer when the proxy has
    /// written its last byte).
    pub response_timeout_ms: u64,
    /// A request body may pause at most this long between two reads, and the upstream may
    /// acknowledge no byte of it for this long while bytes of it wait unacknowledged.
    pub body_timeout_ms: u64,
    /// A response body may pause at most this long: between two reads from the upstream,
    /// and with no byte acknowledged by the client while bytes of it wait unacknowledged.
    pub stream_idle_timeout_ms: u64,
    /// Idle pooled upstream connections are dropped after this long.
    pub pool_idle_timeout_ms: u64,
    /// Idle pooled upstream connections kept per listener and worker.
    pub pool_max_idle: usize,
    /// `Content-Length` bodies and chunks declared at least this long (bytes) have what is
    /// left of them (4,032 bytes or more) spliced socket to socket instead of copied; 0 turns
    /// splicing of bodies off.
    pub splice_body_bytes: u64,
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
            splice_body_bytes: 32 * 1024,
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
    /// The response (headers) must start within this long after the request's end (its body
    /// handed upstream); 504 (gRPC: DEADLINE_EXCEEDED).
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

/// gRPC status names, indexed by code (0 = `OK` … 16 = `UNAUTHENTICATED`).
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `[metrics] grpc_failure_codes` by default: the codes Linkerd's proxy classifies as failures
/// (`linkerd/proxy/client-policy/src/grpc.rs`, `Codes::default`).
pub const DEFAULT_GRPC_FAILURES: [&str; 6] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "PERMISSION_DENIED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

/// `[metrics]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// gRPC status names (`"UNAVAILABLE"`, …) that make a response a failure
    /// (`classification="failure"`); any other `grpc-status` is a success. Linkerd's default.
    pub grpc_failure_codes: Vec<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            grpc_failure_codes: DEFAULT_GRPC_FAILURES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// `[dns]` as written: how upstream names (`"host:port"` endpoints) are resolved.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// Name servers as `"ip"` (port 53) or `"ip:port"`; empty: the system's
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<String>,
    /// Shortest time an answer is used before it is asked again (a lower record TTL is raised
    /// to it), and the first retry delay after a failure.
    pub min_ttl_ms: u64,
    /// Longest time an answer is used before it is asked again (a higher record TTL is
    /// lowered to it).
    pub max_ttl_ms: u64,
    /// Longest wait for one resolution (A and AAAA), and at start for the first answers.
    pub timeout_ms: u64,
    /// Longest delay between retries of a failing name (the delay doubles from `min_ttl_ms`).
    pub retry_max_ms: u64,
}

impl Default for RawDns {
    fn default() -> Self {
        // 5 s floor: Envoy's default DNS refresh rate; 5 min ceiling: a record with a long TTL
        // still gets re-checked a few times an hour (Envoy's `respect_dns_ttl` has no ceiling,
        // Linkerd's destination service re-resolves every 5 s at most).
        RawDns {
            nameservers: Vec::new(),
            min_ttl_ms: 5_000,
            max_ttl_ms: 300_000,
            timeout_ms: 5_000,
            retry_max_ms: 30_000,
        }
    }
}

/// `[[listener]] upstream_protocol`: what the upstream speaks for proxied HTTP/2 streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// The client's protocol (the default, Envoy's "use downstream protocol", Linkerd's
    /// behaviour): HTTP/2 streams go out as HTTP/2 (h2c prior knowledge), HTTP/1 requests as
    /// HTTP/1. A client that speaks h2c prior knowledge is proof that the server does too.
    #[default]
    Client,
    /// HTTP/1.1: each HTTP/2 stream becomes a request on the HTTP/1 pool.
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

/// Default silence before the server-first dial: none. A client that has not spoken by the
/// first peek gets its upstream dialled at once, so a server-first greeting arrives about
/// 0.1 ms after the direct one (the timer's 1 ms granularity made a 1 ms delay cost ~2.2 ms).
/// The early connection is not wasted when the client speaks first after all: opaque and TLS
/// traffic forwards over it, HTTP/1 puts it in the pool, HTTP/2 makes it the pooled
/// connection (README, "Protocol detection", measured).
pub const DEFAULT_DIAL_DELAY_MS: u64 = 0;

/// One `[[listener]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, the `listener` metric label.
    pub name: String,
    /// Address to listen on.
    pub listen: String,
    /// Upstream endpoints, or `"original-dst"`.
    pub upstream: RawUpstream,
    /// Inbound or outbound (default outbound).
    #[serde(default)]
    pub direction: Direction,
    /// Skip this listener when its address family or address is not available here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Upstream connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Per worker and endpoint: HTTP/1 upstream connects in progress at once (0: no bound).
    #[serde(default = "default_max_connects_per_endpoint")]
    pub max_connects_per_endpoint: u32,
    /// Per worker and endpoint: HTTP/1 upstream connections open at once (0: no bound).
    #[serde(default)]
    pub max_connections_per_endpoint: u32,
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
    /// Opaque streams: close both sides after this long with no byte moving either way
    /// (0 = never, the default).
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// Opaque streams: once one side has sent FIN, close both after this long with no byte
    /// moving (0 = never).
    #[serde(default = "default_half_close_timeout_ms")]
    pub half_close_timeout_ms: u64,
    /// TCP keepalive on the client and upstream sockets: idle time before the first probe
    /// (0 = keepalive off).
    #[serde(default = "default_keepalive_ms")]
    pub tcp_keepalive_ms: u64,
    /// Time between keepalive probes.
    #[serde(default = "default_keepalive_ms")]
    pub tcp_keepalive_interval_ms: u64,
    /// Unanswered probes before the kernel drops the connection.
    #[serde(default = "default_keepalive_probes")]
    pub tcp_keepalive_probes: u32,
    /// Consecutive failed connects that eject an endpoint from its balancer (0 = never).
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// The first ejection's length; each following one without a success between doubles.
    #[serde(default = "default_eject_base_ms")]
    pub eject_base_ms: u64,
    /// The longest ejection.
    #[serde(default = "default_eject_max_ms")]
    pub eject_max_ms: u64,
}

/// Default `eject_after_failures`: Envoy's consecutive-failure default (Linkerd's failure
/// accrual uses 7).
fn default_eject_after_failures() -> u32 {
    5
}

/// Default `eject_base_ms`: Linkerd's failure-accrual minimum back-off.
fn default_eject_base_ms() -> u64 {
    1_000
}

/// Default `eject_max_ms`: Linkerd's failure-accrual maximum back-off.
fn default_eject_max_ms() -> u64 {
    60_000
}

/// Default `half_close_timeout_ms`: 5 minutes of silence after a FIN.
fn default_half_close_timeout_ms() -> u64 {
    300_000
}

/// Default `tcp_keepalive_ms` and `tcp_keepalive_interval_ms`: Linkerd's 10 s.
fn default_keepalive_ms() -> u64 {
    10_000
}

/// Default `tcp_keepalive_probes`.
fn default_keepalive_probes() -> u32 {
    3
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

/// Above the kernel's first two SYN retransmits (Linux sends them 1 s and 3 s after the
/// first SYN, then at 7 s): a SYN an upstream's full accept queue dropped gets two more tries
/// before the connect gives up. Envoy's default is also 5 s.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

/// HTTP/1 upstream connects in progress at once per worker and endpoint: no bound by
/// default. Measured (README, "Upstream connections"): on loopback a connect is only still
/// in progress when the upstream dropped its SYN, so a bound of 4 made every waiting request
/// wait for those SYNs' 1 s retransmits (3,000 requests took 353 s instead of 1.3 s).
pub const DEFAULT_MAX_CONNECTS_PER_ENDPOINT: u32 = 0;

fn default_max_connects_per_endpoint() -> u32 {
    DEFAULT_MAX_CONNECTS_PER_ENDPOINT
}

/// `runtime.driver`: which monoio driver each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring; if the kernel or a seccomp filter refuses it, epoll with a warning.
    #[default]
    Auto,
    /// io_uring or nothing: start-up fails if a ring cannot be created.
    IoUring,
    /// epoll (monoio's legacy driver), for kernels or sandboxes without io_uring.
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// `runtime.pin_cores`: `"auto"` (pin only when the process's CPUs are its own: its affinity
/// mask is narrower than the machine and any cgroup quota covers it, as with Kubernetes' static
/// CPU manager, `taskset` or a cpuset), `true` (always pin worker *i* to the *i*-th CPU of the
/// mask) or `false` (never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinCores {
    /// Pin when the CPUs are exclusively ours.
    #[default]
    Auto,
    /// Always pin.
    Always,
    /// Never pin.
    Never,
}

impl PinCores {
    /// As written in TOML: `"auto"`, `true` or `false`.
    pub fn to_toml_value(self) -> &'static str {
        match self {
            PinCores::Auto => "\"auto\"",
            PinCores::Always => "true",
            PinCores::Never => "false",
        }
    }
}

impl Serialize for PinCores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PinCores::Auto => s.serialize_str("auto"),
            PinCores::Always => s.serialize_bool(true),
            PinCores::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for PinCores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PinCores;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PinCores, E> {
                Ok(if v { PinCores::Always } else { PinCores::Never })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PinCores, E> {
                match v {
                    "auto" => Ok(PinCores::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
