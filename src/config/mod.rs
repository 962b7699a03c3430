//! Configuration: TOML text → [`RawConfig`] (serde, unknown keys rejected; [`raw`]) →
//! [`Config`] (validated, typed, ready to run; [`validate`](mod@validate)).
//!
//! Two phases so that every error names the file, the key and the problem in one line:
//! syntax and unknown keys are caught while deserializing (with the key path), everything else
//! (addresses, ranges, duplicates) by [`RawConfig::validate`], one function per section.
//! Binding the addresses happens at start-up, not here (see `server`), so "port in use" is
//! reported there with the same shape.

mod ports;
mod raw;
mod validate;

pub use ports::PortSet;
pub use raw::*;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The configuration compiled into the binary: the same text as `config/sidewire.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/sidewire.toml");

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

// === Validated ===

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
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
    /// Log format and the access log.
    pub log: LogConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[dns]`: how upstream names are resolved.
    pub dns: DnsConfig,
    /// Listeners, in file order (the index is used by workers and metrics).
    pub listeners: Vec<ListenerConfig>,
}

/// Validated `[runtime]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Worker count; 0 = one per CPU the process may use: its affinity mask, capped by the
    /// cgroup CPU quota rounded up (resolved at start, see [`crate::cpus`]).
    pub workers: usize,
    /// Whether to pin worker *i* to the *i*-th CPU of the affinity mask.
    pub pin_cores: PinCores,
    /// The I/O driver.
    pub driver: Driver,
    /// How long open connections may drain after a shutdown signal.
    pub shutdown_grace: Duration,
    /// io_uring entries per worker.
    pub ring_entries: u32,
    /// Capacity of each splice pipe (the most one direction moves per syscall).
    pub splice_pipe_bytes: usize,
    /// Whether the process keeps transparent huge pages (the system's policy); `false` opts
    /// the `sidewire` binary out at start ([`crate::sys::disable_transparent_huge_pages`]),
    /// so idle connections cost 4 KiB pages, not parts of 2 MiB ones.
    pub transparent_huge_pages: bool,
}

/// Validated `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Admin server address.
    pub listen: SocketAddr,
    /// Whether `POST /shutdown` starts a graceful shutdown (else it answers 404).
    pub enable_shutdown: bool,
    /// How many recently closed connections each worker keeps for `GET /connections?closed=1`
    /// (0: none).
    pub closed_connections: usize,
}

/// Validated `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Line format (the `--log-format` flag, applied by `main`, overrides it).
    pub format: LogFormat,
    /// The access log: `None` when off.
    pub access: Option<AccessLogConfig>,
}

/// The access log's per-worker rate limit (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLogConfig {
    /// Lines per second each worker may write on average (the refill rate).
    pub lines_per_second: u32,
    /// Lines a worker may write at once after a quiet spell (the bucket's capacity).
    pub burst_lines: u32,
}

/// Validated `[detect]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// `[detect] timeout_ms`: the default of each listener's `detect_timeout_ms`. Runs use
    /// [`ListenerConfig::detect_timeout`], which already holds the effective value.
    pub timeout: Duration,
    /// Server-first dialling.
    pub server_first: ServerFirst,
    /// Silence before the server-first dial.
    pub dial_delay: Duration,
    /// Effective opaque ports: the built-in list (unless disabled) plus the user's.
    pub opaque_ports: BTreeSet<u16>,
    /// The user's `opaque_ports` alone (to tell the verdict's reason from the built-in list).
    pub user_opaque_ports: BTreeSet<u16>,
    /// `[[detect.port]]` declarations; no two share a port.
    pub port_rules: Vec<PortRule>,
}

/// One validated `[[detect.port]]`: connections to these ports skip detection with a
/// declared protocol, or run it with their own timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRule {
    /// The ports (destination ports; on inbound original-destination listeners, the
    /// workload's own port).
    pub ports: PortSet,
    /// The declared protocol; `Detect` runs detection.
    pub protocol: ListenerProtocol,
    /// Detection timeout for these ports (`Detect` only; else the listener's).
    pub timeout: Option<Duration>,
}

/// Validated `[http1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Http1Config {
    /// Proxy HTTP/1 per request.
    pub enabled: bool,
    /// Head limits.
    pub limits: Limits,
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
    /// Shortest body run spliced instead of copied, in bytes (0: bodies are always copied).
    pub splice_body_bytes: u64,
}

/// Validated `[http2]` (see [`RawHttp2`] for the meaning of each field).
#[derive(Debug, Clone, PartialEq)]
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

/// Validated `[metrics]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Bit `c` set: `grpc-status` `c` is a failure. Codes above 16 count as `UNKNOWN` (2),
    /// as gRPC says an unknown code is.
    pub grpc_failures: u32,
}

impl MetricsConfig {
    /// Whether `grpc-status` `code` classifies a response as a failure.
    pub fn grpc_failure(&self, code: u8) -> bool {
        let code = if code > 16 { 2 } else { code };
        self.grpc_failures & (1 << code) != 0
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            grpc_failures: DEFAULT_GRPC_FAILURES
                .iter()
                .filter_map(|n| GRPC_CODE_NAMES.iter().position(|c| c == n))
                .fold(0, |m, c| m | 1 << c),
        }
    }
}

/// Validated `[dns]` (see `dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`). `/etc/hosts` is
    /// consulted first either way.
    pub nameservers: Vec<SocketAddr>,
    /// Record TTLs below this are raised to it; also the first retry delay after a failure.
    pub min_ttl: Duration,
    /// Record TTLs above this are lowered to it.
    pub max_ttl: Duration,
    /// Longest wait for one resolution of a name (its A and AAAA queries together).
    pub timeout: Duration,
    /// Longest delay between retries of a failing name.
    pub retry_max: Duration,
}

/// An upstream endpoint given by name (`"host:port"`): resolved after start, asynchronously,
/// to every A and AAAA address, each an endpoint with this port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName {
    /// The host name, lower-cased (no trailing dot added: the resolver's search list applies).
    pub host: String,
    /// The port every address of the name gets.
    pub port: u16,
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One validated `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, the `listener` metric label.
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Upstream endpoints given as `ip:port`; empty when `original_dst` is set.
    pub upstream: Vec<SocketAddr>,
    /// Upstream endpoints given by name, resolved after start (see `dns`); with `upstream`
    /// they make the listener's endpoint set.
    pub upstream_names: Vec<UpstreamName>,
    /// `upstream = "original-dst"`: each connection goes to its original destination
    /// (`SO_ORIGINAL_DST`), as redirected by `sidewire init`'s rules.
    pub original_dst: bool,
    /// Inbound or outbound: the `direction` metric label.
    pub direction: Direction,
    /// Skip the listener (with a warning) when its address cannot exist here.
    pub optional: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Per worker and endpoint: HTTP/1 upstream connects in progress at once (0: no bound).
    pub max_connects_per_endpoint: u32,
    /// Per worker and endpoint: HTTP/1 upstream connections open at once (0: no bound).
    pub max_connections_per_endpoint: u32,
    /// Detect or force a protocol.
    pub protocol: ListenerProtocol,
    /// What the upstream speaks for proxied HTTP/2 streams.
    pub upstream_protocol: UpstreamProtocol,
    /// Detection timeout (listener override or `[detect] timeout_ms`).
    pub detect_timeout: Duration,
    /// HTTP routes, first match wins; requests matching none use `upstream`.
    pub routes: Vec<RouteConfig>,
    /// Opaque streams: how long no byte may move either way before both sides are closed
    /// (`idle_timeout_ms`; `None`: never).
    pub idle_timeout: Option<Duration>,
    /// Opaque streams: the same once one side has sent FIN (`half_close_timeout_ms`).
    pub half_close_timeout: Option<Duration>,
    /// TCP keepalive for the client and upstream sockets (`None`: off).
    pub keepalive: Option<KeepaliveConfig>,
    /// Passive health: when an endpoint is ejected, and for how long (`eject_*`).
    pub ejection: EjectionPolicy,
}

/// When to eject an upstream endpoint and for how long (`listener[].eject_*`; see
/// [`crate::upstream::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Consecutive failed connects that eject an endpoint (0: never eject).
    pub after: u32,
    /// The first ejection's length; each following one without a success between doubles it.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

impl EjectionPolicy {
    /// A policy that never ejects.
    pub const OFF: EjectionPolicy = EjectionPolicy {
        after: 0,
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
}

/// TCP keepalive settings (`tcp_keepalive_*`): a peer that vanished without FIN or RST is
/// dropped by the kernel after about `time + interval × probes` of silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub time: Duration,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub probes: u32,
}

/// One validated HTTP route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The `route` metric label.
    pub name: String,
    /// Lower-case host to match, if any.
    pub host: Option<String>,
    /// Path prefix to match, if any.
    pub path_prefix: Option<String>,
    /// Endpoints given as `ip:port`.
    pub upstream: Vec<SocketAddr>,
    /// Endpoints given by name (resolved after start), with `upstream` the route's set.
    pub upstream_names: Vec<UpstreamName>,
}

impl RouteConfig {
    /// The endpoint set for a request: 0 for the listener's own upstream, `i + 1` when
    /// `routes[i]` is the first that matches `host` and `target`.
    pub fn select(routes: &[RouteConfig], host: Option<&str>, target: &str) -> usize {
        routes
            .iter()
            .position(|r| r.matches(host, target))
            .map_or(0, |i| i + 1)
    }

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

    /// Every upstream name of every listener and route, each once.
    pub fn upstream_names(&self) -> BTreeSet<UpstreamName> {
        self.listeners
            .iter()
            .flat_map(|l| {
                l.upstream_names
                    .iter()
                    .chain(l.routes.iter().flat_map(|r| &r.upstream_names))
            })
            .cloned()
            .collect()
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME)
            .expect("invariant: the embedded default config is valid (tested)")
    }
}

/// Size limits for request heads (`[http1] max_head_bytes`, `max_headers`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Request line + headers + CRLF, at most.
    pub max_head_bytes: usize,
    /// Header fields, at most.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 16 KiB and 100 headers: common server defaults (nginx's large buffers are 8 KiB
        // per line; hyper and Go allow 100 headers / 1 MiB). Sidecar traffic rarely needs more.
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.listeners {
            if l.original_dst {
                writeln!(f, "listener {:?}: {} -> {ORIGINAL_DST}", l.name, l.listen)?;
            } else {
                let names: Vec<String> = l.upstream_names.iter().map(|n| n.to_string()).collect();
                if names.is_empty() {
                    writeln!(f, "listener {:?}: {} -> {:?}", l.name, l.listen, l.upstream)?;
                } else {
                    writeln!(
                        f,
                        "listener {:?}: {} -> {:?} {:?}",
                        l.name, l.listen, l.upstream, names
                    )?;
                }
            }
        }
        write!(f, "admin: {}", self.admin.listen)
    }
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
        assert_eq!(c.runtime.pin_cores, PinCores::Auto);
        assert_eq!(c.runtime.driver, Driver::Auto);
        assert_eq!(c.runtime.shutdown_grace, Duration::from_millis(30_000));
        assert_eq!(c.admin.listen, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.admin.closed_connections, 256);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "outbound");
        assert_eq!(c.listeners[0].connect_timeout, Duration::from_millis(5000));
        assert_eq!(c.listeners[0].max_connects_per_endpoint, 0);
        assert_eq!(c.listeners[0].max_connections_per_endpoint, 0);
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
    fn grpc_failure_codes_default_to_linkerds_and_can_be_set() {
        let c = Config::parse(OK, "t.toml").unwrap();
        let failures: Vec<u8> = (0..=17).filter(|&g| c.metrics.grpc_failure(g)).collect();
        // UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, INTERNAL, UNAVAILABLE, DATA_LOSS, and
        // an unknown code (17) as UNKNOWN.
        assert_eq!(failures, [2, 4, 7, 13, 14, 15, 17]);
        let c = Config::parse(
            &format!("[metrics]\ngrpc_failure_codes = [\"NOT_FOUND\"]\n{OK}"),
            "t.toml",
        )
        .unwrap();
        assert!(c.metrics.grpc_failure(5));
        assert!(!c.metrics.grpc_failure(14));
        let c = Config::parse(
            &format!("[metrics]\ngrpc_failure_codes = []\n{OK}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.metrics.grpc_failures, 0);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(OK, "t.toml").unwrap();
        assert_eq!(c.runtime.ring_entries, 4096);
        assert_eq!(c.listeners[0].connect_timeout, Duration::from_secs(5));
        assert_eq!(c.listeners[0].max_connects_per_endpoint, 0);
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
    fn value_the_lexer_refuses_names_its_key() {
        let e = parse_err("[http1]\nsplice_body_bytes = 99999999999999999999\n");
        assert_eq!(e.key, "http1.splice_body_bytes", "{e}");
        assert!(e.problem.contains("line 2"), "{e}");
        let two = format!("{OK}\n[[listener]]\nname = \"b\"\nconnect_timeout_ms = 1e999999x\n");
        let e = parse_err(&two);
        assert_eq!(e.key, "listener[1].connect_timeout_ms", "{e}");
        let e = parse_err("workers = 99999999999999999999\n");
        assert_eq!(e.key, "workers", "{e}");
        // A key given twice: named (toml points at the second one's line).
        let e = parse_err("[runtime]\nworkers = 2\nworkers = 3\n");
        assert_eq!(e.key, "runtime.workers", "{e}");
        let e = parse_err(&format!("{OK}\n[[listener]]\nname = \"b\"\nname = \"c\"\n"));
        assert_eq!(e.key, "listener[1].name", "{e}");
        // Nested arrays of tables count within their parent's element; a table given
        // twice is named by its header.
        let two_routes = format!(
            "{OK}\n[[listener.route]]\npath_prefix = \"/a\"\n[[listener]]\nname = \"b\"\n\
             [[listener.route]]\npath_prefix = \"/b\"\npath_prefix = \"/c\"\n"
        );
        let e = parse_err(&two_routes);
        assert_eq!(e.key, "listener[1].route[0].path_prefix", "{e}");
        let e = parse_err("[http1]\nenabled = true\n[http1]\n");
        assert_eq!(e.key, "http1", "{e}");
        // An unknown table is named once, not as `foo.foo`.
        let e = parse_err("[foo]\nx = 1\n");
        assert_eq!(e.key, "foo", "{e}");
        // No `key =` on the line: the position is all there is.
        let e = parse_err("[runtime\nworkers = 1\n");
        assert_eq!(e.key, "(syntax)", "{e}");
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
            ("[admin]\nclosed_connections = 65537", "admin.closed_connections"),
            ("[admin]\nclosed_connections = -1", "admin.closed_connections"),
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
            (
                "[metrics]\ngrpc_failure_codes = [\"UNAVAILABLE\", \"unavailable\"]",
                "metrics.grpc_failure_codes[1]",
            ),
            (
                "[metrics]\ngrpc_failure_codes = [\"INTERNAL\", \"INTERNAL\"]",
                "metrics.grpc_failure_codes[1]",
            ),
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
    fn an_upstream_that_is_the_proxys_own_listener_is_refused() {
        for (listen, up, key) in [
            (
                "127.0.0.1:4140",
                "127.0.0.1:4140",
                "listener[0].upstream[0]",
            ),
            ("0.0.0.0:4140", "127.0.0.1:4140", "listener[0].upstream[0]"),
            ("[::]:4140", "[::1]:4140", "listener[0].upstream[0]"),
        ] {
            let e = parse_err(&format!(
                "[[listener]]\nname = \"a\"\nlisten = \"{listen}\"\nupstream = [\"{up}\"]\n"
            ));
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains("loop"), "{e}");
        }
        // A route into another listener of the same proxy loops too.
        let e = parse_err(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:4140\"\nupstream = [\"127.0.0.1:9\"]\n\
             [[listener.route]]\npath_prefix = \"/x\"\nupstream = [\"127.0.0.1:4143\"]\n\
             [[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:4143\"\nupstream = [\"127.0.0.1:9\"]\n",
        );
        assert_eq!(e.key, "listener[0].route[0].upstream[0]", "{e}");
        // Another port, or another address on a specific listener, is fine.
        Config::parse(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:4140\"\nupstream = [\"127.0.0.2:4140\", \"127.0.0.1:8080\"]\n",
            "t.toml",
        )
        .unwrap();
    }

    #[test]
    fn stream_bounds_and_keepalive_default_and_validate() {
        let c = Config::parse(OK, "t.toml").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.idle_timeout, None);
        assert_eq!(l.half_close_timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            l.keepalive,
            Some(KeepaliveConfig {
                time: Duration::from_secs(10),
                interval: Duration::from_secs(10),
                probes: 3,
            })
        );
        let c = Config::parse(
            &format!(
                "{OK}idle_timeout_ms = 3600000
half_close_timeout_ms = 0
tcp_keepalive_ms = 0
"
            ),
            "t.toml",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(l.half_close_timeout, None);
        assert_eq!(l.keepalive, None);
        for (extra, key) in [
            ("idle_timeout_ms = 86400001", "listener[0].idle_timeout_ms"),
            (
                "half_close_timeout_ms = 99999999999",
                "listener[0].half_close_timeout_ms",
            ),
            ("tcp_keepalive_ms = 1500", "listener[0].tcp_keepalive_ms"),
            ("tcp_keepalive_ms = 500", "listener[0].tcp_keepalive_ms"),
            (
                "tcp_keepalive_interval_ms = 0",
                "listener[0].tcp_keepalive_interval_ms",
            ),
            (
                "tcp_keepalive_probes = 0",
                "listener[0].tcp_keepalive_probes",
            ),
            (
                "tcp_keepalive_probes = 128",
                "listener[0].tcp_keepalive_probes",
            ),
        ] {
            let e = parse_err(&format!("{OK}{extra}\n"));
            assert_eq!(e.key, key, "{extra}: {e}");
        }
    }

    #[test]
    fn ejection_defaults_and_validates() {
        let c = Config::parse(OK, "t.toml").unwrap();
        assert_eq!(
            c.listeners[0].ejection,
            EjectionPolicy {
                after: 5,
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            }
        );
        let off = Config::parse(&format!("{OK}eject_after_failures = 0\n"), "t.toml").unwrap();
        assert_eq!(off.listeners[0].ejection, EjectionPolicy::OFF);
        for (extra, key) in [
            (
                "eject_after_failures = 1001",
                "listener[0].eject_after_failures",
            ),
            ("eject_base_ms = 0", "listener[0].eject_base_ms"),
            ("eject_max_ms = 600001", "listener[0].eject_max_ms"),
            (
                "eject_base_ms = 5000\neject_max_ms = 4000",
                "listener[0].eject_max_ms",
            ),
        ] {
            let e = parse_err(&format!("{OK}{extra}\n"));
            assert_eq!(e.key, key, "{extra}: {e}");
        }
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
    fn upstream_names_are_parsed_not_resolved_and_dns_validates() {
        let text = "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\nmin_ttl_ms = 100\n\
             [[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\
             upstream = [\"API.Internal:8080\", \"127.0.0.1:9\", \"api.internal:8080\", \"no-such-name.invalid:1\"]\n\
             [[listener.route]]\npath_prefix = \"/x\"\nupstream = [\"svc_a.ns.svc.cluster.local.:80\"]\n";
        let c = Config::parse(text, "t.toml").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.upstream, ["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        let names: Vec<String> = l.upstream_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            ["api.internal:8080", "no-such-name.invalid:1"],
            "lower-cased, once"
        );
        assert_eq!(
            l.routes[0].upstream_names[0].to_string(),
            "svc_a.ns.svc.cluster.local.:80"
        );
        assert_eq!(c.upstream_names().len(), 3);
        assert_eq!(
            c.dns.nameservers,
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(c.dns.min_ttl, Duration::from_millis(100));
        assert_eq!(c.dns.max_ttl, Duration::from_secs(300));
        let listener = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n";
        for (bad, key) in [
            ("upstream = [\"bad host:80\"]", "listener[0].upstream[0]"),
            ("upstream = [\"-x.example:80\"]", "listener[0].upstream[0]"),
            ("upstream = [\"x.example:0\"]", "listener[0].upstream[0]"),
            ("upstream = [\"x.example:http\"]", "listener[0].upstream[0]"),
            ("upstream = [\"::1:80\"]", "listener[0].upstream[0]"),
        ] {
            let e = parse_err(&format!("{listener}{bad}\n"));
            assert_eq!(e.key, key, "{bad}: {e}");
        }
        for (dns, key) in [
            ("nameservers = [\"dns.google\"]", "dns.nameservers[0]"),
            ("min_ttl_ms = 0", "dns.min_ttl_ms"),
            ("min_ttl_ms = 10000\nmax_ttl_ms = 5000", "dns.min_ttl_ms"),
            ("timeout_ms = 0", "dns.timeout_ms"),
            ("retry_max_ms = 0", "dns.retry_max_ms"),
        ] {
            let e = parse_err(&format!(
                "[dns]\n{dns}\n{listener}upstream = [\"127.0.0.1:9\"]\n"
            ));
            assert_eq!(e.key, key, "{dns}: {e}");
        }
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
    fn original_dst_listeners_and_direction() {
        let c = Config::parse(
            "[[listener]]\nname = \"in\"\nlisten = \"0.0.0.0:0\"\nupstream = \"original-dst\"\n\
             direction = \"inbound\"\n",
            "t.toml",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert!(l.original_dst && l.upstream.is_empty());
        assert_eq!(l.direction, Direction::Inbound);
        // Fixed endpoints stay the default, and outbound the default direction.
        let c = Config::parse(OK, "t.toml").unwrap();
        assert!(!c.listeners[0].original_dst);
        assert_eq!(c.listeners[0].direction, Direction::Outbound);
        for (text, key, problem) in [
            (
                "upstream = \"original\"",
                "listener[0].upstream",
                "\"original\": expected a list of endpoints or \"original-dst\"",
            ),
            ("upstream = 5", "listener[0].upstream", "original-dst"),
            (
                "upstream = [\"original-dst\"]",
                "listener[0].upstream[0]",
                "write the string form, upstream = \"original-dst\", not a list",
            ),
            (
                "upstream = \"original-dst\"\ndirection = \"sideways\"",
                "listener[0].direction",
                "unknown variant",
            ),
        ] {
            let e = parse_err(&format!(
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n{text}\n"
            ));
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(problem), "{e}");
            assert!(e.to_string().starts_with("t.toml: "), "{e}");
        }
    }

    #[test]
    fn detect_port_rules_validate() {
        let c = Config::parse(
            &format!(
                "[[detect.port]]\nports = 9092\nprotocol = \"opaque\"\n\
                 [[detect.port]]\nports = \"8080, 10000-10100\"\nprotocol = \"detect\"\ntimeout_ms = 250\n{OK}"
            ),
            "t.toml",
        )
        .unwrap();
        let r = &c.detect.port_rules;
        assert_eq!(r.len(), 2);
        assert!(r[0].ports.contains(9092) && r[1].ports.contains(10050));
        assert_eq!(r[1].timeout, Some(Duration::from_millis(250)));
        for (rules, key, problem) in [
            (
                "ports = \"80\"\nprotocol = \"http1\"\n[[detect.port]]\nports = \"70-90\"\nprotocol = \"opaque\"",
                "detect.port[1].ports",
                "port 80 is already declared by detect.port[0]",
            ),
            (
                "ports = 80\nprotocol = \"opaque\"\ntimeout_ms = 5",
                "detect.port[0].timeout_ms",
                "only applies to protocol = \"detect\"",
            ),
            (
                "ports = 0\nprotocol = \"opaque\"",
                "detect.port[0].ports",
                "not a port",
            ),
            (
                "ports = \"80-x\"\nprotocol = \"opaque\"",
                "detect.port[0].ports",
                "\"80-x\"",
            ),
            ("ports = \"\"\nprotocol = \"opaque\"", "detect.port[0].ports", "no port"),
            (
                "ports = 80\nprotocol = \"detect\"\ntimeout_ms = 0",
                "detect.port[0].timeout_ms",
                "must be from 1",
            ),
            ("ports = 80\nprotocol = \"gopher\"", "detect.port[0].protocol", "unknown variant"),
        ] {
            let e = parse_err(&format!("[[detect.port]]\n{rules}\n{OK}"));
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(problem), "{e}");
        }
    }

    #[test]
    fn sidecar_preset_has_linkerds_ports() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.toml");
        let c = Config::load(&path).unwrap();
        let find = |n: &str| c.listeners.iter().find(|l| l.name == n).unwrap();
        let (out, inb) = (find("outbound"), find("inbound"));
        assert_eq!(out.listen, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(inb.listen, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.admin.listen, "0.0.0.0:4191".parse().unwrap());
        assert!(c.listeners.iter().all(|l| l.original_dst));
        assert_eq!(
            (out.direction, inb.direction),
            (Direction::Outbound, Direction::Inbound)
        );
        assert!(find("outbound-ipv6").optional && find("inbound-ipv6").optional);
    }

    #[test]
    fn effective_config_round_trips() {
        let raw = RawConfig::parse(OK, "t.toml").unwrap();
        let again = RawConfig::parse(&raw.to_toml(), "t.toml").unwrap();
        assert_eq!(again.runtime.ring_entries, 4096);
        assert_eq!(again.listeners[0].name, "a");
        // And the sidecar preset: original-dst, directions, optional, port rules.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.toml");
        let text = std::fs::read_to_string(path).unwrap()
            + "[[detect.port]]\nports = 9092\nprotocol = \"opaque\"\n";
        let raw = RawConfig::parse(&text, "s.toml").unwrap();
        let again = RawConfig::parse(&raw.to_toml(), "s.toml")
            .unwrap()
            .validate("s.toml")
            .unwrap();
        assert!(again.listeners.iter().all(|l| l.original_dst));
        assert_eq!(again.detect.port_rules.len(), 1);
    }
}
