// The admin UI's entry point: a router on location.hash. Each page module exports
// render(main, ctx) where ctx = {params, query, signal}; the signal aborts when the user
// leaves the page, so a late answer never draws into the next page.

import * as api from './js/api.js';
import { h, put } from './js/dom.js';
import { toast } from './js/ui.js';
import * as loginPage from './js/pages/login.js';
import * as dashboardPage from './js/pages/dashboard.js';
import * as bucketsPage from './js/pages/buckets.js';
import * as objectsPage from './js/pages/objects.js';
import * as objectPage from './js/pages/object.js';
import * as cachePage from './js/pages/cache.js';
import * as keysPage from './js/pages/keys.js';
import * as settingsPage from './js/pages/settings.js';

// [pattern on the path's segments, page, nav entry]
const ROUTES = [
  [[], dashboardPage, 'dashboard'],
  [['login'], loginPage, null],
  [['buckets'], bucketsPage, 'buckets'],
  [['buckets', ':bucket'], objectsPage, 'buckets'],
  [['object', ':bucket'], objectPage, 'buckets'],
  [['cache'], cachePage, 'cache'],
  [['keys'], keysPage, 'keys'],
  [['settings'], settingsPage, 'settings'],
];

/** '#/buckets/photos?prefix=a%2F' → {segments: ['buckets', 'photos'], query} */
export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '');
  const qi = raw.indexOf('?');
  const path = qi >= 0 ? raw.slice(0, qi) : raw;
  const query = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
  const segments = path.split('/').filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  return { segments, query };
}

function match(segments) {
  for (const [pattern, page, nav] of ROUTES) {
    if (pattern.length !== segments.length) continue;
    const params = {};
    let ok = true;
    pattern.forEach((p, i) => {
      if (p.startsWith(':')) params[p.slice(1)] = segments[i];
      else if (p !== segments[i]) ok = false;
    });
    if (ok) return { page, params, nav };
  }
  return null;
}

const main = document.getElementById('main');
let current = null; // AbortController of the page on screen

function setNav(active) {
  for (const a of document.querySelectorAll('#nav a[data-route]')) {
    if (a.dataset.route === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  closeNav();
}

function closeNav() {
  document.body.classList.remove('nav-open');
  document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
}

async function route() {
  if (current) current.abort();
  const ctrl = new AbortController();
  current = ctrl;
  const { segments, query } = parseHash(location.hash);
  const found = match(segments);

  if (segments[0] !== 'login' && !api.currentSession()) {
    let s = null;
    try {
      s = await api.loadSession();
    } catch (e) {
      put(main, h('p', { class: 'error', role: 'alert' }, `Cannot reach the server: ${e.message}`));
      return;
    }
    if (ctrl.signal.aborted) return;
    if (!s) {
      location.replace(`#/login?next=${encodeURIComponent(location.hash || '#/')}`);
      return;
    }
  }
  const s = api.currentSession();
  document.body.classList.toggle('anon', !s || segments[0] === 'login');
  put(document.getElementById('session-user'), s ? s.user : '');

  if (!found) {
    setNav(null);
    document.title = 'Not found · Pixelport';
    put(main, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/' }, 'Back to the dashboard')));
    return;
  }
  setNav(found.nav);
  main.replaceChildren();
  try {
    await found.page.render(main, { params: found.params, query, signal: ctrl.signal });
  } catch (e) {
    if (ctrl.signal.aborted || e.name === 'AbortError') return;
    if (e.status === 401) return; // api.js already went to the login page
    main.append(h('p', { class: 'error', role: 'alert' }, e.message || String(e)));
  }
}

document.getElementById('nav-toggle').addEventListener('click', (e) => {
  const open = !document.body.classList.contains('nav-open');
  document.body.classList.toggle('nav-open', open);
  e.currentTarget.setAttribute('aria-expanded', String(open));
});

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api.logout();
  } catch (e) {
    toast(`Logout failed: ${e.message}`, 'error');
  }
  location.hash = '#/login';
});

window.addEventListener('hashchange', route);
route();
