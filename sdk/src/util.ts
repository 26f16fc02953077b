// Small helpers shared by the modules: byte lengths, ids, storage that never throws.

import type { StorageLike } from './types.js';

/** Length of `s` in UTF-8 bytes, without encoding it. */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair is 4 bytes: 2 code units counted once each here, plus 1 each.
    if (c >= 0x80) n += c < 0x800 || (c >= 0xd800 && c < 0xe000) ? 1 : 2;
  }
  return n;
}

/** 128 random bits as 32 hex digits. */
export function randomId(random?: () => number): string {
  const b = new Uint8Array(16);
  const c = globalThis.crypto;
  if (!random && c && c.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = ((random || Math.random)() * 256) | 0;
  let s = '';
  for (let i = 0; i < 16; i++) s += (b[i] | 256).toString(16).slice(1);
  return s;
}

/**
 * Storage that keeps working when the real one is missing or throws (private
 * modes, quotas, sandboxed frames). What this page wrote is read back from memory
 * first, so a write the real storage refused is not undone by a stale value.
 */
export function safeStorage(get: () => StorageLike | undefined): StorageLike {
  const mem: Record<string, string | null> = {};
  const real = (f: (s: StorageLike) => unknown) => {
    try {
      const s = get();
      return s ? f(s) : null;
    } catch {
      return null;
    }
  };
  return {
    getItem: (k) => (k in mem ? mem[k] : (real((s) => s.getItem(k)) as string | null)),
    setItem(k, v) {
      mem[k] = v;
      real((s) => s.setItem(k, v));
    },
    removeItem(k) {
      mem[k] = null;
      real((s) => s.removeItem(k));
    },
  };
}

/** A counter persisted under `key`; `next()` returns the value before incrementing. */
export function counter(store: StorageLike, key: string): { next(): number; add(n: number): number; get(): number } {
  const get = () => {
    const v = parseInt(store.getItem(key) || '0', 10);
    return v >= 0 ? v : 0;
  };
  const add = (n: number) => {
    const v = get() + n;
    store.setItem(key, String(v));
    return v;
  };
  return { get, add, next: () => add(1) - 1 };
}
