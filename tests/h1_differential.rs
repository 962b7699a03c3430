//! Differential fuzzing of the HTTP/1 request-head parser and the chunked decoder against h11
//! (issue 16 §6): `scripts/h1-diff.py` generates request heads (structured, known smuggling
//! vectors, mutations), asks this test for sidewire's verdict on each over a pipe, compares it
//! with h11's, and fails on any disagreement that is not one of its documented choices (where
//! sidewire is deliberately stricter or looser; README "HTTP/1 differential fuzzing").
//!
//! It also checks the cargo-fuzz target's property (`fuzz/fuzz_targets/http1_head.rs`: the
//! chunked decoder finds the same end however its input is split) on every generated body.
//!
//! The suite runs a small fixed-seed run (`H1_DIFF_COUNT` and `H1_DIFF_SEED` change it; the
//! README gives the long run's command and result; `H1_DIFF_DUMP=FILE` makes the script write
//! every unexplained disagreement there).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use sidewire::config::Limits;
use sidewire::http1::chunked::Decoder;
use sidewire::http1::head::{parse_request, Framing};

/// sidewire's verdict on `data`, in the script's words: the head's, then for a chunked body
/// where the decoder says it ends (bytes consumed from the start of `data`, data bytes).
fn verdict(data: &[u8]) -> String {
    let mut storage = [httparse::EMPTY_HEADER; 100];
    match parse_request(data, Limits::default(), &mut storage) {
        Err(e) => format!("reject {}", e.reason()),
        Ok(None) => "incomplete".to_string(),
        Ok(Some(r)) => match r.framing {
            Framing::Empty => "accept length 0".to_string(),
            Framing::Length(n) => format!("accept length {n}"),
            Framing::UntilClose => "accept until-close".to_string(),
            Framing::Chunked => {
                let body = &data[r.head_len..];
                let mut d = Decoder::default();
                let mut got = 0usize;
                let whole = d.decode(body, |c| got += c.len());
                split_agrees(body, whole, d.is_done());
                match whole {
                    Ok(n) if d.is_done() => {
                        format!("accept chunked done {} {got}", r.head_len + n)
                    }
                    Ok(_) => "accept chunked incomplete".to_string(),
                    Err(e) => format!("accept chunked error {}", e.0),
                }
            }
        },
    }
}

/// The property of the cargo-fuzz target `fuzz/fuzz_targets/http1_head.rs`, on every
/// generated body: fed in two pieces at every split, the chunked decoder finds the same end
/// (or the same refusal) as fed whole.
fn split_agrees(
    body: &[u8],
    whole: Result<usize, sidewire::http1::chunked::ChunkError>,
    done: bool,
) {
    for split in 0..=body.len() {
        let mut d = Decoder::default();
        let parts = d.feed(&body[..split]).and_then(|n| {
            if d.is_done() {
                Ok(n)
            } else {
                d.feed(&body[split..]).map(|m| n + m)
            }
        });
        match (whole, parts) {
            (Ok(a), Ok(b)) if done => {
                assert!(
                    d.is_done() && a == b,
                    "split at {split} moves the end: {body:?}"
                )
            }
            (Ok(_), Ok(_)) => assert!(!d.is_done(), "split at {split} ends it: {body:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("split at {split} changes the verdict: {body:?}"),
        }
    }
}

fn python_with_h11() -> &'static str {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import h11"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py;
        }
    }
    panic!("python3 with h11 is required (.ci/run installs python3-h11)");
}

#[test]
fn h1_head_parser_agrees_with_h11() {
    let count = std::env::var("H1_DIFF_COUNT").unwrap_or_else(|_| "20000".into());
    let seed = std::env::var("H1_DIFF_SEED").unwrap_or_else(|_| "16".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/h1-diff.py");
    let mut child = Command::new(python_with_h11())
        .args([script, "--seed", &seed, "--count", &count])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs scripts/h1-diff.py");
    let mut to = child.stdin.take().unwrap();
    let from = BufReader::new(child.stdout.take().unwrap());
    let mut summary = None;
    for line in from.lines() {
        let line = line.unwrap();
        if let Some(hex) = line.strip_prefix("H ") {
            let data: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            writeln!(to, "{}", verdict(&data)).unwrap();
            to.flush().unwrap();
        } else if let Some(s) = line.strip_prefix("S ") {
            summary = Some(s.to_string());
        }
    }
    let status = child.wait().unwrap();
    let summary = summary.expect("the script ends with a summary");
    eprintln!("h1 differential (seed {seed}): {summary}");
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(
        v["inputs"].as_u64().unwrap() >= count.parse::<u64>().unwrap(),
        "{summary}"
    );
    assert!(
        status.success() && v["unexplained"] == 0,
        "disagreements with h11 that no documented choice explains:\n{}",
        serde_json::to_string_pretty(&v["examples"]).unwrap()
    );
}

/// One input per documented choice of `scripts/h1-diff.py` (`CHOICES`), with sidewire's
/// verdict: each place where sidewire deliberately differs from h11 is pinned here, whatever
/// the fuzzer's seed happens to generate.
#[test]
fn documented_choices_hold() {
    let post = "POST / HTTP/1.1\r\nHost: h\r\n";
    let chunked = format!("{post}Transfer-Encoding: chunked\r\n\r\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("early-reject", "GET / HTTP/1.1\r\nHo st".into(), "reject"),
        (
            "http-version",
            "GET / HTTP/1.2\r\nHost: h\r\n\r\n".into(),
            "reject unsupported HTTP version",
        ),
        (
            "http-version",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n".into(),
            "reject unsupported HTTP version",
        ),
        (
            "ctl-in-field-value",
            format!("{post}X: a\x01b\r\n\r\n"),
            "reject invalid header value",
        ),
        (
            "ctl-in-field-value",
            format!("{post}X: a\x7fb\r\n\r\n"),
            "reject invalid header value",
        ),
        (
            "ctl-in-field-value",
            format!("{chunked}0\r\nT: a\x17b\r\n\r\n"),
            "accept chunked error invalid trailer field value",
        ),
        (
            "content-length-and-transfer-encoding",
            format!("{post}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
            "reject both Content-Length and Transfer-Encoding",
        ),
        (
            "content-length-overflow",
            format!("{post}Content-Length: 99999999999999999999\r\n\r\n"),
            "reject invalid Content-Length",
        ),
        (
            "duplicate-content-length",
            format!("{post}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            "reject duplicate Content-Length",
        ),
        (
            "content-length-list",
            format!("{post}Content-Length: 5, 5\r\n\r\nhello"),
            "reject invalid Content-Length",
        ),
        (
            "transfer-coding-before-chunked",
            format!("{post}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            "accept chunked done",
        ),
        (
            "transfer-encoding-http10",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "reject Transfer-Encoding in an HTTP/1.0 request",
        ),
        ("obs-fold", format!("{post}X: a\r\n b\r\n\r\n"), "reject"),
        (
            "obs-fold",
            format!("{chunked}0\r\nT: a\r\n b\r\n\r\n"),
            "accept chunked error obs-fold in trailers",
        ),
        (
            "target-syntax",
            "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "reject invalid request target",
        ),
        (
            "target-syntax",
            "GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "reject authority-form target without CONNECT",
        ),
        (
            "host-syntax",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n".into(),
            "reject invalid Host",
        ),
        (
            "host-syntax",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            "reject more than one Host",
        ),
        (
            "expectation",
            format!("{post}Expect: x\r\n\r\n"),
            "reject unsupported expectation",
        ),
        (
            "leading-empty-line",
            "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "accept length 0",
        ),
        (
            "chunked-early-error",
            format!("{chunked}fffffffffffffffff\r\n"),
            "accept chunked error chunk size too large",
        ),
        (
            "bare-cr-lf-in-chunked",
            format!("{chunked}5;e=1\r\r\nhello\r\n0\r\n\r\n"),
            "accept chunked error bare CR in chunk size line",
        ),
        (
            "bare-cr-lf-in-chunked",
            format!("{chunked}0\r\nT: v\n\r\n"),
            "accept chunked error bare LF in trailers",
        ),
        (
            "bws-before-chunk-ext",
            format!("{chunked}5 ;x\r\nhello\r\n0\r\n\r\n"),
            "accept chunked done",
        ),
        (
            "chunk-ext-grammar",
            format!("{chunked}5;a=\"x\r\nhello\r\n0\r\n\r\n"),
            "accept chunked error malformed chunk extension",
        ),
        (
            "chunk-ext-grammar",
            format!("{chunked}5;\r\nhello\r\n0\r\n\r\n"),
            "accept chunked error malformed chunk extension",
        ),
    ];
    for (choice, input, want) in cases {
        let got = verdict(input.as_bytes());
        assert!(
            got.starts_with(want),
            "{choice}: {input:?} gave {got:?}, want {want:?}"
        );
    }
}
