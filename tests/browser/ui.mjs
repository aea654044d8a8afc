// Admin UI tests in real headless Chromium (Debian's /usr/bin/chromium) through playwright-core.
// Run by tests/python/test_admin_ui.py, which starts the daemon, prepares data with boto3 and
// checks from outside what the page did (signed URL fetch, aws cli with the created key).
//
//   node ui.mjs main       log in (after a refused wrong password), CSRF check, buckets,
//                          upload (file input, drop, multipart), listing pages, XSS key,
//                          builder, keys, settings, phone layout, screenshots of every page
//   node ui.mjs after      purge the whole cache, revoke the key made by `main`, log out
//   node ui.mjs ratelimit  wrong passwords until the page says "too many attempts"
//   node ui.mjs tls        (every listener on HTTPS; Chromium trusts the daemon's SPKI pin only)
//                          log in, a Secure session cookie, the pages over HTTP/2
//   node ui.mjs edges      (an appliance joined to an edge) the cache page lists the edge's
//                          cache; "Purge everything" empties it
//
// Env: PIXELPORT_ADMIN_URL, PIXELPORT_ADMIN_USER, PIXELPORT_ADMIN_PASSWORD, PIXELPORT_PHOTO
// (a JPEG/PNG to upload), PIXELPORT_BUCKET (to create), PIXELPORT_PREP_BUCKET (made by pytest:
// the XSS key and many/0000..), PIXELPORT_MANY (how many under many/), PIXELPORT_SCREENSHOTS
// (dir), PIXELPORT_RESULTS (JSON file: read and rewritten, so phases share it),
// CHROMIUM (default /usr/bin/chromium).
// Prints "ok - step" / "not ok - step: why" and a closing "N passed, N failed"; exits 1 on
// any failure. Every step runs even when an earlier one failed, so the report is complete.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
  return v;
};

const phase = process.argv[2] || 'main';
const BASE = env('PIXELPORT_ADMIN_URL').replace(/\/$/, '');
const USER = env('PIXELPORT_ADMIN_USER', 'admin');
const PASSWORD = env('PIXELPORT_ADMIN_PASSWORD', '');
const SHOTS = env('PIXELPORT_SCREENSHOTS');
const RESULTS = env('PIXELPORT_RESULTS');
const XSS_KEY = '<img src=x onerror=alert(1)>';
const MiB = 1024 * 1024;

fs.mkdirSync(SHOTS, { recursive: true });
const results = fs.existsSync(RESULTS) ? JSON.parse(fs.readFileSync(RESULTS, 'utf8')) : {};
results.steps = results.steps || {};

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    results.steps[name] = { ok: true, ms: Date.now() - t0, detail: detail ?? null };
    passed += 1;
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.steps[name] = { ok: false, ms: Date.now() - t0, error: String(e && e.stack ? e.stack : e) };
    failed += 1;
    console.log(`not ok - ${name}: ${String(e && e.message ? e.message : e).split('\n')[0]}`);
    await shot(`FAILED-${phase}-${name.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// The tls phase trusts exactly the daemon's certificate (its SPKI pin), not every one.
const SPKI = env('PIXELPORT_SPKI', '');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ...(SPKI ? [`--ignore-certificate-errors-spki-list=${SPKI}`] : [])],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
context.setDefaultTimeout(20000);
const page = await context.newPage();

// Anything that would betray markup injection, a CSP violation or a script error.
const dialogs = [];
const problems = [];
page.on('dialog', async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });
page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`csp: ${m.text()}`);
});
const apiRequests = [];
// Requests still open, to name them when a page never goes quiet.
const pending = new Set();
page.on('request', (r) => pending.add(r));
page.on('requestfinished', (r) => pending.delete(r));
page.on('requestfailed', (r) => pending.delete(r));
page.on('request', (r) => { if (r.url().includes('/api/')) apiRequests.push(`${r.method()} ${r.url()}`); });

async function shot(name, opts = {}) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, ...opts });
  results.screenshots = [...new Set([...(results.screenshots || []), file])];
  return file;
}

async function go(hash) {
  await page.goto(`${BASE}/${hash}`);
}

async function login() {
  await go('#/login');
  await page.getByLabel('User').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.locator('#login-submit').click();
  await page.waitForFunction(() => !location.hash.startsWith('#/login'));
  await page.locator('#dashboard .stats').waitFor();
}

/** Accepts the page's own confirmation <dialog>. */
async function confirm() {
  await page.locator('#confirm-dialog[open]').waitFor();
  await page.locator('#confirm-ok').click();
  await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
}

async function noHorizontalOverflow() {
  return page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    body: document.body.scrollWidth,
  }));
}

// --------------------------------------------------------------------------------------------

async function mainPhase() {
  const bucket = env('PIXELPORT_BUCKET');
  const prep = env('PIXELPORT_PREP_BUCKET');
  const many = Number(env('PIXELPORT_MANY', '250'));
  const photo = env('PIXELPORT_PHOTO');
  const photoName = path.basename(photo);

  await step('unauthenticated visit goes to login', async () => {
    await go('#/buckets');
    await page.waitForFunction(() => location.hash.startsWith('#/login'));
    await page.locator('#login-form').waitFor();
    const r = await page.evaluate(async () => (await ((r) => r.arrayBuffer().then(() => r))(await fetch('/api/buckets'))).status);
    assert(r === 401, `GET /api/buckets without a session answered ${r}, expected 401`);
    await shot('01-login');
  });

  await step('wrong password is refused', async () => {
    await page.getByLabel('User').fill(USER);
    await page.getByLabel('Password').fill(`${PASSWORD}-wrong`);
    await page.locator('#login-submit').click();
    const err = page.locator('#login-error');
    await err.waitFor({ state: 'visible' });
    const text = await err.textContent();
    assert(/wrong user or password/i.test(text), `login error says ${JSON.stringify(text)}`);
    assert((await page.evaluate(() => location.hash)).startsWith('#/login'), 'left the login page');
    const s = await page.evaluate(async () => (await ((r) => r.arrayBuffer().then(() => r))(await fetch('/api/session'))).status);
    assert(s === 401, `GET /api/session after a wrong password answered ${s}`);
  });

  await step('log in', async () => {
    await page.getByLabel('Password').fill(PASSWORD);
    await page.locator('#login-submit').click();
    await page.waitForFunction(() => location.hash === '#/buckets');
    // The page asked for before logging in is where the login leads.
    await page.locator('#bucket-create-form').waitFor();
    const cookies = await context.cookies(BASE);
    const c = cookies.find((x) => x.name === 'pixelport_session');
    assert(c, 'no pixelport_session cookie');
    assert(c.httpOnly, 'session cookie is not HttpOnly');
    assert(c.sameSite === 'Strict', `session cookie SameSite=${c.sameSite}`);
    assert(!(await page.evaluate(() => document.cookie)).includes('pixelport_session'), 'cookie readable from JS');
  });

  await step('dashboard', async () => {
    await go('#/');
    await page.locator('#dash-version').waitFor();
    const version = (await page.locator('#dash-version').textContent()).trim();
    assert(/^\d+\.\d+\.\d+/.test(version), `version shows ${JSON.stringify(version)}`);
    const bars = await page.locator('#traffic-chart').count();
    assert(bars === 1, 'no traffic chart');
    const uptime = await page.locator('#dash-uptime').textContent();
    await shot('02-dashboard');
    return { version, uptime };
  });

  await step('change without CSRF token is refused with 403', async () => {
    const r = await page.evaluate(async (name) => {
      const res = await fetch('/api/buckets', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }),
      });
      let body = null;
      try { body = await res.json(); } catch { /* none */ }
      const list = await (await fetch('/api/buckets')).json();
      return { status: res.status, body, exists: list.buckets.some((b) => b.name === name) };
    }, `${bucket}-csrf`);
    assert(r.status === 403, `POST /api/buckets without X-CSRF-Token answered ${r.status} ${JSON.stringify(r.body)}`);
    assert(!r.exists, 'the bucket was created anyway');
    const wrong = await page.evaluate(async () => (await ((r) => r.arrayBuffer().then(() => r))(await fetch('/api/cache/purge', {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': 'not-the-token' },
      body: JSON.stringify({ all: true }),
    }))).status);
    assert(wrong === 403, `POST /api/cache/purge with a wrong token answered ${wrong}`);
    return r;
  });

  await step('create a bucket', async () => {
    await go('#/buckets');
    await page.getByLabel('New bucket name').fill(bucket);
    await page.locator('#bucket-create').click();
    const row = page.locator(`#buckets-table tr[data-bucket="${bucket}"]`);
    await row.waitFor();
    assert((await row.locator('a').textContent()) === bucket, 'row shows another name');
    // A second create of the same name is a clear error.
    await page.getByLabel('New bucket name').fill(bucket);
    await page.locator('#bucket-create').click();
    await page.locator('#buckets-error').waitFor({ state: 'visible' });
    const text = await page.locator('#buckets-error').textContent();
    assert(/already exists/i.test(text), `duplicate create says ${JSON.stringify(text)}`);
    await page.getByLabel('New bucket name').fill('');
  });

  await step('public-read toggle', async () => {
    const toggle = page.locator(`#buckets-table tr[data-bucket="${bucket}"] input.public-toggle`);
    assert(!(await toggle.isChecked()), 'new bucket is public');
    await toggle.check();
    await page.waitForFunction(async (b) => {
      const list = await (await fetch('/api/buckets')).json();
      return list.buckets.find((x) => x.name === b)?.public === true;
    }, bucket);
    await toggle.uncheck();
    await page.waitForFunction(async (b) => {
      const list = await (await fetch('/api/buckets')).json();
      return list.buckets.find((x) => x.name === b)?.public === false;
    }, bucket);
    await shot('03-buckets');
  });

  await step('unsigned-image toggle', async () => {
    // The bucket page shows and changes whether unsigned image URLs may read the bucket.
    const toggle = page.locator(`#buckets-table tr[data-bucket="${bucket}"] input.unsigned-toggle`);
    assert(!(await toggle.isChecked()), 'a new bucket is open to unsigned image URLs');
    await toggle.check();
    await page.waitForFunction(async (b) => {
      const list = await (await fetch('/api/buckets')).json();
      return list.buckets.find((x) => x.name === b)?.unsigned_images === true;
    }, bucket);
    await toggle.uncheck();
    await page.waitForFunction(async (b) => {
      const list = await (await fetch('/api/buckets')).json();
      return list.buckets.find((x) => x.name === b)?.unsigned_images === false;
    }, bucket);
  });

  await step('upload an image through the file input', async () => {
    await page.locator(`#buckets-table tr[data-bucket="${bucket}"] a`).click();
    await page.locator('#dropzone').waitFor();
    await page.locator('#objects-empty').waitFor();
    await page.getByLabel('Upload files').setInputFiles(photo);
    const item = page.locator(`#uploads li[data-key="${photoName}"]`);
    await item.and(page.locator('[data-state="done"]')).waitFor({ timeout: 60000 });
    const bar = await item.locator('progress').evaluate((p) => ({ value: p.value, max: p.max }));
    assert(bar.value === bar.max && bar.max === fs.statSync(photo).size, `progress ${JSON.stringify(bar)}`);
    const row = page.locator(`#objects-table tr[data-key="${photoName}"]`);
    await row.waitFor();
    const thumb = row.locator('img.thumb');
    assert((await thumb.getAttribute('loading')) === 'lazy', 'thumbnail is not loading=lazy');
    await page.waitForFunction((k) => {
      const img = document.querySelector(`#objects-table tr[data-key="${k}"] img.thumb`);
      return img && img.complete && img.naturalWidth > 0;
    }, photoName);
    const size = await thumb.evaluate((i) => [i.naturalWidth, i.naturalHeight]);
    assert(Math.max(...size) <= 160, `thumbnail is ${size}`);
    return { progress: bar, thumbnail: size };
  });

  await step('upload by drag and drop', async () => {
    const dt = await page.evaluateHandle(() => {
      const d = new DataTransfer();
      d.items.add(new File(['dropped through the page\n'], 'dropped.txt', { type: 'text/plain' }));
      return d;
    });
    await page.locator('#dropzone').dispatchEvent('dragenter', { dataTransfer: dt });
    await page.locator('#dropzone').dispatchEvent('drop', { dataTransfer: dt });
    await page.locator('#uploads li[data-key="dropped.txt"][data-state="done"]').waitFor();
    await page.locator('#objects-table tr[data-key="dropped.txt"]').waitFor();
  });

  await step('upload over 16 MiB goes multipart', async () => {
    const size = 17 * MiB + 123;
    const buffer = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) buffer.writeUInt32LE(i, i);
    const before = apiRequests.length;
    await page.getByLabel('Upload files').setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer });
    await page.locator('#uploads li[data-key="big.bin"][data-state="done"]').waitFor({ timeout: 120000 });
    const reqs = apiRequests.slice(before);
    const parts = reqs.filter((r) => /^PUT .*\/uploads\/[^/?]+\?/.test(r));
    assert(reqs.some((r) => /^POST .*\/uploads\?key=big\.bin/.test(r)), `no multipart start in ${reqs}`);
    assert(parts.length === 3, `expected 3 parts of 8 MiB, saw ${parts.length}: ${parts}`);
    assert(reqs.some((r) => /^POST .*\/complete\?key=big\.bin/.test(r)), 'no complete call');
    const row = page.locator('#objects-table tr[data-key="big.bin"]');
    await row.waitFor();
    return { parts: parts.length, size };
  });

  await step('deleting a non-empty bucket is a clear error', async () => {
    await go('#/buckets');
    await page.locator(`#buckets-table tr[data-bucket="${bucket}"] .bucket-delete`).click();
    await confirm();
    await page.locator('#buckets-error').waitFor({ state: 'visible' });
    const text = await page.locator('#buckets-error').textContent();
    assert(/not empty/i.test(text), `error says ${JSON.stringify(text)}`);
    await page.locator(`#buckets-table tr[data-bucket="${bucket}"]`).waitFor();
  });

  await step('delete an object', async () => {
    await go(`#/buckets/${bucket}`);
    await page.locator('#objects-table tr[data-key="dropped.txt"] .object-delete').click();
    await confirm();
    await page.locator('#objects-table tr[data-key="dropped.txt"]').waitFor({ state: 'detached' });
  });

  await step('copy S3 URL', async () => {
    await page.locator(`#objects-table tr[data-key="${photoName}"] .copy-s3`).click();
    await page.waitForFunction(async (want) => (await navigator.clipboard.readText()) === want, `s3://${bucket}/${photoName}`);
    await shot('04-objects');
  });

  await step('XSS key renders as text', async () => {
    await go(`#/buckets/${prep}`);
    const row = page.locator('#objects-table tr.object').filter({ hasText: XSS_KEY });
    await row.waitFor();
    const shown = await row.locator('a.object-link').textContent();
    assert(shown === XSS_KEY, `link text is ${JSON.stringify(shown)}`);
    const injected = await page.evaluate(() => document.querySelectorAll('img[src="x"], img[onerror]').length);
    assert(injected === 0, `${injected} injected <img> elements`);
    await row.locator('a.object-link').click();
    await page.locator('#object-details').waitFor();
    const h1 = await page.locator('#object-key').textContent();
    assert(h1 === XSS_KEY, `detail heading is ${JSON.stringify(h1)}`);
    await page.waitForTimeout(300);
    assert(dialogs.length === 0, `dialogs fired: ${dialogs}`);
    assert(await page.evaluate(() => document.querySelectorAll('img[src="x"], img[onerror]').length) === 0, 'injected <img> on the detail page');
  });

  await step('folders, breadcrumbs and pages', async () => {
    await go(`#/buckets/${prep}`);
    const folder = page.locator('#objects-table tr.folder[data-folder="many/"] a');
    await folder.click();
    await page.waitForFunction(() => location.hash.includes('prefix=many%2F'));
    await page.locator('#objects-table tr[data-key="many/0000.txt"]').waitFor();
    const crumbs = await page.locator('#breadcrumbs li').allTextContents();
    assert(JSON.stringify(crumbs.map((c) => c.trim())) === JSON.stringify(['Buckets', prep, 'many/']), `breadcrumbs ${crumbs}`);
    const counts = [];
    counts.push(await page.locator('#objects-table tr.object').count());
    const pages = Math.ceil(many / 100);
    for (let p = 1; p < pages; p += 1) {
      await page.locator('#page-next').click();
      await page.locator(`#objects-table tr[data-key="many/${String(p * 100).padStart(4, '0')}.txt"]`).waitFor();
      counts.push(await page.locator('#objects-table tr.object').count());
    }
    assert(await page.locator('#page-next').isDisabled(), 'next is enabled on the last page');
    assert(counts.reduce((a, b) => a + b, 0) === many && counts.every((c) => c <= 100), `page sizes ${counts}`);
    await page.locator('#page-prev').click();
    await page.locator('#objects-table tr[data-key="many/0100.txt"]').waitFor();
    const listings = apiRequests.filter((r) => r.includes(`/api/buckets/${prep}/objects`));
    assert(listings.every((r) => /[?&]limit=100(&|$)/.test(r)), `a listing without limit=100: ${listings}`);
    await page.locator('#breadcrumbs a', { hasText: prep }).click();
    await page.locator('#objects-table tr.folder[data-folder="many/"]').waitFor();
    return { pageSizes: counts };
  });

  await step('folders that cross a page boundary are listed once', async () => {
    const dirs = Number(env('PIXELPORT_DIRS', '120'));
    await go(`#/buckets/${prep}?prefix=${encodeURIComponent('dirs/')}`);
    await page.locator('#objects-table tr.folder').first().waitFor();
    const seen = [];
    for (let p = 0; p < 10; p += 1) {
      seen.push(...await page.locator('#objects-table tr.folder').evaluateAll((rows) => rows.map((r) => r.dataset.folder)));
      if (await page.locator('#page-next').isDisabled()) break;
      const first = await page.locator('#objects-table tbody tr').first().getAttribute('data-folder');
      await page.locator('#page-next').click();
      await page.waitForFunction((f) => document.querySelector('#objects-table tbody tr')?.dataset.folder !== f, first);
    }
    const want = Array.from({ length: dirs }, (_, i) => `dirs/d${String(i).padStart(3, '0')}/`);
    assert(JSON.stringify(seen) === JSON.stringify(want),
      `listed ${seen.length} folders, ${new Set(seen).size} distinct; expected ${dirs}: first extra/missing ${
        JSON.stringify(seen.filter((x, i) => x !== want[i]).slice(0, 3))}`);
    return { folders: seen.length };
  });

  await step('transform builder: width 300, WebP', async () => {
    await go(`#/buckets/${bucket}`);
    await page.locator(`#objects-table tr[data-key="${photoName}"] a.object-link`).click();
    await page.locator('#builder').waitFor();
    await page.locator('#preview-size').filter({ hasText: '×' }).waitFor();
    await page.getByLabel('Width (px)').fill('300');
    await page.getByLabel('Format').selectOption('webp');
    await page.waitForFunction(() => {
      const url = document.querySelector('#signed-url').value;
      const box = document.querySelector('.preview-box');
      return /@webp$|\/f:webp\//.test(url) && /rs:[a-z-]+:300:/.test(url) && box.dataset.state === 'loaded';
    });
    const r = await page.evaluate(() => {
      const img = document.querySelector('#preview');
      return {
        url: document.querySelector('#signed-url').value,
        img: document.querySelector('#img-snippet').value,
        options: document.querySelector('#builder-options').textContent,
        naturalWidth: img.naturalWidth,
        naturalHeight: img.naturalHeight,
        type: img.dataset.type,
        info: document.querySelector('#preview-size').textContent,
      };
    });
    assert(r.naturalWidth === 300, `preview is ${r.naturalWidth}×${r.naturalHeight}`);
    // The label tells the truth: the URL is signed with the endpoint's key.
    const label = await page.locator('#signed-url-label').textContent();
    assert(label === 'Signed URL', `URL label says ${JSON.stringify(label)}`);
    assert(!r.url.includes('/unsafe/'), `signed URL ${r.url}`);
    assert(/image\/webp/.test(r.type), `preview type ${r.type}`);
    assert(r.info.startsWith('300 × '), `size line says ${JSON.stringify(r.info)}`);
    assert(r.img.includes('srcset=') && r.img.includes('2x'), `snippet ${r.img}`);
    await page.locator('#copy-url').click();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert(copied === r.url, `clipboard holds ${JSON.stringify(copied)}, field ${JSON.stringify(r.url)}`);
    results.signed_url = copied;
    results.snippet = r.img;
    await shot('05-object-builder');
    return r;
  });

  await step('builder shows a refused value', async () => {
    await page.getByLabel('Width (px)').fill('99999');
    await page.locator('#builder-error').waitFor({ state: 'visible' });
    await page.getByLabel('Width (px)').fill('300');
    await page.locator('#builder-error').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.querySelector('.preview-box').dataset.state === 'loaded');
  });

  await step('cache page', async () => {
    await go('#/cache');
    await page.locator('#cache-entries').waitFor();
    const entries = (await page.locator('#cache-entries').textContent()).trim();
    await shot('06-cache');
    return { entries };
  });

  await step('create an access key', async () => {
    await go('#/keys');
    await page.locator('#keys-table').waitFor();
    await page.getByLabel('Name of the new key').fill('browser test key');
    await page.locator('#key-create').click();
    await page.locator('#new-key').waitFor({ state: 'visible' });
    const ak = await page.locator('#new-access-key').inputValue();
    const sk = await page.locator('#new-secret-key').inputValue();
    assert(ak && sk, 'no key shown');
    await page.locator(`#keys-table tr[data-access-key="${ak}"]`).waitFor();
    const listed = await page.evaluate(async () => JSON.stringify(await (await fetch('/api/keys')).json()));
    assert(!listed.includes(sk), 'GET /api/keys shows the secret');
    results.access_key = ak;
    results.secret_key = sk;
    await shot('07-keys');
    return { access_key: ak };
  });

  await step('settings', async () => {
    await go('#/settings');
    await page.locator('#settings section').first().waitFor();
    const text = await page.locator('#settings').textContent();
    assert(text.includes('****'), 'no masked secret shown');
    results.settings_text = text;
    await shot('08-settings');
  });

  await step('phone width: no horizontal overflow, collapsible nav', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const widths = {};
    for (const [name, hash] of [['objects', `#/buckets/${bucket}`], ['prep', `#/buckets/${prep}`],
      ['builder', `#/object/${bucket}?key=${encodeURIComponent(photoName)}`], ['dashboard', '#/'],
      ['cache', '#/cache'], ['keys', '#/keys'], ['settings', '#/settings'], ['buckets', '#/buckets']]) {
      await go(hash);
      await page.locator('main h1').waitFor();
      // Let images settle before measuring; a page that keeps fetching is reported, not fatal.
      await page.waitForLoadState('networkidle', { timeout: 8000 })
        .catch(() => console.log(`# ${name}: network not idle after 8 s: ${[...pending].map((r) => `${r.method()} ${r.url()}`).join(', ')}`));
      if (name === 'objects') {
        await page.locator('#objects-table').waitFor();
        await shot('09-phone-objects');
      }
      if (name === 'builder') await page.locator('#preview-size').filter({ hasText: '×' }).waitFor();
      const w = await noHorizontalOverflow();
      widths[name] = w.scrollWidth;
      assert(w.scrollWidth <= 390 && w.body <= 390, `${name} page is ${w.scrollWidth}px wide at 390`);
    }
    assert(!(await page.locator('#nav').isVisible()), 'nav is open on a phone before the menu button');
    await page.getByRole('button', { name: 'Menu' }).click();
    await page.locator('#nav a[href="#/cache"]').waitFor({ state: 'visible' });
    await shot('10-phone-nav');
    await page.locator('#nav a[href="#/cache"]').click();
    await page.locator('#cache-stats').waitFor();
    assert(!(await page.locator('#nav').isVisible()), 'nav stays open after choosing a page');
    await page.setViewportSize({ width: 1280, height: 900 });
    return widths;
  });
}

async function afterPhase() {
  await step('log in again', login);

  await step('purge the whole cache', async () => {
    await go('#/cache');
    await page.locator('#cache-entries').waitFor();
    const before = (await page.locator('#cache-entries').textContent()).trim();
    await page.locator('#purge-all').click();
    await confirm();
    await page.locator('#purge-result').filter({ hasText: 'Removed' }).waitFor();
    await page.waitForFunction(() => document.querySelector('#cache-entries').textContent.trim() === '0');
    const removed = await page.locator('#purge-result').textContent();
    results.cache_entries_before_purge = before;
    results.purge_result = removed;
    await shot('11-cache-purged');
    return { before, removed };
  });

  await step('revoke the access key', async () => {
    assert(results.access_key, 'no key from the main phase');
    await go('#/keys');
    const row = page.locator(`#keys-table tr[data-access-key="${results.access_key}"]`);
    await row.locator('.key-revoke').click();
    await confirm();
    await row.waitFor({ state: 'detached' });
  });

  await step('log out', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.locator('#login-form').waitFor();
    const s = await page.evaluate(async () => (await ((r) => r.arrayBuffer().then(() => r))(await fetch('/api/session'))).status);
    assert(s === 401, `GET /api/session after logout answered ${s}`);
  });
}

async function edgesPhase() {
  await step('log in', login);

  await step('the cache page shows the edge', async () => {
    await go('#/cache');
    const row = page.locator('#edge-cache-table tbody tr').first();
    await row.waitFor();
    const edge = await row.getAttribute('data-edge');
    const entries = (await row.locator('.edge-entries').textContent()).trim();
    const ratio = (await row.locator('.edge-hit-ratio').textContent()).trim();
    assert(/^edge-/.test(edge), `edge named ${edge}`);
    assert(entries !== '0', `the edge shows ${entries} entries`);
    assert(/%$/.test(ratio), `hit ratio ${ratio}`);
    await shot('13-cache-edges');
    results.edge_row = { edge, entries, ratio };
    return results.edge_row;
  });

  await step('purge everything empties the edge too', async () => {
    await page.locator('#purge-all').click();
    await confirm();
    await page.locator('#purge-result').filter({ hasText: 'Removed' }).waitFor();
    // The edge reports every 2 s; the page shows it on its next load.
    for (let i = 0; i < 20; i += 1) {
      await go('#/dashboard');
      await go('#/cache');
      const cell = page.locator('#edge-cache-table tbody tr .edge-entries').first();
      await cell.waitFor();
      if ((await cell.textContent()).trim() === '0') return { polls: i + 1 };
      await page.waitForTimeout(500);
    }
    throw new Error('the edge still shows entries after the purge');
  });
}

async function tlsPhase() {
  await step('log in over HTTPS', async () => {
    assert(BASE.startsWith('https://'), `admin URL ${BASE}`);
    await login();
    const proto = await page.evaluate(() => location.protocol);
    assert(proto === 'https:', `page protocol ${proto}`);
  });

  await step('the session cookie is Secure', async () => {
    const cookies = await context.cookies(BASE);
    const session = cookies.find((c) => c.httpOnly);
    assert(session, `cookies: ${JSON.stringify(cookies)}`);
    assert(session.secure === true, `session cookie ${JSON.stringify(session)}`);
    return { name: session.name, secure: session.secure, sameSite: session.sameSite };
  });

  await step('the dashboard loads over HTTP/2', async () => {
    await go('#/');
    await page.locator('#dashboard .stats').waitFor();
    const protocols = await page.evaluate(() => [...new Set(performance.getEntriesByType('resource')
      .concat(performance.getEntriesByType('navigation')).map((e) => e.nextHopProtocol))]);
    assert(protocols.includes('h2'), `protocols ${protocols}`);
    assert(!protocols.includes('http/1.1'), `protocols ${protocols}`);
    await shot('14-dashboard-https');
    results.tls_protocols = protocols;
    return protocols;
  });
}

async function ratelimitPhase() {
  await step('too many wrong passwords say so', async () => {
    await go('#/login');
    const messages = [];
    for (let i = 0; i < 8; i += 1) {
      await page.getByLabel('User').fill(USER);
      await page.getByLabel('Password').fill(`wrong-${i}`);
      await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/api/login')),
        page.locator('#login-submit').click(),
      ]);
      await page.locator('#login-submit:enabled').waitFor();
      await page.locator('#login-error').waitFor({ state: 'visible' });
      const text = await page.locator('#login-error').textContent();
      messages.push(text);
      if (/too many attempts/i.test(text)) break;
    }
    assert(/too many attempts/i.test(messages.at(-1)), `messages: ${JSON.stringify(messages)}`);
    assert(messages.length === 6, `rate limited after ${messages.length} tries, expected 6 (5 failures allowed)`);
    await shot('12-login-rate-limited');
    return { messages };
  });
}

try {
  if (phase === 'main') await mainPhase();
  else if (phase === 'after') await afterPhase();
  else if (phase === 'ratelimit') await ratelimitPhase();
  else if (phase === 'edges') await edgesPhase();
  else if (phase === 'tls') await tlsPhase();
  else throw new Error(`unknown phase ${phase}`);
  await step(`no dialogs, script errors or CSP violations (${phase})`, async () => {
    assert(dialogs.length === 0, `dialogs: ${dialogs}`);
    assert(problems.length === 0, problems.join('\n'));
  });
} finally {
  await browser.close();
  fs.writeFileSync(RESULTS, JSON.stringify(results, null, 2));
  console.log(`screenshots: ${SHOTS}`);
  console.log(`${passed} passed, ${failed} failed`);
}
process.exit(failed ? 1 : 0);
