// SQL: an editor with table and column completion, a results table, a chart of the
// result, a live mode (the subscribe feed) and CSV download.

import { useEffect, useRef, useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { EditorView, basicSetup } from 'codemirror';
import { keymap } from '@codemirror/view';
import { Compartment, Prec } from '@codemirror/state';
import { PostgreSQL, sql as sqlLang } from '@codemirror/lang-sql';
import { query, queryCsv, type Row } from '../api';
import { Chart } from '../chart';
import { chartOf, schemaOf } from '../chartspec';
import * as f from '../format';
import { subscribe } from '../live';
import { Card, Empty, ErrorBox, Loading, useApp, useNow, useTitle } from '../ui';

const EXAMPLE = `SELECT url, page_views, visitors, avg_time_ms, bounces
FROM page_stats
ORDER BY page_views DESC
LIMIT 20`;

const language = new Compartment();

const COLORS = ['#4f46e5', '#0ea5e9', '#f59e0b', '#ef4444'];

type Result = { state: 'idle' } | { state: 'running' } | { state: 'error'; error: string } | { state: 'ok'; columns: string[]; rows: Row[]; asOf: number; ms: number; live: boolean };

export default function Sql() {
  const { project } = useApp();
  const loc = useLocation();
  useTitle('SQL');
  const now = useNow(1000);
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const [res, setRes] = useState<Result>({ state: 'idle' });
  const [live, setLive] = useState(false);
  const [chart, setChart] = useState(true);
  const stop = useRef<(() => void) | null>(null);
  const text = () => view.current?.state.doc.toString() ?? '';

  const run = async (liveMode = live) => {
    const sql = text().trim();
    if (!sql) return;
    stop.current?.();
    stop.current = null;
    const q = new URLSearchParams({ project: project.name, sql });
    history.replaceState(null, '', `/sql?${q}`);
    setRes({ state: 'running' });
    if (liveMode) {
      const t0 = performance.now();
      stop.current = subscribe(sql, {
        rows: (rows, asOf) => setRes((old) => ({ state: 'ok', columns: rows.length ? Object.keys(rows[0]) : old.state === 'ok' ? old.columns : [], rows, asOf, ms: performance.now() - t0, live: true })),
        progress: (asOf) => setRes((old) => (old.state === 'ok' ? { ...old, asOf } : old)),
        error: (error) => setRes({ state: 'error', error }),
      });
      return;
    }
    const t0 = performance.now();
    try {
      const r = await query(sql);
      setRes({ state: 'ok', columns: r.columns, rows: r.rows, asOf: r.as_of, ms: performance.now() - t0, live: false });
    } catch (e) {
      setRes({ state: 'error', error: (e as Error).message });
    }
  };
  const runRef = useRef(run);
  runRef.current = run;

  useEffect(() => {
    const initial = loc.query.sql ?? EXAMPLE;
    const v = new EditorView({
      doc: initial,
      parent: host.current!,
      extensions: [
        basicSetup,
        language.of(sqlLang({ dialect: PostgreSQL, upperCaseKeywords: true })),
        Prec.highest(keymap.of([{ key: 'Mod-Enter', run: () => (runRef.current(), true) }])),
        EditorView.contentAttributes.of({ 'aria-label': 'SQL query' }),
      ],
    });
    view.current = v;
    // Completion of the tables and columns the caller can read.
    query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position").then(
      (r) => {
        const schema = schemaOf(r.rows);
        v.dispatch({ effects: language.reconfigure(sqlLang({ dialect: PostgreSQL, upperCaseKeywords: true, schema })) });
      },
      () => {},
    );
    if (loc.query.sql) runRef.current(false);
    return () => {
      stop.current?.();
      v.destroy();
    };
  }, []);

  const download = async () => {
    try {
      const blob = await queryCsv(text());
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'sightflow-query.csv';
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (e) {
      setRes({ state: 'error', error: (e as Error).message });
    }
  };

  const spec = res.state === 'ok' ? chartOf(res.columns, res.rows) : null;
  return (
    <div class="page">
      <div class="page-head">
        <h1>SQL</h1>
        <span class="muted">over {project.name} and the other projects you read · Ctrl+Enter runs</span>
      </div>
      <Card>
        <div class="editor" ref={host} />
        <div class="controls">
          <button type="button" class="primary" onClick={() => run()} data-testid="run">
            Run
          </button>
          <label class="chip">
            <input
              type="checkbox"
              checked={live}
              onChange={(e) => {
                const on = (e.target as HTMLInputElement).checked;
                setLive(on);
                if (!on) {
                  stop.current?.();
                  stop.current = null;
                  setRes((old) => (old.state === 'ok' ? { ...old, live: false } : old));
                } else run(true);
              }}
            />{' '}
            Live
          </label>
          <label class="chip">
            <input type="checkbox" checked={chart} onChange={(e) => setChart((e.target as HTMLInputElement).checked)} /> Chart
          </label>
          <button type="button" onClick={download}>
            Download CSV
          </button>
          {res.state === 'ok' && (
            <span class="muted" data-testid="result-meta">
              {f.int(res.rows.length)} rows · {res.live ? <strong class="live-on">live</strong> : `${Math.round(res.ms)} ms`} · data {f.freshness(now, res.asOf).text}
            </span>
          )}
        </div>
      </Card>
      {res.state === 'running' && <Loading what="the result" />}
      {res.state === 'error' && <ErrorBox error={res.error} />}
      {res.state === 'idle' && <Empty>Write a query over the views (sessions, page_views, rage_clicks, heatmap_cells, …) and run it.</Empty>}
      {res.state === 'ok' && chart && spec && (
        <Card title="Chart">
          <Chart
            label="chart of the result"
            x={spec.x}
            categories={spec.categories}
            bars={spec.kind === 'bars'}
            series={spec.series.map((s, i) => ({ label: s.label, color: COLORS[i % COLORS.length], values: s.values }))}
          />
        </Card>
      )}
      {res.state === 'ok' && (
        <Card title="Result">
          {res.rows.length === 0 ? (
            <Empty>The query returned no rows.</Empty>
          ) : (
            <div class="scroll-x">
              <table class="data" data-testid="result">
                <thead>
                  <tr>
                    {res.columns.map((c) => (
                      <th key={c} scope="col">
                        {c}
                      </th>
                    ))}
                  </tr>
                </thead>
                <tbody>
                  {res.rows.slice(0, 1000).map((r, i) => (
                    <tr key={i}>
                      {res.columns.map((c) => (
                        <td key={c} class={typeof r[c] === 'number' ? 'num' : ''}>
                          {cell(r[c])}
                        </td>
                      ))}
                    </tr>
                  ))}
                </tbody>
              </table>
              {res.rows.length > 1000 && <p class="muted">Showing 1,000 of {f.int(res.rows.length)} rows; download the CSV for all.</p>}
            </div>
          )}
        </Card>
      )}
    </div>
  );
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
