//! The HTTP API: one function, [`router`], builds it over a [`Backend`] (which the
//! binary wires to the event log and the replay store) and the published snapshots.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/track` | a batch of events for one project key |
//! | `POST /api/v1/projects/{key}/devices/{device}/rrweb` | raw rrweb import |
//! | `POST /api/v1/query` | SQL over the live views, `{"sql", "min_as_of"}` |
//! | `GET /api/v1/sessions/{id}/replay` | a session's rrweb events, in pages |
//! | `POST /api/v1/login`, `POST /api/v1/logout`, `GET /api/v1/me` | console logins |
//! | `GET /health`, `GET /metrics` | readiness and Prometheus metrics |
//!
//! Ingest (the first two) takes a project's public key; `/health` is open; everything
//! else needs a credential ([`crate::access`]): 401 without a valid one, 403 when the
//! caller's role does not allow it. SQL reads only the caller's projects' rows.
//!
//! Every error, axum's own rejections included, is a JSON object `{"error": reason}`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sightflow_dataflows::{Snapshot, Snapshots};

use sightflow_config::access::Role;

use crate::access::{Caller, Gate, Via};
use crate::format;
use crate::pool::{PoolError, QueryPool};
use crate::sql::{QueryError, QueryLimits, execute_scoped};

/// An API error with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad SQL, a refused body).
    BadRequest(String),
    /// 401: the project key is unknown, or a read has no valid credential.
    Unauthorized(String),
    /// 403: the origin is not allowed, the caller's role does not allow the request, or
    /// the server does not accept writes.
    Forbidden(String),
    /// 404: no such endpoint or resource.
    NotFound(String),
    /// 409: the thing to create exists already.
    Conflict(String),
    /// 413: the body, the SQL text or the answer is too large.
    PayloadTooLarge(String),
    /// 429: a rate limit is exceeded.
    TooManyRequests {
        /// The reason given to the client.
        message: String,
        /// Seconds until a token is available again (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// 408: the body did not arrive in time, or the query ran past its time limit.
    Timeout(String),
    /// 503: a part of the system the request needs is failing.
    Unavailable(String),
    /// 503 for a while: too many queries or waiters; retry after this many seconds.
    Overloaded {
        /// The reason given to the client.
        message: String,
        /// Seconds to wait before retrying (the `Retry-After` header).
        retry_after_s: u64,
    },
    /// 504: the views did not reach `min_as_of` within the wait allowed.
    GatewayTimeout(String),
    /// 500: something failed that the client cannot fix.
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The reason given to the client.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Timeout(m)
            | ApiError::Unavailable(m)
            | ApiError::GatewayTimeout(m)
            | ApiError::Internal(m) => m,
            ApiError::TooManyRequests { message, .. } | ApiError::Overloaded { message, .. } => message,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(json!({ "error": self.message() }))).into_response();
        if let ApiError::Unauthorized(_) = &self {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sightflow\""));
        }
        if let ApiError::TooManyRequests { retry_after_s, .. } | ApiError::Overloaded { retry_after_s, .. } = &self
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
    /// The project's name: what the events and views carry.
    pub name: String,
    /// Origins allowed to send events from a browser: exact (`https://shop.test`),
    /// host wildcards (`https://*.shop.test`), any port (`http://localhost:*`), or `*`.
    pub allowed_origins: Vec<String>,
    /// Events per second per project (0: unlimited).
    pub rate_limit_per_s: f64,
    /// Days its recordings are kept (0: the server's `replay.retention_ms`).
    pub retention_days: u32,
}

/// Per-event outcome of an ingest request.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrackReport {
    /// Events accepted and appended.
    pub accepted: usize,
    /// Events refused, by position in the request.
    pub rejected: Vec<RejectedEvent>,
    /// Late events kept at the frontier's logical time.
    pub late: usize,
    /// Late events dropped by the `drop` policy.
    pub dropped: usize,
    /// The request repeated a batch id already appended.
    pub duplicate: bool,
    /// Read your writes: a query with `min_as_of` at least this sees every accepted
    /// event of this request (the logical time they were given, late ones included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_as_of: Option<u64>,
    /// Raw rrweb events kept (for replay, and counted as activity) that the views could
    /// not fully use, counted by reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unanalysed: BTreeMap<String, usize>,
    /// Accepted events whose raw rrweb was not stored for replay, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_stored: Vec<RejectedEvent>,
}

/// One event of a request that was refused or not stored, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RejectedEvent {
    /// Position in the request.
    pub index: usize,
    /// Why, for the client.
    pub reason: String,
}

/// A raw rrweb import request.
#[derive(Clone, Debug)]
pub struct RrwebImport {
    /// The project key from the path.
    pub project: String,
    /// The device id from the path.
    pub device: String,
    /// The tab id (`tab` query parameter; the device id when absent).
    pub tab: String,
    /// Sequence number of the chunk's first event (`seq_start`, 0 when absent), so that
    /// chunks of one recording continue each other's numbering.
    pub seq_start: u64,
    /// The batch id for idempotent retries (empty: none).
    pub batch_id: String,
}

/// One stored chunk of a device's replay, as listed.
#[derive(Clone, Debug)]
pub struct ReplayChunk {
    /// Opaque to the HTTP layer.
    pub id: String,
    /// Uncompressed bytes of the chunk's events (what a replay page is bounded by).
    pub raw_bytes: u64,
    /// Bytes on disk.
    pub stored_bytes: u64,
}

/// Readiness.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Health {
    /// The dataflow has caught up with the log as it was at start-up.
    pub ready: bool,
    /// Something is failing (the log cannot be written, ...): `/health` answers 503 with
    /// the reasons.
    pub failures: Vec<String>,
    /// Backend-specific state shown by `/health` (source positions, damage, ...).
    pub details: Value,
}

/// Charges a decoded request's events to its project's rate limit before anything is
/// appended; the number given is the count of events the request would append.
pub type Admit = Box<dyn FnOnce(usize) -> Result<(), ApiError> + Send>;

/// What the HTTP layer needs from the rest of the system.
pub trait Backend: Send + Sync + 'static {
    /// The policy of a project key, if it exists.
    fn project(&self, key: &str) -> Option<ProjectPolicy>;
    /// Whether some project accepts browsers from `origin` (for preflights that do not
    /// name a key: a browser cannot send the key header's value in a preflight).
    fn origin_allowed_anywhere(&self, origin: &str) -> bool;
    /// Decodes, validates and durably appends a `/track` body for `project`, calling
    /// `admit` with the number of events before appending.
    fn track(
        &self,
        project: String,
        content_type: Option<String>,
        batch_id: String,
        body: Bytes,
        admit: Admit,
    ) -> impl std::future::Future<Output = Result<TrackReport, ApiError>> + Send;
    /// Decodes and appends a raw rrweb import chunk.
    fn import_rrweb(
        &self,
        import: RrwebImport,
        body: Bytes,
        admit: Admit,
    ) -> impl std::future::Future<Output = Result<TrackReport, ApiError>> + Send;
    /// The stored replay chunks of a device overlapping a time range, in time order.
    fn replay_chunks(
        &self,
        project: String,
        device: String,
        from_ts: i64,
        to_ts: i64,
    ) -> impl std::future::Future<Output = Result<Vec<ReplayChunk>, ApiError>> + Send;
    /// The rrweb event texts of one chunk within the time range, in order, or why the
    /// chunk cannot be read.
    fn replay_chunk(
        &self,
        project: String,
        device: String,
        chunk: ReplayChunk,
        from_ts: i64,
        to_ts: i64,
    ) -> impl std::future::Future<Output = Result<Vec<String>, ApiError>> + Send;
    /// Every view computed from the stored replay of these sessions alone (project,
    /// device, start, end), through the same definitions as the live views: what a
    /// heatmap of chosen sessions reads.
    fn sessions_views(
        &self,
        sessions: Vec<crate::index::SessionPlace>,
    ) -> impl std::future::Future<Output = Result<Arc<Snapshot>, ApiError>> + Send;
    /// Readiness and failures, for `/health`.
    fn health(&self) -> Health;
    /// Adds the backend's metrics to a scrape.
    fn metrics(&self, out: &mut crate::metrics::Scrape);
}

/// HTTP-level limits.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest request body (compressed), 413 above.
    pub max_body_bytes: usize,
    /// Time a client has to send its whole body.
    pub body_timeout: Duration,
    /// Bounds on each query.
    pub query: QueryLimits,
    /// Queries run at once, and queued beyond that.
    pub query_threads: usize,
    /// The query threads' nice value (`query.nice`).
    pub query_nice: i32,
    /// Queries waiting for a thread; more are refused with 503.
    pub query_queue: usize,
    /// How long `min_as_of` may wait for the views, and how many may wait at once.
    pub max_wait: Duration,
    /// Requests waiting for `min_as_of` at once; more are refused with 503.
    pub max_waiters: usize,
    /// Requests per second per client IP (0: unlimited).
    pub per_ip_per_s: f64,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// The engine's tick: an event at time `t` is reflected from `as_of >= tick_ceil(t)`.
    pub tick_ms: u64,
    /// Raw rrweb bytes per replay page.
    pub max_page_bytes: u64,
    /// Bounds of the live feed.
    pub live: crate::live::LiveLimits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 5 << 20,
            body_timeout: Duration::from_secs(30),
            query: QueryLimits::default(),
            query_threads: 2,
            query_nice: 10,
            query_queue: 32,
            max_wait: Duration::from_secs(10),
            max_waiters: 1024,
            per_ip_per_s: 0.0,
            trusted_proxies: Vec::new(),
            tick_ms: 100,
            max_page_bytes: 64 << 20,
            live: crate::live::LiveLimits::default(),
        }
    }
}

/// The router's shared state.
pub struct AppState<B> {
    /// Ingest, replay and health.
    pub backend: Arc<B>,
    /// The published views queries run on.
    pub snapshots: Snapshots,
    /// HTTP-level limits.
    pub limits: HttpLimits,
    /// Where queries run, apart from the threads serving requests and ingest.
    pub pool: QueryPool,
    /// Credentials and logins.
    pub gate: Gate,
    /// The live feed's subscriptions, tickets and history.
    pub live: Arc<crate::live::Live>,
    /// Request and query latencies.
    pub metrics: Arc<crate::metrics::HttpMetrics>,
    /// The Postgres port's counters.
    pub pg: crate::pg::PgCounters,
    /// Sessions by id, for replays.
    pub sessions: crate::index::SessionIndex,
    /// The files served without a credential (`/sdk.js`).
    pub assets: crate::assets::Assets,
    /// How long the server keeps recordings, sessions and its log (shown with each project).
    pub retention: Retention,
    limiter: Mutex<RateLimiter>,
    waiters: AtomicUsize,
}

impl<B> AppState<B> {
    /// The state with a fresh query pool and rate limiter.
    pub fn new(backend: Arc<B>, snapshots: Snapshots, limits: HttpLimits, gate: Gate) -> AppState<B> {
        let pool = QueryPool::with_nice(
            limits.query_threads,
            limits.query_queue,
            limits.query_threads.max(2),
            limits.query_nice,
        );
        AppState {
            backend,
            snapshots,
            limits,
            pool,
            gate,
            live: Arc::default(),
            metrics: Arc::default(),
            pg: Default::default(),
            sessions: Default::default(),
            assets: Default::default(),
            retention: Retention::default(),
            limiter: Mutex::new(RateLimiter::default()),
            waiters: AtomicUsize::new(0),
        }
    }
}

/// How long the server keeps what it holds, from its configuration: each project in the
/// projects API carries it (`kept`), with its own recordings' retention applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Recordings (`replay.retention_ms`), for a project without `retention_days`.
    pub recordings_ms: i64,
    /// A closed session's rows in the per-session views (`session.retention_ms`; 0: kept).
    pub sessions_ms: u64,
    /// The embedded log a restart rebuilds the views from (`log.retention_ms`); `None`
    /// with Kafka, whose topic keeps what its own retention says.
    pub log_ms: Option<i64>,
}

impl Retention {
    /// What is kept for a project whose own recordings' retention is `days` (0: the
    /// server's), as the API shows it.
    pub fn of_project(&self, days: u32) -> serde_json::Value {
        let recordings = if days > 0 { i64::from(days) * 86_400_000 } else { self.recordings_ms };
        json!({"recordings_ms": recordings, "sessions_ms": self.sessions_ms, "log_ms": self.log_ms})
    }
}

/// Token buckets keyed by client IP and by project.
#[derive(Default)]
struct RateLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

/// Why a bucket refused.
#[derive(Debug, PartialEq)]
enum Refused {
    /// Retry in this many seconds.
    Wait(u64),
    /// The cost is more than the bucket ever holds.
    TooBig,
}

impl RateLimiter {
    /// Takes `cost` tokens from the bucket `key` refilled at `rate`/s that holds one
    /// second's worth.
    fn take(&mut self, key: String, rate: f64, cost: f64) -> Result<(), Refused> {
        if rate <= 0.0 {
            return Ok(());
        }
        if cost > rate {
            return Err(Refused::TooBig);
        }
        let now = Instant::now();
        if self.buckets.len() > 100_000 {
            self.buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= cost {
            *tokens -= cost;
            Ok(())
        } else {
            Err(Refused::Wait(((cost - *tokens) / rate).ceil().max(1.0) as u64))
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
    let timing = axum::middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track);
    Router::new()
        .route("/api/v1/track", post(track::<B>).options(preflight::<B>))
        .route("/api/v1/projects/{key}/devices/{device}/rrweb", post(import_rrweb::<B>).options(preflight::<B>))
        .route("/api/v1/query", post(query::<B>))
        .route("/api/v1/sessions/{id}/replay", get(replay::<B>))
        .route("/api/v1/login", post(login::<B>))
        .route("/api/v1/logout", post(logout::<B>))
        .route("/api/v1/me", get(me::<B>))
        .route("/api/v1/openapi.json", get(crate::openapi::openapi_json))
        .merge(crate::rest::routes::<B>())
        .merge(crate::live::routes::<B>())
        .route_layer(timing)
        .route("/health", get(health::<B>))
        .route("/sdk.js", get(sdk_js::<B>))
        .route("/metrics", get(metrics::<B>))
        .fallback(console::<B>)
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// The browser SDK for the snippet (`<script async src="HOST/sdk.js">`).
#[utoipa::path(get, path = "/sdk.js", tag = "ingest",
    responses((status = 200, description = "The SDK (IIFE); ETag and Cache-Control", content_type = "application/javascript"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "This binary was built without the SDK", body = crate::openapi::ErrorBody)))]
pub(crate) async fn sdk_js<B: Backend>(State(state): State<Arc<AppState<B>>>, headers: HeaderMap) -> Response {
    crate::assets::serve(
        &state.assets,
        "/sdk.js",
        &headers,
        "build it with `make sdk` (npm ci and npm run build in sdk/), then rebuild the server",
    )
}

/// The web console: its files, and its page for any other GET path outside the API
/// (the console routes in the browser, so a shared link such as `/sessions?...` opens
/// it). The page holds no data: everything it shows comes from the API after a login.
async fn console<B: Backend>(State(state): State<Arc<AppState<B>>>, req: Request) -> Response {
    let path = req.uri().path();
    let page = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    if !page || path == "/api" || path.starts_with("/api/") {
        return not_found(req).await.into_response();
    }
    let missing = "build it with `make ui` (npm ci and npm run build in ui/), then rebuild the server";
    let file = if state.assets.get(path).is_some() && path != "/sdk.js" {
        path
    } else if path.starts_with("/assets/") {
        // An asset this build does not have (an old hashed name) is not the page.
        return not_found(req).await.into_response();
    } else {
        "/index.html"
    };
    let mut resp = crate::assets::serve(&state.assets, file, req.headers(), missing);
    let h = resp.headers_mut();
    h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    if file == "/index.html" {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'; object-src 'none'; base-uri 'self'"),
        );
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {} {}", req.method(), req.uri().path()))
}

/// Turns any error answer that is not JSON (axum's rejections of a bad query string,
/// path or body, 405s) into the JSON error shape, keeping its status and headers.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut reason = text.unwrap_or_default().trim().to_string();
    if reason.is_empty() {
        reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    }
    let body = json!({ "error": reason }).to_string();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[derive(Deserialize, Default)]
pub(crate) struct KeyParams {
    key: Option<String>,
    tab: Option<String>,
    seq_start: Option<u64>,
    batch_id: Option<String>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not one.
fn client_ip(headers: &HeaderMap, addr: Option<SocketAddr>, trusted: &[(IpAddr, u8)]) -> String {
    let Some(peer) = addr.map(|a| a.ip()) else { return "unknown".into() };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| sightflow_config::cidr_contains(*net, ip));
    if !is_trusted(peer) {
        return peer.to_string();
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    // The rightmost hop not added by a trusted proxy is the client.
    hops.into_iter().rev().find(|ip| !is_trusted(*ip)).unwrap_or(peer).to_string()
}

async fn read_body(req: Request, limits: &HttpLimits) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    if let Some(len) =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "request body of {len} bytes exceeds the limit of {limit} bytes"
        )));
    }
    match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                Err(ApiError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes")))
            } else {
                Err(ApiError::BadRequest(format!("cannot read the request body: {e}")))
            }
        }
        Err(_) => Err(ApiError::Timeout(format!(
            "the request body did not arrive within {} ms",
            limits.body_timeout.as_millis()
        ))),
    }
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
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, x-sightflow-as-of"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

fn ip_limit<B>(state: &AppState<B>, ip: &str) -> Result<(), ApiError> {
    let mut limiter = state.limiter.lock().unwrap_or_else(|e| e.into_inner());
    match limiter.take(format!("ip:{ip}"), state.limits.per_ip_per_s, 1.0) {
        Ok(()) => Ok(()),
        Err(Refused::Wait(wait)) => Err(ApiError::TooManyRequests {
            message: format!("too many requests from {ip}; retry in {wait} s"),
            retry_after_s: wait,
        }),
        Err(Refused::TooBig) => Ok(()),
    }
}

/// The project's event-rate check, run once the request's events are counted.
fn project_admit<B: Backend>(state: &Arc<AppState<B>>, project: &str, policy: &ProjectPolicy) -> Admit {
    let (state, project, rate) = (state.clone(), project.to_string(), policy.rate_limit_per_s);
    Box::new(move |events: usize| {
        let mut limiter = state.limiter.lock().unwrap_or_else(|e| e.into_inner());
        match limiter.take(format!("project:{project}"), rate, events as f64) {
            Ok(()) => Ok(()),
            Err(Refused::Wait(wait)) => Err(ApiError::TooManyRequests {
                message: format!("project {project:?} is over its limit of {rate} events/s; retry in {wait} s"),
                retry_after_s: wait,
            }),
            Err(Refused::TooBig) => Err(ApiError::PayloadTooLarge(format!(
                "the request has {events} events, more than project {project:?} accepts in a second ({rate}); \
                 send smaller batches"
            ))),
        }
    })
}

fn report_response(report: TrackReport) -> Response {
    let status = if report.accepted == 0 && !report.rejected.is_empty() && !report.duplicate {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(&report)).into_response();
    if let Some(t) = report.min_as_of
        && let Ok(v) = HeaderValue::from_str(&t.to_string())
    {
        resp.headers_mut().insert("x-sightflow-as-of", v);
    }
    resp
}

fn batch_id(params: &KeyParams, headers: &HeaderMap) -> Result<String, ApiError> {
    let id =
        params.batch_id.clone().or_else(|| header_str(headers, "x-batch-id").map(str::to_string)).unwrap_or_default();
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "the batch id must be at most 128 printable ASCII characters without spaces (got {} bytes)",
            id.len()
        )));
    }
    Ok(id)
}

#[utoipa::path(post, path = "/api/v1/track", tag = "ingest",
    params(("key" = Option<String>, Query, description = "The project's ingest key (or the X-Sightflow-Key header)"),
           ("batch_id" = Option<String>, Query, description = "Idempotent retries (or X-Batch-Id)")),
    request_body(content = Vec<serde_json::Value>, description = "A JSON array of events, `{events: [...]}`, or a protobuf Batch; gzip by magic bytes"),
    responses((status = 200, description = "Per-event outcome: accepted, rejected with reasons, min_as_of", body = serde_json::Value),
        (status = 400, description = "Nothing acceptable in the body", body = crate::openapi::ErrorBody),
        (status = 401, description = "Unknown project key", body = crate::openapi::ErrorBody),
        (status = 403, description = "Origin not allowed", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over a limit", body = crate::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit; Retry-After", body = crate::openapi::ErrorBody)),
    security(("ingest_key" = [])))]
pub(crate) async fn track<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Query(params): Query<KeyParams>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let mut cors = None;
    let result = async {
        let key =
            params.key.clone().or_else(|| header_str(&headers, "x-sightflow-key").map(str::to_string)).ok_or_else(
                || ApiError::Unauthorized("missing project key: pass ?key=KEY or the X-Sightflow-Key header".into()),
            )?;
        let (policy, c) = authorise(&state, &key, &headers)?;
        cors = c;
        let ip = client_ip(&headers, connect.map(|c| c.0), &state.limits.trusted_proxies);
        ip_limit(&state, &ip)?;
        let batch_id = batch_id(&params, &headers)?;
        let body = read_body(req, &state.limits).await?;
        let ct = header_str(&headers, "content-type").map(str::to_string);
        let admit = project_admit(&state, &policy.name, &policy);
        let report = state.backend.track(policy.name.clone(), ct, batch_id, body, admit).await?;
        Ok::<_, ApiError>(report_response(report))
    }
    .await;
    with_cors(result.unwrap_or_else(|e| e.into_response()), cors)
}

#[utoipa::path(post, path = "/api/v1/projects/{key}/devices/{device}/rrweb", tag = "ingest",
    params(("key" = String, Path, description = "The project's ingest key"), ("device" = String, Path, description = "Device id"),
           ("tab" = Option<String>, Query, description = "Tab id"), ("seq_start" = Option<u64>, Query, description = "Sequence number of the first event")),
    request_body(content = Vec<serde_json::Value>, description = "A JSON array of rrweb events"),
    responses((status = 200, description = "Per-event outcome", body = serde_json::Value),
        (status = 401, description = "Unknown project key", body = crate::openapi::ErrorBody), (status = 413, description = "Body over a limit", body = crate::openapi::ErrorBody)),
    security(("ingest_key" = [])))]
pub(crate) async fn import_rrweb<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((key, device)): Path<(String, String)>,
    Query(params): Query<KeyParams>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    let mut cors = None;
    let result = async {
        let (policy, c) = authorise(&state, &key, &headers)?;
        cors = c;
        let ip = client_ip(&headers, connect.map(|c| c.0), &state.limits.trusted_proxies);
        ip_limit(&state, &ip)?;
        let batch_id = batch_id(&params, &headers)?;
        let body = read_body(req, &state.limits).await?;
        let tab = params.tab.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| device.clone());
        let admit = project_admit(&state, &policy.name, &policy);
        let import = RrwebImport {
            project: policy.name.clone(),
            device,
            tab,
            seq_start: params.seq_start.unwrap_or(0),
            batch_id,
        };
        let report = state.backend.import_rrweb(import, body, admit).await?;
        Ok::<_, ApiError>(report_response(report))
    }
    .await;
    with_cors(result.unwrap_or_else(|e| e.into_response()), cors)
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
    // A key sent as a header is not visible in a preflight: then any project that
    // accepts the origin is enough here; the request itself is checked against its key.
    let allowed = match key {
        Some(k) => state.backend.project(&k).is_some_and(|p| origin_allowed(origin, &p.allowed_origins)),
        None => !origin.is_empty() && state.backend.origin_allowed_anywhere(origin),
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

/// Counts a waiter for `min_as_of` while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn snapshot_at<B>(state: &AppState<B>, min_as_of: Option<u64>) -> Result<Arc<Snapshot>, ApiError> {
    let Some(min) = min_as_of else { return Ok(state.snapshots.latest()) };
    // `min_as_of` names event time (or an ingest answer's `min_as_of`): every event up
    // to it must be reflected.
    let tick = state.limits.tick_ms.max(1);
    let min = min.div_ceil(tick).saturating_mul(tick);
    let latest = state.snapshots.latest();
    if latest.as_of >= min || latest.complete {
        return Ok(latest);
    }
    let waiting = state.waiters.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = Waiting(&state.waiters);
    if waiting > state.limits.max_waiters {
        return Err(ApiError::Overloaded {
            message: format!(
                "{} requests are already waiting for the views to advance; retry later",
                state.limits.max_waiters
            ),
            retry_after_s: 1,
        });
    }
    let wait = state.limits.max_wait;
    let not_yet = |latest: Arc<Snapshot>| {
        ApiError::GatewayTimeout(format!(
            "the views have not reached as_of {min} within {} ms (they are at {})",
            wait.as_millis(),
            latest.as_of
        ))
    };
    match tokio::time::timeout(wait, state.snapshots.wait_async(min)).await {
        Ok(Ok(snap)) => Ok(snap),
        Ok(Err(latest)) => Err(not_yet(latest)),
        Err(_) => Err(not_yet(state.snapshots.latest())),
    }
}

/// The snapshot a read should use: the latest, or the first at `min_as_of` (bounded wait).
pub(crate) async fn snapshot_for<B>(state: &AppState<B>, min_as_of: Option<u64>) -> Result<Arc<Snapshot>, ApiError> {
    snapshot_at(state, min_as_of).await
}

/// Runs read-only SQL over `snap` within `scope` on the query pool.
pub(crate) async fn run_scoped<B>(
    state: &AppState<B>,
    snap: Arc<Snapshot>,
    sql: String,
    scope: sightflow_config::access::Scope,
) -> Result<crate::sql::QueryResult, ApiError> {
    run_with_cost(state, snap, sql, scope).await.map(|(r, _)| r)
}

async fn run_with_cost<B>(
    state: &AppState<B>,
    snap: Arc<Snapshot>,
    sql: String,
    scope: sightflow_config::access::Scope,
) -> Result<(crate::sql::QueryResult, crate::pool::Cost), ApiError> {
    let limits = state.limits.query.clone();
    if sql.len() > limits.max_sql_bytes {
        return Err(query_error(QueryError::TooLong { len: sql.len(), max: limits.max_sql_bytes }));
    }
    let timeout = limits.timeout;
    let started = Instant::now();
    let run = state.pool.run(timeout, move || async move { execute_scoped(&snap, &sql, &limits, &scope).await }).await;
    let (outcome, r) = match run {
        Ok((Ok(r), cost)) => ("ok", Ok((r, cost))),
        Ok((Err(e), _)) => ("error", Err(query_error(e))),
        Err(PoolError::Timeout(_)) => ("timeout", Err(query_error(QueryError::Timeout(timeout)))),
        Err(e @ (PoolError::Busy { .. } | PoolError::Saturated { .. })) => {
            ("overloaded", Err(ApiError::Overloaded { message: e.to_string(), retry_after_s: 1 }))
        }
        Err(e) => ("error", Err(ApiError::Internal(e.to_string()))),
    };
    state.metrics.query(started.elapsed().as_secs_f64(), outcome);
    r
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Timeout(_) => ApiError::Timeout(e.to_string()),
        QueryError::TooLong { .. } => ApiError::PayloadTooLarge(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// SQL over the live views of the caller's projects.
#[utoipa::path(post, path = "/api/v1/query", tag = "sql",
    request_body(content = crate::openapi::QueryBody, description = "The SQL and an optional `min_as_of` (read your writes)"),
    responses(
        (status = 200, description = "`{columns, rows, as_of}`; CSV or Arrow IPC by `Accept`", body = crate::openapi::QueryAnswer),
        (status = 400, description = "Bad SQL, not read-only, or over a limit", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "No role on any project", body = crate::openapi::ErrorBody),
        (status = 408, description = "Past the query's time limit", body = crate::openapi::ErrorBody),
        (status = 503, description = "Too many queries; retry after `Retry-After`", body = crate::openapi::ErrorBody),
        (status = 504, description = "The views did not reach `min_as_of` in time", body = crate::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn query<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = state.gate.caller(&method, &headers).await?;
        let scope = forbidden_counted(&state, caller.readable())?;
        let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected a JSON body {{\"sql\": \"...\", \"min_as_of\": ms}}: {e}"))
        })?;
        let limits = state.limits.query.clone();
        if req.sql.len() > limits.max_sql_bytes {
            return Err(query_error(QueryError::TooLong { len: req.sql.len(), max: limits.max_sql_bytes }));
        }
        let snap = snapshot_at(&state, req.min_as_of).await?;
        let (result, cost) = run_with_cost(&state, snap, req.sql, scope).await?;
        let accept = header_str(&headers, "accept").unwrap_or("application/json").to_ascii_lowercase();
        // The answer as text is bounded like the result it renders.
        let max_answer = state.limits.query.max_result_bytes;
        let too_large = |max: usize| query_error(QueryError::TooLarge(max));
        let as_of = result.as_of.to_string();
        let mut resp = if accept.contains("application/vnd.apache.arrow.stream") {
            let bytes = format::to_arrow_ipc(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
            ([(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")], bytes).into_response()
        } else if accept.contains("text/csv") {
            let text = format::to_csv_bounded(&result, max_answer).map_err(too_large)?;
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
        } else {
            let bytes = format::to_json_answer(&result, max_answer).map_err(too_large)?;
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        };
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&as_of) {
            h.insert("x-sightflow-as-of", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", cost.cpu.as_secs_f64() * 1000.0)) {
            h.insert("x-sightflow-query-cpu-ms", v);
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct ReplayParams {
    /// The first chunk of the page (from a previous page's `next_cursor`).
    cursor: Option<usize>,
    /// Raw bytes per page (at most the server's limit).
    max_bytes: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}/replay", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), ("cursor" = Option<usize>, Query, description = "First chunk of the page"),
           ("max_bytes" = Option<u64>, Query, description = "Raw bytes per page")),
    responses((status = 200, description = "`{session_id, chunks, next_cursor, events, skipped}`, streamed", body = serde_json::Value),
        (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such session among the caller's projects", body = crate::openapi::ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn replay<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path(id): Path<String>,
    Query(params): Query<ReplayParams>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = state.gate.caller(&method, &headers).await?;
        let scope = forbidden_counted(&state, caller.readable())?;
        let snap = state.snapshots.latest();
        // A session of a project the caller cannot read is not there for them.
        let (project, device, start, end) = state
            .sessions
            .find(&snap, &id)
            .filter(|(project, ..)| scope.contains(project))
            .ok_or_else(|| ApiError::NotFound(format!("no session {id:?} in the views (as_of {})", snap.as_of)))?;
        forbidden_counted(&state, caller.require(Role::Member, &project, "watching a replay"))?;
        let chunks = state.backend.replay_chunks(project.clone(), device.clone(), start, end).await?;
        let first = params.cursor.unwrap_or(0);
        if first > chunks.len() {
            return Err(ApiError::BadRequest(format!(
                "cursor {first} is past the session's {} replay chunks",
                chunks.len()
            )));
        }
        let budget = params.max_bytes.unwrap_or(u64::MAX).clamp(1, state.limits.max_page_bytes);
        // A page holds whole chunks up to the byte budget (at least one).
        let mut last = first;
        let mut raw = 0u64;
        while last < chunks.len() && (last == first || raw + chunks[last].raw_bytes <= budget) {
            raw += chunks[last].raw_bytes;
            last += 1;
        }
        let next = (last < chunks.len()).then_some(last);
        let stored: u64 = chunks[first..last].iter().map(|c| c.stored_bytes).sum();
        let page: Vec<ReplayChunk> = chunks[first..last].to_vec();
        let head = json!({"session_id": id, "chunks": chunks.len(), "next_cursor": next});
        let mut head = head.to_string();
        head.pop(); // reopen the object
        head.push_str(",\"events\":[");
        let backend = state.backend.clone();
        // Chunk by chunk: one chunk in memory at a time.
        let stream = futures::stream::unfold(
            (page.into_iter(), false, Vec::<Value>::new(), Some(head)),
            move |(mut rest, mut any, mut skipped, head)| {
                let (backend, project, device) = (backend.clone(), project.clone(), device.clone());
                async move {
                    if let Some(h) = head {
                        return Some((Ok::<_, std::io::Error>(Bytes::from(h)), (rest, any, skipped, None)));
                    }
                    let chunk = rest.next()?;
                    let id = chunk.id.clone();
                    let mut out = String::new();
                    match backend.replay_chunk(project, device, chunk, start, end).await {
                        Ok(events) => {
                            for e in events {
                                if any {
                                    out.push(',');
                                }
                                out.push_str(&e);
                                any = true;
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(chunk = %id, %reason, "a replay chunk is unreadable; serving the rest");
                            skipped.push(json!({"chunk": id, "reason": reason.to_string()}));
                        }
                    }
                    if rest.len() == 0 {
                        out.push_str("],\"skipped\":");
                        out.push_str(&Value::Array(std::mem::take(&mut skipped)).to_string());
                        out.push('}');
                    }
                    Some((Ok(Bytes::from(out)), (rest, any, skipped, None)))
                }
            },
        );
        let empty_tail = last == first;
        let body = if empty_tail {
            Body::from(
                json!({"session_id": id, "chunks": chunks.len(), "next_cursor": next, "events": [], "skipped": []})
                    .to_string(),
            )
        } else {
            Body::from_stream(stream)
        };
        let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        let h = resp.headers_mut();
        for (name, v) in [
            ("x-replay-stored-bytes", Some(stored)),
            ("x-replay-raw-bytes", Some(raw)),
            ("x-replay-next-cursor", next.map(|n| n as u64)),
        ] {
            if let Some(v) = v
                && let Ok(v) = HeaderValue::from_str(&v.to_string())
            {
                h.insert(name, v);
            }
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Ready", body = serde_json::Value), (status = 503, description = "Starting or failing, with reasons", body = serde_json::Value)))]
pub(crate) async fn health<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    let h = state.backend.health();
    let snap = state.snapshots.latest();
    let (queued, runaway) = state.pool.load();
    let status = if !h.failures.is_empty() {
        "failing"
    } else if h.ready {
        "ready"
    } else {
        "starting"
    };
    let body = json!({
        "status": status,
        "as_of": snap.as_of,
        "failures": h.failures,
        "queries": {"queued": queued, "runaway": runaway},
        "details": h.details,
    });
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn metrics<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let allowed = async {
        let caller = state.gate.caller(&method, &headers).await?;
        forbidden_counted(&state, caller.require_everywhere(Role::Viewer, "/metrics"))
    };
    if let Err(e) = allowed.await {
        return e.into_response();
    }
    let snap = state.snapshots.latest();
    let mut out = crate::metrics::Scrape::default();
    state.backend.metrics(&mut out);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    out.gauge("sightflow_views_as_of_ms", "Logical time of the newest published snapshot.", snap.as_of as i64);
    out.gauge_f64(
        "sightflow_freshness_seconds",
        "Wall clock minus the newest snapshot's as_of.",
        if snap.as_of == 0 { 0.0 } else { (now - snap.as_of as i64).max(0) as f64 / 1000.0 },
    );
    out.gauge_f64(
        "sightflow_snapshot_build_seconds",
        "Time the newest snapshot took to build.",
        snap.build_us as f64 / 1e6,
    );
    out.counter(
        "sightflow_sessions_left_views",
        "Closed sessions that left the views session.retention_ms after they ended.",
        snap.sessions_left,
    );
    out.gauges(
        "sightflow_state_bytes",
        "State held per view.",
        "view",
        snap.state.iter().map(|(v, s)| (v.clone(), s.bytes as i64)),
    );
    out.gauges(
        "sightflow_state_records",
        "Records held per view.",
        "view",
        snap.state.iter().map(|(v, s)| (v.clone(), s.records as i64)),
    );
    out.gauges(
        "sightflow_view_rows",
        "Rows per published view.",
        "view",
        snap.tables
            .iter()
            .map(|(name, _, batches)| (name.to_string(), batches.iter().map(|b| b.num_rows() as i64).sum())),
    );
    let (finished, cpu) = state.pool.totals();
    let (queued, runaway) = state.pool.load();
    out.counter("sightflow_queries", "Queries run to the end.", finished);
    out.counter_f64("sightflow_query_cpu_seconds", "CPU time of queries.", cpu.as_secs_f64());
    out.gauge("sightflow_queries_queued", "Queries waiting for a thread.", queued as i64);
    out.gauge("sightflow_queries_runaway", "Query threads running past their deadline.", runaway as i64);
    out.gauge(
        "sightflow_query_waiters",
        "Requests waiting for min_as_of.",
        state.waiters.load(Ordering::Relaxed) as i64,
    );
    out.metric("sightflow_query_seconds", "Query latency by outcome.", state.metrics.queries.clone());
    out.metric(
        "sightflow_http_request_seconds",
        "Request latency by route, method and status.",
        state.metrics.requests.clone(),
    );
    let l = &state.live;
    out.gauge(
        "sightflow_live_subscribers",
        "Live-feed subscriptions running.",
        l.subscribers.load(Ordering::Relaxed) as i64,
    );
    out.counter(
        "sightflow_live_events_dropped",
        "Live-feed events dropped for clients that fell behind.",
        l.dropped.load(Ordering::Relaxed),
    );
    out.counter("sightflow_live_resets", "Live-feed resets sent.", l.resets.load(Ordering::Relaxed));
    out.counter(
        "sightflow_live_closed",
        "Live-feed clients closed (behind, result too large).",
        l.closed.load(Ordering::Relaxed),
    );
    out.gauge(
        "sightflow_live_queries",
        "Distinct live queries evaluated (one per query and scope, shared by its clients).",
        l.shared_queries() as i64,
    );
    out.counter("sightflow_live_evaluations", "Re-evaluations of live queries.", l.evaluations.load(Ordering::Relaxed));
    out.counter(
        "sightflow_live_joined",
        "Subscriptions that joined a live query already evaluated for others.",
        l.joined.load(Ordering::Relaxed),
    );
    let pg = &state.pg;
    out.gauge(
        "sightflow_pg_connections",
        "Postgres-wire connections open.",
        pg.connections.load(Ordering::Relaxed) as i64,
    );
    out.counter(
        "sightflow_pg_connections_accepted",
        "Postgres-wire connections accepted.",
        pg.accepted.load(Ordering::Relaxed),
    );
    out.counter(
        "sightflow_pg_connections_refused",
        "Postgres-wire connections refused (password, limit).",
        pg.refused.load(Ordering::Relaxed),
    );
    out.counter("sightflow_pg_statements", "Postgres-wire statements run.", pg.statements.load(Ordering::Relaxed));
    let c = &state.gate.counters;
    out.counter("sightflow_logins", "Console logins.", c.logins.load(Ordering::Relaxed));
    out.counter(
        "sightflow_login_failures",
        "Refused logins: wrong email or password.",
        c.login_failures.load(Ordering::Relaxed),
    );
    out.counter(
        "sightflow_login_throttled",
        "Logins refused by the rate limit.",
        c.login_throttled.load(Ordering::Relaxed),
    );
    out.counter(
        "sightflow_unauthenticated",
        "Reads refused for a missing or bad credential.",
        c.unauthenticated.load(Ordering::Relaxed),
    );
    out.counter("sightflow_forbidden", "Reads refused for the caller's role.", c.forbidden.load(Ordering::Relaxed));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], out.encode()).into_response()
}

/// Counts a 403.
fn forbidden_counted<B, T>(state: &AppState<B>, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(ApiError::Forbidden(_)) = &r {
        state.gate.counters.forbidden.fetch_add(1, Ordering::Relaxed);
    }
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

/// Whether the client reached us over TLS (a trusted proxy's `X-Forwarded-Proto`).
fn over_tls(headers: &HeaderMap, addr: Option<SocketAddr>, trusted: &[(IpAddr, u8)]) -> bool {
    let from_proxy = addr.is_some_and(|a| trusted.iter().any(|net| sightflow_config::cidr_contains(*net, a.ip())));
    from_proxy && header_str(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn login_answer(caller_id: &str, grants: &[sightflow_config::access::Grant], csrf: &str, expires_ms: i64) -> Value {
    json!({"principal": caller_id, "grants": grants, "csrf_token": csrf, "expires_ms": expires_ms})
}

#[utoipa::path(post, path = "/api/v1/login", tag = "auth",
    request_body(content = serde_json::Value, description = "`{email, password}`"),
    responses((status = 200, description = "Sets the sf_session cookie; `{principal, grants, csrf_token, expires_ms}`", body = serde_json::Value),
        (status = 401, description = "Wrong email or password", body = crate::openapi::ErrorBody), (status = 429, description = "Too many attempts", body = crate::openapi::ErrorBody)))]
pub(crate) async fn login<B: Backend>(State(state): State<Arc<AppState<B>>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let connect = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned().map(|c| c.0);
    let result = async {
        let body = read_body(req, &state.limits).await?;
        let creds: LoginRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected a JSON body {{\"email\": \"...\", \"password\": \"...\"}}: {e}"))
        })?;
        let ip = client_ip(&headers, connect, &state.limits.trusted_proxies)
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let Some((cookie, login)) = state.gate.login(ip, &creds.email, &creds.password).await? else {
            return Err(ApiError::Unauthorized("wrong email or password".into()));
        };
        let secure = over_tls(&headers, connect, &state.limits.trusted_proxies);
        let max_age = state.gate.session_ttl_ms / 1000;
        let mut resp = Json(login_answer(&login.principal.id, &login.principal.grants, &login.csrf, login.expires_ms))
            .into_response();
        if let Some(v) = crate::access::set_cookie(&cookie, max_age, secure) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    responses((status = 204, description = "The login ended"), (status = 401, description = "No login", body = crate::openapi::ErrorBody)),
    security(("cookie" = [])))]
pub(crate) async fn logout<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = state.gate.caller(&method, &headers).await?;
        let Via::Cookie(cookie) = caller.via else {
            return Err(ApiError::BadRequest("logout ends a console login; an API token is revoked instead".into()));
        };
        state.gate.logout(cookie).await?;
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Some(v) = crate::access::set_cookie("", 0, false) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, description = "`{principal, grants, csrf_token?}`", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn me<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Caller { principal, csrf, .. } = state.gate.caller(&method, &headers).await?;
        let mut v = json!({"principal": principal.id, "grants": principal.grants});
        if let Some(csrf) = csrf {
            v["csrf_token"] = json!(csrf);
        }
        let mut resp = Json(v).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
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
    fn buckets_refill_and_charge_per_event() {
        let mut r = RateLimiter::default();
        assert!(r.take("a".into(), 2.0, 1.0).is_ok());
        assert!(r.take("a".into(), 2.0, 1.0).is_ok());
        assert_eq!(r.take("a".into(), 2.0, 1.0), Err(Refused::Wait(1)));
        assert!(r.take("b".into(), 2.0, 1.0).is_ok());
        assert!(r.take("c".into(), 0.0, 1e9).is_ok());
        assert_eq!(r.take("d".into(), 10.0, 4000.0), Err(Refused::TooBig));
        assert!(r.take("d".into(), 10.0, 10.0).is_ok());
        assert_eq!(r.take("d".into(), 10.0, 5.0), Err(Refused::Wait(1)));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.0.0.2"));
        let peer = Some("10.0.0.1:5000".parse().unwrap());
        assert_eq!(client_ip(&h, peer, &[]), "10.0.0.1", "no trusted proxies: the peer");
        let trusted = vec![sightflow_config::parse_cidr("10.0.0.0/8").unwrap()];
        assert_eq!(client_ip(&h, peer, &trusted), "203.0.113.7");
        let stranger = Some("198.51.100.1:5000".parse().unwrap());
        assert_eq!(client_ip(&h, stranger, &trusted), "198.51.100.1", "a made-up header from anyone else");
    }
}
