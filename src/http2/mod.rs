//! HTTP/2 proxying (prior knowledge, h2c, as gRPC and meshed clients use it). The client
//! connection is terminated with the proxy's own codec ([`crate::h2wire::server`], driven by
//! [`conn`]: no buffer held while idle), and each stream is proxied as one request: routed by
//! `:authority` (or Host) and path with the listener's routes, balanced per request by the
//! same P2C/peak-EWMA endpoint sets as HTTP/1, then either multiplexed on a pooled HTTP/2
//! connection to the endpoint (`to_h2`, `upstream_protocol = "http2"`, on the `h2` crate's
//! client) or translated to HTTP/1.1 on the HTTP/1 pool (`to_h1`).
//!
//! Bodies stream with flow control end to end: a stream's receive window is released only as
//! the other side takes the bytes, so a slow reader throttles its own stream and no other.
//! Trailers pass through h2 → h2. gRPC responses are classified by `grpc-status`, `grpc-timeout`
//! is the upstream deadline, and the proxy's own errors to gRPC clients are gRPC-shaped
//! (HTTP 200, `grpc-status` UNAVAILABLE or DEADLINE_EXCEEDED) ([`grpc`]).
//!
//! Limits come from `[http2]`: concurrent streams, header list size (which also bounds
//! CONTINUATION frames), windows, frame size, and the reset-flood bounds. A peer that breaks
//! them gets a GOAWAY, the connection closes and `http2_connection_errors_total` counts it.
//! Draining sends GOAWAY and lets open streams finish.
//!
//! Not here: TLS termination, h2c upgrade from HTTP/1.1 (the HTTP/1 proxy strips it), server
//! push, CONNECT (answered 501), HTTP/1 response trailers (dropped on h2 → h1).

mod body;
pub mod check;
mod conn;
pub mod grpc;
mod to_h1;
mod to_h2;

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Instant;

use h2::Reason;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use monoio::net::TcpStream;
use tracing::debug;

use self::body::{pump_within, send_chunk_within, unless_reset, Stop};
use self::conn::{Conn, Control, End, RecvBody, Respond, SendBody};
use crate::config::RouteConfig;
use crate::config::UpstreamProtocol;
use crate::core::connections::Tracked;
use crate::core::{Core, HttpDest, Listener, NO_ENDPOINTS};
use crate::error::Failure;
use crate::logging::access;
use crate::metrics::{Close, ErrorLabel, PeerCounters, Protocol};
use crate::task;

/// A response body on its way from the upstream.
pub(crate) enum UpBody {
    /// From an HTTP/2 upstream (trailers included).
    H2(to_h2::Body),
    /// From an HTTP/1.1 upstream, decoded from its framing. Boxed: it holds the upstream
    /// connection (about 230 bytes), which HTTP/2 streams' futures need not carry.
    H1(Box<to_h1::Body>),
}

impl UpBody {
    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::H2(b) => h2::RecvStream::is_end_stream(&b.recv),
            UpBody::H1(b) => b.is_end_stream(),
        }
    }
}

/// Puts `tcp`, an upstream connection to `addr` dialled during detection, where this
/// listener's HTTP/2 streams can use it: the HTTP/2 pool (`upstream_protocol` "client",
/// "http2", or "auto" once `addr` is known to speak h2c) or the HTTP/1 pool ("http1", or
/// "auto" once known not to; not when that pool already holds an idle connection to `addr`).
/// Returns `Ok(true)` when it was taken; `Ok(false)` when it was taken and closed at once
/// (the HTTP/1 pool was full: counted in `dst` as a pooled connection); `Err` with the
/// connection, untouched, when it is not wanted.
pub fn adopt_upstream(
    l: &Rc<Listener>,
    addr: SocketAddr,
    tcp: TcpStream,
) -> Result<bool, TcpStream> {
    let h2 = match l.cfg.upstream_protocol {
        UpstreamProtocol::Client | UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Auto => match l.pools.learned(addr) {
            Some(h2) => h2,
            None => return Err(tcp),
        },
    };
    if h2 {
        return to_h2::adopt(l, addr, tcp).map(|()| true);
    }
    // As for HTTP/1 clients (not next to an idle pooled connection, within the bound).
    l.pools.adopt_early_h1(&l.metrics, addr, tcp)
}

/// A client connection's streams, for its idle bound.
#[derive(Debug, Default)]
struct Streams {
    /// Streams open now.
    open: Cell<usize>,
    /// Bumped when a stream starts and when one ends.
    activity: Cell<u64>,
}

impl Streams {
    /// A stream starts: the returned guard counts its end when dropped (when its task ends,
    /// however it ends).
    fn started(self: &Rc<Self>) -> StreamOpen {
        self.open.set(self.open.get() + 1);
        self.activity.set(self.activity.get() + 1);
        StreamOpen(self.clone())
    }
}

/// One open stream of a connection's [`Streams`]; dropping it counts the stream's end.
struct StreamOpen(Rc<Streams>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.activity.set(self.0.activity.get() + 1);
    }
}

/// Serves one HTTP/2 client connection (counted in `src`) until it closes; `dest` says where
/// streams that match no route go. Returns how it ended.
///
/// `tracked` counts the streams, and gets the socket's final counters just before the socket
/// closes (here, not in the spine: this function owns it).
pub async fn serve(
    core: &Core,
    l: &Rc<Listener>,
    client: TcpStream,
    src: Rc<PeerCounters>,
    peer: SocketAddr,
    dest: HttpDest,
    tracked: &Tracked<'_>,
) -> Close {
    // Dropped last: reports the final counters, then closes.
    let client = tracked.closing(client);
    let fd = client.socket.as_raw_fd();
    let c = &l.http2;
    let conn = Conn::new(
        crate::h2wire::server::Config {
            max_concurrent_streams: c.max_concurrent_streams,
            max_header_list_size: c.max_header_list_size,
            initial_stream_window: c.initial_stream_window,
            initial_connection_window: c.initial_connection_window,
            max_frame_size: c.max_frame_size,
            max_pending_accept_reset_streams: c.max_pending_accept_reset_streams,
            max_local_error_reset_streams: c.max_local_error_reset_streams,
        },
        c.max_send_buffer_bytes,
    );
    // Only a drain sends GOAWAY: after a reload, new streams are routed under the
    // listener's newest settings instead (see `core`).
    let mut draining = pin!(core.draining());
    // Idle: no stream open, and none started or ended, during a whole `idle_timeout` tick
    // (so an idle connection closes between one and 2.25 bounds after its last stream ended,
    // however long that stream lasted).
    let streams = Rc::new(Streams::default());
    let mut activity_at_tick = 0u64;
    // A slot in the core's sweep rather than a timer of its own (see `io::sweep`): a tick
    // ends between one and 1.125 `idle_timeout`s after it began.
    let mut tick = core.sweep.ticket(l.http2.idle_timeout);
    let control = |cx: &mut std::task::Context<'_>| {
        if draining.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Control::GoAway);
        }
        if tick.poll_expired(cx).is_ready() {
            let activity = streams.activity.get();
            if streams.open.get() == 0 && activity == activity_at_tick {
                debug!(listener = %l.cfg.name, %peer, "http2: idle connection; GOAWAY");
                return std::task::Poll::Ready(Control::GoAway);
            }
            activity_at_tick = activity;
            tick.rearm(l.http2.idle_timeout);
            // (Polled again at once: the rearmed tick registers its waker.)
            if tick.poll_expired(cx).is_ready() {
                return std::task::Poll::Ready(Control::Serve);
            }
        }
        std::task::Poll::Pending
    };
    let request = |req: Request<RecvBody>, respond: Respond| {
        tracked.request();
        let open = streams.started();
        // Under the listener's newest settings (a reload may have replaced them).
        // `stream` itself is the task, not an `async` block around it: the block
        // would hold the stream's future beside its own copies of the arguments,
        // and spawning copies a task's whole future.
        task::spawn(stream(l.latest(), req, respond, peer, dest.clone(), open));
    };
    let end = conn
        .run(
            &client.socket,
            fd,
            &src,
            l.http1.header_timeout,
            l.http1.stream_idle_timeout,
            control,
            request,
        )
        .await;
    match end {
        End::Clean => Close::Clean,
        End::Protocol(e) => {
            // A protocol violation or flood: GOAWAY was sent.
            debug!(listener = %l.cfg.name, %peer, error = %e, "http2: connection error");
            l.metrics.h2_error();
            Close::Failed
        }
        End::Io(e) => {
            debug!(listener = %l.cfg.name, %peer, error = %e, "http2: connection ended");
            Close::of_io(&e, e.raw_os_error())
        }
    }
}

/// Proxies one stream: route, pick an endpoint, exchange with the upstream, stream the
/// response back, record metrics. `_open` counts the stream as open until the task ends.
async fn stream(
    l: Rc<Listener>,
    req: Request<RecvBody>,
    mut respond: Respond,
    peer: SocketAddr,
    dest: HttpDest,
    _open: StreamOpen,
) {
    let (mut parts, body) = req.into_parts();
    let has_authority = check::fill_authority(&mut parts);
    let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let route = RouteConfig::select(&l.cfg.routes, host, path);
    let logged = access::Request::capture(parts.method.as_str(), host, path);
    let logged = logged.as_ref();
    let is_grpc = grpc::is_grpc(&parts.headers);
    let t0 = Instant::now();
    if let Some(why) = check::bad_target(&parts) {
        // RFC 9113 §8.1.1: a stream error PROTOCOL_ERROR, and never forwarded.
        debug!(listener = %l.cfg.name, %peer, why, "http2: malformed request");
        let m = dest.metrics(&l, route, Protocol::Http2, None, host);
        m.request();
        respond.send_reset(Reason::PROTOCOL_ERROR);
        m.completed(
            0,
            None,
            Some(ErrorLabel::H2(u32::from(Reason::PROTOCOL_ERROR))),
        );
        return;
    }
    if !has_authority {
        // Neither `:authority` nor a usable Host: nowhere to route it, nothing to build the
        // upstream's `:authority` from (RFC 9113 §8.3.1); 400, as HTTP/1.1 without Host gets.
        let m = dest.metrics(&l, route, Protocol::Http2, None, host);
        m.request();
        let reason = "request without :authority or Host";
        let (sent, grpc) = proxy_error(
            &mut respond,
            is_grpc,
            400,
            reason,
            l.http1.stream_idle_timeout,
        )
        .await;
        m.first_byte(sent, std::time::Duration::ZERO);
        m.completed(sent, grpc, None);
        let bytes = error_body_len(is_grpc, reason);
        access_log(&l, peer, logged, sent, t0, bytes, None);
        return;
    }
    if parts.method == Method::CONNECT {
        let m = dest.metrics(&l, route, Protocol::Http2, None, host);
        m.request();
        let reason = "CONNECT over HTTP/2 is not supported";
        let (sent, grpc) = proxy_error(
            &mut respond,
            is_grpc,
            501,
            reason,
            l.http1.stream_idle_timeout,
        )
        .await;
        m.first_byte(sent, std::time::Duration::ZERO);
        m.completed(sent, grpc, Some(ErrorLabel::Unsupported));
        let bytes = error_body_len(is_grpc, reason);
        access_log(&l, peer, logged, sent, t0, bytes, None);
        return;
    }
    // The request counts in the series of the endpoint its connection goes to, once that is
    // known (a failed connect is tried on another endpoint); in `first`'s when none is.
    let Some((first, mut inflight)) = dest.pick(&l, route) else {
        // The set is empty: its upstream names have not resolved (yet).
        debug!(listener = %l.cfg.name, %peer, names = ?l.names(route), "http2: no upstream endpoint: 503");
        let m = dest.metrics(&l, route, Protocol::Http2, None, host);
        m.request();
        let (sent, grpc) = proxy_error(
            &mut respond,
            is_grpc,
            503,
            NO_ENDPOINTS,
            l.http1.stream_idle_timeout,
        )
        .await;
        m.first_byte(sent, std::time::Duration::ZERO);
        m.completed(sent, grpc, Some(ErrorLabel::Connect));
        let bytes = error_body_len(is_grpc, NO_ENDPOINTS);
        access_log(&l, peer, logged, sent, t0, bytes, None);
        return;
    };
    let authority = l.metrics.authority(host);
    let deadline = grpc::timeout(&parts.headers);
    let timeout = deadline.unwrap_or(l.http2.response_timeout);
    let at = Cell::new(None);
    let connected = |a: SocketAddr| {
        dest.metrics_of(&l, route, Protocol::Http2, Some(a), authority)
            .request();
        at.set(Some(a));
    };

    // Until the response head: the exchange, unless the client resets the stream first. The
    // exchange may relay a `100 Continue` meanwhile (each use of the cell is one poll or one
    // call: never held across an await).
    let respond_cell = std::cell::RefCell::new(respond);
    let continue_client = || {
        let informational = Response::builder()
            .status(http::StatusCode::CONTINUE)
            .body(())
            .expect("a status and no fields");
        if let Err(e) = respond_cell.borrow_mut().send_informational(informational) {
            debug!(listener = %l.cfg.name, %peer, error = %e, "http2: 100 Continue not relayed");
        }
    };
    let mut client_reset = None;
    let outcome = {
        // Boxed: the task holds only the variant in use (spawning copies the task's state).
        let h2 = match l.cfg.upstream_protocol {
            UpstreamProtocol::Client | UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Auto => to_h2::speaks_h2(&l, first).await,
        };
        let exchange: Pin<Box<dyn Future<Output = Result<_, Failure>> + '_>> = if h2 {
            Box::pin(async {
                let other = || dest.other(&l, route, first);
                let (head, body) =
                    to_h2::exchange(&l, first, parts, body, timeout, other, connected).await?;
                Ok((head, UpBody::H2(body)))
            })
        } else {
            Box::pin(async {
                let other = || dest.other(&l, route, first);
                let (head, body) = to_h1::exchange(
                    &l,
                    first,
                    parts,
                    body,
                    timeout,
                    other,
                    connected,
                    &continue_client,
                )
                .await?;
                Ok((head, UpBody::H1(Box::new(body))))
            })
        };
        // A gRPC deadline (`grpc-timeout`) bounds the whole exchange, from the request's
        // start: connect, request body and response head, on either upstream protocol.
        let exchange = async {
            match deadline {
                None => exchange.await,
                Some(d) => monoio::time::timeout(d, exchange)
                    .await
                    .unwrap_or(Err(Failure::Status(504, "upstream response timeout"))),
            }
        };
        let reset = poll_fn(|cx| respond_cell.borrow_mut().poll_reset(cx));
        monoio::select! {
            r = exchange => Some(r),
            r = reset => {
                client_reset = Some(r.unwrap_or(Reason::CANCEL));
                None
            }
        }
    };
    let mut respond = respond_cell.into_inner();
    let addr = at.get().unwrap_or(first);
    let m = dest.metrics_of(&l, route, Protocol::Http2, Some(addr), authority);
    if at.get().is_none() {
        m.request();
    }
    let (head, up_body) = match outcome {
        None => {
            // Counted as the client saw it, as when the reset reaches the exchange first
            // (`error="h2(REASON)"`, no status).
            let reason = client_reset.unwrap_or(Reason::CANCEL);
            debug!(listener = %l.cfg.name, %peer, ?reason, "http2: client reset the stream before the response");
            m.completed(0, None, Some(ErrorLabel::H2(u32::from(reason))));
            return;
        }
        Some(Err(Failure::Reset(reason))) => {
            debug!(listener = %l.cfg.name, %peer, upstream = %addr, ?reason, "http2: upstream reset the stream");
            respond.send_reset(reason);
            m.completed(0, None, Some(ErrorLabel::H2(u32::from(reason))));
            return;
        }
        Some(Err(Failure::Status(code, reason))) => {
            debug!(listener = %l.cfg.name, %peer, upstream = %addr, code, reason, "http2: proxy error");
            let (sent, grpc) = proxy_error(
                &mut respond,
                is_grpc,
                code,
                reason,
                l.http1.stream_idle_timeout,
            )
            .await;
            m.first_byte(sent, t0.elapsed());
            m.completed(sent, grpc, ErrorLabel::of_answer(code, reason));
            let bytes = error_body_len(is_grpc, reason);
            access_log(&l, peer, logged, sent, t0, bytes, Some(addr));
            return;
        }
        Some(Ok(r)) => r,
    };
    if addr != first {
        // Its latency feeds the estimate of the endpoint that answered.
        inflight = dest.claim(&l, route, addr);
    }
    inflight.done(t0.elapsed());
    let code = head.status.as_u16();
    // A trailers-only gRPC response carries its status in the headers.
    let head_grpc = if is_grpc {
        grpc::status(&head.headers)
    } else {
        None
    };
    let eos = up_body.is_end_stream();
    let send = match respond.send_response(Response::from_parts(head, ()), eos) {
        Ok(s) => s,
        Err(e) => {
            debug!(listener = %l.cfg.name, %peer, error = %e, "http2: response head not sent");
            return;
        }
    };
    if eos {
        if let UpBody::H1(b) = up_body {
            b.finish(&l).await;
        }
        m.first_byte(code, t0.elapsed());
        m.completed(code, head_grpc, None);
        access_log(&l, peer, logged, code, t0, 0, Some(addr));
        return;
    }
    // The latency ends with the first DATA frame (or the end of the stream).
    let first = || m.first_byte(code, t0.elapsed());
    let body_bytes = Cell::new(0);
    match Box::pin(forward_response(&l, up_body, send, &first, &body_bytes)).await {
        Ok(trailer_grpc) => m.completed(
            code,
            if is_grpc {
                trailer_grpc.or(head_grpc)
            } else {
                None
            },
            None,
        ),
        Err(e) => {
            debug!(listener = %l.cfg.name, %peer, upstream = %addr, error = %e, "http2: response body failed");
            // The client saw a reset stream, as Linkerd labels it: `error="h2(REASON)"`.
            let reason = body::reset_reason(&e);
            m.completed(code, None, Some(ErrorLabel::H2(u32::from(reason))));
        }
    }
    access_log(&l, peer, logged, code, t0, body_bytes.get(), Some(addr));
}

/// The one way the HTTP/2 proxy writes an access log line (see [`access::Entry`]).
fn access_log(
    l: &Listener,
    peer: SocketAddr,
    request: Option<&access::Request>,
    status: u16,
    started: Instant,
    bytes: u64,
    upstream: Option<SocketAddr>,
) {
    access::log(&access::Entry {
        listener: &l.cfg.name,
        direction: l.cfg.direction.as_str(),
        protocol: Protocol::Http2.as_str(),
        client: peer,
        request,
        status,
        started,
        bytes,
        upstream,
    });
}

/// Streams the upstream's response body (and trailers) to the client, adding the DATA bytes
/// sent to `sent`. Returns the `grpc-status` of the trailers, if any.
///
/// A client that takes none of a chunk (grants no flow-control window for it, RFC 9113
/// §5.2) for `http1.stream_idle_timeout_ms` gets the stream reset with `CANCEL`
/// (§8.1: the proxy no longer needs the stream), as an HTTP/1 client that stops reading is
/// cut: otherwise a client that stops reading would hold the stream, and the upstream's
/// connection or stream, for ever.
async fn forward_response(
    l: &Listener,
    body: UpBody,
    mut send: SendBody,
    first: &dyn Fn(),
    sent: &Cell<u64>,
) -> Result<Option<u8>, h2::Error> {
    let client_within = l.http1.stream_idle_timeout;
    match body {
        UpBody::H2(b) => pump_within(b.recv, send, first, sent, Some(client_within))
            .await
            .map_err(|e| match e {
                Stop::Stream(e) => e,
                Stop::Stalled => client_stalled(l),
            }),
        UpBody::H1(mut b) => {
            let mut first = Some(first);
            loop {
                // A client that resets its stream meanwhile ends the wait (and, as `b` is
                // dropped, the upstream connection) at once.
                let next = match unless_reset(&mut send, b.next()).await {
                    Ok(next) => next,
                    Err(e) => {
                        debug!(listener = %l.cfg.name, error = %e, "http2: the client reset its stream while the HTTP/1 upstream's response body paused");
                        return Err(e);
                    }
                };
                if let (Ok(_), Some(f)) = (&next, first.take()) {
                    f();
                }
                match next {
                    Ok(Some(chunk)) => {
                        let eos = b.is_end_stream();
                        let n = chunk.len() as u64;
                        match send_chunk_within(&mut send, chunk, eos, Some(client_within)).await {
                            Ok(()) => {}
                            Err(Stop::Stream(e)) => return Err(e),
                            Err(Stop::Stalled) => {
                                send.send_reset(Reason::CANCEL);
                                return Err(client_stalled(l));
                            }
                        }
                        sent.set(sent.get() + n);
                        if eos {
                            b.finish(l).await;
                            return Ok(None);
                        }
                    }
                    Ok(None) => {
                        send.send_data(bytes::Bytes::new(), true)?;
                        b.finish(l).await;
                        return Ok(None);
                    }
                    Err(e) => {
                        debug!(error = %e, "http2: HTTP/1 upstream body failed");
                        send.send_reset(Reason::INTERNAL_ERROR);
                        return Err(Reason::INTERNAL_ERROR.into());
                    }
                }
            }
        }
    }
}

/// The error of a response stream whose client took none of a chunk within
/// `stream_idle_timeout_ms` (the stream was reset with `CANCEL`).
fn client_stalled(l: &Listener) -> h2::Error {
    debug!(
        listener = %l.cfg.name,
        "http2: the client took no response byte within stream_idle_timeout_ms; stream reset (CANCEL)"
    );
    Reason::CANCEL.into()
}

/// Body bytes of [`proxy_error`]'s answer: `reason` and a newline, none for gRPC.
fn error_body_len(is_grpc: bool, reason: &str) -> u64 {
    if is_grpc {
        0
    } else {
        reason.len() as u64 + 1
    }
}

/// A response the proxy makes itself, with `sidewire-error: <reason>`. gRPC clients get
/// HTTP 200 with the matching `grpc-status` (trailers-only), others `code` and a text body.
/// Returns the HTTP status and gRPC status sent, for the metrics.
async fn proxy_error(
    respond: &mut Respond,
    is_grpc: bool,
    code: u16,
    reason: &'static str,
    within: std::time::Duration,
) -> (u16, Option<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert("sidewire-error", HeaderValue::from_static(reason));
    let grpc = is_grpc.then(|| grpc::status_for(code));
    let mut resp = Response::new(());
    if let Some(g) = grpc {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(u16::from(g)));
        headers.insert("grpc-message", HeaderValue::from_static(reason));
    } else {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        *resp.status_mut() =
            http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    }
    *resp.headers_mut() = headers;
    match respond.send_response(resp, is_grpc) {
        Ok(mut s) if !is_grpc => {
            // As the client's window allows; a client that grants none for `within`
            // (`stream_idle_timeout_ms`) gets the stream reset (CANCEL), as a relayed body's
            // does, rather than holding it (and its connection's idle bound) for ever.
            let body = bytes::Bytes::from(format!("{reason}\n"));
            if let Err(Stop::Stalled) = send_chunk_within(&mut s, body, true, Some(within)).await {
                s.send_reset(Reason::CANCEL);
            }
        }
        _ => {}
    }
    (if is_grpc { 200 } else { code }, grpc)
}
