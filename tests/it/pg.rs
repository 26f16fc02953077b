//! The Postgres wire with the real `psql`, and Grafana's connect and picker queries
//! through a Postgres client library.

use std::process::Command;

use crate::common::{ServerProcess, free_port, import, import_token};

struct Pg {
    server: ServerProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

fn start() -> Pg {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n[server]\npg_listen = \"127.0.0.1:{port}\"\n\
         [query]\ntimeout_ms = 2000\n[projects.demo]\nallowed_origins = []\n[projects.other]\nallowed_origins = []\n"
    );
    let server = ServerProcess::start(dir.path(), free_port(), &config);
    server.wait_ready();
    let out = import(&server.url, "04-error.json", "d4", 50, 30).wait_with_output().unwrap();
    let visible = import_token(&String::from_utf8_lossy(&out.stdout)).unwrap();
    crate::common::rows(&server.url, "sessions", visible);
    Pg { server, port, _dir: dir }
}

/// `psql -c` with a password; (success, stdout, stderr).
fn psql(pg: &Pg, password: &str, command: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "analyst",
            "-d",
            "sightflow",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", command])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs (PostgreSQL 15 client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_lists_describes_and_queries_the_live_views() {
    let pg = start();
    let t = pg.server.token.clone();
    let (ok, out, err) = psql(&pg, &t, "\\dt");
    assert!(ok, "{err}");
    for table in ["sessions", "page_views", "rage_clicks", "heatmap_cells", "element_clicks"] {
        assert!(out.contains(table), "\\dt lists {table}: {out}");
    }
    let (ok, out, err) = psql(&pg, &t, "\\d sessions");
    assert!(ok, "{err}");
    assert!(out.contains("session_id") && out.contains("started_at") && out.contains("timestamp"), "{out}");
    let (ok, out, err) = psql(
        &pg,
        &t,
        "select count(*) as n, sum(error_clicks) as e from sessions where started_at > timestamp '2000-01-01 00:00:00'",
    );
    assert!(ok, "{err}");
    assert!(out.contains(" 1 |") && out.contains("| 2"), "{out}");
    let (ok, out, err) =
        psql(&pg, &t, "prepare q(varchar) as select count(*) from sessions where device_id = $1; execute q('d4')");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.trim() == "1"), "a prepared statement with a parameter: {out}");

    let (ok, _, err) = psql(&pg, "sf_000000000000_0000", "select 1");
    assert!(!ok && err.to_lowercase().contains("password authentication failed"), "{err}");
    let (ok, _, err) = psql(&pg, "demo", "select 1");
    assert!(
        !ok && err.to_lowercase().contains("password authentication failed"),
        "an ingest key is no password: {err}"
    );
    for write in [
        "create table t (a int)",
        "insert into sessions (project) values ('x')",
        "copy sessions to '/tmp/x.csv'",
        "drop table sessions",
    ] {
        let (ok, _, err) = psql(&pg, &t, write);
        assert!(!ok && err.contains("read-only"), "{write}: {err}");
    }
    let started = std::time::Instant::now();
    let (ok, _, err) = psql(&pg, &t, "select sum(value) from generate_series(1, 100000000000)");
    assert!(!ok && err.contains("statement timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "stopped by the 2 s timeout");
    let (ok, out, _) = psql(&pg, &t, "select 1 as still_here");
    assert!(ok && out.contains("still_here"), "{out}");

    // A token of another project sees none of demo's rows, whatever it asks.
    let other = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["token", "create", "--role", "viewer", "--project", "other", "--config"])
        .arg(pg._dir.path().join("sightflow.toml"))
        .arg("--data-dir")
        .arg(pg._dir.path().join("data"))
        .output()
        .unwrap();
    let other = String::from_utf8(other.stdout).unwrap().trim().to_string();
    let (ok, out, err) = psql(&pg, &other, "select count(*) as n from sessions where project = 'demo'");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.trim() == "0"), "{out}");
}

/// Grafana's PostgreSQL data source: its connect checks and its schema, table and
/// column pickers, exactly as it sends them, through the extended protocol.
#[test]
fn grafana_connects_and_picks_tables_and_columns() {
    let pg = start();
    let conn = format!(
        "host=127.0.0.1 port={} user=grafana password={} dbname=sightflow connect_timeout=10",
        pg.port, pg.server.token
    );
    let mut c = postgres::Client::connect(&conn, postgres::NoTls).expect("connects with a token as the password");
    // Health check and version detection.
    c.batch_execute("-- ping").unwrap();
    let v: i64 = c.query_one("SELECT current_setting('server_version_num')::int/100 as version", &[]).unwrap().get(0);
    assert!(v >= 90, "{v}");
    let ts = c.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[]).unwrap();
    assert!(ts.is_empty());
    // The table picker.
    let tables: Vec<String> = c
        .query(
            "select quote_ident(table_name) as \"table\" from information_schema.tables
    where quote_ident(table_schema) not in ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
      and 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )",
            &[],
        )
        .expect("Grafana's table picker")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"sessions".to_string()) && tables.contains(&"funnel_steps".to_string()), "{tables:?}");
    // The column picker.
    let columns: Vec<(String, String)> = c
        .query(
            "select quote_ident(column_name) as \"column\", data_type as \"type\"
    from information_schema.columns
    where quote_ident(table_name) = 'sessions'",
            &[],
        )
        .expect("Grafana's column picker")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(columns.iter().any(|(c, _)| c == "started_at") && columns.len() > 15, "{columns:?}");
    // A panel query with Grafana's expanded time macros and a parameter.
    let rows = c
        .query(
            "SELECT started_at AS \"time\", clicks FROM sessions WHERE started_at BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' AND device_id = $1 ORDER BY 1",
            &[&"d4"],
        )
        .expect("a time-series panel query");
    assert_eq!(rows.len(), 1);
    let clicks: i64 = rows[0].get(1);
    assert_eq!(clicks, 3);
}

fn token(pg: &Pg, role: &str, project: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sightflow"));
    c.args(["token", "create", "--role", role]).arg("--config").arg(pg._dir.path().join("sightflow.toml"));
    c.arg("--data-dir").arg(pg._dir.path().join("data"));
    if let Some(p) = project {
        c.args(["--project", p]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The Postgres port's row of the access matrix: who connects, and what they see.
#[test]
fn every_credential_on_the_postgres_port() {
    let pg = start();
    let revoked = token(&pg, "owner", None);
    let revoke = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["token", "revoke", &revoked[..15], "--config"])
        .arg(pg._dir.path().join("sightflow.toml"))
        .arg("--data-dir")
        .arg(pg._dir.path().join("data"))
        .output()
        .unwrap();
    assert!(revoke.status.success());
    // (who, password, connects, demo rows seen)
    let cases = [
        ("no credential", String::new(), false, 0),
        ("an ingest key", "demo".to_string(), false, 0),
        ("viewer", token(&pg, "viewer", Some("demo")), true, 1),
        ("member", token(&pg, "member", Some("demo")), true, 1),
        ("admin", token(&pg, "admin", Some("demo")), true, 1),
        ("owner", token(&pg, "owner", None), true, 1),
        ("a token of another project", token(&pg, "owner", Some("other")), true, 0),
        ("a revoked token", revoked, false, 0),
    ];
    for (who, password, connects, seen) in cases {
        let conn = format!("host=127.0.0.1 port={} user=u password='{password}' dbname=d connect_timeout=10", pg.port);
        match postgres::Client::connect(&conn, postgres::NoTls) {
            Ok(mut c) => {
                assert!(connects, "{who} connected");
                let n: i64 = c
                    .query_one("select count(*) from sessions where project = 'demo'", &[])
                    .unwrap_or_else(|e| panic!("{who}: {e}"))
                    .get(0);
                assert_eq!(n, seen, "{who} sees {n} demo sessions");
            }
            Err(e) => {
                assert!(!connects, "{who} was refused: {e}");
                let text = format!("{e:?}").to_lowercase();
                assert!(text.contains("password authentication failed"), "{who}: {text}");
            }
        }
    }
}

#[test]
fn a_users_password_on_the_postgres_port_has_the_consoles_login_limits() {
    let pg = start();
    let mut add = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["user", "add", "pat@shop.test", "--role", "viewer", "--project", "demo", "--config"])
        .arg(pg._dir.path().join("sightflow.toml"))
        .arg("--data-dir")
        .arg(pg._dir.path().join("data"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin.take().unwrap().write_all(b"pats long password\n").unwrap();
    assert!(add.wait().unwrap().success());
    let connect = |password: &str| {
        let conn = format!(
            "host=127.0.0.1 port={} user=Pat@Shop.test password='{password}' dbname=d connect_timeout=10",
            pg.port
        );
        postgres::Client::connect(&conn, postgres::NoTls).map(|_| ()).map_err(|e| format!("{e:?}"))
    };
    // The password works, as the email's login (any case of it).
    connect("pats long password").unwrap();
    // Four wrong guesses, and the fifth attempt per minute is the last one allowed.
    for _ in 0..4 {
        let e = connect("guess").unwrap_err();
        assert!(e.to_lowercase().contains("password authentication failed"), "{e}");
    }
    // Now even the right password waits: guessing costs the guesser, not the server.
    let e = connect("pats long password").unwrap_err();
    assert!(e.contains("too many login attempts for pat@shop.test"), "{e}");
    // An API token is not an email's password: it still connects.
    let t = token(&pg, "viewer", Some("demo"));
    let conn = format!("host=127.0.0.1 port={} user=u password='{t}' dbname=d connect_timeout=10", pg.port);
    postgres::Client::connect(&conn, postgres::NoTls).unwrap();
}
