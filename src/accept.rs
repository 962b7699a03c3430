//! The accept loop of one listener on one worker: accept until the worker drains, spawn the
//! spine ([`conn::serve`]) for each connection, back off while accepting fails.

use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{debug, warn};

use crate::conn;
use crate::core::{Core, Listener};

/// Accepts on one listener until `stop` fires, spawning a task per connection.
pub async fn accept_loop(core: Rc<Core>, listener: Rc<Listener>, socket: TcpListener) {
    let mut stop = pin!(core.draining());
    loop {
        let accepted = monoio::select! {
            _ = &mut stop => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(core.clone(), listener.clone(), stream, peer));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                debug!(listener = %listener.cfg.name, "accept: connection aborted by peer");
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the backlog keeps the clients; back off so the
                // worker does not spin while it cannot accept.
                warn!(listener = %listener.cfg.name, core = core.id, error = %e, "accept failed; retrying in 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!(listener = %listener.cfg.name, core = core.id, "stopped accepting");
}
