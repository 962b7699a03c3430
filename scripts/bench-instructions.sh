#!/usr/bin/env bash
# User-space instructions per request through sidewire, counted by callgrind: a figure that
# does not move with the machine's load, for A/B comparisons of the proxy's own code on a
# shared machine where CPU-time ratios swing by 10-20 % between runs.
#
# One worker, epoll driver (valgrind does not follow io_uring), one client connection, one
# request at a time, N requests after a warm-up of 500: KIND=http1 (`h2load --h1`, keep-alive
# GET → `loadtest http-server`), h2h1 (h2load, h2c → HTTP/1.1 backend) or h2h2 (h2c → h2c
# backend), 1 KiB responses. Counting starts after the warm-up (`callgrind_control -z`) and
# ends with a dump, so start-up is not in the figure. Kernel work is not counted at all:
# this measures what the proxy's code costs, not the whole CPU per request (see
# bench-http1.sh, bench-h2.sh for that). `memcpy` is the share spent copying (large futures
# moved into boxes and tasks showed up there; `rep movsb` counts one per byte under valgrind).
#
# Knobs: KIND (default "http1 h2h1 h2h2"), N (3000), SW_BIN (another sidewire binary, e.g. an
# earlier commit's, to compare), BASE_PORT, CG_DIR (keep each kind's callgrind profile there as
# <kind>.cg, for `callgrind_annotate --inclusive=yes`). Needs: valgrind, h2load (apt-get install valgrind
# nghttp2-client).
set -euo pipefail

KINDS=${KIND:-http1 h2h1 h2h2}
N=${N:-3000}
BASE_PORT=${BASE_PORT:-29700}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-instructions
source "$root/scripts/bench-lib.sh"
need "apt-get install valgrind nghttp2-client" valgrind callgrind_control callgrind_annotate h2load
build

H1_BE=$BASE_PORT; H2_BE=$((BASE_PORT+1))
"$LT" http-server --listen "127.0.0.1:$H1_BE" >/dev/null 2>&1 & pids+=($!)
"$LT" h2-server --listen "127.0.0.1:$H2_BE" >/dev/null 2>&1 & pids+=($!)
wait_ports $H1_BE $H2_BE

# count <kind> <port offset>: prints "instructions memcpy" per request.
count() {
  local kind=$1 port=$((BASE_PORT + 10 + $2)) up upp h2load_args=() vg ir mc
  case $kind in
    http1) up=$H1_BE; upp=http1; h2load_args=(--h1) ;;
    h2h1) up=$H1_BE; upp=http1 ;;
    h2h2) up=$H2_BE; upp=http2 ;;
    *) echo "$name: KIND must be http1, h2h1 or h2h2, not '$kind'" >&2; exit 2 ;;
  esac
  cat > "$tmp/$kind.toml" <<TOML
[runtime]
driver = "epoll"
workers = 1
pin_cores = false
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "b"
listen = "127.0.0.1:$port"
upstream = ["127.0.0.1:$up"]
upstream_protocol = "$upp"
TOML
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$tmp/$kind.cg" \
    "$SW" --config "$tmp/$kind.toml" 2>"$tmp/$kind.vg" & vg=$!
  pids+=($vg)
  # Under valgrind the proxy needs seconds to start.
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  h2load "${h2load_args[@]}" -n 500 -c 1 -m 1 "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$vg" >/dev/null 2>&1
  h2load "${h2load_args[@]}" -n "$N" -c 1 -m 1 "http://127.0.0.1:$port/" | grep -q "$N succeeded" ||
    { echo "$name: $kind: not all $N requests succeeded" >&2; exit 1; }
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill "$vg"; wait "$vg" 2>/dev/null || true
  ir=$(awk '/^summary:/ {print $2}' "$tmp/$kind.cg.1")
  if [ -n "${CG_DIR:-}" ]; then mkdir -p "$CG_DIR" && cp "$tmp/$kind.cg.1" "$CG_DIR/$kind.cg"; fi
  mc=$( (callgrind_annotate --threshold=100 --inclusive=no --auto=no "$tmp/$kind.cg.1" 2>/dev/null || true) |
    awk '/__memcpy|__memmove/ {gsub(",", "", $1); s += $1} END {print s + 0}')
  awk -v ir="$ir" -v mc="$mc" -v n="$N" 'BEGIN {printf "%.0f %.0f\n", ir / n, mc / n}'
}

echo "# bench-instructions $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) binary $SW; $N requests, 1 connection, epoll driver, under callgrind"
printf "%-8s %16s %16s\n" kind "instr/request" "memcpy/request"
i=0
for kind in $KINDS; do
  read -r ir mc < <(count "$kind" "$i")
  printf "%-8s %16s %16s\n" "$kind" "$ir" "$mc"
  echo "RESULT bench=instructions kind=$kind instructions_per_req=$ir memcpy_per_req=$mc requests=$N" >>"$tmp/results"
  i=$((i + 1))
done
echo
cat "$tmp/results"
