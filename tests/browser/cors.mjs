// CORS in real headless Chromium (Debian's /usr/bin/chromium) through playwright-core. Run
// by tests/python/test_cors.py, which starts the daemon, sets or removes the bucket's CORS
// rules and the image listener's allow_origin, and serves the page from another origin.
//
// On that page, three things a site does across origins:
//   put     fetch() PUT of a presigned URL (a preflight, then the upload)
//   get     fetch() GET of a presigned URL, reading the body
//   canvas  an <img crossOrigin="anonymous"> from the image endpoint drawn into a canvas,
//           and its pixels read back with getImageData
// Each reports {ok, value} or {ok: false, error}. Printed as one JSON line on stdout.
//
// Env: PAGE_URL (the other origin's page), PUT_URL, GET_URL, IMAGE_URL, CHROMIUM.

import { env, launch } from './launch.mjs';

const browser = await launch();
try {
  const page = await browser.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(m.text()));
  await page.goto(env('PAGE_URL'));
  const result = await page.evaluate(async ({ putUrl, getUrl, imageUrl }) => {
    const attempt = async (fn) => {
      try {
        return { ok: true, value: await fn() };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    };
    const put = await attempt(async () => {
      const r = await fetch(putUrl, {
        method: 'PUT',
        headers: { 'Content-Type': 'text/plain' },
        body: 'uploaded from ' + location.origin,
      });
      return { status: r.status, etag: r.headers.get('ETag') };
    });
    const get = await attempt(async () => {
      const r = await fetch(getUrl);
      return { status: r.status, text: await r.text() };
    });
    const canvas = await attempt(() => new Promise((resolve, reject) => {
      const img = new Image();
      img.crossOrigin = 'anonymous';
      img.onload = () => {
        try {
          const c = document.createElement('canvas');
          c.width = img.naturalWidth;
          c.height = img.naturalHeight;
          const ctx = c.getContext('2d');
          ctx.drawImage(img, 0, 0);
          const px = ctx.getImageData(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data;
          resolve({ width: c.width, height: c.height, pixel: Array.from(px) });
        } catch (e) {
          reject(e);
        }
      };
      img.onerror = () => reject(new Error('the image did not load (CORS refused?)'));
      img.src = imageUrl;
    }));
    return { origin: location.origin, put, get, canvas };
  }, { putUrl: env('PUT_URL'), getUrl: env('GET_URL'), imageUrl: env('IMAGE_URL') });
  result.console = console_;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
