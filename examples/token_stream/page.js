// Token stream page: renders an answer as its tokens arrive on answers/<answer id>.
//
// The subscription asks for `last=1000` (the topic's whole history), so a page opened in the
// middle of an answer, or after it, shows it from the first token. `token` events append
// their text; `done` or `generation.failed` (published with final=1) end it, the broker then
// ends the stream and the client reports `closed` with reason `ended`.
//
// URL: /examples/token_stream/?answer=<answer id>. `window.example` exposes what it saw.

import { subscribe } from '/client.js';
import { $, showConnection } from '/examples/common.js';

const HISTORY = 1000; // the broker's default [history] size

const example = {
  answer: new URLSearchParams(location.search).get('answer'),
  text: '',
  tokens: 0,
  outcome: null, // 'done' | 'generation.failed'
  final: null,
  events: [],
  notices: [],
  statuses: [],
  subscription: null,
};
window.example = example;

function setState(state, label = state) {
  $('answer-state').dataset.state = state;
  $('answer-state').textContent = label;
}

function onEvent(ev) {
  example.events.push(ev);
  if (ev.event === 'token' && typeof ev.data === 'string') {
    example.text += ev.data;
    example.tokens += 1;
    $('answer-text').textContent = example.text;
    if (!example.outcome) setState('streaming');
  } else if (ev.event === 'done' || ev.event === 'generation.failed') {
    example.outcome = ev.event;
    example.final = ev.data;
    $('answer').classList.add('finished');
    if (ev.event === 'done') {
      setState('done');
      $('answer-note').textContent = `${ev.data.tokens} tokens, finish reason: ${ev.data.finish_reason}`;
    } else {
      setState('failed');
      const error = (ev.data && ev.data.error) || {};
      $('answer-note').textContent = `Generation failed after ${ev.data.tokens} tokens: ${error.message || 'unknown error'} (${error.code || '?'})`;
    }
  }
  if (ev.event === 'token' && ev.id) {
    // Resuming after the last token it has, a client gets the rest of the answer and the end.
    $('curl-resume').textContent = `curl -N '${topicUrl()}?last_event_id=${encodeURIComponent(ev.id)}'`;
  }
}

function topicUrl() {
  return `${location.origin}/topics/answers/${encodeURIComponent(example.answer)}/events`;
}

function follow(answer) {
  $('answer-card').hidden = false;
  $('answer-id').textContent = answer;
  $('answer-input').value = answer;
  $('curl-last').textContent = `curl -N '${topicUrl()}?last=${HISTORY}'`;
  example.subscription = subscribe('', [`answers/${answer}`], {
    last: HISTORY,
    onEvent,
    onNotice(notice) {
      example.notices.push(notice);
    },
    onStatus(status, detail) {
      example.statuses.push({ status, ...detail });
      showConnection(status, detail);
    },
  });
}

$('answer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const answer = $('answer-input').value.trim();
  if (answer) location.search = `?answer=${encodeURIComponent(answer)}`;
});
window.addEventListener('pagehide', () => example.subscription && example.subscription.close());

if (example.answer) follow(example.answer);
else showConnection('idle', {});
