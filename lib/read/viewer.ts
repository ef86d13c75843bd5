/**
 * The viewer: one HTML page served at `{prefix}/`, with three views: the dashboard (the default), the event
 * list for investigations, and an actor's timeline. It talks to the JSON API next to it (relative URLs) and
 * pages on the server, so it stays as fast with a million events as with ten.
 *
 * The browser script lives in its own file (viewer-page.js, type-checked by tsc through `// @ts-check`) and is
 * inlined into the page; uPlot, the charting library, is read from the package's own node_modules and served
 * under `{prefix}/assets/`. Both are read, and the CSP hash computed, once, at the router's construction.
 *
 * Event data is attacker-controlled (paths, user agents, document fields): the script builds every node with
 * `textContent` and never parses a string as HTML; links it makes are `?query` strings built by URLSearchParams.
 * The CSP allows the inline script by hash and, through 'strict-dynamic', only what that script loads (uPlot).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AUDIT_KINDS } from './query.js';

const STYLE = String.raw`
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5d6678; --line: #d9dee7; --bg: #f6f7fa; --panel: #fff; --head: #fafbfd; --hover: #f0f4ff; --sel: #e3ebff; --code: #f4f5f8; --accent: #2456c9; --bad: #b3261e; --good: #1f7a3d; --warn: #8a5a00; --bar: #7c9be0; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e3e6ec; --muted: #9aa3b5; --line: #343a46; --bg: #15181e; --panel: #1d2129; --head: #232833; --hover: #263047; --sel: #2c3a5a; --code: #252a34; --accent: #7aa2ff; --bad: #ff8a80; --good: #7bd88f; --warn: #ffcc66; --bar: #5a7bd0; }
  .kind-create { background: #1f4a2c !important; } .kind-update { background: #5a4514 !important; } .kind-delete, .kind-login_failed { background: #5c2320 !important; }
  .kind-login, .kind-logout { background: #22365c !important; } .badge { background: #343a46; }
  table.diff td.from { background: #4a2220 !important; } table.diff td.to { background: #1e3d27 !important; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 10px 16px; background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 16px; margin: 0; }
h3 { font-size: 13px; margin: 14px 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
#status { color: var(--muted); }
#status.error { color: var(--bad); font-weight: 600; }
form { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: flex-end; padding: 10px 16px; background: var(--panel); border-bottom: 1px solid var(--line); }
form label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
form input, form select { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px; min-width: 0; }
form input[type=text] { width: 150px; }
fieldset { border: 1px solid var(--line); border-radius: 4px; padding: 2px 8px 6px; margin: 0; display: flex; flex-wrap: wrap; gap: 2px 10px; max-width: 460px; }
fieldset legend { font-size: 12px; color: var(--muted); padding: 0 4px; }
fieldset label { flex-direction: row; align-items: center; gap: 4px; color: var(--fg); font-size: 13px; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--line); border-radius: 4px; background: var(--panel); cursor: pointer; }
button[type=submit] { background: var(--accent); border-color: var(--accent); color: #fff; }
button:disabled { opacity: .45; cursor: default; }
main { display: grid; grid-template-columns: minmax(0, 1fr); gap: 12px; padding: 12px 16px; }
main.with-detail { grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr); }
table { border-collapse: collapse; width: 100%; background: var(--panel); }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.wrap { overflow-wrap: anywhere; }
td.clip { white-space: nowrap; max-width: 16ch; overflow: hidden; text-overflow: ellipsis; }
th, td.nowrap { white-space: nowrap; }
table.diff td { overflow-wrap: anywhere; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: var(--head); }
#events tbody tr { cursor: pointer; }
#events tbody tr:hover { background: var(--hover); }
#events tbody tr.selected { background: var(--sel); }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
.linkish { border: 0; background: none; padding: 0; color: var(--accent); cursor: pointer; font: inherit; text-align: left; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; background: #e8ebf1; white-space: nowrap; }
.kind-create { background: #dff3e4; } .kind-update { background: #fff1d6; } .kind-delete { background: #fde2e0; }
.kind-login, .kind-logout { background: #e2ecfd; } .kind-login_failed { background: #fde2e0; } .kind-loss { background: #3b3f48; color: #fff; } .kind-security { background: #f3e2fd; }
.outcome-failure { color: var(--bad); font-weight: 600; } .outcome-success { color: var(--good); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
nav#pager { display: flex; align-items: center; gap: 12px; padding: 8px 0; }
#detail { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; align-self: start; position: sticky; top: 8px; max-height: calc(100vh - 16px); overflow: auto; }
.detail-head { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 3px 12px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: var(--code); padding: 8px; border-radius: 4px; overflow: auto; max-height: 320px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
table.diff td.from { background: #fdecea; } table.diff td.to { background: #e9f6ec; }
table.diff td.none { color: var(--muted); background: none; font-style: italic; }
.links { display: flex; flex-direction: column; gap: 4px; margin-top: 8px; }
.history-item { border-top: 1px solid var(--line); padding: 6px 0; }
.empty { color: var(--muted); padding: 16px 8px; }
header nav { display: flex; gap: 12px; }
header nav a { color: var(--accent); text-decoration: none; } header nav a.current { font-weight: 700; color: var(--fg); }
a { color: var(--accent); }
#dashboard { padding: 12px 16px; display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.card h2 { font-size: 14px; margin: 0 0 8px; }
.ranges { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; padding: 10px 16px 0; }
.ranges a { padding: 2px 10px; border: 1px solid var(--line); border-radius: 12px; text-decoration: none; }
.ranges a.current { background: var(--accent); color: var(--panel); border-color: var(--accent); }
.tiles { display: flex; flex-wrap: wrap; gap: 8px 20px; }
.tile { display: flex; flex-direction: column; } .tile b { font-size: 20px; } .tile span { color: var(--muted); font-size: 12px; }
.chart { width: 100%; min-height: 40px; overflow: hidden; }
.toplist { list-style: none; margin: 0; padding: 0; }
.toplist li { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 2px 8px; padding: 3px 0; }
.toplist .bar { grid-column: 1 / -1; height: 6px; background: var(--bar); border-radius: 3px; min-width: 2px; }
.toplist a { overflow-wrap: anywhere; }
.datatable { font-size: 12px; } .datatable td, .datatable th { padding: 2px 6px; }
details.data { margin-top: 6px; } details.data > div { overflow-x: auto; }
.notice { padding: 6px 10px; border-radius: 4px; background: var(--code); color: var(--warn); }
.alert { padding: 8px 12px; border-radius: 4px; border: 1px solid var(--bad); color: var(--bad); }
.source { color: var(--muted); font-size: 12px; }
.tablewrap { overflow-x: auto; }
th.sortable { cursor: pointer; text-decoration: underline dotted; }
.related { margin-left: 4px; }
tr.sub td { background: var(--code); font-size: 12px; }
.chip { border: 0; background: none; color: var(--accent); cursor: pointer; padding: 0; font: inherit; text-align: left; }
.label { color: var(--muted); }
.timeline-day { margin: 10px 0 4px; font-weight: 600; }
#verify-result { margin: 0 16px 8px; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; background: var(--panel); }
#verify-result.verify-ok { border-color: #2e7d32; }
#verify-result.verify-bad { border-color: #c62828; }
#verify-result ul { margin: 4px 0 0; padding-left: 18px; }
.listtools { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; padding: 6px 0; }
@media (max-width: 700px) {
  header { flex-wrap: wrap; }
  main.with-detail { grid-template-columns: minmax(0, 1fr); }
  #events th:nth-child(6), #events td:nth-child(6), #events th:nth-child(7), #events td:nth-child(7) { display: none; }
  form input[type=text] { width: 120px; }
}
`;
const KIND_BOXES = AUDIT_KINDS.map((k) => `<label><input type="checkbox" name="kind" value="${k}"> ${k}</label>`).join('\n        ');

const TEXT_FILTERS: [name: string, label: string][] = [
  ['actorId', 'Actor id'], ['model', 'Model'], ['documentId', 'Document id'], ['requestId', 'Request id'], ['ip', 'IP'], ['name', 'Security name'],
  ['path', 'Path (prefix*)'], ['route', 'Route (prefix*)'], ['method', 'Method'], ['status', 'Status'],
  ['identifier', 'Login identifier'], ['provider', 'Provider'], ['q', 'Text'],
  ['tenant', 'Tenant'], ['traceId', 'Trace id'], ['onBehalfOfId', 'On behalf of (id)'], ['reason', 'Reason (starts with)'],
];
const TEXT_INPUTS = TEXT_FILTERS.map(([n, l]) => `<label>${l} <input type="text" name="${n}"></label>`).join('\n  ');

/** The three views' markup; the script fills them. Element ids are what the script and the tests use. */
function pageHtml(style: string, script: string, config: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Audit trail</title>
<style>${style}</style>
</head>
<body>
<header><h1>Audit trail</h1>
  <nav><a id="nav-dashboard" href="?">Dashboard</a><a id="nav-events" href="?view=events">Events</a></nav>
  <span id="status" role="status" aria-live="polite"></span>
</header>
<section id="dashboard-view" hidden>
  <div class="ranges" id="ranges"></div>
  <div id="dashboard"></div>
</section>
<section id="events-view" hidden>
<form id="filters" autocomplete="off">
  <fieldset><legend>Kind</legend>
        ${KIND_BOXES}
  </fieldset>
  ${TEXT_INPUTS}
  <label>Status class <select name="statusClass"><option value="">any</option><option>1xx</option><option>2xx</option><option>3xx</option><option>4xx</option><option>5xx</option></select></label>
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
    <div class="listtools">
      <span id="count"></span>
      <label><input type="checkbox" id="live"> Live</label>
      <label><input type="checkbox" id="utc"> Times in UTC</label>
      <a id="download-csv" href="api/export?format=csv">Download CSV</a>
      <a id="download-ndjson" href="api/export?format=ndjson">Download NDJSON</a>
      <span id="notice" class="notice" hidden></span>
    </div>
    <div class="tablewrap">
    <table id="events">
      <thead><tr><th>Time</th><th>Kind</th><th>Outcome</th><th>Actor</th><th>What</th><th>Request</th><th>IP</th></tr></thead>
      <tbody></tbody>
    </table>
    </div>
    <nav id="pager"><button type="button" id="newer" disabled>← Newer</button><span id="pageinfo"></span><button type="button" id="older" disabled>Older →</button></nav>
  </section>
  <aside id="detail" hidden></aside>
</main>
</section>
<section id="actor-view" hidden>
  <div id="actor" class="card"></div>
</section>
<script type="application/json" id="config">${config}</script>
<script>${script}</script>
</body>
</html>
`;
}

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

export interface ViewerAsset {
  type: string;
  body: Buffer;
}

export interface ViewerPage {
  html: string;
  /** Allows the page's own script and style by hash, what that script loads ('strict-dynamic'), fetches to its origin. */
  csp: string;
  /** Files served under `{prefix}/assets/`, by name. */
  assets: ReadonlyMap<string, ViewerAsset>;
}

let built: ViewerPage | null = null;

/**
 * The page, built once at the first router's construction (never at import): the browser script read from
 * viewer-page.js beside this module (in lib/ and in dist/ alike), uPlot from the package's dependencies.
 */
export function viewerPage(): ViewerPage {
  if (built !== null) return built;
  const script = readFileSync(join(__dirname, 'viewer-page.js'), 'utf8');
  const uplotJs = readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'));
  const uplotCss = readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
  const version = (JSON.parse(readFileSync(require.resolve('uplot/package.json'), 'utf8')) as { version: string }).version;
  const uplotName = `uplot-${version}.min.js`;
  const style = STYLE + uplotCss;
  // A data block, never run: `<` escaped so that no value can close the element.
  const config = JSON.stringify({ kinds: AUDIT_KINDS, uplot: `assets/${uplotName}` }).replace(/</g, '\\u003c');
  built = {
    html: pageHtml(style, script, config),
    csp: [
      "default-src 'none'",
      `script-src ${sha256(script)} 'strict-dynamic'`,
      `style-src ${sha256(style)}`,
      "connect-src 'self'",
      "img-src 'self' data:",
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join('; '),
    assets: new Map([[uplotName, { type: 'text/javascript; charset=utf-8', body: uplotJs }]]),
  };
  return built;
}
