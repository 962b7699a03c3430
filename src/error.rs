//! The error taxonomy shared by every stage: which side of a proxied exchange failed
//! ([`Side`]), how a message transfer failed ([`MessageError`]), why an upstream connect failed
//! ([`ConnectError`], [`ConnectErrorKind`]) and what a stream gets when no upstream answer
//! comes ([`Failure`]).
//!
//! The point of one taxonomy is that an error says *whose* fault it is: a pause on the
//! client's side is the client's 408, the same pause on the upstream's side is a 502 or 504,
//! never the other way round (an `io::ErrorKind` cannot tell them apart).
//!
//! Not here: configuration errors (`config::ConfigError`) and start-up errors
//! (`server::StartError`), which are reported once and end the process.

use std::io;
use std::net::SocketAddr;

/// One side of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream peer that connected to the proxy (`peer="src"` in metrics).
    Client,
    /// The endpoint the proxy connected to (`peer="dst"` in metrics).
    Upstream,
}

/// How moving one HTTP/1 message (head and body) from one side to the other failed. Each
/// variant names the side at fault.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The side sending the body paused longer than allowed between reads.
    #[error("{0:?} paused longer than allowed while sending a body")]
    ReadTimeout(Side),
    /// The side receiving the body did not take bytes within the allowed pause.
    #[error("{0:?} stopped taking the body")]
    WriteStalled(Side),
    /// The body's framing was malformed (bad chunked encoding, RFC 9112 §7.1).
    #[error("{0:?} sent a malformed body: {1}")]
    BadFraming(Side, &'static str),
    /// The side closed before the body ended.
    #[error("{0:?} closed before the end of the body")]
    Eof(Side),
    /// A read or write on the side failed.
    #[error("{0:?}: {1}")]
    Io(Side, io::Error),
    /// The side receiving a request body answered with an error before its end (RFC 9112
    /// §9.5): the rest is not sent.
    #[error("{0:?} refused the rest of the body with an early error answer")]
    Refused(Side),
}

impl MessageError {
    /// The side at fault.
    pub fn side(&self) -> Side {
        match self {
            MessageError::ReadTimeout(s)
            | MessageError::WriteStalled(s)
            | MessageError::BadFraming(s, _)
            | MessageError::Eof(s)
            | MessageError::Io(s, _)
            | MessageError::Refused(s) => *s,
        }
    }
}

/// Why an upstream connect failed: the `error` label of `tcp_connect_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// `ECONNREFUSED`: nothing listens on the endpoint.
    Refused,
    /// No answer within `connect_timeout_ms`.
    Timeout,
    /// `EHOSTUNREACH` / `ENETUNREACH`.
    Unreachable,
    /// Anything else (fd exhaustion, …).
    Other,
}

impl ConnectErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ConnectErrorKind; 4] = [
        ConnectErrorKind::Refused,
        ConnectErrorKind::Timeout,
        ConnectErrorKind::Unreachable,
        ConnectErrorKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectErrorKind::Refused => "refused",
            ConnectErrorKind::Timeout => "timeout",
            ConnectErrorKind::Unreachable => "unreachable",
            ConnectErrorKind::Other => "other",
        }
    }
}

/// Why a connect failed, with the OS error when there is one.
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr}: connect {}: {detail}", kind.as_str())]
pub struct ConnectError {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The metric label.
    pub kind: ConnectErrorKind,
    /// Human-readable cause.
    pub detail: String,
    /// The handshake had completed and the upstream then reset the connection before the
    /// connect was seen to finish (`ECONNRESET` from `SO_ERROR`; a reset answering the SYN
    /// is `ECONNREFUSED`): the upstream accepted the connection. Whether a dial ends so or
    /// connects and then reads the reset is a race of the two threads' scheduling.
    pub reset: bool,
}

impl ConnectError {
    /// Classifies an OS error from connecting to `addr`.
    pub fn from_io(addr: SocketAddr, e: io::Error) -> ConnectError {
        let kind = match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectErrorKind::Refused,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EADDRNOTAVAIL) => {
                ConnectErrorKind::Unreachable
            }
            Some(libc::ETIMEDOUT) => ConnectErrorKind::Timeout,
            _ => ConnectErrorKind::Other,
        };
        ConnectError {
            addr,
            kind,
            detail: e.to_string(),
            reset: e.raw_os_error() == Some(libc::ECONNRESET),
        }
    }
}

/// Why a request got no upstream response head (HTTP/2 streams and the h2→h1 bridge).
#[derive(Debug, Clone)]
pub enum Failure {
    /// The proxy answers with this status (gRPC clients: the matching `grpc-status`).
    Status(u16, &'static str),
    /// The upstream reset the stream: the client's stream is reset with the same reason.
    Reset(h2::Reason),
}

/// Why an original-destination listener refused a connection: the `reason` label of
/// `tcp_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The original destination is the listener itself: nothing redirected the connection
    /// (a client dialled the proxy's port), or it was redirected back to the proxy. Proxying
    /// it would connect the proxy to itself.
    Loop,
    /// The kernel knows no original destination (no NAT entry for the connection).
    NoOriginalDst,
    /// An opaque connection on a listener with no upstream endpoint: its upstream names have
    /// not resolved (yet).
    NoEndpoints,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 3] = [Refusal::Loop, Refusal::NoOriginalDst, Refusal::NoEndpoints];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Loop => "loop",
            Refusal::NoOriginalDst => "no_original_dst",
            Refusal::NoEndpoints => "no_endpoints",
        }
    }
}
