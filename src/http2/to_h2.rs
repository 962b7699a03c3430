//! h2 → h2: a stream is sent on one of the worker's pooled HTTP/2 (h2c prior knowledge)
//! connections to the chosen endpoint, dialled on first use and replaced when it dies. A
//! connection carries as many streams as the upstream's SETTINGS_MAX_CONCURRENT_STREAMS
//! allows; when every connection to the endpoint is full, one more is dialled
//! ([`pool::H2Slot`]).
//!
//! The request body is pumped by its own task, so requests and responses stream at the same
//! time (gRPC bidirectional streaming). When the response side ends or fails first, the
//! request pump is aborted and the upstream stream reset.
//!
//! Not here: TLS to the upstream, connection-level keepalive pings.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::FutureExt;
use h2::client::SendRequest;
use h2::{Reason, RecvStream};

use super::conn::RecvBody;
use http::{request, response, Request};
use monoio::net::TcpStream;
use tracing::debug;

use super::body::{pump_within, Stop};
use crate::core::Listener;
use crate::error::Failure;
use crate::metrics::{ConnectRetry, CONNECT_FAILED};
use crate::task;
use crate::upstream::{self, pool};

/// An HTTP/2 response body, with the guard that aborts the request pump when dropped.
pub(crate) struct Body {
    /// DATA frames and trailers from the upstream.
    pub recv: RecvStream,
    _abort: Option<oneshot::Sender<()>>,
    /// The stream's place on its connection, given up with the body.
    _flight: pool::InFlight,
}

/// Sends the request on the pooled connection to `addr` and waits up to `timeout` for the
/// response head. For a request with a body, unless `timeout` is the client's gRPC deadline
/// (`grpc-timeout`), `timeout` counts from when the whole body has been handed to the
/// upstream stream (the upstream's flow-control window took its last bytes), as on the HTTP/1
/// path: a slow upload or a long client stream is not cut while it is still sending. Meanwhile
/// an upstream that takes no byte of a chunk of the body within `timeout` (it neither reads
/// nor answers) gets its stream reset, and the client a 504. A response head that comes
/// before the body's end (bidirectional streaming) is taken at once.
///
/// A bodiless request the upstream did not process is sent once more (RFC 9113 §8.7): one
/// above the last-stream-id of a GOAWAY (§6.8), on a new connection; one reset with
/// REFUSED_STREAM (past the upstream's concurrency limit, mostly), on a pooled connection with
/// room or a new one. A request with a body is not: its body has been streamed away (the
/// client gets the REFUSED_STREAM, which tells it that it may retry).
///
/// When no connection to `addr` can be made, the stream goes to the endpoint `other()`
/// names, if any; `connected` is told the endpoint once a connection to it is ready.
pub(super) async fn exchange(
    l: &Rc<Listener>,
    addr: SocketAddr,
    parts: request::Parts,
    body: RecvBody,
    timeout: Duration,
    other: impl FnOnce() -> Option<SocketAddr>,
    connected: impl FnOnce(SocketAddr),
) -> Result<(response::Parts, Body), Failure> {
    let deadline = Instant::now() + timeout;
    let (addr, first) = match sender(l, addr).await {
        Ok(s) => (addr, s),
        Err(f @ Failure::Status(_, CONNECT_FAILED)) => match other().filter(|o| *o != addr) {
            Some(o) => {
                l.metrics.connect_retried(ConnectRetry::Other);
                debug!(upstream = %addr, other = %o, "http2: upstream connect failed; trying another endpoint");
                (o, sender(l, o).await?)
            }
            None => return Err(f),
        },
        Err(f) => return Err(f),
    };
    connected(addr);
    if !body.is_end_stream() {
        let wait = if super::grpc::timeout(&parts.headers).is_some() {
            Wait::Until(deadline)
        } else {
            Wait::AfterBody(timeout)
        };
        return attempt(l, addr, Some(first), parts, Some(body), wait)
            .await
            .map_err(|a| a.into_failure(addr));
    }
    let copy = copy_head(&parts);
    match attempt(l, addr, Some(first), parts, None, Wait::Until(deadline)).await {
        Err(Attempt::Unprocessed(why)) => {
            debug!(upstream = %addr, why, "http2: stream not processed by the upstream; sending it once more");
            attempt(l, addr, None, copy, None, Wait::Until(deadline))
                .await
                .map_err(|a| a.into_failure(addr))
        }
        r => r.map_err(|a| a.into_failure(addr)),
    }
}

/// How long an attempt waits for the response head.
#[derive(Clone, Copy)]
enum Wait {
    /// Until this instant (a bodiless request, or a gRPC deadline).
    Until(Instant),
    /// This long after the request body's end was handed to the upstream stream. While the
    /// body is still being sent, the upstream must take each chunk of it within this long
    /// (waits for the client's next chunk are not bounded).
    AfterBody(Duration),
}

/// How one attempt at a stream failed.
enum Attempt {
    /// The upstream did not process the stream: it may be sent again.
    Unprocessed(&'static str),
    /// Anything else.
    Failed(Failure),
}

impl Attempt {
    /// What the client gets: an unprocessed stream is reset with REFUSED_STREAM, which tells
    /// the client it may retry (RFC 9113 §8.7).
    fn into_failure(self, addr: SocketAddr) -> Failure {
        match self {
            Attempt::Unprocessed(why) => {
                debug!(upstream = %addr, why, "http2: stream not processed by the upstream");
                Failure::Reset(Reason::REFUSED_STREAM)
            }
            Attempt::Failed(f) => f,
        }
    }
}

/// The request head of `parts` again, for a resend (extensions are not carried).
fn copy_head(parts: &request::Parts) -> request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = parts.uri.clone();
    *r.version_mut() = parts.version;
    *r.headers_mut() = parts.headers.clone();
    r.into_parts().0
}

/// A sender ready for one stream, and the stream's count on its connection.
type Ready = (SendRequest<Bytes>, pool::InFlight);

/// A sender on a pooled connection to `addr` with room for the stream, or on a new one,
/// ready for a stream. A pooled connection may have died since its last use: then it dials
/// once more (a fresh dial that fails is not repeated).
async fn sender(l: &Rc<Listener>, addr: SocketAddr) -> Result<Ready, Failure> {
    let pooled = l.pools.h2(addr).is_some();
    match ready(l, addr).await {
        Ok(s) => Ok(s),
        Err(_) if pooled => ready(l, addr).await,
        Err(e) => Err(e),
    }
}

/// One try: the request on `first` (a ready sender) or on the pooled (or a new) connection,
/// its body (`None`: bodiless) pumped by its own task, the response head awaited as `wait`
/// says.
async fn attempt(
    l: &Rc<Listener>,
    addr: SocketAddr,
    first: Option<Ready>,
    parts: request::Parts,
    body: Option<RecvBody>,
    wait: Wait,
) -> Result<(response::Parts, Body), Attempt> {
    let (mut sender, flight) = match first {
        Some(s) => s,
        None => sender(l, addr).await.map_err(Attempt::Failed)?,
    };
    let (response, send_body) = sender
        .send_request(Request::from_parts(parts, ()), body.is_none())
        .map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: send_request failed");
            l.pools.forget_h2(&flight.conn());
            Attempt::Failed(Failure::Status(502, "upstream HTTP/2 connection failed"))
        })?;
    // `sent` says `true` when the pump has handed the body's end to the upstream stream,
    // `false` when the upstream took no byte of a chunk within the response timeout (it
    // neither reads the body nor answers: the stream is reset); it is dropped unsent when
    // the pump fails otherwise (a stream reset on either side, so the response fails).
    let (sent_tx, sent) = oneshot::channel::<bool>();
    let take_within = match wait {
        Wait::AfterBody(timeout) => Some(timeout),
        Wait::Until(_) => None,
    };
    let abort = body.map(|body| {
        let (tx, rx) = oneshot::channel::<()>();
        task::spawn(async move {
            let none = Cell::new(0);
            monoio::select! {
                r = pump_within(body, send_body, &|| {}, &none, take_within) => match r {
                    Ok(_) => { let _ = sent_tx.send(true); }
                    Err(Stop::Stalled) => { let _ = sent_tx.send(false); }
                    Err(Stop::Stream(_)) => {}
                },
                // Dropped guard: the response side is over, so stop and reset the upstream
                // stream (dropping `send_body` with the rest does that).
                _ = rx => {}
            }
        });
        tx
    });
    let head = async {
        let mut response = response;
        let left = match wait {
            Wait::Until(deadline) => deadline.saturating_duration_since(Instant::now()),
            Wait::AfterBody(timeout) => {
                // `sent` first: a stalled pump resets the upstream stream, which fails
                // `response` in the same round, and the client should get the 504.
                monoio::select! {
                    biased;
                    s = sent => if s == Ok(false) {
                        debug!(upstream = %addr, "http2: upstream took none of the request body within the response timeout");
                        return None;
                    },
                    r = &mut response => return Some(r),
                }
                timeout
            }
        };
        monoio::time::timeout(left, response).await.ok()
    };
    let resp = match head.await {
        None => {
            return Err(Attempt::Failed(Failure::Status(
                504,
                "upstream response timeout",
            )))
        }
        // Above the last-stream-id of a GOAWAY: never processed (RFC 9113 §6.8).
        Some(Err(e)) if e.is_go_away() && e.is_remote() => {
            l.pools.forget_h2(&flight.conn());
            return Err(Attempt::Unprocessed("above the last-stream-id of a GOAWAY"));
        }
        // RFC 9113 §8.7: REFUSED_STREAM means no application processing happened.
        // (The connection stays pooled: an upstream refuses streams past its concurrency
        // limit, and the retry goes where there is room, `pool::H2Slot`.)
        Some(Err(e)) if e.is_reset() && e.reason() == Some(Reason::REFUSED_STREAM) => {
            return Err(Attempt::Unprocessed("reset with REFUSED_STREAM"));
        }
        Some(Err(e)) => {
            return Err(Attempt::Failed(match e.reason() {
                Some(r) if e.is_reset() => Failure::Reset(r),
                _ => {
                    debug!(upstream = %addr, error = %e, "http2: upstream connection error");
                    Failure::Status(502, "upstream HTTP/2 connection failed")
                }
            }))
        }
        Some(Ok(r)) => r,
    };
    let (head, recv) = resp.into_parts();
    Ok((
        head,
        Body {
            recv,
            _abort: abort,
            _flight: flight,
        },
    ))
}

/// Whether `addr` speaks HTTP/2 prior knowledge (`upstream_protocol = "auto"`), learned once
/// per endpoint and worker with [`pool::probe_h2`]. An endpoint that cannot be reached is not
/// learned (the exchange then reports the connect failure).
pub(super) async fn speaks_h2(l: &Listener, addr: SocketAddr) -> bool {
    if let Some(h2) = l.pools.learned(addr) {
        return h2;
    }
    let Some(h2) = pool::probe_h2(addr, l.cfg.connect_timeout, &l.metrics.dst_for(addr)).await
    else {
        return false;
    };
    debug!(upstream = %addr, h2, "http2: learned the upstream protocol");
    l.pools.learn(addr, h2);
    h2
}

/// Takes `tcp`, a connection to `addr` dialled during detection, as a pooled HTTP/2
/// connection to `addr` (its handshake runs on first use), unless one with room for a stream
/// is pooled already. Errors: `tcp` back, untouched, when one is.
pub(super) fn adopt(l: &Rc<Listener>, addr: SocketAddr, tcp: TcpStream) -> Result<(), TcpStream> {
    if l.pools.h2(addr).is_some() {
        return Err(tcp);
    }
    upstream::keepalive_h2(&tcp, l.cfg.keepalive);
    let listener = l.clone();
    let handshake = async move {
        let l = listener;
        pool::handshake_h2(
            addr,
            tcp,
            &l.http2,
            l.cfg.connect_timeout,
            &l.metrics.dst_for(addr),
        )
        .await
    };
    l.pools.put_h2(addr, handshake.boxed_local().shared());
    Ok(())
}

/// A sender for `addr` on a pooled connection with room for one more stream (dialled if
/// there is none), once it can take the stream; the stream counts on that connection from
/// the start of the wait. A connection that failed leaves the pool.
async fn ready(l: &Rc<Listener>, addr: SocketAddr) -> Result<Ready, Failure> {
    let mut moves = 0;
    let (sender, flight) = loop {
        let slot = match l.pools.h2(addr) {
            Some(s) => s,
            None => {
                if l.pools.has_h2(addr) {
                    debug!(upstream = %addr, "http2: every upstream connection is full; dialling one more");
                }
                l.pools
                    .put_h2(addr, dial(l.clone(), addr).boxed_local().shared())
            }
        };
        let flight = l.pools.enter_h2(addr, slot);
        let conn = flight.conn();
        let sender = conn
            .await
            .inspect_err(|_| l.pools.forget_h2(&flight.conn()))?;
        let sender = sender.ready().await.map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: upstream connection not ready");
            l.pools.forget_h2(&flight.conn());
            Failure::Status(502, "upstream HTTP/2 connection failed")
        })?;
        // Streams that joined the connection while it was dialled may be more than its
        // SETTINGS, come meanwhile, allow: those over go elsewhere (once or twice) rather
        // than wait in `h2`'s queue behind the others, which may be long. (The caller sends
        // the stream with no wait after this: `h2` opens it under the limit checked here.)
        if flight.over_limit() && moves < 2 {
            moves += 1;
            continue;
        }
        break (sender, flight);
    };
    Ok((sender, flight))
}

/// A new HTTP/2 connection to `addr`, its driver spawned.
async fn dial(l: Rc<Listener>, addr: SocketAddr) -> Result<SendRequest<Bytes>, Failure> {
    let timeout = l.cfg.connect_timeout;
    let tcp = upstream::connect_retrying(&l.metrics, &l.health, addr, timeout)
        .await
        .map_err(|e| {
            l.metrics.connect_failed(e.kind);
            debug!(upstream = %addr, error = %e, "http2: upstream connect failed");
            Failure::Status(502, crate::metrics::CONNECT_FAILED)
        })?;
    upstream::keepalive_h2(&tcp, l.cfg.keepalive);
    pool::handshake_h2(addr, tcp, &l.http2, timeout, &l.metrics.dst_for(addr)).await
}
