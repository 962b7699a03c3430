//! The accept loop of one listening socket on one worker: accept until the worker drains or a
//! reload removes the listener, spawn the spine ([`conn::serve`]) for each connection under
//! the listener generation in force, back off while accepting fails.

use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{debug, warn};

use crate::conn;
use crate::core::{AcceptSlot, Core};

/// Accepts on `socket` until the worker drains or a reload removes the slot's listener,
/// spawning a task per connection under the slot's current listener generation. The socket
/// closes when the loop ends.
pub async fn accept_loop(core: Rc<Core>, slot: Rc<AcceptSlot>, socket: TcpListener) {
    let mut stop = pin!(core.draining());
    let mut removed = pin!(slot.removed());
    loop {
        let accepted = monoio::select! {
            _ = &mut stop => break,
            _ = &mut removed => break,
            r = socket.accept() => r,
        };
        let listener = slot.listener();
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(core.clone(), listener, stream, peer));
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
    debug!(listener = %slot.listener().cfg.name, core = core.id, "stopped accepting");
}
