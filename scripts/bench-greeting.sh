#!/usr/bin/env bash
# Server-speaks-first greeting latency: connect → the server's first byte, one connection at a
# time (`loadtest first-byte`), for a `loadtest greeter` backend reached directly, through
# sidewire with its default detection settings (the greeter's port is not an opaque port),
# and through HAProxy `mode tcp`; then how many upstream dials client-first traffic causes
# (`loadtest churn` to an echo backend through sidewire, 4 clients).
#
# Pinning: proxies on CPU $PROXY_CPU, clients and backends on CPU $LOAD_CPU. Each measurement
# runs REPS times, interleaved; the median of the per-run p50/p99 is reported.
# Needs: haproxy (apt-get install haproxy), taskset.
set -euo pipefail

COUNT=${COUNT:-2000}
REPS=${REPS:-3}
CHURN_SECS=${CHURN_SECS:-5}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-28000}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-greeting
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy util-linux" haproxy taskset
build

GREET=$BASE_PORT; ECHO=$((BASE_PORT+1))
SW_GREET=$((BASE_PORT+10)); SW_ECHO=$((BASE_PORT+11)); SW_ADMIN=$((BASE_PORT+12))
HA_GREET=$((BASE_PORT+20))

taskset -c "$LOAD_CPU" "$LT" greeter --listen "127.0.0.1:$GREET" 2>/dev/null & pids+=($!)
taskset -c "$LOAD_CPU" "$LT" echo --listen "127.0.0.1:$ECHO" 2>/dev/null & pids+=($!)
cat > "$tmp/sidewire.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = false
[admin]
listen = "127.0.0.1:$SW_ADMIN"
[[listener]]
name = "greet"
listen = "127.0.0.1:$SW_GREET"
upstream = ["127.0.0.1:$GREET"]
[[listener]]
name = "churn"
listen = "127.0.0.1:$SW_ECHO"
upstream = ["127.0.0.1:$ECHO"]
TOML
cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
listen greet
  bind 127.0.0.1:$HA_GREET
  server s1 127.0.0.1:$GREET
CFG
RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & pids+=($!)
taskset -c "$PROXY_CPU" haproxy -f "$tmp/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!)
wait_ports "$GREET" "$ECHO" "$SW_GREET" "$SW_ECHO" "$HA_GREET"

# first_byte <port>: "p50 p99" in µs from loadtest's report.
first_byte() {
  taskset -c "$LOAD_CPU" "$LT" first-byte --target "127.0.0.1:$1" --count "$COUNT" --max-error-rate 100 2>&1 |
    awk '/p50=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "p50") p50 = kv[2]; if (kv[1] == "p99") p99 = kv[2] } } END { print p50, p99 }'
}
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  for t in direct:$GREET sidewire:$SW_GREET haproxy:$HA_GREET; do
    echo "${t%%:*} $(first_byte "${t##*:}")" >> "$tmp/greet"
  done
done
metric() { curl -s "http://127.0.0.1:$SW_ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
taskset -c "$LOAD_CPU" "$LT" churn --target "127.0.0.1:$SW_ECHO" --concurrency 4 --duration "$CHURN_SECS" --max-error-rate 100 > "$tmp/churn" 2>&1
conns=$(metric 'tcp_open_total{listener="churn",peer="src"}')
early=$(metric 'tcp_detect_early_dials_total{listener="churn"}')
unused=$(metric 'tcp_detect_early_dials_unused_total{listener="churn"}')

echo "# bench-greeting $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD); loadtest first-byte --count $COUNT; median of $REPS; proxy on CPU $PROXY_CPU"
printf '%-10s %12s %12s\n' target "p50 (µs)" "p99 (µs)"
for t in direct sidewire haproxy; do
  p50=$(awk -v t=$t '$1 == t { print $2 }' "$tmp/greet" | median)
  p99=$(awk -v t=$t '$1 == t { print $3 }' "$tmp/greet" | median)
  printf '%-10s %12s %12s\n' "$t" "$p50" "$p99"
done
echo "client-first churn through sidewire: $conns connections, $early early dials, ${unused:-0} closed unused"
