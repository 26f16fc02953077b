// Batching: events arrive as JSON texts and leave as JSON arrays no larger than a
// byte budget. An event larger than the budget on its own travels alone.

import { utf8Length } from './util.js';

/** Bytes of the JSON array holding `n` items whose texts add up to `sum` bytes. */
export const arrayBytes = (n: number, sum: number): number => 2 + sum + (n > 1 ? n - 1 : 0);

/** The JSON array of already serialised items. */
export const toJson = (items: string[]): string => '[' + items.join(',') + ']';

/** Splits `items`, in order, into groups whose JSON arrays are at most `max` bytes. */
export function chunk(items: string[], max: number): string[][] {
  const out: string[][] = [];
  let cur: string[] = [];
  let sum = 0;
  for (const it of items) {
    const b = utf8Length(it);
    if (cur.length && arrayBytes(cur.length + 1, sum + b) > max) {
      out.push(cur);
      cur = [];
      sum = 0;
    }
    cur.push(it);
    sum += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

export interface Batcher {
  /** Adds one serialised event; seals a batch first if it would not fit, and after if it is full. */
  push(item: string): void;
  /** Seals what is queued, if anything. */
  seal(): void;
  /** Takes the queued items without sealing them (for the page-hide beacon). */
  take(): string[];
  /** Number of queued items. */
  size(): number;
}

/** Queues items and hands `onBatch` every batch once it is full or `seal` is called. */
export function batcher(maxBytes: number, onBatch: (items: string[]) => void): Batcher {
  let items: string[] = [];
  let sum = 0;
  const take = () => {
    const out = items;
    items = [];
    sum = 0;
    return out;
  };
  const seal = () => {
    if (items.length) onBatch(take());
  };
  return {
    push(item) {
      const b = utf8Length(item);
      if (items.length && arrayBytes(items.length + 1, sum + b) > maxBytes) seal();
      items.push(item);
      sum += b;
      if (arrayBytes(items.length, sum) >= maxBytes) seal();
    },
    seal,
    take,
    size: () => items.length,
  };
}
