# Shared by the bench-*.sh scripts (sourced, not run): tool checks, the release build,
# process cleanup, waiting for ports, the proxy's CPU ticks and medians.
# Expects `root` (the repository) and `name` (the script's name for messages) to be set.

# need <apt hint> <tool>...: fail with the install hint when a tool is missing.
need() {
  local hint=$1; shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: '$tool' not found ($hint)" >&2; exit 1; }
  done
}

# build: the release sidewire and loadtest binaries, as $SW and $LT (in $CARGO_TARGET_DIR when
# set, as cargo puts them). SW_BIN=<path> measures another sidewire binary instead (an
# earlier commit's, to compare before and after).
# SW_DRIVER=io_uring|epoll|auto (default auto) sets sidewire's runtime.driver, to measure the
# epoll fallback beside io_uring.
build() {
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p sidewire -p loadtest
  local out=${CARGO_TARGET_DIR:-$root/target}
  SW="${SW_BIN:-$out/release/sidewire}"
  LT="$out/release/loadtest"
}

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# wait_ports <port>...: until each accepts a connection (5 s at most each).
# Then each port must be served only by processes this script started (listed in `pids`): a
# server left over from an earlier run that shares the port (SO_REUSEPORT) or holds it would
# take the load, and the CPU read from our PID would be wrong (it happened: a stray sidewire on
# bench-http1's port made its CPU per request read 0.00).
wait_ports() {
  local port o owners
  for port in "$@"; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
    command -v ss >/dev/null || continue
    owners=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
    for o in $owners; do
      if ! printf '%s\n' "${pids[@]}" | grep -qx "$o"; then
        echo "$name: port $port is also served by PID $o ($(tr '\0\n' '  ' </proc/"$o"/cmdline 2>/dev/null | cut -c1-80)), which this script did not start: stop it, or move this script's ports with BASE_PORT" >&2
        exit 1
      fi
    done
  done
}

TCK=$(getconf CLK_TCK)
# cpu_ticks <pid>: CPU time of the process (all threads) in clock ticks (1/$TCK s), with
# nanosecond resolution: the sum of each thread's time on CPU from /proc/<pid>/task/*/schedstat.
# (/proc/<pid>/stat counts whole ticks, 10 ms each: a 64 MiB body moved at 0.3 CPU-s/GiB is
# two of them, too coarse for a 1.1x goal.) The proxies' threads live as long as the process,
# so no CPU time leaves the sum between two readings. Without schedstat: /proc/<pid>/stat.
cpu_ticks() {
  if [ -r "/proc/$1/schedstat" ]; then
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk -v t="$TCK" '{ns += $1} END {printf "%.4f\n", ns * t / 1e9}'
  else
    awk '{print $14+$15}' "/proc/$1/stat"
  fi
}
# median: of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
