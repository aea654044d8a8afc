#!/usr/bin/env bash
# Edge cache benchmark (issue "The edge as a CDN", Benchmark): edge cache hits against
# nginx proxy_cache hits for the same ~30 KB image (HTTPS on both, 64 connections), and a
# miss through the edge against the tunnel path with the cache bypassed (the same new URL
# per request; 1 connection, 64 paced, 64 flat out), in one run on loopback. Prints a
# Markdown table with the ratios the issue targets; saves it as
# target/bench-edge-cache/report.md.
#
#   scripts/bench-edge-cache.sh [--no-build]
#
# Steps: apt installs nginx-light, wrk and curl when missing; the test venv
# (scripts/setup-test-deps.sh); `cargo build --release` unless PIXELPORT_BIN is set or
# --no-build is given; then benches/edge_cache_bench.py.
#
# Env knobs: PIXELPORT_BIN, BENCH_CONNECTIONS [64], BENCH_DURATION [10s], BENCH_ROUNDS [3],
# WRK, NGINX, BENCH_OUT, BENCH_EDGE_CACHE (the edge's [edge.cache] table, as TOML; default
# 256 MiB memory and 1 GiB disk), BENCH_PACE_MS [20] (the pause between one connection's
# requests in the paced miss and tunnel runs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${PIXELPORT_CACHE:-$HOME/.cache/pixelport}"
log() { printf 'bench-edge-cache: %s\n' "$*" >&2; }

build=1
[ "${1:-}" = "--no-build" ] && build=0

bash "$ROOT/scripts/install-build-deps.sh" nginx-light wrk curl >&2
[ -x "$CACHE/venv/bin/python" ] || bash "$ROOT/scripts/setup-test-deps.sh" >&2

if [ -z "${PIXELPORT_BIN:-}" ]; then
    target="${CARGO_TARGET_DIR:-$ROOT/target}"
    if [ "$build" = 1 ]; then
        log "cargo build --release"
        cargo build --release --locked >&2
    fi
    PIXELPORT_BIN="$target/release/pixelport"
fi
export PIXELPORT_BIN
log "pixelport: $PIXELPORT_BIN"
exec "$CACHE/venv/bin/python" "$ROOT/benches/edge_cache_bench.py"
