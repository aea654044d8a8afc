#!/usr/bin/env bash
# Cache-hit benchmark: Pixelport serving a cached ~30 KB variant against nginx serving the
# same bytes as a static file, on the same machine, in one run (issue #4).
#
#   scripts/bench-cache.sh [--no-build] [--keep] [--out DIR]
#
# Steps:
#   1. apt installs nginx and wrk when missing (dpkg -s first; apt-get update only then;
#      sudo when not root); builds `cargo build --release` unless PIXELPORT_BIN is set
#      or --no-build is given.
#   2. Starts Pixelport (embedded store, its own data dir under OUT, free 127.0.0.1
#      ports, RUST_LOG=warn), uploads one photo with boto3 and requests
#      /unsafe/OPTIONS/plain/s3://bench/PHOTO@FORMAT once (must be X-Cache: MISS), then
#      again (must be X-Cache: HIT).
#   3. Writes exactly those bytes to a file that nginx (started here in the foreground
#      with its own conf: worker_processes = cores, sendfile on, tcp_nopush, access_log
#      off, keepalive, the same Content-Type and Cache-Control) serves on 127.0.0.1.
#      Both answers are checked: 200, same Content-Type, same body (sha256).
#   4. wrk with 64 connections (`wrk -t2 -c64 -d15s --latency`, after a 3 s warm-up of
#      each) against both, BENCH_ROUNDS rounds, the order alternating every round
#      (pixelport first in odd rounds, nginx first in even ones). Each metric (requests/s,
#      p50, p99) is the median over the rounds; every round is printed too. A wrk run
#      with non-2xx answers or socket errors fails the script.
#   5. Time to first byte (curl -w %{time_starttransfer}, a new connection each) of
#      misses (BENCH_TTFB_MISSES fresh variants: the same options at widths W+1, W+2,
#      ...) against hits (BENCH_TTFB_HITS requests of the benchmarked variant); medians.
#   6. Prints a Markdown table (metric | pixelport | nginx | ratio | target) and saves it
#      as OUT/report-STAMP.md and OUT/report.md.
#
# wrk, nginx and Pixelport share the same cores (a load generator on the same machine
# takes CPU from both servers alike); numbers move with whatever else runs.
#
# Options:
#   --no-build   use target/release/pixelport as it is (PIXELPORT_BIN implies it)
#   --keep       keep OUT/pixelport-data and nginx's temporary directory after the run
#   --out DIR    results and logs (default: target/bench-cache)
#
# Env knobs (defaults in brackets):
#   PIXELPORT_BIN        a pixelport binary [CARGO_TARGET_DIR or target/release/pixelport]
#   BENCH_IMAGES         directory of photographs [../shared/images beside the repo]
#   BENCH_PHOTO          the photo [bythewater-2560x1600.jpg]
#   BENCH_WIDTH          fit width of the variant [560]
#   BENCH_OPTIONS        the rest of the options [q:80]
#   BENCH_FORMAT         output format (URL extension) [webp]
#   BENCH_CONNECTIONS    wrk connections [64]
#   BENCH_THREADS        wrk threads [number of cores]
#   BENCH_DURATION       each measured wrk run [15s]
#   BENCH_WARMUP         warm-up wrk run per server [3s]
#   BENCH_ROUNDS         measured rounds per server [3]
#   BENCH_TTFB_MISSES    fresh variants for the miss TTFB [5]
#   BENCH_TTFB_HITS      hit requests for the hit TTFB [20]
#   BENCH_PYTHON         python with boto3 [~/.cache/pixelport/venv/bin/python]
#   BENCH_RUST_LOG       RUST_LOG for pixelport [warn]
#   NGINX, WRK           binaries [nginx / /usr/sbin/nginx, wrk]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="$ROOT/target/bench-cache"
BUILD=1
KEEP=0
IMAGES="${BENCH_IMAGES:-$ROOT/../shared/images}"
PHOTO="${BENCH_PHOTO:-bythewater-2560x1600.jpg}"
WIDTH="${BENCH_WIDTH:-560}"
EXTRA_OPTIONS="${BENCH_OPTIONS:-q:80}"
FORMAT="${BENCH_FORMAT:-webp}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
CORES="$(nproc 2>/dev/null || echo 1)"
THREADS="${BENCH_THREADS:-$CORES}"
DURATION="${BENCH_DURATION:-15s}"
WARMUP="${BENCH_WARMUP:-3s}"
ROUNDS="${BENCH_ROUNDS:-3}"
TTFB_MISSES="${BENCH_TTFB_MISSES:-5}"
TTFB_HITS="${BENCH_TTFB_HITS:-20}"
PYTHON="${BENCH_PYTHON:-${PIXELPORT_CACHE:-$HOME/.cache/pixelport}/venv/bin/python}"
AK="benchak"
SK="benchsecretkey0123456789"
REGION="us-east-1"
BUCKET="bench"
RPS_TARGET="0.8"
P99_TARGET="2"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[bench-cache] %s\n' "$*" >&2; }
die() { printf '[bench-cache] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[ -f "$IMAGES/$PHOTO" ] || die "no photo at $IMAGES/$PHOTO (see BENCH_IMAGES, BENCH_PHOTO)"
[ "$ROUNDS" -ge 1 ] || die "BENCH_ROUNDS must be at least 1"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# ---------------------------------------------------------------- apt: nginx, wrk
# nginx's package starts a system nginx on port 80 where an init system runs; this script
# never uses it (its own nginx listens on a free loopback port).
bash "$ROOT/scripts/install-build-deps.sh" nginx wrk >"$LOGS/apt.log" 2>&1 || {
    cat "$LOGS/apt.log" >&2
    die "installing nginx and wrk failed"
}
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
WRK="${WRK:-$(command -v wrk || echo /usr/bin/wrk)}"
[ -x "$NGINX" ] || die "no nginx at $NGINX"
[ -x "$WRK" ] || die "no wrk at $WRK"
command -v curl >/dev/null 2>&1 || die "curl not found"
"$PYTHON" -c 'import boto3' 2>/dev/null ||
    die "$PYTHON cannot import boto3 (run scripts/setup-test-deps.sh or set BENCH_PYTHON)"

# ---------------------------------------------------------------- pixelport binary
LOCKED=(--locked)
[ -f "$ROOT/Cargo.lock" ] || LOCKED=()
PIXELPORT="${PIXELPORT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pixelport}"
if [ "$BUILD" -eq 1 ] && [ -z "${PIXELPORT_BIN:-}" ]; then
    log "building pixelport (cargo build --release)"
    cargo build --release "${LOCKED[@]}" --bin pixelport
fi
[ -x "$PIXELPORT" ] || die "no pixelport binary at $PIXELPORT"

# ---------------------------------------------------------------- cleanup
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
PIDS=()
PP_DATA="$OUT/pixelport-data"
# nginx's prefix (conf, pid, logs, the file) lives in a fresh world-traversable temporary
# directory: when this runs as root, nginx's workers drop to nobody and must reach the file.
NGX_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bench-cache-nginx.XXXXXX")"
chmod 755 "$NGX_DIR"
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    stop_pids "${PIDS[@]}"
    if [ "$KEEP" -eq 0 ]; then
        rm -rf "$PP_DATA" "$NGX_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
# header NAME FILE: a header's value from curl -D output (last response), no CR.
header() {
    awk -v n="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" -F': ' '
        { sub(/\r$/, "") }
        tolower($1) == n { v = substr($0, length($1) + 3) }
        END { print v }' "$2"
}

median() { # numbers on stdin -> median
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- pixelport
rm -rf "$PP_DATA"
mkdir -p "$PP_DATA"
PP_S3="$(free_port)" || die "no free port"
PP_IMG="$(free_port)" || die "no free port"
PP_ADMIN="$(free_port)" || die "no free port"
pixelport_config "" "allow_unsafe = true" "" >"$OUT/pixelport.toml"
log "starting pixelport ($PIXELPORT): S3 127.0.0.1:$PP_S3, images 127.0.0.1:$PP_IMG"
start_pixelport "$PIXELPORT" "$OUT/pixelport.toml"

log "uploading $PHOTO to s3://$BUCKET/$PHOTO"
upload_photos "$BUCKET" "$IMAGES" "$PHOTO"

variant_path() { # WIDTH -> the image path of that variant
    echo "/unsafe/rs:fit:$1:0/$EXTRA_OPTIONS/plain/s3://$BUCKET/$PHOTO@$FORMAT"
}
VPATH="$(variant_path "$WIDTH")"
PP_URL="http://127.0.0.1:$PP_IMG$VPATH"
BODY="$OUT/variant.$FORMAT"

fetch() { # URL BODY_FILE HEADERS_FILE -> status code on stdout
    curl -sS -o "$2" -D "$3" -w '%{http_code}' --max-time 60 "$1"
}
code="$(fetch "$PP_URL" "$BODY" "$LOGS/miss.headers")"
[ "$code" = 200 ] || { cat "$BODY" >&2; die "GET $VPATH answered $code"; }
xc="$(header x-cache "$LOGS/miss.headers")"
[ "$xc" = MISS ] || die "first GET $VPATH: X-Cache '$xc', expected MISS"
code="$(fetch "$PP_URL" "$OUT/hit.body" "$LOGS/hit.headers")"
[ "$code" = 200 ] || die "second GET $VPATH answered $code"
xc="$(header x-cache "$LOGS/hit.headers")"
[ "$xc" = HIT ] || die "second GET $VPATH: X-Cache '$xc', expected HIT"
cmp -s "$BODY" "$OUT/hit.body" || die "the HIT's body differs from the MISS's"
SIZE="$(stat -c %s "$BODY")"
CTYPE="$(header content-type "$LOGS/hit.headers")"
CCONTROL="$(header cache-control "$LOGS/hit.headers")"
log "variant $VPATH: $SIZE bytes, $CTYPE (MISS then HIT)"
if [ "$SIZE" -lt 20000 ] || [ "$SIZE" -gt 40000 ]; then
    log "WARNING: the variant is $SIZE bytes, not ~30 KB; adjust BENCH_WIDTH/BENCH_OPTIONS"
fi

# ---------------------------------------------------------------- nginx
mkdir -p "$NGX_DIR/html" "$NGX_DIR/tmp"
STATIC_NAME="variant.$FORMAT"
cp "$BODY" "$NGX_DIR/html/$STATIC_NAME"
NGX_PORT="$(free_port)" || die "no free port"
NGX_USER=""
if [ "$(id -u)" -eq 0 ]; then
    # As root the workers still drop privileges: to nobody, who must read the file.
    NGX_USER="user nobody nogroup;"
    chmod 755 "$NGX_DIR/html"
    chmod 644 "$NGX_DIR/html/$STATIC_NAME"
fi
cat >"$NGX_DIR/nginx.conf" <<EOF
$NGX_USER
worker_processes $CORES;
pid $NGX_DIR/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server_tokens off;
    client_body_temp_path $NGX_DIR/tmp/body;
    proxy_temp_path $NGX_DIR/tmp/proxy;
    fastcgi_temp_path $NGX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGX_DIR/tmp/uwsgi;
    scgi_temp_path $NGX_DIR/tmp/scgi;
    types { }
    default_type $CTYPE;
    server {
        listen 127.0.0.1:$NGX_PORT;
        root $NGX_DIR/html;
        location / {
            add_header Cache-Control "$CCONTROL";
        }
    }
}
EOF
log "starting nginx ($NGINX, $CORES workers) on 127.0.0.1:$NGX_PORT"
"$NGINX" -p "$NGX_DIR" -e "$LOGS/nginx-error.log" -c "$NGX_DIR/nginx.conf" -g 'daemon off;' \
    >"$LOGS/nginx.log" 2>&1 </dev/null &
PIDS+=($!)
NGX_URL="http://127.0.0.1:$NGX_PORT/$STATIC_NAME"
wait_ready nginx "$!" "$NGX_PORT" "/$STATIC_NAME" '^200$' 20

code="$(fetch "$NGX_URL" "$OUT/nginx.body" "$LOGS/nginx.headers")"
[ "$code" = 200 ] || die "nginx answered $code"
cmp -s "$BODY" "$OUT/nginx.body" || die "nginx's body differs from pixelport's"
nct="$(header content-type "$LOGS/nginx.headers")"
[ "$nct" = "$CTYPE" ] || die "nginx's Content-Type '$nct' is not pixelport's '$CTYPE'"
code="$(fetch "$PP_URL" "$OUT/hit.body" "$LOGS/hit.headers")"
[ "$code" = 200 ] && cmp -s "$BODY" "$OUT/hit.body" || die "pixelport's hit changed"
SHA="$(sha256sum "$BODY" | cut -c1-16)"
log "both answer 200, $CTYPE, $SIZE bytes, sha256 $SHA..."

# ---------------------------------------------------------------- wrk
# run_wrk NAME URL DURATION LOGFILE: checks for errors; prints "rps p50_ms p99_ms requests"
run_wrk() {
    local name=$1 url=$2 dur=$3 out=$4
    "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk against $name failed"; }
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        cat "$out" >&2
        die "wrk against $name saw errors (see $out)"
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        $2 == "requests" && $3 == "in" { n = $1 }
        END {
            if (rps == "" || p50 == "" || p99 == "") exit 1
            printf "%s %.3f %.3f %s\n", rps, p50, p99, n
        }' "$out" || { cat "$out" >&2; die "cannot parse wrk output ($out)"; }
}

metric_hits() { # pixelport_cache_hits_total from the admin listener, or empty
    curl -s --max-time 5 "http://127.0.0.1:$PP_ADMIN/metrics" |
        awk '$1 == "pixelport_cache_hits_total" { print $2 }' || true
}

WRK_CMD="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
log "warm-up: $WARMUP of wrk against each"
run_wrk pixelport "$PP_URL" "$WARMUP" "$LOGS/wrk-warmup-pixelport.txt" >/dev/null
run_wrk nginx "$NGX_URL" "$WARMUP" "$LOGS/wrk-warmup-nginx.txt" >/dev/null
hits_before="$(metric_hits)"
PP_RESULTS=()
NGX_RESULTS=()
PP_REQUESTS=0
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="pixelport nginx"; else order="nginx pixelport"; fi
    for who in $order; do
        if [ "$who" = pixelport ]; then url="$PP_URL"; else url="$NGX_URL"; fi
        log "round $r/$ROUNDS: $WRK_CMD against $who"
        res="$(run_wrk "$who" "$url" "$DURATION" "$LOGS/wrk-$STAMP-r$r-$who.txt")"
        log "  $who: $(echo "$res" | awk '{ printf "%s req/s, p50 %s ms, p99 %s ms, %s requests", $1, $2, $3, $4 }')"
        if [ "$who" = pixelport ]; then
            PP_RESULTS+=("$res")
            PP_REQUESTS=$((PP_REQUESTS + $(echo "$res" | awk '{ print $4 }')))
        else
            NGX_RESULTS+=("$res")
        fi
    done
done
hits_after="$(metric_hits)"
HITS_NOTE=""
if [ -n "$hits_before" ] && [ -n "$hits_after" ]; then
    hits=$(awk -v a="$hits_after" -v b="$hits_before" 'BEGIN { printf "%d", a - b }')
    HITS_NOTE="pixelport_cache_hits_total rose by $hits during the measured runs (wrk counted $PP_REQUESTS completed requests)"
    log "$HITS_NOTE"
fi

col() { # N RESULTS... -> median of column N
    local n=$1
    shift
    printf '%s\n' "$@" | awk -v n="$n" '{ print $n }' | median
}
PP_RPS="$(col 1 "${PP_RESULTS[@]}")"
PP_P50="$(col 2 "${PP_RESULTS[@]}")"
PP_P99="$(col 3 "${PP_RESULTS[@]}")"
NGX_RPS="$(col 1 "${NGX_RESULTS[@]}")"
NGX_P50="$(col 2 "${NGX_RESULTS[@]}")"
NGX_P99="$(col 3 "${NGX_RESULTS[@]}")"

# ---------------------------------------------------------------- TTFB
ttfb() { # URL -> "seconds x-cache"
    local h="$LOGS/ttfb.headers" t
    t="$(curl -sS -o /dev/null -D "$h" -w '%{time_starttransfer}' --max-time 60 "$1")"
    echo "$t $(header x-cache "$h")"
}
log "TTFB: $TTFB_MISSES misses (fresh widths), $TTFB_HITS hits"
MISS_T=()
for i in $(seq 1 "$TTFB_MISSES"); do
    read -r t xc < <(ttfb "http://127.0.0.1:$PP_IMG$(variant_path $((WIDTH + i)))")
    [ -n "$t" ] && [ "$xc" = MISS ] || die "TTFB miss $i: X-Cache '$xc', expected MISS"
    MISS_T+=("$t")
done
HIT_T=()
for i in $(seq 1 "$TTFB_HITS"); do
    read -r t xc < <(ttfb "$PP_URL")
    [ -n "$t" ] && [ "$xc" = HIT ] || die "TTFB hit $i: X-Cache '$xc', expected HIT"
    HIT_T+=("$t")
done
NGX_T=()
for i in $(seq 1 "$TTFB_HITS"); do
    read -r t _ < <(ttfb "$NGX_URL")
    [ -n "$t" ] || die "TTFB against nginx $i failed"
    NGX_T+=("$t")
done
to_ms() { awk '{ printf "%.2f\n", $1 * 1000 }'; }
MISS_MS="$(printf '%s\n' "${MISS_T[@]}" | median | to_ms)"
HIT_MS="$(printf '%s\n' "${HIT_T[@]}" | median | to_ms)"
NGX_MS="$(printf '%s\n' "${NGX_T[@]}" | median | to_ms)"
MISS_ALL="$(printf '%s\n' "${MISS_T[@]}" | to_ms | paste -sd' ')"

# ---------------------------------------------------------------- report
REPORT="$OUT/report-$STAMP.md"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { # VALUE OP LIMIT
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "met" : "**missed**" }'
}
RPS_RATIO="$(ratio "$PP_RPS" "$NGX_RPS")"
P50_RATIO="$(ratio "$PP_P50" "$NGX_P50")"
P99_RATIO="$(ratio "$PP_P99" "$NGX_P99")"
{
    echo "# Cache-hit benchmark: Pixelport vs nginx (static file)"
    echo
    echo "- Variant: \`$VPATH\`, $SIZE bytes, \`$CTYPE\` (sha256 $SHA...); nginx serves the same bytes"
    echo "- Load: \`$WRK_CMD\` per server, $ROUNDS rounds alternating the order after a $WARMUP warm-up each; each figure is the median over the rounds"
    echo "- Machine: $CORES cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)), $(uname -sr); wrk, nginx ($CORES workers) and Pixelport share these cores; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- $("$PIXELPORT" --version 2>/dev/null || echo pixelport), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $("$WRK" -v 2>&1 | head -n1 | awk '{ print $1, $2 }')"
    echo
    echo "| metric | pixelport | nginx | ratio (pixelport / nginx) | target | |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"
    echo "| requests/s | $(printf '%.0f' "$PP_RPS") | $(printf '%.0f' "$NGX_RPS") | $RPS_RATIO | >= $RPS_TARGET | $(verdict "$RPS_RATIO" '>=' "$RPS_TARGET") |"
    echo "| p50 latency (ms) | $PP_P50 | $NGX_P50 | $P50_RATIO | | |"
    echo "| p99 latency (ms) | $PP_P99 | $NGX_P99 | $P99_RATIO | <= $P99_TARGET | $(verdict "$P99_RATIO" '<=' "$P99_TARGET") |"
    echo
    echo "Every round (requests/s, p50 ms, p99 ms):"
    echo
    for i in "${!PP_RESULTS[@]}"; do
        echo "- round $((i + 1)): pixelport $(echo "${PP_RESULTS[$i]}" | awk '{ printf "%.0f, %s, %s", $1, $2, $3 }'); nginx $(echo "${NGX_RESULTS[$i]}" | awk '{ printf "%.0f, %s, %s", $1, $2, $3 }')"
    done
    [ -n "$HITS_NOTE" ] && echo "- $HITS_NOTE"
    echo
    echo "Time to first byte, one request per new connection (curl \`%{time_starttransfer}\`), medians:"
    echo
    echo "- miss (fresh variant, widths $((WIDTH + 1))..$((WIDTH + TTFB_MISSES))): $MISS_MS ms (each: $MISS_ALL)"
    echo "- hit ($TTFB_HITS requests): $HIT_MS ms"
    echo "- nginx, same file ($TTFB_HITS requests): $NGX_MS ms"
} >"$REPORT"
cp "$REPORT" "$OUT/report.md"
cat "$REPORT"
log "report: $REPORT (also $OUT/report.md); wrk outputs in $LOGS"
[ "$KEEP" -eq 1 ] && log "kept: $PP_DATA, $NGX_DIR (nginx conf and file)"
exit 0
