#!/usr/bin/env python3
"""How long a `/connections` scrape holds up the connections of the worker that answers it.

Starts an echo upstream and sidewire with ONE worker (so every connection shares its event
loop), opens PROXIED idle connections through it (Redis PING echoed: opaque, spliced), then
keeps one more connection busy: a probe that sends PING and waits for the echo, in a loop.
For each admin path it runs REPS scrapes back to back while the probe runs and reports the
probe's p99 and worst round trip during them, against the same with no scrape (as long).

Usage: scripts/bench-scrape-delay.py [--proxied 3000] [--reps 20] [--sidewire PATH]
Needs a release build (cargo build --release).
"""
import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_scrape", os.path.join(HERE, "bench-scrape.py"))
bs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bs)

PATHS = [
    "/metrics",
    "/connections?limit=1",
    "/connections?limit=100",
    "/connections?limit=1000",
    "/connections?limit=3000",
    "/connections?limit=3000&format=text",
]


class Probe:
    """A PING/echo loop on its own thread, recording the worst round trip while `on`."""

    def __init__(self, port):
        self.c = socket.create_connection(("127.0.0.1", port))
        self.c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rtts = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            t0 = time.perf_counter()
            self.c.sendall(bs.PING)
            got = b""
            while len(got) < len(bs.PING):
                got += self.c.recv(len(bs.PING) - len(got))
            self.rtts.append(time.perf_counter() - t0)

    def take(self):
        """(p99, max) round trip in ms since the last take."""
        xs, self.rtts = sorted(self.rtts), []
        if not xs:
            return 0.0, 0.0
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1e3, xs[-1] * 1e3


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxied", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sidewire", default=os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(bs.ROOT, "target"), "release/sidewire"))
    a = ap.parse_args()
    echo = subprocess.Popen([sys.executable, os.path.join(HERE, "bench-scrape.py"), "--echo"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    up = int(echo.stdout.readline())
    admin, listen = bs.free_port(), bs.free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(
        f'[runtime]\nworkers = 1\npin_cores = false\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[detect]\nserver_first = "off"\n'
        f'[[listener]]\nname = "bench"\nlisten = "127.0.0.1:{listen}"\n'
        f'upstream = ["127.0.0.1:{up}"]\n'
    )
    cfg.close()
    proxy = subprocess.Popen([a.sidewire, "--config", cfg.name], stderr=subprocess.DEVNULL,
                             env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(200):
            try:
                bs.get(admin, "/ready")
                break
            except OSError:
                await asyncio.sleep(0.05)
        conns = await bs.open_conns(listen, a.proxied, True)
        probe = Probe(listen)
        print(f"# {a.proxied} idle proxied connections, 1 worker; worst probe echo round trip (ms)")
        print(f"{'path':<40} {'scrape p50':>10} {'echo p99/max during':>20} {'p99/max without':>16}")
        for path in PATHS:
            t0 = time.perf_counter()
            probe.take()
            took = []
            for _ in range(a.reps):
                t, status, body = bs.get(admin, path)
                assert status == 200, (path, status, body[:200])
                took.append(t)
            during = probe.take()
            time.sleep(time.perf_counter() - t0)  # as long again, no scrape
            quiet = probe.take()
            p50 = sorted(took)[len(took) // 2] * 1e3
            print(f"{path:<40} {p50:10.2f} {during[0]:10.2f}/{during[1]:<9.2f} {quiet[0]:7.2f}/{quiet[1]:.2f}")
        probe.stop = True
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
