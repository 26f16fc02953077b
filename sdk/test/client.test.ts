import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { createSightflow, KEYS } from '../src/client';
import { sampled } from '../src/sample';
import type { Options, Sightflow } from '../src/types';
import { MemStorage, scriptedFetch, settle } from './helpers';
import { rr, tick, vitals } from './rrweb-mock';

vi.mock('@rrweb/record', async () => (await import('./rrweb-mock')).rrwebModule());
vi.mock('web-vitals', async () => (await import('./rrweb-mock')).vitalsModule());

/* eslint-disable @typescript-eslint/no-explicit-any */
type Ev = Record<string, any>;

const live: Sightflow[] = [];
const beacons: Array<{ url: string; body: string }> = [];

function setVisibility(v: 'hidden' | 'visible') {
  Object.defineProperty(document, 'visibilityState', { value: v, configurable: true });
  document.dispatchEvent(new Event('visibilitychange'));
}

/** A client on memory storage with a scripted fetch; `events()` flushes and returns what was sent. */
function client(extra: Partial<Options> = {}, st = { local: new MemStorage(), session: new MemStorage() }) {
  const f = scriptedFetch();
  const sf = createSightflow('https://cdn.test');
  live.push(sf);
  sf.init({
    projectKey: 'pk 1',
    fetch: f.fetch,
    gzip: false,
    indexedDB: null,
    localStorage: st.local,
    sessionStorage: st.session,
    batchIntervalMs: 1e9,
    now: tick,
    ...extra,
  });
  const sent = () => f.calls.flatMap((c) => JSON.parse(c.text) as Ev[]);
  const events = async () => {
    await sf.flush();
    return sent();
  };
  return { sf, f, st, events, sent };
}

const types = (evs: Ev[]) => evs.map((e) => (e.type == 'rrweb' ? 'rrweb:' + e.event.type : e.type));

beforeEach(() => {
  rr.reset();
  beacons.length = 0;
  Object.defineProperty(navigator, 'sendBeacon', {
    configurable: true,
    value: (url: string, blob: Blob) => {
      // Blob text is async; keep the Blob and read it in the test.
      beacons.push({ url, body: blob as unknown as string });
      return true;
    },
  });
  history.replaceState(null, '', '/');
  document.title = 'Home';
});

afterEach(() => {
  live.splice(0).forEach((sf) => sf.stop());
  Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
});

describe('wire format', () => {
  test('rrweb events travel in the common envelope, ts from the rrweb timestamp', async () => {
    const { events, f, st } = client();
    const evs = await events();
    expect(types(evs)).toEqual(['rrweb:4', 'rrweb:2']);
    const device = st.local.getItem(KEYS.device)!;
    const tab = st.session.getItem(KEYS.tab)!;
    expect(device).toMatch(/^[0-9a-f]{32}$/);
    expect(tab).toMatch(/^[0-9a-f]{32}$/);
    for (const e of evs) {
      expect(Object.keys(e)).toEqual(['type', 'device_id', 'tab_id', 'seq', 'ts', 'url', 'event']);
      expect(e).toMatchObject({ device_id: device, tab_id: tab, url: 'https://shop.test/' });
      expect(e.ts).toBe(e.event.timestamp);
    }
    expect(f.calls[0].url).toBe(`https://cdn.test/api/v1/track?key=pk%201&batch_id=${tab}.0`);
    expect((f.calls[0].init.headers as Record<string, string>)['content-type']).toBe('text/plain');
  });

  test('host overrides the script origin', async () => {
    const { events, f } = client({ host: 'http://127.0.0.1:8080/' });
    await events();
    expect(f.calls[0].url.startsWith('http://127.0.0.1:8080/api/v1/track?key=pk%201&batch_id=')).toBe(true);
  });

  test('seq increases over every event and continues after a reload, and so do batch ids', async () => {
    const st = { local: new MemStorage(), session: new MemStorage() };
    const a = client({}, st);
    a.sf.capture('one');
    const first = await a.events();
    a.sf.stop();
    const b = client({}, st);
    b.sf.capture('two');
    const second = await b.events();
    const seqs = first.concat(second).map((e) => e.seq);
    expect(seqs).toEqual([0, 1, 2, 3, 4, 5]);
    const tab = st.session.getItem(KEYS.tab);
    expect(a.f.calls.map((c) => c.id)).toEqual([`${tab}.0`]);
    expect(b.f.calls.map((c) => c.id)).toEqual([`${tab}.1`]);
    // Same browser, new tab: same device, new tab id, seq from 0.
    const c = client({}, { local: st.local, session: new MemStorage() });
    const third = await c.events();
    expect(third[0]).toMatchObject({ device_id: first[0].device_id, seq: 0 });
    expect(third[0].tab_id).not.toBe(tab);
  });

  test('Meta carries the scrubbed href, scrubbed referrer, user agent and title; no extra page_view', async () => {
    history.replaceState(null, '', '/welcome?token=abc&utm_source=news');
    Object.defineProperty(document, 'referrer', { value: 'https://ref.test/login?email=a%40b.c', configurable: true });
    document.title = 'Welcome';
    const { events } = client();
    const evs = await events();
    expect(types(evs)).toEqual(['rrweb:4', 'rrweb:2']);
    expect(evs[0].event.data).toEqual({
      href: 'https://shop.test/welcome?token=[redacted]&utm_source=news',
      width: 1280,
      height: 800,
      referrer: 'https://ref.test/login?email=[redacted]',
      userAgent: navigator.userAgent,
      title: 'Welcome',
    });
    expect(evs[0].url).toBe('https://shop.test/welcome?token=[redacted]&utm_source=news');
    Object.defineProperty(document, 'referrer', { value: '', configurable: true });
  });

  test('custom, identify and vitals events', async () => {
    const { sf, events } = client();
    sf.capture('signup', { plan: 'pro', seats: 3 });
    sf.capture('bare');
    sf.identify('u-42', { plan: 'pro' });
    vitals.lcp({ value: 1234.5 });
    vitals.cls({ value: 0.02 });
    vitals.inp({ value: 80 });
    vitals.ttfb({ value: 120 });
    vitals.fcp({ value: 900 });
    const evs = (await events()).filter((e) => e.type != 'rrweb');
    expect(evs.map(({ type, name, properties, user_id, traits, lcp, cls, inp, ttfb, fcp }) =>
      JSON.parse(JSON.stringify({ type, name, properties, user_id, traits, lcp, cls, inp, ttfb, fcp })),
    )).toEqual([
      { type: 'custom', name: 'signup', properties: { plan: 'pro', seats: 3 } },
      { type: 'custom', name: 'bare', properties: {} },
      { type: 'identify', user_id: 'u-42', traits: { plan: 'pro' } },
      { type: 'vitals', lcp: 1234.5 },
      { type: 'vitals', cls: 0.02 },
      { type: 'vitals', inp: 80 },
      { type: 'vitals', ttfb: 120 },
      { type: 'vitals', fcp: 900 },
    ]);
  });

  test('events that cannot be serialised are skipped, the SDK does not throw', async () => {
    const { sf, events } = client();
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    expect(() => sf.capture('bad', loop)).not.toThrow();
    sf.capture('good');
    const evs = await events();
    expect(evs.filter((e) => e.type == 'custom').map((e) => e.name)).toEqual(['good']);
    expect(warn).toHaveBeenCalled();
  });
});

describe('batching in the client', () => {
  test('a full queue is sent at once, in batches within maxBatchBytes', async () => {
    const { sf, f } = client({ maxBatchBytes: 4000 });
    for (let i = 0; i < 40; i++) sf.capture('e' + i, { pad: 'x'.repeat(300) });
    await settle();
    expect(f.calls.length).toBeGreaterThan(3);
    for (const c of f.calls) expect(new TextEncoder().encode(c.text).length).toBeLessThanOrEqual(4000);
  });

  test('the interval sends what is queued', async () => {
    const { sf, f } = client({ batchIntervalMs: 30 });
    sf.capture('tick');
    await new Promise((r) => setTimeout(r, 100));
    expect(f.calls.length).toBeGreaterThanOrEqual(1);
    expect(f.calls.flatMap((c) => JSON.parse(c.text)).map((e: Ev) => e.name)).toContain('tick');
  });
});

describe('console records', () => {
  test('uncaught errors recorded by the console plugin are dropped, other console records kept', async () => {
    const { events } = client();
    const plugin = (level: string, first: string) => ({
      type: 6,
      data: { plugin: 'rrweb/console@1', payload: { level, trace: [], payload: [first] } },
      timestamp: tick(),
    });
    rr.emit!(plugin('error', '"Uncaught TypeError: Cannot read properties of undefined (reading \'rules\')"'));
    rr.emit!(plugin('error', '"Uncaught (in promise) Error: boom"'));
    rr.emit!(plugin('error', '"payment failed"'));
    rr.emit!(plugin('log', '"Uncaught is just a word here"'));
    rr.emit!(plugin('warn', '"careful"'));
    rr.emit!({ type: 6, data: { plugin: 'other/plugin@1', payload: { level: 'error', payload: ['"Uncaught x"'] } }, timestamp: tick() });
    const kept = (await events()).filter((e) => e.event?.type == 6).map((e) => e.event.data.payload.payload[0]);
    expect(kept).toEqual(['"payment failed"', '"Uncaught is just a word here"', '"careful"', '"Uncaught x"']);
  });

  test('the console plugin is handed to rrweb unless recordConsole is false', () => {
    client();
    expect(rr.opts.plugins.map((p: { name: string }) => p.name)).toEqual(['rrweb/console@1']);
    live.pop()!.stop();
    client({ recordConsole: false });
    expect(rr.opts.plugins).toEqual([]);
  });
});

describe('errors', () => {
  test('window errors become error events', async () => {
    const { events } = client({ scrubParams: ['v'] });
    const error = new Error('x is not a function');
    window.dispatchEvent(
      new ErrorEvent('error', { message: 'Uncaught TypeError: x is not a function', filename: 'https://shop.test/app.js?v=3', lineno: 12, colno: 7, error }),
    );
    const [e] = (await events()).filter((x) => x.type == 'error');
    expect(e).toMatchObject({
      message: 'Uncaught TypeError: x is not a function',
      source: 'https://shop.test/app.js?v=[redacted]:12:7',
      stack: error.stack,
      url: 'https://shop.test/',
    });
  });

  test('unhandled rejections become error events', async () => {
    const { events } = client();
    const reject = (reason: unknown) => window.dispatchEvent(Object.assign(new Event('unhandledrejection'), { reason }));
    const error = new Error('network down');
    reject(error);
    reject(42);
    reject(undefined);
    const errs = (await events()).filter((x) => x.type == 'error');
    expect(errs.map((e) => e.message)).toEqual([
      'Unhandled rejection: network down',
      'Unhandled rejection: 42',
      'Unhandled rejection: undefined',
    ]);
    expect(errs[0].stack).toBe(error.stack);
    expect(errs[1].stack).toBe('');
  });
});

describe('SPA navigation', () => {
  test('pushState, replaceState, popstate and hashchange send page_view when the scrubbed href changes', async () => {
    const { events } = client();
    document.title = 'Pricing';
    history.pushState({}, '', '/pricing');
    history.replaceState({}, '', '/pricing'); // same URL: nothing
    history.replaceState({}, '', '/pricing?token=a');
    history.replaceState({}, '', '/pricing?token=b'); // same once scrubbed: nothing
    location.hash = '#faq';
    await settle(3);
    history.back();
    await settle(3);
    const pv = (await events()).filter((e) => e.type == 'page_view');
    expect(pv.map((e) => [e.url, e.referrer])).toEqual([
      ['https://shop.test/pricing', 'https://shop.test/'],
      ['https://shop.test/pricing?token=[redacted]', 'https://shop.test/pricing'],
      ['https://shop.test/pricing?token=[redacted]#faq', 'https://shop.test/pricing?token=[redacted]'],
      ['https://shop.test/pricing?token=[redacted]', 'https://shop.test/pricing?token=[redacted]#faq'],
    ]);
    expect(pv[0]).toMatchObject({
      viewport_width: window.innerWidth,
      viewport_height: window.innerHeight,
      user_agent: navigator.userAgent,
      title: 'Pricing',
    });
    expect(typeof pv[0].page_height).toBe('number');
  });

  test('nothing is recorded on a blocklisted page; coming back takes a full snapshot instead of a page_view', async () => {
    const { sf, events } = client({ urlBlocklist: ['*/admin*', /\/account\/\d+/] });
    history.pushState({}, '', '/admin/users?q=1');
    sf.capture('hidden');
    rr.emit!({ type: 3, data: { source: 2, type: 2, id: 5, x: 1, y: 1 }, timestamp: tick() });
    history.pushState({}, '', '/account/7');
    history.pushState({}, '', '/');
    sf.capture('visible');
    const evs = await events();
    expect(types(evs)).toEqual(['rrweb:4', 'rrweb:2', 'rrweb:4', 'rrweb:2', 'custom']);
    expect(rr.snapshots).toBe(1);
    expect(evs.some((e) => JSON.stringify(e).includes('admin') || JSON.stringify(e).includes('account'))).toBe(false);
    // The Meta after a blocked page has no referrer: it would name the blocked page.
    expect(evs[2].event.data).toMatchObject({ href: 'https://shop.test/', referrer: '' });
  });

  test('a page loaded on the blocklist records nothing until it leaves it', async () => {
    history.replaceState(null, '', '/admin');
    const { events } = client({ urlBlocklist: ['https://shop.test/admin'] });
    expect(await events()).toEqual([]);
    history.pushState({}, '', '/home');
    expect(types(await events())).toEqual(['rrweb:4', 'rrweb:2']);
  });
});

describe('page lifecycle', () => {
  test('hidden sends exit{hidden:true} by beacon, pagehide exit{hidden:false}, visible again an activity', async () => {
    const { sf, f } = client();
    sf.capture('before');
    setVisibility('hidden');
    expect(f.calls.length).toBe(0);
    expect(beacons.length).toBe(1);
    const first = JSON.parse(await (beacons[0].body as unknown as Blob).text());
    expect(first.map((e: Ev) => e.type)).toEqual(['rrweb', 'rrweb', 'custom', 'exit']);
    expect(first[3].hidden).toBe(true);
    expect((beacons[0].body as unknown as Blob).type).toContain('text/plain');
    // web-vitals reports on hide, after the SDK's listener: those follow by beacon too.
    vitals.cls({ value: 0.1 });
    await settle(1);
    expect(beacons.length).toBe(2);
    expect(JSON.parse(await (beacons[1].body as unknown as Blob).text())[0]).toMatchObject({ type: 'vitals', cls: 0.1 });
    setVisibility('visible');
    window.dispatchEvent(new Event('pagehide'));
    expect(beacons.length).toBe(3);
    const last = JSON.parse(await (beacons[2].body as unknown as Blob).text());
    expect(last.map((e: Ev) => [e.type, e.name ?? e.hidden])).toEqual([
      ['activity', 'visible'],
      ['exit', false],
    ]);
    expect(new Set(beacons.map((b) => new URL(b.url).searchParams.get('batch_id'))).size).toBe(3);
    expect(sf.stats().beaconed).toBe(3);
  });

  test('a refused beacon puts the chunk in the offline queue, sent on the next drain', async () => {
    Object.defineProperty(navigator, 'sendBeacon', { configurable: true, value: () => false });
    const { sf, f } = client();
    window.dispatchEvent(new Event('pagehide'));
    await settle();
    expect(sf.stats().offlineQueued).toBe(1);
    window.dispatchEvent(new Event('online'));
    await settle();
    expect(f.calls.length).toBe(1);
    expect(types(JSON.parse(f.calls[0].text))).toEqual(['rrweb:4', 'rrweb:2', 'exit']);
    expect(sf.stats()).toMatchObject({ offlineDrained: 1, sent: 1 });
  });
});

describe('identity', () => {
  test('identify persists the user id and is re-sent on every init; reset forgets it', async () => {
    const st = { local: new MemStorage(), session: new MemStorage() };
    const a = client({}, st);
    a.sf.identify('u1');
    await a.events();
    a.sf.stop();
    const b = client({}, st);
    const evs = await b.events();
    expect(evs.filter((e) => e.type == 'identify').map((e) => [e.user_id, e.traits])).toEqual([['u1', undefined]]);
    b.sf.reset();
    b.sf.stop();
    const c = client({}, st);
    expect((await c.events()).filter((e) => e.type == 'identify')).toEqual([]);
  });

  test('reset rotates the device id and starts the new device with a full snapshot', async () => {
    const { sf, events, st } = client();
    sf.identify('u1');
    const before = st.local.getItem(KEYS.device);
    sf.reset();
    sf.capture('after');
    const evs = await events();
    const after = st.local.getItem(KEYS.device);
    expect(after).not.toBe(before);
    expect(rr.snapshots).toBe(1);
    expect(st.local.getItem(KEYS.user)).toBeNull();
    expect(types(evs)).toEqual(['rrweb:4', 'rrweb:2', 'identify', 'rrweb:4', 'rrweb:2', 'custom']);
    expect(evs.map((e) => e.device_id)).toEqual([before, before, before, after, after, after]);
  });
});

describe('consent', () => {
  test('optOut stops recording, clears the queue and persists across a re-init; optIn resumes', async () => {
    const st = { local: new MemStorage(), session: new MemStorage() };
    const a = client({}, st);
    a.sf.capture('queued');
    a.sf.optOut();
    expect(a.sf.isOptedOut()).toBe(true);
    expect(rr.stops).toBe(1);
    a.sf.capture('ignored');
    expect(await a.events()).toEqual([]);
    expect(a.sf.stats().recording).toBe(false);
    a.sf.stop();

    rr.reset();
    const b = client({}, st);
    expect(b.sf.isOptedOut()).toBe(true);
    expect(rr.records).toBe(0);
    b.sf.capture('ignored');
    expect(await b.events()).toEqual([]);

    b.sf.optIn();
    expect(b.sf.isOptedOut()).toBe(false);
    expect(rr.records).toBe(1);
    b.sf.capture('back');
    expect(types(await b.events())).toEqual(['rrweb:4', 'rrweb:2', 'custom']);
    expect(st.local.getItem(KEYS.optOut)).toBeNull();
  });

  test('sampling decides per device', async () => {
    const inId = Array.from({ length: 100 }, (_, i) => 'dev' + i).find((id) => sampled(id, 0.5))!;
    const outId = Array.from({ length: 100 }, (_, i) => 'dev' + i).find((id) => !sampled(id, 0.5))!;
    for (const [id, recorded] of [[inId, true], [outId, false]] as const) {
      rr.reset();
      const local = new MemStorage();
      local.setItem(KEYS.device, id);
      const { sf, events } = client({ sampleRate: 0.5 }, { local, session: new MemStorage() });
      sf.capture('x');
      expect(rr.records).toBe(recorded ? 1 : 0);
      expect((await events()).length > 0).toBe(recorded);
    }
    rr.reset();
    const { events } = client({ sampleRate: 0 });
    expect(rr.records).toBe(0);
    expect(await events()).toEqual([]);
  });

  test('Do Not Track and Global Privacy Control are honoured only when asked', async () => {
    Object.defineProperty(navigator, 'doNotTrack', { value: '1', configurable: true });
    client({ respectDoNotTrack: true });
    expect(rr.records).toBe(0);
    client();
    expect(rr.records).toBe(1);
    Object.defineProperty(navigator, 'doNotTrack', { value: null, configurable: true });
    Object.defineProperty(navigator, 'globalPrivacyControl', { value: true, configurable: true });
    client({ respectDoNotTrack: true });
    expect(rr.records).toBe(1);
    Object.defineProperty(navigator, 'globalPrivacyControl', { value: undefined, configurable: true });
    client({ respectDoNotTrack: true });
    expect(rr.records).toBe(2);
  });
});

describe('robustness', () => {
  test('init without a projectKey warns and records nothing; calls before init are ignored', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const sf = createSightflow();
    sf.capture('early');
    sf.identify('u');
    sf.reset();
    await sf.flush();
    sf.init({} as Options);
    expect(warn).toHaveBeenCalled();
    expect(rr.records).toBe(0);
    expect(sf.stats()).toMatchObject({ events: 0, recording: false });
  });

  test('the offline-drop counter persists in localStorage', () => {
    const local = new MemStorage();
    local.setItem(KEYS.dropped, '7');
    const { sf } = client({}, { local, session: new MemStorage() });
    expect(sf.stats().offlineDropped).toBe(7);
  });
});
