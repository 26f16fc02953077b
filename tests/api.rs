//! The HTTP API through the router (`tower::ServiceExt::oneshot`, no socket), backed by
//! a real embedded log, replay store and dataflow in a temporary directory.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sightflow::serve::{Started, build, now_ms};
use sightflow_config::Config;
use tower::ServiceExt;

struct Api {
    started: Started,
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

fn api(extra: &str) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n[log]\npartitions = 2\n[server]\nmax_body_bytes = 200000\n[ingest]\nmax_decompressed_bytes = 1000000\nmax_events_per_batch = 1000\n[query]\ntimeout_ms = 1500\n{extra}"
    );
    let config = Config::from_toml_str(&text).unwrap();
    let query_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let started = build(config, dir.path(), query_rt.handle().clone()).unwrap();
    Api { started, _dir: dir, query_rt: Some(query_rt) }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Api {
    async fn call(&self, req: Request<Body>) -> Reply {
        let resp = self.started.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
        Reply { status, headers, body }
    }

    async fn post(&self, uri: &str, ct: &str, body: impl Into<Body>) -> Reply {
        self.call(Request::post(uri).header(header::CONTENT_TYPE, ct).body(body.into()).unwrap()).await
    }

    async fn query(&self, sql: &str, min_as_of: Option<i64>) -> Reply {
        self.post("/api/v1/query", "application/json", json!({"sql": sql, "min_as_of": min_as_of}).to_string()).await
    }

    /// Rows of a query once the views have caught up with now.
    async fn rows(&self, sql: &str) -> Vec<Value> {
        let r = self.query(sql, Some(now_ms())).await;
        assert_eq!(r.status, StatusCode::OK, "{sql}: {}", r.text());
        r.json()["rows"].as_array().unwrap().clone()
    }
}

fn recording(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/rrweb/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn now_event(kind: &str, device: &str, extra: Value) -> Value {
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
    assert_eq!(got, want, "the replay is the recording, in order");
    let stored: u64 = r.headers["x-replay-stored-bytes"].to_str().unwrap().parse().unwrap();
    let raw: u64 = r.headers["x-replay-raw-bytes"].to_str().unwrap().parse().unwrap();
    assert!(stored > 0 && stored * 3 < raw, "compression: {stored} of {raw} bytes");
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
