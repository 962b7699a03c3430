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
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use h2::client::SendRequest;
use h2::RecvStream;
use http::{request, response, Request};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, IntoPollIo};
use std::os::fd::AsRawFd;
use tracing::debug;

use super::{pump, Failure, UpBody};
use crate::core::Listener;
use crate::upstream;

/// A pooled HTTP/2 upstream connection: the dial in progress, then its sender. Shared, so
/// streams that arrive together wait for one dial instead of each opening a connection.
pub type H2Conn = Shared<LocalBoxFuture<'static, Result<SendRequest<Bytes>, Failure>>>;

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
) -> Result<(response::Parts, UpBody), Failure> {
    // A pooled connection may have died since its last use: then dial once more (a fresh
    // dial that fails is not repeated).
    let pooled = l.h2_conn(addr).is_some();
    let mut sender = match ready(l, addr).await {
        Ok(s) => s,
        Err(_) if pooled => {
            l.h2_forget(addr);
            ready(l, addr).await?
        }
        Err(e) => return Err(e),
    };
    let eos = body.is_end_stream();
    let (response, send_body) = sender
        .send_request(Request::from_parts(parts, ()), eos)
        .map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: send_request failed");
            l.h2_forget(addr);
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
        UpBody::H2(Body {
            recv,
            _abort: abort,
        }),
    ))
}

/// Whether `addr` speaks HTTP/2 prior knowledge (`upstream_protocol = "auto"`), learned once
/// per endpoint and worker: a probe connection sends the client preface and an empty
/// SETTINGS frame; an h2c server answers with its SETTINGS frame (type 4), an HTTP/1 server
/// with an error response, a close, or nothing within the connect timeout. An endpoint that
/// cannot be reached is not learned (the exchange then reports the connect failure).
pub(super) async fn speaks_h2(l: &Listener, addr: SocketAddr) -> bool {
    if let Some(h2) = l.h2_learned(addr) {
        return h2;
    }
    let Ok(mut s) = upstream::connect(addr, l.cfg.connect_timeout).await else {
        return false;
    };
    if crate::sys::set_blocking(s.as_raw_fd()).is_err() {
        return false;
    }
    let mut probe = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    probe.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let answer = async {
        let (r, _) = s.write_all(probe).await;
        r?;
        let (r, buf) = s.read(Vec::with_capacity(64)).await;
        r.map(|_| buf)
    };
    let h2 = match monoio::time::timeout(l.cfg.connect_timeout, answer).await {
        Ok(Ok(buf)) => buf.len() >= 4 && buf[3] == 4,
        Ok(Err(_)) | Err(_) => false,
    };
    debug!(upstream = %addr, h2, "http2: learned the upstream protocol");
    l.h2_learn(addr, h2);
    h2
}

/// The pooled sender for `addr` (dialled if there is none), once it can take a stream.
async fn ready(l: &Rc<Listener>, addr: SocketAddr) -> Result<SendRequest<Bytes>, Failure> {
    let conn = match l.h2_conn(addr) {
        Some(c) => c,
        None => {
            let c = dial(l.clone(), addr).boxed_local().shared();
            l.h2_pool(addr, c.clone());
            c
        }
    };
    let sender = conn.await.inspect_err(|_| l.h2_forget(addr))?;
    sender.ready().await.map_err(|e| {
        debug!(upstream = %addr, error = %e, "http2: upstream connection not ready");
        Failure::Status(502, "upstream HTTP/2 connection failed")
    })
}

/// A new HTTP/2 connection to `addr`, its driver spawned.
async fn dial(l: Rc<Listener>, addr: SocketAddr) -> Result<SendRequest<Bytes>, Failure> {
    let tcp = upstream::connect(addr, l.cfg.connect_timeout)
        .await
        .map_err(|e| {
            l.metrics.connect_failed(e.kind);
            debug!(upstream = %addr, error = %e, "http2: upstream connect failed");
            Failure::Status(502, "upstream connect failed")
        })?;
    let io = tcp
        .into_poll_io()
        .map(|io| super::counted::Counted::new(io, l.metrics.dst.clone()))
        .map(super::coalesce::Coalesce::new)
        .map_err(|_| Failure::Status(502, "upstream socket error"))?;
    let c = &l.http2;
    let mut b = h2::client::Builder::new();
    b.initial_window_size(c.initial_stream_window)
        .initial_connection_window_size(c.initial_connection_window)
        .max_frame_size(c.max_frame_size)
        .max_header_list_size(c.max_header_list_size)
        .max_send_buffer_size(c.max_send_buffer_bytes)
        .max_local_error_reset_streams(Some(c.max_local_error_reset_streams));
    let (sender, conn) = monoio::time::timeout(l.cfg.connect_timeout, b.handshake::<_, Bytes>(io))
        .await
        .map_err(|_| Failure::Status(502, "upstream HTTP/2 handshake timed out"))?
        .map_err(|e| {
            debug!(upstream = %addr, error = %e, "http2: upstream handshake failed");
            Failure::Status(502, "upstream HTTP/2 handshake failed")
        })?;
    // Counted on the upstream side (`peer="dst"`) while its driver runs.
    let dst = l.metrics.dst.clone();
    dst.opened();
    monoio::spawn(async move {
        let ended = conn.await;
        if let Err(e) = &ended {
            debug!(upstream = %addr, error = %e, "http2: upstream connection ended");
        }
        dst.closed(ended.is_ok());
    });
    Ok(sender)
}
