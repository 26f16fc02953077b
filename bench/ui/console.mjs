// The console's budgets, in Debian's Chromium against a real `serve`:
//   - the live dashboard usable (every number and the top pages shown) within 1 s of
//     navigation on loopback with 100,000 sessions in the views;
//   - the replay of a 10-minute session playing within 300 ms of navigation;
//   - the gzipped size of every route's chunks (the player and the editor load only
//     on the pages that use them).
//
//   make ui && cargo build --release --bin sightflow
//   SIGHTFLOW_BIN=target/release/sightflow node bench/ui/console.mjs [--sessions 100000] [--runs 7]

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CHROMIUM, CHROMIUM_ARGS, root, startServer, until } from '../../tests/browser/harness.mjs';

const { chromium } = await import(pathToFileURL(path.join(root, 'ui/node_modules/playwright-core/index.mjs')));

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SESSIONS = arg('sessions', 100_000);
const RUNS = arg('runs', 7);
const OWNER = ['bench@test.dev', 'owner', 'Bench-owner-pw-1'];
const PAGES = ['/', '/pricing', '/signup', '/thanks', '/blog', '/docs', '/about', '/careers'];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const max = (xs) => Math.max(...xs);

const server = await startServer({
  config: "[projects.demo]\nallowed_origins = [\"http://127.0.0.1:*\"]\n",
  users: [OWNER],
  prefix: 'sightflow-uibench-',
});
console.log(`server ${server.url} (${process.env.SIGHTFLOW_BIN ?? 'target/debug/sightflow'})`);

// 100,000 sessions over the last 20 hours: each a page view, a second page view and a
// click, one in twenty with a rage burst, one in fifty with an error.
const t0 = Date.now();
const now = Date.now();
let minAsOf = 0;
let batch = [];
const flush = async () => {
  if (!batch.length) return;
  const r = await fetch(`${server.url}/api/v1/track?key=demo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(batch) });
  const b = await r.json();
  if (r.status !== 200 || b.rejected?.length) throw new Error(`track: ${r.status} ${JSON.stringify(b).slice(0, 400)}`);
  minAsOf = Math.max(minAsOf, b.min_as_of ?? 0);
  batch = [];
};
for (let i = 0; i < SESSIONS; i++) {
  const device = `bench-${i}`;
  const ts = now - 20 * 3_600_000 + Math.floor((i / SESSIONS) * 20 * 3_600_000);
  const a = PAGES[i % PAGES.length];
  const b = PAGES[(i * 7 + 3) % PAGES.length];
  const base = { device_id: device, tab_id: 't' };
  batch.push({ ...base, type: 'page_view', seq: 1, ts, url: `https://shop.test${a}`, viewport_width: 1280, viewport_height: 800 });
  batch.push({ ...base, type: 'click', seq: 2, ts: ts + 800, url: `https://shop.test${a}`, x: 100 + (i % 900), y: 200 + (i % 400), selector: 'a.next', tag: 'a' });
  if (i % 20 === 0)
    for (let k = 0; k < 3; k++) batch.push({ ...base, type: 'click', seq: 3 + k, ts: ts + 1000 + k * 150, url: `https://shop.test${a}`, x: 400, y: 300, selector: 'div.fake', tag: 'div' });
  if (i % 50 === 0) batch.push({ ...base, type: 'error', seq: 7, ts: ts + 1500, url: `https://shop.test${a}`, message: `TypeError: x${i % 5} is undefined`, source: 'app.js' });
  batch.push({ ...base, type: 'page_view', seq: 8, ts: ts + 9000, url: `https://shop.test${b}`, viewport_width: 1280, viewport_height: 800 });
  if (batch.length >= 3000) await flush();
}
await flush();
await until('the sessions in the views', async () => Number((await server.sql('select count(*) n from sessions', minAsOf))[0].n) >= SESSIONS, 600_000);
console.log(`loaded ${SESSIONS} sessions in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// A 10-minute recording: a real page (the calm fixture's first snapshot) and ten
// minutes of mouse movement, scrolling and clicks.
const calm = JSON.parse(fs.readFileSync(path.join(root, 'tests/fixtures/rrweb/01-calm.json'), 'utf8'));
const snap = calm.findIndex((e) => e.type === 2);
const start = Date.now() - 11 * 60_000;
const rec = [
  { ...calm[0], timestamp: start },
  { ...calm[snap], timestamp: start + 5 },
];
for (let t = 100; t < 600_000; t += 100) {
  const x = 200 + Math.round(300 * Math.sin(t / 3000));
  const y = 300 + Math.round(200 * Math.cos(t / 5000));
  rec.push({ type: 3, timestamp: start + t, data: { source: 1, positions: [{ x, y, id: 1, timeOffset: 0 }] } });
  if (t % 5000 === 0) rec.push({ type: 3, timestamp: start + t + 20, data: { source: 3, id: 1, x: 0, y: (t / 50) % 1200 } });
  if (t % 15000 === 0) rec.push({ type: 3, timestamp: start + t + 40, data: { source: 2, type: 2, id: 1, x, y } });
}
// (in requests of at most 4,000 events, numbered on from where the last ended)
let recAsOf = 0;
for (let i = 0; i < rec.length; i += 4000) {
  const imp = await fetch(`${server.url}/api/v1/projects/demo/devices/ten-minutes/rrweb?seq_start=${i}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rec.slice(i, i + 4000)) });
  const b = await imp.json();
  if (imp.status !== 200) throw new Error(`import: ${JSON.stringify(b)}`);
  recAsOf = Math.max(recAsOf, b.min_as_of ?? 0);
}
const [long] = await server.sql(`select session_id, duration_ms from sessions where device_id = 'ten-minutes'`, recAsOf);
console.log(`10-minute session ${long.session_id}: ${rec.length} rrweb events, ${(long.duration_ms / 60000).toFixed(1)} min`);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
await page.goto(`${server.url}/`);
await page.getByLabel('Email').fill(OWNER[0]);
await page.getByLabel('Password').fill(OWNER[2]);
await page.getByRole('button', { name: 'Log in' }).click();
await page.locator('header.top').waitFor();

// Dashboard: from navigation start until every tile has its number and the top pages
// are listed (the moment a person can read it).
const dash = [];
for (let i = 0; i < RUNS; i++) {
  await page.goto('about:blank');
  await page.goto(`${server.url}/?project=demo&range=24h`);
  const ms = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const ready = () =>
          [...document.querySelectorAll('[data-metric]')].filter((t) => t.dataset.metric !== 'events_per_s').every((t) => t.dataset.value !== '') &&
          document.querySelector('[data-testid="top-pages"] tbody tr') &&
          document.querySelector('.chart canvas');
        const poll = () => (ready() ? resolve(performance.now()) : requestAnimationFrame(poll));
        poll();
      }),
  );
  const sessions = await page.locator('[data-metric="sessions"]').getAttribute('data-value');
  if (Number(sessions) < SESSIONS) throw new Error(`the dashboard shows ${sessions} sessions`);
  dash.push(ms);
}

// Replay: from navigation start until the player's clock moves.
const replay = [];
for (let i = 0; i < RUNS; i++) {
  await page.goto('about:blank');
  await page.goto(`${server.url}/sessions/${long.session_id}?project=demo`);
  const ms = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const poll = () => {
          const p = document.querySelector('[data-testid="player"]');
          if (p && p.dataset.playing === 'true' && Number(p.dataset.time) > 0) resolve(performance.now());
          else requestAnimationFrame(poll);
        };
        poll();
      }),
  );
  replay.push(ms);
}
await browser.close();
server.stop();

const sizes = JSON.parse(fs.readFileSync(path.join(root, 'ui/dist/sizes.json'), 'utf8'));
const index = fs.readFileSync(path.join(root, 'ui/dist/index.html'), 'utf8');
const gz = (re) => sizes.filter((s) => re.test(s.file)).reduce((n, s) => n + s.gzip, 0);
const entry = sizes.filter((s) => index.includes(s.file)).reduce((n, s) => n + s.gzip, 0);
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim();

console.log(`\nconsole budgets (commit ${commit}, ${RUNS} runs each, ${SESSIONS} sessions)`);
console.log(`  dashboard usable after navigation: median ${median(dash).toFixed(0)} ms, max ${max(dash).toFixed(0)} ms (budget 1000 ms)`);
console.log(`  10-minute replay playing after navigation: median ${median(replay).toFixed(0)} ms, max ${max(replay).toFixed(0)} ms (budget 300 ms)`);
console.log(`  entry (every page): ${entry} B gz; player chunk ${gz(/^player-.*\.js$/)} B gz (Replay, Heatmaps); editor chunk ${gz(/^editor-.*\.js$/)} B gz (SQL); charts chunk ${gz(/^charts-.*\.js$/)} B gz (Live, SQL)`);
console.log(`  command: SIGHTFLOW_BIN=${process.env.SIGHTFLOW_BIN ?? 'target/debug/sightflow'} node bench/ui/console.mjs --sessions ${SESSIONS} --runs ${RUNS}`);
