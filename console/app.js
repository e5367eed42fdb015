// hektor's web console (served at /ui/app.js by src/console.rs).
//
// Every 2 s it reads the node's JSON views -- GET /cluster (shard maps with hotness, members,
// planner nodes, decisions, map changes), GET /collections (settings) and GET
// /collections/{c} (this node's engines, pending and lag per shard, and how far each other region is merged) -- and redraws the page.
// The heat map's history lives only here, in the browser, built from successive polls.
//
// Rules: every string from the API reaches the DOM as text (textContent, text nodes,
// setAttribute), never as markup; the API key, when the node needs one, stays in this
// tab's sessionStorage and goes out only as `Authorization: Bearer` to this origin.
'use strict';

(() => {
  const POLL_MS = 2000;
  const HISTORY = 90; // heat-map samples kept: 3 minutes at one per poll
  const KEY_STORE = 'hektor.apiKey';
  const SVG = 'http://www.w3.org/2000/svg';

  // ---- small helpers -------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // An element with attributes (set as attributes, never parsed) and children (strings
  // become text nodes).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function text(value, fallback = '–') {
    return value === undefined || value === null || value === '' ? fallback : String(value);
  }

  function num(value, digits = 0) {
    return typeof value === 'number' && isFinite(value) ? value.toFixed(digits) : '–';
  }

  function clock(ms) {
    return typeof ms === 'number' ? new Date(ms).toLocaleTimeString() : '–';
  }

  // Ring positions are u64: JSON numbers past 2^53 lose digits in JavaScript, so they are
  // quoted before parsing and handled as BigInt. (Inside a JSON string a quote is escaped,
  // so the pattern only meets real keys.)
  function parseJson(body) {
    return JSON.parse(body.replace(/("(?:start|end|at)"\s*:\s*)(\d{16,})/g, '$1"$2"'));
  }

  function big(v) {
    if (v === undefined || v === null) return null;
    try {
      return BigInt(v);
    } catch {
      return null;
    }
  }

  // A ring position as 16 hex digits; `null` (an end) is 2^64.
  function hex(v) {
    const b = big(v);
    return b === null ? '2^64' : b.toString(16).padStart(16, '0');
  }

  // A position as a fraction of the ring, for drawing.
  function frac(v, isEnd) {
    const b = big(v);
    if (b === null) return isEnd ? 1 : 0;
    return Number(b) / 18446744073709551616;
  }

  function rangeKey(collection, range) {
    return collection + '\u0000' + text(range && range.start, '0') + '-' + text(range && range.end, 'end');
  }

  function compareStart(a, b) {
    const x = big(a) ?? 0n;
    const y = big(b) ?? 0n;
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function rangeText(range) {
    if (!range) return '?';
    return '[' + hex(range.start).slice(0, 6) + '…, ' + hex(range.end).slice(0, 6) + (range.end === null ? ')' : '…)');
  }

  // ---- the API key ---------------------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || '';
    } catch {
      return '';
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // Storage refused (private mode): the key lasts until the page reloads.
    }
    memoryKey = key;
  }

  let memoryKey = storedKey();

  function showKeyPanel(reason) {
    $('key-panel').hidden = false;
    if (reason) $('key-reason').textContent = reason;
  }

  // ---- fetching ------------------------------------------------------------------------

  async function getJson(path) {
    const headers = { Accept: 'application/json' };
    if (memoryKey) headers.Authorization = 'Bearer ' + memoryKey;
    const response = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
    const body = await response.text();
    let value = null;
    try {
      value = parseJson(body);
    } catch {
      value = null;
    }
    if (!response.ok) {
      const message = (value && typeof value.error === 'string' && value.error) || response.status + ' ' + response.statusText;
      const error = new Error(path + ': ' + message);
      error.status = response.status;
      throw error;
    }
    return value;
  }

  // ---- the heat map's history (client-side) -------------------------------------------

  // Oldest first: {time: ms, values: Map(key -> hotness)}.
  const history = [];
  // key -> {collection, range, shard} of every row seen in the window.
  const rows = new Map();

  function record(cluster) {
    const values = new Map();
    for (const c of cluster.collections || []) {
      for (const s of c.shards || []) {
        const key = rangeKey(c.name, s.range);
        values.set(key, typeof s.hotness === 'number' ? s.hotness : 0);
        rows.set(key, { collection: c.name, range: s.range, shard: s.shard });
      }
    }
    history.push({ time: Date.now(), values });
    while (history.length > HISTORY) history.shift();
    // Forget shards (split or merged away) that left the window.
    for (const key of [...rows.keys()]) {
      if (!history.some((h) => h.values.has(key))) rows.delete(key);
    }
  }

  // The top of the colour scale: the hottest value in the window, at least 1.
  function heatScale() {
    let max = 1;
    for (const h of history) for (const v of h.values.values()) max = Math.max(max, v);
    return max;
  }

  // Dark (idle) through amber to red (the hottest in the window); sqrt so that light load
  // still shows.
  function heatColor(value, scale) {
    const t = Math.max(0, Math.min(1, Math.sqrt(Math.max(0, value) / scale)));
    const stops = [
      [0, [29, 38, 51]],
      [0.5, [240, 184, 74]],
      [1, [242, 80, 80]],
    ];
    let i = 0;
    while (i < stops.length - 2 && t > stops[i + 1][0]) i++;
    const [t0, c0] = stops[i];
    const [t1, c1] = stops[i + 1];
    const u = (t - t0) / (t1 - t0);
    const mix = c0.map((x, j) => Math.round(x + (c1[j] - x) * u));
    return 'rgb(' + mix.join(',') + ')';
  }

  function drawHeat(splitAt) {
    const canvas = $('heat');
    const keys = [...rows.keys()].sort((a, b) => {
      const ra = rows.get(a);
      const rb = rows.get(b);
      if (ra.collection !== rb.collection) return ra.collection < rb.collection ? -1 : 1;
      return compareStart(ra.range && ra.range.start, rb.range && rb.range.start);
    });
    const label = 190;
    const cell = 11;
    const rowH = 14;
    const axis = 18;
    const width = label + HISTORY * cell + 8;
    const height = Math.max(1, keys.length) * rowH + axis + 4;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const g = canvas.getContext('2d');
    g.fillStyle = '#19202b';
    g.fillRect(0, 0, width, height);
    g.font = '11px "DejaVu Sans Mono", monospace';
    g.textBaseline = 'middle';
    const scale = heatScale();
    const offset = HISTORY - history.length; // newest sample in the rightmost column
    keys.forEach((key, row) => {
      const r = rows.get(key);
      const y = row * rowH + 2;
      g.fillStyle = '#d8dee9';
      const name = r.collection.length > 12 ? r.collection.slice(0, 11) + '…' : r.collection;
      g.fillText(name + ' ' + text(r.shard, '?') + ' ' + hex(r.range && r.range.start).slice(0, 6), 4, y + rowH / 2);
      history.forEach((h, i) => {
        if (!h.values.has(key)) return;
        g.fillStyle = heatColor(h.values.get(key), scale);
        g.fillRect(label + (offset + i) * cell, y + 1, cell - 1, rowH - 2);
      });
    });
    if (keys.length === 0) {
      g.fillStyle = '#8791a3';
      g.fillText('no shards yet', label, rowH / 2 + 2);
    }
    const y = keys.length * rowH + 4 + axis / 2;
    g.fillStyle = '#8791a3';
    g.fillText('−' + Math.round((HISTORY * POLL_MS) / 60000) + ' min', label, y);
    g.textAlign = 'right';
    g.fillText('now', label + HISTORY * cell, y);
    g.textAlign = 'left';
    canvas.setAttribute('data-samples', String(history.length));
    canvas.setAttribute('data-rows', String(keys.length));
    $('heat-legend').textContent =
      '(rows: shards; columns: polls every ' + POLL_MS / 1000 + ' s; colour: hotness = qps × p99 ms / 10, dark 0 to red ' +
      num(scale, 1) + (typeof splitAt === 'number' ? '; the planner splits above ' + num(splitAt, 0) : '') + ')';
  }

  // ---- the ring ------------------------------------------------------------------------

  function arc(cx, cy, r0, r1, a0, a1) {
    // Angles in turns from 12 o'clock, clockwise.
    const p = (r, a) => [cx + r * Math.sin(a * 2 * Math.PI), cy - r * Math.cos(a * 2 * Math.PI)];
    const large = a1 - a0 > 0.5 ? 1 : 0;
    const [x0, y0] = p(r1, a0);
    const [x1, y1] = p(r1, a1);
    const [x2, y2] = p(r0, a1);
    const [x3, y3] = p(r0, a0);
    return `M${x0} ${y0} A${r1} ${r1} 0 ${large} 1 ${x1} ${y1} L${x2} ${y2} A${r0} ${r0} 0 ${large} 0 ${x3} ${y3} Z`;
  }

  function ringOf(c, scale) {
    const size = 170;
    const cx = size / 2;
    const root = svg('svg', { class: 'ring', viewBox: `0 0 ${size} ${size}`, role: 'img' });
    const title = svg('title');
    title.textContent = 'the ring of ' + c.name + ': one arc per shard, coloured by hotness; outer marks: shards being built';
    root.append(title);
    const pieces = (range, r0, r1) => {
      let a0 = frac(range && range.start, false);
      const a1 = frac(range && range.end, true);
      // A whole-ring arc is drawn as two halves (an SVG arc cannot close on itself).
      if (a1 - a0 > 0.999) return [arc(cx, cx, r0, r1, a0, a0 + 0.5), arc(cx, cx, r0, r1, a0 + 0.5, a1)];
      if (a1 <= a0) a0 = a1 - 0.001;
      return [arc(cx, cx, r0, r1, a0, a1)];
    };
    for (const s of c.shards || []) {
      for (const d of pieces(s.range, 48, 74)) {
        const path = svg('path', { d, fill: heatColor(s.hotness || 0, scale), stroke: '#11151c', 'stroke-width': 1.5 });
        const t = svg('title');
        t.textContent = 'shard ' + text(s.shard, '?') + ' ' + rangeText(s.range) + ' on ' + (s.replicas || []).join(', ') +
          ', ' + text(s.tier) + ', hotness ' + num(s.hotness, 2);
        path.append(t);
        root.append(path);
      }
      const a0 = frac(s.range && s.range.start, false);
      const a1 = frac(s.range && s.range.end, true);
      if (a1 - a0 > 0.04) {
        const mid = ((a0 + a1) / 2) * 2 * Math.PI;
        const label = svg('text', { x: cx + 61 * Math.sin(mid), y: cx - 61 * Math.cos(mid) + 4 });
        label.textContent = text(s.shard, '');
        root.append(label);
      }
    }
    for (const t of c.targets || []) {
      for (const d of pieces(t.range, 77, 82)) {
        const path = svg('path', { d, fill: '#6cb6ff' });
        const tt = svg('title');
        tt.textContent = 'being built: ' + rangeText(t.range) + ' on ' + (t.replicas || []).join(', ') + ': ' + text(t.reason, '');
        path.append(tt);
        root.append(path);
      }
    }
    const epoch = svg('text', { x: cx, y: cx - 2 });
    epoch.textContent = 'epoch ' + text(c.epoch, '?');
    const count = svg('text', { x: cx, y: cx + 12, class: 'center' });
    count.textContent = (c.shards || []).length + ' shards';
    root.append(epoch, count);
    return root;
  }

  // ---- sections ------------------------------------------------------------------------

  function tierTag(tier) {
    return el('span', { class: 'tier tier-' + (['hot', 'warm', 'cold'].includes(tier) ? tier : 'x') }, text(tier));
  }

  function placementText(p) {
    if (!p) return 'balanced';
    if (typeof p === 'string') return p;
    return text(p.strategy, 'balanced') + (p.vnodes ? ' (' + p.vnodes + ' vnodes)' : '');
  }

  // The shard table's columns: [heading, numeric].
  const SHARD_COLUMNS = [
    ['part', true], ['start', false], ['end', false], ['share', true], ['replicas', false], ['tier', false],
    ['engine', false], ['vectors', true], ['lag', true], ['mirrors behind', false], ['pending', true], ['hotness', true], ['qps 1m', true],
    ['p99 ms', true], ['writes 1m', true], ['state', false],
  ];

  // Per other region merged into a shard (GET /collections/{c}'s `mirrored`): how many
  // of its mirrored records the shard has not applied yet, e.g. "west 0".
  function mirrorsText(mirrored) {
    const parts = Object.entries(mirrored || {}).map(([region, p]) =>
      region + ' ' + Math.max(0, Number((p && p.high_watermark) || 0) - Number((p && p.next_offset) || 0)));
    return parts.length ? parts.join(', ') : '–';
  }

  function renderCollections(cluster, list, details, scale) {
    const specs = new Map(((list && list.collections) || []).map((s) => [s.name, s]));
    const out = [];
    for (const c of cluster.collections || []) {
      const spec = specs.get(c.name) || {};
      const detail = details[c.name] || {};
      const local = new Map((detail.shards || []).map((s) => [rangeKey(c.name, s.range), s]));
      const facts = el('div', { class: 'facts' },
        el('b', {}, c.name), ' · dimension ', text(spec.dimension), ' · ', text(spec.distance), ' · ',
        text(c.partitions), ' partitions · replication ', text(c.replication), ' · placement ', placementText(spec.placement),
        ' · map epoch ', text(c.epoch), ' · ', text(detail.vectors, '?'), ' vectors on this node',
        detail.complete === true ? ' (all shards)' : detail.complete === false ? ' (not every shard is held here)' : '',
        ' · ', (c.targets || []).length, ' shards being built');
      const body = el('tbody');
      const shards = [...(c.shards || [])].sort((a, b) => compareStart(a.range && a.range.start, b.range && b.range.start));
      for (const s of shards) {
        const l = local.get(rangeKey(c.name, s.range)) || {};
        const share = (frac(s.range && s.range.end, true) - frac(s.range && s.range.start, false)) * 100;
        const state = s.hot ? el('span', { class: 'flag-hot' }, 'hot') : s.cold ? el('span', { class: 'flag-cold' }, 'cold') : '–';
        body.append(el('tr', { class: 'shard-row', 'data-collection': c.name, 'data-shard': text(s.shard, '') },
          el('td', { class: 'num' }, text(s.shard)),
          el('td', { class: 'mono' }, hex(s.range && s.range.start)),
          el('td', { class: 'mono' }, hex(s.range && s.range.end)),
          el('td', { class: 'num' }, num(share, 1) + ' %'),
          el('td', {}, (s.replicas || []).join(', ')),
          el('td', {}, tierTag(s.tier)),
          el('td', {}, text(l.engine)),
          el('td', { class: 'num' }, text(s.vectors ?? l.vectors)),
          el('td', { class: 'num' }, text(s.lag ?? l.lag)),
          el('td', { class: 'mono' }, mirrorsText(l.mirrored)),
          el('td', { class: 'num' }, text(l.pending)),
          el('td', { class: 'num' }, num(s.hotness, 2)),
          el('td', { class: 'num' }, num(s.qps_1m, 2)),
          el('td', { class: 'num' }, num(s.p99_ms, 2)),
          el('td', { class: 'num' }, text(s.writes_1m)),
          el('td', {}, state)));
      }
      const table = el('table', { class: 'shards' },
        el('thead', {}, el('tr', {}, SHARD_COLUMNS.map(([h, numeric]) => el('th', { class: numeric ? 'num' : null }, h)))),
        body);
      const right = el('div', { class: 'detail' }, table);
      if ((c.targets || []).length) {
        const tb = el('tbody');
        for (const t of c.targets) {
          tb.append(el('tr', { class: 'target-row' },
            el('td', { class: 'mono' }, hex(t.range && t.range.start)),
            el('td', { class: 'mono' }, hex(t.range && t.range.end)),
            el('td', {}, (t.replicas || []).join(', ')),
            el('td', {}, tierTag(t.tier)),
            el('td', { class: 'num' }, text(t.since)),
            el('td', { class: 'wrap' }, text(t.reason, ''))));
        }
        right.append(el('h3', {}, 'being built ', el('small', {}, '(targets of the coming epoch)')),
          el('table', { class: 'targets' },
            el('thead', {}, el('tr', {}, ['start', 'end', 'replicas', 'tier', 'since', 'reason'].map((h) => el('th', {}, h)))), tb));
      }
      out.push(el('div', { class: 'collection', 'data-collection': c.name }, facts, ringOf(c, scale), right));
    }
    const root = $('collections');
    if (out.length) root.replaceChildren(...out);
    else root.replaceChildren(el('p', { class: 'empty' }, 'no collections yet'));
  }

  function renderNodes(cluster) {
    const members = cluster.members || {};
    const load = new Map((cluster.nodes || []).map((n) => [n.node, n]));
    const ids = [...new Set([...Object.keys(members), ...load.keys()])].sort();
    const held = new Map();
    for (const c of cluster.collections || []) {
      for (const s of c.shards || []) for (const r of s.replicas || []) held.set(r, (held.get(r) || 0) + 1);
    }
    const body = $('nodes').tBodies[0];
    body.replaceChildren(...ids.map((id) => {
      const m = members[id] || {};
      const n = load.get(id) || {};
      const stateName = m.alive === false ? 'dead' : m.leaving ? 'draining' : m.alive ? 'alive' : 'unknown';
      const fraction = typeof n.load === 'number' ? n.load : null;
      const bar = el('span', { class: 'bar' + (fraction > 1 ? ' over' : fraction > 0.8 ? ' high' : '') },
        el('span', {}));
      // Width through the CSSOM (the CSP allows no inline style attribute).
      bar.firstChild.style.width = Math.round(Math.min(1, Math.max(0, fraction || 0)) * 100) + '%';
      return el('tr', { class: 'node-row', 'data-node': id },
        el('td', {}, id, id === cluster.node ? el('span', { class: 'me' }, ' (this node)') : null),
        el('td', { class: 'mono' }, text(m.address)),
        el('td', { class: 'state-' + stateName }, stateName),
        el('td', {}, text(m.region)),
        el('td', {}, Array.isArray(m.roles) ? m.roles.join(', ') : '–'),
        el('td', { class: 'num' }, String(held.get(id) || 0)),
        el('td', { class: 'num' }, num(n.ops_per_s, 1)),
        el('td', {}, bar, ' ', fraction === null ? '–' : num(fraction * 100, 1) + ' %'),
        el('td', { class: 'num' }, num(n.capacity, 2)));
    }));
  }

  // GET /cluster's `regions`: the other regions this node's shards merge.
  function renderRegions(cluster) {
    const regions = cluster.regions || [];
    if (!regions.length) return;
    const ago = (ms) => (typeof ms === 'number' && ms > 0 ? num(Math.max(0, Date.now() - ms) / 1000, 1) : '–');
    $('regions').tBodies[0].replaceChildren(...regions.map((r) =>
      el('tr', { class: 'region-row', 'data-region': text(r.region) },
        el('td', {}, text(r.region)),
        el('td', { class: 'num' }, text(r.shards)),
        el('td', { class: 'num' }, text(r.behind)),
        el('td', { class: 'num' }, ago(r.newest_merged_ms)),
        el('td', { class: 'num' }, ago(r.oldest_merged_ms)))));
  }

  function actionText(a) {
    if (!a || typeof a !== 'object') return text(a);
    switch (a.action) {
      case 'split':
        return 'split ' + rangeText(a.shard) + ' at ' + hex(a.at);
      case 'merge':
        return 'merge ' + rangeText(a.left) + ' + ' + rangeText(a.right);
      case 'move':
        return 'move ' + rangeText(a.shard) + ' from ' + text(a.from) + ' to ' + text(a.to);
      case 'set_tier':
        return 'tier of ' + rangeText(a.shard) + ' → ' + text(a.tier);
      default:
        return text(a.action);
    }
  }

  function renderDecisions(cluster) {
    const decisions = [...(cluster.decisions || [])].reverse().slice(0, 50);
    const body = $('decisions').tBodies[0];
    if (!decisions.length) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty' }, cluster.planner ? 'no decisions yet' : 'the planner is off on this node')));
    } else {
      body.replaceChildren(...decisions.map((d) => el('tr', { class: 'decision-row' },
        el('td', {}, clock(d.time_ms)),
        el('td', {}, text(d.collection)),
        el('td', { class: 'num' }, text(d.epoch)),
        el('td', {}, actionText(d.action)),
        el('td', { class: 'wrap' }, text(d.reason, '')),
        el('td', {}, d.carried_out_by ? text(d.carried_out_by) : 'not carried out'))));
    }
    const changes = [...(cluster.map_changes || [])].reverse().slice(0, 50);
    const mc = $('map-changes').tBodies[0];
    if (!changes.length) {
      mc.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, 'none by this node')));
    } else {
      mc.replaceChildren(...changes.map((c) => el('tr', { class: 'map-change-row' },
        el('td', {}, clock(c.time_ms)),
        el('td', {}, text(c.collection)),
        el('td', { class: 'num' }, text(c.epoch)),
        el('td', { class: 'wrap' }, Array.isArray(c.reasons) ? c.reasons.join('; ') : ''))));
    }
  }

  function renderHeader(cluster) {
    $('node-id').textContent = text(cluster.node, '?');
    const p = cluster.planner;
    $('planner').textContent = p
      ? 'planner every ' + text(p.interval_ms) + ' ms, ' + text(p.rounds) + ' rounds' + (p.last_error ? ' — last error: ' + p.last_error : '')
      : 'planner off (no hotness)';
  }

  function setStatus(kind, message) {
    const s = $('status');
    s.className = 'status ' + kind;
    s.textContent = message;
  }

  // ---- the loop ------------------------------------------------------------------------

  let timer = null;
  let busy = false;

  async function poll() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      const [cluster, list] = await Promise.all([getJson('/cluster'), getJson('/collections')]);
      const names = (cluster.collections || []).map((c) => c.name);
      const details = {};
      await Promise.all(names.map(async (name) => {
        try {
          details[name] = await getJson('/collections/' + encodeURIComponent(name));
        } catch (e) {
          if (e.status === 401 || e.status === 403) throw e;
          details[name] = null; // dropped meanwhile, or no map yet
        }
      }));
      record(cluster);
      const scale = heatScale();
      renderHeader(cluster);
      renderCollections(cluster, list, details, scale);
      renderNodes(cluster);
      renderRegions(cluster);
      renderDecisions(cluster);
      drawHeat(cluster.planner && cluster.planner.thresholds ? cluster.planner.thresholds.split_hotness : undefined);
      document.body.setAttribute('data-polls', String(Number(document.body.getAttribute('data-polls') || 0) + 1));
      setStatus('ok', 'updated ' + new Date().toLocaleTimeString());
      if ($('key-panel').dataset.auto === '1') {
        $('key-panel').hidden = true;
        $('key-panel').dataset.auto = '';
      }
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        $('key-panel').dataset.auto = '1';
        showKeyPanel(e.status === 401
          ? 'This node needs an API key with the read scope on every collection to show its views (' + e.message + ').'
          : 'The key given lacks what these views need: the read scope on every collection (' + e.message + ').');
        setStatus('bad', e.status === 401 ? 'API key needed' : 'API key refused');
      } else {
        setStatus('bad', 'error: ' + (e && e.message ? e.message : String(e)) + ' (retrying)');
      }
    } finally {
      busy = false;
      timer = setTimeout(poll, POLL_MS);
    }
  }

  $('key-button').addEventListener('click', () => {
    const panel = $('key-panel');
    panel.hidden = !panel.hidden;
    panel.dataset.auto = '';
  });
  $('key-form').addEventListener('submit', (e) => {
    // Never submitted anywhere: the key stays in this tab.
    e.preventDefault();
    const key = $('key-input').value.trim();
    $('key-input').value = '';
    // A header value must be visible ASCII.
    if (!/^[\x21-\x7e]+$/.test(key)) {
      $('key-reason').textContent = 'An API key is visible ASCII characters without spaces.';
      return;
    }
    storeKey(key);
    $('key-panel').dataset.auto = '1';
    poll();
  });
  $('key-clear').addEventListener('click', () => {
    storeKey('');
    poll();
  });

  poll();
})();
