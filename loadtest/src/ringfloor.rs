//! `loadtest ring-floor`: the least a proxy can do for one opaque TCP connection on io_uring,
//! as a reference for what the kernel's own work costs per connection (issue 17 §4).
//!
//! One thread, one ring (`SINGLE_ISSUER`, `DEFER_TASKRUN`): a multishot `ACCEPT` on the
//! listener; per connection a `socket(2)`, `TCP_NODELAY` on both sockets, a `CONNECT` to the
//! one upstream, then `RECV`/`SEND` pairs each way through a 16 KiB buffer per direction, a
//! `SHUTDOWN(SHUT_WR)` towards the side whose peer ended, and two `CLOSE`s (completions
//! skipped) once both directions ended. No detection, timers, metrics, limits, splicing or
//! partial-write handling (short sends end the connection): it is a floor to measure
//! against, not a proxy to deploy. `scripts/bench-ring-floor.sh` runs it beside sidewire and
//! HAProxy under `loadtest churn`.
//!
//! All `unsafe` of this crate's I/O is here: pushing entries whose buffers and addresses
//! must outlive their operations, and raw socket calls on descriptors the loop owns.

use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use anyhow::{bail, Context, Result};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Bytes of each direction's buffer.
const BUF: usize = 16 * 1024;

/// What a completion is for (the low byte of its `user_data`; the rest is the connection).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Accept = 0,
    Connect = 1,
    RecvClient = 2,
    RecvUpstream = 3,
    SendClient = 4,
    SendUpstream = 5,
    Shutdown = 6,
    Close = 7,
}

impl Op {
    fn of(user_data: u64) -> Op {
        match user_data & 0xff {
            0 => Op::Accept,
            1 => Op::Connect,
            2 => Op::RecvClient,
            3 => Op::RecvUpstream,
            4 => Op::SendClient,
            5 => Op::SendUpstream,
            6 => Op::Shutdown,
            _ => Op::Close,
        }
    }
}

fn tag(conn: usize, op: Op) -> u64 {
    ((conn as u64) << 8) | op as u64
}

/// A connection's two buffers (client → upstream, upstream → client), kept for the next.
type Buffers = (Box<[u8]>, Box<[u8]>);

/// One proxied connection. Its buffers are boxed, so they stay put while the slab grows.
struct Conn {
    client: RawFd,
    upstream: RawFd,
    /// Client → upstream.
    up_buf: Box<[u8]>,
    /// Upstream → client.
    down_buf: Box<[u8]>,
    /// Operations submitted and not completed.
    pending: u32,
    /// Each side's peer ended its sending.
    client_done: bool,
    upstream_done: bool,
    failed: bool,
}

/// Runs the floor proxy from `listen` to `upstream` (IPv4) until an error; never returns
/// `Ok`. Errors: the listener, the ring, or a ring submission failing.
pub fn run(listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
    let SocketAddr::V4(up) = upstream else {
        bail!("ring-floor: the upstream must be an IPv4 address, not {upstream}");
    };
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    eprintln!("ring-floor: {listen} -> {upstream}");
    serve(&listener, up)
}

/// [`run`]'s loop on a bound `listener`.
fn serve(listener: &TcpListener, up: SocketAddrV4) -> Result<()> {
    let lfd = listener.as_raw_fd();
    // One address for every CONNECT, alive as long as the loop.
    let up_addr: Box<libc::sockaddr_in> = Box::new(sockaddr(up));
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(4096)
        .context("io_uring setup (kernel 6.1 or later)")?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut spare: Vec<Buffers> = Vec::new();
    let mut queue: Vec<squeue::Entry> = vec![accept(lfd)];
    let mut done: Vec<(u64, i32, u32)> = Vec::new();
    loop {
        {
            let mut sq = ring.submission();
            for e in queue.drain(..) {
                // SAFETY: every entry's buffer or address is owned by `conns` (boxed) or by
                // `up_addr`, and neither is freed before the entry's completion: a connection
                // is removed only once `pending` is 0.
                if unsafe { sq.push(&e) }.is_err() {
                    bail!("ring-floor: submission queue full");
                }
            }
        }
        ring.submit_and_wait(1).context("io_uring_enter")?;
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for (data, res, flags) in done.drain(..) {
            let op = Op::of(data);
            let i = (data >> 8) as usize;
            if op == Op::Accept {
                if !cqueue::more(flags) {
                    queue.push(accept(lfd));
                }
                if res >= 0 {
                    let (up_buf, down_buf) = spare.pop().unwrap_or_else(|| {
                        (
                            vec![0; BUF].into_boxed_slice(),
                            vec![0; BUF].into_boxed_slice(),
                        )
                    });
                    let upstream = new_socket()?;
                    nodelay(res);
                    let c = Conn {
                        client: res,
                        upstream,
                        up_buf,
                        down_buf,
                        pending: 1,
                        client_done: false,
                        upstream_done: false,
                        failed: false,
                    };
                    let i = match free.pop() {
                        Some(i) => {
                            conns[i] = Some(c);
                            i
                        }
                        None => {
                            conns.push(Some(c));
                            conns.len() - 1
                        }
                    };
                    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
                    let addr = &*up_addr as *const libc::sockaddr_in as *const libc::sockaddr;
                    queue.push(
                        opcode::Connect::new(types::Fd(upstream), addr, len)
                            .build()
                            .user_data(tag(i, Op::Connect)),
                    );
                }
                continue;
            }
            if op == Op::Close {
                continue;
            }
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            c.pending -= 1;
            match op {
                Op::Connect if res < 0 => c.failed = true,
                Op::Connect => {
                    queue.push(recv(c, i, Op::RecvClient));
                    queue.push(recv(c, i, Op::RecvUpstream));
                    c.pending += 2;
                }
                Op::RecvClient | Op::RecvUpstream if res > 0 => {
                    let (to, buf, next) = if op == Op::RecvClient {
                        (c.upstream, c.up_buf.as_ptr(), Op::SendUpstream)
                    } else {
                        (c.client, c.down_buf.as_ptr(), Op::SendClient)
                    };
                    queue.push(
                        opcode::Send::new(types::Fd(to), buf, res as u32)
                            .build()
                            .user_data(tag(i, next)),
                    );
                    c.pending += 1;
                }
                Op::RecvClient | Op::RecvUpstream if res == 0 => {
                    let to = if op == Op::RecvClient {
                        c.client_done = true;
                        c.upstream
                    } else {
                        c.upstream_done = true;
                        c.client
                    };
                    queue.push(
                        opcode::Shutdown::new(types::Fd(to), libc::SHUT_WR)
                            .build()
                            .user_data(tag(i, Op::Shutdown)),
                    );
                    c.pending += 1;
                }
                Op::RecvClient | Op::RecvUpstream => c.failed = true,
                Op::SendUpstream | Op::SendClient if res < 0 => c.failed = true,
                Op::SendUpstream => {
                    queue.push(recv(c, i, Op::RecvClient));
                    c.pending += 1;
                }
                Op::SendClient => {
                    queue.push(recv(c, i, Op::RecvUpstream));
                    c.pending += 1;
                }
                Op::Shutdown | Op::Accept | Op::Close => {}
            }
            if c.failed && c.pending > 0 {
                // Ends what is in flight (its completions come back with 0 or an error).
                shutdown_both(c);
            }
            if c.pending == 0 && (c.failed || (c.client_done && c.upstream_done)) {
                let c = conns[i].take().expect("present");
                free.push(i);
                for fd in [c.client, c.upstream] {
                    queue.push(
                        opcode::Close::new(types::Fd(fd))
                            .build()
                            .flags(squeue::Flags::SKIP_SUCCESS)
                            .user_data(tag(0, Op::Close)),
                    );
                }
                spare.push((c.up_buf, c.down_buf));
            }
        }
    }
}

fn accept(lfd: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(tag(0, Op::Accept))
}

fn recv(c: &mut Conn, i: usize, op: Op) -> squeue::Entry {
    let (fd, buf) = if op == Op::RecvClient {
        (c.client, c.up_buf.as_mut_ptr())
    } else {
        (c.upstream, c.down_buf.as_mut_ptr())
    };
    opcode::Recv::new(types::Fd(fd), buf, BUF as u32)
        .build()
        .user_data(tag(i, op))
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A new TCP socket for the upstream, with `TCP_NODELAY`, as a raw descriptor the loop owns.
fn new_socket() -> Result<RawFd> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .context("socket")?;
    s.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(s.into_raw_fd())
}

fn nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an accepted socket the loop owns; the option value is a live c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn shutdown_both(c: &Conn) {
    // SAFETY: both descriptors are open sockets the loop owns until their CLOSE.
    unsafe {
        libc::shutdown(c.client, libc::SHUT_RDWR);
        libc::shutdown(c.upstream, libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Connections through the floor reach the upstream and come back whole: each of 200
    /// sequential clients sends 64 bytes and half-closes, and reads the echo to its end.
    #[test]
    fn the_floor_relays_each_connection_both_ways_and_ends_it() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(up) = echo.local_addr().unwrap() else {
            unreachable!()
        };
        std::thread::spawn(move || {
            for c in echo.incoming() {
                let mut c = c.unwrap();
                std::thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    loop {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => c.write_all(&b[..n]).unwrap(),
                        }
                    }
                });
            }
        });
        let floor = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = floor.local_addr().unwrap();
        std::thread::spawn(move || serve(&floor, up));
        for i in 0..200u32 {
            let mut c = TcpStream::connect(at).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let sent: Vec<u8> = (0..64).map(|j| (i + j) as u8).collect();
            c.write_all(&sent).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, sent, "connection {i}");
        }
    }
}
