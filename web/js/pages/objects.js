// Objects of one bucket, one "folder" (prefix) at a time: breadcrumbs, pages of at most
// PAGE_SIZE entries fetched with `after` (never the whole bucket), lazy thumbnails,
// drag-and-drop or file-input upload with a progress bar per file, delete, copy S3 URL.

import * as api from '../api.js';
import { h, put, fmtBytes, timeEl } from '../dom.js';
import { errorBox, confirmAction, toast, copyText, loading } from '../ui.js';
import { uploadFile } from '../upload.js';
import { objectsHref } from './buckets.js';

const PAGE_SIZE = 100;
const CONCURRENT_UPLOADS = 3;

/** A short label for an object without a thumbnail: its extension, else "file". */
function fileLabel(key) {
  const m = /\.([A-Za-z0-9]{1,4})$/.exec(key);
  return m ? m[1].toLowerCase() : 'file';
}

export function objectHref(bucket, key) {
  return `#/object/${encodeURIComponent(bucket)}?key=${encodeURIComponent(key)}`;
}

function breadcrumbs(bucket, prefix) {
  const parts = prefix.split('/').filter((p, i, all) => p !== '' || i < all.length - 1);
  const items = [h('li', null, h('a', { href: '#/buckets' }, 'Buckets'))];
  const here = parts.length === 0;
  items.push(h('li', null, here
    ? h('span', { 'aria-current': 'page' }, bucket)
    : h('a', { href: objectsHref(bucket, '') }, bucket)));
  let acc = '';
  parts.forEach((p, i) => {
    acc += `${p}/`;
    const last = i === parts.length - 1;
    items.push(h('li', null, last
      ? h('span', { 'aria-current': 'page' }, `${p}/`)
      : h('a', { href: objectsHref(bucket, acc) }, `${p}/`)));
  });
  return h('nav', { id: 'breadcrumbs', class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' }, h('ol', null, items));
}

export async function render(main, { params, query, signal }) {
  const bucket = params.bucket;
  const prefix = query.get('prefix') || '';
  document.title = `${bucket}/${prefix} · Pixelport`;

  const error = errorBox('objects-error');
  const listing = h('div', { id: 'objects-list' }, loading());
  const summary = h('p', { id: 'objects-summary', class: 'muted' });
  const prev = h('button', { type: 'button', id: 'page-prev', class: 'secondary', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', id: 'page-next', class: 'secondary', disabled: true }, 'Next →');
  const pageLabel = h('span', { id: 'page-number' }, 'Page 1');
  const pager = h('div', { class: 'pager' }, prev, pageLabel, next);

  // afters[i] is the `after` token that fetches page i (page 0 has none).
  const afters = [''];
  let page = 0;

  function objectRow(o) {
    const name = o.key.slice(prefix.length);
    const thumb = o.thumbnail
      ? h('img', { src: o.thumbnail, loading: 'lazy', decoding: 'async', width: 48, height: 48, alt: '', class: 'thumb' })
      : h('span', { class: 'thumb none', 'aria-hidden': 'true' }, fileLabel(o.key));
    const copy = h('button', { type: 'button', class: 'secondary small copy-s3', 'aria-label': `Copy S3 URL of ${o.key}` }, 'Copy S3 URL');
    copy.addEventListener('click', () => copyText(o.s3_url || `s3://${bucket}/${o.key}`, 'S3 URL'));
    const del = h('button', { type: 'button', class: 'danger small object-delete', 'aria-label': `Delete ${o.key}` }, 'Delete');
    del.addEventListener('click', async () => {
      error.show(null);
      if (!await confirmAction(`Delete “${o.key}” from ${bucket}?`)) return;
      try {
        await api.del(['buckets', bucket, 'object'], { query: { key: o.key } });
        toast(`Deleted ${o.key}`);
        await load();
      } catch (e) {
        error.show(`Could not delete ${o.key}: ${e.message}`);
      }
    });
    return h('tr', { class: 'object', dataset: { key: o.key } },
      h('td', { class: 'thumb-cell' }, thumb),
      h('th', { scope: 'row', class: 'name' }, h('a', { href: objectHref(bucket, o.key), class: 'object-link' }, name)),
      h('td', { class: 'num' }, fmtBytes(o.size)),
      h('td', { class: 'hide-narrow' }, timeEl(o.last_modified)),
      h('td', { class: 'actions-cell' }, copy, ' ', del));
  }

  function folderRow(f) {
    return h('tr', { class: 'folder', dataset: { folder: f } },
      h('td', { class: 'thumb-cell' }, h('span', { class: 'thumb folder-icon', 'aria-hidden': 'true' }, 'dir')),
      h('th', { scope: 'row', class: 'name' }, h('a', { href: objectsHref(bucket, f), class: 'folder-link' }, f.slice(prefix.length))),
      h('td', { class: 'num' }, '—'),
      h('td', { class: 'hide-narrow' }),
      h('td'));
  }

  async function load() {
    const data = await api.get(['buckets', bucket, 'objects'], {
      query: { prefix, after: afters[page], limit: PAGE_SIZE }, signal,
    });
    const folders = data.folders || [];
    const objects = data.objects || [];
    if (data.next) afters[page + 1] = data.next;
    else afters.length = page + 1;
    prev.disabled = page === 0;
    next.disabled = !data.next;
    put(pageLabel, `Page ${page + 1}`);
    pager.hidden = page === 0 && !data.next;
    put(summary, `${folders.length} folder${folders.length === 1 ? '' : 's'}, ${objects.length} object${objects.length === 1 ? '' : 's'} on this page`);
    if (!folders.length && !objects.length) {
      put(listing, h('p', { id: 'objects-empty', class: 'muted' },
        prefix ? 'This folder is empty.' : 'This bucket is empty: drop files here or choose them above.'));
      return;
    }
    put(listing, h('div', { class: 'table-wrap' }, h('table', { id: 'objects-table' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Preview')),
        h('th', { scope: 'col' }, 'Name'),
        h('th', { scope: 'col', class: 'num' }, 'Size'),
        h('th', { scope: 'col', class: 'hide-narrow' }, 'Modified'),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', null, folders.map(folderRow), objects.map(objectRow)))));
  }

  prev.addEventListener('click', async () => { if (page > 0) { page -= 1; await safeLoad(); } });
  next.addEventListener('click', async () => { if (afters[page + 1]) { page += 1; await safeLoad(); } });
  async function safeLoad() {
    try { await load(); } catch (e) { if (!signal.aborted) error.show(e); }
  }

  // --- upload ---------------------------------------------------------------
  const uploads = h('ul', { id: 'uploads', class: 'uploads', 'aria-label': 'Uploads' });
  const queue = [];
  let running = 0;
  let reloadTimer = 0;

  function pump() {
    while (running < CONCURRENT_UPLOADS && queue.length) {
      const job = queue.shift();
      running += 1;
      job().finally(() => { running -= 1; pump(); });
    }
  }

  function enqueue(files) {
    for (const file of files) {
      const key = prefix + file.name;
      const bar = h('progress', { max: Math.max(file.size, 1), value: 0, 'aria-label': `Upload progress of ${file.name}` });
      const state = h('span', { class: 'upload-state' }, 'waiting');
      const item = h('li', { class: 'upload', dataset: { key, state: 'waiting' } },
        h('span', { class: 'upload-name' }, file.name), bar, state);
      uploads.append(item);
      queue.push(async () => {
        item.dataset.state = 'uploading';
        const up = uploadFile(bucket, key, file, (loaded, total) => {
          bar.value = loaded;
          put(state, `${Math.floor((100 * loaded) / Math.max(total, 1))} %`);
        });
        put(state, up.multipart ? 'multipart…' : '0 %');
        try {
          await up.promise;
          bar.value = bar.max;
          item.dataset.state = 'done';
          put(state, 'done');
          clearTimeout(reloadTimer);
          reloadTimer = setTimeout(safeLoad, 150);
        } catch (e) {
          item.dataset.state = 'error';
          put(state, `failed: ${e.message}`);
        }
      });
    }
    pump();
  }

  const fileInput = h('input', { type: 'file', id: 'file-input', multiple: true });
  fileInput.addEventListener('change', () => {
    enqueue([...fileInput.files]);
    fileInput.value = '';
  });
  const dropzone = h('div', { id: 'dropzone', class: 'dropzone' },
    h('p', null, 'Drop files here to upload them to ', h('code', null, `${bucket}/${prefix}`), ', or '),
    h('label', { for: 'file-input', class: 'button' }, 'Upload files'), fileInput,
    h('small', { class: 'hint' }, 'Files over 16 MiB go up in 8 MiB parts.'));
  for (const type of ['dragenter', 'dragover']) {
    dropzone.addEventListener(type, (e) => { e.preventDefault(); dropzone.classList.add('over'); });
  }
  dropzone.addEventListener('dragleave', () => dropzone.classList.remove('over'));
  dropzone.addEventListener('drop', (e) => {
    e.preventDefault();
    dropzone.classList.remove('over');
    const files = e.dataTransfer ? [...e.dataTransfer.files] : [];
    if (files.length) enqueue(files);
  });

  signal.addEventListener('abort', () => clearTimeout(reloadTimer));

  main.append(
    breadcrumbs(bucket, prefix),
    h('h1', { class: 'break' }, prefix ? `${bucket}/${prefix}` : bucket),
    dropzone, uploads, error, summary, listing, pager);
  await load();
}
