#!/usr/bin/env bash
# The floor under connection churn: sidewire and HAProxy beside `loadtest ring-floor`, the
# least an io_uring proxy does per opaque TCP connection (accept, connect, recv/send both
# ways, shutdown, close; no detection, timers or metrics). What the floor costs is the
# kernel's TCP work plus a minimal event loop; a proxy cannot get far below it with any event
# loop of its own (issue 17 §4: an own ring loop was allowed if an A/B showed ≥ 15% less CPU
# per connection than sidewire's).
#
# Each rep runs `loadtest churn` (CHURN_CONC clients loop connect → 64 B → echo → close, for
# CHURN_SECS) against each target in turn, the order rotated by one each rep; each target has
# its own echo backend (so TIME_WAIT sockets of one do not slow another's connects). Reported:
# CPU-µs per connection (the proxy's time on CPU, bench-lib.sh cpu_ticks), the median over
# REPS, and the median of the per-rep ratios (paired, so the machine's drift cancels).
# Pinning: proxies on CPU $PROXY_CPU, load and backends on CPU $LOAD_CPU.
# QUICK=1: a smoke run (REPS=2, CHURN_SECS=1 unless set), as bench-report.sh's QUICK=1 uses.
# Needs: haproxy (apt-get install haproxy), taskset.
set -euo pipefail

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then REPS=${REPS:-2}; CHURN_SECS=${CHURN_SECS:-1}; fi
CHURN_SECS=${CHURN_SECS:-3}
CHURN_CONC=${CHURN_CONC:-4}
REPS=${REPS:-10}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-30000}
SW_PROTOCOL=${SW_PROTOCOL:-opaque}   # sidewire's listener: "opaque" (like the floor) or "detect"

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-ring-floor
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy util-linux" haproxy taskset
build

E_SW=$BASE_PORT; E_HA=$((BASE_PORT+1)); E_RF=$((BASE_PORT+2))
P_SW=$((BASE_PORT+10)); SW_ADMIN=$((BASE_PORT+11)); P_HA=$((BASE_PORT+20)); P_RF=$((BASE_PORT+30))

for e in $E_SW $E_HA $E_RF; do
  taskset -c "$LOAD_CPU" "$LT" echo --listen "127.0.0.1:$e" --threads 4 2>/dev/null & pids+=($!)
done
cat > "$tmp/sidewire.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = true
shutdown_grace_ms = 1000
[admin]
listen = "127.0.0.1:$SW_ADMIN"
[[listener]]
name = "churn"
listen = "127.0.0.1:$P_SW"
upstream = ["127.0.0.1:$E_SW"]
protocol = "$SW_PROTOCOL"
TOML
cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option splice-request
  option splice-response
listen churn
  bind 127.0.0.1:$P_HA
  server s1 127.0.0.1:$E_HA
CFG
RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & SW_PID=$!; pids+=($SW_PID)
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=($HA_PID)
taskset -c "$PROXY_CPU" "$LT" ring-floor --listen "127.0.0.1:$P_RF" --upstream "127.0.0.1:$E_RF" 2>/dev/null & RF_PID=$!; pids+=($RF_PID)
wait_ports $E_SW $E_HA $E_RF $P_SW $P_HA $P_RF

# churn <port> <pid> : prints "cpu_us_per_conn conns"
churn() {
  local port=$1 pid=$2 c0 c1 out n errs
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" "$LT" churn --target "127.0.0.1:$port" --concurrency "$CHURN_CONC" --duration "$CHURN_SECS" --max-error-rate 100)
  c1=$(cpu_ticks "$pid")
  n=$(sed -E 's/.*connections=([0-9]+).*/\1/' <<<"$out")
  errs=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$out")
  [ "$errs" = 0 ] || echo "warning: $errs churn errors on port $port" >&2
  awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$n" 'BEGIN{printf "%.1f %d\n", (b-a)/t*1e6/n, n}'
}

targets=(sw ha rf)
declare -A port=([sw]=$P_SW [ha]=$P_HA [rf]=$P_RF) pid=([sw]=$SW_PID [ha]=$HA_PID [rf]=$RF_PID)
declare -A R
: > "$tmp/reps"
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  declare -A cur=()
  for k in 0 1 2; do
    t=${targets[$(( (k + rep) % 3 ))]}
    cur[$t]=$(churn "${port[$t]}" "${pid[$t]}")
    R[$t]+="${cur[$t]}"$'\n'
  done
  echo "${cur[sw]%% *} ${cur[ha]%% *} ${cur[rf]%% *}" >> "$tmp/reps"
done
col() { grep -v '^$' <<<"${R[$1]}" | awk '{print $1}' | median; }
ratio() { awk -v a="$1" -v b="$2" '{print $a / $b}' "$tmp/reps" | median | awk '{printf "%.2f", $1}'; }

echo
echo "# bench-ring-floor $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r)"
echo "# churn: $CHURN_CONC clients, $CHURN_SECS s, 64 B echo; sidewire protocol=$SW_PROTOCOL driver=${SW_DRIVER:-auto}; $(haproxy -v | head -1 | cut -d' ' -f1-3); proxies on CPU $PROXY_CPU, load+backends on CPU $LOAD_CPU; median of $REPS"
printf "%-12s %18s\n" target "churn CPU-us/conn"
printf "%-12s %18s\n" sidewire "$(col sw)" haproxy "$(col ha)" ring-floor "$(col rf)"
echo "median of per-rep ratios: sidewire/haproxy $(ratio 1 2), ring-floor/haproxy $(ratio 3 2), ring-floor/sidewire $(ratio 3 1)"
echo "RESULT bench=ring-floor protocol=$SW_PROTOCOL sidewire_us=$(col sw) haproxy_us=$(col ha) floor_us=$(col rf) sw_ha=$(ratio 1 2) floor_ha=$(ratio 3 2) floor_sw=$(ratio 3 1) reps=$REPS secs=$CHURN_SECS"
