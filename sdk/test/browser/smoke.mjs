// A smoke test in a real browser: Debian's Chromium driven by playwright-core loads
// a page with the README's snippet and dist/sdk.js from a small server on
// loopback that stands in for /api/v1/track, and checks what arrives.
//
//   npm run build && npm run smoke        (CHROMIUM=/path/to/chromium to override)
//   SMOKE_DUMP=events.json npm run smoke  (also writes every event received)
//
// It prints what it checked and exits non-zero on the first failure.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const SDK = readFileSync(new URL('../../dist/sdk.js', import.meta.url));
const ESM = readFileSync(new URL('../../dist/sightflow.mjs', import.meta.url));
const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const SNIPPET = README.match(/<!-- snippet -->\s*```html\n(<script>.*<\/script>)\n```/)[1];
const SECRETS = ['hunter2secret', 'Ada Lovelace', 'my private note'];

/** Every request to the track endpoint: its batch id, whether it was gzipped, its events. */
const batches = [];

const page = (host) => `<!doctype html><html><head><title>Smoke</title>
${SNIPPET.replace('https://sightflow.example.com', host).replace('{projectKey:"YOUR_PROJECT_KEY"}', '{projectKey:"pk_smoke",unmaskInputSelector:".sf-unmask"}')}
</head><body>
<h1>Smoke</h1>
<input id="name" name="fullname"><input id="pw" type="password"><input id="q" class="sf-unmask" type="search">
<div id="note" contenteditable="true"></div>
<p class="sf-mask">masked text</p><div data-sf-block>blocked</div>
<canvas id="c" width="40" height="40"></canvas>
<button id="boom" onclick="window.__boom()">boom</button>
<button id="nav" onclick="history.pushState({}, '', '/pricing?code=42')">nav</button>
<script>window.__boom = function () { null.f(); };</script>
</body></html>`;

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname == '/sdk.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(SDK);
  if (url.pathname == '/sightflow.mjs') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(ESM);
  if (url.pathname == '/esm') {
    return res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>ESM</title><p>esm</p>
<script type="module">import { sightflow } from '/sightflow.mjs'; sightflow.init({ projectKey: 'pk_esm' }); sightflow.capture('esm'); await sightflow.flush(); window.done = true;</script>`);
  }
  if (url.pathname == '/api/v1/track') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      const gz = body[0] == 0x1f && body[1] == 0x8b;
      if (gz) body = gunzipSync(body);
      const events = JSON.parse(body.toString());
      batches.push({ id: url.searchParams.get('batch_id'), key: url.searchParams.get('key'), gz, type: req.headers['content-type'], events });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: events.length, rejected: [], duplicate: false }));
    });
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html' }).end(page(`http://127.0.0.1:${server.address().port}`));
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true });
const errors = [];
try {
  const ctx = await browser.newContext();
  const tab = await ctx.newPage();
  tab.on('pageerror', (e) => errors.push(e.message));
  await tab.goto(`${origin}/?token=abc&ref=1`);
  await tab.waitForFunction(() => window.sightflow && !window.sightflow.q);
  await tab.type('#name', 'Ada Lovelace', { delay: 5 });
  await tab.type('#pw', 'hunter2secret', { delay: 5 });
  await tab.type('#q', 'shoes', { delay: 5 });
  await tab.type('#note', 'my private note', { delay: 5 });
  await tab.evaluate(() => {
    const c = document.getElementById('c').getContext('2d');
    c.fillRect(0, 0, 10, 10);
    console.log('hello from the page');
    Promise.reject(new Error('nope'));
  });
  await tab.click('#boom');
  await tab.click('#nav');
  await tab.evaluate(() => {
    window.sightflow.capture('smoke', { ok: true });
    window.sightflow.identify('user-1', { plan: 'pro' });
  });
  await tab.waitForTimeout(300);
  await tab.evaluate(() => window.sightflow.flush());
  const stats = await tab.evaluate(() => window.sightflow.stats());
  // Leaving the page: pagehide sends the rest by beacon.
  await tab.evaluate(() => window.sightflow.capture('last words'));
  await tab.goto('about:blank');
  await new Promise((r) => setTimeout(r, 500));

  // Beacons and fetches may arrive in any order; the batch number says which came first.
  batches.sort((a, b) => a.id.split('.')[1] - b.id.split('.')[1]);
  const events = batches.flatMap((b) => b.events);
  if (process.env.SMOKE_DUMP) writeFileSync(process.env.SMOKE_DUMP, JSON.stringify(batches, null, 1));
  const text = JSON.stringify(events);
  const rrweb = events.filter((e) => e.type == 'rrweb').map((e) => e.event);
  const of = (t) => events.filter((e) => e.type == t);

  assert.ok(batches.every((b) => b.key == 'pk_smoke' && /^[0-9a-f]{32}\.\d+$/.test(b.id) && /text\/plain/.test(b.type)));
  assert.equal(new Set(batches.map((b) => b.id)).size, batches.length, 'batch ids are unique');
  assert.ok(batches.some((b) => b.gz), 'fetch batches are gzipped');
  assert.ok(batches.some((b) => !b.gz && b.events.some((e) => e.name == 'last words')), 'pagehide beacon arrived');
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'seq increases');
  assert.equal(new Set(seqs).size, seqs.length, 'seq is unique');

  const meta = rrweb.find((e) => e.type == 4);
  assert.equal(meta.data.href, `${origin}/?token=[redacted]&ref=1`);
  assert.equal(meta.data.title, 'Smoke');
  assert.ok(meta.data.userAgent.includes('Chrome'));
  assert.equal(rrweb.filter((e) => e.type == 4).length, 1, 'one Meta for the load');
  assert.equal(of('page_view').length, 1, 'one page_view, for the SPA navigation');
  assert.equal(of('page_view')[0].url, `${origin}/pricing?code=[redacted]`);
  assert.equal(of('page_view')[0].referrer, `${origin}/?token=[redacted]&ref=1`);

  for (const s of SECRETS) assert.ok(!text.toLowerCase().includes(s.toLowerCase()), `"${s}" never sent`);
  assert.ok(text.includes('shoes'), 'the unmasked field is recorded');
  assert.ok(!text.includes('masked text') && !text.includes('>blocked<'), 'mask and block selectors apply');

  const consoleRecords = rrweb.filter((e) => e.type == 6).map((e) => e.data.payload);
  assert.ok(consoleRecords.some((p) => p.level == 'log' && p.payload[0] == '"hello from the page"'), 'console.log recorded');
  assert.ok(!consoleRecords.some((p) => p.level == 'error' && p.payload[0].startsWith('"Uncaught')), 'Uncaught records dropped');
  const errs = of('error').map((e) => e.message);
  assert.ok(errs.some((m) => m.includes("Cannot read properties of null (reading 'f')")), 'window error sent');
  assert.ok(errs.includes('Unhandled rejection: nope'), 'rejection sent');
  assert.ok(of('error').find((e) => e.source).source.startsWith(`${origin}/?token=[redacted]&ref=1:`), 'error source');
  assert.ok(of('custom').some((e) => e.name == 'smoke' && e.properties.ok === true));
  assert.ok(of('identify').some((e) => e.user_id == 'user-1'));
  assert.ok(of('vitals').length >= 1, 'web vitals reported');
  assert.ok(of('exit').length >= 1, 'exit sent');
  assert.deepEqual(errors.filter((m) => !m.includes("reading 'f'") && m != 'nope'), [], 'no other page errors');
  assert.ok(stats.sent >= 1 && stats.dropped4xx == 0);

  // The npm build, as an ES module in the page.
  const esm = await ctx.newPage();
  esm.on('pageerror', (e) => errors.push(e.message));
  await esm.goto(`${origin}/esm`);
  await esm.waitForFunction(() => window.done);
  const fromEsm = batches.filter((b) => b.key == 'pk_esm').flatMap((b) => b.events);
  assert.deepEqual(fromEsm.slice(0, 2).map((e) => e.event?.type), [4, 2], 'the ES module build records');
  assert.ok(fromEsm.some((e) => e.name == 'esm'), 'the ES module build sends custom events');
  assert.deepEqual(errors.filter((m) => !m.includes("reading 'f'") && m != 'nope'), [], 'no page errors');

  console.log(`smoke: ${events.length} events in ${batches.length} batches; rrweb types ${[...new Set(rrweb.map((e) => e.type))].sort()}`);
  console.log(`smoke: vitals ${of('vitals').map((e) => Object.keys(e).filter((k) => ['lcp', 'cls', 'inp', 'ttfb', 'fcp'].includes(k))).join(',')}`);
  console.log('smoke: ok');
} finally {
  await browser.close();
  server.close();
}
