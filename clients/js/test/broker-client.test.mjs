// Unit tests of broker-client.js's connection state machine, no browser and no broker:
// fake EventSource, WebSocket, timers and fetch. Run: `node --test clients/js/test/`.
// The real-browser tests against a real broker are tests/browser/.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import { BrokerError, publish, subscribe } from '../../../broker/control/static/broker-client.js';

// -- fakes -----------------------------------------------------------------------------------

/** Timers under the test's control: `advance(ms)` runs what falls due, in order. */
class FakeClock {
  now = 0;
  #timers = new Map();
  #next = 1;

  setTimeout = (fn, ms = 0) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = end;
  }

  get pending() {
    return this.#timers.size;
  }
}

class FakeEventSource {
  static instances = [];
  onmessage = null;
  onerror = null;
  closed = false;
  #listeners = new Map();

  constructor(url) {
    this.url = new URL(url);
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, []);
    this.#listeners.get(type).push(fn);
  }

  close() {
    this.closed = true;
  }

  /** Dispatch like a browser: untyped → onmessage, named → addEventListener only. */
  emit(type, data, id = '') {
    const msg = { data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId: id };
    if (type === 'message') this.onmessage?.(msg);
    else for (const fn of this.#listeners.get(type) || []) fn(msg);
  }

  /** Enveloped user event, as the broker sends it with envelope=1 (no event: line). */
  event(id, topic, data, event = null) {
    this.emit('message', { id, topic, event, data }, id);
  }

  /** Enveloped broker.* notice with its event: line. */
  notice(type, id, data) {
    this.emit(type, { id, topic: null, event: type, data }, id);
  }

  start(id = 'p0') {
    this.notice('broker.start', id, { position: id, resumed: false });
  }

  fail() {
    this.onerror?.({});
  }
}

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static instances = [];
  readyState = 0;
  onmessage = null;
  onclose = null;

  constructor(url) {
    this.url = new URL(url);
    FakeWebSocket.instances.push(this);
  }

  close(code) {
    this.readyState = 3;
    this.closedWith = code;
  }

  frame(obj) {
    this.readyState = 1;
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  start(id = 'p0') {
    this.frame({ id, topic: null, event: 'broker.start', data: { position: id, resumed: false } });
  }

  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

let clock;
let saved;

beforeEach(() => {
  clock = new FakeClock();
  saved = {
    setTimeout: globalThis.setTimeout,
    clearTimeout: globalThis.clearTimeout,
    EventSource: globalThis.EventSource,
    WebSocket: globalThis.WebSocket,
    location: globalThis.location,
    fetch: globalThis.fetch,
  };
  globalThis.setTimeout = clock.setTimeout;
  globalThis.clearTimeout = clock.clearTimeout;
  globalThis.EventSource = FakeEventSource;
  globalThis.WebSocket = FakeWebSocket;
  globalThis.location = { href: 'http://page.test/app/index.html' };
  FakeEventSource.instances = [];
  FakeWebSocket.instances = [];
  probes = [];
  probeStatus = 200;
  // After an SSE error the client asks with fetch whether the resume gets 204 (see below).
  globalThis.fetch = async (url, init) => {
    probes.push({ url: new URL(url), signal: init.signal });
    return { status: probeStatus };
  };
});

let probes;
let probeStatus;
const settle = () => new Promise((resolve) => setImmediate(resolve));

afterEach(() => {
  Object.assign(globalThis, saved);
});

const lastEs = () => FakeEventSource.instances.at(-1);
const lastWs = () => FakeWebSocket.instances.at(-1);

/** A subscription that records everything it reports. */
function record(topics = ['a', 'b/c'], options = {}) {
  const seen = { events: [], notices: [], statuses: [] };
  const sub = subscribe('http://broker.test:8080', topics, {
    jitter: 0,
    onEvent: (e) => seen.events.push(e),
    onNotice: (n) => seen.notices.push(n),
    onStatus: (s, d) => seen.statuses.push([s, d.transport, d.delayMs]),
    ...options,
  });
  return { sub, seen };
}

// -- tests -----------------------------------------------------------------------------------

describe('EventSource transport', () => {
  test('connects with every topic and envelope=1, opens on broker.start, delivers in order', async () => {
    const { sub, seen } = record();
    const es = lastEs();
    assert.equal(es.url.origin + es.url.pathname, 'http://broker.test:8080/events');
    assert.deepEqual(es.url.searchParams.getAll('topic'), ['a', 'b/c']);
    assert.equal(es.url.searchParams.get('envelope'), '1');
    assert.equal(es.url.searchParams.has('last_event_id'), false);
    await Promise.resolve(); // the first status is reported from a microtask
    assert.deepEqual(seen.statuses, [['connecting', 'sse', undefined]]);

    es.start('p0');
    es.event('1', 'a', '안녕하세요, 세계');
    es.event('2', 'b/c', { n: 2 }, 'progress');
    assert.equal(sub.status, 'open');
    assert.deepEqual(
      seen.events.map((e) => [e.id, e.topic, e.event, e.data, e.transport]),
      [
        ['1', 'a', null, '안녕하세요, 세계', 'sse'],
        ['2', 'b/c', 'progress', { n: 2 }, 'sse'],
      ],
    );
    assert.equal(sub.lastEventId, '2');
    assert.equal(seen.notices[0].type, 'broker.start');
    sub.close();
  });

  test('notices work enveloped or bare; reset and dropped move the resume point', () => {
    const { sub, seen } = record();
    const es = lastEs();
    es.notice('broker.reset', 'r1', { position: 'r1', requested: 'x', reason: 'unknown' });
    assert.equal(sub.status, 'open');
    assert.equal(sub.lastEventId, 'r1');
    es.emit('broker.dropped', { dropped: 3, resume_from: 'd7' }, 'd7'); // bare data
    assert.deepEqual(
      seen.notices.map((n) => [n.type, n.id, n.data]),
      [
        ['broker.reset', 'r1', { position: 'r1', requested: 'x', reason: 'unknown' }],
        ['broker.dropped', 'd7', { dropped: 3, resume_from: 'd7' }],
      ],
    );
    assert.equal(sub.lastEventId, 'd7');
    sub.close();
  });

  test('extra eventTypes are heard when a broker names user events', () => {
    const { sub, seen } = record(['a'], { eventTypes: ['progress'] });
    lastEs().emit('progress', { id: '5', topic: 'a', event: 'progress', data: 1 }, '5');
    assert.deepEqual(seen.events.map((e) => [e.id, e.event]), [['5', 'progress']]);
    sub.close();
  });

  test('reconnects itself with backoff 1, 2, 5, 15, 15 s and resumes from the last id', () => {
    const { sub, seen } = record(['a'], { lastEventId: 'start-here', transport: 'sse' });
    assert.equal(lastEs().url.searchParams.get('last_event_id'), 'start-here');
    lastEs().start('p0');
    lastEs().event('e1', 'a', 'x');
    const first = lastEs();
    first.fail();
    assert.equal(first.closed, true, 'the browser must not reconnect on its own');
    assert.equal(sub.status, 'reconnecting');

    const delays = [];
    for (let i = 0; i < 5; i += 1) {
      const before = FakeEventSource.instances.length;
      const delay = seen.statuses.at(-1)[2];
      delays.push(delay);
      clock.advance(delay - 1);
      assert.equal(FakeEventSource.instances.length, before, 'reconnected too early');
      clock.advance(1);
      assert.equal(FakeEventSource.instances.length, before + 1);
      assert.equal(lastEs().url.searchParams.get('last_event_id'), 'e1');
      lastEs().fail(); // cannot connect
    }
    assert.deepEqual(delays, [1000, 2000, 5000, 15000, 15000]);

    clock.advance(15000);
    lastEs().start('e1'); // open again: the backoff starts over
    lastEs().fail();
    assert.equal(seen.statuses.at(-1)[2], 1000);
    sub.close();
  });

  test('backoff delays are jittered by ±10 %', () => {
    const random = Math.random;
    try {
      for (const [r, expected] of [[0, 900], [1, 1100], [0.5, 1000]]) {
        Math.random = () => r;
        const { sub, seen } = record(['a'], { jitter: 0.1 });
        lastEs().start();
        lastEs().fail();
        assert.equal(seen.statuses.at(-1)[2], expected);
        sub.close();
      }
    } finally {
      Math.random = random;
    }
  });

  test('never delivers the same id twice, across reconnects', () => {
    const { sub, seen } = record(['a']);
    lastEs().start();
    lastEs().event('1', 'a', 'one');
    lastEs().event('2', 'a', 'two');
    lastEs().fail();
    clock.advance(1000);
    lastEs().start('1');
    lastEs().event('2', 'a', 'two'); // replayed again by a broker that resumed too early
    lastEs().event('3', 'a', 'three');
    lastEs().event('3', 'a', 'three');
    assert.deepEqual(seen.events.map((e) => e.id), ['1', '2', '3']);
    sub.close();
  });

  test('broker.shutdown: reconnect after retry_ms, not after the backoff', () => {
    const { sub, seen } = record(['a']);
    lastEs().start();
    lastEs().event('9', 'a', 'x');
    const old = lastEs();
    old.notice('broker.shutdown', '9', { retry_ms: 700 });
    assert.equal(old.closed, true);
    assert.deepEqual(seen.statuses.at(-1), ['reconnecting', 'sse', 700]);
    clock.advance(699);
    assert.equal(lastEs(), old);
    clock.advance(1);
    assert.notEqual(lastEs(), old);
    assert.equal(lastEs().url.searchParams.get('last_event_id'), '9');
    old.fail(); // late error from the closed stream: ignored
    assert.equal(sub.status, 'reconnecting');
    assert.equal(seen.notices.at(-1).type, 'broker.shutdown');
    sub.close();
  });

  test('broker.disconnected: an operator cut us off; stay away for retry_ms', () => {
    const { sub, seen } = record(['a']);
    lastEs().start();
    lastEs().event('4', 'a', 'x');
    const old = lastEs();
    old.notice('broker.disconnected', '4', { reason: 'stalled', retry_ms: 60000, position: '4' });
    assert.equal(old.closed, true);
    assert.deepEqual(seen.statuses.at(-1), ['reconnecting', 'sse', 60000]);
    clock.advance(59999);
    assert.equal(lastEs(), old); // no tight reconnect loop
    clock.advance(1);
    assert.notEqual(lastEs(), old);
    assert.equal(lastEs().url.searchParams.get('last_event_id'), '4');
    assert.equal(seen.notices.at(-1).data.reason, 'stalled');
    sub.close();
  });

  test('frames from a replaced connection are ignored', () => {
    const { sub, seen } = record(['a']);
    const old = lastEs();
    old.start();
    old.fail();
    clock.advance(1000);
    old.event('late', 'a', 'from the old stream');
    assert.deepEqual(seen.events, []);
    sub.close();
  });

  test('close() stops everything; no callback afterwards', () => {
    const { sub, seen } = record(['a']);
    const es = lastEs();
    es.start();
    sub.close();
    sub.close();
    assert.equal(es.closed, true);
    assert.equal(sub.status, 'closed');
    es.event('1', 'a', 'late');
    es.fail();
    clock.advance(60000);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(clock.pending, 0);
    assert.deepEqual(seen.events, []);
    assert.equal(seen.statuses.filter(([s]) => s === 'closed').length, 1);
  });

  test('close() from inside onStatus stops the reconnect', () => {
    let sub = null;
    sub = subscribe('http://broker.test', ['a'], {
      onStatus: (s) => s === 'reconnecting' && sub.close(),
    });
    lastEs().start();
    lastEs().fail();
    clock.advance(60000);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(sub.status, 'closed');
  });
});

describe('falling back to WebSocket', () => {
  test('no window.EventSource: WebSocket at once, status fallback', async () => {
    globalThis.EventSource = undefined;
    const { sub, seen } = record(['a', 'b/c'], { lastEventId: 'L' });
    const ws = lastWs();
    assert.equal(ws.url.origin.replace('ws:', 'http:'), 'http://broker.test:8080');
    assert.equal(ws.url.protocol, 'ws:');
    assert.equal(ws.url.pathname, '/ws');
    assert.deepEqual(ws.url.searchParams.getAll('topic'), ['a', 'b/c']);
    assert.equal(ws.url.searchParams.get('last_event_id'), 'L');
    await Promise.resolve();
    assert.deepEqual(seen.statuses, [['fallback', 'ws', undefined]]);
    ws.start();
    ws.frame({ id: '1', topic: 'a', event: null, data: '세계' });
    ws.frame({ id: '2', topic: 'b/c', event: 'progress', data: { p: 0.4 } });
    assert.equal(sub.status, 'open');
    assert.equal(sub.transport, 'ws');
    assert.deepEqual(
      seen.events.map((e) => [e.id, e.topic, e.event, e.data, e.transport]),
      [
        ['1', 'a', null, '세계', 'ws'],
        ['2', 'b/c', 'progress', { p: 0.4 }, 'ws'],
      ],
    );
    ws.drop();
    clock.advance(1000);
    assert.equal(lastWs().url.searchParams.get('last_event_id'), '2');
    sub.close();
    assert.equal(lastWs().closedWith, 1000);
  });

  test('an SSE stream that sends nothing within openTimeoutMs switches to WebSocket', () => {
    const { sub, seen } = record(['a'], { openTimeoutMs: 4000, lastEventId: 'L' });
    const es = lastEs();
    clock.advance(3999);
    assert.equal(FakeWebSocket.instances.length, 0);
    clock.advance(1);
    assert.equal(es.closed, true);
    assert.deepEqual(seen.statuses.at(-1), ['fallback', 'ws', 0]);
    clock.advance(0);
    assert.equal(lastWs().url.searchParams.get('last_event_id'), 'L');
    lastWs().start();
    assert.equal(sub.status, 'open');
    assert.equal(sub.transport, 'ws');
    sub.close();
  });

  test("transport 'sse' never falls back", () => {
    const { sub } = record(['a'], { transport: 'sse', openTimeoutMs: 1000 });
    clock.advance(1000);
    assert.equal(sub.status, 'reconnecting');
    clock.advance(1000);
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(FakeWebSocket.instances.length, 0);
    sub.close();
  });

  test('quiet detection is armed by visible heartbeats; quiet twice switches to WebSocket', () => {
    const { sub, seen } = record(['a']);
    lastEs().notice('broker.start', 'p', { position: 'p', resumed: false, heartbeat_seconds: 2 });
    clock.advance(60000); // no heartbeat events seen yet: silence proves nothing
    assert.equal(FakeEventSource.instances.length, 1);

    lastEs().emit('broker.heartbeat', { id: 'p', topic: null, event: 'broker.heartbeat', data: {} }, 'p');
    clock.advance(4999); // window = 2.5 × 2 s
    assert.equal(sub.status, 'open');
    clock.advance(1);
    assert.equal(lastEs().closed, true);
    assert.deepEqual(seen.statuses.at(-1), ['reconnecting', 'sse', 1000]);
    clock.advance(1000);
    lastEs().start('p');
    clock.advance(5000);
    assert.equal(sub.transport, 'ws');
    assert.equal(seen.statuses.at(-1)[0], 'fallback');
    assert.deepEqual(seen.notices.filter((n) => n.type === 'broker.heartbeat'), [], 'heartbeats are not notices');
    sub.close();
  });

  test('a stream that flows again resets the quiet count', () => {
    const { sub } = record(['a']);
    const heartbeat = () => lastEs().emit('broker.heartbeat', { id: null, topic: null, event: 'broker.heartbeat', data: {} });
    lastEs().start('p');
    heartbeat();
    clock.advance(37500); // quiet once (default 15 s heartbeat → 37.5 s window)
    assert.equal(sub.status, 'reconnecting');
    clock.advance(1000);
    lastEs().start('p');
    heartbeat(); // this stream flows
    clock.advance(37500); // quiet again, but not twice in a row
    assert.equal(sub.transport, 'sse');
    assert.equal(sub.status, 'reconnecting');
    sub.close();
  });

  test('SSE failing to connect three times probes WebSocket; broker down means back to SSE', () => {
    const { sub, seen } = record(['a']);
    lastEs().fail();
    clock.advance(1000);
    lastEs().fail();
    clock.advance(2000);
    lastEs().fail();
    assert.equal(seen.statuses.at(-1)[0], 'fallback');
    clock.advance(5000);
    assert.equal(FakeWebSocket.instances.length, 1);
    lastWs().drop(1006); // WebSocket cannot connect either: the broker is down
    assert.equal(sub.transport, 'sse');
    clock.advance(15000);
    assert.equal(FakeEventSource.instances.length, 4);
    lastEs().start();
    assert.equal(sub.status, 'open');
    assert.equal(sub.transport, 'sse');
    sub.close();
  });

  /** Three SSE errors, then the WebSocket probe opens (a broker that came back). */
  function fallBackOnErrors(options = {}) {
    const rec = record(['a'], options);
    for (const delay of [1000, 2000]) {
      lastEs().fail();
      clock.advance(delay);
    }
    lastEs().fail();
    clock.advance(5000);
    lastWs().start('w1');
    assert.equal(rec.sub.transport, 'ws');
    assert.equal(rec.sub.status, 'open');
    return rec;
  }

  test('after an error fallback, the next reconnect tries SSE and stays there if it opens', () => {
    const { sub, seen } = fallBackOnErrors();
    lastWs().frame({ id: 'w2', topic: 'a', event: null, data: 'on ws' });
    lastWs().drop();
    clock.advance(1000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeEventSource.instances.length, 4);
    assert.equal(lastEs().url.searchParams.get('last_event_id'), 'w2');
    lastEs().start('w2');
    lastEs().event('w2', 'a', 'on ws'); // a replay overlap is not delivered twice
    lastEs().event('s3', 'a', 'on sse');
    assert.equal(sub.transport, 'sse');
    assert.deepEqual(seen.statuses.at(-1), ['open', 'sse', undefined]);
    assert.deepEqual(seen.events.map((e) => [e.id, e.transport]), [['w2', 'ws'], ['s3', 'sse']]);
    sub.close();
  });

  test('after sseRetryMs on an error fallback it moves back to SSE at a quiet moment', () => {
    const { sub, seen } = fallBackOnErrors({ sseRetryMs: 20000 });
    clock.advance(19999);
    lastWs().frame({ id: 'w2', topic: 'a', event: null, data: 'busy' });
    clock.advance(1); // due, but an event just came: wait for a quiet second
    assert.equal(lastWs().readyState, 1);
    clock.advance(1000);
    assert.equal(lastWs().closedWith, 1000);
    assert.deepEqual(seen.statuses.at(-1), ['reconnecting', 'ws', 0]);
    assert.equal(lastEs().url.searchParams.get('last_event_id'), 'w2');
    lastEs().start('w2');
    assert.equal(sub.transport, 'sse');
    assert.equal(FakeWebSocket.instances.length, 1);
    sub.close();
  });

  test('an SSE trial that fails goes straight back to WebSocket; the next waits twice as long', () => {
    const { sub, seen } = fallBackOnErrors({ sseRetryMs: 10000 });
    clock.advance(10000);
    lastEs().fail(); // SSE still broken (not the broker: WebSocket works)
    assert.deepEqual(seen.statuses.at(-1).slice(0, 3), ['fallback', 'ws', 0]);
    clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    lastWs().start('w1');
    assert.equal(sub.transport, 'ws');
    const trials = FakeEventSource.instances.length;
    clock.advance(19999);
    assert.equal(FakeEventSource.instances.length, trials);
    clock.advance(1);
    assert.equal(FakeEventSource.instances.length, trials + 1);
    sub.close();
  });

  test('a fallback for a buffering proxy stays on WebSocket across reconnects', () => {
    const { sub } = record(['a'], { openTimeoutMs: 4000, sseRetryMs: 1000 });
    clock.advance(4000);
    lastWs().start();
    clock.advance(60000);
    lastWs().drop();
    clock.advance(1000);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(sub.transport, 'ws');
    sub.close();
  });
});

describe('start options, retained state and terminal events', () => {
  test('last and since go with the first connection only; later ones resume', () => {
    const when = new Date('2026-11-25T09:00:00Z');
    for (const [options, expected] of [
      [{ last: 100 }, { last: '100', since: null }],
      [{ since: 3600 }, { last: null, since: '3600' }],
      [{ since: when, last: 5 }, { last: '5', since: '2026-11-25T09:00:00.000Z' }],
    ]) {
      const { sub } = record(['a'], options);
      const url = lastEs().url.searchParams;
      assert.deepEqual({ last: url.get('last'), since: url.get('since') }, expected);
      lastEs().start('p0');
      lastEs().fail();
      clock.advance(1000);
      const again = lastEs().url.searchParams;
      assert.deepEqual([again.get('last'), again.get('since'), again.get('last_event_id')], [null, null, 'p0']);
      sub.close();
    }
    const { sub } = record(['a'], { last: 10, lastEventId: 'L' });
    assert.equal(lastEs().url.searchParams.get('last'), null, 'an id wins over last/since');
    sub.close();
  });

  test('retained events sharing the start id are all delivered, once each', () => {
    const { sub, seen } = record(['jobs/1', 'jobs/2']);
    const es = lastEs();
    es.start('p9');
    es.event('p9', 'jobs/1', { stage: 'graph', progress: 0.6 }, 'progress');
    es.event('p9', 'jobs/1', { stage: 'started' }, 'started');
    es.event('p9', 'jobs/2', { stage: 'rerank', progress: 0.8 }, 'progress');
    es.event('p9', 'jobs/1', { stage: 'graph', progress: 0.6 }, 'progress'); // the same again
    es.event('p10', 'jobs/1', { stage: 'rerank', progress: 0.8 }, 'progress');
    assert.deepEqual(
      seen.events.map((e) => [e.id, e.topic, e.event]),
      [
        ['p9', 'jobs/1', 'progress'],
        ['p9', 'jobs/1', 'started'],
        ['p9', 'jobs/2', 'progress'],
        ['p10', 'jobs/1', 'progress'],
      ],
    );
    assert.equal(sub.lastEventId, 'p10');
    sub.close();
  });

  test('broker.end for every topic: closed with reason ended, no reconnect', () => {
    const { sub, seen } = record(['jobs/1', 'jobs/2']);
    const es = lastEs();
    es.start('p0');
    es.event('p1', 'jobs/1', { results: [] }, 'complete');
    es.notice('broker.end', 'p1', { topic: 'jobs/1' });
    assert.equal(sub.status, 'open', 'one topic of two ended: still open');
    assert.deepEqual(sub.ended, ['jobs/1']);
    es.event('p2', 'jobs/2', { error: 'boom' }, 'job.failed');
    es.notice('broker.end', 'p2', { topic: 'jobs/2' });
    assert.equal(sub.status, 'closed');
    assert.equal(es.closed, true);
    assert.deepEqual(seen.statuses.at(-1), ['closed', 'sse', undefined]);
    assert.deepEqual(seen.notices.filter((n) => n.type === 'broker.end').map((n) => n.data.topic), ['jobs/1', 'jobs/2']);
    es.fail(); // the stream's end, after broker.end: ignored
    clock.advance(60000);
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(clock.pending, 0);
    assert.equal(sub.retry(), false);
  });

  test('the reason of the ended status is "ended", over WebSocket too', () => {
    globalThis.EventSource = undefined;
    const reasons = [];
    const sub = subscribe('http://broker.test', 'jobs/1', { onStatus: (s, d) => reasons.push([s, d.reason]) });
    lastWs().start('p0');
    lastWs().frame({ id: 'p0', topic: 'jobs/1', event: 'complete', data: {} });
    lastWs().frame({ id: 'p0', topic: null, event: 'broker.end', data: { topic: 'jobs/1' } });
    assert.deepEqual(reasons.at(-1), ['closed', 'ended']);
    assert.equal(lastWs().closedWith, 1000);
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(sub.status, 'closed');
  });

  test('a resume answered 204 (topics over, broker.end lost) ends it; a 200 probe does not', async () => {
    const { sub, seen } = record(['jobs/1']);
    lastEs().start('p0');
    lastEs().event('p1', 'jobs/1', { results: [] }, 'complete');
    probeStatus = 200;
    lastEs().fail(); // a network blip: the probe finds a live stream
    assert.equal(sub.status, 'reconnecting');
    await settle();
    assert.equal(probes.length, 1);
    assert.equal(probes[0].url.searchParams.get('last_event_id'), 'p1');
    assert.equal(probes[0].url.searchParams.get('envelope'), '1');
    assert.equal(probes[0].signal.aborted, true, 'the probe hangs up at once');
    assert.equal(sub.status, 'reconnecting');
    clock.advance(1000);
    lastEs().start('p1');

    probeStatus = 204;
    lastEs().fail(); // the stream broke after the final event, before broker.end
    await settle();
    assert.equal(sub.status, 'closed');
    assert.deepEqual(seen.statuses.at(-1), ['closed', 'sse', undefined]);
    assert.deepEqual(sub.ended, ['jobs/1']);
    clock.advance(60000);
    assert.equal(FakeEventSource.instances.length, 2, 'no reconnect after 204');
    assert.equal(clock.pending, 0);
  });

  test('no probe without a resume point; an unreachable broker just reconnects', async () => {
    const { sub } = record(['a'], { transport: 'sse' });
    lastEs().fail(); // failed before broker.start: no id yet
    await settle();
    assert.equal(probes.length, 0);
    clock.advance(1000);
    lastEs().start('p0');
    globalThis.fetch = async () => {
      throw new TypeError('Failed to fetch');
    };
    lastEs().fail();
    await settle();
    assert.equal(sub.status, 'reconnecting');
    sub.close();
  });

  test('maxAttempts: failed after N attempts in a row that never opened; retry() starts over', () => {
    const { sub, seen } = record(['a'], { transport: 'sse', maxAttempts: 3 });
    lastEs().start('p0');
    lastEs().fail(); // an open stream lost: not a failed attempt
    for (const delay of [1000, 2000]) {
      clock.advance(delay);
      lastEs().fail();
      assert.equal(sub.status, 'reconnecting');
    }
    clock.advance(5000);
    lastEs().fail(); // third attempt in a row that did not open
    assert.equal(sub.status, 'failed');
    assert.match(seen.statuses.at(-1)[0], /failed/);
    assert.equal(sub.stats.failures, 3);
    clock.advance(600000);
    assert.equal(FakeEventSource.instances.length, 4, 'no reconnect after failed');
    assert.equal(clock.pending, 0);

    assert.equal(sub.retry(), true);
    assert.deepEqual(seen.statuses.at(-1), ['reconnecting', 'sse', 0]);
    assert.equal(FakeEventSource.instances.length, 5);
    assert.equal(lastEs().url.searchParams.get('last_event_id'), 'p0');
    assert.equal(sub.retry(), false, 'already connecting');
    lastEs().start('p0');
    assert.equal(sub.status, 'open');
    assert.equal(sub.stats.failures, 0);
    lastEs().fail();
    assert.equal(seen.statuses.at(-1)[2], 1000, 'the backoff started over');
    sub.close();
  });

  test('an open timeout counts as a failed attempt', () => {
    const { sub } = record(['a'], { transport: 'sse', maxAttempts: 2, openTimeoutMs: 3000 });
    clock.advance(3000);
    assert.equal(sub.status, 'reconnecting');
    clock.advance(1000 + 3000);
    assert.equal(sub.status, 'failed');
    assert.equal(clock.pending, 0);
    sub.close();
  });

  test('retry() skips a pending backoff wait', () => {
    const { sub } = record(['a'], { transport: 'sse' });
    lastEs().start('p0');
    lastEs().fail();
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(sub.retry(), true);
    assert.equal(FakeEventSource.instances.length, 2);
    lastEs().start('p0');
    clock.advance(60000);
    assert.equal(FakeEventSource.instances.length, 2, 'the skipped wait does not fire later');
    sub.close();
  });

  test('stats count attempts, reconnects and events, and time the last ones', () => {
    const { sub } = record(['a'], { transport: 'sse' });
    assert.equal(sub.stats.lastEventAt, null);
    lastEs().notice('broker.start', 'p0', { position: 'p0', resumed: false, heartbeat_seconds: 2 });
    const before = Date.now();
    lastEs().event('1', 'a', 'x');
    lastEs().fail();
    clock.advance(1000);
    lastEs().start('1');
    lastEs().emit('broker.heartbeat', { id: null, topic: null, event: 'broker.heartbeat', data: {} });
    lastEs().event('2', 'a', 'y');
    const stats = sub.stats;
    assert.deepEqual(
      [stats.attempts, stats.reconnects, stats.failures, stats.events, stats.heartbeats, stats.heartbeatMs, stats.quietMs],
      [2, 1, 0, 2, 1, 2000, 5000],
    );
    assert.ok(stats.lastEventAt >= before && stats.lastFrameAt >= stats.lastEventAt);
    assert.ok(stats.openedAt >= before);
    sub.close();
  });
});

describe('publish()', () => {
  function fakeFetch(status, body) {
    const calls = [];
    globalThis.fetch = async (url, init) => {
      calls.push({ url: String(url), ...init });
      return {
        ok: status < 300,
        status,
        statusText: 'x',
        json: async () => {
          if (body === undefined) throw new SyntaxError('no body');
          return body;
        },
      };
    };
    return calls;
  }

  test('text as text/plain, other values as JSON, event in the query', async () => {
    const calls = fakeFetch(202, { id: '7', topic: 'jobs/42' });
    assert.deepEqual(await publish('http://broker.test/', 'jobs/42', '안녕', { event: 'note' }), { id: '7', topic: 'jobs/42' });
    await publish('', 'a:b/c~d', { stage: 'graph', progress: 0.6 });
    assert.equal(calls[0].url, 'http://broker.test/topics/jobs/42?event=note');
    assert.equal(calls[0].method, 'POST');
    assert.equal(calls[0].headers['Content-Type'], 'text/plain; charset=utf-8');
    assert.equal(calls[0].body, '안녕');
    assert.equal(calls[1].url, 'http://page.test/topics/a:b/c~d');
    assert.equal(calls[1].headers['Content-Type'], 'application/json');
    assert.equal(calls[1].body, '{"stage":"graph","progress":0.6}');
  });

  test('a refusal becomes a BrokerError with status and code', async () => {
    fakeFetch(400, { error: 'bad topic', code: 'bad_topic' });
    await assert.rejects(publish('', 'x', 'y'), (err) => {
      assert.ok(err instanceof BrokerError);
      assert.deepEqual([err.message, err.status, err.code], ['bad topic', 400, 'bad_topic']);
      return true;
    });
    fakeFetch(502, undefined);
    await assert.rejects(publish('', 'x', 'y'), { name: 'BrokerError', status: 502 });
    globalThis.fetch = async () => {
      throw new TypeError('Failed to fetch');
    };
    await assert.rejects(publish('', 'x', 'y'), { name: 'BrokerError', status: 0 });
  });

  test('a base URL with a path prefix keeps it', async () => {
    const calls = fakeFetch(202, { id: '1', topic: 't' });
    await publish('https://example.test/broker', 't', 'x');
    assert.equal(calls[0].url, 'https://example.test/broker/topics/t');
  });
});
