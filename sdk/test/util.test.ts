import { describe, expect, test } from 'vitest';
import { counter, randomId, safeStorage, utf8Length } from '../src/util';

describe('utf8Length', () => {
  // Lone surrogates are left out: the texts measured come from JSON.stringify, which escapes them.
  test('matches TextEncoder', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a€😀é\u0000', JSON.stringify('\ud83d')]) {
      expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
    }
  });
});

describe('randomId', () => {
  test('128 bits as hex, from crypto or an injected source', () => {
    expect(randomId()).toMatch(/^[0-9a-f]{32}$/);
    expect(randomId()).not.toBe(randomId());
    expect(randomId(() => 0)).toBe('0'.repeat(32));
  });
});

describe('safeStorage', () => {
  test('a write the real storage refuses is still read back', () => {
    const real = new Map<string, string>([['sf_seq', '5']]);
    let full = false;
    const s = safeStorage(() => ({
      getItem: (k) => real.get(k) ?? null,
      setItem: (k, v) => {
        if (full) throw new Error('QuotaExceededError');
        real.set(k, v);
      },
      removeItem: (k) => void real.delete(k),
    }));
    const seq = counter(s, 'sf_seq');
    expect(seq.next()).toBe(5);
    full = true;
    expect([seq.next(), seq.next()]).toEqual([6, 7]);
    s.removeItem('sf_seq');
    expect(s.getItem('sf_seq')).toBeNull();
    const gone = safeStorage(() => {
      throw new Error('SecurityError');
    });
    gone.setItem('a', '1');
    expect(gone.getItem('a')).toBe('1');
    expect(gone.getItem('b')).toBeNull();
  });
});
