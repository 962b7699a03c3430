#!/usr/bin/env bash
# What the access log costs: the proxy's CPU-µs per HTTP/1 request at a fixed rate with the
# access log off, on (plain and JSON lines, every request logged), and on but over its budget
# (1 line/s: every request takes the token-bucket check, almost none is written).
#
# `loadtest http` (keep-alive, CONNS connections, RATE req/s for SECS) → sidewire (one worker
# pinned to CPU $PROXY_CPU, stderr into a pipe, as under a container runtime) → `loadtest
# http-server` (load and backend on CPU $LOAD_CPU). Proxy CPU is the sum of its threads'
# /proc/<pid>/task/*/schedstat run time. Variants interleave; each runs REPS times and the
# median is reported. BEFORE_BIN=<path> adds a sidewire binary from before the access log
# existed, with the access log off (its config has no [log] section).
set -euo pipefail

SECS=${SECS:-6}
CONNS=${CONNS:-16}
RATE=${RATE:-10000}
REPS=${REPS:-5}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-29300}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-access-log
source "$root/scripts/bench-lib.sh"
need "apt-get install util-linux" taskset
build

BE=$BASE_PORT; SW_PORT=$((BASE_PORT+10))
taskset -c "$LOAD_CPU" "$LT" http-server --listen "127.0.0.1:$BE" >/dev/null 2>&1 & pids+=($!)
wait_ports "$BE"

base="[runtime]
workers = 1
pin_cores = true
shutdown_grace_ms = 500
[admin]
listen = \"127.0.0.1:0\"
[[listener]]
name = \"http\"
listen = \"127.0.0.1:$SW_PORT\"
upstream = [\"127.0.0.1:$BE\"]"
unlimited="access = true
access_lines_per_second = 1000000
access_burst_lines = 1000000"
printf '%s\n' "$base" > "$tmp/off.toml"
printf '%s\n[log]\n%s\n' "$base" "$unlimited" > "$tmp/plain.toml"
printf '%s\n[log]\nformat = "json"\n%s\n' "$base" "$unlimited" > "$tmp/json.toml"
printf '%s\n[log]\naccess = true\naccess_lines_per_second = 1\naccess_burst_lines = 1\n' "$base" > "$tmp/over-budget.toml"

# run_ns <binary> <config>: the proxy's CPU nanoseconds per request, and its stderr lines.
run_ns() {
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$1" --config "$2" 2> >(cat > "$tmp/stderr") & local p=$!
  pids+=("$p")
  wait_ports "$SW_PORT"
  local c0 c1 out ops
  c0=$(cat /proc/$p/task/*/schedstat | awk '{s+=$1} END {print s}')
  out=$(taskset -c "$LOAD_CPU" "$LT" http --target "127.0.0.1:$SW_PORT" --connections "$CONNS" --rate "$RATE" --duration "$SECS" --max-error-rate 100)
  c1=$(cat /proc/$p/task/*/schedstat | awk '{s+=$1} END {print s}')
  kill "$p"; wait "$p" 2>/dev/null || true
  ops=$(sed -n 's/.*ops=\([0-9]*\).*/\1/p' <<<"$out")
  echo "$(( (c1 - c0) / ops )) $(wc -l < "$tmp/stderr")"
}

variants=(off plain json over-budget)
[[ -n "${BEFORE_BIN:-}" ]] && variants=(before "${variants[@]}")
for r in $(seq "$REPS"); do
  for v in "${variants[@]}"; do
    if [[ $v == before ]]; then res=$(run_ns "$BEFORE_BIN" "$tmp/off.toml"); else res=$(run_ns "$SW" "$tmp/$v.toml"); fi
    echo "$v $res" >> "$tmp/results"
    echo "rep $r: $v: $(cut -d' ' -f1 <<<"$res") ns/request, $(cut -d' ' -f2 <<<"$res") lines" >&2
  done
done
echo "median CPU per request at $RATE req/s over $CONNS connections (${SECS}s x $REPS):"
for v in "${variants[@]}"; do
  printf '  %-12s %6.2f us\n' "$v" "$(awk -v v="$v" '$1 == v {print $2 / 1000}' "$tmp/results" | median)"
done
