// Access keys: list (GET /api/keys), create with a name and a scope (the secret is shown
// once; a scope is one of the common key policies: read-only on a bucket, write-only to a
// prefix, full access to a bucket), revoke.

import * as api from '../api.js';
import { h, put, field, timeEl } from '../dom.js';
import { errorBox, confirmAction, toast, copyButton, loading } from '../ui.js';

export async function render(main, { signal }) {
  document.title = 'Access keys · Pixelport';
  const error = errorBox('keys-error');
  const list = h('div', { id: 'keys-list' }, loading());
  const created = h('div', { id: 'new-key', class: 'card warning', hidden: true });
  const name = h('input', { id: 'key-name', required: true, autocomplete: 'off', placeholder: 'backup script' });
  const scope = h('select', { id: 'key-scope' },
    h('option', { value: '' }, 'Everything (like the root key)'),
    h('option', { value: 'read-only' }, 'Read-only on one bucket'),
    h('option', { value: 'write-only' }, 'Upload-only to one bucket or prefix'),
    h('option', { value: 'full' }, 'Full access to one bucket'));
  const bucket = h('input', { id: 'key-bucket', autocomplete: 'off', placeholder: 'images' });
  const prefix = h('input', { id: 'key-prefix', autocomplete: 'off', placeholder: 'uploads/' });
  const scoped = h('div', { id: 'key-scope-fields', class: 'inline-form', hidden: true },
    field('Bucket', bucket), field('Prefix (optional)', prefix));
  scope.addEventListener('change', () => { scoped.hidden = !scope.value; });
  const form = h('form', { id: 'key-create-form', class: 'inline-form' },
    field('Name of the new key', name), field('May do', scope), scoped,
    h('button', { type: 'submit', id: 'key-create' }, 'Create key'));

  // What a key's policy covers, in a few words (its resources).
  const scopeText = (k) => {
    if (!k.policy) return 'everything';
    const res = new Set();
    for (const st of [].concat(k.policy.Statement || [])) {
      for (const r of [].concat(st.Resource || [])) res.add(String(r).replace('arn:aws:s3:::', ''));
    }
    return `policy: ${[...res].join(', ')}`;
  };

  async function reload() {
    const keys = (await api.get(['keys'], { signal })).keys || [];
    put(list, h('div', { class: 'table-wrap' }, h('table', { id: 'keys-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Access key'), h('th', { scope: 'col' }, 'Name'),
        h('th', { scope: 'col' }, 'Scope'),
        h('th', { scope: 'col', class: 'hide-narrow' }, 'Created'), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', null, keys.map((k) => {
        let action = h('span', { class: 'muted' }, 'root key (config)');
        if (!k.root) {
          action = h('button', { type: 'button', class: 'danger small key-revoke', 'aria-label': `Revoke ${k.access_key}` }, 'Revoke');
          action.addEventListener('click', async () => {
            error.show(null);
            if (!await confirmAction(`Revoke the key ${k.access_key} (${k.name})? Clients using it are refused at once.`, 'Revoke')) return;
            try {
              await api.del(['keys', k.access_key]);
              toast(`Revoked ${k.access_key}`);
              created.hidden = true;
              created.replaceChildren();
              await reload();
            } catch (e) {
              error.show(`Could not revoke: ${e.message}`);
            }
          });
        }
        return h('tr', { dataset: { accessKey: k.access_key } },
          h('th', { scope: 'row', class: 'mono break' }, k.access_key),
          h('td', { class: 'break' }, k.name || ''),
          h('td', { class: 'break key-scope' }, scopeText(k)),
          h('td', { class: 'hide-narrow' }, timeEl(k.created)),
          h('td', { class: 'actions-cell' }, action));
      })))));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.show(null);
    const n = name.value.trim();
    if (!n) { error.show('Give the key a name.'); return; }
    const body = { name: n };
    if (scope.value) {
      if (!bucket.value.trim()) { error.show('Name the bucket the key is for.'); return; }
      body.policy = { shape: scope.value, bucket: bucket.value.trim(), prefix: prefix.value.trim() };
    }
    try {
      const k = await api.post(['keys'], body);
      name.value = '';
      const ak = h('input', { id: 'new-access-key', readonly: true, class: 'mono', value: k.access_key });
      const sk = h('input', { id: 'new-secret-key', readonly: true, class: 'mono', value: k.secret_key });
      put(created,
        h('h2', null, `New key “${k.name}”`),
        h('p', { role: 'alert' }, h('strong', null, 'Copy the secret now: it is shown only this once.')),
        h('div', { class: 'field' }, h('label', { for: 'new-access-key' }, 'Access key ID'),
          h('div', { class: 'with-button' }, ak, copyButton('copy-access-key', 'Copy', () => ak.value, 'Access key'))),
        h('div', { class: 'field' }, h('label', { for: 'new-secret-key' }, 'Secret access key'),
          h('div', { class: 'with-button' }, sk, copyButton('copy-secret-key', 'Copy', () => sk.value, 'Secret'))),
        h('div', { class: 'actions' }, h('button', {
          type: 'button', id: 'new-key-done', class: 'secondary',
          onclick: () => { created.hidden = true; created.replaceChildren(); },
        }, 'I have saved it')));
      created.hidden = false;
      await reload();
    } catch (err) {
      error.show(`Could not create the key: ${err.message}`);
    }
  });

  main.append(h('h1', null, 'Access keys'),
    h('p', { class: 'muted' }, 'S3 access keys kept in the catalog; the S3 API accepts a new key and refuses a revoked one at once. A scoped key may do only what its policy allows (AccessDenied elsewhere).'),
    h('section', { class: 'card' }, form), created, error, list);
  await reload();
}
