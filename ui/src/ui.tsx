// Pieces every page uses: states (loading, empty, error), cards, badges, toasts, and
// the hook that loads data for a page.

import type { ComponentChildren } from 'preact';
import { createContext } from 'preact';
import { useContext, useEffect, useState } from 'preact/hooks';
import type { Me, Project } from './api';

export interface AppCtx {
  me: Me;
  projects: Project[];
  project: Project;
  setProject(name: string): void;
  toast(text: string, href?: string): void;
  reloadProjects(): Promise<void>;
}

export const App = createContext<AppCtx>(null as unknown as AppCtx);

export function useApp(): AppCtx {
  return useContext(App);
}

export type Loaded<T> = { state: 'loading' } | { state: 'error'; error: string } | { state: 'ok'; data: T };

/** Runs `load` when `deps` change; the previous run is aborted. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): [Loaded<T>, () => void] {
  const [s, set] = useState<Loaded<T>>({ state: 'loading' });
  const [n, again] = useState(0);
  useEffect(() => {
    const ac = new AbortController();
    set((old) => (old.state === 'ok' ? old : { state: 'loading' }));
    load(ac.signal).then(
      (data) => !ac.signal.aborted && set({ state: 'ok', data }),
      (e: Error) => !ac.signal.aborted && e.name !== 'AbortError' && set({ state: 'error', error: e.message }),
    );
    return () => ac.abort();
  }, [...deps, n]);
  return [s, () => again((x) => x + 1)];
}

export function Loading({ what }: { what: string }) {
  return (
    <div class="state loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" /> Loading {what}…
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="state empty">{children}</div>;
}

export function ErrorBox({ error, retry }: { error: string; retry?: () => void }) {
  return (
    <div class="state error" role="alert">
      <strong>Could not load this.</strong> {error}
      {retry && (
        <button type="button" class="link" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** Shows the states of a load, or its data. */
export function Show<T>({
  s,
  what,
  retry,
  children,
}: {
  s: Loaded<T>;
  what: string;
  retry?: () => void;
  children: (data: T) => ComponentChildren;
}) {
  if (s.state === 'loading') return <Loading what={what} />;
  if (s.state === 'error') return <ErrorBox error={s.error} retry={retry} />;
  return <>{children(s.data)}</>;
}

export function Card({ title, children, actions }: { title?: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card">
      {(title || actions) && (
        <header>
          {title && <h2>{title}</h2>}
          {actions}
        </header>
      )}
      {children}
    </section>
  );
}

export function Badge({ kind, children, title }: { kind: string; children: ComponentChildren; title?: string }) {
  return (
    <span class={`badge ${kind}`} title={title}>
      {children}
    </span>
  );
}

/** The signal badges of a session row. */
export function SignalBadges({ s }: { s: Record<string, unknown> }) {
  const n = (k: string) => Number(s[k] ?? 0);
  return (
    <span class="badges">
      {s.is_live === true && <Badge kind="live">live</Badge>}
      {n('rage_clicks') > 0 && <Badge kind="rage" title="rage clicks">rage ×{n('rage_clicks')}</Badge>}
      {n('dead_clicks') > 0 && <Badge kind="dead" title="dead clicks">dead ×{n('dead_clicks')}</Badge>}
      {n('error_clicks') > 0 && <Badge kind="errclick" title="error clicks">error click ×{n('error_clicks')}</Badge>}
      {n('errors') > 0 && <Badge kind="error" title="uncaught errors">errors ×{n('errors')}</Badge>}
    </span>
  );
}

export interface Toast {
  id: number;
  text: string;
  href?: string;
}

export function Toasts({ items, dismiss }: { items: Toast[]; dismiss(id: number): void }) {
  return (
    <div class="toasts" aria-live="polite">
      {items.map((t) => (
        <div class="toast" key={t.id} role="status">
          {t.href ? <a href={t.href}>{t.text}</a> : <span>{t.text}</span>}
          <button type="button" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

/** Re-renders every `ms` (for clocks such as the freshness indicator). */
export function useNow(ms: number): number {
  const [now, set] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => set(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** Sets the document title for a page. */
export function useTitle(t: string): void {
  useEffect(() => {
    document.title = `${t} · sightflow`;
  }, [t]);
}

/** A link that keeps the current project in the URL. */
export function href(path: string, project: string, q: Record<string, string | undefined> = {}): string {
  const u = new URLSearchParams();
  u.set('project', project);
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') u.set(k, v);
  return `${path}?${u}`;
}

/** The range of a page: a preset, or custom days with two date fields. */
export function RangePicker({
  range,
  from,
  to,
  ranges,
  change,
}: {
  range: string;
  from?: string;
  to?: string;
  ranges: readonly { id: string; label: string }[];
  change(q: { range: string; from?: string; to?: string }): void;
}) {
  const today = new Date();
  const iso = (d: Date) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  return (
    <span class="range">
      <label>
        Range{' '}
        <select
          value={range}
          onChange={(e) => {
            const r = (e.target as HTMLSelectElement).value;
            change(r === 'custom' ? { range: r, from: from || iso(new Date(Date.now() - 7 * 86_400_000)), to: to || iso(today) } : { range: r });
          }}
        >
          {ranges.map((r) => (
            <option key={r.id} value={r.id}>
              {r.label}
            </option>
          ))}
        </select>
      </label>
      {range === 'custom' && (
        <>
          <label>
            From <input type="date" value={from} max={to} onChange={(e) => change({ range, from: (e.target as HTMLInputElement).value, to })} />
          </label>
          <label>
            to <input type="date" value={to} min={from} onChange={(e) => change({ range, from, to: (e.target as HTMLInputElement).value })} />
          </label>
        </>
      )}
    </span>
  );
}
