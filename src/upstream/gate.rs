//! Per-endpoint bounds on one worker's HTTP/1 upstream connections: how many may be dialling
//! at once and how many may be open (dialling, busy or idle in the pool). A request beyond a
//! bound waits its turn (first come, first served); when its turn comes it first takes an
//! idle pooled connection if one was returned meanwhile, and dials only if none was.
//!
//! Why: every concurrent HTTP/2 stream sent to an HTTP/1 upstream needs a connection of its
//! own. Forty streams arriving together used to open forty connections at once; an upstream
//! with a small listen backlog (Python's `http.server`: 5) drops the SYNs that overflow its
//! accept queue, and the kernel retransmits them only after 1 s (issue 16).
//!
//! Per worker and single-threaded: `Cell`s and a queue of wakers, no locks or atomics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// One endpoint's bounds and counts on one worker.
#[derive(Debug)]
pub struct Gate {
    /// At most this many connections open (0: no bound).
    max_open: u32,
    /// At most this many connects in progress (0: no bound).
    max_dialling: u32,
    /// Connections open or being dialled (each holds an [`OpenSlot`]).
    open: Cell<u32>,
    /// Connects in progress (each holds a [`DialSlot`]).
    dialling: Cell<u32>,
    /// Waiting requests, first come first: (ticket, waker once parked).
    queue: RefCell<VecDeque<(u64, Option<Waker>)>>,
    /// The next ticket number.
    next: Cell<u64>,
}

/// Counts one connection as open on its endpoint until dropped.
#[derive(Debug)]
pub struct OpenSlot(Rc<Gate>);

/// Counts one connect as in progress on its endpoint until dropped.
#[derive(Debug)]
pub struct DialSlot(Rc<Gate>);

/// What a request got when its turn came.
#[derive(Debug)]
pub enum Granted<T> {
    /// An idle pooled connection (returned meanwhile).
    Take(T),
    /// Room to dial a new connection: the slots count it until dropped.
    Dial(OpenSlot, DialSlot),
}

impl Gate {
    /// A gate allowing `max_open` connections and `max_dialling` connects in progress (0: no
    /// bound).
    pub fn new(max_open: u32, max_dialling: u32) -> Rc<Gate> {
        Rc::new(Gate {
            max_open,
            max_dialling,
            open: Cell::new(0),
            dialling: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            next: Cell::new(0),
        })
    }

    /// Connections open or being dialled now.
    pub fn open(&self) -> u32 {
        self.open.get()
    }

    /// Connects in progress now.
    pub fn dialling(&self) -> u32 {
        self.dialling.get()
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Whether as many connections are open as the bound allows (never without a bound).
    pub fn at_bound(&self) -> bool {
        self.max_open != 0 && self.open.get() >= self.max_open
    }

    /// Whether no request waits for its turn here (one that comes now may take an idle
    /// connection at once, as [`Gate::turn`] would let it).
    pub fn nobody_waits(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    fn has_room(&self) -> bool {
        (self.max_open == 0 || self.open.get() < self.max_open)
            && (self.max_dialling == 0 || self.dialling.get() < self.max_dialling)
    }

    /// Wakes the first waiting request: something it may use came free (a connection closed
    /// or was pooled, a connect ended).
    pub fn notify(&self) {
        let waker = self
            .queue
            .borrow_mut()
            .front_mut()
            .and_then(|(_, w)| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Counts a connection that came from elsewhere (dialled during detection) as open,
    /// whatever the bound.
    pub fn count_open(self: &Rc<Self>) -> OpenSlot {
        self.open.set(self.open.get() + 1);
        OpenSlot(self.clone())
    }

    fn claim(self: &Rc<Self>) -> (OpenSlot, DialSlot) {
        self.dialling.set(self.dialling.get() + 1);
        (self.count_open(), DialSlot(self.clone()))
    }

    /// Waits for this request's turn, then takes what `take` finds (an idle pooled
    /// connection) or, failing that, room to dial.
    pub async fn turn<T>(self: &Rc<Self>, mut take: impl FnMut() -> Option<T>) -> Granted<T> {
        let mut ticket = Ticket {
            gate: self.clone(),
            id: None,
        };
        poll_fn(|cx| {
            if ticket.is_turn() {
                if let Some(t) = take() {
                    ticket.leave();
                    return Poll::Ready(Granted::Take(t));
                }
                if self.has_room() {
                    let slots = self.claim();
                    ticket.leave();
                    return Poll::Ready(Granted::Dial(slots.0, slots.1));
                }
            }
            ticket.park(cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// A request's place in a gate's queue; leaving it (or dropping it: the request was
/// cancelled) passes the turn on.
struct Ticket {
    gate: Rc<Gate>,
    /// `None` until queued.
    id: Option<u64>,
}

impl Ticket {
    /// Whether this request may try now: it is first in the queue, or nobody waits.
    fn is_turn(&self) -> bool {
        let q = self.gate.queue.borrow();
        match self.id {
            None => q.is_empty(),
            Some(id) => q.front().is_some_and(|(f, _)| *f == id),
        }
    }

    fn park(&mut self, waker: &Waker) {
        let mut q = self.gate.queue.borrow_mut();
        match self.id {
            None => {
                let id = self.gate.next.get();
                self.gate.next.set(id + 1);
                q.push_back((id, Some(waker.clone())));
                self.id = Some(id);
            }
            Some(id) => {
                if let Some((_, w)) = q.iter_mut().find(|(i, _)| *i == id) {
                    *w = Some(waker.clone());
                }
            }
        }
    }

    /// Leaves the queue; the next request gets its try (there may be room for it too).
    fn leave(&mut self) {
        if let Some(id) = self.id.take() {
            self.gate.queue.borrow_mut().retain(|(i, _)| *i != id);
        }
        self.gate.notify();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.leave();
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.notify();
    }
}

impl Drop for DialSlot {
    fn drop(&mut self) {
        self.0.dialling.set(self.0.dialling.get().saturating_sub(1));
        self.0.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn requests_beyond_the_bound_wait_in_order_and_take_returned_connections() {
        let gate = Gate::new(2, 0);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let pool: RefCell<Vec<&str>> = RefCell::new(Vec::new());
        let take = || pool.borrow_mut().pop();

        let mut a = pin!(gate.turn(take));
        let Poll::Ready(Granted::Dial(open_a, dial_a)) = a.as_mut().poll(&mut cx) else {
            panic!("room for the first")
        };
        let mut b = pin!(gate.turn(take));
        let Poll::Ready(Granted::Dial(open_b, dial_b)) = b.as_mut().poll(&mut cx) else {
            panic!("room for the second")
        };
        assert_eq!((gate.open(), gate.dialling()), (2, 2));
        drop((dial_a, dial_b));
        // The third and fourth wait: two connections are open.
        let mut c = pin!(gate.turn(take));
        let mut d = pin!(gate.turn(take));
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert!(d.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate.waiting(), 2);
        // A connection goes back to the pool: the first waiter is woken and takes it.
        let before = wakes.0.load(Ordering::Relaxed);
        pool.borrow_mut().push("idle");
        gate.notify();
        assert_eq!(wakes.0.load(Ordering::Relaxed), before + 1);
        // Not the fourth's turn, though it is polled first.
        assert!(d.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(
            c.as_mut().poll(&mut cx),
            Poll::Ready(Granted::Take("idle"))
        ));
        // A connection closes: the fourth may dial.
        drop(open_a);
        assert!(matches!(
            d.as_mut().poll(&mut cx),
            Poll::Ready(Granted::Dial(..))
        ));
        assert_eq!(gate.waiting(), 0);
        drop(open_b);
    }

    #[test]
    fn a_cancelled_waiter_passes_its_turn_on() {
        let gate = Gate::new(0, 1);
        let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let none = || None::<()>;
        let mut a = pin!(gate.turn(none));
        let Poll::Ready(Granted::Dial(open, dial)) = a.as_mut().poll(&mut cx) else {
            panic!("room to dial")
        };
        let mut b = Box::pin(gate.turn(none));
        let mut c = pin!(gate.turn(none));
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        drop(b);
        drop(dial);
        assert!(matches!(
            c.as_mut().poll(&mut cx),
            Poll::Ready(Granted::Dial(..))
        ));
        assert_eq!(gate.waiting(), 0);
        drop(open);
        assert_eq!(
            (gate.open(), gate.dialling()),
            (0, 0),
            "every slot released"
        );
    }
}
