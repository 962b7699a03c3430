//! Built-in backends the harness starts itself: an HTTP/1.1 server, a TCP echo, a TCP sink
//! and a server-first greeter. Plain blocking threads: simple, and fast enough to never be the
//! bottleneck of a single pinned proxy worker on the other CPU.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use anyhow::{Context, Result};

/// A backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 keep-alive server answering every request with `body_bytes` of body.
    Http { body_bytes: usize },
    /// Echoes every byte until EOF.
    Echo,
    /// Reads and discards until EOF.
    Sink,
    /// Sends a banner on accept, then echoes.
    Greeter,
}

/// The greeting `Kind::Greeter` sends.
pub const BANNER: &[u8] = b"220 loadtest greeter ready\r\n";

/// Binds `listen` and serves `kind` on `threads` accepting threads (each connection gets its
/// own thread). Returns the bound address; the threads live as long as the process.
pub fn spawn(kind: Kind, listen: SocketAddr, threads: usize) -> Result<SocketAddr> {
    let l = listen_deep(listen)?;
    let addr = l.local_addr()?;
    let l = Arc::new(l);
    for _ in 0..threads.max(1) {
        let l = l.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let _ = c.set_nodelay(true);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(kind, c))
                    .ok();
            }
        });
    }
    Ok(addr)
}

/// Binds with a 4096-connection backlog (std's is 128): a burst of connects through a proxy
/// must not overflow it, or dropped SYNs would show up as proxy connect timeouts.
pub fn listen_deep(addr: SocketAddr) -> Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    s.listen(4096)?;
    Ok(s.into())
}

fn serve(kind: Kind, mut c: TcpStream) {
    match kind {
        Kind::Http { body_bytes } => http(c, body_bytes),
        Kind::Echo => copy_until_eof(&mut c, true),
        Kind::Sink => copy_until_eof(&mut c, false),
        Kind::Greeter => {
            if c.write_all(BANNER).is_ok() {
                copy_until_eof(&mut c, true)
            }
        }
    }
}

fn copy_until_eof(c: &mut TcpStream, echo: bool) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if echo && c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves keep-alive HTTP/1.1: reads request heads (and Content-Length bodies), answers each
/// with a fixed body, until the client closes.
fn http(mut c: TcpStream, body_bytes: usize) {
    let mut resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {body_bytes}\r\n\r\n").into_bytes();
    resp.extend(std::iter::repeat_n(b'x', body_bytes));
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    loop {
        // Parse every complete request already buffered (pipelining-safe).
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..have]) {
                Ok(httparse::Status::Complete(head)) => {
                    let body: usize = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0);
                    let close = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                    });
                    let total = head + body;
                    if have < total {
                        if total > buf.len() {
                            buf.resize(total, 0);
                        }
                        break; // body not complete yet
                    }
                    if c.write_all(&resp).is_err() || close {
                        return;
                    }
                    buf.copy_within(total..have, 0);
                    have -= total;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    return;
                }
            }
        }
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match c.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}
