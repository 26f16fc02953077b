import { IDBFactory } from 'fake-indexeddb';
import { describe, expect, test } from 'vitest';
import { idbStore, memoryStore, type OfflineStore } from '../src/offline';
import { transport } from '../src/transport';
import { type Answer, scriptedFetch, zeroStats } from './helpers';

const batch = (i: number, bytes = 10) => ({ id: 'tab.' + i, body: JSON.stringify([{ i, p: 'x'.repeat(Math.max(0, bytes - 20)) }]), bytes });

function drainer(store: OfflineStore, answers: Answer[] = []) {
  const { fetch, calls } = scriptedFetch(answers);
  const stats = zeroStats();
  const t = transport({
    url: (id) => 'https://h.test/api/v1/track?key=pk&batch_id=' + encodeURIComponent(id),
    fetch,
    nextId: () => 'new',
    store,
    stats,
    random: () => 0,
    now: () => 0,
    sleep: async () => {},
    online: () => true,
    beacon: () => false,
    compress: async (s) => s,
  });
  return { t, calls, stats };
}

describe.each([
  ['IndexedDB', (caps?: { maxBytes: number; maxBatches: number }, onDrop?: (n: number) => void) => idbStore(new IDBFactory(), caps, onDrop)],
  ['memory', (caps?: { maxBytes: number; maxBatches: number }, onDrop?: (n: number) => void) => memoryStore(caps, onDrop)],
])('%s store', (_, make) => {
  test('keeps batches in arrival order, ids and bodies intact', async () => {
    const s = make();
    for (let i = 0; i < 5; i++) await s.put(batch(i));
    const all = await s.list();
    expect(all.map((b) => b.id)).toEqual(['tab.0', 'tab.1', 'tab.2', 'tab.3', 'tab.4']);
    expect(all[3].body).toBe(batch(3).body);
    await s.remove(all[0].k!);
    expect((await s.list()).map((b) => b.id)).toEqual(['tab.1', 'tab.2', 'tab.3', 'tab.4']);
    await s.clear();
    expect(await s.list()).toEqual([]);
  });

  test('over the batch cap the oldest go, and are counted', async () => {
    let dropped = 0;
    const s = make({ maxBytes: 1e9, maxBatches: 3 }, (n) => (dropped += n));
    for (let i = 0; i < 7; i++) await s.put(batch(i));
    expect((await s.list()).map((b) => b.id)).toEqual(['tab.4', 'tab.5', 'tab.6']);
    expect(dropped).toBe(4);
  });

  test('over the byte cap the oldest go, and are counted', async () => {
    let dropped = 0;
    const s = make({ maxBytes: 1000, maxBatches: 500 }, (n) => (dropped += n));
    for (let i = 0; i < 5; i++) await s.put(batch(i, 400));
    expect((await s.list()).map((b) => b.id)).toEqual(['tab.3', 'tab.4']);
    expect(dropped).toBe(3);
  });

  test('a drain delivers each batch once, in order, and empties the queue', async () => {
    const s = make();
    for (let i = 0; i < 4; i++) await s.put(batch(i));
    const d = drainer(s);
    await d.t.drain();
    expect(d.calls.map((c) => c.id)).toEqual(['tab.0', 'tab.1', 'tab.2', 'tab.3']);
    expect(d.calls.map((c) => c.text)).toEqual([0, 1, 2, 3].map((i) => batch(i).body));
    expect(await s.list()).toEqual([]);
    expect(d.stats).toMatchObject({ offlineDrained: 4, sent: 4 });
    await d.t.drain();
    expect(d.calls.length).toBe(4);
  });

  test('concurrent drains do not send a batch twice', async () => {
    const s = make();
    for (let i = 0; i < 3; i++) await s.put(batch(i));
    const d = drainer(s);
    await Promise.all([d.t.drain(), d.t.drain(), d.t.drain()]);
    expect(d.calls.map((c) => c.id)).toEqual(['tab.0', 'tab.1', 'tab.2']);
  });

  test('a refused batch (4xx) is deleted; a retryable failure stops the drain and keeps the rest', async () => {
    const s = make();
    for (let i = 0; i < 4; i++) await s.put(batch(i));
    const d = drainer(s, [200, 400, 503]);
    await d.t.drain();
    expect(d.calls.map((c) => c.id)).toEqual(['tab.0', 'tab.1', 'tab.2']);
    expect((await s.list()).map((b) => b.id)).toEqual(['tab.2', 'tab.3']);
    expect(d.stats).toMatchObject({ sent: 1, dropped4xx: 1, offlineDrained: 2 });
    await d.t.drain();
    expect(d.calls.slice(3).map((c) => c.id)).toEqual(['tab.2', 'tab.3']);
    expect(await s.list()).toEqual([]);
  });
});

test('IndexedDB data outlives the store object (a later page load)', async () => {
  const idb = new IDBFactory();
  await idbStore(idb).put(batch(1));
  await idbStore(idb).put(batch(2));
  expect((await idbStore(idb).list()).map((b) => b.id)).toEqual(['tab.1', 'tab.2']);
});

test('an IndexedDB that cannot open falls back to a bounded queue in memory', async () => {
  const broken = {
    open() {
      const req: Record<string, unknown> = { error: new Error('denied') };
      setTimeout(() => (req.onerror as () => void)());
      return req;
    },
  } as unknown as IDBFactory;
  let dropped = 0;
  const s = idbStore(broken, { maxBytes: 1e9, maxBatches: 2 }, (n) => (dropped += n));
  for (let i = 0; i < 3; i++) await s.put(batch(i));
  expect((await s.list()).map((b) => b.id)).toEqual(['tab.1', 'tab.2']);
  expect(dropped).toBe(1);
});
