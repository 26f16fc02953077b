//! Helpers shared by the end-to-end tests that run the `sightflow` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sightflow::batch::{self, Input};
use sightflow_config::Config;
use sightflow_dataflows::Snapshot;

/// Tables compared with batch mode: every view (the state table describes the process,
/// not the events).
pub fn tables() -> impl Iterator<Item = &'static str> {
    sightflow_dataflows::ViewId::ALL.iter().map(|v| v.name())
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rrweb")
}

/// (file, device id) of every fixture recording.
pub fn recordings() -> Vec<(String, String)> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    m["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["file"].as_str().unwrap().to_string(), r["device_id"].as_str().unwrap().to_string()))
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The API token each server URL of these tests is read with.
static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Reads the server at `url` with `token` from now on.
pub fn register_token(url: &str, token: &str) {
    let mut t = TOKENS.lock().unwrap();
    t.retain(|(u, _)| u != url);
    t.push((url.to_string(), token.to_string()));
}

/// The token registered for `url`.
pub fn token_for(url: &str) -> String {
    TOKENS.lock().unwrap().iter().find(|(u, _)| u == url).map(|(_, t)| t.clone()).unwrap_or_default()
}

/// `sightflow token create` of an owner token in the metadata store of a data directory.
pub fn owner_token(config_file: &Path, data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["token", "create", "--role", "owner", "--name", "tests", "--config"])
        .arg(config_file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sf_") && !token.contains('\n'), "only the token on stdout: {token:?}");
    token
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Rows of a table on a server (as sorted JSON objects), once the views reach `min_as_of`.
pub fn rows(url: &str, table: &str, min_as_of: u64) -> Vec<String> {
    let body = serde_json::json!({"sql": format!("select * from {table}"), "min_as_of": min_as_of}).to_string();
    let mut r = ureq::post(&format!("{url}/api/v1/query"))
        .header("authorization", &format!("Bearer {}", token_for(url)))
        .content_type("application/json")
        .send(body.as_str())
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let cols: Vec<String> = v["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let mut rows: Vec<String> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Value::Object(cols.iter().cloned().zip(r.as_array().unwrap().iter().cloned()).collect()).to_string())
        .collect();
    rows.sort();
    rows
}

/// `sightflow import` of a fixture recording, retrying for `retry_for_s`.
pub fn import(url: &str, file: &str, device: &str, chunk: usize, retry_for_s: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["import", "--url", url, "--project", "demo", "--device", device, "--chunk", &chunk.to_string()])
        .args(["--retry-for", &retry_for_s.to_string()])
        .arg(fixtures().join(file))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `min_as_of` an import printed (read your writes), if it printed one.
pub fn import_token(stdout: &str) -> Option<u64> {
    stdout.split("visible from as_of ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Every view computed by batch mode from the recordings, as sorted JSON rows.
pub fn batch_rows(files: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let inputs: Vec<Input> = files
        .iter()
        .map(|(f, d)| Input::Rrweb { path: fixtures().join(f), device: d.clone(), tab: String::new() })
        .collect();
    let loaded = batch::load(&inputs, "demo", now_ms() as i64).unwrap();
    let snap: Arc<Snapshot> = batch::run(&Config::defaults(), loaded.envelopes).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tables()
        .map(|t| {
            let r = rt
                .block_on(sightflow_query::execute(&snap, &format!("select * from {t}"), &Default::default()))
                .unwrap();
            let mut rows: Vec<String> =
                sightflow_query::format::rows_as_objects(&r).iter().map(|v| v.to_string()).collect();
            rows.sort();
            (t.to_string(), rows)
        })
        .collect()
}

/// Every view on the server at `url` equals batch mode over `files`.
pub fn assert_same_views(url: &str, files: &[(String, String)], min_as_of: u64, what: &str) {
    for (table, want) in batch_rows(files) {
        let got = rows(url, &table, min_as_of);
        assert_eq!(got, want, "{table} differs between {what} and batch mode");
    }
}

/// A `sightflow serve` process on a loopback port, its config in `dir/sightflow.toml`
/// and its data in `dir/data`; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    /// An owner token of the server's metadata store.
    pub token: String,
}

impl ServerProcess {
    /// Starts the server and waits until it listens.
    pub fn start(dir: &Path, port: u16, config: &str) -> ServerProcess {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("sightflow.toml");
        std::fs::write(&file, config).unwrap();
        let token = owner_token(&file, &dir.join("data"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sightflow"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            // Tests run side by side: each its own Postgres port unless the config names one.
            .args(if config.contains("pg_listen") { vec![] } else { vec!["--pg-listen", "127.0.0.1:0"] })
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on http://127.0.0.1:"), "unexpected first line {line:?}");
        let url = format!("http://127.0.0.1:{port}");
        register_token(&url, &token);
        ServerProcess { child, url, token }
    }

    /// Waits (up to a minute) for `/health` to say ready, and returns it.
    pub fn wait_ready(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut r) = ureq::get(&format!("{}/health", self.url)).call()
                && r.status() == 200
            {
                return serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            }
            assert!(Instant::now() < deadline, "the server did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rows of a table (as JSON objects, sorted), once the views reach `min_as_of`.
    pub fn rows(&self, table: &str, min_as_of: u64) -> Vec<String> {
        rows(&self.url, table, min_as_of)
    }

    /// A counter or gauge without labels from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        let mut r = ureq::get(&format!("{}/metrics", self.url))
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap();
        let m = r.body_mut().read_to_string().unwrap();
        m.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
