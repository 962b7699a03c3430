#!/usr/bin/env bash
# Fails on any import cycle between files or import up the layering in src/lib.rs
# (`# Layers`). See scripts/check-layers.py --help; `--graph` prints the edges.
exec python3 "$(dirname "$0")/check-layers.py" "$@"
