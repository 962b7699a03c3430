//! A client's HTTP/2 connection on the proxy's own codec ([`crate::h2wire::server`]): the
//! connection's task ([`Conn::run`]) reads the socket, feeds the codec, hands each request to
//! a stream task with its handles ([`RecvBody`], [`Respond`], [`SendBody`]), and writes what
//! the codec and the streams produce.
//!
//! The handles have the shape of `h2`'s server handles (errors are `h2::Error`s made from a
//! [`Reason`]), so the stages after this one move bodies the same way to either upstream
//! protocol ([`super::body`]).
//!
//! Idle, a connection holds the codec's state (about 300 bytes), this module's (streams'
//! queues only while streams are open) and no buffer: reads land in the core's read buffer
//! ([`READ_BUFFER`]); a short read is copied out of it at its size, a long one (a body's
//! DATA) takes the buffer itself, which the request bodies' DATA then share without a copy
//! (`Bytes` slices of it). Only the bytes of a frame that has not all arrived stay between
//! reads.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, Request, Response};
use monoio::net::TcpStream;

use crate::h2wire::frame::ErrorCode;
use crate::h2wire::server::{Config, ConnError, Event, SendError, Server, OUTPUT_BOUND};
use crate::io::{AckWatch, READ_CHUNK};
use crate::metrics::PeerCounters;
use crate::sys;

/// Reads a connection's task handles before it lets the core's other tasks run.
const READS_PER_RUN: u32 = 16;

/// A read of at least this many bytes (with a held frame's start) keeps the core's read
/// buffer as its own (no copy; the next read allocates another); a shorter one is copied out
/// at its size, so that the buffer is used again.
const HAND_OVER: usize = READ_CHUNK / 2;

thread_local! {
    /// The core's read buffer for its clients' HTTP/2 connections (up to [`READ_CHUNK`]
    /// bytes): one per worker thread, used by one connection's read at a time.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One non-blocking read of `fd`, after `partial` (a frame's start kept from the last
/// read), through the core's [`READ_BUFFER`]. Returns the bytes to feed (`partial` first)
/// and how many the read added; `Ok((_, 0))` when the client closed; `WouldBlock` when
/// nothing waits.
fn read_after(fd: RawFd, partial: &[u8]) -> io::Result<(Bytes, usize)> {
    READ_BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.extend_from_slice(partial);
        let n = sys::recv_now(fd, &mut buf, READ_CHUNK)?;
        let input = if buf.len() >= HAND_OVER {
            Bytes::from(std::mem::take(&mut *buf))
        } else {
            Bytes::copy_from_slice(&buf)
        };
        Ok((input, n))
    })
}

/// How long a closing connection may take to write its last frames (a GOAWAY), and then to
/// read what the client still sends ([`linger`]).
const LINGER: Duration = Duration::from_secs(1);

/// Returns `Pending` once (waking itself), so the core's other ready tasks run first.
async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Closes gracefully: shuts down the write side after the last frames (a GOAWAY), then reads
/// and discards what the client still sends, up to its close or [`LINGER`], so that closing
/// with its bytes unread does not reset the connection (which would drop the GOAWAY and the
/// last responses from the kernel's queue before the client reads them).
async fn linger(socket: &TcpStream, fd: RawFd, src: &PeerCounters) {
    if sys::shutdown_write(fd).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + LINGER;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match sys::recv_now(fd, &mut buf, 16 * 1024) {
            Ok(0) => return,
            Ok(n) => {
                src.read(n as u64);
                if std::time::Instant::now() >= deadline {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if monoio::time::timeout(left, socket.readable(false))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// How a connection's task ended ([`Conn::run`]).
#[derive(Debug)]
pub enum End {
    /// The client closed, or a GOAWAY (drain, idle) ran its course with every stream done.
    Clean,
    /// A connection error (RFC 9113 §5.4.1): its GOAWAY was written (as far as the socket
    /// took it).
    Protocol(ConnError),
    /// The socket failed, or the client took no byte for the write bound.
    Io(io::Error),
}

/// What the connection's task is asked to do besides serving ([`Conn::run`]'s `control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Nothing.
    Serve,
    /// Send GOAWAY (no new streams) and end once the open streams have.
    GoAway,
}

/// One client connection: the codec and its streams' state, shared by the connection's task
/// and its streams' handles (one core: `Rc`, no lock).
#[derive(Debug)]
pub struct Conn {
    st: RefCell<State>,
}

#[derive(Debug)]
struct State {
    server: Server,
    /// Streams with a live handle, by ascending id.
    slots: Vec<Slot>,
    /// Output taken from the codec and not yet written, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// The connection's task, waiting for output to write (or handles to drop).
    owner: Option<Waker>,
    /// A stream sent something or let go of a handle since the task last looked.
    dirty: bool,
    /// The connection is over: every stream operation fails.
    closed: bool,
    /// Output bytes past which streams are given no more send capacity until it drains
    /// (`http2.max_send_buffer_bytes`).
    send_buffer: usize,
}

/// A stream's state on the proxy's side of the codec.
#[derive(Debug)]
struct Slot {
    id: u32,
    /// DATA received and not yet taken.
    data: VecDeque<Bytes>,
    /// The client's body ended (END_STREAM, with or without trailers).
    end: bool,
    trailers: Option<HeaderMap>,
    /// The stream was reset (by either side), with this reason.
    reset: Option<Reason>,
    /// The request body's handle was dropped: DATA is released as it comes.
    body_gone: bool,
    /// Live handles (body, respond, send body).
    handles: u8,
    /// Send capacity asked for ([`SendBody::reserve_capacity`]).
    wanted: usize,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
    reset_waker: Option<Waker>,
}

impl Slot {
    fn wake_all(&mut self) {
        for w in [
            self.recv_waker.take(),
            self.send_waker.take(),
            self.reset_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }
}

/// The error of a stream operation on a connection that is over: CANCEL, as if the client
/// had reset each stream on its way out (the label `error="h2(CANCEL)"`, whichever side of
/// the stream sees it first).
fn closed_error() -> h2::Error {
    Reason::CANCEL.into()
}

fn reason_of(code: ErrorCode) -> Reason {
    Reason::from(code.0)
}

/// Why a send on stream `id` failed: the stream's reset reason when it was reset (by the
/// client, mostly: the metric's label is the client's reason, as with `h2`).
fn send_error(st: &mut State, id: u32, e: SendError) -> h2::Error {
    if let Some(r) = st.slot(id).and_then(|s| s.reset) {
        return r.into();
    }
    match e {
        SendError::Closed => Reason::STREAM_CLOSED.into(),
        SendError::ConnectionClosed => closed_error(),
        SendError::Misuse(_) => Reason::INTERNAL_ERROR.into(),
    }
}

impl State {
    fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        let i = self.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        Some(&mut self.slots[i])
    }

    /// Output the codec made since the last call is to be written, or a stream's handle
    /// went: wakes the task.
    fn wrote(&mut self) {
        self.dirty = true;
        if let Some(w) = self.owner.take() {
            w.wake();
        }
    }

    /// Output bytes not yet written (taken or still in the codec).
    fn pending(&self) -> usize {
        self.out.len() - self.written + self.server.output_len()
    }

    /// Drops one handle of stream `id`; with the last, the stream leaves: reset if it is still
    /// open (CANCEL while the response is unfinished; NO_ERROR once it is, so the client stops
    /// sending a body nobody reads, RFC 9113 §8.1).
    fn drop_handle(&mut self, id: u32) {
        let Ok(i) = self.slots.binary_search_by_key(&id, |s| s.id) else {
            return;
        };
        let slot = &mut self.slots[i];
        slot.handles -= 1;
        if slot.handles > 0 {
            return;
        }
        self.slots.remove(i);
        if self.slots.is_empty() {
            self.slots = Vec::new();
        }
        if let Some((_, send_open)) = self.server.stream_state(id) {
            let code = if send_open {
                ErrorCode::CANCEL
            } else {
                ErrorCode::NO_ERROR
            };
            self.server.send_reset(id, code);
        }
        self.wrote();
    }

    /// The connection is over: every stream's waits end (with [`closed_error`]).
    fn close(&mut self) {
        self.closed = true;
        for s in &mut self.slots {
            s.wake_all();
        }
    }

    /// Routes one event from the codec; a new request is returned for its stream task.
    fn event(&mut self, e: Event, input: &Bytes) -> Option<(u32, http::request::Parts)> {
        match e {
            Event::Request {
                stream,
                head,
                end_stream,
            } => {
                let at = self.slots.partition_point(|s| s.id < stream);
                self.slots.insert(
                    at,
                    Slot {
                        id: stream,
                        data: VecDeque::new(),
                        end: end_stream,
                        trailers: None,
                        reset: None,
                        body_gone: false,
                        handles: 2,
                        wanted: 0,
                        recv_waker: None,
                        send_waker: None,
                        reset_waker: None,
                    },
                );
                return Some((stream, head));
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let n = data.len() as u32;
                match self.slot(stream) {
                    Some(s) if !s.body_gone => {
                        if n > 0 {
                            // A slice keeps the whole read's buffer: a payload small beside
                            // it is copied, so queued DATA holds at most 8 times its size.
                            let d = if data.len() * 8 < input.len() {
                                Bytes::copy_from_slice(&input[data])
                            } else {
                                input.slice(data)
                            };
                            s.data.push_back(d);
                        }
                        s.end |= end_stream;
                        if let Some(w) = s.recv_waker.take() {
                            w.wake();
                        }
                    }
                    // Nobody reads it: the client may send more at once.
                    _ => self.server.release(stream, n),
                }
            }
            Event::Trailers { stream, fields } => {
                if let Some(s) = self.slot(stream) {
                    s.trailers = Some(fields);
                    s.end = true;
                    if let Some(w) = s.recv_waker.take() {
                        w.wake();
                    }
                }
            }
            Event::Reset { stream, code, .. } => {
                if let Some(s) = self.slot(stream) {
                    s.reset.get_or_insert(reason_of(code));
                    s.wake_all();
                }
            }
            Event::Window { stream } => {
                for s in &mut self.slots {
                    if stream.map_or(true, |id| id == s.id) {
                        if let Some(w) = s.send_waker.take() {
                            w.wake();
                        }
                    }
                }
            }
            Event::GoAway { .. } => {}
        }
        None
    }
}

impl Conn {
    /// A connection with `cfg`'s limits, giving streams at most `send_buffer` bytes of
    /// unwritten output (`http2.max_send_buffer_bytes`). The server's SETTINGS wait in its
    /// output.
    pub fn new(cfg: Config, send_buffer: usize) -> Rc<Conn> {
        Rc::new(Conn {
            st: RefCell::new(State {
                server: Server::new(cfg),
                slots: Vec::new(),
                out: Vec::new(),
                written: 0,
                owner: None,
                dirty: false,
                closed: false,
                send_buffer: send_buffer.max(1),
            }),
        })
    }

    /// Serves the connection on `socket` (its bytes counted in `src`) until it ends; each new
    /// request goes to `request` with its handle to answer it. `control` is polled for a
    /// GOAWAY (a drain, the idle bound). `handshake`: the longest the client's preface and
    /// SETTINGS may take (RFC 9113 §3.4). `write_pause`: the longest the client may take no
    /// written byte while output waits for it (its kernel acknowledges nothing), as an HTTP/1
    /// client that stops reading is cut.
    #[allow(clippy::too_many_arguments)] // the connection's surroundings, handed over
    pub async fn run(
        self: &Rc<Self>,
        socket: &TcpStream,
        fd: RawFd,
        src: &PeerCounters,
        handshake: Duration,
        write_pause: Duration,
        mut control: impl FnMut(&mut Context<'_>) -> Poll<Control>,
        mut request: impl FnMut(Request<RecvBody>, Respond),
    ) -> End {
        let started = std::time::Instant::now();
        // Bytes of a frame that has not all arrived, or frames the codec held back (`held`)
        // while its output bound was reached.
        let mut partial: Vec<u8> = Vec::new();
        let mut held = false;
        let mut going_away = false;
        let mut acks = AckWatch::new(Some(fd), Some(write_pause));
        // Reads handled since the task last waited (see `READS_PER_RUN`).
        let mut reads = 0;
        loop {
            // 1. Write what waits, as far as the socket takes it.
            match self.write_now(fd, src) {
                Ok(true) => {
                    if acks.wrote().is_err() {
                        return self.stalled(fd);
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    self.st.borrow_mut().close();
                    return End::Io(e);
                }
            }
            let (blocked, pending, open) = {
                let st = self.st.borrow();
                // Streams keep to `send_buffer` (`SendBody::poll_capacity`): output past
                // that and the codec's bound answers a client that sends and does not read
                // (PINGs, SETTINGS): nothing more of it is read until that is written.
                (
                    st.pending() >= st.send_buffer + OUTPUT_BOUND,
                    st.pending() > 0,
                    st.slots.len() + st.server.open_streams(),
                )
            };
            if going_away && open == 0 && !pending {
                self.st.borrow_mut().close();
                linger(socket, fd, src).await;
                return End::Clean;
            }
            // 2. Frames held back by the codec's output bound, once that output is taken.
            if held && !blocked {
                match self.feed(Bytes::from(std::mem::take(&mut partial)), &mut request) {
                    Ok((rest, h)) => (partial, held) = (rest, h),
                    Err(e) => return self.fail(e, socket, fd, src).await,
                }
                continue;
            }
            // 3. Read more, or wait for something to do.
            let read = !blocked && !held;
            if read && reads < READS_PER_RUN {
                match read_after(fd, &partial) {
                    // The client closed: its streams end with the connection, as when it
                    // resets them (RFC 9113 has no half-closed connection).
                    Ok((_, 0)) => {
                        let _ = self.write_now(fd, src);
                        self.st.borrow_mut().close();
                        return End::Clean;
                    }
                    Ok((input, n)) => {
                        src.read(n as u64);
                        reads += 1;
                        match self.feed(input, &mut request) {
                            Ok((rest, h)) => (partial, held) = (rest, h),
                            Err(e) => return self.fail(e, socket, fd, src).await,
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.st.borrow_mut().close();
                        return End::Io(e);
                    }
                }
            } else if read {
                // A client that keeps the socket readable (a flood, or a fast upload) lets
                // the core's other tasks run between batches of reads.
                reads = 0;
                yield_once().await;
                continue;
            }
            reads = 0;
            let established = self.st.borrow().server.established();
            let wait = async {
                monoio::select! {
                    _ = socket.readable(false), if read => {}
                    _ = socket.writable(false), if pending => {}
                    _ = poll_fn(|cx| self.output_ready(cx)) => {}
                    c = poll_fn(|cx| control(cx)), if !going_away => {
                        if c == Control::GoAway {
                            going_away = true;
                            self.st.borrow_mut().server.go_away();
                        }
                    }
                }
            };
            let wait = std::pin::pin!(wait);
            if !established {
                let left = handshake.saturating_sub(started.elapsed());
                if monoio::time::timeout(left, wait).await.is_err() {
                    self.st.borrow_mut().close();
                    return End::Io(io::ErrorKind::TimedOut.into());
                }
            } else if pending {
                if acks.within(wait).await.is_none() {
                    return self.stalled(fd);
                }
            } else {
                wait.await;
            }
        }
    }

    /// The client took no written byte for the write bound: the connection ends with a reset
    /// (`SO_LINGER` 0), so that the close frees what its kernel still holds for the client
    /// (up to the send buffer, megabytes) at once.
    fn stalled(&self, fd: RawFd) -> End {
        let _ = sys::set_linger_zero(fd);
        self.st.borrow_mut().close();
        End::Io(io::ErrorKind::TimedOut.into())
    }

    /// A connection error: its GOAWAY is written (within [`LINGER`]), then the connection
    /// closes as [`linger`] says.
    async fn fail(&self, e: ConnError, socket: &TcpStream, fd: RawFd, src: &PeerCounters) -> End {
        self.st.borrow_mut().close();
        let deadline = std::time::Instant::now() + LINGER;
        while let Ok(true) = self
            .write_now(fd, src)
            .map(|_| self.st.borrow().pending() > 0)
        {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if monoio::time::timeout(left, socket.writable(false))
                .await
                .is_err()
            {
                break;
            }
        }
        linger(socket, fd, src).await;
        End::Protocol(e)
    }

    /// Whether a stream sent something or let go of a handle since the last look (the
    /// task's wake-up: output to write, or the last stream of a GOAWAY gone).
    fn output_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.st.borrow_mut();
        if std::mem::take(&mut st.dirty) || st.server.output_len() > 0 {
            return Poll::Ready(());
        }
        st.owner = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Hands `input` (what was read, after a held frame's start) to the codec: new requests
    /// go to `request`, the rest to their streams. Returns the bytes not consumed, and
    /// whether the codec held them back for its output bound (rather than for a frame's
    /// missing bytes).
    fn feed(
        self: &Rc<Self>,
        input: Bytes,
        request: &mut impl FnMut(Request<RecvBody>, Respond),
    ) -> Result<(Vec<u8>, bool), ConnError> {
        let mut events = Vec::new();
        let consumed = {
            let mut st = self.st.borrow_mut();
            st.server.recv(&input, &mut |e| events.push(e))?
        };
        let mut new = Vec::new();
        let held = {
            let mut st = self.st.borrow_mut();
            for e in events {
                if let Some(r) = st.event(e, &input) {
                    new.push(r);
                }
            }
            st.server.output_len() >= OUTPUT_BOUND
        };
        for (id, head) in new {
            let conn = self.clone();
            let body = RecvBody {
                conn: conn.clone(),
                id,
            };
            request(Request::from_parts(head, body), Respond { conn, id });
        }
        Ok((input[consumed..].to_vec(), held))
    }

    /// Writes what waits as far as the socket takes it now: `Ok(true)` when bytes went.
    fn write_now(&self, fd: RawFd, src: &PeerCounters) -> io::Result<bool> {
        let mut st = self.st.borrow_mut();
        if st.written == st.out.len() {
            st.out = st.server.take_output();
            st.written = 0;
        } else if st.server.output_len() > 0 {
            // (What was written goes first: the buffer holds only what waits.)
            let written = std::mem::take(&mut st.written);
            st.out.drain(..written);
            let more = st.server.take_output();
            st.out.extend_from_slice(&more);
        }
        let mut moved = false;
        while st.written < st.out.len() {
            match sys::send_now(fd, &st.out[st.written..]) {
                Ok(n) => {
                    src.wrote(n as u64);
                    st.written += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if st.written == st.out.len() {
            st.out = Vec::new();
            st.written = 0;
        }
        if moved {
            // Room in the send buffer again.
            for s in &mut st.slots {
                if let Some(w) = s.send_waker.take() {
                    w.wake();
                }
            }
        }
        Ok(moved)
    }
}

/// A request's body as the client sends it ([`Request`]'s body): DATA, then trailers.
/// Dropped before its end, what still comes is released at once.
#[derive(Debug)]
pub struct RecvBody {
    conn: Rc<Conn>,
    id: u32,
}

impl RecvBody {
    /// The next DATA payload (`None` at the body's end). Errors: the stream's reset (either
    /// side's reason), or the connection's end. Cancel-safe.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>> {
        let mut st = self.conn.st.borrow_mut();
        let closed = st.closed;
        let Some(s) = st.slot(self.id) else {
            return Poll::Ready(Some(Err(closed_error())));
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Some(Err(r.into())));
        }
        if let Some(d) = s.data.pop_front() {
            return Poll::Ready(Some(Ok(d)));
        }
        if s.end {
            return Poll::Ready(None);
        }
        if closed {
            return Poll::Ready(Some(Err(closed_error())));
        }
        s.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// [`RecvBody::poll_data`] as a future.
    pub async fn data(&mut self) -> Option<Result<Bytes, h2::Error>> {
        poll_fn(|cx| self.poll_data(cx)).await
    }

    /// The trailers, once the DATA has been taken (`None`: the body ended without).
    pub fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h2::Error>> {
        let mut st = self.conn.st.borrow_mut();
        let closed = st.closed;
        let Some(s) = st.slot(self.id) else {
            return Poll::Ready(Err(closed_error()));
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Err(r.into()));
        }
        if let Some(t) = s.trailers.take() {
            return Poll::Ready(Ok(Some(t)));
        }
        if s.end {
            return Poll::Ready(Ok(None));
        }
        if closed {
            return Poll::Ready(Err(closed_error()));
        }
        s.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// [`RecvBody::poll_trailers`] as a future.
    pub async fn trailers(&mut self) -> Result<Option<HeaderMap>, h2::Error> {
        poll_fn(|cx| self.poll_trailers(cx)).await
    }

    /// Whether the body has ended and everything of it was taken.
    pub fn is_end_stream(&self) -> bool {
        let mut st = self.conn.st.borrow_mut();
        st.slot(self.id)
            .map_or(true, |s| s.end && s.data.is_empty() && s.trailers.is_none())
    }

    /// `n` bytes of the body were taken by the other side: the client may send as much more
    /// (RFC 9113 §6.9).
    pub fn release(&mut self, n: usize) {
        let mut st = self.conn.st.borrow_mut();
        let before = st.server.output_len();
        st.server.release(self.id, n.min(u32::MAX as usize) as u32);
        // (A WINDOW_UPDATE goes out once half a window is owed, not for every release.)
        if st.server.output_len() > before {
            st.wrote();
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let mut st = self.conn.st.borrow_mut();
        let mut unread = 0usize;
        if let Some(s) = st.slot(self.id) {
            s.body_gone = true;
            unread = s.data.drain(..).map(|d| d.len()).sum();
        }
        if unread > 0 {
            st.server.release(self.id, unread as u32);
            st.wrote();
        }
        st.drop_handle(self.id);
    }
}

/// The handle that answers a request: its response head (then [`SendBody`]), an interim
/// response, or a reset.
#[derive(Debug)]
pub struct Respond {
    conn: Rc<Conn>,
    id: u32,
}

impl Respond {
    /// Sends the response head (`end_of_stream`: no body follows) and returns the body's
    /// handle. Errors: the stream is no longer open for sending (reset), or the connection
    /// is over.
    pub fn send_response(
        &mut self,
        response: Response<()>,
        end_of_stream: bool,
    ) -> Result<SendBody, h2::Error> {
        let mut st = self.conn.st.borrow_mut();
        let (parts, ()) = response.into_parts();
        st.server
            .send_response(
                self.id,
                parts.status.as_u16(),
                &parts.headers,
                end_of_stream,
            )
            .map_err(|e| send_error(&mut st, self.id, e))?;
        st.wrote();
        if let Some(s) = st.slot(self.id) {
            s.handles += 1;
        }
        Ok(SendBody {
            conn: self.conn.clone(),
            id: self.id,
        })
    }

    /// Sends an interim (1xx) response.
    pub fn send_informational(&mut self, response: Response<()>) -> Result<(), h2::Error> {
        let mut st = self.conn.st.borrow_mut();
        let (parts, ()) = response.into_parts();
        st.server
            .send_response(self.id, parts.status.as_u16(), &parts.headers, false)
            .map_err(|e| send_error(&mut st, self.id, e))?;
        st.wrote();
        Ok(())
    }

    /// Resets the stream with `reason`.
    pub fn send_reset(&mut self, reason: Reason) {
        reset(&self.conn, self.id, reason);
    }

    /// Ready with the reason once the stream is reset (by the client, mostly). Errors: the
    /// connection is over.
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        poll_reset(&self.conn, self.id, cx)
    }
}

impl Drop for Respond {
    fn drop(&mut self) {
        self.conn.st.borrow_mut().drop_handle(self.id);
    }
}

/// A response body on its way to the client: DATA as the client's windows and the
/// connection's send buffer allow, then trailers or the end.
#[derive(Debug)]
pub struct SendBody {
    conn: Rc<Conn>,
    id: u32,
}

impl SendBody {
    /// Asks for room to send `n` bytes ([`SendBody::poll_capacity`] says how much there is).
    pub fn reserve_capacity(&mut self, n: usize) {
        let mut st = self.conn.st.borrow_mut();
        if let Some(s) = st.slot(self.id) {
            s.wanted = n;
        }
    }

    /// Bytes that may be sent now (at most what was reserved): the stream's and the
    /// connection's windows, within the send buffer's room. `None` once the stream is
    /// closed for sending; errors: its reset, or the connection's end.
    pub fn poll_capacity(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<usize, h2::Error>>> {
        let mut st = self.conn.st.borrow_mut();
        if st.closed {
            return Poll::Ready(Some(Err(closed_error())));
        }
        let room = st.send_buffer.saturating_sub(st.pending());
        let window = st.server.send_capacity(self.id);
        let open = st
            .server
            .stream_state(self.id)
            .is_some_and(|(_, send)| send);
        let Some(s) = st.slot(self.id) else {
            return Poll::Ready(None);
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Some(Err(r.into())));
        }
        if !open {
            return Poll::Ready(None);
        }
        let n = window.min(room).min(s.wanted);
        if n > 0 {
            return Poll::Ready(Some(Ok(n)));
        }
        s.send_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends `data` (no more than [`SendBody::poll_capacity`] gave); `end_of_stream` ends
    /// the stream with it.
    pub fn send_data(&mut self, data: Bytes, end_of_stream: bool) -> Result<(), h2::Error> {
        let mut st = self.conn.st.borrow_mut();
        let n = st
            .server
            .send_data(self.id, &data, end_of_stream)
            .map_err(|e| send_error(&mut st, self.id, e))?;
        st.wrote();
        if n < data.len() {
            // More than the windows allowed: a caller that did not wait for capacity.
            return Err(Reason::FLOW_CONTROL_ERROR.into());
        }
        if let Some(s) = st.slot(self.id) {
            s.wanted = s.wanted.saturating_sub(n);
        }
        Ok(())
    }

    /// Sends the trailers, which end the stream.
    pub fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        let mut st = self.conn.st.borrow_mut();
        st.server
            .send_trailers(self.id, &trailers)
            .map_err(|e| send_error(&mut st, self.id, e))?;
        st.wrote();
        Ok(())
    }

    /// Resets the stream with `reason`.
    pub fn send_reset(&mut self, reason: Reason) {
        reset(&self.conn, self.id, reason);
    }

    /// As [`Respond::poll_reset`].
    pub fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        poll_reset(&self.conn, self.id, cx)
    }
}

impl Drop for SendBody {
    fn drop(&mut self) {
        self.conn.st.borrow_mut().drop_handle(self.id);
    }
}

fn reset(conn: &Conn, id: u32, reason: Reason) {
    let mut st = conn.st.borrow_mut();
    st.server.send_reset(id, ErrorCode(u32::from(reason)));
    st.wrote();
    if let Some(s) = st.slot(id) {
        s.reset.get_or_insert(reason);
        s.wake_all();
    }
}

fn poll_reset(conn: &Conn, id: u32, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
    let mut st = conn.st.borrow_mut();
    let closed = st.closed;
    let Some(s) = st.slot(id) else {
        return Poll::Ready(Err(closed_error()));
    };
    if let Some(r) = s.reset {
        return Poll::Ready(Ok(r));
    }
    if closed {
        return Poll::Ready(Err(closed_error()));
    }
    s.reset_waker = Some(cx.waker().clone());
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2wire::frame::{self, Settings, PREFACE};

    fn cfg() -> Config {
        Config {
            max_concurrent_streams: 100,
            max_header_list_size: 16 << 10,
            initial_stream_window: 1 << 20,
            initial_connection_window: 1 << 20,
            max_frame_size: 1 << 20,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }

    /// The preface, the client's SETTINGS (a 1 MiB frame size), and a POST on stream 1
    /// (HPACK: `:method POST`, `:scheme http`, `:path /`, `:authority x`).
    fn hello() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        frame::write_settings(
            &mut b,
            &Settings {
                max_frame_size: Some(1 << 20),
                ..Settings::default()
            },
        );
        frame::write_headers(
            &mut b,
            1,
            &[0x83, 0x86, 0x84, 0x41, 0x01, b'x'],
            false,
            1 << 14,
        );
        b
    }

    /// Feeds `input` and returns the requests' bodies.
    fn feed(conn: &Rc<Conn>, input: Vec<u8>) -> Vec<(RecvBody, Respond)> {
        let mut got = Vec::new();
        let (rest, held) = conn
            .feed(Bytes::from(input), &mut |r: Request<RecvBody>, respond| {
                got.push((r.into_body(), respond))
            })
            .unwrap();
        assert!(rest.is_empty() && !held);
        got
    }

    fn next_data(body: &mut RecvBody) -> Bytes {
        let waker = futures_util::task::noop_waker_ref();
        match body.poll_data(&mut Context::from_waker(waker)) {
            Poll::Ready(Some(Ok(d))) => d,
            other => panic!("no DATA: {other:?}"),
        }
    }

    /// Review: each queued DATA slice kept its whole read's buffer (64 KiB), so paced 1-byte
    /// frames could hold gigabytes within a 1 MiB window. A payload small beside its read is
    /// copied; a large one is shared without a copy.
    #[test]
    fn small_data_in_a_large_read_is_copied_and_large_data_is_shared() {
        let conn = Conn::new(cfg(), 1 << 20);
        let mut input = hello();
        frame::write_data(&mut input, 1, b"a", false);
        frame::write_data(&mut input, 1, &vec![b'b'; 40_000], false);
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        let mut streams = feed(&conn, input);
        let (body, _respond) = &mut streams[0];
        let small = next_data(body);
        let large = next_data(body);
        assert_eq!((&small[..], large.len()), (&b"a"[..], 40_000));
        assert!(!range.contains(&(small.as_ptr() as usize)), "copied");
        assert!(range.contains(&(large.as_ptr() as usize)), "shared");
    }

    /// Review: a client that takes what is written slowly left every byte written since its
    /// backlog began in the buffer (only a fully written buffer was dropped). What was
    /// written leaves the buffer when more output comes.
    #[test]
    fn a_short_read_is_copied_out_of_the_cores_buffer_and_a_long_one_takes_it() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let fd = b.as_raw_fd();
        let buffer = || READ_BUFFER.with(|b| (b.borrow().as_ptr() as usize, b.borrow().capacity()));

        // Nothing waits: WouldBlock, and the buffer stays.
        let e = read_after(fd, b"").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // A short read after a held frame's start: both, copied out at their size.
        a.write_all(b"world").unwrap();
        let (input, n) = read_after(fd, b"hello ").unwrap();
        assert_eq!((&input[..], n), (&b"hello world"[..], 5));
        let (at, cap) = buffer();
        assert!(cap >= READ_CHUNK, "the buffer is kept for the next read");
        assert!(
            !(at..at + cap).contains(&(input.as_ptr() as usize)),
            "copied"
        );

        // A long read keeps the buffer's allocation: no copy, and the core's buffer is new.
        let long = vec![b'x'; HAND_OVER + 10];
        a.write_all(&long).unwrap();
        let (input, n) = read_after(fd, b"").unwrap();
        assert_eq!((input.len(), n), (long.len(), long.len()));
        assert_eq!(
            input.as_ptr() as usize,
            at,
            "the read's bytes are the buffer's"
        );
        assert_eq!(buffer().1, 0, "the next read allocates another");

        // The peer's close reads as 0 bytes.
        drop(a);
        assert_eq!(read_after(fd, b"").unwrap().1, 0);
    }

    #[test]
    fn written_output_leaves_the_buffer_when_more_comes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        let conn = Conn::new(cfg(), 1 << 20);
        let src = PeerCounters::default();
        // (The server's SETTINGS aside: only `out` and the GOAWAY below count.)
        let _ = conn.st.borrow_mut().server.take_output();
        conn.st.borrow_mut().out = vec![0; 64 << 20];
        // The socket takes part of it (the client reads nothing).
        assert!(conn.write_now(fd, &src).unwrap());
        let written = conn.st.borrow().written;
        assert!(written > 0 && written < 64 << 20);
        conn.st.borrow_mut().server.go_away();
        let more = conn.st.borrow().server.output_len();
        let _ = conn.write_now(fd, &src).unwrap();
        let st = conn.st.borrow();
        assert!(
            st.out.len() <= (64 << 20) - written + more,
            "{}",
            st.out.len()
        );
        drop(client);
    }

    /// Review: a send on a stream the client had reset failed with STREAM_CLOSED (the
    /// metric's label), not the client's reason.
    #[test]
    fn a_send_on_a_reset_stream_fails_with_the_reset_reason() {
        let conn = Conn::new(cfg(), 1 << 20);
        let mut streams = feed(&conn, hello());
        let mut rst = Vec::new();
        frame::write_rst_stream(&mut rst, 1, ErrorCode::CANCEL);
        assert!(feed(&conn, rst).is_empty());
        let (_, respond) = &mut streams[0];
        let e = respond
            .send_response(Response::new(()), false)
            .expect_err("the stream was reset");
        assert_eq!(e.reason(), Some(Reason::CANCEL));
    }

    /// Review: dropping a request body with unread DATA queued a WINDOW_UPDATE without waking
    /// the connection's task (only the last handle's drop did).
    #[test]
    fn dropping_a_body_with_unread_data_wakes_the_task() {
        let conn = Conn::new(cfg(), 1 << 20);
        let mut input = hello();
        frame::write_data(&mut input, 1, &vec![b'b'; 600_000], false);
        let mut streams = feed(&conn, input);
        conn.st.borrow_mut().dirty = false;
        let (body, _respond) = streams.pop().unwrap();
        drop(body);
        let st = conn.st.borrow();
        assert!(st.dirty, "the task is told");
        assert!(st.server.output_len() > 0, "a WINDOW_UPDATE waits");
    }
}
