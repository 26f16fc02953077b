import { gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { toJson } from '../src/batch';
import { memoryStore } from '../src/offline';
import { BEACON_MAX, gzip, transport } from '../src/transport';
import { utf8Length } from '../src/util';
import { type Answer, scriptedFetch, settle, zeroStats } from './helpers';

function harness(answers: Answer[] = [], o: { online?: boolean; beaconOk?: boolean | ((body: string) => boolean) } = {}) {
  const { fetch, calls } = scriptedFetch(answers);
  const stats = zeroStats();
  const store = memoryStore();
  const sleeps: number[] = [];
  const beacons: Array<{ url: string; body: string; id: string }> = [];
  let n = 0;
  let online = o.online ?? true;
  // A sleep that can be held open, to look at a batch while it waits for its retry.
  let hold: Promise<void> | undefined;
  const t = transport({
    url: (id) => 'https://h.test/api/v1/track?key=pk&batch_id=' + encodeURIComponent(id),
    fetch,
    nextId: () => 'tab1.' + n++,
    store,
    stats,
    random: () => 0.5,
    now: () => Date.parse('2030-01-01T00:00:00Z'),
    sleep: async (ms) => {
      sleeps.push(ms);
      if (hold) await hold;
    },
    online: () => online,
    beacon: (url, body) => {
      const ok = typeof o.beaconOk == 'function' ? o.beaconOk(body) : (o.beaconOk ?? true);
      if (ok) beacons.push({ url, body, id: new URL(url).searchParams.get('batch_id')! });
      return ok;
    },
    compress: async (s) => s,
  });
  return {
    t,
    calls,
    stats,
    store,
    sleeps,
    beacons,
    setOnline: (v: boolean) => (online = v),
    holdSleeps: () => {
      let release!: () => void;
      hold = new Promise((r) => (release = r));
      return () => {
        hold = undefined;
        release();
      };
    },
  };
}

const ev = (i: number, pad = 0) => JSON.stringify({ type: 'custom', seq: i, name: 'e' + i, pad: 'x'.repeat(pad) });

describe('sending', () => {
  test('POSTs the JSON array as text/plain, keepalive when small', async () => {
    const h = harness();
    h.t.send([ev(1), ev(2)]);
    await h.t.idle();
    expect(h.calls.length).toBe(1);
    const c = h.calls[0];
    expect(c.url).toBe('https://h.test/api/v1/track?key=pk&batch_id=tab1.0');
    expect(c.init.method).toBe('POST');
    expect((c.init.headers as Record<string, string>)['content-type']).toBe('text/plain');
    expect(c.init.keepalive).toBe(true);
    expect(JSON.parse(c.text).map((e: { seq: number }) => e.seq)).toEqual([1, 2]);
    expect(h.stats.sent).toBe(1);
  });

  test('no keepalive above 60 KB (browsers cap keepalive bodies)', async () => {
    const h = harness();
    h.t.send([ev(1, 70 * 1024)]);
    await h.t.idle();
    expect(h.calls[0].init.keepalive).toBe(false);
  });

  test('batches go one at a time, in order, each with its own id', async () => {
    const h = harness();
    for (let i = 0; i < 5; i++) h.t.send([ev(i)]);
    await h.t.idle();
    expect(h.calls.map((c) => c.id)).toEqual(['tab1.0', 'tab1.1', 'tab1.2', 'tab1.3', 'tab1.4']);
    expect(h.calls.map((c) => JSON.parse(c.text)[0].seq)).toEqual([0, 1, 2, 3, 4]);
  });

  test('counts what the server rejected one by one and duplicates', async () => {
    const h = harness([{ status: 200, body: { accepted: 1, rejected: [{ index: 1, reason: 'x' }], duplicate: true } }]);
    h.t.send([ev(1), ev(2)]);
    await h.t.idle();
    expect(h.stats.rejected).toBe(1);
    expect(h.stats.duplicate).toBe(1);
  });

  test('gzip output is a gzip stream of the JSON', async () => {
    const json = toJson([ev(1), ev(2, 5000)]);
    const z = await gzip(json);
    expect(z).toBeInstanceOf(Uint8Array);
    const bytes = z as Uint8Array;
    expect([bytes[0], bytes[1]]).toEqual([0x1f, 0x8b]);
    expect(bytes.length).toBeLessThan(json.length / 4);
    expect(gunzipSync(bytes).toString()).toBe(json);
  });
});

describe('retries', () => {
  test.each<[string, Answer]>([
    ['500', 500],
    ['502', 502],
    ['503', 503],
    ['429', 429],
    ['a network error', 'network'],
  ])('%s is retried with the same batch id', async (_, answer) => {
    const h = harness([answer, answer]);
    h.t.send([ev(1)]);
    await h.t.idle();
    expect(h.calls.length).toBe(3);
    expect(new Set(h.calls.map((c) => c.id))).toEqual(new Set(['tab1.0']));
    expect(h.stats).toMatchObject({ sent: 1, retried: 2, dropped4xx: 0, offlineQueued: 0 });
    expect(h.sleeps).toEqual([500, 1000]);
  });

  test.each([400, 401, 403, 404, 413, 422])('%i is never retried: dropped and counted', async (status) => {
    const h = harness([status]);
    h.t.send([ev(1)]);
    h.t.send([ev(2)]);
    await h.t.idle();
    expect(h.calls.map((c) => c.id)).toEqual(['tab1.0', 'tab1.1']);
    expect(h.stats).toMatchObject({ sent: 1, retried: 0, dropped4xx: 1, offlineQueued: 0 });
    expect(await h.store.list()).toEqual([]);
  });

  test('Retry-After is honoured on 429 and 503, not on other 5xx', async () => {
    const h = harness([
      { status: 429, headers: { 'Retry-After': '7' } },
      { status: 503, headers: { 'retry-after': 'Tue, 01 Jan 2030 00:00:03 GMT' } },
      { status: 500, headers: { 'Retry-After': '60' } },
    ]);
    h.t.send([ev(1)]);
    await h.t.idle();
    expect(h.sleeps).toEqual([7000, 3000, 2000]);
    expect(h.stats.sent).toBe(1);
  });

  test('after 6 tries the batch goes to the offline queue, id kept', async () => {
    const h = harness(Array(10).fill(503));
    h.t.send([ev(1), ev(2)]);
    await h.t.idle();
    expect(h.calls.length).toBe(6);
    expect(h.sleeps).toEqual([500, 1000, 2000, 4000, 8000]);
    const stored = await h.store.list();
    expect(stored.map((b) => b.id)).toEqual(['tab1.0']);
    expect(stored[0].body).toBe(toJson([ev(1), ev(2)]));
    expect(h.stats).toMatchObject({ sent: 0, retried: 5, offlineQueued: 1 });
  });

  test('when the browser is offline the batch is stored without a try', async () => {
    const h = harness([], { online: false });
    h.t.send([ev(1)]);
    await h.t.idle();
    expect(h.calls.length).toBe(0);
    expect((await h.store.list()).length).toBe(1);
  });

  test('a success drains what waits offline', async () => {
    const h = harness(Array(6).fill('network'));
    h.t.send([ev(1)]);
    await h.t.idle();
    expect((await h.store.list()).length).toBe(1);
    h.t.send([ev(2)]);
    await h.t.idle();
    await settle();
    expect(h.calls.slice(6).map((c) => c.id)).toEqual(['tab1.1', 'tab1.0']);
    expect(await h.store.list()).toEqual([]);
    expect(h.stats.offlineDrained).toBe(1);
  });
});

describe('page hide', () => {
  test('the queue leaves by beacon in chunks of at most 64 KB, each its own batch id', () => {
    const h = harness();
    const items = Array.from({ length: 60 }, (_, i) => ev(i, 3000));
    h.t.hide(items);
    expect(h.beacons.length).toBeGreaterThan(2);
    for (const b of h.beacons) expect(utf8Length(b.body)).toBeLessThanOrEqual(BEACON_MAX);
    expect(new Set(h.beacons.map((b) => b.id)).size).toBe(h.beacons.length);
    expect(h.beacons.flatMap((b) => JSON.parse(b.body).map((e: { seq: number }) => e.seq))).toEqual(items.map((_, i) => i));
    expect(h.stats.beaconed).toBe(h.beacons.length);
    expect(h.calls.length).toBe(0);
  });

  test('what the beacon refuses, and events over 64 KB, go to the offline queue', async () => {
    let n = 0;
    const h = harness([], { beaconOk: () => n++ < 1 });
    h.t.hide([ev(1, 40000), ev(2, 40000), ev(3, 70000), ev(4)]);
    await settle();
    expect(h.beacons.map((b) => JSON.parse(b.body).length)).toEqual([1]);
    const stored = await h.store.list();
    expect(stored.map((b) => JSON.parse(b.body).map((e: { seq: number }) => e.seq))).toEqual([[2], [3], [4]]);
    expect(h.stats).toMatchObject({ beaconed: 1, offlineQueued: 3 });
  });

  test('queued batches join the beacon; a batch waiting for its retry goes with its own id', async () => {
    const h = harness([503]);
    const release = h.holdSleeps();
    h.t.send([ev(1)]);
    h.t.send([ev(2)]);
    await settle();
    expect(h.calls.length).toBe(1);
    h.t.hide([ev(3)]);
    expect(h.beacons.map((b) => b.id)).toEqual(['tab1.0', 'tab1.1']);
    expect(JSON.parse(h.beacons[1].body).map((e: { seq: number }) => e.seq)).toEqual([2, 3]);
    release();
    await h.t.idle();
    // The beaconed batch is not tried again.
    expect(h.calls.length).toBe(1);
  });
});
