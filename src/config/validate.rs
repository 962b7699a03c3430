//! Phase two: [`RawConfig`] → [`Config`], one function per section, in the order errors are
//! reported: `[http2]`, `[runtime]`, `[admin]`, `[log]`, `[detect]`, `[http1]`, `[metrics]`, then each
//! listener.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;

/// Upper bound on `workers`: far above any sidecar's need, low enough to catch typos.
const MAX_WORKERS: usize = 1024;
/// Upper bound on the access log's rate and burst: a million lines a second is far beyond
/// what one core can format and write, so a larger value is a typo, not a wish.
const MAX_ACCESS_LINES: u32 = 1_000_000;
/// Upper bound on timeouts (10 minutes): a larger value is almost certainly a unit mistake.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Upper bound on `[dns]` TTL bounds and retry delay (one day).
const MAX_DNS_TTL_MS: u64 = 86_400_000;
/// Upper bound on `dns.timeout_ms` (a minute): start-up waits this long at most for names.
const MAX_DNS_TIMEOUT_MS: u64 = 60_000;
/// Upper bound on `admin.closed_connections` per worker: about 15 MB of records each.
const MAX_CLOSED_CONNECTIONS: usize = 65_536;

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
                Some(field) if path == field || path.ends_with(&format!(".{field}")) => path,
                Some(field) => format!("{path}.{field}"),
                // A value the TOML lexer itself refuses (an integer past i64, a bad date) has no
                // serde path: name the key written on the error's line when there is one.
                None if path == "." || path.is_empty() => inner
                    .span()
                    .and_then(|s| key_at(text, s.start))
                    .unwrap_or_else(|| "(syntax)".to_string()),
                None => path,
            };
            ConfigError {
                file: file.into(),
                key,
                problem: format!("{msg}{at}"),
            }
        })
    }

    /// Phase two: checks every value and builds the typed [`Config`]. `file` is only used in
    /// error messages.
    ///
    /// Errors: the first problem found, as `file: key: problem`.
    pub fn validate(&self, file: &str) -> Result<Config, ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.into(),
            key,
            problem,
        };
        let http2 = self.validate_http2(file)?;
        let runtime = self.validate_runtime(&err)?;
        if self.admin.closed_connections > MAX_CLOSED_CONNECTIONS {
            return Err(err(
                "admin.closed_connections".into(),
                format!(
                    "{} is more than the maximum of {MAX_CLOSED_CONNECTIONS} per worker",
                    self.admin.closed_connections
                ),
            ));
        }
        let admin = AdminConfig {
            listen: parse_listen(&self.admin.listen).map_err(|p| err("admin.listen".into(), p))?,
            enable_shutdown: self.admin.enable_shutdown,
            closed_connections: self.admin.closed_connections,
        };
        let log = self.validate_log(&err)?;
        let detect = self.validate_detect(&err)?;
        let http1 = self.validate_http1(&err)?;
        let metrics = self.validate_metrics(&err)?;
        let dns = self.validate_dns(&err)?;
        let listeners = self.validate_listeners(&err, admin.listen)?;
        Ok(Config {
            runtime,
            admin,
            http1,
            http2,
            log,
            metrics,
            dns,
            detect,
            listeners,
        })
    }

    /// `[dns]`.
    fn validate_dns(&self, err: &Err) -> Result<DnsConfig, ConfigError> {
        let d = &self.dns;
        let nameservers = d
            .nameservers
            .iter()
            .enumerate()
            .map(|(k, ns)| {
                ns.parse::<SocketAddr>()
                    .ok()
                    .or_else(|| ns.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                    .filter(|a| a.port() != 0)
                    .ok_or_else(|| {
                        err(
                            format!("dns.nameservers[{k}]"),
                            format!("{ns:?} is not an \"ip\" or \"ip:port\" address"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in [
            ("dns.min_ttl_ms", d.min_ttl_ms),
            ("dns.max_ttl_ms", d.max_ttl_ms),
            ("dns.retry_max_ms", d.retry_max_ms),
        ] {
            if !(1..=MAX_DNS_TTL_MS).contains(&v) {
                return Err(err(
                    k.into(),
                    format!("{v} must be from 1 to {MAX_DNS_TTL_MS}"),
                ));
            }
        }
        if d.min_ttl_ms > d.max_ttl_ms {
            return Err(err(
                "dns.min_ttl_ms".into(),
                format!(
                    "{} is more than dns.max_ttl_ms ({})",
                    d.min_ttl_ms, d.max_ttl_ms
                ),
            ));
        }
        if !(1..=MAX_DNS_TIMEOUT_MS).contains(&d.timeout_ms) {
            return Err(err(
                "dns.timeout_ms".into(),
                format!("{} must be from 1 to {MAX_DNS_TIMEOUT_MS}", d.timeout_ms),
            ));
        }
        Ok(DnsConfig {
            nameservers,
            min_ttl: Duration::from_millis(d.min_ttl_ms),
            max_ttl: Duration::from_millis(d.max_ttl_ms),
            timeout: Duration::from_millis(d.timeout_ms),
            retry_max: Duration::from_millis(d.retry_max_ms),
        })
    }

    /// `[log]`.
    fn validate_log(&self, err: &Err) -> Result<LogConfig, ConfigError> {
        let l = &self.log;
        for (k, v) in [
            ("log.access_lines_per_second", l.access_lines_per_second),
            ("log.access_burst_lines", l.access_burst_lines),
        ] {
            if !(1..=MAX_ACCESS_LINES).contains(&v) {
                return Err(err(
                    k.into(),
                    format!("{v} must be from 1 to {MAX_ACCESS_LINES}"),
                ));
            }
        }
        Ok(LogConfig {
            format: l.format,
            access: l.access.then_some(AccessLogConfig {
                lines_per_second: l.access_lines_per_second,
                burst_lines: l.access_burst_lines,
            }),
        })
    }

    /// `[metrics]`: gRPC status names, each known and listed once.
    fn validate_metrics(&self, err: &Err) -> Result<MetricsConfig, ConfigError> {
        let mut grpc_failures = 0u32;
        for (i, name) in self.metrics.grpc_failure_codes.iter().enumerate() {
            let key = format!("metrics.grpc_failure_codes[{i}]");
            let Some(code) = GRPC_CODE_NAMES.iter().position(|c| c == name) else {
                return Err(err(
                    key,
                    format!(
                        "unknown gRPC status {name:?}; expected one of {}",
                        GRPC_CODE_NAMES.join(", ")
                    ),
                ));
            };
            if grpc_failures & (1 << code) != 0 {
                return Err(err(key, format!("{name} is listed twice")));
            }
            grpc_failures |= 1 << code;
        }
        Ok(MetricsConfig { grpc_failures })
    }

    /// `[runtime]`.
    fn validate_runtime(&self, err: &Err) -> Result<RuntimeConfig, ConfigError> {
        let rt = &self.runtime;
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
        Ok(RuntimeConfig {
            workers: rt.workers,
            pin_cores: rt.pin_cores,
            driver: rt.driver,
            shutdown_grace: Duration::from_millis(rt.shutdown_grace_ms),
            ring_entries: rt.ring_entries,
            splice_pipe_bytes: rt.splice_pipe_bytes,
            transparent_huge_pages: rt.transparent_huge_pages,
        })
    }

    /// `[detect]`.
    fn validate_detect(&self, err: &Err) -> Result<DetectConfig, ConfigError> {
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
        let user_opaque_ports: BTreeSet<u16> = d.opaque_ports.iter().copied().collect();
        let mut opaque_ports = user_opaque_ports.clone();
        if d.builtin_opaque_ports {
            opaque_ports.extend(BUILTIN_OPAQUE_PORTS);
        }
        let mut port_rules: Vec<PortRule> = Vec::with_capacity(d.ports.len());
        for (i, r) in d.ports.iter().enumerate() {
            let key = |k: &str| format!("detect.port[{i}].{k}");
            let ports = match &r.ports {
                RawPorts::One(p) => match u16::try_from(*p) {
                    Ok(p) if p > 0 => PortSet::from_ranges(vec![p..=p]),
                    _ => return Err(err(key("ports"), format!("{p} is not a port (1-65535)"))),
                },
                RawPorts::List(s) => PortSet::parse(s).map_err(|p| err(key("ports"), p))?,
            };
            if ports.is_empty() {
                return Err(err(key("ports"), "no port given".into()));
            }
            if let Some((j, p)) = port_rules
                .iter()
                .enumerate()
                .find_map(|(j, o)| o.ports.first_common(&ports).map(|p| (j, p)))
            {
                return Err(err(
                    key("ports"),
                    format!("port {p} is already declared by detect.port[{j}]"),
                ));
            }
            let timeout = match r.timeout_ms {
                None => None,
                Some(_) if r.protocol != ListenerProtocol::Detect => {
                    return Err(err(
                        key("timeout_ms"),
                        "only applies to protocol = \"detect\"".into(),
                    ))
                }
                Some(t) if t == 0 || t > MAX_TIMEOUT_MS => {
                    return Err(err(
                        key("timeout_ms"),
                        format!("{t} must be from 1 to {MAX_TIMEOUT_MS}"),
                    ))
                }
                Some(t) => Some(Duration::from_millis(t)),
            };
            port_rules.push(PortRule {
                ports,
                protocol: r.protocol,
                timeout,
            });
        }
        Ok(DetectConfig {
            timeout: Duration::from_millis(d.timeout_ms),
            server_first: d.server_first,
            dial_delay: Duration::from_millis(d.server_first_dial_delay_ms),
            opaque_ports,
            user_opaque_ports,
            port_rules,
        })
    }

    /// `[http1]`.
    fn validate_http1(&self, err: &Err) -> Result<Http1Config, ConfigError> {
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
        if h.splice_body_bytes > 0 && h.splice_body_bytes < 4096 {
            return Err(err(
                "http1.splice_body_bytes".into(),
                format!(
                    "{} must be 0 (off) or at least 4096: a shorter run costs more in mode switches than it saves",
                    h.splice_body_bytes
                ),
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
        Ok(Http1Config {
            enabled: h.enabled,
            limits: Limits {
                max_head_bytes: h.max_head_bytes,
                max_headers: h.max_headers,
            },
            header_timeout: Duration::from_millis(h.header_timeout_ms),
            idle_timeout: Duration::from_millis(h.idle_timeout_ms),
            response_timeout: Duration::from_millis(h.response_timeout_ms),
            body_timeout: Duration::from_millis(h.body_timeout_ms),
            stream_idle_timeout: Duration::from_millis(h.stream_idle_timeout_ms),
            pool_idle_timeout: Duration::from_millis(h.pool_idle_timeout_ms),
            pool_max_idle: h.pool_max_idle,
            splice_body_bytes: h.splice_body_bytes,
        })
    }

    /// Every `[[listener]]`: names unique, addresses unused (by each other and by
    /// `admin_listen`), endpoints parsed (names are not resolved here), routes checked.
    fn validate_listeners(
        &self,
        err: &Err,
        admin_listen: SocketAddr,
    ) -> Result<Vec<ListenerConfig>, ConfigError> {
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
            if !valid_name(&l.name) {
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
            let ((upstream, upstream_names), original_dst) = match &l.upstream {
                RawUpstream::Endpoints(list) => {
                    // `["original-dst"]` would read as one endpoint without a port.
                    if let Some(k) = list.iter().position(|u| u == ORIGINAL_DST) {
                        return Err(err(
                            format!("listener[{i}].upstream[{k}]"),
                            format!("\"{ORIGINAL_DST}\" is not an endpoint: write the string form, upstream = \"{ORIGINAL_DST}\", not a list"),
                        ));
                    }
                    let key = format!("listener[{i}].upstream");
                    (parse_endpoints(list, &key, err)?, false)
                }
                RawUpstream::Mode(m) if m == ORIGINAL_DST => ((Vec::new(), Vec::new()), true),
                RawUpstream::Mode(m) => {
                    return Err(err(
                        key("upstream"),
                        format!("{m:?}: expected a list of endpoints or \"{ORIGINAL_DST}\""),
                    ))
                }
            };
            if l.connect_timeout_ms == 0 || l.connect_timeout_ms > MAX_TIMEOUT_MS {
                return Err(err(
                    key("connect_timeout_ms"),
                    format!(
                        "{} must be from 1 to {MAX_TIMEOUT_MS}",
                        l.connect_timeout_ms
                    ),
                ));
            }
            let detect_timeout_ms = l.detect_timeout_ms.unwrap_or(self.detect.timeout_ms);
            if detect_timeout_ms == 0 || detect_timeout_ms > MAX_TIMEOUT_MS {
                return Err(err(
                    key("detect_timeout_ms"),
                    format!("{detect_timeout_ms} must be from 1 to {MAX_TIMEOUT_MS}"),
                ));
            }
            let (idle_timeout, half_close_timeout, keepalive) =
                validate_stream_limits(l, &key, err)?;
            let ejection = validate_ejection(l, &key, err)?;
            let routes = l
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| validate_route(r, &format!("listener[{i}].route[{j}]"), j, err))
                .collect::<Result<Vec<_>, _>>()?;
            listeners.push(ListenerConfig {
                routes,
                name: l.name.clone(),
                listen,
                upstream,
                upstream_names,
                original_dst,
                direction: l.direction,
                optional: l.optional,
                connect_timeout: Duration::from_millis(l.connect_timeout_ms),
                max_connects_per_endpoint: l.max_connects_per_endpoint,
                max_connections_per_endpoint: l.max_connections_per_endpoint,
                protocol: l.protocol,
                upstream_protocol: l.upstream_protocol,
                detect_timeout: Duration::from_millis(detect_timeout_ms),
                idle_timeout,
                half_close_timeout,
                keepalive,
                ejection,
            });
            addrs.push((listen, "another listener"));
        }
        // An endpoint that is one of the proxy's own listeners loops every connection back
        // into the proxy (with server-first dialling, a silent client alone starts an endless
        // chain of connections).
        for (i, l) in listeners.iter().enumerate() {
            let own = |ep: &SocketAddr| listeners.iter().find(|o| reaches(*ep, o.listen));
            let sets = std::iter::once((format!("listener[{i}].upstream"), &l.upstream)).chain(
                l.routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (format!("listener[{i}].route[{j}].upstream"), &r.upstream)),
            );
            for (key, eps) in sets {
                for (k, ep) in eps.iter().enumerate() {
                    if let Some(o) = own(ep) {
                        return Err(err(
                            format!("{key}[{k}]"),
                            format!(
                                "{ep} is this proxy's own listener {:?} ({}): every connection would loop back into the proxy",
                                o.name, o.listen
                            ),
                        ));
                    }
                }
            }
        }
        Ok(listeners)
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

/// How each section reports a problem: `(key, problem)` → the file's error.
type Err<'a> = dyn Fn(String, String) -> ConfigError + 'a;

/// Route `j` of a listener, its keys under `prefix` (`listener[i].route[j]`).
fn validate_route(
    r: &RawRoute,
    prefix: &str,
    j: usize,
    err: &Err,
) -> Result<RouteConfig, ConfigError> {
    let rkey = |k: &str| format!("{prefix}.{k}");
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
    let (upstream, upstream_names) = parse_endpoints(&r.upstream, &rkey("upstream"), err)?;
    let name = r.name.clone().unwrap_or_else(|| format!("route-{j}"));
    if name == "default" || !valid_name(&name) {
        return Err(err(
            rkey("name"),
            format!("{name:?}: use letters, digits, '-' and '_' (and not \"default\")"),
        ));
    }
    Ok(RouteConfig {
        name,
        host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
        path_prefix: r.path_prefix.clone(),
        upstream,
        upstream_names,
    })
}

/// A listener or route name: non-empty, letters, digits, `-` and `_` (it becomes a label).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A non-empty endpoint list under `key`: its `ip:port` endpoints and its `host:port` names,
/// each kept once in order (`key[k]` names a bad one). Names are not resolved here.
fn parse_endpoints(
    list: &[String],
    key: &str,
    err: &Err,
) -> Result<(Vec<SocketAddr>, Vec<UpstreamName>), ConfigError> {
    if list.is_empty() {
        return Err(err(key.into(), "at least one endpoint is required".into()));
    }
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    for (k, u) in list.iter().enumerate() {
        match parse_endpoint(u).map_err(|p| err(format!("{key}[{k}]"), p))? {
            Endpoint::Addr(a) if !addrs.contains(&a) => addrs.push(a),
            Endpoint::Name(n) if !names.contains(&n) => names.push(n),
            _ => {}
        }
    }
    Ok((addrs, names))
}

/// Whether a connection to `ep` would arrive at a listener bound to `listen`: the same
/// address, or the same port on a wildcard listener reached over loopback or the wildcard.
/// (Other local addresses of the host are not known here.)
fn reaches(ep: SocketAddr, listen: SocketAddr) -> bool {
    listen.port() != 0
        && ep.port() == listen.port()
        && (ep.ip() == listen.ip()
            || (listen.ip().is_unspecified()
                && (ep.ip().is_loopback() || ep.ip().is_unspecified())))
}

/// A listen address must be a literal `ip:port` (no DNS at bind time).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an ip:port address (e.g. \"127.0.0.1:4140\" or \"[::1]:4140\")")
    })
}

/// One endpoint as written.
enum Endpoint {
    /// `ip:port`.
    Addr(SocketAddr),
    /// `host:port`.
    Name(UpstreamName),
}

/// An endpoint is `ip:port`, or `host:port` with a syntactically valid host name (RFC 1123
/// labels; `_` allowed, as in service names), resolved later by `dns`.
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("{s:?}: port 0 is not a valid upstream port"));
        }
        return Ok(Endpoint::Addr(a));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port (expected \"host:port\")"));
    };
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(format!("{s:?}: port 0 is not a valid upstream port")),
        Ok(p) => p,
        Err(_) => return Err(format!("{s:?}: {port:?} is not a port (1-65535)")),
    };
    let bare = host.strip_suffix('.').unwrap_or(host);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "{s:?} is not an ip:port (IPv6 in brackets: \"[::1]:80\") nor a host:port with a valid host name"
        ));
    }
    Ok(Endpoint::Name(UpstreamName {
        host: host.to_ascii_lowercase(),
        port,
    }))
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

/// The dotted key (`runtime.workers`, `listener[1].connect_timeout_ms`,
/// `listener[1].route[0].path_prefix`) on the line that holds byte `offset` of `text`: its
/// `key = value` under the closest table header above it, or the header itself when the
/// line is one (a table given twice). `[[…]]` headers count as array indices, nested ones
/// within their parent's current element. `None` when the line is neither (a multi-line
/// value's continuation).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    // Arrays of tables seen so far, by resolved path, with their current index.
    let mut arrays: Vec<(String, usize)> = Vec::new();
    // `a.b.c` with every prefix that is an array of tables given its current index.
    let resolve = |name: &str, arrays: &[(String, usize)]| {
        let mut path = String::new();
        for part in name.split('.').map(str::trim) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
            if let Some((_, i)) = arrays.iter().find(|(n, _)| *n == path) {
                path = format!("{path}[{i}]");
            }
        }
        path
    };
    let header = |line: &str| -> Option<(bool, String)> {
        let line = line.trim();
        // Only a well-formed header: a broken one (`[runtime`) is a syntax error of its own.
        if let Some((name, _)) = line.strip_prefix("[[").and_then(|l| l.split_once("]]")) {
            Some((true, name.trim().to_string()))
        } else {
            let (name, _) = line.strip_prefix('[').and_then(|l| l.split_once(']'))?;
            Some((false, name.trim().to_string()))
        }
    };
    let mut table = String::new();
    for line in text[..line_start].lines() {
        match header(line) {
            Some((true, name)) => {
                // The array's own path resolves its parents, not itself.
                let (parent, last) = name.rsplit_once('.').unwrap_or(("", &name));
                let at = if parent.is_empty() {
                    last.to_string()
                } else {
                    format!("{}.{last}", resolve(parent, &arrays))
                };
                let index = match arrays.iter_mut().find(|(n, _)| *n == at) {
                    Some((_, i)) => {
                        *i += 1;
                        *i
                    }
                    None => {
                        arrays.push((at.clone(), 0));
                        0
                    }
                };
                table = format!("{at}[{index}]");
            }
            Some((false, name)) => table = resolve(&name, &arrays),
            None => {}
        }
    }
    let line = &text[line_start..line_end];
    if let Some((_, name)) = header(line) {
        return Some(resolve(&name, &arrays));
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if key.is_empty() || !key.chars().all(plain) {
        return None;
    }
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}

/// Upper bound on `idle_timeout_ms` and `half_close_timeout_ms` (a day): opaque streams may
/// idle far longer than the 10-minute bound on other timeouts (Envoy's TCP idle default is an
/// hour), but more than a day is a unit mistake.
const MAX_STREAM_TIMEOUT_MS: u64 = 86_400_000;
/// Upper bound on `tcp_keepalive_ms` and `tcp_keepalive_interval_ms`: the kernel takes whole
/// seconds up to 32,767 (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`).
const MAX_KEEPALIVE_MS: u64 = 32_767_000;
/// Upper bound on `tcp_keepalive_probes` (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_PROBES: u32 = 127;

/// Upper bound on `eject_after_failures`.
const MAX_EJECT_AFTER: u32 = 1000;

/// A listener's passive-health policy (`eject_*`; `key` names a listener key).
fn validate_ejection(
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    err: &Err,
) -> Result<EjectionPolicy, ConfigError> {
    if l.eject_after_failures > MAX_EJECT_AFTER {
        return Err(err(
            key("eject_after_failures"),
            format!(
                "{} is more than the maximum of {MAX_EJECT_AFTER} (0 = never eject)",
                l.eject_after_failures
            ),
        ));
    }
    for (name, ms) in [
        ("eject_base_ms", l.eject_base_ms),
        ("eject_max_ms", l.eject_max_ms),
    ] {
        if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
            return Err(err(
                key(name),
                format!("{ms} must be from 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
    }
    if l.eject_max_ms < l.eject_base_ms {
        return Err(err(
            key("eject_max_ms"),
            format!(
                "{} is less than eject_base_ms ({})",
                l.eject_max_ms, l.eject_base_ms
            ),
        ));
    }
    if l.eject_after_failures == 0 {
        return Ok(EjectionPolicy::OFF);
    }
    Ok(EjectionPolicy {
        after: l.eject_after_failures,
        base: Duration::from_millis(l.eject_base_ms),
        max: Duration::from_millis(l.eject_max_ms),
    })
}

/// A listener's idle timeout, half-close timeout and keepalive (`None`: off).
type StreamLimits = (Option<Duration>, Option<Duration>, Option<KeepaliveConfig>);

/// A listener's idle and half-close timeouts and keepalive (`key` names a listener key).
fn validate_stream_limits(
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    err: &Err,
) -> Result<StreamLimits, ConfigError> {
    let timeout = |name: &str, ms: u64| {
        if ms > MAX_STREAM_TIMEOUT_MS {
            return Err(err(
                key(name),
                format!("{ms} is more than the maximum of {MAX_STREAM_TIMEOUT_MS} (0 = off)"),
            ));
        }
        Ok((ms > 0).then(|| Duration::from_millis(ms)))
    };
    let idle = timeout("idle_timeout_ms", l.idle_timeout_ms)?;
    let half_close = timeout("half_close_timeout_ms", l.half_close_timeout_ms)?;
    if l.tcp_keepalive_ms == 0 {
        return Ok((idle, half_close, None));
    }
    for (name, ms) in [
        ("tcp_keepalive_ms", l.tcp_keepalive_ms),
        ("tcp_keepalive_interval_ms", l.tcp_keepalive_interval_ms),
    ] {
        if !(1000..=MAX_KEEPALIVE_MS).contains(&ms) || ms % 1000 != 0 {
            return Err(err(
                key(name),
                format!("{ms} must be whole seconds from 1000 to {MAX_KEEPALIVE_MS} (the kernel counts seconds)"),
            ));
        }
    }
    if !(1..=MAX_KEEPALIVE_PROBES).contains(&l.tcp_keepalive_probes) {
        return Err(err(
            key("tcp_keepalive_probes"),
            format!(
                "{} must be from 1 to {MAX_KEEPALIVE_PROBES}",
                l.tcp_keepalive_probes
            ),
        ));
    }
    Ok((
        idle,
        half_close,
        Some(KeepaliveConfig {
            time: Duration::from_millis(l.tcp_keepalive_ms),
            interval: Duration::from_millis(l.tcp_keepalive_interval_ms),
            probes: l.tcp_keepalive_probes,
        }),
    ))
}
