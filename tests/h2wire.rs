//! The sans-IO HTTP/2 server (`sidewire::h2wire::server`) against real clients, before the
//! proxy uses it: a small blocking driver here (one thread per connection, std sockets)
//! feeds it what it reads and writes what it outputs, and answers each request itself.
//! The clients: the HTTP/2 conformance suite (tests/h2/conformance.py, raw frames, every case
//! must pass: none of the `h2` crate's known deviations apply), the `h2` crate's client,
//! curl, h2load and gRPC (Python grpcio).
//!
//! The driver answers as the conformance suite's upstream does: `/hang...` never (until the
//! client resets), `/big/N...` with N bytes of `x`, anything else with `ok\n` once the body
//! has been read; every answer carries `x-upstream: 1`. `/sum` answers `len=N sum=S` over the
//! request body (S: the sum of its bytes mod 2^32), `/size/N` N bytes of `i % 251`, and a
//! gRPC request (`content-type: application/grpc`) its own message back with `grpc-status: 0`
//! trailers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use sidewire::h2wire::frame::ErrorCode;
use sidewire::h2wire::server::{Config, Event, Server};

/// What the driver saw: per request, the case path (from `/c/` on, as the conformance suite
/// names it) and whether its body arrived complete.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

fn cfg() -> Config {
    Config {
        max_concurrent_streams: 8,
        max_header_list_size: 16 * 1024,
        initial_stream_window: 65_535,
        initial_connection_window: 1 << 20,
        max_frame_size: 16_384,
        max_pending_accept_reset_streams: 20,
        max_local_error_reset_streams: 1024,
    }
}

/// Starts the driver on a loopback port; every connection gets its own thread.
fn driver(cfg: Config) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming() {
            let Ok(tcp) = tcp else { return };
            let seen = s.clone();
            std::thread::spawn(move || {
                let _ = serve(tcp, cfg, &seen);
            });
        }
    });
    (a, seen)
}

/// One request as the driver follows it.
#[derive(Default)]
struct Req {
    path: String,
    case: String,
    grpc: bool,
    len: u64,
    sum: u32,
    /// gRPC: the request body, echoed back.
    body: Vec<u8>,
}

/// A response being written as the client's windows allow.
struct Answer {
    body: Vec<u8>,
    sent: usize,
    trailers: Option<HeaderMap>,
}

fn serve(mut tcp: TcpStream, cfg: Config, seen: &Seen) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut server = Server::new(cfg);
    let mut input: Vec<u8> = Vec::new();
    let mut reqs: HashMap<u32, Req> = HashMap::new();
    let mut answers: HashMap<u32, Answer> = HashMap::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Whatever can be sent now, then the output.
        let ids: Vec<u32> = answers.keys().copied().collect();
        for id in ids {
            let a = answers.get_mut(&id).unwrap();
            let last = a.trailers.is_none();
            match server.send_data(id, &a.body[a.sent..], last) {
                Ok(n) => a.sent += n,
                Err(_) => {
                    answers.remove(&id);
                    continue;
                }
            }
            if a.sent == a.body.len() {
                if let Some(t) = a.trailers.take() {
                    let _ = server.send_trailers(id, &t);
                }
                answers.remove(&id);
            }
        }
        let out = server.take_output();
        if !out.is_empty() {
            tcp.write_all(&out)?;
        }
        if server.failed() {
            // Let the client read the GOAWAY before the close.
            let _ = tcp.shutdown(std::net::Shutdown::Write);
            let _ = tcp.read(&mut chunk);
            return Ok(());
        }
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&chunk[..n]);
        // `recv` stops once OUTPUT_BOUND bytes of output wait: written, then again.
        loop {
            let mut events = Vec::new();
            let consumed = server.recv(&input, &mut |e| events.push(e));
            for e in events {
                match e {
                    Event::Request {
                        stream,
                        head,
                        end_stream,
                    } => {
                        let path = head.uri.path().to_string();
                        let case = head
                            .headers
                            .get("x-case")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                            .unwrap_or_else(|| path.clone());
                        let case = case
                            .find("/c/")
                            .map_or(case.clone(), |i| case[i..].to_string());
                        let grpc = head
                            .headers
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        reqs.insert(
                            stream,
                            Req {
                                path,
                                case,
                                grpc,
                                ..Req::default()
                            },
                        );
                        // What the proxy checks on every request before routing it (the
                        // rules of an HTTP/1.1 request's target and Host, http2::check).
                        if sidewire::http2::check::bad_target(&head).is_some() {
                            reqs.remove(&stream);
                            server.send_reset(stream, ErrorCode::PROTOCOL_ERROR);
                            continue;
                        }
                        if path_hangs(&reqs[&stream].path) {
                            seen.lock()
                                .unwrap()
                                .push((reqs[&stream].case.clone(), false));
                        } else if end_stream {
                            let r = reqs.remove(&stream).unwrap();
                            answer(&mut server, stream, r, seen, &mut answers);
                        }
                    }
                    Event::Data {
                        stream,
                        data,
                        end_stream,
                    } => {
                        let bytes = &input[data];
                        if let Some(r) = reqs.get_mut(&stream) {
                            r.len += bytes.len() as u64;
                            r.sum = bytes
                                .iter()
                                .fold(r.sum, |s, &b| s.wrapping_add(u32::from(b)));
                            if r.grpc {
                                r.body.extend_from_slice(bytes);
                            }
                        }
                        server.release(stream, bytes.len() as u32);
                        if end_stream && !reqs.get(&stream).is_some_and(|r| path_hangs(&r.path)) {
                            if let Some(r) = reqs.remove(&stream) {
                                answer(&mut server, stream, r, seen, &mut answers);
                            }
                        }
                    }
                    Event::Trailers { stream, .. } => {
                        if let Some(r) = reqs.remove(&stream) {
                            if !path_hangs(&r.path) {
                                answer(&mut server, stream, r, seen, &mut answers);
                            }
                        }
                    }
                    Event::Reset { stream, .. } => {
                        reqs.remove(&stream);
                        answers.remove(&stream);
                    }
                    Event::Window { .. } | Event::GoAway { .. } => {}
                }
            }
            match consumed {
                Ok(n) => {
                    input.drain(..n);
                    if n == 0 || input.is_empty() || server.output_len() == 0 {
                        break;
                    }
                    let out = server.take_output();
                    tcp.write_all(&out)?;
                }
                Err(_) => {
                    // The GOAWAY is in the output: written at the top of the loop.
                    input.clear();
                    break;
                }
            }
        }
    }
}

fn path_hangs(path: &str) -> bool {
    path.starts_with("/hang")
}

/// The request is complete: its answer starts.
fn answer(
    server: &mut Server,
    stream: u32,
    r: Req,
    seen: &Seen,
    answers: &mut HashMap<u32, Answer>,
) {
    seen.lock().unwrap().push((r.case.clone(), true));
    let mut fields = HeaderMap::new();
    fields.insert("x-upstream", HeaderValue::from_static("1"));
    let mut trailers = None;
    let body = if r.grpc {
        fields.insert("content-type", HeaderValue::from_static("application/grpc"));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        trailers = Some(t);
        r.body
    } else if let Some(n) = r.path.strip_prefix("/big/") {
        let n: usize = n.split('/').next().unwrap().parse().unwrap_or(3);
        vec![b'x'; n]
    } else if let Some(n) = r.path.strip_prefix("/size/") {
        let n: usize = n.parse().unwrap();
        (0..n).map(|i| (i % 251) as u8).collect()
    } else if r.path == "/sum" {
        format!("len={} sum={}", r.len, r.sum).into_bytes()
    } else {
        b"ok\n".to_vec()
    };
    if server.send_response(stream, 200, &fields, false).is_ok() {
        answers.insert(
            stream,
            Answer {
                body,
                sent: 0,
                trailers,
            },
        );
    }
}

/// Runs `f` with an `h2` client connected to `a` (its connection driven by a task), on a
/// current-thread tokio runtime.
fn with_h2_client<F, Fut>(a: SocketAddr, f: F)
where
    F: FnOnce(h2::client::SendRequest<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(a).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        f(client).await
    });
}

/// The Python with Debian's `python3-hpack` (and grpcio): the system one.
fn python() -> &'static str {
    "/usr/bin/python3"
}

#[test]
fn the_conformance_suite_passes_every_case() {
    let (a, seen) = driver(cfg());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/conformance.py");
    let out = Command::new(python())
        .args([script, &a.to_string()])
        .output()
        .expect("python3 runs tests/h2/conformance.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen.lock().unwrap().clone();
    let mut problems = Vec::new();
    let mut total = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        if v.get("summary").is_some() {
            continue;
        }
        total += 1;
        let path = v["path"].as_str().unwrap();
        let forwarded = seen
            .iter()
            .any(|(p, complete)| *complete && (p == path || p.starts_with(&format!("{path}/"))));
        let never = v["never_forwarded"].as_bool().unwrap();
        if !v["passed"].as_bool().unwrap() || (never && forwarded) {
            problems.push(format!(
                "{} [{}] {}: expected {}, got {}{}\n    frames: {}",
                v["id"].as_str().unwrap(),
                v["section"].as_str().unwrap(),
                v["title"].as_str().unwrap(),
                v["expect"].as_str().unwrap(),
                v["detail"].as_str().unwrap(),
                if never && forwarded {
                    " (and it was delivered complete)"
                } else {
                    ""
                },
                v["frames"]
            ));
        }
    }
    assert!(total >= 90, "only {total} cases ran:\n{stdout}");
    assert!(
        problems.is_empty(),
        "{} of {total} cases failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The `h2` crate's client: concurrent downloads larger than its windows (the server waits
/// for WINDOW_UPDATE), an upload larger than ours (the client waits for ours), request
/// trailers.
#[test]
fn the_h2_crate_client_downloads_and_uploads_byte_exact() {
    let (a, _) = driver(cfg());
    with_h2_client(a, |client| async move {
        // One exchange first, so the client has our SETTINGS (max_concurrent_streams 8)
        // before it opens twenty streams: it then keeps to eight at a time.
        let mut c = client.clone().ready().await.unwrap();
        let req = http::Request::get("http://a/ok").body(()).unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
        let mut tasks = Vec::new();
        for i in 0..20usize {
            let mut client = client.clone().ready().await.unwrap();
            let n = 100_000 + i * 7_919;
            let req = http::Request::get(format!("http://a/size/{n}"))
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).unwrap();
            tasks.push(tokio::spawn(async move {
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(resp.headers()["x-upstream"], "1");
                let mut body = resp.into_body();
                let mut got = Vec::new();
                while let Some(c) = body.data().await {
                    let c = c.unwrap();
                    let _ = body.flow_control().release_capacity(c.len());
                    got.extend_from_slice(&c);
                }
                let want: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                assert!(got == want, "stream {i}: {} bytes, want {n}", got.len());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 3 MB up in 16 KiB DATA frames, then trailers.
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post("http://a/sum").body(()).unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let mut sum = 0u32;
        let mut left = 3_000_000usize;
        let mut k = 0u8;
        while left > 0 {
            let n = left.min(16_384);
            let chunk: Vec<u8> = (0..n)
                .map(|_| {
                    k = k.wrapping_add(13);
                    k
                })
                .collect();
            sum = chunk.iter().fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
            send.reserve_capacity(n);
            let mut got = 0;
            while got < n {
                got = std::future::poll_fn(|cx| send.poll_capacity(cx))
                    .await
                    .unwrap()
                    .unwrap();
            }
            send.send_data(Bytes::from(chunk), false).unwrap();
            left -= n;
        }
        let mut t = HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from(sum));
        send.send_trailers(t).unwrap();
        let resp = resp.await.unwrap();
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(c) = body.data().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("len=3000000 sum={sum}")
        );
    });
}

#[test]
fn curl_gets_and_posts() {
    let (a, _) = driver(cfg());
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
        .arg(format!("http://{a}/size/70000"))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
    assert!(out.stdout == want, "{} bytes", out.stdout.len());

    let dir = std::env::temp_dir().join(format!("h2wire-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let sum = body.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "20",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{a}/sum"))
        .output()
        .expect("curl runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("len=300000 sum={sum}")
    );
}

#[test]
fn h2load_completes_every_request() {
    let (a, _) = driver(cfg());
    let out = Command::new("h2load")
        .args(["-n", "4000", "-c", "4", "-m", "8", "-T", "20"])
        .arg(format!("http://{a}/size/1000"))
        .output()
        .expect("h2load runs (.ci/run installs nghttp2-client)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed, 0 errored"),
        "{stdout}"
    );
}

#[test]
fn a_grpc_client_gets_its_message_back_with_the_status_in_trailers() {
    let (a, _) = driver(cfg());
    let script = r#"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
call = ch.unary_unary('/echo.Echo/Say', request_serializer=None, response_deserializer=None)
for msg in [b'', b'hello', bytes(range(256)) * 300]:
    resp, c = call.with_call(msg, timeout=10)
    assert resp == msg, (len(resp), len(msg))
    assert c.code() == grpc.StatusCode.OK
print('ok')
"#;
    let out = Command::new(python())
        .args(["-c", script, &a.to_string()])
        .output()
        .expect("python3 with grpcio (.ci/run installs python3-grpcio)");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that resets a stream it is downloading gets no more of it, and the connection
/// carries on (the driver sees an `Event::Reset` by the client).
#[test]
fn a_reset_download_stops_and_the_connection_carries_on() {
    let (a, _) = driver(cfg());
    with_h2_client(a, |client| async move {
        let mut c = client.ready().await.unwrap();
        let req = http::Request::get("http://a/size/10000000")
            .body(())
            .unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let mut body = resp.into_body();
        let first = body.data().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(body); // RST_STREAM CANCEL
        let mut c = c.ready().await.unwrap();
        let req = http::Request::get("http://a/ok").body(()).unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
    });
}
