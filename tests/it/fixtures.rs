//! Every real rrweb recording in `tests/fixtures/rrweb/` (a copy of
//! `shared/data/rrweb/`) run through batch mode: the views must match the ground truth in
//! its `manifest.json`, and no masked secret may appear in any view.

use std::sync::Arc;

use serde_json::Value;
use sightflow::batch::{self, Input};
use sightflow_config::Config;
use sightflow_dataflows::Snapshot;

use crate::common::fixtures;

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

fn run(inputs: &[Input], workers: usize) -> Arc<Snapshot> {
    let mut config = Config::defaults();
    config.engine.workers = workers;
    let loaded = batch::load(inputs, "demo", 1_900_000_000_000).expect("inputs load");
    assert!(loaded.rejected.is_empty(), "fixtures are valid: {:?}", loaded.rejected);
    batch::run(&config, loaded.envelopes).expect("dataflow runs")
}

fn sql(snap: &Snapshot, q: &str) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(sightflow_query::execute(snap, q, &Default::default())).unwrap_or_else(|e| panic!("{q}: {e}"));
    sightflow_query::format::rows_as_objects(&r)
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn ints(rows: &[Value], col: &str) -> Vec<i64> {
    rows.iter().map(|r| int(&r[col])).collect()
}

/// Checks one recording against its manifest entry.
fn check_recording(rec: &Value) {
    let file = rec["file"].as_str().unwrap();
    let device = rec["device_id"].as_str().unwrap();
    let snap = run(&[Input::Rrweb { path: fixtures().join(file), device: device.into(), tab: String::new() }], 1);
    let exp = &rec["expected"];
    let ctx = |what: &str| format!("{file}: {what}");

    // Sessions, with their start and end.
    let sessions = sql(
        &snap,
        "select cast(started_at as bigint) s, cast(ended_at as bigint) e, page_views, clicks, errors, is_live from sessions order by started_at",
    );
    assert_eq!(sessions.len() as i64, int(&exp["sessions"]), "{}", ctx("sessions"));
    for (row, want) in sessions.iter().zip(rec["sessions"].as_array().unwrap()) {
        assert_eq!(int(&row["s"]), int(&want["start_ts"]), "{}", ctx("session start"));
        assert_eq!(int(&row["e"]), int(&want["end_ts"]), "{}", ctx("session end"));
        assert_eq!(row["is_live"], Value::Bool(false), "{}", ctx("a finished recording has no live session"));
    }
    assert_eq!(ints(&sessions, "page_views").iter().sum::<i64>(), int(&exp["page_views"]), "{}", ctx("page views"));
    assert_eq!(ints(&sessions, "clicks").iter().sum::<i64>(), int(&exp["clicks"]), "{}", ctx("clicks"));
    assert_eq!(
        ints(&sessions, "errors").iter().sum::<i64>(),
        int(&exp["uncaught_errors"]),
        "{}",
        ctx("uncaught errors")
    );
    // Every uncaught error, with its time, page and message (the replay links of the
    // console's errors).
    let events = sql(&snap, "select cast(ts as bigint) ts, url, message from error_events order by ts");
    let want_errors = rec["uncaught_errors"].as_array().unwrap();
    assert_eq!(events.len(), want_errors.len(), "{}", ctx("error events"));
    for (row, want) in events.iter().zip(want_errors) {
        assert_eq!(int(&row["ts"]), int(&want["ts"]), "{}", ctx("error time"));
        assert!(row["url"].as_str().unwrap().ends_with(want["page"].as_str().unwrap()), "{}", ctx("error page"));
        assert_eq!(row["message"], want["message"], "{}", ctx("error message"));
    }

    // Page views, with scroll extent.
    let pvs =
        sql(&snap, "select url, cast(ts as bigint) ts, max_scroll_y, deepest_visible_y from page_views order by ts");
    let want_pvs = rec["page_views"].as_array().unwrap();
    assert_eq!(pvs.len(), want_pvs.len(), "{}", ctx("page view rows"));
    for (row, want) in pvs.iter().zip(want_pvs) {
        assert_eq!(row["url"], want["url"], "{}", ctx("page view url"));
        assert_eq!(int(&row["ts"]), int(&want["ts"]), "{}", ctx("page view time"));
        assert_eq!(int(&row["max_scroll_y"]), int(&want["max_scroll_y"]), "{}", ctx("max scroll"));
        assert_eq!(int(&row["deepest_visible_y"]), int(&want["deepest_visible_y"]), "{}", ctx("deepest visible y"));
    }

    // Rage bursts.
    let rage =
        sql(&snap, "select cast(ts as bigint) ts, cast(end_ts as bigint) e, clicks, x, y from rage_clicks order by ts");
    let want = rec["rage_click_bursts"].as_array().unwrap();
    assert_eq!(rage.len() as i64, int(&exp["rage_click_bursts"]), "{}", ctx("rage bursts"));
    for (row, w) in rage.iter().zip(want) {
        assert_eq!(int(&row["ts"]), int(&w["start_ts"]), "{}", ctx("rage start"));
        assert_eq!(int(&row["e"]), int(&w["end_ts"]), "{}", ctx("rage end"));
        assert_eq!(int(&row["clicks"]), int(&w["clicks"]), "{}", ctx("rage clicks"));
        assert_eq!((int(&row["x"]), int(&row["y"])), (int(&w["x"]), int(&w["y"])), "{}", ctx("rage position"));
    }

    // Per element: a burst's clicks are rage clicks of the element it was on (every
    // recording's bursts stay on one element), and the element views add up to the
    // click views.
    let elements =
        sql(&snap, "select selector, clicks, rage_clicks, dead_clicks, error_clicks, sessions from element_clicks");
    for r in &rage {
        let burst =
            sql(&snap, &format!("select selector from rage_clicks where cast(ts as bigint) = {}", int(&r["ts"])));
        let selector = &burst[0]["selector"];
        let el =
            elements.iter().find(|e| e["selector"] == *selector).unwrap_or_else(|| panic!("{}", ctx("burst element")));
        assert!(
            int(&el["rage_clicks"]) >= int(&r["clicks"]),
            "{}: {el}",
            ctx("the burst's element carries its clicks")
        );
    }
    let total = |col: &str| elements.iter().map(|e| int(&e[col])).sum::<i64>();
    assert_eq!(total("clicks"), int(&exp["clicks"]), "{}", ctx("element clicks"));
    assert_eq!(total("dead_clicks"), int(&exp["dead_clicks"]), "{}", ctx("element dead clicks"));
    assert_eq!(total("error_clicks"), int(&exp["error_clicks"]), "{}", ctx("element error clicks"));
    let burst_clicks: i64 = rage.iter().map(|r| int(&r["clicks"])).sum();
    assert_eq!(total("rage_clicks"), burst_clicks, "{}", ctx("element rage clicks"));

    // Dead and error clicks, by time.
    let dead = ints(&sql(&snap, "select cast(ts as bigint) ts from dead_clicks order by ts"), "ts");
    let want: Vec<i64> = rec["dead_clicks"].as_array().unwrap().iter().map(|d| int(&d["ts"])).collect();
    assert_eq!(dead, want, "{}", ctx("dead clicks"));
    assert_eq!(dead.len() as i64, int(&exp["dead_clicks"]), "{}", ctx("dead click count"));
    let err =
        sql(&snap, "select cast(ts as bigint) ts, cast(error_ts as bigint) e, message from error_clicks order by ts");
    let want = rec["error_clicks"].as_array().unwrap();
    assert_eq!(err.len() as i64, int(&exp["error_clicks"]), "{}", ctx("error clicks"));
    for (row, w) in err.iter().zip(want) {
        assert_eq!(int(&row["ts"]), int(&w["ts"]), "{}", ctx("error click time"));
        assert_eq!(int(&row["e"]), int(&w["error_ts"]), "{}", ctx("error time"));
        assert!(row["message"].as_str().unwrap().starts_with("Uncaught"), "{}", ctx("error message"));
    }

    // Quick backs.
    let qb = sql(&snap, "select cast(ts as bigint) ts, dwell_ms from quick_backs order by ts");
    let want = rec["quick_backs"].as_array().unwrap();
    assert_eq!(qb.len() as i64, int(&exp["quick_backs"]), "{}", ctx("quick backs"));
    for (row, w) in qb.iter().zip(want) {
        assert_eq!(int(&row["ts"]), int(&w["left_page_ts"]), "{}", ctx("quick back page"));
        assert_eq!(int(&row["dwell_ms"]), int(&w["dwell_ms"]), "{}", ctx("quick back dwell"));
    }

    // Episodes.
    for (table, key, count_key, count_col) in [
        ("excessive_scrolls", "excessive_scroll", "direction_changes", "reversals"),
        ("thrashed_cursors", "thrashed_cursor", "reversals", "reversals"),
    ] {
        let rows = sql(
            &snap,
            &format!("select cast(ts as bigint) ts, cast(end_ts as bigint) e, {count_col} n from {table} order by ts"),
        );
        let want = rec[key].as_array().unwrap();
        assert_eq!(rows.len() as i64, int(&exp[key]), "{}", ctx(table));
        for (row, w) in rows.iter().zip(want) {
            assert_eq!(int(&row["ts"]), int(&w["start_ts"]), "{}", ctx("episode start"));
            assert_eq!(int(&row["e"]), int(&w["end_ts"]), "{}", ctx("episode end"));
            assert_eq!(int(&row["n"]), int(&w[count_key]), "{}", ctx("episode count"));
        }
    }

    // Funnel: steps reached per session, and the step counts.
    let per_session = ints(
        &sql(&snap, "select steps_reached from session_funnels where funnel = 'signup' order by session_id"),
        "steps_reached",
    );
    let mut got = per_session.clone();
    got.sort();
    let mut want: Vec<i64> =
        rec["expected"]["funnel_steps_reached_per_session"].as_array().unwrap().iter().map(int).collect();
    want.sort();
    assert_eq!(got, want, "{}", ctx("funnel steps per session"));
    let steps =
        sql(&snap, "select step, entered from funnel_steps where funnel = 'signup' and entered > 0 order by step");
    let best = steps.iter().map(|r| int(&r["step"])).max().unwrap_or(0);
    assert_eq!(best, int(&exp["funnel_steps_reached"]), "{}", ctx("funnel steps reached"));

    // Click heatmap: every click lands in the cell of its page coordinates.
    for c in rec["clicks"].as_array().unwrap() {
        let (x, py) = (int(&c["x"]), int(&c["page_y"]));
        let q = format!(
            "select sum(count) n from heatmap_cells where kind = 'click' and url = '{}' and cell_x = {} and cell_y = {}",
            c["url"].as_str().unwrap(),
            x.div_euclid(16),
            py.div_euclid(16)
        );
        let n = sql(&snap, &q)[0]["n"].as_i64().unwrap_or(0);
        assert!(n >= 1, "{}", ctx(&format!("click at {x},{py} missing from the heatmap")));
    }

    // No secret typed into a form appears in any view.
    let mut all = String::new();
    for (name, _, _) in &snap.tables {
        for row in sql(&snap, &format!("select * from {name}")) {
            all.push_str(&row.to_string().to_lowercase());
        }
    }
    for secret in rec["secrets_absent"].as_array().unwrap() {
        let s = secret.as_str().unwrap().to_lowercase();
        assert!(!all.contains(&s), "{}", ctx(&format!("secret {s:?} leaked into a view")));
    }
}

#[test]
fn every_recording_matches_its_ground_truth() {
    let m = manifest();
    for rec in m["recordings"].as_array().unwrap() {
        check_recording(rec);
    }
}

#[test]
fn all_recordings_together_with_two_workers_give_the_same_views() {
    let m = manifest();
    let inputs: Vec<Input> = m["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Input::Rrweb {
            path: fixtures().join(r["file"].as_str().unwrap()),
            device: r["device_id"].as_str().unwrap().into(),
            tab: String::new(),
        })
        .collect();
    let one = run(&inputs, 1);
    let two = run(&inputs, 2);
    // The same input streamed to two workers in time order, never held by the source.
    let streamed = {
        let mut all = batch::load(&inputs, "demo", 1_900_000_000_000).expect("inputs load").envelopes;
        all.sort_by_key(|e| e.ts);
        let all = Arc::new(all);
        let mut config = Config::defaults();
        config.engine.workers = 2;
        batch::run_streams(&config, move |i| {
            let all = all.clone();
            Box::new((0..all.len()).filter(move |k| k % 2 == i).map(move |k| all[k].clone()))
        })
        .expect("dataflow runs")
    };
    for (name, _, _) in &one.tables {
        if *name == "sightflow_state" {
            continue;
        }
        // Tables have no row order: compare them as sorted lists of rows.
        let sorted = |snap| {
            let mut rows: Vec<String> =
                sql(snap, &format!("select * from {name}")).iter().map(|r| r.to_string()).collect();
            rows.sort();
            rows
        };
        assert_eq!(sorted(&one), sorted(&two), "{name} differs between 1 and 2 workers");
        assert_eq!(sorted(&one), sorted(&streamed), "{name} differs when streamed");
    }
    let totals = sql(
        &one,
        "select count(*) n, sum(clicks) c, sum(rage_clicks) r, sum(dead_clicks) d, sum(error_clicks) e from sessions",
    );
    let exp = |k: &str| m["recordings"].as_array().unwrap().iter().map(|r| int(&r["expected"][k])).sum::<i64>();
    assert_eq!(int(&totals[0]["n"]), exp("sessions"));
    assert_eq!(int(&totals[0]["c"]), exp("clicks"));
    assert_eq!(int(&totals[0]["r"]), exp("rage_click_bursts"));
    assert_eq!(int(&totals[0]["d"]), exp("dead_clicks"));
    assert_eq!(int(&totals[0]["e"]), exp("error_clicks"));
}
