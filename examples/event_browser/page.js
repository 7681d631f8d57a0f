// Event browser page: alerts of the last hour, then live ones; acknowledge them; a bell.
//
// One subscription to the alerts topic with `since=3600` (the `since` URL parameter changes
// it: seconds, or an RFC 3339 time). The broker sends the retained `summary` first (the
// current unacked counts, however old the alerts are), then every event of the window in
// order, then live events. `new_event` adds a row, `ack_event` marks it acknowledged,
// `summary` sets the counts and the bell. Acknowledge publishes `ack_event` from this page.
//
// URL: /examples/event_browser/?topic=alerts&since=3600. `window.example` exposes what the
// page saw.

import { publish, subscribe } from '/client.js';
import { $, el, showConnection } from '/examples/common.js';

const params = new URLSearchParams(location.search);
const SEVERITIES = ['critical', 'warning', 'info'];
const LIST_LIMIT = 500;

const example = {
  topic: params.get('topic') || 'alerts',
  since: params.get('since') || '3600',
  alerts: [], // {id, severity, title, source, at, acked, ackedBy}, in arrival order
  summary: null,
  events: [],
  notices: [],
  statuses: [],
  subscription: null,
};
window.example = example;

const byId = new Map();

function onEvent(ev) {
  example.events.push(ev);
  const data = ev.data && typeof ev.data === 'object' ? ev.data : {};
  if (ev.event === 'new_event') addAlert(data);
  else if (ev.event === 'ack_event') markAcked(data);
  else if (ev.event === 'summary') showSummary(data);
}

function addAlert(alert) {
  if (typeof alert.id !== 'string' || byId.has(alert.id)) return;
  const entry = { ...alert, acked: false, ackedBy: null };
  example.alerts.push(entry);
  byId.set(alert.id, entry);
  const title = alert.title || {};
  const button = el('button', { type: 'button', class: 'ack' }, 'Acknowledge');
  button.addEventListener('click', () => acknowledge(entry, button));
  const row = el('li', { dataset: { id: alert.id, severity: alert.severity, acked: 'false' } },
    el('span', { class: 'sev' }, alert.severity),
    el('div', {},
      el('div', {}, el('span', { class: 'ko' }, title.ko || ''), ' ', el('span', { class: 'en' }, title.en || '')),
      el('div', { class: 'meta' }, `${alert.source || ''} · ${formatTime(alert.at)} · ${alert.id}`)),
    el('span', { class: 'action' }, button));
  const list = $('event-list');
  list.prepend(row); // newest first
  while (list.childElementCount > LIST_LIMIT) list.lastElementChild.remove();
  $('empty-note').hidden = true;
}

function markAcked(ack) {
  const entry = byId.get(ack.id);
  if (!entry || entry.acked) return; // outside the window, or acked already
  entry.acked = true;
  entry.ackedBy = ack.by || null;
  const row = $('event-list').querySelector(`li[data-id="${CSS.escape(ack.id)}"]`);
  if (!row) return;
  row.dataset.acked = 'true';
  row.querySelector('.action').replaceChildren(el('span', { class: 'acked' }, `✓ acked${ack.by ? ` by ${ack.by}` : ''}`));
}

function showSummary(summary) {
  example.summary = summary;
  const counts = summary.unacked || {};
  for (const severity of SEVERITIES) $(`count-${severity}`).textContent = String(counts[severity] ?? 0);
  const total = String(summary.total ?? 0);
  $('bell-count').textContent = total;
  $('bell-count').dataset.count = total;
  $('bell').title = `${total} unacknowledged alerts`;
  $('summary-time').textContent = formatTime(summary.updated_at);
}

async function acknowledge(entry, button) {
  button.disabled = true;
  try {
    await publish('', example.topic, { id: entry.id, by: 'browser', at: new Date().toISOString() }, { event: 'ack_event' });
    // The row changes when the ack_event comes back on the stream, on every open page alike.
  } catch (err) {
    button.disabled = false;
    button.title = `not acknowledged: ${err.message}`;
  }
}

function formatTime(iso) {
  const when = iso ? new Date(iso) : null;
  return when && !Number.isNaN(when.getTime()) ? when.toLocaleTimeString() : '–';
}

function windowNote(since) {
  if (/^\d+(\.\d+)?$/.test(since)) {
    const seconds = Number(since);
    return seconds === 3600 ? 'last hour, then live (since=3600)' : `last ${seconds} s, then live (since=${since})`;
  }
  return `since ${since}, then live`;
}

$('window-note').textContent = windowNote(example.since);
$('bell').addEventListener('click', () => {
  const first = $('event-list').querySelector('li[data-acked="false"]');
  if (first) first.scrollIntoView({ block: 'center' });
});
example.subscription = subscribe('', [example.topic], {
  since: example.since,
  onEvent,
  onNotice(notice) {
    example.notices.push(notice);
  },
  onStatus(status, detail) {
    example.statuses.push({ status, ...detail });
    showConnection(status, detail);
  },
});
window.addEventListener('pagehide', () => example.subscription.close());
