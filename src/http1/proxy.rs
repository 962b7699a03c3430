//! The HTTP/1 proxy loop for one client connection: read a request head, pick an endpoint per
//! request (P2C over peak-EWMA), reuse a pooled upstream connection or dial one, forward the
//! head (hop-by-hop fields stripped) and the body as it streams, read the response (passing
//! 1xx interim responses on), forward it, record HTTP metrics, pool the upstream connection
//! when its framing allows, and go again while both sides keep the connection alive.
//! Upgrades (`101 Switching Protocols`) and CONNECT tunnels (2xx) continue as spliced opaque
//! streams.
//!
//! `Expect: 100-continue` leaves the client to decide when the body comes (after a relayed
//! 100, or after its own wait); HTTP/1.0 clients get `connection: keep-alive` or `close` on
//! every answer, and neither chunked bodies (de-chunked, close-delimited) nor 1xx.
//!
//! Errors before any response byte reached the client are answered by the proxy with a
//! `sidewire-error` header: 400/414/417/431 for a bad request head, 502 for an unreachable
//! upstream or a malformed response, 504 when the response does not start within
//! `response_timeout_ms`. After that, the connection is closed.
//!
//! A request body that pauses longer than `body_timeout_ms` gets 408; a response body that
//! pauses longer than `stream_idle_timeout_ms` closes the connection. An upstream that stops
//! taking a body has the answer it sent meanwhile relayed (else 502). A client whose body was
//! cut short is closed gracefully (FIN, then its remaining bytes are read and discarded while
//! it pauses less than `LINGER`, 5 s, for up to `LINGER_TOTAL`, 30 s), so a reset cannot
//! destroy the answer. Pipelined requests are answered in
//! order over one upstream connection at a time (not spread across several).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::debug;

use super::duplex::{duplex, Answer, Pauses};
use super::head::{
    connection_listed, is_hop_by_hop, parse_request, parse_response, Framing, HeadError, TargetForm,
};
use super::message::{
    check_framing, early_answer, forward_dechunked, forward_message, forward_request_body,
    read_head, reason_phrase, send_with_head, waiting_in, BodyEnd, HeadRead, Looks, Moved, Resend,
    ResponseHead, Unfinished, Waiting, MAX_INTERIM, MAX_RESPONSE_HEAD, RESPONSE_HEADERS,
};
use crate::config::{Limits, RouteConfig};
use crate::core::connections::Tracked;
use crate::core::{Core, EndpointClaim, HttpDest, Listener, NO_ENDPOINTS};
use crate::error::{MessageError, Side};
use crate::forward::BodySplice;
use crate::io::{
    read_more, read_some, read_within, tcp_fd, watching, within_after_acked, write_all, AckWatch,
    Client, Peer, Stopped, READ_CHUNK,
};
use crate::logging::access;
use crate::metrics::{Close, ErrorLabel, HttpMetrics, PeerCounters, Protocol, StreamTimeout};
use crate::upstream::pool::UpConn;
use crate::{forward, sys};

/// How long a client whose request body was cut short may pause, while it keeps sending
/// after the proxy's answer (which it reads and discards), before the connection is closed
/// (nginx's `lingering_timeout`). Closing with unread bytes would send a reset, which can
/// destroy the answer before the client has read it.
const LINGER: Duration = Duration::from_secs(5);

/// How long such a client may keep sending in all (nginx's `lingering_time`): one that writes
/// its whole body before it reads the answer (Python's `http.client`) gets its early answer
/// for an upload of up to this long (review: with 5 s in all, an 8 s upload ended in a
/// broken pipe instead of the 413).
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// A request head, parsed and rewritten for the upstream.
struct Req {
    /// Endpoint set: 0 = the listener's own, i + 1 = route i.
    route: usize,
    /// Where the request's authority (target's or Host) sits in the parsed buffer, for the
    /// `authority` label (no copy).
    authority: Option<std::ops::Range<usize>>,
    head: Vec<u8>,
    head_len: usize,
    framing: Framing,
    /// HTTP minor version: 0 or 1.
    minor: u8,
    keep_alive: bool,
    upgrade: bool,
    connect: bool,
    expect_continue: bool,
    is_head: bool,
    /// What the access log keeps of it (`None` when the access log is off).
    access: Option<access::Request>,
}

/// A response head, parsed and rewritten for the client.
struct Resp {
    head: Vec<u8>,
    head_len: usize,
    code: u16,
    framing: Framing,
    /// The upstream connection may carry another request.
    keep_alive: bool,
    /// The chunked body goes to an HTTP/1.0 client without its framing.
    dechunk: bool,
    /// The client connection closes after this response (and the head says so).
    close_after: bool,
}

impl ResponseHead for Resp {
    fn code(&self) -> u16 {
        self.code
    }
    fn head_len(&self) -> usize {
        self.head_len
    }
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
    // Routed by the target URI's authority (RFC 9112 §3.3): an absolute-form target's own,
    // else Host; and by the path that is forwarded.
    let forward = &r.checked.forward;
    let route = RouteConfig::select(routes, r.authority, forward);
    let listed = connection_listed(r.headers);
    let mut head = Vec::with_capacity(r.head_len + 32);
    for part in [
        r.method.as_bytes(),
        b" ",
        forward.as_bytes(),
        b" HTTP/1.",
        &[b'0' + r.minor],
        b"\r\n",
    ] {
        head.extend_from_slice(part);
    }
    // RFC 9112 §3.2.2: for an absolute-form target, the received Host is ignored and a new
    // one made from the target's authority.
    let new_host = (r.checked.form == TargetForm::Absolute)
        .then_some(r.checked.authority)
        .flatten();
    if let Some(authority) = new_host {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let replaced =
        |h: &httparse::Header<'_>| new_host.is_some() && h.name.eq_ignore_ascii_case("host");
    for h in r
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(h, &listed, r.upgrade) && !replaced(h))
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
    let authority = r.authority.and_then(|a| {
        let start = (a.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        (start + a.len() <= buf.len()).then_some(start..start + a.len())
    });
    Ok(Some(Req {
        route,
        authority,
        head,
        head_len: r.head_len,
        framing: r.framing,
        minor: r.minor,
        keep_alive: r.keep_alive,
        upgrade: r.upgrade,
        connect: r.method == "CONNECT",
        expect_continue: r.expect_continue,
        is_head: r.method == "HEAD",
        access: access::Request::capture(r.method, r.authority, forward),
    }))
}

/// What the client of a response can take: its HTTP minor version and whether it asked to
/// keep the connection (and may: false once it is to close, e.g. after an early answer).
#[derive(Debug, Clone, Copy)]
struct ClientHop {
    minor: u8,
    keep_alive: bool,
}

fn rewrite_response(
    buf: &[u8],
    is_head: bool,
    client: ClientHop,
    upgrading: bool,
) -> Result<Option<Resp>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; RESPONSE_HEADERS];
    let Some(r) = parse_response(buf, is_head, MAX_RESPONSE_HEAD, &mut storage)? else {
        return Ok(None);
    };
    let upgrading = upgrading && r.code == 101;
    let listed = connection_listed(r.headers);
    // RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client. A chunked body is sent
    // de-chunked and delimited by the close; any other coding it could not undo: 502.
    let http10 = client.minor == 0;
    let te = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let dechunk = http10 && r.framing == Framing::Chunked;
    if http10 && r.framing != Framing::Empty {
        if let Some(h) = te {
            if !(dechunk && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")) {
                return Err(HeadError::Bad(
                    "transfer coding an HTTP/1.0 client cannot take",
                ));
            }
        }
    }
    // The upstream's own reason phrase passes through byte for byte (HAProxy does the same);
    // only an empty or all-whitespace one gets the registered phrase, if any.
    let reason = match r.reason.trim_ascii() {
        b"" => reason_phrase(r.code).unwrap_or("").as_bytes(),
        _ => r.reason,
    };
    let mut head = Vec::with_capacity(r.head_len + 32);
    head.extend_from_slice(format!("HTTP/1.1 {} ", r.code).as_bytes());
    head.extend_from_slice(reason);
    head.extend_from_slice(b"\r\n");
    let dropped_te =
        |h: &httparse::Header<'_>| http10 && h.name.eq_ignore_ascii_case("transfer-encoding");
    for h in r
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(h, &listed, upgrading) && !dropped_te(h))
    {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    // RFC 9112 §9.3: an HTTP/1.0 connection persists only when the answer says
    // `keep-alive` (Appendix C.2.2), so say so whenever it will persist, and `close`
    // whenever it will not.
    // Interim 1xx answers carry no connection option: the final answer decides.
    let interim = (100..200).contains(&r.code) && !upgrading;
    let close_after = !client.keep_alive || r.framing == Framing::UntilClose || dechunk;
    let option: &[u8] = if upgrading {
        b"connection: upgrade\r\n"
    } else if interim {
        b""
    } else if close_after {
        b"connection: close\r\n"
    } else if http10 {
        b"connection: keep-alive\r\n"
    } else {
        b""
    };
    head.extend_from_slice(option);
    head.extend_from_slice(b"\r\n");
    Ok(Some(Resp {
        head,
        head_len: r.head_len,
        code: r.code,
        framing: r.framing,
        keep_alive: r.keep_alive,
        dechunk,
        close_after,
    }))
}

/// Relays a response's body (its head first) from the upstream to the client, de-chunked
/// for an HTTP/1.0 client. Returns what followed it on the upstream connection.
async fn relay_response(
    up: &mut UpConn,
    client: &mut Client<'_>,
    resp: Resp,
    ubuf: Vec<u8>,
    pause: Option<Duration>,
    splice: Option<BodySplice<'_>>,
) -> Result<Vec<u8>, MessageError> {
    if resp.dechunk {
        return Box::pin(forward_dechunked(up, client, resp.head, ubuf, pause)).await;
    }
    // The whole body came with the head (the usual small response): one write. Anything
    // longer goes through `forward_message`, boxed: its state (5 KB: splice runs, timers)
    // would otherwise size every request's exchange future, which is copied whole into its
    // box for each request, whatever the response (issue 17: 7.5 KB of `memcpy` per
    // request).
    if let Some(n) = whole_body(resp.framing, &ubuf) {
        let (mut head, mut body) = (resp.head, ubuf);
        let rest = body.split_off(n);
        let mut acks = AckWatch::new(tcp_fd(client), pause);
        return send_with_head(client, &mut head, body, &mut acks)
            .await
            .map(|()| rest);
    }
    let moved = forward_message(up, client, resp.head, resp.framing, ubuf, pause, splice);
    Box::pin(moved).await
}

/// How many bytes of `buf` (read with a head) are that message's whole body when all of it is
/// there: 0 with no body, `n` for a `Content-Length: n` body `buf` holds; `None` otherwise
/// (chunked, until close, or more to read).
fn whole_body(framing: Framing, buf: &[u8]) -> Option<usize> {
    match framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => usize::try_from(n).ok().filter(|n| *n <= buf.len()),
        Framing::Chunked | Framing::UntilClose => None,
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

/// The request in flight, for answering and recording it.
struct InFlight<'a> {
    l: &'a Listener,
    peer: SocketAddr,
    m: &'a HttpMetrics,
    t0: Instant,
    /// The request's HTTP minor version.
    minor: u8,
    /// The request as the access log tells it.
    access: Option<&'a access::Request>,
    /// The endpoint it goes to.
    upstream: SocketAddr,
    /// Bytes written to the client before its response.
    sent_before: u64,
    /// Splicing of large body runs (`None`: `http1.splice_body_bytes = 0`).
    splice: Option<BodySplice<'a>>,
    /// The upstream's answer was waiting before a write of the request body (see
    /// `answer_waiting`): its connection is not pooled.
    answered: Cell<bool>,
    /// The client was answered before its request body's end: once the upstream connection
    /// is closed (its slot freed), the client is closed with [`linger_close`].
    linger: Cell<bool>,
    /// That answer was the upstream's, relayed whole: the client connection then ends
    /// cleanly (review: counted a failure), as after an answer before an `Expect` body.
    relayed: Cell<bool>,
    /// Whether a non-error answer before the request body's end is relayed at once, the
    /// rest of the body moved meanwhile ([`duplex`]): not for upgrades and CONNECT, whose
    /// answer turns the connection into a tunnel.
    duplex: bool,
}

impl InFlight<'_> {
    /// The request's access log line, once the client got its answer (status `code`).
    fn access(&self, client: &Client<'_>, code: u16) {
        access_log(
            self.l,
            self.peer,
            self.access,
            code,
            self.t0,
            client.written() - self.sent_before,
            Some(self.upstream),
        );
    }
}

/// The one way the HTTP/1 proxy writes an access log line (see [`access::Entry`]).
fn access_log(
    l: &Listener,
    peer: SocketAddr,
    request: Option<&access::Request>,
    status: u16,
    started: Instant,
    bytes: u64,
    upstream: Option<SocketAddr>,
) {
    access::log(&access::Entry {
        listener: &l.cfg.name,
        direction: l.cfg.direction.as_str(),
        protocol: Protocol::Http1.as_str(),
        client: peer,
        request,
        status,
        started,
        bytes,
        upstream,
    });
}

/// How [`send_request_body`] ended.
enum Sent {
    /// The whole body went; what followed it (the next request, pipelined).
    Whole(Vec<u8>),
    /// The upstream answered (a non-error status) before the body's end: the exchange goes
    /// on with [`answered_duplex`].
    Answered(Unfinished),
    /// The client was answered otherwise, or went away: the caller finishes with
    /// [`give_up`].
    GaveUp,
}

/// Forwards a request body (`head` first, if not yet sent) under `body_timeout_ms`. Returns
/// what followed the body ([`Sent::Whole`]); or, when the upstream started a non-error answer
/// before the body's end, where the body stands ([`Sent::Answered`]); or [`Sent::GaveUp`]
/// after the client was answered otherwise (no response byte had gone out yet): 408 for a
/// body that paused too long, 400 for bad chunked framing; when the upstream stopped taking
/// the body, the answer it sent meanwhile (a 413 or 401 for an upload, say) or else 502. A
/// client that went away gets nothing.
async fn send_request_body(
    r: &InFlight<'_>,
    client: &mut Client<'_>,
    up: &mut UpConn,
    head: Vec<u8>,
    framing: Framing,
    buf: Vec<u8>,
) -> Sent {
    let pause = Some(r.l.http1.body_timeout);
    // (With the head: a body sent after a 100 is looked at before its write.)
    let sent = match whole_body(framing, &buf).filter(|_| !head.is_empty()) {
        // No body, or all of it read with the head (a GET, a small POST): one write, with the
        // head, before which `forward_message` takes no look for an early answer either.
        Some(n) => {
            let mut head = head;
            let mut buf = buf;
            let rest = buf.split_off(n);
            let mut acks = AckWatch::new(tcp_fd(up), pause);
            send_with_head(up, &mut head, buf, &mut acks)
                .await
                .map(|()| Moved::Whole(rest))
        }
        // (Boxed: see `relay_response`.)
        None => {
            let looks = Looks {
                answered: &r.answered,
                duplex: r.duplex,
            };
            let moved =
                forward_request_body(client, up, head, framing, buf, pause, r.splice, looks);
            Box::pin(moved).await
        }
    };
    let e = match sent {
        Ok(Moved::Whole(rest)) => return Sent::Whole(rest),
        Ok(Moved::Answered(body)) => return Sent::Answered(body),
        Err(e) => e,
    };
    debug!(listener = %r.l.cfg.name, peer = %r.peer, error = %e, "request body not forwarded");
    let (code, reason) = match e {
        MessageError::ReadTimeout(Side::Client) => (408, "request body timeout"),
        MessageError::BadFraming(Side::Client, _) => (400, "bad chunked request body"),
        // The client went away: nobody to answer. Its request ends without a response
        // (`response_total{error="client"}`, no status; review: requests and responses
        // drifted apart).
        MessageError::Eof(Side::Client) | MessageError::Io(Side::Client, _) => {
            r.m.completed(0, None, Some(ErrorLabel::Client));
            return Sent::GaveUp;
        }
        // The upstream stopped taking the body (closed, reset or stalled), or answered
        // with an error before its end (RFC 9112 §9.5): its answer is relayed at once.
        e => {
            if early_response(r, client, up).await {
                return Sent::GaveUp;
            }
            match e {
                MessageError::Refused(_) => (502, "malformed upstream response"),
                _ => (502, "upstream write failed"),
            }
        }
    };
    r.m.proxy_answer(code, ErrorLabel::of_status(code), r.t0.elapsed());
    proxy_error(client, code, reason).await;
    r.access(client, code);
    end_upstream(up);
    r.linger.set(true);
    Sent::GaveUp
}

/// The upstream answered with a non-error status while the request body was still on its
/// way (`body`: where it stands): the response is relayed at once, marked `connection:
/// close` unless the exchange may keep the client connection, while the rest of the body
/// goes on to the upstream ([`duplex`]; RFC 9112 §9.5), pauses bounded by
/// `stream_idle_timeout_ms` and `body_timeout_ms`. The upstream connection is not reused.
/// Returns the exchange's outcome (as `exchange`'s): `None` when the client connection goes
/// on, its next request's bytes in `cbuf`.
#[allow(clippy::too_many_arguments)] // the exchange's state, handed over
async fn answered_duplex(
    r: &InFlight<'_>,
    client: &mut Client<'_>,
    mut up: UpConn,
    body: Unfinished,
    ubuf: Vec<u8>,
    is_head: bool,
    keep_alive: bool,
    claim: EndpointClaim,
    cbuf: &mut Vec<u8>,
) -> Option<bool> {
    let (l, m) = (r.l, r.m);
    debug!(listener = %l.cfg.name, peer = %r.peer, upstream = %r.upstream, "upstream answered before the end of the request body; moving both at once");
    // (As in `exchange`: a draining worker or a retired listener closes after the answer.)
    let to = ClientHop {
        minor: r.minor,
        keep_alive: keep_alive && !l.is_retired(),
    };
    let parse = |b: &[u8]| {
        let resp = rewrite_response(b, is_head, to, false)?;
        Ok(resp.map(|resp| Answer {
            head: resp.head,
            head_len: resp.head_len,
            code: resp.code,
            framing: resp.framing,
            dechunk: resp.dechunk,
            close_after: resp.close_after,
        }))
    };
    let head_at = Cell::new(None);
    let on_head = |code| {
        let t = r.t0.elapsed();
        head_at.set(Some(t));
        m.first_byte(code, t);
    };
    let pauses = Pauses {
        response: l.http1.stream_idle_timeout,
        body: l.http1.body_timeout,
    };
    let moved = duplex(
        client,
        &mut up,
        body,
        ubuf,
        parse,
        r.minor == 0,
        pauses,
        on_head,
    );
    let d = Box::pin(moved).await;
    if let Some(t) = head_at.get() {
        claim.done(t);
    }
    match (d.code, d.result) {
        (Some(code), Ok(())) => {
            up.end();
            drop(up);
            m.completed(code, None, None);
            r.access(client, code);
            if !d.body_whole {
                // The upstream took no more of the body after its answer; the client may
                // still be sending it.
                linger_close(client).await;
                return Some(true);
            }
            if d.close_after {
                return Some(true);
            }
            // The client connection goes on (a new upstream connection for its next request).
            *cbuf = d.rest;
            None
        }
        (Some(code), Err(e)) => {
            debug!(listener = %l.cfg.name, peer = %r.peer, upstream = %r.upstream, error = %e, "full-duplex exchange failed after the response head; closing");
            let error = match e.side() {
                Side::Upstream => ErrorLabel::Upstream,
                Side::Client => ErrorLabel::Client,
            };
            m.completed(code, None, Some(error));
            r.access(client, code);
            abort(client);
            Some(false)
        }
        (None, result) => {
            // No final head went out: the client, unless it is what failed, still gets one.
            let e = result.err();
            debug!(listener = %l.cfg.name, peer = %r.peer, upstream = %r.upstream, error = ?e, "full-duplex exchange failed before the response head");
            let (code, reason) = match e {
                Some(
                    MessageError::Io(Side::Client, _)
                    | MessageError::Eof(Side::Client)
                    | MessageError::WriteStalled(Side::Client),
                ) => {
                    m.completed(0, None, Some(ErrorLabel::Client));
                    return Some(false);
                }
                Some(MessageError::ReadTimeout(Side::Upstream)) => {
                    (504, "upstream response timeout")
                }
                Some(MessageError::ReadTimeout(Side::Client)) => (408, "request body timeout"),
                Some(MessageError::BadFraming(Side::Client, _)) => {
                    (400, "bad chunked request body")
                }
                _ => (502, "bad or no upstream response"),
            };
            drop(up);
            m.proxy_answer(code, ErrorLabel::of_status(code), r.t0.elapsed());
            proxy_error(client, code, reason).await;
            r.access(client, code);
            linger_close(client).await;
            Some(false)
        }
    }
}

/// Ends an exchange [`send_request_body`] gave up on: the upstream connection is closed
/// first, so its `max_connections_per_endpoint` slot is free while the client lingers
/// (review: a bounded endpoint's next request waited out the whole linger). Returns the
/// exchange's outcome: the client connection is done, cleanly when the upstream's answer was
/// relayed.
async fn give_up(r: &InFlight<'_>, client: &mut Client<'_>, up: UpConn) -> Option<bool> {
    drop(up);
    if r.linger.get() {
        linger_close(client).await;
    }
    Some(r.relayed.get())
}

/// Sends FIN to an upstream whose request will not be completed, before the client's
/// [`linger_close`]: the upstream sees the request end now, not when the client has gone
/// (up to [`LINGER`] later; review: a half-sent body held the upstream for 5 s). The
/// connection is dropped, not pooled, by the caller.
fn end_upstream(up: &UpConn) {
    let _ = sys::shutdown_write(up.stream().as_raw_fd());
}

/// After the upstream stopped taking a request body: relays the final response it sent
/// meanwhile (marked `connection: close`); the client is then to close with [`linger_close`]
/// (`r.linger`).
/// Returns whether there was such a response (not when chunk framing read with its head is
/// already malformed: see [`check_framing`]).
async fn early_response(r: &InFlight<'_>, client: &mut Client<'_>, up: &mut UpConn) -> bool {
    let to = ClientHop {
        minor: r.minor,
        keep_alive: false,
    };
    let parse = |b: &[u8]| rewrite_response(b, false, to, false);
    let Some((resp, ubuf)) = early_answer(up, r.l.http1.response_timeout, parse).await else {
        return false;
    };
    if let Err(why) = check_framing(resp.framing, &ubuf) {
        // Not relayed: the caller answers 502 instead.
        debug!(listener = %r.l.cfg.name, peer = %r.peer, why, "malformed body in the upstream's early answer");
        return false;
    }
    debug!(listener = %r.l.cfg.name, peer = %r.peer, code = resp.code, "upstream answered before taking the whole request body; relaying it");
    r.m.response(resp.code, r.t0.elapsed());
    let pause = Some(r.l.http1.stream_idle_timeout);
    let code = resp.code;
    let relayed = relay_response(up, client, resp, ubuf, pause, r.splice).await;
    r.access(client, code);
    end_upstream(up);
    match relayed {
        Ok(_) => {
            up.end();
            r.linger.set(true);
            r.relayed.set(true);
        }
        Err(_) => {
            abort(client);
        }
    }
    true
}

/// Marks the client connection, whose response was cut short, to close with RST rather than
/// FIN (`SO_LINGER` 0), so a client reading a close-delimited body (or an HTTP/1.0 one) sees an
/// error instead of a clean end. The caller then drops the connection.
fn abort(client: &mut Client<'_>) {
    let _ = sys::set_linger_zero(client.io().as_raw_fd());
}

/// Closes a client whose request was not read to its end without resetting it: sends FIN,
/// then reads and discards what the client still sends until it closes too, pauses for
/// [`LINGER`], or [`LINGER_TOTAL`] has passed.
async fn linger_close(client: &mut Client<'_>) {
    if sys::shutdown_write(client.io().as_raw_fd()).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TOTAL;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // (Checked here: a read that is always ready would otherwise win each race with
            // an expired timer; review: 5 s ran to 8.5 s.)
            return;
        }
        match monoio::time::timeout(left.min(LINGER), read_more(client, buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                buf = b;
                buf.clear();
            }
            _ => return,
        }
    }
}

/// Runs `wait` unless `client` resets first: then the reset's error (`ECONNRESET`). Two waits
/// of a request use it: for an upstream connection (its turn under
/// `max_connections_per_endpoint`, a connect), so a request whose client is gone is not sent
/// (review: requests queued at an endpoint's bound still reached the upstream after their
/// clients had reset); and for the response head, so an upstream connection with a request
/// in flight is closed rather than held until the answer or `response_timeout_ms` (a long
/// poll the client gave up on). HTTP/2 streams are cancelled by their `RST_STREAM`.
///
/// The client is watched only once `wait` has been pending for [`crate::io::WATCH_AFTER`]
/// (a pooled connection taken at once, or a response within it, costs no readiness op), and
/// only while `*armed`: once it is readable for another reason (bytes queued: its body or a
/// pipelined request; or a FIN, a half-close HTTP/1 allows) the watch is disarmed and the
/// reads that follow see what comes after. A reset leaves `SO_ERROR` set (the bytes it cut
/// stay queued and readable).
async fn unless_client_resets<T>(
    client: &TcpStream,
    armed: &mut bool,
    wait: impl Future<Output = T>,
) -> Result<T, io::Error> {
    let fd = client.as_raw_fd();
    let mut reset = None;
    let look = || match sys::take_socket_error(fd) {
        Ok(Some(e)) => {
            reset = Some(e);
            true
        }
        _ => false,
    };
    match watching(wait, Some(client), armed, look).await {
        Ok(t) => Ok(t),
        Err(Stopped) => Err(reset.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into())),
    }
}

/// Which side has bytes (or an EOF) to read first.
enum Speaker {
    Client,
    Upstream,
}

/// Waits until the client or the upstream is readable, for at most `timeout` (`None`).
/// Waits on readiness only (POLL_ADD), not reads: the one not chosen loses no bytes when
/// its wait is cancelled. A readiness error counts as readable: the read that follows
/// reports it.
async fn first_to_speak(
    client: &mut Client<'_>,
    up: &UpConn,
    timeout: Duration,
) -> Option<Speaker> {
    let client = &*client.io();
    let up = up.stream();
    let first = async {
        monoio::select! {
            biased;
            _ = up.readable(false) => Speaker::Upstream,
            _ = client.readable(false) => Speaker::Client,
        }
    };
    monoio::time::timeout(timeout, first).await.ok()
}

/// Serves HTTP/1 requests on `client` (counted in `src`) until either side ends the
/// connection. Returns how it ended. `dest` says where requests that match no route go;
/// `tracked` counts the requests for `GET /connections`.
pub async fn serve(
    core: &Core,
    l: &Listener,
    client: &mut TcpStream,
    src: &PeerCounters,
    peer: SocketAddr,
    dest: &HttpDest,
    tracked: &Tracked<'_>,
) -> Close {
    let client = &mut Client::new(client, src);
    let ok = run(core, l, client, peer, dest, tracked).await;
    client.close(ok)
}

/// The request loop of [`serve`]; returns whether the connection ended cleanly.
async fn run(
    core: &Core,
    l: &Listener,
    client: &mut Client<'_>,
    peer: SocketAddr,
    dest: &HttpDest,
    tracked: &Tracked<'_>,
) -> bool {
    let cfg = &l.http1;
    let mut cbuf: Vec<u8> = Vec::new();
    loop {
        // 0. Between requests, the client may idle up to the keep-alive idle timeout. The
        // first read of the next request does the waiting (no extra readiness op). A drain
        // closes an idle connection at once (RFC 9112 §9.6: a client retries a request that
        // met a closed idle connection), so a draining worker is not held up by idle clients.
        if cbuf.is_empty() {
            if core.is_draining() {
                return true;
            }
            // A small buffer for the wait: an idle keep-alive connection holds 1 KiB, not
            // what the last request's body grew the buffer to (64 KiB). A longer head is
            // read on into a larger one.
            cbuf = Vec::with_capacity(IDLE_READ);
            // Pinned in place: `select!` then holds a pointer to the wait, not a second copy
            // of it. The idle bound is a slot in the core's sweep, not a timer of this
            // connection's own (a monoio timer is 640 bytes; see `io::sweep`).
            let read = std::pin::pin!(read_some(client, std::mem::take(&mut cbuf)));
            let next = std::pin::pin!(core.sweep.within(cfg.idle_timeout, read));
            monoio::select! {
                biased;
                // A request that already arrived is served, not dropped by the drain.
                r = next => match r {
                    Err(_) => return true, // idle keep-alive connection: close quietly
                    Ok((Ok(0), _)) => return true,
                    Ok((Ok(_), b)) => cbuf = b,
                    Ok((Err(_), _)) => return false,
                },
                _ = core.draining() => {
                    debug!(listener = %l.cfg.name, %peer, "drain: closing an idle keep-alive connection");
                    return true;
                }
            }
        }
        // 1.–4. One request, boxed: an idle connection holds only the wait above.
        if let Some(ok) = Box::pin(exchange(core, l, client, peer, dest, tracked, &mut cbuf)).await
        {
            return ok;
        }
    }
}

/// Bytes read while a keep-alive connection waits for its next request.
const IDLE_READ: usize = 1024;

/// One request on the connection whose bytes so far are in `cbuf` (at least one): its head,
/// an upstream, the exchange, the response. `Some(clean)` when the connection ends with it,
/// `None` to wait for the next one.
async fn exchange(
    core: &Core,
    l: &Listener,
    client: &mut Client<'_>,
    peer: SocketAddr,
    dest: &HttpDest,
    tracked: &Tracked<'_>,
    cbuf: &mut Vec<u8>,
) -> Option<bool> {
    let cfg = &l.http1;
    // 1. The request head, under the header timeout (slowloris).
    let mut started = !cbuf.is_empty();
    let head = monoio::time::timeout(
        cfg.header_timeout,
        read_head(client, cbuf, &mut started, |b| {
            rewrite_request(b, cfg.limits, &l.cfg.routes)
        }),
    )
    .await;
    let req = match head {
        Err(_) => {
            // Mid-head: a slow client gets 408; no byte at all (readable was a FIN): close.
            if started {
                proxy_error(client, 408, "request head timeout").await;
                // The client may still be sending its head: a plain close would reset
                // the connection and could destroy the answer.
                linger_close(client).await;
            }
            return Some(!started);
        }
        Ok(HeadRead::Closed) => return Some(true),
        Ok(HeadRead::Head(r)) => r,
        Ok(HeadRead::Bad(e)) => {
            debug!(listener = %l.cfg.name, %peer, reason = e.reason(), "bad request head");
            let m = dest.metrics(l, 0, Protocol::Http1, None, None);
            m.request();
            tracked.request();
            m.proxy_answer(e.status(), None, Duration::ZERO);
            let (started, sent_before) = (Instant::now(), client.written());
            proxy_error(client, e.status(), e.reason()).await;
            let sent = client.written() - sent_before;
            access_log(l, peer, None, e.status(), started, sent, None);
            // The client may still be sending (the rest of an over-long head, a body): a
            // plain close would reset the connection and could destroy the answer.
            linger_close(client).await;
            return Some(false);
        }
        Ok(HeadRead::Failed(e)) => {
            debug!(listener = %l.cfg.name, %peer, error = %e, "client read failed");
            return Some(false);
        }
    };
    // 2. An endpoint for this request, a connection to it, and the series of the endpoint
    // that connection goes to (a failed connect is tried on another endpoint, or a
    // timed-out one once more; the request counts where it went).
    let authority = l.metrics.authority(
        req.authority
            .clone()
            .and_then(|r| std::str::from_utf8(cbuf.get(r)?).ok()),
    );
    let Some((first, mut inflight)) = dest.pick(l, req.route) else {
        // The set is empty: its upstream names have not resolved (yet).
        debug!(listener = %l.cfg.name, %peer, names = ?l.names(req.route), "no upstream endpoint: 503");
        let m = dest.metrics_of(l, req.route, Protocol::Http1, None, authority);
        m.request();
        tracked.request();
        let (started, sent_before) = (Instant::now(), client.written());
        proxy_error(client, 503, NO_ENDPOINTS).await;
        m.proxy_answer(503, Some(ErrorLabel::Connect), Duration::ZERO);
        let sent = client.written() - sent_before;
        access_log(l, peer, req.access.as_ref(), 503, started, sent, None);
        // The request body (if any) is unread: linger so the answer is not reset away.
        linger_close(client).await;
        return Some(false);
    };
    let mut body_buf = cbuf.split_off(req.head_len);
    cbuf.clear();
    tracked.request();
    let t0 = Instant::now();
    // A pooled connection, or a new one within the endpoint's bounds. (The wait for one is
    // boxed, and only built when no pooled connection can be had at once: see
    // `Pools::h1_now`. This future is itself boxed per request, copied whole.)
    let connected = match l.pools.h1_now(first) {
        Some(c) => Ok(Ok((first, c, true))),
        None => {
            let other = || dest.other(l, req.route, first);
            let connected = l
                .pools
                .h1(&l.metrics, &l.health, first, l.cfg.connect_timeout, other);
            Box::pin(unless_client_resets(client.io(), &mut true, connected)).await
        }
    };
    let connected = match connected {
        Ok(c) => c,
        Err(e) => {
            // Nobody to answer, and the request must not reach the upstream: it ends without
            // a response (`response_total{error="client"}`, as a client gone mid-body); the
            // client's close counts the reset's errno.
            debug!(listener = %l.cfg.name, %peer, upstream = %first, error = %e, "client reset while its request waited for an upstream connection: not sent");
            client.note_error(&e);
            let m = dest.metrics_of(l, req.route, Protocol::Http1, Some(first), authority);
            m.request();
            m.completed(0, None, Some(ErrorLabel::Client));
            return Some(false);
        }
    };
    let to = match &connected {
        Ok((addr, ..)) if *addr != first => {
            inflight = dest.claim(l, req.route, *addr);
            *addr
        }
        _ => first,
    };
    let series = dest.metrics_of(l, req.route, Protocol::Http1, Some(to), authority);
    let m = &*series;
    m.request();
    let mut ctx = InFlight {
        l,
        peer,
        m,
        t0,
        minor: req.minor,
        access: req.access.as_ref(),
        upstream: to,
        sent_before: client.written(),
        splice: (l.http1.splice_body_bytes > 0).then_some(BodySplice {
            pipes: &core.pipes,
            metrics: &l.metrics,
            min: l.http1.splice_body_bytes,
        }),
        answered: Cell::new(false),
        linger: Cell::new(false),
        relayed: Cell::new(false),
        duplex: !req.upgrade && !req.connect,
    };
    let (addr, mut up, pooled) = match connected {
        Ok((addr, mut up, pooled)) => {
            up.begin();
            (addr, up, pooled)
        }
        Err(reason) => {
            proxy_error(client, 502, reason).await;
            m.proxy_answer(502, Some(ErrorLabel::Connect), t0.elapsed());
            ctx.access(client, 502);
            return Some(false);
        }
    };
    ctx.upstream = addr;
    // A pooled connection may have been closed by the upstream meanwhile. A bodiless
    // request that meets such a connection (EOF or reset before any response byte) is
    // sent once more on a fresh connection: it cannot have been processed.
    let mut resend = Resend::new(pooled, req.framing == Framing::Empty, &req.head);

    // After a request body (see `Sent`): go on with what followed it, or end the exchange,
    // the upstream connection handed over.
    macro_rules! body_or_return {
        ($sent:expr) => {
            match $sent {
                Sent::Whole(rest) => *cbuf = rest,
                Sent::Answered(body) => {
                    let (head, keep_alive) = (req.is_head, req.keep_alive);
                    let ubuf = Vec::new();
                    let duplex = answered_duplex(
                        &ctx, client, up, body, ubuf, head, keep_alive, inflight, cbuf,
                    );
                    return duplex.await;
                }
                Sent::GaveUp => return give_up(&ctx, client, up).await,
            }
        };
    }

    // 3. Head, then body. A client that sent `Expect: 100-continue` (and no body byte yet)
    // decides when its body comes: after a 100, or after its own wait when none comes
    // (RFC 9110 §10.1.1; curl waits 1 s). So the body is forwarded as soon as it starts
    // arriving, while an upstream 100 is relayed and an early final answer ends the
    // request; whichever comes first, within `response_timeout_ms`.
    let wait_continue = req.expect_continue && req.framing != Framing::Empty && body_buf.is_empty();
    let mut body_sent = !wait_continue;
    if body_sent {
        body_or_return!(
            send_request_body(&ctx, client, &mut up, req.head, req.framing, body_buf).await
        );
        body_buf = Vec::new();
    } else {
        if write_all(&mut up, req.head).await.is_err() {
            proxy_error(client, 502, "upstream write failed").await;
            m.proxy_answer(502, Some(ErrorLabel::Upstream), t0.elapsed());
            ctx.access(client, 502);
            return Some(false);
        }
        match first_to_speak(client, &up, cfg.response_timeout).await {
            // The body (or the client's EOF, which `send_request_body` handles) first.
            Some(Speaker::Client) => {
                let sent =
                    send_request_body(&ctx, client, &mut up, Vec::new(), req.framing, Vec::new());
                body_or_return!(sent.await);
                body_sent = true;
            }
            // A 100 or a final answer (or the upstream's EOF): step 4 reads it.
            Some(Speaker::Upstream) => {}
            None => {
                proxy_error(client, 504, "upstream response timeout").await;
                m.proxy_answer(504, Some(ErrorLabel::Timeout), t0.elapsed());
                ctx.access(client, 504);
                return Some(false);
            }
        }
    }

    // 4. The response head (interim 1xx responses pass through), under the response timeout.
    // A client that resets meanwhile (a long poll it gave up on, say) cuts the exchange: the
    // upstream connection is closed instead of held until the answer or the timeout.
    let mut ubuf: Vec<u8> = Vec::with_capacity(8192);
    let mut interim = 0;
    let mut watch_client = true;
    let resp = loop {
        // With a body, the bound counts from when the upstream had taken the whole request:
        // a large body may still be draining from the send buffer into a slow but steady
        // reader. (A bodiless request skips the look: one syscall less per request.)
        let up_fd = (req.framing != Framing::Empty)
            .then(|| tcp_fd(&up))
            .flatten();
        let read = {
            let mut started = false;
            let head = read_head(&mut up, &mut ubuf, &mut started, |b| {
                // An answer that comes before the body was sent ends the connection
                // (the body may still be on its way): say so (RFC 9110 §10.1.1).
                // A draining worker, or a listener generation a reload retired,
                // answers `connection: close` (RFC 9112 §9.6) and closes after the
                // response: the client's next request opens a connection under the
                // settings in force, and none is lost to a close it did not expect.
                let to = ClientHop {
                    minor: req.minor,
                    keep_alive: req.keep_alive && body_sent && !l.is_retired(),
                };
                rewrite_response(b, req.is_head, to, req.upgrade)
            });
            // Pinned here and handed down by reference: each wrapper holding its own copy
            // of the read (an `async fn` keeps its argument and what it awaits) made this
            // wait 7 KiB.
            let head = std::pin::pin!(head);
            let watched =
                std::pin::pin!(unless_client_resets(client.io(), &mut watch_client, head));
            within_after_acked(watched, cfg.response_timeout, up_fd).await
        };
        let r = match read {
            Some(Err(e)) => {
                // Nobody to answer: the upstream connection (its request in flight) is
                // dropped, not pooled, and counts as cut by the proxy.
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, error = %e, "client reset while its response was awaited: upstream connection closed");
                client.note_error(&e);
                m.completed(0, None, Some(ErrorLabel::Client));
                return Some(false);
            }
            None => {
                proxy_error(client, 504, "upstream response timeout").await;
                m.proxy_answer(504, Some(ErrorLabel::Timeout), t0.elapsed());
                ctx.access(client, 504);
                return Some(false);
            }
            Some(Ok(HeadRead::Head(r))) => r,
            Some(Ok(HeadRead::Closed | HeadRead::Failed(_))) if resend.applies(ubuf.is_empty()) => {
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, "stale pooled connection");
                match resend
                    .resend(&l.metrics, &l.health, addr, l.cfg.connect_timeout)
                    .await
                {
                    Ok(fresh) => {
                        // The stale one was closed by its upstream, not cut by the proxy.
                        up.end();
                        up = fresh;
                        up.begin();
                    }
                    Err(reason) => {
                        proxy_error(client, 502, reason).await;
                        m.proxy_answer(502, Some(ErrorLabel::Connect), t0.elapsed());
                        ctx.access(client, 502);
                        return Some(false);
                    }
                }
                continue;
            }
            Some(Ok(other)) => {
                let why = other.why();
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, why, "bad or no upstream response: 502");
                proxy_error(client, 502, "bad or no upstream response").await;
                m.proxy_answer(502, Some(ErrorLabel::Upstream), t0.elapsed());
                ctx.access(client, 502);
                return Some(false);
            }
        };
        if r.code == 101 && !req.upgrade {
            // A switch nobody asked for (RFC 9110 §15.2.2: only in answer to Upgrade): the
            // client could not make sense of what follows it.
            debug!(listener = %l.cfg.name, %peer, upstream = %addr, "101 to a request without an upgrade: 502");
            proxy_error(client, 502, "bad or no upstream response").await;
            m.proxy_answer(502, Some(ErrorLabel::Upstream), t0.elapsed());
            ctx.access(client, 502);
            return Some(false);
        }
        if (100..200).contains(&r.code) && r.code != 101 {
            interim += 1;
            if interim > MAX_INTERIM {
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, "more than {MAX_INTERIM} interim responses: 502");
                proxy_error(client, 502, "too many interim responses").await;
                m.proxy_answer(502, Some(ErrorLabel::Upstream), t0.elapsed());
                ctx.access(client, 502);
                return Some(false);
            }
            ubuf.drain(..r.head_len);
            // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
            if req.minor > 0 && write_all(client, r.head).await.is_err() {
                m.completed(0, None, Some(ErrorLabel::Client));
                return Some(false);
            }
            if r.code == 100 && !body_sent {
                // An error answer read together with the 100: the body is not sent (RFC
                // 9112 §9.5); the next round reads that answer, relayed as one that came
                // before the body (review: it waited for the whole upload, or became a 502
                // when the upstream then closed).
                if waiting_in(&ubuf) == Waiting::Refusal {
                    continue;
                }
                // A non-error final answer read together with the 100 (a server that sends
                // both at once, as Python's `http.server` does, and then reads the body, or
                // closes without reading it): the body moves with that answer, at once (full
                // duplex, below), not before it. Sent first, an echo's body stalled behind
                // its own unrelayed answer (37 s, then a 502), and an answer then a close lost
                // the answer read here to the failed body write (a 502 in 30-85 % of such
                // uploads; fresh-user review).
                if ctx.duplex && waiting_in(&ubuf) == Waiting::Answer {
                    ctx.answered.set(true);
                    continue;
                }
                // Other bytes after the 100, read with it: the final answer came before the
                // body, which the upstream may then never read (see `answer_waiting`).
                if !ubuf.is_empty() {
                    ctx.answered.set(true);
                }
                let pending = std::mem::take(&mut body_buf);
                let sent =
                    send_request_body(&ctx, client, &mut up, Vec::new(), req.framing, pending);
                body_or_return!(sent.await);
                body_sent = true;
            }
            continue;
        }
        break r;
    };
    // A non-error final answer to an `Expect: 100-continue` request, before its body: the
    // client may send the body all the same (curl does, after its own 1 s wait; RFC 9110
    // §10.1.1), and an upstream that answers while it reads (an echo) needs it, so both are
    // moved at once. The answer says `connection: close`: a client that does not send the
    // body cannot reuse the connection (its next request would be read as the body).
    if !body_sent && ctx.duplex && resp.code < 400 {
        let body = Unfinished {
            held: Vec::new(),
            passthrough: 0,
            end: BodyEnd::new(req.framing),
        };
        let (is_head, claim) = (req.is_head, inflight);
        return answered_duplex(&ctx, client, up, body, ubuf, is_head, false, claim, cbuf).await;
    }
    inflight.done(t0.elapsed());
    ubuf.drain(..resp.head_len);
    let code = resp.code;

    // 5. Upgrades become opaque streams.
    let switched =
        (req.upgrade && resp.code == 101) || (req.connect && (200..300).contains(&resp.code));
    if switched {
        m.response(code, t0.elapsed());
        let mut out = resp.head;
        out.extend_from_slice(&ubuf);
        let written = write_all(client, out).await;
        ctx.access(client, resp.code);
        if written.is_err() {
            return Some(false);
        }
        if !cbuf.is_empty() || !body_buf.is_empty() {
            let mut early = std::mem::take(&mut body_buf);
            early.extend_from_slice(cbuf);
            if write_all(&mut up, early).await.is_err() {
                return Some(false);
            }
        }
        let _ = sys::set_nonblocking(up.stream().as_raw_fd());
        let counters = forward::Counters {
            src: client.counters_of(),
            dst: up.counters(),
        };
        // An upgraded stream is opaque from here: the listener's idle bounds apply.
        let limits = forward::IdleLimits {
            idle: l.cfg.idle_timeout,
            half_closed: l.cfg.half_close_timeout,
        };
        let spliced =
            forward::splice_both(&core.pipes, counters, client.io(), up.stream(), limits).await;
        // Cut by the proxy (both sockets reset) or by one side's error: the upstream
        // connection, still in its exchange, closes as a failure, as on the opaque path.
        return Some(match spliced {
            Ok(forward::Ended::Eof) => {
                up.end();
                true
            }
            Ok(forward::Ended::IdleTimeout) => {
                l.metrics.stream_timeout(StreamTimeout::Idle);
                false
            }
            Ok(forward::Ended::HalfCloseTimeout) => {
                l.metrics.stream_timeout(StreamTimeout::HalfClose);
                false
            }
            Err(e) => {
                match e.side {
                    Some(crate::error::Side::Client) => client.note_error(&e.error),
                    Some(crate::error::Side::Upstream) => up.note_error(&e.error),
                    None => {}
                }
                false
            }
        });
    }

    // Malformed chunk framing already in the bytes that came with the head: nothing of the
    // response has gone out, so the client can still get a 502 rather than a cut-off body.
    if let Err(why) = check_framing(resp.framing, &ubuf) {
        debug!(listener = %l.cfg.name, %peer, upstream = %addr, why, "malformed upstream response body");
        proxy_error(client, 502, "malformed upstream response body").await;
        m.proxy_answer(502, Some(ErrorLabel::Upstream), t0.elapsed());
        ctx.access(client, 502);
        return Some(false);
    }

    // 6. The response. Its latency ends with the first body byte, or with the head when
    // there is no body (Linkerd's measure): usually the body came with the head; if not,
    // the head goes to the client now and the first body read is waited for here.
    let pause = Some(cfg.stream_idle_timeout);
    let (upstream_keep_alive, close_after) = (resp.keep_alive, resp.close_after);
    let mut resp = resp;
    if resp.framing != Framing::Empty && ubuf.is_empty() {
        let mut acks = AckWatch::new(tcp_fd(client), pause);
        if let Err(e) = send_with_head(client, &mut resp.head, Vec::new(), &mut acks).await {
            debug!(listener = %l.cfg.name, %peer, error = %e, "response head not sent; closing");
            m.first_byte(code, t0.elapsed());
            m.completed(code, None, Some(ErrorLabel::Client));
            abort(client);
            return Some(false);
        }
        match read_within(&mut up, ubuf, pause).await {
            Ok((Ok(_), b)) => ubuf = b,
            Ok((Err(_), _)) | Err(_) => {
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, "response body failed before its first byte; closing");
                m.completed(code, None, Some(ErrorLabel::Upstream));
                abort(client);
                return Some(false);
            }
        }
    }
    m.first_byte(code, t0.elapsed());
    let rest = match relay_response(&mut up, client, resp, ubuf, pause, ctx.splice).await {
        Ok(rest) => {
            up.end();
            m.completed(code, None, None);
            rest
        }
        Err(e) => {
            debug!(listener = %l.cfg.name, %peer, error = %e, "response body failed; closing");
            let error = match e.side() {
                Side::Upstream => ErrorLabel::Upstream,
                Side::Client => ErrorLabel::Client,
            };
            m.completed(code, None, Some(error));
            ctx.access(client, code);
            abort(client);
            return Some(false);
        }
    };
    ctx.access(client, code);
    let answered_early = ctx.answered.get();
    if answered_early {
        debug!(listener = %l.cfg.name, %peer, upstream = %addr, "upstream answered before the request body was all written; its connection is not reused");
    }
    let reusable = upstream_keep_alive && body_sent && !answered_early && rest.is_empty();
    if reusable {
        l.pools.put_h1(addr, up);
    } else if !body_sent {
        // Answered before the body: the client may still send it (after its own wait). The
        // upstream connection closes first: its slot is free while the client lingers.
        drop(up);
        linger_close(client).await;
        return Some(true);
    }
    if close_after {
        return Some(true);
    }
    None
}
