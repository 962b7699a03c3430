//! Full duplex: an HTTP/1 request body and its response moved at once.
//!
//! HTTP/1.1 lets a server answer while the request body is still arriving (RFC 9112 §9.5: a
//! client that sees a non-error answer keeps sending), and some do it by design: an echo, a
//! transcoder, a streaming RPC over a chunked body. Such a server writes its answer as it
//! reads, and once the answer fills the buffers between it and a client nobody reads from,
//! it stops reading, so a proxy that relays the response only after the whole body deadlocks
//! with it (measured: a 20 MB echo stalled after 8.6 MB until the client gave up; HAProxy and
//! a direct connection took 0.1 s).
//!
//! [`duplex`] takes over from the request body's move ([`super::message::Moved::Answered`])
//! once such an answer waits: one loop, non-blocking `send`/`recv` on both sockets whatever
//! their mode, readiness waits for whichever directions are stuck, the request body by its
//! framing, the response head parsed (and rewritten by the caller's `parse`), then its body
//! by its framing. Bytes are copied: this path is for the exchanges that need it, not the
//! common one. The connection is not reused after it, on either side.

use std::io;
use std::time::{Duration, Instant};

use super::head::{Framing, HeadError};
use super::message::{BodyEnd, Unfinished, MAX_INTERIM};
use crate::error::{MessageError, Side};
use crate::io::{tcp_fd, AckWatch, Peer, READ_CHUNK};
use crate::sys;

/// A response head as [`duplex`] relays it: what the caller's `parse` makes of the bytes.
#[derive(Debug)]
pub struct Answer {
    /// The head to send to the client (rewritten: hop-by-hop fields, `connection: close`).
    pub head: Vec<u8>,
    /// Bytes of the upstream's head in the read buffer.
    pub head_len: usize,
    /// The status code.
    pub code: u16,
    /// How its body is framed (RFC 9112 §6.3).
    pub framing: Framing,
    /// Whether the body is sent de-chunked (to an HTTP/1.0 client, RFC 9112 §6.1), ending at
    /// the close.
    pub dechunk: bool,
    /// Whether the client connection closes after this response (its head says so).
    pub close_after: bool,
}

/// How [`duplex`] went.
#[derive(Debug)]
pub struct Duplexed {
    /// The final response's status code, once its head went to the client.
    pub code: Option<u16>,
    /// `Ok` when the response was relayed whole, else what failed (the response is then cut
    /// short if its head went out; otherwise the caller may still answer).
    pub result: Result<(), MessageError>,
    /// Whether the whole request body reached the upstream. Not when the upstream stopped
    /// taking it (it closed, say) and its answer went whole all the same: the client, which
    /// may still be sending, is then to be closed with a linger.
    pub body_whole: bool,
    /// Whether the final response's head said the client connection closes after it.
    pub close_after: bool,
    /// What the client sent after the body (the next request, pipelined).
    pub rest: Vec<u8>,
}

/// One direction's non-blocking call that found nothing to do (`EAGAIN`).
#[derive(Debug, Default, Clone, Copy)]
struct Blocked {
    client_read: bool,
    up_write: bool,
    up_read: bool,
    client_write: bool,
}

/// Moves the rest of the request body `req` from `client` to `up` and the response from `up`
/// (`ubuf` first: what was already read from it and not relayed, heads included) to `client`
/// at once, until the response's end and the body's (or the upstream's refusal of
/// the rest of it once its answer is whole). `parse` turns the start of what `up` sent into a
/// response head (`None`: incomplete); interim (1xx) heads pass through (not to an HTTP/1.0
/// client, `http10`: RFC 9110 §15.2), at most [`MAX_INTERIM`] of them. Each stretch with no
/// byte moved in either direction is bounded by `pauses`: `body` while only the client's body
/// is awaited or only the body is left to move (as `body_timeout_ms` bounds a body's pauses;
/// a body the upstream stops taking after its whole answer then ends the exchange as a
/// success, `body_whole` false), else `response`. Each reader's acknowledgements are watched
/// across the exchange too ([`AckWatch`]), however much moves the other way: a client that
/// acknowledges no response byte for `response` ends it (`WriteStalled(Client)`), an upstream
/// that acknowledges no body byte for `body` stops the body (as a refused write does; before
/// the response head, `WriteStalled(Upstream)`); not while the proxy holds that reader back
/// itself (it reads nothing from it because the other side takes nothing). A reader whose
/// writes wait but who acknowledges bytes makes progress for the stretch bound. `on_head`
/// is called with the final status code when its head goes out. Bytes the client sent past
/// the body's end (the next request) are returned; the upstream connection is not reused
/// (bytes past the response are dropped).
///
/// Both peers must have TCP sockets (else `Err(Unsupported)` at once).
#[allow(clippy::too_many_arguments)] // the exchange's state, handed over
pub async fn duplex(
    client: &mut impl Peer,
    up: &mut impl Peer,
    req: Unfinished,
    ubuf: Vec<u8>,
    mut parse: impl FnMut(&[u8]) -> Result<Option<Answer>, HeadError>,
    http10: bool,
    pauses: Pauses,
    mut on_head: impl FnMut(u16),
) -> Duplexed {
    let mut d = Duplexed {
        code: None,
        result: Ok(()),
        body_whole: false,
        close_after: true,
        rest: Vec::new(),
    };
    let mut head = |a: &Answer| {
        d.code = Some(a.code);
        d.close_after = a.close_after;
        on_head(a.code)
    };
    match run(client, up, req, ubuf, &mut parse, http10, pauses, &mut head).await {
        Ok((body_whole, rest)) => (d.body_whole, d.rest) = (body_whole, rest),
        Err(e) => d.result = Err(e),
    }
    d
}

/// The bounds on [`duplex`]'s pauses.
#[derive(Debug, Clone, Copy)]
pub struct Pauses {
    /// While the response is awaited or moving (`stream_idle_timeout_ms`).
    pub response: Duration,
    /// While only the request body is (`body_timeout_ms`).
    pub body: Duration,
}

/// Where the response stands.
enum Phase {
    /// Its head (or interim heads) still to come.
    Head,
    /// Its body, framed so (de-chunked when `true`).
    Body(BodyEnd, bool),
    /// Relayed whole (what is left to write is in the output buffer).
    Done,
}

/// [`duplex`]'s loop. Returns, once the response went whole, whether the whole body did
/// too and what the client sent after it.
#[allow(clippy::too_many_arguments)] // duplex's, lent
async fn run(
    client: &mut impl Peer,
    up: &mut impl Peer,
    req: Unfinished,
    mut ubuf: Vec<u8>,
    parse: &mut impl FnMut(&[u8]) -> Result<Option<Answer>, HeadError>,
    http10: bool,
    pauses: Pauses,
    on_head: &mut impl FnMut(&Answer),
) -> Result<(bool, Vec<u8>), MessageError> {
    use MessageError::{BadFraming, Eof, Io, ReadTimeout, WriteStalled};
    use Side::{Client, Upstream};
    let (Some(cfd), Some(ufd)) = (tcp_fd(client), tcp_fd(up)) else {
        return Err(Io(Upstream, io::ErrorKind::Unsupported.into()));
    };
    // The request body: `held[sent..]` to write, then `passthrough` bytes as they are, then
    // the rest by `end`. `stopped`: the upstream took no more of it (a write failed), or the
    // client sent no more of it after its whole answer.
    let Unfinished {
        mut held,
        mut passthrough,
        mut end,
    } = req;
    let mut sent = 0;
    let mut stopped = false;
    // What the client sent past the body.
    let mut rest = Vec::new();
    // The response: read into `ubuf`, framed by `phase`, queued for the client in
    // `out[written..]`.
    let mut phase = Phase::Head;
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut interim = 0;
    // The upstream closed its side (before the response's end: the end must be in `ubuf`).
    let mut up_closed = false;
    // Whether each reader keeps taking what is written to it, counted across the exchange:
    // a stretch bound alone never ends while the other direction moves, nor while the
    // kernel still queues the writes (up to `tcp_wmem`'s maximum).
    let mut client_acks = AckWatch::new(Some(cfd), Some(pauses.response));
    let mut up_acks = AckWatch::new(Some(ufd), Some(pauses.body));
    // The start of the current stretch with nothing moved.
    let mut still = Instant::now();
    loop {
        let mut moved = false;
        let mut blocked = Blocked::default();

        // 1. The request body, client → upstream.
        if sent < held.len() && !stopped {
            match sys::send_now(ufd, &held[sent..]) {
                Ok(n) => {
                    up.wrote(n as u64);
                    sent += n;
                    moved = true;
                    if up_acks.wrote().is_err() {
                        stopped = up_stalled(&phase)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked.up_write = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                Err(e) => {
                    // The upstream takes no more of the body (it closed or reset, having
                    // answered, or not): its answer, whole in what it sent before, is still
                    // relayed (a server that answers an upload and closes without reading it
                    // is reset by its own kernel for the unread bytes, and was a 502:
                    // fresh-user review); without a whole answer, the reads below fail.
                    up.note_error(&e);
                    stopped = true;
                }
            }
        }
        if sent == held.len() {
            held.clear();
            sent = 0;
        }
        let body_left = passthrough > 0 || !end.is_done();
        if held.is_empty() && body_left && !stopped {
            // At most what is left of a run or of a `Content-Length` body: no byte past it.
            let max = match (passthrough, &end) {
                (p, _) if p > 0 => p,
                (_, BodyEnd::Length { left, .. }) => *left,
                _ => READ_CHUNK as u64,
            };
            let max = max.min(READ_CHUNK as u64) as usize;
            // A client that stops sending once it has its whole answer: its choice (the
            // upstream gets the body cut short, by the close).
            let answered = matches!(phase, Phase::Done) && written == out.len();
            match sys::recv_now(cfd, &mut held, max) {
                Ok(0) if answered => stopped = true,
                Ok(0) => return Err(Eof(Client)),
                Ok(n) => {
                    client.counters().read(n as u64);
                    moved = true;
                    if passthrough > 0 {
                        passthrough -= n as u64;
                    } else {
                        let (used, _) = end.feed(&held).map_err(|e| BadFraming(Client, e))?;
                        rest = held.split_off(used);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked.client_read = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                Err(e) => {
                    client.note_error(&e);
                    if !answered {
                        return Err(Io(Client, e));
                    }
                    stopped = true;
                }
            }
        }
        let body_done = stopped || (held.is_empty() && passthrough == 0 && end.is_done());

        // 2. The response, upstream → client.
        if written < out.len() {
            match sys::send_now(cfd, &out[written..]) {
                Ok(n) => {
                    client.wrote(n as u64);
                    written += n;
                    moved = true;
                    client_acks.wrote().map_err(|_| WriteStalled(Client))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked.client_write = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                Err(e) => {
                    client.note_error(&e);
                    return Err(Io(Client, e));
                }
            }
        }
        if written == out.len() {
            out.clear();
            written = 0;
        }
        if out.is_empty() && !matches!(phase, Phase::Done) && !up_closed {
            match sys::recv_now(ufd, &mut ubuf, READ_CHUNK) {
                Ok(0) => match phase {
                    Phase::Body(BodyEnd::Close, _) => phase = Phase::Done,
                    // What is already read may hold the whole answer (a head and body
                    // read while the 100 was awaited, then a close): judged below.
                    _ => {
                        up_closed = true;
                        moved = true;
                    }
                },
                Ok(n) => {
                    up.counters().read(n as u64);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked.up_read = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                Err(e) => {
                    up.note_error(&e);
                    return Err(Io(Upstream, e));
                }
            }
        }
        // What was read: heads, then body bytes, into `out`.
        if !ubuf.is_empty() {
            let queued = out.len();
            while matches!(phase, Phase::Head) && !ubuf.is_empty() {
                let reason = |e: HeadError| BadFraming(Upstream, e.reason());
                let Some(a) = parse(&ubuf).map_err(reason)? else {
                    break;
                };
                ubuf.drain(..a.head_len);
                if a.code == 101 {
                    // (Not asked for: upgrades do not come here.)
                    return Err(BadFraming(Upstream, "101 to a request without an upgrade"));
                }
                if (100..200).contains(&a.code) {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(BadFraming(Upstream, "too many interim responses"));
                    }
                    if !http10 {
                        out.extend_from_slice(&a.head);
                    }
                    continue;
                }
                out.extend_from_slice(&a.head);
                on_head(&a);
                phase = Phase::Body(BodyEnd::new(a.framing), a.dechunk);
            }
            if let Phase::Body(e, dechunk) = &mut phase {
                let used = if *dechunk {
                    e.decode(&ubuf, &mut out)
                } else {
                    e.feed(&ubuf).map(|(used, _)| {
                        out.extend_from_slice(&ubuf[..used]);
                        used
                    })
                };
                let used = used.map_err(|e| BadFraming(Upstream, e))?;
                ubuf.drain(..used);
                if e.is_done() {
                    // (Bytes past the response are dropped with the connection.)
                    ubuf.clear();
                    phase = Phase::Done;
                }
            }
            // (Bytes to write: the next round writes them rather than waits.)
            moved |= out.len() > queued;
        }
        if up_closed && !matches!(phase, Phase::Done) {
            return Err(Eof(Upstream));
        }

        // A direction whose writes wait may have a reader that stopped, whatever else moves;
        // but a reader the proxy itself holds back is not stalled: an upstream stops reading
        // the body while the proxy reads none of its response (the client takes none: a
        // pause of the client's is not the upstream's), and a client may stop reading while
        // the proxy takes none of its body (the upstream takes none: a client that writes
        // and reads in turn). A stretch with nothing moving at all is the stretch bound's.
        if blocked.client_write {
            up_acks.excuse();
        }
        if blocked.up_write {
            client_acks.excuse();
        }
        if blocked.client_write {
            client_acks.due().map_err(|_| WriteStalled(Client))?;
        }
        if blocked.up_write && !stopped && up_acks.due().is_err() {
            stopped = up_stalled(&phase)?;
        }

        let response_done = matches!(phase, Phase::Done) && out.is_empty();
        let body_done = body_done || stopped;
        if response_done && body_done {
            return Ok((!stopped, rest));
        }
        if moved {
            still = Instant::now();
            continue;
        }
        // 3. Nothing moved: wait for a stuck direction that has something to do.
        let want = Blocked {
            client_read: blocked.client_read && !body_done,
            up_write: blocked.up_write,
            up_read: blocked.up_read,
            client_write: blocked.client_write,
        };
        let body_only = response_done || !(want.up_write || want.up_read || want.client_write);
        let pause = if body_only {
            pauses.body
        } else {
            pauses.response
        };
        let (Some(c), Some(u)) = (client.tcp(), up.tcp()) else {
            return Err(Io(Upstream, io::ErrorKind::Unsupported.into()));
        };
        // The stretch's end, or sooner a look at a waiting writer's reader. A reader that
        // acknowledges bytes is progress, though its writes wait: the kernel wakes a writer
        // only once a third of a send buffer of megabytes is free, which a slow but steady
        // reader takes seconds to make.
        let watches = [(want.client_write, &client_acks), (want.up_write, &up_acks)];
        let waiting = watches.iter().filter(|(w, _)| *w).map(|(_, a)| a);
        let from = waiting
            .clone()
            .filter_map(|a| a.progressed())
            .fold(still, Instant::max);
        let end = from.checked_add(pause).unwrap_or(from);
        let until = waiting
            .filter_map(|a| a.next_look())
            .fold(end, Instant::min);
        let now = Instant::now();
        let ready = monoio::select! {
            r = c.readable(false), if want.client_read => Some(r),
            r = u.writable(false), if want.up_write => Some(r),
            r = u.readable(false), if want.up_read => Some(r),
            r = c.writable(false), if want.client_write => Some(r),
            _ = monoio::time::sleep(until.saturating_duration_since(now)) => None,
        };
        if ready.is_none() && Instant::now() < end {
            // A look is due: the next round makes it (its writes wait again, or go).
            continue;
        }
        if ready.is_none() && response_done {
            // The client has its whole answer; the upstream (or the client) stopped moving
            // the rest of the body.
            return Ok((false, Vec::new()));
        }
        if ready.is_none() {
            // The stuck direction the exchange waits on most: the response first.
            return Err(if want.client_write {
                WriteStalled(Client)
            } else if want.up_read {
                ReadTimeout(Upstream)
            } else if want.up_write {
                WriteStalled(Upstream)
            } else {
                ReadTimeout(Client)
            });
        }
        // (A readiness error shows in the next call on the socket.)
    }
}

/// What an upstream that acknowledged no byte of the request body for `body_timeout_ms`
/// means, by where the response stands: before its head, the exchange fails
/// (`WriteStalled(Upstream)`: the client gets a 502); after it, the body stops (`true`,
/// as when the upstream refuses a write) and the response goes on.
fn up_stalled(phase: &Phase) -> Result<bool, MessageError> {
    match phase {
        Phase::Head => Err(MessageError::WriteStalled(Side::Upstream)),
        _ => Ok(true),
    }
}
