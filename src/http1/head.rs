//! Request and response heads: httparse on the caller's buffer, then the framing rules of
//! RFC 9112 §6 checked strictly, because a proxy that frames a message differently from the
//! server behind it is the classic request-smuggling vector.
//!
//! Rejected (400 unless noted): Content-Length together with Transfer-Encoding; more than one
//! Content-Length; a Content-Length that is not plain digits; a Transfer-Encoding whose final
//! coding is not `chunked` (requests), or any Transfer-Encoding in an HTTP/1.0 request;
//! obs-fold, whitespace before a colon and bare CR (httparse refuses them); a head larger than
//! `max_head_bytes` (431), a target longer than that (414), more than `max_headers` (431).

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
    /// Malformed or ambiguous (smuggling) request.
    Bad(&'static str),
}

impl HeadError {
    /// The status a proxy answers with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::Bad(_) => 400,
        }
    }

    /// Short reason, for the `sidewire-error` header and logs.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::UriTooLong => "request target too long",
            HeadError::TooManyHeaders => "too many header fields",
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

/// A parsed request head.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// Method token.
    pub method: &'b str,
    /// Request target as sent.
    pub target: &'b str,
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
    /// `Expect: 100-continue`.
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

    let mut content_length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut has_upgrade = false;
    let mut upgrade_h2c = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::Bad("duplicate Content-Length"));
            }
            content_length =
                Some(parse_length(h.value).ok_or(HeadError::Bad("invalid Content-Length"))?);
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
            expect_continue |= trim(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
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
    // An `h2c` upgrade is not offered to the upstream: the proxy speaks HTTP/1.1 on this hop,
    // so `Upgrade: h2c` (and `HTTP2-Settings`, listed in `Connection`) are stripped.
    let upgrade = method == "CONNECT" || (has_upgrade && conn_upgrade && !upgrade_h2c);
    let keep_alive = if minor == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(Some(Request {
        method,
        target,
        minor,
        headers,
        head_len,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
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
    let minor = resp.version.ok_or(HeadError::Bad("no version"))?;
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
        headers,
        head_len,
        framing,
        keep_alive,
    }))
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
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap(),
            Some((Framing::Length(5), true, false, false))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Some((Framing::Chunked, true, false, false))
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap()
                .unwrap()
                .0,
            Framing::Chunked
        );
        let keep_alive = |raw: &[u8]| parse(raw).unwrap().unwrap().1;
        assert!(!keep_alive(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(
            !keep_alive(b"GET / HTTP/1.0\r\n\r\n"),
            "1.0 closes by default"
        );
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(
            parse(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap()
                .2
        );
        assert!(
            !parse(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap()
                .2,
            "Upgrade without Connection: upgrade"
        );
        assert!(
            parse(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
                .unwrap()
                .unwrap()
                .2
        );
        assert!(
            parse(b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
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
    fn h2c_upgrade_is_not_an_upgrade_on_this_hop() {
        let raw = b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n";
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
        assert!(
            kept.is_empty(),
            "Connection, Upgrade and HTTP2-Settings all stripped: {kept:?}"
        );
    }

    #[test]
    fn smuggling_vectors_are_rejected() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded: value\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX-Bare: cr\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n",
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
        }
    }

    #[test]
    fn limits_map_to_431_and_414() {
        let limits = Limits {
            max_head_bytes: 256,
            max_headers: 4,
        };
        let mut st = [httparse::EMPTY_HEADER; 100];
        let long_target = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert_eq!(
            parse_request(long_target.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::UriTooLong
        );
        let complete = format!("{long_target}\r\n");
        assert_eq!(
            parse_request(complete.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::UriTooLong
        );
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "b".repeat(300));
        assert_eq!(
            parse_request(big.as_bytes(), limits, &mut st).unwrap_err(),
            HeadError::TooLarge
        );
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
        let e = parse_request(many.as_bytes(), limits, &mut st).unwrap_err();
        assert_eq!((e, e.status()), (HeadError::TooManyHeaders, 431));
    }

    fn resp(raw: &[u8], head: bool) -> Result<Option<(u16, Framing, bool)>, HeadError> {
        let mut st = [httparse::EMPTY_HEADER; 32];
        parse_response(raw, head, 16 * 1024, &mut st)
            .map(|o| o.map(|r| (r.code, r.framing, r.keep_alive)))
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
