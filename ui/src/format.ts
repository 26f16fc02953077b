// How numbers, times and durations are shown.

const nf = new Intl.NumberFormat('en-US');

/** A count with thousands separators; "–" for nothing. */
export function int(v: unknown): string {
  const n = Number(v);
  if (v === null || v === undefined || Number.isNaN(n)) return '–';
  return nf.format(Math.round(n));
}

/** A ratio (0..1) as a percentage with one decimal. */
export function pct(r: number): string {
  if (!Number.isFinite(r)) return '–';
  return `${(r * 100).toFixed(r >= 0.995 || r === 0 ? 0 : 1)} %`;
}

/** A duration: "850 ms", "4.2 s", "3m 05s", "1h 02m", "2d 3h". */
export function duration(ms: unknown): string {
  const n = Number(ms);
  if (ms === null || ms === undefined || Number.isNaN(n)) return '–';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 10_000) return `${(n / 1000).toFixed(1)} s`;
  const s = Math.floor(n / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** A player clock: "m:ss" (or "h:mm:ss"). */
export function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** How long something is kept: "30 days" for whole days, else a duration ("12h 00m"). */
export function span(ms: number): string {
  return ms > 0 && ms % 86_400_000 === 0 ? days(ms / 86_400_000) : duration(ms);
}

/** A count of days: "1 day", "30 days". */
export function days(n: number): string {
  return `${int(n)} ${n === 1 ? 'day' : 'days'}`;
}

/**
 * Milliseconds since the epoch from what the API gives for a timestamp: a number
 * (ms), or text in ISO form (UTC when it names no zone).
 */
export function toMs(v: unknown): number | null {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return null;
  const s = /[zZ]|[+-]\d\d:?\d\d$/.test(v) ? v : `${v.replace(' ', 'T')}Z`;
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

/** A timestamp in the viewer's local time: "2026-12-01 18:55:24". */
export function time(v: unknown): string {
  const t = toMs(v);
  if (t === null) return '–';
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** How long ago: "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(now: number, v: unknown): string {
  const t = toMs(v);
  if (t === null) return '–';
  const s = Math.round((now - t) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export type Level = 'fresh' | 'lagging' | 'stale';

/** The freshness indicator: now minus the data's `as_of`. */
export function freshness(now: number, asOf: number | null): { text: string; level: Level } {
  if (!asOf) return { text: 'no data yet', level: 'stale' };
  const lag = Math.max(0, now - asOf);
  // The engine holds a few seconds for late events (allowed lateness) before `as_of`
  // passes them: that much is fresh.
  const level: Level = lag < 5000 ? 'fresh' : lag < 60_000 ? 'lagging' : 'stale';
  return { text: lag < 1000 ? `${lag} ms behind` : `${duration(lag)} behind`, level };
}

/** A URL shown short: without the scheme, and the origin when it is this console's. */
export function shortUrl(u: unknown): string {
  if (typeof u !== 'string' || !u) return '–';
  return u.replace(/^https?:\/\//, '');
}

/**
 * A list cell (`array_agg`): the API writes lists as text, "[a, b]"; a JSON array is
 * taken too. Only for lists of ids and numbers (no commas inside items).
 */
export function list(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v !== 'string') return [];
  const inner = v.trim().replace(/^\[/, '').replace(/\]$/, '').trim();
  return inner ? inner.split(',').map((x) => x.trim()) : [];
}
