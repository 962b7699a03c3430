//! The verdicts of detection and their reasons: the `result` and `reason` labels of
//! `tcp_detect_total`, and how they map onto Linkerd's coarser
//! `{inbound,outbound}_tcp_detect_http_results_total` ([`LinkerdDetect`]).

/// The `result` label of `tcp_detect_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectResult {
    /// HTTP/1.x request line.
    Http1,
    /// HTTP/2 prior knowledge.
    Http2,
    /// TLS ClientHello (proxied opaque).
    Tls,
    /// Bytes that match no known protocol.
    Opaque,
    /// No verdict within the detect timeout: proxied opaque.
    Timeout,
    /// The upstream spoke before the client: proxied opaque.
    ServerFirst,
    /// Destination port is an opaque port, or the listener sets `protocol = "opaque"`: no
    /// detection. (A listener forcing `http1`/`http2` counts under that result.)
    OpaquePort,
    /// The client closed before sending anything.
    Closed,
}

impl DetectResult {
    /// Every result, in label order.
    pub const ALL: [DetectResult; 8] = [
        DetectResult::Http1,
        DetectResult::Http2,
        DetectResult::Tls,
        DetectResult::Opaque,
        DetectResult::Timeout,
        DetectResult::ServerFirst,
        DetectResult::OpaquePort,
        DetectResult::Closed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectResult::Http1 => "http/1",
            DetectResult::Http2 => "http/2",
            DetectResult::Tls => "tls",
            DetectResult::Opaque => "opaque",
            DetectResult::Timeout => "timeout",
            DetectResult::ServerFirst => "server_first",
            DetectResult::OpaquePort => "opaque_port",
            DetectResult::Closed => "closed",
        }
    }
}

/// The `result` label of Linkerd's `{inbound,outbound}_tcp_detect_http_results_total`
/// (linkerd2-proxy `linkerd/http/detect/src/metrics.rs`): only connections that ran detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkerdDetect {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 prior knowledge.
    Http2,
    /// Bytes that are not HTTP (TLS, opaque), a server that spoke first, or a client that
    /// closed without a byte.
    NotHttp,
    /// No verdict within the detect timeout.
    ReadTimeout,
    /// The client connection failed during detection.
    Error,
}

impl LinkerdDetect {
    /// Every result, in label order (the metrics index by `result as usize`).
    pub const ALL: [LinkerdDetect; 5] = [
        LinkerdDetect::Http1,
        LinkerdDetect::Http2,
        LinkerdDetect::NotHttp,
        LinkerdDetect::ReadTimeout,
        LinkerdDetect::Error,
    ];

    /// The label value, as Linkerd spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkerdDetect::Http1 => "http/1",
            LinkerdDetect::Http2 => "http/2",
            LinkerdDetect::NotHttp => "not_http",
            LinkerdDetect::ReadTimeout => "read_timeout",
            LinkerdDetect::Error => "error",
        }
    }

    /// The Linkerd result of a sidewire verdict reached by detection.
    pub fn of(r: DetectResult) -> LinkerdDetect {
        match r {
            DetectResult::Http1 => LinkerdDetect::Http1,
            DetectResult::Http2 => LinkerdDetect::Http2,
            DetectResult::Timeout => LinkerdDetect::ReadTimeout,
            DetectResult::Tls
            | DetectResult::Opaque
            | DetectResult::ServerFirst
            | DetectResult::OpaquePort
            | DetectResult::Closed => LinkerdDetect::NotHttp,
        }
    }
}

/// Why a connection got its verdict: the `reason` label of `tcp_detect_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectReason {
    /// Detection ran: the verdict comes from the client's bytes, their absence (timeout,
    /// close) or a server that spoke first.
    Detected,
    /// The listener's `protocol` forces it.
    ListenerProtocol,
    /// A `[[detect.port]]` declaration for the port.
    PortProtocol,
    /// The port is in `[detect] opaque_ports`.
    OpaquePorts,
    /// The port is in the built-in opaque-port list.
    BuiltinOpaquePorts,
}

impl DetectReason {
    /// Every reason, in label order (the metrics index by `reason as usize`).
    pub const ALL: [DetectReason; 5] = [
        DetectReason::Detected,
        DetectReason::ListenerProtocol,
        DetectReason::PortProtocol,
        DetectReason::OpaquePorts,
        DetectReason::BuiltinOpaquePorts,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectReason::Detected => "detected",
            DetectReason::ListenerProtocol => "listener_protocol",
            DetectReason::PortProtocol => "port_protocol",
            DetectReason::OpaquePorts => "opaque_ports",
            DetectReason::BuiltinOpaquePorts => "builtin_opaque_ports",
        }
    }

    /// The results this reason can come with (the series the metrics render).
    pub fn results(self) -> &'static [DetectResult] {
        use DetectResult::*;
        match self {
            DetectReason::Detected => &[Http1, Http2, Tls, Opaque, Timeout, ServerFirst, Closed],
            DetectReason::ListenerProtocol | DetectReason::PortProtocol => {
                &[OpaquePort, Http1, Http2]
            }
            DetectReason::OpaquePorts | DetectReason::BuiltinOpaquePorts => &[OpaquePort],
        }
    }
}

/// Bytes of a connection's first bytes kept for `GET /connections` (as hex).
pub const PREFIX_LEN: usize = 16;

/// The first bytes of a stream, up to [`PREFIX_LEN`]: a fixed-size copy, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefix {
    bytes: [u8; PREFIX_LEN],
    len: u8,
}

impl Prefix {
    /// The first [`PREFIX_LEN`] bytes of `b` (all of it if shorter).
    pub fn new(b: &[u8]) -> Prefix {
        let n = b.len().min(PREFIX_LEN);
        let mut bytes = [0; PREFIX_LEN];
        bytes[..n].copy_from_slice(&b[..n]);
        Prefix {
            bytes,
            len: n as u8,
        }
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What detection saw when it decided, for `GET /connections`: the evidence behind the
/// verdict (which bytes ruled HTTP and TLS out, whether the client half-closed, what the
/// upstream said first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The client's first bytes, as last peeked.
    pub client: Prefix,
    /// How many bytes the client had sent by the last peek.
    pub client_total: usize,
    /// The client's bytes stopped growing after a wake-up: it half-closed mid-prefix.
    pub client_eof: bool,
    /// The upstream's first bytes, when it spoke first.
    pub upstream: Prefix,
}
