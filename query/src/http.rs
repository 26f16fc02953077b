//! The HTTP API: one function, [`router`], builds it over a [`Backend`] (which the
//! binary wires to the event log and the replay store) and the published snapshots.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/track` | a batch of events for one project key |
//! | `POST /api/v1/projects/{key}/devices/{device}/rrweb` | raw rrweb import |
//! | `POST /api/v1/query` | SQL over the live views, `{"sql", "min_as_of"}` |
//! | `GET /api/v1/sessions/{id}/replay` | a session's rrweb events in order |
//! | `GET /health`, `GET /metrics` | readiness and Prometheus metrics |

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sightflow_dataflows::{Snapshot, Snapshots};

use crate::format;
use crate::sql::{QueryError, QueryLimits, execute};

/// An API error with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    PayloadTooLarge(String),
    TooManyRequests { message: String, retry_after_s: u64 },
    Timeout(String),
    Unavailable(String),
    GatewayTimeout(String),
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Timeout(m)
            | ApiError::Unavailable(m)
            | ApiError::GatewayTimeout(m)
            | ApiError::Internal(m) => m,
            ApiError::TooManyRequests { message, .. } => message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(json!({ "error": self.message() }))).into_response();
        if let ApiError::TooManyRequests { retry_after_s, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// What the server knows about a project key.
#[derive(Clone, Debug)]
pub struct ProjectPolicy {
    /// Origins allowed to send events from a browser: exact (`https://shop.test`),
    /// host wildcards (`https://*.shop.test`), any port (`http://localhost:*`), or `*`.
    pub allowed_origins: Vec<String>,
    /// Events per second per project (0: unlimited).
    pub rate_limit_per_s: f64,
}

/// Per-event outcome of an ingest request.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrackReport {
    pub accepted: usize,
    pub rejected: Vec<RejectedEvent>,
    /// Late events kept at the frontier's logical time.
    pub late: usize,
    /// Late events dropped by the `drop` policy.
    pub dropped: usize,
    /// The request repeated a batch id already appended.
    pub duplicate: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RejectedEvent {
    pub index: usize,
    pub reason: String,
}

/// A raw rrweb import request.
#[derive(Clone, Debug)]
pub struct RrwebImport {
    pub project: String,
    pub device: String,
    pub tab: String,
    pub seq_start: u64,
    pub batch_id: String,
}

/// A session's replay.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// rrweb event JSON texts, in order.
    pub events: Vec<String>,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
}

/// Readiness.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Health {
    /// The dataflow has caught up with the log as it was at start-up.
    pub ready: bool,
    pub details: Value,
}

/// What the HTTP layer needs from the rest of the system.
pub trait Backend: Send + Sync + 'static {
    /// The policy of a project key, if it exists.
    fn project(&self, key: &str) -> Option<ProjectPolicy>;
    /// Decodes, validates and durably appends a `/track` body for `project`.
    fn track(
        &self,
        project: String,
        content_type: Option<String>,
        batch_id: String,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<TrackReport, ApiError>> + Send;
    /// Decodes and appends a raw rrweb import chunk.
    fn import_rrweb(
        &self,
        import: RrwebImport,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<TrackReport, ApiError>> + Send;
    /// The stored rrweb events of a device within a time range.
    fn replay(
        &self,
        project: String,
        device: String,
        from_ts: i64,
        to_ts: i64,
    ) -> impl std::future::Future<Output = Result<Replay, ApiError>> + Send;
    fn health(&self) -> Health;
    /// Prometheus text exposition of the backend's metrics.
    fn metrics(&self) -> String;
}

/// HTTP-level limits.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest request body (compressed), 413 above.
    pub max_body_bytes: usize,
    pub query: QueryLimits,
    /// How long `min_as_of` may wait for the views.
    pub max_wait: Duration,
    /// Requests per second per client IP (0: unlimited).
    pub per_ip_per_s: f64,
    /// The engine's tick: an event at time `t` is reflected from `as_of >= tick_ceil(t)`.
    pub tick_ms: u64,
}

/// The router's shared state.
pub struct AppState<B> {
    pub backend: Arc<B>,
    pub snapshots: Snapshots,
    pub limits: HttpLimits,
    /// Queries run here, apart from the runtime serving requests.
    pub query_runtime: tokio::runtime::Handle,
    limiter: Mutex<RateLimiter>,
}

impl<B> AppState<B> {
    pub fn new(
        backend: Arc<B>,
        snapshots: Snapshots,
        limits: HttpLimits,
        query_runtime: tokio::runtime::Handle,
    ) -> AppState<B> {
        AppState { backend, snapshots, limits, query_runtime, limiter: Mutex::new(RateLimiter::default()) }
    }
}

/// Token buckets keyed by client IP and by project.
#[derive(Default)]
struct RateLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes `cost` tokens from the bucket `key` refilled at `rate`/s with a burst of
    /// one second; `Err(seconds to wait)` when empty.
    fn take(&mut self, key: String, rate: f64, cost: f64) -> Result<(), u64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        if self.buckets.len() > 100_000 {
            self.buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= cost.min(rate) {
            *tokens -= cost;
            Ok(())
        } else {
            Err(((cost.min(rate) - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Whether `origin` matches one of the allowed patterns.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|pat| {
        if pat == "*" || pat == origin {
            return true;
        }
        let (Some((ps, ph)), Some((os, oh))) = (pat.split_once("://"), origin.split_once("://")) else { return false };
        if ps != os {
            return false;
        }
        let (phost, pport) = ph.rsplit_once(':').map_or((ph, None), |(h, p)| (h, Some(p)));
        let (ohost, oport) = oh.rsplit_once(':').map_or((oh, None), |(h, p)| (h, Some(p)));
        let host_ok =
            phost == ohost || phost.strip_prefix("*.").is_some_and(|suffix| ohost.ends_with(&format!(".{suffix}")));
        let port_ok = pport == Some("*") || pport == oport;
        host_ok && port_ok
    })
}

/// Builds the API router.
pub fn router<B: Backend>(state: Arc<AppState<B>>) -> Router {
    Router::new()
        .route("/api/v1/track", post(track::<B>).options(preflight::<B>))
        .route("/api/v1/projects/{key}/devices/{device}/rrweb", post(import_rrweb::<B>).options(preflight::<B>))
        .route("/api/v1/query", post(query::<B>))
        .route("/api/v1/sessions/{id}/replay", get(replay::<B>))
        .route("/health", get(health::<B>))
        .route("/metrics", get(metrics::<B>))
        .with_state(state)
}

#[derive(Deserialize, Default)]
struct KeyParams {
    key: Option<String>,
    tab: Option<String>,
    seq_start: Option<u64>,
    batch_id: Option<String>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn client_ip(headers: &HeaderMap, addr: Option<SocketAddr>) -> String {
    // Behind a proxy the first X-Forwarded-For hop is the client.
    header_str(headers, "x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
        .or_else(|| addr.map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "request body of {len} bytes exceeds the limit of {limit} bytes"
        )));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes")))
}

/// Authorises a project key and a browser origin; returns the CORS header to send.
fn authorise<B: Backend>(
    state: &AppState<B>,
    key: &str,
    headers: &HeaderMap,
) -> Result<(ProjectPolicy, Option<HeaderValue>), ApiError> {
    let policy =
        state.backend.project(key).ok_or_else(|| ApiError::Unauthorized(format!("unknown project key {key:?}")))?;
    let cors = match header_str(headers, "origin") {
        Some(origin) if !origin_allowed(origin, &policy.allowed_origins) => {
            return Err(ApiError::Forbidden(format!("origin {origin} is not allowed for project {key:?}")));
        }
        Some(origin) => HeaderValue::from_str(origin).ok(),
        None => None,
    };
    Ok((policy, cors))
}

fn with_cors(mut resp: Response, cors: Option<HeaderValue>) -> Response {
    if let Some(origin) = cors {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

fn rate_limit<B>(
    state: &AppState<B>,
    ip: &str,
    project: &str,
    policy: &ProjectPolicy,
    events: f64,
) -> Result<(), ApiError> {
    let mut limiter = state.limiter.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(wait) = limiter.take(format!("ip:{ip}"), state.limits.per_ip_per_s, 1.0) {
        return Err(ApiError::TooManyRequests {
            message: format!("too many requests from {ip}; retry in {wait} s"),
            retry_after_s: wait,
        });
    }
    if let Err(wait) = limiter.take(format!("project:{project}"), policy.rate_limit_per_s, events) {
        return Err(ApiError::TooManyRequests {
            message: format!("project {project:?} is over its event rate limit; retry in {wait} s"),
            retry_after_s: wait,
        });
    }
    Ok(())
}

fn report_response(report: TrackReport, cors: Option<HeaderValue>) -> Response {
    let status = if report.accepted == 0 && !report.rejected.is_empty() && !report.duplicate {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    with_cors((status, Json(report)).into_response(), cors)
}

async fn track<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Query(params): Query<KeyParams>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let result = async {
        let key =
            params.key.clone().or_else(|| header_str(&headers, "x-sightflow-key").map(str::to_string)).ok_or_else(
                || ApiError::Unauthorized("missing project key: pass ?key=KEY or the X-Sightflow-Key header".into()),
            )?;
        let (policy, cors) = authorise(&state, &key, &headers)?;
        let ip = client_ip(&headers, connect.map(|c| c.0));
        rate_limit(&state, &ip, &key, &policy, 1.0)?;
        let body = read_body(req, state.limits.max_body_bytes).await?;
        let batch_id = params
            .batch_id
            .clone()
            .or_else(|| header_str(&headers, "x-batch-id").map(str::to_string))
            .unwrap_or_default();
        let ct = header_str(&headers, "content-type").map(str::to_string);
        let report = state.backend.track(key, ct, batch_id, body).await?;
        Ok::<_, ApiError>(report_response(report, cors))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

async fn import_rrweb<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((key, device)): Path<(String, String)>,
    Query(params): Query<KeyParams>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let result = async {
        let (policy, cors) = authorise(&state, &key, &headers)?;
        let ip = client_ip(&headers, connect.map(|c| c.0));
        rate_limit(&state, &ip, &key, &policy, 1.0)?;
        let body = read_body(req, state.limits.max_body_bytes).await?;
        let tab = params.tab.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| device.clone());
        let batch_id = params
            .batch_id
            .clone()
            .or_else(|| header_str(&headers, "x-batch-id").map(str::to_string))
            .unwrap_or_default();
        let import = RrwebImport { project: key, device, tab, seq_start: params.seq_start.unwrap_or(0), batch_id };
        let report = state.backend.import_rrweb(import, body).await?;
        Ok::<_, ApiError>(report_response(report, cors))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

async fn preflight<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Query(params): Query<KeyParams>,
    req: Request,
) -> Response {
    let headers = req.headers();
    let origin = header_str(headers, "origin").unwrap_or("");
    let key = params.key.clone().or_else(|| {
        // /api/v1/projects/{key}/...: the key is in the path.
        let path = req.uri().path();
        path.strip_prefix("/api/v1/projects/").and_then(|r| r.split('/').next()).map(str::to_string)
    });
    let allowed = match key.and_then(|k| state.backend.project(&k)) {
        Some(policy) => origin_allowed(origin, &policy.allowed_origins),
        None => false,
    };
    if !allowed {
        return ApiError::Forbidden(format!("origin {origin:?} is not allowed")).into_response();
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    if let Ok(o) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, x-sightflow-key, x-batch-id"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    min_as_of: Option<u64>,
}

async fn snapshot_at<B>(state: &AppState<B>, min_as_of: Option<u64>) -> Result<Arc<Snapshot>, ApiError> {
    let Some(min) = min_as_of else { return Ok(state.snapshots.latest()) };
    // `min_as_of` names event time: every event up to it must be reflected.
    let tick = state.limits.tick_ms.max(1);
    let min = min.div_ceil(tick).saturating_mul(tick);
    let snapshots = state.snapshots.clone();
    let wait = state.limits.max_wait;
    tokio::task::spawn_blocking(move || snapshots.wait_for(min, wait))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|latest| {
            ApiError::GatewayTimeout(format!(
                "the views have not reached as_of {min} within {} ms (they are at {})",
                wait.as_millis(),
                latest.as_of
            ))
        })
}

async fn query<B: Backend>(State(state): State<Arc<AppState<B>>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected a JSON body {{\"sql\": \"...\", \"min_as_of\": ms}}: {e}"))
        })?;
        let snap = snapshot_at(&state, req.min_as_of).await?;
        let limits = state.limits.query.clone();
        let sql = req.sql;
        let task = state.query_runtime.spawn(async move { execute(&snap, &sql, &limits).await });
        let abort = task.abort_handle();
        let result = match tokio::time::timeout(state.limits.query.timeout + Duration::from_secs(1), task).await {
            Ok(joined) => joined.map_err(|e| ApiError::Internal(format!("query task failed: {e}")))?,
            Err(_) => {
                abort.abort();
                Err(QueryError::Timeout(state.limits.query.timeout))
            }
        };
        let result = result.map_err(|e| match e {
            QueryError::Timeout(_) => ApiError::Timeout(e.to_string()),
            QueryError::NotAllowed(m) => ApiError::BadRequest(m),
            other => ApiError::BadRequest(other.to_string()),
        })?;
        let accept = header_str(&headers, "accept").unwrap_or("application/json").to_ascii_lowercase();
        let as_of = result.as_of.to_string();
        let resp = if accept.contains("application/vnd.apache.arrow.stream") {
            let bytes = format::to_arrow_ipc(&result).map_err(ApiError::Internal)?;
            ([(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")], bytes).into_response()
        } else if accept.contains("text/csv") {
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], format::to_csv(&result)).into_response()
        } else {
            Json(json!({
                "columns": format::columns(&result),
                "rows": format::rows_as_arrays(&result),
                "as_of": result.as_of,
            }))
            .into_response()
        };
        let mut resp = resp;
        if let Ok(v) = HeaderValue::from_str(&as_of) {
            resp.headers_mut().insert("x-sightflow-as-of", v);
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

async fn replay<B: Backend>(State(state): State<Arc<AppState<B>>>, Path(id): Path<String>) -> Response {
    let result = async {
        let snap = state.snapshots.latest();
        let (project, device, start, end) = find_session(&snap, &id)
            .ok_or_else(|| ApiError::NotFound(format!("no session {id:?} in the views (as_of {})", snap.as_of)))?;
        let replay = state.backend.replay(project, device, start, end).await?;
        let mut body = String::with_capacity(replay.raw_bytes as usize + 2);
        body.push('[');
        for (i, e) in replay.events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(e);
        }
        body.push(']');
        let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        let h = resp.headers_mut();
        for (name, v) in [
            ("x-replay-events", replay.events.len() as u64),
            ("x-replay-stored-bytes", replay.stored_bytes),
            ("x-replay-raw-bytes", replay.raw_bytes),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
                h.insert(name, v);
            }
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

/// (project, device, started_at, ended_at) of a session in a snapshot.
fn find_session(snap: &Snapshot, id: &str) -> Option<(String, String, i64, i64)> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    for b in snap.batches("sessions")? {
        let col = |n: &str| b.column_by_name(n);
        let ids = col("session_id")?.as_string::<i32>();
        let Some(row) = (0..ids.len()).find(|&i| ids.value(i) == id) else {
            continue;
        };
        let project = col("project")?.as_string::<i32>().value(row).to_string();
        let device = col("device_id")?.as_string::<i32>().value(row).to_string();
        let start = col("started_at")?.as_primitive::<TimestampMillisecondType>().value(row);
        let end = col("ended_at")?.as_primitive::<TimestampMillisecondType>().value(row);
        return Some((project, device, start, end));
    }
    None
}

async fn health<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    let h = state.backend.health();
    let snap = state.snapshots.latest();
    let body =
        json!({ "status": if h.ready { "ready" } else { "starting" }, "as_of": snap.as_of, "details": h.details });
    let status = if h.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    let snap = state.snapshots.latest();
    let mut text = state.backend.metrics();
    text.push_str("# HELP sightflow_views_as_of_ms Logical time of the newest published snapshot.\n# TYPE sightflow_views_as_of_ms gauge\n");
    text.push_str(&format!("sightflow_views_as_of_ms {}\n", snap.as_of));
    text.push_str("# HELP sightflow_state_bytes State held per view.\n# TYPE sightflow_state_bytes gauge\n");
    for (view, s) in &snap.state {
        text.push_str(&format!("sightflow_state_bytes{{view=\"{view}\"}} {}\n", s.bytes));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let allowed =
            vec!["http://localhost:*".to_string(), "https://*.shop.test".to_string(), "https://exact.test".to_string()];
        assert!(origin_allowed("http://localhost:8731", &allowed));
        assert!(origin_allowed("https://www.shop.test", &allowed));
        assert!(origin_allowed("https://exact.test", &allowed));
        assert!(!origin_allowed("https://shop.test.evil", &allowed));
        assert!(!origin_allowed("http://www.shop.test", &allowed));
        assert!(!origin_allowed("https://evil.test", &allowed));
        assert!(origin_allowed("https://any", &["*".to_string()]));
    }

    #[test]
    fn buckets_refill() {
        let mut r = RateLimiter::default();
        assert!(r.take("a".into(), 2.0, 1.0).is_ok());
        assert!(r.take("a".into(), 2.0, 1.0).is_ok());
        assert_eq!(r.take("a".into(), 2.0, 1.0), Err(1));
        assert!(r.take("b".into(), 2.0, 1.0).is_ok());
        assert!(r.take("c".into(), 0.0, 1e9).is_ok());
    }
}
