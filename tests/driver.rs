//! The I/O driver choice: `runtime.driver = "auto"` falls back to epoll where a seccomp filter
//! refuses io_uring (as containerd 2.x's and Docker 25+'s default profiles do), says so, and
//! serves; `"io_uring"` fails loudly instead. The data-path tests themselves run on both
//! drivers through the `*_epoll` test targets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

const BIN: &str = env!("CARGO_BIN_EXE_sidewire");

/// How the child's `io_uring_setup` is answered.
#[derive(Clone, Copy)]
enum Seccomp {
    /// No filter.
    Off,
    /// `io_uring_setup` fails with this errno; every other syscall is allowed.
    Deny(i32),
    /// `io_uring_enter` alone fails with this errno (a ring can be made but not used).
    DenyEnter(i32),
}

/// A running `sidewire` whose stderr lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts the binary on `config`, under `seccomp`. The filter is installed on a thread of
    /// its own that then spawns the child, which inherits it (a seccomp filter belongs to the
    /// thread that installs it and to the processes it forks); the test process is unaffected.
    fn start(config: &str, seccomp: Seccomp) -> Proc {
        let dir = std::env::temp_dir().join(format!("sidewire-driver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", common::unique()));
        std::fs::write(&path, config).unwrap();
        let mut child = std::thread::spawn(move || {
            let denied = match seccomp {
                Seccomp::Off => None,
                Seccomp::Deny(errno) => Some((libc::SYS_io_uring_setup, errno)),
                Seccomp::DenyEnter(errno) => Some((libc::SYS_io_uring_enter, errno)),
            };
            if let Some((syscall, errno)) = denied {
                let filter = SeccompFilter::new(
                    [(syscall, vec![])].into_iter().collect(),
                    SeccompAction::Allow,
                    SeccompAction::Errno(errno as u32),
                    std::env::consts::ARCH.try_into().unwrap(),
                )
                .unwrap();
                let prog: BpfProgram = filter.try_into().unwrap();
                seccompiler::apply_filter(&prog).unwrap();
            }
            Command::new(BIN)
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .join()
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

    /// The next log line containing `needle` (every line before it is skipped).
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

    /// Every line until the process exits, and its exit code.
    fn wait(mut self) -> (Option<i32>, String) {
        let code = self.child.wait().unwrap().code();
        let text: Vec<String> = self.lines.iter().collect();
        (code, text.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr=` field of a log line.
fn addr_field(line: &str) -> SocketAddr {
    let a = line.split("addr=").nth(1).unwrap();
    a.split_whitespace().next().unwrap().parse().unwrap()
}

fn config(driver: &str, upstream: SocketAddr) -> String {
    format!(
        "[runtime]\nworkers = 2\npin_cores = false\ndriver = \"{driver}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{upstream}\"]\n"
    )
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

/// Opaque bytes and an HTTP request both make the round trip through the proxy.
fn assert_serves(proxy: SocketAddr) {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"\x00\x01opaque bytes").unwrap();
    let mut b = [0u8; 14];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"\x00\x01opaque bytes");
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_denies_io_uring() {
    let (up, _h) = common::upstream(common::echo);
    let p = Proc::start(&config("auto", up), Seccomp::Deny(libc::EPERM));
    let warn = p.expect_line("io_uring is not available");
    assert!(warn.contains("WARN"), "{warn}");
    assert!(warn.contains("Operation not permitted"), "{warn}");
    assert!(
        warn.contains("seccomp") && warn.contains("deploy/seccomp/sidewire.json"),
        "the warning names the cause and the fix: {warn}"
    );
    let proxy = addr_field(&p.expect_line("listening listener=t"));
    let admin = addr_field(&p.expect_line("admin listening"));
    assert_serves(proxy);
    let m = get(admin, "/metrics");
    assert!(
        m.contains("sidewire_runtime_driver{driver=\"epoll\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("sidewire_runtime_driver{driver=\"io_uring\"} 0"),
        "{m}"
    );
}

#[test]
fn an_old_kernel_answer_names_the_kernel() {
    let (up, _h) = common::upstream(common::echo);
    let p = Proc::start(&config("auto", up), Seccomp::Deny(libc::ENOSYS));
    let warn = p.expect_line("io_uring is not available");
    assert!(warn.contains("the kernel has no io_uring"), "{warn}");
    assert_serves(addr_field(&p.expect_line("listening listener=t")));
}

#[test]
fn io_uring_driver_fails_loudly_when_refused() {
    let p = Proc::start(
        &config("io_uring", common::dead_addr()),
        Seccomp::Deny(libc::EPERM),
    );
    let (code, err) = p.wait();
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
    assert!(
        err.contains("runtime: worker 0: cannot create the io_uring runtime")
            && err.contains("seccomp")
            && err.contains("runtime.driver = \"auto\""),
        "{err}"
    );
}

#[test]
fn auto_runs_io_uring_where_allowed_and_epoll_when_asked() {
    let (up, _h) = common::upstream(common::echo);
    for (driver, want) in [("auto", "io_uring"), ("epoll", "epoll")] {
        let p = Proc::start(&config(driver, up), Seccomp::Off);
        let proxy = addr_field(&p.expect_line("listening listener=t"));
        let admin = addr_field(&p.expect_line("admin listening"));
        assert_serves(proxy);
        let m = get(admin, "/metrics");
        assert!(
            m.contains(&format!("sidewire_runtime_driver{{driver=\"{want}\"}} 2")),
            "{driver}: {m}"
        );
        drop(p);
    }
}

/// A profile may allow creating a ring but deny entering it: every I/O would hang on a ring
/// that never runs. The start-up probe enters the ring once, so this falls back too.
#[test]
fn a_ring_that_cannot_be_entered_falls_back_too() {
    let (up, _h) = common::upstream(common::echo);
    let p = Proc::start(&config("auto", up), Seccomp::DenyEnter(libc::EPERM));
    p.expect_line("io_uring is not available");
    let proxy = addr_field(&p.expect_line("listening listener=t"));
    let admin = addr_field(&p.expect_line("admin listening"));
    assert_serves(proxy);
    let m = get(admin, "/metrics");
    assert!(
        m.contains("sidewire_runtime_driver{driver=\"epoll\"} 2"),
        "{m}"
    );
}
