//! Configuration reload (issue 16 §1) on a running proxy: listeners changed, added and
//! removed; open connections finish on the settings they started with (HTTP/1 answers their
//! next request with `connection: close`, opaque streams keep their upstream), new ones get
//! the new settings; sockets stay open; metrics keep counting by listener name; a bad
//! configuration or an address in use changes nothing. Then SIGHUP and `POST /reload` on the
//! binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::bin::{listener_addr, write_config, Proc};
use common::{admin_get, metric, start_toml, upstream, wait_metric};
use sidewire::config::Config;

/// An HTTP/1 upstream whose every answer's body is `name` (keep-alive).
fn named_http(name: &'static str) -> SocketAddr {
    upstream(move |c: TcpStream| {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        loop {
            // A request head (no body: the tests send GETs).
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                name.len()
            );
            if w.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    })
    .0
}

/// An opaque upstream that greets with `name` and a newline, then echoes.
fn named_echo(name: &'static str) -> SocketAddr {
    upstream(move |mut c: TcpStream| {
        if c.write_all(format!("{name}\n").as_bytes()).is_err() {
            return;
        }
        common::echo(c)
    })
    .0
}

/// One keep-alive GET on `c`: (body, whether the answer says `connection: close`).
fn get(c: &mut BufReader<TcpStream>) -> (String, bool) {
    c.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (mut len, mut close) = (0, false);
    let mut status = String::new();
    c.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    loop {
        let mut line = String::new();
        assert!(c.read_line(&mut line).unwrap() > 0, "closed mid-head");
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (String::from_utf8(body).unwrap(), close)
}

fn connect(a: SocketAddr) -> BufReader<TcpStream> {
    let c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(c)
}

/// A new connection's greeting line from an opaque listener.
fn greeting(c: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Sends `msg` on an opaque connection and reads it back.
fn echoes(c: &mut BufReader<TcpStream>, msg: &str) -> bool {
    c.get_mut().write_all(msg.as_bytes()).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).is_ok() && back == msg.as_bytes()
}

fn runtime() -> String {
    "[runtime]\nworkers = 2\npin_cores = false\nshutdown_grace_ms = 2000\n\
     [admin]\nlisten = \"127.0.0.1:0\"\n"
        .to_string()
}

fn listener(name: &str, up: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n{extra}\n"
    )
}

/// A reload config on the same driver `start_toml` uses.
fn reload_cfg(text: &str) -> Config {
    let text = text.replacen(
        "[runtime]\n",
        &format!("[runtime]\ndriver = \"{}\"\n", common::driver()),
        1,
    );
    Config::parse(&text, "reload.toml").expect("reload config is valid")
}

#[test]
fn a_changed_upstream_takes_new_connections_and_open_ones_finish_on_theirs() {
    let (a, b) = (named_http("A"), named_http("B"));
    let mut s = start_toml(&(runtime() + &listener("t", a, "")));
    let addr = s.listener_addr("t").unwrap();
    let mut old = connect(addr);
    assert_eq!(get(&mut old), ("A".into(), false));

    let summary = s
        .reload(reload_cfg(&(runtime() + &listener("t", b, ""))))
        .unwrap();
    assert_eq!(
        (
            summary.stats.changed,
            summary.stats.added,
            summary.stats.removed
        ),
        (1, 0, 0),
        "{summary}"
    );
    assert_eq!(s.listener_addr("t"), Some(addr), "the socket stays");

    // The open connection's next request still goes where it started, told to close.
    assert_eq!(get(&mut old), ("A".into(), true));
    let mut rest = Vec::new();
    assert_eq!(old.read_to_end(&mut rest).unwrap(), 0, "closed after it");
    // New connections get the new upstream.
    for _ in 0..4 {
        let mut new = connect(addr);
        assert_eq!(get(&mut new), ("B".into(), false));
    }
    // The listener's counts carried over: 2 + 4 requests, under one series name.
    wait_metric(&s, "request_total{listener=\"t\"}", 6.0);
    let (_, m) = admin_get(&s, "/metrics");
    assert_eq!(
        metric(&m, "sidewire_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "sidewire_config_last_reload_successful"),
        Some(1.0)
    );

    // The same configuration again changes nothing.
    let summary = s
        .reload(reload_cfg(&(runtime() + &listener("t", b, ""))))
        .unwrap();
    assert_eq!((summary.stats.unchanged, summary.stats.changed), (1, 0));
    let mut kept = connect(addr);
    assert_eq!(get(&mut kept), ("B".into(), false));
    s.reload(reload_cfg(&(runtime() + &listener("t", b, ""))))
        .unwrap();
    assert_eq!(get(&mut kept), ("B".into(), false), "unchanged: kept alive");
}

#[test]
fn opaque_streams_keep_their_upstream_across_a_reload() {
    let (a, b) = (named_echo("A"), named_echo("B"));
    let opaque = "protocol = \"opaque\"";
    let mut s = start_toml(&(runtime() + &listener("t", a, opaque)));
    let addr = s.listener_addr("t").unwrap();
    let mut old = connect(addr);
    assert_eq!(greeting(&mut old), "A");
    assert!(echoes(&mut old, "before"));

    s.reload(reload_cfg(&(runtime() + &listener("t", b, opaque))))
        .unwrap();
    assert!(echoes(&mut old, "after"), "the open stream carries on");
    let mut new = connect(addr);
    assert_eq!(greeting(&mut new), "B");
    assert!(echoes(&mut new, "new"));
    assert!(echoes(&mut old, "still"));
}

#[test]
fn listeners_are_added_and_removed_and_open_connections_on_a_removed_one_finish() {
    let (a, b) = (named_echo("A"), named_echo("B"));
    let opaque = "protocol = \"opaque\"";
    let mut s = start_toml(&(runtime() + &listener("t", a, opaque) + &listener("gone", b, opaque)));
    let gone = s.listener_addr("gone").unwrap();
    let mut open = connect(gone);
    assert_eq!(greeting(&mut open), "B");

    let summary = s
        .reload(reload_cfg(
            &(runtime() + &listener("t", a, opaque) + &listener("new", b, opaque)),
        ))
        .unwrap();
    assert_eq!(
        (
            summary.stats.unchanged,
            summary.stats.added,
            summary.stats.removed
        ),
        (1, 1, 1),
        "{summary}"
    );
    assert_eq!(s.listener_addr("gone"), None);
    let added = s.listener_addr("new").expect("the new listener is bound");
    let mut c = connect(added);
    assert_eq!(greeting(&mut c), "B");
    assert!(echoes(&mut c, "hello"));
    // The removed listener's sockets close once each worker's accept loop has stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(gone).is_ok() {
        assert!(Instant::now() < deadline, "{gone} still accepts");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        echoes(&mut open, "still here"),
        "its open stream carries on"
    );
    // Its series stay while it has connections.
    let (_, m) = admin_get(&s, "/metrics");
    assert!(m.contains("listener=\"gone\""), "{m}");
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = admin_get(&s, "/metrics");
        if !m.contains("listener=\"gone\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of a removed listener stay"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_bad_configuration_or_an_address_in_use_changes_nothing() {
    let (a, b) = (named_http("A"), named_http("B"));
    let mut s = start_toml(&(runtime() + &listener("t", a, "")));
    let addr = s.listener_addr("t").unwrap();

    // A file that does not validate: the file, the key and the problem.
    let path = write_config(&(runtime() + &listener("t", b, "connect_timeout_ms = 0")));
    let e = s.reload_file(&path).unwrap_err();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("connect_timeout_ms"),
        "{e}"
    );
    // An address in use: nothing is applied, not even the valid change to `t`.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let text = runtime()
        + &listener("t", b, "")
        + &format!("[[listener]]\nname = \"busy\"\nlisten = \"{busy}\"\nupstream = [\"{b}\"]\n");
    let e = s.reload(reload_cfg(&text)).unwrap_err();
    assert!(
        e.starts_with(&format!("listener[1].listen: cannot listen on {busy}")),
        "{e}"
    );
    assert_eq!(s.listener_addr("busy"), None);
    assert_eq!(get(&mut connect(addr)), ("A".into(), false));
    let (_, m) = admin_get(&s, "/metrics");
    assert_eq!(
        metric(&m, "sidewire_config_reloads_total{result=\"error\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "sidewire_config_last_reload_successful"),
        Some(0.0)
    );
    // Once the address is free, the same reload applies.
    drop(taken);
    let summary = s.reload(reload_cfg(&text)).unwrap();
    assert_eq!((summary.stats.changed, summary.stats.added), (1, 1));
    assert_eq!(s.listener_addr("busy"), Some(busy));
    assert_eq!(get(&mut connect(busy)), ("B".into(), false));
    assert_eq!(get(&mut connect(addr)), ("B".into(), false));
}

#[test]
fn settings_that_need_a_restart_are_named_and_wait() {
    let a = named_http("A");
    let mut s = start_toml(&(runtime() + &listener("t", a, "")));
    let text = runtime().replace("workers = 2", "workers = 3") + &listener("t", a, "");
    let summary = s.reload(reload_cfg(&text)).unwrap();
    assert_eq!(summary.restart_needed, ["runtime.workers"]);
    assert!(
        summary
            .to_string()
            .ends_with("changed but applied only at the next start: runtime.workers"),
        "{summary}"
    );
    let (_, m) = admin_get(&s, "/metrics");
    assert_eq!(metric(&m, "sidewire_workers"), Some(2.0));
    assert_eq!(
        get(&mut connect(s.listener_addr("t").unwrap())),
        ("A".into(), false)
    );
}

/// SIGHUP and `POST /reload` re-read the file given with `--config`.
#[test]
fn sighup_and_post_reload_reread_the_config_file() {
    if common::driver() == "epoll" {
        return; // the binary picks its own driver; once is enough
    }
    let (a, b) = (named_http("A"), named_http("B"));
    let text = |up: SocketAddr, extra: &str| {
        "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 1\npin_cores = false\n".to_string()
            + &listener("t", up, extra)
    };
    let p = Proc::start(&text(a, ""), &[], "info");
    let path = p.config.clone();
    let (admin, lines) = p.started();
    let t = listener_addr(&lines, "t");
    assert_eq!(get(&mut connect(t)), ("A".into(), false));

    std::fs::write(&path, text(b, "")).unwrap();
    kill("-HUP", &p);
    let (line, _) = p.until(|l| l.contains("reloaded:"));
    assert!(line.contains("1 changed"), "{line}");
    assert_eq!(get(&mut connect(t)), ("B".into(), false));

    std::fs::write(&path, text(a, "bogus_key = 1")).unwrap();
    let (code, body) = post(admin, "/reload");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.starts_with("reload rejected, the running configuration stays: ")
            && body.contains("bogus_key"),
        "{body}"
    );
    p.until(|l| l.contains("reload rejected"));
    assert_eq!(get(&mut connect(t)), ("B".into(), false));

    std::fs::write(&path, text(a, "")).unwrap();
    let (code, body) = post(admin, "/reload");
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "reloaded: 0 listener(s) added, 1 changed, 0 removed, 0 unchanged\n"
        )
    );
    assert_eq!(get(&mut connect(t)), ("A".into(), false));
    let (_, m) = http_get(admin, "/metrics");
    assert_eq!(
        metric(&m, "sidewire_config_reloads_total{result=\"ok\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "sidewire_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    assert_eq!(http_get(admin, "/reload").0, 405);
    assert_eq!(p.stop().0, Some(0));
}

fn kill(sig: &str, p: &Proc) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn request(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let code = s[9..12].parse().unwrap();
    (code, s.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn post(admin: SocketAddr, path: &str) -> (u16, String) {
    request(admin, "POST", path)
}

fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    request(admin, "GET", path)
}

/// A reloaded `shutdown_grace_ms` is the one the next drain uses (review: workers kept the
/// start's), and the answer names it.
#[test]
fn a_reloaded_grace_period_is_the_one_the_drain_uses() {
    let a = named_echo("A");
    let opaque = "protocol = \"opaque\"";
    let long = runtime().replace("shutdown_grace_ms = 2000", "shutdown_grace_ms = 600000");
    let mut s = start_toml(&(long + &listener("t", a, opaque)));
    let short = runtime().replace("shutdown_grace_ms = 2000", "shutdown_grace_ms = 100");
    let summary = s
        .reload(reload_cfg(&(short + &listener("t", a, opaque))))
        .unwrap();
    assert_eq!(summary.applied, ["runtime.shutdown_grace_ms"]);
    assert!(
        summary
            .to_string()
            .contains("; runtime.shutdown_grace_ms changed"),
        "{summary}"
    );
    // A stream that never ends holds the drain for the whole grace period.
    let mut open = connect(s.listener_addr("t").unwrap());
    assert_eq!(greeting(&mut open), "A");
    let t = Instant::now();
    let report = s.shutdown();
    assert_eq!(report.finished, report.workers);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "{:?}: the start's 600 s grace",
        t.elapsed()
    );
}
