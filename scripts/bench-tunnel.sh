#!/usr/bin/env bash
# Tunnel benchmark (issue "The tunnel", Benchmark): cache-hit image requests with wrk at 64
# connections and a 256 MiB download, through four paths measured in one run on loopback:
# direct (plain HTTP to the appliance), edge + tunnel (HTTPS to `pixelport edge`, QUIC to
# 2 appliances x 4 connections), nginx as a TLS reverse proxy (no tunnel hop), and rathole
# 0.5 with its noise transport. Prints a Markdown table with the ratios the issue targets
# and the edge's peak RSS; saves it as target/bench-tunnel/report.md (and raw.json).
#
#   scripts/bench-tunnel.sh [--no-build]
#
# Steps: apt installs nginx-light, wrk and curl when missing (scripts/install-build-deps.sh);
# `cargo install rathole --version 0.5.0` into ${PIXELPORT_CACHE:-~/.cache/pixelport}/rathole
# when missing (without --locked: its lock file predates rustc 1.95); the test venv
# (scripts/setup-test-deps.sh) for boto3 and requests; `cargo build --release` unless
# PIXELPORT_BIN is set or --no-build is given; then benches/tunnel_bench.py.
#
# Env knobs: PIXELPORT_BIN, BENCH_CONNECTIONS [64], BENCH_DURATION [10s], BENCH_ROUNDS [3],
# BENCH_BIG_MIB [256], BENCH_PHOTO, RATHOLE, WRK, NGINX, BENCH_OUT.
# wrk, the servers and the tunnels share the machine's cores; numbers move with whatever
# else runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${PIXELPORT_CACHE:-$HOME/.cache/pixelport}"
log() { printf 'bench-tunnel: %s\n' "$*" >&2; }

build=1
[ "${1:-}" = "--no-build" ] && build=0

bash "$ROOT/scripts/install-build-deps.sh" nginx-light wrk curl >&2

if [ -z "${RATHOLE:-}" ]; then
    RATHOLE="$CACHE/rathole/bin/rathole"
    if ! "$RATHOLE" --version 2>/dev/null | grep -q '0\.5\.0'; then
        log "rathole 0.5.0 not found; cargo install (a few minutes)"
        cargo install rathole --version 0.5.0 --root "$CACHE/rathole"
    fi
fi
export RATHOLE

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
log "pixelport: $PIXELPORT_BIN; rathole: $RATHOLE"
exec "$CACHE/venv/bin/python" "$ROOT/benches/tunnel_bench.py"
