//! The systems under test: the no-proxy baseline, sidewire, and peers found installed
//! (HAProxy, nginx), each configured by the harness with one worker pinned to the proxy CPU
//! and the same routes: `http` (HTTP/1.1 backend), `h2` (h2c backend), `h2h1` (h2c in front,
//! the HTTP/1.1 backend behind: the translation most sidecars do), `bulk` (sink), `churn`
//! (echo), `greet` (server-first greeter).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Route names, in scenario order.
pub const ROUTES: [&str; 6] = ["http", "h2", "h2h1", "bulk", "churn", "greet"];

/// A kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Straight to the backends.
    Baseline,
    /// sidewire (release binary).
    Sidewire,
    /// HAProxy: `mode http` for the HTTP route, `mode tcp` with splicing for the others.
    Haproxy,
    /// nginx: `http` proxy with upstream keep-alive, `stream` for the TCP routes.
    Nginx,
}

impl Kind {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Sidewire => "sidewire",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Baseline, Kind::Sidewire, Kind::Haproxy, Kind::Nginx]
            .into_iter()
            .find(|k| k.name() == s)
    }

    /// Whether this target can run here (binary installed).
    pub fn available(self) -> bool {
        match self {
            Kind::Baseline | Kind::Sidewire => true,
            Kind::Haproxy => which("haproxy"),
            Kind::Nginx => which("nginx") && Path::new(NGINX_STREAM_MODULE).exists(),
        }
    }
}

const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// A running target.
pub struct Running {
    /// Route name → address to send load to.
    pub routes: BTreeMap<&'static str, SocketAddr>,
    child: Option<Child>,
    _dir: Option<PathBuf>,
}

impl Running {
    /// The proxy's CPU time so far, all threads (None for the baseline). Read from each
    /// thread's `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU), which is exact where
    /// `/proc/<pid>/stat` counts 10 ms ticks.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let mut ns: u64 = 0;
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(ns as f64 / 1e9)
    }

    /// The proxy's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        st.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts `kind` in front of `backends` (route → backend address), pinned to `cpu`.
pub fn start(
    kind: Kind,
    backends: &BTreeMap<&'static str, SocketAddr>,
    cpu: usize,
    sidewire: &Path,
) -> Result<Running> {
    if kind == Kind::Baseline {
        // No proxy translates for the baseline: its h2h1 load goes to the h2c backend.
        let mut routes = backends.clone();
        routes.insert("h2h1", backends["h2"]);
        return Ok(Running {
            routes,
            child: None,
            _dir: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("loadtest-{}-{}", kind.name(), std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut routes = BTreeMap::new();
    for r in ROUTES {
        routes.insert(r, free_port()?);
    }
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string());
    match kind {
        Kind::Sidewire => {
            let mut cfg = String::from(
                "[runtime]\nworkers = 1\npin_cores = true\nshutdown_grace_ms = 1000\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [http1]\nenabled = true\n",
            );
            for r in ROUTES {
                cfg += &format!(
                    "[[listener]]\nname = \"{r}\"\nlisten = \"{}\"\nupstream = [\"{}\"]\n",
                    routes[r], backends[r]
                );
                // The h2h1 route translates HTTP/2 streams for an HTTP/1.1 backend; every
                // other route keeps the client's protocol (the default).
                if r == "h2h1" {
                    cfg += "upstream_protocol = \"http1\"\n";
                }
            }
            let path = dir.join("sidewire.toml");
            std::fs::write(&path, cfg)?;
            cmd.arg(sidewire)
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "warn");
        }
        Kind::Haproxy => {
            let mut cfg = String::from(
                "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n",
            );
            for r in ROUTES {
                if r == "h2" {
                    cfg += &format!(
                        "listen {r}\n  mode http\n  http-reuse always\n  bind {} proto h2\n  server s1 {} proto h2\n",
                        routes[r], backends[r]
                    );
                } else if r == "h2h1" {
                    cfg += &format!(
                        "listen {r}\n  mode http\n  http-reuse always\n  bind {} proto h2\n  server s1 {}\n",
                        routes[r], backends[r]
                    );
                } else if r == "http" {
                    cfg += &format!(
                        "listen {r}\n  mode http\n  option http-keep-alive\n  http-reuse always\n  bind {}\n  server s1 {}\n",
                        routes[r], backends[r]
                    );
                } else {
                    cfg += &format!(
                        "listen {r}\n  mode tcp\n  option splice-request\n  option splice-response\n  bind {}\n  server s1 {}\n",
                        routes[r], backends[r]
                    );
                }
            }
            let path = dir.join("haproxy.cfg");
            std::fs::write(&path, cfg)?;
            cmd.arg("haproxy").arg("-db").arg("-f").arg(&path);
        }
        Kind::Nginx => {
            let d = dir.display();
            let mut cfg = format!(
                "load_module {NGINX_STREAM_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log error;\nevents {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 upstream be {{ server {}; keepalive 64; }}\n\
                 server {{ listen {}; location / {{ proxy_pass http://be; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_buffering off; }} }}\n\
                 upstream h2be {{ server {}; keepalive 64; }}\n\
                 server {{ listen {} http2; location / {{ grpc_pass grpc://h2be; }} }}\n\
                 server {{ listen {} http2; location / {{ proxy_pass http://be; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_buffering off; }} }}\n}}\nstream {{\n",
                backends["http"], routes["http"], backends["h2"], routes["h2"], routes["h2h1"]
            );
            for r in ROUTES
                .iter()
                .filter(|r| !["http", "h2", "h2h1"].contains(*r))
            {
                cfg += &format!(
                    "  server {{ listen {}; proxy_pass {}; }}\n",
                    routes[r], backends[r]
                );
            }
            cfg += "}\n";
            let path = dir.join("nginx.conf");
            std::fs::write(&path, cfg)?;
            cmd.arg("nginx")
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&path);
        }
        Kind::Baseline => unreachable!("handled above"),
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", kind.name()))?;
    let mut running = Running {
        routes,
        child: Some(child),
        _dir: Some(dir),
    };
    // Ready once every route accepts.
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in running.routes.values() {
        while TcpStream::connect(addr).is_err() {
            if let Some(Ok(Some(status))) = running.child.as_mut().map(|c| c.try_wait()) {
                let mut err = String::new();
                if let Some(mut e) = running.child.as_mut().and_then(|c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!(
                    "{} exited ({status}) before listening: {}",
                    kind.name(),
                    err.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("{} is not listening on {addr} after 10 s", kind.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(running)
}

/// `name version` lines of the targets run, for the report.
pub fn versions(sidewire: &Path, run: &[Kind]) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let first_line = |mut c: Command| -> Option<String> {
        let o = c.output().ok()?;
        let text = if o.stdout.is_empty() {
            o.stderr
        } else {
            o.stdout
        };
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .map(str::to_string)
    };
    if run.contains(&Kind::Sidewire) {
        let mut c = Command::new(sidewire);
        c.arg("--version");
        if let Some(s) = first_line(c) {
            v.insert("sidewire".into(), s);
        }
    }
    if run.contains(&Kind::Haproxy) && Kind::Haproxy.available() {
        let mut c = Command::new("haproxy");
        c.arg("-v");
        if let Some(s) = first_line(c) {
            v.insert("haproxy".into(), s);
        }
    }
    if run.contains(&Kind::Nginx) && Kind::Nginx.available() {
        let mut c = Command::new("nginx");
        c.arg("-v");
        if let Some(s) = first_line(c) {
            v.insert("nginx".into(), s);
        }
    }
    v
}
