//! Raw syscalls that monoio 0.2.4 does not expose: non-blocking mode, pipes, `splice(2)`,
//! half-close, abortive close, the fd limit, the original destination of a redirected
//! connection.
//!
//! This is the only module with `unsafe`. Each block is a plain libc call on a file descriptor
//! the caller owns for the duration of the call; errors come back as `io::Error` from `errno`.
//! Nothing here allocates or blocks: every call is made non-blocking by flag or by fd mode.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc return value into `io::Result`, reading `errno` on -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Puts `fd` in non-blocking mode (one `ioctl(FIONBIO)` instead of `F_GETFL` + `F_SETFL`).
///
/// Sockets accepted or connected through io_uring are blocking; `splice` reads from a socket
/// honour the socket's `O_NONBLOCK`, not `SPLICE_F_NONBLOCK`, so the splice path needs this.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one c_int through the pointer, which points at a live local.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &on) }).map(drop)
}

/// `shutdown(fd, SHUT_WR)`: sends FIN, the peer reads EOF and can still answer.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; an invalid fd only yields EBADF.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}

/// Sets `SO_LINGER {on, 0}` so that closing `fd` sends RST instead of FIN: used to propagate a
/// reset from one side of a proxied connection to the other.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value points at a live `linger` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A non-blocking pipe used as the in-kernel buffer between two sockets.
#[derive(Debug)]
pub struct Pipe {
    /// Read end (drained into the destination socket).
    pub read: OwnedFd,
    /// Write end (filled from the source socket).
    pub write: OwnedFd,
}

impl Pipe {
    /// Creates a pipe with `O_NONBLOCK | O_CLOEXEC` and asks for `size` bytes of capacity.
    /// Returns the pipe and whether the kernel granted the size.
    ///
    /// A refused resize (`EPERM` once an unprivileged user is over `pipe-user-pages-soft`) is
    /// not an error: the pipe keeps the kernel's size and the proxy moves smaller chunks.
    pub fn new(size: usize) -> io::Result<(Pipe, bool)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two fds into the two-element array it is given.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument and no pointers.
        let granted =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        Ok((Pipe { read, write }, granted >= size as libc::c_int))
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes from `from` to `to` (one of them a pipe).
/// Returns the bytes moved; `Ok(0)` means EOF on `from`; `WouldBlock` means wait for readiness.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets mean "use and advance the file position", valid for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as every busy proxy must (each proxied
/// connection holds two sockets and, while data moves, two pipe fds). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one `rlimit` through a pointer to a live local.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// CPU time (user + system) consumed so far by the whole process, in microseconds.
pub fn process_cpu_micros() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage` through a pointer to a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Reads and clears `SO_ERROR`: the outcome of a non-blocking `connect` once the socket is
/// writable. `Ok(None)` means connected.
pub fn take_socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local `err`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// `recv(fd, buf, MSG_PEEK | MSG_DONTWAIT)`: copies queued bytes without consuming them.
/// `Ok(0)` is EOF with nothing queued; `WouldBlock` means nothing queued yet.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, a live exclusive slice.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sets `SO_RCVLOWAT`: the socket polls readable only once `n` bytes are queued (or on EOF
/// or error), so waiting for "more than I have" does not wake for every segment.
pub fn set_rcvlowat(fd: RawFd, n: usize) -> io::Result<()> {
    let v = n.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: the option value points at a live c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Clears non-blocking mode (monoio's completion I/O expects blocking sockets: io_uring
/// returns EAGAIN for an O_NONBLOCK socket instead of waiting).
pub fn set_blocking(fd: RawFd) -> io::Result<()> {
    let off: libc::c_int = 0;
    // SAFETY: FIONBIO reads one c_int through the pointer, which points at a live local.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &off) }).map(drop)
}

/// The original destination of a connection that netfilter NAT redirected to us (iptables or
/// nftables `REDIRECT`/`DNAT`): `getsockopt(SOL_IP, SO_ORIGINAL_DST)` for an IPv4 socket,
/// `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` for an IPv6 one (`ipv6`). A connection that
/// was not NATed reports its own local address; `ENOENT` means conntrack has no entry for it.
pub fn original_dst(fd: RawFd, ipv6: bool) -> io::Result<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    if ipv6 {
        // SAFETY: an all-zero `sockaddr_in6` is a valid value of this plain C struct.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `sa`.
        cvt(unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                libc::IP6T_SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        })?;
        Ok(SocketAddrV6::new(
            Ipv6Addr::from(sa.sin6_addr.s6_addr),
            u16::from_be(sa.sin6_port),
            sa.sin6_flowinfo,
            sa.sin6_scope_id,
        )
        .into())
    } else {
        // SAFETY: an all-zero `sockaddr_in` is a valid value of this plain C struct.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `sa`.
        cvt(unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                libc::SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        })?;
        Ok(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        )
        .into())
    }
}
