// Sessions: a filterable, sortable, paginated list; each row opens its replay.

import { useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { api, type Row } from '../api';
import * as f from '../format';
import { RANGES, SIGNALS, badNumber, listedSince, sessionFilters, spanOf, sessionSearch, sessionsApi, type SessionFilters } from '../filters';
import { Card, Empty, ErrorBox, Loading, RangePicker, SignalBadges, href, useApp, useLoad, useTitle } from '../ui';

const PAGE = 25;

const COLUMNS: { key: string; label: string; sort?: string; num?: boolean }[] = [
  { key: 'started_at', label: 'Started', sort: 'started_at' },
  { key: 'entry_url', label: 'Entry page' },
  { key: 'user', label: 'Visitor' },
  { key: 'device', label: 'Device' },
  { key: 'duration_ms', label: 'Duration', sort: 'duration_ms', num: true },
  { key: 'page_views', label: 'Pages', sort: 'page_views', num: true },
  { key: 'clicks', label: 'Clicks', sort: 'clicks', num: true },
  { key: 'signals', label: 'Signals' },
];

interface ListPage {
  sessions: Row[];
  total: number;
  next_cursor: string | null;
  as_of: number;
}

export default function Sessions() {
  const { project } = useApp();
  const loc = useLocation();
  const q = new URLSearchParams(loc.url.split('?')[1] ?? '');
  const filters = sessionFilters(q);
  const cursor = q.get('cursor') ?? '';
  const back = (q.get('back') ?? '').split('~').filter(Boolean);
  useTitle('Sessions');
  const [draft, setDraft] = useState<SessionFilters>(filters);
  const [draftKey, setDraftKey] = useState(loc.url);
  if (draftKey !== loc.url) {
    setDraft(filters);
    setDraftKey(loc.url);
  }
  const [list, retry] = useLoad(
    (signal) => api<ListPage>(sessionsApi(filters, { project: project.name, now: Date.now(), limit: PAGE, cursor }), { signal }),
    [loc.url, project.name],
  );
  const go = (nf: SessionFilters, extra: Record<string, string> = {}) =>
    loc.route(`/sessions${sessionSearch(nf, { project: project.name, ...extra })}`);
  const bad = badNumber(draft.min_duration_s, 'Minimum duration');
  const kept = listedSince(spanOf(filters.range, filters.from, filters.to, Date.now()), project.kept?.sessions_ms, Date.now());
  const set = (k: keyof SessionFilters) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });
  const sortBy = (col: string) => {
    const order = filters.sort === col && filters.order === 'desc' ? 'asc' : 'desc';
    go({ ...filters, sort: col, order });
  };
  return (
    <div class="page">
      <div class="page-head">
        <h1>Sessions</h1>
        {list.state === 'ok' && (
          <span class="muted" data-testid="total">
            {f.int(list.data.total)} sessions
          </span>
        )}
      </div>
      <form
        class="filters"
        aria-label="Filter sessions"
        onSubmit={(e) => {
          e.preventDefault();
          if (!bad) go(draft);
        }}
      >
        <RangePicker range={draft.range} from={draft.from} to={draft.to} ranges={RANGES} change={(q) => setDraft({ ...draft, range: q.range, from: q.from ?? '', to: q.to ?? '' })} />
        <label>
          Page URL
          <input type="search" placeholder="/pricing or *checkout*" value={draft.url} onInput={set('url')} />
        </label>
        <label>
          User id
          <input type="search" value={draft.user_id} onInput={set('user_id')} />
        </label>
        <label>
          Device
          <select value={draft.device_type} onChange={set('device_type')}>
            <option value="">any</option>
            <option value="desktop">desktop</option>
            <option value="mobile">mobile</option>
            <option value="tablet">tablet</option>
          </select>
        </label>
        <label>
          Browser
          <input type="search" placeholder="Chrome" value={draft.browser} onInput={set('browser')} />
        </label>
        <label>
          OS
          <input type="search" placeholder="Windows" value={draft.os} onInput={set('os')} />
        </label>
        <label>
          Country
          <input type="search" placeholder="DE" size={4} value={draft.country} onInput={set('country')} />
        </label>
        <label>
          Min duration (s)
          <input type="text" inputMode="numeric" size={5} value={draft.min_duration_s} onInput={set('min_duration_s')} aria-invalid={!!bad} />
        </label>
        <fieldset class="chips">
          <legend>Signals</legend>
          {SIGNALS.map((s) => (
            <label key={s.id} class="chip">
              <input
                type="checkbox"
                checked={draft.has.includes(s.id)}
                onChange={(e) =>
                  setDraft({ ...draft, has: (e.target as HTMLInputElement).checked ? [...draft.has, s.id] : draft.has.filter((h) => h !== s.id) })
                }
              />
              {s.label}
            </label>
          ))}
          <label class="chip">
            <input type="checkbox" checked={draft.live} onChange={(e) => setDraft({ ...draft, live: (e.target as HTMLInputElement).checked })} />
            Live now
          </label>
        </fieldset>
        <div class="actions">
          <button type="submit" class="primary" disabled={!!bad}>
            Apply
          </button>
          <button type="button" class="ghost" onClick={() => loc.route(href('/sessions', project.name))}>
            Clear
          </button>
        </div>
        {bad && (
          <p class="form-error" role="alert">
            {bad}
          </p>
        )}
      </form>
      <Card>
        {list.state === 'loading' && <Loading what="sessions" />}
        {list.state === 'error' && <ErrorBox error={list.error} retry={retry} />}
        {list.state === 'ok' &&
          kept !== null && (
            <p class="muted small" style={{ margin: '0 0 8px' }} data-testid="sessions-kept-note">
              Closed sessions are listed for {f.span(project.kept!.sessions_ms)} after they end (session.retention_ms): this list holds
              none that ended before {f.time(kept)}. Heatmaps, funnel steps, page stats and errors still count them.
            </p>
          )}
        {list.state === 'ok' &&
          (list.data.sessions.length === 0 ? (
            <Empty>No session matches these filters. Widen the range or clear a filter.</Empty>
          ) : (
            <>
              <div class="scroll-x">
                <table class="data sessions" data-testid="sessions">
                  <thead>
                    <tr>
                      {COLUMNS.map((c) => (
                        <th key={c.key} scope="col" class={c.num ? 'num' : ''} aria-sort={c.sort && filters.sort === c.sort ? (filters.order === 'asc' ? 'ascending' : 'descending') : undefined}>
                          {c.sort ? (
                            <button type="button" class="sort" onClick={() => sortBy(c.sort!)}>
                              {c.label}
                              {filters.sort === c.sort ? (filters.order === 'asc' ? ' ▲' : ' ▼') : ''}
                            </button>
                          ) : (
                            c.label
                          )}
                        </th>
                      ))}
                    </tr>
                  </thead>
                  <tbody>
                    {list.data.sessions.map((s) => (
                      <tr key={String(s.session_id)} data-session={String(s.session_id)}>
                        <td>
                          <a href={href(`/sessions/${s.session_id}`, project.name)} title="Watch the replay">
                            {f.time(s.started_at)}
                          </a>
                        </td>
                        <td class="url">{f.shortUrl(s.entry_url)}</td>
                        <td class="mono">{String(s.user_id ?? '') || String(s.device_id).slice(0, 12)}</td>
                        <td>{[s.device_type, s.browser, s.os, s.country].filter(Boolean).join(' · ') || '–'}</td>
                        <td class="num">{f.duration(s.duration_ms)}</td>
                        <td class="num">{f.int(s.page_views)}</td>
                        <td class="num">{f.int(s.clicks)}</td>
                        <td>
                          <SignalBadges s={s} />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              <nav class="pager" aria-label="Pages of sessions">
                <button type="button" disabled={!cursor} onClick={() => go(filters, { cursor: (back[back.length - 1] ?? '_').replace(/^_$/, ''), back: back.slice(0, -1).join('~') })}>
                  ← Newer
                </button>
                <span class="muted">
                  {f.int(list.data.sessions.length)} of {f.int(list.data.total)}
                </span>
                <button
                  type="button"
                  disabled={!list.data.next_cursor}
                  onClick={() => go(filters, { cursor: list.data.next_cursor ?? '', back: [...back, cursor || '_'].join('~') })}
                >
                  Older →
                </button>
              </nav>
            </>
          ))}
      </Card>
    </div>
  );
}
