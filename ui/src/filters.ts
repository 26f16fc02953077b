// Filters of the pages, kept in the URL so a view can be shared, and turned into the
// API's parameters.

export const RANGES = [
  { id: '15m', label: 'Last 15 min', ms: 15 * 60_000 },
  { id: '1h', label: 'Last hour', ms: 3_600_000 },
  { id: '24h', label: 'Last 24 h', ms: 86_400_000 },
  { id: '7d', label: 'Last 7 days', ms: 7 * 86_400_000 },
  { id: '30d', label: 'Last 30 days', ms: 30 * 86_400_000 },
  { id: 'all', label: 'All time', ms: 0 },
  { id: 'custom', label: 'Custom dates', ms: -1 },
] as const;

export type RangeId = (typeof RANGES)[number]['id'];

export const DEFAULT_RANGE: RangeId = '24h';

/** The start (ms) of a range ending `now`; null for all time. */
export function rangeStart(id: string, now: number): number | null {
  const r = RANGES.find((x) => x.id === id);
  if (!r || r.ms < 0) return now - 86_400_000;
  if (r.ms === 0) return null;
  return now - r.ms;
}

/**
 * What a list of sessions over `span` leaves out: closed sessions leave the list
 * `sessionsMs` after they end (the server's `session.retention_ms`; 0 keeps them), so a
 * range reaching back further lists only the newer ones. Null when nothing is left out.
 */
export function listedSince(span: Span, sessionsMs: number | undefined, now: number): number | null {
  if (!sessionsMs) return null;
  const oldest = now - sessionsMs;
  return span.start === null || span.start < oldest ? oldest : null;
}

/** A day typed as YYYY-MM-DD, at local midnight (ms); null when it is not one. */
export function day(text: string | undefined): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text ?? '');
  if (!m) return null;
  const t = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])).getTime();
  return Number.isNaN(t) ? null : t;
}

export interface Span {
  start: number | null;
  end: number | null;
}

/**
 * The time span of a page's range: a preset ending now, or custom days (`from` and
 * `to` inclusive, local time).
 */
export function spanOf(id: string, from: string | undefined, to: string | undefined, now: number): Span {
  if (id !== 'custom') return { start: rangeStart(id, now), end: null };
  const a = day(from);
  const b = day(to);
  return { start: a, end: b === null ? null : b + 86_400_000 };
}

/** The signals a session can be filtered on (the API's `has=` names) and their labels. */
export const SIGNALS = [
  { id: 'rage', label: 'Rage clicks', column: 'rage_clicks' },
  { id: 'dead', label: 'Dead clicks', column: 'dead_clicks' },
  { id: 'error', label: 'Error clicks', column: 'error_clicks' },
  { id: 'errors', label: 'Errors', column: 'errors' },
  { id: 'quick_back', label: 'Quick backs', column: null },
  { id: 'excessive_scroll', label: 'Excessive scrolling', column: null },
  { id: 'thrashed_cursor', label: 'Thrashed cursor', column: null },
] as const;

export const SORTS = [
  'started_at',
  'ended_at',
  'duration_ms',
  'page_views',
  'events',
  'clicks',
  'rage_clicks',
  'dead_clicks',
  'error_clicks',
  'errors',
] as const;

export interface SessionFilters {
  range: string;
  from: string;
  to: string;
  url: string;
  has: string[];
  device_type: string;
  browser: string;
  os: string;
  country: string;
  user_id: string;
  min_duration_s: string;
  live: boolean;
  sort: string;
  order: 'asc' | 'desc';
}

const TEXT = ['url', 'device_type', 'browser', 'os', 'country', 'user_id', 'min_duration_s'] as const;

export function sessionFilters(q: URLSearchParams): SessionFilters {
  const sort = q.get('sort') ?? 'started_at';
  return {
    range: q.get('range') ?? DEFAULT_RANGE,
    from: q.get('from') ?? '',
    to: q.get('to') ?? '',
    url: q.get('url') ?? '',
    has: (q.get('has') ?? '')
      .split(',')
      .filter((h) => SIGNALS.some((s) => s.id === h)),
    device_type: q.get('device_type') ?? '',
    browser: q.get('browser') ?? '',
    os: q.get('os') ?? '',
    country: q.get('country') ?? '',
    user_id: q.get('user_id') ?? '',
    min_duration_s: q.get('min_duration_s') ?? '',
    live: q.get('live') === 'true',
    sort: (SORTS as readonly string[]).includes(sort) ? sort : 'started_at',
    order: q.get('order') === 'asc' ? 'asc' : 'desc',
  };
}

/** The filters as the page's query string (defaults left out). */
export function sessionSearch(f: SessionFilters, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  if (f.range !== DEFAULT_RANGE) q.set('range', f.range);
  if (f.range === 'custom') {
    if (f.from) q.set('from', f.from);
    if (f.to) q.set('to', f.to);
  }
  for (const k of TEXT) if (f[k].trim()) q.set(k, f[k].trim());
  if (f.has.length) q.set('has', f.has.join(','));
  if (f.live) q.set('live', 'true');
  if (f.sort !== 'started_at') q.set('sort', f.sort);
  if (f.order !== 'desc') q.set('order', f.order);
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The `/api/v1/sessions` query string for the filters. */
export function sessionsApi(
  f: SessionFilters,
  o: { project: string; now: number; limit: number; cursor?: string },
): string {
  const q = new URLSearchParams();
  q.set('project', o.project);
  const span = spanOf(f.range, f.from, f.to, o.now);
  if (span.start !== null) q.set('from', String(span.start));
  if (span.end !== null) q.set('to', String(span.end));
  if (f.url.trim()) {
    const u = f.url.trim();
    // A path or a fragment of one matches anywhere in the page's URL.
    q.set('url', u.includes('*') || /^https?:/.test(u) ? u : `*${u}*`);
  }
  if (f.has.length) q.set('has', f.has.join(','));
  for (const k of ['device_type', 'browser', 'os', 'country', 'user_id'] as const) if (f[k].trim()) q.set(k, f[k].trim());
  const secs = Number(f.min_duration_s);
  if (f.min_duration_s.trim() && Number.isFinite(secs) && secs > 0) q.set('min_duration_ms', String(Math.round(secs * 1000)));
  if (f.live) q.set('live', 'true');
  q.set('sort', f.sort);
  q.set('order', f.order);
  q.set('limit', String(o.limit));
  if (o.cursor) q.set('cursor', o.cursor);
  return `/api/v1/sessions?${q}`;
}

/** A number typed into a filter: an error message when it is not one. */
export function badNumber(text: string, what: string): string | null {
  if (!text.trim()) return null;
  const n = Number(text);
  return Number.isFinite(n) && n >= 0 ? null : `${what}: expected a number of seconds, not "${text}"`;
}
