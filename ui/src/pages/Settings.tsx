// Settings: projects (ingest keys, allowed origins, the install snippet), members and
// roles, API tokens (created and shown once; revoked).

import { useState } from 'preact/hooks';
import { api, atLeast, roleIn, type Project, type Role } from '../api';
import * as f from '../format';
import { Card, Empty, Show, useApp, useLoad, useTitle } from '../ui';

const ROLES: Role[] = ['viewer', 'member', 'admin', 'owner'];

/** The one-line snippet of the README with this server's origin and the project's key. */
export function snippet(origin: string, key: string): string {
  return `<script>!function(w,d,h,s,q){q=w.sightflow=w.sightflow||{q:[]};if(!q.q)return;"init capture identify reset optOut optIn flush stop".split(" ").forEach(function(m){q[m]=q[m]||function(){q.q.push([m].concat([].slice.call(arguments)))}});s=d.createElement("script");s.async=1;s.src=h+"/sdk.js";(d.head||d.documentElement).appendChild(s)}(window,document,${JSON.stringify(origin)});sightflow.init({projectKey:${JSON.stringify(key)}});</script>`;
}

/** What a form's action did: a confirmation, or the server's reason. */
function Note({ msg }: { msg: { ok: boolean; text: string } | string | null }) {
  if (!msg) return null;
  const m = typeof msg === 'string' ? { ok: false, text: msg } : msg;
  return (
    <p class={m.ok ? 'form-ok' : 'form-error'} role={m.ok ? 'status' : 'alert'}>
      {m.text}
    </p>
  );
}

/** A role picker. */
function RoleSelect({ value, set, label }: { value: Role; set(r: Role): void; label?: string }) {
  return (
    <select aria-label={label} value={value} onChange={(e) => set((e.target as HTMLSelectElement).value as Role)}>
      {ROLES.map((r) => (
        <option key={r}>{r}</option>
      ))}
    </select>
  );
}

export default function Settings() {
  const { project, me } = useApp();
  useTitle('Settings');
  const role = roleIn(me, project.name);
  return (
    <div class="page">
      <div class="page-head">
        <h1>Settings</h1>
        <span class="muted">
          {project.name} · your role: {role}
        </span>
      </div>
      <ProjectCard p={project} canEdit={atLeast(role, 'admin')} />
      <Install p={project} />
      {atLeast(role, 'admin') ? (
        <>
          <Members />
          <Tokens />
        </>
      ) : (
        <Card title="Members and tokens">
          <Empty>Admins and owners manage members and API tokens; your role here is {role}.</Empty>
        </Card>
      )}
      <NewProject />
    </div>
  );
}

function ProjectCard({ p, canEdit }: { p: Project; canEdit: boolean }) {
  const { reloadProjects } = useApp();
  const [origins, setOrigins] = useState(p.allowed_origins.join('\n'));
  const [days, setDays] = useState(String(p.retention_days ?? 0));
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const save = async (e: Event) => {
    e.preventDefault();
    setMsg(null);
    const kept = Number(days.trim());
    if (days.trim() === '' || !Number.isInteger(kept) || kept < 0 || kept > 36500) {
      setMsg({ ok: false, text: "Recordings kept: a whole number of days, from 0 (the server's retention) to 36500." });
      return;
    }
    try {
      const list = origins
        .split(/[\s,]+/)
        .map((s) => s.trim())
        .filter(Boolean);
      await api(`/api/v1/projects/${encodeURIComponent(p.name)}`, {
        method: 'PATCH',
        body: { allowed_origins: list, retention_days: kept },
      });
      await reloadProjects();
      setMsg({
        ok: true,
        text: `Saved: browsers from these origins may send events now; ${
          kept ? `recordings older than ${f.days(kept)} are no longer served` : "recordings follow the server's retention"
        }.`,
      });
    } catch (err) {
      setMsg({ ok: false, text: (err as Error).message });
    }
  };
  return (
    <Card title={`Project ${p.name}`}>
      <dl class="meta wide">
        <dt>Ingest key</dt>
        <dd>
          <code data-testid="ingest-key">{p.ingest_key}</code> <span class="muted">public: it only lets browsers send events</span>
        </dd>
        <dt>Time zone</dt>
        <dd>{p.time_zone || 'UTC'}</dd>
        <dt>Recordings kept</dt>
        <dd data-testid="retention">
          {p.retention_days
            ? f.days(p.retention_days)
            : p.kept
              ? `${f.span(p.kept.recordings_ms)} (the server's retention)`
              : "the server's retention"}
        </dd>
        {p.kept && (
          <>
            <dt>Closed sessions</dt>
            <dd data-testid="sessions-kept">
              {p.kept.sessions_ms > 0
                ? `listed for ${f.span(p.kept.sessions_ms)} after they end, then only counted (heatmaps, funnel steps, page stats and errors keep them)`
                : 'listed for as long as the server runs'}
              <span class="muted"> · session.retention_ms</span>
            </dd>
            <dt>After a restart</dt>
            <dd data-testid="log-kept">
              {p.kept.log_ms === null
                ? "the views are rebuilt from the Kafka topic, as far back as its retention"
                : `the views are rebuilt from the log's last ${f.span(p.kept.log_ms)}`}
              <span class="muted"> · {p.kept.log_ms === null ? 'the topic\'s retention.ms' : 'log.retention_ms'}</span>
            </dd>
          </>
        )}
        <dt>Rate limit</dt>
        <dd>{p.rate_limit_per_s ? `${f.int(p.rate_limit_per_s)} events/s` : 'none'}</dd>
      </dl>
      <form onSubmit={save} class="stack" noValidate>
        <label>
          <span>
            Allowed origins, one per line (<code>https://shop.test</code>, <code>https://*.shop.test</code>, <code>http://localhost:*</code> or <code>*</code>)
          </span>
          <textarea rows={3} value={origins} disabled={!canEdit} onInput={(e) => setOrigins((e.target as HTMLTextAreaElement).value)} />
        </label>
        <label>
          <span>Recordings kept, in days (0: the server's retention); older recordings are no longer served, the views keep counting their sessions</span>
          <input
            type="number"
            min={0}
            max={36500}
            step={1}
            style={{ maxWidth: '10em' }}
            value={days}
            disabled={!canEdit}
            onInput={(e) => setDays((e.target as HTMLInputElement).value)}
          />
        </label>
        {canEdit ? (
          <button type="submit" class="primary">
            Save
          </button>
        ) : (
          <p class="muted">Admins change the allowed origins and how long recordings are kept.</p>
        )}
        <Note msg={msg} />
      </form>
    </Card>
  );
}

function Install({ p }: { p: Project }) {
  const code = snippet(location.origin, p.ingest_key);
  const [copied, setCopied] = useState(false);
  return (
    <Card title="Install">
      <p>Paste this into every page of the site, before &lt;/head&gt;. The page's origin must be allowed above.</p>
      <pre class="snippet" data-testid="snippet">
        <code>{code}</code>
      </pre>
      <button
        type="button"
        onClick={async () => {
          await navigator.clipboard?.writeText(code).catch(() => {});
          setCopied(true);
          setTimeout(() => setCopied(false), 2000);
        }}
      >
        {copied ? 'Copied' : 'Copy snippet'}
      </button>
    </Card>
  );
}

interface Member {
  email: string;
  role: Role;
  every_project: boolean;
}

function Members() {
  const { project } = useApp();
  const [list, reload] = useLoad((signal) => api<{ members: Member[] }>(`/api/v1/projects/${encodeURIComponent(project.name)}/members`, { signal }), [project.name]);
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [password, setPassword] = useState('');
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const setMember = async (who: string, r: Role, pw?: string) => {
    setMsg(null);
    try {
      await api(`/api/v1/projects/${encodeURIComponent(project.name)}/members/${encodeURIComponent(who)}`, { method: 'PUT', body: pw ? { role: r, password: pw } : { role: r } });
      setMsg({ ok: true, text: `${who} is ${r} on ${project.name}.` });
      reload();
      return true;
    } catch (e) {
      setMsg({ ok: false, text: (e as Error).message });
      return false;
    }
  };
  return (
    <Card title="Members">
      <Show s={list} what="members" retry={reload}>
        {(d) =>
          d.members.length === 0 ? (
            <Empty>No members yet.</Empty>
          ) : (
            <table class="data" data-testid="members">
              <thead>
                <tr>
                  <th scope="col">Email</th>
                  <th scope="col">Role</th>
                  <th scope="col">Scope</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {d.members.map((m) => (
                  <tr key={m.email}>
                    <td>{m.email}</td>
                    <td>
                      {m.every_project ? (
                        m.role
                      ) : (
                        <RoleSelect label={`Role of ${m.email}`} value={m.role} set={(r) => setMember(m.email, r)} />
                      )}
                    </td>
                    <td>{m.every_project ? 'every project' : project.name}</td>
                    <td>
                      {!m.every_project && (
                        <button
                          type="button"
                          class="link danger"
                          onClick={async () => {
                            if (!confirm(`Remove ${m.email} from ${project.name}?`)) return;
                            try {
                              await api(`/api/v1/projects/${encodeURIComponent(project.name)}/members/${encodeURIComponent(m.email)}`, { method: 'DELETE' });
                              reload();
                            } catch (e) {
                              setMsg({ ok: false, text: (e as Error).message });
                            }
                          }}
                        >
                          remove
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Show>
      <form
        class="inline"
        aria-label="Add a member"
        onSubmit={async (e) => {
          e.preventDefault();
          if (await setMember(email.trim(), role, password || undefined)) {
            setEmail('');
            setPassword('');
          }
        }}
      >
        <label>
          Email
          <input type="email" required value={email} onInput={(e) => setEmail((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Role
          <RoleSelect value={role} set={setRole} />
        </label>
        <label>
          Password (new users)
          <input type="password" autoComplete="new-password" value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary">
          Add or change
        </button>
      </form>
      <Note msg={msg} />
    </Card>
  );
}

interface TokenRow {
  id: string;
  name: string;
  role: Role;
  project: string | null;
  created_by: string;
  created_ms: number;
  last_used_ms: number | null;
}

function Tokens() {
  const { project } = useApp();
  const [list, reload] = useLoad((signal) => api<{ tokens: TokenRow[] }>('/api/v1/tokens', { signal }), [project.name]);
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [secret, setSecret] = useState<string | null>(null);
  const [msg, setMsg] = useState('');
  return (
    <Card title="API tokens">
      {secret && (
        <div class="secret" role="status" data-testid="new-token">
          <strong>Your new token, shown only this once:</strong>
          <code>{secret}</code>
          <button type="button" onClick={() => navigator.clipboard?.writeText(secret).catch(() => {})}>
            Copy
          </button>
          <button type="button" class="ghost" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      <Show s={list} what="tokens" retry={reload}>
        {(d) => {
          const mine = d.tokens.filter((t) => t.project === null || t.project === project.name);
          return mine.length === 0 ? (
            <Empty>No API tokens for {project.name}. Make one for Grafana, psql or scripts.</Empty>
          ) : (
            <table class="data" data-testid="tokens">
              <thead>
                <tr>
                  <th scope="col">Id</th>
                  <th scope="col">Name</th>
                  <th scope="col">Role</th>
                  <th scope="col">Project</th>
                  <th scope="col">Created</th>
                  <th scope="col">Last used</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {mine.map((t) => (
                  <tr key={t.id}>
                    <td class="mono">{t.id}</td>
                    <td>{t.name || '–'}</td>
                    <td>{t.role}</td>
                    <td>{t.project ?? 'every project'}</td>
                    <td>
                      {f.time(t.created_ms)} <span class="muted">by {t.created_by}</span>
                    </td>
                    <td>{t.last_used_ms ? f.time(t.last_used_ms) : 'never'}</td>
                    <td>
                      <button
                        type="button"
                        class="link danger"
                        onClick={async () => {
                          if (!confirm(`Revoke ${t.id} (${t.name})? It stops working at once.`)) return;
                          try {
                            await api(`/api/v1/tokens/${encodeURIComponent(t.id)}`, { method: 'DELETE' });
                            reload();
                          } catch (e) {
                            setMsg((e as Error).message);
                          }
                        }}
                      >
                        revoke
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          );
        }}
      </Show>
      <form
        class="inline"
        aria-label="New token"
        onSubmit={async (e) => {
          e.preventDefault();
          setMsg('');
          try {
            const r = await api<{ token: string }>('/api/v1/tokens', { body: { name: name.trim(), role, project: project.name } });
            setSecret(r.token);
            setName('');
            reload();
          } catch (err) {
            setMsg((err as Error).message);
          }
        }}
      >
        <label>
          Name
          <input required value={name} placeholder="grafana" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Role
          <RoleSelect value={role} set={setRole} />
        </label>
        <button type="submit" class="primary">
          Create token
        </button>
      </form>
      <Note msg={msg} />
    </Card>
  );
}

function NewProject() {
  const { me, setProject, reloadProjects } = useApp();
  const owner = me.grants.some((g) => g.project === null && g.role === 'owner');
  const [name, setName] = useState('');
  const [origin, setOrigin] = useState('');
  const [msg, setMsg] = useState('');
  if (!owner) return null;
  return (
    <Card title="New project">
      <form
        class="inline"
        aria-label="New project"
        onSubmit={async (e) => {
          e.preventDefault();
          setMsg('');
          try {
            await api('/api/v1/projects', { body: { name: name.trim(), allowed_origins: origin.trim() ? [origin.trim()] : [] } });
            await reloadProjects();
            setProject(name.trim());
          } catch (err) {
            setMsg((err as Error).message);
          }
        }}
      >
        <label>
          Name
          <input required pattern="[a-z0-9][a-z0-9_-]*" title="lower-case letters, digits, - and _" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Allowed origin
          <input placeholder="https://shop.test" value={origin} onInput={(e) => setOrigin((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary">
          Create project
        </button>
      </form>
      <Note msg={msg} />
    </Card>
  );
}
