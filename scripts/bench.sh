#!/usr/bin/env bash
# The load-test suite: baseline vs sidewire vs installed peers (HAProxy, nginx).
#   scripts/bench.sh            # full suite (15 s per timed scenario, a few minutes)
#   scripts/bench.sh --quick    # under 2 minutes
# Extra flags go to `loadtest suite` (see `cargo run --release -p loadtest -- suite --help`).
# Peers are optional: install them with `apt-get install haproxy nginx libnginx-mod-stream`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p loadtest -- suite "$@"
