#!/usr/bin/env bash
# Idle connections: N concurrent idle proxied connections (both directions open) on one
# worker, then one echo on each; reports the proxy's RSS per connection.
#
# The client and the echo server are separate processes (scripts/idle-conns.py, one thread
# each), so the proxy's descriptor limit is the only one that binds: each proxied connection
# holds 2 proxy fds, so a hard limit of 20,000 (this sandbox's; raising it needs
# CAP_SYS_RESOURCE) allows about 9,990 at once. Past that, accept backs off (EMFILE) and the
# rest wait in the backlog: they are reported as not echoed.
#
# RSS is /proc/<pid>/status VmRSS: after start-up with one warm-up connection, then with all N
# open and idle (both directions waiting, no pipe held), then after every connection echoed.
set -euo pipefail

N=${N:-10000}
PORT=${PORT:-29000}   # echo on PORT, proxy on PORT+1, admin on PORT+2
PROTOCOL=${PROTOCOL:-detect}   # the listener's protocol: "detect" (default) or "opaque"

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-idle
source "$root/scripts/bench-lib.sh"
need "apt-get install python3" python3
build

ECHO=$PORT; PROXY=$((PORT+1)); ADMIN=$((PORT+2))
python3 "$root/scripts/idle-conns.py" echo "$ECHO" & pids+=($!)
cat > "$tmp/sidewire.toml" <<TOML
[runtime]
workers = 1
pin_cores = false
[admin]
listen = "127.0.0.1:$ADMIN"
[[listener]]
name = "idle"
listen = "127.0.0.1:$PROXY"
upstream = ["127.0.0.1:$ECHO"]
protocol = "$PROTOCOL"
TOML
"$SW" --config "$tmp/sidewire.toml" 2>"$tmp/proxy.log" & sw=$!; pids+=($sw)
wait_ports "$ECHO" "$PROXY" "$ADMIN"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$sw/status"; }
open_dst() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tcp_open_connections\{.*peer="dst"/ {s+=$NF} END {print s+0}'; }

# A warm-up connection, closed, so the baseline includes the first allocations.
python3 - "$PROXY" <<'PY'
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"warm-up-message\n"); assert c.recv(64) == b"warm-up-message\n"
PY
base=$(rss)
fds0=$(ls "/proc/$sw/fd" | wc -l)

mkfifo "$tmp/in"
python3 "$root/scripts/idle-conns.py" hold "127.0.0.1:$PROXY" "$N" <"$tmp/in" >"$tmp/out" & client=$!; pids+=($client)
exec 3>"$tmp/in"
until grep -q '^open' "$tmp/out" 2>/dev/null; do sleep 0.2; done
opened=$(awk '/^open/ {print $2}' "$tmp/out")
# Wait until every connection is spliced (counted as an open upstream): with detection, a
# silent client is dialled early but spliced only after the detect timeout (10 s by default).
# 30 s at most: past the descriptor limit some never are.
for _ in $(seq 150); do
  [ "$(open_dst)" -ge "$opened" ] && break
  sleep 0.2
done
proxied=$(open_dst)
idle=$(rss)
fds=$(ls "/proc/$sw/fd" | wc -l)
t0=$(cpu_ticks "$sw")
sleep 2
idle_ticks=$(( $(cpu_ticks "$sw") - t0 ))

echo >&3
until grep -q '^echoed' "$tmp/out" 2>/dev/null; do sleep 0.2; done
read -r _ ok failed secs < <(grep '^echoed' "$tmp/out")
after=$(rss)
echo >&3; exec 3>&-
wait "$client" 2>/dev/null || true

per=$(( (idle - base) * 1024 / (proxied > 0 ? proxied : 1) ))
accept_errors=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tcp_accept_errors_total/ && $NF > 0 {match($0, /errno="[^"]*"/); printf "%s=%s ", substr($0, RSTART+7, RLENGTH-8), $NF}')
grep -m3 "accept failed" "$tmp/proxy.log" >&2 || true
cat <<OUT
bench-idle: N=$N protocol=$PROTOCOL, one worker, nofile $(awk '/Max open files/ {print $4}' "/proc/$sw/limits")
  client connections open:      $opened
  proxied (upstream dialled):   $proxied   (proxy fds: $fds0 -> $fds; accept errors counted: $accept_errors)
  proxy RSS: $base KiB at start, $idle KiB with $proxied idle, $after KiB after echoing
  RSS per idle proxied connection: $per B
  proxy CPU while all idle: $idle_ticks ticks in 2 s (CLK_TCK=$TCK)
  echoed: $ok ok, $failed not, in $secs s
OUT
