//! `GET /connections` through a running proxy: each verdict with its reason and evidence,
//! HTTP request counts, filters and limits, the closed ring, the text table. Real loopback
//! sockets; every wait is for a condition (a row appearing or changing), never a fixed sleep.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;
use sidewire::server::Server;

/// A Redis client's first command (RESP array: `PING`).
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// The start of a MySQL server greeting (HandshakeV10: length, sequence, protocol 10,
/// version string...), sent before the client says anything.
const MYSQL_GREETING: &[u8] = b"J\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00abcdefgh\x00\xff\xf7";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `GET /connections{query}`, which must answer 200 with JSON.
fn conns(p: &Server, query: &str) -> Value {
    let (status, body) = admin_get(p, &format!("/connections{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: not JSON ({e}): {body}"))
}

/// Asks `/connections{query}` until `done` holds for the reply (the worker updates its table
/// after the client may already have seen the effect), failing after 10 s.
fn wait_conns(p: &Server, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = conns(p, query);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: gave up waiting; last:\n{v:#}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The row of the connection from `client`.
fn row(v: &Value, client: SocketAddr) -> Option<&Value> {
    v["connections"]
        .as_array()?
        .iter()
        .find(|r| r["client"] == client.to_string())
}

/// Waits for `client`'s row in `/connections{query}` to satisfy `done`; returns the row.
fn wait_row(p: &Server, query: &str, client: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    let v = wait_conns(p, query, |v| row(v, client).is_some_and(&done));
    row(&v, client).unwrap().clone()
}

fn clients(v: &Value) -> Vec<String> {
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["client"].as_str().unwrap().to_string())
        .collect()
}

/// Connects a Redis-like client: sends PING, reads the echo back.
fn redis_client(to: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(to).unwrap();
    c.write_all(PING).unwrap();
    let mut back = [0u8; PING.len()];
    c.read_exact(&mut back).unwrap();
    c
}

/// Half-closes and reads to EOF, so the proxy has finished with the connection from the
/// client's side too, then closes.
fn finish(mut c: TcpStream) {
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
}

#[test]
fn silent_client_is_detecting_then_a_timeout_with_no_bytes() {
    let (up, _h) = upstream(echo);
    // The default 10 s timeout: still detecting while we look.
    let slow = proxy(&[up], "");
    let c = TcpStream::connect(addr(&slow)).unwrap();
    let me = c.local_addr().unwrap();
    let r = wait_row(&slow, "", me, |_| true);
    assert_eq!(r["verdict"], "detecting", "{r}");
    assert_eq!(r["reason"], "detecting");
    assert!(r["detail"].as_str().unwrap().contains("10000 ms"), "{r}");
    drop(c);

    let p = proxy(&[up], "detect_timeout_ms = 100");
    let c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    let r = wait_row(&p, "", me, |r| r["verdict"] == "timeout");
    assert_eq!(r["reason"], "no_bytes", "{r}");
    assert_eq!(
        r["detail"], "no bytes within the detect timeout (100 ms)",
        "{r}"
    );
    assert_eq!(r["first_bytes"], Value::Null);
    assert_eq!(r["listener"], "t");
    assert_eq!(r["direction"], "outbound");
    assert_eq!(r["destination"], up.to_string());
    assert_eq!(r["original_dst"], false);
    assert_eq!(r["bytes_from_client"], 0);
    assert_eq!(r["bytes_to_client"], 0);
    assert_eq!(r["requests"], Value::Null, "not HTTP");
    assert!(r["age_ms"].as_u64().unwrap() >= 100, "{r}");
    assert!(r["idle_ms"].as_u64().unwrap() <= r["age_ms"].as_u64().unwrap());
    assert!(r["worker"].as_u64().unwrap() < 2);
}

#[test]
fn redis_client_is_opaque_with_its_first_bytes() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let c = redis_client(addr(&p));
    let me = c.local_addr().unwrap();
    // The echo was read, so the proxy has sent it.
    let r = wait_row(&p, "?verdict=opaque", me, |r| r["bytes_to_client"] == 14);
    assert_eq!(r["verdict"], "opaque");
    assert_eq!(r["reason"], "not_http_not_tls", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .starts_with("not HTTP, not TLS"),
        "{r}"
    );
    assert_eq!(r["first_bytes"], hex(PING), "all 14 bytes, in hex");
    assert_eq!(r["bytes_from_client"], 14);
    assert_eq!(r["sni"], Value::Null);
    finish(c);
}

#[test]
fn mysql_like_server_that_speaks_first_is_server_first() {
    let (up, _h) = upstream(|mut c: TcpStream| {
        c.write_all(MYSQL_GREETING).unwrap();
        echo(c)
    });
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    let mut greeting = vec![0u8; MYSQL_GREETING.len()];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting, MYSQL_GREETING);
    let r = wait_row(&p, "", me, |r| {
        r["bytes_to_client"] == MYSQL_GREETING.len() as u64
    });
    assert_eq!(r["verdict"], "server_first", "{r}");
    assert_eq!(r["reason"], "server_first");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("the server spoke first"),
        "{r}"
    );
    assert_eq!(r["server_first_bytes"], hex(&MYSQL_GREETING[..16]));
    assert_eq!(r["first_bytes"], Value::Null, "the client said nothing");
    assert_eq!(r["bytes_from_client"], 0);
}

#[test]
fn tls_client_hello_shows_sni_and_alpn() {
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/curl-tls13.bin"
    ))
    .unwrap();
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    c.write_all(&hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    c.read_exact(&mut back).unwrap();
    let r = wait_row(&p, "?verdict=tls", me, |_| true);
    assert_eq!(r["reason"], "tls_client_hello", "{r}");
    assert_eq!(r["sni"], "www.example.org");
    assert_eq!(r["alpn"], serde_json::json!(["h2", "http/1.1"]));
    assert_eq!(r["first_bytes"], hex(&hello[..16]));
    finish(c);
}

/// An upstream that answers every HTTP/1 request on a connection with `ok`.
fn keep_alive_http(mut c: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one response with a 2-byte body.
fn read_ok(c: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\nok") {
        assert_eq!(c.read(&mut b).unwrap(), 1, "response cut short: {buf:?}");
        buf.push(b[0]);
    }
}

#[test]
fn http1_keep_alive_connection_counts_its_requests_and_the_table_aligns() {
    let (up, _h) = upstream(keep_alive_http);
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    let req = b"GET /n HTTP/1.1\r\nhost: x\r\n\r\n";
    for _ in 0..3 {
        c.write_all(req).unwrap();
        read_ok(&mut c);
    }
    let r = wait_row(&p, "", me, |r| r["requests"] == 3);
    assert_eq!(r["verdict"], "http/1");
    assert_eq!(r["reason"], "http1_request");
    assert_eq!(r["first_bytes"], hex(&req[..16]));
    assert_eq!(r["bytes_from_client"], 3 * req.len() as u64);

    let (status, text) = admin_get(&p, "/connections?format=text&listener=t");
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("# open connections: 1 shown of 1 (limit 100)"),
        "{text}"
    );
    let (header, line) = (lines[1], lines[2]);
    for (column, value) in [
        ("LISTENER", "t "),
        ("CLIENT", me.to_string().as_str()),
        ("VERDICT", "http/1 "),
        ("REASON", "http1_request"),
        ("REQS", "3 "),
    ] {
        let at = header.find(column).unwrap();
        assert!(
            line[at..].starts_with(value),
            "{column} is not aligned:\n{text}"
        );
    }
    assert!(line.ends_with("an HTTP/1 request line"), "{text}");
}

#[test]
fn filters_limit_and_bad_values() {
    let (up, _h) = upstream(echo);
    let p = start_toml(&format!(
        "[runtime]\nworkers = 2\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\nprotocol = \"opaque\"\n\
         [[listener]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n"
    ));
    let a = p.listener_addr("a").unwrap();
    let b = p.listener_addr("b").unwrap();
    let a1 = TcpStream::connect(a).unwrap();
    let a2 = TcpStream::connect(a).unwrap();
    wait_conns(&p, "", |v| v["total"] == 2);
    // Opened last, so the newest.
    let b1 = redis_client(b);
    let b1_addr = b1.local_addr().unwrap().to_string();
    wait_conns(&p, "?verdict=opaque", |v| v["total"] == 1);

    let all = conns(&p, "");
    assert_eq!(all["total"], 3, "{all:#}");
    assert_eq!(all["workers"], 2);
    assert_eq!(all["workers_answered"], 2);

    let v = conns(&p, "?listener=a");
    assert_eq!(v["total"], 2);
    for r in v["connections"].as_array().unwrap() {
        assert_eq!(r["listener"], "a");
        assert_eq!(r["verdict"], "opaque_port");
        assert_eq!(r["reason"], "listener_protocol");
        assert_eq!(
            r["detail"],
            "forced by config: listener a sets protocol = \"opaque\""
        );
    }
    let v = conns(&p, "?verdict=opaque");
    assert_eq!(clients(&v), std::slice::from_ref(&b1_addr));
    let v = conns(&p, "?verdict=opaque_port,opaque&listener=b");
    assert_eq!(v["total"], 1);
    let v = conns(&p, "?verdict=timeout");
    assert_eq!(
        (v["total"].as_u64(), v["shown"].as_u64()),
        (Some(0), Some(0))
    );

    let v = conns(&p, "?limit=1");
    assert_eq!(v["total"], 3, "the total counts every match");
    assert_eq!(v["shown"], 1);
    assert_eq!(v["limit"], 1);
    assert_eq!(clients(&v), [b1_addr], "newest first");

    for (query, says) in [
        (
            "?listener=nosuch",
            "no listener named \"nosuch\" (listeners: a, b)",
        ),
        ("?limit=0", "limit: \"0\" is not a number from 1 to 10000"),
        ("?limit=10001", "from 1 to 10000"),
        (
            "?verdict=bogus",
            "verdict: \"bogus\" is not one of detecting, http/1",
        ),
        ("?bogus=1", "unknown parameter \"bogus\""),
        ("?format=xml", "json or text"),
        ("?closed=maybe", "closed"),
    ] {
        let (status, body) = admin_get(&p, &format!("/connections{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    drop((a1, a2));
    finish(b1);
}

#[test]
fn closed_ring_keeps_the_last_closes_with_their_bytes_and_duration() {
    let (up, _h) = upstream(echo);
    let p = start_toml(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nclosed_connections = 2\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n"
    ));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = redis_client(addr(&p));
        let me = c.local_addr().unwrap();
        finish(c);
        wait_row(&p, "?closed=1", me, |_| true);
        seen.push(me.to_string());
    }
    assert_eq!(conns(&p, "")["total"], 0, "none open");
    let v = conns(&p, "?closed=1");
    assert_eq!(v["state"], "closed");
    assert_eq!(v["closed_ring"], 2);
    assert_eq!(v["total"], 2, "the ring keeps 2: {v:#}");
    assert_eq!(
        clients(&v),
        [seen[2].clone(), seen[1].clone()],
        "newest first"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for r in v["connections"].as_array().unwrap() {
        assert_eq!(r["verdict"], "opaque");
        assert_eq!(r["reason"], "not_http_not_tls");
        assert_eq!(r["first_bytes"], hex(PING));
        assert_eq!(r["bytes_from_client"], 14, "{r}");
        assert_eq!(r["bytes_to_client"], 14, "{r}");
        assert!(r["duration_ms"].is_u64(), "{r}");
        assert!(r["closed_ago_ms"].is_u64(), "{r}");
        let at = r["closed_at_unix_ms"].as_u64().unwrap();
        assert!(at <= now_ms && now_ms - at < 60_000, "{r}");
        assert_eq!(r.get("age_ms"), None, "closed rows have a duration instead");
    }
    assert_eq!(conns(&p, "?closed=1&verdict=timeout")["total"], 0);

    // HTTP/2 hands the socket to h2: its final counters are still taken before it closes.
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    c.write_all(&[H2_PREFACE, H2_EMPTY_SETTINGS].concat())
        .unwrap();
    let mut settings = [0u8; 9];
    c.read_exact(&mut settings).unwrap();
    assert_eq!(settings[3], 4, "the proxy's SETTINGS frame");
    let r = wait_row(&p, "", me, |_| true);
    assert_eq!(r["verdict"], "http/2");
    assert_eq!(r["requests"], 0, "no stream yet");
    finish(c);
    let r = wait_row(&p, "?closed=1", me, |_| true);
    assert_eq!(r["reason"], "http2_preface");
    assert_eq!(
        r["bytes_from_client"],
        (H2_PREFACE.len() + H2_EMPTY_SETTINGS.len()) as u64,
        "{r}"
    );
    assert_eq!(r["first_bytes"], hex(&H2_PREFACE[..16]));

    let (status, text) = admin_get(&p, "/connections?closed=1&format=text");
    assert_eq!(status, 200);
    assert!(
        text.starts_with(
            "# closed connections: 2 shown of 2 (limit 100); 1 of 1 workers answered\n"
        ),
        "{text}"
    );
    assert!(
        text.lines().nth(1).unwrap().contains("DURATION  IDLE"),
        "{text}"
    );
    assert!(text.contains(" ago "), "{text}");
}

#[test]
fn a_refused_connection_is_in_the_closed_ring_with_why() {
    // An original-destination listener dialled directly: nothing redirected the connection,
    // so its "original destination" is the listener itself (or, without conntrack, there is
    // none), and it is refused before detection.
    let p = start_toml(
        "[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\nupstream = \"original-dst\"\ndirection = \"inbound\"\n",
    );
    let mut c = TcpStream::connect(p.listener_addr("in").unwrap()).unwrap();
    let me = c.local_addr().unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let r = wait_row(&p, "?closed=1&verdict=refused", me, |_| true);
    assert!(
        r["reason"] == "loop" || r["reason"] == "no_original_dst",
        "{r}"
    );
    assert!(
        r["detail"].as_str().unwrap().starts_with("refused: "),
        "{r}"
    );
    assert_eq!(r["direction"], "inbound");
    assert_eq!(r["destination"], Value::Null);
}

/// Review: a client that sent part of a request line and reset during detection was in the
/// closed ring as `client_error` with `first_bytes: null`, though 2 bytes had come from it.
#[test]
fn a_client_error_during_detection_keeps_its_first_bytes() {
    let (up, _h) = upstream(echo);
    let p = proxy_with(&[up], "[detect]\nserver_first = \"off\"\n", "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    let me = c.local_addr().unwrap();
    c.write_all(b"GE").unwrap();
    reset(c);
    let r = wait_row(&p, "?closed=1&verdict=client_error", me, |_| true);
    assert_eq!(r["first_bytes"], hex(b"GE"), "{r}");
}

#[test]
fn with_the_ring_off_the_closed_view_says_so() {
    let (up, _h) = upstream(echo);
    let p = start_toml(&format!(
        "[runtime]\nworkers = 1\npin_cores = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nclosed_connections = 0\n\
         [[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstream = [\"{up}\"]\n"
    ));
    finish(redis_client(addr(&p)));
    let v = conns(&p, "?closed=1");
    assert_eq!(
        (&v["closed_ring"], &v["total"]),
        (&Value::from(0), &Value::from(0)),
        "{v}"
    );
    let (status, text) = admin_get(&p, "/connections?closed=true&format=text");
    assert_eq!(status, 200);
    assert!(
        text.starts_with("# closed connections: 0 shown of 0 (limit 100); 1 of 1 workers answered; the closed ring is off (admin.closed_connections = 0)\n"),
        "{text}"
    );
}

/// A TLS 1.2-shaped ClientHello record with one SNI host_name entry and these ALPN names.
fn client_hello(sni: &[u8], alpn: &[&[u8]]) -> Vec<u8> {
    let v16 = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    let list: Vec<u8> = alpn
        .iter()
        .flat_map(|p| [&[p.len() as u8][..], *p].concat())
        .collect();
    let exts = [
        &[0u8, 0][..],
        &v16(&v16(&[&[0u8][..], &v16(sni)].concat())),
        &[0, 0x10],
        &v16(&v16(&list)),
    ]
    .concat();
    let body = [
        &[3u8, 3][..],
        &[7; 32],
        &[0],
        &v16(&[0x13, 0x01]),
        &[1, 0],
        &v16(&exts),
    ]
    .concat();
    let hs = [&[1u8][..], &(body.len() as u32).to_be_bytes()[1..], &body].concat();
    [&[0x16u8, 3, 1][..], &v16(&hs)].concat()
}

#[test]
fn odd_sni_and_alpn_bytes_are_shown_escaped_and_long_cells_are_cut() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let send = |hello: &[u8]| {
        let mut c = TcpStream::connect(addr(&p)).unwrap();
        c.write_all(hello).unwrap();
        let mut back = vec![0u8; hello.len()];
        c.read_exact(&mut back).unwrap();
        c
    };
    let odd = send(&client_hello(b"bad name", &[b"\0\xff\xfe", b"h2"]));
    let me = odd.local_addr().unwrap();
    let r = wait_row(&p, "?verdict=tls", me, |_| true);
    assert_eq!(r["sni"], "bad\\x20name", "what was sent, escaped: {r}");
    assert_eq!(r["alpn"], serde_json::json!(["\\x00\\xff\\xfe", "h2"]));
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .ends_with("its SNI is not a host name (shown escaped)"),
        "{r}"
    );
    let fifty: Vec<Vec<u8>> = (0..50).map(|i| format!("proto-{i}").into_bytes()).collect();
    let long_sni = "a".repeat(255);
    let wide = send(&client_hello(
        long_sni.as_bytes(),
        &fifty.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    let r = wait_row(&p, "?verdict=tls", wide.local_addr().unwrap(), |_| true);
    assert_eq!(r["sni"], long_sni.as_str(), "the JSON keeps it whole");
    assert_eq!(r["alpn"].as_array().unwrap().len(), 50);

    let (status, text) = admin_get(&p, "/connections?format=text&verdict=tls");
    assert_eq!(status, 200);
    let header = text.lines().nth(1).unwrap();
    let widest = text
        .lines()
        .skip(1)
        .map(|l| l.chars().count())
        .max()
        .unwrap();
    assert!(widest < 450, "a row is {widest} characters wide:\n{text}");
    let line = text.lines().find(|l| l.contains(&me.to_string())).unwrap();
    let at = header.find("SNI").unwrap();
    assert!(line[at..].starts_with("bad\\x20name "), "{text}");
    let at = header.find("ALPN").unwrap();
    assert!(line[at..].starts_with("\\x00\\xff\\xfe,h2 "), "{text}");
    assert!(text.contains(&format!("{}… ", "a".repeat(63))), "{text}");
    finish(odd);
    finish(wide);
}

#[test]
fn forced_http_that_the_listener_does_not_proxy_says_it_went_opaque() {
    let (up, _h) = upstream(echo);
    let p = proxy_with(&[up], "[http2]\nenabled = false", "protocol = \"http2\"");
    let c = redis_client(addr(&p));
    let me = c.local_addr().unwrap();
    let r = wait_row(&p, "", me, |_| true);
    assert_eq!(
        (&r["verdict"], &r["reason"]),
        (&Value::from("http/2"), &Value::from("listener_protocol")),
        "{r}"
    );
    assert_eq!(
        r["detail"],
        "forced by config: listener t sets protocol = \"http2\"; http2.enabled = false: forwarded opaque"
    );
    assert_eq!(r["requests"], Value::Null, "not proxied as HTTP");
    assert_eq!(r["first_bytes"], Value::Null, "no detection ran");
    assert_eq!(r["alpn"], serde_json::json!([]), "not TLS");
    finish(c);
}

#[test]
fn query_names_and_plus_are_form_decoded_and_bad_bytes_are_named() {
    let (up, _h) = upstream(echo);
    let p = proxy(&[up], "");
    let v = conns(&p, "?%6Cimit=3&verdict=opaque%2Ctimeout");
    assert_eq!(v["limit"], 3);
    for (query, says) in [
        (
            "?verdict=%FF",
            "verdict: \"%FF\" decodes to bytes that are not UTF-8 (0xff at byte 0)",
        ),
        ("?listener=a+b", "listener: \"a b\" is not a listener name"),
        ("?verdict=%G1", "verdict: \"%G1\" is not a percent-escape"),
    ] {
        let (status, body) = admin_get(&p, &format!("/connections{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
}
