//! h2 → h2: a stream is sent on the worker's pooled HTTP/2 (h2c prior knowledge) connection
//! to the chosen endpoint, dialled on first use and replaced when it dies. One connection per
//! endpoint and worker carries every stream, as many as the upstream's
//! SETTINGS_MAX_CONCURRENT_STREAMS allows (h2 queues the rest).
//!
//! The request body is pumped by its own task, so requests and responses stream at the same
//! time (gRPC bidirectional streaming). When the response side ends or fails first, the
//! request pump is aborted and the upstream stream reset.
//!
//! Not here: TLS to the upstream, connection-level keepalive pings.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::FutureExt;
use h2::client::SendRequest;
use h2::RecvStream;
use http::{request, response, Request};
use tracing::debug;

use super::body::pump;
use crate::core::Listener;
use crate::error::Failure;
use crate::upstream::{self, pool};

/// An HTTP/2 response body, with the guard that aborts the request pump when dropped.
pub(crate) struct Body {
    /// DATA frames and trailers from the upstream.
    pub recv: RecvStream,
    _abort: Option<oneshot::Sender<()>>,
}

/// Sends the request on the pooled connection to `addr` and waits up to `timeout` for the
/// response head.
pub(super) async fn exchange(
    l: &Rc<Listener>,
    addr: SocketAddr,
    parts: request::Parts,
    body: RecvStream,
    timeout: Duration,
) -> Result<(response::Parts, Body), Failure> {
    // A pooled connection may have died since its last use: then dial once more (a fresh
    // dial that fails is not repeated).
    let pooled = l.pools.h2(addr).is_some();
    let mut sender = match ready(l, addr).await {
        Ok(s) => s,
        Err(_) if pooled => {
            l.pools.forget_h2(addr);
            ready(l, addr).await?
        }
        Err(e) => return Err(e),
    };
    let eos = body.is_end_stream();
    let (response, send_body) = sender
        .send_request(Request::from_parts(parts, ()), eos)
        .map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: send_request failed");
            l.pools.forget_h2(addr);
            Failure::Status(502, "upstream HTTP/2 connection failed")
        })?;
    let abort = (!eos).then(|| {
        let (tx, rx) = oneshot::channel::<()>();
        monoio::spawn(async move {
            monoio::select! {
                _ = pump(body, send_body) => {}
                // Dropped guard: the response side is over, so stop and reset the upstream
                // stream (dropping `send_body` with the rest does that).
                _ = rx => {}
            }
        });
        tx
    });
    let resp = match monoio::time::timeout(timeout, response).await {
        Err(_) => return Err(Failure::Status(504, "upstream response timeout")),
        Ok(Err(e)) => {
            return Err(match e.reason() {
                Some(r) if e.is_reset() => Failure::Reset(r),
                _ => {
                    debug!(upstream = %addr, error = %e, "http2: upstream connection error");
                    Failure::Status(502, "upstream HTTP/2 connection failed")
                }
            })
        }
        Ok(Ok(r)) => r,
    };
    let (head, recv) = resp.into_parts();
    Ok((
        head,
        Body {
            recv,
            _abort: abort,
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
    let Some(h2) = pool::probe_h2(addr, l.cfg.connect_timeout).await else {
        return false;
    };
    debug!(upstream = %addr, h2, "http2: learned the upstream protocol");
    l.pools.learn(addr, h2);
    h2
}

/// The pooled sender for `addr` (dialled if there is none), once it can take a stream.
async fn ready(l: &Rc<Listener>, addr: SocketAddr) -> Result<SendRequest<Bytes>, Failure> {
    let conn = match l.pools.h2(addr) {
        Some(c) => c,
        None => {
            let c = dial(l.clone(), addr).boxed_local().shared();
            l.pools.put_h2(addr, c.clone());
            c
        }
    };
    let sender = conn.await.inspect_err(|_| l.pools.forget_h2(addr))?;
    sender.ready().await.map_err(|e| {
        debug!(upstream = %addr, error = %e, "http2: upstream connection not ready");
        Failure::Status(502, "upstream HTTP/2 connection failed")
    })
}

/// A new HTTP/2 connection to `addr`, its driver spawned.
async fn dial(l: Rc<Listener>, addr: SocketAddr) -> Result<SendRequest<Bytes>, Failure> {
    let timeout = l.cfg.connect_timeout;
    let tcp = upstream::connect(addr, timeout).await.map_err(|e| {
        l.metrics.connect_failed(e.kind);
        debug!(upstream = %addr, error = %e, "http2: upstream connect failed");
        Failure::Status(502, "upstream connect failed")
    })?;
    pool::handshake_h2(addr, tcp, &l.http2, timeout, &l.metrics.dst).await
}
