// The snippet's stub: before `sdk.js` has loaded, `window.sightflow` is an object
// whose methods only push `[method, ...args]` onto its `q`. The real SDK replays
// that queue, in order, once it is in place.

import type { Sightflow } from './types.js';

export type Call = [string, ...unknown[]];

/** Calls each queued method on `target`, in order; unknown names and bad entries are skipped. */
export function replay(target: Sightflow, q: unknown): void {
  if (!Array.isArray(q)) return;
  for (const call of q) {
    if (!Array.isArray(call)) continue;
    const f = (target as unknown as Record<string, unknown>)[call[0]];
    if (typeof f == 'function') f.apply(target, call.slice(1));
  }
}

/**
 * Puts `sdk` in place of the stub at `win.sightflow` and replays the stub's queue.
 * If a real SDK is there already (the script loaded twice), that one stays.
 */
export function install(win: { sightflow?: unknown }, sdk: Sightflow): Sightflow {
  const prev = win.sightflow as { q?: unknown; init?: unknown } | undefined;
  if (prev && !Array.isArray(prev.q) && typeof prev.init == 'function') return prev as Sightflow;
  win.sightflow = sdk;
  if (prev) replay(sdk, prev.q);
  return sdk;
}
