//! The HTTP API through the router (`tower::ServiceExt::oneshot`, no socket), backed by
//! a real embedded log, replay store and dataflow in a temporary directory.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sightflow::serve::{Started, build, now_ms};
use sightflow_config::Config;
use sightflow_config::access::Role;
use tower::ServiceExt;

pub(crate) struct Api {
    pub(crate) started: Started,
    /// An owner token: requests without an `authorization` header get it.
    pub(crate) token: String,
    _dir: tempfile::TempDir,
    query_rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Api {
    fn drop(&mut self) {
        // Dropped inside the test's runtime: the query runtime may not block.
        if let Some(rt) = self.query_rt.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn api(extra: &str) -> Api {
    api_with(extra, &[])
}

/// An API over a config; `sections` replaces keys of the default test sections
/// (`("server", "max_body_bytes = 1")`).
pub(crate) fn api_with(extra: &str, sections: &[(&str, &str)]) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let section = |name: &str, default: &str| {
        let mut body = default.to_string();
        for (s, kv) in sections {
            if *s == name {
                body.push_str(kv);
                body.push('\n');
            }
        }
        format!("[{name}]\n{body}")
    };
    let text = format!(
        "{}{}{}{}{}{}{extra}",
        section("engine", "allowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n"),
        section("log", "partitions = 2\n"),
        section("server", "max_body_bytes = 200000\n"),
        section("ingest", "max_decompressed_bytes = 1000000\nmax_events_per_batch = 1000\n"),
        section("query", "timeout_ms = 1500\n"),
        section("replay", ""),
    );
    let config = Config::from_toml_str(&dedupe_keys(&text)).unwrap();
    let query_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let started = build(config, dir.path(), query_rt.handle().clone()).unwrap();
    let (token, _) = started.meta.token_create("tests", Role::Owner, None, "tests").unwrap();
    Api { started, token, _dir: dir, query_rt: Some(query_rt) }
}

/// Keeps the last value of a key repeated within a section (so that tests can override
/// the defaults above).
fn dedupe_keys(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some((k, _)) = line.split_once(" = ")
            && !line.starts_with('[')
        {
            let start = out.iter().rposition(|l| l.starts_with('[')).map_or(0, |i| i + 1);
            if let Some(i) = out[start..].iter().position(|l| l.split_once(" = ").is_some_and(|(k2, _)| k2 == k)) {
                out.remove(start + i);
            }
        }
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Api {
    pub(crate) async fn call(&self, mut req: Request<Body>) -> Reply {
        if !req.headers().contains_key(header::AUTHORIZATION) {
            let v = format!("Bearer {}", self.token).parse().unwrap();
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        self.call_as_is(req).await
    }

    /// The request as given: no credential is added.
    pub(crate) async fn call_as_is(&self, req: Request<Body>) -> Reply {
        let resp = self.started.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
        Reply { status, headers, body }
    }

    pub(crate) async fn post(&self, uri: &str, ct: &str, body: impl Into<Body>) -> Reply {
        self.call(Request::post(uri).header(header::CONTENT_TYPE, ct).body(body.into()).unwrap()).await
    }

    async fn query(&self, sql: &str, min_as_of: Option<i64>) -> Reply {
        self.post("/api/v1/query", "application/json", json!({"sql": sql, "min_as_of": min_as_of}).to_string()).await
    }

    /// Rows of a query once the views have caught up with now.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Value> {
        let r = self.query(sql, Some(now_ms())).await;
        assert_eq!(r.status, StatusCode::OK, "{sql}: {}", r.text());
        r.json()["rows"].as_array().unwrap().clone()
    }
}

pub(crate) fn recording(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/rrweb/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub(crate) fn now_event(kind: &str, device: &str, extra: Value) -> Value {
    let mut e = json!({"type": kind, "device_id": device, "ts": now_ms()});
    e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_answers_per_event_and_keeps_the_valid_ones() {
    let a = api("");
    let body = json!({"events": [
        now_event("page_view", "d1", json!({"url": "http://shop.test/cart", "viewport_width": 1280, "viewport_height": 800})),
        now_event("click", "d1", json!({"x": "ten", "y": 3})),
        now_event("click", "d1", json!({"y": 3})),
        {"type": "click", "device_id": "d1", "ts": 42, "x": 1, "y": 1},
        {"type": "click", "ts": now_ms(), "x": 1, "y": 1},
        now_event("click", "d1", json!({"x": 10, "y": 3, "selector": "button#buy"})),
    ]});
    let r = a.post("/api/v1/track?key=demo", "text/plain", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rep = r.json();
    assert_eq!(rep["accepted"], 2);
    let reasons: Vec<(u64, String)> = rep["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["index"].as_u64().unwrap(), x["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(reasons.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(reasons[0].1.contains("field `x` must be an integer"), "{reasons:?}");
    assert!(reasons[1].1.contains("field `x` is required"), "{reasons:?}");
    assert!(reasons[2].1.contains("`ts` 42 is outside"), "{reasons:?}");
    assert!(reasons[3].1.contains("`device_id` is missing"), "{reasons:?}");
    let rows = a.rows("select device_id, page_views, clicks from sessions").await;
    assert_eq!(rows, vec![json!(["d1", 1, 1])]);
    // Only invalid events: 400 with the reasons.
    let r = a
        .post(
            "/api/v1/track?key=demo",
            "application/json",
            json!([{"type": "nope", "device_id": "d", "ts": now_ms()}]).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["rejected"][0]["reason"].as_str().unwrap().contains("unknown event type"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_origins_and_cors() {
    let a = api(
        "[projects.demo]\nallowed_origins = [\"https://shop.test\"]\n[projects.other]\nallowed_origins = [\"*\"]\n",
    );
    let body = json!([now_event("activity", "d", json!({}))]).to_string();
    let r = a.post("/api/v1/track", "application/json", body.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("missing project key"));
    let r = a.post("/api/v1/track?key=nope", "application/json", body.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown project key \"nope\""));
    let req = |origin: &str| {
        Request::post("/api/v1/track")
            .header("x-sightflow-key", "demo")
            .header("origin", origin)
            .body(Body::from(body.clone()))
            .unwrap()
    };
    let r = a.call(req("https://evil.test")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"].as_str().unwrap().contains("origin https://evil.test is not allowed"));
    let r = a.call(req("https://shop.test")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.test");
    let pre = |origin: &str| {
        Request::options("/api/v1/track?key=demo")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap()
    };
    let r = a.call(pre("https://shop.test")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    assert_eq!(a.call(pre("https://evil.test")).await.status, StatusCode::FORBIDDEN);
    // A body for another project than the key is refused.
    let r = a
        .post("/api/v1/track?key=other", "application/json", json!({"project": "demo", "events": []}).to_string())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_too_big_or_broken() {
    let a = api("");
    let big = format!(
        "[{}]",
        vec![json!(now_event("activity", "d", json!({"name": "x".repeat(100)}))).to_string(); 1500].join(",")
    );
    let r = a.post("/api/v1/track?key=demo", "application/json", big.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("exceeds the limit of 200000 bytes"));
    // Compressed it fits the body limit but has too many events.
    let r = a.post("/api/v1/track?key=demo", "text/plain", gzip(big.as_bytes())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("1500 events, at most 1000"));
    // A gzip bomb: 60 MB of spaces in a few KB.
    let bomb = gzip(&vec![b' '; 60_000_000]);
    assert!(bomb.len() < 200_000);
    let r = a.post("/api/v1/track?key=demo", "text/plain", bomb).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("decompresses to more than 1000000 bytes"));
    let r = a.post("/api/v1/track?key=demo", "application/json", "{\"events\": [").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("not a valid JSON batch"));
    let r = a.post("/api/v1/track?key=demo", "application/json", vec![b'[', 0xc3, 0x28, b']']).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("not valid UTF-8 (at byte 1)"));
    let r = a.post("/api/v1/track?key=demo", "application/x-protobuf", vec![0xff, 0xff, 0xff]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("protobuf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let a = api("[projects.demo]\nallowed_origins = []\nrate_limit_per_s = 2\n");
    let body = json!([now_event("activity", "d", json!({}))]).to_string();
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..4 {
        let r = a.post("/api/v1/track?key=demo", "application/json", body.clone()).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            retry = r.headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    assert_eq!(retry.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after_and_what_is_accepted_counts() {
    // One request at a time, and none may wait: the rest of a burst is shed at once.
    let a = api_with("", &[("ingest", "max_in_flight = 1\nmax_queue_ms = 1")]);
    let bodies: Vec<String> = (0..24)
        .map(|r| {
            let events: Vec<Value> =
                (0..500).map(|i| now_event("click", &format!("d{r}"), json!({"x": i, "y": 1}))).collect();
            Value::Array(events).to_string()
        })
        .collect();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let router = a.started.router.clone();
            tokio::spawn(async move {
                let req = Request::post("/api/v1/track?key=demo")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(b))
                    .unwrap();
                let resp = router.oneshot(req).await.unwrap();
                let (status, headers) = (resp.status(), resp.headers().clone());
                let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
                Reply { status, headers, body }
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let (mut accepted, mut ok, mut shed) = (0, 0, 0);
    for r in &replies {
        match r.status {
            StatusCode::OK => {
                ok += 1;
                accepted += r.json()["accepted"].as_u64().unwrap();
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                assert_eq!(r.headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), Some("1"));
                // It names the setting that refused it: a full line, or a wait too long.
                let t = r.text();
                assert!(t.contains("ingest.max_queue_ms") || t.contains("ingest.max_in_flight"), "{t}");
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(ok >= 1 && shed >= 1, "{ok} accepted, {shed} shed of a burst of 24");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // What was accepted is in the views, and nothing of what was shed.
    let rows = a.rows("select coalesce(sum(clicks), 0) from sessions").await;
    assert_eq!(rows, vec![json!([accepted])], "{ok} accepted requests");
    let m = a.call(get("/metrics")).await.text();
    let shed_metric = m.lines().find(|l| l.starts_with("sightflow_ingest_shed_total ")).expect("the shed counter");
    assert_eq!(shed_metric, format!("sightflow_ingest_shed_total {shed}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_read_only_bounded_and_formatted() {
    let a = api("");
    let r = a.query("select 1 as one, 'x' as s", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["columns"], json!(["one", "s"]));
    assert_eq!(r.json()["rows"], json!([[1, "x"]]));
    assert!(r.json()["as_of"].is_u64());
    let r = a.query("selec 1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("selec"), "{}", r.text());
    let r = a.query("select nope from sessions", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"), "{}", r.text());
    for sql in [
        "create table t as select 1",
        "insert into sessions select * from sessions",
        "copy (select 1) to '/tmp/sightflow-copy.csv'",
        "create external table t stored as csv location '/etc/passwd'",
        "select * from '/etc/passwd'",
        "drop table sessions",
    ] {
        let r = a.query(sql, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{sql}: {}", r.text());
    }
    assert!(!std::path::Path::new("/tmp/sightflow-copy.csv").exists());
    // Waiting for an as_of the views will not reach in time.
    let r = a.query("select 1", Some(now_ms() + 3_600_000)).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.json()["error"].as_str().unwrap().contains("have not reached"));
    // CSV and Arrow IPC.
    let req = |accept: &str| {
        Request::post("/api/v1/query")
            .header("accept", accept)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"sql": "select 7 as n"}).to_string()))
            .unwrap()
    };
    let r = a.call(req("text/csv")).await;
    assert_eq!(r.text(), "n\n7\n");
    let r = a.call(req("application/vnd.apache.arrow.stream")).await;
    let mut reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body), None).unwrap();
    let batch = reader.next().unwrap().unwrap();
    assert_eq!(batch.num_rows(), 1);
    let r = a.post("/api/v1/query", "application/json", "{\"query\": 1}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_timeout_fails_and_the_server_stays_responsive() {
    let a = api("");
    let slow = a.query("select sum(value) from generate_series(1, 100000000000)", None);
    let fast = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let r = a.query("select 2", None).await;
        (r.status, started.elapsed())
    };
    let (slow, (fast_status, fast_time)) = tokio::join!(slow, fast);
    assert_eq!(slow.status, StatusCode::REQUEST_TIMEOUT, "{}", slow.text());
    assert!(slow.json()["error"].as_str().unwrap().contains("time limit"));
    assert_eq!(fast_status, StatusCode::OK);
    assert!(fast_time < Duration::from_millis(1000), "a simple query waited {fast_time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrweb_import_feeds_views_and_replay_returns_the_recording() {
    let a = api("");
    let text = recording("04-error.json");
    let r = a.post("/api/v1/projects/demo/devices/dev-4/rrweb", "application/json", text.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["accepted"], 31);
    assert_eq!(r.json()["late"], 31, "an old recording is late data");
    let rows =
        a.rows("select session_id, error_clicks, dead_clicks, clicks from sessions where device_id = 'dev-4'").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0].as_array().unwrap()[1..], &[json!(2), json!(0), json!(3)]);
    let id = rows[0][0].as_str().unwrap();
    let r = a.call(Request::get(format!("/api/v1/sessions/{id}/replay")).body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let got: Value = r.json();
    let want: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["events"], want, "the replay is the recording, in order");
    assert_eq!(got["skipped"], json!([]));
    assert_eq!(got["next_cursor"], Value::Null);
    let stored: u64 = r.headers["x-replay-stored-bytes"].to_str().unwrap().parse().unwrap();
    let raw: u64 = r.headers["x-replay-raw-bytes"].to_str().unwrap().parse().unwrap();
    assert!(stored > 0 && stored * 2 < raw, "compression: {stored} of {raw} bytes");
    eprintln!("replay of 04-error.json: {raw} raw bytes stored in {stored} ({:.1}x)", raw as f64 / stored as f64);
    let r = a.call(Request::get("/api/v1/sessions/0000000000000000/replay").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Health is ready, metrics count what came in.
    let r = a.call(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
    let m = a.call(Request::get("/metrics").body(Body::empty()).unwrap()).await.text();
    assert!(m.contains("sightflow_events_accepted_total 31") && m.contains("sightflow_events_late_total 31"), "{m}");
}

/// A project's `retention_days` applies to its recordings: a replay older than that is
/// gone from every read (the replay API and heatmaps of chosen sessions), while a
/// project with the server's retention, and the project's own recent replays, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_retention_hides_its_older_recordings() {
    let a = api("[projects.demo]\n[projects.short]\nretention_days = 2\n");
    const DAY: i64 = 86_400_000;
    // Each project says what is kept for it: its own recordings' retention or the
    // server's, the server's for sessions in the views and for the log.
    let r = a.call(get("/api/v1/projects")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let kept =
        |name: &str| v["projects"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["kept"].clone();
    let server = json!({"recordings_ms": 30 * DAY, "sessions_ms": 30 * DAY, "log_ms": 7 * DAY});
    assert_eq!(kept("demo"), server, "the defaults of config/default.toml");
    assert_eq!(kept("short"), json!({"recordings_ms": 2 * DAY, "sessions_ms": 30 * DAY, "log_ms": 7 * DAY}));
    let text = recording("02-rage.json");
    let events: Vec<Value> = serde_json::from_str(&text).unwrap();
    let first = events[0]["timestamp"].as_i64().unwrap();
    // The recording moved to start `ago` ms before now.
    let dated = |ago: i64| {
        let shift = now_ms() - ago - first;
        let moved: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["timestamp"] = json!(e["timestamp"].as_i64().unwrap() + shift);
                e
            })
            .collect();
        serde_json::to_string(&moved).unwrap()
    };
    for (project, device, ago) in [("short", "old", 3 * DAY), ("short", "new", 60_000), ("demo", "old-demo", 3 * DAY)] {
        let uri = format!("/api/v1/projects/{project}/devices/{device}/rrweb");
        let r = a.post(&uri, "application/json", dated(ago)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["accepted"], events.len(), "{}", r.text());
    }
    for (device, kept) in [("old", false), ("new", true), ("old-demo", true)] {
        let (got, _, skipped) = replay_all(&a, device, None).await;
        assert_eq!(skipped, Vec::<Value>::new());
        let want = if kept { events.len() } else { 0 };
        assert_eq!(got.len(), want, "the replay of {device}");
    }
    // The session itself is still in the views; only its recording is past retention.
    let ids = a.rows("select device_id, session_id from sessions order by device_id").await;
    assert_eq!(ids.len(), 3);
    let id = |device: &str| ids.iter().find(|r| r[0] == device).unwrap()[1].as_str().unwrap().to_string();
    let page = "/api/v1/heatmap?url=http://lumen-notes.test:8731/&kind=click";
    for (device, kept) in [("old", false), ("new", true), ("old-demo", true)] {
        let r = a.call(get(&format!("{page}&session={}", id(device)))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let total = r.json()["total"].as_i64().unwrap();
        assert_eq!(total > 0, kept, "the heatmap of {device}'s replay: {}", r.text());
    }
    // Set through the API, a shorter retention applies at once, not a second later.
    let patch = Request::patch("/api/v1/projects/demo")
        .header("content-type", "application/json")
        .body(Body::from(json!({"retention_days": 1}).to_string()))
        .unwrap();
    let r = a.call(patch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["kept"]["recordings_ms"], DAY, "{}", r.text());
    let (got, _, _) = replay_all(&a, "old-demo", None).await;
    assert_eq!(got.len(), 0, "demo's recording of 3 days ago is past its new retention");
}

fn rrweb_event(ts: i64, body: Value) -> Value {
    let mut e = body;
    e["timestamp"] = json!(ts);
    e
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// A session's replay events, following `next_cursor` over every page.
async fn replay_all(a: &Api, device: &str, max_bytes: Option<u64>) -> (Vec<Value>, usize, Vec<Value>) {
    let rows = a.rows(&format!("select session_id from sessions where device_id = '{device}'")).await;
    let id = rows[0][0].as_str().unwrap().to_string();
    let (mut events, mut pages, mut skipped) = (Vec::new(), 0, Vec::new());
    let mut cursor = Some(0u64);
    while let Some(c) = cursor {
        let q = max_bytes.map(|m| format!("&max_bytes={m}")).unwrap_or_default();
        let r = a.call(get(&format!("/api/v1/sessions/{id}/replay?cursor={c}{q}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        skipped.extend(v["skipped"].as_array().unwrap().iter().cloned());
        cursor = v["next_cursor"].as_u64();
        pages += 1;
        assert!(pages < 1000);
    }
    (events, pages, skipped)
}

/// Events from any recorder replay whole: rrweb 2.x Asset events, a Meta without href
/// and a click without coordinates are kept (and counted as what the views could not
/// use), not rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrweb_from_any_recorder_is_kept_whole() {
    let a = api("");
    let t = now_ms();
    let events = json!([
        rrweb_event(t, json!({"type": 4, "data": {"href": "", "width": 800, "height": 600}})),
        rrweb_event(t + 1, json!({"type": 7, "data": {"url": "blob:http://x/1", "payload": {"rr_type": "Blob"}}})),
        rrweb_event(t + 2, json!({"type": 3, "data": {"source": 2, "type": 2, "id": 5}})),
        rrweb_event(t + 3, json!({"type": 99, "data": {}})),
    ]);
    let r = a.post("/api/v1/projects/demo/devices/any/rrweb", "application/json", events.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rep = r.json();
    assert_eq!(rep["accepted"], 4, "{rep}");
    assert_eq!(rep["unanalysed"], json!({"meta_without_href": 1, "click_without_position": 1, "unknown_type": 1}));
    let rows = a.rows("select page_views, clicks from sessions where device_id = 'any'").await;
    assert_eq!(rows, vec![json!([1, 1])], "a page view with an unknown URL, a click without a position");
    let cells = a.rows("select count(*) from heatmap_cells where kind = 'click'").await;
    assert_eq!(cells, vec![json!([0])], "no position, no heat");
    let (replayed, _, _) = replay_all(&a, "any", None).await;
    assert_eq!(Value::Array(replayed), events);
    let m = a.call(get("/metrics")).await.text();
    assert!(m.contains("sightflow_rrweb_unanalysed_total{reason=\"unknown_type\"} 1"), "{m}");
}

/// Sequence numbers that repeat (two imports without `seq_start`, two `/track` requests)
/// lose nothing in the replay; a retried batch is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_events_whose_sequence_numbers_repeat() {
    let a = api("");
    let t = now_ms() - 60_000;
    let meta = rrweb_event(t, json!({"type": 4, "data": {"href": "http://x.test/", "width": 800, "height": 600}}));
    let scroll = |dt: i64| rrweb_event(t + dt, json!({"type": 3, "data": {"source": 3, "id": 1, "x": 0, "y": dt}}));
    for chunk in [json!([meta, scroll(100)]), json!([scroll(200), scroll(300)])] {
        let r = a.post("/api/v1/projects/demo/devices/seq/rrweb", "application/json", chunk.to_string()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    for dt in [400, 500] {
        let body = json!({"device_id": "seq", "events": [{"type": "rrweb", "tab_id": "seq", "event": scroll(dt)}]});
        let r = a
            .call(
                Request::post("/api/v1/track?key=demo")
                    .header("x-batch-id", format!("b{dt}"))
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // The client's retry of the same batch is stored once.
        let again = a
            .call(
                Request::post("/api/v1/track?key=demo")
                    .header("x-batch-id", format!("b{dt}"))
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(again.json()["duplicate"], true, "{}", again.text());
    }
    let (events, _, _) = replay_all(&a, "seq", None).await;
    let ys: Vec<i64> = events.iter().filter_map(|e| e["data"]["y"].as_i64()).collect();
    assert_eq!(ys, vec![100, 200, 300, 400, 500]);
}

/// A long session comes in pages of at most `max_bytes`; an unreadable chunk is named
/// and the rest is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_paged_and_survives_an_unreadable_chunk() {
    let a = api("");
    let t = now_ms() - 120_000;
    let mut chunks = Vec::new();
    chunks.push(json!([rrweb_event(
        t,
        json!({"type": 4, "data": {"href": "http://x.test/", "width": 800, "height": 600}})
    )]));
    for k in 1..=20 {
        chunks.push(json!([rrweb_event(
            t + k * 100,
            json!({"type": 3, "data": {"source": 3, "id": 1, "x": 0, "y": k, "pad": "p".repeat(2000)}})
        )]));
    }
    for (i, c) in chunks.iter().enumerate() {
        let r = a
            .post(&format!("/api/v1/projects/demo/devices/long/rrweb?seq_start={i}"), "application/json", c.to_string())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let (events, pages, skipped) = replay_all(&a, "long", Some(5_000)).await;
    assert_eq!(events.len(), 21);
    assert!(pages >= 5, "{pages} pages of at most 5000 bytes");
    assert!(skipped.is_empty());
    // Corrupt one chunk on disk: the fourth frame (`[u32 length][u32 crc32][chunk]`) of
    // the segment the chunks were appended to.
    let seg = std::fs::read_dir(a._dir.path().join("replay"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg") && std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let mut at = 0usize;
    for _ in 0..3 {
        at += 8 + u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    }
    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    data[at + 8 + len - 4..at + 8 + len].copy_from_slice(b"junk");
    std::fs::write(&seg, &data).unwrap();
    let (events, _, skipped) = replay_all(&a, "long", None).await;
    assert_eq!(events.len(), 20, "everything but the broken chunk");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0]["reason"].as_str().unwrap().contains("unreadable"), "{skipped:?}");
}

/// Raw rrweb is bounded per event and per tab: too large an event is rejected by name,
/// and past the tab's quota events still count but are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_rrweb_is_bounded_per_event_and_per_tab() {
    let a = api_with("", &[("ingest", "max_rrweb_event_bytes = 20000\nmax_replay_bytes_per_tab = 30000")]);
    let t = now_ms();
    let big = rrweb_event(t, json!({"type": 3, "data": {"source": 5, "id": 3, "text": "x".repeat(25_000)}}));
    let r = a.post("/api/v1/projects/demo/devices/big/rrweb", "application/json", json!([big]).to_string()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["rejected"][0]["reason"].as_str().unwrap().contains("at most 20000"), "{}", r.text());
    let ok = |i: i64| rrweb_event(t + i, json!({"type": 3, "data": {"source": 5, "id": 3, "text": "x".repeat(9_000)}}));
    let r = a
        .post(
            "/api/v1/projects/demo/devices/big/rrweb",
            "application/json",
            json!([ok(1), ok(2), ok(3), ok(4)]).to_string(),
        )
        .await;
    let rep = r.json();
    assert_eq!(rep["accepted"], 4, "{rep}");
    assert_eq!(rep["not_stored"].as_array().map(Vec::len), Some(1), "{rep}");
    assert!(rep["not_stored"][0]["reason"].as_str().unwrap().contains("max_replay_bytes_per_tab"), "{rep}");
}

/// A client's batch id is its own project's and device's: another project (or device)
/// reusing it loses nothing. Ids are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ids_are_scoped_and_bounded() {
    let a = api("[projects.a]\nallowed_origins = []\n[projects.b]\nallowed_origins = []\n");
    let send = |key: &'static str, device: &'static str, id: String| {
        let body = json!({"device_id": device, "events": [now_event("activity", device, json!({}))]}).to_string();
        Request::post(format!("/api/v1/track?key={key}")).header("x-batch-id", id).body(Body::from(body)).unwrap()
    };
    assert_eq!(a.call(send("a", "d", "1".into())).await.json()["accepted"], 1);
    let r = a.call(send("b", "d", "1".into())).await;
    assert_eq!((r.json()["accepted"].clone(), r.json()["duplicate"].clone()), (json!(1), json!(false)), "{}", r.text());
    let r = a.call(send("a", "e", "1".into())).await;
    assert_eq!(r.json()["accepted"], 1, "another device: {}", r.text());
    assert_eq!(a.call(send("a", "d", "1".into())).await.json()["duplicate"], true);
    let r = a.call(send("a", "d", "x".repeat(200_000))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("at most 128"), "{}", r.text());
}

/// The per-project limit is charged per event; a 429 or 413 carries CORS headers so a
/// browser can read Retry-After; a preflight with the key in a header is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_events_and_answer_browsers() {
    let a = api("[projects.demo]\nallowed_origins = [\"https://shop.test\"]\nrate_limit_per_s = 10\n");
    let post = |n: usize| {
        let events: Vec<Value> = (0..n).map(|_| now_event("activity", "d", json!({}))).collect();
        Request::post("/api/v1/track")
            .header("x-sightflow-key", "demo")
            .header("origin", "https://shop.test")
            .body(Body::from(Value::Array(events).to_string()))
            .unwrap()
    };
    let r = a.call(post(400)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("400 events"), "{}", r.text());
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.test");
    assert_eq!(a.call(post(8)).await.status, StatusCode::OK);
    let r = a.call(post(8)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.test");
    assert!(r.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().contains("retry-after"));
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let pre = Request::options("/api/v1/track")
        .header("origin", "https://shop.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-sightflow-key")
        .body(Body::empty())
        .unwrap();
    let r = a.call(pre).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("x-sightflow-key"));
    let pre = Request::options("/api/v1/track").header("origin", "https://evil.test").body(Body::empty()).unwrap();
    assert_eq!(a.call(pre).await.status, StatusCode::FORBIDDEN);
}

/// A made-up X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_strangers_does_not_bypass_the_ip_limit() {
    let a = api_with("", &[("server", "per_ip_requests_per_s = 1")]);
    let body = json!([now_event("activity", "d", json!({}))]).to_string();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let r = a
            .call(
                Request::post("/api/v1/track?key=demo")
                    .header("x-forwarded-for", format!("203.0.113.{i}"))
                    .body(Body::from(body.clone()))
                    .unwrap(),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 429, 429]);
}

/// axum's own rejections and unknown routes answer the JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json() {
    let a = api("");
    for (req, status) in [
        (Request::post("/api/v1/projects/demo/devices/d/rrweb?seq_start=many").body(Body::from("[]")).unwrap(), 400),
        (get("/api/v1/nope"), 404),
        (get("/api/v1/track"), 405),
        (Request::post("/api/v1/query").header("content-type", "application/json").body(Body::from("{")).unwrap(), 400),
        (get("/api/v1/sessions/x/replay?cursor=-1"), 400),
    ] {
        let uri = req.uri().to_string();
        let r = a.call(req).await;
        assert_eq!(r.status.as_u16(), status, "{uri}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{uri}: {}", r.text());
    }
}

/// CSV cells that a spreadsheet would run as formulas are neutralised; numbers are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_answers_are_safe_for_spreadsheets() {
    let a = api("");
    let r = a
        .call(
            Request::post("/api/v1/query")
                .header("accept", "text/csv")
                .body(Body::from(
                    json!({"sql": "select '=HYPERLINK(1)' as a, '+1' as b, '@x' as c, -5 as n, 'ok' as d"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(r.text(), "a,b,c,n,d\n'=HYPERLINK(1),'+1,'@x,-5,ok\n");
}

/// One event dated a day ahead neither holds the frontier up nor hides later events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_event_does_not_hide_live_traffic() {
    let a = api_with("", &[("engine", "allowed_lateness_ms = 1000\nmax_clock_skew_ms = 500")]);
    let body =
        json!([{"type": "page_view", "device_id": "f", "ts": now_ms() + 23 * 3_600_000, "url": "http://x.test/"}]);
    let r = a.post("/api/v1/track?key=demo", "application/json", body.to_string()).await;
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    let first = r.json()["min_as_of"].as_u64().unwrap();
    assert!(first < now_ms() as u64 + 5_000, "stamped near the server clock, not a day ahead");
    let body = json!([now_event("page_view", "g", json!({"url": "http://x.test/"}))]);
    let r = a.post("/api/v1/track?key=demo", "application/json", body.to_string()).await;
    assert_eq!((r.json()["accepted"].clone(), r.json()["late"].clone()), (json!(1), json!(0)), "{}", r.text());
    let token = r.json()["min_as_of"].as_u64().unwrap().max(first);
    let started = std::time::Instant::now();
    let r = a.query("select device_id from sessions order by device_id", Some(token as i64)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["rows"], json!([["f"], ["g"]]));
    assert!(started.elapsed() < Duration::from_secs(5));
    let m = a.call(get("/metrics")).await.text();
    assert!(m.contains("sightflow_events_future_total 1"), "{m}");
}

/// An old recording is late data: the ingest answer's `min_as_of` is when it is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_answer_says_when_late_events_are_visible() {
    let a = api("");
    // Let the frontier move past the recording's time first.
    a.rows("select 1").await;
    let r = a.post("/api/v1/projects/demo/devices/old/rrweb", "application/json", recording("02-rage.json")).await;
    let token = r.json()["min_as_of"].as_u64().expect("a token");
    assert_eq!(r.headers["x-sightflow-as-of"].to_str().unwrap(), token.to_string());
    let r = a.query("select clicks from sessions where device_id = 'old'", Some(token as i64)).await;
    assert_eq!(r.json()["rows"], json!([[8]]), "visible at the token");
}

/// Bounds on SQL: deep expressions are answered or refused (never a crash), expansive
/// functions are refused at once, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_is_refused_and_the_server_keeps_answering() {
    // Debug builds plan a 1000-term chain in about a second; leave room so that it is
    // not counted as a runaway when other tests share the CPU.
    let a = api_with("", &[("query", "timeout_ms = 30000")]);
    for sql in [
        format!("select {}", vec!["1"; 1000].join("+")),
        format!("select {}", vec!["true"; 1000].join(" and ")),
        format!("select {}", vec!["'a'"; 1000].join(" || ")),
        vec!["select 1 as x"; 1000].join(" union all "),
    ] {
        let r = a.query(&sql, None).await;
        assert!(matches!(r.status.as_u16(), 200 | 400 | 408), "{}: {}", &sql[..30], r.text());
    }
    let started = std::time::Instant::now();
    for sql in [
        "select levenshtein(repeat('a', 90000), repeat('b', 90000))",
        "select cardinality(range(1, 300000000))",
        "select length(repeat('x', 2000000000))",
    ] {
        let r = a.query(sql, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{sql}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("at most"), "{}", r.text());
    }
    assert!(started.elapsed() < Duration::from_secs(3), "refused before running: {:?}", started.elapsed());
    let r = a.query(&"x".repeat(70_000), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let r = a.query("select 1", None).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Requests waiting for a far `min_as_of` hold no thread: ingest goes on, and beyond the
/// waiter limit the server answers 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_queries_do_not_starve_ingest() {
    let a = api_with("", &[("query", "max_waiters = 600\nmax_wait_ms = 20000")]);
    let far = now_ms() + 3_600_000;
    let mut waiters = Vec::new();
    for _ in 0..600 {
        let router = a.started.router.clone();
        let req = Request::post("/api/v1/query")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", a.token))
            .body(Body::from(json!({"sql": "select 1", "min_as_of": far}).to_string()))
            .unwrap();
        waiters.push(tokio::spawn(async move { router.oneshot(req).await.map(|r| r.status()) }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let body = json!([now_event("activity", "w", json!({}))]).to_string();
    let r = a.post("/api/v1/track?key=demo", "application/json", body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1), "ingest waited {:?}", started.elapsed());
    let r = a.query("select 1", Some(far)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = a.query("select 1", None).await;
    assert_eq!(r.status, StatusCode::OK, "queries without a wait still run");
    for w in waiters {
        w.abort();
    }
}

/// Bodies are bounded before they are parsed: a small gzip that expands to a huge
/// array is refused by its event count, quickly; every text field is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_before_they_are_parsed() {
    let a = api_with("", &[("ingest", "max_decompressed_bytes = 60000000")]);
    let huge = format!("{{\"events\": [{}0]}}", "0,".repeat(25_000_000));
    let body = gzip(huge.as_bytes());
    drop(huge);
    let started = std::time::Instant::now();
    let r = a.post("/api/v1/track?key=demo", "text/plain", body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("25000001 events, at most 1000"), "{}", r.text());
    eprintln!("a 25M-element array refused in {:?}", started.elapsed());
    let mb = "x".repeat(10_000);
    for (field, kind, extra) in [
        ("country", "page_view", json!({"url": "http://x.test/", "country": mb})),
        ("title", "page_view", json!({"url": "http://x.test/", "title": mb})),
        ("tag", "click", json!({"x": 1, "y": 1, "tag": mb})),
        ("fingerprint", "error", json!({"message": "m", "fingerprint": mb})),
        ("name", "custom", json!({"name": mb})),
    ] {
        let body = json!([now_event(kind, "d", extra)]).to_string();
        let r = a.post("/api/v1/track?key=demo", "application/json", gzip(body.as_bytes())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.text());
        let reason = r.json()["rejected"][0]["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("at most"), "{field}: {reason}");
    }
}

/// Answers are bounded in bytes, not only in rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_bounded_in_bytes() {
    let a = api_with("", &[("query", "max_result_bytes = 100000")]);
    for accept in ["application/json", "text/csv"] {
        let r = a
            .call(
                Request::post("/api/v1/query")
                    .header("accept", accept)
                    .body(Body::from(json!({"sql": "select repeat('x', 1000) as s from range(1000)"}).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{accept}: {}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("limit of 100000 bytes"), "{}", r.text());
    }
    let r = a.query("select repeat('x', 10) as s from range(100)", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["rows"].as_array().unwrap().len(), 100);
}

/// `/metrics` is valid exposition text (parsed by a Prometheus parser), names the series
/// operators watch, and they move with traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let a = api("");
    let scrape = |text: String| {
        let lines = text.lines().map(|l| Ok(l.to_string())).collect::<Vec<_>>();
        prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition text")
    };
    let value = |s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        s.samples
            .iter()
            .filter(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match &x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .reduce(|a, b| a + b)
    };
    let r = a.call(get("/metrics")).await;
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
    let before = scrape(r.text());
    for name in [
        "sightflow_events_accepted_total",
        "sightflow_events_late_total",
        "sightflow_events_dropped_total",
        "sightflow_freshness_seconds",
        "sightflow_snapshot_build_seconds",
        "sightflow_views_as_of_ms",
        "sightflow_live_subscribers",
        "sightflow_logins_total",
        "sightflow_login_failures_total",
        "sightflow_queries_total",
        "sightflow_sessions_left_views_total",
    ] {
        assert!(value(&before, name, None).is_some(), "{name} is exposed");
    }
    assert!(value(&before, "sightflow_partition_lag", Some(("partition", "0"))).is_some());
    assert!(value(&before, "sightflow_partition_frontier_ms", Some(("partition", "1"))).is_some());
    assert!(value(&before, "sightflow_view_rows", Some(("view", "element_clicks"))).is_some());

    let body = json!([now_event("page_view", "m1", json!({"url": "https://x.test/"})), {"type": "click"}]).to_string();
    assert_eq!(a.post("/api/v1/track?key=demo", "application/json", body).await.status, StatusCode::OK);
    a.rows("select count(*) from sessions").await;
    let after = scrape(a.call(get("/metrics")).await.text());
    assert_eq!(value(&after, "sightflow_events_accepted_total", None), Some(1.0));
    assert_eq!(
        value(&after, "sightflow_events_rejected_by_reason_total", Some(("reason", "missing_field"))),
        Some(1.0)
    );
    assert_eq!(value(&after, "sightflow_view_rows", Some(("view", "sessions"))), Some(1.0));
    let tracked = value(&after, "sightflow_http_request_seconds_count", Some(("route", "/api/v1/track")));
    assert_eq!(tracked, Some(1.0), "request latency is kept per route");
    assert!(value(&after, "sightflow_query_seconds_count", Some(("outcome", "ok"))).unwrap_or(0.0) >= 1.0);
    assert!(value(&after, "sightflow_state_bytes", None).is_some_and(|b| b > 0.0), "state bytes per view");
    let fresh = value(&after, "sightflow_freshness_seconds", None).unwrap();
    assert!((0.0..60.0).contains(&fresh), "freshness {fresh}");
}

/// The OpenAPI document lists every route of the API with its methods, and is public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let a = api("");
    let r = a.call_as_is(get("/api/v1/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let routes = [
        ("/api/v1/track", "post"),
        ("/api/v1/projects/{key}/devices/{device}/rrweb", "post"),
        ("/api/v1/query", "post"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{id}", "get"),
        ("/api/v1/sessions/{id}/replay", "get"),
        ("/api/v1/heatmap", "get"),
        ("/api/v1/projects", "get"),
        ("/api/v1/projects", "post"),
        ("/api/v1/projects/{name}", "patch"),
        ("/api/v1/projects/{name}", "delete"),
        ("/api/v1/projects/{name}/members", "get"),
        ("/api/v1/projects/{name}/members/{email}", "put"),
        ("/api/v1/projects/{name}/members/{email}", "delete"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/subscribe", "get"),
        ("/api/v1/subscribe/ticket", "post"),
        ("/api/v1/login", "post"),
        ("/api/v1/logout", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
        // And the route exists: anything but the router's 404 for unknown paths.
        let uri = path
            .replace("{key}", "demo")
            .replace("{device}", "d")
            .replace("{id}", "x")
            .replace("{name}", "demo")
            .replace("{email}", "a@b");
        let r = a
            .call(
                Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(uri.as_str())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(!r.text().contains("no such endpoint"), "{method} {path} is routed: {}", r.text());
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["paths"]["/api/v1/query"]["post"]["security"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_is_served_without_a_credential_with_caching_headers() {
    let a = api("");
    let built = std::fs::read(format!("{}/sdk/dist/sdk.js", env!("CARGO_MANIFEST_DIR"))).ok();
    let r = a.call_as_is(Request::get("/sdk.js").body(Body::empty()).unwrap()).await;
    let Some(built) = built else {
        // Built without `make sdk`: the answer says how to get it.
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.text().contains("make sdk"), "{}", r.text());
        return;
    };
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.body, built, "the bytes `make sdk` built");
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/javascript"));
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=300");
    let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
    let again =
        a.call_as_is(Request::get("/sdk.js").header(header::IF_NONE_MATCH, &etag).body(Body::empty()).unwrap()).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let stale =
        a.call_as_is(Request::get("/sdk.js").header(header::IF_NONE_MATCH, "\"0\"").body(Body::empty()).unwrap()).await;
    assert_eq!(stale.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_at_its_page_paths_and_never_in_place_of_the_api() {
    let a = api("");
    let built = std::fs::read(format!("{}/ui/dist/index.html", env!("CARGO_MANIFEST_DIR"))).ok();
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    // The API's unknown paths stay JSON 404s, and so does any other method.
    let r = a.call_as_is(get("/api/v1/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("no such endpoint"), "{}", r.text());
    let r = a.call_as_is(Request::post("/sessions").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.call_as_is(get("/assets/missing-0000.js")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let Some(built) = built else {
        let r = a.call_as_is(get("/")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.text().contains("make ui"), "{}", r.text());
        return;
    };
    // Every page path (a shared link) answers the console's page, which holds no data.
    for path in ["/", "/sessions?project=demo&has=rage", "/sessions/abc", "/heatmaps", "/settings"] {
        let r = a.call_as_is(get(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body, built, "{path}");
        assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }
    // Its hashed files are cached for a year.
    let html = String::from_utf8(built).unwrap();
    let js = html.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("the entry script");
    let r = a.call_as_is(get(js)).await;
    assert_eq!(r.status, StatusCode::OK, "{js}");
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/javascript"));
    assert_eq!(r.headers[header::CACHE_CONTROL], "public, max-age=31536000");
}
