//! HTTP probes over peeked bytes: the HTTP/2 prior-knowledge preface and an HTTP/1.x request
//! line. Pure functions, no allocation.

use super::probe::Probe;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `Yes` once the full 24-byte preface is there; `NeedMore` while `buf` is a proper prefix.
pub fn probe_h2(buf: &[u8]) -> Probe<()> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        Probe::No
    } else if n == H2_PREFACE.len() {
        Probe::Yes(())
    } else {
        Probe::NeedMore(H2_PREFACE.len())
    }
}

/// Longest method we accept (see `probe_h1`).
const MAX_METHOD: usize = 20;

/// The length of the method at the start of `buf`: upper-case letters, `-` and `_` (see
/// [`probe_h1`] for why stricter than RFC 9110's `token`).
fn method_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count()
}

/// Whether `b` may appear in a request target as httparse reads one (any visible ASCII byte,
/// and bytes of UTF-8 sequences). Looser than RFC 9112 §3.2 on purpose: detection must call
/// HTTP/1 everything an HTTP server behind the proxy might read as a request, and the HTTP/1
/// proxy then refuses targets the RFC does not allow (400) instead of splicing them.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Whether `buf` (a full peek window, still undecided) is the start of a request line too
/// long to see whole: a method, one space, then request-target bytes, possibly a second space
/// and the start of `HTTP/1.x`, and no CR or LF anywhere. Such a connection is HTTP/1 however
/// long its line is: the HTTP/1 proxy answers 414 past `max_head_bytes`, routes it otherwise.
/// A text protocol whose first line ends within the window (a Redis inline `GET key`, an SMTP
/// command) never gets here: httparse has refused it by its line end.
pub fn long_request_line(buf: &[u8]) -> bool {
    let m = method_len(buf);
    if m == 0 || m > MAX_METHOD || buf.get(m) != Some(&b' ') {
        return false;
    }
    let rest = &buf[m + 1..];
    let target = rest.iter().take_while(|&&b| is_target_byte(b)).count();
    if target == 0 {
        return false;
    }
    match &rest[target..] {
        [] => true,
        [b' ', version @ ..] => {
            version.len() <= 8
                && (b"HTTP/1.1".starts_with(version) || b"HTTP/1.0".starts_with(version))
        }
        _ => false,
    }
}

/// `Yes` once httparse accepts a whole request line (method, target, `HTTP/1.0` or `HTTP/1.1`);
/// `NeedMore` while the bytes so far could still become one (a client that sends `GE` and then
/// `T / HTTP/1.1` is HTTP/1); `No` as soon as httparse rejects them.
pub fn probe_h1(buf: &[u8]) -> Probe<()> {
    // Stricter than RFC 9110's `token` on purpose: every registered method is upper-case
    // letters (with '-' or '_' in a few extensions) and at most 17 bytes (`VERSION-CONTROL`,
    // `BASELINE-CONTROL`). Without this, any opaque protocol whose first bytes read like
    // "word word" would wait for the detect timeout instead of flowing at once.
    let method_len = method_len(buf);
    if method_len > MAX_METHOD {
        return Probe::No;
    }
    match buf.get(method_len) {
        None => return Probe::NeedMore(buf.len() + 1),
        Some(b' ') if method_len > 0 => {}
        Some(_) => return Probe::No,
    }
    // Only the request line decides: headers after it are the HTTP/1 proxy's business, and a
    // verdict must not change as more bytes arrive. So parse up to the first '\n' only, and
    // say yes only once the line is terminated ("GET / HTTP/1.1" could still become
    // "GET / HTTP/1.10").
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = line_end.map_or(buf, |i| &buf[..=i]);
    // Zero header slots: httparse stops after the request line.
    let mut req = httparse::Request::new(&mut []);
    match req.parse(line) {
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => Probe::Yes(()),
        // The version is set once the line has been parsed through `HTTP/1.x`.
        Ok(httparse::Status::Partial) if line_end.is_some() && req.version.is_some() => {
            Probe::Yes(())
        }
        Ok(httparse::Status::Partial) => Probe::NeedMore(buf.len() + 1),
        Err(_) => Probe::No,
    }
}

/// Whether `buf` starts with (a prefix of) an HTTP/2 SETTINGS frame header on stream 0: what
/// an h2 server may send on accept, before the client's preface (RFC 9113 §3.4).
pub fn probe_h2_server_settings(buf: &[u8]) -> Probe<()> {
    // 3-byte length (a multiple of 6, at most 16 KiB here), type 0x4, flags 0, stream id 0.
    const HEADER: usize = 9;
    let ok = buf.iter().take(HEADER).enumerate().all(|(i, &b)| match i {
        0 => b == 0,
        3 => b == 0x04,
        4 => b == 0x00,
        5 => b & 0x7f == 0,
        6..=8 => b == 0,
        _ => true,
    });
    if !ok {
        return Probe::No;
    }
    if buf.len() < HEADER {
        return Probe::NeedMore(HEADER);
    }
    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
    if len % 6 == 0 {
        Probe::Yes(())
    } else {
        Probe::No
    }
}
