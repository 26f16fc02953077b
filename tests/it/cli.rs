//! The `sightflow` binary: batch queries, bad input, config checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sightflow"))
}

fn fixture(name: &str) -> PathBuf {
    crate::common::fixtures().join(name)
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("the binary runs");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn query_prints_json_rows() {
    let (ok, out, err) = run(bin().args(["query", "--rrweb"]).arg(fixture("02-rage.json")).args([
        "--device",
        "d2",
        "--sql",
        "select device_id, clicks, rage_clicks, dead_clicks from sessions",
        "--format",
        "json",
    ]));
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows, serde_json::json!([{"device_id": "d2", "clicks": 8, "rage_clicks": 1, "dead_clicks": 6}]));
}

#[test]
fn query_prints_csv_and_tables() {
    let base = |fmt: &str| {
        let mut c = bin();
        c.args(["query", "--rrweb"]).arg(fixture("04-error.json")).args([
            "--device",
            "d4",
            "--sql",
            "select count(*) as n, sum(error_clicks) as e from sessions",
            "--format",
            fmt,
        ]);
        c
    };
    let (ok, out, _) = run(&mut base("csv"));
    assert!(ok);
    assert_eq!(out, "n,e\n1,2\n");
    let (ok, out, _) = run(&mut base("table"));
    assert!(ok);
    assert!(out.contains("| n | e |") && out.contains("(1 rows, as_of "), "{out}");
}

/// `query --url` asks a server and prints its answer as batch mode prints its own.
#[test]
fn query_on_a_server_prints_as_batch_mode_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n";
    let server = crate::common::ServerProcess::start(dir.path(), crate::common::free_port(), config);
    server.wait_ready();
    let out = crate::common::import(&server.url, "04-error.json", "d4", 50, 30).wait_with_output().unwrap();
    let token = crate::common::import_token(&String::from_utf8_lossy(&out.stdout)).expect("a visibility token");
    let sql = "select count(*) as n, sum(error_clicks) as e from sessions";
    let on_server = |fmt: &str| {
        let mut c = bin();
        c.args(["query", "--url", &server.url, "--token", &server.token, "--min-as-of", &token.to_string()]);
        c.args(["--sql", sql, "--format", fmt]);
        run(&mut c)
    };
    let (ok, out, err) = on_server("csv");
    assert!(ok, "{err}");
    assert_eq!(out, "n,e\n1,2\n");
    let (ok, out, _) = on_server("table");
    assert!(ok && out.contains("| n | e |") && out.contains("(1 rows, as_of "), "{out}");
    let (ok, out, _) = on_server("json");
    assert!(ok);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), serde_json::json!([{"n": 1, "e": 2}]));
    let (ok, _, err) =
        run(bin().args(["query", "--url", &server.url, "--token", &server.token, "--sql", "select nope"]));
    assert!(!ok && err.contains("server answered 400") && err.contains("nope"), "{err}");
    let (ok, _, err) =
        run(bin().args(["query", "--url", &server.url, "--sql", "select 1"]).env_remove("SIGHTFLOW_TOKEN"));
    assert!(!ok && err.contains("--url needs an API token"), "{err}");
    let (ok, _, err) =
        run(bin().args(["query", "--url", &server.url, "--token", "sf_forged_0000", "--sql", "select 1"]));
    assert!(!ok && err.contains("server answered 401") && err.contains("not valid"), "{err}");
}

#[test]
fn bad_input_is_reported_by_position_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A recording with an event that is not an rrweb event (no type) in position 2 and a
    // scroll without y (well-formed: kept, counted as activity) in position 3, cut off in
    // its last event.
    let text = std::fs::read_to_string(fixture("03-dead.json")).unwrap();
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut parts: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    parts.insert(2, r#"{"timestamp": 1795342072700, "data": {"source": 3, "id": 1}}"#.into());
    parts.insert(3, r#"{"type": 3, "timestamp": 1795342072700, "data": {"source": 3, "id": 1}}"#.into());
    let n = parts.len();
    let mut broken = format!("[{}", parts.join(","));
    broken.truncate(broken.len() - 20);
    let rec = write(dir.path(), "broken.json", &broken);
    // NDJSON with a missing device, an absurd timestamp, invalid JSON and one good event.
    let ndjson = [
        r#"{"type": "click", "ts": 1795342000000, "x": 1, "y": 2}"#,
        r#"{"type": "click", "device_id": "e1", "ts": 12, "x": 1, "y": 2}"#,
        r#"{"type": "click", "device_id": "e1", "ts": 17953420"#,
        r#"{"type": "page_view", "device_id": "e1", "ts": 1795342000000, "url": "http://x.test/"}"#,
    ]
    .join("\n");
    let events_file = write(dir.path(), "events.ndjson", &ndjson);
    let (ok, out, err) = run(bin()
        .args(["query", "--rrweb"])
        .arg(&rec)
        .args(["--device", "d3", "--events"])
        .arg(&events_file)
        .args(["--sql", "select device_id, page_views, clicks from sessions order by device_id", "--format", "json"]));
    assert!(ok, "bad events do not fail the run: {err}");
    assert!(err.contains("event 2: rrweb event has no integer `type`"), "{err}");
    assert!(!err.contains("broken.json: event 3:"), "a well-formed event is kept: {err}");
    assert!(err.contains(&format!("event {}: truncated", n - 1)), "{err}");
    assert!(err.contains("event 1: `device_id` is missing"), "{err}");
    assert!(err.contains("event 2: `ts` 12 is outside the accepted range"), "{err}");
    assert!(err.contains("event 3: invalid JSON"), "{err}");
    assert!(err.contains("5 events rejected"), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The recording lost only its last (cut) event: all four clicks are still there.
    assert_eq!(
        rows,
        serde_json::json!([
            {"device_id": "d3", "page_views": 1, "clicks": 4},
            {"device_id": "e1", "page_views": 1, "clicks": 0},
        ])
    );
}

#[test]
fn two_recordings_of_one_device_are_two_tabs() {
    let q = "select count(*) as bursts, sum(clicks) as clicks from rage_clicks";
    let (ok, one, err) = run(bin()
        .args(["query", "--rrweb"])
        .arg(fixture("02-rage.json"))
        .args(["--device", "d", "--sql", q, "--format", "csv"]));
    assert!(ok, "{err}");
    let (ok, two, err) = run(bin()
        .args(["query", "--rrweb"])
        .arg(fixture("02-rage.json"))
        .args(["--device", "d", "--rrweb"])
        .arg(fixture("02-rage.json"))
        .args(["--device", "d", "--sql", q, "--format", "csv"]));
    assert!(ok, "{err}");
    let n: Vec<u64> = one.lines().nth(1).unwrap().split(',').map(|x| x.parse().unwrap()).collect();
    // Each file is its own tab, so each has its own burst with its own clicks; merged
    // into one tab, the copies' clicks would interleave into one burst.
    assert_eq!(two, format!("bursts,clicks\n{},{}\n", 2 * n[0], 2 * n[1]));
    let (ok, _, err) = run(bin()
        .args(["query", "--rrweb"])
        .arg(fixture("02-rage.json"))
        .args(["--device", "d", "--tab", "a", "--tab", "b", "--sql", "select 1"]));
    assert!(!ok && err.contains("--tab"), "{err}");
}

#[test]
fn deeply_nested_sql_is_answered_or_refused_never_a_crash() {
    for (sql, want) in [
        (format!("select {}", vec!["1"; 1000].join("+")), Some("1000")),
        (format!("select {}", vec!["true"; 1000].join(" and ")), Some("true")),
        (format!("select {}", vec!["'a'"; 1000].join(" || ")), None),
        (vec!["select 1 as x"; 1000].join(" union all "), None),
        (format!("select {}1{}", "(".repeat(5000), ")".repeat(5000)), None),
    ] {
        let (ok, out, err) = run(bin()
            .args(["query", "--rrweb"])
            .arg(fixture("01-calm.json"))
            .args(["--device", "d", "--format", "csv", "--sql", &sql]));
        assert!(!err.contains("overflow") && !err.contains("panicked"), "{}: {err}", &sql[..40]);
        if let Some(w) = want {
            assert!(ok, "{err}");
            assert_eq!(out.lines().nth(1), Some(w), "{out}");
        } else {
            assert!(ok || err.contains("query failed"), "{err}");
        }
    }
}

#[test]
fn bad_sql_and_missing_inputs_are_errors() {
    let (ok, _, err) =
        run(bin().args(["query", "--rrweb"]).arg(fixture("01-calm.json")).args(["--device", "d", "--sql", "selec 1"]));
    assert!(!ok);
    assert!(err.contains("query failed") && err.to_lowercase().contains("selec"), "{err}");
    let (ok, _, err) = run(bin().args(["query", "--rrweb"]).arg(fixture("01-calm.json")).args(["--sql", "select 1"]));
    assert!(!ok);
    assert!(err.contains("--device"), "{err}");
    let (ok, _, err) = run(bin().args(["query", "--rrweb"]).arg(fixture("01-calm.json")).args([
        "--device",
        "d",
        "--sql",
        "copy sessions to '/tmp/x.csv'",
    ]));
    assert!(!ok);
    assert!(err.contains("read-only"), "{err}");
    let (ok, _, err) = run(bin().args(["query", "--rrweb", "/nonexistent.json", "--device", "d", "--sql", "select 1"]));
    assert!(!ok);
    assert!(err.contains("cannot read /nonexistent.json"), "{err}");
}

#[test]
fn config_check_prints_the_effective_config_or_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[signals.rage]\nmin_clicks = 4\n");
    let (ok, out, err) = run(bin().args(["config", "check"]).arg(&good));
    assert!(ok, "{err}");
    assert!(out.contains("min_clicks = 4") && out.contains("idle_gap_ms = 1800000"), "{out}");
    let bad = write(dir.path(), "bad.toml", "[signals.rage]\nmin_clicks = \"many\"\n");
    let (ok, _, err) = run(bin().args(["config", "check"]).arg(&bad));
    assert!(!ok);
    assert!(err.contains("signals.rage.min_clicks") && err.contains("many"), "{err}");
    let (ok, _, err) = run(bin().args(["config", "check"]).arg(&good).env("SIGHTFLOW__ENGINE__TICK_MS", "0"));
    assert!(!ok);
    assert!(err.contains("engine.tick_ms"), "{err}");
    // Secrets are not printed.
    let secret = write(
        dir.path(),
        "kafka.toml",
        "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"ops\"\n",
    );
    let (ok, out, err) = run(bin().args(["config", "check"]).arg(&secret));
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2") && out.contains("<redacted>") && out.contains("ops"), "{out}");
}

#[test]
fn serve_with_an_unreachable_broker_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = write(dir.path(), "k.toml", &format!("[kafka]\nbrokers = \"127.0.0.1:{port}\"\n"));
    let started = std::time::Instant::now();
    let (ok, _, err) = run(bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--pg-listen", "", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "error"));
    assert!(!ok);
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{err}");
    assert!(err.contains("error: kafka") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn workers_from_config_give_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "two.toml", "[engine]\nworkers = 2\n");
    let q = "select session_id, clicks, dead_clicks, rage_clicks from sessions order by session_id";
    let mut one = bin();
    one.args(["query", "--rrweb"]).arg(fixture("08-two_sessions.json")).args(["--device", "d8", "--sql", q]);
    let mut two = bin();
    two.args(["query", "--config"])
        .arg(&cfg)
        .arg("--rrweb")
        .arg(fixture("08-two_sessions.json"))
        .args(["--device", "d8", "--sql", q]);
    let (a, b) = (run(&mut one), run(&mut two));
    assert!(a.0 && b.0, "{} {}", a.2, b.2);
    assert_eq!(a.1, b.1);
    assert!(a.1.contains("(2 rows, as_of "), "{}", a.1);
}

/// A backfill whose read fails (a sealed segment damaged on disk) exits non-zero, names
/// the partition and offset, and writes no views as if they were complete.
#[test]
fn a_backfill_over_a_damaged_log_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n\
                  [log]\npartitions = 1\nsegment_bytes = 4096\n";
    let server = crate::common::ServerProcess::start(dir.path(), crate::common::free_port(), config);
    server.wait_ready();
    let now = crate::common::now_ms();
    for batch in 0..40 {
        let events: Vec<serde_json::Value> = (0..5)
            .map(|i| {
                serde_json::json!({"type": "page_view", "device_id": format!("d{batch}-{i}"),
                    "ts": now, "url": format!("http://x.test/{batch}/{i}")})
            })
            .collect();
        let r = ureq::post(&format!("{}/api/v1/track?key=demo", server.url))
            .content_type("application/json")
            .send(serde_json::Value::Array(events).to_string().as_str())
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    server.kill();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.path().join("data/log/p0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "the log rolled over segments: {segments:?}");
    let mut data = std::fs::read(&segments[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&segments[0], &data).unwrap();

    let out = dir.path().join("views");
    let (ok, stdout, stderr) = run(bin()
        .args(["backfill", "--config"])
        .arg(dir.path().join("sightflow.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--from", "earliest", "--progress", "none", "--out"])
        .arg(&out));
    assert!(!ok, "a damaged log fails the backfill: {stdout}{stderr}");
    assert!(stderr.contains("partition 0 at offset "), "names where: {stderr}");
    assert!(!stdout.contains("wrote"), "{stdout}");
    let written: Vec<_> = std::fs::read_dir(&out).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(written.is_empty(), "no Parquet written: {written:?}");
}
