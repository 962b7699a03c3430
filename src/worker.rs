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
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use monoio::net::TcpListener;
use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::{info, warn};

use crate::accept;
use crate::config::{Config, Driver, UpstreamName};
use crate::core::connections::{Query, Report};
use crate::core::{Core, ReloadStats, SocketPlan};
use crate::metrics::CoreSnapshot;

/// Requests a worker answers from other threads.
#[derive(Debug)]
pub enum Control {
    /// Send a copy of this core's metrics.
    Snapshot(std::sync::mpsc::SyncSender<CoreSnapshot>),
    /// List this core's connections (open, or recently closed) for `GET /connections`.
    Connections(Query, std::sync::mpsc::SyncSender<Report>),
    /// Apply a reloaded configuration (see [`Core::reload`]): `plan[i]` says which socket
    /// listener *i* accepts on, `sockets` holds this worker's socket for each
    /// [`SocketPlan::New`] in order. Answers with what changed.
    Reload {
        /// The new configuration (listen addresses bound).
        cfg: Arc<Config>,
        /// Per new listener: keep an old socket, or take the next of `sockets`.
        plan: Vec<SocketPlan>,
        /// This worker's newly bound sockets.
        sockets: Vec<std::net::TcpListener>,
        /// Where the worker says it is done.
        done: std::sync::mpsc::SyncSender<Result<ReloadStats, String>>,
    },
    /// An upstream name resolved to a new set of addresses (from the `dns` thread): the
    /// endpoint sets that name it take them (see [`Core::apply_dns`]).
    Dns {
        /// The name.
        name: UpstreamName,
        /// Its addresses, sorted, each once, never empty.
        addrs: Arc<[std::net::SocketAddr]>,
    },
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
/// The drain's grace period is `runtime.shutdown_grace_ms` of the configuration in force
/// when the drain begins (a reload may have changed it).
pub async fn run(
    core: Rc<Core>,
    sockets: Vec<std::net::TcpListener>,
    mut control: mpsc::UnboundedReceiver<Control>,
    started: impl FnOnce(io::Result<()>),
) {
    let listening = match monoio_listeners(sockets) {
        Ok(l) => l,
        Err(e) => return started(Err(e)),
    };
    for (slot, socket) in core.accept_slots().into_iter().zip(listening) {
        // Bound by `server` with this listener's keepalive.
        let inherited = slot.listener().cfg.keepalive;
        monoio::spawn(accept::accept_loop(core.clone(), slot, socket, inherited));
    }
    started(Ok(()));
    monoio::spawn(release_freed_memory());

    // Serve control requests until told to drain (or the supervisor is gone).
    while let Some(msg) = control.next().await {
        match msg {
            Control::Snapshot(tx) => {
                let _ = tx.send(core.snapshot());
            }
            Control::Connections(q, tx) => answer_connections(&core, q, tx),
            Control::Reload {
                cfg,
                plan,
                sockets,
                done,
            } => {
                let _ = done.send(reload(&core, &cfg, &plan, sockets));
            }
            Control::Dns { name, addrs } => core.apply_dns(name, addrs),
            Control::Drain => break,
        }
    }
    core.start_draining();
    let grace = core.config().runtime.shutdown_grace;
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
                Some(Control::Connections(q, tx)) => answer_connections(&core, q, tx),
                Some(Control::Reload { done, .. }) => {
                    let _ = done.send(Err("the worker is draining".into()));
                }
                Some(Control::Dns { name, addrs }) => core.apply_dns(name, addrs),
                Some(Control::Drain) => {}
                None => control_open = false,
            },
        }
    }
}

/// Answers a `/connections` query on a task of its own: the report yields between chunks of
/// rows, and control requests keep being served meanwhile.
fn answer_connections(core: &Rc<Core>, q: Query, tx: std::sync::mpsc::SyncSender<Report>) {
    let core = core.clone();
    monoio::spawn(async move {
        let _ = tx.send(core.connections_report(&q).await);
    });
}

/// Sockets bound on another thread, ready for this worker's driver. The epoll driver tries
/// `accept` before waiting for readiness: a blocking listener would block the whole worker.
fn monoio_listeners(sockets: Vec<std::net::TcpListener>) -> io::Result<Vec<TcpListener>> {
    sockets
        .into_iter()
        .map(|s| {
            if monoio::utils::is_legacy() {
                s.set_nonblocking(true)?;
            }
            TcpListener::from_std(s)
        })
        .collect()
}

/// Applies a reload on this worker: new sockets first (a failure changes nothing), then the
/// listeners, then an accept loop per new socket.
fn reload(
    core: &Rc<Core>,
    cfg: &Arc<Config>,
    plan: &[SocketPlan],
    sockets: Vec<std::net::TcpListener>,
) -> Result<ReloadStats, String> {
    let listening = monoio_listeners(sockets).map_err(|e| format!("cannot listen: {e}"))?;
    let (stats, fresh) = core.reload(cfg, plan);
    for ((_, slot), socket) in fresh.into_iter().zip(listening) {
        let inherited = slot.listener().cfg.keepalive;
        monoio::spawn(accept::accept_loop(core.clone(), slot, socket, inherited));
    }
    Ok(stats)
}

/// How often a worker hands its allocator's freed pages back to the kernel.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// Once every [`RELEASE_EVERY`], for the worker's life: [`crate::sys::release_freed_memory`], so
/// the pages a burst of requests used and freed do not stay resident while the worker idles
/// (bench-idle, HTTP/1, 9,000 connections: 4.6 KB per idle connection right after the burst,
/// 2.8 KB once purged). One wake-up a second, a few microseconds of work.
async fn release_freed_memory() {
    loop {
        monoio::time::sleep(RELEASE_EVERY).await;
        crate::sys::release_freed_memory();
    }
}
