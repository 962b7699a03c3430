//! The spine: one accepted connection from accept to close.
//!
//! accept → target (where the connection goes: an endpoint, or the original destination,
//! refusing loops) → detect (or skip: opaque port, declared port, forced protocol) → one of: HTTP/1 ([`crate::http1::proxy`]), HTTP/2 ([`crate::http2`]), each
//! picking endpoints per request, or opaque: upstream connect (unless detection already
//! dialled it) → splice both ways. Then metrics. HTTP with its proxy switched off
//! (`enabled = false`) goes opaque. Each stage is a call into its own module; this file only
//! sequences them and records the outcome, so the data flow reads top to bottom.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;
use tracing::debug;

use crate::core::connections::Tracked;
use crate::core::{Core, HttpDest, Listener};
use crate::detect::{
    self, DetectReason, DetectResult, DetectSettings, Detection, LinkerdDetect, Plan,
};
use crate::error::{ConnectError, Refusal, Side};
use crate::forward::Ended;
use crate::metrics::{Close, ListenerMetrics, Opened, PeerCounters, StreamTimeout};
use crate::upstream::{self, Target};
use crate::{forward, http1, http2};

/// Drives one accepted client connection to its end.
///
/// An `async` block rather than an `async fn`: the block keeps its arguments where it captured
/// them, where an `async fn` would also copy them into its body's locals (rustc keeps both for
/// the task's life). With detection and the HTTP proxies boxed, the task spawned per
/// connection holds little more than the stage it is in.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve(
    core: Rc<Core>,
    listener: Rc<Listener>,
    mut client: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    async move {
        let _open = core.track();
        let t0 = Instant::now();
        let l = &*listener;
        let m = &l.metrics;
        // Listed in `GET /connections` until it closes, then in the worker's recent-closes ring.
        // `client` outlives `tracked` (parameters drop after locals), so the table may read its
        // TCP counters until the end; HTTP/2, which owns the socket, calls `tracked.finish` itself.
        let tracked = core.connections.open(l.id, peer, client.as_raw_fd(), t0);
        // TCP_NODELAY (set in `server`) and keepalive (set by the accept loop: a client that
        // vanishes without FIN or RST is dropped by the kernel) are inherited from the
        // listening socket, saving five setsockopts per connection; tests check both.
        let mut target = if l.cfg.original_dst {
            match Target::original_dst(&client) {
                Ok(t) => t,
                Err((why, e)) => {
                    // Never proxy a connection to the proxy itself.
                    m.refused(why);
                    tracked.refused(why);
                    debug!(listener = %l.cfg.name, %peer, reason = why.as_str(), error = %e, "refused");
                    let src = m.src_for(l.cfg.listen);
                    src.opened();
                    src.closed(Close::Failed);
                    m.record_duration(t0.elapsed());
                    return;
                }
            }
        } else {
            // No endpoint (upstream names not resolved yet): detection still runs, so HTTP
            // requests get a 503 naming the reason; an opaque connection is refused after it.
            Target::pick(&l.balancer).unwrap_or_else(|| Target::placeholder(l.placeholder_addr()))
        };
        let addr = target.addr;
        tracked.destination(addr, target.original);
        // The client's series: by the destination it dialled (original destination, or this
        // listener's own address).
        let src = m.src_for(if target.original { addr } else { l.cfg.listen });
        src.opened();

        // Detect, unless the listener or the destination port says not to.
        let (result, early) = match l.ports.plan(addr.port()) {
            Plan::Skip(r, reason) => {
                m.detected(r, reason, None);
                tracked.skipped(r, reason);
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, result = r.as_str(), reason = reason.as_str(), "detection skipped");
                (r, None)
            }
            Plan::Detect { timeout } => {
                // Nothing to dial early without an endpoint, nor to one known to speak HTTP
                // (a server that answers HTTP does not speak first, and a request takes the
                // pooled connection anyway; review: 60-85 % of curl connections on a loaded
                // machine dialled early, nearly all closed unused).
                let dial_early = !target.is_placeholder() && !l.pools.speaks_http(addr);
                match Box::pin(detect_stage(
                    &core, l, &client, &tracked, peer, addr, dial_early, timeout, t0,
                ))
                .await
                {
                    Ok(decided) => decided,
                    Err(DetectStop::DialFailed(e)) => {
                        // The early dial failed and the client stayed silent: nothing to proxy to.
                        // The opaque path counts the failure and closes.
                        let how = Box::pin(opaque(
                            &core,
                            l,
                            &client,
                            &src,
                            peer,
                            &mut target,
                            Some(Err(e)),
                        ))
                        .await;
                        src.closed(how);
                        m.record_duration(t0.elapsed());
                        return;
                    }
                    Err(DetectStop::Client(how)) => {
                        src.closed(how);
                        m.record_duration(t0.elapsed());
                        return;
                    }
                }
            }
        };

        let how = match result {
            // The client left without a word; an upstream dialled meanwhile is just dropped.
            DetectResult::Closed => {
                match early {
                    Some(Ok(u)) => close_spare(m, addr, Some(u), None),
                    Some(Err(e)) => early_dial_failed(l, &e),
                    None => {}
                }
                Close::Clean
            }
            DetectResult::Http1 if l.http1.enabled => {
                early_for_http(l, addr, early, |u| l.pools.adopt_early_h1(m, addr, u));
                let dest = HttpDest::new(&target);
                target.release();
                Box::pin(http1::proxy::serve(
                    &core,
                    l,
                    &mut client,
                    &src,
                    peer,
                    &dest,
                    &tracked,
                ))
                .await
            }
            DetectResult::Http2 if l.http2.enabled => {
                early_for_http(l, addr, early, |u| {
                    http2::adopt_upstream(&listener, addr, u)
                });
                let dest = HttpDest::new(&target);
                target.release();
                Box::pin(http2::serve(
                    &core,
                    &listener,
                    client,
                    src.clone(),
                    peer,
                    dest,
                    &tracked,
                ))
                .await
            }
            // TLS, opaque bytes, a timeout, a server that spoke first, an opaque port, or HTTP
            // with its proxy off: forwarded untouched. Boxed like the HTTP stages, so the task
            // of an HTTP connection does not carry the splice state's room.
            _ => Box::pin(opaque(&core, l, &client, &src, peer, &mut target, early)).await,
        };

        src.closed(how);
        m.record_duration(t0.elapsed());
    }
}

/// Closes an upstream connection dialled during detection that nothing will use, counted
/// as the unused early dial it is and as an upstream connection opened and closed
/// (`tcp_open_total` / `tcp_close_total{peer="dst"}`: the upstream did accept it; review: 19
/// connections accepted, 2 counted). `reset`: the error the upstream's reset left on it, if
/// it was reset (its close is then a failure with that errno; review: counted `success`).
/// `u` is `None` when the dial itself ended in that reset ([`ConnectError::reset`]).
fn close_spare(
    m: &ListenerMetrics,
    addr: SocketAddr,
    u: Option<TcpStream>,
    reset: Option<io::Error>,
) {
    m.early_dial_unused();
    let mut open = Opened::new(&m.dst_for(addr));
    if let Some(e) = &reset {
        open.failed_with(e);
    }
    drop(u);
    drop(open);
}

/// An upstream dialled during detection, for an HTTP client: `adopt` pools it (the HTTP/1
/// pool, unless the pool already has an idle connection to that endpoint — the request takes
/// that one and a second would only idle out; review: clients with one connection per request
/// made 45 upstream connections for 100 requests — or the endpoint is at its bound; or the
/// HTTP/2 connection its streams use) and says whether it did, or gives it back to be closed
/// as a spare. A failed dial is counted. Taken by value, so no part of it waits in the
/// connection task's state for the connection's life.
fn early_for_http(
    l: &Listener,
    addr: SocketAddr,
    early: Early,
    adopt: impl FnOnce(TcpStream) -> Result<bool, TcpStream>,
) {
    let m = &l.metrics;
    match early {
        Some(Ok(u)) => match adopt(u) {
            Ok(true) => {}
            // Counted in `dst` as its pooled connection would have been.
            Ok(false) => m.early_dial_unused(),
            Err(u) => close_spare(m, addr, Some(u), None),
        },
        Some(Err(e)) => early_dial_failed(l, &e),
        None => {}
    }
}

/// An early dial that failed, for a verdict that does not forward over it (HTTP dials per
/// request; a client that left needs nothing): counted as the failed connect it was
/// (`tcp_connect_errors_total`, the endpoint's health), as the opaque path counts its own.
/// (Review: 134 refused early dials overtaken by HTTP requests were counted nowhere.)
/// A dial that ended in the upstream's reset after the handshake ([`ConnectError::reset`])
/// is counted as the early connection reset unused that it was, as when the reset is read
/// after the connect.
fn early_dial_failed(l: &Listener, e: &ConnectError) {
    if e.reset {
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        return close_spare(&l.metrics, e.addr, None, Some(reset));
    }
    l.metrics.connect_failed(e.kind);
    l.health.failed(e.addr);
    debug!(listener = %l.cfg.name, upstream = %e.addr, error = %e, "early dial failed; the client's requests dial their own");
}

/// An upstream dialled during detection, or its failure (`None`: none was dialled).
type Early = Option<Result<TcpStream, ConnectError>>;

/// Why a connection ends at detection.
enum DetectStop {
    /// The early dial failed and the client stayed silent.
    DialFailed(ConnectError),
    /// The client failed (how its connection closed).
    Client(Close),
}

/// Detection for a connection to `addr` within `timeout` (the upstream may be dialled
/// meanwhile), recorded in the metrics, the log and the connections table. Its own function,
/// boxed by the caller, so the connection's task does not keep detection's state.
#[allow(clippy::too_many_arguments)] // the spine's locals, lent for one stage
async fn detect_stage(
    core: &Core,
    l: &Listener,
    client: &TcpStream,
    tracked: &Tracked<'_>,
    peer: SocketAddr,
    addr: SocketAddr,
    dial_early: bool,
    timeout: std::time::Duration,
    t0: Instant,
) -> Result<(DetectResult, Early), DetectStop> {
    let m = &l.metrics;
    tracked.detecting(timeout);
    // (Keepalive is set where the connection is used: a spare closed unused costs nothing.)
    let dial = || {
        m.early_dial();
        upstream::connect(addr, l.cfg.connect_timeout)
    };
    let s = DetectSettings {
        timeout,
        eager_dial: l.detect.eager_dial && dial_early,
        ..l.detect
    };
    // An early connection the upstream closed before the client spoke.
    let spare = |u, reset| close_spare(m, addr, u, reset);
    // An early dial still connecting when the client spoke HTTP (or left): dropped unused.
    let abandoned = || m.early_dial_unused();
    // The early dial failed and then the client did too: counted all the same.
    let dial_failed = |e: ConnectError| early_dial_failed(l, &e);
    match detect::detect(
        client,
        &s,
        &core.peek_buf,
        dial,
        spare,
        abandoned,
        dial_failed,
    )
    .await
    {
        Ok(Detection::Decided {
            result,
            hello,
            early,
            seen,
        }) => {
            m.detected(result, DetectReason::Detected, Some(t0.elapsed()));
            debug!(listener = %l.cfg.name, %peer, upstream = %addr, result = result.as_str(), reason = DetectReason::Detected.as_str(), timeout_ms = timeout.as_millis() as u64, sni = ?hello.as_ref().and_then(|h| h.sni.as_deref()), alpn = ?hello.as_ref().map(|h| &h.alpn), "detected");
            if let Some(h) = &hello {
                m.tls_hello(h.sni.is_some());
            }
            tracked.detected(result, seen, hello);
            Ok((result, early))
        }
        Ok(Detection::DialFailed(e)) => {
            tracked.dial_failed();
            m.detect_ended(LinkerdDetect::ReadTimeout, t0.elapsed());
            Err(DetectStop::DialFailed(e))
        }
        Err(f) => {
            tracked.client_error(f.seen);
            debug!(listener = %l.cfg.name, %peer, error = %f.error, "client error during detection");
            m.detect_ended(LinkerdDetect::Error, t0.elapsed());
            Err(DetectStop::Client(Close::of_error(&f.error)))
        }
    }
}

/// Connects upstream (unless detection already did) and splices until both sides are done.
/// A failed connect (detection's early dial included) is tried on another of the listener's
/// endpoints, the connection moving there; with none, a timed-out one once more.
/// Returns how the client connection ended (an upstream connect failure is a failure).
///
/// The dial is boxed before the stream's future exists, and the rest is an `async` block (see
/// [`serve`]): an idle stream's state then holds neither the early upstream's slot nor second
/// copies of the arguments.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn opaque<'a>(
    core: &'a Core,
    l: &'a Listener,
    client: &'a TcpStream,
    src: &'a PeerCounters,
    peer: SocketAddr,
    target: &'a mut Target,
    early: Early,
) -> impl Future<Output = Close> + 'a {
    // Boxed: the connect's state is not kept for the stream's life.
    let dialling = Box::pin(dial(l, peer, target, early));
    async move {
        let m = &l.metrics;
        let Some((addr, upstream)) = dialling.await else {
            return Close::Failed;
        };
        let dst = m.dst_for(addr);
        let mut open = Opened::new(&dst);
        let counters = forward::Counters { src, dst: &dst };
        let limits = forward::IdleLimits {
            idle: l.cfg.idle_timeout,
            half_closed: l.cfg.half_close_timeout,
        };
        let e = match forward::splice_both(&core.pipes, counters, client, &upstream, limits).await {
            Ok(Ended::Eof) => return Close::Clean,
            Ok(ended) => {
                // Cut by the proxy (both sockets reset): neither peer failed, nor did it finish.
                let which = match ended {
                    Ended::HalfCloseTimeout => StreamTimeout::HalfClose,
                    _ => StreamTimeout::Idle,
                };
                m.stream_timeout(which);
                debug!(listener = %l.cfg.name, %peer, upstream = %addr, timeout = which.as_str(), "stream timed out; both sides reset");
                open.failed();
                return Close::Failed;
            }
            Err(e) => e,
        };
        debug!(listener = %l.cfg.name, %peer, upstream = %addr, error = %e, "connection reset");
        // The side whose socket failed gets its errno; the other was reset by the proxy.
        match e.side {
            Some(Side::Upstream) => {
                open.failed_with(&e.error);
                Close::Failed
            }
            Some(Side::Client) => {
                open.failed();
                Close::of_error(&e.error)
            }
            None => {
                open.failed();
                Close::Failed
            }
        }
    }
}

/// The opaque path's upstream connection: detection's early one, or a new one (a failed
/// connect tried once more, see [`upstream::connect_any`]), with keepalive on. `None` after a
/// final failure (counted and logged).
async fn dial(
    l: &Listener,
    peer: SocketAddr,
    target: &mut Target,
    early: Early,
) -> Option<(SocketAddr, TcpStream)> {
    let m = &l.metrics;
    // Accepted without an endpoint: one may have resolved meanwhile; else refused.
    if target.is_placeholder() && !target.retry_pick(&l.balancer) {
        m.refused(Refusal::NoEndpoints);
        debug!(listener = %l.cfg.name, %peer, names = ?l.cfg.upstream_names, "closing client: no upstream endpoint (names not resolved)");
        return None;
    }
    let timeout = l.cfg.connect_timeout;
    let first = target.addr;
    let other = || target.other(&l.balancer);
    let dialled = match early {
        Some(Ok(s)) => {
            l.health.connected(first);
            Ok((first, s))
        }
        // Reset by the upstream after the handshake, as it could have been while the client
        // was silent: counted so, and a fresh connection dialled, as then.
        Some(Err(e)) if e.reset => {
            early_dial_failed(l, &e);
            upstream::connect_any(m, &l.health, first, timeout, other).await
        }
        Some(Err(e)) => upstream::second_try(m, &l.health, e, timeout, other).await,
        None => upstream::connect_any(m, &l.health, first, timeout, other).await,
    };
    match dialled {
        Ok((addr, s)) => {
            upstream::keepalive(&s, l.cfg.keepalive);
            Some((addr, s))
        }
        Err(e) => {
            m.connect_failed(e.kind);
            debug!(listener = %l.cfg.name, %peer, error = %e, "closing client: upstream connect failed");
            None
        }
    }
}
