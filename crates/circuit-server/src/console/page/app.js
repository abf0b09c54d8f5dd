// The circuit web console. Everything shown from the cluster goes into the
// page as text (textContent, text nodes, attribute values), never as HTML.
'use strict';

const S = {
  csrf: '',
  self: '',
  servers: new Map(), // id -> { section, head, body, info, elements: Map(path -> {node, data}) }
  hist: new Map(), // "path#pid" -> [{cpu, rss}]
  events: [],
  filter: '',
  scope: scopeFromUrl(),
  timers: new Map(),
  statsEvery: 2,
};
const HIST = 90; // samples kept per process (3 minutes at one per 2 s)
const SIGNALS = ['TERM', 'INT', 'HUP', 'QUIT', 'USR1', 'USR2', 'KILL', 'STOP', 'CONT'];
const $ = (sel) => document.querySelector(sel);

function scopeFromUrl() {
  const rest = location.pathname.replace(/^\/ui\/?/, '');
  if (!rest) return null;
  return '/' + rest.split('/').filter(Boolean).map(decodeURIComponent).join('/');
}

function uiHref(path) {
  return '/ui' + path.split('/').map(encodeURIComponent).join('/');
}

function serverOf(path) {
  const first = path.split('/')[1] || '';
  return first || null;
}

// h('tag', {attrs}, children…): strings become text nodes.
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of kids.flat()) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function mib(b) {
  return b == null ? '–' : (b / 1048576).toFixed(1) + ' MiB';
}
function pct(c) {
  return c == null ? '–' : c.toFixed(1) + ' %';
}
function dur(s) {
  if (s == null) return '–';
  s = Math.floor(s);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
}

function say(text, bad) {
  const r = $('#result');
  r.textContent = text;
  r.className = bad ? 'error' : '';
}

async function api(method, url, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method === 'POST') {
    opts.headers['Content-Type'] = 'application/json';
    opts.headers['X-Circuit-Csrf'] = S.csrf;
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(url, opts);
  let j = null;
  try {
    j = await r.json();
  } catch (_) {
    j = null;
  }
  if (!r.ok) throw new Error(j && j.Error ? j.Error : r.status + ' ' + r.statusText);
  return j;
}

// Runs f once after ms, however often it is asked meanwhile.
function soon(key, ms, f) {
  if (S.timers.has(key)) return;
  S.timers.set(key, setTimeout(() => {
    S.timers.delete(key);
    f();
  }, ms));
}

function inScope(path) {
  if (!S.scope) return true;
  return path === S.scope || path.startsWith(S.scope + '/');
}

// ---- servers ----

async function loadCluster() {
  let c;
  try {
    c = await api('GET', '/api/cluster');
  } catch (e) {
    say('cluster: ' + e.message, true);
    return;
  }
  S.self = c.Self;
  $('#self').textContent = c.Self;
  const seen = new Set();
  for (const s of c.Servers) {
    if (S.scope && serverOf(S.scope) !== s.Id) continue;
    seen.add(s.Id);
    const fresh = !S.servers.has(s.Id);
    upsertServer(s);
    if (fresh) loadTree(s.Id);
  }
  for (const id of [...S.servers.keys()]) if (!seen.has(id)) removeServer(id);
  const dead = $('#servers').querySelector('.dead-note');
  if (dead) dead.remove();
  const down = (c.Unlisted || []).filter((m) => m.State !== 'alive');
  if (down.length) {
    $('#servers').append(h('div', { class: 'dead-note' },
      'Not answering: ', down.map((m) => `${m.Id} (${m.Addr}, ${m.State})`).join(', ')));
  }
}

function upsertServer(s) {
  let srv = S.servers.get(s.Id);
  if (!srv) {
    const head = h('div', { class: 'server-head' });
    const body = h('div', { class: 'elements' });
    const section = h('section', { class: 'server', 'data-id': s.Id }, head, body);
    $('#servers').append(section);
    srv = { section, head, body, info: {}, elements: new Map() };
    S.servers.set(s.Id, srv);
  }
  srv.info = Object.assign(srv.info, s);
  renderServerHead(srv);
}

function renderServerHead(srv) {
  const s = srv.info;
  const state = s.Error ? 'unreachable' : s.State || 'alive';
  srv.head.replaceChildren(...[
    h('a', { class: 'id', href: uiHref('/' + s.Id) }, s.Id),
    h('span', { class: 'badge ' + (s.Error ? 'down' : state) }, state),
    s.Id === S.self ? h('span', { class: 'badge' }, 'serving this page') : null,
    h('span', { class: 'facts' },
      [s.Url || s.Addr, s.Pid != null ? 'pid ' + s.Pid : null, 'up ' + dur(s.Uptime), 'CPU ' + pct(s.Cpu),
        'RSS ' + mib(s.Rss), s.Members != null ? s.Members + ' members' : null,
        s.Elements != null ? s.Elements + ' elements' : null, s.Error].filter(Boolean).join(' · ')),
  ].filter(Boolean));
  srv.section.classList.toggle('gone', !!s.Error);
}

function removeServer(id) {
  const srv = S.servers.get(id);
  if (!srv) return;
  srv.section.remove();
  S.servers.delete(id);
}

// ---- elements ----

async function loadTree(id) {
  let list;
  try {
    list = await api('GET', '/api/tree?path=' + encodeURIComponent('/' + id));
  } catch (e) {
    say('tree of ' + id + ': ' + e.message, true);
    return;
  }
  const srv = S.servers.get(id);
  if (!srv) return;
  const seen = new Set();
  for (const el of list) {
    if (!el.Kind || !inScope(el.Path)) continue;
    seen.add(el.Path);
    upsertElement(srv, el);
  }
  for (const p of [...srv.elements.keys()]) {
    if (!seen.has(p)) {
      srv.elements.get(p).node.remove();
      srv.elements.delete(p);
    }
  }
}

async function refreshElement(path) {
  const srv = S.servers.get(serverOf(path));
  if (!srv || !srv.elements.has(path)) return;
  try {
    const el = await api('GET', '/api/peek?path=' + encodeURIComponent(path));
    if (el.Kind) upsertElement(srv, el);
  } catch (e) {
    // Scrubbed meanwhile: the tree says so.
    soon('tree ' + srv.info.Id, 50, () => loadTree(srv.info.Id));
  }
}

function upsertElement(srv, el) {
  const node = renderElement(el);
  const old = srv.elements.get(el.Path);
  if (old) {
    old.node.replaceWith(node);
  } else {
    // Keep the listing's order: by path.
    const after = [...srv.elements.keys()].filter((p) => p < el.Path).sort().pop();
    if (after) srv.elements.get(after).node.after(node);
    else srv.body.prepend(node);
  }
  srv.elements.set(el.Path, { node, data: el });
}

function button(label, onclick, cls) {
  return h('button', { type: 'button', class: cls, 'data-action': label, onclick }, label);
}

function signalControl(path) {
  const sel = h('select', { 'aria-label': 'signal' }, SIGNALS.map((s) => h('option', { value: s }, s)));
  return h('span', { class: 'controls' }, sel,
    button('signal', () => act(path, 'signal', { Signal: sel.value })));
}

function outputControls(path) {
  return [button('stdout', () => showOutput(path, 'stdout')), button('stderr', () => showOutput(path, 'stderr'))];
}

function scrubControl(path) {
  return button('scrub', () => {
    if (confirm('Scrub ' + path + '? Its processes are stopped and it is removed.')) act(path, 'scrub');
  }, 'danger');
}

function renderElement(el) {
  const st = el.Stat || {};
  const kind = el.Kind;
  const head = h('div', { class: 'element-head' },
    h('span', { class: 'badge' }, kind),
    h('a', { class: 'path', href: uiHref(el.Path) }, el.Path));
  const node = h('div', { class: 'element', 'data-path': el.Path, 'data-kind': kind }, head);
  if (kind === 'proc') {
    head.append(h('span', { class: 'badge ' + st.Phase }, st.Phase),
      h('span', { class: 'summary' }, [
        st.Pid != null ? 'pid ' + st.Pid : null,
        st.Exit ? 'exit ' + st.Exit.Code + (st.Exit.Signal != null ? ' signal ' + st.Exit.Signal : '') : null,
        st.Exit && st.Exit.Error ? st.Exit.Error : null,
        st.Cmd ? [st.Cmd.Path].concat(st.Cmd.Args || []).join(' ') : null,
      ].filter(Boolean).join(' · ')),
      h('span', { class: 'controls' }, signalControl(el.Path), outputControls(el.Path), scrubControl(el.Path)));
    const hist = st.Pid != null ? S.hist.get(el.Path + '#' + st.Pid) : null;
    if (hist) node.append(procTable([{ Wid: '', Pid: st.Pid, Restarts: '', CpuPercent: null, RssBytes: null }], el.Path));
  } else if (kind === 'watch') {
    const spec = st.Spec || {};
    const n = h('input', { type: 'number', min: 0, value: spec.NumProcesses, class: 'count', 'aria-label': 'processes' });
    head.append(h('span', { class: 'badge ' + st.State }, st.State),
      h('span', { class: 'summary' }, [
        (st.Processes || []).length + '/' + spec.NumProcesses + ' processes',
        st.Retries ? 'retries ' + st.Retries : null,
        [spec.Path].concat(spec.Args || []).join(' '),
      ].filter(Boolean).join(' · ')),
      h('span', { class: 'controls' },
        button('incr', () => act(el.Path, 'incr')),
        button('decr', () => act(el.Path, 'decr')),
        n, button('numprocs', () => act(el.Path, 'numprocs', { N: Number(n.value) })),
        button('start', () => act(el.Path, 'start')),
        button('stop', () => act(el.Path, 'stop')),
        button('restart', () => act(el.Path, 'restart')),
        button('reload', () => act(el.Path, 'reload')),
        signalControl(el.Path), outputControls(el.Path), scrubControl(el.Path)));
    node.append(procTable(st.Processes || [], el.Path));
  } else if (kind === 'chan') {
    head.append(h('span', { class: 'badge ' + (st.Closed ? 'stopped' : 'ok') }, st.Closed ? 'closed' : 'open'),
      h('span', { class: 'summary' },
        `cap ${st.Cap} · sent ${st.NumSend} · received ${st.NumRecv}` + (st.Aborted ? ' · aborted' : '')),
      h('span', { class: 'controls' }, scrubControl(el.Path)));
  } else if (kind === 'breaker') {
    const spec = st.Spec || {};
    const states = st.States || [];
    head.append(h('span', { class: 'summary' }, [
      st.Keys + ' keys',
      st.PermitsInFlight ? st.PermitsInFlight + ' permits in flight' : null,
      spec.FailureThreshold != null ? 'opens after ' + spec.FailureThreshold + ' failures' : null,
      spec.OpenTimeout != null ? 'open ' + spec.OpenTimeout + ' s' : null,
      st.Keys > states.length ? 'showing ' + states.length : null,
    ].filter(Boolean).join(' · ')),
    h('span', { class: 'controls' }, scrubControl(el.Path)));
    node.append(breakerTable(states, el.Path));
  } else if (kind === 'dns') {
    head.append(h('span', { class: 'summary' }, st.Address ? 'listening on ' + st.Address : ''),
      h('span', { class: 'controls' }, scrubControl(el.Path)));
    node.append(dnsTable(st.Records || {}));
  } else if (kind === 'docker') {
    const state = st.State || {};
    const image = (st.Config && st.Config.Image) || st.Image;
    if (state.Status) head.append(h('span', { class: 'badge ' + state.Status }, state.Status));
    head.append(h('span', { class: 'summary' }, [
      image ? 'image ' + image : null,
      st.Id ? 'id ' + String(st.Id).slice(0, 12) : null,
      state.Pid ? 'pid ' + state.Pid : null,
      state.Status === 'exited' && state.ExitCode != null ? 'exit ' + state.ExitCode : null,
      state.Error ? state.Error : null,
    ].filter(Boolean).join(' · ')),
    h('span', { class: 'controls' }, signalControl(el.Path), outputControls(el.Path), scrubControl(el.Path)));
  } else if (kind === 'server') {
    return h('span');
  } else {
    // Any other kind (subscriptions, kinds to come): its peek document as it is.
    const phase = st.State && typeof st.State === 'object' ? st.State.Status : st.State || st.Phase;
    if (typeof phase === 'string') head.append(h('span', { class: 'badge ' + phase }, phase));
    head.append(h('span', { class: 'controls' }, scrubControl(el.Path)));
    node.append(h('pre', { class: 'stat' }, JSON.stringify(st, null, 1)));
  }
  return node;
}

function procTable(procs, path) {
  const rows = procs.map((p) => {
    const key = path + '#' + p.Pid;
    const hist = S.hist.get(key) || [];
    const last = hist[hist.length - 1];
    const cpu = last ? last.cpu : p.CpuPercent;
    const rss = last ? last.rss : p.RssBytes;
    const cpuSpark = h('canvas', { class: 'spark cpu', width: 90, height: 18 });
    const rssSpark = h('canvas', { class: 'spark rss', width: 90, height: 18 });
    drawSpark(cpuSpark, hist.map((x) => x.cpu), '#2b6cb0', 100);
    drawSpark(rssSpark, hist.map((x) => x.rss), '#2f855a', null);
    return h('tr', { class: 'proc', 'data-pid': p.Pid, 'data-wid': p.Wid },
      h('td', { class: 'num' }, p.Wid),
      h('td', { class: 'num pid' }, p.Pid),
      h('td', { class: 'num' }, p.Restarts),
      h('td', { class: 'num cpu' }, pct(cpu)),
      h('td', { class: 'num rss' }, mib(rss)),
      h('td', {}, cpuSpark),
      h('td', {}, rssSpark));
  });
  return h('table', { class: 'procs' },
    h('thead', {}, h('tr', {}, ['WID', 'PID', 'Restarts', 'CPU', 'RSS', 'CPU (3 min)', 'RSS (3 min)'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows));
}

function breakerTable(states, path) {
  const badge = { closed: 'ok', open: 'bad', 'half-open': 'warn' };
  const rows = states.map((k) => {
    const c = k.Counts || {};
    return h('tr', { class: 'key', 'data-key': k.Key },
      h('td', { class: 'key-name' }, k.Key),
      h('td', {}, h('span', { class: 'badge ' + (badge[k.State] || '') }, k.State)),
      h('td', { class: 'num generation' }, k.Generation),
      h('td', { class: 'num' }, c.Failures), h('td', { class: 'num' }, c.Successes),
      h('td', { class: 'num' }, c.ConsecutiveFailures), h('td', { class: 'num' }, c.ConsecutiveSuccesses),
      h('td', { class: 'num' }, k.ProbesInFlight),
      h('td', { class: 'num' }, k.OpenRemaining != null ? k.OpenRemaining.toFixed(1) + ' s' : '–'),
      h('td', { class: 'controls' },
        button('reset', () => act(path, 'reset', { Key: k.Key })),
        button('open', () => act(path, 'open', { Key: k.Key })),
        button('close', () => act(path, 'close', { Key: k.Key }))));
  });
  if (!rows.length) return h('div', { class: 'summary' }, 'no keys yet');
  return h('table', { class: 'procs keys' },
    h('thead', {}, h('tr', {}, ['Key', 'State', 'Generation', 'Failures', 'Successes', 'Consec. fail', 'Consec. ok',
      'Probes', 'Open remaining', ''].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows));
}

// Records as the element keeps them: "name\tTTL\tclass\ttype\tdata".
function dnsTable(records) {
  const rows = [];
  for (const [name, rrs] of Object.entries(records)) {
    for (const rr of rrs) {
      const f = String(rr).split('\t');
      const [owner, ttl, , type] = f;
      rows.push(h('tr', { class: 'record' },
        h('td', {}, owner || name), h('td', { class: 'num' }, ttl), h('td', {}, type), h('td', {}, f.slice(4).join('\t'))));
    }
  }
  if (!rows.length) return h('div', { class: 'summary' }, 'no records');
  return h('table', { class: 'procs records' },
    h('thead', {}, h('tr', {}, ['Name', 'TTL', 'Type', 'Data'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows));
}

function drawSpark(canvas, values, color, fixedMax) {
  const ctx = canvas.getContext && canvas.getContext('2d');
  if (!ctx) return;
  const w = canvas.width;
  const ht = canvas.height;
  ctx.clearRect(0, 0, w, ht);
  ctx.fillStyle = '#f1f4f8';
  ctx.fillRect(0, 0, w, ht);
  if (values.length < 2) return;
  const max = Math.max(fixedMax || 0, ...values, 1e-9);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (HIST - 1)) * w + (w - ((values.length - 1) / (HIST - 1)) * w);
    const y = ht - 1 - (v / max) * (ht - 2);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// ---- actions ----

async function act(path, action, extra) {
  say(action + ' ' + path + '…');
  try {
    const r = await api('POST', '/api/action', Object.assign({ Path: path, Action: action }, extra || {}));
    const what = extra && extra.Key != null ? ' ' + path + ' key ' + extra.Key : ' ' + path;
    say(action + what + ': ' + JSON.stringify(r.Result));
    soon('peek ' + path, 30, () => refreshElement(path));
  } catch (e) {
    say(e.message, true);
  }
}

async function showOutput(path, stream) {
  try {
    const r = await api('GET', '/api/output?path=' + encodeURIComponent(path) + '&stream=' + stream);
    $('#output-box').hidden = false;
    $('#output-path').textContent = path + ' ' + stream + (r.Complete ? ' (whole)' : ' (so far)');
    $('#output').textContent = (r.Truncated ? '…\n' : '') + r.Text + (r.Error ? '\n[' + r.Error + ']' : '');
  } catch (e) {
    say(e.message, true);
  }
}

// ---- live feed ----

function onEvent(ev) {
  S.events.push(ev);
  if (S.events.length > 500) S.events.shift();
  appendEvent(ev);
  const id = serverOf(ev.Path);
  switch (ev.Event) {
    case 'created':
    case 'scrubbed':
      if (id && S.servers.has(id)) soon('tree ' + id, 40, () => loadTree(id));
      break;
    case 'left':
      if (id && id !== S.self) removeServer(id);
      soon('cluster', 300, loadCluster);
      break;
    case 'joined':
      soon('cluster', 100, loadCluster);
      break;
    case 'lost':
      break;
    default:
      soon('peek ' + ev.Path, 40, () => refreshElement(ev.Path));
  }
}

function eventLine(ev) {
  const rest = Object.entries(ev)
    .filter(([k]) => !['Time', 'Server', 'Path', 'Event'].includes(k))
    .map(([k, v]) => k + '=' + (typeof v === 'string' ? v : JSON.stringify(v)))
    .join(' ');
  return h('li', { 'data-path': ev.Path },
    (ev.Time || '').slice(11, 23) + ' ', h('span', { class: 'ev' }, ev.Event), ' ', ev.Path, rest ? ' ' + rest : '');
}

function matches(ev) {
  return !S.filter || (ev.Path || '').includes(S.filter);
}

function appendEvent(ev) {
  if (!matches(ev)) return;
  const list = $('#events');
  list.prepend(eventLine(ev));
  while (list.children.length > 500) list.lastChild.remove();
}

function renderEvents() {
  $('#events').replaceChildren(...S.events.filter(matches).reverse().map(eventLine));
}

function onStats(st) {
  if (st.Error) return;
  for (const s of st.Servers || []) {
    const srv = S.servers.get(s.Server);
    if (srv) {
      Object.assign(srv.info, { Uptime: s.Uptime, Cpu: s.Cpu, Rss: s.Rss, Pid: s.Pid, Error: s.Error });
      renderServerHead(srv);
    }
    for (const p of s.Processes || []) {
      const key = p.Path + '#' + p.Pid;
      const hist = S.hist.get(key) || [];
      hist.push({ cpu: p.Cpu, rss: p.Rss, seen: Date.now() });
      if (hist.length > HIST) hist.shift();
      S.hist.set(key, hist);
      if (!srv) continue;
      const el = srv.elements.get(p.Path);
      const row = el && el.node.querySelector('tr.proc[data-pid="' + p.Pid + '"]');
      if (row) {
        row.querySelector('.cpu').textContent = pct(p.Cpu);
        row.querySelector('.rss').textContent = mib(p.Rss);
        drawSpark(row.querySelector('canvas.cpu'), hist.map((x) => x.cpu), '#2b6cb0', 100);
        drawSpark(row.querySelector('canvas.rss'), hist.map((x) => x.rss), '#2f855a', null);
      } else if (el && el.data.Kind === 'proc') {
        soon('peek ' + p.Path, 10, () => refreshElement(p.Path));
      }
    }
  }
  // Forget the history of processes not seen for a while.
  const old = Date.now() - 10 * 60 * 1000;
  for (const [k, h] of S.hist) if (!h.length || h[h.length - 1].seen < old) S.hist.delete(k);
}

function connect() {
  const es = new EventSource('/api/events');
  let first = true;
  es.addEventListener('hello', (m) => {
    const hello = JSON.parse(m.data);
    S.statsEvery = hello.StatsEvery || 2;
    $('#link').textContent = 'live';
    $('#link').className = 'badge ok';
    $('#banner').hidden = true;
    if (!first) loadCluster();
    first = false;
  });
  es.addEventListener('event', (m) => onEvent(JSON.parse(m.data)));
  es.addEventListener('stats', (m) => onStats(JSON.parse(m.data)));
  es.addEventListener('gone', (m) => say('event stream ended: ' + JSON.parse(m.data).Error, true));
  es.addEventListener('ended', (m) => {
    // The session is over: retrying would only be refused.
    es.close();
    linkDown('logged out', JSON.parse(m.data).Error);
  });
  es.onerror = () => linkDown('disconnected', 'Lost the connection to the server serving this page (' +
    (S.self || location.host) + '); it may be down. Retrying… (open the console of another server to go on)');
}

// The live feed is down: the badge says how, the banner says why.
function linkDown(badge, why) {
  $('#link').textContent = badge;
  $('#link').className = 'badge bad';
  const b = $('#banner');
  b.textContent = why;
  b.hidden = false;
}

async function main() {
  try {
    const s = await api('GET', '/api/session');
    S.csrf = s.Csrf;
    S.self = s.Server;
    $('#logout').hidden = !s.Login;
  } catch (e) {
    say(e.message, true);
    return;
  }
  $('#self').textContent = S.self;
  $('#scope').textContent = S.scope || '';
  $('#event-filter').value = S.scope || '';
  S.filter = S.scope || '';
  $('#make-path').value = '/' + (S.scope ? serverOf(S.scope) : S.self) + '/';
  $('#event-filter').addEventListener('input', (e) => {
    S.filter = e.target.value.trim();
    renderEvents();
  });
  $('#output-close').addEventListener('click', () => {
    $('#output-box').hidden = true;
  });
  $('#logout').addEventListener('click', async () => {
    try {
      await api('POST', '/logout');
    } finally {
      location.reload();
    }
  });
  $('#make-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { Path: $('#make-path').value.trim(), Kind: $('#make-kind').value, Spec: $('#make-spec').value };
    try {
      const r = await api('POST', '/api/make', body);
      say('made ' + body.Kind + ' ' + body.Path + ': ' + JSON.stringify(r.Result));
    } catch (err) {
      say(err.message, true);
    }
  });
  connect();
  await loadCluster();
}

main();
