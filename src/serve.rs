//! `sightflow serve`: HTTP ingest, the embedded log, the dataflow reading the log, the
//! replay store and the query API in one process.
//!
//! Ingest decodes and validates a request, writes its raw rrweb events to the replay
//! store, appends the analytic events to the log (durable before the answer) and
//! answers per event. Each timely worker reads its share of the log's partitions from
//! the earliest retained record, so a restart rebuilds every view from the log: nothing
//! acknowledged is lost and nothing is counted twice. `/health` turns ready once the
//! views have caught up with the log as it was at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;
use sightflow_config::{BadStart, Config, Fsync, StartAt};
use sightflow_connectors::ingest::{self, Accepted, BodyError, BodyLimits, Decoded};
use sightflow_connectors::json::Sizes;
use sightflow_connectors::kafka::{self, KafkaFailure, KafkaReader, KafkaSink, PartitionPosition};
use sightflow_connectors::log::{FsyncPolicy, Log, LogError, LogOptions};
use sightflow_connectors::replay::{ChunkRef, RawEvent, ReplayError, ReplayStore};
use sightflow_connectors::rrweb::{DecoderLimits, Decoders, Note};
use sightflow_connectors::source::{KafkaSource, LogSource, SourceStats};
use sightflow_connectors::validate::Limits;
use sightflow_dataflows::{Empty, RunError, RunOptions, Running, Snapshots, Source, start};
use sightflow_operators::Params;
use sightflow_query::QueryLimits;
use sightflow_query::metrics::Scrape;

use crate::accounts::{self, ProjectKeys};
use crate::kafka::kafka_options;
use sightflow_connectors::meta::MetaStore;
use sightflow_query::http::{
    self, Admit, ApiError, AppState, Backend, Health, HttpLimits, ProjectPolicy, ReplayChunk, RrwebImport, TrackReport,
};

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    #[error("kafka.start: {0}")]
    Start(#[from] BadStart),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Meta(#[from] sightflow_connectors::meta::MetaError),
}

/// What the allocator holds, by jemalloc's own count (`None` when its statistics are
/// not available, e.g. in a program that uses another allocator).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct AllocatorBytes {
    /// Bytes the program has allocated and not freed.
    pub allocated: u64,
    /// Bytes in pages the allocator uses for them (allocated plus fragmentation).
    pub active: u64,
    /// Bytes of physical memory the allocator's pages take (what RSS sees).
    pub resident: u64,
    /// Bytes of virtual memory kept for reuse, not returned to the system.
    pub retained: u64,
}

/// The allocator's figures now.
pub fn allocator_bytes() -> Option<AllocatorBytes> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let b = AllocatorBytes {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
    };
    (b.allocated > 0).then_some(b)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Default)]
struct Metrics {
    requests: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    late: AtomicU64,
    dropped: AtomicU64,
    duplicates: AtomicU64,
    replay_bytes: AtomicU64,
    /// Events dated past the server clock plus the allowed skew.
    future: AtomicU64,
    /// Raw rrweb events not stored for replay (the per-tab quota).
    not_stored: AtomicU64,
    /// Raw rrweb events the views could not fully use, per [`Note::ALL`].
    unanalysed: [AtomicU64; Note::ALL.len()],
    /// Rejected events by the kind of refusal.
    rejected_by: Rejections,
}

/// Counters per [`sightflow_connectors::json::BadEvent::label`].
#[derive(Default)]
struct Rejections(std::sync::Mutex<BTreeMap<&'static str, u64>>);

impl Rejections {
    fn add(&self, label: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label).or_insert(0) += 1;
        }
    }

    fn all(&self) -> Vec<(String, u64)> {
        self.0.lock().map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect()).unwrap_or_default()
    }
}

/// Where accepted events go and where the dataflow reads them from.
enum EventLog {
    Embedded { log: Log },
    Kafka { sink: Arc<KafkaSink>, starts: Vec<(u32, u64)>, high: Mutex<Vec<Option<(u64, u64)>>> },
}

/// The server state behind the HTTP API.
pub struct Server {
    config: Arc<Config>,
    log: EventLog,
    replay: Arc<ReplayStore>,
    decoders: Decoders,
    metrics: Metrics,
    /// What the dataflow's sources have read, and how they fail.
    sources: Arc<SourceStats>,
    startup_end: Vec<u64>,
    workers: usize,
    snapshots: Snapshots,
    data_dir: PathBuf,
    /// Blocking reads of the read side (replay chunks) run on this runtime's threads,
    /// apart from the ones ingest uses.
    read_rt: tokio::runtime::Handle,
    /// Projects by ingest key, from the metadata store.
    projects: ProjectKeys,
    /// Admission to ingest: requests decoded and committed at once.
    gate: Gate,
    /// The engine's state report, where ingest adds what its decoders hold.
    stats: sightflow_operators::stats::StateStats,
}

/// Admission control for ingest. At most `size` requests are decoded and committed
/// at once; up to `size` more wait in arrival order, each for at most `max_wait`, and
/// are then refused with 503 and `Retry-After`, as is at once a request that finds the
/// line full. Without it every request got a blocking thread, and above the rate the
/// server holds they all slowed down together.
struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    size: usize,
    max_wait: Duration,
    waiting: AtomicU64,
    shed: AtomicU64,
}

impl Gate {
    fn new(max_in_flight: usize, max_queue_ms: u64) -> Gate {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // A request spends much of its time waiting for a group commit it shares with
        // others, so a core keeps several busy: with the segment replay store, 8 per core
        // left a third of the CPU idle at 50,000 raw rrweb events/s offered, 16 held 47k
        // against 41k (bench/README.md).
        let size = if max_in_flight == 0 { 16 * cores } else { max_in_flight };
        Gate {
            permits: Arc::new(tokio::sync::Semaphore::new(size)),
            size,
            max_wait: Duration::from_millis(max_queue_ms),
            waiting: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        // Counted while it waits, also when the client goes away mid-wait (the future
        // is dropped then, and the guard with it).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // The line is as long as the requests in progress: a request behind more than
        // that would not start within the wait anyway, so it is refused at once. With
        // senders that come back when they are told (the SDK honours Retry-After) that
        // answers refusals in milliseconds and accepts as much (bench/README.md).
        let line_full = self.waiting.fetch_add(1, Ordering::Relaxed) >= self.size as u64;
        let waiting = Waiting(&self.waiting);
        let got = if line_full {
            None
        } else {
            tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await.ok().and_then(Result::ok)
        };
        drop(waiting);
        if let Some(p) = got {
            return Ok(p);
        }
        self.shed.fetch_add(1, Ordering::Relaxed);
        let why = if line_full {
            format!("as many again wait in line (ingest.max_in_flight = {})", self.size)
        } else {
            format!("none finished within {} ms (ingest.max_queue_ms)", self.max_wait.as_millis())
        };
        Err(ApiError::Overloaded {
            message: format!(
                "ingest is overloaded: {} requests are in progress and {why}; retry after the Retry-After seconds",
                self.size
            ),
            retry_after_s: 1,
        })
    }
}

/// A started server: the router to serve, and the engine behind it.
pub struct Started {
    pub router: axum::Router,
    /// The API's state (the Postgres endpoint serves from it too).
    pub state: Arc<AppState<Api>>,
    pub server: Arc<Server>,
    pub snapshots: Snapshots,
    pub engine: Running,
    /// The metadata store: projects, accounts, tokens.
    pub meta: Arc<MetaStore>,
    /// The owner a first start created, (email, password), to be shown once.
    pub first_owner: Option<(String, String)>,
}

pub(crate) fn log_options(config: &Config, dir: &Path) -> LogOptions {
    let l = &config.log;
    LogOptions {
        dir: dir.join("log"),
        partitions: l.partitions,
        segment_bytes: l.segment_bytes,
        fsync: match l.fsync {
            Fsync::Batch => FsyncPolicy::EveryBatch,
            Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(l.fsync_interval_ms)),
            Fsync::Never => FsyncPolicy::Never,
        },
        retention_bytes: l.retention_bytes,
        retention_ms: l.retention_ms,
        tick_ms: config.engine.tick_ms,
        lateness_ms: config.engine.allowed_lateness_ms,
        clamp_late: config.engine.late_policy == sightflow_config::LatePolicy::Clamp,
        idle_timeout_ms: config.engine.idle_timeout_ms,
        max_skew_ms: config.engine.clock_skew_ms(),
    }
}

pub(crate) fn fsync_policy(config: &Config) -> FsyncPolicy {
    log_options(config, Path::new("")).fsync
}

impl Server {
    /// Opens the event log (embedded, or Kafka when configured) and the replay store
    /// under `data_dir` and starts the dataflow.
    pub fn start(
        config: Config,
        data_dir: &Path,
        read_rt: tokio::runtime::Handle,
        meta: Arc<MetaStore>,
    ) -> Result<(Arc<Server>, Running), StartError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StartError::DataDir { path: data_dir.display().to_string(), source })?;
        let projects = ProjectKeys::load(meta)?;
        let replay = Arc::new(ReplayStore::local(&data_dir.join("replay"), fsync_policy(&config))?);
        let checkpoint: Option<serde_json::Value> =
            std::fs::read_to_string(data_dir.join("checkpoint.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        let workers = config.engine.workers;
        let params = Arc::new(Params::from_config(&config));
        let sources = Arc::new(SourceStats::default());
        let (log, startup_end, engine, partitions) = if config.kafka.enabled() {
            Self::start_kafka(&config, checkpoint.as_ref(), params, sources.clone())?
        } else {
            Self::start_embedded(&config, data_dir, checkpoint.as_ref(), params, sources.clone())?
        };
        if let EventLog::Embedded { log } = &log {
            // A request's replay chunks are synced by the log's group commit that appends
            // its events, before its records are written.
            let r = replay.clone();
            log.sync_first(move || r.sync_active());
        }
        let ig = &config.ingest;
        let decoders = Decoders::new(
            16,
            DecoderLimits {
                max_nodes_per_tab: ig.max_nodes_per_tab,
                max_nodes_total: ig.max_nodes_total,
                max_tabs: 50_000,
                max_payload_bytes: 8192,
            },
        );
        let gate = Gate::new(config.ingest.max_in_flight, config.ingest.max_queue_ms);
        let server = Arc::new(Server {
            config: Arc::new(config),
            log,
            replay,
            decoders,
            read_rt,
            metrics: Metrics::default(),
            sources,
            startup_end,
            workers: workers.min(partitions),
            snapshots: engine.snapshots.clone(),
            data_dir: data_dir.to_path_buf(),
            projects,
            gate,
            stats: engine.stats.clone(),
        });
        server.write_checkpoint();
        Ok((server, engine))
    }

    fn start_embedded(
        config: &Config,
        data_dir: &Path,
        checkpoint: Option<&serde_json::Value>,
        params: Arc<Params>,
        stats: Arc<SourceStats>,
    ) -> Result<(EventLog, Vec<u64>, Running, usize), StartError> {
        let log = Log::open(log_options(config, data_dir))?;
        let startup_end = log.end_offsets();
        let partitions = log.partitions() as usize;
        let starts: Vec<(u32, u64)> = log.start_offsets().into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect();
        stats.set_start(&starts);
        if let Some(c) = checkpoint {
            tracing::info!(checkpoint = %c, "restarting: rebuilding the views from the log");
        }
        let src_log = log.clone();
        let end_map: BTreeMap<u32, u64> = startup_end.iter().enumerate().map(|(p, o)| (p as u32, *o)).collect();
        let engine = start(
            RunOptions {
                workers: config.engine.workers,
                params,
                on_publish: None,
                idle_park: Duration::from_millis(2),
                final_only: false,
            },
            move |worker, peers| {
                let mine: Vec<(u32, u64)> =
                    (0..partitions).filter(|p| p % peers == worker).map(|p| (p as u32, 0)).collect();
                if mine.is_empty() {
                    return Box::new(Empty) as Box<dyn Source>;
                }
                Box::new(LogSource::new(&src_log, worker, &mine, end_map.clone(), None, stats.clone()))
            },
        )?;
        Ok((EventLog::Embedded { log }, startup_end, engine, partitions))
    }

    /// Kafka: the view state starts at the offsets in the checkpoint (a restart re-reads
    /// from there, so the views equal an uninterrupted run), or, the first time, at
    /// `kafka.start`.
    fn start_kafka(
        config: &Config,
        checkpoint: Option<&serde_json::Value>,
        params: Arc<Params>,
        stats: Arc<SourceStats>,
    ) -> Result<(EventLog, Vec<u64>, Running, usize), StartError> {
        let opts = kafka_options(config);
        let saved = checkpoint.and_then(|c| c.get("kafka")).filter(|k| k["topic"] == opts.topic.as_str());
        let frontiers: Vec<u64> = saved
            .and_then(|k| k["frontiers"].as_array())
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        let sink = KafkaSink::connect(opts.clone(), &frontiers)?;
        let mut starts: Vec<(u32, u64)> = match saved.and_then(|k| k["start"].as_array()) {
            Some(list) => {
                let s: Vec<(u32, u64)> =
                    list.iter().enumerate().map(|(p, v)| (p as u32, v.as_u64().unwrap_or(0))).collect();
                tracing::info!(topic = %opts.topic, start = ?s, "restarting: rebuilding the views from the checkpoint's start offsets");
                s
            }
            None => {
                let at: StartAt = config.kafka.start.parse()?;
                kafka::resolve_start(&opts, &at)?
            }
        };
        // Partitions added since the checkpoint are read from their beginning.
        for p in starts.len() as u32..sink.partitions() {
            starts.push((p, 0));
        }
        let ends = kafka::end_offsets(&opts)?;
        let startup_end: Vec<u64> = ends.iter().map(|(_, o)| *o).collect();
        let partitions = starts.len();
        let workers = config.engine.workers;
        let mut readers = Vec::new();
        for w in 0..workers {
            let mine: Vec<(u32, u64, Option<u64>)> =
                starts.iter().filter(|(p, _)| *p as usize % workers == w).map(|(p, o)| (*p, *o, None)).collect();
            let reader = KafkaReader::new(opts.clone(), &mine, (w, workers), true)?;
            readers.push(Some(reader.with_in_flight(sink.in_flight())));
        }
        let readers = Mutex::new(readers);
        let end_map = ends.iter().copied().collect::<BTreeMap<u32, u64>>();
        let engine = start(
            RunOptions { workers, params, on_publish: None, idle_park: Duration::from_millis(2), final_only: false },
            move |worker, _peers| {
                let reader = readers.lock().ok().and_then(|mut r| r.get_mut(worker).and_then(Option::take));
                match reader {
                    Some(reader) => Box::new(KafkaSource::new(reader, worker, end_map.clone(), false, stats.clone()))
                        as Box<dyn Source>,
                    None => Box::new(Empty) as Box<dyn Source>,
                }
            },
        )?;
        let log = EventLog::Kafka { sink: Arc::new(sink), starts, high: Mutex::new(Vec::new()) };
        Ok((log, startup_end, engine, partitions))
    }

    /// The limits of the HTTP layer from the configuration.
    pub fn http_limits(&self) -> HttpLimits {
        http_limits(&self.config)
    }

    fn body_limits(&self) -> BodyLimits {
        let ig = &self.config.ingest;
        BodyLimits {
            max_decompressed_bytes: ig.max_decompressed_bytes,
            max_events: ig.max_events_per_batch,
            sizes: Sizes { max_event_bytes: ig.max_event_bytes, max_rrweb_event_bytes: ig.max_rrweb_event_bytes },
        }
    }

    /// Charges the request's events to its project's rate, writes raw rrweb events to the
    /// replay store (one chunk per tab, within each tab's quota), then appends the
    /// analytic events to the log. Nothing is acknowledged unless all of it succeeded.
    async fn commit(
        self: &Arc<Self>,
        batch_id: String,
        decoded: Decoded,
        admit: Admit,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<TrackReport, ApiError> {
        let this = self.clone();
        let staged = tokio::task::spawn_blocking(move || this.stage(batch_id, decoded, admit))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        drop(permit);
        self.finish(staged).await
    }

    /// The blocking part of [`Server::commit`], run on the thread that decoded the
    /// request: one hop between threads per request, not one per store (their wake-ups
    /// were a sixth of the server's time under raw rrweb traffic). Appends to the
    /// embedded log here; a Kafka append is left to [`Server::finish`].
    fn stage(&self, batch_id: String, decoded: Decoded, admit: Admit) -> Result<Staged, ApiError> {
        admit(decoded.accepted.len())?;
        let quota = self.config.ingest.max_replay_bytes_per_tab;
        let mut by_tab: BTreeMap<(String, String, String), Vec<RawEvent>> = BTreeMap::new();
        let mut envelopes = Vec::with_capacity(decoded.accepted.len());
        let mut unanalysed: BTreeMap<String, usize> = BTreeMap::new();
        let mut not_stored = Vec::new();
        for Accepted { envelope, raw_rrweb, note, index } in decoded.accepted {
            if let Some(n) = note {
                *unanalysed.entry(n.label().to_string()).or_default() += 1;
                if let Some(i) = Note::ALL.iter().position(|x| *x == n) {
                    self.metrics.unanalysed[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(json) = raw_rrweb {
                let tab = if envelope.tab_id.is_empty() { envelope.device_id.clone() } else { envelope.tab_id.clone() };
                let fits = self.decoders.shard(&envelope.project, &envelope.device_id).charge_replay(
                    &envelope.project,
                    &envelope.device_id,
                    &tab,
                    json.len() as u64,
                    quota,
                );
                if fits {
                    by_tab
                        .entry((envelope.project.clone(), envelope.device_id.clone(), tab.clone()))
                        .or_default()
                        .push(RawEvent { tab, seq: envelope.seq, ts: envelope.ts, json });
                } else {
                    self.metrics.not_stored.fetch_add(1, Ordering::Relaxed);
                    not_stored.push(http::RejectedEvent {
                        index,
                        reason: format!(
                            "not stored for replay: the tab's replay data exceeds {quota} bytes (ingest.max_replay_bytes_per_tab); the event still counts in the views"
                        ),
                    });
                }
            }
            envelopes.push(envelope);
        }
        if !by_tab.is_empty() {
            let batch = (!batch_id.is_empty()).then_some(batch_id.as_str());
            let stored = (|| {
                let mut n = 0;
                for ((project, device, tab), events) in &by_tab {
                    n += self.replay.put(project, device, tab, batch, events)?;
                }
                // With the embedded log, the log's group commit syncs them (sync_first);
                // otherwise one sync, shared with concurrent requests.
                if matches!(self.log, EventLog::Kafka { .. }) {
                    self.replay.sync()?;
                }
                Ok::<u64, ReplayError>(n)
            })()
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store replay data");
                ApiError::Unavailable(format!("cannot store replay data: {e}"))
            })?;
            self.metrics.replay_bytes.fetch_add(stored, Ordering::Relaxed);
        }
        let appended = match &self.log {
            EventLog::Embedded { log, .. } => Some(
                log.append(&batch_id, std::mem::take(&mut envelopes), now_ms())
                    .map_err(|e| ApiError::Unavailable(format!("cannot append to the event log: {e}")))?,
            ),
            EventLog::Kafka { .. } => None,
        };
        Ok(Staged { batch_id, envelopes, appended, rejected: decoded.rejected, unanalysed, not_stored })
    }

    /// Appends to Kafka when the log is a topic, then counts and answers.
    async fn finish(&self, staged: Staged) -> Result<TrackReport, ApiError> {
        let Staged { batch_id, envelopes, appended, rejected, unanalysed, not_stored } = staged;
        let appended = match (appended, &self.log) {
            (Some(a), _) => a,
            (None, EventLog::Kafka { sink, .. }) => {
                sink.append(&batch_id, envelopes, now_ms()).await.map_err(|e| ApiError::Unavailable(e.to_string()))?
            }
            (None, EventLog::Embedded { .. }) => return Err(ApiError::Internal("the batch was not appended".into())),
        };
        let m = &self.metrics;
        m.accepted.fetch_add(appended.events as u64, Ordering::Relaxed);
        m.rejected.fetch_add(rejected.len() as u64, Ordering::Relaxed);
        for r in &rejected {
            m.rejected_by.add(r.reason.label());
        }
        m.late.fetch_add(appended.clamped as u64, Ordering::Relaxed);
        m.dropped.fetch_add(appended.dropped as u64, Ordering::Relaxed);
        m.future.fetch_add(appended.future as u64, Ordering::Relaxed);
        let duplicate = appended.duplicate_partitions > 0 && appended.events == 0;
        if duplicate {
            m.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Ok(TrackReport {
            accepted: appended.events,
            rejected: rejected
                .into_iter()
                .map(|r| http::RejectedEvent { index: r.index, reason: r.reason.to_string() })
                .collect(),
            late: appended.clamped,
            dropped: appended.dropped,
            duplicate,
            min_as_of: (appended.events > 0).then_some(appended.visible_at),
            unanalysed,
            not_stored,
        })
    }

    /// The earliest event time of `project`'s recordings that reads may return now, by
    /// its own retention (the function `replay_read_from` below).
    fn replay_read_from(&self, project: &str, now: i64) -> i64 {
        replay_read_from(now, self.projects.retention_days(project))
    }

    /// After a restart a tab has no node map: replay its stored events through the
    /// decoder so clicks keep their targets.
    async fn restore_tab(&self, project: &str, device: &str, tab: &str) -> Result<(), ApiError> {
        if self.decoders.shard(project, device).knows(project, device, tab) {
            return Ok(());
        }
        let (store, p, d, t) = (self.replay.clone(), project.to_string(), device.to_string(), tab.to_string());
        let (events, skipped) = self
            .read_rt
            .spawn_blocking(move || store.read_tab(&p, &d, &t))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Unavailable(format!("cannot read replay data: {e}")))?;
        for e in skipped {
            tracing::warn!(error = %e, "a replay chunk is unreadable; the node map is rebuilt without it");
        }
        let mut dec = self.decoders.shard(project, device);
        for e in events {
            let _ = dec.decode(project, device, tab, e.seq, &e.json);
        }
        Ok(())
    }

    /// Writes the checkpoint every second, runs retention every minute, and with Kafka
    /// refreshes the partitions' watermarks every second and logs the lag every 10 s.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                this.write_checkpoint();
                let t = this.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || t.projects.refresh()).await {
                    tracing::warn!(error = %e, "cannot reload the projects from the metadata store");
                }
                if let EventLog::Kafka { sink, .. } = &this.log {
                    let s = sink.clone();
                    let refresh = n.is_multiple_of(10);
                    let marks = tokio::task::spawn_blocking(move || {
                        if refresh && let Err(e) = s.refresh_partitions() {
                            tracing::warn!(error = %e, "cannot refresh the topic's partitions");
                        }
                        s.watermarks()
                    })
                    .await
                    .unwrap_or_default();
                    if let EventLog::Kafka { high, .. } = &this.log
                        && let Ok(mut h) = high.lock()
                    {
                        *h = marks;
                    }
                    if refresh {
                        let details = this.partition_details();
                        tracing::info!(partitions = %serde_json::Value::Array(details), "kafka positions");
                    }
                }
                if n % 60 == 1 {
                    let now = now_ms();
                    if let EventLog::Embedded { log, .. } = &this.log {
                        let log = log.clone();
                        // Per partition, the first offset the engine has not read.
                        let positions = this.sources.positions();
                        let unread: Vec<u64> = (0..this.config.log.partitions)
                            .map(|p| positions.iter().find(|x| x.partition == p).map_or(0, |x| x.next))
                            .collect();
                        match tokio::task::spawn_blocking(move || log.enforce_retention(now, &unread)).await {
                            Ok(Ok(d)) if d > 0 => tracing::info!(segments = d, "log retention deleted segments"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
                            _ => {}
                        }
                    }
                    let days = this.projects.all().values().map(|p| p.retention_days).collect::<Vec<_>>();
                    let before = replay_delete_before(now, this.config.replay.retention_ms, days);
                    let store = this.replay.clone();
                    match this.read_rt.spawn_blocking(move || store.enforce_retention(before)).await {
                        Ok(Ok(d)) if d > 0 => tracing::info!(chunks = d, "replay retention deleted chunks"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "replay retention failed"),
                        _ => {}
                    }
                }
                if let EventLog::Embedded { log, .. } = &this.log {
                    let log = log.clone();
                    let _ = tokio::task::spawn_blocking(move || log.probe(now_ms())).await;
                }
                if n.is_multiple_of(5) {
                    // Node maps of tabs whose sessions ended go (they would stay until the
                    // limits pushed them out), and what the decoders hold is reported with
                    // the engine's state.
                    let t = this.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let c = &t.config;
                        let idle = Duration::from_millis(c.session.idle_gap_ms.saturating_add(c.engine.state_grace_ms));
                        let forgotten = t.decoders.forget_idle(idle);
                        if forgotten > 0 {
                            tracing::debug!(tabs = forgotten, "forgot the node maps of idle tabs");
                        }
                        let (nodes, _) = t.decoders.size();
                        t.stats.set("ingest_decoders", 0, nodes, t.decoders.heap_bytes());
                    })
                    .await;
                }
                let store = this.replay.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.sync_pending()).await {
                    tracing::error!(error = %e, "cannot sync replay chunks");
                }
            }
        });
    }

    fn write_checkpoint(&self) {
        let as_of = self.snapshots.latest().as_of;
        let text = match &self.log {
            EventLog::Embedded { log } => {
                let positions: Vec<u64> = self.sources.positions().iter().map(|p| p.next).collect();
                json!({
                    "positions": positions,
                    "frontiers": log.frontiers(),
                    "as_of": as_of,
                    "written_at_ms": now_ms(),
                })
            }
            EventLog::Kafka { sink, starts, .. } => {
                let pos: BTreeMap<u32, PartitionPosition> =
                    self.sources.positions().into_iter().map(|p| (p.partition, p)).collect();
                let get = |p: u32, f: fn(&PartitionPosition) -> u64, d: u64| pos.get(&p).map_or(d, f);
                json!({
                    "kafka": {
                        "topic": sink.options().topic,
                        "start": starts.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
                        "next": starts.iter().map(|(p, o)| get(*p, |x| x.next, *o)).collect::<Vec<_>>(),
                        "frontiers": starts.iter().map(|(p, _)| get(*p, |x| x.frontier, 0)).collect::<Vec<_>>(),
                    },
                    "as_of": as_of,
                    "written_at_ms": now_ms(),
                })
            }
        }
        .to_string();
        let tmp = self.data_dir.join("checkpoint.json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, self.data_dir.join("checkpoint.json"));
        }
    }

    /// Position, end, lag and frontier of every partition.
    fn partition_details(&self) -> Vec<serde_json::Value> {
        match &self.log {
            EventLog::Embedded { log } => {
                let positions: Vec<u64> = self.sources.positions().iter().map(|p| p.next).collect();
                let ends = log.end_offsets();
                let frontiers = log.frontiers();
                (0..ends.len())
                    .map(|p| {
                        let pos = positions.get(p).copied().unwrap_or(0);
                        json!({"partition": p, "position": pos, "end": ends[p], "lag": ends[p].saturating_sub(pos), "frontier": frontiers[p]})
                    })
                    .collect()
            }
            EventLog::Kafka { high, .. } => {
                let high = high.lock().map(|h| h.clone()).unwrap_or_default();
                self.sources
                    .positions()
                    .into_iter()
                    .map(|p| {
                        let end = high.get(p.partition as usize).copied().flatten().map(|(_, h)| h);
                        json!({
                            "partition": p.partition,
                            "start": p.start,
                            "position": p.next,
                            "end": end,
                            "lag": end.map(|e| e.saturating_sub(p.next)),
                            "frontier": p.frontier,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Imports a raw rrweb recording without HTTP (the demo traffic).
    pub async fn import_local(self: &Arc<Self>, import: RrwebImport, body: Bytes) -> Result<TrackReport, ApiError> {
        Api(self.clone()).import_rrweb(import, body, Box::new(|_| Ok(()))).await
    }
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Raw rrweb bytes the views of chosen sessions may read.
const MAX_SESSIONS_REPLAY_BYTES: u64 = 512 << 20;

const DAY_MS: i64 = 86_400_000;

/// The earliest event time of a project's recordings that reads may return: `days`
/// before `now`, or everything when the project keeps the server's retention (0).
/// Recordings past a project's own retention are gone for every reader at once, though
/// the segment that holds them is deleted only later ([`replay_delete_before`]).
fn replay_read_from(now: i64, days: u32) -> i64 {
    match days {
        0 => i64::MIN,
        d => now.saturating_sub((d as i64).saturating_mul(DAY_MS)),
    }
}

/// Sealed replay segments whose newest event is older than this are deleted. A segment
/// holds chunks of every project, so it goes once it is past the longest retention:
/// the server's (`replay.retention_ms`) or a project's own `retention_days`.
fn replay_delete_before(now: i64, server_ms: i64, project_days: impl IntoIterator<Item = u32>) -> i64 {
    let longest = project_days.into_iter().map(|d| (d as i64).saturating_mul(DAY_MS)).fold(server_ms, i64::max);
    now.saturating_sub(longest)
}

/// Every view over the stored replay of some sessions: their chunks are decoded per tab
/// (with node maps of their own) and run through batch mode, the live views' definitions.
fn views_of_replays(
    store: &ReplayStore,
    config: &Config,
    sessions: Vec<sightflow_query::index::SessionPlace>,
    read_from: impl Fn(&str) -> i64,
) -> Result<Arc<sightflow_dataflows::Snapshot>, ApiError> {
    let decoders = Decoders::default();
    let limits = Limits::any_age(now_ms());
    let mut envelopes = Vec::new();
    let mut bytes = 0u64;
    for (project, device, start, end) in sessions {
        let start = start.max(read_from(&project));
        if start > end {
            continue;
        }
        let chunks = store
            .chunks(&project, &device, start, end)
            .map_err(|e| ApiError::Unavailable(format!("replay store: {e}")))?;
        let mut by_tab: BTreeMap<u64, Vec<RawEvent>> = BTreeMap::new();
        for c in chunks {
            bytes += c.raw_bytes;
            if bytes > MAX_SESSIONS_REPLAY_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the chosen sessions' replays hold more than {MAX_SESSIONS_REPLAY_BYTES} bytes; choose fewer"
                )));
            }
            match store.read_chunk(&c, &project, &device) {
                Ok(events) => by_tab
                    .entry(c.tab_hash)
                    .or_default()
                    .extend(events.into_iter().filter(|e| e.ts >= start && e.ts <= end)),
                Err(e) => tracing::warn!(chunk = %c.id, error = %e, "a replay chunk is unreadable; left out"),
            }
        }
        for (_, mut events) in by_tab {
            events.sort_by_key(|e| e.ts);
            let Some(tab) = events.first().map(|e| e.tab.clone()) else { continue };
            let text = format!("[{}]", events.iter().map(|e| e.json.as_str()).collect::<Vec<_>>().join(","));
            let import =
                sightflow_connectors::files::read_rrweb(&text, &project, &device, &tab, &limits, &decoders, None)
                    .map_err(|e| ApiError::Internal(format!("a stored replay does not decode: {e}")))?;
            envelopes.extend(import.envelopes);
        }
    }
    crate::batch::run(config, envelopes).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A request after its blocking part: stored for replay, and appended unless the log is
/// a Kafka topic.
struct Staged {
    batch_id: String,
    /// The envelopes still to append (Kafka).
    envelopes: Vec<sightflow_proto::v1::Envelope>,
    appended: Option<sightflow_connectors::log::Appended>,
    rejected: Vec<sightflow_connectors::files::Rejection>,
    unanalysed: BTreeMap<String, usize>,
    not_stored: Vec<http::RejectedEvent>,
}

/// The server as the HTTP layer's backend.
#[derive(Clone)]
pub struct Api(pub Arc<Server>);

impl std::ops::Deref for Api {
    type Target = Arc<Server>;
    fn deref(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Backend for Api {
    fn project(&self, key: &str) -> Option<ProjectPolicy> {
        self.projects.get(key)
    }

    fn origin_allowed_anywhere(&self, origin: &str) -> bool {
        self.projects.all().values().any(|p| http::origin_allowed(origin, &p.allowed_origins))
    }

    async fn track(
        &self,
        project: String,
        content_type: Option<String>,
        batch_id: String,
        body: Bytes,
        admit: Admit,
    ) -> Result<TrackReport, ApiError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let permit = self.gate.enter().await?;
        let this = self.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let limits = Limits::around(now, this.config.ingest.max_past_ms, this.config.ingest.max_future_ms);
            let defaults = sightflow_connectors::json::Defaults { project: project.clone(), device_id: String::new() };
            let decoded = ingest::decode_track(
                &body,
                content_type.as_deref(),
                &defaults,
                &this.body_limits(),
                &limits,
                &this.decoders,
            )
            .and_then(|d| match &d.project {
                // The body may name its project by name or by ingest key.
                Some(p) if *p != project && this.projects.get(p).is_none_or(|named| named.name != project) => {
                    Err(BodyError::Json(format!("the body is for project {p:?}, the key is of project {project:?}")))
                }
                _ => Ok(d),
            })
            .map_err(body_error)?;
            drop(body);
            this.stage(batch_id, decoded, admit)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        // The gate bounds the work on the cores; waiting for the broker's acknowledgement
        // (Kafka) is not that: holding the permit through it capped a Kafka-backed server
        // at in-flight / broker round trip requests per second. Connections
        // (`server.max_connections`) and librdkafka's queue bound those waits.
        drop(permit);
        self.finish(staged).await
    }

    async fn import_rrweb(&self, import: RrwebImport, body: Bytes, admit: Admit) -> Result<TrackReport, ApiError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if import.device.trim().is_empty() {
            return Err(ApiError::BadRequest("the device id is empty".into()));
        }
        let id_limits = Limits::any_age(now_ms());
        for (what, v) in [("device id", &import.device), ("tab id", &import.tab)] {
            if v.len() > id_limits.max_id_len || v.chars().any(char::is_control) {
                return Err(ApiError::BadRequest(format!(
                    "the {what} must be at most {} bytes without control characters",
                    id_limits.max_id_len
                )));
            }
        }
        let permit = self.gate.enter().await?;
        if import.seq_start > 0 {
            self.restore_tab(&import.project, &import.device, &import.tab).await?;
        }
        let this = self.clone();
        let batch_id = import.batch_id.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            // Recordings of any age are accepted; old ones are late data.
            let limits = Limits::any_age(now_ms());
            ingest::decode_rrweb(
                &body,
                &import.project,
                &import.device,
                &import.tab,
                import.seq_start,
                &this.body_limits(),
                &limits,
                &this.decoders,
            )
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(body_error)?;
        self.commit(batch_id, decoded, admit, permit).await
    }

    async fn replay_chunks(
        &self,
        project: String,
        device: String,
        from_ts: i64,
        to_ts: i64,
    ) -> Result<Vec<ReplayChunk>, ApiError> {
        let store = self.replay.clone();
        let from_ts = from_ts.max(self.replay_read_from(&project, now_ms()));
        if from_ts > to_ts {
            return Ok(Vec::new());
        }
        let chunks = self
            .read_rt
            .spawn_blocking(move || store.chunks(&project, &device, from_ts, to_ts))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Unavailable(format!("replay store: {e}")))?;
        Ok(chunks
            .into_iter()
            .map(|c| ReplayChunk { raw_bytes: c.raw_bytes, stored_bytes: c.stored_bytes, id: c.id })
            .collect())
    }

    async fn replay_chunk(
        &self,
        project: String,
        device: String,
        chunk: ReplayChunk,
        from_ts: i64,
        to_ts: i64,
    ) -> Result<Vec<String>, ApiError> {
        let store = self.replay.clone();
        let Some(c) = ChunkRef::from_id(&chunk.id, chunk.raw_bytes, chunk.stored_bytes) else {
            return Err(ApiError::NotFound(format!("{:?} is not a chunk of this store", chunk.id)));
        };
        let from_ts = from_ts.max(self.replay_read_from(&project, now_ms()));
        let events = self
            .read_rt
            .spawn_blocking(move || store.read_chunk(&c, &project, &device))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let mut events: Vec<RawEvent> = events.into_iter().filter(|e| e.ts >= from_ts && e.ts <= to_ts).collect();
        // In time order within the chunk; equal times keep the order they were sent in.
        events.sort_by_key(|e| e.ts);
        Ok(events.into_iter().map(|e| e.json).collect())
    }

    async fn sessions_views(
        &self,
        sessions: Vec<sightflow_query::index::SessionPlace>,
    ) -> Result<Arc<sightflow_dataflows::Snapshot>, ApiError> {
        let (store, config, this) = (self.replay.clone(), self.config.clone(), self.0.clone());
        let now = now_ms();
        self.read_rt
            .spawn_blocking(move || views_of_replays(&store, &config, sessions, |p| this.replay_read_from(p, now)))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    fn health(&self) -> Health {
        let caught = self.sources.caught_up_at();
        let as_of = self.snapshots.latest().as_of;
        let ready = caught.len() >= self.workers && caught.values().all(|f| as_of.saturating_add(1) >= *f);
        let source = match &self.log {
            EventLog::Embedded { .. } => json!("embedded log"),
            EventLog::Kafka { sink, .. } => {
                json!({"kafka": {"brokers": sink.options().brokers, "topic": sink.options().topic}})
            }
        };
        let mut failures = Vec::new();
        if let EventLog::Embedded { log } = &self.log {
            for f in log.failures() {
                failures.push(format!("event log partition {}: {}", f.partition, f.reason));
            }
        }
        failures.extend(self.sources.failures());
        let damaged: Vec<serde_json::Value> = self
            .sources
            .skipped()
            .into_iter()
            .map(|d| json!({"partition": d.partition, "from": d.from, "to": d.to, "reason": d.reason}))
            .collect();
        Health {
            ready,
            failures,
            details: json!({
                "source": source,
                "startup_end": self.startup_end,
                "partitions": self.partition_details(),
                "damaged": damaged,
            }),
        }
    }

    fn metrics(&self, out: &mut Scrape) {
        let m = &self.metrics;
        for (name, help, v) in [
            ("sightflow_ingest_requests", "Ingest requests.", &m.requests),
            ("sightflow_events_accepted", "Events appended to the log.", &m.accepted),
            ("sightflow_events_rejected", "Events rejected with a reason.", &m.rejected),
            ("sightflow_events_late", "Late events kept at the frontier.", &m.late),
            ("sightflow_events_dropped", "Late events dropped.", &m.dropped),
            ("sightflow_duplicate_batches", "Retried batches already appended.", &m.duplicates),
            ("sightflow_replay_stored_bytes", "Compressed replay bytes written.", &m.replay_bytes),
            ("sightflow_events_future", "Events dated past the server clock plus the allowed skew.", &m.future),
            ("sightflow_replay_not_stored", "Raw rrweb events over their tab's replay quota.", &m.not_stored),
            (
                "sightflow_ingest_shed",
                "Ingest requests refused with 503: the line was full, or they waited ingest.max_queue_ms.",
                &self.gate.shed,
            ),
        ] {
            out.counter(name, help, v.load(Ordering::Relaxed));
        }
        out.gauge(
            "sightflow_ingest_waiting",
            "Ingest requests waiting for admission.",
            self.gate.waiting.load(Ordering::Relaxed) as i64,
        );
        out.gauge(
            "sightflow_ingest_in_flight",
            "Ingest requests being decoded and committed.",
            (self.gate.size - self.gate.permits.available_permits()) as i64,
        );
        out.counters(
            "sightflow_events_rejected_by_reason",
            "Events rejected, by reason.",
            "reason",
            m.rejected_by.all(),
        );
        out.counters(
            "sightflow_rrweb_unanalysed",
            "Raw rrweb events kept for replay that the views could not fully use.",
            "reason",
            Note::ALL.iter().zip(&m.unanalysed).map(|(n, v)| (n.label().to_string(), v.load(Ordering::Relaxed))),
        );
        let (nodes, tabs) = self.decoders.size();
        out.gauge("sightflow_decoder_nodes", "DOM nodes remembered for click targets.", nodes as i64);
        out.gauge("sightflow_decoder_tabs", "Tabs with a node map.", tabs as i64);
        if let Some(a) = allocator_bytes() {
            out.gauge(
                "sightflow_allocator_allocated_bytes",
                "Bytes allocated and not freed (jemalloc).",
                a.allocated as i64,
            );
            out.gauge(
                "sightflow_allocator_resident_bytes",
                "Physical memory in the allocator's pages (jemalloc).",
                a.resident as i64,
            );
            out.gauge(
                "sightflow_allocator_retained_bytes",
                "Virtual memory the allocator keeps for reuse (jemalloc).",
                a.retained as i64,
            );
        }
        let details = self.partition_details();
        let per_partition = |field: &str| {
            details
                .iter()
                .filter_map(|d| Some((d["partition"].to_string(), d[field].as_i64()?)))
                .collect::<Vec<(String, i64)>>()
        };
        out.gauges(
            "sightflow_partition_lag",
            "Records behind the end of the partition.",
            "partition",
            per_partition("lag"),
        );
        out.gauges(
            "sightflow_partition_frontier_ms",
            "The partition's frontier (logical time).",
            "partition",
            per_partition("frontier"),
        );
        match &self.log {
            EventLog::Embedded { log, .. } => {
                out.gauges(
                    "sightflow_log_bytes",
                    "Bytes held by the event log.",
                    "partition",
                    log.bytes().iter().enumerate().map(|(p, b)| (p.to_string(), *b as i64)),
                );
                out.counter("sightflow_log_write_errors", "Failed writes to the event log.", log.write_errors());
                out.gauge(
                    "sightflow_log_failing_partitions",
                    "Partitions refusing appends until a write succeeds.",
                    log.failures().len() as i64,
                );
            }
            EventLog::Kafka { .. } => {
                let shared = &self.sources;
                for (name, help, v) in [
                    ("sightflow_kafka_records", "Kafka records read.", &shared.records),
                    ("sightflow_kafka_malformed", "Kafka messages skipped as malformed.", &shared.garbage),
                    ("sightflow_kafka_duplicates", "Retried batches read again and skipped.", &shared.duplicates),
                ] {
                    out.counter(name, help, v.load(Ordering::Relaxed));
                }
                out.gauges(
                    "sightflow_kafka_lag",
                    "Records behind the high watermark.",
                    "partition",
                    per_partition("lag"),
                );
            }
        }
    }
}

/// Starts everything and returns the router (not yet listening).
/// Raises the soft limit on open files towards the hard one, so that `max_connections`
/// connections, the log and the replay store fit.
pub fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let want = (max_connections as u64).saturating_mul(2).saturating_add(1024);
    if lim.current.is_some_and(|c| c < want) {
        let new = lim.maximum.map_or(want, |m| m.min(want));
        if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(new), maximum: lim.maximum }) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}

/// Catches SIGXFSZ, whose default action kills the process when a file-size limit
/// (`ulimit -f`, a quota) is reached: the write then fails with an error the log handles
/// like a full disk. Keep the returned handle alive.
pub fn survive_file_size_limit() -> Option<tokio::signal::unix::Signal> {
    let kind = tokio::signal::unix::SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
    tokio::signal::unix::signal(kind).ok()
}

/// How long the server keeps recordings, sessions and its log, for the projects API.
pub fn retention(c: &Config) -> sightflow_query::http::Retention {
    sightflow_query::http::Retention {
        recordings_ms: c.replay.retention_ms,
        sessions_ms: c.session.retention_ms,
        log_ms: (!c.kafka.enabled()).then_some(c.log.retention_ms),
    }
}

/// The limits of the HTTP layer from a configuration.
pub fn http_limits(c: &Config) -> HttpLimits {
    HttpLimits {
        max_body_bytes: c.server.max_body_bytes,
        body_timeout: Duration::from_millis(c.server.body_timeout_ms),
        query: QueryLimits {
            timeout: Duration::from_millis(c.query.timeout_ms),
            memory_bytes: c.query.memory_bytes,
            max_rows: c.query.max_rows,
            max_sql_bytes: c.query.max_sql_bytes,
            max_result_bytes: c.query.max_result_bytes,
        },
        query_threads: c.query.concurrency,
        query_nice: c.query.nice as i32,
        query_queue: c.query.queue,
        max_wait: Duration::from_millis(c.query.max_wait_ms),
        max_waiters: c.query.max_waiters,
        per_ip_per_s: c.server.per_ip_requests_per_s,
        trusted_proxies: c.server.trusted_proxies.iter().filter_map(|p| sightflow_config::parse_cidr(p).ok()).collect(),
        tick_ms: c.engine.tick_ms,
        max_page_bytes: c.replay.max_page_bytes,
        live: sightflow_query::live::LiveLimits {
            max_subscriptions: c.query.max_subscriptions,
            min_interval: Duration::from_millis(c.query.subscribe_interval_ms),
            max_rows: c.query.subscribe_max_rows,
            ..Default::default()
        },
    }
}

/// How `serve` bounds its connections, from a configuration.
pub fn serve_options(c: &Config) -> sightflow_query::server::ServeOptions {
    sightflow_query::server::ServeOptions {
        header_timeout: Duration::from_millis(c.server.header_timeout_ms),
        max_connections: c.server.max_connections,
    }
}

/// Starts everything and returns the router (not yet listening). `read_runtime` runs
/// the read side's blocking work (replay chunks), apart from ingest's.
pub fn build(config: Config, data_dir: &Path, read_runtime: tokio::runtime::Handle) -> Result<Started, StartError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| StartError::DataDir { path: data_dir.display().to_string(), source })?;
    let meta = Arc::new(accounts::open(&config, data_dir)?);
    for name in accounts::seed(&meta, &config)? {
        tracing::info!(project = %name, "created project from the configuration");
    }
    let first_owner = accounts::first_owner(&meta)?;
    let (server, engine) = Server::start(config, data_dir, read_runtime, meta.clone())?;
    // A project changed through the API applies to ingest and replay reads at once.
    let weak = Arc::downgrade(&server);
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Some(s) = weak.upgrade()
            && let Err(e) = s.projects.refresh()
        {
            tracing::warn!(error = %e, "cannot reload the projects after a change; they are reloaded within a second");
        }
    });
    let gate = accounts::gate(&server.config, meta.clone(), Some(refresh));
    let mut state = AppState::new(Arc::new(Api(server.clone())), engine.snapshots.clone(), server.http_limits(), gate);
    state.assets = crate::assets();
    state.retention = retention(&server.config);
    let state = Arc::new(state);
    let router = http::router(state.clone());
    Ok(Started { router, state, snapshots: engine.snapshots.clone(), server, engine, meta, first_owner })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A project's own retention cuts its reads at once; segments, which mix projects,
    /// go only past the longest retention of any project or the server.
    #[test]
    fn replay_retention_reads_per_project_and_deletes_past_the_longest() {
        let now = 100 * DAY_MS;
        assert_eq!(replay_read_from(now, 0), i64::MIN, "the server's retention: every stored chunk reads");
        assert_eq!(replay_read_from(now, 7), 93 * DAY_MS);
        assert_eq!(replay_read_from(now, u32::MAX), now - u32::MAX as i64 * DAY_MS, "no overflow");
        let server = 30 * DAY_MS;
        assert_eq!(replay_delete_before(now, server, []), 70 * DAY_MS);
        assert_eq!(replay_delete_before(now, server, [0, 7]), 70 * DAY_MS, "shorter ones wait for the server's");
        assert_eq!(replay_delete_before(now, server, [7, 90, 0]), 10 * DAY_MS, "a longer one keeps the segments");
    }

    /// A request that finds as many waiting as in progress is refused at once; one
    /// with room in the line waits for a slot, and gets it when one frees.
    #[tokio::test(flavor = "current_thread")]
    async fn the_line_is_bounded_and_a_full_line_refuses_at_once() {
        let gate = Arc::new(Gate::new(1, 10_000));
        let held = gate.enter().await.expect("a free slot");
        // One waits in line (it is the line's one place).
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter().await.map(drop).map_err(|e| e.to_string()) });
        for _ in 0..10_000 {
            if gate.waiting.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.waiting.load(Ordering::Relaxed), 1, "the second request waits in line");
        // The next finds the line full: refused without waiting the 10 s.
        let t = Instant::now();
        let refused = gate.enter().await.map(drop).expect_err("the line is full");
        assert!(t.elapsed() < Duration::from_secs(5), "refused after {:?}", t.elapsed());
        assert!(refused.to_string().contains("ingest.max_in_flight"), "{refused}");
        assert_eq!(gate.shed.load(Ordering::Relaxed), 1);
        // The one in line gets the slot once it frees, and the line is empty again.
        drop(held);
        waiter.await.unwrap().expect("the waiting request starts");
        assert_eq!(gate.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(gate.shed.load(Ordering::Relaxed), 1);
    }

    /// A request in line that gets no slot within the wait is refused, naming it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_past_max_queue_ms_is_refused() {
        let gate = Gate::new(1, 20);
        let _held = gate.enter().await.expect("a free slot");
        let refused = gate.enter().await.map(drop).expect_err("no slot frees");
        assert!(refused.to_string().contains("ingest.max_queue_ms"), "{refused}");
        assert_eq!(gate.waiting.load(Ordering::Relaxed), 0);
    }
}
