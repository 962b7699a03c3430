//! The `loadtest` binary against servers started here on loopback (port 0): URLs with host
//! names, methods, headers and body files, status classes, chunked responses, the error
//! threshold, `--report` and `suite --scenario`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::Arc;

/// One request a test server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Respond = dyn Fn(&Seen) -> Vec<Vec<u8>> + Send + Sync;

/// An HTTP/1.1 keep-alive server on 127.0.0.1:0: every request is reported on the channel
/// and answered with `respond`'s pieces, each written (and so sent: TCP_NODELAY) on its own.
fn server(
    respond: impl Fn(&Seen) -> Vec<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let respond: Arc<Respond> = Arc::new(respond);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (tx, respond) = (tx.clone(), respond.clone());
            std::thread::spawn(move || serve(c, &tx, &*respond));
        }
    });
    (addr, rx)
}

fn serve(mut c: TcpStream, tx: &mpsc::Sender<Seen>, respond: &Respond) {
    c.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Parse every complete request buffered so far.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                break;
            };
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if buf.len() < head + len {
                break;
            }
            let seen = Seen {
                method: req.method.unwrap().to_string(),
                path: req.path.unwrap().to_string(),
                headers,
                body: buf[head..head + len].to_vec(),
            };
            buf.drain(..head + len);
            let close = seen.header("connection") == Some("close");
            for piece in respond(&seen) {
                if c.write_all(&piece).is_err() {
                    return;
                }
            }
            let _ = tx.send(seen);
            if close {
                return;
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn ok_response(_: &Seen) -> Vec<Vec<u8>> {
    vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()]
}

fn loadtest(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "loadtest {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The number after `key=` in the `status ...` line.
fn status_count(o: &Output, key: &str) -> u64 {
    let out = stdout(o);
    let line = out
        .lines()
        .find(|l| l.starts_with("status "))
        .unwrap_or_else(|| panic!("no status line in {out}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadtest-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_url_with_a_host_name_path_and_query() {
    let (addr, seen) = server(ok_response);
    let url = format!("http://localhost:{}/api/items?page=2", addr.port());
    let o = loadtest(&[
        "http",
        "--url",
        &url,
        "--connections",
        "2",
        "--rate",
        "200",
        "--duration",
        "0.3",
    ]);
    assert!(o.status.success());
    assert!(status_count(&o, "2xx") >= 40, "{}", stdout(&o));
    assert_eq!(status_count(&o, "transport"), 0);
    let first = seen.try_iter().next().expect("the server saw a request");
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/api/items?page=2");
    assert_eq!(
        first.header("host"),
        Some(format!("localhost:{}", addr.port()).as_str())
    );
}

#[test]
fn post_with_a_body_file_and_headers() {
    let (addr, seen) = server(|r| {
        let status = if r.method == "POST" {
            "201 Created"
        } else {
            "405 Method Not Allowed"
        };
        vec![format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").into_bytes()]
    });
    let dir = temp_dir("post");
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let o = loadtest(&[
        "http",
        "--target",
        &format!("http://127.0.0.1:{}/submit", addr.port()),
        "-X",
        "POST",
        "--body-file",
        file.to_str().unwrap(),
        "-H",
        "X-Token: abc 123",
        "--header",
        "content-type: application/octet-stream",
        "--connections",
        "1",
        "--rate",
        "100",
        "--duration",
        "0.2",
    ]);
    assert!(o.status.success());
    assert!(status_count(&o, "2xx") >= 10);
    let reqs: Vec<Seen> = seen.try_iter().collect();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/submit");
        assert_eq!(r.header("x-token"), Some("abc 123"));
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("content-length"), Some("3000"));
        assert_eq!(r.body, body);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn server_errors_count_in_5xx_and_fail_the_run() {
    let (addr, _seen) = server(|_| {
        vec![b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\noops!".to_vec()]
    });
    let target = format!("127.0.0.1:{}", addr.port());
    let args = [
        "http",
        "--target",
        &target,
        "--connections",
        "2",
        "--rate",
        "200",
        "--duration",
        "0.3",
    ];
    let o = loadtest(&args);
    assert_eq!(o.status.code(), Some(1));
    let n5 = status_count(&o, "5xx");
    assert!(n5 >= 40, "5xx={n5}");
    assert_eq!(status_count(&o, "2xx"), 0);
    assert!(
        stdout(&o).contains(&format!("errors={n5} ")),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("--max-error-rate 1%"), "{}", stderr(&o));
    // With the threshold raised past 100%, the same run passes.
    let mut lenient = args.to_vec();
    lenient.extend(["--max-error-rate", "100"]);
    assert!(loadtest(&lenient).status.success());
}

#[test]
fn a_refused_connection_is_a_transport_error() {
    // A port with nothing listening: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = loadtest(&[
        "http",
        "--target",
        &format!("http://127.0.0.1:{port}/"),
        "--rate",
        "100",
        "--duration",
        "0.2",
        "--connections",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(status_count(&o, "transport") >= 10);
}

#[test]
fn chunked_responses_are_successes() {
    // Chunk sizes in hex with an extension, a trailer, and pieces split mid-size-line and
    // mid-chunk so the client must reassemble across reads.
    let (addr, _seen) = server(|_| {
        vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1".to_vec(),
            b"0;ext=1\r\n0123456789abcdef".to_vec(),
            b"\r\n3\r\nxyz\r\n0\r\nx-checksum: 1\r\n".to_vec(),
            b"\r\n".to_vec(),
        ]
    });
    let o = loadtest(&[
        "http",
        "--target",
        &format!("http://localhost:{}/stream", addr.port()),
        "--connections",
        "2",
        "--rate",
        "200",
        "--duration",
        "0.3",
    ]);
    assert!(o.status.success());
    let ok = status_count(&o, "2xx");
    assert!(ok >= 40, "2xx={ok}");
    assert!(
        stdout(&o).contains(&format!("http1 ops={ok} errors=0 ")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn report_dir_has_json_with_the_load_parameters_html_and_hgrm() {
    let (addr, _seen) = server(ok_response);
    let dir = temp_dir("report");
    let o = loadtest(&[
        "http",
        "--target",
        &format!("http://127.0.0.1:{}/r", addr.port()),
        "--connections",
        "3",
        "--rate",
        "150",
        "--duration",
        "0.4",
        "-H",
        "x-a: b",
        "--report",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    let meta = &json["meta"];
    assert_eq!(meta["mode"], "http");
    assert!(meta["cores"].as_u64().unwrap() >= 1);
    assert!(!meta["kernel"].as_str().unwrap().is_empty());
    assert!(meta["cpu_model"].is_string());
    assert!(meta["versions"]["loadtest"]
        .as_str()
        .unwrap()
        .starts_with("loadtest "));
    let rec = &json["records"][0];
    assert_eq!(rec["scenario"], "http");
    let p = &rec["params"];
    assert_eq!(p["url"], format!("http://127.0.0.1:{}/r", addr.port()));
    assert_eq!(p["method"], "GET");
    assert_eq!(p["headers"][0], "x-a: b");
    assert_eq!(p["connections"], 3);
    assert_eq!(p["rate"], 150.0);
    assert_eq!(p["duration_s"], 0.4);
    assert_eq!(p["mode"], "open");
    assert_eq!(p["keepalive"], true);
    assert_eq!(p["max_error_rate_pct"], 1.0);
    assert!(rec["status"]["2xx"].as_u64().unwrap() >= 40);
    assert_eq!(rec["status"]["5xx"], 0);

    let html = std::fs::read_to_string(dir.join("latest.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Load parameters") && html.contains("rate=150"));
    let hgrm_name = format!("latest-http-127.0.0.1_{}.hgrm", addr.port());
    let hgrm = std::fs::read_to_string(dir.join(&hgrm_name)).unwrap();
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{hgrm}"
    );
    assert!(
        hgrm.contains("#[Mean    = ") && hgrm.contains("#[Buckets = "),
        "{hgrm}"
    );
    // The dated copy is there too.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("report-") && n.ends_with(".json")),
        "{names:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts `loadtest <args>` (a backend) and returns the address it reports on stderr.
#[test]
fn hgrm_to_stdout_leaves_stdout_to_the_histogram() {
    let (addr, _seen) = server(ok_response);
    let o = loadtest(&[
        "http",
        "--url",
        &format!("http://127.0.0.1:{}/", addr.port()),
        "--rate",
        "100",
        "--duration",
        "0.2",
        "--hgrm",
        "-",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{out}"
    );
    assert!(
        out.contains("#[Buckets = ") && !out.contains("ops="),
        "{out}"
    );
    // The summary lines went to stderr instead.
    let err = stderr(&o);
    assert!(
        err.contains("http1 ops=") && err.contains("status 1xx="),
        "{err}"
    );
}

#[test]
fn open_loop_throughput_is_what_a_slow_server_achieved() {
    // One connection to a server that takes 40 ms per response can complete at most 25
    // requests a second, whatever rate was asked for: the run takes longer than
    // --duration to answer the requests due in it, and the rate counts that time.
    let (addr, _seen) = server(|s: &Seen| {
        std::thread::sleep(std::time::Duration::from_millis(40));
        ok_response(s)
    });
    let dir = temp_dir("slow");
    let o = loadtest(&[
        "http",
        "--url",
        &format!("http://127.0.0.1:{}/", addr.port()),
        "--connections",
        "1",
        "--rate",
        "50",
        "--duration",
        "0.4",
        "--report",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(status_count(&o, "2xx"), 20, "{}", stdout(&o));
    let out = stdout(&o);
    let rate: f64 = out
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rate="))
        .and_then(|r| r.strip_suffix("/s"))
        .unwrap_or_else(|| panic!("no rate in {out}"))
        .parse()
        .unwrap();
    assert!(rate <= 25.5, "reported {rate}/s; at most 25/s was possible");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    let t = json["records"][0]["throughput"].as_f64().unwrap();
    assert!(t <= 25.5, "report throughput {t}");
    // The JSON's command line pastes back into a shell.
    assert!(json["meta"]["command"]
        .as_str()
        .unwrap()
        .contains(" --url http://127.0.0.1:"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sparse_schedule_is_timed_to_its_last_response() {
    // 40 connections at 20 req/s: each sends every 2 s, so after the window most workers'
    // next slot is up to 2 s away; waiting for it was counted as run time (rate=10/s).
    let (addr, _seen) = server(ok_response);
    let o = loadtest(&[
        "http",
        "--url",
        &format!("http://127.0.0.1:{}/", addr.port()),
        "--connections",
        "40",
        "--rate",
        "20",
        "--duration",
        "1",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    let rate: f64 = out
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rate="))
        .and_then(|r| r.strip_suffix("/s"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(status_count(&o, "2xx"), 20, "{out}");
    assert!(
        rate >= 16.0,
        "reported {rate}/s for 20 answered in the 1 s window"
    );
}

#[test]
fn a_status_code_outside_100_to_599_is_a_malformed_response() {
    let (addr, _seen) =
        server(|_: &Seen| vec![b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n".to_vec()]);
    let o = loadtest(&[
        "http",
        "--url",
        &format!("http://127.0.0.1:{}/", addr.port()),
        "--rate",
        "50",
        "--duration",
        "0.2",
    ]);
    assert!(!o.status.success());
    assert!(status_count(&o, "transport") > 0, "{}", stdout(&o));
    assert_eq!(status_count(&o, "1xx"), 0);
    assert!(stdout(&o).contains(" ops=0 "), "{}", stdout(&o));
}

#[test]
fn zero_counts_and_a_percentage_past_100_are_refused() {
    for args in [
        &["http", "--url", "http://127.0.0.1:9/", "--connections", "0"][..],
        &["h2", "--url", "http://127.0.0.1:9/", "--streams", "0"],
        &["churn", "--url", "tcp://127.0.0.1:9", "--concurrency", "0"],
        &[
            "http",
            "--url",
            "http://127.0.0.1:9/",
            "--max-error-rate=-1",
        ],
        &[
            "http",
            "--url",
            "http://127.0.0.1:9/",
            "--max-error-rate",
            "NaN",
        ],
    ] {
        let o = loadtest(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: clap's usage error");
        let err = stderr(&o);
        assert!(
            err.contains("must be at least 1") || err.contains("percentage from 0 to 100"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_closed_stdout_does_not_fail_the_run() {
    let (addr, _seen) = server(ok_response);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "http",
            "--url",
            &format!("http://127.0.0.1:{}/", addr.port()),
            "--rate",
            "50",
            "--duration",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `loadtest ... | head -0`
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

fn start_backend(args: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while err.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
    (child, addr)
}

#[test]
fn h2_load_with_a_host_name_and_a_body() {
    let (mut child, addr) = start_backend(&[
        "h2-server",
        "--listen",
        "127.0.0.1:0",
        "--body-bytes",
        "100",
    ]);
    let dir = temp_dir("h2");
    let file = dir.join("b");
    std::fs::write(&file, b"hello").unwrap();
    let o = loadtest(&[
        "h2",
        "--target",
        &format!("http://localhost:{}/x", addr.port()),
        "--connections",
        "1",
        "--streams",
        "4",
        "--rate",
        "200",
        "--duration",
        "0.3",
        "--body-file",
        file.to_str().unwrap(),
        "-H",
        "x-k: v",
    ]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(o.status.success());
    assert!(status_count(&o, "2xx") >= 40);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tcp_commands_take_host_names() {
    let (mut child, addr) =
        start_backend(&["greeter", "--listen", "127.0.0.1:0", "--threads", "1"]);
    let o = loadtest(&[
        "first-byte",
        "--target",
        &format!("tcp://localhost:{}", addr.port()),
        "--count",
        "20",
    ]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("first_byte_us n=20 "));
}

#[test]
fn suite_rejects_an_unknown_scenario_naming_the_valid_ones() {
    let o = loadtest(&[
        "suite",
        "--scenario",
        "http1-max,nope",
        "--targets",
        "baseline",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("unknown scenario nope"), "{err}");
    for valid in [
        "http1-keepalive",
        "http1-max",
        "http1-conn-per-req",
        "h2-streams",
        "h2-to-h1",
        "tcp-bulk",
        "tcp-churn",
        "server-first",
    ] {
        assert!(err.contains(valid), "{valid} not in {err}");
    }
}

#[test]
fn suite_runs_only_the_named_scenarios() {
    let dir = temp_dir("suite");
    let o = loadtest(&[
        "suite",
        "--targets",
        "baseline",
        "--scenario",
        "http1-max",
        "--scenario",
        "tcp-churn,server-first",
        "--quick",
        "--duration",
        "0.2",
        "--report",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    let names: Vec<&str> = json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http1-max", "tcp-churn", "server-first"]);
    assert_eq!(json["records"][0]["params"]["mode"], "closed");
    assert_eq!(json["records"][0]["params"]["connections"], 8);
    assert!(json["records"][0]["status"]["2xx"].as_u64().unwrap() > 0);
    assert_eq!(json["records"][1]["params"]["bytes"], 64);
    for f in [
        "latest.html",
        "latest-http1-max-baseline.hgrm",
        "latest-tcp-churn-baseline.hgrm",
        "latest-server-first-baseline.hgrm",
    ] {
        assert!(Path::new(&dir.join(f)).exists(), "{f}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
