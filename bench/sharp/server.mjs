// The sharp side of scripts/bench-images-http.sh: a minimal HTTP image server as a sharp
// user would write one. Node's http server (keep-alive), the source read from disk per
// request, processed by sharp on libuv's thread pool (UV_THREADPOOL_SIZE, set by the script
// to the number of cores; sharp's own concurrency left at its default), libvips' cache off.
//
//   node bench/sharp/server.mjs --images DIR --port PORT
//
// GET /{jpeg|webp}/{name}[/anything]: {name} from DIR, auto-rotated, fitted into 720x720
// without enlarging (lanczos3), metadata stripped, encoded at q80: what Pixelport's
// /rs:fit:720:720/q:80/plain/s3://bucket/{name}@{format} does. Anything after the name is
// ignored (the script sends a changing segment to both servers alike).

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { resolve, basename } from 'node:path';
import sharp from 'sharp';

const args = { images: '.', port: 0 };
for (let i = 2; i < process.argv.length; i += 2) {
  const [k, v] = [process.argv[i], process.argv[i + 1]];
  if (k === '--images') args.images = v;
  else if (k === '--port') args.port = Number(v);
  else throw new Error(`unknown argument ${k}`);
}
sharp.cache(false);

const server = http.createServer(async (req, res) => {
  try {
    const [, format, name] = req.url.split('/');
    if (format !== 'jpeg' && format !== 'webp') {
      res.writeHead(404).end();
      return;
    }
    const input = await readFile(resolve(args.images, basename(decodeURIComponent(name))));
    let pipeline = sharp(input).rotate()
      .resize(720, 720, { fit: 'inside', withoutEnlargement: true, kernel: 'lanczos3' });
    pipeline = format === 'jpeg' ? pipeline.jpeg({ quality: 80 }) : pipeline.webp({ quality: 80 });
    const out = await pipeline.toBuffer();
    res.writeHead(200, {
      'content-type': `image/${format}`,
      'content-length': out.length,
      'cache-control': 'max-age=3600, public',
    });
    res.end(out);
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e));
  }
});
server.keepAliveTimeout = 60_000;
server.listen(args.port, '127.0.0.1', () => {
  console.error(`sharp server on 127.0.0.1:${server.address().port}`);
});
