//! The writing side's pause bound: whether the reader of one body keeps acknowledging what
//! the proxy writes to it, counted across all of the body's writes and waits.
//!
//! A reader that stops is found from TCP's own counters, never from the length of one write:
//! the kernel takes writes into a send buffer it grows up to `net.ipv4.tcp_wmem`'s maximum
//! (4 MB by default), so a body that comes slower than it can be queued (an event stream, a
//! trickling upload) sees every write succeed for a long time after its reader stopped, and a
//! slow but steady reader can keep one write waiting for seconds. [`AckWatch`] looks at the
//! socket (`TCP_INFO`'s `tcpi_bytes_acked` and `SIOCOUTQ`) at most once per quarter of the
//! bound, after a write or while a wait (for room to write, or for the body's next bytes)
//! goes on, and says the reader stalled once bytes stayed unacknowledged with none taken for
//! the bound: between 1 and 1.25 times the bound after the last acknowledgement.

use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::sys;

/// The reader stalled: bytes written to it stayed unacknowledged, with no byte taken, for
/// the pause bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled;

/// How many times per bound an [`AckWatch`] looks at its socket.
const LOOKS: u32 = 4;

/// Tracks whether the reader on one TCP socket keeps acknowledging a body's bytes (see the
/// module docs). One per body and direction; without a socket or a bound it never stalls.
#[derive(Debug)]
pub struct AckWatch {
    /// The reader's socket; `None` when there is none, or `TCP_INFO` says nothing for it
    /// (then each wait is bounded by the bound as a whole).
    fd: Option<RawFd>,
    /// The bound; `None`: none.
    pause: Option<Duration>,
    /// `tcpi_bytes_acked` at the last look.
    acked: Option<u64>,
    /// Whether bytes were unacknowledged at the last look.
    owed: bool,
    /// Whether bytes were written since the last look.
    wrote: bool,
    /// When the reader was last seen taking bytes, or with nothing unacknowledged (or was
    /// last excused, [`AckWatch::excuse`]).
    since: Instant,
    /// When a look last saw the reader acknowledge more than at the look before.
    progressed: Option<Instant>,
    /// When the next look is due.
    next: Instant,
}

impl AckWatch {
    /// A watch on `fd` (the reader's TCP socket, if it has one) for a body whose writes may
    /// go `pause` without an acknowledgement (`None`: no bound). Looks at nothing yet: the
    /// first look is due a quarter of `pause` from now, so a short body costs no syscall.
    pub fn new(fd: Option<RawFd>, pause: Option<Duration>) -> AckWatch {
        let now = Instant::now();
        let mut w = AckWatch {
            fd,
            pause,
            acked: None,
            owed: false,
            wrote: false,
            since: now,
            progressed: None,
            next: now,
        };
        w.next = w.after(now);
        w
    }

    /// When the look after one at `now` is due: a quarter of the bound later, at least 1 ms
    /// (without a bound, never: `now` is never looked at).
    fn after(&self, now: Instant) -> Instant {
        let every = self.pause.map_or(Duration::ZERO, |p| {
            (p / LOOKS).max(Duration::from_millis(1))
        });
        now.checked_add(every).unwrap_or(now)
    }

    /// Notes bytes handed to the kernel for the reader (a write that did not wait) and looks
    /// at the socket if a look is due: `Err(Stalled)` when the bound has passed since the
    /// reader last took a byte while bytes stayed unacknowledged. Costs a clock read per call
    /// and two syscalls per look.
    pub fn wrote(&mut self) -> Result<(), Stalled> {
        if self.pause.is_none() || self.fd.is_none() {
            return Ok(());
        }
        self.wrote = true;
        let now = Instant::now();
        if now < self.next {
            return Ok(());
        }
        self.look(now)
    }

    /// Looks at the socket: the reader took bytes since the last look, or nothing was
    /// unacknowledged then, restarts the bound.
    fn look(&mut self, now: Instant) -> Result<(), Stalled> {
        self.next = self.after(now);
        let Some(fd) = self.fd else {
            return Ok(());
        };
        let Some(acked) = sys::tcp_bytes_acked(fd) else {
            // Not TCP, or a kernel that does not say: each wait is bounded on its own.
            self.fd = None;
            return Ok(());
        };
        let unacked = sys::tcp_unacked_bytes(fd).unwrap_or(0);
        let more = self.acked.is_some_and(|a| acked > a);
        if more {
            self.progressed = Some(now);
        }
        if !self.owed || self.acked.is_none() || more {
            self.since = now;
        }
        self.acked = Some(acked);
        self.owed = unacked > 0;
        self.wrote = false;
        match self.pause {
            Some(p) if self.owed && now.duration_since(self.since) >= p => Err(Stalled),
            _ => Ok(()),
        }
    }

    /// For a caller that waits on its own (several directions at once, say): looks at the
    /// socket if bytes may be unacknowledged and a look is due, with
    /// [`AckWatch::wrote`]'s rule. Costs a clock read; two syscalls per look.
    pub fn due(&mut self) -> Result<(), Stalled> {
        if !self.looking() {
            return Ok(());
        }
        let now = Instant::now();
        if now < self.next {
            return Ok(());
        }
        self.look(now)
    }

    /// Restarts the stall bound from now: the time the reader took nothing so far is not held
    /// against it (for a reader the proxy itself holds back). Looks go on as before, and so
    /// does [`AckWatch::progressed`].
    pub fn excuse(&mut self) {
        self.since = Instant::now();
    }

    /// When a look last saw the reader acknowledge more bytes than the look before (`None`:
    /// not yet): a caller that bounds its own waits can count that as progress.
    pub fn progressed(&self) -> Option<Instant> {
        self.progressed
    }

    /// When [`AckWatch::due`] must next be called (a wait should end by then), or `None`
    /// while nothing is to be looked at (no bound, no socket, nothing unacknowledged).
    pub fn next_look(&self) -> Option<Instant> {
        self.looking().then_some(self.next)
    }

    /// Whether a wait must look at the socket meanwhile: bytes may be unacknowledged.
    fn looking(&self) -> bool {
        self.pause.is_some() && self.fd.is_some() && (self.owed || self.wrote)
    }

    /// `f`, a wait for the reader to take bytes (a write, or a wait for writability),
    /// bounded by the reader's progress: `None` when it stalled ([`AckWatch::wrote`]'s rule),
    /// looking every quarter of the bound meanwhile. A slow but steady reader keeps one wait
    /// going however long it takes. Without a bound this is `f`; without a socket `TCP_INFO`
    /// can tell about, `f` bounded by the whole bound.
    pub async fn within<F: Future>(&mut self, mut f: Pin<&mut F>) -> Option<F::Output> {
        // (`f` pinned by the caller: the wait is kept once, not again in this future.)
        let Some(pause) = self.pause else {
            return Some(f.await);
        };
        if self.fd.is_none() {
            return monoio::time::timeout(pause, f).await.ok();
        }
        // (A wait for the reader: bytes are unacknowledged.)
        self.wrote = true;
        loop {
            let wait = self.next.saturating_duration_since(Instant::now());
            if let Ok(v) = monoio::time::timeout(wait, f.as_mut()).await {
                return Some(v);
            }
            if self.look(Instant::now()).is_err() {
                return None;
            }
            if self.fd.is_none() {
                return monoio::time::timeout(pause, f).await.ok();
            }
        }
    }

    /// `f`, a wait for the body's next bytes from its source, bounded by `pause` of its own
    /// (`Ok(None)` when that passed; `None`: no bound), while the reader of what was already
    /// written is watched: `Err(Stalled)` when it stalled meanwhile. Looks at the socket only
    /// while bytes may be unacknowledged, on the same timer as the wait's own bound.
    pub async fn reading<F: Future>(
        &mut self,
        mut f: Pin<&mut F>,
        pause: Option<Duration>,
    ) -> Result<Option<F::Output>, Stalled> {
        // (A bound too far to add is none.)
        let deadline = pause.and_then(|p| Instant::now().checked_add(p));
        loop {
            let until = match (self.looking(), deadline) {
                (true, Some(d)) => d.min(self.next),
                (true, None) => self.next,
                (false, Some(d)) => d,
                (false, None) => return Ok(Some(f.await)),
            };
            let wait = until.saturating_duration_since(Instant::now());
            if let Ok(v) = monoio::time::timeout(wait, f.as_mut()).await {
                return Ok(Some(v));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if self.looking() && now >= self.next {
                self.look(now)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bound_or_a_socket_nothing_stalls() {
        let mut w = AckWatch::new(None, Some(Duration::from_millis(1)));
        for _ in 0..1000 {
            assert_eq!(w.wrote(), Ok(()));
        }
        let mut w = AckWatch::new(Some(0), None);
        assert_eq!(w.wrote(), Ok(()));
        assert!(!w.looking());
        // A bound too long to add to the clock is not a panic.
        let mut w = AckWatch::new(Some(0), Some(Duration::MAX));
        assert_eq!(w.wrote(), Ok(()));
    }

    #[test]
    fn a_watch_with_nothing_written_has_no_look_due() {
        // (A bound long enough that no look falls due during the test: fd 0 is no socket.)
        let hour = Duration::from_secs(3600);
        let before = Instant::now();
        let mut w = AckWatch::new(Some(0), Some(hour));
        assert_eq!(w.next_look(), None);
        assert_eq!(w.due(), Ok(()));
        // Once written to, a look is due a quarter of the bound later.
        assert_eq!(w.wrote(), Ok(()));
        let next = w.next_look().expect("a look is due after a write");
        assert!(next >= before + hour / 4);
        assert!(next <= Instant::now() + hour / 4);
        // Excused, the looks go on.
        w.excuse();
        assert_eq!(w.next_look(), Some(next));
        assert_eq!(w.progressed(), None);
        // Without a bound, never.
        let mut w = AckWatch::new(Some(0), None);
        assert_eq!(w.wrote(), Ok(()));
        assert_eq!(w.next_look(), None);
    }
}
