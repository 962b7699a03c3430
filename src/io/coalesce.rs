//! Write coalescing for HTTP/2 connections.
//!
//! `h2` flushes its connection's I/O at the end of every poll of the connection, and also in
//! the middle of one, after each DATA frame it hands over without copying (payloads of 256
//! bytes or more). Flushing on `h2`'s word means one `send` per DATA frame (measured: 0.51
//! sends per h2→h2 request with 1 KiB responses at 128 streams in flight, against HAProxy's
//! 0.18; before any coalescing, 152,017 writes for 152,005 requests).
//!
//! [`Coalesce`] keeps written bytes in a buffer and treats a flush as a request to write them
//! **at the end of the scheduler round**: the flush returns at once and the connection's
//! outbox is listed for the core's round-end flusher, a one-shot task spawned behind every
//! task queued at the time (one per round, shared by every connection of the core that asked
//! in it). When it runs it hands each listed outbox to the kernel with one non-blocking
//! `send`. By then the connection's poll has ended (so every frame it produced is in the
//! buffer, not just those before the first DATA frame) and the stream tasks queued before it
//! have run; the streams it just accepted have not (their upstream writes are not waited
//! for). Why a task: monoio puts a task that wakes itself while it runs at the *front* of the
//! run queue, so a connection cannot yield to the others by waking itself.
//!
//! When the socket takes only part (its send buffer is full) or fails, the flusher wakes the
//! connection task, whose next flush writes the rest through the wrapped I/O (waiting for the
//! socket to drain) or returns the error. Past [`WRITE_THROUGH`] buffered bytes a write
//! waits for the buffer to go out. Shutdown writes what is buffered first. Reads pass
//! straight through. Bytes the flusher sends are counted in the connection's counters (the
//! wrapped I/O counts its own).
//!
//! The OS error number of the last failed read, write, flush or shutdown is kept where the
//! connection's owner can read it after `h2` has taken the I/O ([`Coalesce::last_errno`]):
//! `h2` keeps only an error's kind and message, and the close metric wants the errno.
//!
//! Costs: one copy of the outgoing frame bytes, one flusher task per round per core. Batch
//! buffers go back to a small per-core spare list once written, so an idle connection holds
//! none and a busy core allocates none per batch.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::acks::AckWatch;
use crate::metrics::PeerCounters;
use crate::sys;

/// The error a stalled peer's connection ends with ([`Coalesce::watch_acks`]).
const STALLED: &str = "the peer acknowledged no byte for stream_idle_timeout_ms";

/// Buffered bytes beyond which a write goes out without waiting for the flush.
const WRITE_THROUGH: usize = 256 * 1024;

/// A batch buffer's first capacity, in bytes: a round's frames for a busy connection
/// usually fit, so a batch rarely grows (each growth is a copy).
const BATCH_CAPACITY: usize = 16 * 1024;

/// Written-out batch buffers kept per core for the next batch of any connection, at most
/// (with [`SPARE_MAX_CAPACITY`]: at most 1 MiB per core).
const SPARE_BUFFERS: usize = 16;

/// A written-out batch buffer that grew past this many bytes is freed, not kept.
const SPARE_MAX_CAPACITY: usize = 4 * BATCH_CAPACITY;

thread_local! {
    /// Empty batch buffers, each of [`BATCH_CAPACITY`] to [`SPARE_MAX_CAPACITY`] bytes,
    /// for the next connection that writes: a busy core reuses them instead of allocating
    /// and growing one per batch, and an idle connection holds none.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// A flusher is queued on this core and has not run yet.
    static FLUSHER_QUEUED: Cell<bool> = const { Cell::new(false) };
    /// The outboxes it will send.
    static LISTED: RefCell<Vec<Rc<RefCell<Outbox>>>> = const { RefCell::new(Vec::new()) };
}

/// What one connection has buffered, shared with the round-end flusher.
#[derive(Debug)]
struct Outbox {
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    at: usize,
    /// The socket; `None` once the connection's I/O is dropped (the fd may be reused).
    fd: Option<RawFd>,
    counters: Rc<PeerCounters>,
    /// Listed for this round's flusher.
    listed: bool,
    /// The flusher found the socket full: the connection's own flush writes the rest,
    /// waiting for the socket.
    blocked: bool,
    /// The flusher's send failed: returned by the connection's next write or flush.
    error: Option<io::Error>,
    /// The connection task, woken when the flusher could not send everything.
    task: Option<Waker>,
    /// The peer's progress, when watched ([`Coalesce::watch_acks`]).
    acks: Option<AckWatch>,
}

impl Outbox {
    /// Forgets what was written (the buffer is freed, not kept: an idle connection should not
    /// hold the largest batch it ever wrote).
    fn written(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if (BATCH_CAPACITY..=SPARE_MAX_CAPACITY).contains(&buf.capacity()) {
            buf.clear();
            SPARE.with_borrow_mut(|spare| {
                if spare.len() < SPARE_BUFFERS {
                    spare.push(buf);
                }
            });
        }
        self.at = 0;
        self.blocked = false;
    }

    /// Appends `data`, starting a batch in a spare buffer (or a new one of
    /// [`BATCH_CAPACITY`]).
    fn append(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf = SPARE
                .with_borrow_mut(Vec::pop)
                .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
        }
        self.buf.extend_from_slice(data);
    }

    /// Notes bytes the socket took: `Err` when the watched peer stalled ([`AckWatch`]); its
    /// socket is then set to close with a reset (`SO_LINGER` 0), so that the close frees the
    /// bytes it still holds for a peer that may never read them.
    fn sent(&mut self, n: usize) -> io::Result<()> {
        self.at += n;
        match self.acks.as_mut().map(AckWatch::wrote) {
            Some(Err(_)) => {
                if let Some(fd) = self.fd {
                    let _ = sys::set_linger_zero(fd);
                }
                Err(io::Error::new(io::ErrorKind::TimedOut, STALLED))
            }
            _ => Ok(()),
        }
    }

    /// The flusher's send: as much as the socket takes now.
    fn send(&mut self) {
        let Some(fd) = self.fd else { return };
        while self.at < self.buf.len() {
            match sys::send_now(fd, &self.buf[self.at..]) {
                Ok(n) => {
                    self.counters.wrote(n as u64);
                    if let Err(e) = self.sent(n) {
                        self.error = Some(e);
                        if let Some(t) = &self.task {
                            t.wake_by_ref();
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.blocked = true;
                    } else {
                        self.error = Some(e);
                    }
                    if let Some(t) = &self.task {
                        t.wake_by_ref();
                    }
                    return;
                }
            }
        }
        self.written();
    }
}

/// Lists `out` for this round's flusher (spawning it if none is queued). Must be called inside
/// a monoio runtime.
fn list(out: &Rc<RefCell<Outbox>>) {
    LISTED.with(|l| l.borrow_mut().push(out.clone()));
    if !FLUSHER_QUEUED.with(|q| q.replace(true)) {
        drop(monoio::spawn(Flusher { ran: false }));
    }
}

/// The round-end flusher's future: sends every listed outbox when polled (once).
struct Flusher {
    ran: bool,
}

impl Drop for Flusher {
    /// A flusher dropped before it ran (its runtime went away with it queued) leaves no state
    /// behind for a later runtime on the same thread.
    fn drop(&mut self) {
        if !self.ran {
            // `try_with`: at thread exit the runtime may outlive these.
            let _ = FLUSHER_QUEUED.try_with(|q| q.set(false));
            let _ = LISTED.try_with(|l| l.borrow_mut().clear());
        }
    }
}

impl Future for Flusher {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.ran = true;
        FLUSHER_QUEUED.with(|q| q.set(false));
        // Sending runs no task, so nothing is listed while the list is taken; the emptied
        // vector goes back to keep its capacity.
        let mut listed = LISTED.with(|l| std::mem::take(&mut *l.borrow_mut()));
        for out in listed.drain(..) {
            let mut out = out.borrow_mut();
            out.listed = false;
            out.send();
        }
        LISTED.with(|l| {
            let mut l = l.borrow_mut();
            if l.is_empty() {
                *l = listed;
            }
        });
        Poll::Ready(())
    }
}

/// An I/O object whose writes are coalesced and sent at the end of the scheduler round.
#[derive(Debug)]
pub struct Coalesce<T> {
    io: T,
    out: Rc<RefCell<Outbox>>,
    errno: LastErrno,
}

/// The OS error number (`errno`, positive) of the last I/O error a [`Coalesce`] returned, if
/// any; a handle that stays readable after the I/O object has moved into `h2`.
#[derive(Clone, Debug, Default)]
pub struct LastErrno(Rc<Cell<Option<i32>>>);

impl LastErrno {
    /// The number, if an error with one has been returned.
    pub fn get(&self) -> Option<i32> {
        self.0.get()
    }

    /// Passes `r` through, keeping its error's number.
    fn note<R>(&self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &r {
            if let Some(n) = e.raw_os_error() {
                self.0.set(Some(n));
            }
        }
        r
    }
}

impl<T> Coalesce<T> {
    /// Wraps `io`, the stream of socket `fd`; bytes the round-end flusher sends on `fd` are
    /// counted in `counters` (`io` counts its own).
    pub fn new(io: T, fd: RawFd, counters: Rc<PeerCounters>) -> Coalesce<T> {
        let out = Outbox {
            buf: Vec::new(),
            at: 0,
            fd: Some(fd),
            counters,
            listed: false,
            blocked: false,
            error: None,
            task: None,
            acks: None,
        };
        Coalesce {
            io,
            out: Rc::new(RefCell::new(out)),
            errno: LastErrno::default(),
        }
    }

    /// Watches whether the peer keeps acknowledging what is written to it ([`AckWatch`]):
    /// once bytes stayed unacknowledged with none taken for `pause` (between 1 and 1.25 times
    /// `pause` after its last acknowledgement), the next write or flush fails with
    /// `TimedOut`, which ends the connection. Looked at only after writes: a peer that stops
    /// once the send buffer is full is left to the waits' own bounds.
    pub fn watch_acks(self, pause: Duration) -> Coalesce<T> {
        {
            let mut out = self.out.borrow_mut();
            out.acks = Some(AckWatch::new(out.fd, Some(pause)));
        }
        self
    }

    /// Where the number of its last OS error is kept.
    pub fn last_errno(&self) -> LastErrno {
        self.errno.clone()
    }
}

impl<T> Drop for Coalesce<T> {
    fn drop(&mut self) {
        // A flusher still holding the outbox must not send on a closed (or reused) fd.
        let mut out = self.out.borrow_mut();
        out.fd = None;
        out.written();
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the buffer out through `io`; `Ready(Ok)` once it is empty.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out.borrow_mut();
        if let Some(e) = out.error.take() {
            return Poll::Ready(Err(e));
        }
        while out.at < out.buf.len() {
            let at = out.at;
            match Pin::new(&mut self.io).poll_write(cx, &out.buf[at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => out.sent(n)?,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        out.written();
        Poll::Ready(Ok(()))
    }

    /// Makes room for more: the flusher's error, if it failed; with the buffer full, writes
    /// it out first (back-pressure when the socket is full too).
    fn room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let full = {
            let mut out = self.out.borrow_mut();
            if let Some(e) = out.error.take() {
                return Poll::Ready(Err(e));
            }
            out.buf.len() >= WRITE_THROUGH
        };
        if full {
            return self.drain(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.errno.note(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.room(cx)) {
            return self.errno.note(Poll::Ready(Err(e)));
        }
        self.out.borrow_mut().append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.room(cx)) {
            return self.errno.note(Poll::Ready(Err(e)));
        }
        let mut out = self.out.borrow_mut();
        let mut n = 0;
        for b in bufs {
            out.append(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// See [`Coalesce::poll_flush_inner`].
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.poll_flush_inner(cx);
        self.errno.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_shutdown(cx),
            other => other,
        };
        self.errno.note(r)
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Nothing buffered: flushes the inner I/O. Otherwise lists the buffer for the round-end
    /// flusher and returns `Ready(Ok)` at once; after the flusher found the socket full, writes
    /// the rest through the inner I/O (`Pending` while the socket stays full); after it
    /// failed, returns its error.
    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut out = self.out.borrow_mut();
            if let Some(e) = out.error.take() {
                return Poll::Ready(Err(e));
            }
            if out.at == out.buf.len() {
                drop(out);
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            if !out.blocked {
                if !out.listed {
                    out.listed = true;
                    if !out.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                        out.task = Some(cx.waker().clone());
                    }
                    drop(out);
                    list(&self.out);
                }
                return Poll::Ready(Ok(()));
            }
        }
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_flush(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// The wrapped I/O: records each write it is asked for (the connection's own drains).
    #[derive(Default, Clone)]
    struct Sink {
        writes: Rc<RefCell<Vec<Vec<u8>>>>,
    }

    impl Sink {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.writes.borrow().clone()
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.borrow_mut().push(b.to_vec());
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Runs `f` as a spawned task (as connections run), on each driver.
    fn on_both_drivers(f: impl Fn() -> Pin<Box<dyn Future<Output = ()>>>) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(async { monoio::spawn(f()).await });
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() {
            rt.block_on(async { monoio::spawn(f()).await });
        }
    }

    /// A connection's write side: a `Coalesce` over `Sink` on one end of a socket pair, and
    /// the other end (non-blocking) to read what the flusher sent.
    fn connection() -> (
        Coalesce<Sink>,
        Sink,
        Rc<PeerCounters>,
        UnixStream,
        UnixStream,
    ) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let sink = Sink::default();
        let counters = Rc::new(PeerCounters::default());
        let c = Coalesce::new(sink.clone(), ours.as_raw_fd(), counters.clone());
        (c, sink, counters, ours, theirs)
    }

    fn received(s: &mut UnixStream) -> Vec<u8> {
        let mut b = vec![0u8; 1 << 20];
        match s.read(&mut b) {
            Ok(n) => b[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("read: {e}"),
        }
    }

    async fn write(c: &mut Coalesce<Sink>, b: &[u8]) {
        let n = poll_fn(|cx| Pin::new(&mut *c).poll_write(cx, b))
            .await
            .unwrap();
        assert_eq!(n, b.len());
    }

    async fn flush(c: &mut Coalesce<Sink>) {
        poll_fn(|cx| Pin::new(&mut *c).poll_flush(cx))
            .await
            .unwrap();
    }

    /// Lets every task queued now run (the flusher among them).
    async fn rest_of_the_round() {
        crate::io::yield_now().await;
    }

    #[test]
    fn flushes_of_one_round_go_out_as_one_send_at_its_end() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, sink, counters, _ours, mut theirs) = connection();
                // h2 flushes after each DATA frame it hands over, then at the end of its poll:
                // none of these writes anything yet.
                write(&mut c, b"one ").await;
                flush(&mut c).await;
                write(&mut c, b"two ").await;
                flush(&mut c).await;
                // Another connection of this core asks in the same round.
                let (mut d, _, _, _d_ours, mut d_theirs) = connection();
                write(&mut d, b"x").await;
                flush(&mut d).await;
                write(&mut c, b"three").await;
                flush(&mut c).await;
                assert!(received(&mut theirs).is_empty(), "sent within the round");
                rest_of_the_round().await;
                // One send each, by the flusher; the wrapped I/O wrote nothing.
                assert_eq!(received(&mut theirs), b"one two three");
                assert_eq!(received(&mut d_theirs), b"x");
                assert!(sink.writes().is_empty());
                assert_eq!(counters.snapshot().write_bytes, 13);
                // Nothing buffered: a flush lists nothing.
                flush(&mut c).await;
                rest_of_the_round().await;
                assert!(received(&mut theirs).is_empty());
            })
        });
    }

    #[test]
    fn a_written_batch_leaves_its_buffer_to_the_next_one() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, _, _, _ours, mut theirs) = connection();
                write(&mut c, b"first batch").await;
                let first = c.out.borrow().buf.as_ptr();
                assert!(c.out.borrow().buf.capacity() >= BATCH_CAPACITY);
                flush(&mut c).await;
                rest_of_the_round().await;
                assert_eq!(received(&mut theirs), b"first batch");
                // Written: the connection holds no buffer while it idles.
                assert_eq!(c.out.borrow().buf.capacity(), 0);
                // Another connection's next batch starts in the same allocation.
                let (mut d, _, _, _d_ours, mut d_theirs) = connection();
                write(&mut d, b"next").await;
                assert_eq!(d.out.borrow().buf.as_ptr(), first);
                flush(&mut d).await;
                rest_of_the_round().await;
                assert_eq!(received(&mut d_theirs), b"next");
                // A batch that grew past the largest kept is freed, not kept.
                write(&mut d, &vec![1u8; SPARE_MAX_CAPACITY + 1]).await;
                let big = d.out.borrow().buf.as_ptr();
                flush(&mut d).await;
                rest_of_the_round().await;
                // (What the socket did not take goes through the wrapped I/O.)
                flush(&mut d).await;
                assert_eq!(d.out.borrow().buf.capacity(), 0);
                assert!(SPARE.with_borrow(|s| s.iter().all(|b| b.as_ptr() != big)));
            })
        });
    }

    #[test]
    fn a_full_socket_leaves_the_rest_to_the_connection() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, sink, counters, ours, mut theirs) = connection();
                ours.set_nonblocking(true).unwrap();
                // More than a socket pair's buffer takes.
                let big = vec![7u8; 4 << 20];
                write(&mut c, &big[..WRITE_THROUGH - 1]).await;
                flush(&mut c).await;
                rest_of_the_round().await;
                let sent = counters.snapshot().write_bytes as usize;
                let mut got = received(&mut theirs);
                // (A socket pair's buffer is far below WRITE_THROUGH.)
                assert!(sent < WRITE_THROUGH - 1, "sent {sent}");
                assert!(c.out.borrow().blocked);
                // The connection's next flush writes the rest through its own I/O.
                flush(&mut c).await;
                let rest: usize = sink.writes().iter().map(Vec::len).sum();
                assert_eq!(sent + rest, WRITE_THROUGH - 1);
                while !got.is_empty() {
                    got = received(&mut theirs);
                }
                assert!(!c.out.borrow().blocked);
            })
        });
    }

    #[test]
    fn a_failed_send_is_the_connections_next_error() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, _, _, _ours, theirs) = connection();
                let errno = c.last_errno();
                drop(theirs);
                write(&mut c, b"frame").await;
                flush(&mut c).await;
                assert_eq!(errno.get(), None);
                rest_of_the_round().await;
                let e = poll_fn(|cx| Pin::new(&mut c).poll_flush(cx))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
                // Kept for the close metric after the I/O has moved on.
                drop(c);
                assert_eq!(errno.get(), Some(libc::EPIPE));
            })
        });
    }

    #[test]
    fn a_dropped_connection_is_not_sent_to() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, _, counters, _ours, mut theirs) = connection();
                write(&mut c, b"late").await;
                flush(&mut c).await;
                drop(c);
                rest_of_the_round().await;
                assert!(received(&mut theirs).is_empty());
                assert_eq!(counters.snapshot().write_bytes, 0);
            })
        });
    }

    #[test]
    fn shutdown_writes_what_is_buffered_at_once() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, sink, _, _ours, _theirs) = connection();
                write(&mut c, b"GOAWAY").await;
                flush(&mut c).await;
                poll_fn(|cx| Pin::new(&mut c).poll_shutdown(cx))
                    .await
                    .unwrap();
                assert_eq!(sink.writes(), vec![b"GOAWAY".to_vec()]);
            })
        });
    }

    #[test]
    fn a_full_buffer_goes_out_before_more_is_taken() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut c, sink, _, _ours, _theirs) = connection();
                let big = vec![7u8; WRITE_THROUGH];
                write(&mut c, &big).await;
                assert!(sink.writes().is_empty());
                write(&mut c, b"more").await;
                assert_eq!(sink.writes(), vec![big]);
                assert_eq!(c.out.borrow().buf, b"more");
            })
        });
    }
}
