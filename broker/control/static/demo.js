// The demo page: live event log, publish form, and a job progress bar driven by `progress`
// events. Everything it shows goes through broker-client.js, like a real application.
//
// URL parameters: ?topics=a,b (initial topics), ?transport=auto|sse|ws, ?step_ms=N (delay
// between the simulated job's stages).
//
// `window.brokerDemo` exposes what the page saw (events, notices, statuses) for tests and for
// poking around in the console.

import { subscribe, publish } from './broker-client.js';

/** The stages a search / generation pipeline reports, with the progress each one stands for. */
export const JOB_STAGES = Object.freeze([
  ['started', 0],
  ['exact_match', 0.2],
  ['vector_search', 0.4],
  ['graph', 0.6],
  ['rerank', 0.8],
  ['generating', 0.9],
  ['complete', 1],
]);
const PROGRESS_EVENTS = new Set(['progress', 'started', 'complete']);
const LOG_LIMIT = 500;

const params = new URLSearchParams(location.search);
const stepMs = Math.max(0, Number(params.get('step_ms') ?? 600)) || 0;
const $ = (id) => document.getElementById(id);

const demo = {
  events: [], // every event onEvent delivered, in order
  notices: [],
  statuses: [],
  subscription: null,
  get status() {
    return this.subscription ? this.subscription.status : null;
  },
  get transport() {
    return this.subscription ? this.subscription.transport : null;
  },
  job: { id: null, stage: null, progress: 0 },
};
window.brokerDemo = demo;

function parseTopics(text) {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

// -- connection ------------------------------------------------------------------------------

function connect() {
  if (demo.subscription) demo.subscription.close();
  const topics = parseTopics($('topics').value);
  if (topics.length === 0) {
    showStatus('closed', null);
    return;
  }
  demo.subscription = subscribe('', topics, {
    transport: $('transport').value,
    onEvent,
    onNotice(notice) {
      demo.notices.push(notice);
      appendLog({ kind: 'notice', topic: notice.type, event: null, data: notice.data, id: notice.id });
    },
    onStatus(status, detail) {
      demo.statuses.push({ status, ...detail });
      showStatus(status, detail.transport);
    },
  });
  showStatus(demo.subscription.status, demo.subscription.transport);
}

function showStatus(status, transport) {
  const badge = $('conn-status');
  badge.textContent = status;
  badge.dataset.status = status;
  $('conn-transport').textContent = transport === 'ws' ? 'WebSocket' : transport === 'sse' ? 'SSE' : '–';
  $('conn-transport').dataset.transport = transport || '';
}

function onEvent(ev) {
  demo.events.push(ev);
  $('event-count').textContent = String(demo.events.length);
  $('last-id').textContent = ev.id;
  appendLog({ kind: 'event', ...ev });
  if (PROGRESS_EVENTS.has(ev.event) && ev.data && typeof ev.data === 'object') showProgress(ev.data, ev.event);
}

function appendLog({ kind, id, topic, event, data }) {
  const item = document.createElement('li');
  item.className = kind;
  const head = document.createElement('div');
  head.className = 'meta';
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  const where = document.createElement('span');
  where.className = 'topic';
  where.textContent = topic ?? '';
  head.append(time, where);
  if (event) {
    const type = document.createElement('span');
    type.className = 'type';
    type.textContent = event;
    head.append(type);
  }
  const body = document.createElement('pre');
  body.className = 'data';
  body.textContent = typeof data === 'string' ? data : JSON.stringify(data);
  if (id) item.title = `id ${id}`;
  item.append(head, body);
  const log = $('event-log');
  log.append(item);
  while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

// -- job progress ----------------------------------------------------------------------------

function renderStages() {
  const list = $('job-stages');
  list.replaceChildren(
    ...JOB_STAGES.map(([name]) => {
      const li = document.createElement('li');
      li.dataset.stage = name;
      li.textContent = name.replace('_', ' ');
      return li;
    }),
  );
}

function showProgress(data, eventType) {
  const stage = data.stage ?? (eventType === 'progress' ? null : eventType);
  const known = JOB_STAGES.find(([name]) => name === stage);
  let progress = Number(data.progress);
  if (!Number.isFinite(progress)) progress = known ? known[1] : demo.job.progress;
  progress = Math.min(1, Math.max(0, progress));
  if (data.job && data.job !== demo.job.id) demo.job.id = data.job;
  demo.job.stage = stage;
  demo.job.progress = progress;

  const percent = Math.round(progress * 100);
  const bar = $('job-progress');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.dataset.stage = stage ?? '';
  bar.classList.toggle('done', stage === 'complete');
  bar.querySelector('.fill').style.width = `${percent}%`;
  $('job-stage').textContent = stage ? stage.replace('_', ' ') : 'working';
  $('job-percent').textContent = `${percent} %`;
  const reached = known ? JOB_STAGES.indexOf(known) : -1;
  for (const li of $('job-stages').children) {
    const index = JOB_STAGES.findIndex(([name]) => name === li.dataset.stage);
    li.classList.toggle('done', index < reached || stage === 'complete');
    li.classList.toggle('current', index === reached && stage !== 'complete');
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function simulateJob() {
  const topic = $('job-topic').value.trim();
  if (!topic) return;
  const subscribed = demo.subscription ? demo.subscription.topics : [];
  if (!subscribed.includes(topic)) {
    $('topics').value = [...subscribed, topic].join(', ');
    connect();
  }
  const button = $('simulate-job');
  button.disabled = true;
  const job = `job-${Date.now().toString(36)}`;
  try {
    for (const [index, [stage, progress]] of JOB_STAGES.entries()) {
      if (index > 0) await sleep(stepMs);
      await publish('', topic, { job, stage, progress }, { event: 'progress' });
    }
  } catch (err) {
    $('job-stage').textContent = `failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// -- publish form ----------------------------------------------------------------------------

async function onPublish(e) {
  e.preventDefault();
  const result = $('pub-result');
  const topic = $('pub-topic').value.trim();
  const event = $('pub-event').value.trim() || undefined;
  let data = $('pub-data').value;
  result.className = 'result';
  if ($('pub-json').checked) {
    try {
      data = JSON.parse(data);
    } catch (err) {
      result.textContent = `not JSON: ${err.message}`;
      result.classList.add('error');
      return;
    }
  }
  $('pub-submit').disabled = true;
  try {
    const answer = await publish('', topic, data, { event });
    result.textContent = `published as ${answer.id}`;
    result.dataset.id = answer.id;
    result.classList.add('ok');
  } catch (err) {
    result.textContent = err.code ? `${err.message} (${err.code})` : err.message;
    result.classList.add('error');
  } finally {
    $('pub-submit').disabled = false;
  }
}

// -- start -----------------------------------------------------------------------------------

const initialTopics = parseTopics(params.get('topics') || 'demo, jobs/demo');
$('topics').value = initialTopics.join(', ');
$('transport').value = ['auto', 'sse', 'ws'].includes(params.get('transport')) ? params.get('transport') : 'auto';
$('pub-topic').value = initialTopics[0];
$('job-topic').value = initialTopics.find((t) => t.startsWith('jobs')) || initialTopics.at(-1);
renderStages();
$('subscribe-form').addEventListener('submit', (e) => {
  e.preventDefault();
  connect();
});
$('clear-log').addEventListener('click', () => $('event-log').replaceChildren());
$('publish-form').addEventListener('submit', onPublish);
$('simulate-job').addEventListener('click', simulateJob);
window.addEventListener('pagehide', () => demo.subscription && demo.subscription.close());
window.addEventListener('pageshow', (e) => e.persisted && connect()); // back/forward cache
connect();
