import { describe, expect, test } from 'vitest';
import { backoff, BASE_MS, CAP_MS, retryable, retryAfter } from '../src/backoff';

describe('backoff', () => {
  test('full jitter: uniform between 0 and the exponential bound', () => {
    for (let retry = 0; retry < 10; retry++) {
      const bound = Math.min(CAP_MS, BASE_MS * 2 ** retry);
      expect(backoff(retry, () => 0)).toBe(0);
      expect(backoff(retry, () => 0.999999)).toBe(bound - 1);
      for (let i = 0; i < 200; i++) {
        const d = backoff(retry, Math.random);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(bound);
      }
    }
  });

  test('delays grow with each retry, up to the cap', () => {
    const mid = [0, 1, 2, 3, 4, 5, 6].map((r) => backoff(r, () => 0.5));
    expect(mid).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000]);
    const mean = (r: number) => {
      let s = 0;
      for (let i = 0; i < 2000; i++) s += backoff(r, Math.random);
      return s / 2000;
    };
    expect(mean(3)).toBeGreaterThan(mean(1) * 2);
  });

  test('only 429 and 5xx are retryable', () => {
    for (const s of [429, 500, 502, 503, 504]) expect(retryable(s)).toBe(true);
    for (const s of [400, 401, 403, 404, 408, 413, 422]) expect(retryable(s)).toBe(false);
  });

  test('Retry-After: seconds or a date, in ms', () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    expect(retryAfter('7', now)).toBe(7000);
    expect(retryAfter(' 1.5 ', now)).toBe(1500);
    expect(retryAfter('Tue, 01 Jan 2030 00:00:20 GMT', now)).toBe(20000);
    expect(retryAfter('Mon, 31 Dec 2029 00:00:00 GMT', now)).toBe(0);
    expect(retryAfter('99999', now)).toBe(600000);
    expect(retryAfter('soon', now)).toBeUndefined();
    expect(retryAfter(null, now)).toBeUndefined();
  });
});
