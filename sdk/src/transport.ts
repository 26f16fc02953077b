// Transport: delivers sealed batches to `POST /api/v1/track`, one at a time and in
// order. Each batch gets its id on its first try and keeps it through retries, the
// offline queue and the page-hide beacon, so the server stores it once whatever
// path (or paths) it took.

import { backoff, MAX_ATTEMPTS, retryable, retryAfter } from './backoff.js';
import { chunk, toJson } from './batch.js';
import type { OfflineStore } from './offline.js';
import type { Stats } from './types.js';
import { utf8Length } from './util.js';

/** Browsers refuse `keepalive` requests whose bodies add up to more than 64 KiB; stay under. */
export const KEEPALIVE_MAX = 60 * 1024;
/** Largest body handed to `sendBeacon`. */
export const BEACON_MAX = 64 * 1024;

export interface TransportDeps {
  /** The endpoint for one batch id. */
  url(batchId: string): string;
  fetch: typeof fetch;
  /** A fresh batch id. */
  nextId(): string;
  store: OfflineStore;
  /** Counters to bump (shared with the client). */
  stats: Stats;
  random(): number;
  now(): number;
  sleep(ms: number): Promise<void>;
  /** False when the browser knows it is offline. */
  online(): boolean;
  /** `navigator.sendBeacon` with a text/plain body; false when refused or missing. */
  beacon(url: string, body: string): boolean;
  /** gzip, or the text itself when the browser cannot compress. */
  compress(text: string): Promise<Uint8Array | string>;
  /** Called with each batch finally dropped after a 4xx (for logging). */
  onDrop?(status: number): void;
}

interface Pending {
  items: string[];
  id?: string;
  body?: string;
  /** Handled elsewhere (beacon or offline queue): the loop lets go of it. */
  done?: boolean;
  /** Its request is a keepalive one, which outlives the page. */
  kept?: boolean;
}

const OK = 0;
const DROP = 1;
const RETRY = 2;
type Outcome = [typeof OK | typeof DROP | typeof RETRY, number?];

export interface Transport {
  /** Queues a sealed batch and starts delivering. */
  send(items: string[]): void;
  /** Resolves when every queued batch has been delivered, dropped or stored offline. */
  idle(): Promise<void>;
  /**
   * The page is going away: hands the batch being retried, the queued batches and
   * `items` to `sendBeacon` synchronously, in chunks of at most `BEACON_MAX` bytes.
   * What the beacon refuses goes to the offline queue.
   */
  hide(items: string[]): void;
  /** Sends the offline queue, oldest first; stops at the first batch that should be retried later. */
  drain(): Promise<void>;
  /** Forgets the queued batches (opt-out). */
  clear(): void;
}

/** gzip with `CompressionStream` when the browser has it, else the text unchanged. */
export async function gzip(text: string): Promise<Uint8Array | string> {
  if (typeof CompressionStream != 'function') return text;
  try {
    const s = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'));
    return new Uint8Array(await new Response(s).arrayBuffer());
  } catch {
    return text;
  }
}

export function transport(d: TransportDeps): Transport {
  const { stats } = d;
  let outbox: Pending[] = [];
  let current: Pending | undefined;
  let running: Promise<void> | undefined;
  let draining: Promise<void> | undefined;
  // Whether the offline queue may hold something: a drain after the next success then.
  let stored = true;

  // One try; for a batch of the live queue `p` records whether it went keepalive.
  async function post(id: string, json: string, p?: Pending): Promise<Outcome> {
    const body = await d.compress(json);
    const kept = (typeof body == 'string' ? utf8Length(body) : body.byteLength) <= KEEPALIVE_MAX;
    if (p) p.kept = kept;
    try {
      const r = await d.fetch(d.url(id), {
        method: 'POST',
        body: body as BodyInit,
        headers: { 'content-type': 'text/plain' },
        keepalive: kept,
        credentials: 'omit',
      });
      if (r.ok) {
        try {
          const j = await r.json();
          stats.rejected += (j.rejected || []).length;
          if (j.duplicate) stats.duplicate++;
        } catch {
          // an answer without a report still means delivered
        }
        return [OK];
      }
      if (!retryable(r.status)) {
        if (d.onDrop) d.onDrop(r.status);
        return [DROP];
      }
      return [RETRY, r.status == 429 || r.status == 503 ? retryAfter(r.headers.get('retry-after'), d.now()) : undefined];
    } catch {
      return [RETRY];
    } finally {
      if (p) p.kept = false;
    }
  }

  function toOffline(id: string, body: string) {
    stats.offlineQueued++;
    stored = true;
    return d.store.put({ id, body, bytes: utf8Length(body) }).catch(() => {});
  }

  async function deliver(p: Pending) {
    const id = (p.id ||= d.nextId());
    const body = (p.body ||= toJson(p.items));
    for (let i = 0; d.online(); i++) {
      const [o, wait] = await post(id, body, p);
      if (p.done) return;
      if (o == OK) {
        stats.sent++;
        if (stored) drain();
        return;
      }
      if (o == DROP) {
        stats.dropped4xx++;
        return;
      }
      if (i >= MAX_ATTEMPTS - 1) break;
      stats.retried++;
      await d.sleep(wait ?? backoff(i, d.random));
      if (p.done) return;
    }
    p.done = true;
    await toOffline(id, body);
  }

  async function loop() {
    await 0; // so that `running` is set before the loop can finish
    while ((current = outbox.shift())) {
      try {
        await deliver(current);
      } catch {
        // a failing store must not stop the queue
      }
    }
    running = undefined;
  }

  function beaconOrStore(id: string, body: string) {
    if (utf8Length(body) <= BEACON_MAX && d.beacon(d.url(id), body)) stats.beaconed++;
    else toOffline(id, body);
  }

  async function drainNow() {
    for (const b of await d.store.list()) {
      if (!d.online()) return;
      const [o] = await post(b.id, b.body);
      if (o == RETRY) return;
      await d.store.remove(b.k!);
      stats.offlineDrained++;
      if (o == OK) stats.sent++;
      else stats.dropped4xx++;
    }
    stored = false;
  }

  function drain(): Promise<void> {
    return (draining ||= (async () => {
      await 0;
      try {
        // One tab drains at a time; the others skip (the batch ids would dedupe them anyway).
        const locks = typeof navigator != 'undefined' ? navigator.locks : undefined;
        await (locks ? locks.request('sightflow-drain', { ifAvailable: true }, (l) => l && drainNow()) : drainNow());
      } catch {
        // retried on the next init, `online` event or success
      }
      draining = undefined;
    })());
  }

  return {
    send(items) {
      outbox.push({ items });
      running ||= loop();
    },
    idle: async () => {
      while (running) await running;
    },
    hide(items) {
      const cur = current;
      // A keepalive request outlives the page; anything else being tried would be lost.
      if (cur && !cur.done && cur.id && cur.body && !cur.kept) {
        cur.done = true;
        beaconOrStore(cur.id, cur.body);
      }
      const rest = outbox.reduce<string[]>((a, p) => a.concat(p.items), []).concat(items);
      outbox = [];
      for (const c of chunk(rest, BEACON_MAX)) beaconOrStore(d.nextId(), toJson(c));
    },
    drain,
    clear() {
      outbox = [];
    },
  };
}
