#!/usr/bin/env bash
# Fuzz targets, run long: tests/fuzz_targets.rs (and the admin API's private request
# bodies, fuzzed in src/admin/api.rs) with many cases, in the release profile.
#
#   scripts/fuzz.sh [--cases N] [--target NAME] [--seed SEED] [--debug] [--no-lib]
#                   [-- TEST_ARGS...]
#
# `cargo test --test fuzz_targets` runs the same targets briefly (a few hundred to two
# thousand cases each); this runs N cases of each (PROPTEST_CASES, default 100000).
# The decoder target is the slow one (a few ms a case); the parsers take microseconds, so
# 100000 cases of everything take a few minutes once built (the first release build of
# the test binaries takes a while). docs/fuzzing.md says what each target checks.
#
# Options:
#   --cases N      cases per target (default 100000)
#   --target NAME  only the targets whose test name contains NAME: url, options,
#                  signature, geometry, decoders, admin, or a whole test name
#   --seed SEED    replay a run: every target prints its PROPTEST_RNG_SEED, and a
#                  failure shows it with the minimal failing input
#   --debug        the debug profile, as `cargo test` (slower, overflow checks on)
#   --no-lib       skip the admin body targets of the library's unit tests (they
#                  need a test build of the whole library)
# TEST_ARGS go to the test binaries (e.g. -- --nocapture to see each target's seed
# and the dependency panics that `decode` turned into errors).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CASES=100000
TARGET=""
SEED=""
PROFILE=(--release)
LIB=1
TEST_ARGS=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[fuzz] %s\n' "$*" >&2; }
die() { printf '[fuzz] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES="${2:?--cases needs a value}"; shift 2 ;;
        --target) TARGET="${2:?--target needs a value}"; shift 2 ;;
        --seed) SEED="${2:?--seed needs a value}"; shift 2 ;;
        --debug) PROFILE=(); shift ;;
        --no-lib) LIB=0; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; TEST_ARGS=("$@"); break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[[ "$CASES" =~ ^[0-9]+$ ]] && [ "$CASES" -gt 0 ] || die "--cases must be a positive number"
[ -z "$SEED" ] || [[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a number"
[ -d "$ROOT/../shared/images" ] || die "the decoder targets need the test images in ../shared/images"

export PROPTEST_CASES="$CASES"
if [ -n "$SEED" ]; then
    export PROPTEST_RNG_SEED="$SEED"
fi

LOCKED=(--locked)
[ -f "$ROOT/Cargo.lock" ] || LOCKED=()

FILTER=()
[ -z "$TARGET" ] || FILTER=("$TARGET")

start=$SECONDS
log "tests/fuzz_targets.rs: $CASES cases per target${TARGET:+, targets matching '$TARGET'}${SEED:+, seed $SEED}"
cargo test "${LOCKED[@]}" "${PROFILE[@]}" --test fuzz_targets -- --test-threads=2 \
    ${FILTER[@]+"${FILTER[@]}"} ${TEST_ARGS[@]+"${TEST_ARGS[@]}"}

# The private admin bodies live in the library's unit tests (admin::api is private).
if [ "$LIB" -eq 1 ] && { [ -z "$TARGET" ] || [[ "admin" == *"$TARGET"* ]] || [[ "$TARGET" == admin* ]]; }; then
    log "src/admin/api.rs: the private request bodies and query parameters"
    cargo test "${LOCKED[@]}" "${PROFILE[@]}" --lib admin::api::tests -- --test-threads=2 \
        ${TEST_ARGS[@]+"${TEST_ARGS[@]}"}
fi

log "done in $((SECONDS - start)) s"
