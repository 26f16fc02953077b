import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterEach, expect, test, vi } from 'vitest';
import { install, replay } from '../src/stub';
import type { Sightflow } from '../src/types';
import { MemStorage, scriptedFetch } from './helpers';
import { rr } from './rrweb-mock';

vi.mock('@rrweb/record', async () => (await import('./rrweb-mock')).rrwebModule());
vi.mock('web-vitals', async () => (await import('./rrweb-mock')).vitalsModule());

type Win = { sightflow?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

afterEach(() => {
  const sf = (window as Win).sightflow;
  if (sf && typeof sf.stop == 'function') sf.stop();
  delete (window as Win).sightflow;
});

/** The one-line snippet, as the README gives it. */
function snippet(): string {
  const readme = readFileSync(resolve(process.cwd(), 'README.md'), 'utf8');
  const m = readme.match(/<!-- snippet -->\s*```html\n(<script>.*<\/script>)\n```/);
  if (!m) throw new Error('README has no snippet');
  expect(m[1].split('\n').length).toBe(1);
  return m[1].replace(/^<script>/, '').replace(/<\/script>$/, '');
}

function fakeTarget() {
  const calls: unknown[][] = [];
  const rec = (name: string) => (...args: unknown[]) => void calls.push([name, ...args]);
  const t = Object.fromEntries(
    ['init', 'capture', 'identify', 'reset', 'optOut', 'optIn', 'flush', 'stop', 'stats', 'isOptedOut'].map((n) => [n, rec(n)]),
  ) as unknown as Sightflow;
  return { t, calls };
}

test('replay calls the queued methods in order, skipping junk', () => {
  const { t, calls } = fakeTarget();
  replay(t, [['init', { projectKey: 'k' }], ['identify', 'u1', { a: 1 }], 'junk', ['nope', 1], ['capture', 'x'], ['optOut']]);
  expect(calls).toEqual([['init', { projectKey: 'k' }], ['identify', 'u1', { a: 1 }], ['capture', 'x'], ['optOut']]);
  replay(t, undefined);
  expect(calls.length).toBe(4);
});

test('install replaces the stub; a real SDK already in place stays', () => {
  const w: Win = { sightflow: { q: [['capture', 'a']] } };
  const first = fakeTarget();
  expect(install(w, first.t)).toBe(first.t);
  expect(w.sightflow).toBe(first.t);
  expect(first.calls).toEqual([['capture', 'a']]);
  const second = fakeTarget();
  expect(install(w, second.t)).toBe(first.t);
  expect(w.sightflow).toBe(first.t);
  const empty: Win = {};
  install(empty, second.t);
  expect(empty.sightflow).toBe(second.t);
});

test('the README snippet queues calls and loads sdk.js; sdk.js replays them in order', async () => {
  const appended: HTMLScriptElement[] = [];
  // Keep the script element out of the document: nothing is fetched.
  vi.spyOn(document.head, 'appendChild').mockImplementation((n) => (appended.push(n as HTMLScriptElement), n));
  new Function(snippet())();
  const w = window as Win;
  expect(appended.length).toBe(1);
  expect(appended[0].src).toBe('https://sightflow.example.com/sdk.js');
  expect(appended[0].async).toBe(true);
  expect(w.sightflow.q).toEqual([['init', { projectKey: 'YOUR_PROJECT_KEY' }]]);
  w.sightflow.identify('u1', { plan: 'pro' });
  w.sightflow.capture('clicked', { n: 1 });
  w.sightflow.identify('u2');

  // The page's own init options, plus the test seams.
  const f = scriptedFetch();
  Object.assign(w.sightflow.q[0][1], {
    host: 'https://sightflow.example.com',
    fetch: f.fetch,
    gzip: false,
    indexedDB: null,
    localStorage: new MemStorage(),
    sessionStorage: new MemStorage(),
  });
  rr.reset();
  await import('../src/iife');
  expect(typeof w.sightflow.init).toBe('function');
  expect(w.sightflow.q).toBeUndefined();
  expect(rr.records).toBe(1);
  await w.sightflow.flush();
  const sent = f.calls.flatMap((c) => JSON.parse(c.text));
  expect(sent.filter((e: { type: string }) => e.type != 'rrweb').map((e: Record<string, unknown>) => [e.type, e.user_id ?? e.name])).toEqual([
    ['identify', 'u1'],
    ['custom', 'clicked'],
    ['identify', 'u2'],
  ]);
  expect(f.calls[0].url.startsWith('https://sightflow.example.com/api/v1/track?key=YOUR_PROJECT_KEY&batch_id=')).toBe(true);

  // Running the snippet again once the SDK is there keeps it, and calls it directly.
  const real = w.sightflow;
  new Function(snippet())();
  expect(w.sightflow).toBe(real);
  expect(appended.length).toBe(1);
});
