// Browser tests of the web console: Debian's Chromium (playwright-core) against a real
// `sightflow serve`, fed the fixture recordings over HTTP and then live traffic. Every
// number a page shows is checked against the same SQL over `/api/v1/query`.
//
//   SIGHTFLOW_BIN=target/debug/sightflow node --test ui/browser/console.mjs
//
// A screenshot of every page goes to target/screenshots/console-*.png (SCREENSHOTS
// overrides); a few are copied by hand to docs/ for the README.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, SHOTS, root, startServer, until } from '../../tests/browser/harness.mjs';

const FIXTURES = path.join(root, 'tests/fixtures/rrweb');
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
const OWNER = ['olive@test.dev', 'owner', 'Olive-owner-pw-1'];
const VIEWER = ['vic@test.dev', 'viewer', 'Vic-viewer-pw-1', 'demo'];

let server;
let browser;
let owner; // a logged-in page of the owner
let lastAsOf = 0;

async function importRecording(device, events) {
  const r = await fetch(`${server.url}/api/v1/projects/demo/devices/${device}/rrweb`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  lastAsOf = Math.max(lastAsOf, body.min_as_of ?? 0);
  return body;
}

const sql = (q) => server.sql(q, lastAsOf);
const n = async (q) => Number(Object.values((await sql(q))[0])[0]);

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `console-${name}.png`), fullPage: false });
}

async function login(page, [email, , password]) {
  await page.goto(`${server.url}/`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('header.top').waitFor();
}

function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    // The sandboxed replay iframe refuses the recorded page's scripts, as it should.
    if (m.type() === 'error' && !/Blocked script execution|Failed to load resource/.test(m.text())) errors.push(m.text());
  });
  return errors;
}

before(async () => {
  server = await startServer({
    config: '[projects.demo]\nallowed_origins = ["http://127.0.0.1:*"]\n',
    users: [OWNER, VIEWER],
    prefix: 'sightflow-console-',
  });
  for (const r of manifest.recordings) {
    const events = JSON.parse(fs.readFileSync(path.join(FIXTURES, r.file), 'utf8'));
    await importRecording(`fx-${r.file.slice(0, 2)}`, events);
  }
  const expected = manifest.recordings.reduce((s, r) => s + r.expected.sessions, 0);
  await until('the fixtures in the views', async () => (await n('select count(*) from sessions')) === expected);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  server?.stop();
});

test('nothing is reachable without logging in; a wrong password says so', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const r = await page.goto(`${server.url}/sessions?project=demo`);
  assert.equal(r.status(), 200);
  assert.equal(r.headers()['x-frame-options'], 'DENY');
  await page.getByRole('heading', { name: 'Log in to the console' }).waitFor();
  const api = await page.evaluate(async () => (await fetch('/api/v1/sessions')).status);
  assert.equal(api, 401);
  await page.getByLabel('Email').fill(OWNER[0]);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('Wrong email or password.').waitFor();
  await shot(page, 'login');
  // A missing asset is a 404, not the page.
  assert.equal((await fetch(`${server.url}/assets/nope-123.js`)).status, 404);
  await page.close();
});

test('the dashboard shows the views and moves with live traffic, without a reload', async () => {
  owner = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors = watchErrors(owner);
  await login(owner, OWNER);
  await owner.goto(`${server.url}/?project=demo&range=all`);
  const tile = (k) => owner.locator(`[data-metric="${k}"]`);
  await until('the dashboard numbers', async () => (await tile('sessions').getAttribute('data-value')) !== '');
  const want = (
    await sql(`select count(*) sessions, count(distinct device_id) visitors, sum(page_views) page_views,
      sum(rage_clicks) rage_clicks, sum(dead_clicks) dead_clicks, sum(error_clicks) error_clicks,
      sum(quick_backs) quick_backs, sum(excessive_scrolls) excessive_scrolls, sum(thrashed_cursors) thrashed_cursors, sum(errors) errors
      from sessions where project = 'demo'`)
  )[0];
  for (const [k, v] of Object.entries(want)) {
    await until(`tile ${k} = ${v}`, async () => Number(await tile(k).getAttribute('data-value')) === Number(v));
  }
  assert.ok(Number(want.rage_clicks) >= 2 && Number(want.errors) >= 2, JSON.stringify(want));
  const pages = await sql(`select url, count(*) views from page_views where project = 'demo' group by url order by views desc, url limit 10`);
  const shown = await owner.locator('[data-testid="top-pages"] tbody tr').count();
  assert.equal(shown, pages.length);
  assert.equal(
    (await owner.locator('[data-testid="top-pages"] tbody tr').first().locator('td').nth(1).innerText()).replace(/,/g, ''),
    String(pages[0].views),
  );
  await owner.locator('.chart canvas').first().waitFor();
  await shot(owner, 'dashboard');

  // Live traffic: a rage recording replayed now, as a new visitor.
  const before = Number(await tile('sessions').getAttribute('data-value'));
  const rage = JSON.parse(fs.readFileSync(path.join(FIXTURES, '02-rage.json'), 'utf8'));
  const shift = Date.now() - rage[rage.length - 1].timestamp - 1000;
  await importRecording('live-visitor', rage.map((e) => ({ ...e, timestamp: e.timestamp + shift })));
  await until('the new session on the dashboard', async () => Number(await tile('sessions').getAttribute('data-value')) === before + 1, 20_000);
  await owner.locator('.toast', { hasText: 'New session' }).waitFor({ timeout: 20_000 });
  await until('live now', async () => Number(await tile('live_now').getAttribute('data-value')) >= 1);
  assert.match(await owner.getByTestId('freshness').innerText(), /behind/);
  await shot(owner, 'dashboard-live');
  assert.deepEqual(errors, []);
});

test('sessions: the list, its filters and sorting match the API', async () => {
  const page = owner;
  await page.goto(`${server.url}/sessions?project=demo&range=all`);
  await page.getByTestId('sessions').waitFor();
  const total = await n(`select count(*) from sessions where project = 'demo'`);
  assert.equal((await page.getByTestId('total').innerText()).replace(/\D/g, ''), String(total));
  assert.equal(await page.locator('[data-testid="sessions"] tbody tr').count(), Math.min(25, total));
  // All time reaches past the 30 days closed sessions are listed for; the page says so.
  assert.match(await page.getByTestId('sessions-kept-note').innerText(), /^Closed sessions are listed for 30 days after they end/);
  await shot(page, 'sessions');
  // Only the sessions with rage clicks.
  await page.getByLabel('Rage clicks').check();
  await page.getByRole('button', { name: 'Apply' }).click();
  await until('the rage filter in the URL', async () => page.url().includes('has=rage'));
  const rageIds = (await sql(`select session_id from sessions where project = 'demo' and rage_clicks > 0`)).map((r) => r.session_id).sort();
  await until('the rage sessions', async () => (await page.locator('[data-testid="sessions"] tbody tr').count()) === rageIds.length);
  const ids = await page.locator('[data-testid="sessions"] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.session));
  assert.deepEqual(ids.sort(), rageIds);
  // Sorted by duration, ascending.
  await page.goto(`${server.url}/sessions?project=demo&range=all&sort=duration_ms&order=asc`);
  await page.getByTestId('sessions').waitFor();
  const byDuration = (await sql(`select session_id from sessions where project = 'demo' order by duration_ms asc, session_id asc limit 25`)).map((r) => r.session_id);
  const shownIds = await page.locator('[data-testid="sessions"] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.session));
  assert.deepEqual(shownIds, byDuration);
  // A bad number is named, not sent.
  await page.getByLabel('Min duration (s)').fill('ten');
  await page.getByText('Minimum duration: expected a number of seconds, not "ten"').waitFor();
  // Opening a row goes to its replay.
  await page.locator('[data-testid="sessions"] tbody tr a').first().click();
  await page.getByTestId('session-meta').waitFor();
  assert.match(page.url(), /\/sessions\/[^/?]+\?project=demo/);
  // Within the 30 days, the list leaves nothing out and says nothing.
  await page.goto(`${server.url}/sessions?project=demo&range=7d`);
  await page.locator('[data-testid="sessions"], .state.empty').first().waitFor();
  assert.equal(await page.getByTestId('sessions-kept-note').count(), 0);
});

test('replay: it plays, and a rage marker seeks to the burst', async () => {
  const page = owner;
  const burst = manifest.recordings.find((r) => r.file === '02-rage.json').rage_click_bursts[0];
  const [row] = await sql(`select r.session_id, cast(r.ts as bigint) ts from rage_clicks r join sessions s on r.session_id = s.session_id where s.device_id = 'fx-02'`);
  assert.equal(Number(row.ts), burst.start_ts);
  await page.goto(`${server.url}/sessions/${row.session_id}?project=demo`);
  const player = page.getByTestId('player');
  await player.waitFor();
  await page.locator('.stage iframe').waitFor();
  await until('the player to advance', async () => Number(await player.getAttribute('data-time')) > 300, 15_000);
  // Pause, then seek with the rage marker.
  await page.getByTestId('play').click();
  await until('paused', async () => (await player.getAttribute('data-playing')) === 'false');
  const marker = page.locator('.timeline .marker.rage_click');
  assert.equal(await marker.count(), 1);
  await marker.click();
  const start = Number(await player.getAttribute('data-start'));
  await until('the player at the burst', async () => Math.abs(Number(await player.getAttribute('data-time')) - (burst.start_ts - start)) < 50);
  // The event list has the burst and the page view, each a seek button.
  await page.getByTestId('events').getByText('Rage click ×6').waitFor();
  // The replayed page is the recorded page.
  const title = await page.frameLocator('.stage iframe').locator('body').innerText();
  assert.match(title, /Download for desktop/);
  await shot(page, 'replay');
});

test('a viewer sees analytics but no replay, and the page says why', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await login(page, VIEWER);
  const [row] = await sql(`select session_id from sessions where device_id = 'fx-02'`);
  await page.goto(`${server.url}/sessions/${row.session_id}?project=demo`);
  await page.getByTestId('replay-refused').waitFor();
  assert.match(await page.getByTestId('replay-refused').innerText(), /viewer/);
  assert.equal(await page.locator('.stage iframe').count(), 0);
  await page.getByTestId('session-meta').waitFor();
  const status = await page.evaluate(async (id) => (await fetch(`/api/v1/sessions/${id}/replay`)).status, row.session_id);
  assert.equal(status, 403);
  await shot(page, 'replay-viewer');
  // Settings: no members or tokens for a viewer.
  await page.goto(`${server.url}/settings?project=demo`);
  await page.getByText('Admins and owners manage members and API tokens').waitFor();
  await ctx.close();
});

test('heatmap: the page is rebuilt and the overlay is hot at the rage cluster, cold far away', async () => {
  const page = owner;
  const rec = manifest.recordings.find((r) => r.file === '02-rage.json');
  const click = rec.clicks.find((c) => c.rage);
  const [pv] = await sql(`select url from page_views p join sessions s on p.session_id = s.session_id where s.device_id = 'fx-02'`);
  await page.goto(`${server.url}/heatmaps?project=demo&url=${encodeURIComponent(pv.url)}&kind=click&viewport=1024`);
  const overlay = page.getByTestId('heat-overlay');
  await overlay.waitFor();
  await page.frameLocator('.heat-dom iframe').locator('#fake-download').waitFor();
  await until('the rebuilt page measured', async () => page.getByText('Rebuilt from session').isVisible());
  // The numbers: sessions and visitors of the page, interactions of the cells.
  const stats = (await sql(`select count(distinct session_id) s, count(distinct device_id) v from page_views where project = 'demo' and url = '${pv.url}'`))[0];
  const cells = await sql(`select cell_x, cell_y, sum(count) c from heatmap_cells where project = 'demo' and url = '${pv.url}' and kind = 'click' and viewport_bucket = 1024 group by 1, 2`);
  const metric = (k) => page.locator(`[data-testid="heat-stats"] [data-metric="${k}"]`).getAttribute('data-value');
  await until('heat stats', async () => (await metric('sessions')) === String(stats.s) && (await metric('visitors')) === String(stats.v));
  assert.equal(await metric('interactions'), String(cells.reduce((s, c) => s + Number(c.c), 0)));
  // The overlay's pixels, in document coordinates.
  const alpha = (x, y) => overlay.evaluate((c, [x, y]) => c.getContext('2d').getImageData(x, y, 1, 1).data[3], [x, y]);
  await until('heat drawn at the cluster', async () => (await alpha(click.x, click.page_y)) > 100);
  const far = { x: 1200, y: 40 };
  assert.ok(cells.every((c) => Math.hypot(c.cell_x * 16 + 8 - far.x, c.cell_y * 16 + 8 - far.y) > 60), 'the far point has no cells near it');
  assert.equal(await alpha(far.x, far.y), 0);
  // The overlay lines up with the rebuilt element the burst hit.
  // (the element's box in the rebuilt document's own coordinates: the iframe is as tall
  // as its document, so these are document coordinates)
  const box = await page.frameLocator('.heat-dom iframe').locator('#fake-download').evaluate((el) => {
    const r = el.getBoundingClientRect();
    return { x: r.left + el.ownerDocument.defaultView.scrollX, y: r.top + el.ownerDocument.defaultView.scrollY, width: r.width, height: r.height };
  });
  const scale = Number(await page.locator('.heat-page').getAttribute('data-scale'));
  const inBox = (x, y) => x >= box.x && x <= box.x + box.width && y >= box.y && y <= box.y + box.height;
  assert.ok(inBox(click.x, click.page_y), `the rage click (${click.x}, ${click.page_y}) is on #fake-download ${JSON.stringify(box)}`);
  await page.locator('.heat-scroll').evaluate((el, y) => el.scrollTo(0, Math.max(0, y - 300)), click.page_y * scale);
  await shot(page, 'heatmap');
  // The clickmap: the element outlined with its count.
  await page.getByLabel('Element clicks').check();
  await page.getByTestId('element-clicks').waitFor();
  const top = (await sql(`select selector, clicks from element_clicks where project = 'demo' and url = '${pv.url}' order by clicks desc limit 1`))[0];
  await page.locator(`.el-box[data-selector="${top.selector}"]`).waitFor();
  await shot(page, 'clickmap');
  // One chosen session: computed from its replay.
  const [s] = await sql(`select session_id from sessions where device_id = 'fx-02'`);
  await page.goto(`${server.url}/heatmaps?project=demo&url=${encodeURIComponent(pv.url)}&kind=click&viewport=1024&sessions=${s.session_id}`);
  await until('one session', async () => (await page.locator('[data-testid="heat-stats"] [data-metric="sessions"]').getAttribute('data-value')) === '1');
});

test('funnels: entered per step equal the view, and drop-offs link to their sessions', async () => {
  const page = owner;
  await page.goto(`${server.url}/funnels?project=demo`);
  const steps = await sql(`select step, entered from funnel_steps where project = 'demo' and funnel = 'signup' order by step`);
  assert.equal(steps.length, 4);
  const list = page.getByTestId('funnel-signup');
  await list.waitFor();
  const shown = await list.locator('li').evaluateAll((li) => li.map((l) => [Number(l.dataset.step), Number(l.dataset.entered)]));
  assert.deepEqual(shown, steps.map((s) => [Number(s.step), Number(s.entered)]));
  await shot(page, 'funnels');
  await list.getByRole('link', { name: /dropped before/ }).first().click();
  await page.getByTestId('dropped').locator('li').first().waitFor();
  const dropAt = Number(new URL(page.url()).searchParams.get('dropped'));
  const dropped = await n(`select count(*) from session_funnels where project = 'demo' and funnel = 'signup' and steps_reached = ${dropAt - 1}`);
  assert.equal(await page.getByTestId('dropped').locator('li').count(), dropped);
});

test('insights: frustration by page and errors by fingerprint, each with replays', async () => {
  const page = owner;
  await page.goto(`${server.url}/insights?project=demo&range=all`);
  const rage = await sql(`select url, count(*) n from rage_clicks where project = 'demo' group by url`);
  const table = page.getByTestId('insight-rage_clicks');
  await table.waitFor();
  assert.match(await page.getByTestId('insights-kept-note').innerText(), /^Counted over the sessions still listed/);
  for (const r of rage) assert.equal(await table.locator(`tr[data-url="${r.url}"]`).getAttribute('data-n'), String(r.n));
  // Each row has example replays, opening at the signal's time.
  const example = table.locator('.examples a').first();
  const bursts = await sql(`select session_id, cast(ts as bigint) ts from rage_clicks where project = 'demo'`);
  const exampleUrl = new URL(await example.getAttribute('href'), server.url);
  const id = exampleUrl.pathname.split('/').pop();
  assert.ok(bursts.some((b) => b.session_id === id && String(b.ts) === exampleUrl.searchParams.get('ts')), exampleUrl.href);
  const errors = await sql(`select fingerprint, occurrences from errors where project = 'demo'`);
  assert.ok(errors.length >= 1);
  await page.getByTestId('errors').waitFor();
  assert.equal(await page.locator('[data-testid="errors"] tr[data-fingerprint]').count(), errors.length);
  await page.locator('[data-testid="errors"] tr[data-fingerprint]').first().getByRole('button', { name: 'show' }).click();
  const link = page.getByTestId('occurrences').locator('a').first();
  await link.waitFor();
  // Every frustration table fits in its card: example links wrap as whole links.
  const tables = page.locator('table[data-testid^="insight-"]');
  assert.ok((await tables.count()) >= 3);
  for (const t of await tables.all()) {
    const [right, inner] = await t.evaluate((el) => {
      const card = el.closest('.card').getBoundingClientRect();
      return [el.getBoundingClientRect().right, card.right - 15];
    });
    assert.ok(right <= inner, `${await t.getAttribute('data-testid')} runs ${Math.round(right - inner)} px past its card`);
  }
  await shot(page, 'insights');
  // The link opens the replay at the error's time.
  await link.click();
  const player = page.getByTestId('player');
  await player.waitFor();
  const ts = Number(new URL(page.url()).searchParams.get('ts'));
  const start = Number(await player.getAttribute('data-start'));
  await until('the replay at the error', async () => Number(await player.getAttribute('data-time')) >= ts - start - 50);
});

test('SQL: a query runs, shows its rows and a chart; live mode follows new data', async () => {
  const page = owner;
  const q = `SELECT url, count(*) AS views FROM page_views WHERE project = 'demo' GROUP BY url ORDER BY views DESC`;
  await page.goto(`${server.url}/sql?project=demo&sql=${encodeURIComponent(q)}`);
  const result = page.getByTestId('result');
  await result.waitFor();
  const rows = await sql(q);
  assert.equal(await result.locator('tbody tr').count(), rows.length);
  await page.locator('.chart canvas').waitFor();
  // Completion knows the views.
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+End');
  await page.keyboard.type(' -- \nselect * from rage_cl');
  await page.locator('.cm-tooltip-autocomplete').getByText('rage_clicks').waitFor();
  await page.keyboard.press('Escape');
  await shot(page, 'sql');
  // Live: the count of sessions follows an import.
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+a');
  await page.keyboard.type(`SELECT count(*) AS n FROM sessions WHERE project = 'demo'`);
  await page.getByRole('checkbox', { name: 'Live', exact: true }).check();
  const cell = result.locator('tbody tr td').first();
  await until('the live result', async () => (await result.count()) > 0 && (await cell.innerText()) !== '');
  const before = Number(await cell.innerText());
  const calm = JSON.parse(fs.readFileSync(path.join(FIXTURES, '01-calm.json'), 'utf8'));
  const shift = Date.now() - calm[calm.length - 1].timestamp;
  await importRecording('live-sql', calm.map((e) => ({ ...e, timestamp: e.timestamp + shift })));
  await until('the live count to grow', async () => Number(await cell.innerText()) === before + 1, 20_000);
  // A bad query is named.
  await page.getByRole('checkbox', { name: 'Live', exact: true }).uncheck();
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('SELECT nope FROM sessions');
  await page.getByTestId('run').click();
  await page.locator('.state.error').waitFor();
  assert.match(await page.locator('.state.error').innerText(), /nope/);
});

test('settings: ingest key, snippet, members, and a token shown once', async () => {
  const page = owner;
  await page.goto(`${server.url}/settings?project=demo`);
  await page.getByTestId('ingest-key').waitFor();
  assert.equal(await page.getByTestId('ingest-key').innerText(), 'demo');
  assert.match(await page.getByTestId('snippet').innerText(), new RegExp(`projectKey:"demo"`));
  await page.getByTestId('members').getByText(VIEWER[0]).waitFor();
  // How long recordings are kept: a bad value is named, a good one saved and shown.
  // What the server keeps, from its configuration (config/default.toml here).
  assert.equal(await page.getByTestId('retention').innerText(), "30 days (the server's retention)");
  assert.match(await page.getByTestId('sessions-kept').innerText(), /^listed for 30 days after they end, then only counted/);
  assert.match(await page.getByTestId('log-kept').innerText(), /^the views are rebuilt from the log's last 7 days/);
  await shot(page, 'settings-kept');
  const kept = page.getByLabel(/Recordings kept, in days/);
  await kept.fill('-3');
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await page.getByText('Recordings kept: a whole number of days').waitFor();
  await kept.fill('3650');
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await page.getByText('recordings older than 3,650 days are no longer served').waitFor();
  await until('the project shows its retention', async () => (await page.getByTestId('retention').innerText()) === '3,650 days');
  const form = page.getByRole('form', { name: 'New token' });
  await form.getByLabel('Name').fill('grafana');
  await form.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.getByTestId('new-token').locator('code').innerText()).trim();
  assert.match(secret, /^sf_/);
  // The token works, and the list shows it without its secret.
  const r = await fetch(`${server.url}/api/v1/me`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(r.status, 200);
  const listed = await (await fetch(`${server.url}/api/v1/projects`, { headers: { authorization: `Bearer ${secret}` } })).json();
  assert.ok(JSON.stringify(listed).includes('"retention_days":3650'), JSON.stringify(listed));
  await page.getByTestId('tokens').getByText('grafana').waitFor();
  assert.ok(!(await page.getByTestId('tokens').innerText()).includes(secret));
  await shot(page, 'settings');
  await page.reload();
  await page.getByTestId('tokens').waitFor();
  assert.equal(await page.getByTestId('new-token').count(), 0);
  assert.ok(!(await page.content()).includes(secret), 'the secret is shown once');
  // Kept 1 day: the fixtures' recordings (days old) are no longer served, and the
  // replay page says why.
  await page.getByLabel(/Recordings kept, in days/).fill('1');
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await until('1 day', async () => (await page.getByTestId('retention').innerText()) === '1 day');
  const [old] = await sql(`select session_id from sessions where project = 'demo' order by started_at limit 1`);
  await page.goto(`${server.url}/sessions/${old.session_id}?project=demo`);
  await page.getByText('Recordings of demo are kept 1 day (Settings)').waitFor();
  await shot(page, 'replay-past-retention');
  // Back to the server's retention, for the other tests.
  await page.goto(`${server.url}/settings?project=demo`);
  await page.getByLabel(/Recordings kept, in days/).fill('0');
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await until('the server retention again', async () => (await page.getByTestId('retention').innerText()) === "30 days (the server's retention)");
});

test('a new project: made in Settings, switched to, and every page shows its empty state', async () => {
  const page = owner;
  await page.goto(`${server.url}/settings?project=demo`);
  const form = page.getByRole('form', { name: 'New project' });
  await form.getByLabel('Name').fill('blank');
  await form.getByRole('button', { name: 'Create project' }).click();
  await until('the switch to the new project', async () => new URL(page.url()).searchParams.get('project') === 'blank');
  assert.equal(await page.getByLabel('Project', { exact: true }).inputValue(), 'blank');
  // Keyboard: g then l goes to the live dashboard, of the chosen project.
  await page.locator('body').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('g');
  await page.keyboard.press('l');
  await until('the dashboard by keyboard', async () => new URL(page.url()).pathname === '/');
  await page.getByText('No sessions recorded yet').waitFor();
  await page.getByText('No page views in this range yet.').waitFor();
  assert.equal(await page.locator('[data-metric="sessions"]').getAttribute('data-value'), '0');
  await shot(page, 'empty-dashboard');
  const empty = {
    '/sessions': 'No session matches these filters',
    '/heatmaps': 'No heatmap data yet',
    '/funnels': 'No funnel has data yet',
    '/insights': 'No uncaught errors in this range.',
  };
  for (const [p, text] of Object.entries(empty)) {
    await page.goto(`${server.url}${p}?project=blank`);
    await page.getByText(text).first().waitFor();
  }
  // The demo project's data is not in the new project's pages.
  await page.goto(`${server.url}/sql?project=blank&sql=${encodeURIComponent("SELECT count(*) AS n FROM sessions WHERE project = 'blank'")}`);
  await page.getByTestId('result').waitFor();
  assert.equal(await page.getByTestId('result').locator('tbody td').first().innerText(), '0');
});

test('an error state: the server gone, the page says so and offers a retry', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await login(page, OWNER);
  await page.goto(`${server.url}/sessions?project=demo&range=all`);
  await page.getByTestId('sessions').waitFor();
  // The API fails (as a server that went away would): the list shows why, with a retry.
  await page.route('**/api/v1/sessions?*', (route) => route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"the server is starting"}' }));
  await page.getByLabel('Rage clicks').check();
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByText('the server is starting').waitFor();
  await shot(page, 'error-state');
  await page.unroute('**/api/v1/sessions?*');
  await page.getByRole('button', { name: 'Try again' }).click();
  await page.getByTestId('sessions').waitFor();
  await ctx.close();
});
