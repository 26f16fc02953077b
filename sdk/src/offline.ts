// The offline queue: batches that could not be delivered now wait here, in
// IndexedDB so that they survive the page, and are sent again in order by a later
// drain. It is capped; when over, the oldest batches go first and are counted.

/** A batch as stored: its id (kept so the server can deduplicate) and its JSON. */
export interface StoredBatch {
  /** Store key: increasing, so key order is arrival order. */
  k?: number;
  id: string;
  body: string;
  bytes: number;
}

export interface OfflineStore {
  put(b: StoredBatch): Promise<void>;
  /** Every stored batch, oldest first. */
  list(): Promise<StoredBatch[]>;
  remove(k: number): Promise<void>;
  clear(): Promise<void>;
}

export interface Caps {
  maxBytes: number;
  maxBatches: number;
}

export const DEFAULT_CAPS: Caps = { maxBytes: 5 * 1024 * 1024, maxBatches: 500 };

/** Which of `rows` ([key, bytes], oldest first) to drop so that the rest fit `caps`. */
function overflow(rows: Array<[number, number]>, caps: Caps): number[] {
  let n = rows.length;
  let bytes = rows.reduce((a, r) => a + r[1], 0);
  const out: number[] = [];
  for (const [k, b] of rows) {
    if (n <= caps.maxBatches && bytes <= caps.maxBytes) break;
    out.push(k);
    n--;
    bytes -= b;
  }
  return out;
}

/** A bounded queue in memory, for pages without IndexedDB. */
export function memoryStore(caps: Caps = DEFAULT_CAPS, onDrop: (n: number) => void = () => {}): OfflineStore {
  let rows: StoredBatch[] = [];
  let next = 1;
  return {
    async put(b) {
      rows.push({ ...b, k: next++ });
      const drop = overflow(rows.map((r) => [r.k!, r.bytes]), caps);
      if (drop.length) {
        rows = rows.slice(drop.length);
        onDrop(drop.length);
      }
    },
    list: async () => rows.slice(),
    async remove(k) {
      rows = rows.filter((r) => r.k !== k);
    },
    async clear() {
      rows = [];
    },
  };
}

const DB = 'sightflow';
const STORE = 'batches';

/**
 * The queue in IndexedDB (database `sightflow`, store `batches`). If the database
 * cannot be opened (private modes, blocked storage) it degrades to `memoryStore`.
 */
export function idbStore(idb: IDBFactory, caps: Caps = DEFAULT_CAPS, onDrop: (n: number) => void = () => {}): OfflineStore {
  let db: Promise<IDBDatabase> | undefined;
  let fallback: OfflineStore | undefined;
  const open = () =>
    (db ||= new Promise<IDBDatabase>((resolve, reject) => {
      const r = idb.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: 'k', autoIncrement: true }).createIndex('bytes', 'bytes');
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      r.onblocked = () => reject(new Error('blocked'));
    }));

  // Runs `fn` in one transaction; resolves with what `fn`'s result holder says once it commits.
  function tx<T>(mode: IDBTransactionMode, fn: (s: IDBObjectStore, out: { v?: T }) => void, mem: (s: OfflineStore) => Promise<T>): Promise<T> {
    if (fallback) return mem(fallback);
    return open().then(
      (d) =>
        new Promise<T>((resolve, reject) => {
          const t = d.transaction(STORE, mode);
          const out: { v?: T } = {};
          fn(t.objectStore(STORE), out);
          t.oncomplete = () => resolve(out.v as T);
          t.onerror = t.onabort = () => reject(t.error);
        }),
      () => mem((fallback ||= memoryStore(caps, onDrop))),
    );
  }

  return {
    put: (b) =>
      tx<void>(
        'readwrite',
        (s) => {
          s.add({ id: b.id, body: b.body, bytes: b.bytes });
          // Sizes come from the index, so the bodies are not read back.
          const rows: Array<[number, number]> = [];
          const c = s.index('bytes').openKeyCursor();
          c.onsuccess = () => {
            const cur = c.result;
            if (cur) {
              rows.push([cur.primaryKey as number, cur.key as number]);
              cur.continue();
              return;
            }
            const drop = overflow(rows.sort((a, b) => a[0] - b[0]), caps);
            drop.forEach((k) => s.delete(k));
            if (drop.length) onDrop(drop.length);
          };
        },
        (m) => m.put(b),
      ),
    list: () =>
      tx<StoredBatch[]>(
        'readonly',
        (s, out) => {
          const r = s.getAll();
          r.onsuccess = () => (out.v = r.result);
        },
        (m) => m.list(),
      ),
    remove: (k) => tx<void>('readwrite', (s) => s.delete(k), (m) => m.remove(k)),
    clear: () => tx<void>('readwrite', (s) => s.clear(), (m) => m.clear()),
  };
}
