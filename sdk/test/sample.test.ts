import { expect, test } from 'vitest';
import { hashUnit, sampled } from '../src/sample';
import { randomId } from '../src/util';

test('the decision is a function of the device id', () => {
  for (let i = 0; i < 50; i++) {
    const id = randomId();
    const first = sampled(id, 0.3);
    for (let k = 0; k < 5; k++) expect(sampled(id, 0.3)).toBe(first);
  }
});

test('rate 1 records everyone, rate 0 nobody', () => {
  for (let i = 0; i < 200; i++) {
    const id = randomId();
    expect(sampled(id, 1)).toBe(true);
    expect(sampled(id, 0)).toBe(false);
  }
});

test('about the rate of many devices are recorded', () => {
  const ids = Array.from({ length: 20000 }, () => randomId());
  for (const rate of [0.01, 0.1, 0.5, 0.9]) {
    const share = ids.filter((id) => sampled(id, rate)).length / ids.length;
    expect(Math.abs(share - rate)).toBeLessThan(0.02);
  }
});

test('a device recorded at a rate is recorded at every higher rate', () => {
  for (let i = 0; i < 500; i++) {
    const id = randomId();
    if (sampled(id, 0.2)) expect(sampled(id, 0.5)).toBe(true);
  }
});

test('hash values lie in [0, 1) and spread', () => {
  const hs = ['', 'a', 'b', 'device-1', 'device-2'].map(hashUnit);
  for (const h of hs) expect(h >= 0 && h < 1).toBe(true);
  expect(new Set(hs).size).toBe(hs.length);
});
