//! A tiny authoritative DNS server for the tests, on 127.0.0.1 UDP port 0: answers A and AAAA
//! queries from a table the test changes as it goes (addresses, TTL), NXDOMAIN for names it
//! does not know, or nothing at all while [`TestDns::silence`] is on. hickory-proto's message
//! types do the wire format.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

#[derive(Default)]
struct Table {
    /// Addresses by lower-case name without the trailing dot.
    names: HashMap<String, Vec<IpAddr>>,
    /// TTL of every answer, seconds.
    ttl: u32,
}

struct State {
    table: Mutex<Table>,
    silent: AtomicBool,
    /// AAAA queries are read and dropped (an answer for A only).
    silent_aaaa: AtomicBool,
    stop: AtomicBool,
    queries: AtomicU64,
}

/// The server; stops when dropped.
pub struct TestDns {
    /// Where it answers (UDP).
    pub addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Starts a server that knows no name yet; answers carry `ttl` seconds.
    pub fn start(ttl: u32) -> TestDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(State {
            table: Mutex::new(Table {
                names: HashMap::new(),
                ttl,
            }),
            silent: AtomicBool::new(false),
            silent_aaaa: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            queries: AtomicU64::new(0),
        });
        let s = state.clone();
        let thread = std::thread::spawn(move || serve(sock, &s));
        TestDns {
            addr,
            state,
            thread: Some(thread),
        }
    }

    /// From now on `name` resolves to `ips` (an empty list: the name exists, no records).
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        self.state.table.lock().unwrap().names.insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            ips.to_vec(),
        );
    }

    /// From now on `name` is unknown (NXDOMAIN).
    pub fn remove(&self, name: &str) {
        self.state
            .table
            .lock()
            .unwrap()
            .names
            .remove(&name.trim_end_matches('.').to_ascii_lowercase());
    }

    /// While `on`, queries are read and dropped (a server gone quiet: clients time out).
    pub fn silence(&self, on: bool) {
        self.state.silent.store(on, Ordering::SeqCst);
    }

    /// While `on`, AAAA queries are read and dropped, A queries answered (a server or
    /// middlebox that never answers AAAA).
    pub fn silence_aaaa(&self, on: bool) {
        self.state.silent_aaaa.store(on, Ordering::SeqCst);
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> u64 {
        self.state.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: UdpSocket, state: &State) {
    let mut buf = [0u8; 2048];
    while !state.stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        state.queries.fetch_add(1, Ordering::SeqCst);
        if state.silent.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if state.silent_aaaa.load(Ordering::SeqCst)
            && q.queries.first().map(|q| q.query_type()) == Some(RecordType::AAAA)
        {
            continue;
        }
        if let Some(reply) = answer(&q, &state.table.lock().unwrap()) {
            let _ = sock.send_to(&reply, from);
        }
    }
}

fn answer(q: &Message, table: &Table) -> Option<Vec<u8>> {
    let query = q.queries.first()?;
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.authoritative = true;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_query(query.clone());
    let name = query.name().to_ascii();
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    match table.names.get(&key) {
        None => r.metadata.response_code = ResponseCode::NXDomain,
        Some(ips) => {
            for ip in ips {
                let data = match (query.query_type(), ip) {
                    (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                    (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                r.add_answer(Record::from_rdata(query.name().clone(), table.ttl, data));
            }
        }
    }
    r.to_vec().ok()
}
