// Heatmaps: the page rebuilt from a FullSnapshot (rrweb's Replayer paused at it, in
// its sandboxed iframe at the recorded width) with the heat drawn in document
// coordinates over it, scrolling with it. A second mode outlines the clickmap's
// elements with their counts.

import { useEffect, useRef, useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { Replayer } from '@rrweb/replay';
import simpleheat from 'simpleheat';
import { api, lit, query, type Row } from '../api';
import * as f from '../format';
import { buckets, extent, heatPoints, ramp, scrollBands, type Cell } from '../heat';
import { pageSnapshot, type RrEvent } from '../timeline';
import { Card, Empty, ErrorBox, Loading, Show, href, useApp, useLoad, useTitle } from '../ui';

interface HeatAnswer {
  cells: Cell[];
  total: number;
  sessions: string[] | null;
}

const KINDS = [
  { id: 'click', label: 'Clicks' },
  { id: 'move', label: 'Mouse movement' },
  { id: 'scroll', label: 'Scroll depth' },
];

export default function Heatmaps() {
  const { project } = useApp();
  const loc = useLocation();
  const q = loc.query;
  useTitle('Heatmaps');
  const [pages, retryPages] = useLoad(
    (signal) =>
      query(
        `SELECT url, sum(CASE WHEN kind = 'click' THEN count ELSE 0 END) AS clicks, sum(count) AS n FROM heatmap_cells WHERE project = ${lit(project.name)} GROUP BY url ORDER BY clicks DESC, n DESC, url LIMIT 200`,
        signal,
      ),
    [project.name],
  );
  const set = (k: string, v: string) => {
    const n = new URLSearchParams(q as Record<string, string>);
    if (v) n.set(k, v);
    else n.delete(k);
    n.set('project', project.name);
    loc.route(`/heatmaps?${n}`);
  };
  return (
    <div class="page">
      <div class="page-head">
        <h1>Heatmaps</h1>
      </div>
      <Show s={pages} what="pages" retry={retryPages}>
        {(p) =>
          p.rows.length === 0 ? (
            <Empty>No heatmap data yet: it appears once sessions with clicks, mouse movement or scrolling are recorded.</Empty>
          ) : (
            <HeatPage urls={p.rows.map((r) => String(r.url))} url={q.url && p.rows.some((r) => r.url === q.url) ? q.url : String(p.rows[0].url)} q={q} set={set} />
          )
        }
      </Show>
    </div>
  );
}

function HeatPage({ urls, url, q, set }: { urls: string[]; url: string; q: Record<string, string>; set(k: string, v: string): void }) {
  const { project } = useApp();
  const kind = KINDS.some((k) => k.id === q.kind) ? q.kind : 'click';
  const mode = q.mode === 'elements' ? 'elements' : 'heat';
  const chosen = (q.sessions ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const [draftSessions, setDraftSessions] = useState(chosen.join(', '));
  const sessionParams = chosen.map((s) => `&session=${encodeURIComponent(s)}`).join('');
  const [heat, retryHeat] = useLoad(
    (signal) =>
      api<HeatAnswer>(`/api/v1/heatmap?project=${encodeURIComponent(project.name)}&url=${encodeURIComponent(url)}&kind=${kind}${sessionParams}`, { signal }),
    [url, kind, sessionParams, project.name],
  );
  const inSessions = chosen.length ? ` AND session_id IN (${chosen.map(lit).join(', ')})` : '';
  const [stats] = useLoad(
    (signal) =>
      query(
        `SELECT count(DISTINCT session_id) AS sessions, count(DISTINCT device_id) AS visitors, count(*) AS views FROM page_views WHERE project = ${lit(project.name)} AND url = ${lit(url)}${inSessions}`,
        signal,
      ),
    [url, inSessions, project.name],
  );
  const [pageSessions] = useLoad(
    (signal) =>
      query(
        `SELECT session_id, max(viewport_width) AS width, max(ts) AS ts FROM page_views WHERE project = ${lit(project.name)} AND url = ${lit(url)} GROUP BY session_id ORDER BY ts DESC LIMIT 50`,
        signal,
      ),
    [url, project.name],
  );
  const cells = heat.state === 'ok' ? heat.data.cells : [];
  const bucketList = buckets(cells);
  const bucket = q.viewport && bucketList.includes(q.viewport) ? q.viewport : (bucketList[bucketList.length - 1] ?? '');
  const shownCells = cells.filter((c) => bucket === '' || String(c.viewport_bucket) === bucket);
  const interactions = heatPoints(shownCells).total;
  // The session whose recording rebuilds the page: a chosen one, else the newest one
  // seen at this viewport bucket.
  const widths = pageSessions.state === 'ok' ? pageSessions.data.rows : [];
  const next = bucketList[bucketList.indexOf(bucket) + 1];
  const fits = (w: number) => (bucket === '' || w >= Number(bucket)) && (next === undefined || w < Number(next));
  const base = chosen[0] ?? String(widths.find((r) => fits(Number(r.width)))?.session_id ?? widths[0]?.session_id ?? '');

  return (
    <>
      <form class="filters" aria-label="Heatmap" onSubmit={(e) => e.preventDefault()}>
        <label>
          Page
          <select value={url} onChange={(e) => set('url', (e.target as HTMLSelectElement).value)}>
            {urls.map((u) => (
              <option key={u} value={u}>
                {f.shortUrl(u)}
              </option>
            ))}
          </select>
        </label>
        <fieldset class="chips">
          <legend>Mode</legend>
          <label class="chip">
            <input type="radio" name="mode" checked={mode === 'heat'} onChange={() => set('mode', '')} /> Heatmap
          </label>
          <label class="chip">
            <input type="radio" name="mode" checked={mode === 'elements'} onChange={() => set('mode', 'elements')} /> Element clicks
          </label>
        </fieldset>
        {mode === 'heat' && (
          <fieldset class="chips">
            <legend>Kind</legend>
            {KINDS.map((k) => (
              <label key={k.id} class="chip">
                <input type="radio" name="kind" checked={kind === k.id} onChange={() => set('kind', k.id === 'click' ? '' : k.id)} /> {k.label}
              </label>
            ))}
          </fieldset>
        )}
        <label>
          Viewport
          <select value={bucket} onChange={(e) => set('viewport', (e.target as HTMLSelectElement).value)} disabled={bucketList.length === 0}>
            {bucketList.length === 0 && <option value="">–</option>}
            {bucketList.map((b) => (
              <option key={b} value={b}>
                {bucketLabel(b, bucketList)}
              </option>
            ))}
          </select>
        </label>
        <label class="grow">
          Sessions (empty: all)
          <input
            type="search"
            placeholder="session ids, comma separated"
            value={draftSessions}
            onInput={(e) => setDraftSessions((e.target as HTMLInputElement).value)}
            onKeyDown={(e) => e.key === 'Enter' && set('sessions', draftSessions.replace(/\s+/g, ''))}
            list="page-sessions"
          />
          <datalist id="page-sessions">
            {widths.map((r) => (
              <option key={String(r.session_id)} value={String(r.session_id)} />
            ))}
          </datalist>
        </label>
        <div class="actions">
          <button type="button" class="primary" onClick={() => set('sessions', draftSessions.replace(/\s+/g, ''))}>
            Apply
          </button>
          {chosen.length > 0 && (
            <button
              type="button"
              class="ghost"
              onClick={() => {
                setDraftSessions('');
                set('sessions', '');
              }}
            >
              All sessions
            </button>
          )}
        </div>
      </form>
      <div class="tiles small" data-testid="heat-stats">
        <div class="tile" data-metric="sessions" data-value={stats.state === 'ok' ? String(stats.data.rows[0]?.sessions ?? 0) : ''}>
          <span class="tile-label">Sessions</span>
          <span class="tile-value">{stats.state === 'ok' ? f.int(stats.data.rows[0]?.sessions) : '…'}</span>
        </div>
        <div class="tile" data-metric="visitors" data-value={stats.state === 'ok' ? String(stats.data.rows[0]?.visitors ?? 0) : ''}>
          <span class="tile-label">Unique visitors</span>
          <span class="tile-value">{stats.state === 'ok' ? f.int(stats.data.rows[0]?.visitors) : '…'}</span>
        </div>
        <div class="tile" data-metric="interactions" data-value={heat.state === 'ok' ? String(interactions) : ''}>
          <span class="tile-label">{kind === 'scroll' ? 'Session depth marks' : 'Interactions'}</span>
          <span class="tile-value">{heat.state === 'ok' ? f.int(interactions) : '…'}</span>
        </div>
      </div>
      {heat.state === 'error' && <ErrorBox error={heat.error} retry={retryHeat} />}
      {heat.state === 'loading' && <Loading what="the heatmap" />}
      {heat.state === 'ok' && (
        <Card title={`${f.shortUrl(url)} · ${mode === 'elements' ? 'element clicks' : KINDS.find((k) => k.id === kind)!.label.toLowerCase()}${chosen.length ? ` · ${chosen.length} chosen session${chosen.length > 1 ? 's' : ''}` : ''}`}>
          {shownCells.length === 0 && mode === 'heat' && <Empty>No {kind} data for this page{chosen.length ? ' in these sessions' : ''} at this viewport.</Empty>}
          <Stage key={`${url}|${base}`} url={url} session={base} cells={shownCells} kind={kind} mode={mode} />
        </Card>
      )}
    </>
  );
}

function bucketLabel(b: string, all: string[]): string {
  const next = all[all.indexOf(b) + 1];
  if (Number(b) === 0) return next ? `< ${next} px` : 'all widths';
  return next ? `${b}–${Number(next) - 1} px` : `≥ ${b} px`;
}

type Rebuilt = { state: 'loading' } | { state: 'none'; why: string } | { state: 'ok'; width: number; height: number; doc: Document };

function Stage({ url, session, cells, kind, mode }: { url: string; session: string; cells: Cell[]; kind: string; mode: string }) {
  const { project } = useApp();
  const root = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const [page, setPage] = useState<Rebuilt>({ state: 'loading' });
  const [room, setRoom] = useState(1200);
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const fit = () => setRoom(el.clientWidth);
    fit();
    const ro = new ResizeObserver(fit);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const [elements] = useLoad(
    (signal) =>
      mode === 'elements'
        ? query(
            `SELECT selector, tag, clicks, rage_clicks, dead_clicks, error_clicks, sessions FROM element_clicks WHERE project = ${lit(project.name)} AND url = ${lit(url)} ORDER BY clicks DESC LIMIT 100`,
            signal,
          )
        : Promise.resolve(null),
    [mode, url, project.name],
  );
  // Rebuild the page from the session's recording.
  useEffect(() => {
    if (!session) {
      setPage({ state: 'none', why: 'No recorded session shows this page.' });
      return;
    }
    const ac = new AbortController();
    let player: Replayer | null = null;
    (async () => {
      const events: RrEvent[] = [];
      let cursor: number | null = 0;
      while (cursor !== null) {
        const p: { events: RrEvent[]; next_cursor: number | null } = await api(`/api/v1/sessions/${encodeURIComponent(session)}/replay${cursor ? `?cursor=${cursor}` : ''}`, { signal: ac.signal });
        events.push(...p.events);
        cursor = p.next_cursor ?? null;
        if (pageSnapshot(events, url) && events.slice(-1)[0]?.type === 4) break;
      }
      const shot = pageSnapshot(events, url);
      if (!shot) return setPage({ state: 'none', why: `Session ${session} has no full snapshot of this page.` });
      const el = root.current!;
      player = new Replayer(shot as never[], { root: el, mouseTail: false, showWarning: false, triggerFocus: false, speed: 1 });
      const full = shot.findIndex((e) => e.type === 2);
      player.pause(shot[full].timestamp - shot[0].timestamp + 1);
      const iframe = el.querySelector('iframe')!;
      const measure = () => {
        const doc = iframe.contentDocument;
        if (!doc || ac.signal.aborted) return;
        const width = Number(shot[0].data?.width) || iframe.clientWidth;
        const height = Math.max(doc.documentElement.scrollHeight, doc.body?.scrollHeight ?? 0, Number(shot[0].data?.height) || 0);
        iframe.style.height = `${height}px`;
        iframe.setAttribute('height', String(height));
        setPage({ state: 'ok', width, height, doc });
      };
      measure();
      // Styles and images arrive after the DOM: measure again when they settle.
      setTimeout(measure, 400);
      setTimeout(measure, 1500);
    })().catch((e: Error) => {
      if (!ac.signal.aborted && e.name !== 'AbortError') setPage({ state: 'none', why: `The page could not be rebuilt: ${e.message}` });
    });
    return () => {
      ac.abort();
      player?.destroy();
    };
  }, [session, url]);

  const size = page.state === 'ok' ? { width: page.width, height: page.height } : { width: Math.max(1024, extent(cells).width), height: Math.max(768, extent(cells).height + 64) };
  // Draw the heat in document coordinates: the canvas is the page's size.
  useEffect(() => {
    const c = canvas.current;
    if (!c || mode !== 'heat') return;
    c.width = size.width;
    c.height = Math.min(size.height, 30000);
    const ctx = c.getContext('2d')!;
    ctx.clearRect(0, 0, c.width, c.height);
    if (kind === 'scroll') {
      for (const b of scrollBands(cells)) {
        const [r, g, bl] = ramp(b.share);
        ctx.fillStyle = `rgba(${r},${g},${bl},0.35)`;
        ctx.fillRect(0, b.y, c.width, b.height);
      }
      return;
    }
    const hp = heatPoints(cells);
    if (hp.points.length === 0) return;
    const h = simpleheat(c);
    h.data(hp.points);
    h.max(hp.max);
    h.radius(kind === 'move' ? 14 : 18, kind === 'move' ? 12 : 14);
    h.draw(0.05);
  }, [cells, kind, mode, size.width, size.height]);

  // The recorded width, shrunk (never grown) to fit the card.
  const scale = Math.min(1, Math.max(0.2, (room - 2) / size.width));
  const bands = kind === 'scroll' ? scrollBands(cells) : [];
  const labels = bands.filter((_, i) => i % Math.max(1, Math.ceil(bands.length / 12)) === 0);
  const boxes = mode === 'elements' && page.state === 'ok' && elements.state === 'ok' && elements.data ? locate(page.doc, elements.data.rows) : [];
  const missing = mode === 'elements' && elements.state === 'ok' && elements.data ? elements.data.rows.length - boxes.length : 0;

  return (
    <div>
      {page.state === 'loading' && <Loading what="the page from its recording" />}
      {page.state === 'none' && <p class="muted">{page.why} The overlay is drawn on a blank page of the recorded coordinates.</p>}
      {page.state === 'ok' && (
        <p class="muted">
          Rebuilt from session{' '}
          <a href={href(`/sessions/${session}`, project.name)} class="mono">
            {session}
          </a>{' '}
          at {page.width} px wide. {mode === 'elements' ? 'Counts over all sessions of the page.' : ''}
          {missing > 0 ? ` ${missing} clicked element${missing > 1 ? 's are' : ' is'} not on this snapshot.` : ''}
        </p>
      )}
      {mode === 'elements' && elements.state === 'error' && <ErrorBox error={elements.error} />}
      <div class="heat-scroll" data-testid="heat-stage" ref={scroller}>
        <div style={{ width: `${Math.floor(size.width * scale)}px`, height: `${Math.ceil(size.height * scale)}px`, overflow: 'hidden' }}>
        <div class="heat-page" data-scale={scale} style={{ width: `${size.width}px`, height: `${size.height}px`, transform: `scale(${scale})` }}>
          <div class="heat-dom" ref={root} aria-hidden="true" />
          <canvas ref={canvas} class="heat-overlay" data-testid="heat-overlay" style={{ display: mode === 'heat' ? 'block' : 'none' }} />
          {labels.map((b) => (
            <span key={b.y} class="depth-label" style={{ top: `${b.y}px` }}>
              {f.pct(b.share)} of sessions reach here
            </span>
          ))}
          {boxes.map((b, i) => (
            <div
              key={b.selector}
              class={`el-box ${b.rage ? 'rage' : b.dead ? 'dead' : ''}`}
              style={{ left: `${b.x}px`, top: `${b.y}px`, width: `${b.w}px`, height: `${b.h}px` }}
              title={`${b.selector}: ${b.clicks} clicks, ${b.rage} rage, ${b.dead} dead, ${b.error} error, ${b.sessions} sessions`}
              data-selector={b.selector}
            >
              <span class="el-count">
                {i + 1}. {f.int(b.clicks)}
              </span>
            </div>
          ))}
        </div>
        </div>
      </div>
      {mode === 'elements' && elements.state === 'ok' && elements.data && (
        <table class="data" data-testid="element-clicks">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Element</th>
              <th scope="col" class="num">Clicks</th>
              <th scope="col" class="num">Rage</th>
              <th scope="col" class="num">Dead</th>
              <th scope="col" class="num">Error</th>
              <th scope="col" class="num">Sessions</th>
            </tr>
          </thead>
          <tbody>
            {elements.data.rows.map((r, i) => (
              <tr key={String(r.selector)}>
                <td>{i + 1}</td>
                <td class="mono">{String(r.selector)}</td>
                <td class="num">{f.int(r.clicks)}</td>
                <td class="num">{f.int(r.rage_clicks)}</td>
                <td class="num">{f.int(r.dead_clicks)}</td>
                <td class="num">{f.int(r.error_clicks)}</td>
                <td class="num">{f.int(r.sessions)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** Where the clickmap's elements are on the rebuilt page (document coordinates). */
function locate(doc: Document, rows: Row[]) {
  const out: { selector: string; x: number; y: number; w: number; h: number; clicks: number; rage: number; dead: number; error: number; sessions: number }[] = [];
  const sx = doc.defaultView?.scrollX ?? 0;
  const sy = doc.defaultView?.scrollY ?? 0;
  for (const r of rows) {
    const selector = String(r.selector ?? '');
    let el: Element | null = null;
    try {
      el = selector ? doc.querySelector(selector) : null;
    } catch {
      el = null;
    }
    if (!el) continue;
    const b = el.getBoundingClientRect();
    if (b.width === 0 && b.height === 0) continue;
    out.push({
      selector,
      x: b.left + sx,
      y: b.top + sy,
      w: b.width,
      h: b.height,
      clicks: Number(r.clicks),
      rage: Number(r.rage_clicks),
      dead: Number(r.dead_clicks),
      error: Number(r.error_clicks),
      sessions: Number(r.sessions),
    });
  }
  return out;
}
