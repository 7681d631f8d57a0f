// Drives Chromium for tests/browser/test_browser.py: a small JSON-lines RPC over stdio.
//
// Why an RPC and not one scenario per process: scenarios interleave browser steps with broker
// steps that only Python can do (restarting the broker mid-stream), and one Chromium serves the
// whole session. Each stdin line is one command `{"id": N, "op": ..., ...}`; each stdout line is
// `{"id": N, "ok": true, "result": ...}` or `{"id": N, "ok": false, "error": "..."}`. The first
// stdout line is `{"ready": true, "version": ...}`. EOF on stdin closes the browser and exits.
//
// Ops: newPage {noEventSource?} -> page; goto {page, url}; evaluate {page, expression};
// waitFor {page, expression, timeoutMs} -> the truthy value; fill {page, selector, value};
// check {page, selector, checked}; click {page, selector}; screenshot {page, path, selector?};
// logs {page}; closePage {page}.
//
// Usage: node drive.mjs [chromium-path]

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.argv[2] || process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
const pages = new Map(); // id -> { context, page, logs }
let nextPage = 1;

function pageOf(cmd) {
  const entry = pages.get(cmd.page);
  if (!entry) throw new Error(`no page ${cmd.page}`);
  return entry;
}

const ops = {
  async newPage({ noEventSource = false, width = 1280, height = 900 }) {
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => logs.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    if (noEventSource) await page.addInitScript(() => delete window.EventSource);
    const id = nextPage++;
    pages.set(id, { context, page, logs });
    return id;
  },
  async goto(cmd) {
    const response = await pageOf(cmd).page.goto(cmd.url, { waitUntil: 'load' });
    return response ? response.status() : null;
  },
  async evaluate(cmd) {
    return pageOf(cmd).page.evaluate(cmd.expression);
  },
  async waitFor(cmd) {
    const { page } = pageOf(cmd);
    let handle;
    try {
      // A predicate that throws (the page's module has not run yet) is simply not true yet.
      const guarded = `(() => { try { return (${cmd.expression}); } catch (e) { return false; } })()`;
      handle = await page.waitForFunction(guarded, null, { timeout: cmd.timeoutMs ?? 10000, polling: 50 });
    } catch (err) {
      err.message += `\n--- page state ---\n${await describe(page)}`;
      throw err;
    }
    const value = await handle.jsonValue();
    await handle.dispose();
    return value;
  },
  async fill(cmd) {
    await pageOf(cmd).page.fill(cmd.selector, cmd.value);
  },
  async check(cmd) {
    await pageOf(cmd).page.setChecked(cmd.selector, cmd.checked ?? true);
  },
  async click(cmd) {
    await pageOf(cmd).page.click(cmd.selector);
  },
  async screenshot(cmd) {
    const { page } = pageOf(cmd);
    const target = cmd.selector ? page.locator(cmd.selector) : page;
    const buffer = await target.screenshot({ path: cmd.path, animations: 'disabled' });
    return buffer.length;
  },
  async logs(cmd) {
    return pageOf(cmd).logs;
  },
  async closePage(cmd) {
    const entry = pages.get(cmd.page);
    pages.delete(cmd.page);
    if (entry) await entry.context.close();
  },
};

/** What the demo page saw, for failure messages. */
async function describe(page) {
  try {
    return await page.evaluate(() => {
      const demo = window.brokerDemo;
      if (!demo) return 'no window.brokerDemo';
      const tail = (list) => list.slice(-8);
      return JSON.stringify(
        { status: demo.status, transport: demo.transport, events: demo.events.length,
          lastEvents: tail(demo.events), notices: tail(demo.notices), statuses: tail(demo.statuses) },
        null, 1);
    });
  } catch (err) {
    return `(cannot read the page: ${err.message})`;
  }
}

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

reply({ ready: true, version: browser.version() });

// Commands run one at a time, in order: the Python side waits for each answer anyway.
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    reply({ id: cmd.id, ok: true, result: (await op(cmd)) ?? null });
  } catch (err) {
    const logs = cmd && pages.get(cmd.page) ? pages.get(cmd.page).logs.slice(-30) : [];
    reply({ id: cmd && cmd.id, ok: false, error: String(err && err.message ? err.message : err), logs });
  }
}
await browser.close();
