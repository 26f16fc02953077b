// What the browser tests of the SDK (sdk/browser) and of the console (ui/browser)
// share: a real `sightflow serve` on free loopback ports with its own data directory,
// SQL through the public API, and bounded polling. Plain Node, no packages.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.SIGHTFLOW_BIN ?? path.join(root, 'target/debug/sightflow');
export const SHOTS = process.env.SCREENSHOTS ?? path.join(root, 'target/screenshots');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

/**
 * Starts `serve` with `config` (TOML text) in a fresh directory; `users` are made
 * first with the CLI (`[email, role, password, project?]`). Resolves when it listens.
 */
export async function startServer({ config, users = [], prefix = 'sightflow-browser-' }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const file = path.join(dir, 'sightflow.toml');
  fs.writeFileSync(file, config);
  const data = path.join(dir, 'data');
  const common = ['--config', file, '--data-dir', data];
  const token = execFileSync(BIN, ['token', 'create', '--role', 'owner', '--name', 'browser-tests', ...common]).toString().trim();
  for (const [email, role, password, project] of users) {
    const scope = project ? ['--project', project] : [];
    execFileSync(BIN, ['user', 'add', email, '--role', role, ...scope, ...common], { input: `${password}\n`, stdio: ['pipe', 'ignore', 'pipe'] });
  }
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--pg-listen', '127.0.0.1:0', ...common], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d.toString();
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log}`)), 60_000);
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = line.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
  });
  const server = { child, url, token, dir, data, log: () => log };
  server.sql = (query, minAsOf) => sql(server, query, minAsOf);
  server.stop = () => {
    child.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return server;
}

/** Rows (as objects) of `query` over the API, with the owner token. */
export async function sql(server, query, minAsOf) {
  const r = await fetch(`${server.url}/api/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(minAsOf ? { sql: query, min_as_of: minAsOf } : { sql: query }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, `${query}: ${JSON.stringify(body)}`);
  return body.rows.map((row) => Object.fromEntries(body.columns.map((c, i) => [c, row[i]])));
}

/** Polls `probe` (every 250 ms, up to `ms`) until it returns something truthy. */
export async function until(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
