import { describe, expect, test } from 'vitest';
import { arrayBytes, batcher, chunk, toJson } from '../src/batch';
import { utf8Length } from '../src/util';

const item = (n: number, fill = 'x') => JSON.stringify({ type: 'custom', pad: fill.repeat(n) });
const bytes = (items: string[]) => utf8Length(toJson(items));

describe('batcher', () => {
  test('collects until sealed (the interval timer seals)', () => {
    const out: string[][] = [];
    const b = batcher(1000, (items) => out.push(items));
    b.push(item(10));
    b.push(item(10));
    expect(out).toEqual([]);
    expect(b.size()).toBe(2);
    b.seal();
    expect(out.length).toBe(1);
    expect(out[0].length).toBe(2);
    b.seal();
    expect(out.length).toBe(1);
  });

  test('seals as soon as the JSON reaches the budget, and never builds one over it', () => {
    const out: string[][] = [];
    const max = 2000;
    const b = batcher(max, (items) => out.push(items));
    const all: string[] = [];
    for (let i = 0; i < 300; i++) {
      const it = item((i * 37) % 400);
      all.push(it);
      b.push(it);
    }
    b.seal();
    expect(out.length).toBeGreaterThan(10);
    for (const batch of out) expect(bytes(batch)).toBeLessThanOrEqual(max);
    // Nothing lost, nothing reordered.
    expect(out.flat()).toEqual(all);
    // Each batch is full: the next item would not have fitted.
    for (let i = 0; i < out.length - 1; i++) {
      expect(bytes(out[i].concat(out[i + 1][0]))).toBeGreaterThan(max);
    }
  });

  test('a batch that lands exactly on the budget goes at once', () => {
    const out: string[][] = [];
    const it = item(100);
    const max = bytes([it, it]);
    const b = batcher(max, (items) => out.push(items));
    b.push(it);
    expect(out.length).toBe(0);
    b.push(it);
    expect(out.length).toBe(1);
    expect(bytes(out[0])).toBe(max);
  });

  test('an event over the budget on its own travels alone', () => {
    const out: string[][] = [];
    const b = batcher(500, (items) => out.push(items));
    b.push(item(10));
    b.push(item(2000));
    b.push(item(10));
    b.seal();
    expect(out.map((x) => x.length)).toEqual([1, 1, 1]);
  });

  test('take hands over the queue without sealing', () => {
    const out: string[][] = [];
    const b = batcher(1000, (items) => out.push(items));
    b.push(item(1));
    expect(b.take().length).toBe(1);
    expect(b.size()).toBe(0);
    expect(out).toEqual([]);
  });
});

describe('chunk', () => {
  test('splits in order into arrays of at most max bytes, counting multi-byte text', () => {
    const items = Array.from({ length: 100 }, (_, i) => item(i * 13, i % 2 ? '€' : 'a'));
    const chunks = chunk(items, 4096);
    for (const c of chunks) expect(bytes(c)).toBeLessThanOrEqual(4096);
    expect(chunks.flat()).toEqual(items);
    expect(arrayBytes(0, 0)).toBe(2);
    expect(chunk([], 10)).toEqual([]);
  });
});
