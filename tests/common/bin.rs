//! The `sidewire` binary as a child process: config files, start-up lines, the addresses
//! it logs, SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sidewire");

pub fn write_config(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sidewire-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}.toml", super::unique()));
    std::fs::write(&p, text).unwrap();
    p
}

/// A running binary whose stderr lines arrive on a channel.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stderr, line by line.
    pub lines: mpsc::Receiver<String>,
    /// The config file it was started with.
    pub config: std::path::PathBuf,
}

impl Proc {
    /// Starts the binary with `config` (written to a file), `args` and `RUST_LOG`.
    pub fn start(config: &str, args: &[&str], rust_log: &str) -> Proc {
        Proc::start_under(&[], config, args, rust_log)
    }

    /// Like [`Proc::start`], run by `wrapper` (a command and its arguments, e.g.
    /// `["prlimit", "--nofile=256:256"]`) when it is not empty.
    pub fn start_under(wrapper: &[&str], config: &str, args: &[&str], rust_log: &str) -> Proc {
        let path = write_config(config);
        let mut cmd = match wrapper.split_first() {
            Some((run, wrapper_args)) => {
                let mut c = Command::new(run);
                c.args(wrapper_args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(["--config", path.to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", rust_log)
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
        Proc {
            child,
            lines,
            config: path,
        }
    }

    /// The next line for which `want` holds; the lines skipped on the way are returned too.
    pub fn until(&self, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let mut skipped = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no such line; saw {skipped:#?}"));
            if want(&l) {
                return (l, skipped);
            }
            skipped.push(l);
        }
    }

    /// Waits for start-up; returns the admin address and the start-up lines (the listeners'
    /// "listening" lines come before "admin listening").
    pub fn started(&self) -> (SocketAddr, Vec<String>) {
        let (line, mut before) = self.until(|l| l.contains("admin listening"));
        let addr = if line.starts_with('{') {
            json(&line)["addr"].as_str().unwrap().to_string()
        } else {
            plain_field(&line, "addr")
        };
        before.push(line);
        (admin_of(&addr), before)
    }

    /// SIGTERM, the exit code, and every line not read yet.
    pub fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let code = self.child.wait().unwrap().code();
        (code, self.lines.iter().collect())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of listener `name` in the start-up lines.
pub fn listener_addr(lines: &[String], name: &str) -> SocketAddr {
    let line = lines
        .iter()
        .find(|l| {
            l.contains(&format!("listener={name} "))
                || l.contains(&format!("\"listener\":\"{name}\""))
        })
        .unwrap_or_else(|| panic!("no listener {name} in {lines:#?}"));
    let addr = if line.starts_with('{') {
        json(line)["addr"].as_str().unwrap().to_string()
    } else {
        plain_field(line, "addr")
    };
    addr.parse().unwrap()
}

/// `field=value` from a plain line (`addr=127.0.0.1:1`, or a quoted string's content).
pub fn plain_field(line: &str, field: &str) -> String {
    let v = line
        .split(&format!(" {field}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {field} in {line}"));
    match v.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap().to_string(),
        None => v.split_whitespace().next().unwrap().to_string(),
    }
}

/// The admin address from the "admin listening" line (0.0.0.0 becomes 127.0.0.1).
pub fn admin_of(addr: &str) -> SocketAddr {
    let mut a: SocketAddr = addr.parse().unwrap();
    if a.ip().is_unspecified() {
        a.set_ip([127, 0, 0, 1].into());
    }
    a
}

pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}
