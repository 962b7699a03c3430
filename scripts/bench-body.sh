#!/usr/bin/env bash
# HTTP/1 body throughput and CPU: sidewire (bodies spliced), sidewire with splicing off
# (`http1.splice_body_bytes = 0`, bodies copied through user space), sidewire's opaque path,
# HAProxy (`mode http`) and the no-proxy baseline, in one run.
#
# Cases (curl → proxy → scripts/body-server.py):
#   get          GET of a BODY_MIB MiB Content-Length body
#   chunked-get  the same body chunked in 1 MiB chunks
#   post         POST of a POST_MIB MiB Content-Length body (the server answers its length)
#   chunked-post the same body sent chunked by curl
#   opaque, opaque-chunked-get, opaque-post, opaque-chunked-post
#                the same four requests, byte for byte, through an opaque listener
#                (protocol = "opaque"): the splice floor each HTTP/1 case is compared with
#                (get with opaque, the others with opaque-<case>)
# FRESH (default 1): the server answers every exchange with `connection: close`, so every
# exchange, opaque or not, meets a fresh upstream connection. A pooled connection reused over
# the reps grows its receive window (TCP autotuning) and moves the same body at a different
# cost (measured: a chunked upload through sidewire 0.25 CPU-s/GiB on a fresh upstream
# connection, 0.40 right after a 256 MiB upload on the same one), which the opaque cases,
# fresh each time, never see. FRESH=0 keeps the connections alive (the pooled state).
# Reported per case and target: MiB/s (curl's average) and the proxy's CPU-s per GiB (its threads'
# time on CPU, bench-lib.sh cpu_ticks). Each measurement runs REPS times, interleaved; medians.
# Pinning: the proxy on CPU $PROXY_CPU, curl and the server on CPU $LOAD_CPU. Throughput is
# bounded by curl and the Python server on this machine: read the CPU column.
# Needs: haproxy, curl, python3, taskset.
set -euo pipefail

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then BODY_MIB=${BODY_MIB:-32}; POST_MIB=${POST_MIB:-16}; fi
BODY_MIB=${BODY_MIB:-256}
POST_MIB=${POST_MIB:-256}
REPS=${REPS:-3}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-32000}
FRESH=${FRESH:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-body
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy curl python3 util-linux" haproxy curl python3 taskset
build

BE=$BASE_PORT; SWP=$((BASE_PORT+10)); SW_OPAQUE=$((BASE_PORT+11)); SW_ADMIN=$((BASE_PORT+12))
SW0=$((BASE_PORT+13)); SW0_ADMIN=$((BASE_PORT+14)); HA=$((BASE_PORT+20))

taskset -c "$LOAD_CPU" python3 "$root/scripts/body-server.py" "$BE" $([ "$FRESH" = 1 ] && echo close) & pids+=($!)
for v in splice copy; do
  port=$([ $v = splice ] && echo $SWP || echo $SW0); admin=$([ $v = splice ] && echo $SW_ADMIN || echo $SW0_ADMIN)
  cat > "$tmp/sw-$v.toml" <<TOML
[runtime]
driver = "${SW_DRIVER:-auto}"
workers = 1
pin_cores = true
shutdown_grace_ms = 1000
[admin]
listen = "127.0.0.1:$admin"
[http1]
splice_body_bytes = $([ $v = splice ] && echo 32768 || echo 0)
[[listener]]
name = "http"
listen = "127.0.0.1:$port"
upstream = ["127.0.0.1:$BE"]
TOML
  [ $v = splice ] && cat >> "$tmp/sw-$v.toml" <<TOML
[[listener]]
name = "opaque"
listen = "127.0.0.1:$SW_OPAQUE"
protocol = "opaque"
upstream = ["127.0.0.1:$BE"]
TOML
done
cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
listen http
  bind 127.0.0.1:$HA
  server s1 127.0.0.1:$BE
CFG
RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sw-splice.toml" & SW_PID=$!; pids+=($SW_PID)
RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sw-copy.toml" & SW0_PID=$!; pids+=($SW0_PID)
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=($HA_PID)
wait_ports $BE $SWP $SW_OPAQUE $SW0 $HA

head -c $((POST_MIB << 20)) /dev/urandom > "$tmp/post.bin"
BODY=$((BODY_MIB << 20))

# one <case> <port> <pid|-> : prints "MiB/s CPU-s/GiB"
one() {
  local case=$1 port=$2 pid=$3 c0 c1 out bytes speed
  local url="http://127.0.0.1:$port"
  local curl=(taskset -c "$LOAD_CPU" curl -sS -o /dev/null -H "Expect:")
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  case $case in
    get|opaque) out=$("${curl[@]}" -w '%{size_download} %{speed_download} %{http_code}' "$url/cl/$BODY") ;;
    *chunked-get) out=$("${curl[@]}" -w '%{size_download} %{speed_download} %{http_code}' "$url/chunked/$BODY/1048576") ;;
    post|opaque-post) out=$("${curl[@]}" --data-binary @"$tmp/post.bin" -w '%{size_upload} %{speed_upload} %{http_code}' "$url/up") ;;
    *chunked-post) out=$("${curl[@]}" -X POST -T "$tmp/post.bin" -H "Transfer-Encoding: chunked" -w '%{size_upload} %{speed_upload} %{http_code}' "$url/up") ;;
  esac
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  read -r bytes speed code <<<"$out"
  [ "$code" = 200 ] || echo "warning: $case on port $port: HTTP $code" >&2
  if [ "$pid" != - ]; then
    awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$bytes" -v s="$speed" 'BEGIN{printf "%.0f %.3f\n", s/1048576, (b-a)/t/(n/1073741824)}'
  else
    awk -v s="$speed" 'BEGIN{printf "%.0f -\n", s/1048576}'
  fi
}

declare -A R
cases=(get chunked-get post chunked-post opaque opaque-chunked-get opaque-post opaque-chunked-post)
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  for case in "${cases[@]}"; do
    if [[ $case == opaque* ]]; then
      R[$case,sidewire]+="$(one $case $SW_OPAQUE $SW_PID)"$'\n'
      continue
    fi
    # Rotate the order each repetition, so no target always runs first.
    targets=(baseline sidewire sidewire-copy haproxy)
    for i in $(seq 0 3); do
      t=${targets[$(( (i + rep) % 4 ))]}
      case $t in
        baseline) R[$case,$t]+="$(one $case $BE -)"$'\n' ;;
        sidewire) R[$case,$t]+="$(one $case $SWP $SW_PID)"$'\n' ;;
        sidewire-copy) R[$case,$t]+="$(one $case $SW0 $SW0_PID)"$'\n' ;;
        haproxy) R[$case,$t]+="$(one $case $HA $HA_PID)"$'\n' ;;
      esac
    done
  done
done
col() { grep -v '^$' <<<"${R[$1]:-}" | awk -v c="$2" '{print $c}' | median; }

echo
echo "# bench-body $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r)"
echo "# sidewire driver=${SW_DRIVER:-auto}; GET ${BODY_MIB} MiB, POST ${POST_MIB} MiB; $(haproxy -v | head -1 | cut -d' ' -f1-3); proxy on CPU $PROXY_CPU, curl+server on CPU $LOAD_CPU; median of $REPS; upstream connections $([ "$FRESH" = 1 ] && echo "fresh per exchange" || echo "kept alive")"
printf "%-13s %-14s %8s %12s\n" case target "MiB/s" "CPU-s/GiB"
for case in "${cases[@]}"; do
  for t in baseline sidewire sidewire-copy haproxy; do
    [ -n "${R[$case,$t]:-}" ] || continue
    printf "%-13s %-14s %8s %12s\n" "$case" "$t" "$(col "$case,$t" 1)" "$(col "$case,$t" 2)"
  done
done
for case in "${cases[@]}"; do
  for t in baseline sidewire sidewire-copy haproxy; do
    [ -n "${R[$case,$t]:-}" ] || continue
    echo "RESULT bench=body case=$case proxy=$t mib_s=$(col "$case,$t" 1) cpu_s_per_gib=$(col "$case,$t" 2)"
  done
done
for case in get chunked-get post chunked-post; do
  ref=opaque; [ "$case" = get ] || ref=opaque-$case
  o=$(col "$ref,sidewire" 2)
  awk -v c="$case" -v s="$(col "$case,sidewire" 2)" -v k="$(col "$case,sidewire-copy" 2)" -v h="$(col "$case,haproxy" 2)" -v o="$o" \
    'BEGIN{printf "%-13s sidewire CPU/GiB: %.2fx the opaque path, %.2fx copying, %.2fx HAProxy\n", c, s/o, s/k, s/h}'
done
