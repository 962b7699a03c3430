//! The `sidewire` binary: CLI, config errors, port in use, signals and drain.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sidewire");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sidewire-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `sidewire [args]`, expecting a quick exit; returns (code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--config") && out.contains("check") && out.contains("--log-format"),
        "{out}"
    );
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("sidewire "), "{out}");
}

#[test]
fn check_prints_the_effective_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sidewire.toml");
    let (code, out, err) = run(&["check", "--config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
    assert!(out.contains("shutdown_grace_ms = 30000"), "{out}");
    assert!(out.contains("name = \"outbound\""), "{out}");
    // Without --config: the embedded default, same content.
    let (code, out2, _) = run(&["check"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        out2.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn bad_configs_exit_nonzero_with_one_clear_line() {
    let listener = |extra: &str| {
        format!("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n{extra}")
    };
    let cases = [
        ("syntax.toml", "[runtime\n".to_string(), "(syntax)"),
        ("unknown.toml", listener("colour = \"blue\"\n"), "listener[0].colour"),
        (
            "badaddr.toml",
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:99999\"\nupstream = [\"127.0.0.1:9\"]\n".into(),
            "listener[0].listen",
        ),
        (
            "dupname.toml",
            format!("{}{}", listener(""), listener("")),
            "listener[1].name",
        ),
    ];
    for (file, text, key) in cases {
        let path = write_config(file, &text);
        for args in [
            vec!["--config", path.to_str().unwrap()],
            vec!["check", "--config", path.to_str().unwrap()],
        ] {
            let (code, _, err) = run(&args);
            assert_eq!(code, 2, "{file}: {err}");
            let line = err.trim_end();
            assert_eq!(line.lines().count(), 1, "one line: {line}");
            assert!(
                line.contains(path.to_str().unwrap()),
                "names the file: {line}"
            );
            assert!(line.contains(key), "names the key {key}: {line}");
        }
    }
    let (code, _, err) = run(&["--config", "/nonexistent/sidewire.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/sidewire.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = write_config(
        "inuse.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"a\"\nlisten = \"{addr}\"\nupstream = [\"127.0.0.1:9\"]\n"
        ),
    );
    let (code, _, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(path.to_str().unwrap()), "{err}");
    assert!(last.contains("listener[0].listen"), "{err}");
    assert!(
        last.contains(&addr.to_string()) && last.contains("in use"),
        "{err}"
    );
}

/// Issue 12: a bind error at start-up (a listener's or the admin port in use) prints exactly
/// one line on stderr, the `file: key: problem` line, and nothing else (before, two INFO
/// lines came first).
#[test]
fn start_up_errors_print_exactly_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cases = [
        (
            "inuse-listener.toml",
            format!("[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"a\"\nlisten = \"{addr}\"\nupstream = [\"127.0.0.1:9\"]\n"),
            "listener[0].listen",
        ),
        (
            "inuse-admin.toml",
            format!("[admin]\nlisten = \"{addr}\"\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n"),
            "admin.listen",
        ),
    ];
    for (file, text, key) in cases {
        let path = write_config(file, &text);
        let out = Command::new(env!("CARGO_BIN_EXE_sidewire"))
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(out.stdout.is_empty(), "{file}: nothing on stdout");
        assert_eq!(err.lines().count(), 1, "{file}: exactly one line: {err}");
        let line = err.trim_end();
        assert!(
            line.starts_with("sidewire: ")
                && line.contains(path.to_str().unwrap())
                && line.contains(key)
                && line.contains("in use"),
            "{file}: {line}"
        );
    }
}

/// A running binary whose log lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(config: &str) -> Proc {
        let path = write_config(&format!("run-{}.toml", rand_suffix()), config);
        let mut child = Command::new(BIN)
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc { child, lines }
    }

    /// Waits for a log line containing `needle`, returns it.
    fn expect_line(&self, needle: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if l.contains(needle) {
                return l;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

/// The `addr=` field of a log line.
fn addr_field(line: &str) -> SocketAddr {
    let a = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    a.parse().unwrap_or_else(|_| panic!("bad addr in {line}"))
}

fn http_get(addr: SocketAddr, path: &str) -> u16 {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s[9..12].parse().unwrap()
}

#[test]
fn sigterm_drains_open_connections_then_exits_zero() {
    let (up, _h) = common::upstream(common::echo);
    let p = Proc::start(&format!(
        "[runtime]\nworkers = 2\npin_cores = false\nshutdown_grace_ms = 20000\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n"
    ));
    let proxy = addr_field(&p.expect_line("listening listener=a"));
    let admin = addr_field(&p.expect_line("admin listening"));
    assert_eq!(http_get(admin, "/ready"), 200);

    let mut c = TcpStream::connect(proxy).unwrap();
    c.write_all(b"one").unwrap();
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();

    p.signal("-TERM");
    p.expect_line("draining");
    assert_eq!(http_get(admin, "/ready"), 503);
    assert_eq!(http_get(admin, "/live"), 200);
    c.write_all(b"two").unwrap();
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"two", "open connection still served while draining");
    drop(c);

    let mut p = p;
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigint_with_nothing_open_exits_zero_at_once() {
    let mut p = Proc::start(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n",
    );
    p.expect_line("admin listening");
    p.signal("-INT");
    // Default grace is 30 s; with no connection open the exit must not wait for it.
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `THP_enabled` of process `pid` (`/proc/PID/status`, Linux 5.0 and later): 0 once the process
/// opted out with `PR_SET_THP_DISABLE`.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
        .expect("THP_enabled in /proc/PID/status")
}

/// By default the binary opts out of transparent huge pages before its workers allocate (idle
/// connections then cost 4 KiB pages, not parts of 2 MiB ones); `true` leaves the inherited
/// setting alone.
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let cfg = "[runtime]\nworkers = 1\npin_cores = false\n{thp}[admin]\nlisten = \"127.0.0.1:0\"\n\
               [[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n";
    let inherited = thp_enabled(std::process::id());
    for (thp, want) in [
        ("", "0"),
        ("transparent_huge_pages = true\n", inherited.as_str()),
    ] {
        let mut p = Proc::start(&cfg.replace("{thp}", thp));
        p.expect_line("admin listening");
        assert_eq!(thp_enabled(p.child.id()), want, "with {thp:?}");
        p.signal("-INT");
        assert_eq!(p.child.wait().unwrap().code(), Some(0));
    }
}

/// The flags of the dry-run snapshot (Linkerd's usual skips plus a range and subnets).
const INIT_FLAGS: &[&str] = &[
    "--proxy-uid",
    "2102",
    "--skip-inbound-ports",
    "25,3306,10000-10100",
    "--skip-outbound-ports",
    "4567,4568",
    "--skip-subnets",
    "10.0.0.0/8,fd00::/8",
];

#[test]
fn init_dry_run_output_is_a_stable_snapshot() {
    let mut args = vec!["init", "--dry-run"];
    args.extend_from_slice(INIT_FLAGS);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, include_str!("../testdata/init-dry-run.nft"));
    let (code, out, err) = run(&["init", "--dry-run", "--uninstall", "--proxy-uid", "2102"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, include_str!("../testdata/init-uninstall.nft"));
}

#[test]
fn init_without_nft_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["init", "--proxy-uid", "2102"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("sidewire init: nft not found in PATH")
            && err.contains("apt-get install nftables"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn init_rejects_bad_lists() {
    for (flag, bad, what) in [
        ("--skip-inbound-ports", "25,70000", "70000"),
        ("--skip-outbound-ports", "100-10", "start is after"),
        ("--skip-subnets", "10.0.0.0/40", "prefix length"),
    ] {
        let (code, _, err) = run(&["init", "--dry-run", "--proxy-uid", "1", flag, bad]);
        assert_eq!(code, 2, "{flag} {bad}: {err}");
        assert!(err.contains(what), "{flag} {bad}: {err}");
    }
}

#[test]
fn check_accepts_the_sidecar_preset() {
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sidecar.toml");
    let (code, out, err) = run(&["check", "--config", preset]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("upstream = \"original-dst\""), "{out}");
    assert!(out.contains("direction = \"inbound\""), "{out}");
    assert!(out.contains("listen = \"127.0.0.1:4140\""), "{out}");
    assert!(out.contains("listen = \"0.0.0.0:4143\""), "{out}");
}

fn http_post(addr: SocketAddr, path: &str) -> u16 {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "POST {path} HTTP/1.1\r\ncontent-length: 0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s[9..12].parse().unwrap()
}

const ONE_LISTENER: &str =
    "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n";

/// `POST /shutdown` (for Jobs) drains and exits 0 like SIGTERM, only when enabled.
#[test]
fn post_shutdown_drains_and_exits_only_when_enabled() {
    let off = Proc::start(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{ONE_LISTENER}"
    ));
    let admin = addr_field(&off.expect_line("admin listening"));
    assert_eq!(http_post(admin, "/shutdown"), 404);
    assert_eq!(http_get(admin, "/ready"), 200, "still running");

    let mut on = Proc::start(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nenable_shutdown = true\n{ONE_LISTENER}"
    ));
    let admin = addr_field(&on.expect_line("admin listening"));
    assert_eq!(http_get(admin, "/shutdown"), 405, "GET does not shut down");
    assert_eq!(http_post(admin, "/shutdown"), 202);
    on.expect_line("by=\"POST /shutdown\"");
    assert_eq!(on.child.wait().unwrap().code(), Some(0));
}

/// HUP, USR1 and USR2 do not kill the proxy (their default action would): HUP reloads the
/// (unchanged) file, USR1 and USR2 are logged and ignored.
#[test]
fn hup_reloads_and_usr1_usr2_are_logged_and_ignored() {
    let mut p = Proc::start(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{ONE_LISTENER}"
    ));
    let admin = addr_field(&p.expect_line("admin listening"));
    p.signal("-HUP");
    p.expect_line("reloaded: 0 listener(s) added, 0 changed, 0 removed, 1 unchanged");
    p.signal("-USR1");
    p.expect_line("signal ignored");
    p.signal("-USR2");
    p.expect_line("signal ignored");
    assert_eq!(http_get(admin, "/ready"), 200, "still serving");
    p.signal("-TERM");
    assert_eq!(p.child.wait().unwrap().code(), Some(0));
}

#[test]
fn command_line_errors_are_one_line() {
    for (args, what) in [
        (&["init"][..], "--proxy-uid"),
        (&["--bogus"][..], "--bogus"),
        (
            &["inject", "--opaque-ports", "x"][..],
            "\"x\" is not a port",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(
            err.starts_with("sidewire: error: ") && err.contains(what),
            "{args:?}: {err}"
        );
    }
    let (code, out, _) = run(&["inject", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--opaque-ports",
        "--skip-inbound-ports",
        "--skip-outbound-ports",
        "--image",
        "--proxy-uid",
        "--classic-sidecar",
        "--seccomp-profile",
        concat!("ghcr.io/sidewire/sidewire:", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(out.contains(flag), "inject --help lacks {flag}: {out}");
    }
}

/// `workers = 0` under a real cgroup CPU quota of half a CPU: one worker, whatever the machine
/// has. Uses a child of this process's own cgroup (v1 `cpu` controller, or v2 with `cpu`
/// enabled for children), removed afterwards; where neither is writable (an unprivileged or
/// locked-down runner) the test says so and checks nothing more (the quota reader's fixture
/// tests in `src/cpus.rs` still run everywhere).
#[test]
fn workers_follow_a_real_cgroup_cpu_quota() {
    let Some((dir, quota_files)) = make_quota_cgroup() else {
        eprintln!("SKIPPED: no writable cgroup cpu controller here");
        return;
    };
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(dir.clone());
    for (file, value) in quota_files {
        std::fs::write(dir.join(file), value).unwrap();
    }
    // The shell joins the cgroup, then becomes `sidewire check`.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" check",
            dir.display()
        ))
        .arg(BIN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("runtime.workers = 0 means 1 worker(s)") && text.contains("quota 0.50"),
        "{text}"
    );
}

/// A fresh child cgroup with the cpu controller, and the files that set a 0.5-CPU quota.
fn make_quota_cgroup() -> Option<(std::path::PathBuf, Vec<(&'static str, &'static str)>)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let name = format!("sidewire-test-{}", std::process::id());
    for m in mounts.lines() {
        let Some((pre, post)) = m.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        let (Some(fstype), Some(sup), Some(point)) =
            (post.next(), post.nth(1), pre.split_whitespace().nth(4))
        else {
            continue;
        };
        let (path, files): (&str, Vec<(&str, &str)>) =
            if fstype == "cgroup" && sup.split(',').any(|o| o == "cpu") {
                let line = own.lines().find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
                })?;
                (
                    line.splitn(3, ':').nth(2)?,
                    vec![
                        ("cpu.cfs_period_us", "100000"),
                        ("cpu.cfs_quota_us", "50000"),
                    ],
                )
            } else if fstype == "cgroup2" {
                let line = own.lines().find(|l| l.starts_with("0::"))?;
                let base = Path::new(point).join(line[3..].trim_start_matches('/'));
                let subtree = std::fs::read_to_string(base.join("cgroup.subtree_control")).ok()?;
                if !subtree.split_whitespace().any(|c| c == "cpu") {
                    continue;
                }
                (&line[3..], vec![("cpu.max", "50000 100000")])
            } else {
                continue;
            };
        let dir = Path::new(point)
            .join(path.trim_start_matches('/'))
            .join(&name);
        if std::fs::create_dir(&dir).is_ok() {
            return Some((dir, files));
        }
    }
    None
}

/// `inject` has no use for `--config` (the proxy's config is the preset plus the pod's ports):
/// refused rather than silently ignored.
#[test]
fn inject_refuses_config() {
    let (code, out, err) = run(&["inject", "--config", "/nonexistent", "-"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("--config is not read by inject"), "{err}");
    let (code, _, err) = run(&["inject", "--proxy-uid", "4294967295", "-"]);
    assert_eq!(code, 2, "{err}");
}
