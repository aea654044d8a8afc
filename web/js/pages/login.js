// Login: user + password → POST /api/login. 401 → wrong credentials, 429 → too many attempts.

import * as api from '../api.js';
import { h, field } from '../dom.js';
import { errorBox } from '../ui.js';

function safeNext(next) {
  // Only a hash route of this UI, never another URL.
  return next && next.startsWith('#/') && !next.startsWith('#/login') ? next : '#/';
}

export async function render(main, { query }) {
  document.title = 'Log in · Pixelport';
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true, value: 'admin' });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = errorBox('login-error');
  const submit = h('button', { type: 'submit', id: 'login-submit' }, 'Log in');
  const form = h('form', { id: 'login-form', class: 'card login', novalidate: true },
    h('h1', null, 'Pixelport admin'),
    field('User', user),
    field('Password', password),
    error,
    h('div', { class: 'actions' }, submit),
    h('p', { class: 'hint' },
      'First start without [admin] password_hash: the generated password is in ',
      h('code', null, '<data_dir>/admin-password'), '.'));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.show(null);
    if (!password.value) { error.show('Enter the password.'); password.focus(); return; }
    submit.disabled = true;
    try {
      await api.login(user.value.trim(), password.value);
      password.value = '';
      location.hash = safeNext(query.get('next'));
    } catch (err) {
      if (err.status === 429) {
        error.show(`Too many attempts. Try again in ${err.retryAfter || 60} seconds.`);
      } else if (err.status === 401) {
        error.show('Wrong user or password.');
      } else {
        error.show(`Login failed: ${err.message}`);
      }
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  (user.value ? password : user).focus();
}
