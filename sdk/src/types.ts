// Public types of the SDK. Plain data: the options a page passes to `init` and
// the counters `stats()` hands back.

/** A `Storage`-like object; the SDK uses only these three methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface Options {
  /** The project's ingest key. Required. */
  projectKey: string;
  /** Server origin, e.g. `http://127.0.0.1:8080`. Default: the origin `sdk.js` was loaded from, else the page's. */
  host?: string;
  /** How often queued events are sent, in ms. Default 5000. */
  batchIntervalMs?: number;
  /** Largest batch, in bytes of raw JSON. A batch is sent as soon as it reaches this. Default 900000. */
  maxBatchBytes?: number;
  /** Mask the value of every input, textarea, select and contenteditable. Default true. */
  maskAllInputs?: boolean;
  /** Inputs matching this selector are recorded as typed; password fields never are. Default none. */
  unmaskInputSelector?: string;
  /** Text inside elements matching this selector is replaced by `*`. Default `.sf-mask, [data-sf-mask]`. */
  maskTextSelector?: string;
  /** Elements matching this selector are not recorded at all (a placeholder of the same size is). Default `.sf-block, [data-sf-block]`. */
  blockSelector?: string;
  /** Query (and fragment) parameter names whose values are replaced by `[redacted]`, on top of the built-in list. */
  scrubParams?: string[];
  /** Pages on which nothing is recorded: `*` globs over the full URL, or regular expressions. */
  urlBlocklist?: Array<string | RegExp>;
  /** Fraction of devices recorded, 0..1; decided once per device id. Default 1. */
  sampleRate?: number;
  /** When true, a Do Not Track or Global Privacy Control signal turns recording off. Default false. */
  respectDoNotTrack?: boolean;
  /** Record `<canvas>` contents. Default false. */
  recordCanvas?: boolean;
  /** Record console output (rrweb console plugin). Default true. */
  recordConsole?: boolean;

  /** gzip batches with `CompressionStream` where the browser has it. Default true. */
  gzip?: boolean;

  // Seams for tests and unusual hosts; pages leave them alone.
  /** The `fetch` to send with. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Wall clock in ms since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Uniform random numbers in [0, 1), used for retry jitter. Default `Math.random`. */
  random?: () => number;
  /** Persistent storage (device id, user id, opt-out). Default `localStorage`. */
  localStorage?: StorageLike;
  /** Per-tab storage (tab id, sequence numbers). Default `sessionStorage`. */
  sessionStorage?: StorageLike;
  /** Where undeliverable batches wait. Default `indexedDB`; `null` keeps them in memory. */
  indexedDB?: IDBFactory | null;
}

/** Counters since `init` (plus `offlineDropped`, which persists across page loads). */
export interface Stats {
  /** Events handed to the queue. */
  events: number;
  /** Batches the server answered with 2xx. */
  sent: number;
  /** Retry attempts (each resend after a failure counts once). */
  retried: number;
  /** Batches the server refused with a 4xx other than 429; never retried. */
  dropped4xx: number;
  /** Events the server refused one by one, inside batches it answered with 2xx. */
  rejected: number;
  /** Batches the server already had (same batch id). */
  duplicate: number;
  /** Batches put into the offline queue. */
  offlineQueued: number;
  /** Offline batches delivered (or refused for good) by a drain. */
  offlineDrained: number;
  /** Offline batches dropped, oldest first, to stay within the cap. Persisted. */
  offlineDropped: number;
  /** Chunks handed to `navigator.sendBeacon` that it accepted. */
  beaconed: number;
  /** Events waiting in the queue right now. */
  queued: number;
  /** Whether the SDK is recording right now. */
  recording: boolean;
}

export interface Sightflow {
  init(options: Options): void;
  capture(name: string, properties?: Record<string, unknown>): void;
  identify(userId: string, traits?: Record<string, unknown>): void;
  reset(): void;
  optOut(): void;
  optIn(): void;
  isOptedOut(): boolean;
  flush(): Promise<void>;
  stop(): void;
  stats(): Stats;
}

/** Counters before anything happened. */
export const zeroStats = (): Stats => ({
  events: 0,
  sent: 0,
  retried: 0,
  dropped4xx: 0,
  rejected: 0,
  duplicate: 0,
  offlineQueued: 0,
  offlineDrained: 0,
  offlineDropped: 0,
  beaconed: 0,
  queued: 0,
  recording: false,
});
