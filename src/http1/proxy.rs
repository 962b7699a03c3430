//! The HTTP/1 proxy loop for one client connection: read a request head, pick an endpoint per
//! request (P2C over peak-EWMA), reuse a pooled upstream connection or dial one, forward the
//! head (hop-by-hop fields stripped) and the body as it streams, read the response (passing
//! 1xx interim responses on), forward it, record HTTP metrics, pool the upstream connection
//! when its framing allows, and go again while both sides keep the connection alive.
//! Upgrades (`101 Switching Protocols`) and CONNECT tunnels (2xx) continue as spliced opaque
//! streams.
//!
//! Errors before any response byte reached the client are answered by the proxy with a
//! `sidewire-error` header: 400/414/431 for a bad request head, 502 for an unreachable
//! upstream or a malformed response, 504 when the response does not start within
//! `response_timeout_ms`. After that, the connection is closed.
//!
//! A request body that pauses longer than `body_timeout_ms` gets 408; a response body that
//! pauses longer than `stream_idle_timeout_ms` closes the connection. An upstream that stops
//! taking a body has the answer it sent meanwhile relayed (else 502). A client whose body was
//! cut short is closed gracefully (FIN, then its remaining bytes are read and discarded for up
//! to `LINGER`, 5 s), so a reset cannot destroy the answer. Pipelined requests are answered in
//! order over one upstream connection at a time (not spread across several).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::debug;

use super::chunked::Decoder;
use super::head::{
    connection_listed, is_hop_by_hop, parse_request, parse_response, Framing, HeadError, Limits,
};
use crate::config::RouteConfig;
use crate::core::{Core, Listener};
use crate::metrics::PeerCounters;
use crate::upstream::UpConn;
use crate::{forward, sys, upstream};

/// Bytes read per syscall while streaming bodies.
const READ_CHUNK: usize = 64 * 1024;

/// How long a client whose request body was cut short may keep sending after the proxy's
/// answer (which it reads and discards) before the connection is closed. Closing with unread
/// bytes would send a reset, which can destroy the answer before the client has read it.
const LINGER: Duration = Duration::from_secs(5);

/// A request head, parsed and rewritten for the upstream.
struct Req {
    /// Endpoint set: 0 = the listener's own, i + 1 = route i.
    route: usize,
    head: Vec<u8>,
    head_len: usize,
    framing: Framing,
    keep_alive: bool,
    upgrade: bool,
    connect: bool,
    expect_continue: bool,
    is_head: bool,
}

/// A response head, parsed and rewritten for the client.
struct Resp {
    head: Vec<u8>,
    head_len: usize,
    code: u16,
    framing: Framing,
    keep_alive: bool,
}

/// A socket the HTTP proxies read and write, with the byte counters of its side
/// (`peer="src"` for the client, `peer="dst"` for an upstream): every byte that goes through
/// [`read_more`] and [`write_all`] is counted in `tcp_read_bytes_total` /
/// `tcp_write_bytes_total`, as the splice path counts opaque bytes.
pub(crate) trait Peer {
    /// The socket.
    fn stream(&mut self) -> &mut TcpStream;
    /// Its side's counters.
    fn counters(&self) -> &PeerCounters;
}

/// The client connection of an HTTP/1 proxy loop.
pub(crate) struct Client<'a> {
    stream: &'a mut TcpStream,
    counters: &'a PeerCounters,
}

impl Peer for Client<'_> {
    fn stream(&mut self) -> &mut TcpStream {
        self.stream
    }
    fn counters(&self) -> &PeerCounters {
        self.counters
    }
}

/// Appends what one read returns to `buf`. `Ok(0)` is EOF.
pub(crate) async fn read_more(s: &mut impl Peer, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_CHUNK);
    }
    let len = buf.len();
    let (r, slice) = s.stream().read(buf.slice_mut(len..)).await;
    if let Ok(n) = r {
        s.counters().read(n as u64);
    }
    (r, slice.into_inner())
}

/// [`read_more`], bounded by `pause` when given: `TimedOut` on expiry. The read is then
/// cancelled and its buffer lost; the caller closes the connection anyway.
pub(crate) async fn read_within(
    s: &mut impl Peer,
    buf: Vec<u8>,
    pause: Option<Duration>,
) -> io::Result<(io::Result<usize>, Vec<u8>)> {
    match pause {
        None => Ok(read_more(s, buf).await),
        Some(d) => monoio::time::timeout(d, read_more(s, buf))
            .await
            .map_err(|_| io::ErrorKind::TimedOut.into()),
    }
}

/// Writes all of `data`, handing the buffer back for reuse.
pub(crate) async fn write_all(s: &mut impl Peer, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let (r, data) = s.stream().write_all(data).await;
    let n = r?;
    s.counters().wrote(n as u64);
    Ok(data)
}

fn rewrite_request(
    buf: &[u8],
    limits: Limits,
    routes: &[RouteConfig],
) -> Result<Option<Req>, HeadError> {
    // Header slots on the stack for the usual limit (≤ 128), on the heap above it.
    let mut stack = [httparse::EMPTY_HEADER; 128];
    let mut heap = Vec::new();
    let storage: &mut [httparse::Header<'_>] = if limits.max_headers <= stack.len() {
        &mut stack[..]
    } else {
        heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let Some(r) = parse_request(buf, limits, storage)? else {
        return Ok(None);
    };
    let host = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim);
    let route = routes
        .iter()
        .position(|rt| rt.matches(host, r.target))
        .map_or(0, |i| i + 1);
    let listed = connection_listed(r.headers);
    let mut head = Vec::with_capacity(r.head_len + 32);
    for part in [
        r.method.as_bytes(),
        b" ",
        r.target.as_bytes(),
        b" HTTP/1.",
        &[b'0' + r.minor],
        b"\r\n",
    ] {
        head.extend_from_slice(part);
    }
    for h in r
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(h, &listed, r.upgrade))
    {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    if r.upgrade && r.method != "CONNECT" {
        head.extend_from_slice(b"connection: upgrade\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Req {
        route,
        head,
        head_len: r.head_len,
        framing: r.framing,
        keep_alive: r.keep_alive,
        upgrade: r.upgrade,
        connect: r.method == "CONNECT",
        expect_continue: r.expect_continue,
        is_head: r.method == "HEAD",
    }))
}

fn rewrite_response(
    buf: &[u8],
    is_head: bool,
    client_keep_alive: bool,
    upgrading: bool,
) -> Result<Option<Resp>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let Some(r) = parse_response(buf, is_head, 64 * 1024, &mut storage)? else {
        return Ok(None);
    };
    let upgrading = upgrading && r.code == 101;
    let listed = connection_listed(r.headers);
    let reason = "";
    let mut head = Vec::with_capacity(r.head_len + 32);
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            r.code,
            reason_phrase(r.code).unwrap_or(reason)
        )
        .as_bytes(),
    );
    for h in r
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(h, &listed, upgrading))
    {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    if upgrading {
        head.extend_from_slice(b"connection: upgrade\r\n");
    } else if !client_keep_alive || r.framing == Framing::UntilClose {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Resp {
        head,
        head_len: r.head_len,
        code: r.code,
        framing: r.framing,
        keep_alive: r.keep_alive,
    }))
}

fn reason_phrase(code: u16) -> Option<&'static str> {
    Some(match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// A new upstream connection in blocking mode (for completion I/O); a failure is counted and
/// returned as the `sidewire-error` reason.
pub(crate) async fn dial(
    l: &Listener,
    addr: SocketAddr,
    peer: SocketAddr,
) -> Result<UpConn, &'static str> {
    match upstream::connect(addr, l.cfg.connect_timeout).await {
        Ok(u) if sys::set_blocking(u.as_raw_fd()).is_ok() => Ok(UpConn::new(u, &l.metrics.dst)),
        Ok(_) => Err("upstream socket error"),
        Err(e) => {
            l.metrics.connect_failed(e.kind);
            debug!(listener = %l.cfg.name, %peer, error = %e, "502: upstream connect failed");
            Err("upstream connect failed")
        }
    }
}

/// A response the proxy makes itself; the connection closes after it.
async fn proxy_error(client: &mut impl Peer, code: u16, reason: &str) {
    let body = format!("{reason}\n");
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nsidewire-error: {reason}\r\nconnection: close\r\n\r\n{body}",
        reason_phrase(code).unwrap_or(""),
        body.len()
    );
    let _ = write_all(client, head.into_bytes()).await;
}

/// Where a delimited body ends: after a byte count, or after the chunked terminator.
enum BodyEnd {
    Length(u64),
    Chunked(Decoder),
}

impl BodyEnd {
    fn new(framing: Framing) -> BodyEnd {
        match framing {
            Framing::Length(n) => BodyEnd::Length(n),
            _ => BodyEnd::Chunked(Decoder::default()),
        }
    }

    /// How many of `buf`'s bytes belong to the body, and whether the body is complete.
    fn feed(&mut self, buf: &[u8]) -> io::Result<(usize, bool)> {
        match self {
            BodyEnd::Length(left) => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            BodyEnd::Chunked(dec) => {
                let used = dec
                    .feed(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                Ok((used, dec.is_done()))
            }
        }
    }
}

/// Writes `data` to `dst`, with `head` (if not yet sent) in front: one send for a head and the
/// body bytes that came with it, instead of two. With `pause`, a `dst` that does not take the
/// bytes within it fails the write (`dst` is then unusable: part may have gone out).
async fn send_with_head(
    dst: &mut impl Peer,
    head: &mut Vec<u8>,
    data: Vec<u8>,
    pause: Option<Duration>,
) -> io::Result<()> {
    let out = if head.is_empty() {
        data
    } else {
        let mut out = std::mem::take(head);
        out.extend_from_slice(&data);
        out
    };
    match pause {
        None => write_all(dst, out).await.map(drop),
        Some(d) => match monoio::time::timeout(d, write_all(dst, out)).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(io::Error::other("peer stopped reading")),
        },
    }
}

/// Moves one message from `src` to `dst`: `head` first (sent together with the first body
/// bytes), then the body as framed. `buf` holds bytes already read from `src` (they go first);
/// on return it holds what followed the body (the next message, pipelined).
/// `pause` bounds the wait for each read of a delimited body (`TimedOut` on expiry) and for
/// each write of it (an `Other` error on expiry).
async fn forward_message(
    src: &mut impl Peer,
    dst: &mut impl Peer,
    mut head: Vec<u8>,
    framing: Framing,
    mut buf: Vec<u8>,
    pause: Option<Duration>,
) -> io::Result<Vec<u8>> {
    let rest = match framing {
        Framing::Empty => buf,
        Framing::Length(_) | Framing::Chunked => {
            let mut end = BodyEnd::new(framing);
            loop {
                let (used, done) = end.feed(&buf)?;
                if used > 0 {
                    let rest = buf.split_off(used);
                    send_with_head(dst, &mut head, buf, pause).await?;
                    buf = rest;
                }
                if done {
                    break buf;
                }
                if !head.is_empty() {
                    send_with_head(dst, &mut head, Vec::new(), pause).await?;
                }
                let (r, b) = read_within(src, buf, pause).await?;
                buf = b;
                if r? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Framing::UntilClose => loop {
            if !buf.is_empty() || !head.is_empty() {
                send_with_head(dst, &mut head, std::mem::take(&mut buf), pause).await?;
            }
            let (r, b) = read_within(src, buf, pause).await?;
            buf = b;
            if r? == 0 {
                break Vec::new();
            }
        },
    };
    if !head.is_empty() {
        send_with_head(dst, &mut head, Vec::new(), pause).await?;
    }
    Ok(rest)
}

/// Reads from `s` until `parse` yields a head. `Ok(None)`: EOF before any byte. `started`
/// turns true once any byte of the head is buffered (the caller may time this future out, and
/// the buffer itself is lent to the kernel while a read is in flight).
pub(crate) async fn read_head<T>(
    s: &mut impl Peer,
    buf: &mut Vec<u8>,
    started: &mut bool,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, HeadError>,
) -> Result<Option<T>, Result<HeadError, io::Error>> {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some(t)) => return Ok(Some(t)),
                Ok(None) => {}
                Err(e) => return Err(Ok(e)),
            }
        }
        let (r, b) = read_more(s, std::mem::take(buf)).await;
        *buf = b;
        *started |= !buf.is_empty();
        match r {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Err(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(Err(e)),
        }
    }
}

/// The request in flight, for answering and recording it.
struct InFlight<'a> {
    l: &'a Listener,
    peer: SocketAddr,
    m: &'a crate::metrics::HttpMetrics,
    t0: Instant,
}

/// Forwards a request body (`head` first, if not yet sent) under `body_timeout_ms`. Returns
/// what followed the body, or `None` after the client was answered otherwise (no response
/// byte had gone out yet): 408 for a body that paused too long, 400 for bad chunked framing;
/// when the upstream stopped taking the body, the answer it sent meanwhile (a 413 or 401 for
/// an upload, say) or else 502. A client that went away gets nothing.
async fn send_request_body(
    r: &InFlight<'_>,
    client: &mut Client<'_>,
    up: &mut UpConn,
    head: Vec<u8>,
    framing: Framing,
    buf: Vec<u8>,
) -> Option<Vec<u8>> {
    let pause = Some(r.l.http1.body_timeout);
    let e = match forward_message(client, up, head, framing, buf, pause).await {
        Ok(rest) => return Some(rest),
        Err(e) => e,
    };
    debug!(listener = %r.l.cfg.name, peer = %r.peer, error = %e, "request body not forwarded");
    let (code, reason) = match e.kind() {
        io::ErrorKind::TimedOut => (408, "request body timeout"),
        io::ErrorKind::InvalidData => (400, "bad chunked request body"),
        io::ErrorKind::UnexpectedEof => return None,
        _ => {
            if early_response(r, client, up).await {
                return None;
            }
            (502, "upstream write failed")
        }
    };
    r.m.response(code, r.t0.elapsed());
    proxy_error(client, code, reason).await;
    linger_close(client).await;
    None
}

/// After the upstream stopped taking a request body: relays the final response it sent
/// meanwhile (marked `connection: close`), then closes the client with [`linger_close`].
/// Returns whether there was such a response.
async fn early_response(r: &InFlight<'_>, client: &mut Client<'_>, up: &mut UpConn) -> bool {
    let mut ubuf = Vec::new();
    let resp = loop {
        let read = monoio::time::timeout(
            r.l.http1.response_timeout,
            read_head(up, &mut ubuf, &mut false, |b| {
                rewrite_response(b, false, false, false)
            }),
        )
        .await;
        match read {
            // Interim responses (a 100 Continue sent before the upstream gave up) are skipped.
            Ok(Ok(Some(resp))) if resp.code < 200 => {
                ubuf.drain(..resp.head_len);
            }
            Ok(Ok(Some(resp))) => break resp,
            _ => return false,
        }
    };
    debug!(listener = %r.l.cfg.name, peer = %r.peer, code = resp.code, "upstream answered before taking the whole request body; relaying it");
    r.m.response(resp.code, r.t0.elapsed());
    ubuf.drain(..resp.head_len);
    let pause = Some(r.l.http1.stream_idle_timeout);
    let relayed = forward_message(up, client, resp.head, resp.framing, ubuf, pause).await;
    if relayed.is_ok() {
        linger_close(client).await;
    }
    true
}

/// Closes a client whose request was not read to its end without resetting it: sends FIN,
/// then reads and discards what the client still sends until it closes too, or [`LINGER`].
async fn linger_close(client: &mut Client<'_>) {
    if sys::shutdown_write(client.stream.as_raw_fd()).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, read_more(client, buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                buf = b;
                buf.clear();
            }
            _ => return,
        }
    }
}

/// Serves HTTP/1 requests on `client` until either side ends the connection. Returns whether
/// it ended cleanly.
pub async fn serve(core: &Core, l: &Listener, client: &mut TcpStream, peer: SocketAddr) -> bool {
    let client = &mut Client {
        stream: client,
        counters: &l.metrics.src,
    };
    let cfg = &l.http1;
    let default_metrics = &l.metrics.http[0];
    let mut cbuf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // 0. Between requests, the client may idle up to the keep-alive idle timeout. The
        // first read of the next request does the waiting (no extra readiness op).
        if cbuf.is_empty() {
            match monoio::time::timeout(
                cfg.idle_timeout,
                read_more(client, std::mem::take(&mut cbuf)),
            )
            .await
            {
                Err(_) => return true, // idle keep-alive connection: close quietly
                Ok((Ok(0), _)) => return true,
                Ok((Ok(_), b)) => cbuf = b,
                Ok((Err(_), _)) => return false,
            }
        }
        // 1. The request head, under the header timeout (slowloris).
        let mut started = !cbuf.is_empty();
        let head = monoio::time::timeout(
            cfg.header_timeout,
            read_head(client, &mut cbuf, &mut started, |b| {
                rewrite_request(b, cfg.limits, &l.cfg.routes)
            }),
        )
        .await;
        let req = match head {
            Err(_) => {
                // Mid-head: a slow client gets 408; no byte at all (readable was a FIN): close.
                if started {
                    proxy_error(client, 408, "request head timeout").await;
                }
                return !started;
            }
            Ok(Ok(None)) => return true,
            Ok(Ok(Some(r))) => r,
            Ok(Err(Ok(e))) => {
                debug!(listener = %l.cfg.name, %peer, reason = e.reason(), "bad request head");
                default_metrics.request();
                default_metrics.response(e.status(), Duration::ZERO);
                proxy_error(client, e.status(), e.reason()).await;
                return false;
            }
            Ok(Err(Err(e))) => {
                debug!(listener = %l.cfg.name, %peer, error = %e, "client read failed");
                return false;
            }
        };
        let mut body_buf = cbuf.split_off(req.head_len);
        cbuf.clear();
        let m = &l.metrics.http[req.route];
        m.request();
        let t0 = Instant::now();

        // 2. An endpoint for this request, and a connection to it.
        let set = &l.http_sets[req.route];
        let (idx, inflight) = set.balancer.pick();
        let addr = set.endpoints[idx];
        let pooled = l.take_pooled(addr);
        // A pooled connection may have been closed by the upstream meanwhile. A bodiless
        // request that meets such a connection (EOF or reset before any response byte) is
        // sent once more on a fresh connection: it cannot have been processed.
        let mut retry_head =
            (pooled.is_some() && req.framing == Framing::Empty).then(|| req.head.clone());
        let mut up = match pooled {
            Some(u) => u,
            None => match dial(l, addr, peer).await {
                Ok(u) => u,
                Err(reason) => {
                    proxy_error(client, 502, reason).await;
                    m.response(502, t0.elapsed());
                    return false;
                }
            },
        };

        // 3. Head, then body (after an interim 100 if the client waits for one).
        let wait_continue = req.expect_continue && req.framing != Framing::Empty;
        let mut body_sent = !wait_continue;
        if body_sent {
            let r = InFlight { l, peer, m, t0 };
            match send_request_body(&r, client, &mut up, req.head, req.framing, body_buf).await {
                Some(rest) => cbuf = rest,
                None => return false,
            }
            body_buf = Vec::new();
        } else if write_all(&mut up, req.head).await.is_err() {
            proxy_error(client, 502, "upstream write failed").await;
            m.response(502, t0.elapsed());
            return false;
        }

        // 4. The response head (interim 1xx responses pass through), under the response timeout.
        let mut ubuf: Vec<u8> = Vec::with_capacity(8192);
        let resp = loop {
            let read = monoio::time::timeout(
                cfg.response_timeout,
                read_head(&mut up, &mut ubuf, &mut false, |b| {
                    rewrite_response(b, req.is_head, req.keep_alive, req.upgrade)
                }),
            )
            .await;
            let r = match read {
                Err(_) => {
                    proxy_error(client, 504, "upstream response timeout").await;
                    m.response(504, t0.elapsed());
                    return false;
                }
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Ok(Err(Err(_))) if ubuf.is_empty() && retry_head.is_some() => {
                    let head = retry_head.take().expect("checked is_some above");
                    debug!(listener = %l.cfg.name, %peer, upstream = %addr, "stale pooled connection; retrying on a fresh one");
                    let fresh = match dial(l, addr, peer).await {
                        Ok(u) => u,
                        Err(reason) => {
                            proxy_error(client, 502, reason).await;
                            m.response(502, t0.elapsed());
                            return false;
                        }
                    };
                    up = fresh;
                    if write_all(&mut up, head).await.is_err() {
                        proxy_error(client, 502, "upstream write failed").await;
                        m.response(502, t0.elapsed());
                        return false;
                    }
                    continue;
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    proxy_error(client, 502, "bad or no upstream response").await;
                    m.response(502, t0.elapsed());
                    return false;
                }
            };
            if (100..200).contains(&r.code) && r.code != 101 {
                ubuf.drain(..r.head_len);
                if write_all(client, r.head).await.is_err() {
                    return false;
                }
                if r.code == 100 && !body_sent {
                    let pending = std::mem::take(&mut body_buf);
                    let r = InFlight { l, peer, m, t0 };
                    let sent =
                        send_request_body(&r, client, &mut up, Vec::new(), req.framing, pending);
                    match sent.await {
                        Some(rest) => cbuf = rest,
                        None => return false,
                    }
                    body_sent = true;
                }
                continue;
            }
            break r;
        };
        inflight.done(t0.elapsed());
        m.response(resp.code, t0.elapsed());
        ubuf.drain(..resp.head_len);

        // 5. Upgrades become opaque streams.
        let switched =
            (req.upgrade && resp.code == 101) || (req.connect && (200..300).contains(&resp.code));
        if switched {
            let mut out = resp.head;
            out.extend_from_slice(&ubuf);
            if write_all(client, out).await.is_err() {
                return false;
            }
            if !cbuf.is_empty() || !body_buf.is_empty() {
                let mut early = std::mem::take(&mut body_buf);
                early.extend_from_slice(&cbuf);
                if write_all(&mut up, early).await.is_err() {
                    return false;
                }
            }
            let _ = sys::set_nonblocking(up.as_raw_fd());
            return forward::splice_both(core, &l.metrics, client.stream, &up)
                .await
                .is_ok();
        }

        // 6. The response.
        let pause = Some(cfg.stream_idle_timeout);
        let rest = match forward_message(&mut up, client, resp.head, resp.framing, ubuf, pause)
            .await
        {
            Ok(rest) => rest,
            Err(e) => {
                debug!(listener = %l.cfg.name, %peer, error = %e, "response body failed; closing");
                return false;
            }
        };
        let reusable = resp.keep_alive && body_sent && rest.is_empty();
        if reusable {
            l.put_pooled(addr, up);
        }
        if !req.keep_alive || resp.framing == Framing::UntilClose || !body_sent {
            return true;
        }
    }
}
