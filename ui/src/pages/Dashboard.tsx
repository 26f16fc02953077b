// The live dashboard: numbers, time series, top pages and the newest sessions, kept
// current by the live feed (SSE) without a reload.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { query, type Row } from '../api';
import { Chart } from '../chart';
import { appendPoint } from '../chartspec';
import * as f from '../format';
import { DEFAULT_RANGE, RANGES, spanOf } from '../filters';
import { subscribe } from '../live';
import * as sql from '../sql';
import { Card, Empty, ErrorBox, Loading, RangePicker, SignalBadges, href, useApp, useNow, useTitle } from '../ui';

const TILES: { key: string; label: string; has?: string; hint?: string }[] = [
  { key: 'live_now', label: 'Active now', hint: 'sessions live now' },
  { key: 'events_per_s', label: 'Events/s', hint: 'over the last seconds' },
  { key: 'sessions', label: 'Sessions' },
  { key: 'visitors', label: 'Visitors', hint: 'distinct devices' },
  { key: 'page_views', label: 'Page views' },
  { key: 'rage_clicks', label: 'Rage clicks', has: 'rage' },
  { key: 'dead_clicks', label: 'Dead clicks', has: 'dead' },
  { key: 'error_clicks', label: 'Error clicks', has: 'error' },
  { key: 'quick_backs', label: 'Quick backs', has: 'quick_back' },
  { key: 'excessive_scrolls', label: 'Excessive scrolling', has: 'excessive_scroll' },
  { key: 'thrashed_cursors', label: 'Thrashed cursors', has: 'thrashed_cursor' },
  { key: 'errors', label: 'Errors', has: 'errors' },
];

type Feed<T> = { state: 'loading' } | { state: 'error'; error: string } | { state: 'ok'; data: T; asOf: number };

/** A live query as page state. */
function useLive(sqlText: string | null, onAdded?: (rows: Row[]) => void): Feed<Row[]> {
  const [s, set] = useState<Feed<Row[]>>({ state: 'loading' });
  const added = useRef(onAdded);
  added.current = onAdded;
  useEffect(() => {
    if (!sqlText) return;
    set({ state: 'loading' });
    return subscribe(sqlText, {
      rows: (rows, asOf, add) => {
        set({ state: 'ok', data: rows, asOf });
        if (add.length) added.current?.(add);
      },
      progress: (asOf) => set((old) => (old.state === 'ok' ? { ...old, asOf } : old)),
      error: (error) => set({ state: 'error', error }),
    });
  }, [sqlText]);
  return s;
}

export default function Dashboard() {
  const { project, toast } = useApp();
  const loc = useLocation();
  const range = loc.query.range ?? DEFAULT_RANGE;
  const { from, to } = loc.query;
  useTitle('Live');
  const now = useNow(500);
  // The range's start is fixed when the range is chosen, so each live query stays one
  // query (its numbers grow as sessions arrive).
  const within = useMemo(() => spanOf(range, from, to, Date.now()), [range, from, to, project.name]);
  const start = within.start;
  const [first, setFirst] = useState<number | null>(null);
  useEffect(() => {
    if (start !== null) return;
    setFirst(null);
    query(sql.sessionSpan(project.name)).then(
      (r) => {
        const lo = Number(r.rows[0]?.lo ?? 0);
        setFirst(Number.isFinite(lo) && lo > 0 ? lo : Date.now() - 3_600_000);
      },
      () => setFirst(Date.now() - 3_600_000),
    );
  }, [start, project.name]);
  const end = within.end ?? Date.now();
  const span: [number, number] | null = start !== null ? [start, end] : first !== null ? [first, end] : null;
  const bucket = span ? sql.bucketFor(Math.max(60_000, span[1] - span[0])) : 60_000;

  const known = useRef(new Set<string>());
  const numbers = useLive(sql.dashboardNumbers(project.name, within));
  const series = useLive(span ? sql.dashboardSeries(project.name, within, bucket) : null);
  const pages = useLive(sql.topPages(project.name, within));
  const newest = useLive(sql.newestSessions(project.name), (rows) => {
    for (const r of rows) {
      const id = String(r.session_id);
      if (known.current.has(id)) continue;
      known.current.add(id);
      toast(`New session: ${[f.shortUrl(r.entry_url), r.browser, r.os, r.country].filter(Boolean).join(' · ')}`, href(`/sessions/${id}`, project.name));
    }
  });
  useEffect(() => {
    if (newest.state === 'ok') for (const r of newest.data) known.current.add(String(r.session_id));
  }, [newest.state]);

  // Events per second: the growth of the events of every session between snapshots.
  const rate = useRef<{ t: number; n: number }[]>([]);
  const [perSec, setPerSec] = useState<number | null>(null);
  const [rateSeries, setRateSeries] = useState<{ x: number[]; y: number[] }>({ x: [], y: [] });
  useEffect(() => {
    if (numbers.state !== 'ok') return;
    const n = Number(numbers.data[0]?.events_total ?? 0);
    const t = Date.now();
    const r = rate.current;
    r.push({ t, n });
    while (r.length > 2 && t - r[0].t > 10_000) r.shift();
    if (r.length >= 2) {
      const a = r[0];
      const dt = (t - a.t) / 1000;
      const v = dt > 0 ? Math.max(0, (n - a.n) / dt) : 0;
      setPerSec(v);
      setRateSeries((old) => appendPoint(old, Math.floor(t / 1000), v, 120));
    }
  }, [numbers.state === 'ok' ? numbers.asOf : null]);
  useEffect(() => {
    rate.current = [];
    setPerSec(null);
    setRateSeries({ x: [], y: [] });
  }, [project.name]);

  const asOf = numbers.state === 'ok' ? numbers.asOf : null;
  const fresh = f.freshness(now, asOf);
  const row = numbers.state === 'ok' ? numbers.data[0] ?? {} : {};
  const value = (k: string) => (k === 'events_per_s' ? perSec : (row[k] as number | undefined));

  return (
    <div class="page">
      <div class="page-head">
        <h1>Live</h1>
        <span class={`fresh ${fresh.level}`} data-testid="freshness" title={asOf ? `as of ${f.time(asOf)}` : ''}>
          <span class="pulse" aria-hidden="true" /> {fresh.text}
        </span>
        <div class="spacer" />
        <RangePicker range={range} from={from} to={to} ranges={RANGES} change={(q) => loc.route(href('/', project.name, q))} />
      </div>
      {numbers.state === 'error' ? (
        <ErrorBox error={numbers.error} />
      ) : (
        <div class="tiles" aria-busy={numbers.state === 'loading'}>
          {TILES.map((t) => {
            const v = value(t.key);
            const body = (
              <>
                <span class="tile-label">{t.label}</span>
                <span class="tile-value">{numbers.state === 'loading' ? '…' : t.key === 'events_per_s' ? (v === null ? '–' : Number(v).toFixed(1)) : f.int(v)}</span>
                {t.hint && <span class="tile-hint">{t.hint}</span>}
              </>
            );
            return t.has ? (
              <a key={t.key} class={`tile ${Number(v) > 0 ? 'warn' : ''}`} data-metric={t.key} data-value={v ?? ''} href={href('/sessions', project.name, { has: t.has, range, from, to })}>
                {body}
              </a>
            ) : (
              <div key={t.key} class={`tile ${t.key === 'live_now' ? 'accent' : ''}`} data-metric={t.key} data-value={v ?? ''}>
                {body}
              </div>
            );
          })}
        </div>
      )}
      <div class="grid2">
        <Card title="Sessions and page views">
          <SeriesChart feed={series} span={span} bucket={bucket} keys={[['sessions', 'Sessions', '#4f46e5'], ['page_views', 'Page views', '#0ea5e9']]} />
        </Card>
        <Card title="Frustration and errors">
          <SeriesChart feed={series} span={span} bucket={bucket} keys={[['frustrated_clicks', 'Rage, dead and error clicks', '#f59e0b'], ['errors', 'Errors', '#ef4444']]} />
        </Card>
      </div>
      <div class="grid2">
        <Card title="Top pages">
          {pages.state === 'loading' && <Loading what="pages" />}
          {pages.state === 'error' && <ErrorBox error={pages.error} />}
          {pages.state === 'ok' &&
            (pages.data.length === 0 ? (
              <Empty>No page views in this range yet.</Empty>
            ) : (
              <table class="data" data-testid="top-pages">
                <thead>
                  <tr>
                    <th scope="col">Page</th>
                    <th scope="col" class="num">Views</th>
                    <th scope="col" class="num">Visitors</th>
                    <th scope="col" class="num">Avg time</th>
                  </tr>
                </thead>
                <tbody>
                  {[...pages.data]
                    .sort((a, b) => Number(b.views) - Number(a.views) || String(a.url).localeCompare(String(b.url)))
                    .map((p) => (
                      <tr key={String(p.url)}>
                        <td class="url">
                          <a href={href('/sessions', project.name, { url: String(p.url), range, from, to })}>{f.shortUrl(p.url)}</a>
                        </td>
                        <td class="num">{f.int(p.views)}</td>
                        <td class="num">{f.int(p.visitors)}</td>
                        <td class="num">{f.duration(p.avg_ms)}</td>
                      </tr>
                    ))}
                </tbody>
              </table>
            ))}
        </Card>
        <Card title="Events per second">
          {rateSeries.x.length < 2 ? (
            <Empty>Measuring… the rate appears after two updates.</Empty>
          ) : (
            <Chart label="events per second" x={rateSeries.x} series={[{ label: 'Events/s', color: '#10b981', values: rateSeries.y }]} height={180} />
          )}
          <h3 class="sub">Newest sessions</h3>
          {newest.state === 'loading' && <Loading what="sessions" />}
          {newest.state === 'error' && <ErrorBox error={newest.error} />}
          {newest.state === 'ok' &&
            (newest.data.length === 0 ? (
              <Empty>
                No sessions recorded yet. Install the snippet (<a href={href('/settings', project.name)}>Settings</a>) and visit a page.
              </Empty>
            ) : (
              <ul class="feed" data-testid="newest">
                {[...newest.data]
                  .sort((a, b) => (f.toMs(b.started_at) ?? 0) - (f.toMs(a.started_at) ?? 0))
                  .map((s) => (
                    <li key={String(s.session_id)}>
                      <a href={href(`/sessions/${s.session_id}`, project.name)}>
                        <span class="when">{f.ago(now, s.started_at)}</span>
                        <span class="url">{f.shortUrl(s.entry_url)}</span>
                        <span class="meta">{[s.browser, s.os, s.country, `${f.int(s.page_views)} page${Number(s.page_views) === 1 ? '' : 's'}`, f.duration(s.duration_ms)].filter(Boolean).join(' · ')}</span>
                        <SignalBadges s={s} />
                      </a>
                    </li>
                  ))}
              </ul>
            ))}
        </Card>
      </div>
    </div>
  );
}

function SeriesChart({
  feed,
  span,
  bucket,
  keys,
}: {
  feed: Feed<Row[]>;
  span: [number, number] | null;
  bucket: number;
  keys: [string, string, string][];
}) {
  if (feed.state === 'loading' || !span) return <Loading what="the chart" />;
  if (feed.state === 'error') return <ErrorBox error={feed.error} />;
  if (feed.data.length === 0) return <Empty>No sessions in this range yet.</Empty>;
  const by = new Map(feed.data.map((r) => [Number(r.t), r]));
  const first = Math.floor(Math.min(span[0], ...by.keys()) / bucket) * bucket;
  const last = Math.max(span[1], ...by.keys());
  const x: number[] = [];
  for (let t = first; t <= last && x.length < 2000; t += bucket) x.push(t / 1000);
  return (
    <Chart
      label={keys.map((k) => k[1]).join(' and ')}
      x={x}
      series={keys.map(([k, label, color]) => ({ label, color, values: x.map((t) => Number(by.get(t * 1000)?.[k] ?? 0)) }))}
    />
  );
}
