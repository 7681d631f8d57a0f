// Job progress page: follows one job's topic, jobs/<job id>, and shows its stages.
//
// The job (examples/job_progress/pipeline.py) publishes `progress` with retain=1 at every
// stage, then `complete` or `job.failed` with final=1. So a page that opens at any moment
// first gets the retained progress (the current stage, at once), then live stages; a page
// that opens after the end gets the last progress and the final event. Either way the broker
// then says `broker.end`, the client reports `closed` with reason `ended`, and nothing
// reconnects.
//
// URL: /examples/job_progress/?job=<job id>. `window.example` exposes what the page saw.

import { subscribe } from '/client.js';
import { $, el, showConnection } from '/examples/common.js';

const STAGES = await (await fetch('/examples/job_progress/stages.json')).json();
const FINAL_EVENTS = new Set(['complete', 'job.failed']);

const example = {
  job: new URLSearchParams(location.search).get('job'),
  stage: null,
  progress: 0,
  outcome: null, // 'complete' | 'failed' once the final event arrived
  results: [],
  error: null,
  events: [],
  notices: [],
  statuses: [],
  subscription: null,
};
window.example = example;

function renderChecklist() {
  $('job-stages').replaceChildren(
    ...STAGES.map((s) =>
      el('li', { dataset: { stage: s.stage, state: 'pending' } },
        el('span', { class: 'mark', 'aria-hidden': 'true' }, '○'),
        el('span', {}, el('span', { class: 'ko' }, s.ko), ' ', el('span', { class: 'en' }, s.en)),
        el('span', { class: 'pct' }, `${Math.round(s.progress * 100)} %`)),
    ),
  );
}

const MARKS = { done: '✓', current: '●', pending: '○', failed: '✕' };

/** Draw the bar and the checklist for `stage` (failed: that stage failed). */
function show(stageName, progress, { failed = false } = {}) {
  const index = STAGES.findIndex((s) => s.stage === stageName);
  const stage = STAGES[index];
  example.stage = stageName;
  example.progress = progress;
  const percent = Math.round(progress * 100);
  const bar = $('job-progress');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.querySelector('.fill').style.width = `${percent}%`;
  bar.classList.toggle('done', stageName === 'complete');
  bar.classList.toggle('failed', failed);
  $('job-percent').textContent = `${percent} %`;
  if (stage) {
    $('job-stage').replaceChildren(el('span', { class: 'ko' }, stage.ko), ' ', el('span', { class: 'en' }, stage.en));
  }
  for (const li of $('job-stages').children) {
    const i = STAGES.findIndex((s) => s.stage === li.dataset.stage);
    let state = 'pending';
    if (i < index || stageName === 'complete') state = 'done';
    else if (i === index) state = failed ? 'failed' : 'current';
    li.dataset.state = state;
    li.querySelector('.mark').textContent = MARKS[state];
  }
}

function onEvent(ev) {
  example.events.push(ev);
  const data = ev.data && typeof ev.data === 'object' ? ev.data : {};
  if (data.query) $('job-query').textContent = data.query;
  if (ev.event === 'progress') {
    if (example.outcome) return; // never move back after the end
    show(data.stage, Number(data.progress) || 0);
  } else if (ev.event === 'complete') {
    example.outcome = 'complete';
    example.results = data.results || [];
    show('complete', 1);
    $('result-list').replaceChildren(
      ...example.results.map((r) =>
        el('li', {}, el('strong', {}, r.title), ' ', el('code', {}, r.source), ' ',
          el('span', { class: 'score' }, Number(r.score).toFixed(2)))),
    );
    $('job-results').hidden = false;
  } else if (ev.event === 'job.failed') {
    example.outcome = 'failed';
    example.error = data.error || null;
    show(data.stage, Number(data.progress) || 0, { failed: true });
    const message = (data.error && data.error.message) || {};
    $('job-error').replaceChildren(el('span', { class: 'ko' }, message.ko || '실패'), ' ', el('span', { class: 'en' }, message.en || 'failed'));
    $('job-error').hidden = false;
  }
  if (FINAL_EVENTS.has(ev.event)) {
    const badge = $('job-outcome');
    badge.textContent = example.outcome;
    badge.dataset.outcome = example.outcome;
  }
}

function follow(job) {
  $('job-card').hidden = false;
  $('job-id').textContent = job;
  $('job-input').value = job;
  renderChecklist();
  example.subscription = subscribe('', [`jobs/${job}`], {
    onEvent,
    onNotice(notice) {
      example.notices.push(notice);
    },
    onStatus(status, detail) {
      example.statuses.push({ status, ...detail });
      showConnection(status, detail);
      if (status === 'closed' && detail.reason === 'ended') {
        $('stream-note').textContent = 'The job is over: the broker ended the stream, nothing reconnects. (작업 종료: 스트림이 끝났습니다)';
      } else if (status === 'reconnecting') {
        $('stream-note').textContent = `Connection lost; reconnecting in ${Math.round((detail.delayMs || 0) / 100) / 10} s…`;
      } else if (status === 'open') {
        $('stream-note').textContent = '';
      }
    },
  });
}

$('job-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const job = $('job-input').value.trim();
  if (job) location.search = `?job=${encodeURIComponent(job)}`;
});
window.addEventListener('pagehide', () => example.subscription && example.subscription.close());

if (example.job) follow(example.job);
else showConnection('idle', {});
