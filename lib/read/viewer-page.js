// @ts-check
/// <reference lib="dom" />
/*
 * The viewer's browser script, inlined into the page by viewer.ts (its CSP hash is computed from this file).
 * Type-checked by tsc (`// @ts-check`, allowJs); no build step, no module syntax: it runs as a classic script.
 *
 * Event data is attacker-controlled: every node is built with textContent (el/add), never from HTML text, and
 * links are `?query` strings made by URLSearchParams. Three views share the page: the dashboard (default), the
 * event list (`view=events`, or any filter in the URL) and an actor's timeline (`view=actor&actorId=`).
 * The detail pane is a list of small section renderers (DETAIL_SECTIONS): a new field is one more function.
 */
(function () {
  'use strict';

  /** @typedef {{ [key: string]: any }} Json */
  /** @typedef {import('uplot')} UPlot */
  /** uPlot, once its script (loaded by loadUplot) has run. @returns {typeof import('uplot')} */
  function uPlotLib() { return /** @type {any} */ (window).uPlot; }
  /** @typedef {{ kinds: string[], uplot: string }} Config */

  /** @param {string} id @returns {HTMLElement} */
  function byId(id) {
    const e = document.getElementById(id);
    if (e === null) throw new Error('missing #' + id);
    return e;
  }
  /** @type {Config} */
  const CONFIG = JSON.parse(byId('config').textContent || '{}');
  const KINDS = CONFIG.kinds;
  const KIND_COLORS = /** @type {Record<string, string>} */ ({
    request: '#7c9be0', create: '#3f9c5a', update: '#d9a22b', delete: '#c9483f', login: '#4ab3cf',
    login_failed: '#8e1f1a', logout: '#9a7fd1', loss: '#555b66', security: '#a05ec9',
  });
  const STATUS_COLORS = /** @type {Record<string, string>} */ ({ '1xx': '#9aa3b5', '2xx': '#3f9c5a', '3xx': '#4ab3cf', '4xx': '#d9a22b', '5xx': '#c9483f' });
  /** Filter inputs of the event list (text), and selects; the URL uses the same names (FILTER_KEYS). */
  const TEXT_FIELDS = ['actorId', 'model', 'documentId', 'requestId', 'ip', 'name', 'path', 'route', 'method', 'status', 'identifier', 'provider', 'q', 'tenant', 'traceId', 'onBehalfOfId', 'reason'];
  const SELECT_FIELDS = ['outcome', 'statusClass'];
  const FILTER_NAMES = ['kind', 'from', 'to', 'limit'].concat(TEXT_FIELDS, SELECT_FIELDS, ['actor']);
  const RANGES = /** @type {Record<string, number>} */ ({ '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 });
  const LIVE_MS = 5000;
  /** What the server offers this viewer (`api/config`): the revert route, the tenant of a scoped grant. */
  let serverConfig = /** @type {{ revert: boolean, tenant: string | null }} */ ({ revert: false, tenant: null });

  // ---------- building nodes: strings only ever become text ----------
  /**
   * @param {string} tag @param {string | null} [cls] @param {unknown} [text]
   * @returns {HTMLElement}
   */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  /** @template {Node} T @param {T} parent @param {...(Node | string | number | null | undefined)} kids @returns {T} */
  function add(parent, ...kids) {
    for (const c of kids) {
      if (c === null || c === undefined) continue;
      parent.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return parent;
  }
  /** @param {unknown} v */
  function str(v) { return v === null || v === undefined ? '' : String(v); }
  /** @param {unknown} v @param {number} [indent] */
  function json(v, indent) { try { return JSON.stringify(v, null, indent); } catch (e) { return String(v); } }
  /** @param {string} k */
  function kindClass(k) { return 'badge kind-' + (KINDS.indexOf(k) >= 0 ? k : 'other'); }
  const statusEl = byId('status');
  /** @param {string} text @param {string} [cls] */
  function setStatus(text, cls) { statusEl.textContent = text; statusEl.className = cls || ''; }
  /** @param {number} n */
  function fmt(n) { return n.toLocaleString('en-US'); }

  // ---------- time: local by default, UTC on hover, a toggle for UTC ----------
  const utcBox = /** @type {HTMLInputElement} */ (byId('utc'));
  utcBox.checked = localStorage.getItem('koa-audit-utc') === '1';
  /** @param {unknown} iso */
  function timeText(iso) {
    const d = new Date(str(iso));
    if (isNaN(d.getTime())) return str(iso);
    if (utcBox.checked) return d.toISOString().replace('T', ' ').replace(/Z$/, ' UTC');
    const pad = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0');
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
  }
  /** @param {unknown} iso @param {string} [cls] */
  function timeEl(iso, cls) {
    const t = el('time', cls || 'mono', timeText(iso));
    t.setAttribute('datetime', str(iso));
    t.title = str(iso) + ' (UTC)';
    return t;
  }

  // ---------- talking to the API ----------
  /** @param {Response} res */
  function readJson(res) {
    return res.json().catch(() => null).then((body) => {
      if (!res.ok) throw new Error('Error ' + res.status + (body && body.error ? ': ' + body.error : ''));
      return body;
    });
  }
  /** @param {string} url @returns {Promise<Json>} */
  function getJson(url) {
    return fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' }).then(readJson);
  }
  /** @param {Record<string, string | string[] | null | undefined>} params */
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === null || v === undefined || v === '') continue;
      if (Array.isArray(v)) v.forEach((x) => p.append(k, x));
      else p.set(k, v);
    }
    return p;
  }

  // ---------- views ----------
  const views = { dashboard: byId('dashboard-view'), events: byId('events-view'), actor: byId('actor-view') };
  /** @param {URLSearchParams} p @returns {'dashboard' | 'events' | 'actor'} */
  function viewOf(p) {
    const v = p.get('view');
    if (v === 'events' || v === 'actor' || v === 'dashboard') return v;
    for (const name of FILTER_NAMES) if (p.has(name) && name !== 'from' && name !== 'to') return 'events';
    return 'dashboard';
  }
  /** Navigates inside the page (history entry, no reload). @param {string} search */
  function go(search) {
    history.pushState(null, '', search || location.pathname);
    route();
  }
  /** A link that navigates inside the page on a plain click, and opens normally otherwise. @param {unknown} text @param {URLSearchParams} params @param {string} [cls] */
  function link(text, params, cls) {
    const a = /** @type {HTMLAnchorElement} */ (el('a', cls || null, text));
    a.href = '?' + params.toString();
    a.addEventListener('click', (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      ev.stopPropagation();
      go('?' + params.toString());
    });
    return a;
  }
  /**
   * The event list filtered by `params`. Reads of the trail shown: the dashboard's numbers count every event.
   * @param {Record<string, string | string[] | null | undefined>} params
   */
  function listParams(params) { const p = qs(params); p.set('view', 'events'); p.set('showAuditReads', '1'); return p; }
  /**
   * The API's filter for the list's: reads of the audit trail (`http.auditRead`, this page's own requests among
   * them) are left out unless the box asks for them.
   * @param {URLSearchParams} p
   */
  function apiFilter(p) {
    const f = new URLSearchParams(p);
    const show = f.get('showAuditReads') === '1';
    f.delete('showAuditReads');
    if (!show && !f.has('auditRead')) f.set('auditRead', 'false');
    return f;
  }

  function route() {
    const p = new URLSearchParams(location.search);
    const view = viewOf(p);
    stopLive();
    for (const [name, section] of Object.entries(views)) section.hidden = name !== view;
    byId('nav-dashboard').className = view === 'dashboard' ? 'current' : '';
    byId('nav-events').className = view === 'events' ? 'current' : '';
    if (view === 'dashboard') showDashboard(p);
    else if (view === 'actor') showActor(p);
    else showEvents(p);
  }

  // =====================================================================================================
  // Dashboard
  // =====================================================================================================
  const dash = byId('dashboard');
  const rangesEl = byId('ranges');
  /** @type {Promise<void> | null} */
  let uplotLoading = null;
  /** Loads uPlot from the package's own asset route (allowed by the CSP's 'strict-dynamic'). */
  function loadUplot() {
    if (uplotLoading === null) {
      uplotLoading = new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = CONFIG.uplot;
        s.onload = () => resolve();
        s.onerror = () => reject(new Error('could not load the charting library'));
        document.head.appendChild(s);
      });
    }
    return uplotLoading;
  }
  /** @type {UPlot[]} */
  let charts = [];
  let dashSeq = 0;

  /** @param {URLSearchParams} p */
  function showDashboard(p) {
    const range = p.get('range') || '24h';
    let from, to;
    if (range === 'custom') {
      from = new Date(p.get('from') || '');
      to = new Date(p.get('to') || '');
    } else {
      to = new Date();
      from = new Date(to.getTime() - (RANGES[range] || RANGES['24h']));
    }
    renderRanges(range, p);
    if (isNaN(from.getTime()) || isNaN(to.getTime())) {
      setStatus('Choose a valid custom range.', 'error');
      return;
    }
    const seq = ++dashSeq;
    delete dash.dataset.ready;
    setStatus('Loading…');
    const q = qs({ from: from.toISOString(), to: to.toISOString(), bucket: p.get('bucket'), tenant: p.get('tenant') });
    Promise.all([getJson('api/dashboard?' + q.toString()), loadUplot().then(() => null, (e) => e)]).then(([d, uplotError]) => {
      if (seq !== dashSeq) return;
      renderDashboard(d, uplotError);
      dash.dataset.ready = '1';
      setStatus(fmt(d.totals.events) + (d.totals.events === 1 ? ' event' : ' events') + ' in range');
    }, (err) => {
      if (seq !== dashSeq) return;
      dash.replaceChildren(el('p', 'alert', err.message));
      setStatus(err.message, 'error');
    });
  }

  /** @param {string} current @param {URLSearchParams} p */
  function renderRanges(current, p) {
    rangesEl.replaceChildren();
    for (const r of Object.keys(RANGES)) {
      add(rangesEl, link('Last ' + r.replace('h', ' h').replace('d', ' d'), qs({ view: p.has('tenant') ? 'dashboard' : null, range: r, tenant: p.get('tenant') }), r === current ? 'current' : ''));
    }
    const form = el('form', 'custom');
    const f = /** @type {HTMLInputElement} */ (el('input'));
    const t = /** @type {HTMLInputElement} */ (el('input'));
    f.type = t.type = 'datetime-local';
    f.name = 'from';
    t.name = 'to';
    f.step = t.step = '1';
    const iso = (/** @type {string | null} */ v) => { const d = v ? new Date(v) : null; return d && !isNaN(d.getTime()) ? d.toISOString().slice(0, 19) : ''; };
    if (current === 'custom') { f.value = iso(p.get('from')); t.value = iso(p.get('to')); }
    const b = el('button', null, 'Custom (UTC)');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!f.value || !t.value) return;
      go('?' + qs({ view: p.has('tenant') ? 'dashboard' : null, range: 'custom', from: f.value + (f.value.length === 16 ? ':00' : '') + 'Z', to: t.value + (t.value.length === 16 ? ':00' : '') + 'Z', tenant: p.get('tenant') }).toString());
    });
    add(rangesEl, add(form, f, ' – ', t, ' ', b));
    if (current === 'custom') add(rangesEl, el('span', 'current', ''));
  }

  /** @param {string} title @param {string} id @param {boolean} [wide] */
  function card(title, id, wide) {
    const c = el('section', 'card' + (wide ? ' wide' : ''));
    c.id = id;
    add(c, el('h2', null, title));
    return c;
  }

  /** @param {Json} d @param {unknown} uplotError */
  function renderDashboard(d, uplotError) {
    charts.forEach((c) => c.destroy());
    charts = [];
    dash.replaceChildren();
    const range = { from: d.from, to: d.to };
    /**
     * Every link lists exactly the events its number counts: of the dashboard's tenant too, when it has one.
     * @param {Record<string, string | string[] | null | undefined>} params
     */
    const listIn = (params) => listParams({ tenant: d.tenant, ...params });
    const bucketEnd = (/** @type {string} */ ts) => new Date(new Date(ts).getTime() + d.bucketMs).toISOString();

    // Summary, where the numbers came from, and what must never hide.
    const sum = card('Summary', 'summary', true);
    const tiles = el('div', 'tiles');
    /** @param {string} label @param {number} n @param {URLSearchParams} params @param {string} id */
    const tile = (label, n, params, id) => { const t = add(el('div', 'tile'), add(el('b'), link(fmt(n), params)), el('span', null, label)); t.id = id; return t; };
    add(tiles,
      tile('events', d.totals.events, listIn(range), 'tile-events'),
      tile('failures', d.totals.failures, listIn({ ...range, outcome: 'failure' }), 'tile-failures'),
      tile('failed logins', d.totals.loginFailed, listIn({ ...range, kind: 'login_failed' }), 'tile-login-failed'),
      tile('server errors (5xx)', d.totals.status['5xx'] || 0, listIn({ ...range, kind: 'request', statusClass: '5xx' }), 'tile-5xx'),
      tile('changes', (d.totals.byKind.create || 0) + (d.totals.byKind.update || 0) + (d.totals.byKind.delete || 0), listIn({ ...range, kind: ['create', 'update', 'delete'] }), 'tile-changes'));
    add(sum, tiles);
    const source = el('p', 'source', (d.source === 'rollups' ? 'From the rollups' : 'Counted from the events: ' + str(d.reason)) + ' · ' + timeText(d.from) + ' → ' + timeText(d.to) + ' · buckets of ' + d.bucket);
    source.id = 'source';
    source.dataset.source = d.source;
    add(sum, source);
    if (d.degraded) add(sum, el('p', 'alert', 'The audit store is failing to write right now (degraded): events wait in memory or in the spool.'));
    dash.appendChild(sum);

    if (d.losses.length > 0 || d.totals.lost > 0) {
      const c = card('Lost events', 'losses', true);
      add(c, el('p', 'alert', fmt(d.totals.lost) + ' events could not be kept in this range (' + d.losses.length + ' loss ' + (d.losses.length === 1 ? 'record' : 'records') + ').'));
      const ul = el('ul');
      for (const l of d.losses) {
        add(ul, add(el('li'), link(timeText(l.ts), listIn({ kind: 'loss', from: l.ts, to: new Date(new Date(l.ts).getTime() + 1).toISOString() })), ': ' + l.lost + ' lost (' + str(l.policy) + ')' + (l.from ? ', ' + timeText(l.from) + ' → ' + timeText(l.to) : '')));
      }
      dash.appendChild(add(c, ul));
    }

    // An answer from an older reader has no periods: nothing to show then, and no error.
    const periods = /** @type {Json[]} */ (d.degradedPeriods || []);
    if (periods.length > 0) {
      const c = card('Degraded periods of the store', 'degraded', true);
      add(c, el('p', 'alert', periods.length + (periods.length === 1 ? ' period' : ' periods') + ' in this range when the audit store failed to write: events waited in memory or in the spool, and were stored late or counted as lost.'));
      const ul = el('ul');
      const one = (/** @type {string} */ ts, /** @type {string} */ name) => listIn({ kind: 'security', name, from: ts, to: new Date(new Date(ts).getTime() + 1).toISOString() });
      for (const g of periods) {
        const li = el('li');
        li.dataset.from = g.from || '';
        li.dataset.to = g.to || '';
        add(li,
          g.from ? link(timeText(g.from), one(g.from, 'sys_monitor_disabled'), 'start') : 'before this range', ' → ',
          g.to ? link(timeText(g.to), one(g.to, 'sys_monitor_enabled'), 'end') : (d.degraded ? 'still degraded' : 'after this range'),
          g.error ? ' (' + g.error + ')' : '', ' · ',
          link('events of the period', listIn({ from: g.from || d.from, to: g.to ? new Date(new Date(g.to).getTime() + 1).toISOString() : d.to }), 'during'));
        add(ul, li);
      }
      dash.appendChild(add(c, ul));
    }

    const kinds = KINDS.filter((k) => d.totals.byKind[k] > 0);
    timeChart(card('Events over time, by kind (failures marked)', 'chart-events', true), d, kinds.map((k) => ({
      label: k, color: KIND_COLORS[k] || '#888', value: (/** @type {Json} */ p) => p.byKind[k] || 0,
      params: (/** @type {string} */ ts) => listIn({ kind: k, from: ts, to: bucketEnd(ts) }),
    })), {
      label: 'failures', value: (/** @type {Json} */ p) => p.failures, params: (/** @type {string} */ ts) => listIn({ outcome: 'failure', from: ts, to: bucketEnd(ts) }),
    }, uplotError);
    timeChart(card('Requests by status class', 'chart-status', false), d, ['1xx', '2xx', '3xx', '4xx', '5xx'].filter((c) => d.totals.status[c] > 0).map((c) => ({
      label: c, color: STATUS_COLORS[c], value: (/** @type {Json} */ p) => p.status[c] || 0,
      params: (/** @type {string} */ ts) => listIn({ kind: 'request', statusClass: c, from: ts, to: bucketEnd(ts) }),
    })), null, uplotError);
    timeChart(card('Failed logins over time', 'chart-logins', false), d, [{
      label: 'failed logins', color: KIND_COLORS.login_failed, value: (/** @type {Json} */ p) => p.loginFailed,
      params: (/** @type {string} */ ts) => listIn({ kind: 'login_failed', from: ts, to: bucketEnd(ts) }),
    }], null, uplotError);

    topList(card('Top failed identifiers', 'top-identifiers'), d.topFailedIdentifiers, (r) => listIn({ ...range, kind: 'login_failed', identifier: r.key }), true);
    topList(card('Top source IPs of failed logins', 'top-ips'), d.topFailedIps, (r) => listIn({ ...range, kind: 'login_failed', ip: r.key }), true);
    topList(card('Top actors by changes', 'top-actors'), d.topActors, (r) => listIn({ ...range, kind: ['create', 'update', 'delete'], actorId: r.key }), false);
    topList(card('Most-changed models', 'top-models'), d.topModels, (r) => listIn({ ...range, kind: ['create', 'update', 'delete'], model: r.key }), false);
    topList(card('Most-changed documents', 'top-documents'), d.topDocuments.map((/** @type {Json} */ r) => ({ ...r, label: r.model + ' ' + r.documentId })),
      (r) => listIn({ ...range, kind: ['create', 'update', 'delete'], model: r.model, documentId: r.documentId }), false);
    routesTable(card('Routes', 'routes', true), d.routes, { ...range, tenant: d.tenant });
    if (Object.keys(d.overflow).length > 0) {
      add(dash, el('p', 'source', 'Not in the tables above (a table of the rollups was full): ' + Object.entries(d.overflow).map(([k, v]) => k + ' ' + v).join(', ')));
    }
  }

  /**
   * A stacked bar chart over time (uPlot), with an optional line marking `mark` (failures), and under it the
   * same numbers as a table whose every cell links to the events it counts. A click on a bar opens the list of
   * that bucket and series.
   * @param {HTMLElement} c
   * @param {Json} d
   * @param {{ label: string, color: string, value: (p: Json) => number, params: (ts: string) => URLSearchParams }[]} series
   * @param {{ label: string, value: (p: Json) => number, params: (ts: string) => URLSearchParams } | null} mark
   * @param {unknown} uplotError
   */
  function timeChart(c, d, series, mark, uplotError) {
    dash.appendChild(c);
    const points = /** @type {Json[]} */ (d.series);
    const box = el('div', 'chart');
    add(c, box);
    if (series.length === 0) box.replaceWith(el('p', 'empty', 'Nothing in this range.'));
    else if (uplotError) add(box, el('p', 'alert', String(/** @type {Error} */ (uplotError).message)));
    else drawBars(box, d, series, mark);

    // The numbers, as a table of links (also what a screen reader and a test read).
    const details = add(el('details', 'data'), el('summary', null, 'Data'));
    const wrap = el('div');
    const t = el('table', 'datatable');
    const head = add(el('tr'), el('th', null, 'From'));
    series.forEach((s) => add(head, el('th', null, s.label)));
    if (mark) add(head, el('th', null, mark.label));
    const body = el('tbody');
    for (const p of points) {
      const tr = add(el('tr'), add(el('td', 'time'), timeEl(p.ts)));
      tr.dataset.ts = p.ts;
      for (const s of series) {
        const n = s.value(p);
        const td = add(el('td'), n > 0 ? link(n, s.params(p.ts)) : '0');
        td.dataset.series = s.label;
        td.dataset.count = String(n);
        tr.appendChild(td);
      }
      if (mark) {
        const n = mark.value(p);
        const td = add(el('td'), n > 0 ? link(n, mark.params(p.ts)) : '0');
        td.dataset.series = mark.label;
        td.dataset.count = String(n);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    add(c, add(details, add(wrap, add(t, add(el('thead'), head), body))));
  }

  /** @param {string} name */
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888'; }

  /**
   * @param {HTMLElement} box @param {Json} d
   * @param {{ label: string, color: string, value: (p: Json) => number, params: (ts: string) => URLSearchParams }[]} series
   * @param {{ label: string, value: (p: Json) => number, params: (ts: string) => URLSearchParams } | null} mark
   */
  function drawBars(box, d, series, mark) {
    const points = /** @type {Json[]} */ (d.series);
    const xs = points.map((p) => new Date(p.ts).getTime() / 1000 + d.bucketMs / 2000);
    // Stacked: each series is drawn at its cumulative height, the tallest first, so each shows its own band.
    /** @type {number[][]} */
    const cumulative = [];
    let run = points.map(() => 0);
    for (const s of series) {
      run = run.map((v, i) => v + s.value(points[i]));
      cumulative.push(run);
    }
    const order = series.map((_, i) => i).reverse();
    /** @type {import('uplot').AlignedData} */
    const data = /** @type {any} */ ([xs, ...order.map((i) => cumulative[i]), ...(mark ? [points.map((p) => mark.value(p) || null)] : [])]);
    const axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--line'), width: 1 }, ticks: { stroke: cssVar('--line'), width: 1 } };
    const U = uPlotLib();
    const bars = U.paths.bars ? U.paths.bars({ size: [0.8, 48], gap: 1 }) : undefined;
    /** @type {import('uplot').Series[]} */
    const uSeries = [{}].concat(order.map((i) => ({
      label: series[i].label, fill: series[i].color, stroke: series[i].color, width: 0, paths: bars, points: { show: false },
      value: (/** @type {UPlot} */ _u, /** @type {number | null} */ _v, /** @type {number} */ _si, /** @type {number | null} */ idx) => idx === null ? '' : String(series[i].value(points[idx])),
    })));
    if (mark) uSeries.push({ label: mark.label, stroke: cssVar('--bad'), width: 2, points: { show: true, size: 6, fill: cssVar('--bad') } });
    const width = Math.max(240, box.clientWidth || 600);
    const u = new U({
      width, height: 200,
      // The whole range, so that the first and last bars are drawn whole.
      scales: { x: { time: true, range: () => [new Date(d.from).getTime() / 1000, new Date(d.to).getTime() / 1000] }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
      axes: [axis, axis],
      series: uSeries,
      cursor: { points: { show: false } },
      legend: { show: true, live: true },
    }, data, box);
    charts.push(u);
    box.dataset.points = String(points.length);
    u.over.style.cursor = 'pointer';
    u.over.addEventListener('click', () => {
      const idx = u.cursor.idx;
      if (idx === null || idx === undefined) return;
      const y = u.posToVal(u.cursor.top || 0, 'y');
      // The band under the pointer: the first series whose cumulative height reaches it.
      let pick = series.length - 1;
      for (let i = 0; i < series.length; i++) if (cumulative[i][idx] >= y) { pick = i; break; }
      if (series[pick].value(points[idx]) === 0) pick = series.findIndex((s) => s.value(points[idx]) > 0);
      if (pick < 0) return;
      go('?' + series[pick].params(points[idx].ts).toString());
    });
  }

  /**
   * A top-N list as plain HTML bars; each row links to its events.
   * @param {HTMLElement} c @param {Json[]} rows @param {(r: Json) => URLSearchParams} params @param {boolean} attempts
   */
  function topList(c, rows, params, attempts) {
    dash.appendChild(c);
    if (rows.length === 0) { add(c, el('p', 'empty', 'None in this range.')); return; }
    const max = Math.max(...rows.map((r) => (attempts ? r.attempts : r.events)));
    const ul = el('ol', 'toplist');
    for (const r of rows) {
      const n = attempts ? r.attempts : r.events;
      const li = el('li');
      li.dataset.key = r.key;
      li.dataset.events = String(r.events);
      li.dataset.attempts = String(r.attempts);
      const label = link(r.label || r.key, params(r));
      const count = el('span', 'mono', fmt(n) + (attempts && r.attempts !== r.events ? ' (' + fmt(r.events) + ' events)' : ''));
      const bar = el('div', 'bar');
      bar.style.width = Math.max(1, Math.round((n / max) * 100)) + '%';
      add(ul, add(li, label, count, bar));
    }
    add(c, ul);
  }

  /** @param {HTMLElement} c @param {Json[]} routes @param {{ from: string, to: string, tenant: string | null }} range */
  function routesTable(c, routes, range) {
    dash.appendChild(c);
    if (routes.length === 0) { add(c, el('p', 'empty', 'No requests in this range.')); return; }
    /** @type {[string, string, (r: Json) => number | string][]} */
    const cols = [
      ['method', 'Method', (r) => r.method], ['route', 'Route', (r) => r.route || r.path || ''], ['requests', 'Requests', (r) => r.requests],
      ['errors', 'Errors', (r) => r.errors], ['errorRate', 'Error rate', (r) => r.errorRate], ['p50', 'p50 ≤ ms', (r) => r.p50 === null ? -1 : r.p50], ['p95', 'p95 ≤ ms', (r) => r.p95 === null ? -1 : r.p95],
    ];
    let sortCol = 2;
    let desc = true;
    const table = el('table');
    const head = el('tr');
    const body = el('tbody');
    /** @param {Json} r */
    const rowParams = (r) => listParams({ ...range, kind: 'request', method: r.method, route: r.route, path: r.route === null ? r.path : null });
    const ms = (/** @type {number | null} */ v) => (v === null ? '—' : v === Infinity || v === null ? '> 30000' : String(v));
    const render = () => {
      const sorted = routes.slice().sort((a, b) => {
        const x = cols[sortCol][2](a);
        const y = cols[sortCol][2](b);
        return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
      });
      body.replaceChildren();
      for (const r of sorted) {
        const tr = el('tr');
        tr.dataset.route = (r.route || r.path || '') + ' ' + r.method;
        const params = rowParams(r);
        const errs = rowParams(r);
        errs.set('outcome', 'failure');
        add(tr, el('td', 'mono', r.method), add(el('td', 'mono wrap'), link(r.route || r.path || '', params), r.route === null ? el('span', 'label', ' (no route)') : null),
          add(el('td', 'requests'), link(fmt(r.requests), params)), add(el('td', 'errors'), r.errors > 0 ? link(fmt(r.errors), errs) : '0'),
          el('td', 'rate', (r.errorRate * 100).toFixed(1) + '%'), el('td', 'p50', ms(r.p50)), el('td', 'p95', ms(r.p95)));
        body.appendChild(tr);
      }
    };
    cols.forEach(([key, label], i) => {
      const th = el('th', 'sortable', label);
      th.dataset.key = key;
      th.addEventListener('click', () => { if (sortCol === i) desc = !desc; else { sortCol = i; desc = true; } render(); });
      head.appendChild(th);
    });
    render();
    add(c, add(el('div', 'tablewrap'), add(table, add(el('thead'), head), body)));
  }

  // =====================================================================================================
  // Event list
  // =====================================================================================================
  const form = /** @type {HTMLFormElement} */ (byId('filters'));
  const tbody = /** @type {HTMLElement} */ (document.querySelector('#events tbody'));
  const mainEl = /** @type {HTMLElement} */ (document.querySelector('#events-view main'));
  const detail = byId('detail');
  const newerBtn = /** @type {HTMLButtonElement} */ (byId('newer'));
  const olderBtn = /** @type {HTMLButtonElement} */ (byId('older'));
  const pageInfo = byId('pageinfo');
  const countEl = byId('count');
  const noticeEl = byId('notice');
  const liveBox = /** @type {HTMLInputElement} */ (byId('live'));
  let current = new URLSearchParams();
  /** @type {(string | null | undefined)[]} */
  let cursors = [null];
  let pageIndex = 0;
  /** @type {string | null} */
  let nextCursor = null;
  let loadSeq = 0;
  /** @type {number | null} */
  let liveTimer = null;
  /** @type {Json[]} */
  let shown = [];

  /** @param {string} name */
  function field(name) { return /** @type {HTMLInputElement} */ (form.elements.namedItem(name)); }

  function paramsFromForm() {
    const p = new URLSearchParams();
    form.querySelectorAll('input[name=kind]:checked').forEach((c) => p.append('kind', /** @type {HTMLInputElement} */ (c).value));
    TEXT_FIELDS.forEach((n) => { const v = field(n).value.trim(); if (v) p.set(n, v); });
    SELECT_FIELDS.forEach((n) => { if (field(n).value) p.set(n, field(n).value); });
    ['from', 'to'].forEach((n) => {
      const v = field(n).value;
      if (v) p.set(n, (v.length === 16 ? v + ':00' : v) + 'Z');
    });
    if (field('limit').value !== '50') p.set('limit', field('limit').value);
    if (/** @type {HTMLInputElement} */ (form.elements.namedItem('showAuditReads')).checked) p.set('showAuditReads', '1');
    return p;
  }
  /** @param {URLSearchParams} p */
  function formFromParams(p) {
    const kinds = p.getAll('kind');
    form.querySelectorAll('input[name=kind]').forEach((c) => { /** @type {HTMLInputElement} */ (c).checked = kinds.indexOf(/** @type {HTMLInputElement} */ (c).value) >= 0; });
    TEXT_FIELDS.forEach((n) => { field(n).value = p.get(n) || (n === 'actorId' ? p.get('actor') || '' : ''); });
    SELECT_FIELDS.forEach((n) => { field(n).value = p.get(n) || ''; });
    ['from', 'to'].forEach((n) => {
      const v = p.get(n);
      const d = v ? new Date(v) : null;
      field(n).value = d && !isNaN(d.getTime()) ? d.toISOString().slice(0, 19) : '';
    });
    const limit = p.get('limit') || '50';
    field('limit').value = limit;
    if (field('limit').value !== limit) field('limit').value = '50';
    /** @type {HTMLInputElement} */ (form.elements.namedItem('showAuditReads')).checked = p.get('showAuditReads') === '1';
  }
  /** The filter of the URL, without what is not a filter (view, page, cursor). @param {URLSearchParams} p */
  function filterOf(p) {
    const f = new URLSearchParams(p);
    // `tenant` stays: a filter of the list as much as a scope of the dashboard (its links carry it).
    ['view', 'page', 'after', 'range', 'bucket'].forEach((n) => f.delete(n));
    if (f.has('actor') && !f.has('actorId')) { f.set('actorId', f.get('actor') || ''); }
    f.delete('actor');
    return f;
  }
  /** The URL of the list: view, filter, page and its cursor (a reload keeps page 3). */
  function listUrl() {
    const p = new URLSearchParams(current);
    p.set('view', 'events');
    if (pageIndex > 0 && cursors[pageIndex]) { p.set('page', String(pageIndex + 1)); p.set('after', /** @type {string} */ (cursors[pageIndex])); }
    return '?' + p.toString();
  }

  /** @param {URLSearchParams} p */
  function showEvents(p) {
    formFromParams(filterOf(p));
    current = filterOf(p);
    const page = Number(p.get('page') || '1');
    const after = p.get('after');
    cursors = [null];
    pageIndex = 0;
    if (after && page > 1 && Number.isInteger(page)) { pageIndex = page - 1; cursors[pageIndex] = after; }
    closeDetail();
    updateTools();
    load();
    loadCount();
    if (liveBox.checked) startLive();
  }

  /** @param {URLSearchParams} p */
  function apply(p) {
    current = filterOf(p);
    cursors = [null];
    pageIndex = 0;
    history.pushState(null, '', listUrl());
    closeDetail();
    updateTools();
    load();
    loadCount();
  }

  function updateTools() {
    const f = apiFilter(current);
    f.delete('limit');
    /** @type {HTMLAnchorElement} */ (byId('download-csv')).href = 'api/export?format=csv' + (f.toString() ? '&' + f.toString() : '');
    /** @type {HTMLAnchorElement} */ (byId('download-ndjson')).href = 'api/export?format=ndjson' + (f.toString() ? '&' + f.toString() : '');
  }

  function loadCount() {
    const f = apiFilter(current);
    f.delete('limit');
    countEl.textContent = '';
    delete countEl.dataset.count;
    getJson('api/count?' + f.toString()).then((body) => {
      countEl.textContent = (body.capped ? 'over ' : '') + fmt(body.count) + (body.count === 1 ? ' matching event' : ' matching events');
      countEl.dataset.count = String(body.count);
    }, () => { countEl.textContent = ''; });
  }

  /** @param {boolean} [quiet] a live refresh: no "Loading…", the open detail stays */
  function load(quiet) {
    const p = apiFilter(current);
    const cursor = cursors[pageIndex];
    if (cursor) p.set('after', cursor);
    const seq = ++loadSeq;
    if (!quiet) {
      setStatus('Loading…');
      newerBtn.disabled = true;
      olderBtn.disabled = true;
    }
    getJson('api/events?' + p.toString()).then((body) => {
      if (seq !== loadSeq) return;
      const known = new Set(shown.map((e) => e._id));
      render(body.items, quiet ? known : null);
      nextCursor = body.next;
      olderBtn.disabled = !nextCursor;
      newerBtn.disabled = pageIndex === 0;
      pageInfo.textContent = 'Page ' + (pageIndex + 1);
      noticeEl.hidden = !body.notice;
      noticeEl.textContent = str(body.notice);
      setStatus(body.items.length === 0 ? 'No events match these filters.' : body.items.length + (body.items.length === 1 ? ' event' : ' events') + ' on this page');
      loadRelated(body.items);
    }, (err) => {
      if (seq !== loadSeq) return;
      if (quiet) return;
      render([], null);
      newerBtn.disabled = pageIndex === 0;
      setStatus(err.message, 'error');
    });
  }

  function startLive() {
    stopLive();
    liveTimer = window.setInterval(() => {
      if (pageIndex === 0 && !document.hidden) { load(true); loadCount(); }
    }, LIVE_MS);
  }
  function stopLive() {
    if (liveTimer !== null) window.clearInterval(liveTimer);
    liveTimer = null;
  }

  /** @param {Json} e */
  function what(e) {
    const w = el('span');
    if (e.http) {
      add(w, str(e.http.method) + ' ', chip(e.http.path, { path: e.http.path }), ' → ' + str(e.http.status));
      if (e.http.route) add(w, ' ', chip('(' + e.http.route + ')', { route: e.http.route }, 'label'));
      if (e.error) add(w, ' · ' + str(e.error.name));
      return w;
    }
    if (e.model) {
      const n = Array.isArray(e.changes) ? e.changes.length : 0;
      add(w, chip(e.model, { model: e.model }), ' ', chip(e.documentId, { model: e.model, documentId: e.documentId }, 'mono'));
      if (e.documentLabel) add(w, ' ', el('span', 'doc-label', '“' + str(e.documentLabel) + '”'));
      add(w, ' · ' + str(e.operation) + (n ? ' · ' + n + (n === 1 ? ' field' : ' fields') : ''));
      return w;
    }
    if (e.kind === 'security') {
      add(w, e.name ? chip(e.name, { kind: 'security', name: e.name }) : null,
        e.target ? ' · ' + (typeof e.target === 'object' ? str(e.target.type) + ' ' + str(e.target.id) : str(e.target)) : '', e.reason ? ' · ' + str(e.reason) : '');
      return w;
    }
    if (e.provider || e.identifier) {
      add(w, str(e.provider) + ' ', e.identifier ? chip(e.identifier, { identifier: e.identifier }) : null, e.reason ? ' · ' + str(e.reason) : '');
      return w;
    }
    return add(w, e.meta ? json(e.meta) : '');
  }
  /** @param {Json | null} a */
  function actorText(a) {
    if (!a) return 'anonymous';
    return str(a.id) + (a.name ? ' (' + str(a.name) + ')' : '');
  }
  /** A value that, clicked, adds itself to the filter. @param {unknown} text @param {Record<string, string>} params @param {string} [cls] */
  function chip(text, params, cls) {
    const p = new URLSearchParams(current);
    for (const [k, v] of Object.entries(params)) p.set(k, v);
    p.delete('after');
    p.set('view', 'events');
    const a = link(text, p, 'chip ' + (cls || ''));
    a.title = 'Filter on ' + Object.keys(params).join(' and ');
    return a;
  }
  /** The accountable actor, and whom they acted as ("admin as alice"). @param {Json} e */
  function actorCell(e) {
    const td = el('td', 'wrap');
    if (!e.actor) add(td, 'anonymous');
    else add(td, chip(actorText(e.actor), { actorId: e.actor.id }));
    if (e.onBehalfOf) add(td, ' as ', chip(actorText(e.onBehalfOf), { onBehalfOfId: e.onBehalfOf.id }));
    if (e.actor) add(td, ' ', link('↗', qs({ view: 'actor', actorId: e.actor.id }), 'actor-page'));
    return td;
  }
  /** @param {unknown} text @param {Record<string, string> | null} params */
  function clipped(text, params) {
    const td = el('td', 'mono clip');
    td.title = str(text);
    if (text && params) add(td, chip(text, params));
    else td.textContent = str(text);
    return td;
  }

  /** @param {Json[]} items @param {Set<string> | null} known rows new since the last look are marked */
  function render(items, known) {
    shown = items;
    const selected = tbody.querySelector('tr.selected');
    const selectedId = selected ? /** @type {HTMLElement} */ (selected).dataset.id : null;
    tbody.replaceChildren();
    if (!items.length) {
      const td0 = el('td', 'empty', 'No events.');
      /** @type {HTMLTableCellElement} */ (td0).colSpan = 7;
      tbody.appendChild(add(el('tr'), td0));
      return;
    }
    items.forEach((e) => {
      const tr = el('tr');
      tr.dataset.id = str(e._id);
      if (known && !known.has(e._id)) tr.classList.add('new');
      if (selectedId === tr.dataset.id) tr.classList.add('selected');
      const open = el('button', 'linkish mono', timeText(e.ts));
      /** @type {HTMLButtonElement} */ (open).type = 'button';
      open.title = str(e.ts) + ' (UTC) · show details';
      tr.addEventListener('click', () => showDetail(e, tr));
      const requestCell = clipped(e.requestId, e.requestId ? { requestId: e.requestId } : null);
      requestCell.classList.add('request');
      add(tr,
        add(el('td', 'time'), open),
        add(el('td', 'nowrap'), el('span', kindClass(e.kind), e.kind)),
        el('td', 'nowrap outcome-' + (e.outcome === 'failure' ? 'failure' : 'success'), e.outcome),
        actorCell(e),
        add(el('td', 'wrap'), what(e)),
        requestCell,
        clipped(e.ip, e.ip ? { ip: e.ip } : null));
      tbody.appendChild(tr);
    });
  }

  /** What each request row caused (changes, logins), shown as a button that expands to those events. @param {Json[]} items */
  function loadRelated(items) {
    const ids = items.filter((e) => e.kind === 'request' && e.requestId).map((e) => e.requestId);
    if (!ids.length) return;
    getJson('api/related?' + qs({ requestId: ids }).toString()).then((body) => {
      items.forEach((e) => {
        const counts = e.kind === 'request' && e.requestId ? body.counts[e.requestId] : null;
        if (!counts) return;
        const tr = /** @type {HTMLElement | null} */ (tbody.querySelector('tr[data-id="' + CSS.escape(str(e._id)) + '"]'));
        if (!tr) return;
        const changes = (counts.create || 0) + (counts.update || 0) + (counts.delete || 0);
        const logins = (counts.login || 0) + (counts.login_failed || 0) + (counts.logout || 0);
        const parts = [];
        if (changes) parts.push(changes + (changes === 1 ? ' change' : ' changes'));
        if (logins) parts.push(logins + (logins === 1 ? ' login' : ' logins'));
        const other = Object.values(counts).reduce((a, b) => a + b, 0) - changes - logins;
        if (other) parts.push(other + ' other');
        const b = el('button', 'linkish related', parts.join(' · '));
        /** @type {HTMLButtonElement} */ (b).type = 'button';
        b.dataset.changes = String(changes);
        b.dataset.logins = String(logins);
        b.addEventListener('click', (ev) => { ev.stopPropagation(); expand(e, tr, b); });
        const cell = tr.querySelector('td.request');
        if (cell) { cell.classList.remove('clip'); add(cell, el('br'), b); }
      });
    }, () => {});
  }
  /** @param {Json} e @param {HTMLElement} tr @param {HTMLElement} button */
  function expand(e, tr, button) {
    const open = tbody.querySelectorAll('tr.sub[data-parent="' + CSS.escape(str(e._id)) + '"]');
    if (open.length) { open.forEach((r) => r.remove()); return; }
    button.setAttribute('aria-busy', 'true');
    getJson('api/events?' + qs({ requestId: e.requestId, limit: '200' }).toString()).then((body) => {
      button.removeAttribute('aria-busy');
      let after = tr;
      body.items.filter((/** @type {Json} */ x) => x.kind !== 'request').reverse().forEach((/** @type {Json} */ x) => {
        const sub = el('tr', 'sub');
        sub.dataset.parent = str(e._id);
        const td = el('td');
        /** @type {HTMLTableCellElement} */ (td).colSpan = 6;
        add(sub, add(el('td'), timeEl(x.ts)), add(td, el('span', kindClass(x.kind), x.kind), ' ', what(x)));
        sub.addEventListener('click', () => showDetail(x, null));
        after.after(sub);
        after = sub;
      });
    }, (err) => { button.textContent = err.message; });
  }

  // ---------- the detail pane: one small renderer per section ----------
  /** @param {[string, unknown, string?][]} pairs */
  function dl(pairs) {
    const d = el('dl');
    pairs.forEach((p) => {
      if (p[1] === undefined || p[1] === null || p[1] === '') return;
      add(d, el('dt', null, p[0]), p[1] instanceof Node ? add(el('dd', p[2] || null), p[1]) : el('dd', p[2] || null, typeof p[1] === 'object' ? json(p[1]) : p[1]));
    });
    return d;
  }
  /** @param {unknown} v */
  function value(v) { return v === undefined ? '' : json(v); }
  /** @param {unknown} changes */
  function diffTable(changes) {
    const t = el('table', 'diff');
    add(t, add(el('thead'), add(el('tr'), el('th', null, 'Field'), el('th', null, 'From'), el('th', null, 'To'))));
    const body = el('tbody');
    (Array.isArray(changes) ? changes : []).forEach((c) => {
      // A long array's change stores only its removed and added elements.
      if (c && c.from === undefined && c.to === undefined && (c.added || c.removed)) {
        add(body, add(el('tr'), el('td', 'mono', c.path),
          el('td', 'mono from', c.removed && c.removed.length ? '− ' + json(c.removed) : '—'),
          el('td', 'mono to', c.added && c.added.length ? '+ ' + json(c.added) : '—')));
        return;
      }
      const from = c && c.from !== null && c.from !== undefined;
      const to = c && c.to !== null && c.to !== undefined;
      add(body, add(el('tr'),
        el('td', 'mono', c ? c.path : ''),
        el('td', 'mono ' + (from ? 'from' : 'none'), from ? value(c.from) : '—'),
        el('td', 'mono ' + (to ? 'to' : 'none'), to ? value(c.to) : '—')));
    });
    return add(t, body);
  }
  /** @param {string} text @param {Record<string, string>} params */
  function navLink(text, params) { return link(text, listParams(params), 'nav'); }

  /** @typedef {(e: Json) => (Node | null)[] | null} DetailSection */
  /** @type {DetailSection} */
  const eventSection = (e) => [el('h3', null, 'Event'), dl([
    ['Id', e._id, 'mono'], ['Time', timeEl(e.ts)], ['Outcome', e.outcome, 'outcome-' + (e.outcome === 'failure' ? 'failure' : 'success')],
    ['Actor', e.actor ? actorText(e.actor) + ' via ' + str(e.actor.via) : 'anonymous'],
    ['Request id', e.requestId, 'mono'], ['IP', e.ip, 'mono'], ['User agent', e.userAgent],
  ])];
  /** @type {DetailSection} Tamper evidence: where the event sits in its auditor's hash chain. */
  const chainSection = (e) => !e.chain ? null : [el('h3', null, 'Chain position'), dl([
    ['Chain', e.chain.id, 'mono'], ['Seq', e.chain.seq, 'mono'], ['Previous hash', e.chain.prev, 'mono'], ['Hash', e.chain.hash, 'mono'],
  ])];
  /** @type {DetailSection} */
  const requestSection = (e) => !e.http ? null : [el('h3', null, 'Request'), dl([
    ['Method', e.http.method], ['Path', e.http.path, 'mono'], ['Route', e.http.route, 'mono'], ['Query', e.http.query, 'mono'],
    ['Status', e.http.status], ['Duration', e.http.durationMs === undefined ? null : e.http.durationMs + ' ms'],
    ['Aborted', e.http.aborted ? 'yes, the client went away' : null],
  ]), e.http.requestBody === undefined ? null : el('h3', null, 'Request body'), e.http.requestBody === undefined ? null : el('pre', 'mono', json(e.http.requestBody, 2))];
  /** @type {DetailSection} */
  const errorSection = (e) => !e.error ? null : [el('h3', 'error-head', 'Error'), dl([['Name', e.error.name], ['Message', e.error.message], ['Status', e.error.status]]),
    e.error.stack ? el('pre', 'mono stack', e.error.stack) : null];
  /** @type {DetailSection} */
  const changeSection = (e) => !e.model ? null : [el('h3', null, 'Change'), dl([
    ['Model', e.model], ['Collection', e.collectionName], ['Document id', e.documentId, 'mono'], ['Label', e.documentLabel], ['Operation', e.operation],
  ]), e.changes ? diffTable(e.changes) : null];
  /** Why, as whom, for which tenant, in which trace. @type {DetailSection} */
  const contextSection = (e) => {
    /** @type {[string, unknown, string?][]} */
    const pairs = [
      ['On behalf of', e.onBehalfOf ? actorText(e.onBehalfOf) + ' via ' + str(e.onBehalfOf.via) : null],
      ['Tenant', e.tenant, 'mono'], ['Trace id', e.traceId, 'mono'], ['Span id', e.spanId, 'mono'],
    ];
    if (e.kind !== 'login_failed') pairs.unshift(['Reason', e.reason]);
    const d = dl(pairs);
    return d.childNodes.length ? [el('h3', null, 'Context'), d] : null;
  };
  /** Offered only when the server enables the revert route; the reason prompt is the confirmation. @type {DetailSection} */
  const revertSection = (e) => {
    if (!serverConfig.revert || !e.model || !e.documentId || e.summary || ['create', 'update', 'delete'].indexOf(e.kind) < 0) return null;
    const box = el('div', 'revert');
    const b = /** @type {HTMLButtonElement} */ (el('button', 'revert-button', 'Revert this change…'));
    b.type = 'button';
    const out = el('p', 'empty');
    b.addEventListener('click', () => {
      const reason = window.prompt('Revert this ' + e.kind + ' of ' + e.model + ' ' + e.documentId + '? Reason:', '');
      if (reason === null) return;
      b.disabled = true;
      fetch('api/events/' + encodeURIComponent(e._id) + '/revert', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ reason }),
      }).then(readJson).then((r) => { out.textContent = 'Reverted (' + str(r.action) + ').'; }, (err) => {
        out.textContent = err.message;
        b.disabled = false;
      });
    });
    return [add(box, b, out)];
  };
  /** @type {DetailSection} */
  const summarySection = (e) => !e.summary ? null : [el('h3', null, 'Summary (bulk write)'), el('pre', 'mono', json(e.summary, 2))];
  /** @type {DetailSection} */
  const loginSection = (e) => !(e.provider || e.identifier || e.reason) ? null : [el('h3', null, 'Login'), dl([['Provider', e.provider], ['Identifier', e.identifier], ['Reason', e.reason]])];
  /** @type {DetailSection} */
  const metaSection = (e) => !e.meta ? null : [el('h3', null, 'Meta'), el('pre', 'mono', json(e.meta, 2))];
  /** @type {DetailSection} */
  const relatedSection = (e) => {
    const links = el('div', 'links');
    if (e.requestId) add(links, navLink('All events of request ' + e.requestId, { requestId: e.requestId }));
    if (e.traceId) add(links, navLink('All events of trace ' + e.traceId, { traceId: e.traceId }));
    if (e.actor) add(links, link('Timeline of ' + actorText(e.actor), qs({ view: 'actor', actorId: e.actor.id }), 'nav'));
    if (e.model && e.documentId) {
      add(links, navLink('All events of ' + e.model + ' ' + e.documentId, { model: e.model, documentId: e.documentId }));
      const hb = el('button', 'linkish history-button', 'Show the history of ' + e.model + ' ' + e.documentId);
      /** @type {HTMLButtonElement} */ (hb).type = 'button';
      const box = el('div', 'history');
      hb.addEventListener('click', () => loadHistory(e.model, e.documentId, box));
      add(links, hb, box);
    }
    return links.childNodes.length ? [el('h3', null, 'Related'), links] : null;
  };
  /** @type {DetailSection} */
  const rawSection = (e) => [add(el('details'), el('summary', null, 'Raw JSON'), el('pre', 'mono', json(e, 2)))];
  /** In order; add a renderer here to show a new field. */
  const DETAIL_SECTIONS = [eventSection, chainSection, contextSection, requestSection, errorSection, changeSection, revertSection, summarySection, loginSection, metaSection, relatedSection, rawSection];

  function closeDetail() {
    detail.hidden = true;
    detail.replaceChildren();
    mainEl.classList.remove('with-detail');
    const sel = tbody.querySelector('tr.selected');
    if (sel) sel.classList.remove('selected');
  }
  /** @param {Json} e @param {HTMLElement | null} tr */
  function showDetail(e, tr) {
    const sel = tbody.querySelector('tr.selected');
    if (sel) sel.classList.remove('selected');
    if (tr) tr.classList.add('selected');
    detail.replaceChildren();
    const close = el('button', null, 'Close');
    /** @type {HTMLButtonElement} */ (close).type = 'button';
    close.addEventListener('click', closeDetail);
    add(detail, add(el('div', 'detail-head'), add(el('h2'), el('span', kindClass(e.kind), e.kind), ' ', timeEl(e.ts)), close));
    for (const section of DETAIL_SECTIONS) {
      const nodes = section(e);
      if (nodes) nodes.forEach((n) => { if (n) detail.appendChild(n); });
    }
    detail.hidden = false;
    mainEl.classList.add('with-detail');
  }
  /** @param {string} model @param {string} documentId @param {HTMLElement} box */
  function loadHistory(model, documentId, box) {
    box.replaceChildren(el('p', 'empty', 'Loading history…'));
    getJson('api/history/' + encodeURIComponent(model) + '/' + encodeURIComponent(documentId)).then((body) => {
      box.replaceChildren();
      if (!body.items.length) { box.appendChild(el('p', 'empty', 'No change events for this document.')); return; }
      body.items.forEach((/** @type {Json} */ ev) => {
        const item = el('div', 'history-item');
        add(item, add(el('div'), el('span', kindClass(ev.kind), ev.kind), ' ', timeEl(ev.ts), ' · ', str(ev.operation), ' · ', actorText(ev.actor)));
        if (ev.changes) add(item, diffTable(ev.changes));
        box.appendChild(item);
      });
    }, (err) => { box.replaceChildren(el('p', 'error', err.message)); });
  }

  // =====================================================================================================
  // Actor page: one actor's recent activity as a timeline, by day
  // =====================================================================================================
  /** @param {URLSearchParams} p */
  function showActor(p) {
    const box = byId('actor');
    const id = p.get('actorId') || p.get('actor') || '';
    box.replaceChildren(el('h2', null, 'Actor ' + id));
    if (!id) { add(box, el('p', 'empty', 'No actor given.')); return; }
    setStatus('Loading…');
    getJson('api/events?' + qs({ actorId: id, limit: '200' }).toString()).then((body) => {
      /** @type {Record<string, number>} */
      const byKind = {};
      body.items.forEach((/** @type {Json} */ e) => { byKind[e.kind] = (byKind[e.kind] || 0) + 1; });
      const summary = el('p', 'tiles');
      Object.entries(byKind).forEach(([k, n]) => add(summary, add(el('span', 'tile'), add(el('b'), link(n, listParams({ actorId: id, kind: k }))), el('span', null, k))));
      add(box, summary, add(el('p'), link('Open all of this actor’s events in the list', listParams({ actorId: id })),
        body.next ? ' (the newest ' + body.items.length + ' are shown)' : ''));
      let day = '';
      const list = el('div', 'timeline');
      body.items.forEach((/** @type {Json} */ e) => {
        const t = timeText(e.ts);
        if (t.slice(0, 10) !== day) { day = t.slice(0, 10); add(list, el('div', 'timeline-day', day)); }
        const row = add(el('div', 'history-item'), timeEl(e.ts), ' ', el('span', kindClass(e.kind), e.kind), ' ', el('span', 'outcome-' + e.outcome, e.outcome), ' ', what(e));
        row.dataset.id = e._id;
        list.appendChild(row);
      });
      if (!body.items.length) add(list, el('p', 'empty', 'No events of this actor.'));
      add(box, list);
      setStatus(body.items.length + (body.items.length === 1 ? ' event' : ' events') + ' of ' + id);
    }, (err) => setStatus(err.message, 'error'));
  }

  // ---------- wiring ----------
  form.addEventListener('submit', (ev) => { ev.preventDefault(); apply(paramsFromForm()); });
  // Verify this range: the time filter only (a chain is verified whole within it, whatever the other filters).
  const verifyBox = byId('verify-result');
  byId('verify').addEventListener('click', () => {
    const q = new URLSearchParams();
    for (const k of ['from', 'to']) { const v = current.get(k); if (v) q.set(k, v); }
    verifyBox.hidden = false;
    verifyBox.className = '';
    verifyBox.replaceChildren(el('p', null, 'Verifying…'));
    getJson('api/verify' + (q.toString() ? '?' + q.toString() : '')).then((r) => {
      const failing = r.problems.filter((/** @type {Json} */ x) => x.type !== 'unsealed_tail').length;
      verifyBox.className = r.ok ? 'verify-ok' : 'verify-bad';
      verifyBox.replaceChildren(el('p', null, (r.ok ? 'Intact: ' : 'Tampering found: ' + failing + ' problems in ') + r.events + ' events, ' + r.chains + ' chains'));
      if (r.problems.length > 0) {
        const list = el('ul');
        r.problems.forEach((/** @type {Json} */ x) => { add(list, el('li', 'mono', x.type + ' · chain ' + str(x.chainId) + ' · seq ' + str(x.seq) + (x.eventId ? ' · ' + x.eventId : '') + ' · ' + x.detail)); });
        verifyBox.appendChild(list);
      }
    }, (/** @type {Error} */ err) => {
      verifyBox.className = 'verify-bad';
      verifyBox.replaceChildren(el('p', 'error', err.message));
    });
  });
  byId('clear').addEventListener('click', () => { formFromParams(new URLSearchParams()); apply(new URLSearchParams()); });
  olderBtn.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors[pageIndex + 1] = nextCursor;
    pageIndex++;
    history.pushState(null, '', listUrl());
    closeDetail();
    load();
  });
  newerBtn.addEventListener('click', () => {
    if (pageIndex === 0) return;
    // After a reload only this page's cursor is known: the newest page is the way back.
    pageIndex = cursors[pageIndex - 1] === undefined ? 0 : pageIndex - 1;
    history.pushState(null, '', listUrl());
    closeDetail();
    load();
  });
  liveBox.addEventListener('change', () => { if (liveBox.checked) startLive(); else stopLive(); });
  utcBox.addEventListener('change', () => {
    localStorage.setItem('koa-audit-utc', utcBox.checked ? '1' : '0');
    document.querySelectorAll('time[datetime]').forEach((t) => { t.textContent = timeText(t.getAttribute('datetime')); });
    tbody.querySelectorAll('tr[data-id] td.time button').forEach((b, i) => { if (shown[i]) b.textContent = timeText(shown[i].ts); });
  });
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && !detail.hidden) closeDetail(); });
  byId('nav-dashboard').addEventListener('click', (ev) => { if (ev.button === 0 && !ev.ctrlKey && !ev.metaKey) { ev.preventDefault(); go('?'); } });
  byId('nav-events').addEventListener('click', (ev) => { if (ev.button === 0 && !ev.ctrlKey && !ev.metaKey) { ev.preventDefault(); go('?view=events'); } });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(() => charts.forEach((u) => {
      const box = u.root.parentElement;
      if (box) u.setSize({ width: Math.max(240, box.clientWidth), height: 200 });
    }), 150);
  });
  window.addEventListener('popstate', route);
  getJson('api/config').then((c) => { if (c) serverConfig = { revert: c.revert === true, tenant: typeof c.tenant === 'string' ? c.tenant : null }; }, () => {});
  route();
})();
