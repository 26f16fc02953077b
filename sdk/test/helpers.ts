// Test doubles shared by the suites: a scripted fetch, storage in memory, stats.

import { vi } from 'vitest';
import type { StorageLike } from '../src/types';

/** One scripted answer: a status, a status with headers, or a network failure. */
export type Answer = number | 'network' | { status: number; headers?: Record<string, string>; body?: unknown };

export interface Call {
  url: string;
  init: RequestInit;
  /** The batch id from the URL. */
  id: string;
  /** The body as text (when it was not compressed). */
  text: string;
}

/** A fetch that answers from `answers` in turn (200 when they run out) and records every call. */
export function scriptedFetch(answers: Answer[] = []) {
  const calls: Call[] = [];
  const fetch = vi.fn(async (url: string | URL | Request, init: RequestInit = {}) => {
    const u = String(url);
    calls.push({
      url: u,
      init,
      id: decodeURIComponent(new URL(u).searchParams.get('batch_id') || ''),
      text: typeof init.body == 'string' ? init.body : '',
    });
    const a = answers.length ? answers.shift()! : 200;
    if (a === 'network') throw new TypeError('Failed to fetch');
    const { status, headers = {}, body = { accepted: 1, rejected: [], duplicate: false } } = typeof a == 'number' ? { status: a } : a;
    const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    return {
      ok: status >= 200 && status < 300,
      status,
      headers: { get: (h: string) => lower[h.toLowerCase()] ?? null },
      json: async () => body,
    } as unknown as Response;
  });
  return { fetch: fetch as unknown as typeof globalThis.fetch, calls, mock: fetch };
}

export class MemStorage implements StorageLike {
  map = new Map<string, string>();
  getItem(k: string) {
    return this.map.has(k) ? this.map.get(k)! : null;
  }
  setItem(k: string, v: string) {
    this.map.set(k, String(v));
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
}

export { zeroStats } from '../src/types';

/** Lets pending promise callbacks (and the transport's loop) run. */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 0));
}
