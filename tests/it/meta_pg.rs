//! The metadata store in a real PostgreSQL server (started here on a free loopback
//! port): migrations, accounts and tokens, and two `serve` processes sharing it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sightflow_config::access::{Grant, Role};
use sightflow_connectors::meta::{MetaStore, NewProject};

use crate::common::{ServerProcess, free_port};

/// A PostgreSQL 15 server of the machine's image, in a temporary directory.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

const PASSWORD: &str = "pg-secret-for-tests";

impl Postgres {
    fn bin(name: &str) -> PathBuf {
        for dir in ["/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin"] {
            let p = PathBuf::from(dir).join(name);
            if p.exists() {
                return p;
            }
        }
        PathBuf::from(name)
    }

    /// Runs a server program, as the `postgres` user when we are root (initdb refuses root).
    fn run(&self, name: &str, args: &[&str]) {
        let root = rustix::process::geteuid().is_root();
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(name));
            c
        } else {
            Command::new(Self::bin(name))
        };
        let out = c.args(args).output().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let pg = Postgres { port: free_port(), dir };
        let d = pg.dir.path();
        std::fs::write(d.join("pw"), PASSWORD).unwrap();
        if rustix::process::geteuid().is_root() {
            let out = Command::new("chown").args(["-R", "postgres"]).arg(d).output().unwrap();
            assert!(out.status.success());
        }
        let data = d.join("data");
        let pwfile = format!("--pwfile={}", d.join("pw").display());
        pg.run("initdb", &["-D", data.to_str().unwrap(), "-U", "sightflow", "-A", "scram-sha-256", &pwfile]);
        let opts = format!("-p {} -h 127.0.0.1 -k {}", pg.port, d.display());
        let log = d.join("log");
        pg.run("pg_ctl", &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"]);
        pg
    }

    fn url(&self) -> String {
        format!("postgres://sightflow:{PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

#[test]
fn the_store_works_the_same_in_postgres() {
    let pg = Postgres::start();
    let s = MetaStore::open(&pg.url(), std::path::Path::new("/nonexistent")).unwrap();
    assert!(!s.location().contains(PASSWORD), "{}", s.location());
    let v = s.schema_version().unwrap();
    assert!(v >= 1);
    drop(s);
    let s = MetaStore::open(&pg.url(), std::path::Path::new("/nonexistent")).unwrap();
    assert_eq!(s.schema_version().unwrap(), v, "migrations run once");
    let p = s
        .project_add("shop", NewProject { allowed_origins: vec!["https://shop.test".into()], ..Default::default() })
        .unwrap();
    assert_eq!(s.project("shop").unwrap().unwrap(), p);
    s.user_add("ann@shop.test", "a long password", Grant::on("shop", Role::Member)).unwrap();
    assert!(s.verify_password("ann@shop.test", "a long password").unwrap().is_some());
    assert!(s.verify_password("ann@shop.test", "wrong").unwrap().is_none());
    let (secret, row) = s.token_create("ci", Role::Viewer, Some("shop"), "tests").unwrap();
    let principal = s.authenticate_token(&secret).unwrap().unwrap();
    assert_eq!(principal.grants, vec![Grant::on("shop", Role::Viewer)]);
    let u = s.user("ann@shop.test").unwrap().unwrap();
    let (cookie, _) = s.login_create(&u, 60_000).unwrap();
    assert!(s.login(&cookie).unwrap().is_some());
    s.token_revoke(&row.id).unwrap();
    assert!(s.authenticate_token(&secret).unwrap().is_none());
    assert!(s.token(&row.id).unwrap().unwrap().revoked_ms.is_some());
    s.project_delete("shop").unwrap();
    assert!(s.user("ann@shop.test").unwrap().unwrap().grants.is_empty());
    let bad = format!("postgres://sightflow:{PASSWORD}-nope@127.0.0.1:{}/postgres", pg.port);
    let err = MetaStore::open(&bad, std::path::Path::new("/nonexistent")).err().unwrap().to_string();
    assert!(!err.contains(PASSWORD) && err.contains("cannot open"), "{err}");
}

/// Two servers on one PostgreSQL store: a token made once works on both, a project
/// added while they run takes events on both, a revocation holds on both.
#[test]
fn two_servers_share_one_store() {
    let pg = Postgres::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = format!(
        "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n[metadata]\nurl = \"{}\"\n",
        pg.url()
    );
    let servers: Vec<ServerProcess> =
        dirs.iter().map(|d| ServerProcess::start(d.path(), free_port(), &config)).collect();
    for s in &servers {
        s.wait_ready();
    }
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sightflow"))
            .args(args)
            .arg("--config")
            .arg(dirs[0].path().join("sightflow.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (token, _) = cli(&["token", "create", "--role", "viewer", "--name", "shared"]);
    let (key, _) = cli(&["project", "add", "blog"]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let query = |url: &str| {
        agent
            .post(&format!("{url}/api/v1/query"))
            .header("authorization", &format!("Bearer {token}"))
            .content_type("application/json")
            .send("{\"sql\": \"select 1\"}")
            .unwrap()
            .status()
            .as_u16()
    };
    for s in &servers {
        assert_eq!(query(&s.url), 200, "the token works on {}", s.url);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = agent
                .post(&format!("{}/api/v1/track?key={key}", s.url))
                .content_type("application/json")
                .send(
                    format!("[{{\"type\": \"activity\", \"device_id\": \"d\", \"ts\": {}}}]", crate::common::now_ms())
                        .as_str(),
                )
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the new project's key reaches {}", s.url);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    cli(&["token", "revoke", &token[..15]]);
    for s in &servers {
        assert_eq!(query(&s.url), 401, "revoked on {}", s.url);
    }
    let (checked, _) = {
        let out = Command::new(env!("CARGO_BIN_EXE_sightflow"))
            .args(["config", "check"])
            .arg(dirs[0].path().join("sightflow.toml"))
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).to_string(), ())
    };
    assert!(checked.contains("<redacted>") && !checked.contains(PASSWORD), "{checked}");
}
