#!/usr/bin/env bash
# S3 benchmark: Pixelport against s3s-fs 0.14.1 on the same disk, in one run.
#
#   scripts/bench-s3.sh [--data-dir DIR] [--targets pixelport,s3s-fs] [--no-build]
#                       [--keep] [--clean] [--json PATH] [--sse] [-- BENCH_ARGS...]
#
# Measures, for each server: 64 MiB PUT and GET MiB/s (a few sequential
# objects) and 4 KiB PUT and GET ops/s with 16 concurrent keep-alive clients
# (5 s each, bounded), plus the raw read speed of a 1 GiB file with dd on the
# same filesystem as the ceiling; prints a Markdown table (also saved under
# DIR/logs/). BENCH_ARGS go to benches/s3_bench.rs (e.g. --small-secs 10,
# --large-count 8, --concurrency 32; see its --help). With --sse, the same Pixelport is
# measured a second time as `pixelport-sse`, on a bucket with default encryption
# (SSE-S3: every object encrypted at rest), beside the plain runs.
#
# Everything listens on and talks to 127.0.0.1 only; both servers are stopped
# on exit. Env: BENCH_DATA_DIR (default ./target/bench-data), PIXELPORT_BIN
# (default target/release/pixelport, built unless --no-build), S3S_FS_BIN
# (default: the s3s-fs 0.14.1 that scripts/setup-test-deps.sh installs),
# S3_BENCH_BIN (a prebuilt s3_bench binary instead of `cargo bench`),
# BENCH_RUST_LOG (RUST_LOG for both servers, default warn).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DATA="${BENCH_DATA_DIR:-$ROOT/target/bench-data}"
TARGETS="pixelport,s3s-fs"
BUILD=1
KEEP=0
CLEAN=0
JSON=""
SSE=0
BENCH_ARGS=()
AK="benchak"
SK="benchsecretkey0123456789"
S3S_FS_VERSION="0.14.1"
DD_MIB=1024

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[bench-s3] %s\n' "$*" >&2; }
die() { printf '[bench-s3] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA="${2:?--data-dir needs a value}"; shift 2 ;;
        --targets) TARGETS="${2:?--targets needs a value}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --clean) CLEAN=1; shift ;;
        --json) JSON="${2:?--json needs a value}"; shift 2 ;;
        --sse) SSE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

want() { case ",$TARGETS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
want pixelport || want s3s-fs || die "--targets must name pixelport and/or s3s-fs"
mkdir -p "$DATA/logs"
DATA="$(cd "$DATA" && pwd)"
LOGS="$DATA/logs"

LOCKED=(--locked)
[ -f "$ROOT/Cargo.lock" ] || LOCKED=()

# ---------------------------------------------------------------- binaries
if want s3s-fs; then
    S3S_FS=""
    for c in "${S3S_FS_BIN:-}" "${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/s3s-fs" \
        "$(command -v s3s-fs 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" --version 2>/dev/null | grep -qx "s3s-fs $S3S_FS_VERSION"; then
            S3S_FS="$c"
            break
        fi
    done
    [ -n "$S3S_FS" ] || die "s3s-fs $S3S_FS_VERSION not found; run scripts/setup-test-deps.sh (or set S3S_FS_BIN)"
fi

if want pixelport; then
    PIXELPORT="${PIXELPORT_BIN:-$ROOT/target/release/pixelport}"
    if [ "$BUILD" -eq 1 ] && [ -z "${PIXELPORT_BIN:-}" ]; then
        log "building pixelport (release)"
        cargo build --release "${LOCKED[@]}" --bin pixelport
    fi
    [ -x "$PIXELPORT" ] || die "no pixelport binary at $PIXELPORT"
fi

BENCH_CMD=()
if [ -n "${S3_BENCH_BIN:-}" ]; then
    [ -x "$S3_BENCH_BIN" ] || die "S3_BENCH_BIN=$S3_BENCH_BIN is not executable"
    BENCH_CMD=("$S3_BENCH_BIN")
else
    log "building benches/s3_bench.rs (cargo bench --no-run)"
    build_log="$LOGS/bench-build.log"
    if ! cargo bench "${LOCKED[@]}" --bench s3_bench --no-run >"$build_log" 2>&1; then
        cat "$build_log" >&2
        die "cargo bench --no-run failed (is the [[bench]] entry in Cargo.toml?)"
    fi
    exe="$(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' "$build_log" | tail -n1)"
    if [ -n "$exe" ] && [ -x "$exe" ]; then
        BENCH_CMD=("$exe" --bench)
    else
        BENCH_CMD=(cargo bench "${LOCKED[@]}" --bench s3_bench --)
    fi
fi

# ---------------------------------------------------------------- cleanup
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
PIDS=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    stop_pids "${PIDS[@]}"
    if [ "$KEEP" -eq 0 ]; then
        rm -rf "$DATA/pixelport" "$DATA/s3s-fs"
    fi
    if [ "$CLEAN" -eq 1 ]; then
        rm -f "$DATA/dd-1GiB.bin"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- disk space
need_mib=$((DD_MIB + 1536))
avail_mib="$(df -Pm "$DATA" | awk 'NR==2 {print $4}')"
if [ -n "$avail_mib" ] && [ "$avail_mib" -lt "$need_mib" ]; then
    die "only ${avail_mib} MiB free under $DATA; need about ${need_mib} MiB"
fi

# ---------------------------------------------------------------- dd ceiling
DD_FILE="$DATA/dd-1GiB.bin"
dd_mibs() { # dd args... -> MiB/s on stdout, or nothing
    LC_ALL=C dd "$@" 2>&1 >/dev/null | awk '
        / copied, / { for (i = 1; i <= NF; i++) if ($i == "copied,") s = $(i + 1); b = $1 }
        END { if (s > 0) printf "%.1f\n", b / s / 1048576 }'
}

if [ "$(stat -c %s "$DD_FILE" 2>/dev/null || echo 0)" -ne $((DD_MIB * 1048576)) ]; then
    log "writing the ${DD_MIB} MiB dd test file $DD_FILE"
    dd if=/dev/urandom of="$DD_FILE" bs=4M count=$((DD_MIB / 4)) iflag=fullblock conv=fsync status=none
fi
sync "$DD_FILE" 2>/dev/null || sync

DD_COLD=""
DD_COLD_HOW=""
DROP_CACHES=0
if [ "$(id -u)" -eq 0 ] && sync && (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    DD_COLD_HOW="echo 3 > /proc/sys/vm/drop_caches"
    DROP_CACHES=1
elif dd if="$DD_FILE" iflag=nocache count=0 status=none 2>/dev/null; then
    # posix_fadvise(DONTNEED) on the whole file: works without root.
    DD_COLD_HOW="dd iflag=nocache (fadvise DONTNEED on the file)"
fi
if [ -n "$DD_COLD_HOW" ]; then
    DD_COLD="$(dd_mibs if="$DD_FILE" of=/dev/null bs=4M)"
fi
DD_DIRECT="$(dd_mibs if="$DD_FILE" of=/dev/null bs=4M iflag=direct || true)"
dd if="$DD_FILE" of=/dev/null bs=4M status=none # warm the page cache
DD_CACHED="$(dd_mibs if="$DD_FILE" of=/dev/null bs=4M)"
log "dd read of ${DD_MIB} MiB: cold=${DD_COLD:-n/a} MiB/s (${DD_COLD_HOW:-cache could not be dropped}), O_DIRECT=${DD_DIRECT:-n/a} MiB/s, cached=${DD_CACHED:-n/a} MiB/s"

# ---------------------------------------------------------------- servers
export RUST_LOG="${BENCH_RUST_LOG:-warn}"
TARGET_ARGS=()

if want pixelport; then
    rm -rf "$DATA/pixelport"
    mkdir -p "$DATA/pixelport"
    PP_S3="$(free_port)" || die "no free port"
    PP_IMG="$(free_port)" || die "no free port"
    PP_ADMIN="$(free_port)" || die "no free port"
    PP_DATA="$DATA/pixelport"
    pixelport_config 'max_object_size = "1GiB"' "" "" >"$DATA/pixelport.toml"
    log "starting pixelport ($PIXELPORT), S3 on 127.0.0.1:$PP_S3"
    start_pixelport "$PIXELPORT" "$DATA/pixelport.toml"
    TARGET_ARGS+=(--target pixelport "http://127.0.0.1:$PP_S3" "$AK" "$SK")
    if [ "$SSE" -eq 1 ]; then
        TARGET_ARGS+=(--target pixelport-sse "http://127.0.0.1:$PP_S3" "$AK" "$SK"
            --sse-default pixelport-sse)
    fi
fi

if want s3s-fs; then
    rm -rf "$DATA/s3s-fs"
    mkdir -p "$DATA/s3s-fs"
    S3_PORT="$(free_port)" || die "no free port"
    log "starting s3s-fs ($S3S_FS) on 127.0.0.1:$S3_PORT"
    "$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AK" --secret-key "$SK" \
        "$DATA/s3s-fs" >"$LOGS/s3s-fs.log" 2>&1 </dev/null &
    PIDS+=($!)
    wait_ready s3s-fs "$!" "$S3_PORT" / '^[0-9]{3}$' 30 # any HTTP answer
    TARGET_ARGS+=(--target s3s-fs "http://127.0.0.1:$S3_PORT" "$AK" "$SK")
fi

# ---------------------------------------------------------------- run
DD_ARGS=()
[ -n "$DD_COLD" ] && DD_ARGS+=(--dd-cold "$DD_COLD")
[ -n "$DD_DIRECT" ] && DD_ARGS+=(--dd-direct "$DD_DIRECT")
[ -n "$DD_CACHED" ] && DD_ARGS+=(--dd-cached "$DD_CACHED")
[ "$DROP_CACHES" -eq 1 ] && DD_ARGS+=(--drop-caches)
[ -n "$JSON" ] && DD_ARGS+=(--json "$JSON")

REPORT="$LOGS/bench-$(date -u +%Y%m%dT%H%M%SZ).md"
log "running ${BENCH_CMD[*]} (report: $REPORT)"
rc=0
"${BENCH_CMD[@]}" "${TARGET_ARGS[@]}" "${DD_ARGS[@]}" "${BENCH_ARGS[@]}" | tee "$REPORT" || rc=$?
{
    echo
    echo "dd cold read method: ${DD_COLD_HOW:-none (page cache could not be dropped)}"
    echo "machine: $(nproc) cores, $(uname -r), data dir $DATA ($(df -PT "$DATA" | awk 'NR==2 {print $2 " on " $1}'))"
} | tee -a "$REPORT"
exit "$rc"
