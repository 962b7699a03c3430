//! One worker: a thread's runtime (io_uring, or epoll where io_uring is refused), its accept loops, and the control channel
//! it answers (metric snapshots, connection listings, drain) until it has drained.
//!
//! The only cross-thread traffic is the [`Control`] channel from the admin thread and the
//! supervisor, which never touches a connection.
//!
//! Not here: per-core state (`core`), the accept loop itself (`accept`), binding sockets and
//! starting threads (`server`).

use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use monoio::net::TcpListener;
use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::{info, warn};

use crate::accept;
use crate::config::Driver;
use crate::core::connections::{Query, Report};
use crate::core::Core;
use crate::metrics::CoreSnapshot;

/// Requests a worker answers from other threads.
#[derive(Debug)]
pub enum Control {
    /// Send a copy of this core's metrics.
    Snapshot(std::sync::mpsc::SyncSender<CoreSnapshot>),
    /// List this core's connections (open, or recently closed) for `GET /connections`.
    Connections(Query, std::sync::mpsc::SyncSender<Report>),
    /// Stop accepting, let open connections finish within the grace period, then exit.
    Drain,
}

/// A worker's monoio runtime: io_uring, or epoll (monoio's legacy driver) where io_uring is
/// refused. Both run the same futures; the data path asks [`crate::io::set_driver_mode`] to put
/// a socket in the mode the running driver expects.
pub type Runtime = monoio::FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Which driver a runtime runs on: the label of the `sidewire_runtime_driver` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl DriverKind {
    /// `io_uring` or `epoll`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Whether this process may create an io_uring ring at all: `Err` carries the kernel's refusal
/// (EPERM from a seccomp filter or `kernel.io_uring_disabled`, ENOSYS from an old kernel or a
/// filter that answers so, ENOMEM from `RLIMIT_MEMLOCK`). Creates and drops an 8-entry ring
/// on a thread of its own: tearing a ring down queues task work on the thread that made it,
/// which interrupts that thread's next blocking syscall with EINTR (a caller's socket read with
/// a timeout would fail).
pub fn probe_io_uring() -> io::Result<()> {
    std::thread::Builder::new()
        .name("sidewire-probe".into())
        .spawn(|| {
            // Creating a ring needs io_uring_setup; using it needs io_uring_enter, which a
            // seccomp profile can deny on its own (every I/O would then hang): an empty submit
            // enters the ring once.
            let ring = io_uring::IoUring::new(8)?;
            ring.submit().map(drop)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the io_uring probe panicked")))
}

/// Why io_uring was refused and what enables it, for the fallback's warning and the
/// `driver = "io_uring"` start-up error.
pub fn io_uring_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "a seccomp profile denies the io_uring syscalls (containerd 2.x and Docker 25+ \
             do by default; use deploy/seccomp/sidewire.json) or sysctl \
             kernel.io_uring_disabled is set"
        }
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring (5.11 or later needed) or a seccomp profile hides it \
             (use deploy/seccomp/sidewire.json)"
        }
        Some(libc::ENOMEM) => "RLIMIT_MEMLOCK is too low for the ring (raise `ulimit -l`)",
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "the process is out of file descriptors (raise `ulimit -n`)"
        }
        _ => "check kernel.io_uring_disabled, seccomp and RLIMIT_MEMLOCK",
    }
}

/// A runtime on `driver`; `DriverKind` says which one it got.
///
/// io_uring rings are set up single-issuer with deferred task work (Linux 6.1+): completions
/// are processed when the worker waits for events instead of interrupting every syscall it
/// makes. Measured with `loadtest churn` (connect, 64 B each way, close; 5 interleaved runs),
/// this cut proxy CPU per connection from a median of ~158 µs to ~113 µs, with no change for
/// bulk transfers. It is safe for monoio because each ring is only touched by its own thread
/// and the runtime parks (`io_uring_enter` with GETEVENTS) whenever it runs out of tasks. Older
/// kernels get cooperative task running (5.19+), then a plain ring.
///
/// `Driver::Auto` falls back to epoll when no ring can be created; `Driver::IoUring` returns the
/// ring's error instead. Errors: the io_uring error (`IoUring`), or epoll's (`Epoll`/`Auto`).
pub fn build_runtime(driver: Driver, entries: u32) -> io::Result<(Runtime, DriverKind)> {
    if driver != Driver::Epoll {
        match build_io_uring(entries) {
            Ok(rt) => return Ok((monoio::FusionRuntime::Uring(rt), DriverKind::IoUring)),
            Err(e) if driver == Driver::IoUring => return Err(e),
            Err(e) => tracing::debug!(error = %e, "io_uring refused; using epoll"),
        }
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok((monoio::FusionRuntime::Legacy(rt), DriverKind::Epoll))
}

fn build_io_uring(entries: u32) -> io::Result<monoio::Runtime<TimeDriver<IoUringDriver>>> {
    let mut last = None;
    for mode in ["defer-taskrun", "coop-taskrun", "plain"] {
        let mut urb = io_uring::IoUring::builder();
        match mode {
            "defer-taskrun" => {
                urb.setup_single_issuer().setup_defer_taskrun();
            }
            "coop-taskrun" => {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            _ => {}
        }
        match RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(urb)
            .with_entries(entries)
            .enable_timer()
            .build()
        {
            Ok(rt) => {
                tracing::debug!(mode, "io_uring ring ready");
                return Ok(rt);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("invariant: at least one ring mode was tried"))
}

/// The worker's main future: serve until drained, answering control requests throughout.
pub async fn run(
    core: Rc<Core>,
    sockets: Vec<std::net::TcpListener>,
    mut control: mpsc::UnboundedReceiver<Control>,
    grace: Duration,
    started: impl FnOnce(io::Result<()>),
) {
    let mut listening = Vec::with_capacity(sockets.len());
    for s in sockets {
        // The epoll driver tries `accept` before waiting for readiness: a blocking listener
        // would block the whole worker.
        if monoio::utils::is_legacy() {
            if let Err(e) = s.set_nonblocking(true) {
                return started(Err(e));
            }
        }
        match TcpListener::from_std(s) {
            Ok(l) => listening.push(l),
            Err(e) => return started(Err(e)),
        }
    }
    for (l, socket) in core.listeners.iter().zip(listening) {
        monoio::spawn(accept::accept_loop(core.clone(), l.clone(), socket));
    }
    started(Ok(()));

    // Serve control requests until told to drain (or the supervisor is gone).
    while let Some(msg) = control.next().await {
        match msg {
            Control::Snapshot(tx) => {
                let _ = tx.send(core.snapshot());
            }
            Control::Connections(q, tx) => {
                let _ = tx.send(core.connections_report(&q));
            }
            Control::Drain => break,
        }
    }
    core.start_draining();
    let open = core.open_connections();
    if open > 0 {
        info!(
            core = core.id,
            open,
            grace_ms = grace.as_millis() as u64,
            "draining"
        );
    }
    let mut drained = pin!(core.wait_drained());
    let mut deadline = pin!(monoio::time::sleep(grace));
    let mut control_open = true;
    loop {
        monoio::select! {
            _ = &mut drained => break,
            _ = &mut deadline => {
                warn!(core = core.id, open = core.open_connections(), "grace period over; closing open connections");
                break;
            }
            msg = control.next(), if control_open => match msg {
                Some(Control::Snapshot(tx)) => { let _ = tx.send(core.snapshot()); }
                Some(Control::Connections(q, tx)) => { let _ = tx.send(core.connections_report(&q)); }
                Some(Control::Drain) => {}
                None => control_open = false,
            },
        }
    }
}
