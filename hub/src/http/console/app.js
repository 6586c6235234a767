// Brume console: the things, one thing's state and actions, and the hub's status, over the REST
// API (/api/...) and its event stream. Plain JavaScript, no build step, nothing fetched from
// elsewhere. Every value from the hub reaches the page as text (text nodes, textContent,
// attributes), never as markup.
'use strict';

(() => {
  // The hub's root, from where this page is served (`/console/` → `/`), so that the console
  // also works behind a proxy that adds a path prefix.
  const ROOT = location.pathname.replace(/console\/[^/]*$/, '');
  const AUTH_KEY = 'brume.console.auth';
  const EVENTS_KEPT = 50;
  const STATUS_EVERY_MS = 5000;
  // The hub sends a keepalive comment every 15 s; a stream silent for longer than this is dead.
  const STREAM_SILENCE_MS = 45000;
  // Reported state is read for at most this many things when the list loads; the others fill in
  // as their devices report.
  const DETAILS_MAX = 200;

  const things = new Map(); // id → {thing, type, online, info, created, reported}
  const types = new Map(); // type id → Promise of the type
  const recent = new Map(); // id → newest first [{at, what, text}]
  let page = null; // the open thing page: {id, data, ty, cells, online, events}
  let stream = null; // the event stream: {stop, conn, last}
  let navigation = 0;

  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  const $ = (id) => document.getElementById(id);

  // An element with attributes (`testid` for data-testid, `on<event>` for listeners) and
  // children (nodes, or strings added as text; arrays are flattened, null and false skipped).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'testid') el.dataset.testid = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const show = (node) => $('view').replaceChildren(node);
  const fmt = (v) => (v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
  const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');
  const enc = encodeURIComponent;
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // Parsed JSON, or undefined when `text` is not JSON.
  const json = (text) => {
    try {
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  };
  const say = (el, bad, text) => {
    el.classList.toggle('bad', bad);
    el.textContent = text;
  };
  const badge = (online, testid) => h('span',
    { class: online ? 'badge on' : 'badge off', testid, 'data-online': String(!!online) },
    online ? 'online' : 'offline');
  const table = (heads, rows, cls) => h('table', { class: `grid ${cls || ''}` },
    h('thead', {}, h('tr', {}, heads.map((c) => h('th', {}, c)))), h('tbody', {}, rows));

  // ---------------------------------------------------------------------------------------------
  // The API: JSON in and out; errors are {"error", "message", "details"}.

  const apiError = (status, error, message) => Object.assign(new Error(message), { status, error });
  const errorText = (e) => (e && e.error ? `${e.error}: ${e.message}` : String((e && e.message) || e));

  function authHeaders() {
    const c = sessionStorage.getItem(AUTH_KEY);
    return c ? { Authorization: `Basic ${c}` } : {};
  }

  // The error a refused request carries, from its body when the hub wrote one.
  async function refusal(r) {
    const text = await r.text().catch(() => '');
    const data = json(text);
    return data && data.error
      ? apiError(r.status, data.error, data.message || '')
      : apiError(r.status, `HTTP ${r.status}`, text || r.statusText);
  }

  async function api(method, path, body) {
    const init = { method, cache: 'no-store', headers: { Accept: 'application/json', ...authHeaders() } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let r;
    try {
      r = await fetch(ROOT + path, init);
    } catch (e) {
      throw apiError(0, 'network', `cannot reach the hub (${e.message})`);
    }
    if (r.ok) return json(await r.text()) ?? null; // an empty body is null
    const err = await refusal(r);
    if (r.status === 401) needLogin(err);
    throw err;
  }

  function showError(e) {
    if (e && e.status === 401) return; // the login box says it
    $('error-text').textContent = errorText(e);
    $('error').hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Login: asked for when the API answers 401; kept for this tab only.

  function needLogin(err) {
    stopStream();
    $('login-message').textContent = sessionStorage.getItem(AUTH_KEY)
      ? `Not accepted: ${errorText(err)}`
      : 'This hub needs credentials: an auth id and its ticket.';
    $('login').hidden = false;
    $('login-authid').focus();
  }

  const base64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(AUTH_KEY, base64(`${$('login-authid').value}:${$('login-ticket').value}`));
    $('login-ticket').value = '';
    $('login').hidden = true;
    start();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(AUTH_KEY);
    location.reload();
  });
  $('error-close').addEventListener('click', () => {
    $('error').hidden = true;
  });

  // ---------------------------------------------------------------------------------------------
  // The event stream: /api/events read with fetch(), since EventSource cannot send
  // Authorization.

  const setLink = (state, text) => {
    $('link').dataset.state = state;
    $('link').textContent = text;
  };

  function stopStream() {
    if (!stream) return;
    stream.stop = true;
    if (stream.conn) stream.conn.abort();
    stream = null;
  }

  function connectStream() {
    stopStream();
    stream = { stop: false, conn: null, last: Date.now() };
    follow(stream);
  }

  // Keeps one stream open until stopped: reconnects with a doubling, jittered back-off, and
  // reads the current state again each time it connects (what happened meanwhile was missed).
  async function follow(s) {
    let backoff = 500;
    while (!s.stop) {
      const opened = Date.now();
      s.conn = new AbortController();
      try {
        const r = await fetch(`${ROOT}api/events`, {
          headers: { Accept: 'text/event-stream', ...authHeaders() },
          cache: 'no-store',
          signal: s.conn.signal,
        });
        if (r.status === 401) return needLogin(await refusal(r));
        if (!r.ok || !r.body) throw await refusal(r);
        setLink('live', 'live');
        s.last = Date.now();
        resync(); // subscribed now: no change falls between this read and the stream
        await readEvents(r.body, s);
      } catch (e) {
        if (s.stop) return;
        if (e.error) showError(e); // refused by the hub (a network failure only reconnects)
      }
      if (s.stop) return;
      if (Date.now() - opened > 10000) backoff = 500;
      const wait = backoff * (1 + Math.random() / 2);
      backoff = Math.min(backoff * 2, 30000);
      setLink('down', `reconnecting in ${Math.ceil(wait / 1000)} s…`);
      await sleep(wait);
    }
  }

  setInterval(() => {
    if (stream && stream.conn && Date.now() - stream.last > STREAM_SILENCE_MS) stream.conn.abort();
  }, 5000);

  // Parses Server-Sent Events from a byte stream until it ends.
  async function readEvents(body, s) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let type = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || s.stop) return;
      s.last = Date.now();
      buf += value;
      let nl;
      while ((nl = buf.search(/[\r\n]/)) >= 0) {
        if (buf[nl] === '\r' && nl === buf.length - 1) break; // "\r\n" split across chunks
        const line = buf.slice(0, nl);
        buf = buf.slice(buf[nl] === '\r' && buf[nl + 1] === '\n' ? nl + 2 : nl + 1);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (!line.startsWith(':')) { // a comment (keepalive) otherwise
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
        }
      }
      if (buf.length > (1 << 20)) throw new Error('event stream: a line longer than 1 MiB');
    }
  }

  function onEvent(type, data) {
    if (type === 'lagged') return resync(); // events were missed: read everything again
    const p = type === 'publication' && json(data);
    if (p) publication(String(p.topic || ''), p.kwargs || {});
  }

  function publication(topic, kw) {
    const lifecycle = 'brume.things.on_';
    if (topic.startsWith(lifecycle)) {
      const what = topic.slice(lifecycle.length);
      const id = kw.thing;
      if (typeof id !== 'string') return;
      if (what === 'delete') {
        things.delete(id);
      } else {
        const t = things.get(id) || { thing: id, type: kw.type, online: false, info: {}, reported: {} };
        if (what === 'online') t.online = true;
        if (what === 'offline') t.online = false;
        if (what === 'provision') Object.assign(t, { type: kw.type, info: kw.info || {}, created: kw.created });
        things.set(id, t);
        if (page && page.id === id) {
          page.data.online = t.online;
          pageOnline();
        }
      }
      note(id, what, what === 'online' && kw.gateway ? `via ${kw.gateway}` : '');
      return rowChanged(id);
    }
    const m = topic.match(/^brume\.thing\.([^.]+)\.(state|event\.(.+))$/);
    if (!m) return;
    const id = m[1];
    if (m[2] === 'state') {
      const values = kw.values || {};
      stateChanged(id, values, kw.at || {});
      note(id, 'state', Object.entries(values).map(([k, v]) => `${k}=${fmt(v)}`).join(', '));
    } else {
      const { thing: _thing, ...payload } = kw;
      note(id, m[2], JSON.stringify(payload));
    }
  }

  // Newer reported values replace older ones; a late answer never undoes an event.
  function mergeReported(into, from) {
    for (const [k, s] of Object.entries(from || {})) {
      if (!into[k] || (s.at || 0) >= (into[k].at || 0)) into[k] = s;
    }
    return into;
  }

  function stateChanged(id, values, at) {
    const stamped = {};
    for (const [k, v] of Object.entries(values)) stamped[k] = { value: v, at: at[k] || Date.now() };
    const t = things.get(id);
    if (t) {
      t.reported = mergeReported(t.reported || {}, stamped);
      rowChanged(id);
    }
    if (!page || page.id !== id) return;
    mergeReported(page.data.reported, stamped);
    for (const [k, v] of Object.entries(values)) {
      // The hub clears a desired value once the device reports it.
      const d = page.data.desired[k];
      if (d && same(d.value, v)) delete page.data.desired[k];
      fill(k);
    }
  }

  function note(id, what, text) {
    const list = recent.get(id) || [];
    const item = { at: Date.now(), what, text };
    list.unshift(item);
    list.length = Math.min(list.length, EVENTS_KEPT);
    recent.set(id, list);
    if (page && page.id === id && page.events) {
      page.events.prepend(eventItem(item));
      while (page.events.children.length > EVENTS_KEPT) page.events.lastChild.remove();
    }
  }

  const eventItem = (e) => h('li', {},
    h('span', { class: 'at' }, time(e.at)), ' ', h('span', { class: 'what' }, e.what), ' ', e.text);

  // ---------------------------------------------------------------------------------------------
  // Reading the current state

  async function resync() {
    await loadThings().catch(showError);
    if (page) refreshThing();
  }

  async function loadThings() {
    const list = await api('GET', 'api/things');
    const old = new Map(things);
    things.clear();
    for (const s of list) things.set(s.thing, { ...s, reported: (old.get(s.thing) || {}).reported || {} });
    if (!page) renderList();
    const ids = [...things.keys()].slice(0, DETAILS_MAX);
    const worker = async () => {
      for (let id = ids.shift(); id !== undefined; id = ids.shift()) {
        const d = await api('GET', `api/things/${enc(id)}`).catch(() => null);
        const t = things.get(id);
        if (!d || !t) continue;
        t.reported = mergeReported(t.reported || {}, d.reported);
        t.online = d.online;
        rowChanged(id);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  // A thing's type (its properties' schemas, its actions), read once per type.
  function typeOf(typeId) {
    if (!types.has(typeId)) {
      types.set(typeId, api('GET', `api/types/${enc(typeId)}`).catch((e) => {
        types.delete(typeId);
        throw e;
      }));
    }
    return types.get(typeId);
  }

  // ---------------------------------------------------------------------------------------------
  // The things list

  function renderList() {
    show(h('section', { class: 'things' },
      h('h2', {}, 'Things ', h('span', { class: 'count', testid: 'thing-count' }, things.size)),
      things.size ? null : h('p', { class: 'muted', testid: 'no-things' }, 'No things yet.'),
      table(['Thing', 'Type', 'Status', 'Reported state'], [...things.keys()].sort().map(row))));
  }

  function row(id) {
    const t = things.get(id);
    const state = Object.entries(t.reported || {}).sort(([a], [b]) => (a < b ? -1 : 1));
    return h('tr', { testid: `thing-row-${id}`, 'data-thing': id },
      h('td', {}, h('a', { href: `#/things/${enc(id)}`, testid: `thing-link-${id}` }, id)),
      h('td', {}, t.type || ''),
      h('td', {}, badge(t.online, `online-${id}`)),
      h('td', { class: 'state' }, state.map(([k, s]) => h('span', { class: 'kv', title: time(s.at) },
        h('span', { class: 'k' }, k), ' ',
        h('span', { class: 'v', testid: `list-reported-${id}-${k}` }, fmt(s.value))))));
  }

  function rowChanged(id) {
    const rows = !page && $('view').querySelector('tbody');
    if (!rows) return;
    const old = [...rows.children].find((tr) => tr.dataset.thing === id);
    if (things.has(id) && old) old.replaceWith(row(id));
    else renderList(); // a thing came or went
  }

  // ---------------------------------------------------------------------------------------------
  // One thing's page

  async function openThing(id) {
    const mine = ++navigation;
    page = null;
    show(h('p', { class: 'muted' }, `Loading ${id}…`));
    try {
      const data = await api('GET', `api/things/${enc(id)}`);
      const ty = await typeOf(data.type);
      if (mine !== navigation) return;
      page = { id, data, ty, cells: {}, online: null, events: null };
      renderThing();
    } catch (e) {
      if (mine !== navigation) return;
      show(h('div', {}, h('p', {}, h('a', { href: '#/' }, '← all things')),
        h('p', { class: 'bad', testid: 'page-error' }, errorText(e))));
    }
  }

  async function refreshThing() {
    const pg = page;
    try {
      const data = await api('GET', `api/things/${enc(pg.id)}`);
      if (page !== pg) return;
      data.reported = mergeReported(pg.data.reported, data.reported);
      pg.data = data;
      Object.keys(pg.cells).forEach(fill);
      pageOnline();
    } catch (e) {
      showError(e);
    }
  }

  function renderThing() {
    const { id, data, ty } = page;
    const props = Object.entries(ty.properties || {});
    const info = props.filter(([, p]) => p.kind === 'info');
    const actions = Object.entries(ty.actions || {});
    page.online = h('span', {});
    page.events = h('ol', { class: 'events', testid: 'events' }, (recent.get(id) || []).map(eventItem));
    show(h('section', { class: 'thing', testid: `thing-page-${id}` },
      h('p', {}, h('a', { href: '#/', testid: 'back' }, '← all things')),
      h('h2', {}, id, ' ', page.online),
      h('p', { class: 'muted' }, `${ty.title || data.type} (${data.type}) · created ${new Date(data.created).toLocaleString()}`),
      h('h3', {}, 'State'),
      table(['Property', 'Reported', 'Desired', 'Set'],
        props.filter(([, p]) => (p.kind || 'state') === 'state').map(([name, p]) => stateRow(name, p)), 'props'),
      info.length ? [h('h3', {}, 'Info'), table(['Property', 'Value'], info.map(([name, p]) => h('tr', {},
        h('th', {}, p.title || name), h('td', { testid: `info-${name}` }, fmt(data.info[name])))), 'props')] : null,
      actions.length ? [h('h3', {}, 'Actions'), actions.map(([name, a]) => actionBox(name, a))] : null,
      h('h3', {}, 'Recent events'),
      page.events));
    pageOnline();
  }

  function pageOnline() {
    if (page && page.online) page.online.replaceChildren(badge(page.data.online, `online-${page.id}`));
  }

  function stateRow(name, p) {
    const cells = {
      rep: h('span', { testid: `reported-${name}` }),
      repAt: h('span', { class: 'at' }),
      des: h('span', { testid: `desired-${name}` }),
    };
    page.cells[name] = cells;
    fill(name);
    return h('tr', { testid: `prop-row-${name}` },
      h('th', { title: p.description || '' }, p.title || name, h('code', {}, name)),
      h('td', { class: 'value' }, cells.rep, p.unit ? h('span', { class: 'unit' }, ` ${p.unit}`) : null, cells.repAt),
      h('td', { class: 'value' }, cells.des),
      h('td', {}, p.writable ? setter(name, p) : h('span', { class: 'muted' }, 'read-only')));
  }

  // Shows a state property's reported and desired values from the page's data.
  function fill(name) {
    const c = page && page.cells[name];
    if (!c) return;
    const r = page.data.reported[name];
    const d = page.data.desired[name];
    c.rep.textContent = r ? fmt(r.value) : '—';
    c.repAt.textContent = r ? time(r.at) : '';
    c.des.textContent = d ? fmt(d.value) : '';
    c.des.dataset.pending = String(!!d);
    c.des.title = d ? `pending since ${time(d.at)}` : '';
  }

  function setter(name, schema) {
    let input;
    if (Array.isArray(schema.enum) || schema.type === 'boolean') {
      const now = page.data.reported[name];
      input = h('select', {}, (schema.enum || [true, false]).map((v) =>
        h('option', { value: JSON.stringify(v), selected: now && same(now.value, v) }, fmt(v))));
    } else if (schema.type === 'number' || schema.type === 'integer') {
      const step = schema.type === 'integer' ? '1' : 'any';
      input = h('input', { type: 'number', step, min: schema.minimum, max: schema.maximum });
    } else {
      input = h('input', { type: 'text', placeholder: schema.type === 'string' ? '' : 'JSON' });
    }
    input.dataset.testid = `set-input-${name}`;
    input.setAttribute('aria-label', `new ${name}`);
    const button = h('button', { type: 'submit', testid: `set-button-${name}` }, 'Set');
    const status = h('span', { class: 'note', testid: `set-status-${name}` });
    // No browser validation: the hub checks the value against the type and says what is wrong.
    return h('form', { class: 'setter', novalidate: true, onsubmit: (ev) => {
      ev.preventDefault();
      setDesired(name, schema, input, button, status);
    } }, input, button, status);
  }

  // The value typed for a property, as its schema's JSON type.
  function parseValue(schema, raw) {
    if (Array.isArray(schema.enum) || schema.type === 'boolean') return JSON.parse(raw); // a <select>
    if (schema.type === 'string') return raw;
    const text = raw.trim();
    if (schema.type === 'number' || schema.type === 'integer') {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n)) throw new Error('enter a number');
      if (schema.type === 'integer' && !Number.isInteger(n)) throw new Error('enter a whole number');
      return n;
    }
    const value = json(text);
    if (value === undefined) throw new Error('enter a JSON value');
    return value;
  }

  // PUT /desired answers once the device confirms (or the hub gives up waiting); meanwhile the
  // value shows as pending.
  async function setDesired(name, schema, input, button, status) {
    let value;
    try {
      value = parseValue(schema, input.value);
    } catch (e) {
      return say(status, true, e.message);
    }
    const pg = page;
    button.disabled = true;
    say(status, false, 'waiting for the device…');
    pg.data.desired[name] = { value, at: Date.now() };
    fill(name);
    try {
      await api('PUT', `api/things/${enc(pg.id)}/desired`, { [name]: value });
      say(status, false, 'confirmed');
    } catch (e) {
      say(status, true, errorText(e));
    } finally {
      button.disabled = false;
      if (page === pg) refreshThing();
    }
  }

  function actionBox(name, a) {
    const input = a.input
      ? h('input', { type: 'text', placeholder: 'input (JSON)', testid: `action-input-${name}`, 'aria-label': `${name} input` })
      : null;
    const out = h('code', { class: 'result', testid: `action-result-${name}` });
    const button = h('button', { type: 'button', testid: `action-button-${name}`,
      onclick: () => runAction(name, input, button, out) }, a.title || name);
    return h('div', { class: 'action' }, button, input, a.description ? h('span', { class: 'muted' }, a.description) : null, out);
  }

  async function runAction(name, input, button, out) {
    // No input: an empty body, which the hub reads as null.
    const body = input && input.value.trim() ? json(input.value) : undefined;
    if (input && input.value.trim() && body === undefined) return say(out, true, 'the input is not valid JSON');
    button.disabled = true;
    say(out, false, '…');
    try {
      say(out, false, `→ ${fmt(await api('POST', `api/things/${enc(page.id)}/actions/${enc(name)}`, body))}`);
    } catch (e) {
      say(out, true, errorText(e));
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The hub panel: /status, read every few seconds while the page is visible.

  async function readStatus() {
    try {
      renderStatus(await api('GET', 'status'));
    } catch (e) {
      if (e.status !== 401) $('hub-body').replaceChildren(h('p', { class: 'bad' }, errorText(e)));
    }
  }

  setInterval(() => {
    if (!document.hidden && $('login').hidden) readStatus();
  }, STATUS_EVERY_MS);

  const pairs = (obj, skip) => h('dl', {}, Object.entries(obj || {})
    .filter(([k]) => !(skip || []).includes(k)).map(([k, v]) => [h('dt', {}, k), h('dd', {}, fmt(v))]));
  const mib = (bytes) => `${((bytes || 0) / 1048576).toFixed(1)} MiB`;

  function renderStatus(s) {
    const r = s.readiness || {};
    const up = s.uplink;
    const mem = s.memory || {};
    const drops = up ? Object.entries(up.dropped_by_cause || {}).filter(([, n]) => n) : [];
    $('hub-body').replaceChildren(h('div', {},
      h('p', {}, h('span', { class: r.ready ? 'badge on' : 'badge off', testid: 'hub-ready' }, r.ready ? 'ready' : 'not ready'),
        ` ${s.id || ''} v${s.version || '?'} · up ${s.uptime_secs || 0} s · ${s.sessions || 0} sessions`),
      (r.not_ready || []).length ? h('ul', { class: 'bad' }, r.not_ready.map((p) => h('li', {}, p))) : null,
      h('h3', {}, 'Gateways'),
      Object.entries(s.gateways || {}).map(([name, g]) => [h('h4', {}, name), pairs(g)]),
      h('h3', {}, 'Uplink'),
      up ? [
        h('p', { testid: 'uplink' }, badge(up.connected), ` ${up.url || ''}`),
        pairs(up, ['url', 'connected', 'dropped_by_cause']),
        drops.length ? [h('h4', {}, 'Dropped, by cause'), pairs(Object.fromEntries(drops))] : null,
      ] : h('p', { class: 'muted', testid: 'uplink' }, 'not enabled'),
      h('h3', {}, 'Memory'),
      h('p', { testid: 'memory' }, `${mib(mem.rss_bytes)} of ${mib(mem.budget_bytes)}`,
        mem.shedding ? h('span', { class: 'bad' }, ' · shedding') : null),
      pairs(mem, ['rss_bytes', 'budget_bytes', 'shedding'])));
  }

  // ---------------------------------------------------------------------------------------------
  // Routing and start

  function route() {
    const m = location.hash.match(/^#\/things\/([^/]+)$/);
    if (m) return openThing(decodeURIComponent(m[1]));
    navigation++;
    page = null;
    renderList();
  }

  async function start() {
    $('error').hidden = true;
    try {
      const me = await api('GET', 'api/whoami');
      $('who').textContent = me.anonymous ? 'anonymous' : `${me.authid} (${me.authrole})`;
      $('logout').hidden = !sessionStorage.getItem(AUTH_KEY);
    } catch (e) {
      return showError(e);
    }
    route();
    connectStream();
    readStatus();
  }

  window.addEventListener('hashchange', route);
  start();
})();
