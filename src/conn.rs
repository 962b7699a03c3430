//! The spine: one accepted connection from accept to close.
//!
//! accept → choose endpoint → detect (or skip: opaque port, forced protocol) → one of:
//! HTTP/1 ([`crate::http1::proxy`]), HTTP/2 ([`crate::http2`]), each picking endpoints per
//! request, or opaque: upstream connect (unless detection already dialled it) → splice both
//! ways. Then metrics. HTTP with its proxy switched off (`enabled = false`) goes opaque.
//! Each stage is a call into its own module; this file only sequences them and records the
//! outcome, so the data flow reads top to bottom.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;
use tracing::debug;

use crate::config::{ListenerProtocol, UpstreamProtocol};
use crate::core::{Core, Listener};
use crate::detect::{self, DetectResult};
use crate::upstream::{self, ConnectError, UpConn};
use crate::{forward, http1, http2, sys};
use std::os::fd::AsRawFd;

/// Drives one accepted client connection to its end.
pub async fn serve(
    core: Rc<Core>,
    listener: Rc<Listener>,
    mut client: TcpStream,
    peer: SocketAddr,
) {
    let _open = core.track();
    let t0 = Instant::now();
    let l = &*listener;
    let m = &l.metrics;
    m.src.opened();
    // TCP_NODELAY is inherited from the listening socket (set in `server`), saving a
    // setsockopt per connection; `server` has a test that checks the inheritance.
    let (addr, _lease) = l.balancer.pick();

    // Detect, unless the destination or the listener says not to.
    let shortcut = match l.cfg.protocol {
        ListenerProtocol::Opaque => Some(DetectResult::OpaquePort),
        ListenerProtocol::Http1 => Some(DetectResult::Http1),
        ListenerProtocol::Http2 => Some(DetectResult::Http2),
        ListenerProtocol::Detect if l.opaque_ports.contains(&addr.port()) => {
            Some(DetectResult::OpaquePort)
        }
        ListenerProtocol::Detect => None,
    };
    let (result, early_upstream) = match shortcut {
        Some(r) => {
            m.detected(r, None);
            (Some(r), None)
        }
        None => match detect::detect(&core, l, &client, addr).await {
            Ok(d) => {
                if let Some(r) = d.result {
                    m.detected(r, Some(t0.elapsed()));
                    debug!(listener = %l.cfg.name, %peer, result = r.as_str(), sni = ?d.hello.as_ref().and_then(|h| h.sni.as_deref()), alpn = ?d.hello.as_ref().map(|h| &h.alpn), "detected");
                }
                if let Some(h) = &d.hello {
                    m.tls_hello(h.sni.is_some());
                }
                (d.result, d.upstream)
            }
            Err(e) => {
                debug!(listener = %l.cfg.name, %peer, error = %e, "client error during detection");
                m.src.closed(false);
                m.record_duration(t0.elapsed());
                return;
            }
        },
    };

    let ok = match result {
        // The client left without a word; an upstream dialled meanwhile is just dropped.
        Some(DetectResult::Closed) => true,
        Some(DetectResult::Http1) if l.http1.enabled => {
            // An upstream dialled during detection is not wasted: it joins the pool.
            if let Some(Ok(u)) = early_upstream {
                if sys::set_blocking(u.as_raw_fd()).is_ok() {
                    l.put_pooled(addr, UpConn::new(u, &m.dst));
                }
            }
            drop(_lease);
            http1::proxy::serve(&core, l, &mut client, peer).await
        }
        Some(DetectResult::Http2) if l.http2.enabled => {
            // Streams pick their own endpoints; an upstream dialled during detection is only
            // kept when it can serve them (the HTTP/1 pool).
            if let Some(Ok(u)) = early_upstream {
                if l.cfg.upstream_protocol == UpstreamProtocol::Http1
                    && sys::set_blocking(u.as_raw_fd()).is_ok()
                {
                    l.put_pooled(addr, UpConn::new(u, &m.dst));
                }
            }
            drop(_lease);
            http2::serve(&core, &listener, client, peer).await
        }
        _ => opaque(&core, l, &client, peer, addr, early_upstream).await,
    };

    m.src.closed(ok);
    m.record_duration(t0.elapsed());
}

/// Connects upstream (unless detection already did) and splices until both sides are done.
/// Returns whether it ended cleanly.
async fn opaque(
    core: &Core,
    l: &Listener,
    client: &TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
    early: Option<Result<TcpStream, ConnectError>>,
) -> bool {
    let m = &l.metrics;
    let dialled = match early {
        Some(r) => r,
        None => upstream::connect(addr, l.cfg.connect_timeout).await,
    };
    let upstream = match dialled {
        Ok(s) => s,
        Err(e) => {
            m.connect_failed(e.kind);
            debug!(listener = %l.cfg.name, %peer, error = %e, "closing client: upstream connect failed");
            return false;
        }
    };
    m.dst.opened();
    let result = forward::splice_both(core, m, client, &upstream).await;
    if let Err(e) = &result {
        debug!(listener = %l.cfg.name, %peer, upstream = %addr, error = %e, "connection reset");
    }
    m.dst.closed(result.is_ok());
    result.is_ok()
}
