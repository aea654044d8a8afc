#!/usr/bin/env bash
# The 10-minute mixed soak (issue #10): S3 small and large PUT/GET, image misses and hits,
# and a slow-loris population against one release daemon; see docs/benchmarks-soak.md.
#
#   scripts/soak.sh [--no-build] [--out DIR] [-- SOAK_ARGS...]
#
# Builds target/release/pixelport (cargo build --release --locked) unless --no-build or
# PIXELPORT_BIN is set, finds the test venv's python through
# ${PIXELPORT_CACHE:-~/.cache/pixelport}/test-deps.env (running scripts/setup-test-deps.sh
# when it is missing), and runs benches/soak.py with SOAK_ARGS (e.g. --duration 60,
# --small-workers 8, --loris 200, --rss-bound-mib 600; see `benches/soak.py --help`).
# The report goes to stdout and to DIR/soak-<UTC time>.md, the JSON beside it, the daemon's
# work dir to DIR/run (its data is removed after a PASS, kept after a FAIL).
# DIR defaults to target/soak. Exit code: benches/soak.py's (0 PASS, 1 FAIL, 2 could not run).
# Env: PIXELPORT_BIN (a prebuilt daemon), PIXELPORT_CACHE, PYTHON (an interpreter with
# boto3, requests and pillow, instead of the venv's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="$ROOT/target/soak"
BUILD=1
SOAK_ARGS=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[soak] %s\n' "$*" >&2; }
die() { printf '[soak] ERROR: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; SOAK_ARGS=("$@"); break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# ---------------------------------------------------------------- binary
LOCKED=(--locked)
[ -f "$ROOT/Cargo.lock" ] || LOCKED=()
PIXELPORT="${PIXELPORT_BIN:-$ROOT/target/release/pixelport}"
if [ "$BUILD" -eq 1 ] && [ -z "${PIXELPORT_BIN:-}" ]; then
    log "building pixelport (release)"
    cargo build --release "${LOCKED[@]}" --bin pixelport
fi
[ -x "$PIXELPORT" ] || die "no pixelport binary at $PIXELPORT (build it, or drop --no-build)"

# ---------------------------------------------------------------- python
CACHE="${PIXELPORT_CACHE:-$HOME/.cache/pixelport}"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
else
    if [ ! -f "$CACHE/test-deps.env" ]; then
        log "no $CACHE/test-deps.env; running scripts/setup-test-deps.sh"
        bash "$ROOT/scripts/setup-test-deps.sh"
    fi
    VENV=""
    # shellcheck disable=SC1091 # written by scripts/setup-test-deps.sh
    . "$CACHE/test-deps.env"
    [ -n "$VENV" ] || die "$CACHE/test-deps.env sets no VENV; run scripts/setup-test-deps.sh"
    PY="$VENV/bin/python"
fi
[ -x "$PY" ] || command -v "$PY" >/dev/null || die "no python at $PY"
"$PY" -c 'import boto3, requests, PIL' 2>/dev/null ||
    die "$PY lacks boto3/requests/pillow; run scripts/setup-test-deps.sh"

# ---------------------------------------------------------------- run
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
REPORT="$OUT/soak-$STAMP.md"
JSON="$OUT/soak-$STAMP.json"
log "running benches/soak.py with $PIXELPORT (report: $REPORT)"
rc=0
"$PY" "$ROOT/benches/soak.py" --bin "$PIXELPORT" --data-dir "$OUT/run" --json "$JSON" \
    "${SOAK_ARGS[@]}" | tee "$REPORT" || rc=${PIPESTATUS[0]}
{
    echo
    echo "machine: $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2 " MiB RAM"}'), $(uname -r); binary $PIXELPORT; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | tee -a "$REPORT"
log "report: $REPORT, JSON: $JSON"
exit "$rc"
