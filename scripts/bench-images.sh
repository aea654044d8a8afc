#!/usr/bin/env bash
# Image-processing benchmark: Pixelport's pipeline against sharp (libvips), in one run.
#
#   scripts/bench-images.sh [--images DIR] [--out DIR] [--steps] [--keep-outputs]
#                           [--skip-build] [-- BENCH_ARGS...]
#
# Both sides resize the photographs of ../shared/images (the 11 non-edge files,
# JPEG and PNG) to fit 720x720 without enlarging, auto-rotated, metadata
# stripped, and encode JPEG q80 and WebP q80, from sources already in memory:
#   - Pixelport: benches/image_bench.rs calls pipeline::process in-process,
#     exactly what the image endpoint runs per request (`rs:fit:720:720`);
#   - sharp: bench/sharp/bench.mjs, `.rotate().resize(720, 720, {fit: 'inside',
#     withoutEnlargement: true, kernel: 'lanczos3'}).jpeg/webp({quality: 80})`.
# Each measures (1) latency on one thread (sharp.concurrency(1)): per photo and
# format, warm-up then median and p90 ms over at least 10 runs and 2 s (at most
# 200 runs or 10 s) and the output size; (2) throughput with all cores: one
# worker per core (sharp at its default concurrency), 110 operations per format
# round-robin over the photos; (3) peak RSS of the process. Then this prints a
# Markdown table against the targets (geometric-mean time <= 0.8x sharp's per
# format, every output <= 1.15x sharp's bytes, elephants not slower than sharp).
# It is documented, not a timed test: numbers move with whatever else runs.
#
# Two companions cover what this in-process run cannot: scripts/bench-images-http.sh (all-core
# throughput end to end through HTTP, per photograph, geometric mean) and
# scripts/bench-image-extras.sh (animated WebP, watermarks, SVG rasterisation).
#
# Options:
#   --images DIR     the photographs (default: ../shared/images beside the repo)
#   --out DIR        results (default: target/bench-images): pixelport.json,
#                    sharp.json, report.md (latest) and report-STAMP.md, logs
#   --steps          add Pixelport's decode/transform/encode split per photo
#   --keep-outputs   keep every output image under OUT/outputs for inspection
#   --skip-build     run the last built bench binary (IMAGE_BENCH_BIN or the
#                    one recorded in OUT/bench-bin) instead of `cargo bench`
#   BENCH_ARGS       go to both benches: --only NAMES, --formats jpeg,webp,
#                    --warmup N, --min-iters N, --min-secs S, --max-iters N,
#                    --max-secs S, --throughput-ops N, --throughput-secs S,
#                    --threads N, --quality Q, --size PX (see their --help)
#
# Idempotent: sharp is installed into bench/sharp/node_modules with `npm ci`
# only when it cannot be loaded (its prebuilt libvips comes from the npm
# registry packages @img/sharp-linux-x64 and @img/sharp-libvips-linux-x64,
# nothing else is downloaded). Needs Node >= 20.9 and npm.
# Env: CARGO_TARGET_DIR, IMAGE_BENCH_BIN (a prebuilt image_bench binary),
# NODE (node binary), UV_THREADPOOL_SIZE (default: max(4, cores)).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGES="$ROOT/../shared/images"
OUT="$ROOT/target/bench-images"
STEPS=0
KEEP_OUTPUTS=0
BUILD=1
BENCH_ARGS=()
SHARP_DIR="$ROOT/bench/sharp"
NODE="${NODE:-node}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[bench-images] %s\n' "$*" >&2; }
die() { printf '[bench-images] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --images) IMAGES="${2:?--images needs a value}"; shift 2 ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        --steps) STEPS=1; shift ;;
        --keep-outputs) KEEP_OUTPUTS=1; shift ;;
        --skip-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[ -d "$IMAGES" ] || die "no photographs at $IMAGES (see --images)"
IMAGES="$(cd "$IMAGES" && pwd)"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

LOCKED=(--locked)
[ -f "$ROOT/Cargo.lock" ] || LOCKED=()

# ---------------------------------------------------------------- node + sharp
command -v "$NODE" >/dev/null 2>&1 || die "node not found (Debian: apt-get install nodejs npm)"
"$NODE" -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 20 || (a === 20 && b >= 9) ? 0 : 1)' ||
    die "sharp needs Node >= 20.9; this is $("$NODE" --version)"

sharp_loads() {
    (cd "$SHARP_DIR" && "$NODE" -e 'require("sharp")' >/dev/null 2>&1)
}
if sharp_loads; then
    log "sharp already installed in bench/sharp/node_modules"
else
    command -v npm >/dev/null 2>&1 || die "npm not found (Debian: apt-get install npm)"
    log "installing sharp into bench/sharp/node_modules (npm ci)"
    (cd "$SHARP_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$LOGS/npm.log" 2>&1 || {
        cat "$LOGS/npm.log" >&2
        die "npm ci failed in bench/sharp"
    }
    sharp_loads || die "sharp was installed but does not load (see $LOGS/npm.log)"
fi
CORES="$(nproc 2>/dev/null || echo 1)"
export UV_THREADPOOL_SIZE="${UV_THREADPOOL_SIZE:-$((CORES > 4 ? CORES : 4))}"

# ---------------------------------------------------------------- rust bench
command -v nasm >/dev/null 2>&1 ||
    log "WARNING: nasm not found: mozjpeg builds without SIMD and Pixelport's JPEG numbers are not representative (scripts/setup-test-deps.sh installs it)"
BIN_RECORD="$OUT/bench-bin"
BENCH_CMD=()
if [ -n "${IMAGE_BENCH_BIN:-}" ]; then
    [ -x "$IMAGE_BENCH_BIN" ] || die "IMAGE_BENCH_BIN=$IMAGE_BENCH_BIN is not executable"
    BENCH_CMD=("$IMAGE_BENCH_BIN" --bench)
elif [ "$BUILD" -eq 0 ]; then
    exe="$(cat "$BIN_RECORD" 2>/dev/null || true)"
    [ -n "$exe" ] && [ -x "$exe" ] || die "--skip-build: no bench binary recorded in $BIN_RECORD"
    BENCH_CMD=("$exe" --bench)
else
    log "building benches/image_bench.rs (cargo bench --no-run, release profile)"
    build_log="$LOGS/bench-build.log"
    if ! cargo bench "${LOCKED[@]}" --bench image_bench --no-run >"$build_log" 2>&1; then
        cat "$build_log" >&2
        die "cargo bench --no-run failed"
    fi
    exe="$(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' "$build_log" | tail -n1)"
    if [ -n "$exe" ] && [ -x "$exe" ]; then
        echo "$exe" >"$BIN_RECORD"
        BENCH_CMD=("$exe" --bench)
    else
        BENCH_CMD=(cargo bench "${LOCKED[@]}" --bench image_bench --)
    fi
fi

# ---------------------------------------------------------------- run
COMMON=(--images "$IMAGES" "${BENCH_ARGS[@]}")
RUST_EXTRA=()
[ "$STEPS" -eq 1 ] && RUST_EXTRA+=(--steps)
if [ "$KEEP_OUTPUTS" -eq 1 ]; then
    mkdir -p "$OUT/outputs"
    COMMON+=(--out-dir "$OUT/outputs")
fi
PP_JSON="$OUT/pixelport.json"
SHARP_JSON="$OUT/sharp.json"
rm -f "$PP_JSON" "$SHARP_JSON"

log "running Pixelport: ${BENCH_CMD[*]} (log: $LOGS/pixelport-$STAMP.log)"
"${BENCH_CMD[@]}" --json "$PP_JSON" "${RUST_EXTRA[@]}" "${COMMON[@]}" |
    tee "$LOGS/pixelport-$STAMP.log" >&2
log "running sharp: $NODE bench/sharp/bench.mjs (log: $LOGS/sharp-$STAMP.log)"
"$NODE" "$SHARP_DIR/bench.mjs" --json "$SHARP_JSON" "${COMMON[@]}" |
    tee "$LOGS/sharp-$STAMP.log" >&2

# ---------------------------------------------------------------- report
REPORT="$OUT/report-$STAMP.md"
MACHINE="$CORES cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
"$NODE" - "$PP_JSON" "$SHARP_JSON" "$MACHINE" >"$REPORT" <<'NODE_EOF'
const fs = require('node:fs');
const [ppPath, shPath, machine] = process.argv.slice(2);
const pp = JSON.parse(fs.readFileSync(ppPath, 'utf8'));
const sh = JSON.parse(fs.readFileSync(shPath, 'utf8'));
const TIME_TARGET = 0.8, SIZE_TARGET = 1.15, ELEPHANTS = 'elephants-5640x3172-progressive.jpg';
const f2 = (x) => x.toFixed(2), f3 = (x) => x.toFixed(3);
const gm = (xs) => Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);
const ok = (pass) => (pass ? 'met' : '**missed**');
const key = (r) => `${r.format}/${r.image}`;
const shBy = new Map(sh.latency.map((r) => [key(r), r]));
const out = [];
const s = pp.settings;
out.push('# Image benchmark: Pixelport vs sharp');
out.push('');
out.push(`- Pixelport: ${pp.version}; sharp: ${sh.version}`);
out.push(`- Machine: ${machine}`);
out.push(`- Work: fit inside ${s.size}x${s.size} (no enlargement), q${s.quality}, sources in memory; latency = median of >= ${s.min_iters} runs and >= ${s.min_secs} s (<= ${s.max_iters} runs or ${s.max_secs} s) after ${s.warmup} warm-up runs, one thread (sharp.concurrency(1)); sharp's libvips operation cache ${sh.settings.operation_cache ? 'on' : 'off'}.`);
out.push('');
const formats = [...new Set(pp.latency.map((r) => r.format))];
const summary = [];
for (const format of formats) {
  out.push(`## ${format.toUpperCase()} q${s.quality}, one thread`);
  out.push('');
  out.push('| photo | Pixelport ms (p90) | sharp ms (p90) | time ratio | Pixelport bytes | sharp bytes | size ratio | output |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  const tr = [], sr = [], ppMs = [], shMs = [];
  let elephants = null;
  for (const p of pp.latency.filter((r) => r.format === format)) {
    const q = shBy.get(key(p));
    if (!q) { out.push(`| ${p.image} | ${f2(p.median_ms)} | (no sharp result) | | ${p.bytes} | | | |`); continue; }
    const t = p.median_ms / q.median_ms, z = p.bytes / q.bytes;
    tr.push(t); sr.push(z); ppMs.push(p.median_ms); shMs.push(q.median_ms);
    const dims = p.width === q.width && p.height === q.height
      ? `${p.width}x${p.height}` : `**${p.width}x${p.height} vs ${q.width}x${q.height}**`;
    const name = p.image === ELEPHANTS ? `**${p.image}**` : p.image;
    out.push(`| ${name} | ${f2(p.median_ms)} (${f2(p.p90_ms)}) | ${f2(q.median_ms)} (${f2(q.p90_ms)}) | ${f3(t)} | ${p.bytes} | ${q.bytes} | ${f3(z)} | ${dims} |`);
    if (p.image === ELEPHANTS) elephants = { t, p, q };
  }
  if (tr.length === 0) continue;
  const gmT = gm(tr), maxZ = Math.max(...sr);
  out.push(`| **geometric mean** | **${f2(gm(ppMs))}** | **${f2(gm(shMs))}** | **${f3(gmT)}** | | | **${f3(gm(sr))}** (max ${f3(maxZ)}) | |`);
  out.push('');
  summary.push(`| ${format} | time: geometric-mean ratio <= ${TIME_TARGET} | ${f3(gmT)} | ${ok(gmT <= TIME_TARGET)} |`);
  summary.push(`| ${format} | size: every file <= ${SIZE_TARGET}x sharp's | max ${f3(maxZ)} (${sr.filter((x) => x > SIZE_TARGET).length} over) | ${ok(maxZ <= SIZE_TARGET)} |`);
  if (elephants) {
    summary.push(`| ${format} | elephants (17.9 MP progressive) not slower: ratio <= 1 | ${f3(elephants.t)} (${f2(elephants.p.median_ms)} vs ${f2(elephants.q.median_ms)} ms) | ${ok(elephants.t <= 1)} |`);
  }
}
out.push('## Targets');
out.push('');
out.push('| format | target | measured | |');
out.push('| --- | --- | ---: | --- |');
out.push(...summary);
out.push('');
out.push(`## Throughput, all cores (${pp.throughput[0]?.workers ?? '?'} Pixelport threads; ${sh.throughput[0]?.workers ?? '?'} sharp workers, sharp.concurrency() default ${sh.settings.throughput_concurrency}, UV_THREADPOOL_SIZE ${sh.settings.uv_threadpool_size})`);
out.push('');
out.push('| format | Pixelport images/s | sharp images/s | ratio (Pixelport / sharp) | operations |');
out.push('| --- | ---: | ---: | ---: | --- |');
for (const p of pp.throughput) {
  const q = sh.throughput.find((r) => r.format === p.format);
  const ops = `${p.operations} / ${q ? q.operations : '-'}${p.timed_out || q?.timed_out ? ' (deadline hit)' : ''}`;
  out.push(`| ${p.format} | ${f2(p.images_per_sec)} | ${q ? f2(q.images_per_sec) : '-'} | ${q ? f3(p.images_per_sec / q.images_per_sec) : '-'} | ${ops} |`);
}
out.push('');
const mib = (k) => (k == null ? 'n/a' : `${(k / 1024).toFixed(1)}`);
out.push('## Peak RSS (MiB, whole process: sharp includes the Node runtime)');
out.push('');
out.push('| | after loading sources | after latency phase | after throughput phase |');
out.push('| --- | ---: | ---: | ---: |');
for (const [n, r] of [['Pixelport', pp.peak_rss_kib], ['sharp', sh.peak_rss_kib]]) {
  out.push(`| ${n} | ${mib(r.after_load_kib)} | ${mib(r.after_latency_kib)} | ${mib(r.after_throughput_kib)} |`);
}
if (pp.steps && pp.steps.length) {
  out.push('');
  out.push('## Pixelport steps (diagnostic, median ms, one thread)');
  out.push('');
  out.push('| photo | format | decode (scale -> size) | transform | encode |');
  out.push('| --- | --- | ---: | ---: | ---: |');
  for (const r of pp.steps) {
    out.push(`| ${r.image} | ${r.format} | ${f2(r.decode_ms)} (1/${r.decode_scale_denom} -> ${r.decoded_width}x${r.decoded_height}) | ${f2(r.transform_ms)} | ${f2(r.encode_ms)} |`);
  }
}
console.log(out.join('\n'));
NODE_EOF
cp "$REPORT" "$OUT/report.md"
cat "$REPORT"
log "report: $REPORT (also $OUT/report.md); raw JSON: $PP_JSON, $SHARP_JSON"
