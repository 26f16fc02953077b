//! The REST resources: the session list (filters, sort, cursor pages, total), a
//! session's timeline, heatmaps, and the management of projects, members and tokens
//! with their role checks.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sightflow_config::access::{Grant, Role};

use crate::api::{Api, Reply, api, now_event, recording};

const PROJECTS: &str = "[projects.demo]\nallowed_origins = []\n[projects.other]\nallowed_origins = []\n";

async fn get_as(a: &Api, token: &str, uri: &str) -> Reply {
    a.call(Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap())
        .await
}

async fn send_as(a: &Api, token: &str, method: &str, uri: &str, body: Value) -> Reply {
    a.call(
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// Ten devices of `demo` with 1..=10 clicks (the odd ones on /b), two of `other`, and a
/// recorded session with signals.
async fn traffic(a: &Api) {
    for d in 1..=10 {
        let device = format!("d{d:02}");
        let page = if d % 2 == 1 { "https://demo.test/b" } else { "https://demo.test/a" };
        let mut events = vec![now_event("page_view", &device, json!({"url": page}))];
        for i in 0..d {
            events.push(now_event("click", &device, json!({"x": 100 + 200 * i, "y": 10, "selector": "button#buy"})));
        }
        let r = a.post("/api/v1/track?key=demo", "application/json", json!(events).to_string()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    for d in ["o1", "o2"] {
        let body = json!([now_event("page_view", d, json!({"url": "https://other.test/"}))]).to_string();
        assert_eq!(a.post("/api/v1/track?key=other", "application/json", body).await.status, StatusCode::OK);
    }
    let r = a.post("/api/v1/projects/demo/devices/dev-4/rrweb", "application/json", recording("04-error.json")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    a.rows("select 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_filtered_sorted_and_paged() {
    let a = api(PROJECTS);
    traffic(&a).await;
    let t = a.token.clone();
    let r = get_as(&a, &t, "/api/v1/sessions?project=demo&sort=clicks&order=desc&limit=4").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["total"], 11, "ten devices and the recording: {v}");
    let clicks: Vec<i64> = v["sessions"].as_array().unwrap().iter().map(|s| s["clicks"].as_i64().unwrap()).collect();
    assert_eq!(clicks, [10, 9, 8, 7]);
    // Following the cursor visits every session once, in order.
    let mut seen = clicks.clone();
    let mut cursor = v["next_cursor"].as_str().unwrap().to_string();
    loop {
        let r = get_as(&a, &t, &format!("/api/v1/sessions?project=demo&sort=clicks&limit=4&cursor={cursor}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        seen.extend(v["sessions"].as_array().unwrap().iter().map(|s| s["clicks"].as_i64().unwrap()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut want = seen.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, want, "descending over the pages");
    assert_eq!(seen.len(), 11);
    // Filters.
    let n = |q: &'static str| {
        let (a, t) = (&a, t.clone());
        async move {
            let r = get_as(a, &t, &format!("/api/v1/sessions?{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text());
            r.json()["total"].as_i64().unwrap()
        }
    };
    assert_eq!(n("project=demo&url=https://demo.test/b").await, 5);
    assert_eq!(n("project=demo&url=https://demo.test/*").await, 10);
    assert_eq!(n("has=error").await, 1, "the recording has error clicks");
    assert_eq!(n("has=error,rage").await, 0);
    assert_eq!(n("project=other").await, 2);
    assert_eq!(n("").await, 13, "every project the owner reads");
    assert_eq!(n("from=0&to=1").await, 0);
    // Bad parameters say what is wrong; quotes are data, not SQL.
    for (q, says) in [
        ("sort=password", "sort"),
        ("has=joy", "unknown signal"),
        ("limit=0", "limit"),
        ("cursor=zz", "cursor"),
        ("order=sideways", "order"),
        ("nope=1", "unknown field"),
    ] {
        let r = get_as(&a, &t, &format!("/api/v1/sessions?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.text().contains(says), "{q}: {}", r.text());
    }
    assert_eq!(n("browser=x'%20or%20'1'='1").await, 0);
    // A scoped token lists its project only, and not another's even when asked.
    let (other, _) = a.started.meta.token_create("o", Role::Viewer, Some("other"), "tests").unwrap();
    let r = get_as(&a, &other, "/api/v1/sessions").await;
    assert_eq!(r.json()["total"], 2);
    let r = get_as(&a, &other, "/api/v1/sessions?project=demo").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_has_its_timeline_and_pages_have_heatmaps() {
    let a = api(PROJECTS);
    traffic(&a).await;
    let t = a.token.clone();
    let id =
        a.rows("select session_id from sessions where device_id = 'dev-4'").await[0][0].as_str().unwrap().to_string();
    let r = get_as(&a, &t, &format!("/api/v1/sessions/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["session"]["device_id"], "dev-4");
    let kinds: Vec<&str> = v["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"page_view") && kinds.iter().filter(|k| **k == "error_click").count() == 2, "{kinds:?}");
    let ts: Vec<&str> = v["timeline"].as_array().unwrap().iter().map(|e| e["ts"].as_str().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "in time order: {ts:?}");
    assert_eq!(get_as(&a, &t, "/api/v1/sessions/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&a, &t, "/api/v1/sessions/x'y").await.status, StatusCode::NOT_FOUND);
    let (other, _) = a.started.meta.token_create("o", Role::Viewer, Some("other"), "tests").unwrap();
    assert_eq!(get_as(&a, &other, &format!("/api/v1/sessions/{id}")).await.status, StatusCode::NOT_FOUND);

    let r = get_as(&a, &t, "/api/v1/heatmap?url=https://demo.test/a&kind=click").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["total"], 2 + 4 + 6 + 8 + 10, "every click on /a: {v}");
    assert!(v["cells"].as_array().unwrap().iter().all(|c| c["cell_y"] == 0));
    let r = get_as(&a, &t, "/api/v1/heatmap?url=https://demo.test/a&kind=smell").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get_as(&a, &other, "/api/v1/heatmap?url=https://demo.test/a&kind=click").await;
    assert_eq!(r.json()["total"], 0, "another project's heat is not there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_members_and_tokens_are_managed_by_role() {
    let a = api(PROJECTS);
    let m = &a.started.meta;
    let owner = a.token.clone();
    let (admin, _) = m.token_create("a", Role::Admin, Some("demo"), "tests").unwrap();
    let (member, _) = m.token_create("m", Role::Member, Some("demo"), "tests").unwrap();

    // Projects: the owner creates; an admin of demo changes demo's settings; only an
    // owner deletes.
    let r = send_as(
        &a,
        &owner,
        "POST",
        "/api/v1/projects",
        json!({"name": "shop", "allowed_origins": ["https://shop.test"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(r.json()["ingest_key"].as_str().unwrap().starts_with("sf_pk_"));
    let r = send_as(&a, &owner, "POST", "/api/v1/projects", json!({"name": "shop"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send_as(&a, &admin, "POST", "/api/v1/projects", json!({"name": "blog"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = get_as(&a, &admin, "/api/v1/projects").await;
    let v = r.json();
    let names: Vec<&str> = v["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo"], "an admin of demo sees demo only");
    let r =
        send_as(&a, &admin, "PATCH", "/api/v1/projects/demo", json!({"allowed_origins": ["https://demo.test"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["allowed_origins"], json!(["https://demo.test"]));
    let r = send_as(&a, &admin, "PATCH", "/api/v1/projects/demo", json!({"time_zone": "Mars/Olympus"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(send_as(&a, &member, "PATCH", "/api/v1/projects/demo", json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send_as(&a, &admin, "PATCH", "/api/v1/projects/other", json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send_as(&a, &admin, "DELETE", "/api/v1/projects/demo", json!({})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send_as(&a, &owner, "DELETE", "/api/v1/projects/shop", json!({})).await.status, StatusCode::NO_CONTENT);

    // Members: an admin adds a new user with a password, changes roles up to their own.
    let r = send_as(&a, &admin, "PUT", "/api/v1/projects/demo/members/ann@demo.test", json!({"role": "member"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a new user needs a password: {}", r.text());
    let r = send_as(
        &a,
        &admin,
        "PUT",
        "/api/v1/projects/demo/members/ann@demo.test",
        json!({"role": "member", "password": "ann's password"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = send_as(&a, &admin, "PUT", "/api/v1/projects/demo/members/ann@demo.test", json!({"role": "owner"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "not above their own role");
    let r = send_as(&a, &admin, "PUT", "/api/v1/projects/demo/members/ann@demo.test", json!({"role": "admin"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get_as(&a, &admin, "/api/v1/projects/demo/members").await;
    assert!(
        r.json()["members"].as_array().unwrap().iter().any(|m| m["email"] == "ann@demo.test" && m["role"] == "admin"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("argon2"), "no hashes in answers");
    assert_eq!(get_as(&a, &member, "/api/v1/projects/demo/members").await.status, StatusCode::FORBIDDEN);
    let r = send_as(&a, &admin, "DELETE", "/api/v1/projects/demo/members/ann@demo.test", json!({})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(m.user("ann@demo.test").unwrap().unwrap().grants.is_empty());
    m.user_add("zed@x.test", "zed's password", Grant::on("other", Role::Viewer)).unwrap();

    // Tokens: shown once at creation; listed without secrets; revoked at once.
    let r =
        send_as(&a, &admin, "POST", "/api/v1/tokens", json!({"name": "grafana", "role": "viewer", "project": "demo"}))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    let id = r.json()["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(get_as(&a, &token, "/api/v1/me").await.status, StatusCode::OK);
    let r = send_as(&a, &admin, "POST", "/api/v1/tokens", json!({"role": "owner", "project": "demo"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "not above their own role");
    let r = send_as(&a, &admin, "POST", "/api/v1/tokens", json!({"role": "viewer"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a token on every project needs an admin of every project");
    assert_eq!(
        send_as(&a, &member, "POST", "/api/v1/tokens", json!({"role": "viewer", "project": "demo"})).await.status,
        StatusCode::FORBIDDEN
    );
    let r = get_as(&a, &admin, "/api/v1/tokens").await;
    let list = r.text();
    assert!(list.contains(&id) && !list.contains(&token[16..]), "{list}");
    assert!(!list.contains("\"project\":null"), "an admin of demo sees demo's tokens only: {list}");
    assert_eq!(
        send_as(&a, &admin, "DELETE", &format!("/api/v1/tokens/{id}"), json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get_as(&a, &token, "/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
    let r = send_as(&a, &admin, "DELETE", "/api/v1/tokens/sf_000000000000", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// A heatmap of chosen sessions is computed from their replays through the same
/// definitions: the two sessions of a page together give the page's heatmap, one of
/// them gives its own share, and a session of another project is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heatmaps_of_chosen_sessions_come_from_their_replays() {
    let a = api(PROJECTS);
    for (file, device) in [("02-rage.json", "r1"), ("03-dead.json", "r2")] {
        let r =
            a.post(&format!("/api/v1/projects/demo/devices/{device}/rrweb"), "application/json", recording(file)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let ids: Vec<String> = a
        .rows("select session_id from sessions order by device_id")
        .await
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let t = a.token.clone();
    let page = "/api/v1/heatmap?url=http://lumen-notes.test:8731/&kind=click";
    let all = get_as(&a, &t, page).await.json();
    let both = get_as(&a, &t, &format!("{page}&session={}&session={}", ids[0], ids[1])).await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.text());
    let both = both.json();
    assert!(all["total"].as_i64().unwrap() > 0, "{all}");
    assert_eq!(both["cells"], all["cells"], "the two sessions are all the page's sessions");
    assert_eq!(both["sessions"].as_array().unwrap().len(), 2);
    let one = get_as(&a, &t, &format!("{page}&session={}", ids[0])).await.json();
    let other = get_as(&a, &t, &format!("{page}&session={}", ids[1])).await.json();
    assert_eq!(one["total"].as_i64().unwrap() + other["total"].as_i64().unwrap(), all["total"].as_i64().unwrap());
    assert!(one["total"].as_i64().unwrap() > 0 && other["total"].as_i64().unwrap() > 0);
    let (o, _) = a.started.meta.token_create("o", Role::Viewer, Some("other"), "tests").unwrap();
    assert_eq!(get_as(&a, &o, &format!("{page}&session={}", ids[0])).await.status, StatusCode::NOT_FOUND);
    let r = get_as(&a, &t, &format!("{page}&session=nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let many: Vec<String> = (0..301).map(|i| format!("session=s{i}")).collect();
    assert_eq!(get_as(&a, &t, &format!("{page}&{}", many.join("&"))).await.status, StatusCode::BAD_REQUEST);
}
