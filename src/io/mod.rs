//! Byte I/O shared by the HTTP proxies, with every byte counted on its side.
//!
//! - [`Peer`]: a connection the HTTP/1 code reads and writes with completion ("rent") I/O,
//!   generic over its stream (a `TcpStream` today; a TLS stream later, with no change to the
//!   HTTP/1 code), plus [`read_more`], [`read_within`] and [`write_all`], which count every
//!   byte in `tcp_read_bytes_total` / `tcp_write_bytes_total` as the splice path counts its own.
//! - [`counted`] and [`coalesce`]: the bridges for poll-style I/O (the `h2` crate over
//!   monoio's poll-io): byte counting and write coalescing.
//! - [`sweep`]: idle bounds for waiting connections without a timer each.
//! - [`acks`]: the writing side's pause bound, from the reader's acknowledgements.
//!
//! Not here: what the bytes mean (`http1::message`), the opaque path (`forward`, which splices
//! and never sees the bytes).

pub mod acks;
pub mod coalesce;
pub mod counted;
pub mod sweep;

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

pub use acks::{AckWatch, Stalled};

use crate::error::Side;
use crate::metrics::{Close, PeerCounters};
use crate::sys;

/// Puts `fd` in the mode the worker's driver expects for monoio's own reads and writes on it:
/// blocking under io_uring (the ring waits for data inside the kernel; a non-blocking socket
/// would bounce EAGAIN back), non-blocking under epoll (monoio's legacy driver tries the
/// syscall, then waits for readiness). Sockets come out of `connect` non-blocking.
///
/// Errors: the `ioctl(FIONBIO)` error.
pub fn set_driver_mode(fd: std::os::fd::RawFd) -> io::Result<()> {
    if monoio::utils::is_legacy() {
        sys::set_nonblocking(fd)
    } else {
        sys::set_blocking(fd)
    }
}

/// Bytes read per syscall while streaming bodies.
pub const READ_CHUNK: usize = 64 * 1024;

/// A connection the HTTP proxies read and write, with the byte counters of its side
/// (`peer="src"` for the client, `peer="dst"` for an upstream).
pub trait Peer {
    /// The stream bytes move over (completion I/O).
    type Io: AsyncReadRent + AsyncWriteRent;
    /// The stream.
    fn io(&mut self) -> &mut Self::Io;
    /// Its side's counters.
    fn counters(&self) -> &PeerCounters;
    /// Which side of the proxy it is, for errors.
    fn side(&self) -> Side;
    /// Counts `n` bytes written to it (its side's counter).
    fn wrote(&mut self, n: u64) {
        self.counters().wrote(n);
    }
    /// A read or write on it failed with `e` (its errno goes to `tcp_close_total`).
    fn note_error(&mut self, e: &io::Error);
    /// The plain TCP socket under it, for splicing bytes that need not enter user space
    /// (`forward::body`); `None` for a stream the kernel cannot splice (TLS ended here).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// The client connection of an HTTP proxy loop.
#[derive(Debug)]
pub struct Client<'a> {
    stream: &'a mut TcpStream,
    counters: &'a PeerCounters,
    /// Bytes written to this client so far (for the access log's `bytes`).
    written: u64,
    /// The first OS error a read or write met, for `tcp_close_total{errno}`.
    error: Close,
}

impl<'a> Client<'a> {
    /// `stream`, counted in `counters` (the listener's `peer="src"` for its target).
    pub fn new(stream: &'a mut TcpStream, counters: &'a PeerCounters) -> Client<'a> {
        Client {
            stream,
            counters,
            written: 0,
            error: Close::Clean,
        }
    }

    /// Bytes written to this client so far, through [`write_all`].
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Its counters, for as long as the connection lives (not tied to a borrow of `self`).
    pub fn counters_of(&self) -> &'a PeerCounters {
        self.counters
    }

    /// How the connection ends: `ok` or not, with the errno of an I/O error it met, if any.
    pub fn close(&self, ok: bool) -> Close {
        if ok {
            Close::Clean
        } else {
            self.error.worst(Close::Failed)
        }
    }
}

impl Peer for Client<'_> {
    type Io = TcpStream;
    fn io(&mut self) -> &mut TcpStream {
        self.stream
    }
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.stream)
    }
    fn counters(&self) -> &PeerCounters {
        self.counters
    }
    fn side(&self) -> Side {
        Side::Client
    }
    fn wrote(&mut self, n: u64) {
        self.counters.wrote(n);
        self.written += n;
    }

    fn note_error(&mut self, e: &io::Error) {
        self.error = self.error.worst(Close::of_error(e));
    }
}

/// Appends what one read returns to `buf` (growing it by [`READ_CHUNK`] when less than 4 KiB
/// is free). `Ok(0)` is EOF.
pub async fn read_more(s: &mut impl Peer, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_CHUNK);
    }
    let len = buf.len();
    let (r, slice) = s.io().read(buf.slice_mut(len..)).await;
    match &r {
        Ok(n) => s.counters().read(*n as u64),
        Err(e) => s.note_error(e),
    }
    (r, slice.into_inner())
}

/// Appends what one read returns to `buf` within its spare capacity (at least one byte:
/// grown by 1 KiB when full), for a wait that should hold a small buffer. `Ok(0)` is EOF.
pub async fn read_some(s: &mut impl Peer, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() == buf.len() {
        buf.reserve(1024);
    }
    let len = buf.len();
    let (r, slice) = s.io().read(buf.slice_mut(len..)).await;
    match &r {
        Ok(n) => s.counters().read(*n as u64),
        Err(e) => s.note_error(e),
    }
    (r, slice.into_inner())
}

/// Appends what one read of at most `n` bytes returns to `buf` (grown if it has less spare
/// room): for reading framing (a chunk-size line) without taking the data behind it out of
/// the socket. `Ok(0)` is EOF.
pub async fn read_at_most(
    s: &mut impl Peer,
    mut buf: Vec<u8>,
    n: usize,
) -> (io::Result<usize>, Vec<u8>) {
    buf.reserve(n);
    let len = buf.len();
    let (r, slice) = s.io().read(buf.slice_mut(len..len + n)).await;
    match &r {
        Ok(n) => s.counters().read(*n as u64),
        Err(e) => s.note_error(e),
    }
    (r, slice.into_inner())
}

/// [`read_more`], bounded by `pause` when given: `Err(Elapsed)` on expiry. The read is then
/// cancelled and its buffer lost; the caller closes the connection anyway.
pub async fn read_within(
    s: &mut impl Peer,
    buf: Vec<u8>,
    pause: Option<Duration>,
) -> Result<(io::Result<usize>, Vec<u8>), Elapsed> {
    match pause {
        None => Ok(read_more(s, buf).await),
        Some(d) => monoio::time::timeout(d, read_more(s, buf))
            .await
            .map_err(|_| Elapsed),
    }
}

/// `f`, bounded by `pause` when there is one: `None` when the bound passed first.
///
/// A plain function composing futures, not an `async fn`: an `async fn` keeps its argument
/// and the future it awaits as two copies of `f` in its state, and these wrappers nest (a
/// request body's wait was 10 KiB, most of it copies; each is also copied whole when its
/// caller is boxed or spawned).
pub fn within<F: std::future::Future>(
    f: F,
    pause: Option<Duration>,
) -> impl std::future::Future<Output = Option<F::Output>> {
    use futures_util::future::{Either, FutureExt};
    match pause {
        None => Either::Left(f.map(Some as fn(F::Output) -> Option<F::Output>)),
        Some(d) => Either::Right(monoio::time::timeout(d, f).map(
            Result::ok as fn(Result<F::Output, monoio::time::error::Elapsed>) -> Option<F::Output>,
        )),
    }
}

/// How long a wait for one peer runs before [`watching`] also watches the other: most
/// waits for a request body's next bytes end well within it and cost no second readiness op.
pub const WATCH_AFTER: Duration = Duration::from_millis(10);

/// The other peer spoke, and the wait for this one was given up ([`watching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// `wait` (for one peer: a request body's next bytes, or room to write them) while the other
/// peer may speak first: once `wait` has been pending for [`WATCH_AFTER`], `other` is watched
/// for readability too, if given and `*armed`. When it turns readable first, `look()`
/// decides: `true` gives the wait up (`Err(Stopped)`; `wait` is dropped, with an operation in
/// flight in it); `false` disarms the watch (`*armed = false`) and the wait goes on: what made
/// `other` readable stays queued, so watching it again would wake at once.
pub async fn watching<T>(
    wait: impl std::future::Future<Output = T>,
    other: Option<&TcpStream>,
    armed: &mut bool,
    mut look: impl FnMut() -> bool,
) -> Result<T, Stopped> {
    let Some(other) = other.filter(|_| *armed) else {
        return Ok(wait.await);
    };
    let mut wait = std::pin::pin!(wait);
    monoio::select! {
        biased;
        t = &mut wait => return Ok(t),
        _ = monoio::time::sleep(WATCH_AFTER) => {}
    }
    loop {
        monoio::select! {
            biased;
            t = &mut wait => return Ok(t),
            _ = other.readable(false), if *armed => {
                if look() {
                    return Err(Stopped);
                }
                *armed = false;
            }
        }
    }
}

/// `f`, a wait for the peer on `fd` to answer what was written to it, bounded by `bound`
/// counted from the peer's last acknowledgement: while bytes written to `fd` are still
/// unacknowledged ([`sys::tcp_unacked_bytes`]: a request body still draining from the send
/// buffer into a slow but steady reader), each acknowledgement restarts the bound; once
/// everything is acknowledged the bound runs out as is. The socket is looked at every
/// [`ACK_LOOK`] (or quarter of `bound`, if shorter) until then, so the bound ends at most one
/// look late. With nothing unacknowledged at the start (the usual case) this is exactly
/// `bound`, with no look at all.
///
/// Returns `None` when the bound passed; `f` is then dropped (cancelled).
pub async fn within_after_acked<T>(
    f: impl std::future::Future<Output = T>,
    bound: Duration,
    fd: Option<std::os::fd::RawFd>,
) -> Option<T> {
    let Some(fd) = fd.filter(|&fd| sys::tcp_unacked_bytes(fd).is_some_and(|n| n > 0)) else {
        return monoio::time::timeout(bound, f).await.ok();
    };
    let mut f = std::pin::pin!(f);
    let look = (bound / 4).min(ACK_LOOK).max(Duration::from_millis(1));
    let mut acked = sys::tcp_bytes_acked(fd);
    let mut deadline = std::time::Instant::now() + bound;
    loop {
        let now = std::time::Instant::now();
        let wait = look.min(deadline.saturating_duration_since(now));
        if let Ok(v) = monoio::time::timeout(wait, f.as_mut()).await {
            return Some(v);
        }
        let now = std::time::Instant::now();
        let seen = sys::tcp_bytes_acked(fd);
        if seen > acked {
            acked = seen;
            deadline = now + bound;
        }
        if sys::tcp_unacked_bytes(fd) == Some(0) {
            return monoio::time::timeout(deadline.saturating_duration_since(now), f)
                .await
                .ok();
        }
        if now >= deadline {
            return None;
        }
    }
}

/// How often [`within_after_acked`] looks at a socket with bytes still unacknowledged.
pub const ACK_LOOK: Duration = Duration::from_millis(10);

/// The raw fd of `p`'s TCP socket, for [`AckWatch`].
pub fn tcp_fd(p: &impl Peer) -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    p.tcp().map(|t| t.as_raw_fd())
}

/// A bounded wait expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Writes all of `data`, handing the buffer back for reuse (on success it may be shorter:
/// its contents are spent).
///
/// On a TCP peer the bytes first go straight to the socket ([`sys::send_now`]), so they
/// leave at once instead of when the core's round of tasks ends and the ring is submitted;
/// what the send buffer could not take goes through the runtime's write.
pub async fn write_all(s: &mut impl Peer, mut data: Vec<u8>) -> io::Result<Vec<u8>> {
    if let Some(fd) = tcp_fd(s) {
        match sys::send_now(fd, &data) {
            Ok(n) if n == data.len() => {
                s.wrote(n as u64);
                return Ok(data);
            }
            Ok(n) => {
                s.wrote(n as u64);
                data.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                s.note_error(&e);
                return Err(e);
            }
        }
    }
    let (r, data) = s.io().write_all(data).await;
    match r {
        Ok(n) => s.wrote(n as u64),
        Err(e) => {
            s.note_error(&e);
            return Err(e);
        }
    }
    Ok(data)
}

/// [`read_at_most`] for a peer whose TCP socket is non-blocking for the moment (a body being
/// spliced, [`crate::forward::body`]): `recv` at once, and only when nothing is queued a wait
/// for readability (a poll, not a read the runtime would see fail with EAGAIN), at most
/// `pause` long. Appends at most `max` bytes to `buf`. `None` when `pause` passed with
/// nothing to read; otherwise the read's result (`Ok(0)` is EOF) and the buffer.
///
/// Panics if `s` has no TCP socket (only such peers are ever switched).
pub async fn read_ready(
    s: &mut impl Peer,
    mut buf: Vec<u8>,
    max: usize,
    pause: Option<Duration>,
) -> Option<(io::Result<usize>, Vec<u8>)> {
    let fd = tcp_fd(s).expect("only TCP peers are non-blocking");
    loop {
        match sys::recv_now(fd, &mut buf, max) {
            Ok(n) => {
                s.counters().read(n as u64);
                return Some((Ok(n), buf));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = s.tcp().expect("checked").readable(false);
                if let Err(e) = within(ready, pause).await? {
                    s.note_error(&e);
                    return Some((Err(e), buf));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                s.note_error(&e);
                return Some((Err(e), buf));
            }
        }
    }
}

/// [`write_all`] for a peer whose TCP socket is non-blocking for the moment (see
/// [`read_ready`]): `send` at once, and while the send buffer is full a wait for writability,
/// with the peer's progress watched by `acks` ([`AckWatch`]) across both. `None` when the
/// peer stalled (took nothing for the bound while bytes waited for it); otherwise the
/// write's result.
///
/// Panics if `s` has no TCP socket.
pub async fn write_ready(
    s: &mut impl Peer,
    mut data: &[u8],
    acks: &mut AckWatch,
) -> Option<io::Result<()>> {
    let fd = tcp_fd(s).expect("only TCP peers are non-blocking");
    while !data.is_empty() {
        match sys::send_now(fd, data) {
            Ok(n) => {
                s.wrote(n as u64);
                data = &data[n..];
                acks.wrote().ok()?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = {
                    let ready = std::pin::pin!(s.tcp().expect("checked").writable(false));
                    acks.within(ready).await?
                };
                if let Err(e) = ready {
                    s.note_error(&e);
                    return Some(Err(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                s.note_error(&e);
                return Some(Err(e));
            }
        }
    }
    Some(Ok(()))
}

/// Lets the tasks queued on this core, and the I/O completions the runtime reaps meanwhile,
/// run before this task goes on (monoio 0.2 has no `yield_now`).
///
/// A task cannot do it by waking itself: monoio queues a task woken while it runs at the
/// *front* of the run queue, so it would run again at once, before anything else. Instead
/// this waits for an empty task spawned at the back.
pub async fn yield_now() {
    // A task that has not run yet cannot have panicked: the join cannot fail.
    monoio::spawn(async {}).await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn yield_now_lets_the_tasks_queued_before_it_run() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            monoio::spawn(async {
                let ran = Rc::new(Cell::new(false));
                let other = monoio::spawn({
                    let ran = ran.clone();
                    async move { ran.set(true) }
                });
                super::yield_now().await;
                assert!(ran.get(), "the task queued first did not run");
                other.await;
            })
            .await
        });
    }
}
