//! Who may read what: every read endpoint against every kind of credential (the access
//! matrix), project isolation through SQL and replay, console logins with their cookie
//! and CSRF token, and the operator commands against a running server.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sightflow_config::access::{Grant, Role};

use crate::api::{Api, Reply, api, now_event, recording};

const PROJECTS: &str = "[projects.demo]\nallowed_origins = []\n[projects.other]\nallowed_origins = []\n";

/// A credential a request can carry.
#[derive(Clone, Debug)]
enum Cred {
    None,
    /// A project's ingest key, tried as a bearer token and as the ingest header.
    IngestKey(&'static str),
    Bearer(String),
}

/// Everyone the matrix asks for, with their credential.
struct People {
    creds: Vec<(&'static str, Cred)>,
}

fn people(a: &Api) -> People {
    let m = &a.started.meta;
    let token = |role, project: Option<&str>| Cred::Bearer(m.token_create("t", role, project, "tests").unwrap().0);
    let revoked = m.token_create("gone", Role::Owner, None, "tests").unwrap();
    m.token_revoke(&revoked.1.id).unwrap();
    People {
        creds: vec![
            ("none", Cred::None),
            ("ingest key", Cred::IngestKey("demo")),
            ("viewer", token(Role::Viewer, Some("demo"))),
            ("member", token(Role::Member, Some("demo"))),
            ("admin", token(Role::Admin, Some("demo"))),
            ("owner", token(Role::Owner, None)),
            ("other project", token(Role::Owner, Some("other"))),
            ("revoked", Cred::Bearer(revoked.0)),
        ],
    }
}

fn with(cred: &Cred, req: axum::http::request::Builder) -> axum::http::request::Builder {
    match cred {
        Cred::None => req,
        Cred::IngestKey(k) => req.header("x-sightflow-key", *k).header(header::AUTHORIZATION, format!("Bearer {k}")),
        Cred::Bearer(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
    }
}

async fn send(a: &Api, cred: &Cred, method: &str, uri: &str, body: &str) -> Reply {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = with(cred, Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json"));
    let resp = a.started.router.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let stream = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut body = resp.into_body();
    let bytes = if stream {
        // A live feed never ends: its first event (the result) is enough.
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\n\n") {
            match tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await {
                Ok(Some(Ok(f))) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
                other => panic!("{uri}: the feed ended or stalled before its first event: {:?}", other.is_ok()),
            }
        }
        got
    } else {
        body.collect().await.unwrap().to_bytes().to_vec()
    };
    Reply { status, headers, body: bytes }
}

fn query(sql: &str) -> String {
    json!({"sql": sql, "min_as_of": crate::common::now_ms()}).to_string()
}

/// Events of both projects, and a recorded session of `demo` (its id).
async fn traffic(a: &Api) -> String {
    for (key, device) in [("demo", "d-demo"), ("other", "d-other")] {
        let body = json!([now_event("page_view", device, json!({"url": format!("https://{key}.test/")}))]).to_string();
        let r = a.post(&format!("/api/v1/track?key={key}"), "application/json", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = a.post("/api/v1/projects/demo/devices/dev-4/rrweb", "application/json", recording("04-error.json")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rows = a.rows("select session_id from sessions where device_id = 'dev-4'").await;
    rows[0][0].as_str().unwrap().to_string()
}

/// The access matrix: every endpoint × every credential, with the status expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_credential_as_its_role_allows() {
    let a = api(PROJECTS);
    let session = traffic(&a).await;
    let p = people(&a);
    let replay = format!("/api/v1/sessions/{session}/replay");
    let detail = format!("/api/v1/sessions/{session}");
    let track = json!([now_event("activity", "d-x", json!({}))]).to_string();
    let q = query("select count(*) from sessions");
    let feed = "/api/v1/subscribe?sql=select%20count(*)%20as%20n%20from%20sessions".to_string();
    // (method, path, body, expected status per person in `people` order)
    type Row<'a> = (&'a str, &'a str, &'a str, [u16; 8]);
    let matrix: Vec<Row<'_>> = vec![
        //                                          none ingest viewer member admin owner other revoked
        ("POST", "/api/v1/query", &q, [401, 401, 200, 200, 200, 200, 200, 401]),
        ("GET", &replay, "", [401, 401, 403, 200, 200, 200, 404, 401]),
        ("GET", "/metrics", "", [401, 401, 403, 403, 403, 200, 403, 401]),
        ("GET", "/api/v1/me", "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("POST", "/api/v1/logout", "", [401, 401, 400, 400, 400, 400, 400, 401]),
        ("GET", "/api/v1/sessions", "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("GET", &detail, "", [401, 401, 200, 200, 200, 200, 404, 401]),
        ("GET", "/api/v1/heatmap?url=https://demo.test/&kind=click", "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("GET", "/api/v1/projects", "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("PATCH", "/api/v1/projects/demo", "{}", [401, 401, 403, 403, 200, 200, 403, 401]),
        ("GET", "/api/v1/projects/demo/members", "", [401, 401, 403, 403, 200, 200, 403, 401]),
        ("GET", "/api/v1/tokens", "", [401, 401, 403, 403, 200, 200, 200, 401]),
        ("POST", "/api/v1/projects", "{\"name\": \"matrix\"}", [401, 401, 403, 403, 403, 201, 403, 401]),
        ("DELETE", "/api/v1/projects/matrix", "", [401, 401, 403, 403, 403, 204, 403, 401]),
        ("POST", "/api/v1/subscribe/ticket", "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("GET", &feed, "", [401, 401, 200, 200, 200, 200, 200, 401]),
        ("GET", "/api/v1/openapi.json", "", [200; 8]),
        ("GET", "/health", "", [200; 8]),
        ("POST", "/api/v1/track?key=demo", &track, [200; 8]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, want) in &matrix {
        for ((who, cred), want) in p.creds.iter().zip(want) {
            let r = send(&a, cred, method, path, body).await;
            if r.status.as_u16() != *want {
                failures.push(format!("{method} {path} as {who}: {} (want {want}): {}", r.status, r.text()));
            }
            if r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN {
                let reason = r.json()["error"].as_str().unwrap_or("").to_string();
                assert!(reason.len() > 20, "{method} {path} as {who}: a 401/403 says why: {reason:?}");
            }
            if r.status == StatusCode::UNAUTHORIZED {
                assert!(r.headers.contains_key(header::WWW_AUTHENTICATE), "{method} {path} as {who}");
            }
        }
    }
    assert!(failures.is_empty(), "access matrix:\n{}", failures.join("\n"));
    // The reasons name the role.
    let viewer = &p.creds[2].1;
    let r = send(&a, viewer, "GET", &replay, "").await;
    assert!(r.json()["error"].as_str().unwrap().contains("member role"), "{}", r.text());
    let r = send(&a, &p.creds[1].1, "POST", "/api/v1/query", &q).await;
    assert!(r.json()["error"].as_str().unwrap().contains("ingest"), "{}", r.text());
}

async fn values(a: &Api, cred: &Cred, sql: &str) -> Vec<Value> {
    let r = send(a, cred, "POST", "/api/v1/query", &query(sql)).await;
    assert_eq!(r.status, StatusCode::OK, "{sql}: {}", r.text());
    r.json()["rows"].as_array().unwrap().iter().map(|row| row[0].clone()).collect()
}

/// A credential of project P never sees a row of Q, whatever the SQL says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_scope_holds_through_any_sql() {
    let a = api(PROJECTS);
    traffic(&a).await;
    let p = people(&a);
    let (viewer, owner, other) = (&p.creds[2].1, &p.creds[5].1, &p.creds[6].1);
    let projects = "select distinct project from sessions order by 1";
    assert_eq!(values(&a, owner, projects).await, [json!("demo"), json!("other")]);
    assert_eq!(values(&a, viewer, projects).await, [json!("demo")]);
    assert_eq!(values(&a, other, projects).await, [json!("other")]);
    for sql in [
        "select count(*) from sessions where project = 'demo'",
        "select count(*) from (select * from sessions union all select * from sessions) where project <> 'other'",
        "select count(*) from page_stats p join sessions s on p.project = s.project where s.project = 'demo'",
        "select count(*) from information_schema.tables t join sessions s on true where s.project = 'demo'",
        "select count(*) from sightflow_state",
    ] {
        assert_eq!(values(&a, other, sql).await, [json!(0)], "{sql}");
    }
    // Every view is scoped, not just sessions.
    for view in sightflow_dataflows::ViewId::ALL.iter().map(|v| v.name()) {
        let sql = format!("select count(*) from {view} where project = 'demo'");
        assert_eq!(values(&a, other, &sql).await, [json!(0)], "{view}");
    }
    assert!(values(&a, owner, "select count(*) from sightflow_state").await[0].as_i64().unwrap() > 0);
}

async fn login(a: &Api, email: &str, password: &str) -> Reply {
    let body = json!({"email": email, "password": password}).to_string();
    a.call_as_is(
        Request::post("/api/v1/login").header(header::CONTENT_TYPE, "application/json").body(Body::from(body)).unwrap(),
    )
    .await
}

fn cookie_of(r: &Reply) -> String {
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_string()
}

/// The console's login: a cookie, a CSRF token for what changes state, logout, limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_use_a_cookie_and_a_csrf_token() {
    let a = api(PROJECTS);
    let session = traffic(&a).await;
    let m = &a.started.meta;
    m.user_add("vera@shop.test", "viewer password", Grant::on("demo", Role::Viewer)).unwrap();
    m.user_add("mia@shop.test", "member password", Grant::on("demo", Role::Member)).unwrap();

    let r = login(&a, "vera@shop.test", "wrong password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "wrong email or password");
    let r = login(&a, "nobody@shop.test", "viewer password").await;
    assert_eq!(r.json()["error"], "wrong email or password", "an unknown email answers alike");

    let r = login(&a, "Vera@Shop.test", "viewer password").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let cookie = cookie_of(&r);
    let csrf = r.json()["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(r.json()["principal"], "user:vera@shop.test");
    let as_vera = |method: &str, uri: &str, csrf: Option<&str>, body: String| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = csrf {
            b = b.header("x-csrf-token", c);
        }
        b.body(Body::from(body)).unwrap()
    };
    let me = a.call_as_is(as_vera("GET", "/api/v1/me", None, String::new())).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["csrf_token"], csrf.as_str(), "a reloaded console gets its CSRF token back");
    let q = query("select distinct project from sessions");
    let r = a.call_as_is(as_vera("POST", "/api/v1/query", None, q.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a POST with the cookie alone: {}", r.text());
    assert!(r.text().contains("X-CSRF-Token"));
    let r = a.call_as_is(as_vera("POST", "/api/v1/query", Some("0123"), q.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = a.call_as_is(as_vera("POST", "/api/v1/query", Some(&csrf), q.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["rows"], json!([["demo"]]));
    let r = a.call_as_is(as_vera("GET", &format!("/api/v1/sessions/{session}/replay"), None, String::new())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "viewers do not watch replays");
    let r = a.call_as_is(as_vera("POST", "/api/v1/logout", Some(&csrf), String::new())).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let r = a.call_as_is(as_vera("GET", "/api/v1/me", None, String::new())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "logged out");

    let r = login(&a, "mia@shop.test", "member password").await;
    let mia = cookie_of(&r);
    let r = a
        .call_as_is(
            Request::get(format!("/api/v1/sessions/{session}/replay"))
                .header(header::COOKIE, &mia)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "members watch replays: {}", r.text());

    // Logins are rate-limited per email (5 a minute by default): the sixth is refused
    // even with the right password.
    for _ in 0..5 {
        let _ = login(&a, "mia@shop.test", "not it at all").await;
    }
    let r = login(&a, "mia@shop.test", "member password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let m = a.call(Request::get("/metrics").body(Body::empty()).unwrap()).await.text();
    let metric = |name: &str| -> u64 {
        m.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.split(' ').nth(1)?.parse().ok()).unwrap()
    };
    assert_eq!(metric("sightflow_logins_total"), 2);
    assert!(metric("sightflow_login_failures_total") >= 6);
    assert!(metric("sightflow_login_throttled_total") >= 1);
}

fn sightflow(args: &[&str], dir: &std::path::Path, stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sightflow"));
    c.args(args)
        .arg("--config")
        .arg(dir.join("sightflow.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn post(url: &str, headers: &[(&str, &str)], body: String) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut b = agent.post(url).content_type("application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = b.send(body.as_str()).unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
}

/// The operator commands work on the store of a running server, and it sees their
/// effect at once (tokens) or within a second (projects).
#[test]
fn operator_commands_change_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n";
    let server = crate::common::ServerProcess::start(dir.path(), crate::common::free_port(), config);
    server.wait_ready();
    let d = dir.path();

    let (ok, key, err) = sightflow(&["project", "add", "shop", "--origin", "https://shop.test"], d, None);
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(key.starts_with("sf_pk_"), "the ingest key alone on stdout: {key:?}");
    let (ok, list, _) = sightflow(&["project", "list"], d, None);
    assert!(ok && list.contains("shop") && list.contains(&key) && list.contains("demo"), "{list}");
    let (ok, _, err) = sightflow(&["project", "add", "shop"], d, None);
    assert!(!ok && err.contains("exists already"), "{err}");

    // The new key takes events within a second or two.
    let event = json!([now_event("page_view", "d-shop", json!({"url": "https://shop.test/"}))]).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = post(&format!("{}/api/v1/track?key={key}", server.url), &[], event.clone());
        if status == 200 {
            break;
        }
        assert!(status == 401 && Instant::now() < deadline, "{status} {text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (ok, token, err) =
        sightflow(&["token", "create", "--role", "viewer", "--project", "shop", "--name", "grafana"], d, None);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("sf_") && !token.contains(char::is_whitespace), "{token:?}");
    assert!(err.contains("shown once"), "{err}");
    let q = json!({"sql": "select distinct project from sessions", "min_as_of": crate::common::now_ms()}).to_string();
    let auth = format!("Bearer {token}");
    let (status, text) = post(&format!("{}/api/v1/query", server.url), &[("authorization", &auth)], q.clone());
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rows"], json!([["shop"]]), "a shop token sees shop only");
    let (ok, list, _) = sightflow(&["token", "list"], d, None);
    assert!(ok && list.contains("grafana") && list.contains("viewer") && list.contains("active"), "{list}");
    assert!(!list.contains(&token[16..]), "no secret in the list: {list}");
    let id = &token[..15];
    let (ok, _, err) = sightflow(&["token", "revoke", id], d, None);
    assert!(ok, "{err}");
    let (status, text) = post(&format!("{}/api/v1/query", server.url), &[("authorization", &auth)], q.clone());
    assert_eq!(status, 401, "revoked at once: {text}");
    let (_, list, _) = sightflow(&["token", "list"], d, None);
    assert!(list.contains("revoked"), "{list}");

    // Users: the password from standard input; a login with it; a new password.
    let (ok, _, err) = sightflow(
        &["user", "add", "ann@shop.test", "--role", "member", "--project", "shop"],
        d,
        Some("first password\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sightflow(&["user", "add", "bob@shop.test", "--role", "king"], d, Some("whatever pw\n"));
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, _, err) =
        sightflow(&["user", "add", "bob@shop.test", "--role", "viewer", "--project", "nope"], d, Some("whatever pw\n"));
    assert!(!ok && err.contains("no project \"nope\""), "{err}");
    let login = |password: &str| {
        post(
            &format!("{}/api/v1/login", server.url),
            &[],
            json!({"email": "ann@shop.test", "password": password}).to_string(),
        )
        .0
    };
    assert_eq!(login("first password"), 200);
    let (ok, _, err) = sightflow(&["user", "passwd", "ann@shop.test"], d, Some("second password\n"));
    assert!(ok, "{err}");
    assert_eq!(login("first password"), 401);
    assert_eq!(login("second password"), 200);
    let (ok, list, _) = sightflow(&["user", "list"], d, None);
    assert!(ok && list.contains("ann@shop.test") && list.contains("member on shop"), "{list}");
    assert!(
        list.contains("owner@localhost") && list.contains("owner on every project"),
        "the first start's owner: {list}"
    );
    let stored = std::fs::read(d.join("data/meta.sqlite")).unwrap();
    let text = String::from_utf8_lossy(&stored);
    assert!(!text.contains("second password") && !text.contains(&token[16..]), "no secret stored in the clear");
    drop(server);
}

/// A first start with an empty store creates an owner and shows its password once; the
/// password logs in.
#[test]
fn a_first_start_creates_an_owner_and_says_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    std::fs::write(dir.path().join("sightflow.toml"), "").unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_sightflow"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--pg-listen", "127.0.0.1:0", "--config"])
            .arg(dir.path().join("sightflow.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let read_until_listening = |child: &mut std::process::Child| {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "{line}");
    };
    let mut first = start();
    read_until_listening(&mut first);
    // Give the owner line time to reach stderr, then stop and read it all.
    let url = format!("http://127.0.0.1:{port}");
    let _ =
        post(&format!("{url}/api/v1/login"), &[], json!({"email": "x@y", "password": "wrong password"}).to_string());
    first.kill().unwrap();
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let password = stderr
        .split("with password ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("the owner's password is shown: {stderr}"))
        .to_string();
    assert!(stderr.contains("owner@localhost"), "{stderr}");
    assert!(!stderr.contains("wrong password"), "a failed login's password is not logged: {stderr}");
    assert!(stderr.contains("login failed") && stderr.contains("x@y"), "the failure is logged: {stderr}");
    let mut second = start();
    read_until_listening(&mut second);
    let (status, text) = post(
        &format!("{url}/api/v1/login"),
        &[],
        json!({"email": "owner@localhost", "password": password}).to_string(),
    );
    assert_eq!(status, 200, "{text}");
    second.kill().unwrap();
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("with password"), "shown once only: {stderr}");
    assert!(!stderr.contains(&password), "{stderr}");
}
