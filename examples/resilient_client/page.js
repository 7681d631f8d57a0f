// Resilient client page: the browser client configured for production, and a panel that
// shows how the connection is doing.
//
// - Reconnects with jittered backoff, 1 → 2 → 5 → 15 s (±10 %), resuming from the last event.
// - Heartbeat timeout: the broker sends visible `broker.heartbeat` events on quiet envelope
//   streams; a stream silent for 2.5 × the heartbeat interval counts as dead and is reopened.
// - After `max_attempts` failed attempts in a row the client stops (status `failed`) and the
//   page offers a retry button (`subscription.retry()`).
// - Delivery latency: every tick carries its publisher's send time (`sent_at`, ms).
//
// URL: /examples/resilient_client/?topic=ticks&max_attempts=5&backoff=1000,2000,5000,15000
//      &jitter=0.1&transport=auto. `window.example` exposes what the page saw.

import { subscribe } from '/client.js';
import { $, el, formatAge, showConnection } from '/examples/common.js';

const params = new URLSearchParams(location.search);
const numberList = (text) => (text ? text.split(',').map(Number).filter((n) => n >= 0) : []);
const LATENCY_WINDOW = 100; // latencies kept for p50 / p95

const example = {
  topic: params.get('topic') || 'ticks',
  maxAttempts: Number(params.get('max_attempts') || 5),
  backoff: numberList(params.get('backoff')),
  jitter: Number(params.get('jitter') ?? 0.1),
  transport: params.get('transport') || 'auto',
  latencies: [], // ms, newest last
  nextAttemptAt: null,
  events: [],
  notices: [],
  statuses: [],
  subscription: null,
};
window.example = example;

function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

const ms = (value) => (value === null || value === undefined ? '–' : `${Math.round(value)} ms`);

function onEvent(ev) {
  example.events.push(ev);
  if (example.events.length > 1000) example.events.shift();
  const sentAt = ev.data && Number(ev.data.sent_at);
  if (ev.event === 'tick' && Number.isFinite(sentAt)) {
    example.latencies.push(Math.max(0, Date.now() - sentAt));
    if (example.latencies.length > LATENCY_WINDOW) example.latencies.shift();
  }
  render();
}

function onStatus(status, detail) {
  example.statuses.push({ status, ...detail, at: Date.now() });
  example.nextAttemptAt = detail.delayMs !== undefined ? Date.now() + detail.delayMs : null;
  showConnection(status, detail);
  const text = `${status}${detail.reason ? ` — ${detail.reason}` : ''}${detail.delayMs !== undefined ? ` (next attempt in ${(detail.delayMs / 1000).toFixed(1)} s)` : ''}`;
  const log = $('status-log');
  log.prepend(el('li', { dataset: { status } }, el('time', {}, new Date().toLocaleTimeString()), text));
  while (log.childElementCount > 200) log.lastElementChild.remove();
  $('retry').hidden = status !== 'failed';
  $('failed-note').hidden = status !== 'failed';
  if (status === 'failed') $('failed-note').textContent = `Gave up: ${detail.reason}. The broker may be down; retry when it is back.`;
  render();
}

/** Redraw the panel (also every 250 ms, for the ages and the countdown). */
function render() {
  const sub = example.subscription;
  if (!sub) return;
  const stats = sub.stats;
  const now = Date.now();
  const state = $('q-state');
  state.textContent = sub.status;
  state.dataset.status = sub.status;
  $('q-transport').textContent = sub.transport === 'ws' ? 'WebSocket' : 'SSE';
  $('q-reconnects').textContent = String(stats.reconnects);
  $('q-failures').textContent = String(stats.failures);
  $('q-events').textContent = String(stats.events);
  $('q-last-event').textContent = stats.lastEventAt ? `${formatAge(now - stats.lastEventAt)} ago` : '–';
  $('q-last-frame').textContent = stats.lastFrameAt ? `${formatAge(now - stats.lastFrameAt)} ago` : '–';
  $('q-heartbeat').textContent = stats.heartbeats > 0 ? `${(stats.quietMs / 1000).toFixed(1)} s of silence` : `armed at the first heartbeat (${(stats.quietMs / 1000).toFixed(1)} s)`;
  const pending = example.nextAttemptAt !== null && ['reconnecting', 'fallback'].includes(sub.status);
  $('q-next').textContent = pending ? `in ${formatAge(example.nextAttemptAt - now)}` : '–';
  $('q-latency').textContent = ms(example.latencies.at(-1));
  $('q-latency-p50').textContent = ms(percentile(example.latencies, 0.5));
  $('q-latency-p95').textContent = ms(percentile(example.latencies, 0.95));
}

$('q-max-attempts').textContent = String(example.maxAttempts);
for (const node of document.querySelectorAll('.max-attempts')) node.textContent = String(example.maxAttempts);
$('retry').addEventListener('click', () => example.subscription.retry());

example.subscription = subscribe('', [example.topic], {
  transport: example.transport,
  backoff: example.backoff.length ? example.backoff : undefined, // default 1, 2, 5, 15 s
  jitter: example.jitter,
  maxAttempts: example.maxAttempts,
  onEvent,
  onStatus,
  onNotice(notice) {
    example.notices.push(notice);
  },
});
setInterval(render, 250);
window.addEventListener('pagehide', () => example.subscription.close());
