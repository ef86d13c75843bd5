/**
 * The viewer: one self-contained HTML page (inline CSS and JS, no CDN, no build step) served at `{prefix}/`.
 * It talks to the JSON API next to it (`api/events`, `api/history/...`, relative URLs) and pages on the server,
 * so it stays as fast with a million events as with ten.
 *
 * Event data is attacker-controlled (paths, user agents, document fields): the script builds every node with
 * `textContent` and never parses a string as HTML; links it makes are `?query` strings built by URLSearchParams.
 * The CSP sent with the page allows exactly this script and this style (by hash) and connections to the origin.
 */
import { createHash } from 'node:crypto';
import { AUDIT_KINDS } from './query.js';

const STYLE = String.raw`
:root { --fg: #1d2330; --muted: #5d6678; --line: #d9dee7; --bg: #f6f7fa; --accent: #2456c9; --bad: #b3261e; --good: #1f7a3d; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 10px 16px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 16px; margin: 0; }
h3 { font-size: 13px; margin: 14px 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
#status { color: var(--muted); }
#status.error { color: var(--bad); font-weight: 600; }
form { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: flex-end; padding: 10px 16px; background: #fff; border-bottom: 1px solid var(--line); }
form label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
form input, form select { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px; min-width: 0; }
form input[type=text] { width: 150px; }
fieldset { border: 1px solid var(--line); border-radius: 4px; padding: 2px 8px 6px; margin: 0; display: flex; flex-wrap: wrap; gap: 2px 10px; max-width: 460px; }
fieldset legend { font-size: 12px; color: var(--muted); padding: 0 4px; }
fieldset label { flex-direction: row; align-items: center; gap: 4px; color: var(--fg); font-size: 13px; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--line); border-radius: 4px; background: #fff; cursor: pointer; }
button[type=submit] { background: var(--accent); border-color: var(--accent); color: #fff; }
button:disabled { opacity: .45; cursor: default; }
main { display: grid; grid-template-columns: minmax(0, 1fr); gap: 12px; padding: 12px 16px; }
main.with-detail { grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr); }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.wrap { overflow-wrap: anywhere; }
td.clip { white-space: nowrap; max-width: 16ch; overflow: hidden; text-overflow: ellipsis; }
th, td.nowrap { white-space: nowrap; }
table.diff td { overflow-wrap: anywhere; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #fafbfd; }
#events tbody tr { cursor: pointer; }
#events tbody tr:hover { background: #f0f4ff; }
#events tbody tr.selected { background: #e3ebff; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
.linkish { border: 0; background: none; padding: 0; color: var(--accent); cursor: pointer; font: inherit; text-align: left; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; background: #e8ebf1; white-space: nowrap; }
.kind-create { background: #dff3e4; } .kind-update { background: #fff1d6; } .kind-delete { background: #fde2e0; }
.kind-login, .kind-logout { background: #e2ecfd; } .kind-login_failed { background: #fde2e0; } .kind-loss { background: #3b3f48; color: #fff; } .kind-security { background: #f3e2fd; }
.outcome-failure { color: var(--bad); font-weight: 600; } .outcome-success { color: var(--good); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
nav#pager { display: flex; align-items: center; gap: 12px; padding: 8px 0; }
#detail { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; align-self: start; position: sticky; top: 8px; max-height: calc(100vh - 16px); overflow: auto; }
.detail-head { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 3px 12px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f4f5f8; padding: 8px; border-radius: 4px; overflow: auto; max-height: 320px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
table.diff td.from { background: #fdecea; } table.diff td.to { background: #e9f6ec; }
table.diff td.none { color: var(--muted); background: none; font-style: italic; }
.links { display: flex; flex-direction: column; gap: 4px; margin-top: 8px; }
.history-item { border-top: 1px solid var(--line); padding: 6px 0; }
.empty { color: var(--muted); padding: 16px 8px; }
#verify-result { margin: 0 0 8px; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
#verify-result.verify-ok { border-color: #2e7d32; }
#verify-result.verify-bad { border-color: #c62828; }
#verify-result ul { margin: 4px 0 0; padding-left: 18px; }
`;

const SCRIPT = String.raw`
(function () {
  'use strict';
  var KINDS = ${JSON.stringify(AUDIT_KINDS)};
  var TEXT_FIELDS = ['actor', 'model', 'documentId', 'requestId', 'ip', 'name', 'tenant', 'traceId', 'onBehalfOfId', 'reason'];
  var config = { revert: false, tenant: null };
  var form = document.getElementById('filters');
  var tbody = document.querySelector('#events tbody');
  var statusEl = document.getElementById('status');
  var mainEl = document.querySelector('main');
  var detail = document.getElementById('detail');
  var newerBtn = document.getElementById('newer');
  var olderBtn = document.getElementById('older');
  var pageInfo = document.getElementById('pageinfo');
  var current = new URLSearchParams();
  var cursors = [null];
  var pageIndex = 0;
  var nextCursor = null;
  var loadSeq = 0;

  // Every node is built here; strings only ever become text nodes.
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      parent.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return parent;
  }
  function str(v) { return v === null || v === undefined ? '' : String(v); }
  function json(v, indent) { try { return JSON.stringify(v, null, indent); } catch (e) { return String(v); } }
  function time(iso) { return str(iso).replace('T', ' ').replace(/Z$/, ''); }
  function kindClass(k) { return 'badge kind-' + (KINDS.indexOf(k) >= 0 ? k : 'other'); }
  function setStatus(text, cls) { statusEl.textContent = text; statusEl.className = cls || ''; }

  function paramsFromForm() {
    var p = new URLSearchParams();
    form.querySelectorAll('input[name=kind]:checked').forEach(function (c) { p.append('kind', c.value); });
    TEXT_FIELDS.forEach(function (n) { var v = form.elements[n].value.trim(); if (v) p.set(n, v); });
    if (form.elements.outcome.value) p.set('outcome', form.elements.outcome.value);
    ['from', 'to'].forEach(function (n) {
      var v = form.elements[n].value;
      if (v) p.set(n, (v.length === 16 ? v + ':00' : v) + 'Z');
    });
    if (form.elements.limit.value !== '50') p.set('limit', form.elements.limit.value);
    if (form.elements.showAuditReads.checked) p.set('showAuditReads', '1');
    return p;
  }
  function formFromParams(p) {
    var kinds = p.getAll('kind');
    form.querySelectorAll('input[name=kind]').forEach(function (c) { c.checked = kinds.indexOf(c.value) >= 0; });
    TEXT_FIELDS.forEach(function (n) { form.elements[n].value = p.get(n) || ''; });
    form.elements.outcome.value = p.get('outcome') || '';
    ['from', 'to'].forEach(function (n) {
      var d = p.get(n) ? new Date(p.get(n)) : null;
      form.elements[n].value = d && !isNaN(d.getTime()) ? d.toISOString().slice(0, 19) : '';
    });
    var limit = p.get('limit') || '50';
    form.elements.limit.value = limit;
    if (form.elements.limit.value !== limit) form.elements.limit.value = '50';
    form.elements.showAuditReads.checked = p.get('showAuditReads') === '1';
  }

  function readJson(res) {
    return res.json().catch(function () { return null; }).then(function (body) {
      if (!res.ok) throw new Error('Error ' + res.status + (body && body.error ? ': ' + body.error : ''));
      return body;
    });
  }
  function getJson(url) {
    return fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' }).then(readJson);
  }

  function apply(p, push) {
    current = new URLSearchParams(p);
    current.delete('after');
    cursors = [null];
    pageIndex = 0;
    if (push) {
      var qs = current.toString();
      history.pushState(null, '', qs ? '?' + qs : location.pathname);
    }
    closeDetail();
    load();
  }

  function load() {
    var p = new URLSearchParams(current);
    if (cursors[pageIndex]) p.set('after', cursors[pageIndex]);
    // Reads of the trail (this page's own requests among them) are hidden unless asked for.
    p.delete('showAuditReads');
    if (current.get('showAuditReads') !== '1') p.set('auditRead', 'false');
    var seq = ++loadSeq;
    setStatus('Loading…');
    newerBtn.disabled = true;
    olderBtn.disabled = true;
    getJson('api/events?' + p.toString()).then(function (body) {
      if (seq !== loadSeq) return;
      render(body.items);
      nextCursor = body.next;
      olderBtn.disabled = !nextCursor;
      newerBtn.disabled = pageIndex === 0;
      pageInfo.textContent = 'Page ' + (pageIndex + 1);
      setStatus(body.items.length === 0 ? 'No events match these filters.' : body.items.length + (body.items.length === 1 ? ' event' : ' events') + ' on this page');
    }, function (err) {
      if (seq !== loadSeq) return;
      render([]);
      newerBtn.disabled = pageIndex === 0;
      setStatus(err.message, 'error');
    });
  }

  function what(e) {
    if (e.http) return str(e.http.method) + ' ' + str(e.http.path) + ' → ' + str(e.http.status) + (e.error ? ' · ' + str(e.error.name) : '');
    if (e.model) {
      var n = Array.isArray(e.changes) ? e.changes.length : 0;
      return str(e.model) + ' ' + str(e.documentId) + ' · ' + str(e.operation) + (n ? ' · ' + n + (n === 1 ? ' field' : ' fields') : '');
    }
    if (e.kind === 'security') return str(e.name) + (e.target ? ' · ' + (typeof e.target === 'object' ? str(e.target.type) + ' ' + str(e.target.id) : str(e.target)) : '') + (e.reason ? ' · ' + str(e.reason) : '');
    if (e.provider || e.identifier) return str(e.provider) + ' ' + str(e.identifier) + (e.reason ? ' · ' + str(e.reason) : '');
    return e.meta ? json(e.meta) : '';
  }
  function actorText(a) {
    if (!a) return 'anonymous';
    return str(a.id) + (a.name ? ' (' + str(a.name) + ')' : '');
  }

  // Impersonation: the accountable actor, and whom they acted as ("admin as alice").
  function whoText(e) {
    return actorText(e.actor) + (e.onBehalfOf ? ' as ' + actorText(e.onBehalfOf) : '');
  }

  function clipped(text) {
    var td = el('td', 'mono clip', text);
    td.title = str(text);
    return td;
  }
  function render(items) {
    tbody.replaceChildren();
    if (!items.length) {
      var tr0 = el('tr'); var td0 = el('td', 'empty', 'No events.'); td0.colSpan = 7;
      tbody.appendChild(add(tr0, td0));
      return;
    }
    items.forEach(function (e) {
      var tr = el('tr');
      tr.dataset.id = str(e._id);
      var open = el('button', 'linkish mono', time(e.ts));
      open.type = 'button';
      open.title = 'Show details';
      tr.addEventListener('click', function () { showDetail(e, tr); });
      add(tr,
        add(el('td', 'time'), open),
        add(el('td', 'nowrap'), el('span', kindClass(e.kind), e.kind)),
        el('td', 'nowrap outcome-' + (e.outcome === 'failure' ? 'failure' : 'success'), e.outcome),
        el('td', 'wrap', whoText(e)),
        el('td', 'wrap', what(e)),
        clipped(e.requestId),
        clipped(e.ip));
      tbody.appendChild(tr);
    });
  }

  function dl(pairs) {
    var d = el('dl');
    pairs.forEach(function (p) {
      if (p[1] === undefined || p[1] === null || p[1] === '') return;
      add(d, el('dt', null, p[0]), el('dd', p[2] || null, typeof p[1] === 'object' ? json(p[1]) : p[1]));
    });
    return d;
  }
  function value(v) { return v === undefined ? '' : json(v); }
  // A long array's change stores only its removed and added elements.
  function elementCells(c) {
    return [
      el('td', 'mono from', c.removed && c.removed.length ? '− ' + json(c.removed) : '—'),
      el('td', 'mono to', c.added && c.added.length ? '+ ' + json(c.added) : '—'),
    ];
  }
  function diffTable(changes) {
    var t = el('table', 'diff');
    add(t, add(el('thead'), add(el('tr'), el('th', null, 'Field'), el('th', null, 'From'), el('th', null, 'To'))));
    var body = el('tbody');
    (Array.isArray(changes) ? changes : []).forEach(function (c) {
      if (c && c.from === undefined && c.to === undefined && (c.added || c.removed)) {
        var cells = elementCells(c);
        add(body, add(el('tr'), el('td', 'mono', c.path), cells[0], cells[1]));
        return;
      }
      var from = c && c.from !== null && c.from !== undefined;
      var to = c && c.to !== null && c.to !== undefined;
      add(body, add(el('tr'),
        el('td', 'mono', c ? c.path : ''),
        el('td', 'mono ' + (from ? 'from' : 'none'), from ? value(c.from) : '—'),
        el('td', 'mono ' + (to ? 'to' : 'none'), to ? value(c.to) : '—')));
    });
    return add(t, body);
  }
  function navLink(text, params) {
    var a = el('a', 'nav', text);
    a.href = '?' + new URLSearchParams(params).toString();
    a.addEventListener('click', function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      var p = new URLSearchParams(params);
      formFromParams(p);
      apply(p, true);
    });
    return a;
  }

  // Why, as whom, for which tenant, in which trace.
  function contextSection(e) {
    var pairs = [
      ['On behalf of', e.onBehalfOf ? actorText(e.onBehalfOf) + ' via ' + str(e.onBehalfOf.via) : null],
      ['Tenant', e.tenant, 'mono'], ['Trace id', e.traceId, 'mono'], ['Span id', e.spanId, 'mono'],
    ];
    if (e.kind !== 'login_failed') pairs.unshift(['Reason', e.reason]);
    var d = dl(pairs);
    return d.childNodes.length ? [el('h3', null, 'Context'), d] : [];
  }
  function traceLink(e) {
    return e.traceId ? navLink('All events of trace ' + e.traceId, { traceId: e.traceId }) : null;
  }
  // Offered only when the server enables the revert route; the reason prompt is the confirmation.
  function revertButton(e) {
    if (!config.revert || !e.model || !e.documentId || e.summary || ['create', 'update', 'delete'].indexOf(e.kind) < 0) return null;
    var box = el('div', 'revert');
    var b = el('button', 'revert-button', 'Revert this change…');
    b.type = 'button';
    var out = el('p', 'empty');
    b.addEventListener('click', function () {
      var reason = window.prompt('Revert this ' + e.kind + ' of ' + e.model + ' ' + e.documentId + '? Reason:', '');
      if (reason === null) return;
      b.disabled = true;
      fetch('api/events/' + encodeURIComponent(e._id) + '/revert', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ reason: reason }),
      }).then(readJson).then(function (r) {
        out.textContent = 'Reverted (' + str(r.action) + ').';
      }, function (err) {
        out.textContent = err.message;
        b.disabled = false;
      });
    });
    return add(box, b, out);
  }

  function closeDetail() {
    detail.hidden = true;
    detail.replaceChildren();
    mainEl.classList.remove('with-detail');
    var sel = tbody.querySelector('tr.selected');
    if (sel) sel.classList.remove('selected');
  }

  function showDetail(e, tr) {
    var sel = tbody.querySelector('tr.selected');
    if (sel) sel.classList.remove('selected');
    if (tr) tr.classList.add('selected');
    detail.replaceChildren();
    var close = el('button', null, 'Close');
    close.type = 'button';
    close.addEventListener('click', closeDetail);
    add(detail, add(el('div', 'detail-head'), add(el('h2'), el('span', kindClass(e.kind), e.kind), ' ', time(e.ts)), close));
    add(detail, el('h3', null, 'Event'), dl([
      ['Id', e._id, 'mono'], ['Time (UTC)', e.ts, 'mono'], ['Outcome', e.outcome, 'outcome-' + (e.outcome === 'failure' ? 'failure' : 'success')],
      ['Actor', e.actor ? actorText(e.actor) + ' via ' + str(e.actor.via) : 'anonymous'],
      ['Request id', e.requestId, 'mono'], ['IP', e.ip, 'mono'], ['User agent', e.userAgent],
    ]));
    add.apply(null, [detail].concat(contextSection(e)));
    if (e.http) {
      add(detail, el('h3', null, 'Request'), dl([
        ['Method', e.http.method], ['Path', e.http.path, 'mono'], ['Route', e.http.route, 'mono'], ['Query', e.http.query, 'mono'],
        ['Status', e.http.status], ['Duration', e.http.durationMs === undefined ? null : e.http.durationMs + ' ms'],
        ['Aborted', e.http.aborted ? 'yes, the client went away' : null],
      ]));
      if (e.http.requestBody !== undefined) add(detail, el('h3', null, 'Request body'), el('pre', 'mono', json(e.http.requestBody, 2)));
    }
    if (e.error) {
      add(detail, el('h3', 'error-head', 'Error'), dl([['Name', e.error.name], ['Message', e.error.message], ['Status', e.error.status]]));
      if (e.error.stack) add(detail, el('pre', 'mono stack', e.error.stack));
    }
    if (e.model) {
      add(detail, el('h3', null, 'Change'), dl([
        ['Model', e.model], ['Collection', e.collectionName], ['Document id', e.documentId, 'mono'], ['Operation', e.operation],
      ]));
      if (e.changes) add(detail, diffTable(e.changes));
      add(detail, revertButton(e));
    }
    if (e.summary) add(detail, el('h3', null, 'Summary (bulk write)'), el('pre', 'mono', json(e.summary, 2)));
    if (e.provider || e.identifier || e.reason) {
      add(detail, el('h3', null, 'Login'), dl([['Provider', e.provider], ['Identifier', e.identifier], ['Reason', e.reason]]));
    }
    if (e.meta) add(detail, el('h3', null, 'Meta'), el('pre', 'mono', json(e.meta, 2)));
    if (e.chain) {
      add(detail, el('h3', null, 'Chain position'), dl([
        ['Chain', e.chain.id, 'mono'], ['Seq', e.chain.seq, 'mono'], ['Previous hash', e.chain.prev, 'mono'], ['Hash', e.chain.hash, 'mono'],
      ]));
    }

    var links = el('div', 'links');
    if (e.requestId) add(links, navLink('All events of request ' + e.requestId, { requestId: e.requestId }));
    add(links, traceLink(e));
    if (e.model && e.documentId) {
      add(links, navLink('All events of ' + e.model + ' ' + e.documentId, { model: e.model, documentId: e.documentId }));
      var hb = el('button', 'linkish history-button', 'Show the history of ' + e.model + ' ' + e.documentId);
      hb.type = 'button';
      var box = el('div', 'history');
      hb.addEventListener('click', function () { loadHistory(e.model, e.documentId, box); });
      add(links, hb, box);
    }
    if (links.childNodes.length) add(detail, el('h3', null, 'Related'), links);

    var raw = el('details');
    add(raw, el('summary', null, 'Raw JSON'), el('pre', 'mono', json(e, 2)));
    add(detail, raw);
    detail.hidden = false;
    mainEl.classList.add('with-detail');
  }

  function loadHistory(model, documentId, box) {
    box.replaceChildren(el('p', 'empty', 'Loading history…'));
    getJson('api/history/' + encodeURIComponent(model) + '/' + encodeURIComponent(documentId)).then(function (body) {
      box.replaceChildren();
      if (!body.items.length) { box.appendChild(el('p', 'empty', 'No change events for this document.')); return; }
      body.items.forEach(function (ev) {
        var item = el('div', 'history-item');
        add(item, add(el('div'), el('span', kindClass(ev.kind), ev.kind), ' ', el('span', 'mono', time(ev.ts)), ' · ', str(ev.operation), ' · ', actorText(ev.actor)));
        if (ev.changes) add(item, diffTable(ev.changes));
        box.appendChild(item);
      });
    }, function (err) {
      box.replaceChildren(el('p', 'error', err.message));
    });
  }

  // Verify this range: the time filter only (a chain is verified whole within it, whatever the other filters).
  var verifyBox = document.getElementById('verify-result');
  document.getElementById('verify').addEventListener('click', function () {
    var p = paramsFromForm();
    var q = new URLSearchParams();
    ['from', 'to'].forEach(function (n) { if (p.get(n)) q.set(n, p.get(n)); });
    verifyBox.hidden = false;
    verifyBox.className = '';
    verifyBox.replaceChildren(el('p', null, 'Verifying…'));
    getJson('api/verify' + (q.toString() ? '?' + q.toString() : '')).then(function (r) {
      var failing = r.problems.filter(function (x) { return x.type !== 'unsealed_tail' && x.type !== 'expired'; }).length + r.omitted;
      verifyBox.className = r.ok ? 'verify-ok' : 'verify-bad';
      verifyBox.replaceChildren(el('p', null, (r.ok ? 'Intact: ' : 'Tampering found: ' + failing + ' problems in ') + r.events + ' events, ' + r.chains + ' chains'));
      if (r.problems.length) {
        var list = el('ul');
        r.problems.forEach(function (x) { add(list, el('li', 'mono', x.type + ' · chain ' + str(x.chainId) + ' · seq ' + str(x.seq) + (x.eventId ? ' · ' + x.eventId : '') + ' · ' + x.detail)); });
        verifyBox.appendChild(list);
      }
    }, function (err) {
      verifyBox.className = 'verify-bad';
      verifyBox.replaceChildren(el('p', 'error', err.message));
    });
  });

  form.addEventListener('submit', function (ev) { ev.preventDefault(); apply(paramsFromForm(), true); });
  document.getElementById('clear').addEventListener('click', function () {
    formFromParams(new URLSearchParams());
    apply(new URLSearchParams(), true);
  });
  olderBtn.addEventListener('click', function () {
    if (!nextCursor) return;
    cursors[pageIndex + 1] = nextCursor;
    pageIndex++;
    closeDetail();
    load();
  });
  newerBtn.addEventListener('click', function () {
    if (pageIndex === 0) return;
    pageIndex--;
    closeDetail();
    load();
  });
  document.addEventListener('keydown', function (ev) { if (ev.key === 'Escape' && !detail.hidden) closeDetail(); });
  function fromLocation() {
    var p = new URLSearchParams(location.search);
    formFromParams(p);
    apply(p, false);
  }
  window.addEventListener('popstate', fromLocation);
  getJson('api/config').then(function (c) { if (c) config = c; }, function () {});
  fromLocation();
})();
`;

const KIND_BOXES = AUDIT_KINDS.map((k) => `<label><input type="checkbox" name="kind" value="${k}"> ${k}</label>`).join('\n        ');

export const VIEWER_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Audit trail</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>Audit trail</h1><span id="status" role="status" aria-live="polite"></span></header>
<form id="filters" autocomplete="off">
  <fieldset><legend>Kind</legend>
        ${KIND_BOXES}
  </fieldset>
  <label>Actor id <input type="text" name="actor"></label>
  <label>Model <input type="text" name="model"></label>
  <label>Document id <input type="text" name="documentId"></label>
  <label>Request id <input type="text" name="requestId"></label>
  <label>IP <input type="text" name="ip"></label>
  <label>Security name <input type="text" name="name" placeholder="authz_fail"></label>
  <label>Tenant <input type="text" name="tenant"></label>
  <label>Trace id <input type="text" name="traceId"></label>
  <label>On behalf of (id) <input type="text" name="onBehalfOfId"></label>
  <label>Reason (starts with) <input type="text" name="reason"></label>
  <label>Outcome <select name="outcome"><option value="">any</option><option value="success">success</option><option value="failure">failure</option></select></label>
  <label>From (UTC) <input type="datetime-local" name="from" step="1"></label>
  <label>To (UTC, before) <input type="datetime-local" name="to" step="1"></label>
  <label>Per page <select name="limit"><option>25</option><option selected>50</option><option>100</option><option>200</option><option>500</option></select></label>
  <label><input type="checkbox" name="showAuditReads"> Show reads of the audit trail</label>
  <button type="submit">Apply</button>
  <button type="button" id="clear">Clear</button>
  <button type="button" id="verify">Verify this range</button>
</form>
<section id="verify-result" hidden></section>
<main>
  <section id="list">
    <table id="events">
      <thead><tr><th>Time (UTC)</th><th>Kind</th><th>Outcome</th><th>Actor</th><th>What</th><th>Request</th><th>IP</th></tr></thead>
      <tbody></tbody>
    </table>
    <nav id="pager"><button type="button" id="newer" disabled>← Newer</button><span id="pageinfo"></span><button type="button" id="older" disabled>Older →</button></nav>
  </section>
  <aside id="detail" hidden></aside>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** Allows this page's own script and style, by hash, and fetches to its own origin; nothing else. */
export const VIEWER_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');
