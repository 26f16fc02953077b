// Replay: the rrweb player with play/pause, speed, skip inactivity and a timeline of
// markers (a marker seeks to its time), with the session's metadata and events beside.

import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { useLocation, useRoute } from 'preact-iso';
import { Replayer } from '@rrweb/replay';
import '@rrweb/replay/dist/style.css';
import { ApiError, api, atLeast, roleIn, type Row } from '../api';
import * as f from '../format';
import { MARKER_LABEL, buildMarkers, noRecording, position, type Marker, type RrEvent } from '../timeline';
import { Card, Empty, ErrorBox, Loading, SignalBadges, Show, href, useApp, useLoad, useTitle } from '../ui';

interface Detail {
  session: Row;
  timeline: Row[];
}

interface ReplayPage {
  events: RrEvent[];
  next_cursor: number | null;
  skipped: { chunk: number; reason: string }[];
}

type Rec = { state: 'loading'; n: number } | { state: 'refused'; why: string } | { state: 'error'; error: string } | { state: 'ok'; events: RrEvent[]; done: boolean; skipped: string[] };

const SPEEDS = [1, 2, 4, 8, 16];

export default function Replay() {
  const { project, me } = useApp();
  const { params } = useRoute();
  const loc = useLocation();
  const id = params.id;
  const seekTo = Number(loc.query.ts ?? NaN);
  useTitle('Replay');
  const [detail, retry] = useLoad((signal) => api<Detail>(`/api/v1/sessions/${encodeURIComponent(id)}`, { signal }), [id]);
  const [rec, setRec] = useState<Rec>({ state: 'loading', n: 0 });
  const role = roleIn(me, project.name);

  // The recording, page by page: the player starts with the first page and takes the
  // rest as it arrives.
  useEffect(() => {
    const ac = new AbortController();
    (async () => {
      let cursor: number | null = 0;
      const all: RrEvent[] = [];
      const skipped: string[] = [];
      while (cursor !== null && !ac.signal.aborted) {
        const q: string = cursor ? `?cursor=${cursor}` : '';
        const p: ReplayPage = await api<ReplayPage>(`/api/v1/sessions/${encodeURIComponent(id)}/replay${q}`, { signal: ac.signal });
        all.push(...p.events);
        for (const s of p.skipped ?? []) skipped.push(`chunk ${s.chunk}: ${s.reason}`);
        cursor = p.next_cursor ?? null;
        if (!ac.signal.aborted) setRec({ state: 'ok', events: [...all], done: cursor === null, skipped });
      }
    })().catch((e: Error) => {
      if (ac.signal.aborted || e.name === 'AbortError') return;
      if (e instanceof ApiError && e.status === 403)
        setRec({
          state: 'refused',
          why: `Your role on ${project.name} is ${role ?? 'none'}. Viewers read analytics but do not watch replays; a member, admin or owner can.`,
        });
      else setRec({ state: 'error', error: e.message });
    });
    return () => ac.abort();
  }, [id]);

  return (
    <div class="page replay-page">
      <div class="page-head">
        <a href={href('/sessions', project.name)} class="back">
          ← Sessions
        </a>
        <h1>Replay</h1>
        {detail.state === 'ok' && (
          <span class="muted">
            {f.time(detail.data.session.started_at)} · {f.duration(detail.data.session.duration_ms)}
          </span>
        )}
      </div>
      <Show s={detail} what="the session" retry={retry}>
        {(d) =>
          rec.state === 'ok' && rec.events.length >= 2 ? (
            <>
              <Player events={rec.events} detail={d} seekTo={Number.isFinite(seekTo) ? seekTo : null} done={rec.done} aside={<Meta s={d.session} />} />
              {rec.skipped.length > 0 && (
                <p class="form-error" role="status">
                  Parts of the recording could not be read: {rec.skipped.join('; ')}
                </p>
              )}
            </>
          ) : (
            <div class="replay-grid">
              <div>
                {rec.state === 'loading' && <Loading what="the recording" />}
                {rec.state === 'refused' && (
                  <div class="state refused" role="alert" data-testid="replay-refused">
                    <strong>No replay for viewers.</strong> {rec.why}
                    {!atLeast(role, 'member') && <p class="muted">The session's signals and events are listed beside.</p>}
                  </div>
                )}
                {rec.state === 'error' && <ErrorBox error={rec.error} />}
                {rec.state === 'ok' && <Empty>{noRecording(project, d.session)}</Empty>}
              </div>
              <aside>
                <Meta s={d.session} />
                <EventList markers={buildMarkers(d.timeline, [])} now={-1} seek={null} />
              </aside>
            </div>
          )
        }
      </Show>
    </div>
  );
}

function Meta({ s }: { s: Row }) {
  const rows: [string, unknown][] = [
    ['Visitor', s.user_id || s.device_id],
    ['Device', [s.device_type, s.browser, s.os].filter(Boolean).join(' · ')],
    ['Country', s.country],
    ['Started', f.time(s.started_at)],
    ['Duration', f.duration(s.duration_ms)],
    ['Pages', f.int(s.page_views)],
    ['Events', f.int(s.events)],
    ['Clicks', f.int(s.clicks)],
    ['Entry', f.shortUrl(s.entry_url)],
    ['Exit', f.shortUrl(s.exit_url)],
  ];
  return (
    <Card title="Session">
      <SignalBadges s={s} />
      <dl class="meta" data-testid="session-meta">
        {rows.map(([k, v]) => (
          <>
            <dt key={`${k}-t`}>{k}</dt>
            <dd key={`${k}-d`}>{v === null || v === undefined || v === '' ? '–' : String(v)}</dd>
          </>
        ))}
      </dl>
    </Card>
  );
}

function EventList({ markers, now, seek }: { markers: Marker[]; now: number; seek: ((t: number) => void) | null }) {
  const [clicks, setClicks] = useState(false);
  const shown = markers.filter((m) => clicks || m.kind !== 'click');
  let current = -1;
  shown.forEach((m, i) => {
    if (m.t <= now) current = i;
  });
  return (
    <Card
      title="Events"
      actions={
        <label class="chip small">
          <input type="checkbox" checked={clicks} onChange={(e) => setClicks((e.target as HTMLInputElement).checked)} /> all clicks
        </label>
      }
    >
      {shown.length === 0 ? (
        <Empty>No page views or signals in this session.</Empty>
      ) : (
        <ol class="events" data-testid="events">
          {shown.map((m, i) => (
            <li key={`${m.kind}-${m.ts}-${i}`} class={`ev ${m.kind}`} aria-current={i === current ? 'true' : undefined}>
              {seek ? (
                <button type="button" onClick={() => seek(m.t)} title={`Seek to ${f.clock(m.t)}`}>
                  <span class="at">{f.clock(m.t)}</span> <span class={`kind ${m.kind}`}>{MARKER_LABEL[m.kind]}</span> <span class="what">{m.kind === 'page_view' ? f.shortUrl(m.label) : m.label}</span>
                </button>
              ) : (
                <span>
                  <span class="at">{f.time(m.ts)}</span> <span class={`kind ${m.kind}`}>{MARKER_LABEL[m.kind]}</span> <span class="what">{m.label}</span>
                </span>
              )}
            </li>
          ))}
        </ol>
      )}
    </Card>
  );
}

function Player({ events, detail, seekTo, done, aside }: { events: RrEvent[]; detail: Detail; seekTo: number | null; done: boolean; aside: ComponentChildren }) {
  const box = useRef<HTMLDivElement>(null);
  const frame = useRef<HTMLDivElement>(null);
  const player = useRef<Replayer | null>(null);
  const added = useRef(0);
  const [playing, setPlaying] = useState(false);
  const [now, setNow] = useState(0);
  const [speed, setSpeed] = useState(1);
  const [skip, setSkip] = useState(true);
  const [size, setSize] = useState<{ w: number; h: number }>({ w: 1024, h: 768 });
  const [scale, setScale] = useState(1);
  const start = events[0].timestamp;
  const endTs = Math.max(events[events.length - 1].timestamp, f.toMs(detail.session.ended_at) ?? 0);
  const total = Math.max(1, endTs - start);
  const markers = buildMarkers(detail.timeline, events);

  useEffect(() => {
    const root = box.current!;
    const meta = events.find((e) => e.type === 4);
    if (meta?.data?.width) setSize({ w: meta.data.width, h: meta.data.height });
    const r = new Replayer(events as never[], { root, skipInactive: true, mouseTail: false, showWarning: false, speed: 1, triggerFocus: false });
    added.current = events.length;
    player.current = r;
    r.on('resize', (d: unknown) => {
      const s = d as { width: number; height: number };
      setSize({ w: s.width, h: s.height });
    });
    r.on('finish', () => setPlaying(false));
    const first = seekTo !== null ? Math.max(0, seekTo - start) : 0;
    r.play(first);
    setPlaying(true);
    let raf = 0;
    const tick = () => {
      setNow(r.getCurrentTime());
      raf = requestAnimationFrame(tick);
    };
    raf = requestAnimationFrame(tick);
    return () => {
      cancelAnimationFrame(raf);
      r.pause();
      r.destroy();
      player.current = null;
    };
  }, []);
  // Pages that arrive after the first are added to the running player.
  useEffect(() => {
    const r = player.current;
    if (!r) return;
    for (let i = added.current; i < events.length; i++) r.addEvent(events[i] as never);
    added.current = events.length;
  }, [events.length]);
  // Fit the recorded viewport into the page.
  useEffect(() => {
    const el = frame.current;
    if (!el) return;
    const fit = () => setScale(Math.min(1, el.clientWidth / size.w));
    fit();
    const ro = new ResizeObserver(fit);
    ro.observe(el);
    return () => ro.disconnect();
  }, [size.w]);

  const seek = (t: number) => {
    const r = player.current;
    if (!r) return;
    const at = Math.max(0, Math.min(total, t));
    if (playing) r.play(at);
    else r.pause(at);
    setNow(at);
  };
  const toggle = () => {
    const r = player.current;
    if (!r) return;
    if (playing) {
      r.pause();
      setPlaying(false);
    } else {
      r.play(now >= total - 50 ? 0 : now);
      setPlaying(true);
    }
  };
  useEffect(() => {
    player.current?.setConfig({ speed, skipInactive: skip });
  }, [speed, skip]);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.target as HTMLElement).closest('input, textarea, select, button')) return;
      if (e.key === ' ') {
        e.preventDefault();
        toggle();
      } else if (e.key === 'ArrowRight') seek(now + 5000);
      else if (e.key === 'ArrowLeft') seek(now - 5000);
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  });

  return (
    <div class="replay-grid">
    <div class="player" data-testid="player" data-time={Math.round(now)} data-start={start} data-playing={playing}>
      <div class="stage" ref={frame} style={{ height: `${Math.round(size.h * scale)}px` }}>
        <div class="stage-inner" ref={box} style={{ transform: `scale(${scale})`, width: `${size.w}px`, height: `${size.h}px` }} />
      </div>
      <div class="controls">
        <button type="button" class="primary play" onClick={toggle} aria-label={playing ? 'Pause' : 'Play'} data-testid="play">
          {playing ? '❚❚' : '▶'}
        </button>
        <span class="clock" aria-live="off">
          {f.clock(now)} / {f.clock(total)}
        </span>
        <label>
          Speed{' '}
          <select value={speed} onChange={(e) => setSpeed(Number((e.target as HTMLSelectElement).value))}>
            {SPEEDS.map((s) => (
              <option key={s} value={s}>
                {s}×
              </option>
            ))}
          </select>
        </label>
        <label class="chip small">
          <input type="checkbox" checked={skip} onChange={(e) => setSkip((e.target as HTMLInputElement).checked)} /> Skip inactivity
        </label>
        {!done && <span class="muted">loading the rest…</span>}
      </div>
      <div
        class="timeline"
        role="slider"
        tabIndex={0}
        aria-label="Position in the recording"
        aria-valuemin={0}
        aria-valuemax={Math.round(total / 1000)}
        aria-valuenow={Math.round(now / 1000)}
        aria-valuetext={`${f.clock(now)} of ${f.clock(total)}`}
        onKeyDown={(e) => {
          if (e.key === 'ArrowRight') seek(now + 5000);
          if (e.key === 'ArrowLeft') seek(now - 5000);
        }}
        onClick={(e) => {
          const r = (e.currentTarget as HTMLElement).getBoundingClientRect();
          seek(((e.clientX - r.left) / r.width) * total);
        }}
      >
        <div class="progress" style={{ width: `${position(now, total)}%` }} />
        {markers
          .filter((m) => m.kind !== 'click')
          .map((m, i) => (
            <button
              type="button"
              key={`${m.kind}-${i}`}
              class={`marker ${m.kind}`}
              style={{ left: `${position(m.t, total)}%` }}
              title={`${f.clock(m.t)} ${m.label}`}
              aria-label={`${MARKER_LABEL[m.kind]} at ${f.clock(m.t)}`}
              data-kind={m.kind}
              data-t={m.t}
              onClick={(e) => {
                e.stopPropagation();
                seek(m.t);
              }}
            />
          ))}
      </div>
      <div class="legend">
        {(['page_view', 'rage_click', 'dead_click', 'error_click', 'error', 'quick_back', 'excessive_scroll', 'thrashed_cursor'] as const)
          .filter((k) => markers.some((m) => m.kind === k))
          .map((k) => (
            <span key={k} class={`key ${k}`}>
              <i /> {MARKER_LABEL[k]}
            </span>
          ))}
      </div>
    </div>
    <aside>
      {aside}
      <EventList markers={markers} now={now} seek={seek} />
    </aside>
    </div>
  );
}
