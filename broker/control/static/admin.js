// The broker admin page: live charts from the once-a-second stats stream, tables from the
// admin API. No dependencies; charts are drawn on <canvas>.
//
// Data: GET /admin/api/stream (SSE read with fetch, so the token can go in a header): an
// `history` event with up to 15 minutes of samples, then one `stats` event a second.
// Tables poll /admin/api/connections, /admin/api/topics (every 2 s) and /admin/api/cluster
// (every 5 s). What the page shows is also in `window.brokerAdmin` (for tests and the console).

const WINDOW_SECONDS = 15 * 60;
const POLL_MS = 2000;
const CLUSTER_POLL_MS = 5000;
const RECONNECT_MS = 2000;
const TOKEN_KEY = 'brokerAdminToken';
const CHARTS = [
  { id: 'chart-publishes', key: 'publishes', color: '--c1' },
  { id: 'chart-deliveries', key: 'deliveries', color: '--c2' },
  { id: 'chart-connections', key: 'connections', color: '--c3' },
  { id: 'chart-drops', key: 'drops', color: '--c4' },
];

const state = {
  samples: [],
  slow: [],
  topics: [],
  cluster: null,
  status: 'connecting',
  drawn: 0,
  lastPoints: {}, // chart key -> [x, y] in canvas pixels of its newest point
  disconnected: [],
  errors: [],
};
window.brokerAdmin = state;

const $ = (id) => document.getElementById(id);

// -- formatting -------------------------------------------------------------------------

function fmtNum(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(digits) + 'G';
  if (a >= 1e6) return (n / 1e6).toFixed(digits) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(digits) + 'k';
  if (Number.isInteger(n)) return String(n);
  return a >= 100 ? n.toFixed(0) : n.toFixed(digits);
}

function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}

function fmtDur(s) {
  if (s === null || s === undefined) return '–';
  if (s === 0) return '0';
  if (s < 1) return Math.round(s * 1000) + ' ms';
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + String(Math.floor(s % 60)).padStart(2, '0') + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function ago(epoch) {
  if (!epoch) return '–';
  return fmtDur(Math.max(0, Date.now() / 1000 - epoch)) + ' ago';
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement('tr');
  tr.className = 'empty';
  const td = cell(text);
  td.colSpan = columns;
  tr.append(td);
  tbody.append(tr);
}

// -- the API --------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function showAuth(message) {
  $('auth').hidden = false;
  if (message) $('auth-text').textContent = message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401 || response.status === 403) {
    showAuth(`${response.status}: ${body && body.error ? body.error : 'not allowed'}`);
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
  $('auth').hidden = true;
  return body;
}

// -- the live stream ------------------------------------------------------------------

function setLive(status, text) {
  state.status = status;
  $('live').dataset.state = status;
  $('live-text').textContent = text || status;
}

function addSample(sample) {
  state.samples.push(sample);
  const cutoff = sample.t - WINDOW_SECONDS;
  while (state.samples.length && state.samples[0].t < cutoff) state.samples.shift();
}

function onStreamEvent(type, data) {
  if (type === 'history') {
    state.samples = [];
    for (const sample of JSON.parse(data)) addSample(sample);
    render();
  } else if (type === 'stats') {
    addSample(JSON.parse(data));
    render();
  } else if (type === 'broker.shutdown') {
    setLive('down', 'broker shutting down');
  }
}

async function streamLoop() {
  for (;;) {
    try {
      const response = await fetch('/admin/api/stream', { headers: headers(), cache: 'no-store' });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        showAuth(`${response.status}: ${body.error || 'not allowed'}`);
        setLive('down', 'not allowed');
      } else if (!response.ok || !response.body) {
        setLive('down', `HTTP ${response.status}`);
      } else {
        setLive('live', 'live');
        await readSse(response.body, onStreamEvent);
        setLive('down', 'stream ended');
      }
    } catch (err) {
      setLive('down', 'offline');
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

async function readSse(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let index;
    while ((index = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, index);
      buffer = buffer.slice(buffer[index] === '\r' && buffer[index + 1] === '\n' ? index + 2 : index + 1);
      if (line === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = '';
        data = [];
      } else if (line.startsWith(':')) {
        // a comment (heartbeat)
      } else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') type = v;
        else if (field === 'data') data.push(v);
      }
    }
  }
}

// -- charts ---------------------------------------------------------------------------

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart(canvas, key, color) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return false;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 40;
  const right = w - 6;
  const top = 6;
  const bottom = h - 18;
  const samples = state.samples;
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  const start = now - WINDOW_SECONDS;
  const max = niceMax(1.15 * Math.max(0, ...samples.map((s) => s[key] || 0))); // headroom
  const x = (t) => left + ((t - start) / WINDOW_SECONDS) * (right - left);
  const y = (v) => bottom - (v / max) * (bottom - top);

  g.font = '11px ui-monospace, Menlo, Consolas, monospace';
  g.fillStyle = css('--muted');
  g.strokeStyle = css('--line');
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const f of [0, 0.5, 1]) {
    const yy = Math.round(y(max * f)) + 0.5;
    g.beginPath();
    g.moveTo(left, yy);
    g.lineTo(right, yy);
    g.stroke();
    g.fillText(fmtNum(max * f), left - 6, yy);
  }
  g.textAlign = 'center';
  g.textBaseline = 'alphabetic';
  for (const minutes of [15, 10, 5, 0]) {
    const xx = x(now - minutes * 60);
    g.fillText(minutes ? `-${minutes}m` : 'now', Math.min(Math.max(xx, left + 12), right - 12), h - 4);
  }
  if (samples.length < 2) return false;

  const stroke = css(color);
  g.beginPath();
  samples.forEach((s, i) => {
    const px = x(s.t);
    const py = y(s[key] || 0);
    if (i === 0) g.moveTo(px, py);
    else g.lineTo(px, py);
  });
  g.strokeStyle = stroke;
  g.lineWidth = 1.6;
  g.stroke();

  g.lineTo(x(samples[samples.length - 1].t), bottom);
  g.lineTo(x(samples[0].t), bottom);
  g.closePath();
  const fill = g.createLinearGradient(0, top, 0, bottom);
  fill.addColorStop(0, stroke + '55');
  fill.addColorStop(1, stroke + '05');
  g.fillStyle = fill;
  g.fill();
  // The newest value as a dot: where "now" is, even while the window is mostly empty.
  const newest = samples[samples.length - 1];
  const nx = x(newest.t);
  const ny = y(newest[key] || 0);
  g.beginPath();
  g.arc(nx, ny, 3, 0, 2 * Math.PI);
  g.fillStyle = stroke;
  g.fill();
  state.lastPoints[key] = [Math.round(nx * dpr), Math.round(ny * dpr), stroke];
  return true;
}

function render() {
  let drawn = 0;
  for (const chart of CHARTS) if (drawChart($(chart.id), chart.key, chart.color)) drawn += 1;
  if (drawn === CHARTS.length) state.drawn += 1;
  const last = state.samples[state.samples.length - 1];
  if (!last) return;
  $('kpi-publishes').textContent = fmtNum(last.publishes);
  $('kpi-deliveries').textContent = fmtNum(last.deliveries);
  $('kpi-connections').textContent = fmtNum(last.connections);
  const drops = $('kpi-drops');
  drops.textContent = fmtNum(last.drops);
  drops.className = 'value' + (last.drops > 0 ? ' bad' : '');
  const lag = $('kpi-lag');
  lag.textContent = fmtDur(last.max_lag);
  lag.className = 'value' + (last.max_lag >= 5 ? ' bad' : last.max_lag >= 1 ? ' warn' : '');
  $('kpi-queued').textContent = fmtNum(last.queued);
}

// -- tables ---------------------------------------------------------------------------

async function disconnect(id, button) {
  if (button.dataset.armed !== '1') {
    button.dataset.armed = '1';
    button.textContent = 'sure?';
    setTimeout(() => { button.dataset.armed = ''; button.textContent = 'disconnect'; }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api(`/admin/api/connections/${id}?reason=${encodeURIComponent('disconnected from the admin page')}`, { method: 'DELETE' });
    state.disconnected.push(id);
    button.textContent = 'gone';
    setTimeout(pollConnections, 300);
  } catch (err) {
    state.errors.push(String(err));
    button.textContent = 'failed';
  }
}

function renderSlow(answer) {
  state.slow = answer.connections;
  $('slow-total').textContent = `${answer.total} connection${answer.total === 1 ? '' : 's'}`;
  const tbody = $('slow-table').tBodies[0];
  tbody.replaceChildren();
  if (!answer.connections.length) emptyRow(tbody, 13, 'no subscribers connected');
  for (const row of answer.connections) {
    const tr = document.createElement('tr');
    tr.dataset.id = row.id;
    if (row.lag_seconds >= 5) tr.className = 'stalled';
    else if (row.lag_seconds >= 1) tr.className = 'lagging';
    const topics = row.topics.join(', ') + (row.topic_count > row.topics.length ? ` +${row.topic_count - row.topics.length}` : '');
    tr.append(
      cell(String(row.id), 'mono'),
      cell(row.transport),
      cell(row.remote, 'mono'),
      cell(row.subject || '–'),
      cell(topics, 'topics'),
      cell(fmtDur(row.lag_seconds), 'num lag'),
      cell(fmtNum(row.queue_events), 'num'),
      cell(fmtBytes(row.queue_bytes), 'num'),
      cell(fmtNum(row.dropped), 'num'),
      cell(fmtNum(row.delivered), 'num'),
      cell(row.bytes_per_second === null ? '–' : fmtBytes(row.bytes_per_second) + '/s', 'num'),
      cell(fmtDur(row.age_seconds), 'num'),
    );
    tr.lastChild.title = new Date(row.connected_since * 1000).toISOString();
    const td = document.createElement('td');
    const button = document.createElement('button');
    button.className = 'danger';
    button.textContent = 'disconnect';
    button.dataset.disconnect = row.id;
    button.addEventListener('click', () => disconnect(row.id, button));
    td.append(button);
    tr.append(td);
    tbody.append(tr);
  }
}

function renderTopics(answer) {
  state.topics = answer.topics;
  $('topics-total').textContent = `${answer.total} topic${answer.total === 1 ? '' : 's'}`;
  const tbody = $('topics-table').tBodies[0];
  tbody.replaceChildren();
  if (!answer.topics.length) emptyRow(tbody, 6, 'no topics in memory');
  for (const row of answer.topics) {
    const tr = document.createElement('tr');
    const name = cell(row.name, 'mono');
    if (row.closed) {
      const pill = document.createElement('span');
      pill.className = 'pill closed';
      pill.textContent = 'closed';
      name.append(' ', pill);
    }
    tr.append(
      name,
      cell(fmtNum(row.rate, 2), 'num'),
      cell(fmtNum(row.subscribers), 'num'),
      cell(fmtNum(row.history_events), 'num'),
      cell(row.retained_types.join(', ') || '–'),
      cell(ago(row.last_publish), 'num'),
    );
    tbody.append(tr);
  }
}

function renderCluster(answer) {
  state.cluster = answer;
  $('node').textContent = `node ${answer.node} · ${answer.engine}${answer.ready ? '' : ' · shutting down'}`;
  $('engine').textContent = answer.engine === 'memory' ? 'single node (in-memory engine)' : `${answer.engine} engine`;
  const nodes = $('nodes-table').tBodies[0];
  nodes.replaceChildren();
  if (!answer.nodes.length) emptyRow(nodes, 6, answer.engine === 'mesh' ? 'no peers yet' : 'no peers (not a mesh cluster)');
  for (const peer of answer.nodes) {
    const tr = document.createElement('tr');
    const stateCell = document.createElement('td');
    const pill = document.createElement('span');
    pill.className = `pill ${peer.state === 'up' ? 'up' : 'down'}`;
    pill.textContent = peer.state;
    stateCell.append(pill);
    tr.append(
      cell(peer.node, 'mono'),
      cell(peer.addr || '–', 'mono'),
      stateCell,
      cell(peer.lag_events === undefined ? '–' : fmtNum(peer.lag_events), 'num'),
      cell(peer.send_queue === undefined ? '–' : fmtNum(peer.send_queue), 'num'),
      cell(peer.last_seen_seconds_ago === null || peer.last_seen_seconds_ago === undefined ? '–' : fmtDur(peer.last_seen_seconds_ago), 'num'),
    );
    nodes.append(tr);
  }
  const origins = $('origins-table').tBodies[0];
  origins.replaceChildren();
  for (const origin of answer.origins) {
    const tr = document.createElement('tr');
    origins.append(tr);
    tr.append(
      cell(origin.origin + (origin.local ? ' (this node)' : ''), 'mono'),
      cell(fmtNum(origin.seq), 'num'),
      cell(origin.local ? '–' : fmtDur(origin.delay_seconds), 'num'),
    );
  }
  const facts = $('store');
  facts.replaceChildren();
  const store = answer.store;
  const pairs = store
    ? [['store', `${store.engine} ${store.redis || ''}`], ['state', store.state], ['last commit', fmtDur(store.last_commit_seconds)], ['failures', fmtNum(store.failures)], ['reconnects', fmtNum(store.reconnects)]]
    : [['replicated in', fmtNum(answer.replicated_in ?? 0)], ['replicated out', fmtNum(answer.replicated_out ?? 0)], ['held back', fmtNum(answer.held_back ?? 0)], ['lost', fmtNum(answer.lost ?? 0)]];
  for (const [k, v] of pairs) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    facts.append(dt, dd);
  }
}

async function pollConnections() {
  try {
    renderSlow(await api(`/admin/api/connections?sort=${$('slow-sort').value}&limit=50`));
  } catch (err) {
    state.errors.push(String(err));
  }
}

async function pollTopics() {
  const prefix = $('topic-prefix').value;
  try {
    renderTopics(await api(`/admin/api/topics?sort=rate&limit=30&prefix=${encodeURIComponent(prefix)}`));
  } catch (err) {
    state.errors.push(String(err));
  }
}

async function pollCluster() {
  try {
    renderCluster(await api('/admin/api/cluster'));
  } catch (err) {
    state.errors.push(String(err));
  }
}

// -- start ----------------------------------------------------------------------------

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem('brokerAdminTheme', theme);
  render();
}

function start() {
  const saved = localStorage.getItem('brokerAdminTheme');
  const system = window.matchMedia && window.matchMedia('(prefers-color-scheme: light)').matches ? 'light' : 'dark';
  document.documentElement.dataset.theme = saved || system;
  $('theme').addEventListener('click', () => applyTheme(document.documentElement.dataset.theme === 'light' ? 'dark' : 'light'));
  $('token-button').addEventListener('click', () => { $('auth').hidden = !$('auth').hidden; });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    location.reload();
  });
  $('slow-sort').addEventListener('change', pollConnections);
  $('topic-prefix').addEventListener('input', pollTopics);
  window.addEventListener('resize', render);
  render();
  streamLoop();
  pollConnections();
  pollTopics();
  pollCluster();
  setInterval(() => { pollConnections(); pollTopics(); }, POLL_MS);
  setInterval(pollCluster, CLUSTER_POLL_MS);
}

start();
