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
//! queues only while streams are open) and no buffer: each read gets a buffer of its own,
//! which the request bodies' DATA then share without a copy (`Bytes` slices of it), and only
//! the bytes of a frame that has not all arrived stay between reads.

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

fn send_error(e: SendError) -> h2::Error {
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
    fn event(&mut self, e: Event, input: &Bytes) -> Option<(u32, http::request::Parts, bool)> {
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
                return Some((stream, head, end_stream));
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
                            s.data.push_back(input.slice(data));
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
        // Bytes of a frame that has not all arrived (or not yet handled: the output bound).
        let mut partial: Vec<u8> = Vec::new();
        let mut going_away = false;
        let mut acks = AckWatch::new(Some(fd), Some(write_pause));
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
            let (blocked, pending, failed, open) = {
                let st = self.st.borrow();
                (
                    st.server.output_len() >= OUTPUT_BOUND,
                    st.pending() > 0,
                    st.server.failed(),
                    st.slots.len() + st.server.open_streams(),
                )
            };
            if failed && !pending {
                self.st.borrow_mut().close();
                return End::Protocol(ConnError {
                    code: ErrorCode::PROTOCOL_ERROR,
                    why: "connection error",
                });
            }
            if going_away && open == 0 && !pending {
                self.st.borrow_mut().close();
                return End::Clean;
            }
            // 2. Frames held back by the output bound, once the output is written.
            if !partial.is_empty() && !blocked && !pending && !failed {
                let before = partial.len();
                match self.feed(std::mem::take(&mut partial), &mut request) {
                    Ok(rest) => partial = rest,
                    Err(e) => return self.fail(e, fd, src),
                }
                if partial.len() < before {
                    continue;
                }
            }
            // 3. Read more, or wait for something to do.
            let read = !blocked && !failed;
            if read {
                let mut input = std::mem::take(&mut partial);
                match sys::recv_now(fd, &mut input, READ_CHUNK) {
                    // The client closed: its streams end with the connection, as when it
                    // resets them (RFC 9113 has no half-closed connection).
                    Ok(0) => {
                        let _ = self.write_now(fd, src);
                        self.st.borrow_mut().close();
                        return End::Clean;
                    }
                    Ok(n) => {
                        src.read(n as u64);
                        match self.feed(input, &mut request) {
                            Ok(rest) => partial = rest,
                            Err(e) => return self.fail(e, fd, src),
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => partial = input,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        partial = input;
                        continue;
                    }
                    Err(e) => {
                        self.st.borrow_mut().close();
                        return End::Io(e);
                    }
                }
                if partial.capacity() > partial.len() + 4096 {
                    partial.shrink_to_fit();
                }
            }
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

    /// A connection error: its GOAWAY is written as far as the socket takes it now.
    fn fail(&self, e: ConnError, fd: RawFd, src: &PeerCounters) -> End {
        let _ = self.write_now(fd, src);
        self.st.borrow_mut().close();
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
    /// go to `request`, the rest to their streams. Returns the bytes not consumed.
    fn feed(
        self: &Rc<Self>,
        input: Vec<u8>,
        request: &mut impl FnMut(Request<RecvBody>, Respond),
    ) -> Result<Vec<u8>, ConnError> {
        let input = Bytes::from(input);
        let mut events = Vec::new();
        let consumed = {
            let mut st = self.st.borrow_mut();
            st.server.recv(&input, &mut |e| events.push(e))?
        };
        let mut new = Vec::new();
        {
            let mut st = self.st.borrow_mut();
            for e in events {
                if let Some(r) = st.event(e, &input) {
                    new.push(r);
                }
            }
        }
        for (id, head, _) in new {
            let conn = self.clone();
            let body = RecvBody {
                conn: conn.clone(),
                id,
            };
            request(Request::from_parts(head, body), Respond { conn, id });
        }
        Ok(input[consumed..].to_vec())
    }

    /// Writes what waits as far as the socket takes it now: `Ok(true)` when bytes went.
    fn write_now(&self, fd: RawFd, src: &PeerCounters) -> io::Result<bool> {
        let mut st = self.st.borrow_mut();
        if st.written == st.out.len() {
            st.out = st.server.take_output();
            st.written = 0;
        } else if st.server.output_len() > 0 {
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
        st.server.release(self.id, n.min(u32::MAX as usize) as u32);
        st.wrote();
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
            .map_err(send_error)?;
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
            .map_err(send_error)?;
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
            .map_err(send_error)?;
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
            .map_err(send_error)?;
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
