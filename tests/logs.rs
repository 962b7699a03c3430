//! Logs, through the `sidewire` binary (a process has one log subscriber): JSON lines,
//! `GET`/`PUT /log-level` changing what is logged at run time, and the access log with its
//! per-worker rate limit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bin::{json, listener_addr, write_config, Proc, BIN};
use common::{dead_addr, metric, upstream};
use serde_json::Value;

/// One request on a new connection; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let code = s[9..12].parse().unwrap();
    (code, s.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// Sends one HTTP/1.1 request on `c` and reads its answer (Content-Length framed); returns
/// (status, bytes received).
fn exchange(c: &mut BufReader<TcpStream>, req: &str) -> (u16, usize) {
    c.get_mut().write_all(req.as_bytes()).unwrap();
    let (mut n, mut len, mut code) = (0, 0, 0);
    loop {
        let mut line = String::new();
        assert!(c.read_line(&mut line).unwrap() > 0, "closed mid-answer");
        n += line.len();
        let lower = line.to_ascii_lowercase();
        if code == 0 {
            code = line[9..12].parse().unwrap();
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (code, n + len)
}

/// A keep-alive HTTP/1.1 upstream answering every request with `hello`.
fn hello_upstream() -> SocketAddr {
    upstream(|c: TcpStream| {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => {
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                    if w.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    })
    .0
}

fn config(admin: &str, log: &str, listeners: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\npin_cores = false\nshutdown_grace_ms = 1000\n\
         [admin]\nlisten = \"{admin}\"\n[log]\n{log}\n{listeners}"
    )
}

fn listener(name: &str, up: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n{extra}\n"
    )
}

/// Every line is one JSON object with a timestamp, level, target and message, the event's
/// fields beside them.
fn assert_json_line(v: &Value, line: &str) {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k}: {line}"));
    assert!(
        s("timestamp").ends_with('Z') && s("timestamp").contains('T'),
        "{line}"
    );
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&s("level")),
        "{line}"
    );
    assert!(
        !s("target").is_empty() && !s("message").is_empty(),
        "{line}"
    );
}

#[test]
fn json_lines_have_timestamp_level_target_message_and_fields() {
    let listeners = listener("a", dead_addr(), "");
    // The flag, or the config key; RUST_LOG=debug for lines from the data path too.
    for (args, log) in [
        (&["--log-format", "json"][..], ""),
        (&[][..], "format = \"json\""),
    ] {
        let p = Proc::start(&config("127.0.0.1:0", log, &listeners), args, "debug");
        let (admin, before) = p.started();
        let line = before.iter().find(|l| l.contains("\"listening\"")).unwrap();
        let v = json(line);
        assert_eq!(v["listener"], "a", "{line}");
        assert_eq!(v["target"], "sidewire::server", "{line}");
        let proxy = listener_addr(&before, "a");
        assert_eq!(http(admin, "GET", "/ready", "").0, 200);
        // A bad request head: debug lines from the worker, with fields.
        let mut c = TcpStream::connect(proxy).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let (line, _) = p.until(|l| l.contains("bad request head"));
        assert_eq!(json(&line)["level"], "DEBUG", "{line}");
        assert_eq!(json(&line)["listener"], "a", "{line}");
        let (code, after) = p.stop();
        assert_eq!(code, Some(0));
        for l in before.iter().chain(&after) {
            assert_json_line(&json(l), l);
        }
        assert!(
            after.iter().any(|l| json(l)["message"] == "stopped"),
            "{after:#?}"
        );
    }
    // The flag overrides the file.
    let p = Proc::start(
        &config("127.0.0.1:0", "format = \"json\"", &listeners),
        &["--log-format", "plain"],
        "info",
    );
    let (_, lines) = p.started();
    for l in lines {
        assert!(!l.starts_with('{') && l.contains(" INFO "), "{l}");
    }
}

/// Start-up errors are still exactly one plain line (`sidewire: file: key: problem`), with
/// JSON logs asked for; so are bad values of the flag and the key.
#[test]
fn start_up_errors_stay_one_plain_line_with_json_logs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let listeners = listener("a", dead_addr(), "");
    for (text, args, key) in [
        (
            config(&addr.to_string(), "", &listeners),
            &["--log-format", "json"][..],
            "admin.listen",
        ),
        (
            config("127.0.0.1:0", "format = \"json\"", &listeners).replace(
                "listen = \"127.0.0.1:0\"\nupstream",
                &format!("listen = \"{addr}\"\nupstream"),
            ),
            &[][..],
            "listener[0].listen",
        ),
        (
            config("127.0.0.1:0", "format = \"xml\"", &listeners),
            &[][..],
            "log.format",
        ),
        (
            config("127.0.0.1:0", "access_lines_per_second = 0", &listeners),
            &[][..],
            "log.access_lines_per_second",
        ),
        (
            config("127.0.0.1:0", "", &listeners),
            &["--log-format", "xml"][..],
            "--log-format",
        ),
    ] {
        let path = write_config(&text);
        let out = Command::new(BIN)
            .args(["--config", path.to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert_eq!(err.lines().count(), 1, "{key}: exactly one line: {err}");
        assert!(
            err.starts_with("sidewire: ") && err.contains(key),
            "{key}: {err}"
        );
    }
}

/// `PUT /log-level` swaps the filter at run time (`RUST_LOG` only sets the start value);
/// `GET` shows it; a bad filter is a 400 with the parse error; only from loopback.
#[test]
fn put_log_level_changes_what_is_logged() {
    let listeners = listener("a", dead_addr(), "");
    // The access log (which passes any level) marks where each bad request's lines end.
    let p = Proc::start(
        &config("0.0.0.0:0", "access = true", &listeners),
        &[],
        "info",
    );
    let (admin, lines) = p.started();
    let proxy = listener_addr(&lines, "a");
    let bad_request = || {
        let mut c = TcpStream::connect(proxy).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert!(s.starts_with("HTTP/1.1 400"), "{s}");
        let (access, before) = p.until(|l| l.contains("sidewire::access"));
        assert!(access.contains("status=400"), "{access}");
        before.iter().any(|l| l.contains("bad request head"))
    };

    assert_eq!(http(admin, "GET", "/log-level", ""), (200, "info\n".into()));
    assert!(!bad_request(), "debug lines at info");

    assert_eq!(
        http(admin, "PUT", "/log-level", "debug"),
        (200, "debug\n".into())
    );
    let (line, _) = p.until(|l| l.contains("log level changed"));
    assert!(line.contains("from=info to=debug"), "{line}");
    assert!(bad_request(), "no debug line after PUT debug");
    assert_eq!(
        http(admin, "GET", "/log-level", ""),
        (200, "debug\n".into())
    );

    let (code, body) = http(admin, "PUT", "/log-level", "=bogus");
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("bad filter: \"=bogus\": "), "{body}");
    assert_eq!(http(admin, "PUT", "/log-level", "").0, 400);
    // A declared body over the limit is refused at once (it was a 408 after the body timeout).
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"PUT /log-level HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        http(admin, "GET", "/log-level", ""),
        (200, "debug\n".into())
    );
    let (code, body) = http(admin, "DELETE", "/log-level", "");
    assert_eq!((code, body.as_str()), (405, "GET or PUT /log-level\n"));

    assert_eq!(
        http(admin, "PUT", "/log-level", "warn,sidewire::http1=info"),
        (200, "sidewire::http1=info,warn\n".into())
    );
    assert!(!bad_request(), "debug lines after PUT warn");

    // Not from the network, though the admin port listens there.
    if let Some(ip) = non_loopback_ip() {
        let outside = SocketAddr::new(ip, admin.port());
        for method in ["GET", "PUT"] {
            assert_eq!(
                http(outside, method, "/log-level", "trace"),
                (403, "/log-level is only accepted from loopback\n".into())
            );
        }
        assert_eq!(http(outside, "GET", "/ready", "").0, 200);
    }
    assert_eq!(p.stop().0, Some(0));
}

fn non_loopback_ip() -> Option<std::net::IpAddr> {
    ["192.0.2.1:9", "198.51.100.1:9", "10.255.255.1:9"]
        .iter()
        .find_map(|dst| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            s.connect(dst).ok()?;
            let ip = s.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
}

/// One access log line per request, HTTP/1 and HTTP/2, the proxy's own answers included:
/// method, authority, path, status, duration, bytes, upstream, direction (JSON here).
#[test]
fn access_log_has_one_line_per_request() {
    let up = hello_upstream();
    let dead = dead_addr();
    let listeners = format!(
        "{}{}",
        listener(
            "a",
            up,
            "direction = \"inbound\"\nupstream_protocol = \"http1\""
        ),
        listener("b", dead, "")
    );
    let p = Proc::start(
        &config(
            "127.0.0.1:0",
            "format = \"json\"\naccess = true",
            &listeners,
        ),
        &[],
        "info",
    );
    let (_, lines) = p.started();
    let (a, b) = (listener_addr(&lines, "a"), listener_addr(&lines, "b"));
    let next_access = || {
        let (line, _) = p.until(|l| l.contains("sidewire::access"));
        let v = json(&line);
        assert_json_line(&v, &line);
        assert_eq!(v["message"], "request", "{line}");
        assert!(v["duration_us"].as_u64().is_some(), "{line}");
        v
    };

    // HTTP/1, two requests on one connection: two lines.
    let mut c = BufReader::new(TcpStream::connect(a).unwrap());
    let me = c.get_ref().local_addr().unwrap().to_string();
    for path in ["/hello?x=1", "/again"] {
        let (code, n) = exchange(
            &mut c,
            &format!("GET {path} HTTP/1.1\r\nhost: example.test\r\n\r\n"),
        );
        assert_eq!(code, 200);
        let v = next_access();
        for (k, want) in [
            ("listener", "a"),
            ("direction", "inbound"),
            ("protocol", "http/1"),
            ("method", "GET"),
            ("authority", "example.test"),
            ("path", path),
            ("upstream", &up.to_string()),
            ("client", &me),
        ] {
            assert_eq!(v[k], want, "{k} in {v}");
        }
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["bytes"], n as u64, "the answer as written: {v}");
    }

    // The proxy's own answer: 502 from an unreachable endpoint.
    let mut c = BufReader::new(TcpStream::connect(b).unwrap());
    let (code, n) = exchange(
        &mut c,
        "POST /up HTTP/1.1\r\nhost: b.test:8080\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(code, 502);
    let v = next_access();
    assert_eq!(
        (&v["listener"], &v["direction"], &v["method"], &v["status"]),
        (&"b".into(), &"outbound".into(), &"POST".into(), &502.into()),
        "{v}"
    );
    assert_eq!(
        (&v["authority"], &v["upstream"], &v["bytes"]),
        (
            &"b.test:8080".into(),
            &dead.to_string().into(),
            &(n as u64).into()
        ),
        "{v}"
    );

    // HTTP/2 (to the HTTP/1.1 upstream): one line per stream, body bytes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpStream::connect(a).await.unwrap();
        let (send, conn) = h2::client::handshake(s).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        let req = http::Request::get("http://h2.example.test/streams/1")
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"hello");
    });
    let v = next_access();
    for (k, want) in [
        ("protocol", "http/2"),
        ("method", "GET"),
        ("authority", "h2.example.test"),
        ("path", "/streams/1"),
        ("upstream", &up.to_string()),
    ] {
        assert_eq!(v[k], want, "{k} in {v}");
    }
    assert_eq!((&v["status"], &v["bytes"]), (&200.into(), &5.into()), "{v}");
    drop(p);
}

/// Off by default: no access line.
#[test]
fn access_log_is_off_by_default() {
    let up = hello_upstream();
    let p = Proc::start(
        &config("127.0.0.1:0", "", &listener("a", up, "")),
        &[],
        "info",
    );
    let (_, lines) = p.started();
    let proxy = listener_addr(&lines, "a");
    let mut c = BufReader::new(TcpStream::connect(proxy).unwrap());
    assert_eq!(exchange(&mut c, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").0, 200);
    drop(c);
    let (code, lines) = p.stop();
    assert_eq!(code, Some(0));
    assert!(
        !lines.iter().any(|l| l.contains("sidewire::access")),
        "{lines:#?}"
    );
}

/// Each worker writes at most its token bucket's lines: a burst, then the rate; the rest
/// are dropped and counted in `sidewire_access_log_dropped_total`.
#[test]
fn access_log_is_rate_limited_per_worker() {
    let up = hello_upstream();
    let p = Proc::start(
        &config(
            "127.0.0.1:0",
            "access = true\naccess_lines_per_second = 1\naccess_burst_lines = 3",
            &listener("a", up, ""),
        ),
        &[],
        "info",
    );
    let (admin, lines) = p.started();
    let proxy = listener_addr(&lines, "a");
    let t0 = Instant::now();
    let mut c = BufReader::new(TcpStream::connect(proxy).unwrap());
    const N: usize = 20;
    for i in 0..N {
        let req = format!("GET /r{i} HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(exchange(&mut c, &req).0, 200);
    }
    // Every request is either logged or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logged = Vec::new();
    let dropped = loop {
        while let Ok(l) = p.lines.try_recv() {
            if l.contains("sidewire::access") {
                logged.push(l);
            }
        }
        let (_, text) = http(admin, "GET", "/metrics", "");
        let dropped = metric(&text, "sidewire_access_log_dropped_total").unwrap() as usize;
        if dropped + logged.len() == N {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "{dropped} dropped + {} logged != {N}",
            logged.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let refills = t0.elapsed().as_secs() as usize + 1;
    assert!(
        (3..=3 + refills).contains(&logged.len()),
        "{} lines in {:?}: {logged:#?}",
        logged.len(),
        t0.elapsed()
    );
    assert_eq!(dropped, N - logged.len());
    // Plain lines: the first request's, fields as key=value.
    let first = &logged[0];
    for part in [
        "INFO sidewire::access: request",
        "listener=\"a\"",
        "method=\"GET\"",
        "path=\"/r0\"",
        "status=200",
        "direction=\"outbound\"",
    ] {
        assert!(first.contains(part), "{part} in {first}");
    }
    assert_eq!(p.stop().0, Some(0));
}
