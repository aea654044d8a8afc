// Dashboard: GET /api/overview — version, uptime, storage, cache, a traffic chart for the
// last hour (inline SVG built with DOM methods) and the recent errors. Refreshes every 15 s.

import * as api from '../api.js';
import { h, svg, put, fmtBytes, fmtNumber, fmtDuration, timeEl } from '../dom.js';
import { loading } from '../ui.js';

function stat(id, label, value, sub) {
  return h('div', { class: 'stat' },
    h('dt', null, label),
    h('dd', { id }, value),
    sub ? h('dd', { class: 'sub' }, sub) : null);
}

function pct(ratio) {
  return ratio === null || ratio === undefined ? '—' : `${(Number(ratio) * 100).toFixed(1)} %`;
}

/** Rounds a maximum up to 1, 2, 4 or 8 × 10^n so the quarter lines fall on round numbers. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Requests per minute as bars (left axis), p95 latency as a line (right axis). */
export function trafficChart(traffic) {
  const W = 720; const H = 220;
  const L = 44; const R = 52; const T = 12; const B = 28;
  const pw = W - L - R; const ph = H - T - B;
  const n = Math.max(traffic.length, 1);
  const maxReq = Math.max(4, niceMax(Math.max(0, ...traffic.map((t) => t.requests || 0))));
  const maxP95 = Math.max(4, niceMax(Math.max(0, ...traffic.map((t) => t.p95_ms || 0))));
  const totalReq = traffic.reduce((a, t) => a + (t.requests || 0), 0);
  const totalErr = traffic.reduce((a, t) => a + (t.errors || 0), 0);
  const chart = svg('svg', {
    id: 'traffic-chart', class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-labelledby': 'traffic-chart-title',
  }, svg('title', { id: 'traffic-chart-title' },
    `Requests per minute and p95 latency over the last hour: ${totalReq} requests, ${totalErr} errors`));

  for (let i = 0; i <= 4; i += 1) {
    const y = T + ph - (ph * i) / 4;
    chart.append(
      svg('line', { class: 'grid', x1: L, x2: L + pw, y1: y, y2: y }),
      svg('text', { class: 'axis', x: L - 6, y: y + 4, 'text-anchor': 'end' }, fmtNumber((maxReq * i) / 4)),
      svg('text', { class: 'axis p95', x: L + pw + 6, y: y + 4 }, `${Math.round((maxP95 * i) / 4)} ms`));
  }
  const bw = pw / n;
  const points = [];
  traffic.forEach((t, i) => {
    const x = L + i * bw;
    const req = t.requests || 0;
    const bh = (ph * req) / maxReq;
    const err = t.errors || 0;
    const eh = (ph * Math.min(err, req)) / maxReq;
    const label = `${t.minute}: ${req} requests, ${err} errors, p95 ${t.p95_ms === null || t.p95_ms === undefined ? '—' : `${t.p95_ms} ms`}`;
    const g = svg('g', null, svg('title', null, label));
    g.append(svg('rect', { class: 'bar', x: x + 1, y: T + ph - bh, width: Math.max(bw - 2, 1), height: bh }));
    if (eh > 0) g.append(svg('rect', { class: 'bar err', x: x + 1, y: T + ph - eh, width: Math.max(bw - 2, 1), height: eh }));
    chart.append(g);
    if (t.p95_ms !== null && t.p95_ms !== undefined) {
      points.push(`${(x + bw / 2).toFixed(1)},${(T + ph - (ph * t.p95_ms) / maxP95).toFixed(1)}`);
    }
  });
  if (points.length) chart.append(svg('polyline', { class: 'line', points: points.join(' ') }));
  chart.append(
    svg('text', { class: 'axis', x: L, y: H - 8 }, '−60 min'),
    svg('text', { class: 'axis', x: L + pw, y: H - 8, 'text-anchor': 'end' }, 'now'));
  return chart;
}

function errorsTable(errors) {
  if (!errors.length) return h('p', { id: 'errors-empty', class: 'muted' }, 'No errors recorded.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'errors-table' },
    h('thead', null, h('tr', null, ['Time', 'Listener', 'Status', 'Request', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, errors.map((e) => h('tr', null,
      h('td', null, timeEl(e.time)),
      h('td', null, e.listener),
      h('td', null, String(e.status)),
      h('td', { class: 'break' }, `${e.method} ${e.path}`),
      h('td', { class: 'break' }, e.message || ''))))));
}

/** The tunnel's links to its edges (null when this appliance joined none). */
function tunnelCard(links) {
  if (!Array.isArray(links)) return null;
  const up = links.filter((l) => l.state === 'connected').length;
  return h('section', { class: 'card', id: 'dash-tunnel' },
    h('h2', null, `Tunnel: ${up} of ${links.length} connections up`),
    h('table', null,
      h('thead', null, h('tr', null,
        h('th', null, 'Edge'), h('th', null, 'Slot'), h('th', null, 'State'),
        h('th', null, 'Reconnects'), h('th', null, 'Last error'))),
      h('tbody', null, ...links.map((l) => h('tr', null,
        h('td', null, l.edge), h('td', null, String(l.slot)), h('td', null, l.state),
        h('td', null, fmtNumber(l.reconnects)), h('td', null, l.last_error || '—'))))));
}

function draw(box, o) {
  const store = o.store || {};
  const cache = o.cache || {};
  const traffic = o.traffic || [];
  put(box,
    h('dl', { class: 'stats', id: 'overview-stats' },
      stat('dash-version', 'Version', o.version),
      stat('dash-uptime', 'Uptime', fmtDuration(o.uptime_seconds), o.started ? timeEl(o.started) : null),
      stat('dash-storage', 'Storage used', fmtBytes(store.bytes), `${store.kind || ''} store`),
      stat('dash-objects', 'Objects', fmtNumber(store.objects), `${fmtNumber(store.buckets)} buckets`),
      stat('dash-cache-entries', 'Cache entries', cache.enabled === false ? 'off' : fmtNumber(cache.entries),
        `${fmtBytes(cache.bytes)} of ${fmtBytes(cache.max_bytes)}`),
      stat('dash-hit-ratio', 'Cache hit ratio', pct(cache.hit_ratio),
        `${fmtNumber(cache.hits)} hits, ${fmtNumber(cache.misses)} misses`)),
    tunnelCard(o.tunnel),
    h('section', { class: 'card' },
      h('h2', null, 'Traffic, last hour'),
      h('p', { class: 'legend' },
        h('span', { class: 'key bar' }, 'requests / min'), ' ',
        h('span', { class: 'key err' }, 'errors'), ' ',
        h('span', { class: 'key line' }, 'p95 latency')),
      trafficChart(traffic)),
    h('section', { class: 'card' },
      h('h2', null, 'Recent errors'),
      errorsTable(o.errors || [])));
}

export async function render(main, { signal }) {
  document.title = 'Dashboard · Pixelport';
  const box = h('div', { id: 'dashboard' }, loading());
  main.append(h('h1', null, 'Dashboard'), box);
  draw(box, await api.get(['overview'], { signal }));
  const timer = setInterval(async () => {
    try {
      draw(box, await api.get(['overview'], { signal }));
    } catch { /* keep the last picture; a 401 already went to login */ }
  }, 15000);
  signal.addEventListener('abort', () => clearInterval(timer));
}
