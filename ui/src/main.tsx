// The console: login, the project switcher and the pages, each loaded on first use.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ErrorBoundary, LocationProvider, Route, Router, lazy, useLocation } from 'preact-iso';
import * as api from './api';
import { App, type AppCtx, Empty, ErrorBox, Loading, type Toast, Toasts, href } from './ui';
import { Login } from './pages/Login';
import './style.css';

const Dashboard = lazy(() => import('./pages/Dashboard'));
const Sessions = lazy(() => import('./pages/Sessions'));
const Replay = lazy(() => import('./pages/Replay'));
const Heatmaps = lazy(() => import('./pages/Heatmaps'));
const Funnels = lazy(() => import('./pages/Funnels'));
const Insights = lazy(() => import('./pages/Insights'));
const Sql = lazy(() => import('./pages/Sql'));
const Settings = lazy(() => import('./pages/Settings'));

const PAGES = [
  { path: '/', label: 'Live', key: 'l' },
  { path: '/sessions', label: 'Sessions', key: 's' },
  { path: '/heatmaps', label: 'Heatmaps', key: 'h' },
  { path: '/funnels', label: 'Funnels', key: 'f' },
  { path: '/insights', label: 'Insights', key: 'i' },
  { path: '/sql', label: 'SQL', key: 'q' },
  { path: '/settings', label: 'Settings', key: 'g' },
];

type Boot = { state: 'loading' } | { state: 'login' } | { state: 'error'; error: string } | { state: 'in'; me: api.Me; projects: api.Project[] };

function Root() {
  const [boot, setBoot] = useState<Boot>({ state: 'loading' });
  const start = async () => {
    try {
      const me = await api.me();
      setBoot({ state: 'in', me, projects: await api.projects() });
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 401) setBoot({ state: 'login' });
      else setBoot({ state: 'error', error: (e as Error).message });
    }
  };
  useEffect(() => {
    api.whenUnauthorised(() => setBoot({ state: 'login' }));
    start();
  }, []);
  if (boot.state === 'loading') return <Loading what="the console" />;
  if (boot.state === 'error')
    return (
      <main class="solo">
        <ErrorBox error={boot.error} retry={start} />
      </main>
    );
  if (boot.state === 'login') return <Login done={start} />;
  return (
    <Shell
      me={boot.me}
      projects={boot.projects}
      logout={async () => {
        await api.logout().catch(() => {});
        setBoot({ state: 'login' });
      }}
      reload={async () => setBoot({ ...boot, projects: await api.projects() })}
    />
  );
}

function Shell({ me, projects, logout, reload }: { me: api.Me; projects: api.Project[]; logout(): void; reload(): Promise<void> }) {
  const loc = useLocation();
  const [toasts, setToasts] = useState<Toast[]>([]);
  const wanted = loc.query.project ?? localStorage.getItem('sf_project') ?? '';
  const project = projects.find((p) => p.name === wanted) ?? projects[0];
  useEffect(() => {
    if (project) localStorage.setItem('sf_project', project.name);
  }, [project?.name]);
  // Keyboard: g then a page's key goes there.
  useEffect(() => {
    let armed = false;
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement;
      if (t.closest('input, textarea, select, [contenteditable], .cm-editor') || e.metaKey || e.ctrlKey || e.altKey) return;
      if (armed) {
        armed = false;
        const p = PAGES.find((x) => x.key === e.key);
        if (p && project) loc.route(href(p.path, project.name));
        return;
      }
      if (e.key === 'g') {
        armed = true;
        setTimeout(() => (armed = false), 1200);
      }
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, [project?.name]);
  if (!project)
    return (
      <main class="solo">
        <Empty>
          <p>
            <strong>{me.principal}</strong> can read no project yet. Ask an admin to grant you a role on one.
          </p>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </Empty>
      </main>
    );
  const ctx: AppCtx = {
    me,
    projects,
    project,
    setProject: (name) => {
      const q = new URLSearchParams(loc.query as Record<string, string>);
      q.set('project', name);
      loc.route(`${loc.path}?${q}`);
    },
    toast: (text, to) => {
      const id = Date.now() + Math.random();
      setToasts((t) => [...t.slice(-3), { id, text, href: to }]);
      setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), 8000);
    },
    reloadProjects: reload,
  };
  const active = (p: string) => (p === '/' ? loc.path === '/' : loc.path.startsWith(p));
  return (
    <App.Provider value={ctx}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href('/', project.name)} aria-label="sightflow: live dashboard">
          <span class="dot" aria-hidden="true" /> sightflow
        </a>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.path} href={href(p.path, project.name)} aria-current={active(p.path) ? 'page' : undefined} title={`g then ${p.key}`}>
              {p.label}
            </a>
          ))}
        </nav>
        <div class="who">
          <label>
            <span class="sr">Project</span>
            <select value={project.name} onChange={(e) => ctx.setProject((e.target as HTMLSelectElement).value)} aria-label="Project">
              {projects.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name}
                </option>
              ))}
            </select>
          </label>
          <span class="me" title={`${api.roleIn(me, project.name)} on ${project.name}`}>
            {me.principal.replace(/^user:/, '')} · {api.roleIn(me, project.name)}
          </span>
          <button type="button" class="ghost" onClick={logout}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <ErrorBoundary>
          <Router>
            <Route path="/" component={Dashboard} />
            <Route path="/sessions" component={Sessions} />
            <Route path="/sessions/:id" component={Replay} />
            <Route path="/heatmaps" component={Heatmaps} />
            <Route path="/funnels" component={Funnels} />
            <Route path="/insights" component={Insights} />
            <Route path="/sql" component={Sql} />
            <Route path="/settings" component={Settings} />
            <Route path="/login" component={() => <Redirect to={href('/', project.name)} />} />
            <Route default component={NotFound} />
          </Router>
        </ErrorBoundary>
      </main>
      <Toasts items={toasts} dismiss={(id) => setToasts((t) => t.filter((x) => x.id !== id))} />
    </App.Provider>
  );
}

function Redirect({ to }: { to: string }) {
  const loc = useLocation();
  useEffect(() => loc.route(to, true), [to]);
  return null;
}

function NotFound() {
  return (
    <Empty>
      <h1>No such page</h1>
      <p>
        <a href="/">Go to the live dashboard</a>
      </p>
    </Empty>
  );
}

const app = document.getElementById('app')!;
app.textContent = '';
render(
  <LocationProvider>
    <Root />
  </LocationProvider>,
  app,
);
