// The sharp side of the image benchmark (scripts/bench-images.sh runs it after
// benches/image_bench.rs and compares the two; both write the same JSON shape).
//
//   node bench/sharp/bench.mjs [--images DIR] [--json PATH] [--formats jpeg,webp]
//       [--only NAME,...] [--warmup 2] [--min-iters 10] [--min-secs 2]
//       [--max-iters 200] [--max-secs 10] [--throughput-ops 110]
//       [--throughput-secs 120] [--workers N | --threads N] [--quality 80] [--size 720]
//       [--keep-cache] [--out-dir DIR]
//
// Work per operation, as Pixelport's `rs:fit:720:720` with q80:
//   sharp(buf, {limitInputPixels: false}).rotate()
//     .resize(720, 720, {fit: 'inside', withoutEnlargement: true, kernel: 'lanczos3'})
//     .jpeg({quality: 80})   (or .webp({quality: 80}))
// with metadata stripped (sharp's default). Sources are read into memory once.
//
// Modes:
//  1. latency: sharp.concurrency(1); per photo and format, `--warmup` untimed
//     runs, then timed runs one after another until both `--min-iters` and
//     `--min-secs` are reached, or `--max-iters` or `--max-secs` is; reports
//     median, p90, mean and min ms and the output size and dimensions.
//  2. throughput: sharp's default concurrency restored, `--workers` (default:
//     the number of cores) async workers under Promise.all share a fixed number
//     of operations per format (`--throughput-ops`, round-robin over the
//     photos), bounded by `--throughput-secs`; reports images/s.
//  3. peak RSS: process.resourceUsage().maxRSS (KiB) after each phase.
//
// libvips' operation cache is switched off (sharp.cache(false)) unless
// `--keep-cache` is given: otherwise repeating one operation on one buffer can
// be answered from the cache, which a CDN's distinct requests would not be.
// The libuv thread pool (UV_THREADPOOL_SIZE, default 4) must be at least
// `--workers` for the throughput phase to use every core.

import { availableParallelism, cpus } from 'node:os';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const HERE = dirname(fileURLToPath(import.meta.url));

// The photographs of shared/images/README.md (not the edge cases).
export const PHOTOS = [
  'wood-2560x1920.jpg',
  'storm-1920x1280.jpg',
  'freshflower-1600x1203-progressive.jpg',
  'elephants-5640x3172-progressive.jpg',
  'path-2560x1600.jpg',
  'bythewater-2560x1600.jpg',
  'astronaut-512.png',
  'coffee-600x400.png',
  'chelsea-451x300.png',
  'rocket-640x427.jpg',
  'retina-1411.jpg',
];

function parseArgs(argv) {
  const a = {
    images: resolve(HERE, '../../../shared/images'),
    json: '',
    formats: ['jpeg', 'webp'],
    only: [],
    warmup: 2,
    minIters: 10,
    minSecs: 2,
    maxIters: 200,
    maxSecs: 10,
    throughputOps: 110,
    throughputSecs: 120,
    workers: availableParallelism(),
    quality: 80,
    size: 720,
    keepCache: false,
    outDir: '',
  };
  const num = (name, v) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < 0) {
      throw new Error(`${name} needs a non-negative number`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--images': a.images = resolve(v ?? ''); i++; break;
      case '--json': a.json = v ?? ''; i++; break;
      case '--formats': a.formats = (v ?? '').split(',').filter(Boolean); i++; break;
      case '--only': a.only = (v ?? '').split(',').filter(Boolean); i++; break;
      case '--warmup': a.warmup = num(k, v); i++; break;
      case '--min-iters': a.minIters = num(k, v); i++; break;
      case '--min-secs': a.minSecs = num(k, v); i++; break;
      case '--max-iters': a.maxIters = Math.max(1, num(k, v)); i++; break;
      case '--max-secs': a.maxSecs = num(k, v); i++; break;
      case '--throughput-ops': a.throughputOps = num(k, v); i++; break;
      case '--throughput-secs': a.throughputSecs = num(k, v); i++; break;
      case '--threads': // the Rust side's name
      case '--workers': a.workers = Math.max(1, num(k, v)); i++; break;
      case '--quality': a.quality = num(k, v); i++; break;
      case '--size': a.size = Math.max(1, num(k, v)); i++; break;
      case '--keep-cache': a.keepCache = true; break;
      case '--out-dir': a.outDir = v ?? ''; i++; break;
      case '-h':
      case '--help':
        process.stdout.write(
          readFileSync(fileURLToPath(import.meta.url), 'utf8')
            .split('\n')
            .filter((l, i, all) => all.slice(0, i + 1).every((x) => x.startsWith('//')))
            .map((l) => l.replace(/^\/\/ ?/, ''))
            .join('\n') + '\n',
        );
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${k} (see --help)`);
    }
  }
  for (const f of a.formats) {
    if (f !== 'jpeg' && f !== 'webp') throw new Error(`--formats: ${f} is not jpeg or webp`);
  }
  return a;
}

function op(buf, format, args) {
  let p = sharp(buf, { limitInputPixels: false })
    .rotate()
    .resize(args.size, args.size, { fit: 'inside', withoutEnlargement: true, kernel: 'lanczos3' });
  p = format === 'jpeg' ? p.jpeg({ quality: args.quality }) : p.webp({ quality: args.quality });
  return p.toBuffer({ resolveWithObject: true });
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const maxRssKiB = () => process.resourceUsage().maxRSS;

function quantile(sorted, q) {
  // Nearest rank, as the Rust side computes it.
  if (sorted.length === 0) return 0;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

async function latency(photos, args) {
  const results = [];
  for (const format of args.formats) {
    for (const p of photos) {
      let last;
      for (let i = 0; i < args.warmup; i++) last = await op(p.buf, format, args);
      const times = [];
      const start = nowMs();
      for (;;) {
        const t0 = nowMs();
        last = await op(p.buf, format, args);
        times.push(nowMs() - t0);
        const elapsed = (nowMs() - start) / 1000;
        const enough = times.length >= args.minIters && elapsed >= args.minSecs;
        if (enough || times.length >= args.maxIters || elapsed >= args.maxSecs) break;
      }
      const sorted = [...times].sort((x, y) => x - y);
      const r = {
        image: p.name,
        format,
        source_width: p.width,
        source_height: p.height,
        width: last.info.width,
        height: last.info.height,
        iterations: times.length,
        median_ms: quantile(sorted, 0.5),
        p90_ms: quantile(sorted, 0.9),
        mean_ms: times.reduce((s, x) => s + x, 0) / times.length,
        min_ms: sorted[0],
        bytes: last.data.length,
      };
      if (args.outDir) {
        writeFileSync(join(args.outDir, `${p.name}.sharp.${format === 'jpeg' ? 'jpg' : 'webp'}`), last.data);
      }
      results.push(r);
      console.log(
        `sharp latency ${format.padEnd(4)} ${p.name.padEnd(40)} median ${r.median_ms.toFixed(2).padStart(8)} ms` +
          `  p90 ${r.p90_ms.toFixed(2).padStart(8)} ms  ${String(r.bytes).padStart(7)} B` +
          `  ${r.width}x${r.height}  (${r.iterations} runs)`,
      );
    }
  }
  return results;
}

async function throughput(photos, args) {
  const results = [];
  for (const format of args.formats) {
    const total = args.throughputOps;
    let next = 0;
    let done = 0;
    const start = nowMs();
    const deadline = start + args.throughputSecs * 1000;
    const worker = async () => {
      for (;;) {
        if (next >= total || nowMs() >= deadline) return;
        const i = next++;
        await op(photos[i % photos.length].buf, format, args);
        done++;
      }
    };
    await Promise.all(Array.from({ length: args.workers }, worker));
    const secs = (nowMs() - start) / 1000;
    const r = {
      format,
      workers: args.workers,
      operations: done,
      planned_operations: total,
      seconds: secs,
      images_per_sec: secs > 0 ? done / secs : 0,
      timed_out: done < total,
    };
    results.push(r);
    console.log(
      `sharp throughput ${format.padEnd(4)} ${r.workers} workers: ${r.images_per_sec.toFixed(2)} images/s` +
        ` (${done} ops in ${secs.toFixed(2)} s${r.timed_out ? ', stopped by --throughput-secs' : ''})`,
    );
  }
  return results;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const names = PHOTOS.filter((n) => args.only.length === 0 || args.only.some((o) => n.includes(o)));
  if (names.length === 0) throw new Error('--only matched no photograph');
  if (args.outDir) mkdirSync(args.outDir, { recursive: true });
  if (!args.keepCache) sharp.cache(false);
  const defaultConcurrency = sharp.concurrency();

  const photos = [];
  for (const name of names) {
    const buf = readFileSync(join(args.images, name));
    const m = await sharp(buf, { limitInputPixels: false }).metadata();
    photos.push({ name, buf, width: m.width, height: m.height });
  }
  const rss = { after_load_kib: maxRssKiB() };

  sharp.concurrency(1);
  const lat = await latency(photos, args);
  rss.after_latency_kib = maxRssKiB();

  sharp.concurrency(defaultConcurrency);
  const thr = await throughput(photos, args);
  rss.after_throughput_kib = maxRssKiB();
  console.log(
    `sharp peak RSS: ${(rss.after_latency_kib / 1024).toFixed(1)} MiB after latency,` +
      ` ${(rss.after_throughput_kib / 1024).toFixed(1)} MiB after throughput`,
  );

  const out = {
    tool: 'sharp',
    version: `sharp ${sharp.versions.sharp}, libvips ${sharp.versions.vips}, node ${process.versions.node}`,
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? '',
    settings: {
      size: args.size,
      quality: args.quality,
      warmup: args.warmup,
      min_iters: args.minIters,
      min_secs: args.minSecs,
      max_iters: args.maxIters,
      max_secs: args.maxSecs,
      throughput_ops: args.throughputOps,
      throughput_secs: args.throughputSecs,
      latency_concurrency: 1,
      throughput_concurrency: defaultConcurrency,
      uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE || 4),
      operation_cache: args.keepCache,
    },
    latency: lat,
    throughput: thr,
    peak_rss_kib: rss,
  };
  if (args.json) writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n');
}

main().catch((e) => {
  console.error(`sharp bench: ${e.message ?? e}`);
  process.exit(1);
});
