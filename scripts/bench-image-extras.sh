#!/usr/bin/env bash
# The #15 image paths against sharp, in one run: GIF to animated WebP (time and bytes),
# GIF to GIF (the bytes WebP is compared with), the watermark's cost per image (a
# 720 px JPEG with and without `wm`, the difference), and SVG rasterisation (a 180-shape
# scene drawn at 1200 px, as PNG and WebP; sharp draws with librsvg). Both sides run in-process on one
# thread from sources in memory: benches/image_extras_bench.rs and bench/sharp/extras.mjs
# (see their headers). Documented, not a timed test: numbers move with whatever else runs.
#
#   scripts/bench-image-extras.sh [--runs N] [--skip-build]
#
# Prints a Markdown table with Pixelport/sharp time ratios (below 1: Pixelport faster) and
# writes target/bench-image-extras/{pixelport,sharp}.json. sharp is installed by
# scripts/bench-images.sh's rule (npm ci in bench/sharp when it does not load).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS=30
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT="$ROOT/target/bench-image-extras"
mkdir -p "$OUT"
NODE="${NODE:-node}"
if ! (cd bench/sharp && "$NODE" -e 'require("sharp")' >/dev/null 2>&1); then
    (cd bench/sharp && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ "$BUILD" -eq 1 ]; then
    cargo bench --locked --bench image_extras_bench --no-run 2>"$OUT/build.log" || { cat "$OUT/build.log" >&2; exit 1; }
fi
exe="$(ls -t "${CARGO_TARGET_DIR:-$ROOT/target}"/release/deps/image_extras_bench-* 2>/dev/null | grep -v '\.d$' | head -n1)"
[ -x "$exe" ] || { echo "no image_extras_bench binary; run without --skip-build" >&2; exit 1; }
"$exe" --bench --runs "$RUNS" >"$OUT/pixelport.json"
"$NODE" bench/sharp/extras.mjs --runs "$RUNS" >"$OUT/sharp.json"
python3 - "$OUT/pixelport.json" "$OUT/sharp.json" <<'PY'
import json, sys
p, s = (json.load(open(f)) for f in sys.argv[1:3])
print("| case | Pixelport ms | sharp ms | time ratio | Pixelport bytes | sharp bytes |")
print("| --- | --- | --- | --- | --- | --- |")
for name in ("gif-webp", "gif-gif", "wm-base", "wm", "svg-draw", "svg-png", "svg-webp"):
    a, b = p[name], s[name]
    print(f"| {name} | {a['median_ms']:.2f} | {b['median_ms']:.2f} | {a['median_ms'] / b['median_ms']:.2f} | {a['bytes']} | {b['bytes']} |")
pw = p["wm"]["median_ms"] - p["wm-base"]["median_ms"]
sw = s["wm"]["median_ms"] - s["wm-base"]["median_ms"]
print(f"\nwatermark cost per image: Pixelport {pw:.2f} ms, sharp {sw:.2f} ms")
print(f"GIF {p['gif-webp']['input_bytes']} bytes -> animated WebP: Pixelport {p['gif-webp']['bytes']} "
      f"({p['gif-webp']['input_bytes'] / p['gif-webp']['bytes']:.1f}x smaller), sharp {s['gif-webp']['bytes']} "
      f"({s['gif-webp']['input_bytes'] / s['gif-webp']['bytes']:.1f}x smaller)")
PY
