#!/usr/bin/env bash
# Regenerates the README's performance table ("## Benchmarks", between the
# <!-- perf-table:begin --> and <!-- perf-table:end --> markers) in one run:
#
#   bench-tcp.sh                       opaque bulk CPU-s/GiB, churn CPU-µs/conn
#   bench-ring-floor.sh                opaque churn beside `loadtest ring-floor`, the floor
#                                      under it (paired reps; ~2 min)
#   bench-http1.sh                     HTTP/1 CPU-µs/req, closed loop and at RATE req/s, and
#                                      churn (one request per connection) CPU-µs/conn
#   bench-h2.sh                        h2→h1 and h2→h2 CPU-µs/req
#   bench-idle.sh KIND=opaque|http1|http2   RSS per idle connection (N=IDLE_N, default 9000;
#                                      opaque with PROTOCOL=IDLE_PROTOCOL, default opaque)
#   bench-latency.sh                   added p50/p99/p99.9 over the same rep's baseline
#   bench-body.sh (only if it exists)  HTTP/1 body MiB/s and CPU-s/GiB
#
# one after the other, saves each script's full output (stdout and stderr) under
# target/bench-report/<UTC date>-<commit>/<name>.log, then scripts/bench-report.py parses
# their `RESULT bench=…` lines into table.md there and (unless QUICK=1 or README_UPDATE=0)
# into README.md. A script that fails is reported and the rest still run; its rows are
# missing from the table and the exit status is 1.
#
# This script takes no lock: run it as
#   flock /tmp/sidewire-build.lock timeout 3600 scripts/bench-report.sh
# A full run takes roughly 25 minutes on the 2-vCPU machine (an estimate from the defaults:
# bench-latency.sh alone ~12 min; the first script also rebuilds the release binaries after a
# new commit, ~2.5 min; plus bench-body.sh if present). QUICK=1 took 3.6 min. Every sub-script's own knobs (REPS, SECS, …) pass through
# from the environment (SECS and REPS reach every script that has them).
# QUICK=1: every sub-bench short (SECS=1 REPS=1, 256 MiB bulk, 1 s churn, N=300 idle
# connections) for a smoke test of a few minutes; its table is written to table.md only.
set -uo pipefail

QUICK=${QUICK:-0}
IDLE_N=${IDLE_N:-9000}
IDLE_PROTOCOL=${IDLE_PROTOCOL:-opaque}
if [ "$QUICK" = 1 ]; then README_UPDATE=${README_UPDATE:-0}; else README_UPDATE=${README_UPDATE:-1}; fi

root=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$root/target/bench-report/$stamp-$commit"
mkdir -p "$out"
command -v python3 >/dev/null || { echo "bench-report: python3 not found" >&2; exit 1; }

quick=()
[ "$QUICK" = 1 ] && quick=(SECS=1 REPS=1)
failed=()
t_start=$SECONDS

# bench <log name> <script> [VAR=value ...]: runs scripts/<script> with the extra environment,
# output to $out/<log name>.log.
bench() {
  local log=$1 script=$2 t0=$SECONDS rc; shift 2
  echo "== $log: scripts/$script $* ($(date -u +%T) UTC)" >&2
  env "$@" bash "$root/scripts/$script" >"$out/$log.log" 2>&1; rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s, $(grep -c '^RESULT' "$out/$log.log") RESULT lines; $(grep -ci 'warning' "$out/$log.log") warnings" >&2
  [ "$rc" = 0 ] || { failed+=("$log (exit $rc)"); tail -5 "$out/$log.log" >&2; }
}

if [ "$QUICK" = 1 ]; then
  bench tcp bench-tcp.sh "${quick[@]}" BULK_BYTES=256M CHURN_SECS=1
else
  bench tcp bench-tcp.sh
fi
bench ring-floor bench-ring-floor.sh QUICK="$QUICK"
bench http1 bench-http1.sh "${quick[@]}"
bench h2 bench-h2.sh "${quick[@]}"
n=$IDLE_N; [ "$QUICK" = 1 ] && n=300
bench idle-opaque bench-idle.sh KIND=opaque PROTOCOL="$IDLE_PROTOCOL" N="$n"
bench idle-http1 bench-idle.sh KIND=http1 N="$n"
bench idle-http2 bench-idle.sh KIND=http2 N="$n"
bench latency bench-latency.sh "${quick[@]}" RAW_OUT="$out/latency-raw.txt"
body=absent
if [ -f "$root/scripts/bench-body.sh" ]; then
  body=present
  bench body bench-body.sh "${quick[@]}" QUICK="$QUICK"
else
  echo "== body: scripts/bench-body.sh not present, skipped" >&2
fi

cat > "$out/meta.txt" <<META
date=$(date -u '+%Y-%m-%d %H:%M') UTC
commit=$commit
kernel=$(uname -r)
haproxy=$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1,3 || echo 'HAProxy ?')
cpus=$(nproc)
quick=$QUICK
idle_protocol=$IDLE_PROTOCOL
body=$body
elapsed_min=$(( (SECONDS - t_start + 30) / 60 ))
latency_knobs=$(sed -nE 's/^# knobs: //p' "$out/latency.log" 2>/dev/null | head -1)
failed=${failed[*]:-}
META

readme=()
[ "$README_UPDATE" = 1 ] && readme=(--readme "$root/README.md")
python3 "$root/scripts/bench-report.py" "$out" "${readme[@]}" || failed+=("bench-report.py")
echo >&2
echo "logs and table: $out" >&2
[ "$README_UPDATE" = 1 ] && echo "README.md updated between the perf-table markers" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
