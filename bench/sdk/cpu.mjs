// Main-thread CPU the SDK adds to a typical page, measured in Chromium.
//
//   make sdk && cargo build --release --bin sightflow
//   node bench/sdk/cpu.mjs [--seconds 20] [--rounds 3] [--bin target/release/sightflow]
//
// The same scripted visitor (mouse movement every 16 ms, wheel scrolling that grows
// the feed, typing, clicks) runs on bench/sdk/page.html without and with the SDK, in
// turn, each in a fresh browser context; the page itself mutates its DOM twice a
// second. The DevTools protocol's Performance.getMetrics gives the renderer main
// thread's TaskDuration (and ScriptDuration) before and after; the SDK's cost is the
// difference in task time divided by the wall time of the visit (% of one core).
// The SDK sends to a real `sightflow serve` on a loopback port.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const { chromium } = await import(pathToFileURL(path.join(root, 'sdk/node_modules/playwright-core/index.mjs')));

const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};
const SECONDS = Number(arg('seconds', 20));
const ROUNDS = Number(arg('rounds', 3));
const BIN = arg('bin', fs.existsSync(path.join(root, 'target/release/sightflow'))
  ? path.join(root, 'target/release/sightflow')
  : path.join(root, 'target/debug/sightflow'));

async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sightflow-sdk-bench-'));
  const config = path.join(dir, 'sightflow.toml');
  fs.writeFileSync(config, '[projects.demo]\nallowed_origins = ["http://127.0.0.1:*"]\n');
  const common = ['--config', config, '--data-dir', path.join(dir, 'data')];
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--pg-listen', '127.0.0.1:0', ...common], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  const url = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (l) => {
      const m = l.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (c) => reject(new Error(`serve exited with ${c}`)));
  });
  return { child, url, dir };
}

function startSite() {
  const page = fs.readFileSync(path.join(here, 'page.html'));
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r({ srv, url: `http://127.0.0.1:${srv.address().port}/` })));
}

async function visit(browser, url, withSdk) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  await page.goto(url);
  if (withSdk) await page.waitForFunction(() => typeof window.sightflow?.stats === 'function');
  await page.waitForTimeout(1000);
  const metrics = async () =>
    Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const m0 = await metrics();
  const t0 = Date.now();
  let i = 0;
  while (Date.now() - t0 < SECONDS * 1000) {
    const x = 640 + 400 * Math.sin(i / 20);
    const y = 400 + 250 * Math.cos(i / 33);
    await page.mouse.move(x, y);
    if (i % 30 === 0) await page.mouse.wheel(0, i % 600 < 450 ? 400 : -600);
    if (i % 250 === 100) await page.locator('#search').pressSequentially('red shoes', { delay: 30 });
    if (i % 125 === 60) await page.mouse.click(x, y);
    await page.waitForTimeout(16);
    i++;
  }
  const m1 = await metrics();
  const wall = (Date.now() - t0) / 1000;
  const stats = withSdk ? await page.evaluate(() => window.sightflow.stats()) : null;
  await ctx.close();
  return {
    wall,
    task: m1.TaskDuration - m0.TaskDuration,
    script: m1.ScriptDuration - m0.ScriptDuration,
    stats,
  };
}

const server = await startServer();
const site = await startSite();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const rows = [];
try {
  for (let r = 0; r < ROUNDS; r++) {
    const off = await visit(browser, site.url, false);
    const on = await visit(browser, `${site.url}#${encodeURIComponent(JSON.stringify({ projectKey: 'demo', host: server.url }))}`, true);
    rows.push({ off, on });
    const pct = ((on.task / on.wall - off.task / off.wall) * 100).toFixed(2);
    console.log(
      `round ${r + 1}: without ${(off.task * 1000).toFixed(0)} ms task / ${off.wall.toFixed(1)} s, ` +
        `with ${(on.task * 1000).toFixed(0)} ms task (${(on.script * 1000).toFixed(0)} ms script) / ${on.wall.toFixed(1)} s ` +
        `-> SDK ${pct} % of a core; sent ${JSON.stringify(on.stats)}`,
    );
  }
} finally {
  await browser.close();
  site.srv.close();
  server.child.kill();
}
const overhead = rows.map(({ off, on }) => (on.task / on.wall - off.task / off.wall) * 100).sort((a, b) => a - b);
const median = overhead[Math.floor(overhead.length / 2)];
const chromiumVersion = execFileSync(process.env.CHROMIUM ?? '/usr/bin/chromium', ['--version']).toString().trim();
console.log(`\nSDK main-thread overhead: median ${median.toFixed(2)} % of one core over ${ROUNDS} rounds of ${SECONDS} s ` +
  `(range ${overhead[0].toFixed(2)}..${overhead[overhead.length - 1].toFixed(2)} %); ${chromiumVersion}; ${os.cpus().length} cores`);
console.log(`reproduce: node bench/sdk/cpu.mjs --seconds ${SECONDS} --rounds ${ROUNDS} --bin ${path.relative(root, BIN)}`);
