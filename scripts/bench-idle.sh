#!/usr/bin/env bash
# Idle connections: N concurrent idle proxied connections on one worker / one thread, then one
# more exchange on each; reports each proxy's RSS per idle connection, sidewire beside HAProxy
# in the same run.
#
# KIND (default opaque):
#   opaque  the client sends nothing until the final 16-byte echo (both directions open and
#           idle; the upstream is an echo server)
#   http1   one HTTP/1.1 keep-alive GET answered, then the connection idles (the upstream is a
#           keep-alive HTTP/1.1 server; its pooled connections count too)
#   http2   h2c prior knowledge: preface, SETTINGS, one GET answered, then the connection idles
#           (sidewire: upstream_protocol = "http1"; HAProxy: `bind ... proto h2`; both pool
#           HTTP/1.1 upstream connections)
#
# The client and the upstream are separate processes (scripts/idle-conns.py, one thread
# each). Each opaque proxied connection holds 2 proxy fds, so the sandbox's hard limit of
# 20,000 allows about 9,990 at once; past that, accepts back off (EMFILE) and the rest wait in
# the backlog (reported as not echoed).
#
# RSS is /proc/<pid>/status VmRSS: after start-up with one warm-up exchange, then with all N
# open and idle, SETTLE seconds (default 3) after the last one opened (the figure reported;
# sidewire's workers hand freed pages back once a second), and also right after they opened
# (bytes_per_conn_at_open). PROTOCOL (sidewire's listener protocol for KIND=opaque: "detect", the
# default, or "opaque"; with detect, silent clients are spliced after the 10 s detect
# timeout, and the script waits for that). PEERS (default "sidewire haproxy").
set -euo pipefail

N=${N:-10000}
KIND=${KIND:-opaque}
PORT=${PORT:-29000}   # upstream on PORT, proxy on PORT+1, admin on PORT+2
PROTOCOL=${PROTOCOL:-detect}
PEERS=${PEERS:-sidewire haproxy}
SETTLE=${SETTLE:-3}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-idle
source "$root/scripts/bench-lib.sh"
need "apt-get install python3 iproute2" python3 ss
case " $PEERS " in *" haproxy "*) need "apt-get install haproxy" haproxy ;; esac
case $KIND in opaque|http1|http2) ;; *) echo "$name: KIND must be opaque, http1 or http2" >&2; exit 2 ;; esac
build

UP=$PORT; PROXY=$((PORT+1)); ADMIN=$((PORT+2))
if [ "$KIND" = opaque ]; then
  python3 "$root/scripts/idle-conns.py" echo "$UP" & pids+=($!)
else
  python3 "$root/scripts/idle-conns.py" http "$UP" & pids+=($!)
fi
wait_ports "$UP"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Established connections to the upstream port (both proxies' upstream side).
upstream_conns() { ss -Htn state established "( dport = :$UP )" | wc -l; }

start_sidewire() {
  local proto=detect up_proto=""
  [ "$KIND" = opaque ] && proto=$PROTOCOL
  [ "$KIND" = http2 ] && up_proto='upstream_protocol = "http1"'
  cat > "$tmp/sidewire.toml" <<TOML
[runtime]
workers = 1
pin_cores = false
[admin]
listen = "127.0.0.1:$ADMIN"
[[listener]]
name = "idle"
listen = "127.0.0.1:$PROXY"
upstream = ["127.0.0.1:$UP"]
protocol = "$proto"
$up_proto
TOML
  "$SW" --config "$tmp/sidewire.toml" 2>"$tmp/proxy.log" & pid=$!
}

start_haproxy() {
  local mode=http bind="bind 127.0.0.1:$PROXY"
  [ "$KIND" = opaque ] && mode=tcp
  [ "$KIND" = http2 ] && bind="$bind proto h2"
  cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn $((N + 100))
defaults
  mode $mode
  timeout connect 5s
  timeout client 600s
  timeout server 600s
$([ $mode = http ] && printf '  option http-keep-alive\n  http-reuse always\n')
listen idle
  $bind
  maxconn $((N + 100))
  server s1 127.0.0.1:$UP
CFG
  haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/proxy.log" 2>&1 & pid=$!
}

# The warm-up: one exchange of KIND through the proxy, so the baseline holds the first
# allocations.
warm_up() {
  mkfifo "$tmp/warm"
  python3 "$root/scripts/idle-conns.py" hold "127.0.0.1:$PROXY" 1 "$KIND" <"$tmp/warm" >"$tmp/warm.out" &
  local w=$!
  exec 4>"$tmp/warm"
  until grep -q '^open' "$tmp/warm.out" 2>/dev/null; do sleep 0.1; done
  echo >&4; until grep -q '^echoed' "$tmp/warm.out" 2>/dev/null; do sleep 0.1; done
  echo >&4; exec 4>&-; wait "$w" 2>/dev/null || true
  rm -f "$tmp/warm" "$tmp/warm.out"
}

results=()
rlines=()   # the machine-readable RESULT lines, printed at the end
for peer in $PEERS; do
  "start_$peer"; pids+=($pid)
  wait_ports "$PROXY"
  [ "$peer" = sidewire ] && wait_ports "$ADMIN"
  warm_up
  base=$(rss "$pid")
  mkfifo "$tmp/in"
  python3 "$root/scripts/idle-conns.py" hold "127.0.0.1:$PROXY" "$N" "$KIND" <"$tmp/in" >"$tmp/out" & client=$!
  exec 3>"$tmp/in"
  until grep -q '^open' "$tmp/out" 2>/dev/null; do sleep 0.2; done
  opened=$(awk '/^open/ {print $2}' "$tmp/out")
  if [ "$KIND" = opaque ]; then
    # Until every connection has its upstream (with detection: after the detect timeout).
    for _ in $(seq 150); do [ "$(upstream_conns)" -ge "$opened" ] && break; sleep 0.2; done
  fi
  ups=$(upstream_conns)
  at_open=$(rss "$pid")
  sleep "$SETTLE"
  idle=$(rss "$pid")
  t0=$(cpu_ticks "$pid"); sleep 2; idle_ticks=$(awk -v a="$t0" -v b="$(cpu_ticks "$pid")" 'BEGIN{printf "%.2f", b - a}')
  echo >&3
  until grep -q '^echoed' "$tmp/out" 2>/dev/null; do sleep 0.2; done
  read -r _ ok failed secs < <(grep '^echoed' "$tmp/out")
  echo >&3; exec 3>&-
  wait "$client" 2>/dev/null || true
  rm -f "$tmp/in" "$tmp/out"
  per=$(( (idle - base) * 1024 / (opened > 0 ? opened : 1) ))
  per_open=$(( (at_open - base) * 1024 / (opened > 0 ? opened : 1) ))
  results+=("$peer $per")
  rlines+=("RESULT bench=idle kind=$KIND proxy=$peer bytes_per_conn=$per bytes_per_conn_at_open=$per_open settle_s=$SETTLE n=$N open=$opened rss_base_kib=$base rss_idle_kib=$idle idle_ticks=$idle_ticks ok=$ok failed=$failed protocol=$([ "$KIND" = opaque ] && echo "$PROTOCOL" || echo detect)")
  printf '%-9s open %5s  upstream conns %5s  RSS %6s -> %6s KiB  per idle connection %5s B (%5s B at open)  idle CPU %s ticks/2 s  then %s ok, %s not (%s s)\n' \
    "$peer" "$opened" "$ups" "$base" "$idle" "$per" "$per_open" "$idle_ticks" "$ok" "$failed" "$secs"
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  # Until the proxy's sockets are gone, so the next peer starts from the same state.
  for _ in $(seq 100); do [ "$(upstream_conns)" -eq 0 ] && break; sleep 0.1; done
done

echo "# bench-idle: N=$N KIND=$KIND (sidewire protocol=$([ "$KIND" = opaque ] && echo "$PROTOCOL" || echo detect)), one worker / one thread, nofile $(ulimit -Hn), $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3), $(date -u +%F), $(git -C "$root" rev-parse --short HEAD)"
sw=$(printf '%s\n' "${results[@]}" | awk '$1=="sidewire"{print $2}')
ha=$(printf '%s\n' "${results[@]}" | awk '$1=="haproxy"{print $2}')
if [ -n "$sw" ] && [ -n "$ha" ] && [ "$ha" -gt 0 ]; then
  awk -v a="$sw" -v b="$ha" 'BEGIN{printf "ratio sidewire/haproxy RSS per idle connection: %.2fx\n", a/b}'
fi
# Machine-readable: one line per peer (scripts/bench-report.py parses these).
printf '%s\n' "${rlines[@]}"
