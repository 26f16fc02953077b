// The console's only way to the server: the public API (REST, SQL, SSE) with the
// login cookie. State-changing calls carry the login's CSRF token.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export type Row = Record<string, unknown>;

export interface QueryResult {
  columns: string[];
  rows: Row[];
  as_of: number;
}

export interface Grant {
  role: Role;
  project: string | null;
}

export type Role = 'viewer' | 'member' | 'admin' | 'owner';

export interface Me {
  principal: string;
  grants: Grant[];
  csrf_token?: string;
}

export interface Project {
  name: string;
  ingest_key: string;
  allowed_origins: string[];
  time_zone?: string;
  retention_days?: number;
  rate_limit_per_s?: number;
  role: Role | null;
  /** How long the server keeps this project's data (ms): its recordings (its own
   * retention or the server's), closed sessions in the views (0: kept), and the log a
   * restart rebuilds the views from (null with Kafka). */
  kept?: { recordings_ms: number; sessions_ms: number; log_ms: number | null };
}

let csrf = '';

/** Remembers the CSRF token of the cookie's login. */
export function setCsrf(token: string | undefined): void {
  csrf = token ?? '';
}

interface CallOptions {
  method?: string;
  body?: unknown;
  accept?: string;
  signal?: AbortSignal;
}

async function send(path: string, o: CallOptions = {}): Promise<Response> {
  const method = o.method ?? (o.body === undefined ? 'GET' : 'POST');
  const headers: Record<string, string> = {};
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';
  if (o.accept) headers.Accept = o.accept;
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      credentials: 'same-origin',
      signal: o.signal,
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, `the server did not answer (${(e as Error).message})`);
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const b = await resp.json();
      if (b && typeof b.error === 'string') message = b.error;
    } catch {
      /* not JSON: keep the status line */
    }
    if (resp.status === 401 && !path.endsWith('/login')) unauthorised();
    throw new ApiError(resp.status, message);
  }
  return resp;
}

let onUnauthorised: () => void = () => {};

/** What to do when the login ends (expired, logged out elsewhere). */
export function whenUnauthorised(f: () => void): void {
  onUnauthorised = f;
}

function unauthorised(): void {
  onUnauthorised();
}

/** A JSON call. */
export async function api<T>(path: string, o: CallOptions = {}): Promise<T> {
  const resp = await send(path, o);
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** Rows as objects from the `{columns, rows}` arrays. */
export function objects(columns: string[], rows: unknown[][]): Row[] {
  return rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
}

/** Runs SQL over the caller's projects. */
export async function query(sql: string, signal?: AbortSignal): Promise<QueryResult> {
  const b = await api<{ columns: string[]; rows: unknown[][]; as_of: number }>('/api/v1/query', {
    body: { sql },
    signal,
  });
  return { columns: b.columns, rows: objects(b.columns, b.rows), as_of: b.as_of };
}

/** The result of SQL as CSV text (for a download). */
export async function queryCsv(sql: string): Promise<Blob> {
  const resp = await send('/api/v1/query', { body: { sql }, accept: 'text/csv' });
  return resp.blob();
}

export async function me(): Promise<Me> {
  const m = await api<Me>('/api/v1/me');
  if (m.csrf_token) setCsrf(m.csrf_token);
  return m;
}

export async function login(email: string, password: string): Promise<Me> {
  const m = await api<Me>('/api/v1/login', { body: { email, password } });
  setCsrf(m.csrf_token);
  return m;
}

export async function logout(): Promise<void> {
  await api('/api/v1/logout', { method: 'POST' });
  setCsrf('');
}

export async function projects(): Promise<Project[]> {
  return (await api<{ projects: Project[] }>('/api/v1/projects')).projects;
}

const ORDER: Role[] = ['viewer', 'member', 'admin', 'owner'];

/** The caller's role on `project` (a grant on every project counts). */
export function roleIn(m: Me | null, project: string): Role | null {
  let best: Role | null = null;
  for (const g of m?.grants ?? []) {
    if (g.project !== null && g.project !== project) continue;
    if (best === null || ORDER.indexOf(g.role) > ORDER.indexOf(best)) best = g.role;
  }
  return best;
}

/** Whether `role` is at least `needed`. */
export function atLeast(role: Role | null, needed: Role): boolean {
  return role !== null && ORDER.indexOf(role) >= ORDER.indexOf(needed);
}

/** Quotes a SQL string literal. */
export function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
