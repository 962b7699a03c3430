//! One worker's table of open connections and its ring of recently closed ones, for
//! `GET /connections`: what each connection is, what detection decided and on what evidence.
//!
//! The spine writes what it already knows at its stage boundaries (accept, destination,
//! verdict with the bytes it was made on, SNI/ALPN, each HTTP request, close) into a slab
//! owned by the worker: no lock, no atomic, no clock read, no syscall, no allocation beyond
//! the slab's growth. Bytes each way and idle time are the kernel's (`TCP_INFO` on the client
//! socket), read only when someone asks, for the rows returned.
//!
//! Closing moves the entry into a ring of the last `admin.closed_connections` closes. That is
//! the one cost per connection: a `TCP_INFO` read while the socket is still open (about
//! 0.3 µs, against ~100 µs of CPU for a whole proxied connection) and one clock read for the
//! duration; with a ring of 0 neither happens.
//!
//! A report is built in two steps so that a large one does not stall the worker: picking the
//! matches (a pass over the table, no syscall), then the rows, [`ROWS_PER_TURN`] per turn of
//! the worker's event loop ([`Connections::add_rows`]; the worker yields between chunks).
//!
//! Rows cross to the admin thread as plain values ([`Report`]); reasons are worded there
//! ([`Row::reason`]). Not here: rendering (`admin::connections`), the control channel
//! (`worker`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::config::Direction;
use crate::detect::{ClientHello, DetectReason, DetectResult, Seen, PEEK_CAP};
use crate::error::Refusal;
use crate::sys::{self, TcpStats};

/// What a connection was classified as, or why it never was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Detection has not decided yet.
    Detecting,
    /// A verdict (from detection, or from the config without detection).
    Decided(DetectResult),
    /// An original-destination listener refused it before detection.
    Refused(Refusal),
    /// The client stayed silent and the early (server-first) dial failed: nothing to proxy to.
    DialFailed,
    /// The client socket failed during detection.
    ClientError,
}

/// Number of distinct [`Verdict`] names (the `?verdict=` values).
const VERDICTS: usize = 4 + DetectResult::ALL.len();

impl Verdict {
    /// Every verdict name, in [`Verdict::index`] order.
    pub const NAMES: [&'static str; VERDICTS] = [
        "detecting",
        "http/1",
        "http/2",
        "tls",
        "opaque",
        "timeout",
        "server_first",
        "opaque_port",
        "closed",
        "refused",
        "dial_failed",
        "client_error",
    ];

    fn index(self) -> usize {
        match self {
            Verdict::Detecting => 0,
            Verdict::Decided(r) => 1 + r as usize,
            Verdict::Refused(_) => 1 + DetectResult::ALL.len(),
            Verdict::DialFailed => 2 + DetectResult::ALL.len(),
            Verdict::ClientError => 3 + DetectResult::ALL.len(),
        }
    }

    /// The name shown and filtered on: a `tcp_detect_total` result, or `detecting`,
    /// `refused`, `dial_failed`, `client_error`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// A set of verdicts (`?verdict=opaque,timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictSet(u32);

impl VerdictSet {
    /// Every verdict.
    pub const ALL: VerdictSet = VerdictSet((1 << VERDICTS) - 1);
    /// No verdict.
    pub const NONE: VerdictSet = VerdictSet(0);

    /// Adds the verdict named `name`; `false` if no verdict has that name.
    pub fn insert_name(&mut self, name: &str) -> bool {
        match Verdict::NAMES.iter().position(|n| *n == name) {
            Some(i) => {
                self.0 |= 1 << i;
                true
            }
            None => false,
        }
    }

    /// Whether `v` is in the set.
    pub fn contains(self, v: Verdict) -> bool {
        self.0 & (1 << v.index()) != 0
    }
}

/// Which connections a [`Report`] lists.
#[derive(Debug, Clone)]
pub struct Query {
    /// The closed ring instead of the open connections.
    pub closed: bool,
    /// Only this listener's (by name).
    pub listener: Option<String>,
    /// Only these verdicts.
    pub verdicts: VerdictSet,
    /// At most this many rows (the newest).
    pub limit: usize,
}

/// A listener generation's facts the rows need, by its id ([`Row::listener`]).
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Its name.
    pub name: String,
    /// Its direction.
    pub direction: Direction,
    /// HTTP/1 is proxied request by request (else forwarded opaque).
    pub http1: bool,
    /// HTTP/2 is proxied stream by stream (else forwarded opaque).
    pub http2: bool,
}

/// One connection, as sent to the admin thread.
#[derive(Debug, Clone)]
pub struct Row {
    /// The worker it is on.
    pub worker: usize,
    /// Its number on that worker (accept order).
    pub id: u64,
    /// Its listener's id: its index in [`Report::listeners`].
    pub listener: usize,
    /// The client's address.
    pub client: SocketAddr,
    /// Where it goes: the endpoint picked at accept, or the original destination; `None`
    /// before that is known (or when refused).
    pub destination: Option<SocketAddr>,
    /// Whether `destination` is the original destination (transparent mode).
    pub original_dst: bool,
    /// The verdict.
    pub verdict: Verdict,
    /// Why detection was skipped (`None`: it ran, or has not yet).
    pub skipped: Option<DetectReason>,
    /// The detect timeout in force, when detection ran.
    pub timeout: Option<Duration>,
    /// What detection saw.
    pub seen: Seen,
    /// TLS: the SNI: a host name, or (`bad_sni`) what was sent, escaped.
    pub sni: Option<String>,
    /// The SNI sent is not a host name (`sni` shows it escaped).
    pub bad_sni: bool,
    /// TLS: the ALPN protocols offered.
    pub alpn: Vec<String>,
    /// HTTP requests (HTTP/2: streams) so far.
    pub requests: u64,
    /// The client socket's counters: now, or at close. `None` if they could not be read.
    pub tcp: Option<TcpStats>,
    /// Open: its age. Closed: its lifetime.
    pub age: Duration,
    /// Closed rows: how long ago it closed.
    pub closed_ago: Option<Duration>,
}

/// One worker's answer to a [`Query`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The worker.
    pub worker: usize,
    /// Its listeners by id: every generation since start (a reload that changes a listener
    /// adds one under the same name).
    pub listeners: Vec<ListenerInfo>,
    /// Connections that matched the filters.
    pub total: usize,
    /// Capacity of the worker's closed ring (`admin.closed_connections`; 0: off).
    pub closed_ring: usize,
    /// The newest `limit` of them, newest first.
    pub rows: Vec<Row>,
}

/// What the table holds per open connection.
#[derive(Debug)]
struct Entry {
    id: u64,
    listener: usize,
    client: SocketAddr,
    /// The client socket, open for as long as the entry is in the table (the spine owns it
    /// until the entry leaves; see [`Tracked::finish`]).
    fd: RawFd,
    accepted: Instant,
    destination: Option<SocketAddr>,
    original_dst: bool,
    verdict: Verdict,
    skipped: Option<DetectReason>,
    timeout: Option<Duration>,
    seen: Seen,
    /// Boxed: only TLS connections have one, and the table stays small for the others.
    hello: Option<Box<ClientHello>>,
    requests: u64,
    /// Counters taken by [`Tracked::finish`]: the socket's owner closes it before the entry
    /// leaves, so the close must not read `fd` again.
    last: Option<Option<TcpStats>>,
}

impl Entry {
    fn row(&self, worker: usize, tcp: Option<TcpStats>, age: Duration) -> Row {
        let (sni, bad_sni, alpn) = match &self.hello {
            Some(h) => match &h.sni {
                Some(name) => (Some(name.clone()), false, h.alpn.clone()),
                None => (h.bad_sni.clone(), h.bad_sni.is_some(), h.alpn.clone()),
            },
            None => (None, false, Vec::new()),
        };
        Row {
            worker,
            id: self.id,
            listener: self.listener,
            client: self.client,
            destination: self.destination,
            original_dst: self.original_dst,
            verdict: self.verdict,
            skipped: self.skipped,
            timeout: self.timeout,
            seen: self.seen,
            sni,
            bad_sni,
            alpn,
            requests: self.requests,
            tcp,
            age,
            closed_ago: None,
        }
    }
}

/// A closed connection in the ring.
#[derive(Debug)]
struct Closed {
    entry: Entry,
    tcp: Option<TcpStats>,
    closed: Instant,
}

/// Rows built per turn of the worker's event loop while answering `/connections`: each costs
/// a `TCP_INFO` read and a copy (a few µs), so 64 hold the worker's connections up for a few
/// hundred µs at most, however many rows were asked for (see the README's measurements).
pub const ROWS_PER_TURN: usize = 64;

/// A [`Report`] being built ([`Connections::start_report`], then [`Connections::add_rows`]
/// until it returns `true`).
#[derive(Debug)]
pub struct Building {
    report: Report,
    /// Open connections still to list, newest first: (slot, id).
    todo: std::vec::IntoIter<(usize, u64)>,
}

impl Building {
    /// The report.
    pub fn finish(self) -> Report {
        self.report
    }
}

/// Slots per chunk of the table: the table grows by a chunk at a time (about 60 KB), so a
/// burst of connections never makes the worker copy (or the allocator keep) one big array.
const CHUNK: usize = 256;

#[derive(Debug, Default)]
struct Table {
    /// Open connections, [`CHUNK`] slots per chunk; `None` marks a free slot (in `free`).
    chunks: Vec<Box<[Option<Entry>]>>,
    /// Free slots; the last one is taken next (the last freed, or the lowest of a new chunk).
    free: Vec<usize>,
    next_id: u64,
    /// The last closes, oldest first.
    closed: VecDeque<Closed>,
}

impl Table {
    fn slot(&mut self, i: usize) -> Option<&mut Option<Entry>> {
        self.chunks.get_mut(i / CHUNK).map(|c| &mut c[i % CHUNK])
    }

    /// A free slot, adding a chunk when there is none.
    fn free_slot(&mut self) -> usize {
        if let Some(i) = self.free.pop() {
            return i;
        }
        let base = self.chunks.len() * CHUNK;
        self.chunks.push((0..CHUNK).map(|_| None).collect());
        self.free.extend((base + 1..base + CHUNK).rev());
        base
    }
}

/// One worker's open connections and recent closes.
#[derive(Debug)]
pub struct Connections {
    table: RefCell<Table>,
    /// Capacity of the closed ring.
    keep_closed: usize,
}

impl Connections {
    /// An empty table that remembers the last `keep_closed` closes.
    pub fn new(keep_closed: usize) -> Connections {
        Connections {
            table: RefCell::new(Table::default()),
            keep_closed,
        }
    }

    /// Lists a connection accepted at `accepted` by listener `listener` from `client`, whose
    /// socket is `fd`, until the returned handle drops. The caller must keep `fd` open until
    /// then, or call [`Tracked::finish`] before closing it.
    pub fn open(
        &self,
        listener: usize,
        client: SocketAddr,
        fd: RawFd,
        accepted: Instant,
    ) -> Tracked<'_> {
        let mut t = self.table.borrow_mut();
        let id = t.next_id;
        t.next_id += 1;
        let entry = Entry {
            id,
            listener,
            client,
            fd,
            accepted,
            destination: None,
            original_dst: false,
            verdict: Verdict::Detecting,
            skipped: None,
            timeout: None,
            seen: Seen::default(),
            hello: None,
            requests: 0,
            last: None,
        };
        let slot = t.free_slot();
        if let Some(s) = t.slot(slot) {
            *s = Some(entry);
        }
        Tracked { table: self, slot }
    }

    /// Open connections.
    pub fn open_count(&self) -> usize {
        let t = self.table.borrow();
        t.chunks.len() * CHUNK - t.free.len()
    }

    fn close(&self, slot: usize) {
        let mut t = self.table.borrow_mut();
        let Some(entry) = t.slot(slot).and_then(Option::take) else {
            return;
        };
        t.free.push(slot);
        if self.keep_closed == 0 {
            return;
        }
        let tcp = match entry.last {
            Some(last) => last,
            None => sys::tcp_stats(entry.fd).ok(),
        };
        if t.closed.len() == self.keep_closed {
            t.closed.pop_front();
        }
        t.closed.push_back(Closed {
            entry,
            tcp,
            closed: Instant::now(),
        });
    }

    /// The connections `q` asks for (`listeners`: `q.listener` resolved to listener ids,
    /// one per generation of that name; `None` for all listeners), newest first, with their
    /// TCP counters read now (open rows only, and only the rows returned), all at once.
    pub fn report(&self, worker: usize, q: &Query, listeners: Option<&[usize]>) -> Report {
        let mut b = self.start_report(worker, q, listeners);
        self.add_rows(&mut b, usize::MAX);
        b.finish()
    }

    /// Starts the report [`Connections::report`] describes: counts and picks the matches
    /// (the closed ring's rows are copied now: they need no syscall); the open rows follow
    /// with [`Connections::add_rows`].
    pub fn start_report(&self, worker: usize, q: &Query, listeners: Option<&[usize]>) -> Building {
        let keep = |e: &Entry| {
            listeners.map_or(true, |l| l.contains(&e.listener)) && q.verdicts.contains(e.verdict)
        };
        let t = self.table.borrow();
        let now = Instant::now();
        let mut report = Report {
            worker,
            closed_ring: self.keep_closed,
            ..Report::default()
        };
        if q.closed {
            for c in t.closed.iter().rev().filter(|c| keep(&c.entry)) {
                report.total += 1;
                if report.rows.len() < q.limit {
                    let mut row = c.entry.row(
                        worker,
                        c.tcp,
                        c.closed.saturating_duration_since(c.entry.accepted),
                    );
                    row.closed_ago = Some(now.saturating_duration_since(c.closed));
                    report.rows.push(row);
                }
            }
            return Building {
                report,
                todo: Vec::new().into_iter(),
            };
        }
        let mut matched: Vec<(usize, u64)> = Vec::new();
        for (k, chunk) in t.chunks.iter().enumerate() {
            for (i, e) in chunk.iter().enumerate() {
                if let Some(e) = e.as_ref().filter(|e| keep(e)) {
                    matched.push((k * CHUNK + i, e.id));
                }
            }
        }
        report.total = matched.len();
        let newest_first = |a: &(usize, u64), b: &(usize, u64)| b.1.cmp(&a.1);
        if matched.len() > q.limit && q.limit > 0 {
            matched.select_nth_unstable_by(q.limit - 1, newest_first);
        }
        matched.truncate(q.limit);
        matched.sort_unstable_by(newest_first);
        report.rows.reserve(matched.len());
        Building {
            report,
            todo: matched.into_iter(),
        }
    }

    /// Adds at most `n` of the picked open rows, reading their TCP counters now; `true` once
    /// all are in. A connection that closed since [`Connections::start_report`] is left out
    /// (`total` still counts it).
    pub fn add_rows(&self, b: &mut Building, n: usize) -> bool {
        let t = self.table.borrow();
        let now = Instant::now();
        for (slot, id) in b.todo.by_ref().take(n) {
            let entry = t
                .chunks
                .get(slot / CHUNK)
                .and_then(|c| c[slot % CHUNK].as_ref());
            if let Some(e) = entry.filter(|e| e.id == id) {
                let tcp = sys::tcp_stats(e.fd).ok();
                let row = e.row(
                    b.report.worker,
                    tcp,
                    now.saturating_duration_since(e.accepted),
                );
                b.report.rows.push(row);
            }
        }
        b.todo.len() == 0
    }
}

/// A connection's place in the table: the spine records each stage through it, and dropping
/// it moves the connection to the closed ring. Every method is a short borrow of the worker's
/// table (never held across an await).
#[derive(Debug)]
pub struct Tracked<'a> {
    table: &'a Connections,
    slot: usize,
}

impl<'t> Tracked<'t> {
    fn with(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(Some(e)) = self.table.table.borrow_mut().slot(self.slot) {
            f(e);
        }
    }

    /// Where the connection goes: an endpoint, or its original destination.
    pub fn destination(&self, addr: SocketAddr, original: bool) {
        self.with(|e| {
            e.destination = Some(addr);
            e.original_dst = original;
        });
    }

    /// The config decided without detection, for `reason`.
    pub fn skipped(&self, result: DetectResult, reason: DetectReason) {
        self.with(|e| {
            e.verdict = Verdict::Decided(result);
            e.skipped = Some(reason);
        });
    }

    /// Detection runs, giving up after `timeout`.
    pub fn detecting(&self, timeout: Duration) {
        self.with(|e| e.timeout = Some(timeout));
    }

    /// Detection decided `result` on `seen` (TLS: with its ClientHello).
    pub fn detected(&self, result: DetectResult, seen: Seen, hello: Option<ClientHello>) {
        self.with(|e| {
            e.verdict = Verdict::Decided(result);
            e.skipped = None;
            e.seen = seen;
            e.hello = hello.map(Box::new);
        });
    }

    /// Refused before detection.
    pub fn refused(&self, why: Refusal) {
        self.with(|e| e.verdict = Verdict::Refused(why));
    }

    /// The early dial failed while the client was silent.
    pub fn dial_failed(&self) {
        self.with(|e| e.verdict = Verdict::DialFailed);
    }

    /// The client socket failed during detection; `seen`: its bytes by then (review: a
    /// client that sent two bytes and reset showed none).
    pub fn client_error(&self, seen: Seen) {
        self.with(|e| {
            e.verdict = Verdict::ClientError;
            e.seen = seen;
        });
    }

    /// An HTTP request (HTTP/2: a stream) started.
    pub fn request(&self) {
        self.with(|e| e.requests += 1);
    }

    /// `socket`, the client socket, now owned by a stage other than the spine: its final
    /// counters are taken when the returned guard drops, just before it closes.
    pub fn closing<'a, S: AsRawFd>(&'a self, socket: S) -> Closing<'a, 't, S> {
        Closing {
            socket,
            tracked: self,
        }
    }

    /// The client socket `fd` is about to close before this handle drops (its owner is not
    /// the spine: HTTP/2 hands it to `h2`): takes its final counters now, and stops the table
    /// from reading `fd` again.
    pub fn finish(&self, fd: RawFd) {
        let keep = self.table.keep_closed > 0;
        self.with(|e| {
            debug_assert_eq!(e.fd, fd, "finish is for the connection's own socket");
            e.last = Some(if keep { sys::tcp_stats(fd).ok() } else { None });
        });
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.table.close(self.slot);
    }
}

/// A client socket owned by a stage other than the spine (HTTP/2 hands it to `h2`): dropping
/// it takes the socket's final counters for the table, then closes it (`Drop::drop` runs
/// before the field is dropped).
#[derive(Debug)]
pub struct Closing<'a, 't, S: AsRawFd> {
    /// The socket.
    pub socket: S,
    tracked: &'a Tracked<'t>,
}

impl<S: AsRawFd> Drop for Closing<'_, '_, S> {
    fn drop(&mut self) {
        self.tracked.finish(self.socket.as_raw_fd());
    }
}

// === impl Row: reasons ===

impl Row {
    /// The verdict's reason: a short code and a sentence, from what the row holds.
    pub fn reason(&self, l: Option<&ListenerInfo>) -> (&'static str, String) {
        let port = self.destination.map_or(0, |d| d.port());
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis());
        let forced = match self.verdict {
            Verdict::Decided(DetectResult::Http1) => "http1",
            Verdict::Decided(DetectResult::Http2) => "http2",
            _ => "opaque",
        };
        // HTTP the listener does not proxy goes opaque, detected or forced.
        let opaque_note = match self.verdict {
            Verdict::Decided(DetectResult::Http1) if !l.map_or(true, |l| l.http1) => {
                "; http1.enabled = false: forwarded opaque"
            }
            Verdict::Decided(DetectResult::Http2) if !l.map_or(true, |l| l.http2) => {
                "; http2.enabled = false: forwarded opaque"
            }
            _ => "",
        };
        let s = &self.seen;
        match (self.verdict, self.skipped) {
            (Verdict::Decided(_), Some(reason)) => {
                let text = match reason {
                    DetectReason::ListenerProtocol => format!(
                        "forced by config: listener {} sets protocol = \"{forced}\"{opaque_note}",
                        l.map_or("?", |l| l.name.as_str())
                    ),
                    DetectReason::PortProtocol => format!(
                        "forced by config: a [[detect.port]] declares port {port} protocol = \"{forced}\"{opaque_note}"
                    ),
                    DetectReason::OpaquePorts => {
                        format!("opaque port: {port} is in [detect] opaque_ports")
                    }
                    DetectReason::BuiltinOpaquePorts => format!(
                        "opaque port: {port} is on the built-in list (server-speaks-first protocols)"
                    ),
                    DetectReason::Detected => String::new(),
                };
                (reason.as_str(), text)
            }
            (Verdict::Detecting, _) => (
                "detecting",
                format!(
                    "waiting for a verdict (detect timeout {} ms)",
                    ms(self.timeout)
                ),
            ),
            (Verdict::Decided(r), None) => match r {
                DetectResult::Http1 => (
                    "http1_request",
                    format!("an HTTP/1 request line{opaque_note}"),
                ),
                DetectResult::Http2 => (
                    "http2_preface",
                    format!("the HTTP/2 prior-knowledge preface{opaque_note}"),
                ),
                DetectResult::Tls => (
                    "tls_client_hello",
                    if self.bad_sni {
                        "a TLS ClientHello: passed through opaque; its SNI is not a host name (shown escaped)"
                    } else {
                        "a TLS ClientHello: passed through opaque"
                    }
                    .to_string(),
                ),
                DetectResult::Opaque if s.client_eof => (
                    "client_half_closed",
                    format!(
                        "the client half-closed after {} bytes, before a verdict",
                        s.client_total
                    ),
                ),
                DetectResult::Opaque if s.client_total >= PEEK_CAP => (
                    "no_verdict_in_window",
                    format!(
                        "{} bytes without a verdict (the peek window is {PEEK_CAP} bytes)",
                        s.client_total
                    ),
                ),
                DetectResult::Opaque => (
                    "not_http_not_tls",
                    format!(
                        "not HTTP, not TLS: the first {} bytes match no protocol sidewire detects",
                        s.client_total
                    ),
                ),
                DetectResult::Timeout if s.client_total == 0 => (
                    "no_bytes",
                    format!(
                        "no bytes within the detect timeout ({} ms)",
                        ms(self.timeout)
                    ),
                ),
                DetectResult::Timeout => (
                    "undecided",
                    format!(
                        "{} bytes within the detect timeout ({} ms), too few for a verdict",
                        s.client_total,
                        ms(self.timeout)
                    ),
                ),
                DetectResult::ServerFirst => (
                    "server_first",
                    "the server spoke first while the client was silent".to_string(),
                ),
                DetectResult::Closed => (
                    "client_closed",
                    "the client closed without sending anything".to_string(),
                ),
                DetectResult::OpaquePort => ("opaque_port", "no detection".to_string()),
            },
            (Verdict::Refused(why), _) => (
                why.as_str(),
                match why {
                    Refusal::Loop => "refused: the original destination is this listener (a loop)",
                    Refusal::NoOriginalDst => "refused: the kernel has no original destination",
                    Refusal::NoEndpoints => "refused: no upstream endpoint (names not resolved)",
                }
                .to_string(),
            ),
            (Verdict::DialFailed, _) => (
                "dial_failed",
                "the client stayed silent and the early upstream dial failed".to_string(),
            ),
            (Verdict::ClientError, _) => (
                "client_error",
                "the client socket failed during detection".to_string(),
            ),
        }
    }

    /// HTTP requests, when the connection is proxied as HTTP.
    pub fn http_requests(&self, l: Option<&ListenerInfo>) -> Option<u64> {
        let on = match self.verdict {
            Verdict::Decided(DetectResult::Http1) => l.map_or(true, |l| l.http1),
            Verdict::Decided(DetectResult::Http2) => l.map_or(true, |l| l.http2),
            _ => false,
        };
        on.then_some(self.requests)
    }

    /// The client's first bytes, when detection saw any.
    pub fn first_bytes(&self) -> Option<&[u8]> {
        let b = self.seen.client.as_bytes();
        (!b.is_empty()).then_some(b)
    }

    /// The server's first bytes, for `server_first`.
    pub fn server_first_bytes(&self) -> Option<&[u8]> {
        let b = self.seen.upstream.as_bytes();
        (self.verdict == Verdict::Decided(DetectResult::ServerFirst) && !b.is_empty()).then_some(b)
    }

    /// Time since data last moved either way (at most the age).
    pub fn idle(&self) -> Option<Duration> {
        self.tcp
            .map(|t| Duration::from_millis(u64::from(t.idle_ms())).min(self.age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Prefix;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn query(closed: bool, limit: usize) -> Query {
        Query {
            closed,
            listener: None,
            verdicts: VerdictSet::ALL,
            limit,
        }
    }

    #[test]
    fn verdict_names_round_trip() {
        assert_eq!(Verdict::NAMES.len(), VERDICTS);
        for (i, r) in DetectResult::ALL.iter().enumerate() {
            assert_eq!(Verdict::Decided(*r).as_str(), r.as_str());
            assert_eq!(Verdict::Decided(*r).index(), i + 1);
        }
        let mut s = VerdictSet::NONE;
        assert!(s.insert_name("opaque") && s.insert_name("dial_failed"));
        assert!(!s.insert_name("bogus"));
        assert!(s.contains(Verdict::Decided(DetectResult::Opaque)));
        assert!(s.contains(Verdict::DialFailed));
        assert!(!s.contains(Verdict::Detecting));
        assert!(VerdictSet::ALL.contains(Verdict::ClientError));
    }

    #[test]
    fn open_rows_newest_first_filtered_and_limited_then_the_ring() {
        // fd -1: not a socket, so the TCP counters are simply absent.
        let c = Connections::new(2);
        let t0 = Instant::now();
        let a = c.open(0, addr(1), -1, t0);
        let b = c.open(1, addr(2), -1, t0);
        let d = c.open(0, addr(3), -1, t0);
        a.skipped(DetectResult::OpaquePort, DetectReason::OpaquePorts);
        b.detected(DetectResult::Opaque, Seen::default(), None);
        d.request();
        assert_eq!(c.open_count(), 3);

        let r = c.report(7, &query(false, 2), None);
        assert_eq!(r.total, 3);
        let ids: Vec<u64> = r.rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 1], "newest first, limited");
        assert_eq!(r.rows[0].worker, 7);
        assert_eq!(r.rows[0].requests, 1);
        assert!(r.rows[0].tcp.is_none());

        let mut q = query(false, 10);
        q.verdicts = VerdictSet::NONE;
        q.verdicts.insert_name("opaque_port");
        q.verdicts.insert_name("detecting");
        let r = c.report(0, &q, Some(&[0]));
        assert_eq!(r.total, 2);
        assert_eq!(r.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 0]);

        // Closing moves rows to the ring, which keeps the last two.
        drop(a);
        drop(b);
        drop(d);
        assert_eq!(c.open_count(), 0);
        let r = c.report(0, &query(true, 10), None);
        assert_eq!(r.total, 2);
        assert_eq!(r.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);
        assert!(r.rows[0].closed_ago.is_some());
        // Slots are reused, the last freed first.
        let e = c.open(0, addr(4), -1, t0);
        assert_eq!(e.slot, 2);
        assert_eq!(c.table.borrow().chunks.len(), 1);
        drop(e);
        // A second chunk once the first is full.
        let many: Vec<_> = (0..CHUNK + 1).map(|_| c.open(0, addr(5), -1, t0)).collect();
        assert_eq!(c.open_count(), CHUNK + 1);
        assert_eq!(c.table.borrow().chunks.len(), 2);
        let newest = c.table.borrow().next_id - 1;
        assert_eq!(c.report(0, &query(false, 1), None).rows[0].id, newest);
        drop(many);
        assert_eq!(c.open_count(), 0);
    }

    /// The README states the per-connection record size; a field added here shows up as a
    /// failure to re-measure and re-document.
    #[test]
    fn an_open_connection_record_stays_small() {
        let size = std::mem::size_of::<Option<Entry>>();
        eprintln!("record: {size} bytes");
        assert!(size <= 256, "a connection record is {size} bytes");
    }

    #[test]
    fn no_ring_keeps_nothing() {
        let c = Connections::new(0);
        drop(c.open(0, addr(1), -1, Instant::now()));
        let r = c.report(0, &query(true, 10), None);
        assert_eq!(
            (r.total, r.closed_ring),
            (0, 0),
            "the ring is off, and says so"
        );
        assert_eq!(
            Connections::new(3)
                .report(0, &query(true, 1), None)
                .closed_ring,
            3
        );
    }

    #[test]
    fn rows_come_a_chunk_at_a_time_and_a_close_between_chunks_is_left_out() {
        let c = Connections::new(4);
        let t0 = Instant::now();
        let mut open: Vec<_> = (0..5).map(|p| c.open(0, addr(p), -1, t0)).collect();
        let mut b = c.start_report(0, &query(false, 10), None);
        assert!(!c.add_rows(&mut b, 2));
        // Ids 4 and 3 are in; id 2 closes, and id 5 opens (after the pick: not listed).
        drop(open.remove(2));
        open.push(c.open(0, addr(9), -1, t0));
        assert!(!c.add_rows(&mut b, 2));
        assert!(c.add_rows(&mut b, 2));
        let r = b.finish();
        assert_eq!(r.total, 5, "counted when picked");
        assert_eq!(
            r.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [4, 3, 1, 0]
        );
    }

    #[test]
    fn reasons_name_the_evidence() {
        let c = Connections::new(0);
        let t = c.open(0, addr(1), -1, Instant::now());
        t.destination(addr(6379), false);
        t.detecting(Duration::from_millis(150));
        let row = |c: &Connections| c.report(0, &query(false, 1), None).rows.remove(0);
        assert_eq!(row(&c).reason(None).0, "detecting");

        let redis = b"*1\r\n$4\r\nPING\r\n";
        let seen = Seen {
            client: Prefix::new(redis),
            client_total: redis.len(),
            ..Seen::default()
        };
        t.detected(DetectResult::Opaque, seen, None);
        let r = row(&c);
        let (code, text) = r.reason(None);
        assert_eq!(code, "not_http_not_tls");
        assert!(text.starts_with("not HTTP, not TLS"), "{text}");
        assert_eq!(r.first_bytes(), Some(&redis[..]));

        t.detected(DetectResult::Timeout, Seen::default(), None);
        let (code, text) = row(&c).reason(None);
        assert_eq!(code, "no_bytes");
        assert!(text.contains("150 ms"), "{text}");

        t.skipped(DetectResult::OpaquePort, DetectReason::BuiltinOpaquePorts);
        let (code, text) = row(&c).reason(None);
        assert_eq!(code, "builtin_opaque_ports");
        assert!(text.contains("6379"), "{text}");

        let l = ListenerInfo {
            name: "t".into(),
            direction: Direction::Outbound,
            http1: false,
            http2: true,
        };
        t.skipped(DetectResult::Http1, DetectReason::ListenerProtocol);
        let (_, text) = row(&c).reason(Some(&l));
        assert_eq!(
            text,
            "forced by config: listener t sets protocol = \"http1\"; http1.enabled = false: forwarded opaque"
        );
        t.skipped(DetectResult::Http2, DetectReason::PortProtocol);
        let (_, text) = row(&c).reason(Some(&l));
        assert!(!text.contains("opaque"), "http2 is proxied: {text}");
        t.detected(DetectResult::Http1, Seen::default(), None);
        let r = row(&c);
        assert!(r.reason(Some(&l)).1.contains("forwarded opaque"));
        assert_eq!(r.http_requests(Some(&l)), None, "not proxied as HTTP");
    }
}
