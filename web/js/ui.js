// Shared widgets: the confirmation dialog (a <dialog>, never window.confirm), the status
// line, copy to clipboard with a fallback, and error boxes.

import { h, put } from './dom.js';

/** Shows a message in the page's live status line (#toast) for a few seconds. */
let toastTimer = 0;
export function toast(message, kind = 'ok') {
  const el = document.getElementById('toast');
  if (!el) return;
  put(el, message);
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** An error box (role=alert) with the API's message. */
export function errorBox(id) {
  const el = h('p', { id, class: 'error', role: 'alert', hidden: true });
  el.show = (err) => {
    if (!err) { el.hidden = true; el.replaceChildren(); return; }
    put(el, typeof err === 'string' ? err : (err.message || String(err)));
    el.hidden = false;
  };
  return el;
}

/** Asks for confirmation in the page's <dialog id="confirm-dialog">; resolves true/false. */
export function confirmAction(question, okLabel = 'Delete') {
  const dialog = document.getElementById('confirm-dialog');
  put(dialog.querySelector('#confirm-text'), question);
  const ok = dialog.querySelector('#confirm-ok');
  ok.textContent = okLabel;
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener('close', done);
      resolve(dialog.returnValue === 'ok');
    };
    dialog.returnValue = '';
    dialog.addEventListener('close', done);
    dialog.showModal();
    dialog.querySelector('#confirm-cancel').focus();
  });
}

/**
 * Copies text. navigator.clipboard needs a secure context (https or localhost); elsewhere
 * fall back to a selected textarea and execCommand('copy'), and failing that select the
 * text in the fallback dialog so the user can press Ctrl+C.
 */
export async function copyText(text, what = 'Text') {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      toast(`${what} copied`);
      return true;
    } catch { /* permission refused: fall back */ }
  }
  const ta = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  if (ok) {
    toast(`${what} copied`);
    return true;
  }
  const dialog = document.getElementById('copy-dialog');
  const field = dialog.querySelector('#copy-fallback-text');
  field.value = text;
  dialog.showModal();
  field.focus();
  field.select();
  return false;
}

/** A button that copies what getText() answers. */
export function copyButton(id, label, getText, what) {
  return h('button', {
    type: 'button', id, class: 'secondary',
    onclick: () => { const t = getText(); if (t) copyText(t, what); },
  }, label);
}

/** "Loading…" placeholder. */
export function loading() {
  return h('p', { class: 'muted', 'aria-busy': 'true' }, 'Loading…');
}
