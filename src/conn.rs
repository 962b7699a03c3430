//! The spine: one accepted connection from accept to close.
//!
//! accept → (detect: not yet, every connection is opaque) → upstream connect → splice both
//! ways → metrics. Each stage is a call into its own module; this file only sequences them
//! and records the outcome, so the data flow reads top to bottom.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;
use tracing::debug;

use crate::core::{Core, Listener};
use crate::{forward, upstream};

/// Drives one accepted client connection to its end.
pub async fn serve(core: Rc<Core>, listener: Rc<Listener>, client: TcpStream, peer: SocketAddr) {
    let _open = core.track();
    let t0 = Instant::now();
    let m = &listener.metrics;
    m.src.opened();
    // TCP_NODELAY is inherited from the listening socket (set in `server`), saving a
    // setsockopt per connection; `server` has a test that checks the inheritance.

    let ok = opaque(&core, &listener, &client, peer).await;

    m.src.closed(ok);
    m.record_duration(t0.elapsed());
}

/// Connects upstream and splices until both sides are done. Returns whether it ended cleanly.
async fn opaque(core: &Core, l: &Listener, client: &TcpStream, peer: SocketAddr) -> bool {
    let m = &l.metrics;
    let (addr, _lease) = l.balancer.pick();
    let upstream = match upstream::connect(addr, l.cfg.connect_timeout).await {
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
