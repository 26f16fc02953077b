//! The live feed over SSE: the first result, then changes in `as_of` order and progress;
//! a client that stops reading is reset or closed while nothing piles up; scopes,
//! tickets and resuming with `Last-Event-ID`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sightflow_config::access::Role;
use tower::ServiceExt;

use crate::api::{Api, api_with, now_event};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// Reads events from an SSE body.
struct Reader {
    body: Body,
    buf: String,
}

impl Reader {
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse { event, id, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = tokio::time::timeout(left, self.body.frame()).await.ok()??.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    /// The next event named `name`, skipping others.
    async fn until(&mut self, name: &str, within: Duration) -> Sse {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next(left).await.unwrap_or_else(|| panic!("no {name} event within {within:?}"));
            if e.event == name {
                return e;
            }
        }
    }
}

async fn subscribe(a: &Api, token: Option<&str>, sql: &str, last_id: Option<u64>) -> (StatusCode, Reader) {
    let uri = format!("/api/v1/subscribe?sql={}", urlencode(sql));
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(id) = last_id {
        b = b.header("last-event-id", id.to_string());
    }
    let resp = a.started.router.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
    (resp.status(), Reader { body: resp.into_body(), buf: String::new() })
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn live_api() -> Api {
    api_with(
        "[projects.demo]\nallowed_origins = []\n[projects.other]\nallowed_origins = []\n",
        &[("query", "subscribe_interval_ms = 20")],
    )
}

async fn visit(a: &Api, key: &str, device: &str) {
    let body = json!([now_event("page_view", device, json!({"url": "https://x.test/"}))]).to_string();
    let r = a.post(&format!("/api/v1/track?key={key}"), "application/json", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_the_result_then_its_changes_then_progress() {
    let a = live_api();
    let t = a.token.clone();
    let (status, mut feed) = subscribe(&a, Some(&t), "select count(*) as n from sessions", None).await;
    assert_eq!(status, StatusCode::OK);
    let first = feed.until("snapshot", Duration::from_secs(5)).await;
    assert_eq!(first.data["rows"], json!([{"n": 0}]), "{:?}", first);
    assert_eq!(first.data["columns"], json!(["n"]));
    let mut last = first.id.unwrap();
    visit(&a, "demo", "d1").await;
    let change = feed.until("diff", Duration::from_secs(10)).await;
    let mut changes = change.data["changes"].as_array().unwrap().clone();
    changes.sort_by_key(|c| c["diff"].as_i64());
    assert_eq!(changes, vec![json!({"diff": -1, "row": {"n": 0}}), json!({"diff": 1, "row": {"n": 1}})]);
    assert!(change.id.unwrap() > last, "in as_of order");
    last = change.id.unwrap();
    let p = feed.until("progress", Duration::from_secs(10)).await;
    assert!(p.id.unwrap() >= last && p.data["as_of"].as_u64() == p.id);
    // Errors are answered before the stream starts.
    let (status, _) = subscribe(&a, Some(&t), "select nope from sessions", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = subscribe(&a, Some(&t), "drop table sessions", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = subscribe(&a, None, "select 1", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Ten clients of one query share its evaluations; a client of the same text in
/// another scope gets its own (its catalog differs), and each sees its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_one_query_share_its_evaluation() {
    let a = live_api();
    let live = a.started.state.live.clone();
    let sql = "select count(*) as n from sessions";
    let mut feeds = Vec::new();
    let joined = || live.joined.load(std::sync::atomic::Ordering::Relaxed);
    // Ten dashboards open at once.
    let opened = futures::future::join_all((0..10).map(|_| subscribe(&a, Some(&a.token), sql, None))).await;
    for (status, mut feed) in opened {
        assert_eq!(status, StatusCode::OK);
        feed.until("snapshot", Duration::from_secs(5)).await;
        feeds.push(feed);
    }
    let (other, _) = a.started.meta.token_create("o", Role::Viewer, Some("other"), "tests").unwrap();
    let (_, mut scoped) = subscribe(&a, Some(&other), sql, None).await;
    scoped.until("snapshot", Duration::from_secs(5)).await;
    // One client ran the query; the nine others waited their turn and joined at its
    // result; the client of another scope ran its own.
    assert_eq!(joined(), 9);
    let before = live.evaluations.load(std::sync::atomic::Ordering::Relaxed);
    let began = Instant::now();
    for i in 0..5 {
        visit(&a, "demo", &format!("d{i}")).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for feed in &mut feeds {
        // Every client follows the count to 5, whatever evaluations it saw.
        let mut n = 0;
        while n < 5 {
            let e = feed.until("diff", Duration::from_secs(10)).await;
            for c in e.data["changes"].as_array().unwrap() {
                if c["diff"] == 1 {
                    n = c["row"]["n"].as_i64().unwrap();
                }
            }
        }
    }
    let evaluated = live.evaluations.load(std::sync::atomic::Ordering::Relaxed) - before;
    // Two evaluation loops (the two scopes), each at most once per 20 ms; a loop per
    // client would have made about five times as many.
    let most = 2 * (began.elapsed().as_millis() as u64 / 20 + 2);
    assert!((2..=most).contains(&evaluated), "{evaluated} evaluations for 11 clients of 2 scopes (at most {most})");
    // Progress keeps coming; read for a bounded while.
    let quiet = Instant::now() + Duration::from_millis(300);
    while let Some(e) = scoped.next(quiet.saturating_duration_since(Instant::now())).await {
        assert_ne!(e.event, "diff", "another project's sessions changed nothing for it: {e:?}");
    }
    // When the clients go, so do the loops.
    drop(feeds);
    drop(scoped);
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.shared_queries() > 0 {
        assert!(Instant::now() < deadline, "the shared evaluations did not stop");
        visit(&a, "demo", "later").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_token_follows_its_project_only() {
    let a = live_api();
    let (other, _) = a.started.meta.token_create("o", Role::Viewer, Some("other"), "tests").unwrap();
    let (_, mut feed) =
        subscribe(&a, Some(&other), "select count(*) as n from sessions where project = 'demo'", None).await;
    assert_eq!(feed.until("snapshot", Duration::from_secs(5)).await.data["rows"], json!([{"n": 0}]));
    visit(&a, "demo", "d1").await;
    a.rows("select 1").await;
    // Only progress follows: the demo session is not in this token's catalog.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if let Some(e) = feed.next(Duration::from_millis(300)).await {
            assert_eq!(e.event, "progress", "{e:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_use_a_single_use_ticket_and_resume_with_last_event_id() {
    let a = live_api();
    let r = a.call(Request::post("/api/v1/subscribe/ticket").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ticket = r.json()["ticket"].as_str().unwrap().to_string();
    let sql = "select device_id from sessions";
    let get = |ticket: String| {
        let router = a.started.router.clone();
        async move {
            let uri = format!("/api/v1/subscribe?sql={}&ticket={ticket}", urlencode(sql));
            router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap()
        }
    };
    let resp = get(ticket.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut feed = Reader { body: resp.into_body(), buf: String::new() };
    let first = feed.until("snapshot", Duration::from_secs(5)).await;
    assert_eq!(get(ticket).await.status(), StatusCode::UNAUTHORIZED, "a ticket is used once");
    drop(feed);

    // Reconnecting with the last id gets only what changed since.
    visit(&a, "demo", "d9").await;
    a.rows("select 1").await;
    let t = a.token.clone();
    let (_, mut again) = subscribe(&a, Some(&t), sql, first.id).await;
    let e = again.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e.event, "diff", "{e:?}");
    assert_eq!(e.data["since"], json!(first.id.unwrap()));
    assert_eq!(e.data["changes"], json!([{"diff": 1, "row": {"device_id": "d9"}}]));
    // An id the server no longer holds gets a reset with the whole result.
    let (_, mut stale) = subscribe(&a, Some(&t), sql, Some(12345)).await;
    let e = stale.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e.event, "reset");
    assert_eq!(e.data["rows"], json!([{"device_id": "d9"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_reset_or_closed_and_nothing_piles_up() {
    let a = live_api();
    let t = a.token.clone();
    let (_, mut feed) = subscribe(&a, Some(&t), "select device_id from sessions", None).await;
    feed.until("snapshot", Duration::from_secs(5)).await;
    // Not reading while the result changes many times over (until the server has had
    // to drop: on a slow machine that takes more changes).
    let metric = |m: &str, name: &str| -> u64 {
        m.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.split(' ').nth(1)?.parse().ok()).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let m = loop {
        visit(&a, "demo", &format!("slow-{i}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
        if i % 20 == 0 {
            let m = a.call(Request::get("/metrics").body(Body::empty()).unwrap()).await.text();
            if metric(&m, "sightflow_live_events_dropped_total") > 0 {
                break m;
            }
            assert!(Instant::now() < deadline, "the server dropped rather than queued:\n{m}");
        }
    };
    assert_eq!(metric(&m, "sightflow_live_subscribers"), 1);
    // What the client reads next is bounded by its queue, then a reset or a close.
    let mut events = Vec::new();
    while let Some(e) = feed.next(Duration::from_secs(3)).await {
        let end = e.event == "reset" || e.event == "close";
        events.push(e.event.clone());
        if end {
            break;
        }
    }
    assert!(events.len() <= 33, "at most the queue, then the reset: {} events", events.len());
    assert!(matches!(events.last().map(String::as_str), Some("reset" | "close")), "{events:?}");
}
