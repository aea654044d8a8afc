// Settings: the effective configuration (GET /api/settings), secrets already masked by the
// server, drawn as nested definition lists.

import * as api from '../api.js';
import { h } from '../dom.js';
import { loading } from '../ui.js';

function scalar(v) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, 'not set');
  if (typeof v === 'boolean') return h('span', { class: 'bool' }, v ? 'true' : 'false');
  if (typeof v === 'string') return h('span', { class: v === '********' ? 'masked' : 'str' }, v === '' ? '""' : v);
  return h('span', { class: 'num' }, String(v));
}

/** A value as nested <dl>s (objects) and <ol>s (arrays of non-scalars). */
export function renderValue(v) {
  if (Array.isArray(v)) {
    if (!v.length) return h('span', { class: 'muted' }, '[ ]');
    if (v.every((x) => x === null || typeof x !== 'object')) {
      return h('ul', { class: 'inline-list' }, v.map((x) => h('li', null, scalar(x))));
    }
    return h('ol', { class: 'nested' }, v.map((x) => h('li', null, renderValue(x))));
  }
  if (v && typeof v === 'object') {
    const entries = Object.entries(v);
    if (!entries.length) return h('span', { class: 'muted' }, '{ }');
    return h('dl', { class: 'kv nested' },
      entries.map(([k, x]) => [h('dt', { class: 'mono' }, k), h('dd', { class: 'break' }, renderValue(x))]));
  }
  return scalar(v);
}

export async function render(main, { signal }) {
  document.title = 'Settings · Pixelport';
  const box = h('div', { id: 'settings' }, loading());
  main.append(h('h1', null, 'Settings'),
    h('p', { class: 'muted' }, 'The effective configuration (file, then environment overrides). Secrets show as ********. Change them in the config file and restart.'),
    box);
  const { config } = await api.get(['settings'], { signal });
  const sections = Object.entries(config || {});
  box.replaceChildren(...sections.map(([name, value]) => h('section', { class: 'card', dataset: { section: name } },
    h('h2', { class: 'mono' }, `[${name}]`), renderValue(value))));
}
