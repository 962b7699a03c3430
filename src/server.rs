//! The supervisor: binds every socket, starts the admin thread and one pinned worker per core,
//! and drives shutdown. This is what `main` runs and what the integration tests embed.
//!
//! Sockets are bound here, on the calling thread, before any worker starts, so a port in use
//! or a bad address fails start-up with a clear error instead of a dead worker. Each listener
//! gets one `SO_REUSEPORT` socket per worker; the kernel spreads connections across them.
//!
//! A reload ([`Server::reload`]) binds what the new configuration adds here too, before any
//! worker changes anything, then hands every worker the new configuration and its sockets;
//! sockets of listeners whose address did not change stay open throughout, so no connection
//! attempt is refused during a reload.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures_channel::mpsc;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{error, info, warn};

use crate::admin::{Admin, ReadyState, ReloadRequest, Scrape};
use crate::config::{Config, Driver};
use crate::core::{Core, ReloadStats, SocketPlan};
use crate::cpus::CpuBudget;
use crate::dns::{DnsStats, Resolver};
use crate::logging::access::{self, AccessStats};
use crate::task;
use crate::worker::{self, Control, DriverKind};

/// Listen backlog per worker socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Why the proxy could not start. Display is `key: problem`, to be prefixed by the file.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("listener[{index}].listen: cannot listen on {addr}: {source}")]
    Bind {
        /// Listener index in the config.
        index: usize,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The admin address could not be bound.
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A worker could not start (io_uring unavailable, thread limit, …).
    #[error("runtime: worker {worker}: {problem}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What failed.
        problem: String,
    },
}

/// One listener's bound sockets, as the workers hold them (in the order of
/// [`Server::listeners`]).
#[derive(Debug, Clone)]
struct Bound {
    name: String,
    /// The address as configured (port 0 stays 0).
    configured: SocketAddr,
    /// The address bound.
    local: SocketAddr,
}

/// What a reload did: its log line and `POST /reload`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// What changed (the same on every worker).
    pub stats: ReloadStats,
    /// Settings that changed in the file but only take effect at the next start.
    pub restart_needed: Vec<&'static str>,
    /// Optional listeners left out: their address is not available here.
    pub left_out: Vec<String>,
    /// Settings outside the listeners that changed and apply at once
    /// (`runtime.shutdown_grace_ms`).
    pub applied: Vec<&'static str>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "reloaded: {} listener(s) added, {} changed, {} removed, {} unchanged",
            s.added, s.changed, s.removed, s.unchanged
        )?;
        if !self.applied.is_empty() {
            write!(f, "; {} changed", self.applied.join(", "))?;
        }
        if !self.left_out.is_empty() {
            write!(
                f,
                "; optional listener(s) left out (address not available here): {}",
                self.left_out.join(", ")
            )?;
        }
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; changed but applied only at the next start: {}",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<(String, SocketAddr)>,
    bound: Vec<Bound>,
    /// The configuration in force (listen addresses bound).
    cfg: Arc<Config>,
    controls: Vec<mpsc::UnboundedSender<Control>>,
    ready: Arc<ReadyState>,
    admin: Option<Admin>,
    done: std_mpsc::Receiver<usize>,
    threads: Vec<JoinHandle<()>>,
    grace: Duration,
    shutdown_requests: Option<std_mpsc::Receiver<()>>,
    reload_requests: Option<std_mpsc::Receiver<ReloadRequest>>,
    /// The resolver thread, once any listener names an upstream by host name.
    resolver: Option<Resolver>,
    /// Its counters, rendered by the admin server.
    dns_stats: Arc<DnsStats>,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Workers that finished (drained or grace expired) in time.
    pub finished: usize,
    /// Workers in all.
    pub workers: usize,
}

impl Server {
    /// Binds, starts the admin thread and the workers, and returns once every worker accepts.
    /// An `optional` listener whose address cannot exist here (its address family or the
    /// address is not available, as IPv6 in a namespace without it) is left out with a
    /// warning.
    pub fn start(mut cfg: Config) -> Result<Server, StartError> {
        let mut fallback = None;
        let cpus = CpuBudget::current();
        let workers = match cfg.runtime.workers {
            0 => cpus.default_workers(),
            n => n,
        };
        // One decision for every worker, and one warning: can this process create a ring?
        let driver = match (cfg.runtime.driver, worker::probe_io_uring()) {
            (Driver::Auto, Err(e)) => {
                fallback = Some(e);
                Driver::Epoll
            }
            (Driver::IoUring, Err(e)) => {
                return Err(StartError::Worker {
                    worker: 0,
                    problem: format!(
                        "cannot create the io_uring runtime: {e} ({}; or set runtime.driver = \"auto\" to fall back to epoll)",
                        worker::io_uring_hint(&e)
                    ),
                })
            }
            (d, _) => d,
        };

        // Bind everything first: every error surfaces here, before a thread exists.
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listeners = Vec::with_capacity(cfg.listeners.len());
        let mut absent = Vec::new();
        let mut bound_at = vec![None; cfg.listeners.len()];
        let mut bound_list = Vec::with_capacity(cfg.listeners.len());
        for (index, l) in cfg.listeners.iter().enumerate() {
            let bound = match bind_reuseport(l.listen, workers, l.keepalive) {
                Ok(b) => b,
                Err(e) if l.optional && unavailable_here(&e) => {
                    absent.push((index, e));
                    continue;
                }
                Err(source) => {
                    return Err(StartError::Bind {
                        index,
                        addr: l.listen,
                        source,
                    })
                }
            };
            let local = bound[0].local_addr().map_err(|source| StartError::Bind {
                index,
                addr: l.listen,
                source,
            })?;
            listeners.push((l.name.clone(), local));
            bound_list.push(Bound {
                name: l.name.clone(),
                configured: l.listen,
                local,
            });
            bound_at[index] = Some(local);
            for (w, s) in bound.into_iter().enumerate() {
                sockets[w].push(s);
            }
        }
        // Workers see the address each listener got (port 0 resolved): their client series
        // are labelled with it (`target_addr`).
        for (l, local) in cfg.listeners.iter_mut().zip(bound_at) {
            if let Some(a) = local {
                l.listen = a;
            }
        }
        let mut left_out = Vec::with_capacity(absent.len());
        for (i, e) in absent.into_iter().rev() {
            let l = cfg.listeners.remove(i);
            left_out.push((l.name, l.listen, e));
        }
        let admin_sock = std::net::TcpListener::bind(cfg.admin.listen).map_err(|source| {
            StartError::AdminBind {
                addr: cfg.admin.listen,
                source,
            }
        })?;

        let ready = Arc::new(ReadyState::new(workers));
        let (shutdown_tx, shutdown_rx) = std_mpsc::sync_channel::<()>(1);
        let (reload_tx, reload_rx) = std_mpsc::channel::<ReloadRequest>();
        let (controls, control_rxs): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded()).unzip();
        let access_log = AccessStats::new(workers);
        let dns_stats = Arc::new(DnsStats::default());
        let admin = Admin::spawn(
            admin_sock,
            Scrape {
                controls: controls.clone(),
                cache: Default::default(),
                ready: ready.clone(),
                started: SystemTime::now(),
                shutdown: cfg.admin.enable_shutdown.then(|| shutdown_tx.clone()),
                reload: reload_tx,
                access_log: access_log.clone(),
                dns: dns_stats.clone(),
            },
        )
        .map_err(|e| StartError::Worker {
            worker: 0,
            problem: format!("cannot start the admin thread: {e}"),
        })?;

        // Upstream names: resolved on their own thread. Start-up waits for the first answers
        // (`dns.timeout_ms` at most) so the first connections find endpoints; a name without
        // one is a warning, not an error (its set stays empty until it resolves).
        let names = cfg.upstream_names();
        let (resolver, answers) = if names.is_empty() {
            (None, Default::default())
        } else {
            let (r, answers) = Resolver::start(
                &cfg.dns,
                names.clone(),
                controls.clone(),
                dns_stats.clone(),
                true,
            )
            .map_err(|e| StartError::Worker {
                worker: 0,
                problem: format!("cannot start the DNS resolver thread: {e}"),
            })?;
            for n in names.iter().filter(|n| !answers.contains_key(*n)) {
                warn!(name = %n, timeout_ms = cfg.dns.timeout.as_millis() as u64, "upstream name has no address yet: its endpoints are empty until it resolves (HTTP requests to it get 503, connections are closed)");
            }
            (Some(r), answers)
        };
        let answers = Arc::new(answers);
        let cfg = Arc::new(cfg);
        let (started_tx, started_rx) = std_mpsc::channel::<(usize, Result<(), String>)>();
        let (done_tx, done) = std_mpsc::channel::<usize>();
        let mut threads = Vec::with_capacity(workers);
        for (id, (socks, control)) in sockets.into_iter().zip(control_rxs).enumerate() {
            let cpu = cpus
                .pin_for(cfg.runtime.pin_cores, id)
                .map(|id| core_affinity::CoreId { id });
            let cfg = cfg.clone();
            let started = started_tx.clone();
            let done = done_tx.clone();
            let ready = ready.clone();
            let access_log = access_log.clone();
            let answers = answers.clone();
            let t = std::thread::Builder::new()
                .name(format!("sidewire-core-{id}"))
                .spawn(move || {
                    // A worker that panics during start-up must not leave the supervisor
                    // waiting for its start report: say so instead. After start-up a panic
                    // that escaped its task (connection and stream tasks contain their own:
                    // `task::spawn`) leaves a core that serves nothing while its listening
                    // sockets may still take connections: the process exits non-zero, so
                    // that its supervisor (kubelet, systemd) restarts it.
                    let report = started.clone();
                    let serving = std::cell::Cell::new(false);
                    let serving_ref = &serving;
                    let body = std::panic::AssertUnwindSafe(move || {
                        if let Some(cpu) = cpu {
                            if !core_affinity::set_for_current(cpu) {
                                warn!(worker = id, cpu = cpu.id, "could not pin worker to its CPU");
                            }
                        }
                        let (mut rt, kind) =
                            match worker::build_runtime(driver, cfg.runtime.ring_entries) {
                                Ok(rt) => rt,
                                Err(e) => {
                                    let what = match driver {
                                        Driver::Epoll => {
                                            format!("cannot create the epoll runtime: {e}")
                                        }
                                        _ => format!(
                                            "cannot create the io_uring runtime: {e} ({})",
                                            worker::io_uring_hint(&e)
                                        ),
                                    };
                                    let _ = started.send((id, Err(what)));
                                    return;
                                }
                            };
                        let on = match kind {
                            DriverKind::IoUring => &ready.io_uring_workers,
                            DriverKind::Epoll => &ready.epoll_workers,
                        };
                        on.fetch_add(1, Ordering::Relaxed);
                        access::start_worker(cfg.log.access, access_log, id);
                        let core = Rc::new(Core::new(id, &cfg, &answers));
                        rt.block_on(worker::run(core, socks, control, |r| {
                            if r.is_ok() {
                                ready.listening.fetch_add(1, Ordering::AcqRel);
                                serving_ref.set(true);
                            }
                            let _ =
                                started.send((id, r.map_err(|e| format!("cannot listen: {e}"))));
                        }));
                    });
                    if let Err(panic) = std::panic::catch_unwind(body) {
                        let what = task::panic_message(panic.as_ref());
                        if serving.get() {
                            error!(
                                worker = id,
                                panic = %what,
                                "a worker panicked (a bug in sidewire; please report it): exiting so that the proxy is restarted"
                            );
                            std::process::exit(70);
                        }
                        let _ = report.send((id, Err(format!("the worker panicked: {what}"))));
                    }
                    let _ = done.send(id);
                })
                .map_err(|e| StartError::Worker {
                    worker: id,
                    problem: format!("cannot spawn thread: {e}"),
                })?;
            threads.push(t);
        }
        drop(started_tx);
        for _ in 0..workers {
            match started_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(problem))) => {
                    for c in &controls {
                        let _ = c.unbounded_send(Control::Drain);
                    }
                    admin.stop();
                    return Err(StartError::Worker { worker, problem });
                }
                Err(_) => {
                    admin.stop();
                    return Err(StartError::Worker {
                        worker: 0,
                        problem: "a worker exited during start-up".into(),
                    });
                }
            }
        }
        // Logged only once everything runs: a failed start is one error line, nothing else.
        let pinned = cpus.pin_for(cfg.runtime.pin_cores, 0).is_some();
        if pinned && workers > cpus.affinity.len() {
            warn!(
                workers,
                cpus = cpus.affinity.len(),
                "more workers than CPUs: some share a core"
            );
        }
        if let Some(e) = &fallback {
            warn!(
                error = %e,
                cause = worker::io_uring_hint(e),
                "io_uring is not available: running on epoll, which costs more CPU per byte and per \
                 connection; allow io_uring to get it back (runtime.driver = \"epoll\" silences this)"
            );
        }
        info!(
            workers,
            driver = if driver == Driver::Epoll {
                "epoll"
            } else {
                "io_uring"
            },
            pinned,
            cpu_quota = cpus
                .quota
                .map(|q| format!("{q:.2}"))
                .unwrap_or_else(|| "none".into()),
            "workers"
        );
        for (name, addr, e) in left_out.iter().rev() {
            warn!(listener = %name, %addr, error = %e, "optional listener left out: its address is not available here");
        }
        for (name, addr) in &listeners {
            info!(listener = %name, %addr, workers, "listening");
        }
        info!(addr = %admin.addr(), "admin listening");
        Ok(Server {
            listeners,
            bound: bound_list,
            cfg: cfg.clone(),
            controls,
            ready,
            admin: Some(admin),
            done,
            threads,
            grace: cfg.runtime.shutdown_grace,
            shutdown_requests: Some(shutdown_rx),
            reload_requests: Some(reload_rx),
            resolver,
            dns_stats,
        })
    }

    /// Receives one [`ReloadRequest`] per `POST /reload` on the admin port; the owner
    /// re-reads the configuration, calls [`Server::reload`] and answers. `None` after the
    /// first call. Without a taker, `POST /reload` answers 503.
    pub fn take_reload_requests(&mut self) -> Option<std_mpsc::Receiver<ReloadRequest>> {
        self.reload_requests.take()
    }

    /// Applies `new` to the running proxy without dropping a connection. Listeners are
    /// matched to the running ones by address (and, for port 0, by name too): their sockets
    /// stay open. A listener with new settings gets them for new connections; its open
    /// connections finish on the old ones (HTTP/1 answers their next request with
    /// `connection: close`, opaque streams run to their end; an HTTP/2 connection stays open
    /// and routes each new stream under the new settings). Removed
    /// listeners stop accepting. Metrics keep their counts by listener name. `[runtime]`
    /// (except `shutdown_grace_ms`), `[admin]`, `[log]` and `[metrics]` changes are reported
    /// in [`ReloadSummary::restart_needed`] and wait for the next start.
    ///
    /// Errors (one line, `key: problem`; nothing changed): a new address cannot be bound.
    /// A worker that fails to apply it (it is draining, or gone) is an error too, after the
    /// others applied it.
    pub fn reload(&mut self, new: Config) -> Result<ReloadSummary, String> {
        let r = self.apply(new);
        self.ready.count_reload(r.is_ok());
        r
    }

    /// Reads, validates (as `sidewire check` does) and applies the configuration file
    /// `path`, as SIGHUP and `POST /reload` do. Errors: the file's one-line error
    /// (`file: key: problem`), or [`Server::reload`]'s; the running configuration stays.
    pub fn reload_file(&mut self, path: &std::path::Path) -> Result<ReloadSummary, String> {
        match Config::load(path) {
            // Errors of the new file's contents (an address in use) name it too.
            Ok(cfg) => self
                .reload(cfg)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => {
                self.ready.count_reload(false);
                Err(e.to_string())
            }
        }
    }

    fn apply(&mut self, mut new: Config) -> Result<ReloadSummary, String> {
        let workers = self.controls.len();
        let old = &self.cfg;
        let mut summary = ReloadSummary::default();
        {
            let (o, n) = (&old.runtime, &new.runtime);
            let mut differs = |changed: bool, key: &'static str| {
                if changed {
                    summary.restart_needed.push(key);
                }
            };
            differs(o.workers != n.workers, "runtime.workers");
            differs(o.pin_cores != n.pin_cores, "runtime.pin_cores");
            differs(o.driver != n.driver, "runtime.driver");
            differs(o.ring_entries != n.ring_entries, "runtime.ring_entries");
            differs(
                o.splice_pipe_bytes != n.splice_pipe_bytes,
                "runtime.splice_pipe_bytes",
            );
            differs(
                o.transparent_huge_pages != n.transparent_huge_pages,
                "runtime.transparent_huge_pages",
            );
            differs(old.admin != new.admin, "[admin]");
            if o.shutdown_grace != n.shutdown_grace {
                summary.applied.push("runtime.shutdown_grace_ms");
            }
            differs(old.log != new.log, "[log]");
            differs(old.metrics != new.metrics, "[metrics]");
        }
        // What waits for a restart stays as it runs.
        new.runtime = crate::config::RuntimeConfig {
            shutdown_grace: new.runtime.shutdown_grace,
            ..old.runtime.clone()
        };
        new.admin = old.admin.clone();
        new.log = old.log.clone();
        new.metrics = old.metrics;

        // Bind what is new before anything changes: an error leaves everything as it was.
        let mut taken = vec![false; self.bound.len()];
        let mut plan = Vec::with_capacity(new.listeners.len());
        let mut fresh: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::with_capacity(new.listeners.len());
        let mut kept = Vec::with_capacity(new.listeners.len());
        let mut new_listeners = Vec::new();
        for (index, mut l) in std::mem::take(&mut new.listeners).into_iter().enumerate() {
            let configured = l.listen;
            let same = self.bound.iter().enumerate().position(|(j, b)| {
                !taken[j]
                    && b.configured == configured
                    && (configured.port() != 0 || b.name == l.name)
            });
            let local = match same {
                Some(j) => {
                    taken[j] = true;
                    plan.push(SocketPlan::Keep(j));
                    self.bound[j].local
                }
                None => match bind_reuseport(configured, workers, l.keepalive) {
                    Ok(socks) => {
                        let local = socks[0].local_addr().map_err(|e| {
                            format!("listener[{index}].listen: cannot listen on {configured}: {e}")
                        })?;
                        for (w, s) in socks.into_iter().enumerate() {
                            fresh[w].push(s);
                        }
                        plan.push(SocketPlan::New);
                        local
                    }
                    Err(e) if l.optional && unavailable_here(&e) => {
                        summary.left_out.push(l.name.clone());
                        continue;
                    }
                    Err(e) => {
                        return Err(format!(
                            "listener[{index}].listen: cannot listen on {configured}: {e}"
                        ))
                    }
                },
            };
            if same.is_none() {
                new_listeners.push((l.name.clone(), local));
            }
            bound.push(Bound {
                name: l.name.clone(),
                configured,
                local,
            });
            l.listen = local;
            kept.push(l);
        }
        new.listeners = kept;
        let new = Arc::new(new);

        // A name new in this reload is resolved first (`dns.timeout_ms` at most), and each
        // worker gets its answer ahead of the reload, so the listeners that use it start with
        // its endpoints instead of an empty set (503s until the resolver thread answers).
        let known = self.cfg.upstream_names();
        let fresh_names: std::collections::BTreeSet<_> = new
            .upstream_names()
            .into_iter()
            .filter(|n| !known.contains(n))
            .collect();
        let early = crate::dns::resolve_now(&new.dns, &fresh_names);
        for (name, addrs) in &early {
            for c in &self.controls {
                let _ = c.unbounded_send(Control::Dns {
                    name: name.clone(),
                    addrs: addrs.clone(),
                });
            }
        }
        let pending: Vec<_> = self
            .controls
            .iter()
            .zip(fresh)
            .map(|(c, sockets)| {
                let (done, rx) = std_mpsc::sync_channel(1);
                c.unbounded_send(Control::Reload {
                    cfg: new.clone(),
                    plan: plan.clone(),
                    sockets,
                    done,
                })
                .ok()
                .map(|()| rx)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failed = Vec::new();
        for (w, rx) in pending.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.map(|rx| rx.recv_timeout(left)) {
                Some(Ok(Ok(stats))) => summary.stats = stats,
                Some(Ok(Err(e))) => failed.push(format!("worker {w}: {e}")),
                Some(Err(_)) => failed.push(format!("worker {w}: no answer within 5 s")),
                None => failed.push(format!("worker {w}: gone")),
            }
        }
        for (name, addr) in &new_listeners {
            info!(listener = %name, %addr, workers, "listening");
        }
        // The resolver follows the new names after the workers have the new listeners, so
        // answers for new names find the sets that use them. Nothing here waits on DNS.
        let names = new.upstream_names();
        match &self.resolver {
            Some(r) => r.update(&new.dns, names),
            None if names.is_empty() => {}
            None => {
                match Resolver::start(
                    &new.dns,
                    names,
                    self.controls.clone(),
                    self.dns_stats.clone(),
                    false,
                ) {
                    Ok((r, _)) => self.resolver = Some(r),
                    Err(e) => {
                        warn!(error = %e, "cannot start the DNS resolver thread: upstream names stay without endpoints")
                    }
                }
            }
        }
        self.listeners = bound.iter().map(|b| (b.name.clone(), b.local)).collect();
        self.bound = bound;
        self.grace = new.runtime.shutdown_grace;
        self.cfg = new;
        if !failed.is_empty() {
            return Err(format!(
                "applied on {} of {workers} workers: {}",
                workers - failed.len(),
                failed.join("; ")
            ));
        }
        Ok(summary)
    }

    /// Receives one `()` per `POST /shutdown` on the admin port (when
    /// `admin.enable_shutdown` is on; the sender lives as long as the admin thread). The owner
    /// decides what a request means; `main` treats it as SIGTERM. `None` after the first call.
    pub fn take_shutdown_requests(&mut self) -> Option<std_mpsc::Receiver<()>> {
        self.shutdown_requests.take()
    }

    /// The bound address of the listener named `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .as_ref()
            .expect("invariant: admin runs until shutdown completes")
            .addr()
    }

    /// Begins shutdown: `/ready` turns 503, workers stop accepting and drain.
    pub fn drain(&self) {
        if !self.ready.draining.swap(true, Ordering::AcqRel) {
            info!(
                grace_ms = self.grace.as_millis() as u64,
                "shutting down: draining connections"
            );
        }
        for c in &self.controls {
            let _ = c.unbounded_send(Control::Drain);
        }
    }

    /// Drains (if not begun) and waits for the workers: each ends when its connections are
    /// done or the grace period is over. Stops the admin server last.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.drain();
        let workers = self.threads.len();
        // Workers enforce the grace period themselves; the slack covers closing sockets.
        let deadline = Instant::now() + self.grace + Duration::from_secs(5);
        let mut finished = 0;
        while finished < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(_) => finished += 1,
                Err(_) => break,
            }
        }
        if finished == workers {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        } else {
            warn!(finished, workers, "some workers did not stop in time");
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        drop(self.resolver.take());
        ShutdownReport { finished, workers }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A dropped server (e.g. a failed test) must not leave workers accepting.
        for c in &self.controls {
            let _ = c.unbounded_send(Control::Drain);
        }
    }
}

/// Whether a bind error means the address cannot exist in this network namespace (no such
/// address family, or the address is not configured), rather than a conflict.
fn unavailable_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

/// Binds `n` listening sockets to `addr` with `SO_REUSEPORT`. An IPv6 address listens for
/// IPv6 only (`IPV6_V6ONLY`), so `[::]:P` and `0.0.0.0:P` can be separate listeners, as
/// transparent interception of both families needs. For a fixed port, a probe bind
/// without `SO_REUSEPORT` first makes "port in use" an error even when the other owner is
/// another reuseport process (which would otherwise silently share our port). For port 0 the
/// first socket picks the port and the others join it.
///
/// Each socket gets `TCP_NODELAY` and `keepalive` (TCP keepalive on, with these settings, or
/// off), which the sockets it accepts inherit.
fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    keepalive: Option<crate::config::KeepaliveConfig>,
) -> io::Result<Vec<std::net::TcpListener>> {
    let new_socket = || -> io::Result<Socket> {
        let s = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        Ok(s)
    };
    if addr.port() != 0 {
        let probe = new_socket()?;
        probe.bind(&addr.into())?;
        drop(probe);
    }
    let mut out = Vec::with_capacity(n);
    let mut target = addr;
    for _ in 0..n {
        let s = new_socket()?;
        s.set_reuse_port(true)?;
        s.set_nodelay(true)?;
        if let Some(k) = keepalive {
            let secs = |d: std::time::Duration| d.as_secs() as u32;
            crate::sys::set_keepalive(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                secs(k.time),
                secs(k.interval),
                k.probes,
            )?;
        }
        s.bind(&target.into())?;
        s.listen(BACKLOG)?;
        let l: std::net::TcpListener = s.into();
        target = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conn` relies on accepted sockets inheriting TCP_NODELAY from the listener.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_share_the_port() {
        let ls = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2, None).unwrap();
        let addr = ls[0].local_addr().unwrap();
        assert_eq!(
            ls[1].local_addr().unwrap(),
            addr,
            "every worker socket on one port"
        );
        let _c = std::net::TcpStream::connect(addr).unwrap();
        // The kernel puts the connection on one of the two reuseport sockets.
        for l in &ls {
            l.set_nonblocking(true).unwrap();
        }
        let accepted = loop {
            if let Some(s) = ls.iter().find_map(|l| l.accept().ok()) {
                break s.0;
            }
            std::thread::yield_now();
        };
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY inherited from the listener"
        );
    }

    #[test]
    fn fixed_port_in_use_is_refused_even_for_reuseport_owners() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, None).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = bind_reuseport(addr, 1, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
