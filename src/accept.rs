//! The accept loop of one listening socket on one worker: accept until the worker drains or a
//! reload removes the listener, spawn the spine ([`conn::serve`]) for each connection under
//! the listener generation in force, back off while accepting fails.

use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::KeepaliveConfig;
use crate::conn;
use crate::core::{AcceptSlot, Core};
use crate::task;

/// Accepts on `socket` until the worker drains or a reload removes the slot's listener,
/// spawning a task per connection under the slot's current listener generation. The socket
/// closes when the loop ends.
///
/// Accepted sockets inherit `TCP_NODELAY` and keepalive from the listening socket, which was
/// bound with keepalive `inherited` (see `server`): five setsockopts fewer per connection.
/// Only while a reload has changed the listener's keepalive does each accepted socket get it
/// set on its own.
pub async fn accept_loop(
    core: Rc<Core>,
    slot: Rc<AcceptSlot>,
    socket: TcpListener,
    inherited: Option<KeepaliveConfig>,
) {
    let mut stop = pin!(core.draining());
    let mut removed = pin!(slot.removed());
    let mut backoff = Backoff::default();
    loop {
        let accepted = monoio::select! {
            _ = &mut stop => break,
            _ = &mut removed => break,
            r = socket.accept() => r,
        };
        let listener = slot.listener();
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                if listener.cfg.keepalive != inherited {
                    // A reload changed keepalive on a kept listening socket: the connections
                    // it accepts carry the old settings, so each gets the new ones.
                    listener.set_keepalive(stream.as_raw_fd());
                }
                task::spawn(conn::serve(core.clone(), listener, stream, peer));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                debug!(listener = %listener.cfg.name, "accept: connection aborted by peer");
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the backlog keeps the clients; back off so the
                // worker does not spin while it cannot accept (a draining worker stops
                // waiting at once).
                listener.metrics.accept_failed(&e);
                let wait = backoff.next();
                if backoff.should_log() {
                    warn!(listener = %listener.cfg.name, core = core.id, error = %e, retry_ms = wait.as_millis() as u64, failures = backoff.failures, "accept failed; backing off");
                }
                monoio::select! {
                    _ = &mut stop => break,
                    _ = &mut removed => break,
                    _ = monoio::time::sleep(wait) => {}
                }
            }
        }
    }
    debug!(listener = %slot.listener().cfg.name, core = core.id, "stopped accepting");
}

/// First wait after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest wait between accepts while they keep failing: a second of backlog at worst once
/// descriptors free up, and one accept attempt a second while they do not.
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// Exponential backoff for a failing `accept`: 5 ms, doubled per consecutive failure, capped at
/// 1 s; reset by a successful accept.
#[derive(Debug, Default)]
struct Backoff {
    /// Consecutive failures.
    failures: u32,
}

impl Backoff {
    /// Counts a failure; the wait before the next attempt.
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        (BACKOFF_MIN * 2u32.pow(doublings)).min(BACKOFF_MAX)
    }

    /// Log the 1st failure of a run, then every 64th (at the cap, about a minute apart).
    fn should_log(&self) -> bool {
        self.failures % 64 == 1
    }

    /// An accept succeeded.
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        for _ in 0..1000 {
            assert_eq!(b.next(), BACKOFF_MAX);
        }
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
        assert!(b.should_log());
    }
}
