#!/usr/bin/env bash
# Runs the cargo-fuzz targets (classify, client_hello, http1_head) for SECS seconds each.
# The machine's toolchain is stable; cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1
# unlocks on stable. Installs cargo-fuzz if missing.
set -euo pipefail
SECS=${SECS:-60}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for t in classify client_hello http1_head; do
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$SECS"
done
