//! HTTP/2 server-side conformance (issue 16 §5): `tests/h2/conformance.py` sends raw frames
//! to the proxy, one connection per case, and checks what RFC 9113 / RFC 7541 / RFC 9110
//! require (each case cites its section); the proxy forwards to an `h2` upstream here that
//! records every request it receives. This test fails on any failed case that is not a
//! [`KNOWN_DEVIATIONS`] entry, on a known deviation that now passes (so the list stays
//! true), and on a malformed request that reached the upstream complete (RFC 9113 §8.1.1:
//! an intermediary MUST NOT forward a malformed request).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use h2::RecvStream;
use http::Response;

/// Cases sidewire is known to fail, with the reason (README "HTTP/2 conformance" lists
/// them too). None since the client side runs on the proxy's own codec (`h2wire::server`);
/// with the `h2` crate there were 19, every one `h2`'s (its mapping of frame errors to
/// PROTOCOL_ERROR, hyperium/h2#900; frames on half-closed streams; pseudo-header fields
/// dropped from a trailer section).
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[];

/// What the upstream saw: the case path (the part from `/c/`), and whether the request
/// arrived complete (its body read to END_STREAM without error).
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// An h2 upstream: paths with `/hang` are never answered (the stream stays open until the
/// proxy resets it), `/big/N...` answers N bytes, anything else reads the body and answers
/// 200 `ok`. Every answer carries `x-upstream: 1`, so the client can tell them from the
/// proxy's own.
fn upstream(seen: Seen) -> SocketAddr {
    let l = listen_any();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(answer(req, respond, seen.clone()));
                    }
                });
            }
        })
    });
    a
}

async fn answer(
    req: http::Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Seen,
) {
    let path = req
        .headers()
        .get("x-case")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(req.uri().path())
        .to_string();
    let case = path
        .find("/c/")
        .map_or(path.clone(), |i| path[i..].to_string());
    let mut body = req.into_body();
    if path.starts_with("/hang") {
        seen.lock().unwrap().push((case, false));
        let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
        return;
    }
    let mut complete = true;
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                let _ = body.flow_control().release_capacity(c.len());
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if complete && body.trailers().await.is_err() {
        complete = false;
    }
    seen.lock().unwrap().push((case, complete));
    if !complete {
        return;
    }
    let n = path
        .strip_prefix("/big/")
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse::<usize>().ok());
    let r = Response::builder()
        .status(200)
        .header("x-upstream", "1")
        .body(())
        .unwrap();
    let Ok(mut s) = respond.send_response(r, false) else {
        return;
    };
    let mut left = Bytes::from(vec![b'x'; n.unwrap_or(3)]);
    if n.is_none() {
        left = Bytes::from_static(b"ok\n");
    }
    while !left.is_empty() {
        s.reserve_capacity(left.len());
        let Some(Ok(cap)) = std::future::poll_fn(|cx| s.poll_capacity(cx)).await else {
            return;
        };
        let part = left.split_to(cap.min(left.len()));
        if s.send_data(part, false).is_err() {
            return;
        }
    }
    let _ = s.send_data(Bytes::new(), true);
}

#[test]
fn h2_conformance_suite() {
    let seen: Seen = Arc::default();
    let up = upstream(seen.clone());
    // A small concurrent-stream limit keeps §5.1.2's case short.
    let p = proxy_with(
        &[up],
        "[http2]\nmax_concurrent_streams = 8\n",
        "upstream_protocol = \"http2\"",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/conformance.py");
    let out = std::process::Command::new(python())
        .args([script, &addr(&p).to_string()])
        .output()
        .expect("python3 runs tests/h2/conformance.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let known: HashMap<&str, &str> = KNOWN_DEVIATIONS.iter().copied().collect();
    let mut problems = Vec::new();
    let (mut passed, mut total) = (0, 0);
    let seen = seen.lock().unwrap().clone();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        if v.get("summary").is_some() {
            continue;
        }
        total += 1;
        let id = v["id"].as_str().unwrap();
        let ok = v["passed"].as_bool().unwrap();
        let path = v["path"].as_str().unwrap();
        let forwarded = seen
            .iter()
            .any(|(p, complete)| *complete && (p == path || p.starts_with(&format!("{path}/"))));
        let ok = ok && !(v["never_forwarded"].as_bool().unwrap() && forwarded);
        let line = format!(
            "{id} [{}] {}: expected {}, got {}{}",
            v["section"].as_str().unwrap(),
            v["title"].as_str().unwrap(),
            v["expect"].as_str().unwrap(),
            v["detail"].as_str().unwrap(),
            if forwarded && v["never_forwarded"].as_bool().unwrap() {
                " (and the upstream received it complete)"
            } else {
                ""
            }
        );
        match (ok, known.get(id)) {
            (true, None) => passed += 1,
            (true, Some(_)) => problems.push(format!("known deviation now passes: {line}")),
            (false, Some(why)) => eprintln!("known deviation: {line} ({why})"),
            (false, None) => problems.push(format!("FAILED {line}\n    frames: {}", v["frames"])),
        }
    }
    eprintln!("h2 conformance: {passed}/{total} passed");
    assert!(total >= 90, "only {total} cases ran:\n{stdout}");
    assert!(
        problems.is_empty(),
        "{} problems ({passed}/{total} passed):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The Python with Debian's `python3-hpack` (the system one; `.ci/run` installs it).
fn python() -> &'static str {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = std::process::Command::new(py)
            .args(["-c", "import hpack"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py;
        }
    }
    panic!("python3 with hpack is required (.ci/run installs python3-hpack)");
}
