/**
 * broker-client.js: the browser client for broker (one dependency-free ES module).
 *
 *   import { subscribe, publish } from '/client.js';
 *   const sub = subscribe('', ['jobs/42', 'alerts'], {
 *     onEvent: (ev) => console.log(ev.id, ev.topic, ev.event, ev.data),
 *     onStatus: (status, detail) => console.log(status, detail.transport),
 *     onNotice: (notice) => console.warn(notice.type, notice.data),
 *   });
 *   await publish('', 'jobs/42', { stage: 'rerank', progress: 0.8 }, { event: 'progress' });
 *   sub.close();
 *
 * Theory of operation
 * -------------------
 * One Subscription owns at most one live connection at a time: an EventSource on
 * `/events?topic=..&envelope=1[&last_event_id=..]`, or a WebSocket on `/ws?topic=..`.
 * Both deliver the same envelope `{id, topic, event, data}`. The browser's own EventSource
 * reconnection is never used: on any error the EventSource is closed and this module
 * reconnects itself, so the delay (jittered exponential backoff, or the broker's
 * `broker.shutdown` retry_ms) and the resume point (`last_event_id` in the query) are ours.
 *
 * Every connection attempt gets a generation number; callbacks from an older generation are
 * ignored, so a late event from a connection being torn down can never be delivered.
 *
 * Invariants:
 * - `onEvent` never sees the same id twice (a bounded set of recent ids), across reconnects
 *   and across the SSE→WebSocket switch.
 * - `lastEventId` is the newest resume position the broker gave us: the id of the last event,
 *   or the `id` of `broker.start` / `broker.reset` (stream position) and `broker.dropped`
 *   (`resume_from`). Ids are opaque: stored and sent back, never parsed or compared.
 * - A connection counts as open only once `broker.start` (or any frame) arrived.
 * - Retained events (and a closed topic's final event) come right after `broker.start` with
 *   the stream's start position as their id, so several events may share one id. Duplicates
 *   are therefore recognised by (id, topic, type), which is unique for those too.
 * - `broker.end` for every subscribed topic ends the subscription for good: status `closed`
 *   with reason `ended`, no reconnect. So does a resume answered `204 No Content`, which an
 *   EventSource cannot tell from a network error: after an SSE error the client asks once
 *   with fetch (see #probeEnded).
 * - With `maxAttempts`, that many attempts in a row that never opened leave the subscription
 *   `failed`: no more reconnects until `retry()`.
 *
 * Transport choice (`transport: 'auto'`): SSE first; WebSocket when `window.EventSource` is
 * missing, when an SSE stream sends nothing within `openTimeoutMs` (a buffering proxy), or
 * when SSE streams go quiet past the heartbeat window twice in a row (the second one having
 * delivered nothing after its start notice). After several SSE
 * connection errors in a row the next attempt probes WebSocket once: if it opens the client
 * uses it, if not the broker is simply down and the client goes back to SSE.
 *
 * Why the client is on WebSocket decides whether it comes back (`#fallbackReason`): a missing
 * EventSource and a buffering proxy (no first frame, or quiet streams) are facts about the
 * path, so it stays. SSE errors are not: the usual cause is a broker that restarted, and the
 * probe that "worked" was simply the first attempt after it came back. So after an error
 * fallback every later reconnect tries SSE first, and `sseRetryMs` after the WebSocket opened
 * (at a moment with no events for a second, postponed at most ten times) the client switches
 * back on its own. Such an SSE trial that fails before opening goes straight back to
 * WebSocket, and the next timed trial waits twice as long (up to 10 min). Either way the
 * switch is a reconnect with the resume id, so nothing is missed and the seen-set keeps
 * every id to one delivery.
 *
 * Quiet detection needs heartbeats the page can see. SSE comment heartbeats (`:`) are
 * invisible to EventSource and WebSocket pings are invisible to JavaScript, so the window
 * (2.5 × heartbeat seconds) is only armed once a `broker.heartbeat` event has been seen.
 */

export const VERSION = '0.1.0';

/** The values `onStatus` reports. */
export const STATUS = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  FALLBACK: 'fallback',
  FAILED: 'failed',
  CLOSED: 'closed',
});

/** Notices the broker sends as named SSE events (EventSource only shows them to addEventListener). */
export const NOTICE_TYPES = Object.freeze([
  'broker.start',
  'broker.reset',
  'broker.dropped',
  'broker.shutdown',
  'broker.disconnected',
  'broker.end',
  'broker.heartbeat',
]);

const DEFAULT_BACKOFF_MS = Object.freeze([1000, 2000, 5000, 15000]);
const DEFAULT_JITTER = 0.1; // ±10 %
const DEFAULT_HEARTBEAT_SECONDS = 15;
const QUIET_FACTOR = 2.5; // heartbeat window = 2.5 × heartbeat interval
const DEFAULT_OPEN_TIMEOUT_MS = 10000;
const QUIET_STREAKS_BEFORE_FALLBACK = 2;
const SSE_ERRORS_BEFORE_WS_PROBE = 3;
const DEFAULT_SSE_RETRY_MS = 30000; // after an error fallback, try SSE again this long after
const SSE_RETRY_MAX_MS = 600000; // ... doubling after each failed trial, up to this
const SSE_RETRY_QUIET_MS = 1000; // switch back at a moment without events for this long ...
const SSE_RETRY_MAX_POSTPONES = 10; // ... but postpone at most this often
const SEEN_IDS_LIMIT = 10000;

/** An error answer from the broker (`{"error": MESSAGE, "code": CODE}` with a 4xx/5xx status). */
export class BrokerError extends Error {
  /**
   * @param {string} message
   * @param {number} status HTTP status (0 when the request never got an answer)
   * @param {string|null} code the broker's machine code, when it sent one
   */
  constructor(message, status, code = null) {
    super(message);
    this.name = 'BrokerError';
    this.status = status;
    this.code = code;
  }
}

/**
 * Subscribe to one or more topics; the subscription connects at once and keeps itself
 * connected until `close()`.
 *
 * @param {string} baseUrl broker address, e.g. 'http://localhost:8080'; '' means this page's origin
 * @param {string|string[]} topics
 * @param {object} [options]
 * @param {(ev: {id: string, topic: string, event: string|null, data: any, transport: string}) => void} [options.onEvent]
 *   one call per event; `event` is null for untyped events; `data` is a string for text
 *   data and the decoded value for JSON data
 * @param {(status: string, detail: {transport: string, reason?: string, delayMs?: number}) => void} [options.onStatus]
 * @param {(notice: {type: string, id: string|null, data: any, transport: string}) => void} [options.onNotice]
 *   broker.start, broker.reset, broker.dropped, broker.shutdown, broker.end and any other
 *   broker.* notice except heartbeats
 * @param {string} [options.lastEventId] resume after this id
 * @param {number} [options.last] without `lastEventId`: start with the newest `last` events of
 *   the topics (sent on the first connection only; later ones resume from the stream position)
 * @param {number|string|Date} [options.since] without `lastEventId`: start with the events of
 *   the last `since` seconds, or since an RFC 3339 time / Date (first connection only)
 * @param {number} [options.maxAttempts=Infinity] after this many attempts in a row that did not
 *   open, stop with status `failed` until `retry()`
 * @param {'auto'|'sse'|'ws'} [options.transport='auto']
 * @param {number} [options.heartbeatSeconds=15] the broker's heartbeat interval (a
 *   `heartbeat_seconds` in `broker.start` overrides it)
 * @param {number[]} [options.backoff=[1000, 2000, 5000, 15000]] reconnect delays in ms; the
 *   last one repeats
 * @param {number} [options.jitter=0.1] each delay is multiplied by 1 ± jitter
 * @param {number} [options.openTimeoutMs=10000] how long a connection may take to deliver
 *   its first frame
 * @param {number} [options.sseRetryMs=30000] after falling back to WebSocket because of SSE
 *   errors, how long to stay there before trying SSE again (later reconnects try it anyway)
 * @param {string[]} [options.eventTypes=[]] named SSE event types to listen for as well; only
 *   needed against a broker that writes `event:` lines for user events in envelope mode
 * @returns {Subscription}
 */
export function subscribe(baseUrl, topics, options = {}) {
  return new Subscription(baseUrl, topics, options);
}

/**
 * Publish one event with `POST /topics/{topic}[?event=TYPE]`.
 *
 * A string is sent as UTF-8 text (`text/plain`); any other value is sent as JSON.
 *
 * @param {string} baseUrl broker address; '' means this page's origin
 * @param {string} topic
 * @param {any} data
 * @param {{event?: string, signal?: AbortSignal}} [options]
 * @returns {Promise<{id: string, topic: string}>} the broker's answer
 * @throws {BrokerError} when the broker refuses the event or cannot be reached
 */
export async function publish(baseUrl, topic, data, { event, signal } = {}) {
  const url = brokerUrl(baseUrl, `topics/${encodeTopic(topic)}`, event ? { event } : {});
  const isText = typeof data === 'string';
  let response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': isText ? 'text/plain; charset=utf-8' : 'application/json' },
      body: isText ? data : JSON.stringify(data),
      signal,
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new BrokerError(`cannot reach the broker: ${err && err.message}`, 0, null);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: keep body null and report the status below
  }
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    throw new BrokerError(message, response.status, (body && body.code) || null);
  }
  return body;
}

/** A live subscription; see `subscribe()`. */
export class Subscription {
  #base;
  #topics;
  #opts;
  #status = null;
  #transport;
  #lastEventId;
  #seen = new Set();
  #gen = 0; // generation of the current connection; bumped on every teardown
  #conn = null; // { close() } of the current connection
  #opened = false; // the current connection delivered its first frame
  #attempt = 0; // failed attempts since the last open, indexes the backoff
  #failures = 0; // attempts in a row that never opened, against maxAttempts
  #ended = new Set(); // topics the broker closed (broker.end)
  #probe = null; // AbortController of a running "is it over?" fetch (see #probeEnded)
  #stats = { attempts: 0, opens: 0, events: 0, heartbeats: 0, lastEventAt: null, lastFrameAt: null, openedAt: null };
  #sseErrors = 0; // SSE attempts in a row that failed before opening
  #quietStreak = 0; // SSE connections in a row that ended by going quiet
  #probing = false; // trying WebSocket once to tell "SSE blocked" from "broker down"
  #fallbackReason = null; // why on WebSocket: 'no EventSource', 'buffering' (both stay), 'errors'
  #sseTrial = false; // this SSE attempt is a try to come back from an error fallback
  #sseRetryMs; // delay of the next timed SSE trial (doubles after each failed one)
  #sseRetryEvents = 0; // events delivered when the trial timer was (re)armed
  #sseRetryPostponed = 0;
  #heartbeatsSeen = false;
  #heartbeatMs;
  #timers = { open: null, quiet: null, reconnect: null, sseRetry: null };
  #onOnline = () => this.#reconnectNow('online');

  constructor(baseUrl, topics, options) {
    this.#base = baseUrl;
    this.#topics = (typeof topics === 'string' ? [topics] : [...topics]).filter(Boolean);
    if (this.#topics.length === 0) throw new TypeError('subscribe: at least one topic is needed');
    const mode = options.transport || 'auto';
    if (!['auto', 'sse', 'ws'].includes(mode)) throw new TypeError(`subscribe: unknown transport ${mode}`);
    this.#opts = {
      onEvent: options.onEvent || (() => {}),
      onStatus: options.onStatus || (() => {}),
      onNotice: options.onNotice || (() => {}),
      mode,
      backoff: options.backoff && options.backoff.length ? [...options.backoff] : DEFAULT_BACKOFF_MS,
      jitter: options.jitter ?? DEFAULT_JITTER,
      openTimeoutMs: options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS,
      eventTypes: options.eventTypes || [],
      last: options.last ?? null,
      since: options.since ?? null,
      maxAttempts: options.maxAttempts ?? Infinity,
      sseRetryMs: options.sseRetryMs ?? DEFAULT_SSE_RETRY_MS,
    };
    this.#sseRetryMs = this.#opts.sseRetryMs;
    if (!(this.#opts.maxAttempts >= 1)) throw new TypeError('subscribe: maxAttempts must be at least 1');
    this.#heartbeatMs = 1000 * (options.heartbeatSeconds ?? DEFAULT_HEARTBEAT_SECONDS);
    this.#lastEventId = options.lastEventId || null;

    const hasSse = typeof globalThis.EventSource === 'function';
    if (mode === 'sse' && !hasSse) throw new TypeError('subscribe: this browser has no EventSource');
    if (mode !== 'sse' && typeof globalThis.WebSocket !== 'function' && !hasSse) {
      throw new TypeError('subscribe: this browser has neither EventSource nor WebSocket');
    }
    this.#transport = mode === 'ws' || (mode === 'auto' && !hasSse) ? 'ws' : 'sse';
    if (mode === 'auto' && !hasSse) this.#fallbackReason = 'no EventSource';
    globalThis.addEventListener?.('online', this.#onOnline);
    // The first status is reported from a microtask, so that `onStatus` can already use the
    // object `subscribe()` returned.
    const first = mode === 'auto' && this.#transport === 'ws' ? STATUS.FALLBACK : STATUS.CONNECTING;
    const detail = { transport: this.#transport, reason: first === STATUS.FALLBACK ? 'no EventSource' : 'start' };
    this.#status = first;
    queueMicrotask(() => {
      if (this.#status === first) safeCall(this.#opts.onStatus, first, detail);
    });
    this.#connect();
  }

  /** 'connecting' | 'open' | 'reconnecting' | 'fallback' | 'failed' | 'closed' */
  get status() {
    return this.#status;
  }

  /** 'sse' or 'ws': the transport of the current (or next) connection. */
  get transport() {
    return this.#transport;
  }

  /** The id this subscription would resume from (null before the first frame). */
  get lastEventId() {
    return this.#lastEventId;
  }

  get topics() {
    return [...this.#topics];
  }

  /** The topics the broker closed for good (`broker.end`), in the order it said so. */
  get ended() {
    return [...this.#ended];
  }

  /**
   * Connection statistics for a status panel (a fresh object on each read; times are
   * `Date.now()` milliseconds):
   * `attempts` connections tried, `reconnects` streams opened after the first one,
   * `failures` attempts in a row that did not open, `events` events delivered,
   * `heartbeats` visible heartbeats (`broker.heartbeat`) received, `lastEventAt` when the
   * last event was delivered, `lastFrameAt` when anything (an event, a notice, a visible
   * heartbeat) last arrived, `openedAt` when the current stream opened,
   * `heartbeatMs` the broker's heartbeat interval, `quietMs` the silence after which a stream
   * counts as dead (once visible heartbeats were seen).
   */
  get stats() {
    const s = this.#stats;
    return {
      attempts: s.attempts,
      reconnects: Math.max(0, s.opens - 1),
      failures: this.#failures,
      events: s.events,
      heartbeats: s.heartbeats,
      lastEventAt: s.lastEventAt,
      lastFrameAt: s.lastFrameAt,
      openedAt: s.openedAt,
      heartbeatMs: this.#heartbeatMs,
      quietMs: QUIET_FACTOR * this.#heartbeatMs,
    };
  }

  /** Close the connection and stop reconnecting. Idempotent; no callback fires afterwards. */
  close() {
    this.#finish('closed by the page');
  }

  /**
   * Reconnect now: after `failed` (the manual retry button), or to skip a pending backoff
   * wait. The failure count and the backoff start over.
   *
   * @returns {boolean} whether a connection attempt was started (false while connected or
   *   connecting, and after `close()` or the end of every topic)
   */
  retry() {
    if (this.#status === STATUS.CLOSED || this.#conn !== null) return false;
    clearTimeout(this.#timers.reconnect);
    this.#failures = 0;
    this.#attempt = 0;
    this.#setStatus(STATUS.RECONNECTING, 'retry', 0);
    if (this.#status === STATUS.CLOSED) return false; // closed from the onStatus callback
    this.#connect();
    return true;
  }

  #finish(reason) {
    if (this.#status === STATUS.CLOSED) return;
    this.#probe?.abort();
    this.#teardown();
    clearTimeout(this.#timers.reconnect);
    globalThis.removeEventListener?.('online', this.#onOnline);
    this.#setStatus(STATUS.CLOSED, reason);
  }

  // -- connections -------------------------------------------------------------------------

  #connect() {
    if (this.#status === STATUS.CLOSED) return;
    if (this.#transport === 'ws' && this.#fallbackReason === 'errors' && !this.#probing) {
      this.#transport = 'sse'; // SSE failed on errors, not on the path: see if it works again
      this.#sseTrial = true;
    }
    const gen = ++this.#gen;
    this.#opened = false;
    this.#stats.attempts += 1;
    this.#conn = this.#transport === 'sse' ? this.#openSse(gen) : this.#openWs(gen);
    this.#timers.open = setTimeout(() => this.#onOpenTimeout(gen), this.#opts.openTimeoutMs);
  }

  #query() {
    const params = { topic: this.#topics };
    if (this.#lastEventId) {
      params.last_event_id = this.#lastEventId;
    } else {
      // Only until the broker gave a position: after that every reconnect resumes from it.
      const { last, since } = this.#opts;
      if (last !== null) params.last = String(last);
      if (since !== null) params.since = since instanceof Date ? since.toISOString() : String(since);
    }
    return params;
  }

  #openSse(gen) {
    const url = brokerUrl(this.#base, 'events', { ...this.#query(), envelope: '1' });
    const es = new EventSource(url);
    const handler = (type) => (msg) => {
      this.#onFrame(gen, type, parseSseData(type, msg.data, msg.lastEventId));
    };
    es.onmessage = handler('message');
    for (const type of new Set([...NOTICE_TYPES, ...this.#opts.eventTypes])) {
      es.addEventListener(type, handler(type));
    }
    // Never let the browser reconnect on its own: it would not use our backoff or resume point.
    es.onerror = () => {
      es.close();
      if (gen !== this.#gen) return;
      this.#onLost(gen, 'stream error');
      if (this.#lastEventId) this.#probeEnded(this.#lastEventId);
    };
    return { close: () => es.close() };
  }

  /**
   * EventSource reports `204 No Content` (every topic is over: stop) as a plain error, and a
   * stream can break between a topic's final event and its `broker.end`. So after an SSE
   * error, while the reconnect waits, ask once with fetch what a resume from `resumeFrom`
   * gets: 204 ends the subscription like `broker.end` would.
   */
  async #probeEnded(resumeFrom) {
    if (typeof globalThis.fetch !== 'function' || typeof globalThis.AbortController !== 'function') return;
    this.#probe?.abort();
    const probe = new AbortController();
    this.#probe = probe;
    const url = brokerUrl(this.#base, 'events', { ...this.#query(), envelope: '1' });
    let status = 0;
    try {
      const response = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: probe.signal });
      status = response.status;
    } catch {
      return; // unreachable, or aborted: the reconnect decides
    } finally {
      probe.abort(); // a 200 is a live stream: hang up at once
      if (this.#probe === probe) this.#probe = null;
    }
    if (status === 204 && this.#status !== STATUS.CLOSED && this.#lastEventId === resumeFrom) {
      for (const topic of this.#topics) this.#ended.add(topic);
      this.#finish('ended');
    }
  }

  #openWs(gen) {
    const url = brokerUrl(this.#base, 'ws', this.#query());
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    ws.onmessage = (msg) => {
      if (typeof msg.data !== 'string') return; // JSON frames only; we never ask for msgpack
      let env;
      try {
        env = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (env && typeof env === 'object') this.#onFrame(gen, env.event || 'message', env);
    };
    ws.onclose = (e) => this.#onLost(gen, `socket closed (${e.code})`);
    return {
      close: () => {
        ws.onclose = null;
        ws.onmessage = null;
        if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
      },
    };
  }

  #teardown() {
    this.#gen += 1;
    clearTimeout(this.#timers.open);
    clearTimeout(this.#timers.quiet);
    clearTimeout(this.#timers.sseRetry);
    if (this.#conn) this.#conn.close();
    this.#conn = null;
  }

  // -- frames ------------------------------------------------------------------------------

  #onFrame(gen, type, env) {
    if (gen !== this.#gen) return;
    this.#stats.lastFrameAt = Date.now();
    if (!this.#opened) this.#markOpen();
    this.#armQuietTimer(gen);
    const kind = env.event || (type === 'message' ? null : type);
    // Anything past the start notice proves this stream flows: "quiet repeatedly" starts over.
    if (kind !== 'broker.start' && kind !== 'broker.reset') this.#quietStreak = 0;
    if (kind && kind.startsWith('broker.')) this.#onNotice(gen, kind, env);
    else this.#onUserEvent({ ...env, event: kind });
  }

  #markOpen() {
    this.#opened = true;
    clearTimeout(this.#timers.open);
    this.#attempt = 0;
    this.#failures = 0;
    this.#stats.opens += 1;
    this.#stats.openedAt = Date.now();
    let reason = 'stream started';
    if (this.#transport === 'sse') {
      this.#sseErrors = 0;
      if (this.#sseTrial) reason = 'back on SSE';
      this.#sseTrial = false;
      this.#fallbackReason = null;
      this.#sseRetryMs = this.#opts.sseRetryMs;
    } else {
      if (this.#probing) this.#fallbackReason = 'errors';
      this.#probing = false;
      if (this.#fallbackReason === 'errors') this.#armSseRetry(this.#gen, this.#sseRetryMs);
    }
    this.#setStatus(STATUS.OPEN, reason);
  }

  #armSseRetry(gen, delayMs) {
    clearTimeout(this.#timers.sseRetry);
    this.#sseRetryEvents = this.#stats.events;
    this.#timers.sseRetry = setTimeout(() => this.#onSseRetry(gen), delayMs);
  }

  /** Time to see whether SSE works again: at a quiet moment, reconnect (resuming) over SSE. */
  #onSseRetry(gen) {
    if (gen !== this.#gen) return;
    if (this.#stats.events !== this.#sseRetryEvents && this.#sseRetryPostponed < SSE_RETRY_MAX_POSTPONES) {
      this.#sseRetryPostponed += 1; // events are flowing: wait for a pause
      this.#armSseRetry(gen, SSE_RETRY_QUIET_MS);
      return;
    }
    this.#sseRetryPostponed = 0;
    this.#teardown();
    this.#setStatus(STATUS.RECONNECTING, 'trying SSE again', 0);
    if (this.#status === STATUS.CLOSED) return; // closed from the onStatus callback
    this.#connect();
  }

  #onUserEvent(env) {
    const id = env.id ?? null;
    const topic = env.topic ?? null;
    if (id !== null) {
      // Retained events share the start position as their id: (id, topic, type) tells them apart.
      const key = `${id}\u0000${topic ?? ''}\u0000${env.event ?? ''}`;
      if (this.#seen.has(key)) return;
      this.#seen.add(key);
      if (this.#seen.size > SEEN_IDS_LIMIT) this.#seen.delete(this.#seen.values().next().value);
      this.#lastEventId = id;
    }
    this.#stats.events += 1;
    this.#stats.lastEventAt = Date.now();
    const event = { id, topic, event: env.event, data: env.data, transport: this.#transport };
    safeCall(this.#opts.onEvent, event);
  }

  #onNotice(gen, type, env) {
    const data = env.data ?? null;
    if (type === 'broker.heartbeat') {
      this.#stats.heartbeats += 1;
      if (!this.#heartbeatsSeen) {
        this.#heartbeatsSeen = true;
        this.#armQuietTimer(gen);
      }
      return;
    }
    if (['broker.start', 'broker.reset', 'broker.dropped'].includes(type) && env.id) {
      this.#lastEventId = env.id; // the position to resume from, even before any event
    }
    if (type === 'broker.start' && data && data.heartbeat_seconds > 0) {
      this.#heartbeatMs = 1000 * data.heartbeat_seconds;
    }
    if (type === 'broker.end' && data && typeof data.topic === 'string') this.#ended.add(data.topic);
    safeCall(this.#opts.onNotice, { type, id: env.id ?? null, data, transport: this.#transport });
    if (gen !== this.#gen) return; // closed or replaced from the onNotice callback
    if (type === 'broker.end' && this.#topics.every((t) => this.#ended.has(t))) {
      // Every topic is closed for good: a reconnect would only get 204 No Content.
      this.#finish('ended');
      return;
    }
    if (type === 'broker.shutdown' || type === 'broker.disconnected') {
      // An operator's disconnect (admin API) says how long to stay away, like a shutdown.
      const retryMs = Number(data && data.retry_ms);
      this.#teardown();
      this.#quietStreak = 0;
      const why = type === 'broker.shutdown' ? 'broker shutting down' : 'disconnected by the operator';
      this.#scheduleReconnect(Number.isFinite(retryMs) && retryMs >= 0 ? retryMs : null, why);
    }
  }

  // -- failures and reconnection -----------------------------------------------------------

  #armQuietTimer(gen) {
    clearTimeout(this.#timers.quiet);
    if (!this.#heartbeatsSeen) return;
    this.#timers.quiet = setTimeout(() => this.#onQuiet(gen), QUIET_FACTOR * this.#heartbeatMs);
  }

  #onQuiet(gen) {
    if (gen !== this.#gen) return;
    this.#teardown();
    if (this.#transport === 'sse' && this.#opts.mode === 'auto') {
      this.#quietStreak += 1;
      if (this.#quietStreak >= QUIET_STREAKS_BEFORE_FALLBACK) {
        this.#switchToWs('SSE stream went quiet repeatedly');
        return;
      }
    }
    this.#scheduleReconnect(null, 'stream went quiet');
  }

  #onOpenTimeout(gen) {
    if (gen !== this.#gen) return;
    this.#teardown();
    this.#sseTrial = false;
    if (this.#attemptFailed('stream did not start')) return;
    if (this.#transport === 'sse' && this.#opts.mode === 'auto') {
      this.#switchToWs('SSE stream did not start'); // a buffering proxy: stay on WebSocket
      return;
    }
    if (this.#probing) {
      this.#probing = false;
      this.#transport = 'sse';
    }
    this.#scheduleReconnect(null, 'stream did not start');
  }

  #onLost(gen, reason) {
    if (gen !== this.#gen) return;
    const wasOpen = this.#opened;
    this.#teardown();
    this.#quietStreak = 0;
    const trial = this.#sseTrial;
    this.#sseTrial = false;
    if (!wasOpen && this.#attemptFailed(reason)) return;
    if (!wasOpen && trial) {
      // SSE still fails where WebSocket worked: back to WebSocket now, try SSE later.
      this.#sseRetryMs = Math.min(2 * this.#sseRetryMs, SSE_RETRY_MAX_MS);
      this.#probing = true; // if WebSocket fails too, the broker is down: the usual loop
      this.#transport = 'ws';
      this.#scheduleReconnect(0, `${reason}; back to WebSocket`, STATUS.FALLBACK);
      return;
    }
    if (!wasOpen && this.#transport === 'sse' && this.#opts.mode === 'auto') {
      this.#sseErrors += 1;
      if (this.#sseErrors >= SSE_ERRORS_BEFORE_WS_PROBE) {
        this.#sseErrors = 0;
        this.#probing = true;
        this.#switchToWs(`${reason}; trying WebSocket`);
        return;
      }
    }
    if (!wasOpen && this.#probing) {
      // WebSocket failed as well: the broker is down, not SSE blocked. Back to SSE.
      this.#probing = false;
      this.#transport = 'sse';
    }
    this.#scheduleReconnect(null, reason);
  }

  /** Count an attempt that never opened; past `maxAttempts`, stop with status `failed`. */
  #attemptFailed(reason) {
    this.#failures += 1;
    if (this.#failures < this.#opts.maxAttempts) return false;
    clearTimeout(this.#timers.reconnect);
    this.#probing = false;
    this.#sseTrial = false;
    if (this.#opts.mode === 'auto' && this.#fallbackReason !== 'no EventSource' && this.#fallbackReason !== 'buffering') {
      this.#transport = 'sse';
    }
    this.#setStatus(STATUS.FAILED, `${reason}; gave up after ${this.#failures} attempts`);
    return true;
  }

  #switchToWs(reason) {
    this.#transport = 'ws';
    if (!this.#probing) this.#fallbackReason = 'buffering';
    this.#scheduleReconnect(this.#probing ? null : 0, reason, STATUS.FALLBACK);
  }

  #scheduleReconnect(delayMs, reason, status = STATUS.RECONNECTING) {
    clearTimeout(this.#timers.reconnect);
    if (delayMs === null) {
      const delays = this.#opts.backoff;
      const base = delays[Math.min(this.#attempt, delays.length - 1)];
      delayMs = Math.round(base * (1 + this.#opts.jitter * (2 * Math.random() - 1)));
      this.#attempt += 1;
    }
    this.#setStatus(status, reason, delayMs);
    if (this.#status === STATUS.CLOSED) return; // closed from the onStatus callback
    this.#timers.reconnect = setTimeout(() => this.#connect(), delayMs);
  }

  #reconnectNow(reason) {
    if (this.#status !== STATUS.RECONNECTING) return;
    clearTimeout(this.#timers.reconnect);
    this.#setStatus(STATUS.RECONNECTING, reason, 0);
    this.#connect();
  }

  #setStatus(status, reason, delayMs) {
    const changed = status !== this.#status;
    this.#status = status;
    if (changed || delayMs !== undefined) {
      const detail = { transport: this.#transport, reason };
      if (delayMs !== undefined) detail.delayMs = delayMs;
      safeCall(this.#opts.onStatus, status, detail);
    }
  }
}

// -- helpers ---------------------------------------------------------------------------------

/**
 * Decode one SSE `data` into an envelope. With `envelope=1` user events are always envelopes;
 * a notice may be an envelope or just its data object, so both are accepted.
 */
function parseSseData(type, raw, sseId) {
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  if (value && typeof value === 'object' && !Array.isArray(value) && 'id' in value && 'event' in value && 'data' in value) {
    return { id: value.id ?? (sseId || null), topic: value.topic ?? null, event: value.event ?? null, data: value.data };
  }
  return { id: sseId || null, topic: null, event: type === 'message' ? null : type, data: value };
}

/** Resolve `path` against the broker's base URL ('' = this page's origin) with query params. */
function brokerUrl(baseUrl, path, params) {
  const base = new URL(baseUrl || '/', globalThis.location ? globalThis.location.href : undefined);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  base.search = '';
  base.hash = '';
  const url = new URL(path, base);
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, v);
  }
  return url;
}

/** Percent-encode each topic segment, keeping the `/` separators and `:` readable. */
function encodeTopic(topic) {
  if (typeof topic !== 'string' || topic === '') throw new TypeError('publish: topic must be a non-empty string');
  return topic
    .split('/')
    .map((segment) => encodeURIComponent(segment).replace(/%3A/gi, ':'))
    .join('/');
}

/** Call an application callback; an exception in it is reported, never breaks the client. */
function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
    else setTimeout(() => { throw err; });
  }
}
