#!/usr/bin/env bash
# HTTP/1.1 benchmark: sidewire vs HAProxy (and the no-proxy baseline) in one run.
#
# `loadtest http` (keep-alive, CONNS connections) → proxy → `loadtest http-server` (1 KiB
# responses), at full speed (closed loop, SECS) and at a fixed RATE req/s (open loop), and
# connection churn: one request per client connection (`loadtest http --close`, closed loop,
# CONNS at a time; the proxies keep their upstream connections pooled).
# Reported: req/s, p99 and the proxy's CPU-µs per request (per connection for churn).
#
# Pinning: the proxy (one worker / one thread) on CPU $PROXY_CPU, load and backend on CPU
# $LOAD_CPU. Proxy CPU is its threads' time on CPU (bench-lib.sh cpu_ticks). Each measurement runs REPS
# times; the median is reported. HAProxy: `mode http`, `http-reuse always`, one thread.
# Needs: haproxy (apt-get install haproxy), taskset.
set -euo pipefail

SECS=${SECS:-4}
CONNS=${CONNS:-16}
RATE=${RATE:-5000}
REPS=${REPS:-3}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-29000}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-http1
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy util-linux" haproxy taskset
build

BE=$BASE_PORT; SW_PORT=$((BASE_PORT+10)); SW_ADMIN=$((BASE_PORT+11)); HA_PORT=$((BASE_PORT+20))

taskset -c "$LOAD_CPU" "$LT" http-server --listen "127.0.0.1:$BE" >/dev/null 2>&1 & pids+=($!)
cat > "$tmp/sidewire.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = true
shutdown_grace_ms = 1000
[admin]
listen = "127.0.0.1:$SW_ADMIN"
[[listener]]
name = "http"
listen = "127.0.0.1:$SW_PORT"
upstream = ["127.0.0.1:$BE"]
TOML
cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
listen http
  bind 127.0.0.1:$HA_PORT
  server s1 127.0.0.1:$BE
CFG
RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & SW_PID=$!; pids+=($SW_PID)
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=($HA_PID)
wait_ports $BE $SW_PORT $HA_PORT


# load <port> <pid|-> <rate|max|close> : prints "cpu_us_per_req req_per_s p99"
load() {
  local port=$1 pid=$2 rate=$3 c0 c1 out args
  args=(--target "127.0.0.1:$port" --connections "$CONNS" --duration "$SECS" --max-error-rate 100)
  case $rate in max) ;; close) args+=(--close) ;; *) args+=(--rate "$rate") ;; esac
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" "$LT" http "${args[@]}" 2>&1)
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  local ops errs rps p99
  ops=$(sed -nE 's/.*ops=([0-9]+).*/\1/p' <<<"$out"); errs=$(sed -nE 's/.*errors=([0-9]+).*/\1/p' <<<"$out")
  rps=$(sed -nE 's/.*rate=([0-9]+).*/\1/p' <<<"$out"); p99=$(sed -nE 's/.* p99=([0-9.]+[a-z]+).*/\1/p' <<<"$out")
  [ "${errs:-1}" = 0 ] || echo "warning: port $port: ${errs:-?} errors" >&2
  if [ "$pid" != - ]; then
    awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$ops" -v r="$rps" -v p="$p99" 'BEGIN{printf "%.2f %d %s\n", (b-a)/t*1e6/n, r, p}'
  else
    echo "- $rps $p99"
  fi
}

declare -A R
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  for mode in max "$RATE" close; do
    R[base_$mode]+="$(load $BE - $mode)"$'\n'
    R[sw_$mode]+="$(load $SW_PORT $SW_PID $mode)"$'\n'
    R[ha_$mode]+="$(load $HA_PORT $HA_PID $mode)"$'\n'
  done
done
col() { grep -v '^$' <<<"${R[$1]}" | awk -v c="$2" '{print $c}' | median; }
colp() { grep -v '^$' <<<"${R[$1]}" | awk -v c="$2" '{print $c}' | sort -V | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo
echo "# bench-http1 $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r)"
echo "# sidewire driver=${SW_DRIVER:-auto}; loadtest http --connections $CONNS --duration $SECS; $(haproxy -v | head -1 | cut -d' ' -f1-3); proxy on CPU $PROXY_CPU, load+backend on CPU $LOAD_CPU; median of $REPS"
printf "%-10s %14s %10s %18s %10s %10s\n" "target" "max CPU-us/req" "req/s" "$RATE/s CPU-us/req" "req/s" "p99"
for t in base sw ha; do
  name=$([ $t = base ] && echo baseline || { [ $t = sw ] && echo sidewire || echo haproxy; })
  printf "%-10s %14s %10s %18s %10s %10s\n" "$name" "$(col ${t}_max 1)" "$(col ${t}_max 2)" "$(col ${t}_$RATE 1)" "$(col ${t}_$RATE 2)" "$(colp ${t}_$RATE 3)"
done
awk -v a="$(col sw_max 1)" -v b="$(col ha_max 1)" -v c="$(col sw_$RATE 1)" -v d="$(col ha_$RATE 1)" \
  'BEGIN{printf "ratio sidewire/haproxy CPU per request: closed loop %.2fx, at '"$RATE"'/s %.2fx\n", a/b, c/d}'
echo "one request per connection (--close): CPU-us/conn and conn/s"
for t in base sw ha; do
  name=$([ $t = base ] && echo baseline || { [ $t = sw ] && echo sidewire || echo haproxy; })
  printf "%-10s %14s %10s\n" "$name" "$(col ${t}_close 1)" "$(col ${t}_close 2)"
done
awk -v a="$(col sw_close 1)" -v b="$(col ha_close 1)" 'BEGIN{printf "ratio sidewire/haproxy CPU per connection: %.2fx\n", a/b}'

# Machine-readable: one line per target (scripts/bench-report.py parses these). Baseline CPU is "-".
echo
for t in base sw ha; do
  case $t in base) tname=baseline ;; sw) tname=sidewire ;; *) tname=haproxy ;; esac
  p99=$(colp "${t}_$RATE" 3)
  echo "RESULT bench=http1 proxy=$tname max_cpu_us_per_req=$(col "${t}_max" 1) max_req_s=$(col "${t}_max" 2) rate=$RATE rate_cpu_us_per_req=$(col "${t}_$RATE" 1) rate_req_s=$(col "${t}_$RATE" 2) rate_p99_us=${p99%us} close_cpu_us_per_conn=$(col "${t}_close" 1) close_conn_s=$(col "${t}_close" 2) conns=$CONNS secs=$SECS reps=$REPS"
done
