//! Resource exhaustion (issue 16 §4): the `sidewire` binary under `prlimit --nofile=256`
//! meets 1,000 connection attempts: no crash, no busy loop, established streams keep flowing,
//! and service resumes once descriptors free up.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sidewire");

/// The proxy binary under a descriptor limit, its log lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(nofile: u32, config: &str) -> Proc {
        let dir = std::env::temp_dir().join(format!("sidewire-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("exhaustion-{}.toml", common::unique()));
        let config = config.replacen(
            "[runtime]\n",
            &format!("[runtime]\ndriver = \"{}\"\n", common::driver()),
            1,
        );
        std::fs::write(&path, config).unwrap();
        // Soft and hard limit both: the proxy raises its soft limit to the hard one at start.
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .args([BIN, "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("prlimit (util-linux) runs");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc { child, lines }
    }

    /// Waits (up to 20 s) for a log line containing `needle`.
    fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if l.contains(needle) {
                return l;
            }
        }
    }

    /// User + system CPU time so far (`/proc/PID/stat` fields 14 and 15), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The command name may hold spaces: fields are counted after its closing ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Open descriptors of the proxy.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
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
    let a = a.split_whitespace().next().unwrap();
    a.parse().unwrap_or_else(|_| panic!("bad addr in {line}"))
}

/// An echo round trip of `msg` on `c`.
fn round_trip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    c.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

fn metrics(admin: SocketAddr) -> String {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn out_of_descriptors_backs_off_keeps_streams_and_recovers() {
    let (up, _h) = common::upstream(common::echo);
    let mut p = Proc::start(
        256,
        &format!(
            "[runtime]\nworkers = 1\npin_cores = false\nshutdown_grace_ms = 1000\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\nprotocol = \"opaque\"\n"
        ),
    );
    let proxy = addr_field(&p.expect_line("listening listener=t"));
    let admin = addr_field(&p.expect_line("admin listening"));

    // One stream established before the flood.
    let mut first = TcpStream::connect(proxy).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    round_trip(&mut first, b"before").unwrap();

    // 1,000 connection attempts that stay open: about 120 fit in 256 descriptors (two each),
    // the rest wait in the listen backlog (4,096) while accept fails with EMFILE.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = TcpStream::connect_timeout(&proxy, Duration::from_secs(2)) {
            flood.push(c);
        }
    }
    assert!(
        flood.len() >= 900,
        "the backlog holds them: {}",
        flood.len()
    );
    p.expect_line("accept failed");
    let fds = p.open_fds();
    assert!(fds >= 250, "the proxy is at its limit: {fds} descriptors");

    // Out of descriptors, the worker backs off: measured over 2 s, it uses next to no CPU.
    let ticks0 = p.cpu_ticks();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = p.cpu_ticks() - ticks0;
    let secs = t0.elapsed().as_secs_f64();
    // The clock tick is 100 Hz on Linux (`getconf CLK_TCK`).
    let cpu = ticks as f64 / 100.0 / secs;
    println!("proxy CPU while out of descriptors: {:.1}% of a core ({ticks} ticks in {secs:.2}s), {fds} fds", cpu * 100.0);
    assert!(cpu < 0.05, "busy loop: {:.1}% of a core", cpu * 100.0);

    // The established stream keeps flowing, and the proxy is alive.
    round_trip(&mut first, b"during").unwrap();
    assert!(p.alive(), "no crash");

    // Descriptors free up: the flood leaves, and new connections are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = TcpStream::connect(proxy).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            round_trip(&mut c, b"after")
        });
        if ok.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume: {ok:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    round_trip(&mut first, b"still").unwrap();
    let m = metrics(admin);
    let emfile = common::metric(
        &m,
        "tcp_accept_errors_total{listener=\"t\",errno=\"EMFILE\"}",
    );
    assert!(emfile >= Some(1.0), "accept errors counted: {emfile:?}");
    println!("tcp_accept_errors_total{{errno=\"EMFILE\"}} = {emfile:?}");
    assert!(p.alive());
}
