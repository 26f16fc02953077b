//! The live feed: `GET /api/v1/subscribe?sql=...` as server-sent events.
//!
//! A subscription runs its (read-only, scoped) query on the first snapshot and sends the
//! result (`snapshot`), then follows the query's re-evaluations on later snapshots, at
//! most once per `min_interval` (snapshots in between are coalesced), and sends what
//! changed (`diff`: rows with `diff` +1 or -1 and the `as_of`), or `progress` with the
//! `as_of` when nothing did. Each event's id is its `as_of`.
//!
//! Subscriptions to the same query within the same scope share its evaluation: one task
//! per distinct (scope, SQL) re-runs it and hands the result to each subscriber, which
//! diffs it against what its client has. A dashboard that a hundred people watch costs
//! one query per interval, not a hundred.
//!
//! Bounds: at most `max_subscriptions` at once (503 beyond); results of at most
//! `max_rows` rows (the subscription is closed with a reason past it); a queue of
//! `buffer` events per client. A client that falls behind does not hold the server
//! back: its queued events are dropped and it gets a `reset` with a fresh result; one
//! that falls behind `max_resets` times is closed with a reason. The dataflow never waits
//! for a client: the feed reads published snapshots only.
//!
//! Resuming: a client reconnecting with `Last-Event-ID` gets, when the server still
//! holds the result at that `as_of` (the last few results of each query are kept,
//! bounded), only the changes since; otherwise a `reset`.
//!
//! EventSource cannot send headers: a browser authenticates with the console cookie, or
//! with a short-lived single-use ticket from `POST /api/v1/subscribe/ticket`
//! (`?ticket=`), never with a long-lived token in the URL.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sightflow_config::access::{Principal, Scope};
use tokio::sync::{mpsc, watch};

use crate::access::Caller;
use crate::format;
use crate::http::{ApiError, AppState, Backend};

/// Bounds of the live feed.
#[derive(Debug, Clone)]
pub struct LiveLimits {
    /// Subscriptions at once, over all clients.
    pub max_subscriptions: usize,
    /// Least time between two evaluations of one subscription.
    pub min_interval: Duration,
    /// Events queued per client.
    pub buffer: usize,
    /// Rows a subscribed result may have.
    pub max_rows: usize,
    /// Times a client may fall behind before it is closed.
    pub max_resets: u32,
    /// Keep-alive comment interval.
    pub keep_alive: Duration,
    /// Results kept per query for resuming, and queries kept.
    pub history: usize,
    /// Distinct queries whose history is kept.
    pub history_queries: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        LiveLimits {
            max_subscriptions: 256,
            min_interval: Duration::from_millis(50),
            buffer: 32,
            max_rows: 10_000,
            max_resets: 3,
            keep_alive: Duration::from_secs(15),
            history: 8,
            history_queries: 256,
        }
    }
}

/// A result as a multiset of rows (each row as its JSON text).
type Rows = BTreeMap<String, i64>;

/// The shared state of the live feed.
#[derive(Default)]
pub struct Live {
    /// Subscriptions running now.
    pub subscribers: AtomicUsize,
    /// Events dropped because a client fell behind.
    pub dropped: AtomicU64,
    /// Resets sent to clients that fell behind or resumed past the history.
    pub resets: AtomicU64,
    /// Clients closed for falling behind or for a result too large.
    pub closed: AtomicU64,
    history: Mutex<History>,
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
    /// The running evaluations by (scope, SQL), shared by their subscribers.
    shared: Mutex<HashMap<String, Arc<watch::Sender<Evaluated>>>>,
    /// Evaluations of subscribed queries run (shared ones count once).
    pub evaluations: AtomicU64,
    /// Subscriptions that joined a query already evaluated for others, without running it.
    pub joined: AtomicU64,
    /// Queries being opened now, by (scope, SQL): clients of one take turns, so those
    /// after the first join its evaluation instead of running their own.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The latest evaluation of a shared query.
#[derive(Clone, Debug)]
enum Evaluated {
    Rows {
        as_of: u64,
        columns: Arc<Vec<String>>,
        rows: Arc<Rows>,
    },
    /// The query cannot go on (it failed, or grew too large): every subscriber is closed
    /// with this reason.
    Closed(String),
}

/// A query's result as a client first gets it: its `as_of`, column names and rows.
type First = (u64, Arc<Vec<String>>, Arc<Rows>);

/// A client's turn to open a query; the last one out removes the query's lock.
struct Turn {
    live: Arc<Live>,
    key: String,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard.take();
        if let Some(lock) = self.lock.take() {
            let mut opening = self.live.opening.lock().unwrap_or_else(|e| e.into_inner());
            // Held by the map and by this turn only: nobody else waits for it.
            if Arc::strong_count(&lock) == 2 {
                opening.remove(&self.key);
            }
        }
    }
}

#[derive(Default)]
struct History {
    /// (scope, sql) → the last results by `as_of`.
    by_query: HashMap<String, VecDeque<(u64, Arc<Rows>)>>,
    /// Queries in the order they were last used (the oldest go first).
    order: VecDeque<String>,
}

impl Live {
    fn remember(&self, key: &str, as_of: u64, rows: Arc<Rows>, limits: &LiveLimits) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let q = h.by_query.entry(key.to_string()).or_default();
        if q.back().is_some_and(|(t, _)| *t == as_of) {
            return;
        }
        q.push_back((as_of, rows));
        while q.len() > limits.history {
            q.pop_front();
        }
        h.order.retain(|k| k != key);
        h.order.push_back(key.to_string());
        while h.order.len() > limits.history_queries {
            if let Some(old) = h.order.pop_front() {
                h.by_query.remove(&old);
            }
        }
    }

    /// The latest result of a query evaluated for other subscribers in the same scope,
    /// and its evaluations from here on, so a new one joins without running it again.
    fn join(&self, key: &str) -> Option<(First, watch::Receiver<Evaluated>)> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let tx = shared.get(key)?;
        let rx = tx.subscribe();
        let first = match &*rx.borrow() {
            Evaluated::Rows { as_of, columns, rows } => (*as_of, columns.clone(), rows.clone()),
            Evaluated::Closed(_) => return None,
        };
        Some((first, rx))
    }

    /// Waits for this client's turn to open `key` (one at a time per query and scope).
    async fn turn(self: &Arc<Self>, key: &str) -> Turn {
        let lock = {
            let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
            opening.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        Turn { live: self.clone(), key: key.to_string(), lock: Some(lock), guard: Some(guard) }
    }

    /// Distinct queries being evaluated for subscribers now.
    pub fn shared_queries(&self) -> usize {
        self.shared.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn recall(&self, key: &str, as_of: u64) -> Option<Arc<Rows>> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.by_query.get(key)?.iter().find(|(t, _)| *t == as_of).map(|(_, r)| r.clone())
    }

    /// A single-use ticket for `principal`, valid for a minute.
    pub fn ticket(&self, principal: Principal) -> String {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        t.retain(|_, (_, exp)| *exp > now);
        if t.len() > 10_000 {
            t.clear();
        }
        let mut bytes = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        t.insert(ticket.clone(), (principal, now + Duration::from_secs(60)));
        ticket
    }

    fn redeem(&self, ticket: &str) -> Option<Principal> {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let (p, exp) = t.remove(ticket)?;
        (exp > Instant::now()).then_some(p)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeParams {
    sql: String,
    #[serde(default)]
    ticket: Option<String>,
}

/// The changes from `old` to `new`, as rows with their diff.
fn diff(old: &Rows, new: &Rows) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (row, n) in new {
        let d = n - old.get(row).copied().unwrap_or(0);
        if d != 0 {
            out.push((row.clone(), d));
        }
    }
    for (row, n) in old {
        if !new.contains_key(row) {
            out.push((row.clone(), -n));
        }
    }
    out
}

fn changes_json(changes: &[(String, i64)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (row, d) in changes {
        let row: Value = serde_json::from_str(row).unwrap_or(Value::Null);
        let (sign, n) = (d.signum(), d.unsigned_abs());
        for _ in 0..n {
            out.push(json!({"diff": sign, "row": row}));
        }
    }
    out
}

fn rows_of(r: &crate::sql::QueryResult) -> (Vec<String>, Rows) {
    let columns = format::rows_as_objects(r);
    let mut rows = Rows::new();
    for row in columns {
        *rows.entry(row.to_string()).or_insert(0) += 1;
    }
    let names = r.schema.fields().iter().map(|f| f.name().clone()).collect();
    (names, rows)
}

fn event(name: &str, as_of: u64, data: Value) -> Event {
    Event::default().event(name).id(as_of.to_string()).data(data.to_string())
}

/// Counts a subscription while it lives.
struct Subscribed(Arc<Live>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[utoipa::path(get, path = "/api/v1/subscribe", tag = "sql",
    params(("sql" = String, Query, description = "A read-only query"), ("ticket" = Option<String>, Query, description = "From POST /api/v1/subscribe/ticket, for EventSource")),
    responses((status = 200, description = "text/event-stream: snapshot, then diff or progress per snapshot; reset, close", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad SQL or a result too large", body = crate::openapi::ErrorBody), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody), (status = 503, description = "Too many subscriptions", body = crate::openapi::ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn subscribe<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
    Query(p): Query<SubscribeParams>,
) -> Response {
    let caller = match &p.ticket {
        Some(t) => match state.live.redeem(t) {
            Some(principal) => Ok(Caller { principal, via: crate::access::Via::Token, csrf: None }),
            None => Err(ApiError::Unauthorized("the ticket is not valid: unknown, used or expired".into())),
        },
        None => state.gate.caller(&method, &headers).await,
    };
    let result = async {
        let caller = caller?;
        let scope = caller.readable()?;
        let limits = state.limits.live.clone();
        if p.sql.len() > state.limits.query.max_sql_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "the SQL text is {} bytes long, at most {} are accepted",
                p.sql.len(),
                state.limits.query.max_sql_bytes
            )));
        }
        let n = state.live.subscribers.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = Subscribed(state.live.clone());
        if n > limits.max_subscriptions {
            return Err(ApiError::Overloaded {
                message: format!("{} live subscriptions are running; retry later", limits.max_subscriptions),
                retry_after_s: 5,
            });
        }
        let key = format!("{scope:?}\n{}", p.sql);
        // A query other clients in this scope follow is joined at its latest result, and
        // clients opening one at once take turns: a hundred dashboards opening together
        // cost one evaluation, not a hundred.
        let turn = state.live.turn(&key).await;
        let (first, results) = match state.live.join(&key) {
            Some(joined) => {
                state.live.joined.fetch_add(1, Ordering::Relaxed);
                joined
            }
            None => {
                // The first evaluation answers errors (bad SQL, ...) as a status, not an
                // event.
                let snap = state.snapshots.latest();
                let first = crate::http::run_scoped(&state, snap.clone(), p.sql.clone(), scope.clone()).await?;
                if first.num_rows() > limits.max_rows {
                    return Err(ApiError::BadRequest(format!(
                        "a subscribed result may have at most {} rows; this one has {}: aggregate or add a LIMIT",
                        limits.max_rows,
                        first.num_rows()
                    )));
                }
                let (columns, rows) = rows_of(&first);
                let first = (snap.as_of, Arc::new(columns), Arc::new(rows));
                let results = share(&state, &key, &scope, &p.sql, &limits, first.clone());
                (first, results)
            }
        };
        drop(turn);
        let resume: Option<u64> = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok());
        let (tx, rx) = mpsc::channel::<Event>(limits.buffer.max(2));
        let feed = Feed { state: state.clone(), key, limits, tx, _guard: guard };
        tokio::spawn(feed.run(first, results, resume));
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
        Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.limits.live.keep_alive)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

struct Feed<B> {
    state: Arc<AppState<B>>,
    key: String,
    limits: LiveLimits,
    tx: mpsc::Sender<Event>,
    _guard: Subscribed,
}

enum Sent {
    Ok,
    /// The client's queue is full.
    Behind,
    /// The client went away.
    Gone,
}

impl<B: Backend> Feed<B> {
    fn send(&self, e: Event) -> Sent {
        match self.tx.try_send(e) {
            Ok(()) => Sent::Ok,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.state.live.dropped.fetch_add(1, Ordering::Relaxed);
                Sent::Behind
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
        }
    }

    fn full(&self, name: &str, as_of: u64, columns: &[String], rows: &Rows) -> Event {
        let list: Vec<Value> = rows
            .iter()
            .flat_map(|(r, n)| {
                std::iter::repeat_n(serde_json::from_str::<Value>(r).unwrap_or(Value::Null), *n as usize)
            })
            .collect();
        event(name, as_of, json!({"as_of": as_of, "columns": columns, "rows": list}))
    }

    async fn close(&self, reason: String) {
        self.state.live.closed.fetch_add(1, Ordering::Relaxed);
        // Waits a moment for room: the reason is the last thing the client reads.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.tx.send(event("close", 0, json!({"reason": reason}))))
                .await;
    }

    async fn run(self, first: First, mut results: watch::Receiver<Evaluated>, resume: Option<u64>) {
        let (mut as_of, mut columns, mut rows_arc) = first;
        self.state.live.remember(&self.key, as_of, rows_arc.clone(), &self.limits);
        let opening = match resume.and_then(|t| self.state.live.recall(&self.key, t).map(|old| (t, old))) {
            Some((t, old)) if t <= as_of => {
                let changes = diff(&old, &rows_arc);
                event("diff", as_of, json!({"as_of": as_of, "since": t, "changes": changes_json(&changes)}))
            }
            _ if resume.is_some() => {
                self.state.live.resets.fetch_add(1, Ordering::Relaxed);
                self.full("reset", as_of, &columns, &rows_arc)
            }
            _ => self.full("snapshot", as_of, &columns, &rows_arc),
        };
        if let Sent::Gone = self.send(opening) {
            return;
        }
        let mut behind = false;
        let mut resets = 0u32;
        loop {
            tokio::select! {
                r = results.changed() => if r.is_err() {
                    self.close("the server is stopping".into()).await;
                    return;
                },
                _ = self.tx.closed() => return,
            }
            let latest = results.borrow_and_update().clone();
            let (new_as_of, new_columns, new_rows) = match latest {
                Evaluated::Rows { as_of: t, columns, rows } => (t, columns, rows),
                Evaluated::Closed(reason) => {
                    self.close(reason).await;
                    return;
                }
            };
            if new_as_of <= as_of {
                continue;
            }
            let changes = diff(&rows_arc, &new_rows);
            as_of = new_as_of;
            rows_arc = new_rows;
            columns = new_columns;
            if behind {
                // Room again? Start over from the current result.
                if self.tx.capacity() == self.tx.max_capacity() {
                    self.state.live.resets.fetch_add(1, Ordering::Relaxed);
                    match self.send(self.full("reset", as_of, &columns, &rows_arc)) {
                        Sent::Ok => behind = false,
                        Sent::Behind => {}
                        Sent::Gone => return,
                    }
                }
                continue;
            }
            let e = if changes.is_empty() {
                event("progress", as_of, json!({"as_of": as_of}))
            } else {
                event("diff", as_of, json!({"as_of": as_of, "changes": changes_json(&changes)}))
            };
            match self.send(e) {
                Sent::Ok => {}
                Sent::Gone => return,
                Sent::Behind => {
                    resets += 1;
                    if resets > self.limits.max_resets {
                        self.close(format!("the client fell behind {resets} times; reconnect to start over")).await;
                        return;
                    }
                    behind = true;
                }
            }
        }
    }
}

/// Starts the evaluations of a query from `first` (a result just evaluated), shared
/// with every later subscriber of the same query in the same scope. Called in the
/// query's turn ([`Live::turn`]) when [`Live::join`] found none running.
fn share<B: Backend>(
    state: &Arc<AppState<B>>,
    key: &str,
    scope: &Scope,
    sql: &str,
    limits: &LiveLimits,
    first: First,
) -> watch::Receiver<Evaluated> {
    let (as_of, columns, rows) = first;
    let mut shared = state.live.shared.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = watch::channel(Evaluated::Rows { as_of, columns, rows });
    let tx = Arc::new(tx);
    shared.insert(key.to_string(), tx.clone());
    let evaluation = Evaluation {
        state: state.clone(),
        scope: scope.clone(),
        sql: sql.to_string(),
        key: key.to_string(),
        limits: limits.clone(),
        tx,
    };
    tokio::spawn(evaluation.run(as_of));
    rx
}

/// The task that re-runs one shared query as snapshots are published, while anyone
/// subscribes to it.
struct Evaluation<B> {
    state: Arc<AppState<B>>,
    scope: Scope,
    sql: String,
    key: String,
    limits: LiveLimits,
    tx: Arc<watch::Sender<Evaluated>>,
}

impl<B: Backend> Evaluation<B> {
    /// Stops when its last subscriber has gone (checked under the lock that subscribing
    /// takes, so none joins a task that is stopping).
    fn done(&self) -> bool {
        let mut shared = self.state.live.shared.lock().unwrap_or_else(|e| e.into_inner());
        if self.tx.receiver_count() > 0 {
            return false;
        }
        if shared.get(&self.key).is_some_and(|t| Arc::ptr_eq(t, &self.tx)) {
            shared.remove(&self.key);
        }
        true
    }

    /// Ends the query for every subscriber.
    fn fail(&self, reason: String) {
        let mut shared = self.state.live.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.get(&self.key).is_some_and(|t| Arc::ptr_eq(t, &self.tx)) {
            shared.remove(&self.key);
        }
        drop(shared);
        self.tx.send_replace(Evaluated::Closed(reason));
    }

    async fn run(self, mut as_of: u64) {
        let mut last_eval = Instant::now();
        loop {
            if self.done() {
                return;
            }
            // The next snapshot after this one (coalescing: the latest when we wake).
            let next = tokio::select! {
                s = self.state.snapshots.wait_async(as_of + 1) => s,
                _ = self.tx.closed() => continue,
            };
            if next.is_err() {
                // The engine stopped: dropping the sender ends every subscriber's wait.
                self.fail("the server is stopping".into());
                return;
            }
            let wait = self.limits.min_interval.saturating_sub(last_eval.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.tx.closed() => continue,
                }
            }
            let snap = self.state.snapshots.latest();
            last_eval = Instant::now();
            self.state.live.evaluations.fetch_add(1, Ordering::Relaxed);
            let r = crate::http::run_scoped(&self.state, snap.clone(), self.sql.clone(), self.scope.clone()).await;
            let result = match r {
                Ok(r) if r.num_rows() > self.limits.max_rows => {
                    self.fail(format!("the result grew past {} rows", self.limits.max_rows));
                    return;
                }
                Ok(r) => r,
                Err(ApiError::Overloaded { .. }) => continue,
                Err(e) => {
                    self.fail(format!("the query failed: {e}"));
                    return;
                }
            };
            let (columns, rows) = rows_of(&result);
            as_of = snap.as_of;
            let rows = Arc::new(rows);
            self.state.live.remember(&self.key, as_of, rows.clone(), &self.limits);
            self.tx.send_replace(Evaluated::Rows { as_of, columns: Arc::new(columns), rows });
        }
    }
}

#[utoipa::path(post, path = "/api/v1/subscribe/ticket", tag = "sql",
    responses((status = 200, description = "`{ticket, expires_in_s}`: single use", body = serde_json::Value), (status = 401, description = "No valid credential", body = crate::openapi::ErrorBody),
        (status = 403, description = "The role does not allow it", body = crate::openapi::ErrorBody),), security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn ticket<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = state.gate.caller(&method, &headers).await?;
        c.readable()?;
        let t = state.live.ticket(c.principal);
        Ok::<_, ApiError>(axum::Json(json!({"ticket": t, "expires_in_s": 60})).into_response())
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

/// The live feed's routes.
pub(crate) fn routes<B: Backend>() -> axum::Router<Arc<AppState<B>>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/subscribe", get(subscribe::<B>))
        .route("/api/v1/subscribe/ticket", post(ticket::<B>))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_multiset_differences() {
        let rows = |v: &[(&str, i64)]| v.iter().map(|(r, n)| (r.to_string(), *n)).collect::<Rows>();
        let old = rows(&[("a", 1), ("b", 2)]);
        let new = rows(&[("b", 1), ("c", 1)]);
        let mut d = diff(&old, &new);
        d.sort();
        assert_eq!(d, vec![("a".into(), -1), ("b".into(), -1), ("c".into(), 1)]);
        assert!(diff(&new, &new).is_empty());
    }
}
