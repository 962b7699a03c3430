#!/usr/bin/env bash
# Added latency of one transparent outbound hop, in network namespaces this script creates
# (and deletes on exit): a "pod" with `sidewire init`'s rules and sidewire (config/sidecar.toml,
# UID 2102), a "peer" with the loadtest HTTP/1.1 server and greeter, joined by a veth with
# 198.18.0.1/24 and 198.18.0.2/24 on it only. The app runs as UID 2103 (intercepted); the same
# client as UID 2102 is exempt from interception: the direct baseline, same path otherwise.
# Runs alternate direct / through sidewire, REPS times each.
#   HTTP/1 keep-alive: loadtest http, open loop at RATE req/s over CONNS connections, SECS s.
#   Server first: loadtest first-byte (connect → first greeting byte), COUNT connects.
# Needs root, iproute2, nftables, util-linux (setpriv). Knobs: REPS RATE CONNS SECS COUNT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=bench-sidecar
source "$root/scripts/bench-lib.sh"
need "apt-get install iproute2" ip
need "apt-get install nftables" nft
need "apt-get install util-linux" setpriv
REPS=${REPS:-3} RATE=${RATE:-2000} CONNS=${CONNS:-8} SECS=${SECS:-5} COUNT=${COUNT:-2000}

build
install -m 0755 "$SW" "$tmp/sidewire"
install -m 0755 "$LT" "$tmp/loadtest"
install -m 0644 "$root/config/sidecar.toml" "$tmp/sidecar.toml"
chmod 0755 "$tmp"
pod=swbench$$pod peer=swbench$$peer
cleanup_ns() { cleanup; ip netns del "$pod" 2>/dev/null || true; ip netns del "$peer" 2>/dev/null || true; }
trap cleanup_ns EXIT
ip netns add "$pod"; ip netns add "$peer"
ip -n "$pod" link add eth0 type veth peer name eth0 netns "$peer"
for ns in "$pod:198.18.0.1" "$peer:198.18.0.2"; do
  n=${ns%%:*} a=${ns#*:}
  ip -n "$n" link set lo up; ip -n "$n" link set eth0 up; ip -n "$n" addr add "$a/24" dev eth0
done
in_pod() { ip netns exec "$pod" "$@"; }
as() { local uid=$1; shift; in_pod setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }

in_pod "$tmp/sidewire" init --proxy-uid 2102
as 2102 "$tmp/sidewire" --config "$tmp/sidecar.toml" 2>"$tmp/sidewire.log" & pids+=($!)
ip netns exec "$peer" "$LT" http-server --listen 198.18.0.2:8080 >/dev/null 2>&1 & pids+=($!)
ip netns exec "$peer" "$LT" greeter --listen 198.18.0.2:2525 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q 'admin listening' "$tmp/sidewire.log" && break; sleep 0.05; done
for port in 8080 2525; do
  for _ in $(seq 100); do as 2102 bash -c "exec 3<>/dev/tcp/198.18.0.2/$port" 2>/dev/null && break; sleep 0.05; done
done

for rep in $(seq "$REPS"); do
  for who in direct:2102 sidewire:2103; do
    label=${who%%:*} uid=${who#*:}
    echo "== rep $rep, $label: HTTP/1 keep-alive, $RATE req/s, $CONNS conns, ${SECS}s"
    as "$uid" "$tmp/loadtest" http --target 198.18.0.2:8080 --connections "$CONNS" --rate "$RATE" --duration "$SECS" --max-error-rate 100 2>&1 | tail -n 3
    echo "== rep $rep, $label: server-first greeting, $COUNT connects"
    as "$uid" "$tmp/loadtest" first-byte --target 198.18.0.2:2525 --count "$COUNT" --max-error-rate 100 2>&1 | tail -n 3
  done
done
echo "== sidewire's view (outbound listener)"
in_pod bash -c 'exec 3<>/dev/tcp/127.0.0.1/4191; printf "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" >&3; cat <&3' \
  | grep -E '^(request_total|tcp_detect_total)\{listener="outbound".*\} [1-9]'
