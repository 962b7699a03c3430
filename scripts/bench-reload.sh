#!/usr/bin/env bash
# Reloads under load (issue 16 §1): h2load drives HTTP/1.1 keep-alive (`--h1`, CONNS
# connections) and HTTP/2 (H2_CONNS connections × STREAMS streams, h2 → h1: upstream_protocol = "http1")
# through sidewire for DURATION seconds while the config file is rewritten RELOADS times,
# alternating the listener's upstream set between two pairs of `loadtest http-server`s, each
# rewrite followed by SIGHUP. Reports h2load's failed and errored requests (a reset or an
# unexpected close shows there: h2load does not retry), the reloads the log confirms, and how
# many requests each upstream set served (both must have served, or the reloads did nothing).
# SW_BIN=<path> measures another binary.
set -euo pipefail

DURATION=${DURATION:-12}
RELOADS=${RELOADS:-20}
CONNS=${CONNS:-16}
H2_CONNS=${H2_CONNS:-4}
STREAMS=${STREAMS:-10}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-reload
source "$root/scripts/bench-lib.sh"
need "apt-get install nghttp2-client" h2load
need "apt-get install python3" python3
build

python3 - "$SW" "$LT" "$tmp" "$DURATION" "$RELOADS" "$CONNS" "$H2_CONNS" "$STREAMS" <<'PY'
import re, signal, socket, subprocess, sys, time, urllib.request

sw, lt, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
duration, reloads, conns, h2_conns, streams = (int(x) for x in sys.argv[4:9])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.025)
    sys.exit(f"bench-reload: nothing listens on {port}")

procs = []
ups = []
for _ in range(4):
    port = free_port()
    procs.append(subprocess.Popen([lt, "http-server", "--listen", f"127.0.0.1:{port}", "--body-bytes", "64"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    ups.append(port)
sets = [ups[:2], ups[2:]]
port, admin = free_port(), free_port()
cfg = f"{tmp}/reload.toml"

def write(k):
    eps = ", ".join(f'"127.0.0.1:{p}"' for p in sets[k])
    open(cfg + ".new", "w").write(
        f'[runtime]\nworkers = 2\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[[listener]]\nname = "web"\nlisten = "127.0.0.1:{port}"\nupstream = [{eps}]\nupstream_protocol = "http1"\n')
    # Replaced atomically: a reload never reads a half-written file.
    subprocess.run(["mv", cfg + ".new", cfg], check=True)

write(0)
log = open(f"{tmp}/sidewire.log", "w")
p = subprocess.Popen([sw, "--config", cfg], stderr=log, env={"RUST_LOG": "info"})
procs.append(p)
for u in ups + [port, admin]:
    wait_port(u)

url = f"http://127.0.0.1:{port}/"
h1 = subprocess.Popen(["h2load", "--h1", "-c", str(conns), "-D", str(duration), url],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
h2 = subprocess.Popen(["h2load", "-c", str(h2_conns), "-m", str(streams), "-D", str(duration), url],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
start = time.monotonic()
# Spread the reloads over the middle of the run.
gap = (duration - 2) / reloads
time.sleep(1)
for i in range(reloads):
    write((i + 1) % 2)
    p.send_signal(signal.SIGHUP)
    time.sleep(max(0.0, start + 1 + (i + 1) * gap - time.monotonic()))
outs = [h1.communicate()[0], h2.communicate()[0]]
metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
p.send_signal(signal.SIGTERM)
p.wait(timeout=30)
for q in procs[:-1]:
    q.kill()
log.close()
text = open(f"{tmp}/sidewire.log").read()
confirmed = text.count("reloaded:")
rejected = text.count("reload rejected")

def served(ports):
    n = 0
    for line in metrics.splitlines():
        if line.startswith("request_total{") and any(f'target_addr="127.0.0.1:{q}"' in line for q in ports):
            n += float(line.rsplit(" ", 1)[1])
    return int(n)

ok = True
print(f"{reloads} reloads sent, {confirmed} applied, {rejected} rejected")
ok &= confirmed == reloads and rejected == 0
for name, out in (("HTTP/1.1 keep-alive (h2load --h1)", outs[0]), ("HTTP/2 (h2load)", outs[1])):
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        print(out); sys.exit("bench-reload: no h2load summary")
    total, _, done, succeeded, failed, errored, timeout = (int(x) for x in m.groups())
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    print(f"{name}: {done} done, {succeeded} succeeded, {failed} failed, {errored} errored, "
          f"{timeout} timeout; status codes {codes.group(0)[14:] if codes else '?'}")
    ok &= failed == 0 and errored == 0 and timeout == 0 and (codes is None or int(codes.group(4)) == 0)
print(f"requests served by upstream set A: {served(sets[0])}, set B: {served(sets[1])}")
ok &= served(sets[0]) > 0 and served(sets[1]) > 0
resets = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
             if l.startswith("tcp_close_total{") and 'peer="src"' in l and 'errno=""' not in l)
print(f"client connections closed by an error (tcp_close_total, peer=src, errno set): {int(resets)}")
ok &= resets == 0
print("bench-reload: OK" if ok else "bench-reload: FAILED")
sys.exit(0 if ok else 1)
PY
