//! Spliced HTTP/1 body runs: a run of body bytes whose length is known in advance (what is
//! left of a `Content-Length` body, or of one chunk's data) moved from one peer's socket to the
//! other's with `splice(2)` through a pipe, so it never enters user space.
//!
//! The HTTP/1 code (`http1::message`) keeps the framing: it decides how many bytes the run
//! is, and reads everything else (heads, chunk-size lines, trailers) itself. `splice` never
//! reads past the run, so what follows the body stays in the socket for the next read.
//!
//! Sockets: monoio's reads want blocking sockets under io_uring; `splice` needs non-blocking
//! ones. Both sockets are switched at a body's first spliced run and stay non-blocking until
//! the body ends ([`BodySockets`], which puts them back when dropped): four `ioctl`s per body,
//! not per run (a chunked body has one run per chunk), paid only for bodies with a run at or
//! above the threshold (`http1.splice_body_bytes`, 32 KiB by default). While they are
//! non-blocking, the body's other reads and writes (chunk-size lines, small chunks) go
//! through [`crate::io::read_ready`] and [`crate::io::write_ready`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::pipes::PipePool;
use crate::io::{set_driver_mode, watching, AckWatch, Peer, Stopped};
use crate::metrics::ListenerMetrics;
use crate::sys::{self, Pipe};

/// What the HTTP/1 code needs to splice body runs: the worker's pipe pool and the smallest run
/// worth a pipe (bytes; smaller runs are copied, which costs less than the mode switches).
#[derive(Debug, Clone, Copy)]
pub struct BodySplice<'a> {
    /// The worker's pipes.
    pub pipes: &'a PipePool,
    /// Where spliced bytes are counted (`sidewire_http1_spliced_bytes_total`).
    pub metrics: &'a ListenerMetrics,
    /// Bodies and chunks declared shorter than this many bytes are copied (never 0: see
    /// `http1.splice_body_bytes`).
    pub min: u64,
}

/// The two sockets of one HTTP/1 body while it is spliced: switched to non-blocking mode at
/// the body's first spliced run ([`splice_run`]) and put back in the driver's mode
/// ([`set_driver_mode`]) when this is dropped, at the body's end. Under the epoll driver the
/// sockets are non-blocking already and nothing is switched.
#[derive(Debug, Default)]
pub struct BodySockets {
    /// The sockets, once switched (`restore`: whether dropping must put them back).
    switched: Option<(RawFd, RawFd, bool)>,
    /// Whether the source's peek offset was set ([`BodySockets::peek_src`]): `Some(false)`
    /// once the kernel refused it.
    peek_off: Option<bool>,
    /// Looks past the next chunk left to skip ([`BodySockets::look_ahead`]).
    ahead_skip: u32,
}

/// After a look past the next chunk found nothing queued there (the sender, not the proxy,
/// sets the pace), the next this many looks are skipped: each costs a `setsockopt` and a
/// `recv` that would most likely find nothing either, and the peeks at the head of the queue
/// need no offset meanwhile (plain `MSG_PEEK`, no `setsockopt`).
const AHEAD_PAUSE: u32 = 16;

impl BodySockets {
    /// Whether the body's sockets are non-blocking now: its reads and writes must then go
    /// through [`crate::io::read_ready`] and [`crate::io::write_ready`] (a monoio read on a
    /// non-blocking socket under io_uring fails with EAGAIN instead of waiting).
    pub fn nonblocking(&self) -> bool {
        self.switched.is_some()
    }

    /// Copies into `buf` what is queued on the source socket from `off` bytes past the head
    /// of its receive queue, consuming nothing (`MSG_PEEK`; at an offset, `SO_PEEK_OFF`, which
    /// stays set until the body ends). Returns the bytes copied; `Ok(0)` at EOF; `None` when
    /// `off` > 0 and the kernel cannot peek at an offset (Linux before 6.10), or before the
    /// sockets were switched.
    ///
    /// Errors: the `recv` error; `WouldBlock` when nothing is queued at `off` yet.
    pub fn peek_src(&mut self, off: u64, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some((src, _, _)) = self.switched else {
            return Ok(None);
        };
        if off > 0 || self.peek_off == Some(true) {
            if self.peek_off == Some(false) {
                return Ok(None);
            }
            let Ok(off) = i32::try_from(off) else {
                return Ok(None);
            };
            if sys::set_peek_offset(src, off).is_err() {
                self.peek_off = Some(false);
                return Ok(None);
            }
            self.peek_off = Some(true);
        }
        sys::peek(src, buf).map(Some)
    }

    /// Whether to look for chunks queued past the next one (peeks at an offset): not for the
    /// [`AHEAD_PAUSE`] looks after one that found nothing there ([`BodySockets::missed_ahead`]).
    pub fn look_ahead(&mut self) -> bool {
        if self.ahead_skip > 0 {
            self.ahead_skip -= 1;
            return false;
        }
        true
    }

    /// A look past the next chunk found nothing queued there: the next [`AHEAD_PAUSE`] looks
    /// are skipped, and the peek offset is turned off meanwhile so that peeks at the head of
    /// the queue need no `setsockopt` each.
    pub fn missed_ahead(&mut self) {
        self.ahead_skip = AHEAD_PAUSE;
        if let (Some((src, _, _)), Some(true)) = (self.switched, self.peek_off) {
            if sys::set_peek_offset(src, -1).is_ok() {
                self.peek_off = None;
            }
        }
    }

    /// Makes `src` and `dst` non-blocking for the rest of the body. `false` (both put back)
    /// when an `ioctl` fails; the run is then copied.
    fn switch(&mut self, src: RawFd, dst: RawFd) -> bool {
        if self.switched.is_some() {
            return true;
        }
        if monoio::utils::is_legacy() {
            self.switched = Some((src, dst, false));
            return true;
        }
        if sys::set_nonblocking(src).is_err() || sys::set_nonblocking(dst).is_err() {
            let _ = set_driver_mode(src);
            let _ = set_driver_mode(dst);
            return false;
        }
        self.switched = Some((src, dst, true));
        true
    }
}

impl Drop for BodySockets {
    fn drop(&mut self) {
        // Back to what monoio's reads and writes expect; a failure here would surface on the
        // next read or write of the socket.
        if let (Some((src, _, _)), Some(true)) = (self.switched, self.peek_off) {
            // Peeks without an offset again (detection and the early-answer look peek).
            let _ = sys::set_peek_offset(src, -1);
        }
        if let Some((src, dst, true)) = self.switched {
            let _ = set_driver_mode(src);
            let _ = set_driver_mode(dst);
        }
    }
}

/// Why a spliced run stopped before its end. The caller maps these to its own errors (which
/// side, which HTTP answer).
#[derive(Debug)]
pub enum RunError {
    /// The source sent nothing for the pause bound.
    ReadTimeout,
    /// The destination took nothing for the pause bound.
    WriteStalled,
    /// The source closed before the run's last byte.
    Eof,
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The destination's look stopped the run (an answer waits there: see [`BodyWatch`]).
    /// `taken` bytes of the run had been read from the source, of which the last
    /// `held.len()` had not been written yet (taken out of the pipe, for a caller that goes on
    /// moving the body another way).
    Stopped {
        /// Bytes of the run read from the source.
        taken: u64,
        /// The end of those not written to the destination.
        held: Vec<u8>,
    },
}

/// How one request body's move watches its destination (the upstream) for an answer that
/// comes before the body's end: `look` is called with the destination, the size in bytes of
/// the batch about to be written (`u64::MAX` for a look outside a write) and whether it is
/// the run's last, and says whether the destination refused the rest (which ends the move).
/// While `armed`, a wait for the source's next bytes that runs past
/// [`crate::io::WATCH_AFTER`] also wakes when the destination turns readable, and looks then
/// ([`watching`]). A response body's watch looks only when a wait wakes
/// (`writes` false): its destination is the client, watched for a reset while the upstream
/// pauses.
///
/// `acks` watches whether the destination keeps acknowledging the body's bytes, across its
/// writes and its waits ([`AckWatch`]): a stall fails a write wait (`None`), and ends a wait
/// for the source's next bytes as a look's stop does, with `stalled` set.
pub struct BodyWatch<'a, D> {
    /// The look (the HTTP/1 code's, which knows what an answer is).
    pub look: &'a mut dyn FnMut(&D, u64, bool) -> bool,
    /// Whether waits on the source watch the destination too.
    pub armed: bool,
    /// Whether the look also runs before each write ([`BodyWatch::before_write`]); when
    /// `false`, only when a watched wait wakes.
    pub writes: bool,
    /// The destination's progress.
    pub acks: AckWatch,
    /// Set when a wait for the source ended because the destination stalled.
    pub stalled: &'a std::cell::Cell<bool>,
}

impl<'w, D: Peer> BodyWatch<'w, D> {
    /// Looks before a write of `n` bytes to `dst` (`last`: the run's last): `true` when the
    /// destination refused the rest of the body.
    pub fn before_write(&mut self, dst: &D, n: u64, last: bool) -> bool {
        self.writes && (self.look)(dst, n, last)
    }

    /// `wait` (for room to write to `dst`) watching `dst` as [`watching`] does, bounded by
    /// `dst`'s progress ([`AckWatch::within`]): `None` when `dst` stalled, `Some(Err(Stopped))`
    /// when it refused the body meanwhile (an upstream that answered with an error and
    /// stopped reading).
    pub async fn wait_write<W: std::future::Future>(
        &mut self,
        wait: W,
        dst: &D,
    ) -> Option<Result<W::Output, Stopped>> {
        let BodyWatch {
            look, armed, acks, ..
        } = self;
        let watched = std::pin::pin!(watching(wait, dst.tcp(), armed, move || {
            look(dst, u64::MAX, false)
        }));
        acks.within(watched).await
    }

    /// `wait` (for the source's next bytes) bounded by `pause`, watching `dst` as
    /// [`watching`] does, bounded by `pause`: `None` when `pause` passed, `Some(Err(Stopped))`
    /// when `dst` refused the body meanwhile, or stalled with bytes of it unacknowledged
    /// ([`AckWatch::reading`]; `stalled` is then set).
    /// (Plain functions, not `async fn`s, for the reason [`crate::io::within`] gives.)
    pub fn wait<'b, W: std::future::Future + 'b>(
        &'b mut self,
        wait: W,
        pause: Option<Duration>,
        dst: &'b D,
    ) -> impl std::future::Future<Output = Option<Result<W::Output, Stopped>>> + use<'b, 'w, W, D>
    {
        let BodyWatch {
            look,
            armed,
            acks,
            stalled,
            ..
        } = self;
        async move {
            let watched = std::pin::pin!(watching(wait, dst.tcp(), armed, move || {
                look(dst, u64::MAX, false)
            }));
            match acks.reading(watched, pause).await {
                Ok(w) => w,
                Err(_) => {
                    stalled.set(true);
                    Some(Err(Stopped))
                }
            }
        }
    }
}

/// Moves exactly `n` bytes from `src` to `dst` with `splice(2)`, counting them on both sides
/// as the copying path does. `pause` bounds each wait for the source to have bytes; the
/// destination's progress is `watch.acks`' ([`AckWatch`]: it stalled, [`RunError::WriteStalled`]).
///
/// Returns `Ok(false)`, having moved nothing, when it cannot splice: one of the peers is not a
/// plain TCP socket, or no pipe could be had (fd exhaustion); the caller copies instead.
///
/// `watch` looks at `dst` before each batch goes out, with the batch's size in bytes and
/// whether it is the run's last (the HTTP/1 code looks there for an upstream answer that comes
/// before the request body's end), and watches it while the source is slow; a refusal ends
/// the run with [`RunError::Stopped`].
///
/// `sockets` are the body's: the first run switches them to non-blocking mode, and they stay
/// so until it is dropped.
///
/// Errors: [`RunError`]; some of the run may then have been moved, and the pipe (which may
/// hold bytes) is closed rather than pooled.
pub async fn splice_run<D: Peer>(
    sp: BodySplice<'_>,
    src: &mut impl Peer,
    dst: &mut D,
    n: u64,
    pause: Option<Duration>,
    watch: &mut BodyWatch<'_, D>,
    sockets: &mut BodySockets,
) -> Result<bool, RunError> {
    let (Some(s), Some(d)) = (src.tcp(), dst.tcp()) else {
        return Ok(false);
    };
    let (sfd, dfd) = (s.as_raw_fd(), d.as_raw_fd());
    let pipes = sp.pipes;
    let Ok(pipe) = pipes.take() else {
        return Ok(false);
    };
    if !sockets.switch(sfd, dfd) {
        pipes.put(pipe);
        return Ok(false);
    }
    let moved = run(&pipe, pipes.bytes, sp.metrics, src, dst, n, pause, watch).await;
    match moved {
        Ok(()) => {
            pipes.put(pipe);
            Ok(true)
        }
        Err(e) => {
            match &e {
                RunError::Read(err) => src.note_error(err),
                RunError::Write(err) => dst.note_error(err),
                _ => {}
            }
            Err(e)
        }
    }
}

/// [`splice_run`] once both sockets are non-blocking and the pipe is had.
#[allow(clippy::too_many_arguments)] // splice_run's, plus the pipe and its size
async fn run<D: Peer>(
    pipe: &Pipe,
    chunk: usize,
    m: &ListenerMetrics,
    src: &mut impl Peer,
    dst: &mut D,
    mut left: u64,
    pause: Option<Duration>,
    watch: &mut BodyWatch<'_, D>,
) -> Result<(), RunError> {
    let (pr, pw) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let whole = left;
    // The run stopped by the look with `inpipe` of the batch's `got` bytes still in the pipe.
    let stopped = |left: u64, got: usize, inpipe: usize, dst: &mut D| {
        let mut held = Vec::new();
        while held.len() < inpipe {
            let want = inpipe - held.len();
            match sys::read_now(pr, &mut held, want) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // (Cannot happen: the bytes are in the pipe. The body would be cut short.)
                Err(_) => break,
            }
        }
        let written = (got - inpipe) as u64;
        dst.wrote(written);
        m.body_spliced(written);
        RunError::Stopped {
            taken: whole - left + got as u64,
            held,
        }
    };
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(chunk);
        let sfd = fd(src);
        let got = match sys::splice(sfd, pw, want) {
            Ok(0) => return Err(RunError::Eof),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                watch
                    .wait(tcp(src).readable(false), pause, dst)
                    .await
                    .ok_or(RunError::ReadTimeout)?
                    .map_err(|Stopped| stopped(left, 0, 0, dst))?
                    .map_err(RunError::Read)?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RunError::Read(e)),
        };
        src.counters().read(got as u64);
        if watch.before_write(dst, got as u64, got as u64 == left) {
            // (The pipe is closed, not pooled.)
            return Err(stopped(left, got, got, dst));
        }
        let mut inpipe = got;
        while inpipe > 0 {
            match sys::splice(pr, fd(dst), inpipe) {
                Ok(0) => return Err(RunError::Write(io::ErrorKind::WriteZero.into())),
                Ok(k) => inpipe -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // (An upstream that answered with an error may have stopped reading:
                    // watched meanwhile, so its answer does not wait for the stall bound.)
                    let ready = watch
                        .wait_write(tcp(dst).writable(false), dst)
                        .await
                        .ok_or(RunError::WriteStalled)?;
                    match ready {
                        Ok(r) => r.map_err(RunError::Write)?,
                        Err(Stopped) => return Err(stopped(left, got, inpipe, dst)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RunError::Write(e)),
            }
        }
        dst.wrote(got as u64);
        m.body_spliced(got as u64);
        left -= got as u64;
        watch.acks.wrote().map_err(|_| RunError::WriteStalled)?;
    }
    Ok(())
}

/// The TCP socket of a peer [`splice_run`] already found to have one.
fn tcp<P: Peer>(p: &P) -> &TcpStream {
    p.tcp().expect("splice_run checked both peers are TCP")
}

/// Its file descriptor.
fn fd<P: Peer>(p: &P) -> RawFd {
    tcp(p).as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream as StdTcp};

    /// A connected loopback pair with `data` queued on the second socket.
    fn queued(data: &[u8]) -> (StdTcp, StdTcp) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.write_all(data).unwrap();
        // Waits (blocking) until all of it is queued.
        let mut probe = vec![0u8; data.len()];
        while b.peek(&mut probe).unwrap() < data.len() {}
        (a, b)
    }

    #[test]
    fn a_look_ahead_that_finds_nothing_pauses_the_looks_and_the_offset() {
        let (_a, b) = queued(b"0123456789abcdef");
        let fd = b.as_raw_fd();
        let mut buf = [0u8; 4];
        let mut s = BodySockets {
            switched: Some((fd, fd, false)),
            ..Default::default()
        };
        assert!(s.look_ahead());
        let offsets = s.peek_src(5, &mut buf).unwrap().is_some();
        s.missed_ahead();
        // The offset is off again: a peek at the head needs no `setsockopt`, and sees it.
        assert_eq!(s.peek_off, if offsets { None } else { Some(false) });
        assert_eq!(s.peek_src(0, &mut buf).unwrap(), Some(4));
        assert_eq!(&buf, b"0123");
        for _ in 0..AHEAD_PAUSE {
            assert!(!s.look_ahead());
        }
        assert!(s.look_ahead(), "looks again after the pause");
        // Offsets work again (where the kernel has them).
        if offsets {
            assert_eq!(s.peek_src(5, &mut buf).unwrap(), Some(4));
            assert_eq!(&buf, b"5678");
        }
    }

    #[test]
    fn peeks_at_an_offset_and_the_body_end_puts_the_peek_back_at_the_head() {
        let (_a, b) = queued(b"0123456789abcdef");
        let fd = b.as_raw_fd();
        let mut buf = [0u8; 4];
        {
            let mut s = BodySockets::default();
            assert_eq!(s.peek_src(5, &mut buf).unwrap(), None, "not switched yet");
            s.switched = Some((fd, fd, false));
            assert_eq!(s.peek_src(0, &mut buf).unwrap(), Some(4));
            assert_eq!(&buf, b"0123");
            match s.peek_src(5, &mut buf).unwrap() {
                Some(n) => {
                    assert_eq!(&buf[..n], b"5678");
                    // Offset 0 again once an offset was set: the head, not where the last
                    // peek left the offset.
                    assert_eq!(s.peek_src(0, &mut buf).unwrap(), Some(4));
                    assert_eq!(&buf, b"0123");
                    s.peek_src(12, &mut buf).unwrap();
                    assert_eq!(&buf, b"cdef");
                }
                // A kernel without SO_PEEK_OFF for TCP (before 6.10): offset peeks are refused.
                None => assert_eq!(s.peek_off, Some(false)),
            }
            let err = s.peek_src(16, &mut buf).unwrap_err();
            assert!(s.peek_off == Some(false) || err.kind() == io::ErrorKind::WouldBlock);
        }
        // The body ended: a plain peek (the early-answer look, detection) sees the head.
        assert_eq!(sys::peek(fd, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"0123");
    }
}
