// Insights: the pages where each frustration signal happens most, with example
// sessions, and the uncaught errors grouped by fingerprint with a replay at each one.

import { useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { lit, query, type Row } from '../api';
import * as f from '../format';
import { DEFAULT_RANGE, RANGES, listedSince, spanOf, type Span } from '../filters';
import { FRUSTRATIONS, signalPages, within } from '../sql';
import { Card, Empty, RangePicker, Show, href, useApp, useLoad, useTitle } from '../ui';

export default function Insights() {
  const { project } = useApp();
  const loc = useLocation();
  const range = loc.query.range ?? DEFAULT_RANGE;
  const { from, to } = loc.query;
  const span = spanOf(range, from, to, Date.now());
  const key = `${range}|${from}|${to}`;
  const kept = listedSince(span, project.kept?.sessions_ms, Date.now());
  useTitle('Insights');
  return (
    <div class="page">
      <div class="page-head">
        <h1>Insights</h1>
        <div class="spacer" />
        <RangePicker range={range} from={from} to={to} ranges={RANGES} change={(q) => loc.route(href('/insights', project.name, q))} />
      </div>
      <Errors span={span} k={key} />
      <h2 class="section">Frustration by page</h2>
      {kept !== null && (
        <p class="muted small" data-testid="insights-kept-note">
          Counted over the sessions still listed: closed sessions leave the per-session tables {f.span(project.kept!.sessions_ms)} after they end
          (session.retention_ms), so none that ended before {f.time(kept)} is here. The page_stats view (SQL) still counts them per page.
        </p>
      )}
      <div class="grid3">
        {FRUSTRATIONS.map((s) => (
          <Signal key={s.table} table={s.table} label={s.label} has={s.has} span={span} k={key} q={{ range, from, to }} />
        ))}
      </div>
    </div>
  );
}

function Signal({ table, label, has, span, k, q }: { table: string; label: string; has: string; span: Span; k: string; q: Record<string, string | undefined> }) {
  const { project } = useApp();
  const [r, retry] = useLoad((signal) => query(signalPages(table, project.name, span), signal), [table, project.name, k]);
  return (
    <Card
      title={label}
      actions={
        <a class="small" href={href('/sessions', project.name, { has, ...q })}>
          all sessions →
        </a>
      }
    >
      <Show s={r} what={label.toLowerCase()} retry={retry}>
        {(d) =>
          d.rows.length === 0 ? (
            <Empty>None in this range.</Empty>
          ) : (
            <table class="data fit" data-testid={`insight-${table}`}>
              <thead>
                <tr>
                  <th scope="col">Page</th>
                  <th scope="col" class="num">Count</th>
                  <th scope="col" class="num">Sessions</th>
                  <th scope="col" class="examples-col">Examples</th>
                </tr>
              </thead>
              <tbody>
                {d.rows.map((p) => (
                  <tr key={String(p.url)} data-url={String(p.url)} data-n={String(p.n)}>
                    <td class="url" title={String(p.url)}>{f.shortUrl(p.url)}</td>
                    <td class="num">{f.int(p.n)}</td>
                    <td class="num">{f.int(p.sessions)}</td>
                    <td>
                      <Examples ids={p.example_sessions} ts={p.example_ts} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Show>
    </Card>
  );
}

/** Up to three distinct example sessions, each opening its replay at the signal's time. */
function Examples({ ids, ts }: { ids: unknown; ts: unknown }) {
  const { project } = useApp();
  const list = f.list(ids);
  const times = f.list(ts).map(Number);
  const seen = new Set<string>();
  const out: { id: string; ts: number }[] = [];
  list.forEach((id, i) => {
    if (seen.has(id) || out.length >= 3) return;
    seen.add(id);
    out.push({ id, ts: times[i] });
  });
  return (
    <span class="examples">
      {out.map((e, i) => (
        <a key={e.id} href={href(`/sessions/${e.id}`, project.name, { ts: Number.isFinite(e.ts) ? String(e.ts) : undefined })} title={`session ${e.id} at ${f.time(e.ts)}`}>
          replay {i + 1}
        </a>
      ))}
    </span>
  );
}

function Errors({ span, k }: { span: Span; k: string }) {
  const { project } = useApp();
  const [open, setOpen] = useState<string | null>(null);
  const [r, retry] = useLoad(
    (signal) =>
      query(
        `SELECT fingerprint, message, occurrences, sessions, first_seen, last_seen FROM errors WHERE project = ${lit(project.name)}${within('last_seen', { start: span.start, end: null })}${span.end === null ? '' : within('first_seen', { start: null, end: span.end })} ORDER BY occurrences DESC, last_seen DESC LIMIT 100`,
        signal,
      ),
    [project.name, k],
  );
  return (
    <Card title="Errors">
      <Show s={r} what="errors" retry={retry}>
        {(d) =>
          d.rows.length === 0 ? (
            <Empty>No uncaught errors in this range.</Empty>
          ) : (
            <table class="data errors" data-testid="errors">
              <thead>
                <tr>
                  <th scope="col">Error</th>
                  <th scope="col" class="num">Occurrences</th>
                  <th scope="col" class="num">Sessions</th>
                  <th scope="col">First seen</th>
                  <th scope="col">Last seen</th>
                  <th scope="col">Replays</th>
                </tr>
              </thead>
              <tbody>
                {d.rows.map((e) => {
                  const fp = String(e.fingerprint);
                  return (
                    <>
                      <tr key={fp} data-fingerprint={fp}>
                        <td class="msg">
                          <code>{String(e.message)}</code>
                        </td>
                        <td class="num">{f.int(e.occurrences)}</td>
                        <td class="num">{f.int(e.sessions)}</td>
                        <td>{f.time(e.first_seen)}</td>
                        <td>{f.time(e.last_seen)}</td>
                        <td>
                          <button type="button" class="link" aria-expanded={open === fp} onClick={() => setOpen(open === fp ? null : fp)}>
                            {open === fp ? 'hide' : 'show'}
                          </button>
                        </td>
                      </tr>
                      {open === fp && (
                        <tr key={`${fp}-x`}>
                          <td colSpan={6}>
                            <Occurrences fingerprint={fp} span={span} />
                          </td>
                        </tr>
                      )}
                    </>
                  );
                })}
              </tbody>
            </table>
          )
        }
      </Show>
    </Card>
  );
}

function Occurrences({ fingerprint, span }: { fingerprint: string; span: Span }) {
  const { project } = useApp();
  const [r] = useLoad(
    (signal) =>
      query(
        `SELECT session_id, url, ts, message FROM error_events WHERE project = ${lit(project.name)} AND fingerprint = ${lit(fingerprint)}${within('ts', span)} ORDER BY ts DESC LIMIT 50`,
        signal,
      ),
    [fingerprint, project.name],
  );
  return (
    <Show s={r} what="occurrences">
      {(d: { rows: Row[] }) =>
        d.rows.length === 0 ? (
          <Empty>No occurrence in this range.</Empty>
        ) : (
          <ul class="feed compact" data-testid="occurrences">
            {d.rows.map((o, i) => (
              <li key={i}>
                <a href={href(`/sessions/${o.session_id}`, project.name, { ts: String(f.toMs(o.ts) ?? '') })}>
                  <span class="when">{f.time(o.ts)}</span>
                  <span class="url">{f.shortUrl(o.url)}</span>
                  <span class="meta">replay at the error →</span>
                </a>
              </li>
            ))}
          </ul>
        )
      }
    </Show>
  );
}
