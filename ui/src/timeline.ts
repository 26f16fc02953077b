// The replay's timeline: markers for page views, clicks, the click signals and
// errors, placed at their offset from the recording's first event.

import { span, time, toMs } from './format';

export type MarkerKind =
  | 'page_view'
  | 'click'
  | 'rage_click'
  | 'dead_click'
  | 'error_click'
  | 'error'
  | 'quick_back'
  | 'excessive_scroll'
  | 'thrashed_cursor';

export interface Marker {
  kind: MarkerKind;
  /** Offset from the recording's start (ms). */
  t: number;
  /** Event time (ms). */
  ts: number;
  label: string;
}

export const MARKER_LABEL: Record<MarkerKind, string> = {
  page_view: 'Page view',
  click: 'Click',
  rage_click: 'Rage click',
  dead_click: 'Dead click',
  error_click: 'Error click',
  error: 'Error',
  quick_back: 'Quick back',
  excessive_scroll: 'Excessive scrolling',
  thrashed_cursor: 'Thrashed cursor',
};

/** An rrweb event as the replay API gives it. */
export interface RrEvent {
  type: number;
  timestamp: number;
  data?: any;
}

const FULL_SNAPSHOT = 2;
const INCREMENTAL = 3;
const META = 4;
const CUSTOM = 5;
const PLUGIN = 6;
const MOUSE_INTERACTION = 2;
const CLICK = 2;

/** The uncaught errors in a recording: console-plugin errors and `error` custom events. */
export function errorsOf(events: RrEvent[]): { ts: number; message: string }[] {
  const out: { ts: number; message: string }[] = [];
  for (const e of events) {
    if (e.type === PLUGIN && e.data?.plugin === 'rrweb/console@1' && e.data.payload?.level === 'error') {
      const parts: unknown[] = e.data.payload.payload ?? [];
      const text = parts.map((p) => (typeof p === 'string' ? p.replace(/^"|"$/g, '') : JSON.stringify(p))).join(' ');
      if (text.startsWith('Uncaught')) out.push({ ts: e.timestamp, message: text });
    } else if (e.type === CUSTOM && e.data?.tag === 'error') {
      const p = e.data.payload ?? {};
      out.push({ ts: e.timestamp, message: String(p.message ?? p.msg ?? 'error') });
    }
  }
  return out;
}

/** Every click of a recording (the signal rows mark the special ones). */
export function clicksOf(events: RrEvent[]): number[] {
  return events
    .filter((e) => e.type === INCREMENTAL && e.data?.source === MOUSE_INTERACTION && e.data.type === CLICK)
    .map((e) => e.timestamp);
}

/**
 * The markers of a session: its timeline rows (page views and signals, from
 * `/api/v1/sessions/{id}`) with the recording's clicks and errors, in time order. Rows
 * outside the recording are clamped to its ends.
 */
export function buildMarkers(timeline: Record<string, unknown>[], events: RrEvent[]): Marker[] {
  const start = events.length ? events[0].timestamp : (toMs(timeline[0]?.ts) ?? 0);
  const end = events.length ? events[events.length - 1].timestamp : start;
  const at = (ts: number) => Math.min(Math.max(ts - start, 0), Math.max(end - start, 0));
  const out: Marker[] = [];
  for (const r of timeline) {
    const ts = toMs(r.ts);
    const kind = r.kind as MarkerKind;
    if (ts === null || !(kind in MARKER_LABEL)) continue;
    out.push({ kind, ts, t: at(ts), label: describe(kind, r) });
  }
  for (const ts of clicksOf(events)) out.push({ kind: 'click', ts, t: at(ts), label: 'Click' });
  for (const e of errorsOf(events)) out.push({ kind: 'error', ts: e.ts, t: at(e.ts), label: e.message });
  out.sort((a, b) => a.t - b.t || order(a.kind) - order(b.kind));
  return out;
}

/** At the same time: the page view first, then the signals, plain clicks last. */
const ORDER: MarkerKind[] = ['page_view', 'rage_click', 'dead_click', 'error_click', 'error', 'quick_back', 'excessive_scroll', 'thrashed_cursor', 'click'];

function order(k: MarkerKind): number {
  return ORDER.indexOf(k);
}

function describe(kind: MarkerKind, r: Record<string, unknown>): string {
  const url = typeof r.url === 'string' ? r.url : '';
  switch (kind) {
    case 'page_view':
      return url || 'Page view';
    case 'rage_click':
      return `Rage click ×${r.clicks ?? '?'}${r.selector ? ` on ${r.selector}` : ''}`;
    case 'dead_click':
      return `Dead click${r.selector ? ` on ${r.selector}` : ''}`;
    case 'error_click':
      return `Error click${r.message ? `: ${r.message}` : ''}`;
    case 'quick_back':
      return `Quick back from ${url} after ${r.dwell_ms ?? '?'} ms`;
    case 'excessive_scroll':
      return `Excessive scrolling (${r.reversals ?? '?'} reversals)`;
    case 'thrashed_cursor':
      return `Thrashed cursor (${r.reversals ?? '?'} reversals)`;
    default:
      return MARKER_LABEL[kind];
  }
}

/** Where a marker sits on a timeline `total` ms long, as a percentage of its width. */
export function position(t: number, total: number): number {
  if (total <= 0) return 0;
  return Math.min(100, Math.max(0, (t / total) * 100));
}

/**
 * The events that rebuild one page for a heatmap: from the last Meta of `url` that a
 * FullSnapshot follows, up to (not including) the next Meta. Null when the recording
 * never shows the page.
 */
export function pageSnapshot(events: RrEvent[], url: string): RrEvent[] | null {
  const norm = (u: string) => u.replace(/[?#].*$/, '');
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.type !== META || norm(String(e.data?.href ?? '')) !== norm(url)) continue;
    let j = i + 1;
    while (j < events.length && events[j].type !== META) j++;
    const page = events.slice(i, j);
    if (page.some((x) => x.type === FULL_SNAPSHOT)) return page;
  }
  return null;
}

/** Why a session has no recording to play: past its project's retention of recordings,
 * or left out when it was sent. */
export function noRecording(
  project: { name: string; retention_days?: number; kept?: { recordings_ms: number } },
  session: { started_at?: unknown; duration_ms?: unknown },
): string {
  const own = project.retention_days ?? 0;
  const keptMs = own > 0 ? own * 86_400_000 : (project.kept?.recordings_ms ?? 0);
  const start = toMs(session.started_at);
  const end = start === null ? null : start + (Number(session.duration_ms) || 0);
  if (keptMs > 0 && end !== null && end < Date.now() - keptMs) {
    const whose = own > 0 ? 'Settings' : "the server's retention";
    return `Recordings of ${project.name} are kept ${span(keptMs)} (${whose}); this session ended ${time(end)}, so its recording is no longer served.`;
  }
  return "This session has no stored recording (the replay quota or the SDK's settings may have left it out).";
}
