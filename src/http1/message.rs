//! HTTP/1 message I/O shared by both directions and by both users (the HTTP/1 proxy loop and
//! the h2→h1 bridge): reading a head, moving a message (head + body as framed, or de-chunked
//! for an HTTP/1.0 recipient) from one [`Peer`] to another, one body-end state machine
//! ([`BodyEnd`]), the stale-pooled-connection
//! resend ([`Resend`]) and the early-answer read ([`early_answer`]).
//!
//! Errors say which side failed ([`MessageError`]), so a pause on the client's side is never
//! answered as the upstream's fault or the other way round.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::chunked::Decoder;
use super::head::{Framing, HeadError};
use crate::error::{MessageError, Side};
use crate::forward::{splice_run, BodySockets, BodySplice, BodyWatch, RunError};
use crate::io::{
    read_at_most, read_more, read_ready, tcp_fd, watching, write_all, write_ready, AckWatch, Peer,
    Stopped, READ_CHUNK, WATCH_AFTER,
};
use crate::metrics::ListenerMetrics;
use crate::upstream::health::Health;
use crate::upstream::pool::{dial_h1, UpConn};

/// Interim (1xx) responses taken before a final one: past this many the response is refused
/// as malformed (502). RFC 9110 §15.2 sets no number; real upstreams send one or two (a 100,
/// a 103), and an endless stream of them would otherwise hold the exchange forever.
pub const MAX_INTERIM: usize = 32;

/// Response heads larger than this are refused as malformed (502).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Header slots for parsing a response head.
pub const RESPONSE_HEADERS: usize = 128;

/// The reason phrase for `code` (RFC 9110 §15: every status registered with IANA, from the
/// `http` crate's table), or `None` for an unregistered code, which is then sent with an
/// empty phrase (RFC 9112 §4 allows it).
pub fn reason_phrase(code: u16) -> Option<&'static str> {
    http::StatusCode::from_u16(code).ok()?.canonical_reason()
}

/// Where a body ends (RFC 9112 §6.3): after a byte count, after the chunked terminator, or at
/// the sender's close.
#[derive(Debug, Clone)]
pub enum BodyEnd {
    /// A `Content-Length` body: `left` of its `size` bytes are still to come.
    Length {
        /// Bytes still to come.
        left: u64,
        /// The declared length.
        size: u64,
    },
    /// Chunked: the decoder knows when the last chunk and trailers are through.
    Chunked(Decoder),
    /// Read until the sender closes.
    Close,
}

impl BodyEnd {
    /// The state machine for a body framed as `framing` (`Empty` is a zero-length body).
    pub fn new(framing: Framing) -> BodyEnd {
        match framing {
            Framing::Empty => BodyEnd::Length { left: 0, size: 0 },
            Framing::Length(n) => BodyEnd::Length { left: n, size: n },
            Framing::Chunked => BodyEnd::Chunked(Decoder::default()),
            Framing::UntilClose => BodyEnd::Close,
        }
    }

    /// Whether the body is complete (never true for `Close`: its end is the sender's EOF).
    pub fn is_done(&self) -> bool {
        match self {
            BodyEnd::Length { left, .. } => *left == 0,
            BodyEnd::Chunked(dec) => dec.is_done(),
            BodyEnd::Close => false,
        }
    }

    /// How many of `buf`'s bytes belong to the body, framing included (they pass through as
    /// they are), and whether the body is then complete.
    ///
    /// Errors: malformed chunked framing, with the reason.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), &'static str> {
        match self {
            BodyEnd::Length { left, .. } => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            BodyEnd::Chunked(dec) => {
                let used = dec.feed(buf).map_err(|e| e.0)?;
                Ok((used, dec.is_done()))
            }
            BodyEnd::Close => Ok((buf.len(), false)),
        }
    }

    /// How many of the body's next bytes are payload of known length, which may be moved
    /// without being looked at (spliced) and then accounted with [`BodyEnd::skip`]: what is
    /// left of a `Content-Length` body, or of the current chunk's data (0 elsewhere in
    /// chunked framing, and for a body that ends at the close).
    pub fn run(&self) -> u64 {
        match self {
            BodyEnd::Length { left, .. } => *left,
            BodyEnd::Chunked(dec) => dec.data_left(),
            BodyEnd::Close => 0,
        }
    }

    /// The declared size of what [`BodyEnd::run`] is the rest of: the `Content-Length`, or
    /// the current chunk's size (0 where `run` is 0). The splice threshold is held against
    /// this, not against the rest: the read that found a chunk's start (or the head) takes a
    /// few of its bytes with it, and a chunk exactly the threshold's size must still qualify.
    pub fn run_size(&self) -> u64 {
        match self {
            BodyEnd::Length { size, .. } => *size,
            BodyEnd::Chunked(dec) if dec.data_left() > 0 => dec.last_chunk_size(),
            BodyEnd::Chunked(_) => 0,
            BodyEnd::Close => 0,
        }
    }

    /// How many bytes the next read of a chunked body should ask for at most, for a splicing
    /// reader with threshold `min`, so that the next big chunk's data stays in the socket:
    /// `extra` bytes (room for a CRLF and a size line) between chunks after a chunk of at
    /// least `min` bytes (or before the first), and the rest of such a chunk (at most
    /// [`crate::io::READ_CHUNK`]) plus `extra` inside it. `None` (read freely) otherwise: after a small chunk, so a stream of small
    /// chunks is not read a few bytes at a time.
    pub fn framing_read(&self, min: u64, extra: usize) -> Option<usize> {
        let BodyEnd::Chunked(dec) = self else {
            return None;
        };
        let last = dec.last_chunk_size();
        if dec.between_chunks() && (last == 0 || last >= min) {
            Some(extra)
        } else if dec.data_left() > 0 && last >= min {
            // Capped as a normal read is (when splicing was refused, the rest may be large).
            let rest = dec.data_left().min(crate::io::READ_CHUNK as u64) as usize;
            Some(rest + extra)
        } else {
            None
        }
    }

    /// Accounts `n` bytes (at most [`BodyEnd::run`]) that were moved without being fed.
    pub fn skip(&mut self, n: u64) {
        match self {
            BodyEnd::Length { left, .. } => *left -= n.min(*left),
            BodyEnd::Chunked(dec) => dec.skip_data(n),
            BodyEnd::Close => {}
        }
    }

    /// Like [`BodyEnd::feed`], but appends only the payload to `out` (chunk framing
    /// stripped): how many of `buf`'s bytes were used.
    ///
    /// Errors: malformed chunked framing, with the reason.
    pub fn decode(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        match self {
            BodyEnd::Chunked(dec) => dec
                .decode(buf, |d| out.extend_from_slice(d))
                .map_err(|e| e.0),
            _ => {
                let (used, _) = self.feed(buf)?;
                out.extend_from_slice(&buf[..used]);
                Ok(used)
            }
        }
    }
}

/// Checks `buf`, the body bytes read together with a message's head, against the body's
/// `framing` before the head is forwarded: malformed chunked framing found there (RFC 9112
/// §7.1) can still be answered with an error (502 for a response, as for a malformed head),
/// where once the head is out the only answer left is to cut the message short. Only chunk
/// framing can be wrong this early; the data itself is not looked at (it is skipped by count).
///
/// Errors: the reason, as [`BodyEnd::feed`] gives it.
pub fn check_framing(framing: Framing, buf: &[u8]) -> Result<(), &'static str> {
    if buf.is_empty() || framing != Framing::Chunked {
        return Ok(());
    }
    BodyEnd::new(framing).feed(buf).map(|_| ())
}

/// What an upstream has sent while a request body is still on its way ([`answer_waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing yet (nothing queued, or interim 1xx heads only).
    Nothing,
    /// A final answer that does not refuse the body (2xx, 3xx, or a status line not all
    /// there yet): the upstream may still read the rest.
    Answer,
    /// A final error answer (4xx, 5xx): the upstream does not want the rest of the body. A
    /// client seeing one while it sends SHOULD cease sending (RFC 9112 §9.5); the proxy then
    /// relays it at once instead of after the body.
    Refusal,
    /// The start of a final answer whose status line is cut before its class digit
    /// (`HTTP/1.1 `): an answer, whose kind a later look tells (review: taken for a non-error
    /// answer, it stopped the looks and a 413 waited for the whole body).
    Partial,
    /// No answer, and none can come: the upstream reset the connection (the error's kind) or
    /// closed its side with nothing before the close (`UnexpectedEof`; an HTTP/1.1 response
    /// precedes the close, RFC 9112 §9.6). The body's move ends at once with an upstream
    /// error (a 502) instead of waiting for the client's next bytes: a client that waits for
    /// an answer before it sends more (a streaming exchange, a stale pooled connection's
    /// request) waited with it forever on HTTP/2 and until `body_timeout_ms` on HTTP/1.
    Gone(io::ErrorKind),
}

impl Waiting {
    /// Whether an answer has started (the connection is then not pooled).
    pub fn is_answer(self) -> bool {
        matches!(self, Waiting::Answer | Waiting::Refusal | Waiting::Partial)
    }

    /// Whether a later look may still find a refusal (none after [`Waiting::Gone`]).
    pub fn unsettled(self) -> bool {
        matches!(self, Waiting::Nothing | Waiting::Partial)
    }
}

/// What waits on `up` (one non-blocking peek at up to 512 queued bytes), interim 1xx heads
/// not counted. Looked at before each write of a request body after the first (see
/// [`forward_message`]), and when the upstream turns readable while the client is slow to
/// send: an answer there came before the upstream could have read the whole body. Such an
/// upstream may never read the rest (which may fit in the socket buffers all the same), and a
/// next request on the connection would land behind it unread, so the connection must not be
/// reused (curl closes in the same case). Looked at before the writes rather than after the
/// last one, so an upstream that reads the whole body and answers at once is not taken for
/// one (it answers only after the last write).
pub fn answer_waiting(up: &impl Peer) -> Waiting {
    let Some(fd) = tcp_fd(up) else {
        return Waiting::Nothing;
    };
    let mut b = [0u8; 512];
    match crate::sys::peek(fd, &mut b) {
        Ok(0) => Waiting::Gone(io::ErrorKind::UnexpectedEof),
        Ok(n) => waiting_in(&b[..n]),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Waiting::Nothing
        }
        Err(e) => Waiting::Gone(e.kind()),
    }
}

/// What `bytes` (the start of what an upstream sent, not yet relayed) say, as
/// [`answer_waiting`] reads a socket: also for bytes already read with an interim head (a
/// 100 and a 413 in one segment; review: the 413 then waited for the whole body).
pub fn waiting_in(bytes: &[u8]) -> Waiting {
    let mut queued = bytes;
    // Interim heads (`HTTP/1.x 1xx`: a 100 to `Expect`, a 103) are skipped: what counts is a
    // final answer behind them (review: `100 Continue` and a 413 sent back to back).
    while queued.len() >= 10 && queued.starts_with(b"HTTP/1.") && queued[8..10] == *b" 1" {
        match queued.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => queued = &queued[end + 4..],
            // An interim head longer than the peek, or still arriving: not an answer yet.
            None => return Waiting::Nothing,
        }
    }
    match queued {
        [] => Waiting::Nothing,
        // Not yet the class digit (byte 10 of `HTTP/1.x NNN`).
        q if q.len() < 10 => Waiting::Partial,
        // `HTTP/1.x 4` or `5`: the status class is enough (RFC 9110 §15).
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', b'4' | b'5', ..] => Waiting::Refusal,
        _ => Waiting::Answer,
    }
}

/// What reading a head gave.
#[derive(Debug)]
pub enum HeadRead<T> {
    /// A complete head.
    Head(T),
    /// The peer closed before sending any byte.
    Closed,
    /// The head is malformed or over a limit.
    Bad(HeadError),
    /// A read failed, or the peer closed mid-head (`UnexpectedEof`).
    Failed(io::Error),
}

impl<T> HeadRead<T> {
    /// Why a read that did not give a head failed, for a debug log line: the head's problem,
    /// the I/O error, or a close before any byte.
    pub fn why(&self) -> String {
        match self {
            HeadRead::Bad(e) => e.reason().to_string(),
            HeadRead::Failed(e) => e.to_string(),
            HeadRead::Closed => "closed before answering".to_string(),
            HeadRead::Head(_) => "a head".to_string(),
        }
    }
}

/// Reads from `s` until `parse` yields a head. `started` turns true once any byte of the head
/// is buffered (the caller may time this future out, and the buffer itself is lent to the
/// kernel while a read is in flight).
pub async fn read_head<T>(
    s: &mut impl Peer,
    buf: &mut Vec<u8>,
    started: &mut bool,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, HeadError>,
) -> HeadRead<T> {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some(t)) => return HeadRead::Head(t),
                Ok(None) => {}
                Err(e) => return HeadRead::Bad(e),
            }
        }
        let (r, b) = read_more(s, std::mem::take(buf)).await;
        *buf = b;
        *started |= !buf.is_empty();
        match r {
            Ok(0) if buf.is_empty() => return HeadRead::Closed,
            Ok(0) => return HeadRead::Failed(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) => return HeadRead::Failed(e),
        }
    }
}

/// Writes `data` to `dst`, with `head` (if not yet sent) in front: one send for a head and the
/// body bytes that came with it, instead of two. `acks` watches `dst`'s progress across the
/// writes of one message ([`AckWatch`]): a `dst` that stalled (acknowledged no byte for its
/// bound while bytes waited) fails the write with [`MessageError::WriteStalled`] (`dst` is
/// then unusable: part may have gone out); a slow reader that keeps taking bytes is waited
/// for.
pub async fn send_with_head(
    dst: &mut impl Peer,
    head: &mut Vec<u8>,
    data: Vec<u8>,
    acks: &mut AckWatch,
) -> Result<(), MessageError> {
    let side = dst.side();
    let out = if head.is_empty() {
        data
    } else {
        let mut out = std::mem::take(head);
        out.extend_from_slice(&data);
        out
    };
    let written = {
        let write = std::pin::pin!(write_all(dst, out));
        acks.within(write).await
    };
    written
        .ok_or(MessageError::WriteStalled(side))?
        .map_err(|e| MessageError::Io(side, e))?;
    acks.wrote().map_err(|_| MessageError::WriteStalled(side))
}

/// Moves one message from `src` to `dst`: `head` first (sent together with the first body
/// bytes), then the body as framed. `buf` holds bytes already read from `src` (they go first);
/// on return it holds what followed the body (the next message, pipelined).
/// `pause` bounds the wait for each read of the body ([`MessageError::ReadTimeout`] on
/// expiry), and the time `dst` may go without acknowledging a byte of it while bytes wait
/// for it, across all of the body's writes and waits ([`AckWatch`];
/// [`MessageError::WriteStalled`]).
///
/// With `splice`, runs of payload of known length (what is left of a `Content-Length` body,
/// or of one chunk's data; RFC 9112 §6.2, §7.1) are spliced from socket to socket instead of
/// copied when that body or chunk is declared at least `splice.min` bytes long and the run is
/// at least [`MIN_SPLICE_RUN`]; chunk-size lines and trailers are still read and
/// checked here, and no byte past the body is read.
///
/// `dst` is the client (a response body): while a wait for the body's next bytes runs past
/// [`WATCH_AFTER`], it is watched for a reset, which ends the move with
/// [`MessageError::Io`] on `dst`'s side (readable for another reason, a pipelined request or
/// a half-close, it is not watched again for this body).
///
/// Returns what followed the body in `src` (the next message, pipelined).
#[allow(clippy::too_many_arguments)] // each is one facet of the move; a struct would only rename them
pub async fn forward_message(
    src: &mut impl Peer,
    dst: &mut impl Peer,
    head: Vec<u8>,
    framing: Framing,
    buf: Vec<u8>,
    pause: Option<Duration>,
    splice: Option<BodySplice<'_>>,
) -> Result<Vec<u8>, MessageError> {
    let to = dst.side();
    match move_message(src, dst, head, framing, buf, pause, splice, None).await {
        Ok(Moved::Whole(rest)) => Ok(rest),
        // (Not reached: without looks nothing stops the move for an answer.)
        Ok(Moved::Answered(_)) => Err(MessageError::Refused(to)),
        Err(e) => {
            // (A reset the watch found was read off the socket, not by a call that noted it:
            // its errno goes to `tcp_close_total` from here.)
            if let MessageError::Io(side, err) = &e {
                if *side == to {
                    dst.note_error(err);
                }
            }
            Err(e)
        }
    }
}

/// How a request body's move looks at its upstream for an answer ([`forward_request_body`]).
#[derive(Debug, Clone, Copy)]
pub struct Looks<'a> {
    /// Set once an answer waits before one of the body's writes.
    pub answered: &'a Cell<bool>,
    /// Whether a non-error answer stops the move ([`Moved::Answered`]): the caller then moves
    /// the rest of the body and the response at once. Otherwise only an error answer stops
    /// it, and a non-error one waits for the body's end.
    pub duplex: bool,
}

/// How [`forward_request_body`] ended.
#[derive(Debug)]
pub enum Moved {
    /// The whole body went; what followed it in the source (the next request, pipelined).
    Whole(Vec<u8>),
    /// The upstream's answer (a non-error final status line) waited before the body's end,
    /// and the move stopped (with [`Looks::duplex`]): the rest is the caller's to move.
    Answered(Unfinished),
}

/// A request body whose move stopped because the upstream answered before its end: where
/// it stands, for the caller to go on moving it while it relays the answer
/// (`http1::duplex`).
#[derive(Debug)]
pub struct Unfinished {
    /// Bytes of the body read from the client and not yet written upstream: they go first.
    pub held: Vec<u8>,
    /// Then this many bytes of the body are moved as they are, unexamined (the rest of a
    /// spliced run: payload, and chunk framing the run had already checked).
    pub passthrough: u64,
    /// The body's state once those are through.
    pub end: BodyEnd,
}

/// [`forward_message`] for a request body on its way upstream (`src` the client, `dst` the
/// upstream), looking for an answer that comes before the body's end: `dst` is looked at
/// before each body write but the first ([`answer_waiting`]), and while a wait for the body's
/// next bytes (or for room to write them) runs past [`crate::io::WATCH_AFTER`], when `dst`
/// turns readable; `looks.answered` is set once an answer waits there. An error answer
/// ([`Waiting::Refusal`]) ends the move with [`MessageError::Refused`]: the rest of the body
/// is not sent (nor read), and the caller relays the answer. A non-error one, with
/// `looks.duplex`, ends it with [`Moved::Answered`] (an upstream that answers while it reads
/// the body, an echo or a transcoder, stops reading once its answer fills the buffers between
/// it and a client that nobody reads from). While the body is moved, its reads and writes
/// after the head's are non-blocking calls and readiness waits, so that a stop loses none of
/// its bytes (a completion read cancelled as it completes would).
#[allow(clippy::too_many_arguments)] // as forward_message
pub async fn forward_request_body(
    src: &mut impl Peer,
    dst: &mut impl Peer,
    head: Vec<u8>,
    framing: Framing,
    buf: Vec<u8>,
    pause: Option<Duration>,
    splice: Option<BodySplice<'_>>,
    looks: Looks<'_>,
) -> Result<Moved, MessageError> {
    move_message(src, dst, head, framing, buf, pause, splice, Some(looks)).await
}

/// [`forward_message`] and [`forward_request_body`].
#[allow(clippy::too_many_arguments)] // as forward_message
async fn move_message(
    src: &mut impl Peer,
    dst: &mut impl Peer,
    mut head: Vec<u8>,
    framing: Framing,
    mut buf: Vec<u8>,
    pause: Option<Duration>,
    splice: Option<BodySplice<'_>>,
    looks: Option<Looks<'_>>,
) -> Result<Moved, MessageError> {
    let (from, to) = (src.side(), dst.side());
    let answered = looks.map(|l| l.answered);
    let duplex = looks.is_some_and(|l| l.duplex);
    // Set when a look stopped the move for a non-error answer (with `duplex`).
    let for_answer = Cell::new(false);
    // Request bodies read and write without completion ops once the head is out: see
    // `forward_request_body`.
    let readiness = looks.is_some() && src.tcp().is_some() && dst.tcp().is_some();
    let mut end = BodyEnd::new(framing);
    // A request body: set `answered` once an answer waits before one of its writes. Looked
    // at before every write of framing (which includes the chunked body's last), before a
    // `Content-Length` body's last batch, and otherwise once per `ANSWER_LOOK_EVERY` bytes:
    // an answer that came meanwhile is found before the body's end all the same, at one
    // peek per a few hundred KiB instead of one per 64 KiB batch.
    let mut since_look = 0u64;
    // Also after `WATCH_AFTER` since the last look, so a slow but steady upload (a spliced
    // run of a few bytes at a time) sees an answer as soon as a paused one does (review: a
    // 413 reached a 100 KB/s uploader after 2.8 s).
    let mut looked_at = Instant::now();
    // Looks go on until what waits is known not to be a refusal.
    let mut unsettled = answered.is_some_and(|a| !a.get());
    // A response body (no looks) watches its client while the upstream pauses, for a reset,
    // as the wait for the response head does: a client gone mid-body then frees the
    // upstream connection at once instead of at the upstream's next bytes or
    // `stream_idle_timeout_ms` (the reset's error is kept here). A request body's look keeps
    // here why its upstream is gone ([`Waiting::Gone`]).
    let reset: Cell<Option<io::Error>> = Cell::new(None);
    // Set when `dst` stalled while the body's next bytes were awaited (see `BodyWatch`).
    let stalled = Cell::new(false);
    // `true`: the upstream refused the body (an error answer waits), or the client of a
    // response body was reset.
    let mut look = |dst: &_, n: u64, last: bool| {
        if looks.is_none() {
            return was_reset(dst, &reset);
        }
        let Some(a) = answered.filter(|_| unsettled) else {
            return false;
        };
        since_look = since_look.saturating_add(n);
        let ends_body = last && framing != Framing::Chunked;
        if ends_body || since_look >= ANSWER_LOOK_EVERY || looked_at.elapsed() >= WATCH_AFTER {
            since_look = 0;
            looked_at = Instant::now();
            let waiting = answer_waiting(dst);
            a.set(a.get() || waiting.is_answer());
            unsettled = waiting.unsettled();
            if let Waiting::Gone(kind) = waiting {
                // (Ends the move as the failed write it spares would: `stop`.)
                reset.set(Some(kind.into()));
                return true;
            }
            if waiting == Waiting::Answer && duplex {
                for_answer.set(true);
                return true;
            }
            return waiting == Waiting::Refusal;
        }
        false
    };
    // The move stopped by a look, with `held` read and not written, `passthrough` bytes to
    // move as they are and then `end`: for an answer, handed over; for a refusal, an error.
    let stop = |held: Vec<u8>, passthrough: u64, end: BodyEnd| {
        if stalled.get() {
            return Err(MessageError::WriteStalled(to));
        }
        if let Some(e) = reset.take() {
            return Err(MessageError::Io(to, e));
        }
        if for_answer.get() {
            Ok(Moved::Answered(Unfinished {
                held,
                passthrough,
                end,
            }))
        } else {
            Err(MessageError::Refused(to))
        }
    };
    // The wait for the body's next bytes also watches `dst`: for an answer (request bodies)
    // or a reset (response bodies).
    let armed = answered.is_some() || dst.tcp().is_some();
    let mut watch = BodyWatch {
        look: &mut look,
        armed,
        writes: looks.is_some(),
        acks: AckWatch::new(tcp_fd(dst), pause),
        stalled: &stalled,
    };
    // Non-blocking from the body's first spliced run to its end (dropped on return).
    let mut sockets = BodySockets::default();
    // The framing peeked at right after the last framed run (see `FramedRun::after`).
    let mut after: Option<Peeked> = None;
    let rest = loop {
        let (used, done) = end
            .feed(&buf)
            .map_err(|e| MessageError::BadFraming(from, e))?;
        // A spliced run comes next (a big chunk's data after its size line).
        let run_next = !done && splice.is_some_and(|sp| splices(&end, sp));
        if used > 0 || !head.is_empty() {
            // The run looks before its own first write, a few bytes later.
            if head.is_empty() && !run_next {
                // (A framing write always looks: counted as past the bound.)
                if watch.before_write(&*dst, u64::MAX, false) {
                    buf.truncate(used);
                    return stop(buf, 0, end);
                }
            }
            let rest = buf.split_off(used);
            // (The head went out with the body's first bytes, before any run.)
            if readiness && head.is_empty() {
                if let Err(w) = write_watched(dst, &buf, &mut watch).await {
                    return match w {
                        WriteStop::Stopped(off) => stop(buf.split_off(off), 0, end),
                        WriteStop::Failed(e) => Err(e),
                    };
                }
            } else if sockets.nonblocking() && head.is_empty() {
                write_ready(dst, &buf, &mut watch.acks)
                    .await
                    .ok_or(MessageError::WriteStalled(to))?
                    .map_err(|e| MessageError::Io(to, e))?;
            } else {
                send_with_head(dst, &mut head, buf, &mut watch.acks).await?;
            }
            buf = rest;
        }
        if done || framing == Framing::Empty {
            break buf;
        }
        // Every byte of `buf` was body: it is empty here.
        if let Some(sp) = splice {
            let n = end.run();
            if run_next {
                match splice_run(sp, src, dst, n, pause, &mut watch, &mut sockets).await {
                    Ok(true) => {
                        end.skip(n);
                        if end.is_done() {
                            break buf;
                        }
                        continue;
                    }
                    Ok(false) => {}
                    Err(RunError::Stopped { taken, held }) => {
                        end.skip(n);
                        return stop(held, n - taken, end);
                    }
                    Err(e) => return Err(run_error(e, from, to)),
                }
            }
        }
        // Between big chunks with the sockets non-blocking: the CRLF and the next size line
        // are looked at where they wait and, when a chunk to splice follows, spliced on with
        // its data rather than read and written (a peek instead of a read, and no write of a
        // few bytes in a segment of their own); where the kernel peeks at an offset, the
        // chunks already queued behind it too, up to a pipe's worth in one run (fewer reads
        // of the source, each of which can send it a window update).
        if let Some(sp) = splice.filter(|_| sockets.nonblocking() && between_chunks(&end)) {
            // What the last framed run saw right after itself, if it was spliced whole and
            // nothing has been taken from `src` since (this iteration spliced no run).
            let seen = after.take().filter(|_| !run_next);
            let next = framed_runs(&end, src, &*dst, sp, pause, &mut watch, &mut sockets, seen);
            let next = match next.await {
                // (Stopped while waiting for the framing: nothing was taken.)
                Err(MessageError::Refused(_)) => return stop(Vec::new(), 0, end),
                next => next?,
            };
            if let Some(next) = next {
                match splice_run(sp, src, dst, next.len, pause, &mut watch, &mut sockets).await {
                    Ok(true) => {
                        end = next.end;
                        after = next.after;
                        continue;
                    }
                    Ok(false) => {}
                    Err(RunError::Stopped { taken, held }) => {
                        return stop(held, next.len - taken, next.end);
                    }
                    Err(e) => return Err(run_error(e, from, to)),
                }
            }
        }
        // Around big chunks (a rest too short to splice, a chunk's CRLF, a size line), a
        // splicing reader asks for no more than up to the next size line: the next chunk's
        // data stays in the socket to be spliced too, whether the size line is already there
        // or still on its way.
        let limit = splice.and_then(|sp| end.framing_read(sp.min, CHUNK_LINE_READ));
        // (A request body's upstream is watched meanwhile: see `BodyWatch`.)
        let read = if sockets.nonblocking() || readiness {
            let ready = read_ready(src, buf, limit.unwrap_or(READ_CHUNK), pause);
            // (`read_ready` bounds its own waits: no bound here, so never `None`.)
            watch.wait(ready, None, &*dst).await.unwrap_or(Ok(None))
        } else if let Some(n) = limit {
            watch
                .wait(read_at_most(src, buf, n), pause, &*dst)
                .await
                .transpose()
        } else {
            watch
                .wait(read_more(src, buf), pause, &*dst)
                .await
                .transpose()
        };
        let Ok(read) = read else {
            // (Every byte read so far was written: nothing held.)
            return stop(Vec::new(), 0, end);
        };
        let (r, b) = read.ok_or(MessageError::ReadTimeout(from))?;
        buf = b;
        match r {
            Ok(0) if matches!(end, BodyEnd::Close) => break Vec::new(),
            Ok(0) => return Err(MessageError::Eof(from)),
            Ok(_) => {}
            Err(e) => return Err(MessageError::Io(from, e)),
        }
    };
    Ok(Moved::Whole(rest))
}

/// How [`write_watched`] stopped short.
enum WriteStop {
    /// The look stopped it with this many bytes written.
    Stopped(usize),
    /// The write failed or stalled.
    Failed(MessageError),
}

/// Writes `data` to `dst` (a request body's upstream, with a TCP socket) as [`write_ready`]
/// does, non-blocking sends and readiness waits with `dst`'s progress watched by
/// `watch.acks`, whatever the socket's mode; a wait also watches `dst` for an answer
/// ([`BodyWatch::wait_write`]), which may stop the write.
async fn write_watched<D: Peer>(
    dst: &mut D,
    data: &[u8],
    watch: &mut BodyWatch<'_, D>,
) -> Result<(), WriteStop> {
    let to = dst.side();
    let Some(fd) = tcp_fd(dst) else {
        return Err(WriteStop::Failed(MessageError::Io(
            to,
            io::ErrorKind::Unsupported.into(),
        )));
    };
    let mut off = 0;
    while off < data.len() {
        match crate::sys::send_now(fd, &data[off..]) {
            Ok(n) => {
                dst.wrote(n as u64);
                off += n;
                if watch.acks.wrote().is_err() {
                    return Err(WriteStop::Failed(MessageError::WriteStalled(to)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let waited = {
                    let d: &D = dst;
                    let Some(t) = d.tcp() else {
                        // (Not reached: `fd` is its socket's.)
                        return Err(WriteStop::Failed(MessageError::WriteStalled(to)));
                    };
                    watch.wait_write(t.writable(false), d).await
                };
                match waited {
                    None => return Err(WriteStop::Failed(MessageError::WriteStalled(to))),
                    Some(Err(Stopped)) => return Err(WriteStop::Stopped(off)),
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        dst.note_error(&e);
                        return Err(WriteStop::Failed(MessageError::Io(to, e)));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                dst.note_error(&e);
                return Err(WriteStop::Failed(MessageError::Io(to, e)));
            }
        }
    }
    Ok(())
}

/// Bytes of a spliced request body written between two looks for an early answer
/// ([`answer_waiting`]), outside the looks every body's last write gets.
const ANSWER_LOOK_EVERY: u64 = 256 * 1024;

/// Whether `end` is a chunked body between two chunks' data (a CRLF or a size line next).
fn between_chunks(end: &BodyEnd) -> bool {
    matches!(end, BodyEnd::Chunked(dec) if dec.between_chunks())
}

/// What [`framed_runs`] found waiting between two chunks: `len` bytes to splice as they are,
/// framing (a chunk's CRLF, the next chunk-size line) and the data of one or more chunks.
struct FramedRun {
    /// Bytes of the body to splice.
    len: u64,
    /// The body's state once they are through (between two chunks again).
    end: BodyEnd,
    /// What was peeked at right after the run: the framing of a next chunk to splice that
    /// did not fit in the pipe with it. Once the run is spliced whole these are the bytes at
    /// the head of `src`, so the next [`framed_runs`] starts from them instead of peeking
    /// again (one `setsockopt` and one `recv` less per run).
    after: Option<Peeked>,
}

/// Bytes peeked at in a body's source socket: a copy of the first `.1` bytes queued there.
type Peeked = ([u8; CHUNK_LINE_READ], usize);

/// Looks at what waits in `src` after a chunk of a body whose sockets are non-blocking
/// (peeks of [`CHUNK_LINE_READ`] bytes), waiting up to `pause` for a first byte. `Some` when
/// it is the CRLF and a complete, valid size line of a chunk to splice ([`splices`]), with
/// the chunks queued behind that one added as long as the kernel can peek at their framing
/// ([`BodySockets::peek_src`]), each is one to splice, and they fit in a pipe
/// (`sp.pipes.bytes`) together; not for a while after such a look found nothing queued
/// ([`BodySockets::look_ahead`]). `None` for anything else next (the terminator, a small chunk,
/// a line still arriving or longer than the peek, malformed framing), which the normal reads
/// then take and check.
///
/// Errors: [`MessageError::ReadTimeout`] when nothing came for `pause`; the read error.
#[allow(clippy::too_many_arguments)] // forward_message's state, lent for one look
async fn framed_runs<D: Peer>(
    end: &BodyEnd,
    src: &mut impl Peer,
    dst: &D,
    sp: BodySplice<'_>,
    pause: Option<Duration>,
    watch: &mut BodyWatch<'_, D>,
    sockets: &mut BodySockets,
    mut seen: Option<Peeked>,
) -> Result<Option<FramedRun>, MessageError> {
    let (from, to) = (src.side(), dst.side());
    let mut b = [0u8; CHUNK_LINE_READ];
    let mut len = 0u64;
    let mut at = end.clone();
    let mut after = None;
    // Chunks past the first are looked for unless such looks keep finding nothing.
    let ahead = sockets.look_ahead();
    loop {
        if len > 0 && !ahead {
            break;
        }
        let peeked = match seen.take() {
            Some((bytes, n)) => {
                b = bytes;
                Ok(Some(n))
            }
            None => sockets.peek_src(len, &mut b),
        };
        let n = match peeked {
            Ok(Some(n)) => n,
            // The first look waits for the bytes; a later one takes what is there.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && len == 0 => {
                let Some(t) = src.tcp() else { break };
                watch
                    .wait(t.readable(false), pause, dst)
                    .await
                    .ok_or(MessageError::ReadTimeout(from))?
                    .map_err(|Stopped| MessageError::Refused(to))?
                    .map_err(|e| MessageError::Io(from, e))?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sockets.missed_ahead();
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Not there yet, no offset peeks, or an error the read that follows reports.
            _ => break,
        };
        let Some((lead, size)) = next_chunk(&at, &b[..n], sp) else {
            break;
        };
        if len > 0 && len + lead + size > sp.pipes.bytes as u64 {
            // The head of the queue once this run is through.
            after = Some((b, n));
            break;
        }
        let fed = at.feed(&b[..lead as usize]);
        debug_assert!(matches!(fed, Ok((k, false)) if k as u64 == lead));
        at.skip(size);
        len += lead + size;
    }
    Ok((len > 0).then_some(FramedRun {
        len,
        end: at,
        after,
    }))
}

/// With `end` between two chunks and `peeked` what follows in the stream: the framing's
/// length (the CRLF, the size line) and the next chunk's size, when that chunk is one to
/// splice ([`splices`]); `None` when `peeked` shows anything else or not all of the framing.
fn next_chunk(end: &BodyEnd, peeked: &[u8], sp: BodySplice<'_>) -> Option<(u64, u64)> {
    let mut next = end.clone();
    let Ok((used, false)) = next.feed(peeked) else {
        return None;
    };
    let BodyEnd::Chunked(dec) = &next else {
        return None;
    };
    if dec.data_left() == 0 || !splices(&next, sp) {
        return None;
    }
    // `used` may take the first bytes of the chunk's data with the framing.
    let size = dec.last_chunk_size();
    let data = size - dec.data_left();
    Some((used as u64 - data, size))
}

/// Whether what `end` expects next is a run of payload to splice with `sp`: a body or chunk
/// declared at least `sp.min` bytes long, with at least [`MIN_SPLICE_RUN`] of it left.
fn splices(end: &BodyEnd, sp: BodySplice<'_>) -> bool {
    end.run_size() >= sp.min && end.run() >= MIN_SPLICE_RUN
}

/// Runs shorter than this many bytes are copied even in a body or chunk over the splice
/// threshold (what is left after a read took most of it): below about a page, the pipe and
/// the sockets' mode switches cost more than the copy. A page less the read between chunks
/// ([`CHUNK_LINE_READ`]), so that a chunk exactly the smallest threshold (4096) still
/// qualifies after its size line's read took some of its data.
const MIN_SPLICE_RUN: u64 = 4096 - CHUNK_LINE_READ as u64;

/// A read between chunks when splicing, in bytes: room for the data's CRLF and the next
/// chunk-size line (`CRLF 16-hex-digits CRLF` is 20), so the next chunk's data stays in
/// the socket to be spliced. A longer line (extensions) is read on by the normal reads.
const CHUNK_LINE_READ: usize = 64;

/// A spliced run's error as the message's: which side, and what kind.
fn run_error(e: RunError, from: Side, to: Side) -> MessageError {
    match e {
        RunError::ReadTimeout => MessageError::ReadTimeout(from),
        RunError::WriteStalled => MessageError::WriteStalled(to),
        RunError::Eof => MessageError::Eof(from),
        RunError::Read(e) => MessageError::Io(from, e),
        RunError::Write(e) => MessageError::Io(to, e),
        RunError::Stopped { .. } => MessageError::Refused(to),
    }
}

/// Whether `client`'s socket was reset (`SO_ERROR` set, which is read and cleared): then
/// `reset` keeps the error. A FIN is not a reset: HTTP/1 lets a client half-close once its
/// request is sent.
fn was_reset(client: &impl Peer, reset: &Cell<Option<io::Error>>) -> bool {
    match tcp_fd(client).map(crate::sys::take_socket_error) {
        Some(Ok(Some(e))) => {
            reset.set(Some(e));
            true
        }
        _ => false,
    }
}

/// Moves one chunked message from `src` to `dst` like [`forward_message`], but sends only
/// its payload: chunk framing and trailers are dropped. For a recipient that cannot take the
/// chunked coding (an HTTP/1.0 client, RFC 9112 §6.1), whose copy of the body then ends at the
/// close (the caller closes `dst` after it). Returns what followed the body in `src`.
pub async fn forward_dechunked(
    src: &mut impl Peer,
    dst: &mut impl Peer,
    mut head: Vec<u8>,
    mut buf: Vec<u8>,
    pause: Option<Duration>,
) -> Result<Vec<u8>, MessageError> {
    let (from, to) = (src.side(), dst.side());
    let mut end = BodyEnd::new(Framing::Chunked);
    let mut armed = true;
    let mut acks = AckWatch::new(tcp_fd(dst), pause);
    loop {
        let mut payload = Vec::with_capacity(buf.len());
        let used = end
            .decode(&buf, &mut payload)
            .map_err(|e| MessageError::BadFraming(from, e))?;
        if !payload.is_empty() || !head.is_empty() {
            send_with_head(dst, &mut head, payload, &mut acks).await?;
        }
        buf.drain(..used);
        if end.is_done() {
            return Ok(buf);
        }
        // (The client is watched for a reset meanwhile, as in `forward_message`.)
        let reset = Cell::new(None);
        let read = {
            let read = std::pin::pin!(watching(read_more(src, buf), dst.tcp(), &mut armed, || {
                was_reset(&*dst, &reset)
            }));
            acks.reading(read, pause).await
        };
        let read = read
            .map_err(|_| MessageError::WriteStalled(to))?
            .ok_or(MessageError::ReadTimeout(from))?;
        let Ok((r, b)) = read else {
            let e = reset
                .take()
                .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into());
            dst.note_error(&e);
            return Err(MessageError::Io(to, e));
        };
        buf = b;
        match r {
            Ok(0) => return Err(MessageError::Eof(from)),
            Ok(_) => {}
            Err(e) => return Err(MessageError::Io(from, e)),
        }
    }
}

/// A response head's status code and length, for the reads shared by the HTTP/1 proxy and
/// the h2→h1 bridge.
pub trait ResponseHead {
    /// The status code.
    fn code(&self) -> u16;
    /// Bytes of the head in the read buffer.
    fn head_len(&self) -> usize;
}

/// After the upstream stopped taking a request body: the final response it sent meanwhile (a
/// 413 or 401 for an upload, say), with the bytes read after its head. Interim (1xx) responses
/// are skipped. `None` when no final head arrives within `timeout`.
pub async fn early_answer<T: ResponseHead>(
    up: &mut UpConn,
    timeout: Duration,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, HeadError>,
) -> Option<(T, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut interim = 0;
    loop {
        let mut started = false;
        let read = read_head(up, &mut buf, &mut started, &mut parse);
        match monoio::time::timeout(timeout, read).await {
            Ok(HeadRead::Head(h)) if h.code() < 200 && interim < MAX_INTERIM => {
                interim += 1;
                buf.drain(..h.head_len());
            }
            Ok(HeadRead::Head(h)) => {
                buf.drain(..h.head_len());
                return Some((h, buf));
            }
            // Too many interim responses, a bad head, none in time (an I/O error was counted
            // where it happened).
            _ => {
                return None;
            }
        }
    }
}

/// A bodiless request sent on a pooled connection, kept so it can be sent once more: the
/// upstream may have closed the connection while it idled (RFC 9112 §9.3.1 lets a client
/// retry a request that got no response on a connection the server closed; a bodiless
/// request that saw no response byte cannot have been processed).
#[derive(Debug)]
pub struct Resend {
    head: Option<Vec<u8>>,
}

impl Resend {
    /// Keeps a copy of `head` when the request went on a `pooled` connection and is
    /// `bodiless`.
    pub fn new(pooled: bool, bodiless: bool, head: &[u8]) -> Resend {
        Resend {
            head: (pooled && bodiless).then(|| head.to_vec()),
        }
    }

    /// Whether a failed response read on the connection (`nothing_read`: not one byte of a
    /// response came back) is a stale connection the request can be resent for.
    pub fn applies(&self, nothing_read: bool) -> bool {
        nothing_read && self.head.is_some()
    }

    /// Sends the request once more on a fresh connection to `addr` (only once: later calls
    /// to [`Resend::applies`] say no).
    ///
    /// Errors: the `sidewire-error` reason for the client's 502.
    pub async fn resend(
        &mut self,
        m: &ListenerMetrics,
        h: &Health,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<UpConn, &'static str> {
        let head = self.head.take().ok_or("upstream connection failed")?;
        tracing::debug!(upstream = %addr, "stale pooled connection; resending on a fresh one");
        let mut up = dial_h1(m, h, addr, connect_timeout).await?;
        write_all(&mut up, head)
            .await
            .map_err(|_| "upstream write failed")?;
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_framing, reason_phrase, Framing};

    /// Only chunk framing is checked, and only as far as the bytes go: a good prefix of a
    /// chunked body passes, a bad size line or a chunk's missing CRLF does not.
    #[test]
    fn framing_read_with_a_head_is_checked() {
        assert!(check_framing(Framing::Chunked, b"").is_ok());
        assert!(check_framing(Framing::Chunked, b"5\r\nhel").is_ok());
        assert!(check_framing(Framing::Chunked, b"5\r\nhello\r\n0\r\n\r\n").is_ok());
        assert!(check_framing(Framing::Chunked, b"ZZ\r\nhello").is_err());
        assert!(check_framing(Framing::Chunked, b"3\r\nabcXX\r\n").is_err());
        assert!(check_framing(Framing::Length(3), b"ZZ\r\n").is_ok());
        assert!(check_framing(Framing::UntilClose, b"ZZ").is_ok());
    }

    /// Every registered status has its phrase (413 and 418 were relayed with none once);
    /// unregistered codes have none and are sent with an empty phrase.
    #[test]
    fn reason_phrases_cover_registered_statuses() {
        assert_eq!(reason_phrase(413), Some("Payload Too Large"));
        assert_eq!(reason_phrase(418), Some("I'm a teapot"));
        assert_eq!(reason_phrase(429), Some("Too Many Requests"));
        assert_eq!(reason_phrase(502), Some("Bad Gateway"));
        assert_eq!(reason_phrase(299), None);
        assert_eq!(reason_phrase(1000), None);
    }
}
