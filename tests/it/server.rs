//! The real `sightflow serve` binary on a free loopback port: recordings imported over
//! HTTP with `sightflow import` give exactly the views batch mode gives for the same
//! files, also when the server is killed (`kill -9`) in the middle of an import and
//! started again.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::{ServerProcess, free_port, now_ms, recordings};

/// The engine's defaults (tick, lateness, idle timeout): old recordings imported into a
/// server that runs them are late data, and must still give the batch views.
const CONFIG: &str = "[log]\npartitions = 3\n";

fn import(url: &str, file: &str, device: &str, chunk: usize) -> Child {
    crate::common::import(url, file, device, chunk, 60)
}

fn assert_same_views(server: &ServerProcess, files: &[(String, String)], min_as_of: u64) {
    crate::common::assert_same_views(&server.url, files, min_as_of, "the server");
}

#[test]
fn imported_recordings_give_the_batch_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), free_port(), CONFIG);
    server.wait_ready();
    let files = recordings();
    let mut visible = 0;
    for (file, device) in &files {
        let out = import(&server.url, file, device, 40).wait_with_output().unwrap();
        assert!(out.status.success(), "import of {file}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("imported"), "{stdout}");
        visible = visible.max(crate::common::import_token(&stdout).expect("the import says when it is visible"));
    }
    // Old recordings are late data: their events are visible from the imports' token,
    // not from their own (last week's) times.
    assert_same_views(&server, &files, visible);
    let sessions = server.rows("sessions", 0);
    assert_eq!(sessions.len(), 9, "eight recordings, one of them two sessions");
    server.kill();

    // `sightflow backfill` re-reads the embedded log into fresh views and writes them out.
    let out = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["backfill", "--config"])
        .arg(dir.path().join("sightflow.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--from", "earliest", "--progress", "lines", "--out"])
        .arg(dir.path().join("views"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{stderr}{stdout}");
    assert!(out.status.success());
    assert!(stdout.contains("from the embedded log") && stdout.contains("wrote sessions: 9 rows"), "{stdout}");
    assert!(stderr.contains("backfill: reading") && stderr.contains("(100%)"), "{stderr}");
    assert!(dir.path().join("views/heatmap_cells.parquet").exists());
}

#[test]
fn a_server_killed_mid_import_resumes_without_losing_or_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = ServerProcess::start(dir.path(), port, CONFIG);
    server.wait_ready();
    let files: Vec<(String, String)> = recordings()
        .into_iter()
        .filter(|(f, _)| f.starts_with("05") || f.starts_with("06") || f.starts_with("02"))
        .collect();
    // A slow import: two events per request.
    let url = server.url.clone();
    let mut importer = import(&url, &files[1].0, &files[1].1, 2);
    // Kill the server once part of the recording is in.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut r = ureq::get(&format!("{url}/metrics"))
            .header("authorization", &format!("Bearer {}", server.token))
            .call()
            .unwrap();
        let m = r.body_mut().read_to_string().unwrap();
        let accepted: u64 = m
            .lines()
            .find(|l| l.starts_with("sightflow_events_accepted_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if accepted >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the import did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    assert!(importer.try_wait().unwrap().is_none(), "the import was still running when the server died");
    std::thread::sleep(Duration::from_millis(300));
    let server = ServerProcess::start(dir.path(), port, CONFIG);
    let out = importer.wait_with_output().unwrap();
    assert!(out.status.success(), "the import finishes after the restart: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let retries: u64 =
        stdout.split(" retries").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(retries > 0, "the import had to retry while the server was down: {stdout}");
    for (file, device) in [&files[0], &files[2]] {
        let out = import(&server.url, file, device, 7).wait_with_output().unwrap();
        assert!(out.status.success());
    }
    server.wait_ready();
    assert_same_views(&server, &files, now_ms());
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Status, body and headers of one request (with its server's owner token unless the
/// headers carry an `authorization`).
fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String, Vec<(String, String)>) {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
        let base = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        b = b.header("authorization", format!("Bearer {}", crate::common::token_for(&base)));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = agent().run(b.body(body).unwrap()).expect("the server answers");
    let status = resp.status().as_u16();
    let hs = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
    (status, text, hs)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn health(url: &str) -> (u16, serde_json::Value) {
    let (status, text, _) = send("GET", &format!("{url}/health"), &[], Vec::new());
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// One hostile or malformed input and what the server must answer.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// In the JSON reason (`error`, or the first rejected event's `reason`).
    says: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    says: &'static str,
) -> Case {
    Case { name, method, path: path.to_string(), headers: Vec::new(), body: body.into(), status, says }
}

fn with(mut c: Case, k: &'static str, v: &str) -> Case {
    c.headers.push((k, v.to_string()));
    c
}

/// A batch of a bad event beside a valid one: the valid one must be kept.
fn beside(name: &'static str, bad: serde_json::Value, says: &'static str) -> Case {
    let good = serde_json::json!({"type": "activity", "device_id": "beside", "ts": now_ms()});
    case(name, "POST", "/api/v1/track?key=demo", serde_json::json!([bad, good]).to_string(), 200, says)
}

fn catalogue() -> Vec<Case> {
    use serde_json::json;
    let now = now_ms() as i64;
    let ev = |extra: serde_json::Value| {
        let mut e = json!({"type": "click", "device_id": "bad", "ts": now, "x": 1, "y": 2});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    let t = "/api/v1/track?key=demo";
    let imp = "/api/v1/projects/demo/devices/hostile/rrweb";
    let q = |sql: String| json!({"sql": sql}).to_string();
    let meta = json!({"type": 4, "timestamp": now, "data": {"href": "http://x.test/", "width": 800, "height": 600}})
        .to_string();
    let protobuf_many = {
        // 5001 empty events: field 2, length 0.
        let mut b = Vec::new();
        for _ in 0..5001 {
            b.extend_from_slice(&[0x12, 0x00]);
        }
        b
    };
    vec![
        case("no key", "POST", "/api/v1/track", "[]", 401, "missing project key"),
        case("unknown key", "POST", "/api/v1/track?key=nope", "[]", 401, "unknown project key"),
        with(case("unknown key header", "POST", "/api/v1/track", "[]", 401, "unknown project key"), "x-sightflow-key", "nope"),
        with(case("foreign origin", "POST", t, "[]", 403, "is not allowed"), "origin", "https://evil.test"),
        case("empty body", "POST", t, "", 400, "empty"),
        case("blank body", "POST", t, "  \n ", 400, "empty"),
        case("not JSON", "POST", t, "{nope", 400, "not a valid JSON batch"),
        case("a number", "POST", t, "5", 400, "not a valid JSON batch"),
        case("a string", "POST", t, "\"events\"", 400, "not a valid JSON batch"),
        case("no events", "POST", t, "{\"device_id\": \"d\"}", 400, "`events`"),
        case("events not an array", "POST", t, "{\"events\": 5}", 400, "not a valid JSON batch"),
        case("trailing garbage", "POST", t, "[] []", 400, "not a valid JSON batch"),
        case("invalid UTF-8", "POST", t, vec![b'[', 0xc3, 0x28, b']'], 400, "UTF-8"),
        case("broken gzip", "POST", t, vec![0x1f, 0x8b, 8, 0, 1, 2, 3], 400, "gzip"),
        case("gzip bomb", "POST", t, gzip(&vec![b' '; 60 << 20]), 413, "decompresses to more than"),
        with(case("declared huge body", "POST", t, "[]", 413, "exceeds the limit"), "content-length-override", "1"),
        case("too big a body", "POST", t, vec![b' '; 6 << 20], 413, "exceeds the limit"),
        case("too many events", "POST", t, format!("[{}]", vec!["{}"; 5001].join(",")), 400, "at most 5000"),
        case(
            "a gzip of 25M elements",
            "POST",
            t,
            gzip(format!("[{}0]", "0,".repeat(24_000_000)).as_bytes()),
            400,
            "at most 5000",
        ),
        case("deep nesting", "POST", t, format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), 400, "must be a JSON object"),
        case("deep objects", "POST", t, format!("[{}1{}]", "{\"a\":".repeat(10_000), "}".repeat(10_000)), 400, "field `type` is required"),
        case(
            "deep properties",
            "POST",
            t,
            format!("[{{\"type\": \"custom\", \"device_id\": \"d\", \"ts\": {now}, \"name\": \"n\", \"properties\": {}1{}}}]", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
            400,
            "recursion limit",
        ),
        case("NaN", "POST", t, "[{\"type\": \"click\", \"x\": NaN}]", 400, "not a valid JSON batch"),
        beside("event not an object", json!(1), "must be a JSON object"),
        beside("unknown type", json!({"type": "warp", "device_id": "d", "ts": now}), "unknown event type"),
        beside("ts a string", ev(json!({"ts": "soon"})), "`ts` must be an integer"),
        beside("ts long ago", ev(json!({"ts": 1})), "outside the accepted range"),
        beside("ts in ten days", ev(json!({"ts": now + 10 * 86_400_000})), "outside the accepted range"),
        beside("long device id", ev(json!({"device_id": "d".repeat(300)})), "`device_id` is 300 bytes"),
        beside("control characters", ev(json!({"device_id": "a\u{7}b"})), "control characters"),
        beside("an event of 1 MB", ev(json!({"selector": "s".repeat(1 << 20)})), "at most 65536"),
        beside("a long country", json!({"type": "page_view", "device_id": "d", "ts": now, "url": "http://x/", "country": "c".repeat(10_000)}), "`country`"),
        beside("a long tag", ev(json!({"tag": "t".repeat(10_000)})), "`tag`"),
        beside("a long fingerprint", json!({"type": "error", "device_id": "d", "ts": now, "message": "m", "fingerprint": "f".repeat(10_000)}), "`fingerprint`"),
        beside("a long custom name", json!({"type": "custom", "device_id": "d", "ts": now, "name": "n".repeat(10_000)}), "`name`"),
        beside("properties not an object", json!({"type": "custom", "device_id": "d", "ts": now, "name": "n", "properties": [1]}), "must be an object"),
        case(
            "a field twice",
            "POST",
            t,
            format!("[{{\"type\": \"click\", \"type\": \"x\", \"device_id\": \"d\", \"ts\": {now}}}, {{\"type\": \"activity\", \"device_id\": \"beside\", \"ts\": {now}}}]"),
            200,
            "given twice",
        ),
        beside("page view without url", json!({"type": "page_view", "device_id": "d", "ts": now}), "needs a `url`"),
        beside("x out of range", ev(json!({"x": 1e12})), "out of range"),
        beside("rrweb not an object", json!({"type": "rrweb", "device_id": "d", "event": [1]}), "must be a JSON object"),
        beside("rrweb without type", json!({"type": "rrweb", "device_id": "d", "event": {"timestamp": now}}), "integer `type`"),
        beside("too many positions", json!({"type": "mouse_move", "device_id": "d", "ts": now, "positions": vec![json!({"x": 1, "y": 1}); 20_000]}), "at most"),
        beside("another project's event", ev(json!({"project": "other"})), "belongs to project"),
        case(
            "an rrweb event of 17 MB",
            "POST",
            t,
            gzip(json!([{"type": "rrweb", "device_id": "d", "event": {"type": 3, "timestamp": now, "data": {"source": 5, "text": "x".repeat(17 << 20)}}}]).to_string().as_bytes()),
            400,
            "at most 16777216",
        ),
        with(case("protobuf garbage", "POST", t, vec![0xff, 0xff, 0xff], 400, "protobuf"), "content-type", "application/x-protobuf"),
        with(case("protobuf past its end", "POST", t, vec![0x12, 0x7f, 0x01], 400, "past the end"), "content-type", "application/x-protobuf"),
        with(case("protobuf of 5001 events", "POST", t, protobuf_many, 400, "at most 5000"), "content-type", "application/x-protobuf"),
        with(case("long batch id", "POST", t, "[]", 400, "batch id"), "x-batch-id", &"b".repeat(300)),
        with(case("batch id with spaces", "POST", t, "[]", 400, "batch id"), "x-batch-id", "a b"),
        case("body of another project", "POST", t, "{\"project\": \"other\", \"events\": []}", 400, "the body is for project"),
        case("bad query string", "POST", &format!("{t}&seq_start=many"), "[]", 400, "seq_start"),
        case("import not an array", "POST", imp, "{}", 400, "expected a JSON array"),
        case("import empty", "POST", imp, "", 400, "empty"),
        case("import of 5001", "POST", imp, format!("[{}]", vec![meta.as_str(); 5001].join(",")), 400, "at most 5000"),
        case("import cut off", "POST", imp, format!("[{meta}, {{\"type\": 3"), 200, "truncated"),
        case("import unknown key", "POST", "/api/v1/projects/nope/devices/d/rrweb", "[]", 401, "unknown project key"),
        case("import long device", "POST", &format!("/api/v1/projects/demo/devices/{}/rrweb", "d".repeat(300)), "[]", 400, "device id"),
        case("import long tab", "POST", &format!("{imp}?tab={}", "t".repeat(300)), "[]", 400, "tab id"),
        case("import seq_start not a number", "POST", &format!("{imp}?seq_start=-1"), "[]", 400, "seq_start"),
        case("import non-event", "POST", imp, format!("[{meta}, {{\"timestamp\": 5}}]"), 200, "integer `type`"),
        case("query without body", "POST", "/api/v1/query", "", 400, "expected a JSON body"),
        case("query not JSON", "POST", "/api/v1/query", "sql=select 1", 400, "expected a JSON body"),
        case("query unknown field", "POST", "/api/v1/query", "{\"sql\": \"select 1\", \"as_of\": 1}", 400, "unknown field"),
        case("query min_as_of negative", "POST", "/api/v1/query", "{\"sql\": \"select 1\", \"min_as_of\": -1}", 400, "expected a JSON body"),
        case("query syntax", "POST", "/api/v1/query", q("selec 1".into()), 400, "selec"),
        case("query DDL", "POST", "/api/v1/query", q("create table t as select 1".into()), 400, "read-only"),
        case("query COPY", "POST", "/api/v1/query", q("copy (select 1) to '/tmp/x.csv'".into()), 400, "read-only"),
        case("query a file", "POST", "/api/v1/query", q("select * from '/etc/passwd'".into()), 400, "passwd"),
        case("query 70 KB", "POST", "/api/v1/query", q(format!("select 1 -- {}", "x".repeat(70_000))), 413, "SQL text"),
        case("query 1000-term sum", "POST", "/api/v1/query", q(format!("select {}", vec!["1"; 1000].join("+"))), 200, "1000"),
        case("query levenshtein", "POST", "/api/v1/query", q("select levenshtein(repeat('a', 90000), repeat('b', 90000))".into()), 400, "at most"),
        case("query range", "POST", "/api/v1/query", q("select cardinality(range(1, 300000000))".into()), 400, "at most"),
        case("query repeat", "POST", "/api/v1/query", q("select repeat('ab', 1000000000)".into()), 400, "at most"),
        case("query far min_as_of", "POST", "/api/v1/query", json!({"sql": "select 1", "min_as_of": now + 3_600_000}).to_string(), 504, "have not reached"),
        case("query that runs too long", "POST", "/api/v1/query", q("select sum(value) from generate_series(1, 100000000000)".into()), 408, "time limit"),
        case("query result too large", "POST", "/api/v1/query", q("select repeat('x', 1000) from range(100000)".into()), 400, "bytes"),
        case("query too many rows", "POST", "/api/v1/query", q("select * from range(200000)".into()), 400, "rows"),
        case("replay of no session", "GET", "/api/v1/sessions/nope/replay", "", 404, "no session"),
        case("replay cursor not a number", "GET", "/api/v1/sessions/nope/replay?cursor=x", "", 400, "cursor"),
        case("no such endpoint", "GET", "/api/v2/everything", "", 404, "no such endpoint"),
        case("wrong method", "DELETE", "/api/v1/query", "", 405, "method"),
        with(case("preflight from a stranger", "OPTIONS", "/api/v1/track", "", 403, "is not allowed"), "origin", "https://evil.test"),
    ]
}

/// The catalogue of hostile inputs: each gets its documented status and a readable JSON
/// reason, the server stays healthy, a valid event sent beside it is kept, and memory
/// comes back near where it started.
#[test]
fn hostile_inputs_get_clear_answers_and_cost_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{CONFIG}[query]\ntimeout_ms = 2000\nmax_wait_ms = 1000\n[projects.demo]\nallowed_origins = [\"https://shop.test\"]\n"
    );
    let server = ServerProcess::start(dir.path(), free_port(), &config);
    server.wait_ready();
    let pid = server.child.id();
    let cases = catalogue();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    // Warm up, then take the baseline.
    for i in 0..3 {
        let good = serde_json::json!([{"type": "activity", "device_id": format!("warm-{i}"), "ts": now_ms()}]);
        send("POST", &format!("{}/api/v1/track?key=demo", server.url), &[], good.to_string().into_bytes());
    }
    let baseline = rss_kb(pid);
    let mut peak = baseline;
    let mut after_first = 0;
    // Twice: the second pass shows the first left nothing behind that grows.
    for (i, c) in cases.iter().chain(cases.iter()).enumerate() {
        if i == cases.len() {
            after_first = rss_kb(pid);
        }
        let mut headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let declared;
        if headers.iter().any(|(k, _)| *k == "content-length-override") {
            headers.retain(|(k, _)| *k != "content-length-override");
            declared = (100u64 << 20).to_string();
            headers.push(("content-length", &declared));
        }
        let (status, text, _) = if headers.iter().any(|(k, _)| *k == "content-length") || c.body.len() > (1 << 20) {
            // A body shorter than it claims, or one the server refuses before reading it
            // all: sent by hand, so that the early answer is read.
            raw_request(&server.url, c.method, &c.path, &headers, &c.body)
        } else {
            send(c.method, &format!("{}{}", server.url, c.path), &headers, c.body.clone())
        };
        // A deep plan takes about a second in a debug build: on a loaded machine it may
        // reach the time limit instead; either way it is answered, never a crash.
        let slow_ok = c.says == "1000" && status == 408;
        assert!(status == c.status || slow_ok, "{}: {status} {text}", c.name);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text:.200}", c.name));
        let reason = v["error"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["rejected"][0]["reason"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.clone());
        assert!(slow_ok || reason.contains(c.says), "{}: {reason:.300} should say {:?}", c.name, c.says);
        if c.says == "1000" && !slow_ok {
            assert_eq!(v["rows"], serde_json::json!([[1000]]), "{}", c.name);
        }
        let (h, body) = health(&server.url);
        assert_eq!(h, 200, "{}: /health {body}", c.name);
        let good = serde_json::json!([{"type": "page_view", "device_id": format!("ok-{i}"), "ts": now_ms(), "url": "http://x.test/"}]);
        let (s, text, _) =
            send("POST", &format!("{}/api/v1/track?key=demo", server.url), &[], good.to_string().into_bytes());
        assert_eq!(s, 200, "a valid event after {}: {text}", c.name);
        peak = peak.max(rss_kb(pid));
    }
    let rows = crate::common::rows(&server.url, "sessions", now_ms());
    let kept = rows.iter().filter(|r| r.contains("\"ok-")).count();
    assert_eq!(kept, 2 * cases.len(), "every valid event is in the views");
    assert!(rows.iter().any(|r| r.contains("\"beside\"")), "events beside bad ones are kept");
    // jemalloc returns freed pages to the system in the background (within ~10 s).
    let settle = Instant::now() + Duration::from_secs(20);
    let mut after = rss_kb(pid);
    while after > baseline + 64 * 1024 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kb(pid);
    }
    eprintln!(
        "RSS: baseline {} MB, peak {} MB, after one pass {} MB, after two {} MB",
        baseline / 1024,
        peak / 1024,
        after_first / 1024,
        after / 1024
    );
    assert!(after < baseline + 128 * 1024, "memory stays near its baseline: {after} kB after, {baseline} kB before");
    assert!(
        after < after_first + 32 * 1024,
        "a second pass grows nothing: {after} kB after it, {after_first} kB before"
    );
}

/// Sends a request by hand (for bodies shorter than their Content-Length).
fn raw_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<(String, String)>) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| *k == "content-length") {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_lowercase(), v.to_string()))
        .collect();
    // A chunked body: take the JSON inside.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => body[a..=b].to_string(),
        _ => body.to_string(),
    };
    (status, body, headers)
}

/// Clients that send half a request hold nothing for long: /health keeps answering,
/// ingest goes on, and the half requests are closed after the header and body timeouts.
#[test]
fn slow_clients_do_not_exhaust_the_server() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}[server]\nheader_timeout_ms = 2000\nbody_timeout_ms = 2000\n");
    let server = ServerProcess::start(dir.path(), free_port(), &config);
    server.wait_ready();
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let part = if i % 2 == 0 {
            "POST /api/v1/track?key=demo HTTP/1.1\r\nhost: x\r\ncontent-le".to_string()
        } else {
            "POST /api/v1/track?key=demo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n[{\"type\"".to_string()
        };
        s.write_all(part.as_bytes()).unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let (h, _) = health(&server.url);
    assert_eq!(h, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "/health took {:?}", started.elapsed());
    let good = serde_json::json!([{"type": "activity", "device_id": "fast", "ts": now_ms()}]);
    let (s, text, _) =
        send("POST", &format!("{}/api/v1/track?key=demo", server.url), &[], good.to_string().into_bytes());
    assert_eq!(s, 200, "{text}");
    // After the timeouts every half request has been answered or closed.
    std::thread::sleep(Duration::from_secs(4));
    let mut closed = 0;
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every slow connection was closed by the server");
}

/// The disk fills up under a running server (a file-size limit set on the process),
/// then frees up: nothing acknowledged is lost, live or after a restart, /health says
/// what is failing while it fails, and the server never acknowledges what it cannot
/// keep.
#[test]
fn a_full_disk_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("{CONFIG}[log]\nsegment_bytes = 1000000\n");
    let config = config.replace("[log]\npartitions = 3\n", "");
    let server = ServerProcess::start(dir.path(), port, &config);
    server.wait_ready();
    let pid = server.child.id();
    let post = |device: &str| -> u16 {
        let body =
            serde_json::json!([{"type": "page_view", "device_id": device, "ts": now_ms(), "url": "http://x.test/"}]);
        let (status, text, _) =
            send("POST", &format!("{}/api/v1/track?key=demo", server.url), &[], body.to_string().into_bytes());
        assert!(matches!(status, 200 | 503), "{status}: {text}");
        status
    };
    let mut acked = Vec::new();
    for i in 0..10 {
        let d = format!("before-{i}");
        assert_eq!(post(&d), 200);
        acked.push(d);
    }
    // Limit files to just past the largest segment: the next records are torn.
    let largest = walk(&dir.path().join("data/log")).iter().map(|p| std::fs::metadata(p).unwrap().len()).max().unwrap();
    let limit = |soft: &str| {
        let st = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--fsize={soft}:unlimited"))
            .status()
            .unwrap();
        assert!(st.success());
    };
    limit(&(largest + 60).to_string());
    let mut refused = 0;
    for i in 0..30 {
        let d = format!("full-{i}");
        match post(&d) {
            200 => acked.push(d),
            503 => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert!(refused > 0, "writes failed while the disk was full");
    let (h, body) = health(&server.url);
    assert_eq!(h, 503, "{body}");
    assert_eq!(body["status"], "failing", "{body}");
    assert!(body["failures"][0].as_str().unwrap().contains("event log partition"), "{body}");
    limit("unlimited");
    for i in 0..10 {
        let d = format!("after-{i}");
        assert_eq!(post(&d), 200);
        acked.push(d);
    }
    let (h, body) = health(&server.url);
    assert_eq!(h, 200, "{body}");
    let devices = |s: &ServerProcess| -> Vec<String> {
        s.rows("sessions", now_ms())
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                v["device_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let live = devices(&server);
    for d in &acked {
        assert!(live.contains(d), "{d} was acknowledged but is not in the views");
    }
    server.kill();
    let server = ServerProcess::start(dir.path(), port, &config);
    server.wait_ready();
    let restarted = devices(&server);
    for d in &acked {
        assert!(restarted.contains(d), "{d} was acknowledged but is lost after a restart");
    }
    let m = send("GET", &format!("{}/metrics", server.url), &[], Vec::new()).1;
    assert!(m.contains("sightflow_log_write_errors_total 0"), "a fresh process: {m:.0}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// What the SDK sends: rrweb events and its own events in one gzipped batch with a
/// batch id (`text/plain`, as a beacon must), answered per event; the same batch
/// retried after a restart is stored once, in the views and in the replay.
#[test]
fn an_sdk_batch_retried_after_a_restart_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = ServerProcess::start(dir.path(), port, CONFIG);
    server.wait_ready();
    let t = now_ms() as i64 - 5_000;
    let ev = |seq: u64, e: serde_json::Value| {
        let mut e = e;
        let o = e.as_object_mut().unwrap();
        o.insert("device_id".into(), "sdk-dev".into());
        o.insert("tab_id".into(), "tab-1".into());
        o.insert("seq".into(), seq.into());
        e
    };
    let batch = serde_json::json!([
        ev(
            1,
            serde_json::json!({"type": "rrweb", "event": {"type": 4, "timestamp": t, "data": {
            "href": "http://shop.test/p?token=[redacted]", "width": 1280, "height": 800,
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"}}})
        ),
        ev(
            2,
            serde_json::json!({"type": "rrweb", "event": {"type": 3, "timestamp": t + 100, "data": {
            "source": 2, "type": 2, "id": 9, "x": 40, "y": 50}}})
        ),
        ev(3, serde_json::json!({"type": "identify", "ts": t + 200, "user_id": "u-9", "traits": {"plan": "pro"}})),
        ev(4, serde_json::json!({"type": "vitals", "ts": t + 300, "lcp": "fast"})),
        ev(5, serde_json::json!({"type": "vitals", "ts": t + 400, "lcp": 640.0, "ttfb": 12.5})),
    ]);
    let body = gzip(batch.to_string().as_bytes());
    let url = format!("{}/api/v1/track?key=demo&batch_id=tab-1.7", server.url);
    let (status, text, _) = send("POST", &url, &[("content-type", "text/plain")], body.clone());
    assert_eq!(status, 200, "{text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["accepted"], 4, "{r}");
    assert_eq!(r["rejected"][0]["index"], 3, "{r}");
    assert!(r["rejected"][0]["reason"].as_str().unwrap().contains("lcp"), "{r}");
    server.kill();
    let server = ServerProcess::start(dir.path(), port, CONFIG);
    server.wait_ready();
    let (status, text, _) = send("POST", &url, &[("content-type", "text/plain")], body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["duplicate"], true, "{text}");
    let q = serde_json::json!({"sql": "select s.session_id, s.clicks, s.events, s.user_id, s.browser, p.lcp_ms, p.ttfb_ms \
        from sessions s join page_views p using (session_id) where s.device_id = 'sdk-dev'", "min_as_of": now_ms()});
    let (status, text, _) = send(
        "POST",
        &format!("{}/api/v1/query", server.url),
        &[("content-type", "application/json")],
        q.to_string().into(),
    );
    assert_eq!(status, 200, "{text}");
    let rows = serde_json::from_str::<serde_json::Value>(&text).unwrap()["rows"].clone();
    let row = rows.as_array().unwrap();
    assert_eq!(row.len(), 1, "one session, one page view: {rows}");
    assert_eq!(
        row[0].as_array().unwrap()[1..],
        serde_json::json!([1, 4, "u-9", "Chrome", 640, 13]).as_array().unwrap()[..]
    );
    let id = row[0][0].as_str().unwrap();
    let (status, text, _) = send("GET", &format!("{}/api/v1/sessions/{id}/replay", server.url), &[], Vec::new());
    assert_eq!(status, 200, "{text}");
    let events = serde_json::from_str::<serde_json::Value>(&text).unwrap()["events"].as_array().unwrap().len();
    assert_eq!(events, 2, "the two rrweb events, once: {text}");
}
