// Cache: GET /api/cache statistics; purge one object's variants, a prefix, a bucket or
// everything (POST /api/cache/purge), each after a confirmation.

import * as api from '../api.js';
import { h, put, field, fmtBytes, fmtNumber } from '../dom.js';
import { errorBox, confirmAction, toast, loading } from '../ui.js';

function stats(c) {
  const pct = c.hit_ratio === null || c.hit_ratio === undefined ? '—' : `${(c.hit_ratio * 100).toFixed(1)} %`;
  const rows = [
    ['cache-enabled', 'Enabled', c.enabled ? 'yes' : 'no'],
    ['cache-path', 'Path', c.path || '—'],
    ['cache-entries', 'Entries', fmtNumber(c.entries)],
    ['cache-bytes', 'Size', `${fmtBytes(c.bytes)} of ${fmtBytes(c.max_bytes)}`],
    ['cache-hits', 'Hits', fmtNumber(c.hits)],
    ['cache-misses', 'Misses', fmtNumber(c.misses)],
    ['cache-hit-ratio', 'Hit ratio', pct],
    ['cache-evictions', 'Evictions', fmtNumber(c.evictions)],
  ];
  return h('dl', { class: 'kv', id: 'cache-stats' },
    rows.map(([id, k, v]) => [h('dt', null, k), h('dd', { id, class: 'break' }, v)]));
}

// The edges' caches, as each last reported over the tunnel (purges reach them too).
function edges(list) {
  if (!list.length) {
    return h('p', { class: 'muted' }, 'No edge is connected through the tunnel.');
  }
  const pct = (r) => (r === null || r === undefined ? '—' : `${(r * 100).toFixed(1)} %`);
  return h('div', { class: 'table-wrap' }, h('table', { id: 'edge-cache-table' },
    h('thead', null, h('tr', null,
      ['Edge', 'Entries', 'Memory', 'Disk', 'Hit ratio'].map((t) => h('th', null, t)))),
    h('tbody', null, list.map((e) => h('tr', { 'data-edge': e.edge },
      h('td', null, e.edge),
      h('td', { class: 'edge-entries' }, fmtNumber(e.entries)),
      h('td', null, fmtBytes(e.memory_bytes)),
      h('td', null, fmtBytes(e.disk_bytes)),
      h('td', { class: 'edge-hit-ratio' }, pct(e.hit_ratio)))))));
}

export async function render(main, { signal }) {
  document.title = 'Cache · Pixelport';
  const box = h('div', null, loading());
  const error = errorBox('cache-error');
  const result = h('p', { id: 'purge-result', role: 'status', 'aria-live': 'polite' });

  const edgesBox = h('div', { id: 'edge-caches' });

  async function reload() {
    const c = await api.get(['cache'], { signal });
    put(box, stats(c));
    put(edgesBox, edges(c.edges || []));
  }

  async function purge(body, question) {
    error.show(null);
    if (!await confirmAction(question, 'Purge')) return;
    try {
      const r = await api.post(['cache', 'purge'], body);
      put(result, `Removed ${fmtNumber(r.removed)} cached variant${r.removed === 1 ? '' : 's'}.`);
      toast('Cache purged');
      await reload();
    } catch (e) {
      error.show(`Purge failed: ${e.message}`);
    }
  }

  const objBucket = h('input', { id: 'purge-object-bucket', required: true, autocomplete: 'off', spellcheck: 'false' });
  const objKey = h('input', { id: 'purge-object-key', required: true, autocomplete: 'off', spellcheck: 'false' });
  const objForm = h('form', { id: 'purge-object-form', class: 'inline-form' },
    field('Bucket', objBucket), field('Object key', objKey),
    h('button', { type: 'submit', id: 'purge-object' }, 'Purge object'));
  objForm.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!objBucket.value.trim() || !objKey.value) { error.show('Enter the bucket and the object key.'); return; }
    purge({ bucket: objBucket.value.trim(), key: objKey.value },
      `Purge every cached variant of “${objBucket.value.trim()}/${objKey.value}”?`);
  });

  const pBucket = h('input', { id: 'purge-prefix-bucket', required: true, autocomplete: 'off', spellcheck: 'false' });
  const pPrefix = h('input', { id: 'purge-prefix-prefix', autocomplete: 'off', spellcheck: 'false', placeholder: 'empty = the whole bucket' });
  const pForm = h('form', { id: 'purge-prefix-form', class: 'inline-form' },
    field('Bucket', pBucket), field('Prefix', pPrefix),
    h('button', { type: 'submit', id: 'purge-prefix' }, 'Purge prefix'));
  pForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const b = pBucket.value.trim();
    if (!b) { error.show('Enter the bucket.'); return; }
    const body = pPrefix.value ? { bucket: b, prefix: pPrefix.value } : { bucket: b };
    purge(body, pPrefix.value
      ? `Purge the cached variants of every object under “${b}/${pPrefix.value}”?`
      : `Purge the cached variants of every object in “${b}”?`);
  });

  const all = h('button', { type: 'button', id: 'purge-all', class: 'danger' }, 'Purge everything');
  all.addEventListener('click', () => purge({ all: true }, 'Purge the whole cache? Every variant will be made again on its next request.'));

  main.append(h('h1', null, 'Cache'),
    h('section', { class: 'card' }, h('h2', null, 'Statistics'), box),
    h('section', { class: 'card' }, h('h2', null, 'Edge caches'),
      h('p', { class: 'muted' }, 'A purge here reaches every connected edge before it returns.'),
      edgesBox),
    h('section', { class: 'card' }, h('h2', null, 'Purge'), error, result,
      h('h3', null, 'One object'), objForm,
      h('h3', null, 'A prefix or a bucket'), pForm,
      h('h3', null, 'Everything'), h('div', { class: 'actions' }, all)));
  await reload();
}
