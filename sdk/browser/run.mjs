// Browser tests of the SDK: Debian's Chromium (playwright-core, never a downloaded
// browser) against a real `sightflow serve` on a free loopback port, and a small test
// site served here that plants a rage burst, a dead click, an error click, an SPA
// navigation and a form with secrets. Every assertion goes through what the server
// kept: `/api/v1/query`, the replay endpoint, its data directory and its log.
//
//   SIGHTFLOW_BIN=target/debug/sightflow node --test sdk/browser/run.mjs
//
// Screenshots go to target/screenshots/ (SCREENSHOTS overrides).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, SHOTS, startServer } from '../../tests/browser/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// What the visitor types: none of it may reach anything the server keeps.
const SECRETS = {
  password: 'Hunter2-SECRET-pw',
  email: 'secret.person@example.com',
  card: '4111 1111 1111 1111',
  note: 'XYZZY private note about my diagnosis',
};
// Text under .sf-mask, an element under .sf-block, and a URL parameter: also private.
const HIDDEN = ['Dana Secret', '9988-7766', 'Blocked widget 5544', 'abc123'];

let server;
let site;
let browser;

// ---------------------------------------------------------------------------------
// The server

const sql = (query) => server.sql(query);

/** Polls `probe` (up to `ms`) until it returns something truthy; fails with `what`. */
async function until(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (last session seen: ${JSON.stringify(lastSession)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

// ---------------------------------------------------------------------------------
// The test site, and a proxy in front of the server's API that can fail on purpose

function startSite() {
  const faults = []; // statuses the proxy answers with instead of forwarding, in order
  const seen = []; // every track request through the proxy: {batch, status, mode}
  const srv = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    try {
      if (url.pathname.startsWith('/proxy/')) {
        const body = await new Promise((resolve) => {
          const parts = [];
          req.on('data', (c) => parts.push(c));
          req.on('end', () => resolve(Buffer.concat(parts)));
        });
        const target = `${server.url}${url.pathname.slice('/proxy'.length)}${url.search}`;
        const track = url.pathname.endsWith('/api/v1/track');
        if (track && faults.length > 0) {
          const status = faults.shift();
          seen.push({ batch: url.searchParams.get('batch_id'), status, mode: req.headers['sec-fetch-mode'] });
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: `the test proxy answers ${status}` }));
          return;
        }
        const r = await fetch(target, {
          method: req.method,
          headers: { 'content-type': req.headers['content-type'] ?? 'text/plain' },
          body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
        });
        if (track) seen.push({ batch: url.searchParams.get('batch_id'), status: r.status, mode: req.headers['sec-fetch-mode'] });
        const out = Buffer.from(await r.arrayBuffer());
        res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/octet-stream' });
        res.end(out);
        return;
      }
      let file;
      if (url.pathname.startsWith('/shop')) file = path.join(here, 'site/shop.html');
      else if (url.pathname === '/replay') file = path.join(here, 'site/replay.html');
      else if (url.pathname.startsWith('/node_modules/@rrweb/replay/dist/')) {
        file = path.join(here, '..', path.normalize(url.pathname).replace(/^\/+/, ''));
        if (!file.startsWith(path.join(here, '../node_modules/@rrweb/replay/dist/'))) file = undefined;
      }
      if (!file || !fs.existsSync(file)) {
        res.writeHead(404);
        res.end('not found');
        return;
      }
      const type = file.endsWith('.html') ? 'text/html' : file.endsWith('.css') ? 'text/css' : 'text/javascript';
      res.writeHead(200, { 'content-type': `${type}; charset=utf-8` });
      res.end(fs.readFileSync(file));
    } catch (e) {
      res.writeHead(502);
      res.end(String(e));
    }
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => resolve({ srv, url: `http://127.0.0.1:${srv.address().port}`, faults, seen }));
  });
}

// ---------------------------------------------------------------------------------
// Pages

async function open(options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const opts = { projectKey: 'demo', host: server.url, batchIntervalMs: 1000, ...options };
  await page.goto(`${site.url}/shop/home#${encodeURIComponent(JSON.stringify(opts))}`);
  // The stub queue has been replayed into the real SDK.
  await page.waitForFunction(() => typeof window.sightflow?.stats === 'function', null, { timeout: 15_000 });
  await page.waitForTimeout(300);
  const device = await page.evaluate(() => localStorage.getItem('sf_device'));
  assert.ok(device, 'the SDK keeps a device id');
  return { ctx, page, device, errors };
}

async function clickAt(page, selector, dx = 0, dy = 0) {
  const b = await page.locator(selector).boundingBox();
  await page.mouse.click(b.x + b.width / 2 + dx, b.y + b.height / 2 + dy);
}

let lastSession;
async function sessionOf(device) {
  const rows = await sql(`select * from sessions where device_id = '${device}'`);
  lastSession = rows;
  return rows.length === 1 ? rows[0] : undefined;
}

// ---------------------------------------------------------------------------------

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  server = await startServer({ config: '[projects.demo]\nallowed_origins = ["http://127.0.0.1:*"]\n', prefix: 'sightflow-sdk-' });
  site = await startSite();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
  });
});

after(async () => {
  await browser?.close();
  site?.srv.close();
  server?.stop();
});

let visited; // the first test's session, replayed by the last

test('a visit becomes a session with its page views, signals, vitals and user', async () => {
  const { ctx, page, device } = await open();
  // A rage burst on the banner (not interactive), four clicks in a second.
  for (let i = 0; i < 4; i++) {
    await clickAt(page, '#banner', i * 3, 0);
    await page.waitForTimeout(120);
  }
  await page.waitForTimeout(3000);
  // A dead click: nothing reacts for 2.5 s.
  await clickAt(page, '#nothing');
  await page.waitForTimeout(3000);
  // An error click: the handler throws.
  await clickAt(page, '#broken');
  await page.waitForTimeout(1500);
  // The form, typed key by key.
  await page.locator('#email').pressSequentially(SECRETS.email, { delay: 5 });
  await page.locator('#password').pressSequentially(SECRETS.password, { delay: 5 });
  await page.locator('#card').pressSequentially(SECRETS.card, { delay: 5 });
  await page.locator('#note').pressSequentially(SECRETS.note, { delay: 5 });
  await page.evaluate(() => window.sightflow.identify('user-42', { plan: 'pro' }));
  await page.screenshot({ path: path.join(SHOTS, 'sdk-shop.png'), fullPage: false });
  // An SPA navigation (pushState, with a token in its query).
  await page.locator('#spa').click();
  await page.waitForTimeout(500);
  await page.evaluate(() => window.sightflow.flush());

  const s = await until('the session with its signals and user', async () => {
    const s = await sessionOf(device);
    return s && s.user_id === 'user-42' && s.page_views >= 2 && s.rage_clicks >= 1 && s.dead_clicks >= 1 && s.error_clicks >= 1
      ? s
      : undefined;
  });
  assert.match(s.browser, /Chrome/, 'the user agent of the Meta the SDK records');
  const pages = await sql(
    `select url, lcp_ms, fcp_ms, ttfb_ms from page_views where device_id = '${device}' order by ts`,
  );
  assert.deepEqual(
    pages.map((p) => new URL(p.url).pathname),
    ['/shop/home', '/shop/cart'],
    'the load and the SPA navigation',
  );
  await until('web vitals of the first page view', async () => {
    const [first] = await sql(`select lcp_ms, fcp_ms, ttfb_ms from page_views where device_id = '${device}' order by ts limit 1`);
    return first.ttfb_ms !== null && first.fcp_ms !== null && first.lcp_ms !== null;
  });
  const rage = await sql(`select clicks, url from rage_clicks where session_id = '${s.session_id}'`);
  assert.equal(rage.length, 1);
  assert.ok(rage[0].clicks >= 4 && rage[0].url.endsWith('/shop/home'), JSON.stringify(rage));
  const dead = await sql(`select selector from dead_clicks where session_id = '${s.session_id}'`);
  assert.ok(dead.some((d) => d.selector.includes('#nothing')), JSON.stringify(dead));
  const errs = await sql(`select message from error_clicks where session_id = '${s.session_id}'`);
  assert.ok(errs.some((e) => e.message.includes('brokenHandler')), JSON.stringify(errs));
  visited = s;
  await ctx.close();
});

test('no typed secret, masked text or scrubbed parameter is kept anywhere', async () => {
  assert.ok(visited, 'the first test ran');
  const needles = [...Object.values(SECRETS), SECRETS.card.replaceAll(' ', ''), ...HIDDEN];
  const found = [];
  const scan = (where, text) => {
    for (const n of needles) if (text.includes(n)) found.push(`${n} in ${where}`);
  };
  // Every file the server keeps: log segments, replay chunks (gzip), the metadata store.
  const walk = (dir) =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
      const p = path.join(dir, e.name);
      return e.isDirectory() ? walk(p) : [p];
    });
  let files = 0;
  for (const file of walk(server.data)) {
    const raw = fs.readFileSync(file);
    files++;
    scan(file, raw.toString('latin1'));
    if (raw[0] === 0x1f && raw[1] === 0x8b) scan(`${file} (gunzipped)`, zlib.gunzipSync(raw).toString('utf8'));
  }
  assert.ok(files > 3, `the data directory holds the log and the replay (${files} files)`);
  // Every view.
  const tables = (await sql("select table_name from information_schema.tables where table_schema = 'public'")).map(
    (t) => t.table_name,
  );
  for (const t of ['sessions', 'page_views', 'dead_clicks', 'errors', 'element_clicks']) {
    assert.ok(tables.includes(t), `${t} is among the views scanned: ${tables}`);
  }
  for (const t of tables) scan(`view ${t}`, JSON.stringify(await sql(`select * from ${t}`)));
  // The replay as the API serves it, and the server's log.
  const replay = await (
    await fetch(`${server.url}/api/v1/sessions/${visited.session_id}/replay`, {
      headers: { authorization: `Bearer ${server.token}` },
    })
  ).text();
  assert.ok(replay.includes('Summer sale'), 'the replay holds the page');
  scan('the replay', replay);
  scan('the server log', server.log());
  assert.deepEqual(found, []);
});

test('a pagehide flush arrives by beacon', async () => {
  const { ctx, page, device } = await open({ host: `${site.url}/proxy`, batchIntervalMs: 600_000 });
  const before = site.seen.length;
  for (let i = 0; i < 3; i++) {
    await clickAt(page, '#nothing', i * 40 - 40);
    await page.waitForTimeout(400);
  }
  // Nothing is sent before the page goes: the interval is ten minutes.
  assert.equal(site.seen.length, before);
  await page.goto('about:blank');
  const s = await until('the beaconed clicks', async () => {
    const s = await sessionOf(device);
    return s && s.clicks === 3 ? s : undefined;
  });
  assert.equal(s.clicks, 3);
  const sent = site.seen.slice(before);
  assert.ok(sent.length >= 1 && sent.every((r) => r.mode === 'no-cors'), `beacons (no-cors): ${JSON.stringify(sent)}`);
  await ctx.close();
});

test('offline, then online, delivers every event exactly once', async () => {
  const { ctx, page, device } = await open();
  await ctx.setOffline(true);
  for (let i = 0; i < 5; i++) {
    await clickAt(page, '#nothing', i * 30 - 60);
    await page.waitForTimeout(700);
  }
  await page.waitForTimeout(2500);
  // What the first batch held (the snapshot) may have left before; no click has.
  assert.ok(((await sessionOf(device))?.clicks ?? 0) === 0, 'no click arrives while offline');
  await ctx.setOffline(false);
  await until('the offline clicks', async () => (await sessionOf(device))?.clicks === 5);
  // And nothing twice, however often the queue is drained.
  await page.evaluate(() => window.sightflow.flush());
  await page.waitForTimeout(2500);
  const s = await sessionOf(device);
  assert.equal(s.clicks, 5);
  const stats = await page.evaluate(() => window.sightflow.stats());
  assert.ok(stats.offlineQueued >= 1, JSON.stringify(stats));
  await ctx.close();
});

test('a 500 is retried and a 400 is not', async () => {
  const { ctx, page, device } = await open({ host: `${site.url}/proxy` });
  await page.evaluate(() => window.sightflow.flush());
  await page.waitForTimeout(1500);
  const mark = site.seen.length;
  site.faults.push(500);
  await clickAt(page, '#nothing');
  await page.evaluate(() => window.sightflow.flush().catch(() => {}));
  await until('the click, after a retry', async () => (await sessionOf(device))?.clicks === 1, 40_000);
  const tries = site.seen.slice(mark);
  const failed = tries.find((t) => t.status === 500);
  assert.ok(failed, JSON.stringify(tries));
  assert.ok(
    tries.some((t) => t.batch === failed.batch && t.status === 200),
    `the same batch again: ${JSON.stringify(tries)}`,
  );

  const mark2 = site.seen.length;
  site.faults.push(400);
  await clickAt(page, '#nothing', 50);
  await page.evaluate(() => window.sightflow.flush().catch(() => {}));
  await until('the refused batch', async () => site.seen.slice(mark2).some((t) => t.status === 400));
  await page.waitForTimeout(6000);
  const refused = site.seen.slice(mark2).find((t) => t.status === 400);
  const again = site.seen.slice(mark2).filter((t) => t.batch === refused.batch);
  assert.equal(again.length, 1, `a 400 is not retried: ${JSON.stringify(again)}`);
  const stats = await page.evaluate(() => window.sightflow.stats());
  assert.ok(stats.dropped4xx >= 1, JSON.stringify(stats));
  await ctx.close();
});

test('the stored replay plays in rrweb’s replayer', async () => {
  assert.ok(visited, 'the first test ran');
  const r = await fetch(`${server.url}/api/v1/sessions/${visited.session_id}/replay`, {
    headers: { authorization: `Bearer ${server.token}` },
  });
  assert.equal(r.status, 200);
  const { events } = await r.json();
  assert.ok(events.some((e) => e.type === 4) && events.some((e) => e.type === 2), 'a Meta and a FullSnapshot');
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    // The replayer's sandbox (no allow-scripts) refusing the recorded page's inline
    // handlers is the sandbox working, not a replay error.
    if (m.type() === 'error' && !m.text().startsWith('Blocked script execution')) problems.push(m.text());
  });
  await page.goto(`${site.url}/replay`);
  const text = await page.evaluate(async (events) => {
    const replayer = new window.rrwebReplay.Replayer(events, { root: document.getElementById('player'), speed: 4 });
    replayer.play();
    await new Promise((r) => setTimeout(r, 1500));
    const doc = replayer.iframe.contentDocument;
    return doc?.body?.innerText ?? '';
  }, events);
  assert.ok(text.includes('Summer sale'), `the rebuilt page: ${text.slice(0, 200)}`);
  await page.screenshot({ path: path.join(SHOTS, 'sdk-replay.png') });
  assert.deepEqual(problems, []);
  await ctx.close();
});
