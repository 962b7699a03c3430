//! The request body of an h2 → h1 exchange, moved to the HTTP/1.1 upstream with non-blocking
//! sends, so that it can go on while the response is read from the same socket (full duplex).
//!
//! HTTP/1.1 lets a server answer while the request body is still arriving (RFC 9112 §9.5),
//! and an echo, a transcoder or a streaming RPC does it by design: it writes its answer as it
//! reads, and once the answer fills the buffers between it and a proxy that does not read it,
//! it stops reading. Moving the whole body before reading the response deadlocked with such
//! a server (measured: an h2c client's 20 MB echo stalled after 10.3 MB). [`Pump::send`]
//! moves the body until a non-error answer waits (then it stops where it stands), and
//! [`Pump::read_response`] reads the response while moving the rest of the body, and
//! [`Pump::finish`] moves what is left once the response has ended.

use std::io;
use std::io::Write as _;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::Reason;

use crate::http2::conn::RecvBody;
use http::HeaderMap;

use crate::error::Failure;
use crate::http1::message::{answer_waiting, Waiting};
use crate::io::{tcp_fd, watching, AckWatch, Peer, Stopped, READ_CHUNK};
use crate::sys;
use crate::upstream::pool::UpConn;

/// Where the client's body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// DATA frames may still come.
    Data,
    /// The data has ended; trailers (if any) are next.
    Trailers,
    /// The end (the last chunk, with the trailers) is queued or written.
    Done,
}

/// How [`Pump::send`] ended.
pub(super) enum Sent {
    /// The whole body was written; `answered`: an answer had started before one of its
    /// writes (the connection is then not pooled, see [`answer_waiting`]).
    Whole { answered: bool },
    /// A non-error answer (a status line of class 1xx–3xx past any interim heads) waits
    /// before the body's end: the rest is moved by [`Pump::read_response`] and
    /// [`Pump::finish`].
    Answered,
}

/// A request body on its way from an h2 stream to an HTTP/1.1 upstream, chunked or as is.
pub(super) struct Pump {
    body: RecvBody,
    /// Bytes to write next (a DATA frame's payload as it came, or framed as a chunk; the last
    /// chunk with the trailers).
    out: Bytes,
    /// Flow-control capacity to give back to the client once `out` is written.
    release: usize,
    chunked: bool,
    state: State,
    /// The upstream took no more of the body (a write failed) after its answer came.
    stopped: bool,
    /// The client reset its stream (seen by [`Pump::read_response`] or [`Pump::finish`]).
    reset: Option<Reason>,
    /// The upstream's progress while [`Pump::send`] moves the body ([`AckWatch`]).
    acks: AckWatch,
}

/// What a wait in [`Pump::read_response`] or [`Pump::finish`] saw.
enum Woke {
    /// The upstream socket is readable or writable (the next call on it tells).
    Socket,
    /// The client's next DATA (`None`: its data ended).
    Data(Option<Result<Bytes, h2::Error>>),
    /// The client's trailers.
    Trailers(Result<Option<HeaderMap>, h2::Error>),
}

/// A request body write that failed or stalled.
pub(super) const WRITE_FAILED: Failure = Failure::Status(502, "upstream write failed");

/// The upstream answered with an error before the request body's end (RFC 9112 §9.5): the
/// rest is not sent, and the caller relays that answer (a 502 only if it turns out
/// malformed).
pub(super) const REFUSED: Failure = Failure::Status(502, "malformed upstream response");

/// Whether what waits on the upstream ends [`Pump::send`]: a final answer, whose class is
/// known (an error refuses the rest, RFC 9112 §9.5; another hands it over), or the
/// upstream's reset or close with no answer ([`Waiting::Gone`]: the body goes nowhere, and a
/// client waiting for an answer before it sends more would wait forever).
fn stops(w: Waiting) -> bool {
    matches!(w, Waiting::Refusal | Waiting::Answer | Waiting::Gone(_))
}

fn reset(e: h2::Error) -> Failure {
    Failure::Reset(e.reason().unwrap_or(Reason::CANCEL))
}

impl Pump {
    /// The body `body` of a request whose head went upstream; `first`: data the client sent
    /// already (read while waiting for a `100 Continue`). `chunked`: the body is framed as
    /// chunks (the request had no `content-length`, RFC 9112 §7.1).
    pub fn new(body: RecvBody, first: Option<Bytes>, chunked: bool) -> Pump {
        let mut p = Pump {
            body,
            out: Bytes::new(),
            release: 0,
            chunked,
            state: State::Data,
            stopped: false,
            reset: None,
            acks: AckWatch::new(None, None),
        };
        if let Some(d) = first.filter(|d| !d.is_empty()) {
            p.queue(d);
        }
        p
    }

    /// Queues one DATA frame's payload.
    fn queue(&mut self, d: Bytes) {
        let n = d.len();
        self.release = n;
        self.out = if self.chunked {
            let mut framed = Vec::with_capacity(n + 20);
            let _ = write!(framed, "{n:x}\r\n");
            framed.extend_from_slice(&d);
            framed.extend_from_slice(b"\r\n");
            Bytes::from(framed)
        } else {
            // As it came: no copy.
            d
        };
    }

    /// The client's data ended: queues the last chunk with `trailers` (RFC 9112 §7.1.2) when
    /// chunked; a body framed by `content-length` has nothing more to send (its trailers
    /// cannot cross).
    fn end(&mut self, trailers: Option<HeaderMap>) {
        self.state = State::Done;
        if !self.chunked {
            return;
        }
        let mut end = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            end.extend_from_slice(name.as_str().as_bytes());
            end.extend_from_slice(b": ");
            end.extend_from_slice(value.as_bytes());
            end.extend_from_slice(b"\r\n");
        }
        end.extend_from_slice(b"\r\n");
        self.out = Bytes::from(end);
    }

    /// Whether the whole body was written (or the upstream stopped taking it).
    fn is_done(&self) -> bool {
        self.stopped || (self.state == State::Done && self.out.is_empty())
    }

    /// One non-blocking send of what is queued: `Ok(true)` when bytes went, `Ok(false)` when
    /// the socket's buffer is full (`EAGAIN`). Gives the client's window back once a frame's
    /// bytes are all written.
    fn send_now(&mut self, up: &mut UpConn, fd: RawFd) -> io::Result<bool> {
        match sys::send_now(fd, &self.out) {
            Ok(n) => {
                up.wrote(n as u64);
                self.out.advance(n);
                if self.out.is_empty() && self.release > 0 {
                    self.body.release(self.release);
                    self.release = 0;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => {
                up.note_error(&e);
                Err(e)
            }
        }
    }

    /// Moves the body to `up` until its end, or until an answer waits before one of its
    /// writes: an error answer stops it ([`REFUSED`], the caller relays that answer), a
    /// non-error one hands the rest over ([`Sent::Answered`]). An upstream that acknowledges
    /// no byte of it for `pause` while bytes wait for it (it may have stopped reading), during
    /// a write or while the client is slow to send the next ones ([`AckWatch`]), fails it
    /// ([`WRITE_FAILED`], the caller looks for an answer sent meanwhile). A client slow to send is watched once its
    /// wait runs past [`crate::io::WATCH_AFTER`], and so is a write the upstream is slow to
    /// take. Errors: the client's stream error as a reset.
    pub async fn send(&mut self, up: &mut UpConn, pause: Duration) -> Result<Sent, Failure> {
        let Some(fd) = tcp_fd(up) else {
            return Err(WRITE_FAILED);
        };
        self.acks = AckWatch::new(Some(fd), Some(pause));
        let mut looks = Looks {
            answered: false,
            unsettled: true,
            found: Waiting::Nothing,
        };
        // Whether a slow client's waits also watch the upstream (until it said something that
        // is not an answer, which stays queued).
        let mut armed = true;
        // Whether a wait for room also watches the upstream: not again after a wake-up the
        // look did not stop on (an interim head stays queued) until bytes went.
        let mut watch = true;
        loop {
            if self.out.is_empty() {
                match self.state {
                    State::Done => {
                        return Ok(Sent::Whole {
                            answered: looks.answered,
                        })
                    }
                    State::Data => {
                        // (The upstream may stall meanwhile with bytes of the body unread.)
                        let next = {
                            let look = || stops(looks.look(&*up));
                            let next = std::pin::pin!(watching(
                                self.body.data(),
                                Some(up.stream()),
                                &mut armed,
                                look
                            ));
                            self.acks.reading(next, None).await
                        };
                        let Ok(next) = next else {
                            return Err(WRITE_FAILED);
                        };
                        match next {
                            Some(Ok(Some(d))) => {
                                let d = d.map_err(reset)?;
                                if !d.is_empty() {
                                    self.queue(d);
                                }
                            }
                            Some(Ok(None)) => self.state = State::Trailers,
                            // (No bound was given: `None` does not happen.)
                            Some(Err(Stopped)) | None => return looks.stopped(),
                        }
                    }
                    State::Trailers => {
                        let t = self.body.trailers().await.map_err(reset)?;
                        self.end(t);
                    }
                }
                continue;
            }
            // Every write here follows the head's: an answer waiting now came before the
            // upstream could have the whole body.
            if stops(looks.look(up)) {
                return looks.stopped();
            }
            if self.send_now(up, fd).map_err(|_| WRITE_FAILED)? {
                self.acks.wrote().map_err(|_| WRITE_FAILED)?;
                watch = true;
                continue;
            }
            // The upstream's buffer is full: wait for room, or for an answer (the next
            // round's look tells what made it readable).
            let t = up.stream();
            let read = watch && looks.unsettled;
            let wait = std::pin::pin!(async {
                monoio::select! {
                    _ = t.writable(false) => false,
                    _ = t.readable(false), if read => true,
                }
            });
            match self.acks.within(wait).await {
                None => return Err(WRITE_FAILED),
                Some(readable) => watch &= !readable,
            }
        }
    }

    /// Reads what `up` sends next into `buf` (up to [`READ_CHUNK`] bytes; `Ok(0)` at its close)
    /// while moving the body to it as the client sends and the upstream takes it. `pause`
    /// bounds each stretch with no byte moved either way (`TimedOut`). The upstream may stop
    /// taking the body (a failed write): the response then tells how the exchange went.
    ///
    /// Errors: the read's, `TimedOut`, and `ConnectionReset` when the client reset its stream.
    pub async fn read_response(
        &mut self,
        up: &mut UpConn,
        buf: &mut Vec<u8>,
        pause: Duration,
    ) -> io::Result<usize> {
        let Some(fd) = tcp_fd(up) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        loop {
            match sys::recv_now(fd, buf, READ_CHUNK) {
                Ok(n) => {
                    up.counters().read(n as u64);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    up.note_error(&e);
                    return Err(e);
                }
            }
            if self.step(up, fd)? {
                continue;
            }
            let woke = monoio::time::timeout(pause, self.wait(up, true))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
            self.take(woke)?;
        }
    }

    /// Moves what is left of the body once the response has ended, the upstream's progress
    /// bounded by `pause` (`body_timeout_ms`, [`AckWatch`]): an upstream that answered whole
    /// may read the rest or not, and a client may send it or not; either stopping ends it.
    pub async fn finish(mut self, up: &mut UpConn, pause: Duration) {
        let Some(fd) = tcp_fd(up) else {
            return;
        };
        let mut acks = AckWatch::new(Some(fd), Some(pause));
        while !self.is_done() {
            match self.step(up, fd) {
                Ok(true) if acks.wrote().is_err() => return,
                Ok(true) => continue,
                // The step may have stopped the body (the upstream no longer takes it):
                // nothing is left to wait for.
                Ok(false) if self.is_done() => return,
                Ok(false) => {}
                Err(_) => return,
            }
            let woke = acks.within(std::pin::pin!(self.wait(up, false))).await;
            match woke.map(|w| self.take(w)) {
                Some(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// One non-blocking step of the body: `Ok(true)` when bytes went. A failed write stops
    /// the body (`stopped`: the upstream's choice once it answered).
    fn step(&mut self, up: &mut UpConn, fd: RawFd) -> io::Result<bool> {
        if self.stopped || self.out.is_empty() {
            return Ok(false);
        }
        match self.send_now(up, fd) {
            Ok(moved) => Ok(moved),
            Err(_) => {
                self.stopped = true;
                Ok(false)
            }
        }
    }

    /// Waits for what can move next: the upstream readable (`read`), room to write what is
    /// queued, or the client's next data or trailers when nothing is. With nothing to wait
    /// for (not `read`, and the body done or stopped) it returns [`Woke::Socket`] at once:
    /// callers look at [`Pump::is_done`] before waiting.
    async fn wait(&mut self, up: &UpConn, read: bool) -> Woke {
        let t = up.stream();
        let write = !self.stopped && !self.out.is_empty();
        let data = !self.stopped && self.out.is_empty() && self.state == State::Data;
        let trailers = !self.stopped && self.out.is_empty() && self.state == State::Trailers;
        let body = &mut self.body;
        // (Both cancel-safe: h2 keeps a frame until it is returned.)
        let client = async {
            if data {
                Woke::Data(body.data().await)
            } else {
                Woke::Trailers(body.trailers().await)
            }
        };
        monoio::select! {
            _ = t.readable(false), if read => Woke::Socket,
            _ = t.writable(false), if write => Woke::Socket,
            w = client, if data || trailers => w,
            else => Woke::Socket,
        }
    }

    /// Takes in what [`Pump::wait`] brought from the client. Errors: `ConnectionReset` when
    /// the client reset its stream (its reason kept: [`Pump::client_reset`]).
    fn take(&mut self, woke: Woke) -> io::Result<()> {
        match woke {
            Woke::Socket => {}
            Woke::Data(Some(Ok(d))) => {
                if !d.is_empty() {
                    self.queue(d);
                }
            }
            Woke::Data(None) => self.state = State::Trailers,
            Woke::Trailers(Ok(t)) => self.end(t),
            Woke::Data(Some(Err(e))) | Woke::Trailers(Err(e)) => {
                self.reset = Some(e.reason().unwrap_or(Reason::CANCEL));
                return Err(io::ErrorKind::ConnectionReset.into());
            }
        }
        Ok(())
    }

    /// The reason the client reset its stream with, once a wait saw it.
    pub fn client_reset(&self) -> Option<Reason> {
        self.reset
    }
}

/// What the looks at the upstream found while a request body goes out ([`Pump::send`]).
struct Looks {
    /// An answer had started: the connection is not pooled.
    answered: bool,
    /// Looks go on: what waits (if anything) may still turn out an answer's kind.
    unsettled: bool,
    /// What the last look that settled found.
    found: Waiting,
}

impl Looks {
    /// One look at `up` ([`answer_waiting`]), while unsettled.
    fn look(&mut self, up: &UpConn) -> Waiting {
        if !self.unsettled {
            return Waiting::Nothing;
        }
        let w = answer_waiting(up);
        self.answered |= w.is_answer();
        self.unsettled = w.unsettled();
        self.found = w;
        w
    }

    /// How the body's move ends after a look that [`stops`] it.
    fn stopped(&self) -> Result<Sent, Failure> {
        match self.found {
            Waiting::Refusal => Err(REFUSED),
            // (The caller looks for an answer all the same, as after a failed write.)
            Waiting::Gone(_) => Err(WRITE_FAILED),
            _ => Ok(Sent::Answered),
        }
    }
}
