#!/usr/bin/env bash
# Added latency: how much latency each proxy ADDS over the no-proxy baseline, measured so that
# the shared machine's noise cancels as far as it can.
#
# Kinds (KINDS, default "http1 h2h1 h2h2"):
#   http1 : `loadtest http` (keep-alive, CONNS connections; see SCALE_CONNS) → proxy → `loadtest http-server`
#   h2h1  : `loadtest h2` (h2c prior knowledge, H2_CONNS × STREAMS) → proxy → `loadtest http-server`
#           (sidewire upstream_protocol = "http1"; HAProxy `bind … proto h2`)
#   h2h2  : `loadtest h2` → proxy → `loadtest h2-server`
#           (sidewire upstream_protocol = "http2"; HAProxy `bind … proto h2`, `server … proto h2`)
# Baseline: the same client straight to that kind's backend where the protocols match:
# http1 → http-server; h2h2 → h2-server; and for h2h1 also the h2 client on the h2-server
# (an h2 client cannot talk to the HTTP/1.1 backend directly), so the h2h1 numbers include
# the proxy's translation and the difference between the two backends.
#
# Each kind runs open loop at each rate of RATES req/s for WARMUP + SECS seconds, and only the
# last SECS are measured (loadtest --warmup): the first requests of a run also open the client
# connections and, through a proxy, its upstream connections (64 connections set up within
# 3.2 ms at 20,000 req/s), which is connection churn, not keep-alive latency. For rep in 1..REPS,
# for each kind and rate, the baseline, sidewire and HAProxy run back to back, the order
# rotated by one each rep (so no target always goes first). For each rep, added latency =
# proxy percentile − the baseline's percentile from the SAME rep (p50, p99, p99.9). Reported
# per (kind, rate, proxy): the median across reps of the added values and their spread
# (min–max), the median absolute percentiles, the median proxy CPU-µs per request
# (CPU time from /proc/<pid>/task/*/schedstat, nanosecond resolution: bench-lib.sh cpu_ticks,
# over the whole run, warm-up included, divided by the requests sent in it: the measured ones
# × (WARMUP + SECS) / SECS) and the errors summed over reps.
#
# Latency source: loadtest's open loop (loadtest/src/load.rs `measure_from`, used by both
# `http` and `h2`). Each connection (http) or stream slot (h2) has a fixed schedule; a
# request is measured from its INTENDED send time when the previous request of that slot was
# still in flight at that time (coordinated-omission correction: a stall shows in the tail),
# and from the actual send when the slot was idle (so tokio's ~1 ms timer granularity is not
# charged to the target). So stalls of the target are counted; lateness of the generator's
# own timer while idle is not.
#
# Pinning: the proxies (one worker / one thread) on CPU $PROXY_CPU, the client and backends on
# CPU $LOAD_CPU. The machine is shared: read the added values and their spread, not the
# absolute tails.
# Output: a human table, then one `RESULT bench=latency kind=… rate=… proxy=…` line per
# (kind, rate, target) with key=value fields (parsed by scripts/bench-report.py). RAW_OUT=<file>
# also saves every single run ("rep kind rate target p50 p99 p999 cpu_us_per_req errors ops conns
# load_busy proxy_busy steal"). The table also gives, per target, the median % of the load CPU
# and of the proxy CPU that was busy during its runs (anyone's work, softirq included) and the
# % stolen by the hypervisor: a load CPU near 100 % means the generator and backends, not the
# target, set the tail (a warning says so).
# Needs: haproxy (apt-get install haproxy), python3, taskset.
set -euo pipefail

KINDS=${KINDS:-http1 h2h1 h2h2}
RATES=${RATES:-1000 5000 20000}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}      # seconds of load before each run's measured SECS (0: measure from the start)
REPS=${REPS:-5}
CONNS=${CONNS:-16}       # loadtest http connections (at least; see SCALE_CONNS)
# SCALE_CONNS=1 (default): at rates above 5,000/s, http1 uses more connections, so that each
# connection still sends at most every 3.2 ms (rate × 0.0032 connections; 64 at 20,000/s).
# loadtest paces each connection with tokio's 1 ms timer: at 16 connections and 20,000/s
# (one send every 0.8 ms per connection) the generator falls behind its own schedule and the
# baseline's p50 reads ~1.2 ms instead of ~0.13 ms (measured on this machine). SCALE_CONNS=0
# keeps CONNS at every rate. The connections used are in each RESULT line (conns=).
SCALE_CONNS=${SCALE_CONNS:-1}
H2_CONNS=${H2_CONNS:-4}  # loadtest h2 connections
STREAMS=${STREAMS:-32}   # loadtest h2 concurrent streams per connection
BODY=${BODY:-1024}       # response body bytes of both backends
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-31000}

root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-latency
# shellcheck source=scripts/bench-lib.sh
source "$root/scripts/bench-lib.sh"
need "apt-get install haproxy python3 util-linux" haproxy python3 taskset
for k in $KINDS; do
  case $k in http1|h2h1|h2h2) ;; *) echo "$name: unknown kind '$k' (http1, h2h1, h2h2)" >&2; exit 2 ;; esac
done
build

H1_BE=$BASE_PORT; H2_BE=$((BASE_PORT+1))
SW_HTTP1=$((BASE_PORT+10)); SW_H2H1=$((BASE_PORT+11)); SW_H2H2=$((BASE_PORT+12)); SW_ADMIN=$((BASE_PORT+13))
HA_HTTP1=$((BASE_PORT+20)); HA_H2H1=$((BASE_PORT+21)); HA_H2H2=$((BASE_PORT+22))

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
name = "http1"
listen = "127.0.0.1:$SW_HTTP1"
upstream = ["127.0.0.1:$H1_BE"]
[[listener]]
name = "h2h1"
listen = "127.0.0.1:$SW_H2H1"
upstream = ["127.0.0.1:$H1_BE"]
upstream_protocol = "http1"
[[listener]]
name = "h2h2"
listen = "127.0.0.1:$SW_H2H2"
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
  option http-keep-alive
  http-reuse always
listen http1
  bind 127.0.0.1:$HA_HTTP1
  server s1 127.0.0.1:$H1_BE
listen h2h1
  bind 127.0.0.1:$HA_H2H1 proto h2
  server s1 127.0.0.1:$H1_BE
listen h2h2
  bind 127.0.0.1:$HA_H2H2 proto h2
  server s1 127.0.0.1:$H2_BE proto h2
CFG

RUST_LOG=warn taskset -c "$PROXY_CPU" "$SW" --config "$tmp/sidewire.toml" & SW_PID=$!; pids+=("$SW_PID")
taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & HA_PID=$!; pids+=("$HA_PID")
wait_ports "$H1_BE" "$H2_BE" "$SW_HTTP1" "$SW_H2H1" "$SW_H2H2" "$HA_HTTP1" "$HA_H2H1" "$HA_H2H2"

# port <kind> <target>: where the load goes.
port() {
  case $1-$2 in
    http1-baseline) echo "$H1_BE" ;; h2h1-baseline|h2h2-baseline) echo "$H2_BE" ;;
    http1-sidewire) echo "$SW_HTTP1" ;; h2h1-sidewire) echo "$SW_H2H1" ;; h2h2-sidewire) echo "$SW_H2H2" ;;
    http1-haproxy) echo "$HA_HTTP1" ;; h2h1-haproxy) echo "$HA_H2H1" ;; h2h2-haproxy) echo "$HA_H2H2" ;;
  esac
}

# http_conns <rate>: the http1 connections at that rate (see SCALE_CONNS).
http_conns() {
  local c=$CONNS need=$(( ($1 * 32 + 9999) / 10000 ))
  [ "$SCALE_CONNS" = 1 ] && [ "$need" -gt "$c" ] && c=$need
  echo "$c"
}
# The same limit for h2, whose open loop paces each stream slot: warn only.
for rate in $RATES; do
  if [ $(( rate * 32 )) -gt $(( H2_CONNS * STREAMS * 10000 )) ]; then
    echo "warning: h2 at $rate/s: $((H2_CONNS * STREAMS)) stream slots send more often than every 3.2 ms each; raise STREAMS or H2_CONNS" >&2
  fi
done

# cpu_stat <cpu>: that CPU's "busy idle steal" jiffies from /proc/stat (busy: user, nice,
# system, irq, softirq; idle: idle and iowait).
cpu_stat() {
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $5 + $6, $9}' /proc/stat
}
# busy_pct <before> <after>: busy and stolen time as % of the interval ("busy steal").
busy_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    split(a, x, " "); split(b, y, " ");
    t = (y[1] - x[1]) + (y[2] - x[2]) + (y[3] - x[3]); if (t <= 0) t = 1;
    printf "%.0f %.0f\n", (y[1] - x[1]) * 100 / t, (y[3] - x[3]) * 100 / t }'
}

# run <rep> <kind> <rate> <target>: one open-loop run; appends
# "rep kind rate target p50 p99 p999 cpu_us_per_req errors ops conns load_busy proxy_busy steal"
# to $tmp/raw (conns: http connections, or h2 connections x streams; load_busy, proxy_busy:
# % of the load CPU and of the proxy CPU busy over the run, whoever used them, softirq
# included; steal: % of both CPUs' time the hypervisor gave to others).
run() {
  local rep=$1 kind=$2 rate=$3 target=$4 p pid=- c0=0 c1=0 out args l0 l1 x0 x1
  p=$(port "$kind" "$target")
  [ "$target" = sidewire ] && pid=$SW_PID
  [ "$target" = haproxy ] && pid=$HA_PID
  if [ "$kind" = http1 ]; then
    args=(http --target "127.0.0.1:$p" --connections "$(http_conns "$rate")")
  else
    args=(h2 --target "127.0.0.1:$p" --connections "$H2_CONNS" --streams "$STREAMS")
  fi
  args+=(--rate "$rate" --duration "$SECS" --warmup "$WARMUP" --max-error-rate 100)
  [ "$pid" != - ] && c0=$(cpu_ticks "$pid")
  l0=$(cpu_stat "$LOAD_CPU"); x0=$(cpu_stat "$PROXY_CPU")
  out=$(taskset -c "$LOAD_CPU" timeout "$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN{printf "%d", s + w + 60}')" "$LT" "${args[@]}" 2>&1) || true
  [ "$pid" != - ] && c1=$(cpu_ticks "$pid")
  l1=$(cpu_stat "$LOAD_CPU"); x1=$(cpu_stat "$PROXY_CPU")
  local lb ls xb xs
  read -r lb ls < <(busy_pct "$l0" "$l1")
  read -r xb xs < <(busy_pct "$x0" "$x1")
  local line ops errs p50 p99 p999
  line=$(grep -E '^(http1|h2) ops=' <<<"$out" | head -1 || true)
  if [ -z "$line" ]; then
    echo "warning: $kind $target at $rate/s: no result from loadtest: $(tr '\n' ' ' <<<"$out" | cut -c1-300)" >&2
    return
  fi
  ops=$(sed -nE 's/.* ops=([0-9]+).*/\1/p' <<<"$line"); errs=$(sed -nE 's/.* errors=([0-9]+).*/\1/p' <<<"$line")
  p50=$(sed -nE 's/.* p50=([0-9]+)us.*/\1/p' <<<"$line"); p99=$(sed -nE 's/.* p99=([0-9]+)us.*/\1/p' <<<"$line")
  p999=$(sed -nE 's/.* p99\.9=([0-9]+)us.*/\1/p' <<<"$line")
  [ "${errs:-1}" = 0 ] || echo "warning: $kind $target at $rate/s (rep $rep): ${errs:-?} errors" >&2
  local cpu=-
  if [ "$pid" != - ] && [ "${ops:-0}" -gt 0 ]; then
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$ops" -v s="$SECS" -v w="$WARMUP" \
      'BEGIN{printf "%.2f", (b-a)/t*1e6/(n*(s+w)/s)}')
  fi
  local conns="$H2_CONNS"x"$STREAMS"
  [ "$kind" = http1 ] && conns=$(http_conns "$rate")
  echo "$rep $kind $rate $target $p50 $p99 $p999 $cpu ${errs:-0} ${ops:-0} $conns $lb $xb $(( (ls + xs) / 2 ))" >> "$tmp/raw"
}

: > "$tmp/raw"
order=(baseline sidewire haproxy)
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS ..." >&2
  for kind in $KINDS; do
    for rate in $RATES; do
      for i in 0 1 2; do
        run "$rep" "$kind" "$rate" "${order[$(( (i + rep - 1) % 3 ))]}"
      done
    done
  done
done
if [ -n "${RAW_OUT:-}" ]; then cp "$tmp/raw" "$RAW_OUT"; fi

echo
echo "# bench-latency $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo -) kernel $(uname -r) $(haproxy -v | head -1 | cut -d' ' -f1-3)"
echo "# knobs: KINDS='$KINDS' RATES='$RATES' SECS=$SECS WARMUP=$WARMUP REPS=$REPS CONNS=$CONNS SCALE_CONNS=$SCALE_CONNS H2_CONNS=$H2_CONNS STREAMS=$STREAMS BODY=$BODY driver=${SW_DRIVER:-auto}; proxy on CPU $PROXY_CPU, load+backends on CPU $LOAD_CPU"
echo "# added = target percentile - baseline percentile of the same rep; median over reps [min..max]; µs"
python3 - "$tmp/raw" "$KINDS" "$RATES" <<'PY'
import sys
from collections import defaultdict

raw, kinds, rates = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = defaultdict(dict)  # (kind, rate) -> rep -> target -> row
for line in open(raw):
    f = line.split()
    if len(f) != 14:
        continue
    rep, kind, rate, target = f[:4]
    runs[(kind, rate)].setdefault(rep, {})[target] = {
        "p50": int(f[4]), "p99": int(f[5]), "p999": int(f[6]),
        "cpu": None if f[7] == "-" else float(f[7]), "errors": int(f[8]), "ops": int(f[9]), "conns": f[10],
        "load_busy": int(f[11]), "proxy_busy": int(f[12]), "steal": int(f[13]),
    }

def median(xs):
    xs = sorted(xs)
    return xs[(len(xs) - 1) // 2] if xs else None  # the lower middle, as bench-lib's median

def fmt(x, digits=0):
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if digits else str(int(round(x)))

hdr = f"{'kind':6} {'rate':>6} {'target':9} {'p50':>6} {'p99':>7} {'p99.9':>7}  {'+p50 [min..max]':>20} {'+p99 [min..max]':>22} {'+p99.9 [min..max]':>24} {'CPU-us/req':>10} {'errors':>6} {'conns':>6} {'load%':>5} {'proxy%':>6} {'steal%':>6}"
print(hdr)
results, warn = [], []
for kind in kinds:
    for rate in rates:
        reps = runs.get((kind, rate), {})
        for target in ("baseline", "sidewire", "haproxy"):
            rows = [r[target] for r in reps.values() if target in r]
            if not rows:
                continue
            abs_ = {q: median([r[q] for r in rows]) for q in ("p50", "p99", "p999")}
            add = {}
            for q in ("p50", "p99", "p999"):
                if target == "baseline":
                    add[q] = (None, None, None)
                    continue
                d = [r[target][q] - r["baseline"][q] for r in reps.values() if target in r and "baseline" in r]
                add[q] = (median(d), min(d), max(d)) if d else (None, None, None)
            busy = {k: median([r[k] for r in rows]) for k in ("load_busy", "proxy_busy", "steal")}
            if busy["load_busy"] >= 90:
                warn.append(f"warning: {kind} {target} at {rate}/s: the load CPU was {busy['load_busy']}% busy (median): the generator and backends, not the target, may set the tail")
            cpus = [r["cpu"] for r in rows if r["cpu"] is not None]
            cpu = median(cpus)
            errors = sum(r["errors"] for r in rows)
            if errors:
                warn.append(f"warning: {kind} {target} at {rate}/s: {errors} errors over {len(rows)} reps")
            def a(q, w):
                m, lo, hi = add[q]
                return f"{'-':>{w}}" if m is None else f"{m:>+7d} [{lo:+d}..{hi:+d}]".rjust(w)
            print(f"{kind:6} {rate:>6} {target:9} {abs_['p50']:>6} {abs_['p99']:>7} {abs_['p999']:>7}  {a('p50', 20)} {a('p99', 22)} {a('p999', 24)} {fmt(cpu, 2):>10} {errors:>6} {rows[0]['conns']:>6} {busy['load_busy']:>5} {busy['proxy_busy']:>6} {busy['steal']:>6}")
            kv = [f"bench=latency", f"kind={kind}", f"rate={rate}", f"proxy={target}",
                  f"p50_us={abs_['p50']}", f"p99_us={abs_['p99']}", f"p999_us={abs_['p999']}"]
            for q in ("p50", "p99", "p999"):
                m, lo, hi = add[q]
                kv += [f"add_{q}_us={fmt(m)}", f"add_{q}_min={fmt(lo)}", f"add_{q}_max={fmt(hi)}"]
            kv += [f"cpu_us_per_req={fmt(cpu, 2)}", f"errors={errors}", f"reps={len(rows)}", f"conns={rows[0]['conns']}"]
            kv += [f"load_cpu_busy_pct={busy['load_busy']}", f"proxy_cpu_busy_pct={busy['proxy_busy']}", f"steal_pct={busy['steal']}"]
            results.append("RESULT " + " ".join(kv))
for w in warn:
    print(w)
    print(w, file=sys.stderr)
print()
print("\n".join(results))
PY
