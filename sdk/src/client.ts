// The client: ties rrweb, the page's lifecycle, the batcher and the transport
// together behind the public API. Every event it queues has the same envelope:
// type, device_id, tab_id, seq, ts, url, then the type's own fields.

import { record } from '@rrweb/record';
import { getRecordConsolePlugin } from '@rrweb/rrweb-plugin-console-record';
import { onCLS, onFCP, onINP, onLCP, onTTFB, type Metric } from 'web-vitals';
import { batcher, type Batcher } from './batch.js';
import { onNavigate } from './navigation.js';
import { DEFAULT_CAPS, idbStore, memoryStore, type OfflineStore } from './offline.js';
import { enrichMeta, isUncaughtRecord, recordOptions, type RrwebEvent } from './recorder.js';
import { sampled } from './sample.js';
import { gzip, transport, type Transport } from './transport.js';
import { zeroStats, type Options, type Sightflow, type Stats, type StorageLike } from './types.js';
import { blocklist, scrubber } from './url.js';
import { counter, randomId, safeStorage } from './util.js';

/** Storage keys. */
export const KEYS = {
  device: 'sf_device',
  tab: 'sf_tab',
  seq: 'sf_seq',
  batch: 'sf_batch',
  user: 'sf_user',
  optOut: 'sf_opt_out',
  dropped: 'sf_offline_dropped',
};

/** What `init` fills in when an option is left out. */
export const DEFAULTS = {
  batchIntervalMs: 5000,
  maxBatchBytes: 900_000,
  sampleRate: 1,
};

type Fields = Record<string, unknown>;

const warn = (...a: unknown[]) => {
  if (typeof console != 'undefined') console.warn('[sightflow]', ...a);
};

// web-vitals observers cannot be removed, so they are made once per page and
// report to whichever client is recording.
let vitalsTo: ((name: string, value: number) => void) | undefined;
let vitalsOn = false;
function watchVitals() {
  if (vitalsOn) return;
  vitalsOn = true;
  const to = (name: string) => (m: Metric) => vitalsTo && vitalsTo(name, m.value);
  try {
    onLCP(to('lcp'));
    onCLS(to('cls'));
    onINP(to('inp'));
    onTTFB(to('ttfb'));
    onFCP(to('fcp'));
  } catch {
    // a browser without the performance APIs reports none
  }
}

const clip = (s: unknown, n: number) => String(s == null ? '' : s).slice(0, n);

/**
 * A fresh SDK instance. `scriptOrigin` is where `sdk.js` came from: the default
 * `host`. Pages use the `sightflow` singleton; tests make their own.
 */
export function createSightflow(scriptOrigin?: string): Sightflow {
  let o: Options | undefined;
  let ls: StorageLike = safeStorage(() => localStorage);
  let ss: StorageLike = safeStorage(() => sessionStorage);
  let now = Date.now;
  let deviceId = '';
  let tabId = '';
  let seq = counter(ss, KEYS.seq);
  let dropped = counter(ls, KEYS.dropped);
  let q: Batcher | undefined;
  let tp: Transport | undefined;
  let store: OfflineStore | undefined;
  let scrub = scrubber();
  let isBlocked = blocklist();
  let active = false;
  let blocked = false;
  let stopRecord: (() => void) | undefined;
  let cleanup: Array<() => void> = [];
  // The page as last seen: its scrubbed href and its referrer (for Meta events).
  let pageHref = '';
  let pageReferrer = '';
  let rawHref = '';
  let hrefScrubbed = '';
  let hiddenAt = -1e15;
  let lateHide = false;
  const stats: Stats = zeroStats();

  const href = () => {
    const h = location.href;
    if (h !== rawHref) hrefScrubbed = scrub((rawHref = h));
    return hrefScrubbed;
  };
  // A URL fit to send: scrubbed, and empty when it is on the blocklist.
  const safeUrl = (u: string) => (u && !isBlocked(u) ? scrub(u) : '');
  const optedOut = () => ls.getItem(KEYS.optOut) == '1';
  const dnt = () => {
    const n = navigator as Navigator & { globalPrivacyControl?: boolean };
    return n.doNotTrack == '1' || n.globalPrivacyControl === true || (window as { doNotTrack?: string }).doNotTrack == '1';
  };
  const allowed = () =>
    !!o && !optedOut() && !(o.respectDoNotTrack && dnt()) && sampled(deviceId, o.sampleRate ?? DEFAULTS.sampleRate);

  function push(type: string, fields: Fields, ts?: number) {
    if (!active || blocked || !q) return;
    let text: string;
    try {
      text = JSON.stringify(
        Object.assign({ type, device_id: deviceId, tab_id: tabId, seq: seq.next(), ts: ts ?? now(), url: href() }, fields),
      );
    } catch (e) {
      return warn('event not sent:', e);
    }
    stats.events++;
    q.push(text);
    // Events that follow the hide (web-vitals reports then) go by beacon too.
    if (!lateHide && document.visibilityState == 'hidden' && now() - hiddenAt < 1000) {
      lateHide = true;
      queueMicrotask(hide);
    }
  }

  function hide() {
    lateHide = false;
    hiddenAt = now();
    if (q && tp) tp.hide(q.take());
  }

  const snapshot = () => {
    try {
      record.takeFullSnapshot(true);
    } catch {
      // rrweb has not taken its first snapshot yet; it will include this state
    }
  };

  function onRrweb(e: RrwebEvent) {
    if (isUncaughtRecord(e)) return;
    push(
      'rrweb',
      { event: enrichMeta(e, { scrub, referrer: pageReferrer, title: document.title, userAgent: navigator.userAgent }) },
      e.timestamp,
    );
  }

  function onNav() {
    const was = blocked;
    const url = href();
    blocked = isBlocked(location.href);
    if (blocked) {
      pageHref = '';
      return;
    }
    if (url == pageHref) return;
    pageReferrer = was ? '' : pageHref;
    pageHref = url;
    // Back from a blocked page the replay needs the DOM again; its Meta is the page view.
    if (was) return snapshot();
    const de = document.documentElement;
    push('page_view', {
      url,
      referrer: pageReferrer,
      viewport_width: window.innerWidth,
      viewport_height: window.innerHeight,
      user_agent: navigator.userAgent,
      title: document.title,
      page_height: de ? de.scrollHeight : 0,
    });
  }

  function on(t: EventTarget, type: string, fn: (e: any) => void) { // eslint-disable-line @typescript-eslint/no-explicit-any
    t.addEventListener(type, fn);
    cleanup.push(() => t.removeEventListener(type, fn));
  }

  function start() {
    if (active || !allowed()) return;
    const opts = o!;
    active = true;
    blocked = isBlocked(location.href);
    pageHref = blocked ? '' : href();
    pageReferrer = safeUrl(document.referrer);

    on(document, 'visibilitychange', () => {
      if (document.visibilityState == 'hidden') {
        push('exit', { hidden: true });
        hide();
      } else push('activity', { name: 'visible' });
    });
    on(window, 'pagehide', () => {
      push('exit', { hidden: false });
      hide();
    });
    on(window, 'online', () => tp && tp.drain());
    on(window, 'error', (e: ErrorEvent) => {
      push('error', {
        message: clip(e.message || (e.error && e.error.message) || 'Error', 2000),
        source: e.filename ? safeUrl(e.filename) + ':' + e.lineno + ':' + e.colno : '',
        stack: clip(e.error && e.error.stack, 16000),
      });
    });
    on(window, 'unhandledrejection', (e: PromiseRejectionEvent) => {
      const r = e.reason;
      let m: string;
      try {
        m = r && r.message != null ? String(r.message) : String(r);
      } catch {
        m = typeof r;
      }
      push('error', { message: clip('Unhandled rejection: ' + m, 2000), source: '', stack: clip(r && r.stack, 16000) });
    });
    cleanup.push(onNavigate(window, onNav));
    const timer = setInterval(() => q && q.seal(), opts.batchIntervalMs ?? DEFAULTS.batchIntervalMs);
    cleanup.push(() => clearInterval(timer));

    vitalsTo = (name, value) => push('vitals', { [name]: value });
    watchVitals();
    try {
      stopRecord = record({
        ...recordOptions(opts),
        emit: onRrweb,
        plugins: opts.recordConsole === false ? [] : [getRecordConsolePlugin()],
      });
    } catch (e) {
      warn('recording failed:', e);
    }
    const user = ls.getItem(KEYS.user);
    if (user) push('identify', { user_id: user });
  }

  function halt() {
    if (!active) return;
    active = false;
    try {
      if (stopRecord) stopRecord();
    } catch {
      // rrweb could not undo everything; nothing more to do
    }
    stopRecord = undefined;
    cleanup.forEach((f) => f());
    cleanup = [];
    vitalsTo = undefined;
  }

  function init(options: Options) {
    if (active) return warn('init: already recording');
    if (!options || !options.projectKey) return warn('init: projectKey is required');
    if (typeof document == 'undefined') return warn('init: not in a browser');
    o = options;
    if (options.localStorage) ls = options.localStorage;
    if (options.sessionStorage) ss = options.sessionStorage;
    now = options.now || Date.now;
    const random = options.random || Math.random;
    seq = counter(ss, KEYS.seq);
    dropped = counter(ls, KEYS.dropped);
    const batches = counter(ss, KEYS.batch);
    scrub = scrubber(options.scrubParams);
    isBlocked = blocklist(options.urlBlocklist);
    rawHref = '';

    deviceId = ls.getItem(KEYS.device) || '';
    if (!deviceId) ls.setItem(KEYS.device, (deviceId = randomId()));
    tabId = ss.getItem(KEYS.tab) || '';
    if (!tabId) ss.setItem(KEYS.tab, (tabId = randomId()));

    const host = (options.host || scriptOrigin || location.origin).replace(/\/+$/, '');
    const endpoint = host + '/api/v1/track?key=' + encodeURIComponent(options.projectKey) + '&batch_id=';
    const onDrop = (n: number) => dropped.add(n);
    const idb = options.indexedDB === undefined ? (typeof indexedDB != 'undefined' ? indexedDB : null) : options.indexedDB;
    store = idb ? idbStore(idb, DEFAULT_CAPS, onDrop) : memoryStore(DEFAULT_CAPS, onDrop);
    const f = options.fetch || fetch.bind(globalThis);
    const t = (tp = transport({
      url: (id) => endpoint + encodeURIComponent(id),
      fetch: f,
      nextId: () => tabId + '.' + batches.next(),
      store,
      stats,
      random,
      now,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      online: () => navigator.onLine !== false,
      beacon: (url, body) => {
        try {
          return !!navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' }));
        } catch {
          return false;
        }
      },
      compress: options.gzip === false ? async (s) => s : gzip,
      onDrop: (status) => warn('batch refused with status', status),
    }));
    q = batcher(options.maxBatchBytes ?? DEFAULTS.maxBatchBytes, (items) => t.send(items));
    if (!optedOut()) t.drain();
    start();
  }

  // The public methods never throw into the page.
  function safe<A extends unknown[], R>(f: (...a: A) => R, fallback: R): (...a: A) => R {
    return (...a) => {
      try {
        return f(...a);
      } catch (e) {
        warn(e);
        return fallback;
      }
    };
  }

  return {
    init: safe(init, undefined),
    capture: safe((name: string, properties?: Fields) => {
      if (name) push('custom', { name: String(name), properties: properties || {} });
    }, undefined),
    identify: safe((userId: string, traits?: Fields) => {
      if (!o || userId == null || userId === '') return;
      const id = String(userId);
      ls.setItem(KEYS.user, id);
      push('identify', traits ? { user_id: id, traits } : { user_id: id });
    }, undefined),
    reset: safe(() => {
      if (!o) return;
      ls.removeItem(KEYS.user);
      ls.setItem(KEYS.device, (deviceId = randomId()));
      // The new device makes its own sampling decision.
      if (!allowed()) halt();
      else if (active) snapshot();
      else start();
    }, undefined),
    optOut: safe(() => {
      ls.setItem(KEYS.optOut, '1');
      halt();
      if (q) q.take();
      if (tp) tp.clear();
      if (store) store.clear().catch(() => {});
    }, undefined),
    optIn: safe(() => {
      ls.removeItem(KEYS.optOut);
      start();
    }, undefined),
    isOptedOut: safe(optedOut, false),
    flush: safe(async () => {
      if (q) q.seal();
      if (tp) await tp.idle();
    }, Promise.resolve()),
    stop: safe(() => {
      halt();
      if (q) q.seal();
    }, undefined),
    stats: safe(
      () => ({ ...stats, offlineDropped: dropped.get(), queued: q ? q.size() : 0, recording: active }),
      stats,
    ),
  };
}
