//! Request and response heads: httparse on the caller's buffer, then the framing rules of
//! RFC 9112 §6 checked strictly, because a proxy that frames a message differently from the
//! server behind it is the classic request-smuggling vector.
//!
//! Rejected (400 unless noted): Content-Length together with Transfer-Encoding; more than one
//! Content-Length; a Content-Length that is not plain digits; a Transfer-Encoding whose final
//! coding is not `chunked` (requests), or any Transfer-Encoding in an HTTP/1.0 request;
//! obs-fold, whitespace before a colon and bare CR (httparse refuses them); a head larger than
//! `max_head_bytes` (431), a target longer than that (414), more than `max_headers` (431).
//!
//! The request target and Host (RFC 9112 §3.2, §3.3) are checked as strictly, because the
//! proxy routes by them and a server behind it may read an ambiguous pair differently: an
//! HTTP/1.1 request without Host, any request with more than one Host line or an invalid Host
//! (400); a target that is not origin-form (`/path?query`), absolute-form with an `http` or
//! `https` URI, authority-form (`host:port`, CONNECT only) or asterisk-form (`*`, OPTIONS only),
//! or that holds a character RFC 3986 does not allow there (400). See [`Target`] for what is
//! forwarded and routed by.
//!
//! Where this parser (with httparse and [`super::chunked`]) deliberately differs from a strict
//! reference, h11 (`tests/h1_differential.rs` fuzzes the two against each other; README "HTTP/1
//! differential fuzzing"): stricter on HTTP versions other than 1.0/1.1, CTLs in field values,
//! Content-Length with Transfer-Encoding, repeated, listed or overflowing Content-Length,
//! Transfer-Encoding in HTTP/1.0, obs-fold, targets, Host and expectations (all above), and
//! on bare CR/LF in chunked framing; looser on codings before the final `chunked` (RFC 9112
//! §6.1), an empty line before the request line (RFC 9112 §2.2 SHOULD ignore it) and BWS
//! before a chunk extension (RFC 9112 §7.1.1). A bare LF ends a head line (RFC 9112 §2.2 MAY),
//! as in h11.

use std::borrow::Cow;

use httparse::{Header, Status};

use crate::config::Limits;

/// Why a request head was refused; each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Head over `max_head_bytes`.
    TooLarge,
    /// Request target alone over the head limit.
    UriTooLong,
    /// More than `max_headers` header fields.
    TooManyHeaders,
    /// An `Expect` member other than `100-continue` in an HTTP/1.1 request (RFC 9110
    /// §10.1.1): 417.
    UnsupportedExpectation,
    /// Malformed or ambiguous (smuggling) request.
    Bad(&'static str),
}

impl HeadError {
    /// The status a proxy answers with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::UnsupportedExpectation => 417,
            HeadError::Bad(_) => 400,
        }
    }

    /// Short reason, for the `sidewire-error` header and logs.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::UriTooLong => "request target too long",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::UnsupportedExpectation => "unsupported expectation",
            HeadError::Bad(why) => why,
        }
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query` (§3.2.1).
    Origin,
    /// `http://authority/path?query` (§3.2.2).
    Absolute,
    /// `host:port`, for CONNECT only (§3.2.3).
    Authority,
    /// `*`, for OPTIONS only (§3.2.4).
    Asterisk,
}

/// A request target, checked, and what the proxy does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'b> {
    /// Which of the four forms it is.
    pub form: TargetForm,
    /// The request-target to send upstream, which is an origin server: as received, except
    /// that absolute-form becomes origin-form (§3.2.1: path and query, `/` for an empty
    /// path), or `*` for an OPTIONS with an empty path and no query (§3.2.4).
    pub forward: Cow<'b, str>,
    /// The target URI's authority (`host[:port]`) when the target holds one (absolute- and
    /// authority-form): it wins over the Host field (§3.2.2, §3.3).
    pub authority: Option<&'b str>,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// Method token.
    pub method: &'b str,
    /// Request target as sent.
    pub target: &'b str,
    /// The checked target: its form, what to forward, its authority.
    pub checked: Target<'b>,
    /// The target URI's authority (RFC 9112 §3.3), to route by: the target's own for
    /// absolute- and authority-form, else the Host field value (`Some("")` for an empty
    /// Host, `None` for none, which only HTTP/1.0 may send).
    pub authority: Option<&'b str>,
    /// Minor version: 0 or 1.
    pub minor: u8,
    /// Header fields (in the caller's storage).
    pub headers: &'h [Header<'b>],
    /// Head length in bytes (the body starts here).
    pub head_len: usize,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request (an HTTP/1.0 request's is ignored, RFC
    /// 9110 §10.1.1).
    pub expect_continue: bool,
    /// An `Upgrade` request (with `Connection: upgrade`), or CONNECT.
    pub upgrade: bool,
}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more (the caller enforces
/// `max_head_bytes` on what it buffers through this same call).
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    limits: Limits,
    storage: &'h mut [Header<'b>],
) -> Result<Option<Request<'b, 'h>>, HeadError> {
    let cap = limits.max_headers.min(storage.len());
    let mut req = httparse::Request::new(&mut storage[..cap]);
    let head_len = match req.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(too_large(buf, limits));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Bad("unsupported HTTP version")),
        Err(httparse::Error::Token) => return Err(HeadError::Bad("invalid method or token")),
        Err(httparse::Error::HeaderName) => return Err(HeadError::Bad("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(HeadError::Bad("invalid header value")),
        Err(httparse::Error::NewLine) => {
            return Err(HeadError::Bad("bare CR or invalid line ending"))
        }
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    };
    if head_len > limits.max_head_bytes {
        return Err(too_large(buf, limits));
    }
    let method = req.method.ok_or(HeadError::Bad("no method"))?;
    let target = req.path.ok_or(HeadError::Bad("no target"))?;
    let minor = req.version.ok_or(HeadError::Bad("no version"))?;
    let headers: &'h [Header<'b>] = req.headers;

    let checked = check_target(method, target)?;

    let mut content_length: Option<u64> = None;
    let mut host: Option<&'b [u8]> = None;
    let mut te: Option<&[u8]> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut has_upgrade = false;
    let mut upgrade_h2c = false;
    let mut expect_continue = false;
    let mut unknown_expectation = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::Bad("duplicate Content-Length"));
            }
            content_length =
                Some(parse_length(h.value).ok_or(HeadError::Bad("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 9112 §3.2: more than one Host line, or an invalid value, is a 400.
            if host.is_some() {
                return Err(HeadError::Bad("more than one Host"));
            }
            let v = trim(h.value);
            if !valid_host(v, false) {
                return Err(HeadError::Bad("invalid Host"));
            }
            host = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(HeadError::Bad("duplicate Transfer-Encoding"));
            }
            te = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = trim(token);
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                conn_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
            upgrade_h2c |= trim(h.value).eq_ignore_ascii_case(b"h2c");
        } else if name.eq_ignore_ascii_case("expect") {
            // `Expect = #expectation`: a list, possibly over several lines.
            for member in h.value.split(|&b| b == b',').map(trim) {
                if member.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else if !member.is_empty() {
                    unknown_expectation = true;
                }
            }
        }
    }
    // RFC 9112 §3.2: every HTTP/1.1 request carries Host (an absolute-form target too, even
    // though its own authority then wins).
    if host.is_none() && minor == 1 {
        return Err(HeadError::Bad("missing Host"));
    }
    let host = host.map(|v| std::str::from_utf8(v).expect("invariant: a valid Host is ASCII"));
    let authority = checked.authority.or(host);
    let framing = match (te, content_length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"))
        }
        (Some(_), None) if minor == 0 => {
            return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (Some(v), None) => {
            if !final_coding_is_chunked(v) {
                return Err(HeadError::Bad("Transfer-Encoding without final chunked"));
            }
            Framing::Chunked
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0
    // request; one it cannot meet MAY get 417. Expect came with HTTP/1.1, so an HTTP/1.0
    // request's is ignored whole (and forwarded as it is).
    if minor == 0 {
        expect_continue = false;
    } else if unknown_expectation {
        return Err(HeadError::UnsupportedExpectation);
    }
    // An `h2c` upgrade is not offered to the upstream: the proxy speaks HTTP/1.1 on this hop,
    // so `Upgrade: h2c` (and `HTTP2-Settings`, listed in `Connection`) are stripped.
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored (and stripped: hop-by-hop).
    let upgrade =
        method == "CONNECT" || (minor == 1 && has_upgrade && conn_upgrade && !upgrade_h2c);
    let keep_alive = if minor == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(Some(Request {
        method,
        target,
        checked,
        authority,
        minor,
        headers,
        head_len,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// Checks `target` for `method` (RFC 9112 §3.2): which form it is, what to forward, and its
/// authority.
///
/// Errors: a form the method may not use (asterisk-form but for OPTIONS, authority-form but
/// for CONNECT, CONNECT with another form), an absolute-form URI that is not `http`/`https`,
/// has no host or has userinfo (RFC 9110 §4.2.1, §4.2.4), or a character outside RFC 3986's
/// grammar (a fragment `#`, `"`, `<`, `{`, non-ASCII, a `%` not followed by two hex digits…).
pub fn check_target<'b>(method: &str, target: &'b str) -> Result<Target<'b>, HeadError> {
    let t = target.as_bytes();
    let plain = |form, authority| {
        Ok(Target {
            form,
            forward: Cow::Borrowed(target),
            authority,
        })
    };
    if method == "CONNECT" {
        // §3.2.3: CONNECT takes authority-form only, and its port is required (RFC 9110
        // §9.3.6).
        if !valid_host(t, true) || t.first() == Some(&b':') {
            return Err(HeadError::Bad("CONNECT target is not host:port"));
        }
        return plain(TargetForm::Authority, Some(target));
    }
    if target == "*" {
        if method != "OPTIONS" {
            return Err(HeadError::Bad("asterisk-form target without OPTIONS"));
        }
        return plain(TargetForm::Asterisk, None);
    }
    if t.first() == Some(&b'/') {
        if !valid_path_query(t) {
            return Err(HeadError::Bad("invalid request target"));
        }
        return plain(TargetForm::Origin, None);
    }
    // §3.2.2: absolute-form. A reverse proxy has no business with other schemes.
    let scheme_len = t.iter().position(|&b| b == b':').unwrap_or(0);
    let scheme = &t[..scheme_len];
    let after = &t[scheme_len..];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https"))
        || !after.starts_with(b"://")
    {
        return Err(if valid_host(t, true) {
            HeadError::Bad("authority-form target without CONNECT")
        } else {
            HeadError::Bad("invalid request target")
        });
    }
    let rest = &target[scheme_len + 3..];
    let auth_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(auth_len);
    if authority.contains('@') {
        // RFC 9110 §4.2.4: userinfo is deprecated and used to obscure the authority.
        return Err(HeadError::Bad("userinfo in request target"));
    }
    // RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
    if authority.is_empty()
        || authority.starts_with(':')
        || !valid_host(authority.as_bytes(), false)
    {
        return Err(HeadError::Bad("invalid authority in request target"));
    }
    if !valid_path_query(path_query.as_bytes()) {
        return Err(HeadError::Bad("invalid request target"));
    }
    let forward = if path_query.is_empty() {
        // §3.2.4: the last proxy sends `*` for an OPTIONS with an empty path and no query.
        Cow::Borrowed(if method == "OPTIONS" { "*" } else { "/" })
    } else if path_query.starts_with('?') {
        Cow::Owned(format!("/{path_query}"))
    } else {
        Cow::Borrowed(path_query)
    };
    Ok(Target {
        form: TargetForm::Absolute,
        forward,
        authority: Some(authority),
    })
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Whether every byte of `s` is one of `allowed` or a `%` followed by two hex digits
/// (RFC 3986 `pct-encoded`).
fn all_pct_or(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = |j: usize| s.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 `path-abempty [ "?" query ]`: the path and query of an origin-form or
/// absolute-form target (no fragment: RFC 9112 §3.2 has none).
fn valid_path_query(s: &[u8]) -> bool {
    all_pct_or(s, |b| {
        is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@' | b'/' | b'?')
    })
}

/// RFC 9110 §7.2 `Host = uri-host [ ":" port ]` (RFC 3986 §3.2.2, §3.2.3): an IP literal in
/// brackets or a reg-name (IPv4 addresses are reg-names by their characters), then an
/// optional `:` and digits. `port_required`: the port must be there and non-empty (CONNECT's
/// authority-form). An empty value is a valid Host (a target URI without authority).
pub fn valid_host(v: &[u8], port_required: bool) -> bool {
    let (host_ok, port) = if let Some(lit) = v.strip_prefix(b"[") {
        let Some(end) = lit.iter().position(|&b| b == b']') else {
            return false;
        };
        let port = match &lit[end + 1..] {
            [] => None,
            [b':', p @ ..] => Some(p),
            _ => return false,
        };
        (valid_ip_literal(&lit[..end]), port)
    } else {
        let (host, port) = match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        (
            all_pct_or(host, |b| is_unreserved(b) || is_sub_delim(b)),
            port,
        )
    };
    let port_ok = match port {
        None => !port_required,
        Some(p) => p.iter().all(u8::is_ascii_digit) && !(port_required && p.is_empty()),
    };
    host_ok && port_ok
}

/// RFC 3986 `IPv6address / IPvFuture`, the inside of an IP literal's brackets.
fn valid_ip_literal(lit: &[u8]) -> bool {
    if let Some(future) = lit.strip_prefix(b"v").or_else(|| lit.strip_prefix(b"V")) {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let hex = future.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match future[hex..].split_first() {
            Some((b'.', tail)) => {
                hex > 0
                    && !tail.is_empty()
                    && tail
                        .iter()
                        .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':')
            }
            _ => false,
        };
    }
    std::str::from_utf8(lit)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
        .is_some()
}

/// A request line that alone passes the limit (its target, in practice) is a 414, any other
/// oversized head a 431.
fn too_large(buf: &[u8], limits: Limits) -> HeadError {
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_len > limits.max_head_bytes {
        HeadError::UriTooLong
    } else {
        HeadError::TooLarge
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct Response<'b, 'h> {
    /// Status code.
    pub code: u16,
    /// Minor version: 0 or 1.
    pub minor: u8,
    /// The reason phrase's bytes as the upstream sent them (RFC 9112 §4: HTAB, SP, visible
    /// ASCII and obs-text, so never CR or LF); empty when it sent none.
    pub reason: &'b [u8],
    /// Header fields (in the caller's storage).
    pub headers: &'h [Header<'b>],
    /// Head length in bytes.
    pub head_len: usize,
    /// Body framing (RFC 9112 §6.3).
    pub framing: Framing,
    /// Whether the upstream connection may carry another request.
    pub keep_alive: bool,
}

/// Parses a response head to a request whose method was `HEAD` (`head_request`).
/// `Ok(None)`: incomplete. Responses get the same strictness as requests, because a
/// compromised or buggy upstream can desynchronise a pooled connection just as well.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    head_request: bool,
    max_head_bytes: usize,
    storage: &'h mut [Header<'b>],
) -> Result<Option<Response<'b, 'h>>, HeadError> {
    let mut resp = httparse::Response::new(storage);
    let head_len = match resp.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() > max_head_bytes => return Err(HeadError::TooLarge),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Bad("malformed response head")),
    };
    if head_len > max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let code = resp.code.ok_or(HeadError::Bad("no status code"))?;
    // RFC 9110 §15: every valid status code is within 100..=599 (`099` or `600` would go out
    // as an invalid status line, or fail an HTTP/2 client's `:status`).
    if !(100..=599).contains(&code) {
        return Err(HeadError::Bad("status code outside 100-599"));
    }
    let minor = resp.version.ok_or(HeadError::Bad("no version"))?;
    let reason = raw_reason(buf);
    let headers: &'h [Header<'b>] = resp.headers;
    let mut content_length = None;
    let mut te: Option<&[u8]> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::Bad("duplicate Content-Length in response"));
            }
            content_length = Some(
                parse_length(h.value)
                    .ok_or(HeadError::Bad("invalid Content-Length in response"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(HeadError::Bad("duplicate Transfer-Encoding in response"));
            }
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = trim(token);
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // RFC 9112 §6.3, in order: no body for HEAD, 1xx, 204, 304; then TE, then CL, else EOF.
    let framing = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Empty
    } else {
        match (te, content_length) {
            (Some(_), Some(_)) => {
                return Err(HeadError::Bad(
                    "both Content-Length and Transfer-Encoding in response",
                ))
            }
            // A non-chunked final coding: the body runs to the connection's close.
            (Some(v), None) if final_coding_is_chunked(v) && minor == 1 => Framing::Chunked,
            (Some(_), None) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose
        && if minor == 0 {
            conn_keep_alive && !conn_close
        } else {
            !conn_close
        };
    Ok(Some(Response {
        code,
        minor,
        reason,
        headers,
        head_len,
        framing,
        keep_alive,
    }))
}

/// The reason phrase of the status line at the start of `buf`, which httparse has accepted
/// (`HTTP/1.x SP 3DIGIT [SP reason] CRLF`, bare LF allowed): its raw bytes, obs-text
/// included, where httparse gives an empty string for a phrase that is not ASCII.
fn raw_reason(buf: &[u8]) -> &[u8] {
    let line = &buf[..buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.get(12) {
        Some(b' ') => &line[13..],
        _ => b"",
    }
}

/// `1*DIGIT`, no sign, no spaces inside, no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn final_coding_is_chunked(v: &[u8]) -> bool {
    let last = v
        .rsplit(|&b| b == b',')
        .next()
        .map(trim)
        .unwrap_or_default();
    let chunked_count = v
        .split(|&b| b == b',')
        .filter(|t| trim(t).eq_ignore_ascii_case(b"chunked"))
        .count();
    last.eq_ignore_ascii_case(b"chunked") && chunked_count == 1
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

/// Whether a header is hop-by-hop and must not be forwarded (RFC 9110 §7.6.1): the fixed set,
/// plus every name listed in `Connection`. `Upgrade` is kept only when upgrading; `TE` only
/// when it is exactly `trailers`.
pub fn is_hop_by_hop(h: &Header<'_>, connection_listed: &[&[u8]], upgrading: bool) -> bool {
    let n = h.name;
    if n.eq_ignore_ascii_case("upgrade") {
        return !upgrading;
    }
    if n.eq_ignore_ascii_case("te") {
        return !trim(h.value).eq_ignore_ascii_case(b"trailers");
    }
    n.eq_ignore_ascii_case("connection")
        || n.eq_ignore_ascii_case("keep-alive")
        || n.eq_ignore_ascii_case("proxy-connection")
        || n.eq_ignore_ascii_case("proxy-authenticate")
        || n.eq_ignore_ascii_case("proxy-authorization")
        || connection_listed
            .iter()
            .any(|l| n.as_bytes().eq_ignore_ascii_case(l) && !l.eq_ignore_ascii_case(b"upgrade"))
}

/// The header names listed in the `Connection` fields of `headers`.
pub fn connection_listed<'b>(headers: &[Header<'b>]) -> Vec<&'b [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<(Framing, bool, bool, bool)>, HeadError> {
        let mut st = [httparse::EMPTY_HEADER; 100];
        parse_request(raw, Limits::default(), &mut st)
            .map(|o| o.map(|r| (r.framing, r.keep_alive, r.upgrade, r.expect_continue)))
    }

    fn bad(raw: &[u8]) -> HeadError {
        parse(raw).expect_err(&String::from_utf8_lossy(raw))
    }

    #[test]
    fn framing_and_connection_semantics() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap(),
            Some((Framing::Empty, true, false, false))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello").unwrap(),
            Some((Framing::Length(5), true, false, false))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Some((Framing::Chunked, true, false, false))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap()
                .unwrap()
                .0,
            Framing::Chunked
        );
        let keep_alive = |raw: &[u8]| parse(raw).unwrap().unwrap().1;
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(
            !keep_alive(b"GET / HTTP/1.0\r\n\r\n"),
            "1.0 closes by default"
        );
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(
            parse(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .unwrap()
            .unwrap()
            .2
        );
        assert!(
            !parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap()
                .2,
            "Upgrade without Connection: upgrade"
        );
        assert!(
            !parse(b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap()
                .2,
            "Upgrade in HTTP/1.0 is ignored"
        );
        assert!(
            parse(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
                .unwrap()
                .unwrap()
                .2
        );
        assert!(
            parse(
                b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
            )
            .unwrap()
            .unwrap()
            .3
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap(),
            None,
            "incomplete"
        );
    }

    #[test]
    fn expectations_rfc9110_10_1_1() {
        let expect = |raw: &str| parse(raw.as_bytes()).map(|r| r.unwrap().3);
        let put = |minor: u8, lines: &str| {
            format!("PUT /x HTTP/1.{minor}\r\nHost: a\r\nContent-Length: 3\r\n{lines}\r\n")
        };
        assert_eq!(expect(&put(1, "Expect: 100-Continue\r\n")), Ok(true));
        assert_eq!(expect(&put(1, "Expect: , 100-continue ,\r\n")), Ok(true));
        assert_eq!(expect(&put(1, "")), Ok(false));
        assert_eq!(expect(&put(1, "Expect: \r\n")), Ok(false), "an empty list");
        assert_eq!(
            expect(&put(0, "Expect: 100-continue\r\n")),
            Ok(false),
            "ignored in HTTP/1.0"
        );
        assert_eq!(expect(&put(0, "Expect: x-unknown\r\n")), Ok(false));
        for lines in [
            "Expect: 200-ok\r\n",
            "Expect: 100-continue, x-trace\r\n",
            "Expect: 100-continue\r\nExpect: x-trace=1\r\n",
            "Expect: 100-continue=1\r\n",
        ] {
            let e = expect(&put(1, lines)).expect_err(lines);
            assert_eq!((e, e.status()), (HeadError::UnsupportedExpectation, 417));
        }
    }

    #[test]
    fn h2c_upgrade_is_not_an_upgrade_on_this_hop() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n";
        let mut st = [httparse::EMPTY_HEADER; 16];
        let r = parse_request(raw, Limits::default(), &mut st)
            .unwrap()
            .unwrap();
        assert!(!r.upgrade);
        let listed = connection_listed(r.headers);
        let kept: Vec<&str> = r
            .headers
            .iter()
            .filter(|h| !is_hop_by_hop(h, &listed, r.upgrade))
            .map(|h| h.name)
            .collect();
        assert_eq!(
            kept,
            ["Host"],
            "Connection, Upgrade and HTTP2-Settings all stripped"
        );
    }

    #[test]
    fn smuggling_vectors_are_rejected() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded: value\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX-Bare: cr\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHo\x00st: a\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ];
        for raw in cases {
            let e = bad(raw);
            assert_eq!(
                e.status(),
                400,
                "{:?} -> {e:?}",
                String::from_utf8_lossy(raw)
            );
            assert!(
                !e.reason().contains("Host"),
                "refused for its framing: {e:?}"
            );
        }
    }

    /// (method, target) → (form, forwarded target, authority), or the refusal.
    fn target(method: &str, t: &str) -> Result<(TargetForm, String, Option<String>), HeadError> {
        check_target(method, t).map(|c| {
            (
                c.form,
                c.forward.into_owned(),
                c.authority.map(str::to_string),
            )
        })
    }

    #[test]
    fn the_four_target_forms_rfc9112_3_2() {
        use TargetForm::*;
        let ok = |m, t, form, fwd: &str, auth: Option<&str>| {
            assert_eq!(
                target(m, t),
                Ok((form, fwd.to_string(), auth.map(str::to_string))),
                "{m} {t}"
            );
        };
        ok("GET", "/", Origin, "/", None);
        ok(
            "GET",
            "/a/b;c=d?x=1&y=%20z/?",
            Origin,
            "/a/b;c=d?x=1&y=%20z/?",
            None,
        );
        ok(
            "GET",
            "/~user/@:!$&'()*+,=-._",
            Origin,
            "/~user/@:!$&'()*+,=-._",
            None,
        );
        ok(
            "GET",
            "http://a.example/p?q",
            Absolute,
            "/p?q",
            Some("a.example"),
        );
        ok(
            "GET",
            "HTTPS://A.example:8443",
            Absolute,
            "/",
            Some("A.example:8443"),
        );
        ok(
            "GET",
            "http://a.example?q=1",
            Absolute,
            "/?q=1",
            Some("a.example"),
        );
        ok("GET", "http://[::1]:80/x", Absolute, "/x", Some("[::1]:80"));
        ok("GET", "http://10.0.0.1/x", Absolute, "/x", Some("10.0.0.1"));
        ok(
            "OPTIONS",
            "http://a.example:8001",
            Absolute,
            "*",
            Some("a.example:8001"),
        );
        ok(
            "OPTIONS",
            "http://a.example/",
            Absolute,
            "/",
            Some("a.example"),
        );
        ok("OPTIONS", "*", Asterisk, "*", None);
        ok(
            "CONNECT",
            "db.internal:5432",
            Authority,
            "db.internal:5432",
            Some("db.internal:5432"),
        );
        ok(
            "CONNECT",
            "[2001:db8::1]:443",
            Authority,
            "[2001:db8::1]:443",
            Some("[2001:db8::1]:443"),
        );
        for (m, t) in [
            ("GET", "*"),
            ("POST", "*"),
            ("GET", "a.example:443"),
            ("CONNECT", "/"),
            ("CONNECT", "http://a.example:443/"),
            ("CONNECT", "a.example"),
            ("CONNECT", "a.example:"),
            ("CONNECT", ":443"),
            ("CONNECT", "*"),
            ("GET", "http://user:pw@a.example/"),
            ("GET", "http://@a.example/"),
            ("GET", "ftp://a.example/"),
            ("GET", "http:/a.example/"),
            ("GET", "http://"),
            ("GET", "http:///x"),
            ("GET", "http://:80/x"),
            ("GET", "http://a b/"),
            ("GET", "http://a.example:8o/"),
            ("GET", "http://[::1/"),
            ("GET", "http://a.example/#frag"),
            ("GET", "/a#frag"),
            ("GET", "/a\"b"),
            ("GET", "/<script>"),
            ("GET", "/a{b}"),
            ("GET", "/a|b"),
            ("GET", "/a\\b"),
            ("GET", "/a^b"),
            ("GET", "/a`b"),
            ("GET", "/%zz"),
            ("GET", "/%4"),
            ("GET", "/caf\u{e9}"),
            ("GET", "a/b"),
            ("GET", "?q"),
        ] {
            let e = target(m, t).expect_err(&format!("{m} {t}"));
            assert_eq!(e.status(), 400, "{m} {t}");
        }
    }

    #[test]
    fn host_rules_rfc9112_3_2() {
        let req = |raw: &str| {
            let mut st = [httparse::EMPTY_HEADER; 16];
            parse_request(raw.as_bytes(), Limits::default(), &mut st)
                .map(|r| r.unwrap().authority.map(str::to_string))
        };
        let auth = |raw: &str| req(raw).unwrap_or_else(|e| panic!("{raw:?}: {e:?}"));
        assert_eq!(
            auth("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            auth("GET / HTTP/1.1\r\nHost:  a.example:80 \r\n\r\n").as_deref(),
            Some("a.example:80")
        );
        assert_eq!(
            auth("GET / HTTP/1.1\r\nHost: \r\n\r\n").as_deref(),
            Some(""),
            "empty Host is valid"
        );
        assert_eq!(
            auth("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(
            auth("GET / HTTP/1.1\r\nHost: [v1.fe80::a+en1]\r\n\r\n").as_deref(),
            Some("[v1.fe80::a+en1]")
        );
        assert_eq!(
            auth("GET / HTTP/1.0\r\n\r\n"),
            None,
            "HTTP/1.0 may omit Host"
        );
        // §3.2.2: an absolute-form target's authority wins over Host.
        assert_eq!(
            auth("GET http://in.example/ HTTP/1.1\r\nHost: out.example\r\n\r\n").as_deref(),
            Some("in.example")
        );
        for raw in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://in.example/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example:80:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [not-ipv6]\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example%\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: http://a.example\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a b\r\n\r\n",
        ] {
            let e = req(raw).expect_err(raw);
            assert_eq!(e.status(), 400, "{raw:?}");
        }
    }

    #[test]
    fn limits_map_to_431_and_414() {
        let limits = Limits {
            max_head_bytes: 256,
            max_headers: 4,
        };
        let mut st = [httparse::EMPTY_HEADER; 100];
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "a".repeat(300));
        assert_eq!(
            parse_request(long_target.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::UriTooLong
        );
        let complete = format!("{long_target}\r\n");
        assert_eq!(
            parse_request(complete.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::UriTooLong
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n",
            "b".repeat(300)
        );
        assert_eq!(
            parse_request(big.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::TooLarge
        );
        let many = "GET / HTTP/1.1\r\nHost: a\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
        let e = parse_request(many.as_bytes(), limits, &mut st).unwrap_err();
        assert_eq!((e, e.status()), (HeadError::TooManyHeaders, 431));
    }

    fn resp(raw: &[u8], head: bool) -> Result<Option<(u16, Framing, bool)>, HeadError> {
        let mut st = [httparse::EMPTY_HEADER; 32];
        parse_response(raw, head, 16 * 1024, &mut st)
            .map(|o| o.map(|r| (r.code, r.framing, r.keep_alive)))
    }

    /// RFC 9110 §15: status codes outside 100..=599 are invalid (review: `099` went out as
    /// `HTTP/1.1 99 …`, which clients refuse).
    #[test]
    fn status_codes_outside_100_to_599_are_refused() {
        for code in ["099", "000", "600", "999"] {
            let raw = format!("HTTP/1.1 {code} Weird\r\ncontent-length: 0\r\n\r\n");
            assert!(resp(raw.as_bytes(), false).is_err(), "{code}");
        }
        for code in [100u16, 599] {
            let raw = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
            assert_eq!(resp(raw.as_bytes(), false).unwrap().unwrap().0, code);
        }
    }

    #[test]
    fn response_framing_follows_rfc9112() {
        let ok = |raw: &[u8], head| resp(raw, head).unwrap().unwrap();
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false),
            (200, Framing::Length(3), true)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            (200, Framing::Empty, true),
            "HEAD"
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
                false
            )
            .1,
            Framing::Empty
        );
        assert_eq!(
            ok(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).1,
            Framing::Empty
        );
        assert_eq!(
            ok(b"HTTP/1.1 100 Continue\r\n\r\n", false).1,
            Framing::Empty
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .1,
            Framing::Chunked
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\n\r\nbody until close", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false
            ),
            (200, Framing::Empty, false)
        );
        assert!(
            !ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false).2,
            "1.0 closes"
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .map(|r| r.0),
            None
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                resp(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hop_by_hop_headers() {
        let mut st = [httparse::EMPTY_HEADER; 16];
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n";
        let r = parse_request(raw, Limits::default(), &mut st)
            .unwrap()
            .unwrap();
        let listed = connection_listed(r.headers);
        let kept: Vec<&str> = r
            .headers
            .iter()
            .filter(|h| !is_hop_by_hop(h, &listed, false))
            .map(|h| h.name)
            .collect();
        assert_eq!(kept, ["Host", "TE", "X-Kept"]);
    }
}
