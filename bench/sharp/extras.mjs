// The sharp side of scripts/bench-image-extras.sh (benches/image_extras_bench.rs is
// Pixelport's): the same cases, one thread (sharp.concurrency(1)), libvips' cache off,
// sources in memory, 2 warm-up runs then the median and p90 of --runs runs.
//
//   node bench/sharp/extras.mjs [--images DIR] [--runs 30]
//
// - gif-webp: sharp(gif, {animated: true}).webp({quality: 80}): every frame, as Pixelport;
// - gif-gif:  sharp(gif, {animated: true}).gif();
// - wm-base:  rocket-640x427.jpg fitted into 720x720, JPEG q80;
// - wm:       the same pipeline with a 200x100 half-transparent logo composited 10 px in
//             from the south-east corner, fitted into 20% of the result (the logo resized
//             once, up front, as Pixelport keeps its sized watermark);
// - svg-png / svg-webp: bench/svg/scene-400x300.svg drawn at 1200 px wide (librsvg at
//             density 216, 3x the 72 of its CSS pixels), as PNG and as WebP q80;
//             svg-draw the drawing alone (raw RGBA out).

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const HERE = dirname(fileURLToPath(import.meta.url));
const args = { images: resolve(HERE, '../../../shared/images'), runs: 30 };
for (let i = 2; i < process.argv.length; i += 2) {
  const [k, v] = [process.argv[i], process.argv[i + 1]];
  if (k === '--images') args.images = v;
  else if (k === '--runs') args.runs = Number(v);
  else throw new Error(`unknown argument ${k}`);
}
sharp.cache(false);
sharp.concurrency(1);

const gif = readFileSync(resolve(args.images, 'edge-animated-8frames-160x120.gif'));
const photo = readFileSync(resolve(args.images, 'rocket-640x427.jpg'));
const svg = readFileSync(resolve(HERE, '../svg/scene-400x300.svg'));

// The logo of the Rust side: a red ellipse at half opacity on transparency, 200x100.
const raw = Buffer.alloc(200 * 100 * 4);
for (let y = 0; y < 100; y++) {
  for (let x = 0; x < 200; x++) {
    const dx = x - 100, dy = y - 50;
    if ((dx * dx) / 4 + dy * dy < 45 * 45) raw.set([220, 30, 30, 128], (y * 200 + x) * 4);
  }
}
const base = await sharp(photo).rotate()
  .resize(720, 720, { fit: 'inside', withoutEnlargement: true }).toBuffer({ resolveWithObject: true });
const w = base.info.width, h = base.info.height;
const logo = await sharp(raw, { raw: { width: 200, height: 100, channels: 4 } })
  .resize(Math.round((w * 0.2) / 2) * 2, Math.round((h * 0.2) / 2) * 2, { fit: 'inside' })
  .png().toBuffer();
const logoMeta = await sharp(logo).metadata();

const cases = {
  'gif-webp': [gif, () => sharp(gif, { animated: true }).webp({ quality: 80 }).toBuffer()],
  'gif-gif': [gif, () => sharp(gif, { animated: true }).gif().toBuffer()],
  'wm-base': [photo, () => sharp(photo).rotate()
    .resize(720, 720, { fit: 'inside', withoutEnlargement: true, kernel: 'lanczos3' })
    .jpeg({ quality: 80 }).toBuffer()],
  wm: [photo, () => sharp(photo).rotate()
    .resize(720, 720, { fit: 'inside', withoutEnlargement: true, kernel: 'lanczos3' })
    .composite([{ input: logo, left: w - logoMeta.width - 10, top: h - logoMeta.height - 10 }])
    .jpeg({ quality: 80 }).toBuffer()],
  'svg-draw': [svg, () => sharp(svg, { density: 216 }).raw().toBuffer()],
  'svg-png': [svg, () => sharp(svg, { density: 216 }).resize(1200).png().toBuffer()],
  'svg-webp': [svg, () => sharp(svg, { density: 216 }).resize(1200).webp({ quality: 80 }).toBuffer()],
};

const out = {};
for (const [name, [input, run]] of Object.entries(cases)) {
  const times = [];
  let size = 0;
  for (let i = 0; i < args.runs + 2; i++) {
    const t = process.hrtime.bigint();
    const buf = await run();
    if (i >= 2) times.push(Number(process.hrtime.bigint() - t) / 1e6);
    size = buf.length;
  }
  times.sort((a, b) => a - b);
  const q = (p) => times[Math.round((times.length - 1) * p)];
  out[name] = { median_ms: q(0.5), p90_ms: q(0.9), bytes: size, input_bytes: input.length };
}
console.log(JSON.stringify(out));
