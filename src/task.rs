//! Spawning a connection's (or a stream's) task so that a panic in it ends that task only.
//!
//! monoio does not catch a panic in a task: it unwinds through the worker's runtime and ends
//! the worker thread, and with it every connection that worker carries (while its listening
//! socket may go on taking new ones that nothing serves). A panic in the proxy is a bug, but
//! it must cost one connection, not a core: [`spawn`] catches it, logs it at ERROR with what
//! the task was, counts it (`sidewire_task_panics_total`), and the worker carries on. The
//! task's own state unwinds as on any other early end (its guards count the connection closed,
//! give pooled connections back, release the pipes).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tracing::error;

/// Tasks that panicked since the process started (every worker).
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Spawns `task` on the current worker (it must run inside a monoio runtime) with its panics
/// contained: a panic ends `task` alone, logged with the task's type (which names the
/// function it runs, such as `sidewire::conn::serve::{{closure}}`) and counted in [`panics`].
/// The task is detached.
///
/// The spawned future is exactly `task`'s size ([`Contained`] is `task` and nothing else):
/// a wrapper with state of its own (`futures_util`'s `Map` around `CatchUnwind`) cost 128
/// bytes on 128-byte-aligned tasks such as an HTTP/2 stream's, and an `async` block around
/// `task` would hold a second copy of it.
pub fn spawn<F>(task: F)
where
    F: Future<Output = ()> + 'static,
{
    drop(monoio::spawn(Contained { task }));
}

pin_project_lite::pin_project! {
    /// `task`, each poll of it run under `catch_unwind`: a panic ends it as `Ready(())`,
    /// reported. (A future that panicked is not polled again: it is done.)
    struct Contained<F> {
        #[pin]
        task: F,
    }
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.project().task;
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(p) => p,
            Err(panic) => {
                report(std::any::type_name::<F>(), panic.as_ref());
                Poll::Ready(())
            }
        }
    }
}

/// Tasks that panicked since the process started, on every worker.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The panic's message: its `&str` or `String` payload, or empty.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn report(what: &str, panic: &(dyn Any + Send)) {
    PANICS.fetch_add(1, Ordering::Relaxed);
    error!(
        task = what,
        panic = %panic_message(panic),
        "a task panicked (a bug in sidewire; please report it): its connection closed, every other connection carries on"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_ends_alone_and_is_counted() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let before = panics();
        let after = rt.block_on(async {
            spawn(async { panic!("on purpose") });
            let (tx, rx) = futures_channel::oneshot::channel();
            spawn(async move {
                let _ = tx.send(7);
            });
            // The first task ran (and panicked) before the second: tasks run in spawn order.
            rx.await.unwrap()
        });
        assert_eq!(after, 7);
        assert!(panics() > before, "the panic was counted");
    }

    #[test]
    fn the_message_is_the_payload() {
        assert_eq!(panic_message(&"a str"), "a str");
        assert_eq!(panic_message(&String::from("a string")), "a string");
        assert_eq!(panic_message(&7u8), "");
    }
}
