//! `GET /connections`: every open connection (with `closed=1`: the recent closes) and the
//! detection verdict with its reason, as JSON or (`format=text`) an aligned table.
//!
//! Query parameters: `listener=NAME`, `verdict=V[,V...]` (a `tcp_detect_total` result, or
//! `detecting`, `refused`, `dial_failed`, `client_error`), `limit=N` (default
//! [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]), `closed=1|0|true|false`, `format=json|text`.
//! Names and values are decoded as `application/x-www-form-urlencoded` (`%XX`, `+` for a
//! space) and must be UTF-8. An unknown parameter or a bad value is an error whose message
//! says what is accepted (a 400).
//!
//! Each worker filters its own table and sends its newest `limit` matches with their count;
//! this merges them, keeps the newest `limit` and reports the total that matched, so the
//! reply stays bounded however many connections are open. Peer-supplied strings (SNI, ALPN)
//! arrive escaped (`detect::tls::escape`); the text table caps its wide cells at
//! [`MAX_CELL`] and [`MAX_DETAIL`] characters, the JSON has them whole.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::connections::{ListenerInfo, Query, Report, Row, Verdict, VerdictSet};

/// Rows returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`: bounds the reply (about 600 bytes of JSON per row) and the workers'
/// time spent on it (one `TCP_INFO` read per open row, ~0.3 µs).
pub const MAX_LIMIT: usize = 10_000;

/// A parsed `/connections` query.
#[derive(Debug, Clone)]
pub struct Params {
    /// What the workers are asked for.
    pub query: Query,
    /// The aligned text table instead of JSON.
    pub text: bool,
}

/// Widest SNI or ALPN cell of the text table, in characters (longer ones end in `…`): one
/// hostile or odd client must not widen every row. The JSON keeps the whole value.
pub const MAX_CELL: usize = 64;
/// Widest DETAIL cell of the text table, in characters.
pub const MAX_DETAIL: usize = 160;

/// Decodes a query name or value as `application/x-www-form-urlencoded` (what HTML forms
/// and `curl -G --data-urlencode` send): `%XX` is a byte, `+` a space. The error says what
/// is wrong: a broken escape, or bytes that are not UTF-8.
fn decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = hex else {
                    let bad = String::from_utf8_lossy(&b[i..b.len().min(i + 3)]);
                    return Err(format!(
                        "{bad:?} is not a percent-escape (% and two hex digits)"
                    ));
                };
                let hex = std::str::from_utf8(hex).expect("invariant: hex digits are ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("invariant: two hex digits"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            x => {
                out.push(x);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!(
            "{v:?} decodes to bytes that are not UTF-8 (0x{:02x} at byte {at}); percent-encode UTF-8 text",
            e.as_bytes()[at]
        )
    })
}

/// Parses the query string (without the `?`). Errors: the message for a 400.
pub fn parse(query: &str) -> Result<Params, String> {
    let mut p = Params {
        query: Query {
            closed: false,
            listener: None,
            verdicts: VerdictSet::ALL,
            limit: DEFAULT_LIMIT,
        },
        text: false,
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (raw_key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key).map_err(|e| format!("parameter name: {e}\n"))?;
        let value = decode(raw).map_err(|e| format!("{key}: {e}\n"))?;
        if seen.contains(&key) {
            return Err(format!("{key}: given twice\n"));
        }
        match key.as_str() {
            "format" => {
                p.text = match value.as_str() {
                    "json" => false,
                    "text" => true,
                    _ => return Err(format!("format: {value:?} is not json or text\n")),
                }
            }
            "closed" => {
                p.query.closed = match value.as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("closed: {value:?} is not 1, 0, true or false\n")),
                }
            }
            "limit" => {
                p.query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "limit: {value:?} is not a number from 1 to {MAX_LIMIT}\n"
                        ))
                    }
                }
            }
            "listener" => {
                let ok = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(format!(
                        "listener: {value:?} is not a listener name ([A-Za-z0-9_-]+)\n"
                    ));
                }
                p.query.listener = Some(value);
            }
            "verdict" => {
                let mut set = VerdictSet::NONE;
                for v in value.split(',') {
                    if !set.insert_name(v) {
                        return Err(format!(
                            "verdict: {v:?} is not one of {}\n",
                            Verdict::NAMES.join(", ")
                        ));
                    }
                }
                p.query.verdicts = set;
            }
            _ => {
                return Err(format!(
                    "unknown parameter {key:?}: try listener, verdict, limit, closed, format\n"
                ))
            }
        }
        seen.push(key);
    }
    Ok(p)
}

/// Merges the workers' reports (`workers` were asked) and renders them: `(content type,
/// body)`, or the message for a 400 (a listener no worker has).
pub fn render(
    p: &Params,
    reports: Vec<Report>,
    workers: usize,
) -> Result<(&'static str, String), String> {
    let answered = reports.len();
    // The same `admin.closed_connections` on every worker; unknown if none answered.
    let closed_ring = reports.first().map(|r| r.closed_ring);
    // Every worker applies the same reloads in the same order: listener ids agree.
    let listeners: Vec<ListenerInfo> = reports
        .first()
        .map(|r| r.listeners.clone())
        .unwrap_or_default();
    if let Some(name) = &p.query.listener {
        if answered > 0 && !listeners.iter().any(|l| &l.name == name) {
            // One name per listener (a reload that changed one lists each generation).
            let mut names: Vec<&str> = Vec::new();
            for l in &listeners {
                if !names.contains(&l.name.as_str()) {
                    names.push(&l.name);
                }
            }
            return Err(format!(
                "listener: no listener named {name:?} (listeners: {})\n",
                names.join(", ")
            ));
        }
    }
    let total: usize = reports.iter().map(|r| r.total).sum();
    let mut rows: Vec<Row> = reports.into_iter().flat_map(|r| r.rows).collect();
    // Newest first: the youngest open connections, or the most recent closes.
    rows.sort_by_key(|r| (r.closed_ago.unwrap_or(r.age), r.worker, u64::MAX - r.id));
    rows.truncate(p.query.limit);
    let head = Head {
        closed: p.query.closed,
        total,
        limit: p.query.limit,
        workers,
        answered,
        closed_ring,
    };
    Ok(if p.text {
        ("text/plain; charset=utf-8", text(&head, &rows, &listeners))
    } else {
        ("application/json", json(&head, &rows, &listeners))
    })
}

struct Head {
    closed: bool,
    total: usize,
    limit: usize,
    workers: usize,
    answered: usize,
    /// Each worker's closed-ring capacity (0: off).
    closed_ring: Option<usize>,
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// === JSON ===

/// Appends `s` as a JSON string.
fn js(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn js_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => js(out, s),
        None => out.push_str("null"),
    }
}

fn js_num(out: &mut String, n: Option<u128>) {
    match n {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

fn json(h: &Head, rows: &[Row], listeners: &[ListenerInfo]) -> String {
    let now = SystemTime::now();
    let mut o = String::with_capacity(256 + rows.len() * 600);
    let _ = write!(
        o,
        "{{\"state\":\"{}\",\"total\":{},\"shown\":{},\"limit\":{},\"workers\":{},\"workers_answered\":{},\"closed_ring\":",
        if h.closed { "closed" } else { "open" },
        h.total,
        rows.len(),
        h.limit,
        h.workers,
        h.answered
    );
    js_num(&mut o, h.closed_ring.map(|n| n as u128));
    o.push_str(",\"connections\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let l = listeners.get(r.listener);
        let (code, detail) = r.reason(l);
        let _ = write!(
            o,
            "\n{{\"worker\":{},\"id\":{},\"listener\":",
            r.worker, r.id
        );
        js_opt(&mut o, l.map(|l| l.name.as_str()));
        o.push_str(",\"direction\":");
        js_opt(&mut o, l.map(|l| l.direction.as_str()));
        o.push_str(",\"client\":");
        js(&mut o, &r.client.to_string());
        o.push_str(",\"destination\":");
        js_opt(&mut o, r.destination.map(|d| d.to_string()).as_deref());
        let _ = write!(o, ",\"original_dst\":{},\"verdict\":", r.original_dst);
        js(&mut o, r.verdict.as_str());
        o.push_str(",\"reason\":");
        js(&mut o, code);
        o.push_str(",\"detail\":");
        js(&mut o, &detail);
        o.push_str(",\"first_bytes\":");
        js_opt(&mut o, r.first_bytes().map(hex).as_deref());
        o.push_str(",\"server_first_bytes\":");
        js_opt(&mut o, r.server_first_bytes().map(hex).as_deref());
        o.push_str(",\"sni\":");
        js_opt(&mut o, r.sni.as_deref());
        o.push_str(",\"alpn\":[");
        for (k, a) in r.alpn.iter().enumerate() {
            if k > 0 {
                o.push(',');
            }
            js(&mut o, a);
        }
        o.push_str("],\"requests\":");
        js_num(&mut o, r.http_requests(l).map(u128::from));
        o.push_str(",\"bytes_from_client\":");
        js_num(&mut o, r.tcp.map(|t| u128::from(t.bytes_received)));
        o.push_str(",\"bytes_to_client\":");
        js_num(&mut o, r.tcp.map(|t| u128::from(t.bytes_sent)));
        match r.closed_ago {
            None => {
                let _ = write!(o, ",\"age_ms\":{}", ms(r.age));
            }
            Some(ago) => {
                let at = now
                    .checked_sub(ago)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis());
                let _ = write!(
                    o,
                    ",\"duration_ms\":{},\"closed_ago_ms\":{},\"closed_at_unix_ms\":{}",
                    ms(r.age),
                    ms(ago),
                    at
                );
            }
        }
        o.push_str(",\"idle_ms\":");
        js_num(&mut o, r.idle().map(ms));
        o.push('}');
    }
    o.push_str("\n]}\n");
    o
}

// === text ===

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h07m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

/// `s` cut to at most `max` characters, the last being `…` when cut.
fn cap(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..keep])
        }
    }
}

fn addr(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

fn text(h: &Head, rows: &[Row], listeners: &[ListenerInfo]) -> String {
    let mut table: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let mut header: Vec<&str> = vec![
        "WORKER",
        "ID",
        "LISTENER",
        "DIRECTION",
        "CLIENT",
        "DESTINATION",
        "VERDICT",
        "REASON",
        "FIRST-BYTES",
        "SNI",
        "ALPN",
        "REQS",
        "IN",
        "OUT",
    ];
    header.extend_from_slice(if h.closed {
        &["DURATION", "IDLE", "CLOSED"][..]
    } else {
        &["AGE", "IDLE"][..]
    });
    header.push("DETAIL");
    table.push(header.iter().map(|s| s.to_string()).collect());
    let dash = || "-".to_string();
    for r in rows {
        let l = listeners.get(r.listener);
        let (code, mut detail) = r.reason(l);
        if let Some(b) = r.server_first_bytes() {
            let _ = write!(detail, "; the server's first bytes: {}", hex(b));
        }
        let mut line = vec![
            r.worker.to_string(),
            r.id.to_string(),
            l.map_or_else(dash, |l| l.name.clone()),
            l.map_or_else(dash, |l| l.direction.as_str().to_string()),
            r.client.to_string(),
            addr(r.destination),
            r.verdict.as_str().to_string(),
            code.to_string(),
            r.first_bytes().map_or_else(dash, hex),
            r.sni.as_deref().map_or_else(dash, |s| cap(s, MAX_CELL)),
            if r.alpn.is_empty() {
                dash()
            } else {
                cap(&r.alpn.join(","), MAX_CELL)
            },
            r.http_requests(l).map_or_else(dash, |n| n.to_string()),
            r.tcp.map_or_else(dash, |t| t.bytes_received.to_string()),
            r.tcp.map_or_else(dash, |t| t.bytes_sent.to_string()),
            human(r.age),
            r.idle().map_or_else(dash, human),
        ];
        if let Some(ago) = r.closed_ago {
            line.push(format!("{} ago", human(ago)));
        }
        line.push(cap(&detail, MAX_DETAIL));
        table.push(line);
    }
    let cols = table[0].len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = format!(
        "# {} connections: {} shown of {} (limit {}); {} of {} workers answered",
        if h.closed { "closed" } else { "open" },
        rows.len(),
        h.total,
        h.limit,
        h.answered,
        h.workers
    );
    if h.closed && h.closed_ring == Some(0) {
        o.push_str("; the closed ring is off (admin.closed_connections = 0)");
    }
    o.push('\n');
    for r in &table {
        for (c, v) in r.iter().enumerate() {
            if c + 1 == cols {
                o.push_str(v);
            } else {
                let _ = write!(o, "{v:<w$}  ", w = width[c]);
            }
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_accepts_the_documented_forms() {
        let p = parse("").unwrap();
        assert_eq!(p.query.limit, DEFAULT_LIMIT);
        assert!(!p.text && !p.query.closed && p.query.listener.is_none());
        let p =
            parse("listener=in_1&verdict=opaque%2Ctimeout&limit=5&closed=1&format=text").unwrap();
        assert_eq!(p.query.listener.as_deref(), Some("in_1"));
        assert!(p.query.closed && p.text);
        assert_eq!(p.query.limit, 5);
        let mut want = VerdictSet::NONE;
        want.insert_name("opaque");
        want.insert_name("timeout");
        assert_eq!(p.query.verdicts, want);
        // Names are decoded too.
        let p = parse("%6Cimit=7&form%61t=text").unwrap();
        assert_eq!((p.query.limit, p.text), (7, true));
        assert_eq!(decode("a+b%20c%2B").unwrap(), "a b c+");
    }

    #[test]
    fn bad_queries_say_what_is_accepted() {
        for (q, want) in [
            ("limit=0", "limit"),
            ("limit=10001", "from 1 to 10000"),
            ("limit=x", "limit"),
            ("limit=", "limit"),
            ("verdict=bogus", "not one of detecting, http/1"),
            ("verdict=opaque,", "verdict"),
            ("listener=a%20b", "not a listener name"),
            ("listener=", "listener"),
            ("format=xml", "json or text"),
            ("closed=yes", "closed"),
            ("limit=1&limit=2", "given twice"),
            ("limt=5", "unknown parameter \"limt\""),
            ("verdict=%zz", "verdict: \"%zz\" is not a percent-escape"),
            ("verdict=%+f", "\"%+f\" is not a percent-escape"),
            ("verdict=a%2", "\"%2\" is not a percent-escape"),
            (
                "verdict=%e2%82",
                "verdict: \"%e2%82\" decodes to bytes that are not UTF-8 (0xe2 at byte 0)",
            ),
            ("listener=x%FF", "not UTF-8 (0xff at byte 1)"),
            (
                "%FFx=1",
                "parameter name: \"%FFx\" decodes to bytes that are not UTF-8",
            ),
            ("limi%74=1&limit=2", "limit: given twice"),
            ("listener=a+b", "\"a b\" is not a listener name"),
        ] {
            let e = parse(q).expect_err(q);
            assert!(e.contains(want), "{q}: {e}");
            assert!(e.ends_with('\n'));
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut o = String::new();
        js(&mut o, "a\"b\\c\n\u{1}é");
        assert_eq!(o, "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(cap("abcdef", 6), "abcdef");
        assert_eq!(cap("abcdefg", 6), "abcde…");
        assert_eq!(cap("ééééééé", 3), "éé…");
        assert_eq!(hex(b"*1\r\n"), "2a310d0a");
        assert_eq!(human(Duration::from_millis(61_000)), "1m01s");
    }

    #[test]
    fn an_unknown_listener_is_a_bad_request_and_rows_merge_newest_first() {
        let listeners = vec![ListenerInfo {
            name: "t".into(),
            direction: crate::config::Direction::Outbound,
            http1: true,
            http2: true,
        }];
        let report = |worker, ages: &[u64]| Report {
            worker,
            listeners: listeners.clone(),
            total: ages.len(),
            closed_ring: 0,
            rows: ages
                .iter()
                .enumerate()
                .map(|(i, &a)| Row {
                    worker,
                    id: i as u64,
                    listener: 0,
                    client: SocketAddr::from(([127, 0, 0, 1], 1)),
                    destination: None,
                    original_dst: false,
                    verdict: Verdict::Detecting,
                    skipped: None,
                    timeout: None,
                    seen: Default::default(),
                    sni: None,
                    bad_sni: false,
                    alpn: vec!["h2".into()],
                    requests: 0,
                    tcp: None,
                    age: Duration::from_millis(a),
                    closed_ago: None,
                })
                .collect(),
        };
        let mut p = parse("listener=u").unwrap();
        let e = render(&p, vec![report(0, &[])], 1).unwrap_err();
        assert!(e.contains("no listener named \"u\" (listeners: t)"), "{e}");
        p = parse("limit=3&format=text").unwrap();
        let (ctype, body) = render(&p, vec![report(0, &[5, 50]), report(1, &[1, 30])], 2).unwrap();
        assert!(ctype.starts_with("text/plain"));
        let ages: Vec<&str> = body
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().nth(14).unwrap())
            .collect();
        assert_eq!(ages, ["1ms", "5ms", "30ms"], "{body}");
        assert!(body.starts_with("# open connections: 3 shown of 4 (limit 3); 2 of 2"));
        let (ctype, body) = render(&parse("").unwrap(), vec![report(0, &[5])], 2).unwrap();
        assert_eq!(ctype, "application/json");
        assert!(
            body.contains(
                "\"total\":1,\"shown\":1,\"limit\":100,\"workers\":2,\"workers_answered\":1,\"closed_ring\":0,"
            ),
            "{body}"
        );
        assert!(body.contains("\"alpn\":[\"h2\"]"), "{body}");
        // No ring: the closed view says so.
        let (_, body) = render(
            &parse("closed=1&format=text").unwrap(),
            vec![report(0, &[])],
            1,
        )
        .unwrap();
        assert!(
            body.starts_with("# closed connections: 0 shown of 0 (limit 100); 1 of 1 workers answered; the closed ring is off (admin.closed_connections = 0)\n"),
            "{body}"
        );
    }
}
