//! The real `sightflow serve` binary on a free loopback port: recordings imported over
//! HTTP with `sightflow import` give exactly the views batch mode gives for the same
//! files, also when the server is killed (`kill -9`) in the middle of an import and
//! started again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, now_ms, recordings};

const CONFIG: &str =
    "[engine]\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n[log]\npartitions = 3\n";

struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(dir: &Path, port: u16) -> ServerProcess {
        let config = dir.join("sightflow.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sightflow"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on http://127.0.0.1:"), "unexpected first line {line:?}");
        ServerProcess { child, url: format!("http://127.0.0.1:{port}") }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = ureq::get(&format!("{}/health", self.url)).call()
                && r.status() == 200
            {
                let _ = r.body_mut().read_to_string();
                return;
            }
            assert!(Instant::now() < deadline, "the server did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rows of a table (as JSON objects, sorted), once the views reach `min_as_of`.
    fn rows(&self, table: &str, min_as_of: u64) -> Vec<String> {
        common::rows(&self.url, table, min_as_of)
    }

    fn kill(mut self) {
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

fn import(url: &str, file: &str, device: &str, chunk: usize) -> Child {
    common::import(url, file, device, chunk, 60)
}

fn assert_same_views(server: &ServerProcess, files: &[(String, String)], min_as_of: u64) {
    common::assert_same_views(&server.url, files, min_as_of, "the server");
}

#[test]
fn imported_recordings_give_the_batch_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), free_port());
    server.wait_ready();
    let files = recordings();
    for (file, device) in &files {
        let out = import(&server.url, file, device, 40).wait_with_output().unwrap();
        assert!(out.status.success(), "import of {file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("imported"), "{}", String::from_utf8_lossy(&out.stdout));
    }
    assert_same_views(&server, &files, now_ms());
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
    let server = ServerProcess::start(dir.path(), port);
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
        let mut r = ureq::get(&format!("{url}/metrics")).call().unwrap();
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
    let server = ServerProcess::start(dir.path(), port);
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
