//! HTTP/1 message reading for tests: a request or response head, then its body as framed
//! (Content-Length, chunked with the raw framing kept, or until close), from a blocking
//! socket.

use std::io::Read;
use std::net::TcpStream;

use sidewire::http1::chunked::Decoder;

/// Framing read from a head: (Content-Length, chunked).
pub fn framing(headers: &[httparse::Header<'_>]) -> (Option<usize>, bool) {
    let cl = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap());
    let chunked = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    (cl, chunked)
}

/// Reads the body that follows a head (raw chunked framing kept; `None` for read-until-close
/// framing reads to EOF). Returns None if the peer closes early.
pub fn read_body(
    c: &mut TcpStream,
    buf: &mut Vec<u8>,
    cl: Option<usize>,
    chunked: bool,
    until_close: bool,
) -> Option<Vec<u8>> {
    if let Some(len) = cl {
        while buf.len() < len {
            read_some(c, buf)?;
        }
        return Some(buf.drain(..len).collect());
    }
    if chunked {
        let mut body = Vec::new();
        let mut d = Decoder::default();
        loop {
            let used = d.feed(buf).unwrap();
            body.extend(buf.drain(..used));
            if d.is_done() {
                return Some(body);
            }
            read_some(c, buf)?;
        }
    }
    if until_close {
        while read_some(c, buf).is_some() {}
        return Some(std::mem::take(buf));
    }
    Some(Vec::new())
}

/// Reads one request (head + body per Content-Length or chunked) from `c`; None at EOF.
pub fn read_request(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut h);
        if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (cl, chunked) = framing(r.headers);
            buf.drain(..n);
            let body = read_body(c, buf, cl, chunked, false)?;
            return Some((head, body));
        }
        read_some(c, buf)?;
    }
}

/// Appends what one read gives to `buf`; `None` at EOF or on an error.
pub fn read_some(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    // Into `buf` itself, not a stack array: upstream threads run on small stacks.
    let len = buf.len();
    buf.resize(len + 65536, 0);
    match c.read(&mut buf[len..]) {
        Ok(n) if n > 0 => {
            buf.truncate(len + n);
            Some(())
        }
        _ => {
            buf.truncate(len);
            None
        }
    }
}

/// The payload of a complete raw chunked body (framing removed).
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let eol = at + raw[at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let line = std::str::from_utf8(&raw[at..eol]).unwrap();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        at = eol + 2;
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

/// Reads one response; returns (head, body).
pub fn read_response(c: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (cl, chunked) = framing(r.headers);
            buf.drain(..n);
            let body = read_body(c, buf, cl, chunked, true).expect("response body");
            return (head, body);
        }
        read_some(c, buf).expect("response head");
    }
}
