#!/usr/bin/env bash
# Drain time: how long sidewire takes to exit after SIGTERM while N HTTP/1 keep-alive clients
# sit idle on it (each sent one request, read the answer and keeps the connection open), with
# shutdown_grace_ms = GRACE_MS. Before idle keep-alive connections were closed on drain, this
# was the whole grace period (Kubernetes then SIGKILLs the pod at terminationGracePeriod).
#
# Also checks a client whose request is in flight when the drain starts: its answer must say
# `connection: close`. Each measurement runs REPS times; the median is reported.
# SW_BIN=<path> measures another binary (an earlier build, for before/after).
set -euo pipefail

N=${N:-50}
GRACE_MS=${GRACE_MS:-30000}
REPS=${REPS:-3}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-drain
source "$root/scripts/bench-lib.sh"
need "apt-get install python3" python3
build

python3 - "$SW" "$N" "$GRACE_MS" "$REPS" "$tmp" <<'PY'
import http.server, socket, socketserver, statistics, subprocess, sys, threading, time

sw, n, grace_ms, reps, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(0.5)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024

up = S(("127.0.0.1", 0), H)
threading.Thread(target=up.serve_forever, daemon=True).start()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def response(c):
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 6:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    return data

def once():
    port, admin = free_port(), free_port()
    cfg = f"{tmp}/drain.toml"
    open(cfg, "w").write(
        f'[runtime]\nworkers = 1\nshutdown_grace_ms = {grace_ms}\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[[listener]]\nname = "t"\nlisten = "127.0.0.1:{port}"\nupstream = ["127.0.0.1:{up.server_address[1]}"]\n')
    p = subprocess.Popen([sw, "--config", cfg], stderr=subprocess.DEVNULL, env={"RUST_LOG": "warn"})
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError:
            time.sleep(0.025)
    clients = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert response(c).startswith(b"HTTP/1.1 200"), "no answer through the proxy"
        clients.append(c)
    busy = socket.create_connection(("127.0.0.1", port))
    busy.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    time.sleep(0.1)  # the request reaches the upstream
    t0 = time.monotonic()
    p.terminate()
    busy_answer = response(busy)
    try:
        p.wait(timeout=grace_ms / 1000 + 10)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    took = time.monotonic() - t0
    for c in clients + [busy]:
        c.close()
    return took, b"connection: close" in busy_answer.lower()

runs = [once() for _ in range(reps)]
times = sorted(t for t, _ in runs)
print(f"# bench-drain: {n} idle HTTP/1 keep-alive clients + 1 request in flight, shutdown_grace_ms={grace_ms}, median of {reps}")
print(f"exit after SIGTERM: median {statistics.median(times)*1000:.0f} ms (runs: {', '.join(f'{t*1000:.0f}' for t in times)} ms)")
print(f"in-flight answer said connection: close: {sum(ok for _, ok in runs)}/{reps}")
PY
