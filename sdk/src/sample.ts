// Per-device sampling: a device is in or out for good, decided from its id alone,
// so every page load and tab of one browser makes the same decision.

/** A hash of `s` mapped to [0, 1): FNV-1a with a murmur3 finaliser for spread. */
export function hashUnit(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

/**
 * Whether the device `deviceId` is recorded at `rate`. Monotonic in the rate: a
 * device recorded at 10% is still recorded at 20%.
 */
export function sampled(deviceId: string, rate: number): boolean {
  if (!(rate < 1)) return true;
  return rate > 0 && hashUnit(deviceId) < rate;
}
