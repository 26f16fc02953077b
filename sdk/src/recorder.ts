// The rrweb side: the options handed to `record`, and what the emit callback does
// to rrweb's events before they are queued.

import { maskOptions, type MaskOptions } from './privacy.js';

/** rrweb event types the SDK looks at. */
export const META = 4;
export const PLUGIN = 6;
export const CONSOLE_PLUGIN = 'rrweb/console@1';

/** A loose rrweb event: the SDK passes them through as opaque JSON. */
export interface RrwebEvent {
  type: number;
  data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  timestamp: number;
  delay?: number;
}

export interface RecorderOptions extends MaskOptions {
  recordCanvas?: boolean;
}

/** Everything `record` is given besides `emit` and `plugins`. */
export function recordOptions(o: RecorderOptions) {
  return {
    ...maskOptions(o),
    recordCanvas: !!o.recordCanvas,
    collectFonts: false,
    inlineImages: false,
    // Start with the DOM, as the reference recordings do, not after every image has loaded.
    recordAfter: 'DOMContentLoaded' as const,
    sampling: { mousemove: 50, scroll: 150, input: 'last' as const },
    // Scripts, comments, favicons and most head meta: never needed to replay.
    slimDOMOptions: true as const,
  };
}

/**
 * A console-plugin record of an uncaught error or rejection. The SDK sends its own
 * `error` event for those, so these are dropped to keep the server from counting
 * each error twice. Other console records, `console.error` calls included, stay.
 */
export function isUncaughtRecord(e: RrwebEvent): boolean {
  const p = e.type == PLUGIN && e.data && e.data.plugin == CONSOLE_PLUGIN ? e.data.payload : undefined;
  const first = p && p.level == 'error' && Array.isArray(p.payload) ? p.payload[0] : undefined;
  return typeof first == 'string' && first.startsWith('"Uncaught');
}

export interface PageFacts {
  scrub(url: string): string;
  referrer: string;
  title: string;
  userAgent: string;
}

/** Meta events carry the page view: scrubbed href, plus referrer, user agent and title. */
export function enrichMeta(e: RrwebEvent, f: PageFacts): RrwebEvent {
  if (e.type == META && e.data) {
    e.data.href = f.scrub(e.data.href);
    e.data.referrer = f.referrer;
    e.data.userAgent = f.userAgent;
    e.data.title = f.title;
  }
  return e;
}
