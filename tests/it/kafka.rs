//! `sightflow serve` and `sightflow backfill` against a real Kafka-compatible broker
//! (tansu with SQLite storage) on a free loopback port. `make test` installs tansu; set
//! `TANSU` to use another binary.
//!
//! Shown here: recordings imported over HTTP through Kafka give the batch views, with two
//! workers on four partitions and with one worker; garbage messages in the topic are
//! counted and skipped; backfill from the earliest offset and from a timestamp, with its
//! progress lines; a `kill -9` of the engine mid-stream; the broker stopped and started
//! again while ingest goes on (503, then nothing acknowledged lost).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ServerProcess, assert_same_views, fixtures, free_port, now_ms, recordings, rows, tables};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

fn tansu() -> PathBuf {
    if let Ok(t) = std::env::var("TANSU") {
        return PathBuf::from(t);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("tansu");
        if p.exists() {
            return p;
        }
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    assert!(home.exists(), "these tests need the tansu broker: run `make test` (it installs it) or set TANSU");
    home
}

/// A tansu broker with SQLite storage in its own directory.
struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = Broker { dir, port: free_port(), child: None };
        b.up();
        b
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let url = format!("tcp://{}", self.addr());
        let child = Command::new(tansu())
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker"])
            .arg(format!("tcp://{}", self.addr()))
            .output()
            .unwrap();
        assert!(out.status.success(), "topic create: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Writes raw messages (not sightflow records) to a partition.
    fn produce_garbage(&self, topic: &str, partition: i32, values: &[&[u8]]) {
        let p: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", self.addr()).set("acks", "all").create().unwrap();
        for v in values {
            p.send(BaseRecord::<(), [u8]>::to(topic).partition(partition).payload(v)).unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.down();
    }
}

fn config(broker: &Broker, topic: &str, workers: usize, idempotence: bool) -> String {
    format!(
        "[engine]\nworkers = {workers}\nallowed_lateness_ms = 100\nidle_timeout_ms = 100\ntick_ms = 50\n\
         [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\nproduce_timeout_ms = 2000\nidempotence = {idempotence}\n",
        broker.addr()
    )
}

fn import(url: &str, file: &str, device: &str, chunk: usize) -> Child {
    crate::common::import(url, file, device, chunk, 90)
}

fn import_all(url: &str, files: &[(String, String)], chunk: usize) {
    for (file, device) in files {
        let out = import(url, file, device, chunk).wait_with_output().unwrap();
        assert!(out.status.success(), "import of {file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs `sightflow backfill ... --serve` and returns the process, its URL and the
/// progress lines it printed.
fn backfill(config_file: &Path, from: &str, out: &Path) -> (Child, String, String) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightflow"))
        .args(["backfill", "--config"])
        .arg(config_file)
        .arg("--data-dir")
        .arg(config_file.parent().unwrap().join("data"))
        .args(["--from", from, "--until", "end", "--progress", "lines", "--out"])
        .arg(out)
        .args(["--serve", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "backfill ended early: {printed}");
        printed.push_str(&line);
        if line.starts_with("serving the backfilled views") {
            break;
        }
    }
    let mut stderr = String::new();
    // Progress lines come before the views are served; the rest of stderr is empty.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let last = line.contains("ETA 0s") && line.contains("(100%)");
        stderr.push_str(&line);
        if last {
            break;
        }
    }
    eprintln!("--- backfill --from {from} ---\n{stderr}{printed}");
    let url = format!("http://127.0.0.1:{port}");
    // The backfill's server reads the accounts of the data directory it was given.
    crate::common::register_token(
        &url,
        &crate::common::owner_token(config_file, &config_file.parent().unwrap().join("data")),
    );
    (child, url, format!("{stderr}{printed}"))
}

#[test]
fn kafka_ingest_two_workers_garbage_and_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("events", 4);
    let files = recordings();
    let (first, second) = files.split_at(4);

    let two = ServerProcess::start(&dir.path().join("two"), free_port(), &config(&broker, "events", 2, true));
    let health = two.wait_ready();
    assert_eq!(health["details"]["partitions"].as_array().unwrap().len(), 4, "{health}");
    import_all(&two.url, first, 40);
    // Messages that are not sightflow records, between valid ones.
    broker.produce_garbage("events", 0, &[b"not json", b"{\"type\": 3}"]);
    broker.produce_garbage("events", 3, &[&[0xff, 0x00, 0x13]]);
    std::thread::sleep(Duration::from_millis(1100));
    let split = chrono::DateTime::from_timestamp_millis(now_ms() as i64).unwrap().to_rfc3339();
    std::thread::sleep(Duration::from_millis(100));
    import_all(&two.url, second, 40);
    assert_same_views(&two.url, &files, now_ms(), "Kafka with two workers");
    assert_eq!(two.metric("sightflow_kafka_malformed_total"), 3);
    let health = two.wait_ready();
    for p in health["details"]["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "caught up: {health}");
    }

    // One worker reading the same topic from the start gives the same views.
    let one = ServerProcess::start(&dir.path().join("one"), free_port(), &config(&broker, "events", 1, true));
    one.wait_ready();
    assert_same_views(&one.url, &files, 0, "Kafka with one worker");
    drop(one);

    // Backfill from the earliest offset: exactly the live run's views.
    let cfg = dir.path().join("two/sightflow.toml");
    let (mut bf, url, log) = backfill(&cfg, "earliest", &dir.path().join("parquet"));
    assert!(log.contains("backfill: ") && log.contains("partitions 0:"), "progress lines: {log}");
    assert!(log.contains("3 malformed skipped"), "{log}");
    for table in tables() {
        assert_eq!(rows(&url, table, 0), rows(&two.url, table, 0), "{table}: backfill from earliest vs live");
        assert!(dir.path().join(format!("parquet/{table}.parquet")).exists());
    }
    assert!(log.contains(&format!("wrote sessions: {} rows", rows(&two.url, "sessions", 0).len())), "{log}");
    let _ = bf.kill();
    let _ = bf.wait();

    // From a timestamp: the views of the events appended from then on.
    let (mut bf, url, _) = backfill(&cfg, &split, &dir.path().join("parquet-late"));
    assert_same_views(&url, second, 0, "a backfill from a timestamp");
    let _ = bf.kill();
    let _ = bf.wait();
}

#[test]
fn engine_killed_and_broker_down_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("events", 3);
    let files: Vec<(String, String)> = recordings()
        .into_iter()
        .filter(|(f, _)| f.starts_with("05") || f.starts_with("06") || f.starts_with("02"))
        .collect();
    // tansu 0.6 stops serving after the producer-epoch bump an idempotent producer does
    // once a message timed out (as they do while the broker is down): this test runs
    // without idempotence, and retried batches are dropped by their batch id on reading.
    // One ingest slot: a request waiting for the broker must not hold it. A request
    // waits for the slot up to 1 s, less than the broker's 2 s produce timeout but more
    // than the other's decode and replay write take on a loaded machine (at the default
    // 50 ms, a debug build's slow fsync got one of the two shed as overloaded).
    let cfg = config(&broker, "events", 1, false) + "[ingest]\nmax_in_flight = 1\nmax_queue_ms = 1000\n";
    let port = free_port();
    let server = ServerProcess::start(&dir.path().join("srv"), port, &cfg);
    server.wait_ready();

    // kill -9 mid-stream, with the importer retrying.
    let mut importer = import(&server.url, &files[1].0, &files[1].1, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("sightflow_events_accepted_total") < 20 {
        assert!(Instant::now() < deadline, "the import did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    assert!(importer.try_wait().unwrap().is_none(), "the import was still running when the engine died");
    std::thread::sleep(Duration::from_millis(300));
    let server = ServerProcess::start(&dir.path().join("srv"), port, &cfg);
    let out = importer.wait_with_output().unwrap();
    assert!(out.status.success(), "the import finishes after the restart: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" retries"), "{}", String::from_utf8_lossy(&out.stdout));
    server.wait_ready();
    assert_same_views(&server.url, &files[1..2], now_ms(), "a restarted engine");

    // Broker down: ingest answers 503 and acknowledges nothing.
    broker.down();
    let body = std::fs::read_to_string(fixtures().join(&files[0].0)).unwrap();
    let first: Vec<Value> = serde_json::from_str(&body).unwrap();
    let chunk = serde_json::to_string(&first[..5]).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent
        .post(&format!("{}/api/v1/projects/demo/devices/{}/rrweb", server.url, files[0].1))
        .content_type("application/json")
        .send(chunk.as_str())
        .unwrap();
    assert_eq!(r.status(), 503, "ingest while the broker is down");
    // Two at once, with one ingest slot: both wait for the broker (and are refused
    // naming it), neither is shed as overload while the other waits.
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let posts: Vec<_> = ["down-a", "down-b"]
            .into_iter()
            .map(|device| {
                let (agent, chunk, url) = (agent.clone(), chunk.clone(), server.url.clone());
                s.spawn(move || {
                    let mut r = agent
                        .post(&format!("{url}/api/v1/projects/demo/devices/{device}/rrweb"))
                        .content_type("application/json")
                        .send(chunk.as_str())
                        .unwrap();
                    (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (status, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("broker") && !body.contains("overloaded"), "{body}");
    }
    // An importer keeps retrying while the broker is down; bring it back.
    let importer = import(&server.url, &files[0].0, &files[0].1, 25);
    std::thread::sleep(Duration::from_secs(3));
    broker.up();
    let out = importer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the import finishes once the broker is back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    import_all(&server.url, &files[2..], 40);
    // The engine reconnected by itself: every acknowledged event is in the views.
    assert_same_views(&server.url, &files, now_ms(), "the engine after the broker came back");
}
