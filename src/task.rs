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
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tracing::error;

/// Tasks that panicked since the process started (every worker).
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Spawns `task` on the current worker (it must run inside a monoio runtime) with its panics
/// contained: a panic ends `task` alone, logged with `what` (a static description, such as
/// `"connection"`) and counted in [`panics`]. The task is detached; its output is dropped.
///
/// The wrapper adds no state of its own beside `task` (`CatchUnwind` and `Map` are plain
/// structs around it, unlike an `async` block, which would hold a second copy), so the
/// spawned task costs what `task` does.
pub fn spawn<F>(what: &'static str, task: F)
where
    F: Future + 'static,
    F::Output: 'static,
{
    let contained = AssertUnwindSafe(task).catch_unwind().map(move |r| {
        if let Err(panic) = r {
            report(what, panic.as_ref());
        }
    });
    drop(monoio::spawn(contained));
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

fn report(what: &'static str, panic: &(dyn Any + Send)) {
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
            spawn("test", async { panic!("on purpose") });
            let (tx, rx) = futures_channel::oneshot::channel();
            spawn("test", async move {
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
