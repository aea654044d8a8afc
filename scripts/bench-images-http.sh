#!/usr/bin/env bash
# End-to-end image throughput with all cores, through HTTP with a keep-alive client:
# Pixelport's image endpoint against a sharp (libvips) HTTP server, in one run (#15).
#
#   scripts/bench-images-http.sh [--no-build] [--keep] [--out DIR]
#
# Each photograph of ../shared/images (the 11 non-edge JPEG and PNG files) is measured on
# its own, for JPEG q80 and WebP q80 output, fitted into 720x720 (auto-rotated, metadata
# stripped): wrk (`-t2 -c$BENCH_CONNECTIONS`, keep-alive) asks one server for that one
# image for BENCH_DURATION after a BENCH_WARMUP warm-up, then the other server, the order
# alternating per image. The figure per format is the geometric mean over the photographs
# of the requests/s ratio, so one 17.9 MP photo cannot dominate it.
#
#   - Pixelport (release build): embedded store, photos uploaded with boto3, the derivative
#     cache off (every request is processed), GET
#     /unsafe/cb:T-N/rs:fit:720:720/q:80/plain/s3://bench/PHOTO@FORMAT. The cachebuster
#     `cb:` changes with every request (per wrk thread T, counter N), so request collapsing
#     never shares one render between requests;
#   - sharp: bench/sharp/server.mjs (Node's http server, the photo read from disk per
#     request, UV_THREADPOOL_SIZE = cores), GET /FORMAT/PHOTO/T-N.
# Beside requests/s, each run reports the server's own CPU time per request (user + system,
# all threads, from /proc/PID/stat), which shows what 2x needs: half of sharp's CPU per request.
# Every answer is checked first (200, the right Content-Type, the expected size); a wrk
# run with non-2xx answers or socket errors fails the script. wrk and both servers share
# the machine's cores. Documented, not a timed test: numbers move with whatever else runs.
#
# Options:
#   --no-build   use target/release/pixelport as it is (PIXELPORT_BIN implies it)
#   --keep       keep OUT/pixelport-data after the run
#   --out DIR    results and logs (default: target/bench-images-http)
#
# Env knobs (defaults in brackets): BENCH_IMAGES [../shared/images], BENCH_ONLY (space-
# separated photo names) [all 11], BENCH_FORMATS ["jpeg webp"], BENCH_CONNECTIONS [8],
# BENCH_DURATION [6s], BENCH_WARMUP [2s], BENCH_PYTHON [~/.cache/pixelport/venv/bin/python],
# PIXELPORT_BIN, NODE, WRK.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="$ROOT/target/bench-images-http"
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[bench-images-http] %s\n' "$*" >&2; }
die() { printf '[bench-images-http] ERROR: %s\n' "$*" >&2; exit 1; }

IMAGES="${BENCH_IMAGES:-$ROOT/../shared/images}"
[ -d "$IMAGES" ] || die "no photographs at $IMAGES"
IMAGES="$(cd "$IMAGES" && pwd)"
PHOTOS="${BENCH_ONLY:-astronaut-512.png bythewater-2560x1600.jpg chelsea-451x300.png coffee-600x400.png elephants-5640x3172-progressive.jpg freshflower-1600x1203-progressive.jpg path-2560x1600.jpg retina-1411.jpg rocket-640x427.jpg storm-1920x1280.jpg wood-2560x1920.jpg}"
FORMATS="${BENCH_FORMATS:-jpeg webp}"
CONNECTIONS="${BENCH_CONNECTIONS:-8}"
DURATION="${BENCH_DURATION:-6s}"
WARMUP="${BENCH_WARMUP:-2s}"
PYTHON="${BENCH_PYTHON:-$HOME/.cache/pixelport/venv/bin/python}"
NODE="${NODE:-node}"
CORES="$(nproc)"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

bash "$ROOT/scripts/install-build-deps.sh" wrk >"$LOGS/apt.log" 2>&1 ||
    { cat "$LOGS/apt.log" >&2; die "installing wrk failed"; }
WRK="${WRK:-$(command -v wrk || echo /usr/bin/wrk)}"
[ -x "$WRK" ] || die "no wrk at $WRK"
"$PYTHON" -c 'import boto3' 2>/dev/null ||
    die "$PYTHON cannot import boto3 (run scripts/setup-test-deps.sh or set BENCH_PYTHON)"
if ! (cd bench/sharp && "$NODE" -e 'require("sharp")' >/dev/null 2>&1); then
    (cd bench/sharp && npm ci --no-audit --no-fund --loglevel=error)
fi

PIXELPORT="${PIXELPORT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pixelport}"
if [ "$BUILD" -eq 1 ] && [ -z "${PIXELPORT_BIN:-}" ]; then
    log "building pixelport (cargo build --release)"
    cargo build --release --locked --bin pixelport
fi
[ -x "$PIXELPORT" ] || die "no pixelport binary at $PIXELPORT"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
PIDS=()
PP_DATA="$OUT/pixelport-data"
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    stop_pids "${PIDS[@]}"
    [ "$KEEP" -eq 1 ] || rm -rf "$PP_DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers
rm -rf "$PP_DATA"
mkdir -p "$PP_DATA"
PP_S3="$(free_port)" || die "no free port"
PP_IMG="$(free_port)" || die "no free port"
PP_ADMIN="$(free_port)" || die "no free port"
SHARP_PORT="$(free_port)" || die "no free port"
AK=benchaccesskey
SK=benchsecretkey123456
pixelport_config "" "allow_unsafe = true" "[cache]
enabled = false" >"$OUT/pixelport.toml"
log "starting pixelport ($PIXELPORT), the derivative cache off"
start_pixelport "$PIXELPORT" "$OUT/pixelport.toml"
PP_PID="${PIDS[-1]}"
log "starting the sharp server (UV_THREADPOOL_SIZE=$CORES)"
UV_THREADPOOL_SIZE="$CORES" "$NODE" bench/sharp/server.mjs --images "$IMAGES" --port "$SHARP_PORT" \
    >"$LOGS/sharp.log" 2>&1 </dev/null &
PIDS+=($!)
SHARP_PID=$!
wait_ready sharp "$!" "$SHARP_PORT" /none '^404$' 30

log "uploading the photographs"
# shellcheck disable=SC2086 # PHOTOS is a list
upload_photos bench "$IMAGES" $PHOTOS

# ---------------------------------------------------------------- checks and wrk
# The request path with a per-request segment: PREFIX + "T-N" + SUFFIX.
cat >"$OUT/unique.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", prefix .. tid .. "-" .. n .. suffix)
end
LUA
pp_path() { echo "/unsafe/cb:$3/rs:fit:720:720/q:80/plain/s3://bench/$1@$2"; }
sharp_path() { echo "/$2/$1/$3"; }

check() { # URL FORMAT -> "WIDTHxHEIGHT" of the answer, or dies
    local url=$1 format=$2 hdr="$OUT/check.h" body="$OUT/check.body" code type
    code="$(curl -s -o "$body" -D "$hdr" -w '%{http_code}' "$url")"
    type="$(awk -F': ' 'tolower($1) == "content-type" { sub(/\r$/, "", $2); print $2 }' "$hdr")"
    [ "$code" = 200 ] && [ "$type" = "image/$format" ] ||
        die "$url answered $code $type: $(head -c 300 "$body")"
    "$PYTHON" -c 'import sys; from PIL import Image; print("%dx%d" % Image.open(sys.argv[1]).size)' "$body"
}

# CPU time (user + system, every thread) the process PID has used so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS_PER_SEC="$(getconf CLK_TCK)"

run_wrk() { # NAME PID BASE PREFIX SUFFIX DURATION LOG -> "requests/s CPU-ms-per-request"
    local name=$1 pid=$2 base=$3 prefix=$4 suffix=$5 dur=$6 out=$7 t0 t1 n
    # The paths hold no quote or backslash (photo names and options only).
    { printf 'prefix = "%s"\nsuffix = "%s"\n' "$prefix" "$suffix"; cat "$OUT/unique.lua"; } \
        >"$OUT/run.lua"
    t0="$(cpu_ticks "$pid")"
    "$WRK" -t2 -c"$CONNECTIONS" -d"$dur" --timeout 60s -s "$OUT/run.lua" "$base" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk against $name failed"; }
    t1="$(cpu_ticks "$pid")"
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        cat "$out" >&2
        die "wrk against $name saw errors (see $out)"
    fi
    n="$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")"
    # The server's own CPU per answered request (requests still in flight at the end add
    # a little to it).
    awk -v t="$((t1 - t0))" -v hz="$TICKS_PER_SEC" -v n="${n:-0}" \
        '$1 == "Requests/sec:" { printf "%s %.2f\n", $2, (n > 0 ? t * 1000 / hz / n : 0) }' "$out"
}

RESULTS="$OUT/results-$STAMP.tsv"
: >"$RESULTS"
i=0
for format in $FORMATS; do
    ext=$format
    [ "$format" = jpeg ] && ext=jpg
    for photo in $PHOTOS; do
        i=$((i + 1))
        pp_base="http://127.0.0.1:$PP_IMG"
        sh_base="http://127.0.0.1:$SHARP_PORT"
        a="$(check "$pp_base$(pp_path "$photo" "$ext" check)" "$format")"
        b="$(check "$sh_base$(sharp_path "$photo" "$format" check)" "$format")"
        [ "$a" = "$b" ] || die "$photo $format: Pixelport answered $a, sharp $b"
        pp_pre="/unsafe/cb:"
        pp_suf="/rs:fit:720:720/q:80/plain/s3://bench/$photo@$ext"
        sh_pre="/$format/$photo/"
        sh_suf=""
        order="pixelport sharp"
        [ $((i % 2)) -eq 0 ] && order="sharp pixelport"
        declare -A rps=() cpu=()
        for who in $order; do
            if [ "$who" = pixelport ]; then
                run_wrk "$who" "$PP_PID" "$pp_base" "$pp_pre" "$pp_suf" "$WARMUP" "$LOGS/warm-$who.txt" >/dev/null
                res="$(run_wrk "$who" "$PP_PID" "$pp_base" "$pp_pre" "$pp_suf" "$DURATION" "$LOGS/wrk-$format-$photo-$who.txt")"
            else
                run_wrk "$who" "$SHARP_PID" "$sh_base" "$sh_pre" "$sh_suf" "$WARMUP" "$LOGS/warm-$who.txt" >/dev/null
                res="$(run_wrk "$who" "$SHARP_PID" "$sh_base" "$sh_pre" "$sh_suf" "$DURATION" "$LOGS/wrk-$format-$photo-$who.txt")"
            fi
            read -r "rps[$who]" "cpu[$who]" <<<"$res"
        done
        log "$format $photo ($a): pixelport ${rps[pixelport]} req/s (${cpu[pixelport]} CPU ms each), sharp ${rps[sharp]} req/s (${cpu[sharp]} CPU ms each)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$format" "$photo" "$a" "${rps[pixelport]}" "${rps[sharp]}" \
            "${cpu[pixelport]}" "${cpu[sharp]}" >>"$RESULTS"
        unset rps cpu
    done
done

# ---------------------------------------------------------------- report
REPORT="$OUT/report-$STAMP.md"
"$PYTHON" - "$RESULTS" "$CORES" "$CONNECTIONS" "$DURATION" <<'PY' | tee "$REPORT"
import math, sys
path, cores, conns, dur = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
print(f"All-core throughput through HTTP (keep-alive, wrk -t2 -c{conns}, {dur} per run; {cores} cores "
      "shared by wrk and the server), per photograph, fit 720x720 q80, derivative cache off:\n")
for fmt in dict.fromkeys(r[0] for r in rows):
    print(f"| {fmt} | result | Pixelport req/s | sharp req/s | ratio | Pixelport CPU ms/req | sharp CPU ms/req |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for f, photo, size, pp, sh, pp_cpu, sh_cpu in rows:
        if f != fmt:
            continue
        r = float(pp) / float(sh)
        ratios.append(r)
        print(f"| {photo} | {size} | {float(pp):.1f} | {float(sh):.1f} | {r:.2f} | {pp_cpu} | {sh_cpu} |")
    gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"| **geometric mean** | | | | **{gm:.2f}** | | |\n")
print("CPU ms/req: the server process's own CPU time (user + system, all threads, from "
      "/proc/PID/stat) over the measured run, divided by the requests wrk completed. "
      "2x sharp's throughput needs about half of sharp's CPU per request.")
PY
cp "$REPORT" "$OUT/report.md"
log "report: $REPORT (also $OUT/report.md); wrk outputs in $LOGS"
