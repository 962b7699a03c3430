#!/usr/bin/env bash
# HTTP/2 benchmark: sidewire vs HAProxy (and the no-proxy baseline) in one run.
#
#  h2->h1 : h2load (h2c prior knowledge) → proxy → HTTP/1.1 backend (`loadtest http-server`)
#  h2->h2 : h2load → proxy → h2c backend (`loadtest h2-server`)
# Each at full speed (closed loop: CONNS connections × STREAMS concurrent streams for SECS)
# and at a fixed RATE req/s (open loop). Reported: req/s and the proxy's CPU-µs per request.
#
# Pinning: the proxy (one worker / one thread) on CPU $PROXY_CPU, h2load and the backends on
# CPU $LOAD_CPU. Proxy CPU is its threads' time on CPU (bench-lib.sh cpu_ticks). Each measurement runs
# REPS times; the median is reported. HAProxy: `mode http`, `bind … proto h2`, `http-reuse
# always`, `server … proto h2` for h2->h2. Needs: haproxy, h2load (apt-get install haproxy
# nghttp2-client), taskset.
set -euo pipefail

SECS=${SECS:-5}
CONNS=${CONNS:-4}
STREAMS=${STREAMS:-32}
RATE=${RATE:-5000}
REPS=${REPS:-3}
BODY=${BODY:-1024}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-28000}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-h2
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy nghttp2-client util-linux" haproxy h2load taskset
build

H1_BE=$((BASE_PORT)); H2_BE=$((BASE_PORT+1))
SW_H1=$((BASE_PORT+10)); SW_H2=$((BASE_PORT+11)); SW_ADMIN=$((BASE_PORT+12))
HA_H1=$((BASE_PORT+20)); HA_H2=$((BASE_PORT+21))

taskset -c "$LOAD_CPU" "$LT" http-server --listen "127.0.0.1:$H1_BE" --body-bytes "$BODY" >/dev/null 2>&1 & pids+=($!)
taskset -c "$LOAD_CPU" "$LT" h2-server --listen "127.0.0.1:$H2_BE" --body-bytes "$BODY" >/dev/null 2>&1 & pids+=($!)

cat > "$tmp/sidewire.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = true
shutdown_grace_ms = 1000
[admin]
listen = "127.0.0.1:$SW_ADMIN"
[[listener]]
name = "h2h1"
listen = "127.0.0.1:$SW_H1"
upstream = ["127.0.0.1:$H1_BE"]
upstream_protocol = "http1"
[[listener]]
name = "h2h2"
listen = "127.0.0.1:$SW_H2"
upstream = ["127.0.0.1:$H2_BE"]
upstream_protocol = "http2"
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
  http-reuse always
listen h2h1
  bind 127.0.0.1:$HA_H1 proto h2
  server s1 127.0.0.1:$H1_BE
listen h2h2
  bind 127.0.0.1:$HA_H2 proto h2
  server s1 127.0.0.1:$H2_BE proto h2
CFG

RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & SW_PID=$!; pids+=($SW_PID)
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=($HA_PID)
wait_ports $H1_BE $H2_BE $SW_H1 $SW_H2 $HA_H1 $HA_H2


# load <port> <pid|-> <rate|max> : prints "cpu_us_per_req req_per_s"
load() {
  local port=$1 pid=$2 rate=$3 c0 c1 out args
  args=(-c "$CONNS" -m "$STREAMS" -D "$SECS")
  # h2load's --rps is per client connection.
  [ "$rate" != max ] && args+=(--rps "$((rate / CONNS))")
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" h2load "${args[@]}" "http://127.0.0.1:$port/" 2>&1)
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  local ok failed rps
  ok=$(sed -nE 's/^requests: .* ([0-9]+) succeeded, ([0-9]+) failed.*/\1/p' <<<"$out")
  failed=$(sed -nE 's/^requests: .* ([0-9]+) succeeded, ([0-9]+) failed.*/\2/p' <<<"$out")
  rps=$(sed -nE 's/^finished in .*s, ([0-9.]+) req\/s.*/\1/p' <<<"$out")
  [ "${failed:-1}" = 0 ] || echo "warning: port $port: ${failed:-?} failed requests" >&2
  if [ "$pid" != - ]; then
    awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$ok" -v r="$rps" 'BEGIN{printf "%.2f %d\n", (b-a)/t*1e6/n, r}'
  else
    printf -- "- %d\n" "${rps%.*}"
  fi
}

declare -A R
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  for mode in max "$RATE"; do
    R[base_h1_$mode]+="$(load $H2_BE - $mode)"$'\n'
    R[sw_h1_$mode]+="$(load $SW_H1 $SW_PID $mode)"$'\n'
    R[ha_h1_$mode]+="$(load $HA_H1 $HA_PID $mode)"$'\n'
    R[sw_h2_$mode]+="$(load $SW_H2 $SW_PID $mode)"$'\n'
    R[ha_h2_$mode]+="$(load $HA_H2 $HA_PID $mode)"$'\n'
  done
done
col() { grep -v '^$' <<<"${R[$1]}" | awk -v c="$2" '{print $c}' | median; }

echo
echo "# bench-h2 $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r)"
echo "# h2load -c $CONNS -m $STREAMS -D $SECS, body $BODY B; $(haproxy -v | head -1 | cut -d' ' -f1-3); proxy on CPU $PROXY_CPU, load+backends on CPU $LOAD_CPU; median of $REPS"
printf "%-22s %14s %10s %18s %10s\n" "target" "max CPU-us/req" "req/s" "$RATE/s CPU-us/req" "req/s"
row() { printf "%-22s %14s %10s %18s %10s\n" "$1" "$(col "${2}_max" 1)" "$(col "${2}_max" 2)" "$(col "${2}_$RATE" 1)" "$(col "${2}_$RATE" 2)"; }
row "baseline (h2c direct)" base_h1
row "sidewire h2->h1" sw_h1
row "haproxy  h2->h1" ha_h1
row "sidewire h2->h2" sw_h2
row "haproxy  h2->h2" ha_h2
ratio() { awk -v a="$(col "$1" 1)" -v b="$(col "$2" 1)" 'BEGIN{printf "%.2fx", a/b}'; }
echo "ratio sidewire/haproxy CPU per request: h2->h1 max $(ratio sw_h1_max ha_h1_max), at $RATE/s $(ratio sw_h1_$RATE ha_h1_$RATE); h2->h2 max $(ratio sw_h2_max ha_h2_max), at $RATE/s $(ratio sw_h2_$RATE ha_h2_$RATE)"

# Machine-readable: one line per kind and target (scripts/bench-report.py parses these). The
# baseline (h2c straight to the h2c backend) is printed for both kinds; its CPU is "-".
echo
for kind in h2h1 h2h2; do
  k=${kind#h2}
  for t in base sw ha; do
    case $t in base) tname=baseline ;; sw) tname=sidewire ;; *) tname=haproxy ;; esac
    key=${t}_$k; [ $t = base ] && key=base_h1
    echo "RESULT bench=h2 kind=$kind proxy=$tname max_cpu_us_per_req=$(col "${key}_max" 1) max_req_s=$(col "${key}_max" 2) rate=$RATE rate_cpu_us_per_req=$(col "${key}_$RATE" 1) rate_req_s=$(col "${key}_$RATE" 2) conns=$CONNS streams=$STREAMS body=$BODY secs=$SECS reps=$REPS"
  done
done
