// Which chart a query result gets: a time series when the first column holds times,
// bars per category otherwise; the numeric columns are the series.

import { toMs } from './format';
import type { Row } from './api';

export interface ChartSpec {
  kind: 'time' | 'bars';
  x: number[];
  categories?: string[];
  series: { label: string; values: (number | null)[] }[];
}

const TIMEY = /(^|_)(ts|at|time|date|day|hour|minute|t|bucket|seen)$/;

function numeric(v: unknown): boolean {
  return typeof v === 'number' || (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) && !/^\d{4}-\d\d-\d\d/.test(v));
}

/** The chart of a result, or null when nothing in it can be drawn. */
export function chartOf(columns: string[], rows: Row[]): ChartSpec | null {
  if (rows.length === 0 || columns.length < 2) return null;
  const [xcol, ...rest] = columns;
  const ys = rest.filter((c) => rows.every((r) => r[c] === null || numeric(r[c]))).slice(0, 4);
  if (ys.length === 0) return null;
  const times = rows.map((r) => {
    const v = r[xcol];
    if (typeof v === 'string' && /^\d{4}-\d\d-\d\d/.test(v)) return toMs(v);
    if (typeof v === 'number' && TIMEY.test(xcol) && v > 946_684_800_000) return v;
    return null;
  });
  const series = (order: number[]) => ys.map((c) => ({ label: c, values: order.map((i) => (rows[i][c] === null ? null : Number(rows[i][c]))) }));
  if (times.every((t) => t !== null)) {
    const order = rows.map((_, i) => i).sort((a, b) => times[a]! - times[b]!);
    return { kind: 'time', x: order.map((i) => times[i]! / 1000), series: series(order) };
  }
  const order = rows.map((_, i) => i).slice(0, 50);
  return { kind: 'bars', x: order, categories: order.map((i) => String(rows[i][xcol] ?? '')), series: series(order) };
}

/** Table and column names for the editor's completion, from information_schema rows. */
export function schemaOf(rows: Row[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of rows) {
    const t = String(r.table_name);
    (out[t] ??= []).push(String(r.column_name));
  }
  return out;
}

/** The x range (seconds) of a time chart: a minute around a single point, which would
 * otherwise stretch the axis over years. */
export function timeRange(min: number, max: number): [number, number] {
  return min === max ? [min - 30, max + 30] : [min, max];
}

/** A live series with `(x, y)` added: one point per x (snapshots come many times a
 * second, and repeated x values break the chart), at most `keep` points. */
export function appendPoint(s: { x: number[]; y: number[] }, x: number, y: number, keep: number) {
  const same = s.x.length > 0 && s.x[s.x.length - 1] === x;
  const xs = same ? [...s.x.slice(0, -1), x] : [...s.x, x];
  const ys = same ? [...s.y.slice(0, -1), y] : [...s.y, y];
  return { x: xs.slice(-keep), y: ys.slice(-keep) };
}
