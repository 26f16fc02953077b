// A live query: the `/api/v1/subscribe` feed (SSE) kept as a multiset of rows. The
// server sends the whole result (`snapshot`, or `reset` after falling behind) and then
// only the rows that changed (`diff`: +1 added, -1 removed); `progress` moves `as_of`.
// Rows come as objects (column → value); arrays in the order of `columns` are taken too.

import { objects, query, type Row } from './api';

export type FeedRow = Row | unknown[];

export interface Change {
  diff: number;
  row: FeedRow;
}

/** The result of a live query as the feed's events build it. */
export class LiveRows {
  columns: string[] = [];
  asOf = 0;
  private rows = new Map<string, { row: FeedRow; n: number }>();

  /** Replaces everything with a full result; returns the rows it has that were not
   * there before (a `reset` after falling behind may hold rows no diff announced). */
  reset(columns: string[], rows: FeedRow[], asOf: number): FeedRow[] {
    const before = new Map<string, number>();
    for (const [k, e] of this.rows) before.set(k, e.n);
    this.columns = columns;
    this.rows.clear();
    for (const r of rows) this.add(r, 1);
    this.asOf = asOf;
    const added: FeedRow[] = [];
    for (const [k, { row, n }] of this.rows) for (let i = before.get(k) ?? 0; i < n; i++) added.push(row);
    return added;
  }

  /** Applies a diff; returns the rows it added (for "new session" toasts). */
  apply(changes: Change[], asOf: number): FeedRow[] {
    const added: FeedRow[] = [];
    for (const c of changes) {
      this.add(c.row, c.diff);
      if (c.diff > 0) added.push(c.row);
    }
    this.asOf = Math.max(this.asOf, asOf);
    return added;
  }

  private add(row: FeedRow, n: number): void {
    const k = JSON.stringify(row);
    const e = this.rows.get(k);
    const total = (e?.n ?? 0) + n;
    if (total <= 0) this.rows.delete(k);
    else this.rows.set(k, { row, n: total });
  }

  /** The rows as they came (each repeated as often as it occurs). */
  all(): FeedRow[] {
    const out: FeedRow[] = [];
    for (const { row, n } of this.rows.values()) for (let i = 0; i < n; i++) out.push(row);
    return out;
  }

  /** The rows as objects. */
  objects(): Row[] {
    return this.shape(this.all());
  }

  /** Rows as objects, whichever shape they came in. */
  shape(rows: FeedRow[]): Row[] {
    return rows.map((r) => (Array.isArray(r) ? objects(this.columns, [r])[0] : r));
  }
}

export interface LiveHandlers {
  /** The current rows, after every snapshot, reset or diff. */
  rows(rows: Row[], asOf: number, added: Row[]): void;
  /** `as_of` moved without a change. */
  progress?(asOf: number): void;
  /** The feed failed or was closed; `message` says why. */
  error(message: string): void;
}

/**
 * Subscribes to `sql`; returns the function that ends it. An EventSource reconnects by
 * itself (resuming from the last event id); an answer that is not a stream (bad SQL,
 * no credential) is asked again as a plain query to show its reason.
 */
export function subscribe(sql: string, h: LiveHandlers): () => void {
  const live = new LiveRows();
  const es = new EventSource(`/api/v1/subscribe?sql=${encodeURIComponent(sql)}`, { withCredentials: true });
  let closed = false;
  // The first snapshot adds nothing; a later one (a reconnect) and a reset add the rows
  // that came while no diff did.
  let seen = false;
  const full = (ev: MessageEvent) => {
    const d = JSON.parse(ev.data);
    const added = live.reset(d.columns, d.rows, d.as_of);
    h.rows(live.objects(), live.asOf, seen ? live.shape(added) : []);
    seen = true;
  };
  es.addEventListener('snapshot', full);
  es.addEventListener('reset', full);
  es.addEventListener('diff', (ev) => {
    const d = JSON.parse((ev as MessageEvent).data);
    const added = live.apply(d.changes, d.as_of);
    h.rows(live.objects(), live.asOf, live.shape(added));
  });
  es.addEventListener('progress', (ev) => {
    const d = JSON.parse((ev as MessageEvent).data);
    live.asOf = Math.max(live.asOf, d.as_of);
    h.progress?.(live.asOf);
  });
  es.addEventListener('close', (ev) => {
    const d = JSON.parse((ev as MessageEvent).data);
    es.close();
    closed = true;
    h.error(`the live feed was closed: ${d.reason}`);
  });
  es.onerror = () => {
    if (closed || es.readyState !== EventSource.CLOSED) return;
    closed = true;
    query(sql).then(
      () => h.error('the live feed was refused; retrying on the next visit'),
      (e: Error) => h.error(e.message),
    );
  };
  return () => {
    closed = true;
    es.close();
  };
}
