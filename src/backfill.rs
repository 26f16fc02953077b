//! Backfill: re-read the event log (the Kafka topic when one is configured, else the
//! embedded log) from a start position to an end through the same dataflow into a fresh
//! view state, reporting progress as it goes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightflow_config::{Config, StartAt};
use sightflow_connectors::kafka::{self, KafkaFailure, KafkaReader};
use sightflow_connectors::log::{Log, LogError};
use sightflow_connectors::source::{KafkaSource, LogSource, SourceStats};
use sightflow_dataflows::{Empty, RunError, RunOptions, Snapshot, Snapshots, Source, start};
use sightflow_operators::Params;

use crate::kafka::kafka_options;
use crate::serve::log_options;

/// Where a backfill ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Until {
    /// The end of every partition when the backfill starts.
    End,
    /// The last record appended before this time (ms since the epoch).
    Time(i64),
}

/// A text that is not an end position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an end: expected `end` or an RFC 3339 time like 2026-11-22T10:00:00Z")]
pub struct BadUntil(String);

impl std::str::FromStr for Until {
    type Err = BadUntil;
    fn from_str(s: &str) -> Result<Until, BadUntil> {
        if s.trim() == "end" {
            return Ok(Until::End);
        }
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Until::Time(t.timestamp_millis()))
            .map_err(|_| BadUntil(s.to_string()))
    }
}

/// Why a backfill could not read its input or finish.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// The dataflow stopped: a read failed (the partition and offset), or a thread did.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// How progress is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressOutput {
    /// A progress bar on a terminal, plain lines otherwise (on stderr).
    Auto,
    /// Plain lines on stderr, once a second.
    Lines,
    None,
}

/// What a backfill read and how long it took.
#[derive(Debug, Clone, Default)]
pub struct BackfillStats {
    pub records: u64,
    pub events: u64,
    pub bytes: u64,
    /// Kafka messages that were not sightflow records (skipped).
    pub malformed: u64,
    pub elapsed: Duration,
    /// Per partition: (start, end) offsets.
    pub ranges: Vec<(u32, u64, u64)>,
}

/// A finished backfill: the views, and the snapshot handle (to serve them).
pub struct Backfilled {
    pub snapshot: Arc<Snapshot>,
    pub snapshots: Snapshots,
    pub stats: BackfillStats,
}

/// Runs the dataflow over the embedded log under `data_dir` from its earliest retained
/// record to the end found at start, and returns the complete views.
pub fn backfill_log(config: &Config, data_dir: &Path) -> Result<(Arc<Snapshot>, BackfillStats), BackfillError> {
    let mut c = config.clone();
    c.kafka.brokers.clear();
    let b = backfill(&c, data_dir, &StartAt::Earliest, &Until::End, ProgressOutput::None)?;
    Ok((b.snapshot, b.stats))
}

/// Re-reads the event log from `from` to `until` into a fresh view state: the Kafka
/// topic when `kafka.brokers` is set, else the embedded log under `data_dir`.
pub fn backfill(
    config: &Config,
    data_dir: &Path,
    from: &StartAt,
    until: &Until,
    progress: ProgressOutput,
) -> Result<Backfilled, BackfillError> {
    let workers = config.engine.workers;
    let shared = Arc::new(SourceStats::default());
    let params = Arc::new(Params::from_config(config));
    let options =
        RunOptions { workers, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: true };
    let started = Instant::now();
    let (ranges, running) = if config.kafka.enabled() {
        let opts = kafka_options(config);
        let starts = kafka::resolve_start(&opts, from)?;
        let ends = match until {
            Until::End => kafka::end_offsets(&opts),
            Until::Time(t) => kafka::offsets_for_time(&opts, *t),
        }?;
        let ranges = join_ranges(&starts, &ends);
        let mut readers = Vec::new();
        for w in 0..workers {
            let mine: Vec<(u32, u64, Option<u64>)> = ranges
                .iter()
                .filter(|(p, _, _)| *p as usize % workers == w)
                .map(|(p, s, e)| (*p, *s, Some(*e)))
                .collect();
            readers.push(Some(KafkaReader::new(opts.clone(), &mine, (w, workers), false)?));
        }
        let readers = Mutex::new(readers);
        let src_shared = shared.clone();
        let end_map: BTreeMap<u32, u64> = ranges.iter().map(|(p, _, e)| (*p, *e)).collect();
        let running = start(options, move |worker, _| {
            match readers.lock().ok().and_then(|mut r| r.get_mut(worker).and_then(Option::take)) {
                Some(reader) => Box::new(KafkaSource::new(reader, worker, end_map.clone(), true, src_shared.clone()))
                    as Box<dyn Source>,
                None => Box::new(Empty) as Box<dyn Source>,
            }
        })?;
        (ranges, running)
    } else {
        let log = Log::open(log_options(config, data_dir))?;
        let ends_now = log.end_offsets();
        let retained = log.start_offsets();
        let numbered = |v: &[u64]| -> Vec<(u32, u64)> { v.iter().enumerate().map(|(p, o)| (p as u32, *o)).collect() };
        let at_time = |t: i64| log.offsets_for_time(t).map(|v| numbered(&v));
        let starts: Vec<(u32, u64)> = match from {
            StartAt::Earliest => numbered(&retained),
            StartAt::Latest => numbered(&ends_now),
            StartAt::Time(t) => at_time(*t)?,
            StartAt::Offsets(list) => (0..ends_now.len() as u32)
                .map(|p| (p, list.iter().find(|(q, _)| *q == p).map_or(retained[p as usize], |(_, o)| *o)))
                .collect(),
        };
        let ends: Vec<(u32, u64)> = match until {
            Until::End => numbered(&ends_now),
            Until::Time(t) => at_time(*t)?,
        };
        let ranges = join_ranges(&starts, &ends);
        shared.set_start(&ranges.iter().map(|(p, s, _)| (*p, *s)).collect::<Vec<_>>());
        let src_ranges = ranges.clone();
        let src_shared = shared.clone();
        let running = start(options, move |worker, peers| {
            let mine: Vec<&(u32, u64, u64)> =
                src_ranges.iter().filter(|(p, _, _)| *p as usize % peers == worker).collect();
            if mine.is_empty() {
                return Box::new(Empty) as Box<dyn Source>;
            }
            let starts: Vec<(u32, u64)> = mine.iter().map(|(p, s, _)| (*p, *s)).collect();
            let end: BTreeMap<u32, u64> = mine.iter().map(|(p, _, e)| (*p, *e)).collect();
            Box::new(LogSource::new(&log, worker, &starts, end.clone(), Some(end), src_shared.clone()))
                as Box<dyn Source>
        })?;
        (ranges, running)
    };
    let finished = Arc::new(AtomicBool::new(false));
    let reporter = (progress != ProgressOutput::None).then(|| {
        let (shared, ranges, finished) = (shared.clone(), ranges.clone(), finished.clone());
        std::thread::spawn(move || report_progress(&shared, &ranges, &finished, progress, started))
    });
    let snapshots = running.snapshots.clone();
    let joined = running.join();
    finished.store(true, Ordering::SeqCst);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    joined?;
    let snapshot = snapshots.wait_complete();
    let stats = BackfillStats {
        records: shared.records.load(Ordering::Relaxed),
        events: shared.events.load(Ordering::Relaxed),
        bytes: shared.bytes.load(Ordering::Relaxed),
        malformed: shared.garbage.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        ranges,
    };
    Ok(Backfilled { snapshot, snapshots, stats })
}

/// `(partition, start, end)`; a start past the end reads nothing.
fn join_ranges(starts: &[(u32, u64)], ends: &[(u32, u64)]) -> Vec<(u32, u64, u64)> {
    starts
        .iter()
        .map(|(p, s)| {
            let e = ends.iter().find(|(q, _)| q == p).map_or(*s, |(_, e)| *e);
            (*p, *s, e.max(*s))
        })
        .collect()
}

fn report_progress(
    shared: &SourceStats,
    ranges: &[(u32, u64, u64)],
    finished: &AtomicBool,
    mode: ProgressOutput,
    started: Instant,
) {
    let total: u64 = ranges.iter().map(|(_, s, e)| e - s).sum();
    let plan: Vec<String> = ranges.iter().map(|(p, s, e)| format!("{p}:{s}..{e}")).collect();
    eprintln!("backfill: reading {total} records, offsets per partition {}", plan.join(" "));
    let bar = (mode == ProgressOutput::Auto && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} backfill [{bar:30}] {pos}/{len} records, {msg}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last = Instant::now();
    loop {
        let done = finished.load(Ordering::SeqCst);
        let line = progress_line(shared, ranges, total, started);
        match &bar {
            Some(b) => {
                b.set_position(line.read.min(total));
                b.set_message(line.rate.clone());
            }
            None if done || last.elapsed() >= Duration::from_secs(1) => {
                eprintln!("{}", line.text);
                last = Instant::now();
            }
            None => {}
        }
        if done {
            if let Some(b) = &bar {
                b.finish_with_message(line.rate);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Line {
    read: u64,
    rate: String,
    text: String,
}

fn progress_line(shared: &SourceStats, ranges: &[(u32, u64, u64)], total: u64, started: Instant) -> Line {
    let positions: BTreeMap<u32, u64> = shared.positions().iter().map(|p| (p.partition, p.next)).collect();
    let mut read = 0;
    let mut parts = Vec::new();
    for (p, s, e) in ranges {
        let at = positions.get(p).copied().unwrap_or(*s).clamp(*s, *e);
        read += at - s;
        parts.push(format!("{p}:{at}/{e}"));
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let events = shared.events.load(Ordering::Relaxed);
    let mb = shared.bytes.load(Ordering::Relaxed) as f64 / 1e6;
    let eta = if read == 0 || read >= total { 0.0 } else { secs * (total - read) as f64 / read as f64 };
    let rate = format!("{:.0} events/s, {:.1} MB/s", events as f64 / secs, mb / secs);
    let pct = if total == 0 { 100.0 } else { 100.0 * read as f64 / total as f64 };
    let text = format!(
        "backfill: {read}/{total} records ({pct:.0}%), {events} events, {rate}, partitions {}, ETA {eta:.0}s",
        parts.join(" ")
    );
    Line { read, rate, text }
}

/// Why the views could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot create {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Parquet { path: PathBuf, source: datafusion::parquet::errors::ParquetError },
}

/// Writes every view of `snapshot` to `dir/<view>.parquet`; returns (view, rows, path).
pub fn write_parquet(snapshot: &Snapshot, dir: &Path) -> Result<Vec<(String, usize, PathBuf)>, WriteError> {
    use datafusion::parquet::arrow::ArrowWriter;
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
        move |source| WriteError::Io { path: path.to_path_buf(), source }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut out = Vec::new();
    for (name, schema, batches) in &snapshot.tables {
        let path = dir.join(format!("{name}.parquet"));
        let parquet = |source| WriteError::Parquet { path: path.clone(), source };
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), None).map_err(parquet)?;
        for batch in batches {
            w.write(batch).map_err(parquet)?;
        }
        w.close().map_err(parquet)?;
        out.push((name.to_string(), batches.iter().map(|b| b.num_rows()).sum(), path));
    }
    Ok(out)
}

/// Serves SQL over a finished backfill's views on `listen` until interrupted (ingest
/// and replay answer that this server holds only a backfill result).
pub fn serve_read_only(
    config: &Config,
    data_dir: &std::path::Path,
    done: &Backfilled,
    listen: std::net::SocketAddr,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut limits = crate::serve::http_limits(config);
    limits.per_ip_per_s = 0.0;
    let backend = Arc::new(ReadOnly { stats: done.stats.clone() });
    // The same accounts as the server of this data directory.
    let meta = Arc::new(crate::accounts::open(config, data_dir).map_err(std::io::Error::other)?);
    let gate = crate::accounts::gate(config, meta, None);
    let mut state = sightflow_query::http::AppState::new(backend, done.snapshots.clone(), limits, gate);
    state.retention = crate::serve::retention(config);
    let state = Arc::new(state);
    let router = sightflow_query::http::router(state);
    let options = crate::serve::serve_options(config);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("serving the backfilled views on http://{}", listener.local_addr()?);
        sightflow_query::server::serve(listener, router, options, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}

/// The query API over a finished backfill: SQL and health; ingest and replay answer
/// that this server only holds a backfill result.
pub struct ReadOnly {
    pub stats: BackfillStats,
}

const READ_ONLY: &str = "this server holds the result of a backfill and is read-only; send events to `sightflow serve`";

impl sightflow_query::http::Backend for ReadOnly {
    fn project(&self, _key: &str) -> Option<sightflow_query::http::ProjectPolicy> {
        None
    }

    fn origin_allowed_anywhere(&self, _origin: &str) -> bool {
        false
    }

    async fn track(
        &self,
        _project: String,
        _content_type: Option<String>,
        _batch_id: String,
        _body: axum::body::Bytes,
        _admit: sightflow_query::http::Admit,
    ) -> Result<sightflow_query::http::TrackReport, sightflow_query::http::ApiError> {
        Err(sightflow_query::http::ApiError::Forbidden(READ_ONLY.into()))
    }

    async fn import_rrweb(
        &self,
        _import: sightflow_query::http::RrwebImport,
        _body: axum::body::Bytes,
        _admit: sightflow_query::http::Admit,
    ) -> Result<sightflow_query::http::TrackReport, sightflow_query::http::ApiError> {
        Err(sightflow_query::http::ApiError::Forbidden(READ_ONLY.into()))
    }

    async fn sessions_views(
        &self,
        _sessions: Vec<sightflow_query::index::SessionPlace>,
    ) -> Result<Arc<sightflow_dataflows::Snapshot>, sightflow_query::http::ApiError> {
        Err(sightflow_query::http::ApiError::NotFound(READ_ONLY.into()))
    }

    async fn replay_chunks(
        &self,
        _project: String,
        _device: String,
        _from_ts: i64,
        _to_ts: i64,
    ) -> Result<Vec<sightflow_query::http::ReplayChunk>, sightflow_query::http::ApiError> {
        Err(sightflow_query::http::ApiError::NotFound(READ_ONLY.into()))
    }

    async fn replay_chunk(
        &self,
        _project: String,
        _device: String,
        _chunk: sightflow_query::http::ReplayChunk,
        _from_ts: i64,
        _to_ts: i64,
    ) -> Result<Vec<String>, sightflow_query::http::ApiError> {
        Err(sightflow_query::http::ApiError::NotFound(READ_ONLY.into()))
    }

    fn health(&self) -> sightflow_query::http::Health {
        let s = &self.stats;
        sightflow_query::http::Health {
            ready: true,
            failures: Vec::new(),
            details: serde_json::json!({
                "source": "backfill",
                "records": s.records,
                "events": s.events,
                "malformed": s.malformed,
                "partitions": s.ranges.iter().map(|(p, a, b)| serde_json::json!({"partition": p, "start": a, "end": b})).collect::<Vec<_>>(),
            }),
        }
    }

    fn metrics(&self, out: &mut sightflow_query::metrics::Scrape) {
        out.gauge("sightflow_backfill_events", "Events read by the backfill.", self.stats.events as i64);
    }
}
