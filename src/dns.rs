//! Upstream names: `"host:port"` endpoints resolved after start, off the workers, and kept
//! fresh.
//!
//! One thread (`sidewire-dns`) runs a tokio current-thread runtime and one task per name. A
//! task asks for the name's A and AAAA records (hickory-resolver; `/etc/hosts` first, then
//! `dns.nameservers` or the system's `/etc/resolv.conf`), makes every address an endpoint
//! with the name's port, and asks again when the answer's TTL runs out, the TTL bounded by
//! `dns.min_ttl_ms` and `dns.max_ttl_ms` (hickory's own cache is off, so each refresh
//! asks the servers). A changed answer goes to every worker over its control channel
//! ([`Control::Dns`]); workers apply it to the endpoint sets that name it, without a lock,
//! between connections.
//!
//! **Failures keep the last good answer.** A timeout, a server error, and also NXDOMAIN or
//! an empty answer after a success leave the endpoints as they were: a resolver outage or a
//! DNS server briefly answering NXDOMAIN (a restart, a split-horizon mistake) must not
//! take every endpoint of a healthy upstream away, while endpoints that really went away
//! show up as connect failures, which the connect retry already steps around. (Envoy's
//! STRICT_DNS and Linkerd keep the last answer on errors too.) A failing name is asked again
//! after `dns.min_ttl_ms`, the delay doubling with each consecutive failure up to
//! `dns.retry_max_ms`. Nothing here ever stops the process: a name that does not resolve at
//! start leaves its endpoints empty (a warning), until it does.
//!
//! Counted per name in `sidewire_dns_resolutions_total{name,result}`, with the endpoints in
//! use in `sidewire_dns_endpoints{name}` ([`DnsStats`]).
//!
//! Not here: applying an answer to the balancers (`core`), the config keys (`config`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedSender;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{DnsConfig, UpstreamName};
use crate::worker::Control;

/// The addresses a name resolved to, sorted and each once: what workers receive.
pub type Addrs = Arc<[SocketAddr]>;

/// How one resolution ended: the `result` label of `sidewire_dns_resolutions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// At least one address.
    Ok,
    /// NXDOMAIN, or the name exists without A/AAAA records.
    NoRecords,
    /// No answer within `dns.timeout_ms`.
    Timeout,
    /// Anything else: a server failure, a refused query, no server reachable.
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::NoRecords,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The label value: `ok`, `no_records`, `timeout` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NoRecords => "no_records",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// Resolution counts and current endpoints per name, written by the resolver thread and read
/// by scrapes (a mutex, off the data path: a few updates per name and TTL).
#[derive(Debug, Default)]
pub struct DnsStats {
    names: Mutex<BTreeMap<String, NameStats>>,
}

#[derive(Debug, Default, Clone)]
struct NameStats {
    /// Resolutions by [`Outcome`] index.
    results: [u64; 4],
    /// Endpoints in use (the last good answer's addresses).
    endpoints: usize,
}

impl DnsStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NameStats>> {
        // A panic while holding it leaves plain counters behind: still fine to read.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, name: &UpstreamName, outcome: Outcome, endpoints: Option<usize>) {
        let mut names = self.lock();
        let s = names.entry(name.to_string()).or_default();
        s.results[outcome as usize] += 1;
        if let Some(n) = endpoints {
            s.endpoints = n;
        }
    }

    /// Makes `names` the ones reported: others are dropped, new ones start at zero.
    fn keep(&self, names: &BTreeSet<UpstreamName>) {
        let keys: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let mut map = self.lock();
        map.retain(|k, _| keys.contains(k));
        for k in keys {
            map.entry(k).or_default();
        }
    }

    /// Resolutions of `name` that ended in `outcome` so far (for tests).
    pub fn resolutions(&self, name: &str, outcome: Outcome) -> u64 {
        self.lock()
            .get(name)
            .map_or(0, |s| s.results[outcome as usize])
    }

    /// `sidewire_dns_resolutions_total` and `sidewire_dns_endpoints` in the Prometheus text
    /// format; empty when no upstream is given by name.
    pub fn render(&self) -> String {
        let names = self.lock();
        let mut out = String::new();
        if names.is_empty() {
            return out;
        }
        out.push_str(
            "# HELP sidewire_dns_resolutions_total Resolutions of upstream names: ok, no_records (NXDOMAIN or no A/AAAA), timeout or error; failures keep the last good answer.\n\
             # TYPE sidewire_dns_resolutions_total counter\n",
        );
        for (name, s) in names.iter() {
            for o in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "sidewire_dns_resolutions_total{{name=\"{}\",result=\"{}\"}} {}",
                    escape(name),
                    o.as_str(),
                    s.results[o as usize]
                );
            }
        }
        out.push_str(
            "# HELP sidewire_dns_endpoints Endpoints an upstream name provides now (its last good answer's addresses).\n\
             # TYPE sidewire_dns_endpoints gauge\n",
        );
        for (name, s) in names.iter() {
            let _ = writeln!(
                out,
                "sidewire_dns_endpoints{{name=\"{}\"}} {}",
                escape(name),
                s.endpoints
            );
        }
        out
    }
}

/// A label value as the text format wants it (names are validated host names already; this
/// only guards the format).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A failed resolution: its label and what the resolver said.
#[derive(Debug)]
pub struct Failure {
    /// The `result` label.
    pub outcome: Outcome,
    /// The resolver's message.
    pub detail: String,
}

/// The resolvers: one hickory resolver per address family, so that a server that answers the
/// A query but never the AAAA one (or the reverse) still yields the addresses it gave. One
/// resolver asking both (hickory's `Ipv4AndIpv6`) fails the whole lookup when either query
/// times out.
#[derive(Clone)]
pub struct Families {
    v4: TokioResolver,
    v6: TokioResolver,
}

/// A resolver as `cfg` says: `/etc/hosts` first, then `cfg.nameservers` (UDP, then TCP for
/// truncated answers) or the system's `/etc/resolv.conf`; no cache, so each refresh asks.
///
/// Errors: the system configuration cannot be read (no `/etc/resolv.conf` and no
/// `dns.nameservers`).
pub fn build_resolver(cfg: &DnsConfig) -> Result<Families, String> {
    use hickory_resolver::config::LookupIpStrategy;
    Ok(Families {
        v4: build_one(cfg, LookupIpStrategy::Ipv4Only)?,
        v6: build_one(cfg, LookupIpStrategy::Ipv6Only)?,
    })
}

/// One family's resolver for [`build_resolver`].
fn build_one(
    cfg: &DnsConfig,
    strategy: hickory_resolver::config::LookupIpStrategy,
) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| {
            format!("cannot read the system's DNS configuration (/etc/resolv.conf): {e}; set dns.nameservers")
        })?
    } else {
        let servers = cfg
            .nameservers
            .iter()
            .map(|ns| {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = cfg.timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.ip_strategy = strategy;
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// Resolves `name` once, within `timeout`: its addresses (sorted, each once, with the name's
/// port) and how long the answer is valid. The A and AAAA queries go out together; the
/// answer is every address either gave (valid as long as the shorter-lived of the answers),
/// and a failure only when neither gave one (the A query's failure first, unless it only
/// found no records).
pub async fn resolve(
    resolver: &Families,
    name: &UpstreamName,
    timeout: Duration,
) -> Result<(Vec<SocketAddr>, Duration), Failure> {
    let one = |r: &'_ TokioResolver| {
        let host = name.host.clone();
        let r = r.clone();
        async move {
            match tokio::time::timeout(timeout, r.lookup_ip(host.as_str())).await {
                Err(_) => Err(Failure {
                    outcome: Outcome::Timeout,
                    detail: format!("no answer within {} ms", timeout.as_millis()),
                }),
                Ok(Err(e)) => Err(failure(&e)),
                Ok(Ok(l)) => {
                    let ttl = l.valid_until().saturating_duration_since(Instant::now());
                    let addrs: Vec<SocketAddr> =
                        l.iter().map(|ip| SocketAddr::new(ip, name.port)).collect();
                    Ok((addrs, ttl))
                }
            }
        }
    };
    let (a, aaaa) = tokio::join!(one(&resolver.v4), one(&resolver.v6));
    let mut addrs = Vec::new();
    let mut ttl: Option<Duration> = None;
    for (found, valid) in [&a, &aaaa].into_iter().flatten() {
        if !found.is_empty() {
            addrs.extend_from_slice(found);
            ttl = Some(ttl.map_or(*valid, |t| t.min(*valid)));
        }
    }
    addrs.sort();
    addrs.dedup();
    if let Some(ttl) = ttl {
        return Ok((addrs, ttl));
    }
    let no_records = Failure {
        outcome: Outcome::NoRecords,
        detail: "no A or AAAA record".into(),
    };
    Err(match (a, aaaa) {
        (Err(e), _) if e.outcome != Outcome::NoRecords => e,
        (_, Err(e)) if e.outcome != Outcome::NoRecords => e,
        _ => no_records,
    })
}

/// Resolves `names` once with `cfg`, all at once and `cfg.timeout` at most, on a thread of its
/// own (callable from any thread, inside a runtime or not): the names that gave addresses.
/// For a reload, so that a name new in it has its endpoints when the listeners that use it
/// start taking connections.
pub fn resolve_now(
    cfg: &DnsConfig,
    names: &BTreeSet<UpstreamName>,
) -> HashMap<UpstreamName, Addrs> {
    if names.is_empty() {
        return HashMap::new();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return HashMap::new();
                };
                let Ok(resolver) = build_resolver(cfg) else {
                    return HashMap::new();
                };
                rt.block_on(async {
                    let all = names.iter().map(|n| {
                        let resolver = &resolver;
                        async move { (n, resolve(resolver, n, cfg.timeout).await) }
                    });
                    futures_util::future::join_all(all)
                        .await
                        .into_iter()
                        .filter_map(|(n, r)| {
                            r.ok().map(|(addrs, _)| (n.clone(), Addrs::from(addrs)))
                        })
                        .collect()
                })
            })
            .join()
            .unwrap_or_default()
    })
}

fn failure(e: &NetError) -> Failure {
    let outcome = if e.is_no_records_found() || e.is_nx_domain() {
        Outcome::NoRecords
    } else if matches!(e, NetError::Timeout) {
        Outcome::Timeout
    } else {
        Outcome::Error
    };
    Failure {
        outcome,
        detail: e.to_string(),
    }
}

/// The delay before retry number `failures` (≥ 1) of a failing name: `min_ttl` doubled per
/// earlier consecutive failure, at most `retry_max`.
pub fn backoff(cfg: &DnsConfig, failures: u32) -> Duration {
    let doubled = cfg
        .min_ttl
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(cfg.retry_max.max(cfg.min_ttl))
}

/// Resolves each of `names` once, concurrently, as the proxy would (for `sidewire check`):
/// each name's addresses, or why it did not resolve.
pub fn check(
    cfg: &DnsConfig,
    names: &BTreeSet<UpstreamName>,
) -> Vec<(UpstreamName, Result<Vec<SocketAddr>, String>)> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return names
                .iter()
                .map(|n| (n.clone(), Err(format!("no runtime: {e}"))))
                .collect()
        }
    };
    rt.block_on(async {
        let resolver = match build_resolver(cfg) {
            Ok(r) => r,
            Err(e) => return names.iter().map(|n| (n.clone(), Err(e.clone()))).collect(),
        };
        let lookups = names.iter().map(|n| {
            let resolver = resolver.clone();
            async move {
                let r = resolve(&resolver, n, cfg.timeout).await;
                (
                    n.clone(),
                    r.map(|(a, _)| a)
                        .map_err(|f| format!("{}: {}", f.outcome.as_str(), f.detail)),
                )
            }
        });
        futures_util::future::join_all(lookups).await
    })
}

/// What the resolver thread is told.
enum Msg {
    /// Resolve these names with these settings from now on (start, reload).
    Names(DnsConfig, BTreeSet<UpstreamName>),
    /// Stop every task and end the thread.
    Stop,
}

/// State shared by the resolver thread's tasks.
struct Shared {
    /// Every worker's control channel.
    controls: Vec<UnboundedSender<Control>>,
    /// The last good answer of each name being resolved.
    last: Mutex<HashMap<UpstreamName, Addrs>>,
    stats: Arc<DnsStats>,
}

impl Shared {
    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<UpstreamName, Addrs>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The resolver thread: resolves the configuration's upstream names and sends each changed
/// answer to every worker. Stops when dropped.
#[derive(Debug)]
pub struct Resolver {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Names(_, n) => write!(f, "Names({} names)", n.len()),
            Msg::Stop => write!(f, "Stop"),
        }
    }
}

impl Resolver {
    /// Starts the resolver thread on `names` and, when `wait` is set, waits for each name's
    /// first resolution, `cfg.timeout` at most (start-up: the workers begin with these
    /// answers). Returns the thread and the answers so far (names that failed or did not
    /// answer in time are missing; they keep being retried).
    ///
    /// Errors: the thread or its runtime cannot be created.
    pub fn start(
        cfg: &DnsConfig,
        names: BTreeSet<UpstreamName>,
        controls: Vec<UnboundedSender<Control>>,
        stats: Arc<DnsStats>,
        wait: bool,
    ) -> std::io::Result<(Resolver, HashMap<UpstreamName, Addrs>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = std_mpsc::channel::<()>();
        let shared = Arc::new(Shared {
            controls,
            last: Mutex::default(),
            stats,
        });
        let count = names.len();
        let _ = tx.send(Msg::Names(cfg.clone(), names));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sidewire-dns".into())
            .spawn(move || rt.block_on(run(rx, thread_shared, Some(first_tx))))?;
        if wait {
            let deadline = Instant::now() + cfg.timeout + Duration::from_millis(100);
            for _ in 0..count {
                let left = deadline.saturating_duration_since(Instant::now());
                if first_rx.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
        let answers = shared.last().clone();
        Ok((
            Resolver {
                tx,
                thread: Some(thread),
            },
            answers,
        ))
    }

    /// Follows a reloaded configuration: resolves `names` with `cfg` from now on (names
    /// that stay keep their last answer; new ones are resolved at once). Does not wait.
    pub fn update(&self, cfg: &DnsConfig, names: BTreeSet<UpstreamName>) {
        let _ = self.tx.send(Msg::Names(cfg.clone(), names));
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The resolver thread's loop: one task per name, restarted when `[dns]` changes.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    shared: Arc<Shared>,
    mut first: Option<std_mpsc::Sender<()>>,
) {
    let mut tasks: HashMap<UpstreamName, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut current: Option<(DnsConfig, Families)> = None;
    while let Some(msg) = rx.recv().await {
        let (cfg, names) = match msg {
            Msg::Names(cfg, names) => (cfg, names),
            Msg::Stop => break,
        };
        shared.stats.keep(&names);
        shared.last().retain(|n, _| names.contains(n));
        if !matches!(&current, Some((c, _)) if *c == cfg) {
            // New settings: every name starts over with the new resolver (keeping its last
            // good answer, so an unchanged answer is not sent again).
            let resolver = match build_resolver(&cfg) {
                Ok(r) => r,
                Err(e) => {
                    // Without a resolver nothing can be resolved; the endpoints stay as they
                    // are until a reload fixes the settings.
                    warn!(error = %e, "upstream names cannot be resolved");
                    for n in &names {
                        shared.stats.count(n, Outcome::Error, None);
                    }
                    first = None;
                    continue;
                }
            };
            for (_, t) in tasks.drain() {
                t.abort();
            }
            current = Some((cfg, resolver));
        }
        let (cfg, resolver) = current.as_ref().expect("invariant: set above");
        tasks.retain(|n, t| {
            let keep = names.contains(n);
            if !keep {
                t.abort();
            }
            keep
        });
        for n in names {
            if tasks.contains_key(&n) {
                continue;
            }
            let task = watch(
                n.clone(),
                resolver.clone(),
                cfg.clone(),
                shared.clone(),
                first.clone(),
            );
            tasks.insert(n, tokio::spawn(task));
        }
        // Only start-up waits for first answers.
        first = None;
    }
    for (_, t) in tasks.drain() {
        t.abort();
    }
}

/// Keeps one name resolved: resolve, send a changed answer to the workers, sleep for the
/// bounded TTL (or the back-off after a failure), again.
async fn watch(
    name: UpstreamName,
    resolver: Families,
    cfg: DnsConfig,
    shared: Arc<Shared>,
    mut first: Option<std_mpsc::Sender<()>>,
) {
    let mut last = shared.last().get(&name).cloned();
    let mut failures = 0u32;
    loop {
        let delay = match resolve(&resolver, &name, cfg.timeout).await {
            Ok((addrs, ttl)) => {
                failures = 0;
                shared.stats.count(&name, Outcome::Ok, Some(addrs.len()));
                if last.as_deref() != Some(&addrs[..]) {
                    info!(name = %name, endpoints = ?addrs, ttl_s = ttl.as_secs(), "upstream name resolved");
                    let a: Addrs = addrs.into();
                    shared.last().insert(name.clone(), a.clone());
                    for c in &shared.controls {
                        let _ = c.unbounded_send(Control::Dns {
                            name: name.clone(),
                            addrs: a.clone(),
                        });
                    }
                    last = Some(a);
                }
                ttl.clamp(cfg.min_ttl, cfg.max_ttl)
            }
            Err(f) => {
                failures = failures.saturating_add(1);
                let endpoints = last.as_ref().map_or(0, |a| a.len());
                shared.stats.count(&name, f.outcome, Some(endpoints));
                let delay = backoff(&cfg, failures);
                // One warning when a name starts failing; the retries log at debug.
                if failures == 1 {
                    warn!(name = %name, result = f.outcome.as_str(), error = %f.detail, kept_endpoints = endpoints, retry_ms = delay.as_millis() as u64, "upstream name did not resolve; keeping its last endpoints");
                } else {
                    debug!(name = %name, result = f.outcome.as_str(), error = %f.detail, failures, retry_ms = delay.as_millis() as u64, "upstream name still does not resolve");
                }
                delay
            }
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: u64, max: u64, retry: u64) -> DnsConfig {
        DnsConfig {
            nameservers: Vec::new(),
            min_ttl: Duration::from_millis(min),
            max_ttl: Duration::from_millis(max),
            timeout: Duration::from_secs(1),
            retry_max: Duration::from_millis(retry),
        }
    }

    #[test]
    fn backoff_doubles_from_min_ttl_up_to_retry_max() {
        let c = cfg(500, 60_000, 4_000);
        let d: Vec<u64> = (1..=6).map(|f| backoff(&c, f).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 4000, 4000]);
        // A retry_max below min_ttl never retries faster than min_ttl.
        assert_eq!(backoff(&cfg(500, 1000, 100), 3), Duration::from_millis(500));
        // No overflow however long it fails.
        assert_eq!(backoff(&c, u32::MAX), Duration::from_millis(4000));
    }

    #[test]
    fn stats_render_only_configured_names() {
        let s = DnsStats::default();
        assert_eq!(s.render(), "");
        let n = UpstreamName {
            host: "api.internal".into(),
            port: 8080,
        };
        s.keep(&[n.clone()].into_iter().collect());
        s.count(&n, Outcome::Ok, Some(2));
        s.count(&n, Outcome::Timeout, Some(2));
        let text = s.render();
        assert!(text.contains(
            "sidewire_dns_resolutions_total{name=\"api.internal:8080\",result=\"ok\"} 1\n"
        ));
        assert!(text.contains(
            "sidewire_dns_resolutions_total{name=\"api.internal:8080\",result=\"timeout\"} 1\n"
        ));
        assert!(text.contains("sidewire_dns_endpoints{name=\"api.internal:8080\"} 2\n"));
        s.keep(&BTreeSet::new());
        assert_eq!(s.render(), "");
    }
}
