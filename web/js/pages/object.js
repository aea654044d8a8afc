// One object: its details and metadata, and for images the transform builder: every change
// of a control asks POST /api/sign (debounced) for a signed URL, loads the preview from the
// answer's `preview` path and shows the URL and an <img srcset> snippet to copy.

import * as api from '../api.js';
import { h, put, field, fmtBytes, timeEl } from '../dom.js';
import { errorBox, confirmAction, toast, copyButton, loading } from '../ui.js';
import { objectsHref } from './buckets.js';

const DEBOUNCE_MS = 300;
const RESIZING = ['fit', 'fill', 'fill-down', 'force', 'auto'];
const GRAVITY = [
  ['ce', 'centre'], ['no', 'north (top)'], ['so', 'south (bottom)'], ['ea', 'east (right)'],
  ['we', 'west (left)'], ['noea', 'north-east'], ['nowe', 'north-west'], ['soea', 'south-east'],
  ['sowe', 'south-west'], ['sm', 'smart'],
];
const FORMATS = [['', 'keep the source’s'], ['jpeg', 'JPEG'], ['png', 'PNG'], ['webp', 'WebP'], ['avif', 'AVIF'], ['gif', 'GIF']];

function parentPrefix(key) {
  const i = key.lastIndexOf('/');
  return i >= 0 ? key.slice(0, i + 1) : '';
}

function details(o) {
  const rows = [
    ['Key', o.key], ['Size', `${fmtBytes(o.size)} (${o.size} bytes)`], ['Content type', o.content_type],
    ['ETag', o.etag], ['Last modified', timeEl(o.last_modified)], ['S3 URL', o.s3_url], ['HTTP URL', o.http_url],
  ];
  const meta = Object.entries(o.metadata || {});
  return h('section', { class: 'card' },
    h('h2', null, 'Details'),
    h('dl', { id: 'object-details', class: 'kv' },
      rows.map(([k, v]) => [h('dt', null, k), h('dd', { class: 'break' }, v === null || v === undefined ? '—' : v)])),
    h('h3', null, 'Metadata'),
    meta.length
      ? h('dl', { id: 'object-metadata', class: 'kv' }, meta.map(([k, v]) => [h('dt', { class: 'break' }, k), h('dd', { class: 'break' }, String(v))]))
      : h('p', { class: 'muted', id: 'object-metadata-empty' }, 'No user metadata.'));
}

function select(id, options, value) {
  return h('select', { id }, options.map(([v, label]) => h('option', { value: v, selected: v === value ? true : undefined }, label)));
}

function numberInput(id, attrs) {
  return h('input', { id, type: 'number', inputmode: 'numeric', ...attrs });
}

/** The builder's controls → the /api/sign body (only the fields that are set). */
export function signBody(bucket, key, c) {
  const body = { bucket, key, resizing_type: c.resizing.value, gravity: c.gravity.value };
  const int = (el) => (el.value.trim() === '' ? null : Number(el.value));
  const w = int(c.width); const ht = int(c.height); const q = int(c.quality);
  const dpr = c.dpr.value.trim() === '' ? null : Number(c.dpr.value);
  if (w !== null) body.width = w;
  if (ht !== null) body.height = ht;
  if (q !== null) body.quality = q;
  if (dpr !== null) body.dpr = dpr;
  if (c.format.value) body.format = c.format.value;
  return body;
}

function builder(bucket, key, signal) {
  const c = {
    width: numberInput('tb-width', { min: 0, max: 16384, step: 1, placeholder: 'auto' }),
    height: numberInput('tb-height', { min: 0, max: 16384, step: 1, placeholder: 'auto' }),
    resizing: select('tb-resizing', RESIZING.map((r) => [r, r]), 'fit'),
    gravity: select('tb-gravity', GRAVITY, 'ce'),
    format: select('tb-format', FORMATS, ''),
    quality: numberInput('tb-quality', { min: 1, max: 100, step: 1, placeholder: 'default' }),
    dpr: h('input', { id: 'tb-dpr', type: 'number', inputmode: 'decimal', min: 1, max: 8, step: 0.5, value: '1' }),
  };
  const error = errorBox('builder-error');
  const url = h('input', { id: 'signed-url', readonly: true, class: 'mono', spellcheck: 'false' });
  const urlLabel = h('label', { for: 'signed-url', id: 'signed-url-label' }, 'URL');
  const snippet = h('textarea', { id: 'img-snippet', readonly: true, rows: 4, class: 'mono', spellcheck: 'false' });
  const options = h('code', { id: 'builder-options' });
  const preview = h('img', { id: 'preview', alt: `Preview of ${key}`, decoding: 'async' });
  const previewInfo = h('p', { id: 'preview-size', class: 'muted', 'aria-live': 'polite' }, 'Loading preview…');
  const previewBox = h('div', { class: 'preview-box', dataset: { state: 'loading' } }, preview);

  let timer = 0;
  let seq = 0;
  let fetchCtrl = null;
  let objectUrl = '';

  async function loadPreview(path, mine) {
    if (fetchCtrl) fetchCtrl.abort();
    fetchCtrl = new AbortController();
    previewBox.dataset.state = 'loading';
    put(previewInfo, 'Loading preview…');
    // fetch + blob: URL so the content type, byte size and any error text can be shown.
    let res;
    try {
      res = await fetch(path, { credentials: 'same-origin', signal: fetchCtrl.signal });
    } catch (e) {
      if (e.name !== 'AbortError') { previewBox.dataset.state = 'error'; put(previewInfo, `Preview failed: ${e.message}`); }
      return;
    }
    if (!res.ok) {
      const text = (await res.text().catch(() => '')).slice(0, 300);
      if (mine !== seq) return;
      previewBox.dataset.state = 'error';
      put(previewInfo, `Preview failed: HTTP ${res.status}${text ? ` — ${text}` : ''}`);
      return;
    }
    const blob = await res.blob();
    if (mine !== seq) return;
    const type = res.headers.get('Content-Type') || blob.type;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(blob);
    preview.onload = null;
    preview.addEventListener('load', () => {
      if (mine !== seq) return;
      previewBox.dataset.state = 'loaded';
      preview.dataset.type = type;
      put(previewInfo, `${preview.naturalWidth} × ${preview.naturalHeight} px · ${type} · ${fmtBytes(blob.size)}`);
    }, { once: true });
    preview.addEventListener('error', () => {
      if (mine !== seq) return;
      previewBox.dataset.state = 'error';
      put(previewInfo, `The browser cannot show ${type}.`);
    }, { once: true });
    preview.src = objectUrl;
  }

  async function sign() {
    seq += 1;
    const mine = seq;
    error.show(null);
    let r;
    try {
      r = await api.post(['sign'], signBody(bucket, key, c), { signal });
    } catch (e) {
      if (signal.aborted || mine !== seq) return;
      error.show(`Cannot build this URL: ${e.message}`);
      previewBox.dataset.state = 'error';
      return;
    }
    if (mine !== seq) return;
    // The label says what the URL is: signed with the endpoint's key, or unsigned.
    put(urlLabel, r.signed ? 'Signed URL' : 'Unsigned URL');
    urlLabel.dataset.signed = r.signed ? 'true' : 'false';
    url.value = r.url || '';
    snippet.value = r.img || '';
    // The source's placeholder (/info: ThumbHash and dominant colour) stands behind the
    // preview until it loads, as the snippet's style does on a page.
    if (r.placeholder) {
      previewBox.style.background =
        `${r.placeholder.dominant_color} url("${r.placeholder.data_url}") center / cover no-repeat`;
      previewBox.dataset.placeholder = r.placeholder.dominant_color;
    } else {
      previewBox.style.background = '';
      delete previewBox.dataset.placeholder;
    }
    put(options, r.options || '(none)');
    await loadPreview(r.preview, mine);
  }

  function changed() {
    clearTimeout(timer);
    previewBox.dataset.state = 'pending';
    timer = setTimeout(sign, DEBOUNCE_MS);
  }
  for (const el of Object.values(c)) {
    el.addEventListener('input', changed);
    el.addEventListener('change', changed);
  }
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    if (fetchCtrl) fetchCtrl.abort();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
  });

  const form = h('form', { id: 'builder', class: 'builder-grid', novalidate: true },
    field('Width (px)', c.width), field('Height (px)', c.height),
    field('Resizing type', c.resizing), field('Gravity', c.gravity),
    field('Format', c.format), field('Quality (1–100)', c.quality), field('DPR', c.dpr));
  form.addEventListener('submit', (e) => { e.preventDefault(); clearTimeout(timer); sign(); });

  const section = h('section', { class: 'card', id: 'transform-builder' },
    h('h2', null, 'Transform builder'),
    form, error,
    h('div', { class: 'builder-out' },
      h('div', null, previewBox, previewInfo),
      h('div', null,
        h('p', null, 'Options: ', options),
        h('div', { class: 'field' }, urlLabel,
          h('div', { class: 'with-button' }, url, copyButton('copy-url', 'Copy URL', () => url.value, 'URL'))),
        h('div', { class: 'field' }, h('label', { for: 'img-snippet' }, '<img> snippet (1x / 2x)'),
          snippet, h('div', { class: 'actions' }, copyButton('copy-snippet', 'Copy snippet', () => snippet.value, 'Snippet'))))));
  sign();
  return section;
}

export async function render(main, { params, query, signal }) {
  const bucket = params.bucket;
  const key = query.get('key') || '';
  document.title = `${key} · Pixelport`;
  const box = h('div', { id: 'object-page' }, loading());
  const error = errorBox('object-error');
  const back = objectsHref(bucket, parentPrefix(key));
  main.append(
    h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' }, h('ol', null,
      h('li', null, h('a', { href: '#/buckets' }, 'Buckets')),
      h('li', null, h('a', { href: objectsHref(bucket, '') }, bucket)),
      parentPrefix(key) ? h('li', null, h('a', { href: back }, parentPrefix(key))) : null)),
    h('h1', { id: 'object-key', class: 'break' }, key.slice(parentPrefix(key).length) || key),
    error, box);

  const o = await api.get(['buckets', bucket, 'object'], { query: { key }, signal });
  const del = h('button', { type: 'button', id: 'object-delete', class: 'danger' }, 'Delete object');
  del.addEventListener('click', async () => {
    if (!await confirmAction(`Delete “${key}” from ${bucket}?`)) return;
    try {
      await api.del(['buckets', bucket, 'object'], { query: { key } });
      toast(`Deleted ${key}`);
      location.hash = back;
    } catch (e) {
      error.show(`Could not delete: ${e.message}`);
    }
  });
  const isImage = o.image || o.thumbnail || (o.content_type || '').startsWith('image/');
  put(box,
    isImage ? builder(bucket, key, signal) : h('p', { class: 'muted' }, 'Not an image the image endpoint can read: no transform builder.'),
    details(o),
    h('div', { class: 'actions' },
      copyButton('copy-s3-url', 'Copy S3 URL', () => o.s3_url, 'S3 URL'), del));
}
