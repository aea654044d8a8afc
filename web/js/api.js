// The admin JSON API client (docs/admin-api.md). Sends the session's CSRF token on every
// change, turns error answers into ApiError, and sends the browser to the login page on 401.

let session = null; // {user, csrf} once logged in

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || '';
    this.retryAfter = retryAfter;
  }
}

const CHANGES = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

export function currentSession() { return session; }
export function setSession(s) { session = s; }

/** Where to go after logging in again: the page the user was on. */
function toLogin() {
  session = null;
  const here = location.hash || '#/';
  if (!here.startsWith('#/login')) {
    location.hash = `#/login?next=${encodeURIComponent(here)}`;
  }
}

function queryString(query) {
  if (!query) return '';
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Builds /api/<segments...>?query with every path segment escaped. */
export function apiPath(segments, query) {
  return `/api/${segments.map((s) => encodeURIComponent(s)).join('/')}${queryString(query)}`;
}

async function errorFrom(res) {
  let code = '';
  let message = '';
  try {
    const body = await res.json();
    code = body.error || '';
    message = body.message || '';
  } catch {
    message = res.statusText;
  }
  const ra = res.headers.get('Retry-After');
  return new ApiError(res.status, code, message, ra ? Number(ra) : undefined);
}

/**
 * request('GET', ['buckets']) / request('POST', ['buckets'], {json: {name}}).
 * Answers the parsed JSON body, or null for 204. Throws ApiError.
 * opts: json, body, headers, query, signal, noAuthRedirect.
 */
export async function request(method, segments, opts = {}) {
  const headers = new Headers(opts.headers || {});
  let body = opts.body;
  if (opts.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(opts.json);
  }
  if (CHANGES.has(method) && session && session.csrf) headers.set('X-CSRF-Token', session.csrf);
  headers.set('Accept', 'application/json');
  const res = await fetch(apiPath(segments, opts.query), {
    method, headers, body, credentials: 'same-origin', signal: opts.signal, cache: 'no-store',
  });
  if (res.status === 401 && !opts.noAuthRedirect) {
    toLogin();
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (segments, opts) => request('GET', segments, opts);
export const post = (segments, json, opts = {}) => request('POST', segments, { ...opts, json });
export const put = (segments, json, opts = {}) => request('PUT', segments, { ...opts, json });
export const del = (segments, opts) => request('DELETE', segments, opts);

/** Asks the server who is logged in; null when nobody. */
export async function loadSession() {
  try {
    session = await request('GET', ['session'], { noAuthRedirect: true });
  } catch (e) {
    if (e.status !== 401) throw e;
    session = null;
  }
  return session;
}

export async function login(user, password) {
  session = await request('POST', ['login'], { json: { user, password }, noAuthRedirect: true });
  return session;
}

export async function logout() {
  try {
    await request('POST', ['logout'], { noAuthRedirect: true });
  } finally {
    session = null;
  }
}

/**
 * Sends a body with XMLHttpRequest so upload progress can be shown.
 * onProgress(loadedBytes). Resolves the parsed JSON answer; rejects with ApiError.
 * The returned promise has .abort().
 */
export function xhrSend(method, segments, query, body, contentType, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open(method, apiPath(segments, query));
    xhr.withCredentials = true;
    if (contentType) xhr.setRequestHeader('Content-Type', contentType);
    xhr.setRequestHeader('Accept', 'application/json');
    if (session && session.csrf) xhr.setRequestHeader('X-CSRF-Token', session.csrf);
    xhr.upload.addEventListener('progress', (e) => { if (onProgress) onProgress(e.loaded); });
    xhr.addEventListener('load', () => {
      let parsed = null;
      try { parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(parsed);
        return;
      }
      if (xhr.status === 401) toLogin();
      reject(new ApiError(xhr.status, parsed && parsed.error,
        (parsed && parsed.message) || xhr.statusText || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'network error')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'cancelled')));
    xhr.send(body);
  });
  promise.abort = () => xhr.abort();
  return promise;
}
