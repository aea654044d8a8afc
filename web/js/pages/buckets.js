// Buckets: list, create, delete (only when empty: 409 says so), the S3 public-read toggle
// and the unsigned-image toggle (unsigned image URLs may read the bucket's resized images,
// while its originals stay private).

import * as api from '../api.js';
import { h, put, field, timeEl } from '../dom.js';
import { errorBox, confirmAction, toast, loading } from '../ui.js';

export function objectsHref(bucket, prefix) {
  return `#/buckets/${encodeURIComponent(bucket)}${prefix ? `?prefix=${encodeURIComponent(prefix)}` : ''}`;
}

function switchFor(b, error, { id, cls, path, field, on, off }) {
  const toggle = h('input', { type: 'checkbox', id: `${id}-${b.name}`, class: cls, checked: !!b[field] });
  toggle.addEventListener('change', async () => {
    error.show(null);
    const want = toggle.checked;
    toggle.disabled = true;
    try {
      const r = await api.put(['buckets', b.name, path], { [field]: want });
      toggle.checked = !!r[field];
      toast(`${b.name}: ${r[field] ? on : off}`);
    } catch (e) {
      toggle.checked = !want;
      error.show(`Could not change ${b.name}: ${e.message}`);
    } finally {
      toggle.disabled = false;
    }
  });
  return toggle;
}

function row(b, error, reload) {
  const toggle = switchFor(b, error, {
    id: 'public', cls: 'public-toggle', path: 'public', field: 'public',
    on: 'S3 public-read', off: 'S3 private',
  });
  const unsigned = switchFor(b, error, {
    id: 'unsigned', cls: 'unsigned-toggle', path: 'unsigned-images', field: 'unsigned_images',
    on: 'unsigned image URLs allowed', off: 'image URLs must be signed',
  });
  const del = h('button', { type: 'button', class: 'danger small bucket-delete', 'aria-label': `Delete bucket ${b.name}` }, 'Delete');
  del.addEventListener('click', async () => {
    error.show(null);
    if (!await confirmAction(`Delete the bucket “${b.name}”? Only an empty bucket can be deleted.`)) return;
    try {
      await api.del(['buckets', b.name]);
      toast(`Deleted ${b.name}`);
      reload();
    } catch (e) {
      if (e.status === 409) error.show(`The bucket “${b.name}” is not empty: delete its objects first.`);
      else error.show(`Could not delete ${b.name}: ${e.message}`);
    }
  });
  return h('tr', { dataset: { bucket: b.name } },
    h('th', { scope: 'row' }, h('a', { href: objectsHref(b.name) }, b.name)),
    h('td', { class: 'hide-narrow' }, timeEl(b.created)),
    h('td', null,
      h('label', { class: 'switch', for: toggle.id }, toggle, h('span', null, 'Public read (S3)')),
      h('label', { class: 'switch', for: unsigned.id, title: 'Unsigned image URLs may read resized images of this bucket; the originals stay private' },
        unsigned, h('span', null, 'Unsigned image URLs'))),
    h('td', { class: 'actions-cell' }, del));
}

export async function render(main, { signal }) {
  document.title = 'Buckets · Pixelport';
  const error = errorBox('buckets-error');
  const list = h('div', { id: 'buckets-list' }, loading());
  const name = h('input', {
    id: 'bucket-name', name: 'name', required: true, autocomplete: 'off', spellcheck: 'false',
    pattern: '[a-z0-9][a-z0-9.\\-]{1,61}[a-z0-9]', placeholder: 'photos',
  });
  const form = h('form', { id: 'bucket-create-form', class: 'inline-form' },
    field('New bucket name', name, '3–63 characters: lowercase letters, digits, dots and hyphens.'),
    h('button', { type: 'submit', id: 'bucket-create' }, 'Create bucket'));

  async function reload() {
    const data = await api.get(['buckets'], { signal });
    const buckets = data.buckets || [];
    if (!buckets.length) {
      put(list, h('p', { id: 'buckets-empty', class: 'muted' }, 'No buckets yet.'));
      return;
    }
    put(list, h('div', { class: 'table-wrap' }, h('table', { id: 'buckets-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Created'),
        h('th', { scope: 'col' }, 'Access'), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', null, buckets.map((b) => row(b, error, reload))))));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.show(null);
    const n = name.value.trim();
    if (!n) { error.show('Enter a bucket name.'); return; }
    try {
      await api.post(['buckets'], { name: n });
      name.value = '';
      toast(`Created ${n}`);
      await reload();
    } catch (err) {
      if (err.status === 409) error.show(`A bucket named “${n}” already exists.`);
      else if (err.status === 400) error.show(`Invalid bucket name: ${err.message}`);
      else error.show(`Could not create the bucket: ${err.message}`);
    }
  });

  main.append(h('h1', null, 'Buckets'), h('section', { class: 'card' }, form), error, list);
  await reload();
}
