#!/usr/bin/env python3
"""Splits a proxy's CPU samples into the kernel's TCP work and the proxy's own overhead.

Reads `perf script` output (call graphs, callee first) on stdin and prints, per category,
the microseconds per unit (connection or GiB) and the share of all samples.

    perf record -F 10000 -g -p PID -- sleep N
    perf script | scripts/cpu-split.py --units 25611 --unit conn --hz 10000

Categories, first match wins, looking at every frame of a sample's stack:
  tcp       the TCP/IP work any proxy must have done for the same traffic: connect, accept,
            splice/send/recv, shutdown, the socket half of close, and the loopback softirq
            that delivers segments (on loopback the receiver's work runs on the sender's CPU)
  setup     per-socket syscalls a proxy chooses to make: socket, setsockopt, getsockopt,
            ioctl, fcntl
  sched     going to sleep and waking up (schedule, context switch)
  io_uring  the ring's own machinery: submission, poll arming, completion, cancel, task
            work that is not socket teardown
  epoll     epoll_wait / epoll_ctl
  clock     clock_gettime and the vDSO
  kernel    any other kernel frame (file/inode teardown after close, page faults, ...)
  user      the proxy's own code and its libraries
"""

import argparse
import collections
import sys

TCP = (
    "__sys_connect", "__x64_sys_connect", "__x64_sys_splice", "__x64_sys_sendto",
    "__x64_sys_recvfrom", "__x64_sys_sendmsg", "__x64_sys_recvmsg", "__x64_sys_shutdown",
    "__x64_sys_read", "__x64_sys_write", "__x64_sys_writev", "__x64_sys_readv",
    "tcp_close", "sock_close", "inet_release", "inet_csk_accept", "do_accept", "__sys_accept4",
    "net_rx_action", "tcp_v4_rcv", "tcp_sendmsg", "tcp_recvmsg", "tcp_splice_read",
    "io_accept", "io_connect", "io_send", "io_recv", "io_read", "io_write",
)
SETUP = (
    "__x64_sys_socket", "__x64_sys_setsockopt", "__x64_sys_getsockopt", "__x64_sys_ioctl",
    "__x64_sys_fcntl", "__x64_sys_pipe2",
)


def category(stack):
    """The category of one sample, from its (function, is_kernel) frames, callee first."""
    frames = [f for f, _ in stack]

    def has(names):
        return any(f.startswith(n) for f in frames for n in names)

    if has(TCP):
        return "tcp"
    if has(SETUP):
        return "setup"
    if any("schedule" in f or f.startswith("finish_task_switch") for f in frames):
        return "sched"
    if has(("__fput",)):
        return "kernel"  # file/inode teardown after close, however the close was issued
    if any(f.startswith(("io_", "__io_", "__do_sys_io_uring", "__x64_sys_io_uring")) for f in frames):
        return "io_uring"
    if any("epoll" in f for f in frames):
        return "epoll"
    if any("clock_gettime" in f or "vdso" in f for f in frames):
        return "clock"
    if stack[0][1]:
        return "kernel"
    return "user"


def samples(lines):
    """Yields each sample as a list of (function, is_kernel) frames, callee first."""
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                sym, dso = parts[1].rsplit(" (", 1) if " (" in parts[1] else (parts[1], "")
                stack.append((sym.split("+")[0], "kernel" in dso))
    if stack:
        yield stack


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=float, required=True, help="connections, or GiB moved")
    ap.add_argument("--unit", default="conn", help="name of the unit, for the output")
    ap.add_argument("--hz", type=float, default=10000, help="the perf record -F frequency")
    ap.add_argument("--label", default="", help="printed before the table")
    args = ap.parse_args()

    counts = collections.Counter()
    for stack in samples(sys.stdin):
        counts[category(stack)] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("cpu-split: no samples on stdin (was perf record run with -g?)")
    # CPU time per unit: microseconds per connection, CPU seconds per GiB.
    scale, name, fmt = (1.0, "CPU-s", "8.3f") if args.unit == "GiB" else (1e6, "CPU-us", "8.1f")
    per = scale / args.hz / args.units
    print(f"{args.label}total {total * per:{fmt}} {name}/{args.unit}  ({total} samples)")
    for cat in ("tcp", "setup", "sched", "io_uring", "epoll", "clock", "kernel", "user"):
        if counts[cat]:
            print(f"  {cat:9s} {counts[cat] * per:{fmt}} {name}/{args.unit}  {100 * counts[cat] / total:5.1f}%")


if __name__ == "__main__":
    main()
