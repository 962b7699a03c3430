//! Idle bounds without a timer per connection.
//!
//! A `monoio::time::timeout` carries a 640-byte `Sleep` (monoio pads its waker and driver
//! state to 128-byte cache lines, for a multi-threaded driver it does not have), and every
//! future that holds one is 128-byte aligned: a keep-alive connection waiting for its next
//! request held more timer than state. Here a wait is a 40-byte slot in its core's [`Sweep`]
//! table, and one task per core (spawned on first use, parked with no timer while nothing
//! waits) wakes the waits whose bound passed.
//!
//! Precision: a wait ends between its bound and 1.125 × its bound (at least 1 ms) after it
//! began, like the splice path's idle watchdog: the sweeper wakes once per batch of deadlines
//! that fall within an eighth of a bound of each other, so 10,000 idle connections with the
//! same bound cost one scan of the table per eighth of the bound, not 10,000 timers.
//!
//! Per wait: one `Instant::now()`, a slot taken and given back (no allocation once the table
//! has grown), and a sweeper wake-up only when the new deadline comes before the sweeper's
//! next one.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::Elapsed;

/// One core's table of bounded waits (cheap to clone: one `Rc`).
#[derive(Debug, Clone, Default)]
pub struct Sweep(Rc<RefCell<Table>>);

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<u32>,
    /// Slots in state `Waiting`.
    waiting: usize,
    /// A sweeper task exists.
    running: bool,
    /// When the sweeper's sleep ends (`None`: parked until a wait is added).
    wake_at: Option<Instant>,
    /// The sweeper, to be woken to plan again (a wait came that ends before `wake_at`).
    sweeper: Option<Waker>,
    /// Set with a wake of `sweeper`: plan again now.
    kicked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Waiting,
    Expired,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    /// How late past `deadline` the wait may end (an eighth of its bound, at least 1 ms).
    slack: Duration,
    waker: Option<Waker>,
    state: State,
}

/// A bounded wait's slot, given back on drop.
#[derive(Debug)]
pub struct Ticket {
    table: Rc<RefCell<Table>>,
    slot: u32,
}

impl Sweep {
    /// An empty table; its sweeper task is spawned on the current monoio runtime at the
    /// first [`Sweep::ticket`].
    pub fn new() -> Sweep {
        Sweep::default()
    }

    /// A wait of `bound` from now: [`Ticket::poll_expired`] is ready from between `bound`
    /// and 1.125 × `bound` (at least 1 ms later) on. Must be called inside a monoio runtime
    /// (the first call spawns the sweeper). A bound over 2^30 s (about 34 years) is cut to it.
    pub fn ticket(&self, bound: Duration) -> Ticket {
        let mut t = self.0.borrow_mut();
        let slot = match t.free.pop() {
            Some(i) => i,
            None => {
                t.slots.push(Slot {
                    deadline: Instant::now(),
                    slack: Duration::ZERO,
                    waker: None,
                    state: State::Free,
                });
                (t.slots.len() - 1) as u32
            }
        };
        let deadline = arm(&mut t, slot, bound);
        if !t.running {
            t.running = true;
            monoio::spawn(sweeper(self.0.clone()));
        } else {
            kick_if_sooner(&mut t, deadline);
        }
        Ticket {
            table: self.0.clone(),
            slot,
        }
    }

    /// `f` (pinned by the caller), or `Err(Elapsed)` once `bound` passed (between `bound`
    /// and 1.125 × `bound`); `f` is polled first, so a result that is ready wins. The wait
    /// starts now, not at the first poll.
    pub fn within<'a, F: Future + ?Sized>(
        &self,
        bound: Duration,
        mut f: Pin<&'a mut F>,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> + 'a {
        let mut ticket = self.ticket(bound);
        poll_fn(move |cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            ticket.poll_expired(cx).map(|()| Err(Elapsed))
        })
    }

    /// Waits in the table now (the tests check that every wait left it).
    pub fn waiting(&self) -> usize {
        self.0.borrow().waiting
    }
}

/// The longest bound kept as given (2^30 s, about 34 years); longer ones are cut to it.
const NEVER: Duration = Duration::from_secs(1 << 30);

/// Sets `slot` waiting for `bound` from now; returns its deadline.
fn arm(t: &mut Table, slot: u32, bound: Duration) -> Instant {
    // Capped at about 34 years: never, in practice, and far from `Instant`'s and the timer
    // driver's limits.
    let bound = bound.min(NEVER);
    let now = Instant::now();
    let deadline = now + bound;
    let s = &mut t.slots[slot as usize];
    if s.state != State::Waiting {
        t.waiting += 1;
    }
    *s = Slot {
        deadline,
        slack: (bound / 8).max(Duration::from_millis(1)),
        waker: s.waker.take(),
        state: State::Waiting,
    };
    deadline
}

/// Wakes the sweeper to plan again when `deadline` comes before its next wake-up.
fn kick_if_sooner(t: &mut Table, deadline: Instant) {
    if t.wake_at.map_or(true, |w| deadline < w) {
        t.kicked = true;
        if let Some(w) = t.sweeper.take() {
            w.wake();
        }
    }
}

impl Ticket {
    /// Ready once the bound passed; registers `cx`'s waker otherwise.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut t = self.table.borrow_mut();
        let s = &mut t.slots[self.slot as usize];
        if s.state == State::Expired {
            return Poll::Ready(());
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Starts the wait again: `bound` from now.
    pub fn rearm(&mut self, bound: Duration) {
        let mut t = self.table.borrow_mut();
        let deadline = arm(&mut t, self.slot, bound);
        kick_if_sooner(&mut t, deadline);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.table.borrow_mut();
        let t = &mut *t;
        let s = &mut t.slots[self.slot as usize];
        if s.state == State::Waiting {
            t.waiting -= 1;
        }
        s.state = State::Free;
        s.waker = None;
        t.free.push(self.slot);
    }
}

/// The core's sweeper: expires the waits whose deadline passed, then sleeps until the
/// earliest deadline left plus its slack (so waits ending within that slack are expired in
/// one pass), or parks without a timer while nothing waits.
async fn sweeper(table: Rc<RefCell<Table>>) {
    loop {
        let wake_at = sweep_once(&mut table.borrow_mut(), Instant::now());
        let kicked = poll_fn(|cx| {
            let mut t = table.borrow_mut();
            if t.kicked {
                t.kicked = false;
                return Poll::Ready(());
            }
            t.sweeper = Some(cx.waker().clone());
            Poll::Pending
        });
        match wake_at {
            None => kicked.await,
            Some(at) => {
                let sleep = monoio::time::sleep_until(at.into());
                monoio::select! {
                    _ = sleep => {}
                    _ = kicked => {}
                }
            }
        }
    }
}

/// Expires every wait due at `now`; returns when the sweeper should look next (`None`:
/// nothing waits), recorded in `wake_at`.
fn sweep_once(t: &mut Table, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    let mut expired = 0;
    for s in t.slots.iter_mut().filter(|s| s.state == State::Waiting) {
        if s.deadline <= now {
            s.state = State::Expired;
            expired += 1;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        } else {
            let at = s.deadline + s.slack;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    t.waiting -= expired;
    t.kicked = false;
    t.wake_at = next;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn on_both_drivers(f: impl Fn() -> Pin<Box<dyn Future<Output = ()>>>) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f());
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(f());
        }
    }

    #[test]
    fn a_wait_ends_between_its_bound_and_an_eighth_later() {
        on_both_drivers(|| {
            Box::pin(async {
                let sweep = Sweep::new();
                let bound = Duration::from_millis(80);
                let t0 = Instant::now();
                let never = std::pin::pin!(std::future::pending::<()>());
                assert_eq!(sweep.within(bound, never).await, Err(Elapsed));
                let took = t0.elapsed();
                assert!(took >= bound, "ended after {took:?}, before its bound");
                // The upper edge is 90 ms; a loaded machine may run the sweeper late, so
                // only a gross overshoot fails.
                assert!(took < bound * 4, "ended after {took:?}");
                assert_eq!(sweep.waiting(), 0);
            })
        });
    }

    #[test]
    fn a_result_that_is_ready_wins_and_gives_the_slot_back() {
        on_both_drivers(|| {
            Box::pin(async {
                let sweep = Sweep::new();
                let ready = std::pin::pin!(async { 7 });
                assert_eq!(sweep.within(Duration::ZERO, ready).await, Ok(7));
                assert_eq!(sweep.waiting(), 0);
                let soon = std::pin::pin!(monoio::time::sleep(Duration::from_millis(5)));
                assert_eq!(
                    sweep.within(Duration::from_secs(60), soon).await,
                    Ok(()),
                    "a long bound does not hold up a short wait"
                );
                assert_eq!(sweep.waiting(), 0);
                assert_eq!(sweep.0.borrow().free.len(), sweep.0.borrow().slots.len());
            })
        });
    }

    /// A short bound added while the sweeper sleeps towards a long one is not held up by it;
    /// many waits with one bound expire together; the sweeper parks when nothing waits.
    #[test]
    fn waits_with_different_bounds_each_end_on_time() {
        on_both_drivers(|| {
            Box::pin(async {
                let sweep = Sweep::new();
                let long = sweep.ticket(Duration::from_secs(3600));
                let done = Rc::new(Cell::new(0));
                let mut tasks = Vec::new();
                for _ in 0..100 {
                    let (sweep, done) = (sweep.clone(), done.clone());
                    tasks.push(monoio::spawn(async move {
                        let never = std::pin::pin!(std::future::pending::<()>());
                        let r = sweep.within(Duration::from_millis(30), never).await;
                        assert_eq!(r, Err(Elapsed));
                        done.set(done.get() + 1);
                    }));
                }
                let t0 = Instant::now();
                for t in tasks {
                    t.await;
                }
                assert_eq!(done.get(), 100);
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "held up by the long bound"
                );
                assert_eq!(sweep.waiting(), 1, "the long wait is still there");
                drop(long);
                assert_eq!(sweep.waiting(), 0);
            })
        });
    }

    #[test]
    fn a_rearmed_ticket_waits_its_new_bound() {
        on_both_drivers(|| {
            Box::pin(async {
                let sweep = Sweep::new();
                let mut t = sweep.ticket(Duration::from_millis(10));
                poll_fn(|cx| t.poll_expired(cx)).await;
                t.rearm(Duration::from_millis(20));
                let t0 = Instant::now();
                poll_fn(|cx| t.poll_expired(cx)).await;
                assert!(t0.elapsed() >= Duration::from_millis(20));
                assert_eq!(sweep.waiting(), 0);
            })
        });
    }

    #[test]
    fn a_bound_too_large_for_instant_never_expires() {
        on_both_drivers(|| {
            Box::pin(async {
                let sweep = Sweep::new();
                let quick = std::pin::pin!(monoio::time::sleep(Duration::from_millis(5)));
                assert_eq!(sweep.within(Duration::MAX, quick).await, Ok(()));
            })
        });
    }
}
