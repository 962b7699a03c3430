#!/usr/bin/env bash
# TCP benchmark: sidewire vs HAProxy (and the no-proxy baseline) in one run.
#
#  bulk  : iperf3 pushes BULK_BYTES through the proxy; proxy CPU seconds per GiB moved.
#  (sidewire runtime.splice_pipe_bytes = $SPLICE_PIPE_BYTES; HAProxy keeps its default pipes)
#  churn : `loadtest churn` loops connect → 64 B → echo → close for CHURN_SECS;
#          proxy CPU microseconds per connection.
#
# Pinning: the proxy (one worker / one thread) on CPU $PROXY_CPU, load generator and backends
# on CPU $LOAD_CPU. Proxy CPU is the time on CPU of all its threads (bench-lib.sh cpu_ticks:
# schedstat, ns resolution; includes softirq work the kernel charges to the proxy's threads). Each measurement runs REPS times; the median is
# reported. Needs: haproxy, iperf3 (apt-get install haproxy iperf3), taskset.
set -euo pipefail

BULK_BYTES=${BULK_BYTES:-4G}
CHURN_SECS=${CHURN_SECS:-8}
CHURN_CONC=${CHURN_CONC:-4}
REPS=${REPS:-3}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-27000}
SPLICE_PIPE_BYTES=${SPLICE_PIPE_BYTES:-262144}
SW_PROTOCOL=${SW_PROTOCOL:-detect}   # sidewire listeners: "detect" (default) or "opaque" (no detection, like HAProxy mode tcp)
PROFILE=${PROFILE:-0}   # 1: one more churn and bulk run per proxy under `perf record`, split by scripts/cpu-split.py

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-tcp
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy iperf3 util-linux" haproxy iperf3 taskset
[ "$PROFILE" = 1 ] && need "apt-get install linux-perf" perf python3
build

IPERF_PORT=$BASE_PORT; ECHO_PORT=$((BASE_PORT+1))
SW_BULK=$((BASE_PORT+10)); SW_CHURN=$((BASE_PORT+11)); SW_ADMIN=$((BASE_PORT+12))
HA_BULK=$((BASE_PORT+20)); HA_CHURN=$((BASE_PORT+21))

taskset -c "$LOAD_CPU" iperf3 -s -p "$IPERF_PORT" >/dev/null 2>&1 & pids+=($!)
taskset -c "$LOAD_CPU" "$LT" echo --listen "127.0.0.1:$ECHO_PORT" --threads 8 2>/dev/null & pids+=($!)

cat > "$tmp/sidewire.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = true
shutdown_grace_ms = 1000
splice_pipe_bytes = $SPLICE_PIPE_BYTES
[admin]
listen = "127.0.0.1:$SW_ADMIN"
[[listener]]
name = "bulk"
listen = "127.0.0.1:$SW_BULK"
upstream = ["127.0.0.1:$IPERF_PORT"]
protocol = "$SW_PROTOCOL"
[[listener]]
name = "churn"
listen = "127.0.0.1:$SW_CHURN"
upstream = ["127.0.0.1:$ECHO_PORT"]
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
listen bulk
  bind 127.0.0.1:$HA_BULK
  server s1 127.0.0.1:$IPERF_PORT
listen churn
  bind 127.0.0.1:$HA_CHURN
  server s1 127.0.0.1:$ECHO_PORT
CFG

RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & SW_PID=$!; pids+=($SW_PID)
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=($HA_PID)
wait_ports $IPERF_PORT $ECHO_PORT $SW_BULK $SW_CHURN $HA_BULK $HA_CHURN

to_bytes() { numfmt --from=iec "$1"; }
GIB=$(awk -v b="$(to_bytes "$BULK_BYTES")" 'BEGIN{print b/1073741824}')

# bulk <port> <pid|-> : prints "cpu_s_per_gib gbit_per_s"
bulk() {
  local port=$1 pid=$2 c0 c1 out
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$port" -n "$BULK_BYTES" -l 256K -J)
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  local bps; bps=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])' <<<"$out")
  if [ "$pid" != - ]; then
    awk -v a="$c0" -v b="$c1" -v t="$TCK" -v g="$GIB" -v bps="$bps" 'BEGIN{printf "%.3f %.2f\n", (b-a)/t/g, bps/1e9}'
  else
    awk -v bps="$bps" 'BEGIN{printf "- %.2f\n", bps/1e9}'
  fi
}
# churn <port> <pid|-> : prints "cpu_us_per_conn conns_per_s"
churn() {
  local port=$1 pid=$2 c0 c1 out
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" "$LT" churn --target "127.0.0.1:$port" --concurrency "$CHURN_CONC" --duration "$CHURN_SECS" --max-error-rate 100)
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  local n rate errs; n=$(sed -E 's/.*connections=([0-9]+).*/\1/' <<<"$out"); rate=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$out")
  errs=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$out")
  [ "$errs" = 0 ] || echo "warning: $errs churn errors on port $port" >&2
  if [ "$pid" != - ]; then
    awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$n" -v r="$rate" 'BEGIN{printf "%.1f %d\n", (b-a)/t*1e6/n, r}'
  else
    echo "- $rate"
  fi
}

declare -A R
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  R[base_bulk]+="$(bulk $IPERF_PORT -)"$'\n'
  R[sw_bulk]+="$(bulk $SW_BULK $SW_PID)"$'\n'
  R[ha_bulk]+="$(bulk $HA_BULK $HA_PID)"$'\n'
  R[base_churn]+="$(churn $ECHO_PORT -)"$'\n'
  R[sw_churn]+="$(churn $SW_CHURN $SW_PID)"$'\n'
  R[ha_churn]+="$(churn $HA_CHURN $HA_PID)"$'\n'
done
col() { grep -v '^$' <<<"${R[$1]}" | awk -v c="$2" '{print $c}' | median; }

echo
echo "# bench-tcp $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r)"
echo "# sidewire driver=${SW_DRIVER:-auto} protocol=$SW_PROTOCOL splice_pipe_bytes=$SPLICE_PIPE_BYTES; $(haproxy -v | head -1 | cut -d' ' -f1-3); proxy on CPU $PROXY_CPU, load+backends on CPU $LOAD_CPU; median of $REPS"
printf "%-10s %16s %10s %18s %10s\n" target "bulk CPU-s/GiB" "Gbit/s" "churn CPU-us/conn" "conn/s"
for t in base sw ha; do
  name=$([ $t = base ] && echo baseline || { [ $t = sw ] && echo sidewire || echo haproxy; })
  printf "%-10s %16s %10s %18s %10s\n" "$name" "$(col ${t}_bulk 1)" "$(col ${t}_bulk 2)" "$(col ${t}_churn 1)" "$(col ${t}_churn 2)"
done
awk -v sb="$(col sw_bulk 1)" -v hb="$(col ha_bulk 1)" -v sc="$(col sw_churn 1)" -v hc="$(col ha_churn 1)" \
  'BEGIN{printf "ratio sidewire/haproxy: bulk CPU %.2fx, churn CPU %.2fx\n", sb/hb, sc/hc}'

# Where the CPU goes: the kernel's TCP work (the same for any proxy moving the same traffic)
# vs each proxy's own overhead. perf adds some cost of its own, so these totals run higher
# than the table above; compare the categories, not the totals with the table.
if [ "$PROFILE" = 1 ]; then
  # record <pid> <command...>: runs the command with `perf record` attached to the proxy, then
  # prints the samples (callee-first stacks) for scripts/cpu-split.py.
  record() {
    local pid=$1 rec; shift
    perf record -F 10000 -g -o "$tmp/perf.data" -p "$pid" >/dev/null 2>&1 & rec=$!
    sleep 0.3   # perf attaches asynchronously; the load must not start before it
    "$@"
    kill -INT $rec; wait $rec || true
  }
  split() {  # split <label> <units> <unit>: the recorded samples as a table
    perf script -i "$tmp/perf.data" 2>/dev/null | "$root/scripts/cpu-split.py" --units "$2" --unit "$3" --hz 10000 --label "$1 "
  }
  echo
  echo "# CPU split (perf record -F 10000 -g, one run each; scripts/cpu-split.py)"
  for t in sw ha; do
    if [ $t = sw ]; then pid=$SW_PID name=sidewire churn_port=$SW_CHURN bulk_port=$SW_BULK
    else pid=$HA_PID name=haproxy churn_port=$HA_CHURN bulk_port=$HA_BULK; fi
    record "$pid" taskset -c "$LOAD_CPU" "$LT" churn --target "127.0.0.1:$churn_port" \
      --concurrency "$CHURN_CONC" --duration "$CHURN_SECS" --max-error-rate 100 > "$tmp/churn.out"
    split "$name churn" "$(sed -E 's/.*connections=([0-9]+).*/\1/' "$tmp/churn.out")" conn
    record "$pid" taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$bulk_port" -n "$BULK_BYTES" -l 256K >/dev/null
    split "$name bulk" "$GIB" GiB
  done
fi

# Machine-readable: one line per target (scripts/bench-report.py parses these). Baseline CPU is "-".
echo
for t in base sw ha; do
  case $t in base) tname=baseline ;; sw) tname=sidewire ;; *) tname=haproxy ;; esac
  echo "RESULT bench=tcp proxy=$tname bulk_cpu_s_per_gib=$(col "${t}_bulk" 1) bulk_gbit_s=$(col "${t}_bulk" 2) churn_cpu_us_per_conn=$(col "${t}_churn" 1) churn_conn_s=$(col "${t}_churn" 2) protocol=$SW_PROTOCOL bulk_bytes=$BULK_BYTES churn_secs=$CHURN_SECS reps=$REPS"
done
