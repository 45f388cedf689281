// Tollgate admin dashboard: plain ES2020, no build step, no framework.
// Everything shown comes from /api/v1 with the session cookie. API data only
// ever reaches the page as text (textContent), never as markup.
'use strict';

(() => {
  const BASE = '/admin/ai-usage';
  const API = '/api/v1';
  const POLL_MS = 15000;
  const TABS = ['overview', 'providers', 'alerts', 'projections', 'budgets', 'usage'];
  const SEVERITIES = ['critical', 'high', 'medium', 'low'];
  const PROVIDERS = { openai: 'OpenAI', openrouter: 'OpenRouter', local: 'Local' };
  const COLORS = { openai: '#10a37f', openrouter: '#6d5dfc', local: '#f08c00' };
  const EXTRA_COLORS = ['#e8590c', '#1c7ed6', '#c2255c', '#2f9e44'];
  const TASKS = { chat: 'Chat', completion: 'Completion', embedding: 'Embedding', image_generation: 'Image generation', responses: 'Responses' };
  const DASH = '—';

  const state = {
    session: null,
    tab: 'overview',
    filters: defaultFilters(),
    serverTz: null,
    orgs: [],
    timer: null,
    paused: false,
    last: {},
    busy: {},
    generation: {},
    charts: {},
    perfSort: { key: 'requests', dir: 'desc' },
    records: freshPaging(),
    webhook: null,
    editing: null,
    projection: { series: 'overall', days: 30 },
  };

  function defaultFilters() {
    return { preset: '30d', start: '', end: '', provider: '', model: '', task_type: '', org_id: '', user_id: '' };
  }

  function freshPaging() {
    return { cursors: [null], page: 0, next: null };
  }

  // ---------------------------------------------------------------- DOM

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  /** An element: props are attributes (null/false skipped), `class`, or
   * `on<event>` listeners; children are nodes or strings (as text). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child == null || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else el.append(child instanceof Node ? child : String(child));
    }
  }

  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  const span = (cls, ...children) => h('span', { class: cls }, ...children);
  const muted = (...children) => span('muted', ...children);
  const mono = (text) => span('mono', text);
  const empty = (...children) => h('div', { class: 'empty' }, ...children);

  // ---------------------------------------------------------------- formatting

  const usd2 = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
  const usdCompact = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', notation: 'compact', maximumFractionDigits: 1 });
  const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
  const exact = new Intl.NumberFormat('en-US');

  const usdSmall = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumSignificantDigits: 2, maximumSignificantDigits: 2, maximumFractionDigits: 6, roundingPriority: 'lessPrecision' });

  /** $1,234.56; under a dollar, two significant digits ($0.0042). The API's
   * decimal strings go to Intl as they are (exact), not through a float. */
  function fmtUsd(value) {
    if (value == null || value === '') return DASH;
    const n = Number(value);
    if (!Number.isFinite(n)) return String(value);
    const v = typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value.trim()) ? value.trim() : n;
    const abs = Math.abs(n);
    if (abs === 0) return '$0.00';
    if (abs >= 0.995) return usd2.format(v);
    if (abs < 0.000001) return (n < 0 ? '-' : '') + '<$0.000001';
    return usdSmall.format(v);
  }

  function fmtUsdAxis(n) {
    const abs = Math.abs(n);
    if (abs >= 1000) return usdCompact.format(n);
    return abs >= 10 || abs === 0 ? '$' + n.toFixed(0) : '$' + Number(n.toPrecision(2));
  }

  /** Counts exact up to 100,000, compact above; tokens compact from 1,000. */
  const fmtCount = (n, from = 100000) => (n == null ? DASH : Math.abs(n) >= from ? compact.format(n) : exact.format(n));
  const fmtPercent = (ratio) => (ratio == null ? DASH : (Number(ratio) * 100).toFixed(1) + '%');

  function fmtMs(ms) {
    if (ms == null) return DASH;
    const n = Number(ms);
    if (n >= 10000) return (n / 1000).toFixed(1) + ' s';
    return n >= 1000 ? (n / 1000).toFixed(2) + ' s' : Math.round(n) + ' ms';
  }

  function fmtDateTime(iso) {
    if (!iso) return DASH;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const year = d.getFullYear() !== new Date().getFullYear() ? 'numeric' : undefined;
    return d.toLocaleString(undefined, { year, month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  /** A calendar day (YYYY-MM-DD) as text, whatever the browser's zone. */
  function fmtDate(text) {
    if (!text) return DASH;
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(text);
    if (!m) return String(text);
    return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });
  }

  function fmtAgo(iso) {
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!Number.isFinite(seconds)) return String(iso);
    if (seconds < 45) return 'just now';
    if (seconds < 3600) return Math.round(seconds / 60) + ' min ago';
    return seconds < 86400 ? Math.round(seconds / 3600) + ' h ago' : Math.round(seconds / 86400) + ' d ago';
  }

  const providerName = (p) => (p ? PROVIDERS[p] || p : DASH);
  const taskName = (t) => (t ? TASKS[t] || t : DASH);
  const words = (text) => (text ? String(text).replace(/_/g, ' ') : DASH);
  const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);

  // Values shown formatted, with the exact value in `title`.
  const money = (v) => h('span', { class: 'num', title: v == null ? null : '$' + v }, fmtUsd(v));
  const tokens = (n) => h('span', { class: 'num', title: n == null ? null : exact.format(n) + ' tokens' }, fmtCount(n, 1000));
  const count = (n) => h('span', { class: 'num', title: n == null ? null : exact.format(n) }, fmtCount(n));
  const when = (iso) => (iso ? h('time', { datetime: iso, title: iso }, fmtDateTime(iso)) : DASH);
  const badge = (text, kind) => span('badge badge-' + String(kind || text).replace(/[^a-z_-]/gi, ''), words(text));

  // ---------------------------------------------------------------- dates

  /** YYYY-MM-DD of `date` in a time zone (the server's once known). */
  function ymd(date, timeZone) {
    const options = { year: 'numeric', month: '2-digit', day: '2-digit' };
    try {
      return new Intl.DateTimeFormat('en-CA', { ...options, timeZone: timeZone || undefined }).format(date);
    } catch (_) {
      return new Intl.DateTimeFormat('en-CA', options).format(date);
    }
  }

  const daysAgo = (days) => ymd(new Date(Date.now() - days * 86400000), state.serverTz);
  const shiftDay = (text, days) => new Date((dayStamp(text) + days * 86400) * 1000).toISOString().slice(0, 10);

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, param) {
      super(message);
      this.status = status;
      this.param = param || null;
    }
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value != null && value !== '') search.set(key, String(value));
    }
    const text = search.toString();
    return text ? '?' + text : '';
  }

  async function request(url, options = {}, retried = false) {
    const method = options.method || 'GET';
    const headers = { Accept: 'application/json' };
    // Every change made through the session carries its CSRF token.
    if (method !== 'GET' && state.session) headers['X-CSRF-Token'] = state.session.csrf_token;
    let body;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
    } catch (error) {
      throw new ApiError(0, 'Cannot reach the server: ' + error.message);
    }
    const text = response.status === 204 ? '' : await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const err = (data && data.error) || {};
      // Another tab signed in and replaced the cookie: take its CSRF token, try once more.
      if (response.status === 403 && method !== 'GET' && !retried && state.session && /csrf/i.test(err.message || '') && await renewSession()) {
        return request(url, options, true);
      }
      throw new ApiError(response.status, err.message || `The server answered ${response.status} ${response.statusText}`, err.param);
    }
    return data;
  }

  /** The cookie's current session; a different identity reloads the page. */
  async function renewSession() {
    let fresh;
    try {
      fresh = await request(BASE + '/session');
    } catch (error) {
      if (error.status === 401) sessionEnded();
      return false;
    }
    const old = state.session;
    if (!old) return false;
    if (['role', 'org_id', 'user_id', 'key_id'].some((k) => fresh[k] !== old[k])) {
      leave(null, true);
      return false;
    }
    state.session = fresh;
    if (fresh.timezone) state.serverTz = fresh.timezone;
    return true;
  }

  /** An /api/v1 call; a 401 ends the session and shows the login form. */
  async function api(path, params, options) {
    try {
      return await request(API + path + query(params), options);
    } catch (error) {
      if (error.status === 401) sessionEnded(error.message);
      throw error;
    }
  }

  const post = (path, body) => api(path, null, { method: 'POST', body });

  function errorBox(error, what) {
    let text = error && error.message ? error.message : String(error);
    if (error && error.status === 403) text = `Not available to your role${what ? ' (' + what + ')' : ''}: ${text}`;
    else if (what) text = `Could not load ${what}: ${text}`;
    return h('p', { class: 'error', role: 'alert' }, text);
  }

  /** Shows an error next to a row's buttons. */
  function rowMessage(el, text) {
    if (!el) return;
    el.textContent = text;
    el.className = 'row-message error';
    el.setAttribute('role', 'alert');
  }

  // ---------------------------------------------------------------- roles

  const role = () => (state.session ? state.session.role : 'member');
  const isAdmin = () => role() === 'admin';
  const orgAdmin = () => role() === 'admin' || role() === 'org_admin';

  // ---------------------------------------------------------------- tables

  /** A column: key, header, render(row), and options {num, sort(row)}. */
  const col = (key, label, render, options) => ({ key, label, render, ...options });

  /** A table in a horizontally scrolling box. Rows may be `{group: text}`
   * (a heading row). Options: id(row), attrs(row), caption, compact, and
   * sort {key, dir} with onSort(key) for header buttons. */
  function table(name, columns, rows, options = {}) {
    const { sort } = options;
    const head = h('tr', null, columns.map((c) => {
      const th = h('th', { scope: 'col', class: c.num ? 'num' : null });
      if (!sort || !c.sort) {
        th.textContent = c.label;
        return th;
      }
      const active = sort.key === c.key;
      th.setAttribute('aria-sort', active ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none');
      th.append(h('button', { type: 'button', class: 'sort', 'data-sort': c.key, onclick: () => options.onSort(c.key) },
        c.label, span('sort-icon', active ? (sort.dir === 'asc' ? '▲' : '▼') : '↕')));
      $('.sort-icon', th).setAttribute('aria-hidden', 'true');
      return th;
    }));
    let list = rows;
    const by = sort && columns.find((c) => c.key === sort.key && c.sort);
    if (by) {
      const dir = sort.dir === 'asc' ? 1 : -1;
      list = rows.slice().sort((a, b) => {
        const x = by.sort(a);
        const y = by.sort(b);
        if (x === y) return 0;
        if (x == null) return 1;
        if (y == null) return -1;
        return (x < y ? -1 : 1) * dir;
      });
    }
    const body = h('tbody');
    for (const row of list) {
      if (row.group) {
        body.append(h('tr', { class: 'group-row' }, h('th', { colspan: columns.length, scope: 'rowgroup' }, row.group)));
        continue;
      }
      const tr = h('tr', { 'data-id': options.id ? options.id(row) : null, ...(options.attrs ? options.attrs(row) : {}) });
      for (const c of columns) tr.append(h('td', { class: c.num ? 'num' : null, 'data-col': c.key }, c.render(row)));
      body.append(tr);
    }
    return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': options.caption || name },
      h('table', { 'data-table': name, class: options.compact ? 'compact' : null }, h('thead', null, head), body));
  }

  function shareBar(ratio, color) {
    const bar = span('share-fill');
    bar.style.width = Math.max(0, Math.min(100, (Number(ratio) || 0) * 100)).toFixed(1) + '%';
    if (color) bar.style.background = color;
    const box = span('share-bar', bar);
    box.setAttribute('aria-hidden', 'true');
    return box;
  }

  // ---------------------------------------------------------------- status line

  // Messages go to the live region (#status) for a few seconds; an error
  // (`sticky`: its tab, or true for the visible one) stays until that tab
  // next loads. The time of the last update is shown apart, not announced.
  let statusTimer = null;
  let stickyTab = null;

  function announce(text, sticky) {
    $('#status').textContent = text;
    clearTimeout(statusTimer);
    stickyTab = sticky ? (sticky === true ? state.tab : sticky) : null;
    if (!sticky) statusTimer = setTimeout(() => { $('#status').textContent = ''; }, 6000);
  }

  /** Marks a panel as rendered (`data-loaded`, a rising `data-generation`). */
  function markLoaded(tab, ok) {
    const panel = $(`[data-panel="${tab}"]`);
    state.generation[tab] = (state.generation[tab] || 0) + 1;
    panel.setAttribute('data-loaded', 'true');
    panel.setAttribute('data-generation', String(state.generation[tab]));
    panel.removeAttribute('aria-busy');
    if (ok && stickyTab === tab) announce('');
    $('#updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + (state.paused ? ' · auto-refresh paused' : '');
  }

  /** Whether a tab's data (with what shaped it) is what was last rendered;
   * remembers it when not. Unchanged data is not drawn again, so focus,
   * scrolling, open details and screen-reader position stay. */
  function same(tab, parts) {
    const text = JSON.stringify(parts, (k, v) => (v instanceof Error ? { status: v.status, message: v.message } : v));
    if (state.last[tab] === text) return true;
    state.last[tab] = text;
    return false;
  }

  // ---------------------------------------------------------------- filters

  function rangeParams() {
    const f = state.filters;
    // Only an end date: the 30 days up to it (as the server's series default).
    if (f.preset === 'custom') return { start_date: f.start || (f.end && shiftDay(f.end, -29)), end_date: f.end };
    if (f.preset === '24h') return { start_date: new Date(Date.now() - 86400000).toISOString().replace(/\.\d+Z$/, 'Z') };
    return { start_date: daysAgo(({ '7d': 7, '90d': 90 }[f.preset] || 30) - 1) };
  }

  /** The dimension filters the caller's role may use. */
  function dimensionParams(withUser = true) {
    const f = state.filters;
    const params = { provider: f.provider, model: f.model.trim(), task_type: f.task_type };
    if (isAdmin()) params.org_id = f.org_id;
    if (orgAdmin() && withUser) params.user_id = f.user_id.trim();
    return params;
  }

  const FILTER_FIELDS = ['preset', 'start', 'end', 'provider', 'model', 'task_type', 'org_id', 'user_id'];

  function readFilters() {
    const fields = $('#filters').elements;
    for (const name of FILTER_FIELDS) state.filters[name] = fields.namedItem(name).value;
  }

  function writeFilters() {
    const fields = $('#filters').elements;
    for (const name of FILTER_FIELDS) fields.namedItem(name).value = state.filters[name];
    syncFilterVisibility();
  }

  /** Which filters the visible tab and the role use. */
  function syncFilterVisibility() {
    const form = $('#filters');
    form.hidden = state.tab === 'alerts' || state.tab === 'budgets';
    const dated = state.tab !== 'projections';
    $('[data-filter="range"]', form).hidden = !dated;
    for (const el of $$('[data-filter="custom"]', form)) el.hidden = !dated || form.elements.namedItem('preset').value !== 'custom';
    $('[data-filter="org"]', form).hidden = !isAdmin();
    $('[data-filter="user"]', form).hidden = !orgAdmin();
  }

  function validFilters() {
    const f = state.filters;
    let message = '';
    if (f.preset === 'custom' && !f.start && !f.end) message = 'Choose a start date, an end date, or both.';
    else if (f.preset === 'custom' && f.start && f.end && f.end < f.start) message = 'The end date must not be before the start date.';
    const box = $('#filters-error');
    box.textContent = message;
    box.hidden = !message;
    return !message;
  }

  function applyFilters() {
    readFilters();
    if (!validFilters()) return;
    state.records = freshPaging();
    refresh(state.tab);
  }

  function setupFilters() {
    const form = $('#filters');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      applyFilters();
    });
    form.addEventListener('change', (event) => {
      if (event.target.name === 'preset') syncFilterVisibility();
      // Dates, free text and "Custom…" apply with the Apply button (or Enter).
      if (event.target.name === 'preset' && event.target.value === 'custom') return;
      if (event.target.type !== 'date' && event.target.type !== 'text') applyFilters();
    });
    $('[data-action="reset-filters"]').addEventListener('click', () => {
      state.filters = defaultFilters();
      writeFilters();
      applyFilters();
    });
  }

  const orgOption = (org) => h('option', { value: org.id }, org.name && org.name !== org.id ? `${org.name} (${org.id})` : org.id);

  async function loadOrgs() {
    if (!state.orgs.length) state.orgs = (await api('/orgs')).data || [];
    return state.orgs;
  }

  async function loadFilterOptions() {
    if (isAdmin()) {
      try {
        fill($('#f-org'), h('option', { value: '' }, 'All organizations'), (await loadOrgs()).map(orgOption));
      } catch (_) { /* the filter keeps "All" */ }
    }
    if (orgAdmin()) {
      try {
        const users = (await api('/users')).data || [];
        fill($('#dl-users'), users.map((u) => h('option', { value: u.id }, u.name || u.email || u.id)));
      } catch (_) { /* free text still works */ }
    }
  }

  // ---------------------------------------------------------------- charts

  const cssVar = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  const providerColor = (provider, index) => COLORS[provider] || EXTRA_COLORS[index % EXTRA_COLORS.length];

  function axes() {
    const grid = { stroke: cssVar('--grid', '#e3e7ec'), width: 1 };
    const x = { stroke: cssVar('--muted', '#5c6670'), grid, ticks: grid };
    return [x, { ...x, size: 64, values: (u, splits) => splits.map(fmtUsdAxis) }];
  }

  const bars = (size) => (window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [size, 48], gap: 1 }) : undefined);
  const dayStamp = (text) => Date.UTC(+text.slice(0, 4), +text.slice(5, 7) - 1, +text.slice(8, 10)) / 1000;
  const stampDay = (ts) => new Date(ts * 1000).toISOString().slice(0, 10);
  const utcDate = (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC');
  const usdValue = (u, v) => (v == null ? DASH : fmtUsd(v));

  function dropChart(name) {
    const old = state.charts[name];
    if (!old) return;
    old.chart.destroy();
    old.observer.disconnect();
    delete state.charts[name];
  }

  /** Draws a chart in a container, replacing the last one, sized to the box. */
  function drawChart(name, container, makeOptions, data) {
    dropChart(name);
    container.replaceChildren();
    if (typeof window.uPlot !== 'function') {
      container.append(errorBox('The chart library did not load.'));
      return;
    }
    const size = (width) => ({ width: Math.max(280, width), height: width < 500 ? 220 : 280 });
    let last = container.clientWidth || 600;
    const chart = new window.uPlot({ ...makeOptions(), ...size(last) }, data, container);
    const observer = new ResizeObserver(() => {
      const width = container.clientWidth;
      if (width > 0 && Math.abs(width - last) > 4) {
        last = width;
        chart.setSize(size(width));
      }
    });
    observer.observe(container);
    state.charts[name] = { chart, observer };
  }

  /** The charted numbers as a table in a <details> (kept open across redraws). */
  function chartData(box, caption, columns, rows, ...before) {
    const open = Boolean($('details[open]', box));
    fill(box, before, h('details', { class: 'chart-data', open }, h('summary', null, 'Chart data as a table'),
      table(box.id.replace(/-(extra|data)$/, '-data'), columns, rows, { caption, compact: true })));
  }

  /** Stacked bars of cost per provider. Each series is the running sum up to
   * its provider, drawn tallest first so each shows as its own segment; the
   * legend shows the provider's own value. */
  function drawDaily(series) {
    const points = series.data || [];
    const hourly = series.granularity === 'hour';
    const providers = Array.from(new Set(points.flatMap((p) => (p.by_provider || []).map((g) => g.provider)))).sort();
    const texts = providers.map((provider) => points.map((p) => ((p.by_provider || []).find((g) => g.provider === provider) || {}).cost_usd || '0'));
    const raw = texts.map((values) => values.map(Number));
    const sums = [];
    raw.forEach((values, i) => sums.push(values.map((v, j) => v + (i ? sums[i - 1][j] : 0))));
    const order = providers.map((_, i) => i).reverse();
    const xs = points.map((p) => (hourly ? Date.parse(p.hour) / 1000 : dayStamp(p.date)));
    const path = bars(0.7);
    const container = $('[data-chart="daily"]');
    drawChart('daily', container, () => ({
      tzDate: hourly ? undefined : utcDate,
      cursor: { points: { show: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      axes: axes(),
      series: [
        { label: hourly ? 'Hour' : 'Day', value: (u, ts) => (ts == null ? DASH : hourly ? fmtDateTime(new Date(ts * 1000).toISOString()) : fmtDate(stampDay(ts))) },
        ...order.map((i) => {
          const color = providerColor(providers[i], i);
          return { label: providerName(providers[i]), stroke: color, fill: color, width: 0, paths: path, points: { show: false }, value: (u, v, s, idx) => (idx == null ? DASH : fmtUsd(texts[i][idx])) };
        }),
      ],
    }), [xs, ...order.map((i) => sums[i])]);
    if (!providers.length) container.append(h('p', { class: 'chart-empty muted' }, 'No cost recorded in this range.'));
    chartData($('#daily-extra'), $('#daily-title').textContent, [
      col('when', hourly ? 'Hour' : 'Day', (p) => (hourly ? when(p.hour) : fmtDate(p.date))),
      ...providers.map((provider, i) => col(provider, providerName(provider), (p) => money(texts[i][p.j]), { num: true })),
      col('total', 'Total', (p) => money(p.cost_usd), { num: true }),
    ], points.map((p, j) => ({ ...p, j })), h('p', { class: 'muted small' }, hourly ? 'Hours in your browser’s time zone.' : `Days in the server’s time zone (${series.timezone}).`));
  }

  // ---------------------------------------------------------------- Overview

  function setMetric(name, raw, text, title, sub) {
    const card = $(`[data-metric="${name}"]`);
    card.setAttribute('data-value', raw == null ? '' : String(raw));
    const value = $('.metric-value', card);
    value.textContent = text;
    if (title) value.title = title;
    else value.removeAttribute('title');
    $('.metric-sub', card).textContent = sub || '';
  }

  async function loadOverview() {
    const params = { ...rangeParams(), ...dimensionParams() };
    const hourly = state.filters.preset === '24h';
    $('[data-panel="overview"]').setAttribute('data-query', query(params).slice(1));
    const [stats, series, alerts] = await Promise.allSettled([
      api('/usage/stats', params),
      api(hourly ? '/usage/hourly' : '/usage/daily', params),
      api('/alerts', { status: 'active', limit: 1000, org_id: isAdmin() ? state.filters.org_id : '' }),
    ]);
    if (same('overview', [params, hourly, stats, series, alerts])) return;
    const notice = $('#overview-notice');
    notice.replaceChildren();

    if (stats.status === 'fulfilled') {
      const s = stats.value;
      if (s.timezone) state.serverTz = s.timezone;
      fill($('#dl-models'), Array.from(new Set((s.by_model || []).map((m) => m.model))).sort().map((value) => h('option', { value })));
      setMetric('total_requests', s.total_requests, fmtCount(s.total_requests), exact.format(s.total_requests),
        s.failed_requests ? exact.format(s.failed_requests) + ' failed' : 'no failures');
      setMetric('total_cost_usd', s.total_cost_usd, fmtUsd(s.total_cost_usd), '$' + s.total_cost_usd,
        s.cost_per_request_usd ? fmtUsd(s.cost_per_request_usd) + ' per request' : '');
      setMetric('total_tokens', s.total_tokens, fmtCount(s.total_tokens, 1000), exact.format(s.total_tokens) + ' tokens',
        `${fmtCount(s.total_input_tokens, 1000)} in · ${fmtCount(s.total_output_tokens, 1000)} out`);
      setMetric('success_rate', s.success_rate, fmtPercent(s.success_rate), s.success_rate == null ? null : String(s.success_rate),
        s.total_requests ? exact.format(s.successful_requests) + ' succeeded' : '');
      setMetric('avg_response_time_ms', s.avg_response_time_ms, fmtMs(s.avg_response_time_ms), s.avg_response_time_ms == null ? null : s.avg_response_time_ms + ' ms',
        s.p95_response_time_ms == null ? '' : 'p95 ' + fmtMs(s.p95_response_time_ms));
      if (!s.total_requests) notice.append(noUsage());
      renderShares(s);
      renderTop(s);
    } else {
      for (const name of ['total_requests', 'total_cost_usd', 'total_tokens', 'success_rate', 'avg_response_time_ms']) setMetric(name, null, DASH);
      notice.append(errorBox(stats.reason, 'usage statistics'));
      for (const id of ['#provider-share', '#task-share', '#top-models', '#top-users']) $(id).replaceChildren();
    }

    if (alerts.status === 'fulfilled') {
      const active = alerts.value.data || [];
      const serious = active.filter((a) => a.severity === 'critical' || a.severity === 'high').length;
      setMetric('active_alerts', active.length, exact.format(active.length), null,
        serious ? `${serious} high or critical` : active.length ? 'none high or critical' : 'all quiet');
      $('[data-metric="active_alerts"]').classList.toggle('metric-warn', serious > 0);
    } else {
      setMetric('active_alerts', null, DASH, null, alerts.reason.message);
    }

    $('#daily-title').textContent = hourly ? 'Cost per hour by provider' : 'Cost per day by provider';
    if (series.status === 'fulfilled') {
      drawDaily(series.value);
    } else {
      dropChart('daily');
      fill($('[data-chart="daily"]'), errorBox(series.reason, 'the usage series'));
      $('#daily-extra').replaceChildren();
    }
  }

  function noUsage() {
    return h('div', { class: 'empty empty-large' },
      h('strong', null, 'No usage yet'),
      ' — point your OpenAI SDK at this gateway: ', h('code', null, `base_url="${location.origin}/v1"`),
      ' with a Tollgate key (tg_…) as the API key, or send records to ', h('code', null, `POST ${location.origin}${API}/usage`),
      '. If you expected data here, widen the date range or clear the filters.');
  }

  function barList(items, name, color) {
    return h('ul', { class: 'bar-list' }, items.map((item, i) => {
      const swatch = span('swatch');
      swatch.style.background = color ? color(item, i) : '';
      return h('li', { 'data-id': item.key },
        span('bar-label', color ? swatch : null, name(item)),
        shareBar(item.share_of_cost, color && color(item, i)),
        span('bar-value', money(item.cost_usd), muted(` · ${fmtPercent(item.share_of_cost)} · `), count(item.requests), muted(' req')));
    }));
  }

  function renderShares(stats) {
    const providers = (stats.by_provider || []).map((p) => ({ ...p, key: p.provider }));
    const tasks = (stats.by_task_type || []).map((t) => ({ ...t, key: t.task_type }));
    fill($('#provider-share'), providers.length ? barList(providers, (p) => providerName(p.provider), (p, i) => providerColor(p.provider, i)) : empty('No providers have usage in this range.'));
    fill($('#task-share'), tasks.length ? barList(tasks, (t) => taskName(t.task_type)) : empty('No usage in this range.'));
  }

  function renderTop(stats) {
    const models = (stats.by_model || []).slice(0, 10);
    const users = (stats.by_user || []).slice(0, 10);
    const figures = [
      col('requests', 'Requests', (r) => count(r.requests), { num: true }),
      col('tokens', 'Tokens', (r) => tokens(r.total_tokens), { num: true }),
      col('cost', 'Cost', (r) => money(r.cost_usd), { num: true }),
      col('share', 'Share', (r) => fmtPercent(r.share_of_cost), { num: true }),
    ];
    fill($('#top-models'), models.length ? table('top-models', [
      col('model', 'Model', (m) => mono(m.model)),
      col('provider', 'Provider', (m) => providerName(m.provider)),
      ...figures,
    ], models, { id: (m) => m.model, caption: 'Top models by cost', compact: true }) : empty('No models used in this range.'));
    fill($('#top-users'), users.length ? table('top-users', [
      col('user', 'User', (u) => (u.user_id == null ? muted('(no user)') : mono(u.user_id))),
      ...figures,
    ], users, { id: (u) => u.user_id || '', caption: 'Top users by cost', compact: true }) : empty('No users have usage in this range.'));
  }

  // ---------------------------------------------------------------- Providers

  async function loadProviders() {
    const range = rangeParams();
    const member = !orgAdmin();
    // Model performance has no user dimension; a member reads their own
    // per-model figures from the stats instead (the route needs org_admin).
    const params = member ? { ...range, ...dimensionParams() } : { ...range, ...dimensionParams(false) };
    $('[data-panel="providers"]').setAttribute('data-query', query(params).slice(1));
    $('#balances-card').hidden = !isAdmin();
    const [balances, perf] = await Promise.allSettled([
      isAdmin() ? api('/providers') : null,
      api(member ? '/usage/stats' : '/models/performance', params),
    ]);
    if (same('providers', [params, state.filters.user_id, balances, perf])) return;
    if (isAdmin()) fill($('#balances'), balances.status === 'fulfilled' ? renderBalances(balances.value.data || []) : errorBox(balances.reason, 'provider balances'));
    $('#perf-note').textContent = member
      ? 'Your own usage per model in the chosen range. Organization-wide model performance per task type needs the org_admin role.'
      : state.filters.user_id.trim()
        ? 'Model performance is kept per organization, provider, model and task type: the user filter does not apply here.'
        : 'Per provider, model and task type over the whole days of the chosen range. Click a column header to sort.';
    if (perf.status !== 'fulfilled') return fill($('#performance'), errorBox(perf.reason, 'model performance'));
    renderPerformance(member ? (perf.value.by_model || []).map((m) => ({ ...m, task_type: null })) : perf.value.data || []);
  }

  function renderBalances(list) {
    if (!list.length) return empty('No providers configured.');
    return table('providers', [
      col('provider', 'Provider', (p) => h('strong', null, providerName(p.provider))),
      col('key_status', 'API key', (p) => badge(p.key_status, 'key-' + p.key_status)),
      col('balance', 'Balance', balanceCell, { num: true }),
      col('credits', 'Credits / used', (p) => (p.total_credits_usd == null && p.total_usage_usd == null ? DASH : span(null, money(p.total_credits_usd), ' / ', money(p.total_usage_usd))), { num: true }),
      col('key_limit', 'Key limit left', (p) => (p.key_limit_usd == null ? muted('unlimited or unknown') : span(null, money(p.key_limit_remaining_usd), ' of ', money(p.key_limit_usd))), { num: true }),
      col('threshold', 'Low-balance alert at', (p) => money(p.low_balance_threshold_usd), { num: true }),
      col('reconciliation', 'Billed vs recorded', (p) => reconciliation(p.reconciliation)),
      col('checked_at', 'Last checked', (p) => (p.checked_at ? h('time', { datetime: p.checked_at, title: fmtDateTime(p.checked_at) }, fmtAgo(p.checked_at)) : muted('never'))),
      col('actions', 'Actions', (p) => h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'refresh', 'aria-label': `Refresh ${providerName(p.provider)} balance`, onclick: (e) => refreshProvider(p.provider, e.currentTarget) }, 'Refresh'),
        h('span', { class: 'row-message', role: 'status' }))),
    ], list, { id: (p) => p.provider, caption: 'Provider balances' });
  }

  function balanceCell(p) {
    if (p.balance_usd == null) return muted('unknown');
    const low = p.low_balance_threshold_usd != null && Number(p.balance_usd) <= Number(p.low_balance_threshold_usd);
    return span(low ? 'low-balance' : null, money(p.balance_usd), low ? badge('low', 'high') : null);
  }

  function reconciliation(r) {
    if (!r) return muted(DASH);
    return h('span', { title: `The provider billed ${fmtUsd(r.billed_usd)} on ${r.day}; the ledger recorded ${fmtUsd(r.recorded_usd)}` },
      fmtDate(r.day), ': ', money(r.billed_usd), ' vs ', money(r.recorded_usd), r.difference_usd == null ? null : muted(` (Δ ${fmtUsd(r.difference_usd)})`));
  }

  async function refreshProvider(provider, button) {
    const message = button.parentElement.querySelector('.row-message');
    button.disabled = true;
    message.textContent = 'Checking…';
    try {
      await post(`/providers/${encodeURIComponent(provider)}/refresh`);
      announce(providerName(provider) + ' balance refreshed.');
      await refresh('providers');
      message.textContent = ''; // (the row stays when nothing changed)
    } catch (error) {
      rowMessage(message, error.message);
    }
    button.disabled = false;
  }

  function renderPerformance(rows) {
    if (!rows.length) return fill($('#performance'), empty('No requests in this range. Widen the date range or clear the filters.'));
    const columns = [
      col('model', 'Model', (r) => mono(r.model), { sort: (r) => r.model.toLowerCase() }),
      col('provider', 'Provider', (r) => providerName(r.provider), { sort: (r) => r.provider }),
      col('task_type', 'Task type', (r) => taskName(r.task_type), { sort: (r) => r.task_type }),
      col('requests', 'Requests', (r) => count(r.requests), { num: true, sort: (r) => r.requests }),
      col('success_rate', 'Success', (r) => fmtPercent(r.success_rate), { num: true, sort: (r) => r.success_rate }),
      col('p50', 'p50 latency', (r) => fmtMs(r.p50_response_time_ms), { num: true, sort: (r) => r.p50_response_time_ms }),
      col('p95', 'p95 latency', (r) => fmtMs(r.p95_response_time_ms), { num: true, sort: (r) => r.p95_response_time_ms }),
      col('tokens', 'Tokens', (r) => tokens(r.total_tokens), { num: true, sort: (r) => r.total_tokens }),
      col('cost', 'Cost', (r) => money(r.cost_usd), { num: true, sort: (r) => r.cost_nano_usd }),
      col('per1k', 'Cost / 1K tokens', (r) => money(r.cost_per_1k_tokens_usd), { num: true, sort: (r) => (r.cost_per_1k_tokens_usd == null ? null : Number(r.cost_per_1k_tokens_usd)) }),
    ].filter((c) => c.key !== 'task_type' || orgAdmin());
    fill($('#performance'), table('model-performance', columns, rows, {
      id: (r) => r.model,
      attrs: (r) => ({ 'data-key': [r.provider, r.model, r.task_type || ''].join('/') }),
      caption: 'Model performance',
      sort: state.perfSort,
      onSort: (key) => {
        const s = state.perfSort;
        if (s.key === key) s.dir = s.dir === 'asc' ? 'desc' : 'asc';
        else Object.assign(s, { key, dir: ['model', 'provider', 'task_type'].includes(key) ? 'asc' : 'desc' });
        renderPerformance(rows);
        const button = $(`[data-table="model-performance"] button[data-sort="${key}"]`);
        if (button) button.focus();
      },
    }));
  }

  // ---------------------------------------------------------------- Alerts

  const severityRank = (s) => (SEVERITIES.includes(s) ? SEVERITIES.indexOf(s) : 9);

  async function loadAlerts() {
    $('#alert-create-card').hidden = !orgAdmin();
    $('#webhooks-card').hidden = !isAdmin();
    const fields = $('#history-filters').elements;
    const history = { limit: 200 };
    for (const name of ['status', 'severity', 'alert_type', 'provider']) history[name] = fields.namedItem(name).value;
    // Open alerts: active and acknowledged (still to be resolved).
    const [active, acknowledged, past, webhooks] = await Promise.allSettled([
      api('/alerts', { status: 'active', limit: 1000 }),
      api('/alerts', { status: 'acknowledged', limit: 1000 }),
      api('/alerts', history),
      isAdmin() ? api('/webhooks') : null,
    ]);
    const list = webhooks.status === 'fulfilled' ? (webhooks.value && webhooks.value.data) || [] : [];
    if (!same('alerts', [history, active, acknowledged, past, webhooks])) {
      if (active.status === 'fulfilled' && acknowledged.status === 'fulfilled') renderOpenAlerts([...(active.value.data || []), ...(acknowledged.value.data || [])]);
      else fill($('#alerts-open'), errorBox((active.status === 'rejected' ? active : acknowledged).reason, 'open alerts'));
      fill($('#alerts-history'), past.status === 'fulfilled' ? renderAlertHistory(past.value.data || []) : errorBox(past.reason, 'alert history'));
      if (isAdmin()) {
        if (webhooks.status === 'fulfilled') renderWebhooks(list);
        else fill($('#webhooks'), errorBox(webhooks.reason, 'webhooks'));
      }
    }
    if (!isAdmin()) return;
    if (state.webhook && list.some((w) => w.id === state.webhook)) await loadDeliveries(state.webhook);
    else {
      state.webhook = null;
      delete state.last.deliveries;
      $('#deliveries').replaceChildren();
    }
  }

  const alertText = (a) => h('div', { class: 'alert-text' }, h('strong', null, a.title), span('muted small', a.message));
  const alertStatus = (a) => badge(a.status, 'status-' + a.status);
  const alertOrg = (a) => a.org_id || muted('all');
  const alertType = (a) => span(null, words(a.alert_type), a.provider ? muted(' · ' + providerName(a.provider)) : null);

  function alertActions(alert) {
    if (!orgAdmin() || alert.status === 'resolved') return muted(DASH);
    const button = (action, text) => h('button', { type: 'button', class: 'btn btn-small', 'data-action': action, 'aria-label': `${text} alert ${alert.title}`, onclick: (e) => changeAlert(alert, action, e.currentTarget) }, text);
    return h('div', { class: 'row-actions' },
      alert.status === 'active' ? button('acknowledge', 'Acknowledge') : null,
      button('resolve', 'Resolve'),
      span('row-message'));
  }

  function renderOpenAlerts(alerts) {
    if (!alerts.length) return fill($('#alerts-open'), empty('No open alerts — all quiet. Alerts appear here when usage, error rates, balances or budgets cross their thresholds.'));
    alerts.sort((a, b) => severityRank(a.severity) - severityRank(b.severity)
      || (a.status === b.status ? 0 : a.status === 'active' ? -1 : 1)
      || (b.created_at > a.created_at ? 1 : -1));
    const rows = [];
    for (const severity of SEVERITIES) {
      const group = alerts.filter((a) => a.severity === severity);
      if (group.length) rows.push({ group: `${capital(severity)} (${group.length})` }, ...group);
    }
    fill($('#alerts-open'), table('alerts-active', [
      col('severity', 'Severity', (a) => badge(a.severity)),
      col('title', 'Alert', alertText),
      col('type', 'Type', alertType),
      col('org', 'Org', alertOrg),
      col('values', 'Current / threshold', (a) => (a.current_value == null && a.threshold_value == null ? DASH : `${a.current_value ?? DASH} / ${a.threshold_value ?? DASH}`), { num: true }),
      col('created', 'Raised', (a) => when(a.created_at)),
      col('status', 'Status', alertStatus),
      col('actions', 'Actions', alertActions),
    ], rows, { id: (a) => a.id, attrs: (a) => ({ 'data-status': a.status, 'data-severity': a.severity }), caption: 'Open alerts by severity' }));
  }

  function renderAlertHistory(alerts) {
    if (!alerts.length) return empty('No alerts match these filters.');
    return table('alerts-history', [
      col('created', 'Raised', (a) => when(a.created_at)),
      col('severity', 'Severity', (a) => badge(a.severity)),
      col('title', 'Alert', alertText),
      col('type', 'Type', alertType),
      col('org', 'Org', alertOrg),
      col('status', 'Status', alertStatus),
      col('handled', 'Handled', (a) => (a.resolved_at ? span(null, 'resolved ', when(a.resolved_at)) : a.acknowledged_at ? span(null, 'acknowledged ', when(a.acknowledged_at)) : DASH)),
    ], alerts, { id: (a) => a.id, attrs: (a) => ({ 'data-status': a.status }), caption: 'Alert history', compact: true });
  }

  async function changeAlert(alert, action, button) {
    const row = button.closest('tr');
    const buttons = $$('button', row);
    for (const b of buttons) b.disabled = true;
    try {
      const updated = await post(`/alerts/${encodeURIComponent(alert.id)}/${action}`);
      row.setAttribute('data-status', updated.status);
      fill($('[data-col="status"]', row), alertStatus(updated));
      announce(`Alert “${alert.title}” ${updated.status}.`);
      await refresh('alerts');
    } catch (error) {
      for (const b of buttons) b.disabled = false;
      rowMessage($('.row-message', row), error.message);
    }
  }

  // Forms: a message per field ([data-error-for]) and one for the form.
  function clearErrors(form) {
    for (const el of $$('[data-error-for]', form)) {
      el.textContent = '';
      el.hidden = true;
    }
    for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
    $('[data-form-error]', form).hidden = true;
  }

  function fieldError(form, name, message) {
    const slot = $(`[data-error-for="${name}"]`, form);
    if (!slot) return false;
    slot.id = slot.id || `${form.getAttribute('data-form')}-error-${name}`;
    slot.textContent = message;
    slot.hidden = false;
    const input = form.elements.namedItem(name);
    if (input && input.setAttribute) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', slot.id);
    }
    return true;
  }

  function formError(form, message) {
    const box = $('[data-form-error]', form);
    box.textContent = message;
    box.hidden = false;
  }

  /** Shows field errors (focusing the first), or the API's error for a field
   * it names (422), at the form. */
  function showErrors(form, errors) {
    const names = Object.keys(errors);
    for (const name of names) fieldError(form, name, errors[name]);
    formError(form, names.length === 1 ? errors[names[0]] : `Fix the ${names.length} highlighted fields.`);
    const first = $('[aria-invalid="true"]', form);
    if (first) first.focus();
  }

  function showApiError(form, error) {
    const param = error.param ? String(error.param).replace(/\[.*$/, '') : null;
    if (error.status === 422 && param && $(`[data-error-for="${param}"]`, form)) {
      showErrors(form, { [param]: error.message });
      formError(form, `Check ${words(param)}: ${error.message}`);
    } else {
      formError(form, error.status === 403 ? 'Not allowed for your role: ' + error.message : error.message);
    }
  }

  /** Wires a form: validate() returns {body, errors}; send(body) calls the API. */
  function handleForm(form, validate, send) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form);
      const { body, errors } = validate(form.elements);
      if (Object.keys(errors).length) return showErrors(form, errors);
      const submit = $('button[type="submit"]', form);
      submit.disabled = true;
      try {
        await send(body);
      } catch (error) {
        showApiError(form, error);
      } finally {
        submit.disabled = false;
      }
    });
  }

  const value = (fields, name) => fields.namedItem(name).value.trim();

  function setupAlertForms() {
    $('#history-filters').addEventListener('change', () => refresh('alerts'));
    const form = $('form[data-form="alert"]');
    handleForm(form, (fields) => {
      const body = { severity: value(fields, 'severity'), title: value(fields, 'title'), message: value(fields, 'message') };
      const errors = {};
      if (!body.title) errors.title = 'Give the alert a title.';
      if (!body.message) errors.message = 'Say what the alert is about.';
      if (value(fields, 'provider')) body.provider = value(fields, 'provider');
      return { body, errors };
    }, async (body) => {
      await post('/alerts', body);
      form.reset();
      announce('Alert raised.');
      await refresh('alerts');
    });
  }

  // ---------------------------------------------------------------- Webhooks

  function renderWebhooks(list) {
    fill($('#webhooks'), list.length ? table('webhooks', [
      col('url', 'URL', (w) => span('mono break', w.url)),
      col('events', 'Events', (w) => (w.events && w.events.length ? w.events.join(', ') : 'all')),
      col('min_severity', 'Min severity', (w) => badge(w.min_severity)),
      col('format', 'Format', (w) => w.format),
      col('created', 'Created', (w) => when(w.created_at)),
      col('actions', 'Actions', (w) => h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'deliveries', 'aria-label': `Deliveries for webhook ${w.url}`, 'aria-pressed': String(state.webhook === w.id), onclick: () => {
          state.webhook = w.id;
          delete state.last.deliveries;
          renderWebhooks(list);
          loadDeliveries(w.id);
        } }, 'Deliveries'),
        confirmButton('webhook ' + w.url, w.id, () => deleteWebhook(w)))),
    ], list, { id: (w) => w.id, caption: 'Webhooks', attrs: (w) => ({ 'aria-current': state.webhook === w.id ? 'true' : null }) })
      : empty('No webhooks yet — add one below to receive alert events (created, escalated, acknowledged, resolved) as signed POSTs, for example in Slack.'));
  }

  async function loadDeliveries(id) {
    const box = $('#deliveries');
    try {
      const list = (await api(`/webhooks/${encodeURIComponent(id)}/deliveries`)).data || [];
      // A slow answer for a webhook no longer chosen must not replace the chosen one's.
      if (state.webhook !== id || same('deliveries', [id, list])) return;
      fill(box, h('h3', null, 'Recent deliveries'), list.length ? table('deliveries', [
        col('created', 'Queued', (d) => when(d.created_at)),
        col('status', 'Status', (d) => badge(d.status, 'delivery-' + d.status)),
        col('attempts', 'Attempts', (d) => String(d.attempts), { num: true }),
        col('code', 'Last HTTP status', (d) => (d.last_status_code == null ? DASH : String(d.last_status_code)), { num: true }),
        col('error', 'Last error', (d) => d.last_error || DASH),
        col('delivered', 'Delivered', (d) => when(d.delivered_at)),
        col('event', 'Event id', (d) => span('mono small', d.event_id)),
      ], list, { id: (d) => d.id, caption: 'Recent deliveries', compact: true }) : empty('No deliveries yet: no alert event has been sent to this webhook.'));
    } catch (error) {
      if (state.webhook !== id) return;
      delete state.last.deliveries;
      fill(box, errorBox(error, 'deliveries'));
    }
  }

  async function deleteWebhook(webhook) {
    try {
      await api(`/webhooks/${encodeURIComponent(webhook.id)}`, null, { method: 'DELETE' });
      announce('Webhook deleted.');
      await refresh('alerts');
    } catch (error) {
      fill($('#webhook-secret'), errorBox(error));
    }
  }

  /** A Delete button (for `name`) that asks for a second click within 5 s
   * (no dialogs); armed by `key`, so a redrawn row stays armed. */
  const armedUntil = {};

  function confirmButton(name, key, action) {
    const button = h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-action': 'delete' });
    const armed = () => (armedUntil[key] || 0) > Date.now();
    const sync = () => {
      const on = armed();
      button.textContent = on ? 'Confirm delete' : 'Delete';
      button.setAttribute('aria-label', `${button.textContent} ${name}`);
      button.classList.toggle('armed', on);
      if (on) setTimeout(sync, armedUntil[key] - Date.now() + 20);
    };
    sync();
    button.addEventListener('click', async () => {
      if (!armed()) {
        armedUntil[key] = Date.now() + 5000;
        return sync();
      }
      delete armedUntil[key];
      sync();
      button.disabled = true;
      await action();
      button.disabled = false;
    });
    return button;
  }

  function setupWebhookForm() {
    const form = $('form[data-form="webhook"]');
    handleForm(form, (fields) => {
      const body = { url: value(fields, 'url'), min_severity: value(fields, 'min_severity'), format: value(fields, 'format') };
      const errors = {};
      const secret = fields.namedItem('secret').value;
      if (!/^https?:\/\/\S+$/i.test(body.url)) errors.url = 'Enter an http(s) URL.';
      if (secret && secret.length < 16) errors.secret = 'At least 16 characters, or leave it empty to have one made.';
      if (secret) body.secret = secret;
      const events = $$('input[name="events"]:checked', form).map((el) => el.value);
      if (events.length) body.events = events;
      return { body, errors };
    }, async (body) => {
      const created = await post('/webhooks', body);
      form.reset();
      $('#webhook-create').open = false;
      fill($('#webhook-secret'), h('div', { class: 'notice', role: 'status' },
        h('strong', null, 'Webhook added. '),
        body.secret ? 'It signs deliveries with the secret you gave.' : span(null, 'Its signing secret is shown only now — copy it: ', h('code', { class: 'secret' }, created.secret)),
        ' ', h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: (e) => e.currentTarget.parentElement.remove() }, 'Dismiss')));
      await refresh('alerts');
    });
  }

  // ---------------------------------------------------------------- Budgets

  async function budgetsWithStatus() {
    const list = (await api('/budgets')).data || [];
    const statuses = await Promise.allSettled(list.map((b) => api(`/budgets/${encodeURIComponent(b.id)}/status`)));
    return list.map((budget, i) => ({ budget, status: statuses[i].value || null, error: statuses[i].reason || null }));
  }

  function budgetScope(b) {
    const parts = [];
    if (isAdmin()) parts.push(mono(b.org_id));
    parts.push(b.provider ? providerName(b.provider) : 'all providers');
    if (b.user_id) parts.push(span(null, 'user ', mono(b.user_id)));
    if (b.api_key_id) parts.push(h('span', { title: b.api_key_id }, `key ${b.api_key_id.slice(0, 8)}…`));
    return span(null, parts.flatMap((part, i) => (i ? [' · ', part] : [part])));
  }

  /** A budget in words, for labels: "acme · OpenAI · monthly". */
  const budgetName = (b) => [b.org_id, b.provider && providerName(b.provider), b.user_id && 'user ' + b.user_id,
    b.api_key_id && 'key ' + b.api_key_id.slice(0, 8), b.budget_type].filter(Boolean).join(' · ');

  function budgetBar(status) {
    const limit = Number(status.limit_usd);
    const spent = Number(status.spent_usd);
    const reserved = Number(status.reserved_usd);
    const pct = (v) => (limit > 0 ? Math.min(100, (v / limit) * 100) : v > 0 ? 100 : 0);
    const spentFill = span('budget-spent');
    spentFill.style.width = pct(spent).toFixed(1) + '%';
    const reservedFill = span('budget-reserved');
    reservedFill.style.width = Math.min(100 - pct(spent), pct(reserved)).toFixed(1) + '%';
    const used = limit > 0 ? (spent / limit) * 100 : 0;
    return h('div', { class: 'budget-meter' },
      h('div', { class: 'budget-bar state-' + status.state, role: 'img', 'aria-label': `${used.toFixed(0)}% spent: ${fmtUsd(status.spent_usd)} of ${fmtUsd(status.limit_usd)}, ${fmtUsd(status.reserved_usd)} reserved` }, spentFill, reservedFill),
      span('small', money(status.spent_usd), ' of ', money(status.limit_usd), muted(` · ${used.toFixed(0)}%`)));
  }

  const ifStatus = (render) => (x) => (x.status ? render(x.status) : DASH);

  async function loadBudgets() {
    const canEdit = orgAdmin();
    $('#budget-form-card').hidden = !canEdit;
    $('#budgets-readonly').hidden = canEdit;
    if (canEdit) await prepareBudgetForm();
    let items;
    let failure = null;
    try {
      items = await budgetsWithStatus();
    } catch (error) {
      failure = error;
    }
    if (same('budgets', [failure, items])) return;
    if (failure) return fill($('#budgets'), errorBox(failure, 'budgets'));
    if (!items.length) {
      return fill($('#budgets'), empty(canEdit
        ? 'No budgets yet — create one below to watch or cap spending per organization, provider, user or key.'
        : 'No budgets are set for your organization.'));
    }
    const columns = [
      col('scope', 'Scope', (x) => budgetScope(x.budget)),
      col('type', 'Period', (x) => `${words(x.budget.budget_type)} · ${x.budget.hard_limit ? 'hard' : 'soft'}`),
      col('amount', 'Amount', (x) => money(x.budget.budget_amount_usd), { num: true }),
      col('bar', 'Spent of limit', (x) => (x.error ? errorBox(x.error) : budgetBar(x.status))),
      col('reserved', 'Reserved', ifStatus((s) => money(s.reserved_usd)), { num: true }),
      col('remaining', 'Remaining', ifStatus((s) => money(s.remaining_usd)), { num: true }),
      col('state', 'State', ifStatus((s) => badge(s.state, 'state-' + s.state))),
      col('period_end', 'Period ends', ifStatus((s) => when(s.period_end))),
    ];
    if (canEdit) {
      columns.push(col('actions', 'Actions', (x) => h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'edit', 'aria-label': 'Edit budget ' + budgetName(x.budget), onclick: () => editBudget(x.budget) }, 'Edit'),
        confirmButton('budget ' + budgetName(x.budget), x.budget.id, () => deleteBudget(x.budget)))));
    }
    fill($('#budgets'), table('budgets', columns, items, { id: (x) => x.budget.id, attrs: (x) => ({ 'data-state': x.status && x.status.state }), caption: 'Budgets' }));
  }

  /** Organizations to choose from: every one for an admin, their own otherwise. */
  async function prepareBudgetForm() {
    const select = $('#b-org');
    const current = select.value;
    let orgs = [{ id: state.session.org_id || '' }];
    if (isAdmin()) {
      try { orgs = await loadOrgs(); } catch (_) { orgs = []; }
    }
    fill(select, orgs.map(orgOption));
    if (current) select.value = current;
    if (state.editing && select.value !== state.editing.org_id) {
      select.append(h('option', { value: state.editing.org_id }, state.editing.org_id));
      select.value = state.editing.org_id;
    }
    select.disabled = Boolean(state.editing) || !isAdmin();
  }

  /** A USD amount as the API takes it (a decimal string), or null. */
  function usdText(text) {
    const t = String(text).trim().replace(/^\$/, '').replace(/,/g, '');
    return /^(\d+(\.\d*)?|\.\d+)$/.test(t) ? t : null;
  }

  /** The budget form as a request body (PUT sends every field, null to
   * clear a scope), with client-side checks. */
  function budgetBody(fields, editing) {
    const errors = {};
    const body = {
      budget_type: value(fields, 'budget_type'),
      rollover_policy: value(fields, 'rollover_policy'),
      hard_limit: fields.namedItem('hard_limit').checked,
    };
    const amountText = value(fields, 'budget_amount_usd');
    const amount = usdText(amountText);
    if (!amountText) errors.budget_amount_usd = 'Enter an amount in USD.';
    else if (amount === null) errors.budget_amount_usd = 'Enter a number such as 250 or 99.50 (USD).';
    else if (Number(amount) <= 0) errors.budget_amount_usd = 'The amount must be greater than $0.';
    else if (Number(amount) > 1000000) errors.budget_amount_usd = 'The amount can be at most $1,000,000 per period.';
    else body.budget_amount_usd = amount;
    const soft = value(fields, 'soft_limit_percent').split(/[\s,;%]+/).filter(Boolean);
    if (soft.some((v) => !/^\d+$/.test(v) || +v < 1 || +v > 100)) errors.soft_limit_percent = 'Whole percentages from 1 to 100, separated by commas.';
    else if (soft.length > 10) errors.soft_limit_percent = 'At most 10 thresholds.';
    else body.soft_limit_percent = soft.map(Number);
    const cap = value(fields, 'rollover_cap_usd');
    if (cap && body.rollover_policy !== 'carry_unused') errors.rollover_cap_usd = 'A cap applies only to the “carry unused” rollover.';
    else if (cap && usdText(cap) === null) errors.rollover_cap_usd = 'Enter a USD amount, or leave it empty for no cap.';
    const key = value(fields, 'api_key_id');
    if (key && !/^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(key)) errors.api_key_id = 'A key id is a UUID, or leave it empty.';
    if (!editing) {
      body.org_id = value(fields, 'org_id');
      if (!body.org_id) errors.org_id = 'Choose an organization.';
    }
    if (value(fields, 'timezone')) body.timezone = value(fields, 'timezone');
    const optional = { provider: value(fields, 'provider'), user_id: value(fields, 'user_id'), api_key_id: key, reset_date: value(fields, 'reset_date'), rollover_cap_usd: cap && usdText(cap) };
    for (const [name, text] of Object.entries(optional)) {
      if (text) body[name] = text;
      else if (editing) body[name] = null;
    }
    return { body, errors };
  }

  function setupBudgetForm() {
    const form = $('form[data-form="budget"]');
    const fields = form.elements;
    handleForm(form, (f) => budgetBody(f, state.editing), async (body) => {
      const editing = state.editing;
      if (editing) await api(`/budgets/${encodeURIComponent(editing.id)}`, null, { method: 'PUT', body });
      else await post('/budgets', body);
      announce(editing ? 'Budget saved.' : 'Budget created.');
      resetBudgetForm();
      await refresh('budgets');
    });
    $('[data-action="cancel-edit"]', form).addEventListener('click', resetBudgetForm);
    const policy = fields.namedItem('rollover_policy');
    policy.addEventListener('change', () => { fields.namedItem('rollover_cap_usd').disabled = policy.value !== 'carry_unused'; });
    fields.namedItem('rollover_cap_usd').disabled = true;
  }

  function setBudgetMode(editing) {
    const form = $('form[data-form="budget"]');
    state.editing = editing;
    clearErrors(form);
    $('#budget-form-title').textContent = editing ? 'Edit budget' : 'New budget';
    $('[data-submit]', form).textContent = editing ? 'Save budget' : 'Create budget';
    $('[data-action="cancel-edit"]', form).hidden = !editing;
    return form.elements;
  }

  function resetBudgetForm() {
    const fields = setBudgetMode(null);
    const org = fields.namedItem('org_id').value;
    $('form[data-form="budget"]').reset();
    fields.namedItem('org_id').value = org;
    fields.namedItem('org_id').disabled = !isAdmin();
    fields.namedItem('rollover_cap_usd').disabled = true;
  }

  function editBudget(b) {
    const fields = setBudgetMode(b);
    prepareBudgetForm();
    const set = { budget_type: b.budget_type, budget_amount_usd: b.budget_amount_usd, soft_limit_percent: (b.soft_limit_percent || []).join(', '), provider: b.provider, user_id: b.user_id, api_key_id: b.api_key_id, rollover_policy: b.rollover_policy, rollover_cap_usd: b.rollover_cap_usd, reset_date: b.reset_date, timezone: b.timezone || 'UTC' };
    for (const [name, v] of Object.entries(set)) fields.namedItem(name).value = v || '';
    fields.namedItem('rollover_cap_usd').disabled = b.rollover_policy !== 'carry_unused';
    fields.namedItem('hard_limit').checked = Boolean(b.hard_limit);
    $('#budget-form-card').scrollIntoView({ behavior: 'smooth', block: 'start' });
    fields.namedItem('budget_amount_usd').focus({ preventScroll: true });
  }

  async function deleteBudget(b) {
    try {
      await api(`/budgets/${encodeURIComponent(b.id)}`, null, { method: 'DELETE' });
      if (state.editing && state.editing.id === b.id) resetBudgetForm();
      announce('Budget deleted.');
      await refresh('budgets');
    } catch (error) {
      announce('Could not delete the budget: ' + error.message, 'budgets');
    }
  }

  // ---------------------------------------------------------------- Projections

  async function loadProjections() {
    const dims = dimensionParams();
    const days = state.projection.days;
    $('[data-panel="projections"]').setAttribute('data-query', query({ ...dims, days }).slice(1));
    const [projection, history, budgets] = await Promise.allSettled([
      api('/projections', { ...dims, days }),
      api('/usage/daily', dims),
      budgetsWithStatus(),
    ]);
    if (same('projections', [dims, days, state.projection.series, projection, history, budgets])) return;
    fill($('#exhaustion'), budgets.status === 'fulfilled' ? renderExhaustion(budgets.value) : errorBox(budgets.reason, 'budgets'));
    if (projection.status !== 'fulfilled') {
      dropChart('projection');
      fill($('#projection-summary'), errorBox(projection.reason, 'the projection'));
      $('[data-chart="projection"]').replaceChildren();
      $('#projection-data').replaceChildren();
      $('#projection-providers').replaceChildren();
      return;
    }
    const p = projection.value;
    const providers = (p.by_provider || []).map((x) => x.provider);
    if (!providers.includes(state.projection.series)) state.projection.series = 'overall';
    const select = $('#p-series');
    fill(select, h('option', { value: 'overall' }, 'All providers'), providers.map((name) => h('option', { value: name }, providerName(name))));
    select.value = state.projection.series;
    const chosen = state.projection.series === 'overall' ? p : (p.by_provider || []).find((x) => x.provider === state.projection.series);
    renderProjectionSummary(chosen, p);
    drawProjection(chosen, history.status === 'fulfilled' ? history.value : null, state.projection.series);
    renderProjectionProviders(p);
  }

  const backtestText = (x) => (x.backtest && x.backtest.wape_percent != null ? `${Number(x.backtest.wape_percent).toFixed(1)}%` : null);

  function renderProjectionSummary(p, overall) {
    const methods = { weekday_trend: 'weekday pattern and trend', recent_mean: 'recent daily mean', none: 'none (no cost history)' };
    const stat = (name, text, title) => h('div', { class: 'stat' }, span('stat-label', name), h('span', { class: 'stat-value', title }, text));
    const backtest = backtestText(p);
    fill($('#projection-summary'),
      h('div', { class: 'stats' },
        stat(`Next ${overall.horizon_days} days`, fmtUsd(p.projected_cost_usd), '$' + p.projected_cost_usd),
        stat('Likely range (≈80%)', `${fmtUsd(p.projected_low_usd)} – ${fmtUsd(p.projected_high_usd)}`),
        stat('Trend', fmtUsd(p.trend_usd_per_day) + ' / day'),
        stat('Method', methods[p.method] || words(p.method)),
        stat('Backtest error', backtest ? `${backtest} WAPE over ${p.backtest.holdout_days} days` : 'too little history to backtest'),
        stat('History', `${p.history_days} day(s) with usage`, overall.history_start ? `${overall.history_start} to ${overall.history_end}` : null)),
      p.insufficient_history ? h('p', { class: 'notice warn', role: 'note' }, p.note || 'Too little history for a reliable projection.') : null,
      p.method === 'none' ? empty('No cost history yet — projections start once the gateway has recorded priced requests.') : null);
  }

  /** The last 30 days' actual cost as bars, then the projection with its band. */
  function drawProjection(p, history, series) {
    const container = $('[data-chart="projection"]');
    const actual = new Map();
    for (const point of (history && history.data) || []) {
      const group = series === 'overall' ? point : (point.by_provider || []).find((g) => g.provider === series);
      actual.set(point.date, group ? group.cost_usd : '0');
    }
    const projected = new Map((p.daily || []).map((d) => [d.date, d]));
    const dates = Array.from(new Set([...actual.keys(), ...projected.keys()])).sort();
    if (!dates.length) {
      dropChart('projection');
      $('#projection-data').replaceChildren();
      return fill(container, empty('Nothing to chart yet.'));
    }
    const pick = (field) => dates.map((d) => (projected.has(d) ? Number(projected.get(d)[field]) : null));
    const band = cssVar('--band', 'rgba(37, 99, 235, 0.15)');
    const actualColor = series === 'overall' ? cssVar('--text', '#1f2933') : providerColor(series, 0);
    const edge = (label) => ({ label, stroke: band, width: 1, dash: [4, 4], points: { show: false }, value: usdValue });
    drawChart('projection', container, () => ({
      tzDate: utcDate,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: axes(),
      bands: [{ series: [2, 3], fill: band }],
      series: [
        { label: 'Day', value: (u, ts) => (ts == null ? DASH : fmtDate(stampDay(ts))) },
        { label: 'Actual', stroke: actualColor, fill: actualColor, width: 0, paths: bars(0.6), points: { show: false }, value: usdValue },
        edge('High'),
        edge('Low'),
        { label: 'Projected', stroke: cssVar('--accent', '#2563eb'), width: 2, points: { show: false }, value: usdValue },
      ],
    }), [dates.map(dayStamp), dates.map((d) => (actual.has(d) ? Number(actual.get(d)) : null)), pick('high_usd'), pick('low_usd'), pick('expected_usd')]);
    const cell = (field) => (d) => (projected.has(d) ? money(projected.get(d)[field]) : DASH);
    chartData($('#projection-data'), 'Actual and projected cost per day', [
      col('day', 'Day', fmtDate),
      col('actual', 'Actual', (d) => (actual.has(d) ? money(actual.get(d)) : DASH), { num: true }),
      col('projected', 'Projected', cell('expected_usd'), { num: true }),
      col('low', 'Low', cell('low_usd'), { num: true }),
      col('high', 'High', cell('high_usd'), { num: true }),
    ], dates);
  }

  function renderProjectionProviders(p) {
    fill($('#projection-providers'), table('projections', [
      col('provider', 'Provider', (x) => (x.provider ? providerName(x.provider) : h('strong', null, 'All providers'))),
      col('projected', `Next ${p.horizon_days} days`, (x) => money(x.projected_cost_usd), { num: true }),
      col('band', 'Range', (x) => span(null, money(x.projected_low_usd), ' – ', money(x.projected_high_usd)), { num: true }),
      col('method', 'Method', (x) => words(x.method)),
      col('backtest', 'Backtest error', (x) => backtestText(x) || DASH, { num: true }),
      col('note', 'Note', (x) => (x.note ? span('muted small', x.note) : '')),
    ], [{ ...p, provider: null }, ...(p.by_provider || [])], { id: (x) => x.provider || 'overall', caption: 'Projection by provider', compact: true }));
  }

  function renderExhaustion(items) {
    if (!items.length) return empty('No budgets yet — create one on the Budgets tab to see when it would run out.');
    return table('exhaustion', [
      col('scope', 'Budget', (x) => span(null, budgetScope(x.budget), muted(' · ' + words(x.budget.budget_type)))),
      col('limit', 'Limit', ifStatus((s) => money(s.limit_usd)), { num: true }),
      col('spent', 'Spent', ifStatus((s) => money(s.spent_usd)), { num: true }),
      col('state', 'State', ifStatus((s) => badge(s.state, 'state-' + s.state))),
      col('exhaustion', 'Projected to run out', ifStatus((s) => (s.projected_exhaustion_at ? h('strong', { class: 'warn-text' }, when(s.projected_exhaustion_at)) : muted('not before the period ends')))),
      col('period_end', 'Period ends', ifStatus((s) => when(s.period_end))),
    ], items, { id: (x) => x.budget.id, caption: 'Budget exhaustion', compact: true });
  }

  function setupProjectionControls() {
    $('#p-series').addEventListener('change', (e) => {
      state.projection.series = e.target.value;
      refresh('projections');
    });
    $('#p-days').addEventListener('change', (e) => {
      state.projection.days = Number(e.target.value);
      refresh('projections');
    });
  }

  // ---------------------------------------------------------------- Usage explorer

  async function loadUsage() {
    const filters = { ...rangeParams(), ...dimensionParams() };
    const paging = state.records;
    $('[data-panel="usage"]').setAttribute('data-query', query(filters).slice(1));
    // The export takes the same filters; as a plain link, the cookie authenticates it.
    $('#csv-link').href = API + '/usage/export' + query({ format: 'csv', ...filters });
    const at = paging.page;
    const ask = { ...filters, limit: $('#r-limit').value, cursor: paging.cursors[at] };
    let page = null;
    let failure = null;
    try {
      page = await api('/usage/records', ask);
    } catch (error) {
      failure = error;
    }
    // Paged or re-filtered meanwhile: the next run (already asked for) shows that.
    if (paging !== state.records || paging.page !== at) return;
    const list = (page && page.data) || [];
    paging.next = page && page.has_more ? page.next_cursor : null;
    $('[data-action="newer"]').disabled = paging.page === 0;
    $('[data-action="older"]').disabled = !paging.next;
    if (paging.focus && document.activeElement === document.body) {
      const next = $$('.pager button').find((b) => !b.disabled && (b.getAttribute('data-action') === paging.focus || paging.page === 0));
      if (next) next.focus();
    }
    paging.focus = null;
    if (same('usage', [ask, failure, page])) return;
    if (failure) return fill($('#records'), errorBox(failure, 'usage records'));
    $('#page-label').textContent = `Page ${paging.page + 1}` + (list.length ? ` · ${list.length} records` : '');
    if (!list.length) {
      const filtered = ['provider', 'model', 'task_type', 'user_id', 'org_id'].some((name) => filters[name]);
      return fill($('#records'), paging.page === 0 && !filtered ? noUsage() : empty('No records match these filters and dates.'));
    }
    fill($('#records'), table('records', [
      col('created_at', 'Time', (r) => when(r.created_at)),
      col('org_id', 'Org', (r) => mono(r.org_id)),
      col('user_id', 'User', (r) => (r.user_id == null ? muted(DASH) : mono(r.user_id))),
      col('provider', 'Provider', (r) => providerName(r.provider)),
      col('model', 'Model', (r) => mono(r.model)),
      col('task_type', 'Task', (r) => taskName(r.task_type)),
      col('input_tokens', 'Tokens in', (r) => tokens(r.input_tokens), { num: true }),
      col('output_tokens', 'Tokens out', (r) => tokens(r.output_tokens), { num: true }),
      col('cost', 'Cost', recordCost, { num: true }),
      col('latency', 'Latency', (r) => fmtMs(r.latency_ms), { num: true }),
      col('status', 'Status', (r) => h('span', { title: r.error_type || null }, badge(r.status, 'record-' + r.status), r.status_code ? span('muted small', ' ' + r.status_code) : null)),
    ], list, { id: (r) => r.request_id, attrs: (r) => ({ 'data-user-id': r.user_id || '' }), caption: 'Usage records, newest first', compact: true }));
  }

  function recordCost(r) {
    if (r.cost_usd != null) return h('span', { title: `$${r.cost_usd} (${words(r.cost_status)})` }, fmtUsd(r.cost_usd));
    if (r.estimated_cost_usd != null) return h('span', { title: `estimated: $${r.estimated_cost_usd}` }, '≈' + fmtUsd(r.estimated_cost_usd));
    return h('span', { class: 'muted', title: 'no price known for this model' }, 'unpriced');
  }

  /** The export, fetched first: an error is shown, not saved as a .csv. */
  async function downloadCsv(event) {
    event.preventDefault();
    const link = event.currentTarget;
    const box = $('#csv-error');
    if (link.getAttribute('aria-busy')) return;
    link.setAttribute('aria-busy', 'true');
    box.hidden = true;
    try {
      const response = await fetch(link.href, { credentials: 'same-origin', cache: 'no-store' });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        const message = (data && data.error && data.error.message) || `The server answered ${response.status}`;
        if (response.status === 401) return sessionEnded(message);
        throw new Error(message);
      }
      const url = URL.createObjectURL(await response.blob());
      const a = h('a', { href: url, download: link.getAttribute('download') || 'tollgate-usage.csv', hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      announce('CSV export downloaded.');
    } catch (error) {
      box.textContent = 'Could not export the records: ' + error.message;
      box.hidden = false;
    } finally {
      link.removeAttribute('aria-busy');
    }
  }

  function setupUsageControls() {
    $('#csv-link').addEventListener('click', downloadCsv);
    $('#r-limit').addEventListener('change', () => {
      state.records = freshPaging();
      refresh('usage');
    });
    // Both pager buttons wait for the page asked for: a double click pages once.
    const turn = (step) => {
      const paging = state.records;
      if (step > 0) {
        if (!paging.next) return;
        paging.cursors.length = paging.page + 1;
        paging.cursors.push(paging.next);
      } else if (paging.page === 0) return;
      paging.page += step;
      paging.next = null;
      paging.focus = document.activeElement && document.activeElement.closest('.pager') && document.activeElement.getAttribute('data-action');
      for (const name of ['newer', 'older']) $(`[data-action="${name}"]`).disabled = true;
      refresh('usage');
    };
    $('[data-action="older"]').addEventListener('click', () => turn(1));
    $('[data-action="newer"]').addEventListener('click', () => turn(-1));
  }

  // ---------------------------------------------------------------- tabs and polling

  const loaders = { overview: loadOverview, providers: loadProviders, alerts: loadAlerts, projections: loadProjections, budgets: loadBudgets, usage: loadUsage };

  /** Loads a tab's data; a call while one runs makes it run once more after. */
  async function refresh(tab) {
    if (!state.session) return;
    if (state.busy[tab]) {
      state.busy[tab] = 'again';
      return;
    }
    state.busy[tab] = true;
    const panel = $(`[data-panel="${tab}"]`);
    const wraps = () => $$('.table-wrap', panel);
    panel.setAttribute('aria-busy', 'true');
    let ok = false;
    try {
      const focus = focusKey(panel);
      const scrolled = wraps().filter((el) => el.scrollLeft).map((el) => [el.getAttribute('aria-label'), el.scrollLeft]);
      await loaders[tab]();
      ok = true;
      restoreFocus(panel, focus);
      for (const [label, left] of scrolled) {
        const el = wraps().find((w) => w.getAttribute('aria-label') === label);
        if (el) el.scrollLeft = left;
      }
    } catch (error) {
      if (error.status !== 401) announce('Something went wrong: ' + (error.message || error), tab);
    } finally {
      const again = state.busy[tab] === 'again';
      state.busy[tab] = false;
      if (state.session) {
        markLoaded(tab, ok);
        if (again) refresh(tab);
      }
    }
  }

  // Re-rendering replaces tables: keyboard focus on a button in one (by its
  // table, row id and data-action or data-sort) is put back afterwards.
  function focusKey(panel) {
    const el = document.activeElement;
    const table = el && panel.contains(el) && el.closest('[data-table]');
    const attr = table && ['data-action', 'data-sort'].find((name) => el.hasAttribute(name));
    if (!attr) return null;
    const row = el.closest('tr[data-id]');
    return { table: table.getAttribute('data-table'), row: row && row.getAttribute('data-id'), attr, value: el.getAttribute(attr) };
  }

  function restoreFocus(panel, key) {
    if (!key || (document.activeElement && document.activeElement !== document.body)) return;
    const table = $(`[data-table="${key.table}"]`, panel);
    const scope = table && key.row ? $$('tr[data-id]', table).find((tr) => tr.getAttribute('data-id') === key.row) : table;
    const target = scope && $$(`[${key.attr}]`, scope).find((el) => el.getAttribute(key.attr) === key.value);
    if (target) target.focus();
  }

  function selectTab(tab, focus) {
    state.tab = TABS.includes(tab) ? tab : 'overview';
    for (const button of $$('[role="tab"]')) {
      const selected = button.dataset.tab === state.tab;
      button.setAttribute('aria-selected', String(selected));
      button.tabIndex = selected ? 0 : -1;
      if (selected && focus) button.focus();
    }
    for (const panel of $$('[role="tabpanel"]')) panel.hidden = panel.dataset.panel !== state.tab;
    syncFilterVisibility();
    if (location.hash !== '#' + state.tab) history.replaceState(null, '', '#' + state.tab);
    refresh(state.tab);
  }

  function setupTabs() {
    const tabs = $$('[role="tab"]');
    tabs.forEach((button, index) => {
      button.addEventListener('click', () => selectTab(button.dataset.tab));
      button.addEventListener('keydown', (event) => {
        const to = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[event.key];
        if (to === undefined) return;
        event.preventDefault();
        selectTab(tabs[(to + tabs.length) % tabs.length].dataset.tab, true);
      });
    });
    window.addEventListener('hashchange', () => {
      const tab = location.hash.slice(1);
      if (TABS.includes(tab) && tab !== state.tab && state.session) selectTab(tab);
    });
  }

  function startPolling() {
    stopPolling();
    if (state.paused) return;
    state.timer = setInterval(() => {
      if (!document.hidden && state.session) refresh(state.tab);
    }, POLL_MS);
  }

  function stopPolling() {
    clearInterval(state.timer);
    state.timer = null;
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.session && !state.paused) refresh(state.tab);
  });

  function setupPause() {
    const button = $('[data-action="pause"]');
    button.addEventListener('click', () => {
      state.paused = !state.paused;
      button.setAttribute('aria-pressed', String(state.paused));
      announce(state.paused ? 'Auto-refresh paused.' : 'Auto-refresh resumed.');
      startPolling();
      if (state.paused) $('#updated').textContent += ' · auto-refresh paused';
      else refresh(state.tab);
    });
  }

  // ---------------------------------------------------------------- session

  function showLogin(message) {
    stopPolling();
    $('#boot').hidden = true;
    $('#app').hidden = true;
    $('#who').hidden = true;
    $('#login').hidden = false;
    const error = $('#login-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('#login-key').value = '';
    $('#login-key').focus();
  }

  // Leaving a session reloads the page: nothing of it (data, a webhook's
  // secret, filters, cursors, answers still on their way) outlives it. The
  // login form's message is carried over in sessionStorage.
  const NOTE = 'tollgate-dashboard-note';
  const SIGNED_OUT = 'You are signed out.';

  function leave(message, reload) {
    stopPolling();
    state.session = null;
    try {
      if (message) sessionStorage.setItem(NOTE, message);
    } catch (_) { /* no storage: no message */ }
    if (reload) location.reload();
    else location.replace(BASE);
  }

  function sessionEnded(message) {
    if (state.session) leave(message || 'Your session has ended; sign in again.');
  }

  function takeNote() {
    try {
      const note = sessionStorage.getItem(NOTE);
      sessionStorage.removeItem(NOTE);
      return note;
    } catch (_) {
      return null;
    }
  }

  function startApp(session, note) {
    state.session = session;
    if (session.timezone) state.serverTz = session.timezone;
    $('#boot').hidden = true;
    $('#login').hidden = true;
    $('#app').hidden = false;
    $('#who').hidden = false;
    const who = $('[data-role-label]');
    const names = { admin: 'Admin', org_admin: 'Org admin', member: 'Member' };
    const scope = session.role === 'admin' ? 'all organizations' : [session.org_id, session.user_id].filter(Boolean).join(' / ');
    who.setAttribute('data-role', session.role);
    fill(who, span('badge badge-role', names[session.role] || session.role), muted(` ${session.role}${scope ? ' · ' + scope : ''}`));
    who.title = `Signed in as ${session.role} with ${session.key_id ? 'key ' + session.key_id : 'the admin token'}; the session ends ${fmtDateTime(session.expires_at)}`;
    syncFilterVisibility();
    loadFilterOptions().then(writeFilters);
    selectTab(location.hash.slice(1));
    startPolling();
    if (note === SIGNED_OUT) announce('Signing out did not finish: you are still signed in.', 'session');
  }

  function setupLogin() {
    const form = $('form[data-form="login"]');
    const error = $('#login-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = $('#login-key').value.trim();
      error.hidden = true;
      if (!key) {
        error.textContent = 'Enter your Tollgate key (tg_…) or the admin token.';
        error.hidden = false;
        return $('#login-key').focus();
      }
      const button = $('button[type="submit"]', form);
      button.disabled = true;
      try {
        const session = await request(BASE + '/session', { method: 'POST', body: { key } });
        form.reset();
        startApp(session);
      } catch (e) {
        error.textContent = e.status === 401 ? 'That key was not accepted: ' + e.message : e.message;
        error.hidden = false;
        $('#login-key').select();
      } finally {
        button.disabled = false;
      }
    });
    $('[data-action="logout"]').addEventListener('click', async (event) => {
      event.currentTarget.disabled = true;
      stopPolling();
      try {
        await request(BASE + '/session', { method: 'DELETE' });
      } catch (_) { /* the reload shows whether the session is gone */ }
      leave(SIGNED_OUT);
    });
  }

  async function boot() {
    setupTabs();
    setupFilters();
    setupLogin();
    setupAlertForms();
    setupWebhookForm();
    setupBudgetForm();
    setupProjectionControls();
    setupUsageControls();
    setupPause();
    const note = takeNote();
    try {
      startApp(await request(BASE + '/session'), note);
    } catch (error) {
      showLogin(error.status === 401 ? note || '' : error.message);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
