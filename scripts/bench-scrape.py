#!/usr/bin/env python3
"""Admin scrape time with many open connections: `/metrics` and `/connections`.

Starts an asyncio echo upstream (its own process) and sidewire (2 workers, one listener in
front of the echo, detection timeout 10 min, server_first = "off"), then opens PROXIED client
connections through the proxy that each send a Redis PING and read the echo (past detection:
opaque, spliced, idle; two fds each in the proxy) and SILENT ones that send nothing (still
detecting: one fd each, no upstream). Then it times admin requests (connect -> whole
response) REPS times each and prints median / p90 / max in milliseconds and the reply size,
once with no connection open and once with them all.

The proxy needs 2*PROXIED + SILENT + ~30 fds: the default 9,900 + 100 (10,000 connections)
fits under a hard RLIMIT_NOFILE of 20,000, which this script cannot raise without
CAP_SYS_RESOURCE (it raises the soft limit to the hard one).

Usage: scripts/bench-scrape.py [--proxied 9900] [--silent 100] [--reps 20]
                               [--sidewire target/release/sidewire]
Needs a release build (cargo build --release).
"""
import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

PING = b"*1\r\n$4\r\nPING\r\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path):
    """One admin request; returns (seconds, status, body bytes)."""
    t0 = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    chunks = []
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        chunks.append(b)
    c.close()
    took = time.perf_counter() - t0
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\r\n\r\n")
    return took, int(head[9:12]), body


def stats(xs):
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return pick(0.5) * 1e3, pick(0.9) * 1e3, xs[-1] * 1e3


PATHS = [
    "/metrics",
    "/connections",
    "/connections?limit=10000",
    "/connections?limit=10000&format=text",
    "/connections?verdict=timeout",
    "/connections?closed=1&limit=10000",
]


def measure(port, reps, label, paths):
    for path in paths:
        times, size = [], 0
        for _ in range(reps):
            took, status, body = get(port, path)
            assert status == 200, (path, status, body[:200])
            times.append(took)
            size = len(body)
        p50, p90, mx = stats(times)
        print(f"{label:>12}  {path:<40} {p50:8.2f} {p90:8.2f} {mx:8.2f}  {size:>10}")


async def echo_handler(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
    except ConnectionError:
        pass
    w.close()


async def open_conns(port, n, talk, batch=500):
    conns = []

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        if talk:
            w.write(PING)
            await w.drain()
            got = await r.readexactly(len(PING))
            assert got == PING
        return r, w

    for i in range(0, n, batch):
        conns += await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    return conns


async def echo_only():
    """The upstream: echo on a free port (printed on stdout), until stdin closes."""
    server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    os._exit(0)  # at once: thousands of open connections need no goodbye


def proxy_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxied", type=int, default=9900)
    ap.add_argument("--silent", type=int, default=100)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sidewire", default=os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/sidewire"))
    ap.add_argument("--metrics-only", action="store_true",
                    help="time /metrics only (a build without /connections)")
    ap.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.echo:
        return await echo_only()
    total = a.proxied + a.silent
    paths = PATHS[:1] if a.metrics_only else PATHS

    echo = subprocess.Popen([sys.executable, __file__, "--echo"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    up = int(echo.stdout.readline())
    admin, listen = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(
        f'[runtime]\nworkers = 2\npin_cores = false\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[detect]\ntimeout_ms = 600000\nserver_first = "off"\n'
        f'[[listener]]\nname = "bench"\nlisten = "127.0.0.1:{listen}"\n'
        f'upstream = ["127.0.0.1:{up}"]\n'
    )
    cfg.close()
    proxy = subprocess.Popen(
        [a.sidewire, "--config", cfg.name],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        for _ in range(200):
            try:
                get(admin, "/ready")
                break
            except OSError:
                await asyncio.sleep(0.05)
        print(f"{'open':>12}  {'path':<40} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}  {'bytes':>10}")
        measure(admin, a.reps, "0", paths)
        t0 = time.perf_counter()
        conns = await open_conns(listen, a.proxied, True)
        conns += await open_conns(listen, a.silent, False)
        for _ in range(200):
            if proxy_fds(proxy.pid) >= 2 * a.proxied + a.silent:
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit(f"the proxy holds fewer than {2 * a.proxied + a.silent} fds")
        if not a.metrics_only:
            _, _, body = get(admin, "/connections?limit=1")
            assert f'"total":{total},'.encode() in body, body[:300]
        print(f"# {a.proxied} proxied + {a.silent} silent connections open "
              f"({time.perf_counter() - t0:.1f}s to open); proxy fds {proxy_fds(proxy.pid)}; "
              f"proxy RSS {open(f'/proc/{proxy.pid}/status').read().split('VmRSS:')[1].split()[0]} kB",
              file=sys.stderr)
        measure(admin, a.reps, str(total), paths)
        for _, w in conns:
            w.close()
    finally:
        proxy.terminate()
        proxy.wait()
        os.unlink(cfg.name)
        echo.stdin.close()
        echo.wait()


if __name__ == "__main__":
    asyncio.run(main())
