// The SQL the pages send (all of it public API: `/api/v1/query` and the live feed).

import { lit } from './api';

/** `AND <column> >= <start>` for a range start in ms, or nothing for all time. */
export function since(column: string, start: number | null): string {
  return start === null ? '' : ` AND ${column} >= to_timestamp_millis(${Math.floor(start)})`;
}

/** The condition of a span on `column`: from its start, before its end. */
export function within(column: string, s: { start: number | null; end: number | null }): string {
  return since(column, s.start) + (s.end === null ? '' : ` AND ${column} < to_timestamp_millis(${Math.floor(s.end)})`);
}

/** Nice bucket widths for time series (ms). */
const BUCKETS = [60_000, 300_000, 900_000, 3_600_000, 4 * 3_600_000, 86_400_000, 7 * 86_400_000];

/** The bucket that shows `spanMs` in at most about 60 points. */
export function bucketFor(spanMs: number): number {
  return BUCKETS.find((b) => spanMs / b <= 60) ?? BUCKETS[BUCKETS.length - 1];
}

/** The dashboard's numbers in one row: the range's totals and what is live now. */
export function dashboardNumbers(project: string, span: { start: number | null; end: number | null }): string {
  const p = lit(project);
  return `SELECT r.*, a.live_now, a.events_total FROM
 (SELECT count(*) AS sessions, count(DISTINCT device_id) AS visitors,
    coalesce(sum(page_views), 0) AS page_views, coalesce(sum(events), 0) AS events,
    coalesce(sum(rage_clicks), 0) AS rage_clicks, coalesce(sum(dead_clicks), 0) AS dead_clicks,
    coalesce(sum(error_clicks), 0) AS error_clicks, coalesce(sum(quick_backs), 0) AS quick_backs,
    coalesce(sum(excessive_scrolls), 0) AS excessive_scrolls, coalesce(sum(thrashed_cursors), 0) AS thrashed_cursors,
    coalesce(sum(errors), 0) AS errors
  FROM sessions WHERE project = ${p}${within('started_at', span)}) r
 CROSS JOIN
 (SELECT coalesce(sum(CASE WHEN is_live THEN 1 ELSE 0 END), 0) AS live_now, coalesce(sum(events), 0) AS events_total
  FROM sessions WHERE project = ${p}) a`;
}

/** Sessions, page views and signals per time bucket. */
export function dashboardSeries(project: string, span: { start: number | null; end: number | null }, bucketMs: number): string {
  return `SELECT cast(started_at AS bigint) / ${bucketMs} * ${bucketMs} AS t,
    count(*) AS sessions, coalesce(sum(page_views), 0) AS page_views,
    coalesce(sum(rage_clicks + dead_clicks + error_clicks), 0) AS frustrated_clicks,
    coalesce(sum(errors), 0) AS errors
  FROM sessions WHERE project = ${lit(project)}${within('started_at', span)} GROUP BY 1`;
}

/** The most viewed pages. */
export function topPages(project: string, span: { start: number | null; end: number | null }, limit = 10): string {
  return `SELECT url, count(*) AS views, count(DISTINCT device_id) AS visitors, cast(avg(duration_ms) AS bigint) AS avg_ms
  FROM page_views WHERE project = ${lit(project)}${within('ts', span)} GROUP BY url ORDER BY views DESC, url LIMIT ${limit}`;
}

/** The newest sessions (the dashboard's feed and its "new session" toasts). */
export function newestSessions(project: string, limit = 8): string {
  return `SELECT session_id, started_at, duration_ms, entry_url, browser, os, device_type, country, is_live,
    page_views, rage_clicks, dead_clicks, error_clicks, errors
  FROM sessions WHERE project = ${lit(project)} ORDER BY started_at DESC LIMIT ${limit}`;
}

/** The time span of a project's sessions (for "all time" charts). */
export function sessionSpan(project: string): string {
  return `SELECT cast(min(started_at) AS bigint) AS lo, cast(max(started_at) AS bigint) AS hi FROM sessions WHERE project = ${lit(project)}`;
}

/** The frustration signals of the Insights page: their tables and labels. */
export const FRUSTRATIONS = [
  { table: 'rage_clicks', label: 'Rage clicks', has: 'rage', marker: 'rage_click' },
  { table: 'dead_clicks', label: 'Dead clicks', has: 'dead', marker: 'dead_click' },
  { table: 'error_clicks', label: 'Error clicks', has: 'error', marker: 'error_click' },
  { table: 'quick_backs', label: 'Quick backs', has: 'quick_back', marker: 'quick_back' },
  { table: 'excessive_scrolls', label: 'Excessive scrolling', has: 'excessive_scroll', marker: 'excessive_scroll' },
  { table: 'thrashed_cursors', label: 'Thrashed cursor', has: 'thrashed_cursor', marker: 'thrashed_cursor' },
] as const;

/** Top pages of one signal with example sessions (the first at each one's time). */
export function signalPages(table: string, project: string, span: { start: number | null; end: number | null }, limit = 8): string {
  return `SELECT url, count(*) AS n, count(DISTINCT session_id) AS sessions,
    array_agg(session_id ORDER BY ts DESC) AS example_sessions, array_agg(cast(ts AS bigint) ORDER BY ts DESC) AS example_ts
  FROM ${table} WHERE project = ${lit(project)}${within('ts', span)} GROUP BY url ORDER BY n DESC, url LIMIT ${limit}`;
}
