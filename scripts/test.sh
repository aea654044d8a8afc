#!/usr/bin/env bash
# Runs the whole test suite:
#   1. scripts/setup-test-deps.sh (venv + pinned Python deps, s3s-fs 0.14.1,
#      Chromium + playwright-core for the admin UI tests)
#   2. cargo build --locked            (dev profile; target/debug/pixelport)
#   3. cargo test --locked             (Rust unit + integration tests)
#   4. pytest tests/python -q          (black-box tests against the binary)
# Exits non-zero when any step fails. pytest runs last, so its closing
# "N passed" line is the last runner output. Extra arguments go to pytest.
# Env: PIXELPORT_CACHE (see setup-test-deps.sh), CARGO_TARGET_DIR,
#      PIXELPORT_CARGO_TEST_TIMEOUT / PIXELPORT_PYTEST_TIMEOUT (seconds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${PIXELPORT_CACHE:-$HOME/.cache/pixelport}"
export PIXELPORT_CACHE="$CACHE"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

step() { printf '\n==> [test.sh] %s\n' "$*"; }
fail() { printf '\n[test.sh] FAILED: %s\n' "$*" >&2; exit 1; }

# CI builds once from a cold cache: incremental state would only cost disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi
echo "[test.sh] disk free in $(dirname "$TARGET_DIR"): $(df -h "$(dirname "$TARGET_DIR")" | awk 'NR==2 {print $4}')"

step "installing test dependencies"
bash "$ROOT/scripts/setup-test-deps.sh" || fail "scripts/setup-test-deps.sh"
# shellcheck disable=SC1091
. "$CACHE/test-deps.env" # VENV, S3S_FS_BIN
[ -x "$VENV/bin/python" ] || fail "no python in venv $VENV"
[ -x "$S3S_FS_BIN" ] || fail "s3s-fs not executable: $S3S_FS_BIN"

LOCKED=(--locked)
if [ ! -f "$ROOT/Cargo.lock" ]; then
    echo "[test.sh] WARNING: no Cargo.lock; building without --locked" >&2
    LOCKED=()
fi

step "cargo build ${LOCKED[*]}"
cargo build "${LOCKED[@]}" || fail "cargo build"
PIXELPORT_BIN="$TARGET_DIR/debug/pixelport"
[ -x "$PIXELPORT_BIN" ] || fail "cargo build produced no $PIXELPORT_BIN"

step "cargo test ${LOCKED[*]}"
timeout --kill-after=30 "${PIXELPORT_CARGO_TEST_TIMEOUT:-1800}" \
    cargo test "${LOCKED[@]}" || fail "cargo test (exit $?)"

step "pytest tests/python"
export PIXELPORT_BIN S3S_FS_BIN
export PATH="$VENV/bin:$PATH" # so `aws` and friends are the venv's
export PYTHONDONTWRITEBYTECODE=1
rc=0
timeout --kill-after=30 "${PIXELPORT_PYTEST_TIMEOUT:-2400}" \
    "$VENV/bin/python" -m pytest tests/python -q "$@" || rc=$?
case "$rc" in
    0) ;;
    5) fail "pytest collected no tests (exit 5)" ;;
    124 | 137) fail "pytest timed out after ${PIXELPORT_PYTEST_TIMEOUT:-2400}s" ;;
    *) fail "pytest (exit $rc)" ;;
esac
