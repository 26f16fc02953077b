//! The REST resources a console reads and manages, thin over the views and the accounts.
//!
//! Reads are SQL over the caller's scoped catalog ([`crate::sql::execute_scoped`]),
//! built from validated parameters (every literal quoted), so a resource can never show
//! more than the same credential could query. Management checks roles here:
//!
//! | resource | role |
//! |---|---|
//! | `GET /api/v1/sessions`, `GET /api/v1/sessions/{id}`, `GET /api/v1/heatmap` | viewer |
//! | `GET /api/v1/projects` | any credential (the projects it can read) |
//! | `POST /api/v1/projects` | owner of every project |
//! | `PATCH /api/v1/projects/{name}` | admin of the project |
//! | `DELETE /api/v1/projects/{name}` | owner of the project |
//! | `GET /api/v1/projects/{name}/members`, `PUT`/`DELETE .../members/{email}` | admin of the project |
//! | `GET /api/v1/tokens`, `POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | admin of the token's project |
//!
//! Nobody grants a role above their own, nor creates a token above it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sightflow_config::access::{Grant, NewProject, ProjectRow, ProjectUpdate, Role, Scope};
use sightflow_dataflows::Snapshot;

use crate::access::Caller;
use crate::format;
use crate::http::{ApiError, AppState, Backend};
use crate::sql::QueryResult;

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Text parameters are bounded and printable.
fn text_param(name: &str, v: &str) -> Result<String, ApiError> {
    if v.len() > 2048 || v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("{name} must be at most 2048 characters without control characters")));
    }
    Ok(v.to_string())
}

fn session_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn caller<B: Backend>(state: &AppState<B>, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
    state.gate.caller(method, headers).await
}

/// The caller's readable scope, narrowed to `project` when one is asked for.
fn narrowed(caller: &Caller, project: Option<&str>) -> Result<Scope, ApiError> {
    let scope = caller.readable()?;
    match project {
        None => Ok(scope),
        Some(p) if scope.contains(p) => Ok(Scope::Projects(vec![p.to_string()])),
        Some(p) => Err(ApiError::NotFound(format!("no project {p:?} among those {} can read", caller.principal.id))),
    }
}

fn respond<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}

fn done(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

// ----- sessions -----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionsParams {
    project: Option<String>,
    /// Sessions started at or after (ms since the epoch).
    from: Option<i64>,
    /// Sessions started before (ms since the epoch).
    to: Option<i64>,
    /// A page the session viewed (normalised URL; `*` matches any text).
    url: Option<String>,
    /// Signals the session must have: rage, dead, error, quick_back, excessive_scroll,
    /// thrashed_cursor, errors (comma-separated; all must be present).
    has: Option<String>,
    device_type: Option<String>,
    browser: Option<String>,
    os: Option<String>,
    country: Option<String>,
    /// The user id the site gave with `identify`.
    user_id: Option<String>,
    min_duration_ms: Option<i64>,
    live: Option<bool>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    min_as_of: Option<u64>,
}

/// Columns a session list sorts by (all integers or timestamps).
const SORTS: &[&str] = &[
    "started_at",
    "ended_at",
    "duration_ms",
    "page_views",
    "events",
    "clicks",
    "rage_clicks",
    "dead_clicks",
    "error_clicks",
    "errors",
];

const SIGNALS: &[(&str, &str)] = &[
    ("rage", "rage_clicks"),
    ("dead", "dead_clicks"),
    ("error", "error_clicks"),
    ("quick_back", "quick_backs"),
    ("excessive_scroll", "excessive_scrolls"),
    ("thrashed_cursor", "thrashed_cursors"),
    ("errors", "errors"),
];

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.len() > 400 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The WHERE clause of a session list (without the cursor).
fn session_filters(p: &SessionsParams) -> Result<Vec<String>, ApiError> {
    let mut w = Vec::new();
    if let Some(from) = p.from {
        w.push(format!("cast(started_at as bigint) >= {from}"));
    }
    if let Some(to) = p.to {
        w.push(format!("cast(started_at as bigint) < {to}"));
    }
    if let Some(url) = &p.url {
        let url = text_param("url", url)?;
        let cond = if url.contains('*') {
            let pattern = url.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_").replace('*', "%");
            format!("url LIKE {} ESCAPE '\\'", lit(&pattern))
        } else {
            format!("url = {}", lit(&url))
        };
        w.push(format!("session_id IN (SELECT session_id FROM page_views WHERE {cond})"));
    }
    if let Some(has) = &p.has {
        for s in has.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((_, col)) = SIGNALS.iter().find(|(n, _)| *n == s) else {
                let known: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                return Err(ApiError::BadRequest(format!(
                    "has: unknown signal {s:?}; expected some of {}",
                    known.join(", ")
                )));
            };
            w.push(format!("{col} > 0"));
        }
    }
    for (name, v) in [
        ("device_type", &p.device_type),
        ("browser", &p.browser),
        ("os", &p.os),
        ("country", &p.country),
        ("user_id", &p.user_id),
    ] {
        if let Some(v) = v {
            w.push(format!("{name} = {}", lit(&text_param(name, v)?)));
        }
    }
    if let Some(d) = p.min_duration_ms {
        w.push(format!("duration_ms >= {d}"));
    }
    if let Some(live) = p.live {
        w.push(format!("is_live = {live}"));
    }
    Ok(w)
}

#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    params(("project" = Option<String>, Query,), ("from" = Option<i64>, Query, description = "Started at or after (ms)"), ("to" = Option<i64>, Query, description = "Started before (ms)"),
        ("url" = Option<String>, Query, description = "A page viewed; `*` matches any text"), ("has" = Option<String>, Query, description = "rage,dead,error,quick_back,excessive_scroll,thrashed_cursor,errors"),
        ("device_type" = Option<String>, Query,), ("browser" = Option<String>, Query,), ("os" = Option<String>, Query,), ("country" = Option<String>, Query,), ("user_id" = Option<String>, Query, description = "From the SDK's identify"),
        ("min_duration_ms" = Option<i64>, Query,), ("live" = Option<bool>, Query,), ("sort" = Option<String>, Query,), ("order" = Option<String>, Query, description = "asc or desc"),
        ("limit" = Option<usize>, Query, description = "At most 500"), ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor")),
    responses((status = 200, description = "`{sessions, total, next_cursor, as_of}`", body = serde_json::Value),
        (status = 400, description = "A bad parameter, named", body = crate::openapi::ErrorBody), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn sessions<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Query(p): Query<SessionsParams>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            let scope = narrowed(&c, p.project.as_deref())?;
            let sort = p.sort.as_deref().unwrap_or("started_at");
            if !SORTS.contains(&sort) {
                return Err(ApiError::BadRequest(format!("sort: expected one of {}", SORTS.join(", "))));
            }
            let desc = match p.order.as_deref().unwrap_or("desc") {
                "desc" => true,
                "asc" => false,
                o => return Err(ApiError::BadRequest(format!("order: expected asc or desc, not {o:?}"))),
            };
            let limit = p.limit.unwrap_or(50);
            if !(1..=500).contains(&limit) {
                return Err(ApiError::BadRequest("limit: between 1 and 500".into()));
            }
            let filters = session_filters(&p)?;
            let mut page = filters.clone();
            if let Some(cur) = &p.cursor {
                let bad = || ApiError::BadRequest("cursor: not a cursor this list gave".into());
                let text = unhex(cur).ok_or_else(bad)?;
                let (v, id) = text.split_once('|').ok_or_else(bad)?;
                let v: i64 = v.parse().map_err(|_| bad())?;
                if !session_id_ok(id) {
                    return Err(bad());
                }
                let (op, col) = (if desc { "<" } else { ">" }, format!("cast({sort} as bigint)"));
                page.push(format!("({col} {op} {v} OR ({col} = {v} AND session_id {op} {}))", lit(id)));
            }
            let wh = |w: &[String]| if w.is_empty() { String::new() } else { format!(" WHERE {}", w.join(" AND ")) };
            let dir = if desc { "DESC" } else { "ASC" };
            let list = format!(
                "SELECT *, cast({sort} as bigint) AS sort_key FROM sessions{} ORDER BY {sort} {dir}, session_id {dir} LIMIT {}",
                wh(&page),
                limit + 1
            );
            let count = format!("SELECT count(*) AS n FROM sessions{}", wh(&filters));
            let snap = crate::http::snapshot_for(&state, p.min_as_of).await?;
            let rows = run(&state, &snap, &list, &scope).await?;
            let total = run(&state, &snap, &count, &scope).await?;
            let mut sessions = format::rows_as_objects(&rows);
            let next = if sessions.len() > limit {
                sessions.truncate(limit);
                sessions.last().map(|s| hex(&format!("{}|{}", s["sort_key"], s["session_id"].as_str().unwrap_or(""))))
            } else {
                None
            };
            for s in &mut sessions {
                if let Some(o) = s.as_object_mut() {
                    o.remove("sort_key");
                }
            }
            let total = format::rows_as_objects(&total).first().and_then(|r| r["n"].as_i64()).unwrap_or(0);
            Ok(respond(json!({"sessions": sessions, "total": total, "next_cursor": next, "as_of": snap.as_of})))
        }
        .await,
    )
}

/// Runs SQL on the query pool over `snap` within `scope`.
async fn run<B: Backend>(
    state: &AppState<B>,
    snap: &Arc<Snapshot>,
    sql: &str,
    scope: &Scope,
) -> Result<QueryResult, ApiError> {
    crate::http::run_scoped(state, snap.clone(), sql.to_string(), scope.clone()).await
}

/// The tables of a session's timeline, with the kind each row is shown as.
const TIMELINE: &[(&str, &str)] = &[
    ("page_views", "page_view"),
    ("rage_clicks", "rage_click"),
    ("dead_clicks", "dead_click"),
    ("error_clicks", "error_click"),
    ("quick_backs", "quick_back"),
    ("excessive_scrolls", "excessive_scroll"),
    ("thrashed_cursors", "thrashed_cursor"),
];

#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path,)),
    responses((status = 200, description = "`{session, timeline, as_of}`", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such session among the caller's projects", body = crate::openapi::ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn session<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            let scope = c.readable()?;
            let missing = || ApiError::NotFound(format!("no session {id:?}"));
            if !session_id_ok(&id) {
                return Err(missing());
            }
            let snap = state.snapshots.latest();
            let row =
                run(&state, &snap, &format!("SELECT * FROM sessions WHERE session_id = {}", lit(&id)), &scope).await?;
            let session = format::rows_as_objects(&row).into_iter().next().ok_or_else(missing)?;
            let mut timeline = Vec::new();
            for (table, kind) in TIMELINE {
                let sql = format!("SELECT * FROM {table} WHERE session_id = {}", lit(&id));
                for mut r in format::rows_as_objects(&run(&state, &snap, &sql, &scope).await?) {
                    if let Some(o) = r.as_object_mut() {
                        o.remove("session_id");
                        o.remove("project");
                        o.insert("kind".into(), json!(kind));
                    }
                    timeline.push(r);
                }
            }
            timeline.sort_by(|a, b| a["ts"].as_str().unwrap_or("").cmp(b["ts"].as_str().unwrap_or("")));
            Ok(respond(json!({"session": session, "timeline": timeline, "as_of": snap.as_of})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeatmapParams {
    project: Option<String>,
    url: String,
    kind: String,
    viewport: Option<u32>,
}

/// Sessions a heatmap of chosen sessions may name.
const MAX_HEATMAP_SESSIONS: usize = 300;

#[utoipa::path(get, path = "/api/v1/heatmap", tag = "sessions",
    params(("url" = String, Query,), ("kind" = String, Query, description = "click, move or scroll"), ("viewport" = Option<u32>, Query, description = "Viewport-width bucket"), ("project" = Option<String>, Query,),
        ("session" = Option<Vec<String>>, Query, description = "Only these sessions (repeatable, at most 300): computed from their replay through the same definitions")),
    responses((status = 200, description = "`{url, kind, cells, total, sessions, as_of}`", body = serde_json::Value), (status = 400, description = "A bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody), (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),
        (status = 404, description = "A session not among the caller's projects", body = crate::openapi::ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn heatmap<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            // Repeated `session=` parameters, which a typed query cannot hold.
            let mut chosen: Vec<String> = Vec::new();
            let mut rest: Vec<(String, String)> = Vec::new();
            for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
                if k == "session" {
                    chosen.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
                } else {
                    rest.push((k.into_owned(), v.into_owned()));
                }
            }
            let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&rest).finish();
            let p: HeatmapParams = serde_urlencoded::from_str(&encoded)
                .map_err(|e| ApiError::BadRequest(format!("heatmap parameters: {e}")))?;
            let scope = narrowed(&c, p.project.as_deref())?;
            if !["click", "move", "scroll"].contains(&p.kind.as_str()) {
                return Err(ApiError::BadRequest(format!("kind: expected click, move or scroll, not {:?}", p.kind)));
            }
            let url = text_param("url", &p.url)?;
            let mut w = vec![format!("url = {}", lit(&url)), format!("kind = {}", lit(&p.kind))];
            if let Some(v) = p.viewport {
                w.push(format!("viewport_bucket = {v}"));
            }
            let sql = format!(
                "SELECT viewport_bucket, cell_x, cell_y, sum(count) AS count FROM heatmap_cells WHERE {} \
                 GROUP BY viewport_bucket, cell_x, cell_y ORDER BY viewport_bucket, cell_y, cell_x",
                w.join(" AND ")
            );
            let live = state.snapshots.latest();
            let (snap, sessions) = if chosen.is_empty() {
                (live.clone(), Value::Null)
            } else {
                chosen.sort();
                chosen.dedup();
                if chosen.len() > MAX_HEATMAP_SESSIONS {
                    return Err(ApiError::BadRequest(format!(
                        "at most {MAX_HEATMAP_SESSIONS} sessions at once, not {}",
                        chosen.len()
                    )));
                }
                let mut places = Vec::with_capacity(chosen.len());
                for id in &chosen {
                    let place = session_id_ok(id)
                        .then(|| state.sessions.find(&live, id))
                        .flatten()
                        .filter(|(project, ..)| scope.contains(project))
                        .ok_or_else(|| ApiError::NotFound(format!("no session {id:?}")))?;
                    places.push(place);
                }
                (state.backend.sessions_views(places).await?, json!(chosen))
            };
            let cells = format::rows_as_objects(&run(&state, &snap, &sql, &scope).await?);
            let total: i64 = cells.iter().filter_map(|c| c["count"].as_i64()).sum();
            Ok(respond(
                json!({"url": url, "kind": p.kind, "cells": cells, "total": total, "sessions": sessions, "as_of": live.as_of}),
            ))
        }
        .await,
    )
}

// ----- projects, members, tokens -----

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses((status = 200, description = "`{projects: [{name, ingest_key, allowed_origins, time_zone, retention_days, rate_limit_per_s, created_ms, role, kept: {recordings_ms, sessions_ms, log_ms}}]}`: the projects the caller reads, its role in each, and how long the server keeps each one's recordings, closed sessions in the views and its log (`log_ms` null with Kafka)", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn projects<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            let scope = c.principal.projects(Role::Viewer);
            let all = state.gate.blocking(|a| a.projects()).await?;
            let visible: Vec<Value> = all
                .into_iter()
                .filter(|p| scope.contains(&p.name))
                .map(|p| {
                    let mut v = project_json(&state, &p);
                    v["role"] = json!(c.principal.role_in(&p.name));
                    v
                })
                .collect();
            Ok(respond(json!({ "projects": visible })))
        }
        .await,
    )
}

/// A project as the API shows it: its settings and what the server keeps for it (`kept`).
fn project_json<B>(state: &AppState<B>, p: &ProjectRow) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    v["kept"] = state.retention.of_project(p.retention_days);
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectCreate {
    name: String,
    #[serde(flatten)]
    settings: NewProject,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("expected a JSON body {shape}: {e}")))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body(content = serde_json::Value, description = "`{name, ingest_key?, allowed_origins?, time_zone?, retention_days?, rate_limit_per_s?}`"),
    responses((status = 201, description = "The project", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody), (status = 409, description = "The name or key is taken", body = crate::openapi::ErrorBody)), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn project_create<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require_everywhere(Role::Owner, "creating a project")?;
            let req: ProjectCreate = json_body(&body, "{\"name\", \"allowed_origins\", \"time_zone\", ...}")?;
            let p = state.gate.blocking(move |a| a.project_add(&req.name, req.settings)).await?;
            tracing::info!(by = %c.principal.id, project = %p.name, "project created");
            Ok((StatusCode::CREATED, Json(project_json(&state, &p))).into_response())
        }
        .await,
    )
}

#[utoipa::path(patch, path = "/api/v1/projects/{name}", tag = "projects", params(("name" = String, Path,)),
    request_body(content = serde_json::Value, description = "`{allowed_origins?, time_zone?, retention_days?, rate_limit_per_s?}`"),
    responses((status = 200, description = "The project", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn project_update<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require(Role::Admin, &name, "changing a project's settings")?;
            let u: ProjectUpdate =
                json_body(&body, "{\"allowed_origins\", \"time_zone\", \"retention_days\", \"rate_limit_per_s\"}")?;
            let p = state.gate.blocking(move |a| a.project_update(&name, u)).await?;
            tracing::info!(by = %c.principal.id, project = %p.name, "project settings changed");
            Ok(respond(project_json(&state, &p)))
        }
        .await,
    )
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}", tag = "projects", params(("name" = String, Path,)),
    responses((status = 204, description = "Deleted (memberships and tokens go)"), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn project_delete<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require(Role::Owner, &name, "deleting a project")?;
            let n = name.clone();
            state.gate.blocking(move |a| a.project_delete(&n)).await?;
            tracing::warn!(by = %c.principal.id, project = %name, "project deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/projects/{name}/members", tag = "projects", params(("name" = String, Path,)),
    responses((status = 200, description = "`{project, members: [{email, role, every_project}]}`", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn members<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require(Role::Admin, &name, "listing a project's members")?;
            let users = state.gate.blocking(|a| a.users()).await?;
            let members: Vec<Value> = users
                .into_iter()
                .filter_map(|u| {
                    let role = u
                        .grants
                        .iter()
                        .filter(|g| g.project.as_deref().is_none_or(|p| p == name))
                        .map(|g| g.role)
                        .max()?;
                    let everywhere = u.grants.iter().any(|g| g.project.is_none() && g.role == role);
                    Some(json!({"email": u.email, "role": role, "every_project": everywhere}))
                })
                .collect();
            Ok(respond(json!({"project": name, "members": members})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberSet {
    role: Role,
    /// Creates the user when they do not exist yet.
    #[serde(default)]
    password: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/projects/{name}/members/{email}", tag = "projects", params(("name" = String, Path,), ("email" = String, Path,)),
    request_body(content = serde_json::Value, description = "`{role, password?}` (a new user needs a password)"),
    responses((status = 200, description = "Role set"), (status = 201, description = "User created with the role"), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn member_set<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path((name, email)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require(Role::Admin, &name, "managing a project's members")?;
            let req: MemberSet = json_body(&body, "{\"role\": \"viewer|member|admin|owner\", \"password\"?}")?;
            if c.principal.role_in(&name).is_none_or(|mine| req.role > mine) {
                return Err(ApiError::Forbidden(format!("{} cannot grant a role above their own", c.principal.id)));
            }
            let grant = Grant::on(&name, req.role);
            let (e, g) = (email.clone(), grant.clone());
            let exists = state
                .gate
                .blocking(move |a| Ok(a.users()?.into_iter().any(|u| u.email == e.trim().to_ascii_lowercase())))
                .await?;
            let status = if exists {
                state.gate.blocking(move |a| a.user_grant(&email, g)).await?;
                StatusCode::OK
            } else {
                let Some(password) = req.password else {
                    return Err(ApiError::NotFound(format!("no user {email:?}; send a password to create them")));
                };
                state.gate.blocking(move |a| a.user_add(&email, &password, g).map(|_| ())).await?;
                StatusCode::CREATED
            };
            tracing::info!(by = %c.principal.id, project = %name, role = %grant.role, "member set");
            Ok((status, Json(json!({"project": name, "role": grant.role}))).into_response())
        }
        .await,
    )
}

#[utoipa::path(delete, path = "/api/v1/projects/{name}/members/{email}", tag = "projects", params(("name" = String, Path,), ("email" = String, Path,)),
    responses((status = 204, description = "Removed"), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn member_remove<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path((name, email)): Path<(String, String)>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            c.require(Role::Admin, &name, "managing a project's members")?;
            let n = name.clone();
            state.gate.blocking(move |a| a.user_ungrant(&email, Some(&n))).await?;
            tracing::info!(by = %c.principal.id, project = %name, "member removed");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// Whether the caller administers the scope of a token (`None`: every project).
fn administers(c: &Caller, project: Option<&str>) -> bool {
    match project {
        Some(p) => c.principal.can(Role::Admin, p),
        None => c.principal.global_role().is_some_and(|r| r >= Role::Admin),
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Tokens of the projects the caller administers, without secrets", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn tokens<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            if c.principal.max_role().is_none_or(|r| r < Role::Admin) {
                return Err(ApiError::Forbidden(format!(
                    "listing tokens needs the admin role; {} has none",
                    c.principal.id
                )));
            }
            let all = state.gate.blocking(|a| a.tokens()).await?;
            let mine: Vec<_> = all.into_iter().filter(|t| administers(&c, t.project.as_deref())).collect();
            Ok(respond(json!({ "tokens": mine })))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenCreate {
    #[serde(default)]
    name: String,
    role: Role,
    #[serde(default)]
    project: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body(content = serde_json::Value, description = "`{name, role, project?}`"),
    responses((status = 201, description = "`{token, info}`: the token, shown once", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn token_create<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            let req: TokenCreate = json_body(&body, "{\"name\", \"role\", \"project\"?}")?;
            if !administers(&c, req.project.as_deref()) {
                let on = req.project.as_deref().map_or("every project".to_string(), |p| format!("project {p:?}"));
                return Err(ApiError::Forbidden(format!("creating a token on {on} needs the admin role there")));
            }
            let mine = match &req.project {
                Some(p) => c.principal.role_in(p),
                None => c.principal.global_role(),
            };
            if mine.is_none_or(|m| req.role > m) {
                return Err(ApiError::Forbidden(format!(
                    "{} cannot create a token above their own role",
                    c.principal.id
                )));
            }
            let by = c.principal.id.clone();
            let (secret, row) =
                state.gate.blocking(move |a| a.token_create(&req.name, req.role, req.project.as_deref(), &by)).await?;
            tracing::info!(by = %c.principal.id, token = %row.id, "token created");
            Ok((StatusCode::CREATED, Json(json!({"token": secret, "info": row}))).into_response())
        }
        .await,
    )
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path,)),
    responses((status = 204, description = "Revoked"), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody), (status = 404, description = "No such token", body = crate::openapi::ErrorBody)), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn token_revoke<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    done(
        async {
            let c = caller(&state, &method, &headers).await?;
            let all = state.gate.blocking(|a| a.tokens()).await?;
            let Some(t) = all.into_iter().find(|t| t.id == id) else {
                return Err(ApiError::NotFound(format!("no token {id}")));
            };
            if !administers(&c, t.project.as_deref()) {
                return Err(ApiError::Forbidden("revoking this token needs the admin role on its project".into()));
            }
            let i = id.clone();
            state.gate.blocking(move |a| a.token_revoke(&i)).await?;
            tracing::info!(by = %c.principal.id, token = %id, "token revoked");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// The REST routes, to merge into the API router.
pub(crate) fn routes<B: Backend>() -> axum::Router<Arc<AppState<B>>> {
    use axum::routing::{delete, get, patch, put};
    axum::Router::new()
        .route("/api/v1/sessions", get(sessions::<B>))
        .route("/api/v1/sessions/{id}", get(session::<B>))
        .route("/api/v1/heatmap", get(heatmap::<B>))
        .route("/api/v1/projects", get(projects::<B>).post(project_create::<B>))
        .route("/api/v1/projects/{name}", patch(project_update::<B>).delete(project_delete::<B>))
        .route("/api/v1/projects/{name}/members", get(members::<B>))
        .route("/api/v1/projects/{name}/members/{email}", put(member_set::<B>).delete(member_remove::<B>))
        .route("/api/v1/tokens", get(tokens::<B>).post(token_create::<B>))
        .route("/api/v1/tokens/{id}", delete(token_revoke::<B>))
}
