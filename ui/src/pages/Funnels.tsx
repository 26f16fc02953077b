// Funnels: each configured funnel as bars of entered and conversion per step, the
// drop-off between steps, and the sessions that dropped at a step.

import { useLocation } from 'preact-iso';
import { lit, query, type Row } from '../api';
import { funnelSteps, type Step } from '../funnel';
import * as f from '../format';
import { Card, Empty, SignalBadges, Show, href, useApp, useLoad, useTitle } from '../ui';

export default function Funnels() {
  const { project } = useApp();
  const loc = useLocation();
  const chosen = loc.query.funnel;
  const dropped = Number(loc.query.dropped ?? NaN);
  useTitle('Funnels');
  const [steps, retry] = useLoad(
    (signal) => query(`SELECT funnel, step, step_name, entered, conversion_rate FROM funnel_steps WHERE project = ${lit(project.name)} ORDER BY funnel, step`, signal),
    [project.name],
  );
  return (
    <div class="page">
      <div class="page-head">
        <h1>Funnels</h1>
      </div>
      <Show s={steps} what="funnels" retry={retry}>
        {(r) => {
          const by = new Map<string, Row[]>();
          for (const row of r.rows) by.set(String(row.funnel), [...(by.get(String(row.funnel)) ?? []), row]);
          if (by.size === 0)
            return (
              <Empty>
                No funnel has data yet. Funnels are declared in the server's configuration as <code>[[funnels]]</code> with ordered steps (a page path, a custom event or a
                click target); they fill as sessions reach their first step.
              </Empty>
            );
          return [...by.entries()].map(([name, rows]) => (
            <Card key={name} title={name}>
              <Funnel name={name} steps={funnelSteps(rows)} />
              {chosen === name && Number.isFinite(dropped) && <Dropped funnel={name} step={dropped} steps={funnelSteps(rows)} />}
            </Card>
          ));
        }}
      </Show>
    </div>
  );
}

function Funnel({ name, steps }: { name: string; steps: Step[] }) {
  const { project } = useApp();
  const top = Math.max(1, ...steps.map((s) => s.entered));
  return (
    <ol class="funnel" data-testid={`funnel-${name}`}>
      {steps.map((s, i) => (
        <li key={s.step} data-step={s.step} data-entered={s.entered}>
          {i > 0 && (
            <div class="drop">
              ↓ {f.int(s.dropped)} dropped ({f.pct(s.dropShare)})
              {s.dropped > 0 && (
                <a href={href('/funnels', project.name, { funnel: name, dropped: String(s.step) })} aria-label={`Sessions that dropped before ${s.name}`}>
                  see sessions
                </a>
              )}
            </div>
          )}
          <div class="step">
            <span class="step-name">
              {i + 1}. {s.name}
            </span>
            <div class="bar-track">
              <div class="bar" style={{ width: `${(s.entered / top) * 100}%` }} />
            </div>
            <span class="step-n">{f.int(s.entered)}</span>
            <span class="step-pct">{f.pct(s.conversion)}</span>
          </div>
        </li>
      ))}
    </ol>
  );
}

function Dropped({ funnel, step, steps }: { funnel: string; step: number; steps: Step[] }) {
  const { project } = useApp();
  const idx = steps.findIndex((s) => s.step === step);
  const reached = idx; // steps reached by a session that stopped before this one
  const [list] = useLoad(
    (signal) =>
      query(
        `SELECT s.session_id, s.started_at, s.duration_ms, s.entry_url, s.exit_url, s.browser, s.is_live, s.rage_clicks, s.dead_clicks, s.error_clicks, s.errors
         FROM session_funnels f JOIN sessions s ON f.session_id = s.session_id
         WHERE f.project = ${lit(project.name)} AND f.funnel = ${lit(funnel)} AND f.steps_reached = ${reached}
         ORDER BY s.started_at DESC LIMIT 100`,
        signal,
      ),
    [funnel, reached, project.name],
  );
  return (
    <div class="dropped" data-testid="dropped">
      <h3 class="sub">
        Sessions that reached “{steps[idx - 1]?.name}” but not “{steps[idx]?.name}”
      </h3>
      <Show s={list} what="sessions">
        {(r) =>
          r.rows.length === 0 ? (
            <Empty>None in the stored sessions.</Empty>
          ) : (
            <ul class="feed">
              {r.rows.map((s) => (
                <li key={String(s.session_id)}>
                  <a href={href(`/sessions/${s.session_id}`, project.name)}>
                    <span class="when">{f.time(s.started_at)}</span>
                    <span class="url">
                      {f.shortUrl(s.entry_url)} → {f.shortUrl(s.exit_url)}
                    </span>
                    <span class="meta">{f.duration(s.duration_ms)}</span>
                    <SignalBadges s={s} />
                  </a>
                </li>
              ))}
            </ul>
          )
        }
      </Show>
    </div>
  );
}
