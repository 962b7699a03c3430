//! Protocol detection: decide what an accepted connection speaks **without consuming its
//! bytes**, so that the opaque path can still splice from byte 0 with no copy.
//!
//! Two layers:
//! - [`classify`]: a pure function over the bytes peeked so far, answering decided
//!   (HTTP/1, HTTP/2 prior knowledge, TLS with its ClientHello, opaque) or "need more".
//! - [`detect`]: the I/O around it. `MSG_PEEK` into a per-core buffer; while undecided, wait
//!   for readiness with `SO_RCVLOWAT` set to the number of bytes the verdict needs (so a
//!   partial prefix does not spin and a large ClientHello costs one wake-up); all under the
//!   detect timeout. Meanwhile, if the client stays silent for a short grace period, the
//!   upstream is dialled in parallel ("server speaks first"): if it sends bytes before the
//!   client does, the connection is opaque at once and those bytes flow immediately. An h2
//!   server's initial SETTINGS frame is not a greeting: the client is awaited as before.
//!
//! Bias: availability over classification. A timeout, an over-long prefix or a client EOF
//! mid-prefix all end in "opaque" (forwarded untouched), never in a closed connection. TLS
//! included (Linkerd closes on TLS detection timeout; we do not). One exception to "over-long
//! is opaque": a request line longer than the peek window is HTTP/1 (a method, a space and
//! request-target bytes filling the window), so no HTTP request skips the HTTP/1 checks and
//! routing by being long.
//!
//! Not here: what happens after the verdict (`conn`). Opaque-port, declared-port and
//! forced-protocol shortcuts are planned by [`plan`] and taken in `conn` before any peek.

pub mod http;
pub mod plan;
mod probe;
pub mod tls;
mod verdict;

use std::cell::RefCell;
use std::future::{pending, poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::config::{DetectConfig, ListenerConfig, ServerFirst};
use crate::error::ConnectError;
use crate::sys;
pub use plan::{Plan, PortPlan};
pub use probe::Probe;
pub use tls::ClientHello;
pub use verdict::{DetectReason, DetectResult, LinkerdDetect, Prefix, Seen, PREFIX_LEN};

/// The answer of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An HTTP/1.0 or 1.1 request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A complete TLS ClientHello.
    Tls(ClientHello),
    /// None of the above: forward as-is.
    Opaque,
    /// Undecided until at least `want` bytes (in total) have arrived.
    NeedMore {
        /// Total bytes needed before classifying again is useful.
        want: usize,
    },
}

/// Classifies the first bytes of a client connection. Pure; allocates only for a ClientHello
/// split across records and for the SNI/ALPN strings.
///
/// Order: h2 preface, TLS, HTTP/1 (their first bytes are disjoint, so order only matters for
/// speed); `Opaque` as soon as every probe says no. At [`PEEK_CAP`] bytes or more, a request
/// line not yet ended is HTTP/1 when everything so far could be one.
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore { want: 1 };
    }
    let mut want = usize::MAX;
    let mut need = |n: usize| want = want.min(n.max(buf.len() + 1));
    match http::probe_h2(buf) {
        Probe::Yes(()) => return Verdict::Http2,
        Probe::NeedMore(n) => need(n),
        Probe::No => {}
    }
    match tls::probe(buf) {
        Probe::Yes(hello) => return Verdict::Tls(hello),
        Probe::NeedMore(n) => need(n),
        Probe::No => {}
    }
    match http::probe_h1(buf) {
        Probe::Yes(()) => return Verdict::Http1,
        // A request line longer than the peek window: HTTP/1 all the same, so that no request
        // skips the HTTP/1 checks and routing by being long.
        Probe::NeedMore(_)
            if buf.len() >= PEEK_CAP && http::long_request_line(&buf[..PEEK_CAP]) =>
        {
            return Verdict::Http1
        }
        Probe::NeedMore(n) => need(n),
        Probe::No => {}
    }
    if want == usize::MAX {
        Verdict::Opaque
    } else {
        Verdict::NeedMore { want }
    }
}

/// Bytes peeked at most. A ClientHello up to one full record (16 KiB + header) fits. An
/// HTTP request line longer than this is still HTTP/1 when the whole window is a method, a
/// space and request-target bytes (see [`http::long_request_line`]).
pub const PEEK_CAP: usize = 16 * 1024 + 64;

/// What detection found, and the upstream connection it may already have opened.
#[derive(Debug)]
pub enum Detection {
    /// A verdict.
    Decided {
        /// What the connection speaks.
        result: DetectResult,
        /// The ClientHello, for [`DetectResult::Tls`].
        hello: Option<ClientHello>,
        /// An upstream dialled during detection (server-first), connected or failed.
        early: Option<Result<TcpStream, ConnectError>>,
        /// The bytes the verdict was made on.
        seen: Seen,
    },
    /// The server-first dial failed and the client stayed silent for
    /// [`AFTER_DIAL_FAILURE`] more: there is nothing to proxy to (counted as a
    /// connect error, not as a detection). A client that speaks after the failure is detected
    /// as usual: an HTTP client still gets its answer (a 502, or a route to another upstream).
    DialFailed(ConnectError),
}

/// The client failed during detection ([`detect`]'s error).
#[derive(Debug)]
pub struct ClientFailed {
    /// The socket's error (`ECONNRESET` for a reset).
    pub error: io::Error,
    /// What had been seen of the client by then (its first bytes, for `GET /connections`).
    pub seen: Seen,
}

/// One peek + classify step.
enum Step {
    Decided(DetectResult, Option<ClientHello>),
    /// Undecided; `have` bytes so far, wake when `want` are there.
    Need {
        have: usize,
        want: usize,
    },
}

/// Peeks the client's queued bytes and classifies them. `prev` is the byte count of the
/// previous peek after a readiness wake-up (None for the first peek): no growth after a
/// wake-up means EOF (a FIN), so the bytes so far are all there will be, or a reset, which is
/// returned as the socket's pending error (`ECONNRESET`). `seen` gets the bytes peeked (a
/// 16-byte copy).
fn step(
    scratch: &RefCell<Box<[u8]>>,
    fd: i32,
    prev: Option<usize>,
    seen: &mut Seen,
) -> io::Result<Step> {
    let mut buf = scratch.borrow_mut();
    let n = match sys::peek(fd, &mut buf[..]) {
        Ok(0) => return Ok(Step::Decided(DetectResult::Closed, None)),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Ok(Step::Need { have: 0, want: 1 })
        }
        Err(e) => return Err(e),
    };
    seen.client = Prefix::new(&buf[..n]);
    seen.client_total = n;
    Ok(match classify(&buf[..n]) {
        Verdict::Http1 => Step::Decided(DetectResult::Http1, None),
        Verdict::Http2 => Step::Decided(DetectResult::Http2, None),
        Verdict::Tls(h) => Step::Decided(DetectResult::Tls, Some(h)),
        Verdict::Opaque => Step::Decided(DetectResult::Opaque, None),
        Verdict::NeedMore { want } => {
            let stalled = prev == Some(n);
            if stalled {
                // A reset leaves the queued bytes peekable and no growth, like a FIN: the
                // pending error tells them apart (review: a client that reset after part of
                // a prefix was forwarded opaque as half-closed, to a fresh upstream dial).
                if let Some(e) = sys::take_socket_error(fd)? {
                    return Err(e);
                }
            }
            seen.client_eof = stalled;
            if stalled || n >= PEEK_CAP || want > PEEK_CAP {
                // EOF mid-prefix, or more than we peek (and not a long HTTP/1 request line,
                // which `classify` decides at a full window): forward it as-is.
                // A TLS record header that is this long is still TLS, just without SNI.
                if buf[0] == 0x16 && n >= 5 {
                    Step::Decided(DetectResult::Tls, Some(ClientHello::default()))
                } else {
                    Step::Decided(DetectResult::Opaque, None)
                }
            } else {
                Step::Need { have: n, want }
            }
        }
    })
}

/// Restores `SO_RCVLOWAT` to 1 on drop if detection raised it: splicing waits on plain
/// readability and would stall otherwise.
struct LowWater {
    fd: i32,
    raised: bool,
}

impl LowWater {
    fn set(&mut self, n: usize) {
        if n <= 1 && !self.raised {
            return; // already the default: no syscall
        }
        if sys::set_rcvlowat(self.fd, n).is_ok() {
            self.raised = n > 1;
        }
    }
}

impl Drop for LowWater {
    fn drop(&mut self) {
        if self.raised {
            let _ = sys::set_rcvlowat(self.fd, 1);
        }
    }
}

/// How long a client that was silent when its early (server-first) dial failed may still
/// start speaking: long enough for a client-first client whose bytes were a moment late (they
/// usually follow the connect within microseconds), short enough that a server-first client
/// of a dead upstream is closed promptly.
pub const AFTER_DIAL_FAILURE: Duration = Duration::from_millis(100);

/// Detection settings resolved for one listener.
#[derive(Debug, Clone, Copy)]
pub struct DetectSettings {
    // Built by `DetectSettings::new` from `[detect]` and the listener; the config keys are
    // `detect_timeout_ms` (or `[detect] timeout_ms`), `server_first`,
    // `server_first_dial_delay_ms`.
    /// Give up after this long: opaque.
    pub timeout: Duration,
    /// Dial the upstream while the client is silent (server-speaks-first support).
    pub eager_dial: bool,
    /// How long the client may stay silent before that dial.
    pub dial_delay: Duration,
    /// When that dial fails, give a still-silent client only [`AFTER_DIAL_FAILURE`] more
    /// (a server-first client of a dead upstream is closed promptly). Off where an HTTP
    /// client's requests may go elsewhere (a listener with routes): the client then has the
    /// whole `timeout` to speak, as without an early dial.
    pub close_after_dial_failure: bool,
}

impl DetectSettings {
    /// The settings for listener `l` under `[detect]` `d`.
    pub fn new(l: &ListenerConfig, d: &DetectConfig) -> DetectSettings {
        DetectSettings {
            timeout: l.detect_timeout,
            eager_dial: d.server_first == ServerFirst::Eager,
            dial_delay: d.dial_delay,
            close_after_dial_failure: l.routes.is_empty(),
        }
    }
}

/// The upstream detection dialled, if any: connected, or the dial still in flight finished
/// (the forwarding path needs it either way).
async fn hand_over<F>(up: Option<TcpStream>, dial: Option<Pin<Box<F>>>) -> Option<F::Output>
where
    F: Future<Output = Result<TcpStream, ConnectError>>,
{
    match (up, dial) {
        (Some(u), _) => Some(Ok(u)),
        (None, Some(d)) => Some(d.await),
        (None, None) => None,
    }
}

/// Like [`hand_over`], for a verdict that dials per request (HTTP) or needs no upstream (the
/// client left): a dial still in flight is not waited for. It is polled once (its result may
/// already be in) and otherwise dropped, which cancels the connect, and `abandoned` is called.
/// (Review: with the upstream blackholed, an HTTP client that spoke while the early dial sat
/// in SYN-SENT waited `connect_timeout_ms` before its request was even read, although its
/// requests may go to other endpoints or routes.)
async fn hand_over_ready<F>(
    up: Option<TcpStream>,
    dial: Option<Pin<Box<F>>>,
    abandoned: impl FnOnce(),
) -> Option<F::Output>
where
    F: Future<Output = Result<TcpStream, ConnectError>>,
{
    match (up, dial) {
        (Some(u), _) => Some(Ok(u)),
        (None, Some(mut d)) => {
            let now = poll_fn(|cx| Poll::Ready(d.as_mut().poll(cx))).await;
            match now {
                Poll::Ready(r) => Some(r),
                Poll::Pending => {
                    drop(d);
                    abandoned();
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// Runs detection on `client` with settings `s`. `scratch` is the worker's peek buffer
/// (at least [`PEEK_CAP`] bytes; borrowed only between awaits). `dial` opens the upstream
/// the connection will go to; it is called at most once, when the client stays silent for
/// `s.dial_delay` and `s.eager_dial` is set (server-speaks-first support). `spare` takes an
/// early connection the upstream closed before the client spoke (with the error a reset
/// left on it; `None` for the socket when the dial itself ended in that reset, see
/// [`ConnectError::reset`]), or one the client's failure leaves unused; `abandoned` is called when
/// an early dial still connecting is dropped because the verdict does not need it (HTTP,
/// whose requests dial per endpoint, or a client that left): the verdict then carries no
/// early upstream. `dial_failed` takes the early dial's failure when the client fails
/// (otherwise the failure goes with the verdict, or as [`Detection::DialFailed`]).
///
/// Errors: the client socket failing (a reset during the peek), with what had been seen of
/// it. A timeout is not an error: it is the verdict [`DetectResult::Timeout`].
pub async fn detect<F>(
    client: &TcpStream,
    s: &DetectSettings,
    scratch: &RefCell<Box<[u8]>>,
    mut dial: impl FnMut() -> F,
    mut spare: impl FnMut(Option<TcpStream>, Option<io::Error>),
    abandoned: impl FnOnce(),
    dial_failed: impl FnOnce(ConnectError),
) -> Result<Detection, ClientFailed>
where
    F: Future<Output = Result<TcpStream, ConnectError>>,
{
    let fd = client.as_raw_fd();
    let decided = |result, hello, early, seen| {
        Ok(Detection::Decided {
            result,
            hello,
            early,
            seen,
        })
    };
    let mut seen = Seen::default();

    // Most clients' first bytes are already queued at accept: decide without waiting.
    let first = step(scratch, fd, None, &mut seen).map_err(|error| ClientFailed { error, seen })?;
    let (mut have, want) = match first {
        Step::Decided(r, h) => return decided(r, h, None, seen),
        Step::Need { have, want } => (have, want),
    };
    let mut lowat = LowWater { fd, raised: false };
    lowat.set(want);

    let started = monoio::time::Instant::now();
    let mut deadline = pin!(monoio::time::sleep(s.timeout));
    let mut delay = pin!(monoio::time::sleep(s.dial_delay));
    let mut dial_started = !s.eager_dial;
    let mut in_flight: Option<Pin<Box<F>>> = None;
    if !dial_started && s.dial_delay.is_zero() {
        // "At once" must not wait for the timer wheel's next tick (about 1 ms).
        dial_started = true;
        in_flight = Some(Box::pin(dial()));
    }
    let mut up: Option<TcpStream> = None;
    // The early dial's error, once it failed: detection goes on (the client may still speak).
    let mut failed: Option<ConnectError> = None;
    let mut up_lowat: Option<LowWater> = None;
    let mut watch_up = false;

    loop {
        monoio::select! {
            biased;
            r = client.readable(false) => {
                let stepped = r.and_then(|()| step(scratch, fd, Some(have), &mut seen));
                let stepped = match stepped {
                    Ok(s) => s,
                    // The client failed: an early connection is closed as the spare it is, a
                    // dial in flight dropped (both counted unused), a failed one counted as
                    // the failed connect it was.
                    Err(e) => {
                        drop(up_lowat);
                        match hand_over_ready(up, in_flight, abandoned).await {
                            Some(Ok(u)) => spare(Some(u), None),
                            Some(Err(f)) => dial_failed(f),
                            None => {
                                if let Some(f) = failed {
                                    dial_failed(f);
                                }
                            }
                        }
                        return Err(ClientFailed { error: e, seen });
                    }
                };
                match stepped {
                    Step::Decided(result, hello) => {
                        // The client spoke first. A dial still in flight is finished and
                        // handed over when the verdict is forwarded opaque (that path needs
                        // it anyway); HTTP and a client that left do not wait for it.
                        drop(up_lowat);
                        let early = match result {
                            DetectResult::Http1 | DetectResult::Http2 | DetectResult::Closed => {
                                hand_over_ready(up, in_flight, abandoned).await
                            }
                            _ => hand_over(up, in_flight).await,
                        };
                        // An early dial that failed before the client spoke is handed over
                        // as the failure it was (counted; the opaque path tries elsewhere).
                        let early = early.or(failed.map(Err));
                        return decided(result, hello, early, seen);
                    }
                    Step::Need { have: h, want } => {
                        have = h;
                        lowat.set(want);
                    }
                }
            }
            _ = &mut deadline => {
                if let Some(e) = failed.take() {
                    // A client that has sent part of a prefix meanwhile is not silent: it
                    // keeps the whole detect timeout (review: closed as "stayed silent").
                    if have > 0 && started.elapsed() < s.timeout {
                        deadline.set(monoio::time::sleep_until(started + s.timeout));
                        failed = Some(e);
                        continue;
                    }
                    return Ok(Detection::DialFailed(e));
                }
                drop(up_lowat);
                let early = hand_over(up, in_flight).await;
                return decided(DetectResult::Timeout, None, early, seen);
            }
            _ = &mut delay, if !dial_started => {
                dial_started = true;
                in_flight = Some(Box::pin(dial()));
            }
            r = async { match in_flight.as_mut() { Some(d) => d.await, None => pending().await } }, if in_flight.is_some() => {
                in_flight = None;
                match r {
                    Ok(u) => {
                        watch_up = true;
                        up_lowat = Some(LowWater { fd: u.as_raw_fd(), raised: false });
                        up = Some(u);
                    }
                    // The upstream accepted and reset before the dial saw its connect
                    // finish: the same as an early connection it resets while the client is
                    // silent (below), not a failed dial; detection goes on. (Review: which
                    // of the two a reset on accept became depended on scheduling; as a failed
                    // dial a silent client was closed after `AFTER_DIAL_FAILURE`.)
                    Err(e) if e.reset => {
                        spare(None, Some(io::Error::from_raw_os_error(libc::ECONNRESET)));
                    }
                    // The upstream is down: nothing to proxy to, whatever the client says
                    // (unless its HTTP requests may be routed elsewhere).
                    Err(e) => {
                        if s.close_after_dial_failure && have == 0 {
                            let left = AFTER_DIAL_FAILURE.min(s.timeout);
                            deadline.set(monoio::time::sleep(left));
                        }
                        failed = Some(e);
                    }
                }
            }
            r = async { match up.as_ref() { Some(u) => u.readable(false).await, None => pending().await } }, if watch_up => {
                let u = up.as_ref().expect("invariant: watch_up implies a connected upstream");
                let mut buf = scratch.borrow_mut();
                // (An error on the upstream socket is its close, not the client's failure.)
                // (The peek that reports a reset also clears it from the socket: kept for
                // the close's count.)
                let (n, reset) = match r.and_then(|()| sys::peek(u.as_raw_fd(), &mut buf[..64])) {
                    Ok(n) => (n, None),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => (0, Some(e)),
                };
                if n == 0 {
                    // Closed (or reset) without a byte: not a greeting but an upstream that
                    // drops idle connections (a first-request timeout shorter than the
                    // client's silence). The connection is given up and detection goes on;
                    // the client's traffic gets a fresh one (review: such clients were
                    // made opaque and got an empty reply).
                    drop(buf);
                    up_lowat = None;
                    watch_up = false;
                    if let Some(u) = up.take() {
                        spare(Some(u), reset);
                    }
                    continue;
                }
                let verdict = http::probe_h2_server_settings(&buf[..n]);
                let first = Prefix::new(&buf[..n]);
                drop(buf);
                match verdict {
                    // An h2 server's SETTINGS on accept: not a greeting; wait for the client.
                    Probe::Yes(()) => watch_up = false,
                    Probe::NeedMore(k) => {
                        if let Some(lw) = up_lowat.as_mut() { lw.set(k) }
                    }
                    // Bytes from the server first: opaque now, the greeting flows at once.
                    Probe::No => {
                        drop(up_lowat);
                        seen.upstream = first;
                        return decided(DetectResult::ServerFirst, None, up.map(Ok), seen);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
