//! Measurements: backfill from the embedded log, state per live and closed session,
//! query latency over large views. Each returns figures and checks the views against
//! the generator's ground truth.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use sightflow::backfill::{BackfillStats, backfill_log};
use sightflow_config::Config;
use sightflow_config::time::tick_ceil as tick_ceil_ms;
use sightflow_connectors::log::{FsyncPolicy, Log, LogOptions};
use sightflow_connectors::rrweb::Decoder;
use sightflow_dataflows::convert::envelope_events;
use sightflow_dataflows::{Progress, RunOptions, Snapshot, Source, SourceError, start};
use sightflow_operators::event::Kind;
use sightflow_operators::{Event, Params, Sym};
use sightflow_proto::v1::Envelope;

use crate::openloop::{Answer, Client, Request};
use crate::traffic::{GenOptions, Recording, Truth, generate};

/// The recordings decoded into envelopes, in event-time order.
pub struct Traffic {
    pub envelopes: Vec<Envelope>,
    pub truth: Truth,
    /// Analytic events (a mouse-move envelope counts its positions).
    pub events: u64,
    pub protobuf_bytes: u64,
}

/// Generates and decodes traffic, one device at a time (the JSON is dropped at once).
pub fn traffic(opts: &GenOptions) -> anyhow::Result<Traffic> {
    let mut envelopes = Vec::new();
    let mut truth = Truth::default();
    let mut decoder = Decoder::new();
    let chunk = 1000;
    for first in (0..opts.devices).step_by(chunk) {
        let mut o = opts.clone();
        o.devices = chunk.min(opts.devices - first);
        o.seed = opts.seed.wrapping_add(first as u64);
        let (recs, t) = generate(&o);
        truth.add(&t);
        for (i, r) in recs.into_iter().enumerate() {
            let Recording { device, events, .. } = r;
            let device = format!("{device}-{}", first + i);
            truth.rrweb_bytes += events.iter().map(|e| e.to_string().len() as u64 + 1).sum::<u64>();
            let tab = format!("{device}-tab");
            for (seq, e) in events.iter().enumerate() {
                let env = decoder
                    .decode("bench", &device, &tab, seq as u64, &e.to_string())
                    .map_err(|err| anyhow::anyhow!("generated event {seq} of {device} does not decode: {err}"))?;
                envelopes.push(env.envelope);
            }
            decoder.forget("bench", &device, &tab);
        }
    }
    envelopes.sort_by_key(|e| e.ts);
    let mut scratch = Vec::new();
    let events = envelopes
        .iter()
        .map(|e| {
            scratch.clear();
            envelope_events(e, &mut scratch);
            scratch.len() as u64
        })
        .sum();
    let protobuf_bytes = envelopes.iter().map(|e| e.encoded_len() as u64).sum();
    Ok(Traffic { envelopes, truth, events, protobuf_bytes })
}

/// How the bench cuts the traffic into appends (one append = one ingest request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// As the SDK sends it: each tab's events of one flush period (5 s, at most 256
    /// envelopes) in one request, sent when the period ends. `serve` writes such a
    /// request as one record (one Kafka message).
    Sdk,
    /// Every 256 envelopes in event-time order, across devices: one record per device and
    /// chunk, so mostly one envelope per record (the worst case for per-record costs).
    Chunks,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Shape, String> {
        match s {
            "sdk" => Ok(Shape::Sdk),
            "chunks" => Ok(Shape::Chunks),
            other => Err(format!("unknown shape {other:?} (sdk or chunks)")),
        }
    }
}

/// The traffic cut into ingest requests of `shape`, each with the wall-clock time it is
/// appended at, in append order.
pub fn requests(envelopes: &[Envelope], shape: Shape) -> Vec<(i64, Vec<Envelope>)> {
    match shape {
        Shape::Chunks => envelopes.chunks(256).map(|c| (c.first().map_or(0, |e| e.ts), c.to_vec())).collect(),
        Shape::Sdk => {
            // Ordered, so that requests due at the same time go in the same order every run.
            let mut open: BTreeMap<(&str, &str, &str), (i64, Vec<Envelope>)> = BTreeMap::new();
            let mut out: Vec<(i64, Vec<Envelope>)> = Vec::new();
            // `envelopes` is in event-time order: a tab's request closes at its flush
            // boundary (each tab's timer has its own phase) or when it is full.
            for e in envelopes {
                let key = (e.project.as_str(), e.device_id.as_str(), e.tab_id.as_str());
                let phase = (xxhash_rust::xxh3::xxh3_64(e.tab_id.as_bytes()) % SDK_BATCH_MS as u64) as i64;
                let boundary = e.ts + SDK_BATCH_MS - (e.ts - phase).rem_euclid(SDK_BATCH_MS);
                let entry = open.entry(key).or_insert_with(|| (boundary, Vec::new()));
                if e.ts > entry.0 || entry.1.len() >= 256 {
                    let due = if e.ts > entry.0 { entry.0 } else { e.ts };
                    out.push((due, std::mem::take(&mut entry.1)));
                    entry.0 = boundary;
                }
                entry.1.push(e.clone());
            }
            out.extend(open.into_values().filter(|(_, v)| !v.is_empty()));
            out.sort_by_key(|(due, _)| *due);
            out
        }
    }
}

/// Writes the requests to an embedded log under `dir` (as `serve` would, without fsync).
pub fn write_log(config: &Config, dir: &Path, requests: &[(i64, Vec<Envelope>)]) -> anyhow::Result<u64> {
    let l = &config.log;
    let log = Log::open(LogOptions {
        dir: dir.join("log"),
        partitions: l.partitions,
        segment_bytes: l.segment_bytes,
        fsync: FsyncPolicy::Never,
        retention_bytes: u64::MAX,
        retention_ms: i64::MAX,
        tick_ms: config.engine.tick_ms,
        lateness_ms: config.engine.allowed_lateness_ms,
        clamp_late: true,
        idle_timeout_ms: config.engine.idle_timeout_ms,
        max_skew_ms: config.engine.clock_skew_ms(),
    })?;
    let mut late = 0;
    // As a live run appends: at the wall-clock time each request is sent.
    for (i, (now, events)) in requests.iter().enumerate() {
        let a = log.append(&format!("gen-{i}"), events.clone(), *now)?;
        late += a.clamped as u64;
    }
    Ok(late)
}

/// Points `config` at a new topic on `brokers` (created with `partitions`).
pub fn fresh_topic(config: &mut Config, brokers: &str, partitions: i32) -> anyhow::Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    config.kafka.brokers = brokers.to_string();
    config.kafka.topic = format!("bench-{}-{nanos}", std::process::id());
    let opts = sightflow::kafka::kafka_options(config);
    sightflow_connectors::kafka::create_topic(&opts, partitions)?;
    Ok(())
}

/// Writes the requests to the configured Kafka topic as `serve` would: one append per
/// request, at the wall-clock time it is sent, produced and acknowledged (64 pipelined,
/// in order).
pub fn write_kafka(config: &Config, requests: &[(i64, Vec<Envelope>)]) -> anyhow::Result<u64> {
    let sink = sightflow_connectors::kafka::KafkaSink::connect(sightflow::kafka::kafka_options(config), &[])?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut late = 0;
    rt.block_on(async {
        for (w, window) in requests.chunks(64).enumerate() {
            // Each append stamps and enqueues before its first await, so polling them
            // in order keeps the log order.
            let appends = window
                .iter()
                .enumerate()
                .map(|(i, (now, events))| sink.append(format!("gen-{w}-{i}"), events.clone(), *now));
            for r in futures::future::join_all(appends).await {
                late += r?.clamped as u64;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(late)
}

/// Counts in the views that the generator planted.
pub fn observed(snap: &Snapshot) -> anyhow::Result<Truth> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let one = |sql: &str| -> anyhow::Result<u64> {
        let r = rt
            .block_on(sightflow_query::execute(snap, sql, &Default::default()))
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        let rows = sightflow_query::format::rows_as_arrays(&r);
        Ok(rows.first().and_then(|r| r.get(0)).and_then(|v| v.as_u64()).unwrap_or(0))
    };
    Ok(Truth {
        devices: one("select count(distinct device_id) from sessions")?,
        sessions: one("select count(*) from sessions")?,
        page_views: one("select count(*) from page_views")?,
        clicks: one("select sum(clicks) from sessions")?,
        rage_bursts: one("select count(*) from rage_clicks")?,
        dead_clicks: one("select count(*) from dead_clicks")?,
        error_clicks: one("select count(*) from error_clicks")?,
        quick_backs: one("select count(*) from quick_backs")?,
        excessive_scrolls: one("select count(*) from excessive_scrolls")?,
        thrashed_cursors: one("select count(*) from thrashed_cursors")?,
        funnel_conversions: one("select entered from funnel_steps where funnel = 'signup' order by step desc limit 1")?,
        uncaught_errors: one("select sum(occurrences) from errors")?,
        rrweb_events: 0,
        rrweb_bytes: 0,
    })
}

/// Fails with the differing counts when the views do not show what was planted.
pub fn check_truth(snap: &Snapshot, truth: &Truth) -> anyhow::Result<()> {
    let mut want = truth.clone();
    want.rrweb_events = 0;
    want.rrweb_bytes = 0;
    let got = observed(snap)?;
    anyhow::ensure!(got == want, "views differ from the planted truth:\n  planted {want:?}\n  in views {got:?}");
    Ok(())
}

/// One backfill figure.
pub struct BackfillFigure {
    pub workers: usize,
    pub stats: BackfillStats,
    pub events: u64,
    /// CPU seconds the process used during the backfill (every thread, exited ones too).
    pub cpu: f64,
}

/// Backfills the log under `dir` with `workers` workers and checks the views.
pub fn backfill(config: &Config, dir: &Path, workers: usize, t: &Traffic) -> anyhow::Result<BackfillFigure> {
    let mut c = config.clone();
    c.engine.workers = workers;
    let cpu0 = process_cpu();
    let (snap, stats) = if c.kafka.enabled() {
        let b = sightflow::backfill::backfill(
            &c,
            dir,
            &sightflow_config::StartAt::Earliest,
            &sightflow::backfill::Until::End,
            sightflow::backfill::ProgressOutput::None,
        )?;
        (b.snapshot, b.stats)
    } else {
        backfill_log(&c, dir)?
    };
    let cpu = process_cpu() - cpu0;
    anyhow::ensure!(
        stats.events == t.envelopes.len() as u64,
        "read {} of {} envelopes",
        stats.events,
        t.envelopes.len()
    );
    check_truth(&snap, &t.truth)?;
    Ok(BackfillFigure { workers, stats, events: t.events, cpu })
}

/// State and memory with every session live, then with every session closed.
#[derive(Debug, Clone)]
pub struct MemoryFigure {
    pub sessions: u64,
    pub envelopes: u64,
    pub live_state_bytes: u64,
    pub live_rss_bytes: u64,
    pub closed_state_bytes: u64,
    pub closed_rss_bytes: u64,
    pub view_bytes: u64,
    pub per_view_live: Vec<(String, u64)>,
    pub per_view_closed: Vec<(String, u64)>,
    /// The string table (entries, bytes) with every session live, closed, and once the
    /// closed sessions' strings have outlived their keep time.
    pub strings_live: (u64, u64),
    pub strings_closed: (u64, u64),
    pub strings_reclaimed: (u64, u64),
}

/// Resident set size of this process.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The name and CPU seconds (user + system) of a `/proc/.../stat` file's task.
fn stat_cpu(path: &Path) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may hold spaces; the fields after it are fixed.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Some((stat[open + 1..close].to_string(), (ticks(11) + ticks(12)) / 100.0))
}

/// CPU seconds used so far by process `pid`, exited threads included.
pub fn cpu_of(pid: u32) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map_or(0.0, |(_, cpu)| cpu)
}

/// CPU seconds used so far by the whole process, exited threads included.
pub fn process_cpu() -> f64 {
    stat_cpu(Path::new("/proc/self/stat")).map_or(0.0, |(_, cpu)| cpu)
}

/// CPU seconds used so far by this process's threads, by thread name.
pub fn thread_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Some((name, cpu)) = stat_cpu(&t.path().join("stat")) {
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

/// The dataflow's state in bytes, the published views' bytes and the per-view split.
/// The string table is reported apart ([`strings`]).
pub fn dataflow_state(snap: &Snapshot) -> (u64, u64, Vec<(String, u64)>) {
    let mut total = 0;
    let mut views = 0;
    let mut per = Vec::new();
    for (name, s) in &snap.state {
        if name == "published_views" {
            views += s.bytes as u64;
        } else if name != "strings" {
            total += s.bytes as u64;
            per.push((name.clone(), s.bytes as u64));
        }
    }
    (total, views, per)
}

/// The string table's entries and bytes, as `sightflow_state` shows them.
pub(crate) fn strings(snap: &Snapshot) -> (u64, u64) {
    snap.state.get("strings").map_or((0, 0), |s| (s.records as u64, s.bytes as u64))
}

/// Generates traffic chunk by chunk on the feeding worker (so nothing but the dataflow
/// holds it), then holds the frontier where `frontier` says until `stop`.
struct StreamSource {
    feeder: Option<Feeder>,
    frontier: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

struct Feeder {
    opts: GenOptions,
    chunk: usize,
    /// Session starts of chunk `k` lie in `start_ms + k * span .. + span`.
    span: i64,
    next: usize,
    decoder: Decoder,
    tick: u64,
    max_ts: i64,
    truth: Arc<Mutex<Truth>>,
    envelopes: Arc<AtomicU64>,
    live_at: Arc<AtomicU64>,
}

impl Feeder {
    /// Feeds one chunk; returns the frontier after it.
    fn feed(&mut self, out: &mut Vec<(u64, Envelope)>) -> u64 {
        let k = (self.next / self.chunk) as i64;
        let mut o = self.opts.clone();
        o.devices = self.chunk.min(self.opts.devices - self.next);
        o.seed = self.opts.seed.wrapping_add(self.next as u64);
        o.start_ms = self.opts.start_ms + k * self.span;
        o.spread_ms = self.span;
        let (recs, t) = generate(&o);
        if let Ok(mut truth) = self.truth.lock() {
            truth.add(&t);
        }
        let mut batch = Vec::new();
        for (i, r) in recs.into_iter().enumerate() {
            let device = format!("{}-{}", r.device, self.next + i);
            let tab = format!("{device}-tab");
            for (seq, e) in r.events.iter().enumerate() {
                if let Ok(d) = self.decoder.decode("bench", &device, &tab, seq as u64, &e.to_string()) {
                    let env = d.envelope;
                    self.max_ts = self.max_ts.max(env.ts);
                    batch.push((tick_ceil_ms(env.ts, self.tick), env));
                }
            }
            self.decoder.forget("bench", &device, &tab);
        }
        self.envelopes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        out.extend(batch);
        self.next += o.devices;
        // Every later chunk starts at or after this.
        let next_start = self.opts.start_ms + (k + 1) * self.span;
        (next_start.max(0) as u64 / self.tick) * self.tick
    }
}

impl Source for StreamSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        if let Some(f) = self.feeder.as_mut() {
            if f.next < f.opts.devices {
                let frontier = f.feed(out);
                self.frontier.fetch_max(frontier, Ordering::Relaxed);
                return Ok(Progress::At { frontier, busy: true });
            }
            if f.live_at.load(Ordering::Relaxed) == 0 {
                let live_at = tick_ceil_ms(f.max_ts, f.tick) + f.tick;
                self.frontier.fetch_max(live_at, Ordering::Relaxed);
                f.live_at.store(live_at, Ordering::Relaxed);
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            return Ok(Progress::Done);
        }
        Ok(Progress::At { frontier: self.frontier.load(Ordering::Relaxed), busy: false })
    }
}

/// Streams generated traffic into a live dataflow, holds the frontier just after its
/// last event (every session live), then moves it past the session gap and the state
/// grace (every session closed) and reads the state sizes at both points. Sessions
/// start in chunks of `chunk` devices, 15 ms apart per device, so all are live at the
/// end; a chunk's recordings are generated as JSON at once, so it sets the generator's
/// memory.
pub fn memory(config: &Config, opts: &GenOptions, chunk: usize) -> anyhow::Result<MemoryFigure> {
    let params = Arc::new(Params::from_config(config));
    let (tick, strings_keep) = (params.tick, params.strings_keep);
    let frontier = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let live_at = Arc::new(AtomicU64::new(0));
    let truth = Arc::new(Mutex::new(Truth::default()));
    let envelopes = Arc::new(AtomicU64::new(0));
    let workers = config.engine.workers;
    let feeder = Mutex::new(Some(Feeder {
        opts: opts.clone(),
        chunk: chunk.max(1),
        // 1,000 session starts per 15 s, whatever the chunk.
        span: 15 * chunk.max(1) as i64,
        next: 0,
        decoder: Decoder::new(),
        tick,
        max_ts: 0,
        truth: truth.clone(),
        envelopes: envelopes.clone(),
        live_at: live_at.clone(),
    }));
    let (f, s) = (frontier.clone(), stop.clone());
    let running = start(
        RunOptions { workers, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: false },
        move |index, _| {
            let feeder = if index == 0 { feeder.lock().ok().and_then(|mut x| x.take()) } else { None };
            Box::new(StreamSource { feeder, frontier: f.clone(), stop: s.clone() }) as Box<dyn Source>
        },
    )?;
    let wait = Duration::from_secs(3600);
    let deadline = Instant::now() + wait;
    while live_at.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the feeder did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let live_at = live_at.load(Ordering::Relaxed);
    let snap =
        running.snapshots.wait_for(live_at - 1, wait).map_err(|_| anyhow::anyhow!("views did not reach live_at"))?;
    let live_sessions = snap.num_rows("sessions").unwrap_or(0) as u64;
    let live_now = snap.table("sessions").map_or(0, |b| {
        b.column_by_name("is_live").map_or(0, |c| {
            c.as_any().downcast_ref::<datafusion::arrow::array::BooleanArray>().map_or(0, |a| a.true_count() as u64)
        })
    });
    anyhow::ensure!(live_now == live_sessions, "{live_now} of {live_sessions} sessions live at the live point");
    let (live_state, _, per_view_live) = dataflow_state(&snap);
    let strings_live = strings(&snap);
    let live_rss = rss_bytes();
    drop(snap);
    // Past the idle gap and the state grace: every session has ended and been released.
    let closed_at = live_at + config.session.idle_gap_ms + config.engine.state_grace_ms + 10 * tick;
    let closed_at = closed_at.div_ceil(tick) * tick;
    frontier.store(closed_at, Ordering::Relaxed);
    let snap = running.snapshots.wait_for(closed_at - 1, wait).map_err(|_| anyhow::anyhow!("views did not close"))?;
    let (closed_state, view_bytes, per_view_closed) = dataflow_state(&snap);
    let strings_closed = strings(&snap);
    let closed_rss = rss_bytes();
    let sessions = snap.num_rows("sessions").unwrap_or(0) as u64;
    anyhow::ensure!(sessions == live_sessions, "{sessions} sessions after closing, {live_sessions} while live");
    let truth = truth.lock().map(|t| t.clone()).unwrap_or_default();
    check_truth(&snap, &truth)?;
    drop(snap);
    // Past the strings' keep time (and two epochs of the table): what only the closed
    // sessions used is reclaimed; their published rows keep their strings in Arrow.
    let reclaimed_at = (closed_at + strings_keep + 2 * sightflow_operators::sym::EPOCH_MS).div_ceil(tick) * tick;
    frontier.store(reclaimed_at, Ordering::Relaxed);
    let snap =
        running.snapshots.wait_for(reclaimed_at - 1, wait).map_err(|_| anyhow::anyhow!("views did not advance"))?;
    let strings_reclaimed = strings(&snap);
    check_truth(&snap, &truth)?;
    drop(snap);
    stop.store(true, Ordering::Relaxed);
    running.join()?;
    Ok(MemoryFigure {
        sessions,
        envelopes: envelopes.load(Ordering::Relaxed),
        live_state_bytes: live_state,
        live_rss_bytes: live_rss,
        closed_state_bytes: closed_state,
        closed_rss_bytes: closed_rss,
        view_bytes,
        per_view_live,
        per_view_closed,
        strings_live,
        strings_closed,
        strings_reclaimed,
    })
}

/// The live-dashboard queries of the latency benchmark.
pub const DASHBOARD_QUERIES: &[(&str, &str)] = &[
    ("live sessions", "select count(*) from sessions where is_live"),
    (
        "top rage-click pages",
        "select url, count(*) as bursts, sum(clicks) as clicks from rage_clicks group by url order by bursts desc limit 10",
    ),
    (
        "heatmap of one page",
        "select cell_x, cell_y, count from heatmap_cells where url = 'http://shop.bench.test/pricing' and kind = 'click' and viewport_bucket = 1280 order by count desc limit 500",
    ),
    (
        "funnel",
        "select step, step_name, entered, conversion_rate from funnel_steps where funnel = 'signup' order by step",
    ),
    // The top rage-click pages from the per-page count the engine keeps, where the query
    // above groups every burst row.
    (
        "rage-click pages kept",
        "select url, rage_clicks as bursts from page_stats where rage_clicks > 0 order by bursts desc, url limit 10",
    ),
];

/// The live-feed clients subscribe to the first four dashboard queries (those of the
/// figures before the fifth was added).
const FEED_QUERIES: usize = 4;

/// p50/p99 of each dashboard query over `snap`, `runs` times each.
pub fn query_latency(snap: &Snapshot, runs: usize) -> anyhow::Result<Vec<(String, f64, f64, f64)>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut out = Vec::new();
    for (name, sql) in DASHBOARD_QUERIES {
        let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
        for _ in 0..runs {
            let started = Instant::now();
            let r = rt
                .block_on(sightflow_query::execute(snap, sql, &Default::default()))
                .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
            std::hint::black_box(r.num_rows());
            h.record(started.elapsed().as_micros() as u64)?;
        }
        out.push((
            name.to_string(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        ));
    }
    Ok(out)
}

/// Many small sessions for the query benchmark: SDK events (page views, clicks, a rage
/// burst in one session of ten, an error in one of twenty), spread over a day. Session
/// `i` walks the first `1 + i % 4` steps of the signup funnel.
pub fn light_sessions(sessions: usize, start_ms: i64) -> anyhow::Result<Vec<Envelope>> {
    let mut out = Vec::with_capacity(sessions * 8);
    for e in LightSessions::new(sessions, start_ms, 0, 1) {
        out.push(e?);
    }
    Ok(out)
}

/// When light session `i` starts.
fn light_start(i: usize, start_ms: i64) -> i64 {
    start_ms + (i as i64 * 7919) % 40_000_000
}

/// The SDK events of light session `i`, in time order, decoded as `POST /api/v1/track`
/// decodes them.
fn light_session(
    i: usize,
    start_ms: i64,
    decoders: &sightflow_connectors::rrweb::Decoders,
) -> anyhow::Result<Vec<Envelope>> {
    use serde_json::json;
    let defaults = sightflow_connectors::json::Defaults { project: "bench".into(), device_id: String::new() };
    let paths = ["/", "/pricing", "/signup", "/thanks"];
    let widths = [390, 1280, 1440, 1024];
    let device = format!("light-{i:08}");
    let t0 = light_start(i, start_ms);
    let w = widths[i % widths.len()];
    let mut events = Vec::with_capacity(8);
    for (k, p) in paths.iter().take(1 + i % 4).enumerate() {
        let t = t0 + k as i64 * 20_000;
        events.push(json!({"type": "page_view", "device_id": device, "ts": t, "url": format!("http://shop.bench.test{p}"), "viewport_width": w, "viewport_height": 800}));
        let (x, y) = ((i * 37 % 1200) as i64, (i * 53 % 2000) as i64);
        events.push(
            json!({"type": "click", "device_id": device, "ts": t + 3000, "x": x, "y": y, "selector": "button.cta"}),
        );
        events.push(json!({"type": "mutation", "device_id": device, "ts": t + 3200}));
        if k == 0 && i.is_multiple_of(10) {
            for r in 1..4 {
                events.push(json!({"type": "click", "device_id": device, "ts": t + 5000 + r * 200, "x": x + 5, "y": y, "selector": "button.cta"}));
            }
            events.push(json!({"type": "mutation", "device_id": device, "ts": t + 6000}));
        }
        if k == 0 && i.is_multiple_of(20) {
            events.push(json!({"type": "error", "device_id": device, "ts": t + 9000, "message": "Uncaught TypeError: price is undefined", "source": "app.js"}));
        }
    }
    events
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let text = e.to_string();
            sightflow_connectors::json::decode_event(&text, &defaults, n as u64, decoders, &Default::default())
                .map(|d| d.envelope)
                .map_err(|err| anyhow::anyhow!("light event {n} of {device}: {err}"))
        })
        .collect()
}

/// The light sessions `i` with `i % of == share`, generated as they are read, in time
/// order (events of one time in the order generated), so that millions of sessions never
/// have to be held at once: only those started within the last session's span (69 s).
pub struct LightSessions {
    /// Sessions still to start, latest first: (start, index).
    starts: Vec<(i64, usize)>,
    start_ms: i64,
    /// Events of started sessions: (time, order generated, envelope).
    pending: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64, Pending)>>,
    generated: u64,
    decoders: sightflow_connectors::rrweb::Decoders,
}

/// An envelope in the heap, compared by nothing (the heap orders by time and number).
struct Pending(Envelope);

impl PartialEq for Pending {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl LightSessions {
    pub fn new(sessions: usize, start_ms: i64, share: usize, of: usize) -> LightSessions {
        let mut starts: Vec<(i64, usize)> =
            (share..sessions).step_by(of.max(1)).map(|i| (light_start(i, start_ms), i)).collect();
        starts.sort_unstable_by(|a, b| b.cmp(a));
        LightSessions { starts, start_ms, pending: Default::default(), generated: 0, decoders: Default::default() }
    }
}

impl Iterator for LightSessions {
    type Item = anyhow::Result<Envelope>;

    fn next(&mut self) -> Option<Self::Item> {
        // Start every session that starts no later than the earliest pending event.
        while let Some(&(t0, i)) = self.starts.last() {
            if self.pending.peek().is_some_and(|std::cmp::Reverse((t, _, _))| *t < t0) {
                break;
            }
            self.starts.pop();
            match light_session(i, self.start_ms, &self.decoders) {
                Ok(events) => {
                    for e in events {
                        self.generated += 1;
                        self.pending.push(std::cmp::Reverse((e.ts, self.generated, Pending(e))));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
        self.pending.pop().map(|std::cmp::Reverse((_, _, Pending(e)))| Ok(e))
    }
}

/// Freshness under live load over HTTP.
#[derive(Debug, Clone)]
pub struct FreshnessFigure {
    /// Events/s offered: the rate asked for, or with rrweb traffic what the generator made.
    pub offered: f64,
    pub achieved: f64,
    pub requests: u64,
    pub failed: u64,
    /// Events refused with 429 or 503, those of them with a Retry-After, and the p99
    /// time to such an answer.
    pub shed: u64,
    pub shed_with_retry_after: u64,
    pub shed_p99_ms: f64,
    /// Acknowledged requests not visible by the end of the wait.
    pub unseen: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// p99 of the first and the last third of the run: a growing backlog shows here.
    pub p99_first_ms: f64,
    pub p99_last_ms: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
}

/// Runs `serve` in this process on a free loopback port with the given engine timing,
/// offers `rate` events/s over `POST /api/v1/track` from `senders` threads for
/// `seconds`, and measures for every acknowledged request the time from its
/// acknowledgement until a published snapshot's `as_of` reaches the answer's
/// `min_as_of` (every event of the request is then visible).
///
/// `rrweb` traffic is shaped as the SDK sends it: each tab's events in one request per
/// 5 s (at most 900 KB of JSON), gzipped, with a batch id. The bodies are built and
/// compressed before the timed part, so the senders cost little CPU while it runs.
/// Answers 429 and 503 count as shed (the request is not retried: the offered load
/// stays what it was).
pub fn freshness(
    config: &Config,
    rate: u64,
    seconds: u64,
    senders: usize,
    rrweb: bool,
    open_loop: Option<usize>,
) -> anyhow::Result<FreshnessFigure> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let dir = tempfile::tempdir()?;
    let query_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // The open-loop client's own thread.
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let started = sightflow::serve::build(config.clone(), dir.path(), query_rt.handle().clone())?;
    let snapshots = started.snapshots.clone();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let origin = format!("http://{addr}");
    let path = "/api/v1/track?key=demo";
    {
        let _in = rt.enter();
        started.server.spawn_maintenance();
    }
    let router = started.router.clone();
    rt.spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, u64)>();
    let run_for = Duration::from_secs(seconds);

    let per_request = ((rate as f64 / 100.0) / senders as f64).ceil().max(1.0) as usize;
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let shed_hint = Arc::new(AtomicU64::new(0));
    let new_hist = || hdrhistogram::Histogram::<u64>::new(3);
    let ack_hist = Arc::new(Mutex::new(new_hist()?));
    let shed_hist = Arc::new(Mutex::new(new_hist()?));
    let mut plans = if rrweb { sdk_requests(rate, seconds, senders)? } else { Vec::new() };
    // The run starts with the first request that is due.
    if let Some(first) = plans.iter().flatten().map(|r| r.due_ms).min() {
        let wait = first - sightflow::serve::now_ms();
        if wait < 0 {
            eprintln!("warning: building the requests took {} ms longer than planned; the first ones go late", -wait);
        }
        std::thread::sleep(Duration::from_millis(wait.max(0) as u64));
    }
    let begin = Instant::now();
    let begin_ms = sightflow::serve::now_ms();
    let offered_events: usize =
        plans.iter().flatten().filter(|r| r.due_ms < begin_ms + run_for.as_millis() as i64).map(|r| r.events).sum();
    let tally = Tally {
        tx,
        sent: sent.clone(),
        failed: failed.clone(),
        shed: shed.clone(),
        shed_hint: shed_hint.clone(),
        ack_hist: ack_hist.clone(),
        shed_hist: shed_hist.clone(),
    };
    // A sender's next request: its own plan (rrweb) or compact events every 10 ms.
    let mut sources: Vec<Schedule> = (0..senders)
        .map(|k| Schedule {
            plan: if rrweb { plans.get_mut(k).map(|p| std::mem::take(p).into_iter()) } else { None },
            device: format!("fresh-{k}"),
            n: 0,
            next: begin,
            per_request,
        })
        .collect();
    let mut threads = Vec::new();
    match open_loop {
        None => {
            // Closed loop: each sender waits for its answer before its next request.
            for mut source in sources {
                let (tally, origin) = (tally.clone(), origin.clone());
                threads.push(std::thread::spawn(move || {
                    let agent = bench_agent();
                    while let Some(job) = source.next_job(begin, begin_ms, run_for) {
                        let now = Instant::now();
                        if now < job.due {
                            std::thread::sleep(job.due - now);
                        }
                        if begin.elapsed() >= run_for {
                            break;
                        }
                        let (sent_at, events) = (Instant::now(), job.events);
                        let answer = job.send(&agent, &origin, path);
                        tally.record(events, sent_at, answer);
                    }
                }));
            }
        }
        Some(connections) => {
            // Open loop: a dispatcher sends every request when it is due, on an idle
            // connection or a new one (at most `connections`), without waiting for
            // earlier answers; the acknowledgement time counts from when the request
            // was due (a client that falls behind shows in it). Requests not sent when
            // the run ends are dropped: the achieved rate counts what was answered.
            let client = Arc::new(Client::new(addr, connections));
            let handle = client_rt.handle().clone();
            let tally = tally.clone();
            threads.push(std::thread::spawn(move || {
                let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
                let mut pending: Vec<Option<Job>> = Vec::new();
                for (k, source) in sources.iter_mut().enumerate() {
                    pending.push(source.next_job(begin, begin_ms, run_for));
                    if let Some(j) = &pending[k] {
                        due.push(Reverse((j.due, k)));
                    }
                }
                while let Some(Reverse((at, k))) = due.pop() {
                    let now = Instant::now();
                    if now < at {
                        std::thread::sleep(at - now);
                    }
                    if begin.elapsed() >= run_for {
                        break;
                    }
                    let Some(job) = pending[k].take() else { continue };
                    let (tally, client) = (tally.clone(), client.clone());
                    handle.spawn(async move {
                        let (due, events) = (job.due, job.events);
                        let request = job.request(path);
                        if let Some(answer) = client.send(request, begin + run_for).await {
                            tally.record(events, due, answer);
                        }
                    });
                    pending[k] = sources[k].next_job(begin, begin_ms, run_for);
                    if let Some(j) = &pending[k] {
                        due.push(Reverse((j.due, k)));
                    }
                }
            }));
        }
    }
    drop(tally);
    // The watcher: pending acknowledgements by the logical time that makes them visible.
    let mut pending: BinaryHeap<Reverse<(u64, Instant)>> = BinaryHeap::new();
    let mut all = new_hist()?;
    let mut first = new_hist()?;
    let mut last = new_hist()?;
    let mut open = true;
    let deadline = begin + run_for + Duration::from_secs(30);
    let mut requests = 0u64;
    while (open || !pending.is_empty()) && Instant::now() < deadline {
        loop {
            match rx.try_recv() {
                Ok((acked, need)) => {
                    requests += 1;
                    pending.push(Reverse((need, acked)));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let Some(Reverse((need, _))) = pending.peek().copied() else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let snap = match snapshots.wait_for(need, Duration::from_millis(5)) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let seen = Instant::now();
        while let Some(Reverse((need, acked))) = pending.peek().copied() {
            if need > snap.as_of {
                break;
            }
            pending.pop();
            let us = seen.saturating_duration_since(acked).as_micros() as u64;
            all.record(us)?;
            let at = acked.duration_since(begin);
            if at < run_for / 3 {
                first.record(us)?;
            } else if at > run_for * 2 / 3 {
                last.record(us)?;
            }
        }
    }
    let unseen = pending.len() as u64;
    for t in threads {
        let _ = t.join();
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (ack_p50, ack_p99) = ack_hist.lock().map(|h| (ms(&h, 0.5), ms(&h, 0.99))).unwrap_or((0.0, 0.0));
    let shed_p99 = shed_hist.lock().map(|h| ms(&h, 0.99)).unwrap_or(0.0);
    drop(started);
    client_rt.shutdown_background();
    query_rt.shutdown_background();
    rt.shutdown_background();
    let offered = if rrweb { offered_events as f64 / run_for.as_secs_f64() } else { rate as f64 };
    Ok(FreshnessFigure {
        offered,
        achieved: sent.load(Ordering::Relaxed) as f64 / run_for.as_secs_f64(),
        requests,
        failed: failed.load(Ordering::Relaxed),
        shed: shed.load(Ordering::Relaxed),
        shed_with_retry_after: shed_hint.load(Ordering::Relaxed),
        shed_p99_ms: shed_p99,
        unseen,
        p50_ms: ms(&all, 0.5),
        p99_ms: ms(&all, 0.99),
        p999_ms: ms(&all, 0.999),
        max_ms: all.max() as f64 / 1000.0,
        p99_first_ms: ms(&first, 0.99),
        p99_last_ms: ms(&last, 0.99),
        ack_p50_ms: ack_p50,
        ack_p99_ms: ack_p99,
    })
}

/// What the freshness senders count, shared by their threads.
#[derive(Clone)]
struct Tally {
    tx: std::sync::mpsc::Sender<(Instant, u64)>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    shed: Arc<AtomicU64>,
    shed_hint: Arc<AtomicU64>,
    ack_hist: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    shed_hist: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
}

impl Tally {
    /// Counts one answer; its time counts from `since`.
    fn record(&self, events: usize, since: Instant, answer: Answer) {
        let answered = Instant::now();
        let us = answered.saturating_duration_since(since).as_micros() as u64;
        match answer {
            Answer::Accepted { min_as_of } => {
                self.sent.fetch_add(events as u64, Ordering::Relaxed);
                if let Ok(mut h) = self.ack_hist.lock() {
                    let _ = h.record(us);
                }
                if let Some(t) = min_as_of {
                    let _ = self.tx.send((answered, t));
                }
            }
            Answer::Shed { retry_after } => {
                self.shed.fetch_add(events as u64, Ordering::Relaxed);
                if retry_after {
                    self.shed_hint.fetch_add(events as u64, Ordering::Relaxed);
                }
                if let Ok(mut h) = self.shed_hist.lock() {
                    let _ = h.record(us);
                }
            }
            Answer::Failed(why) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("first failed request: {why}");
                }
            }
        }
    }
}

/// One request of a freshness sender.
struct Job {
    due: Instant,
    events: usize,
    body: JobBody,
}

enum JobBody {
    /// Compact SDK events; their `ts` is the time the request goes out.
    Compact { device: String, first: u64 },
    /// A gzipped SDK request of raw rrweb.
    Rrweb { body: Vec<u8>, batch_id: String },
}

impl Job {
    /// The request to `path` (with its query), its body built now.
    fn request(self, path: &str) -> Request {
        match self.body {
            JobBody::Compact { device, first } => {
                let mut body = String::with_capacity(self.events * 120);
                let mut n = first;
                compact_request(&mut body, &device, &mut n, self.events, sightflow::serve::now_ms());
                Request {
                    path_and_query: path.to_string(),
                    content_type: "application/json",
                    gzip: false,
                    body: body.into_bytes(),
                }
            }
            JobBody::Rrweb { body, batch_id } => Request {
                path_and_query: format!("{path}&batch_id={batch_id}"),
                content_type: "text/plain",
                gzip: true,
                body,
            },
        }
    }

    fn send(self, agent: &ureq::Agent, origin: &str, path: &str) -> Answer {
        let r = self.request(path);
        let mut post = agent.post(&format!("{origin}{}", r.path_and_query)).content_type(r.content_type);
        if r.gzip {
            post = post.header("content-encoding", "gzip");
        }
        Answer::from_ureq(post.send(&r.body[..]))
    }
}

/// A freshness sender's schedule.
struct Schedule {
    plan: Option<std::vec::IntoIter<SdkRequest>>,
    device: String,
    n: u64,
    next: Instant,
    per_request: usize,
}

impl Schedule {
    /// The next request and when it is due; `None` once the plan is over.
    fn next_job(&mut self, begin: Instant, begin_ms: i64, run_for: Duration) -> Option<Job> {
        if let Some(plan) = &mut self.plan {
            let r = plan.next()?;
            let due = begin + Duration::from_millis((r.due_ms - begin_ms).max(0) as u64);
            return Some(Job { due, events: r.events, body: JobBody::Rrweb { body: r.body, batch_id: r.batch_id } });
        }
        if self.next >= begin + run_for {
            return None;
        }
        let job = Job {
            due: self.next,
            events: self.per_request,
            body: JobBody::Compact { device: self.device.clone(), first: self.n },
        };
        self.n += self.per_request as u64;
        self.next += Duration::from_millis(10);
        Some(job)
    }
}

/// An HTTP client that hands non-2xx answers back as answers, not errors.
pub(crate) fn bench_agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// The `min_as_of` of an accepted `/track` answer (its body read up to 64 KiB).
pub(crate) fn min_as_of(r: &mut ureq::http::Response<ureq::Body>) -> Option<u64> {
    min_as_of_in(&answer_body(r))
}

/// An answer's body, read up to 64 KiB.
pub(crate) fn answer_body(r: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(r.body_mut().as_reader(), 1 << 16), &mut body);
    body
}

/// The `min_as_of` in the body of an accepted `/track` answer.
pub(crate) fn min_as_of_in(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["min_as_of"].as_u64())
}

/// Prints a failed request's status and body, or its error.
pub(crate) fn first_failure(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) {
    match answer {
        Ok(mut r) => {
            eprintln!("first failed request: {} {}", r.status(), r.body_mut().read_to_string().unwrap_or_default())
        }
        Err(e) => eprintln!("first failed request: {e}"),
    }
}

/// One request as the SDK would send it: a tab's events of the last 5 s.
struct SdkRequest {
    /// When it is sent (wall-clock ms).
    due_ms: i64,
    /// The gzipped JSON array.
    body: Vec<u8>,
    batch_id: String,
    events: usize,
}

/// The ingest decoder alone on the generator's raw rrweb traffic.
#[derive(Debug, Clone)]
pub struct DecodeFigures {
    pub requests: usize,
    /// rrweb events accepted in a pass (every one of the traffic).
    pub events: usize,
    pub gzipped_bytes: usize,
    pub json_bytes: usize,
    /// Seconds per pass.
    pub runs: Vec<f64>,
    /// Seconds of the best pass's gunzip alone.
    pub gunzip_s: f64,
}

/// Decodes the requests of `seconds` of raw rrweb traffic at `rate` with the server's
/// decoder settings, `runs` times, each pass with fresh decoders (so every tab's
/// FullSnapshot builds its node map again).
pub fn decode_throughput(rate: u64, seconds: u64, runs: usize) -> anyhow::Result<DecodeFigures> {
    use sightflow_connectors::ingest::{BodyLimits, decode_track, decompress};
    let config = sightflow_config::Config::defaults();
    let mut requests: Vec<SdkRequest> = sdk_requests(rate, seconds, 1)?.into_iter().flatten().collect();
    requests.sort_by_key(|r| r.due_ms);
    let limits = BodyLimits {
        max_decompressed_bytes: config.ingest.max_decompressed_bytes,
        max_events: config.ingest.max_events_per_batch,
        sizes: sightflow_connectors::json::Sizes {
            max_event_bytes: config.ingest.max_event_bytes,
            max_rrweb_event_bytes: config.ingest.max_rrweb_event_bytes,
        },
    };
    let decoder_limits = sightflow_connectors::rrweb::DecoderLimits {
        max_nodes_per_tab: config.ingest.max_nodes_per_tab,
        max_nodes_total: config.ingest.max_nodes_total,
        max_tabs: 50_000,
        max_payload_bytes: 8192,
    };
    let event_limits = sightflow_connectors::validate::Limits::any_age(sightflow::serve::now_ms() + 10 * 86_400_000);
    let defaults = sightflow_connectors::json::Defaults { project: "demo".into(), device_id: String::new() };
    let mut out = DecodeFigures {
        requests: requests.len(),
        events: 0,
        gzipped_bytes: requests.iter().map(|r| r.body.len()).sum(),
        json_bytes: 0,
        runs: Vec::new(),
        gunzip_s: f64::INFINITY,
    };
    for _ in 0..runs.max(1) {
        let decoders = sightflow_connectors::rrweb::Decoders::new(16, decoder_limits);
        let started = Instant::now();
        let mut events = 0;
        for r in &requests {
            let d = decode_track(&r.body, None, &defaults, &limits, &event_limits, &decoders)?;
            anyhow::ensure!(d.rejected.is_empty(), "the traffic has rejected events: {:?}", d.rejected.first());
            events += d.accepted.len();
        }
        out.runs.push(started.elapsed().as_secs_f64());
        out.events = events;
        let started = Instant::now();
        let mut bytes = 0;
        for r in &requests {
            bytes += decompress(&r.body, limits.max_decompressed_bytes)?.len();
        }
        out.gunzip_s = out.gunzip_s.min(started.elapsed().as_secs_f64());
        out.json_bytes = bytes;
    }
    Ok(out)
}

/// The SDK's flush period and its largest batch (`sdk/src/client.ts`).
pub(crate) const SDK_BATCH_MS: i64 = 5000;
pub(crate) const SDK_BATCH_BYTES: usize = 900_000;

/// The generator's rrweb traffic for `seconds` at about `rate` events/s, cut into the
/// requests the SDK would send, spread over `senders` (each tab's requests go through
/// one sender, in order).
fn sdk_requests(rate: u64, seconds: u64, senders: usize) -> anyhow::Result<Vec<Vec<SdkRequest>>> {
    use std::io::Write;
    let (start, tabs) = rrweb_timelines(rate, seconds)?;
    let mut plans: Vec<Vec<SdkRequest>> = (0..senders.max(1)).map(|_| Vec::new()).collect();
    let senders = plans.len();
    for (i, (tab, events)) in tabs.into_iter().enumerate() {
        // Each tab's flush timer has its own phase.
        let phase = (xxhash_rust::xxh3::xxh3_64(tab.as_bytes()) % SDK_BATCH_MS as u64) as i64;
        let mut batch: Vec<&str> = Vec::new();
        let mut bytes = 0usize;
        let mut n = 0u64;
        let mut flush = |batch: &mut Vec<&str>, bytes: &mut usize, due_ms: i64| -> anyhow::Result<()> {
            if batch.is_empty() || due_ms < start {
                // Sent before the run (the events of its period are not offered).
                batch.clear();
                *bytes = 0;
                return Ok(());
            }
            let text = format!("[{}]", batch.join(","));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes())?;
            n += 1;
            plans[i % senders].push(SdkRequest {
                due_ms,
                body: gz.finish()?,
                batch_id: format!("{tab}.{n}"),
                events: batch.len(),
            });
            batch.clear();
            *bytes = 0;
            Ok(())
        };
        let boundary = |ts: i64| ts + SDK_BATCH_MS - (ts - phase).rem_euclid(SDK_BATCH_MS);
        let mut until = events.first().map_or(0, |e| boundary(e.0));
        for (ts, line) in &events {
            if *ts > until {
                flush(&mut batch, &mut bytes, until)?;
                until = boundary(*ts);
            }
            if bytes + line.len() > SDK_BATCH_BYTES {
                flush(&mut batch, &mut bytes, *ts)?;
            }
            bytes += line.len() + 1;
            batch.push(line);
        }
        flush(&mut batch, &mut bytes, until)?;
    }
    for p in &mut plans {
        p.sort_by_key(|r| r.due_ms);
    }
    Ok(plans)
}

/// One analytic event as the peers read it: the fields of its kind are set, the others
/// are null.
#[derive(Default)]
struct PeerEvent {
    t: i64,
    project: String,
    device_id: String,
    tab_id: String,
    tab_sym: u64,
    seq: u64,
    sub: i64,
    ts: i64,
    url: String,
    kind: &'static str,
    pv_url: Option<String>,
    path: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    page_height: Option<i64>,
    browser: Option<String>,
    os: Option<String>,
    device_type: Option<String>,
    country: Option<String>,
    scroll_x: Option<i64>,
    scroll_y: Option<i64>,
    x: Option<i64>,
    y: Option<i64>,
    page_x: Option<i64>,
    page_y: Option<i64>,
    has_page: Option<bool>,
    has_position: Option<bool>,
    selector: Option<String>,
    tag: Option<String>,
    tag_sym: Option<u64>,
    interactive: Option<bool>,
    text_field: Option<bool>,
    touch: Option<bool>,
    node: Option<i64>,
    offset: Option<i64>,
    first: Option<bool>,
    message: Option<String>,
    message_sym: Option<u64>,
    fingerprint: Option<String>,
    name: Option<String>,
    user_id: Option<String>,
    lcp_ms: Option<i64>,
    cls_milli: Option<i64>,
    inp_ms: Option<i64>,
    ttfb_ms: Option<i64>,
    fcp_ms: Option<i64>,
}

fn text(s: Sym) -> String {
    s.resolve().map(|s| s.to_string()).unwrap_or_default()
}

fn peer_event(t: u64, e: &Event) -> PeerEvent {
    let base = PeerEvent {
        t: t as i64,
        project: text(e.device.project),
        device_id: text(e.device.device),
        tab_id: text(e.tab),
        tab_sym: e.tab.0,
        seq: e.seq,
        sub: e.sub as i64,
        ts: e.ts,
        url: text(e.url),
        ..Default::default()
    };
    let i = |v: i32| Some(v as i64);
    let u = |v: u32| Some(v as i64);
    match e.kind {
        Kind::PageView(pv) => PeerEvent {
            kind: "page_view",
            pv_url: Some(text(pv.url)),
            path: Some(text(pv.path)),
            width: u(pv.width),
            height: u(pv.height),
            page_height: u(pv.page_height),
            browser: Some(text(pv.browser)),
            os: Some(text(pv.os)),
            device_type: Some(text(pv.device_type)),
            country: Some(text(pv.country)),
            ..base
        },
        Kind::Snapshot { scroll_x, scroll_y } => {
            PeerEvent { kind: "snapshot", scroll_x: i(scroll_x), scroll_y: i(scroll_y), ..base }
        }
        Kind::Click(c) => PeerEvent {
            kind: "click",
            x: i(c.x),
            y: i(c.y),
            page_x: i(c.page_x),
            page_y: i(c.page_y),
            has_page: Some(c.has_page),
            has_position: Some(c.has_position),
            selector: Some(text(c.selector)),
            tag: Some(text(c.tag)),
            tag_sym: Some(c.tag.0),
            interactive: Some(c.interactive),
            text_field: Some(c.text_field),
            touch: Some(c.touch),
            ..base
        },
        Kind::Scroll { node, x, y } => PeerEvent { kind: "scroll", node: u(node), x: i(x), y: i(y), ..base },
        Kind::Move { x, y, offset, first } => {
            PeerEvent { kind: "move", x: i(x), y: i(y), offset: i(offset), first: Some(first), ..base }
        }
        Kind::TouchMove => PeerEvent { kind: "touch_move", ..base },
        Kind::Input { node } => PeerEvent { kind: "input", node: u(node), ..base },
        Kind::Resize { width, height } => PeerEvent { kind: "resize", width: u(width), height: u(height), ..base },
        Kind::Mutation => PeerEvent { kind: "mutation", ..base },
        Kind::Error { message, fingerprint } => PeerEvent {
            kind: "error",
            message: Some(text(message)),
            message_sym: Some(message.0),
            fingerprint: Some(format!("{fingerprint:016x}")),
            ..base
        },
        Kind::Exit => PeerEvent { kind: "exit", ..base },
        Kind::Custom { name } => PeerEvent { kind: "custom", name: Some(text(name)), ..base },
        Kind::Activity => PeerEvent { kind: "activity", ..base },
        Kind::Identify { user } => PeerEvent { kind: "identify", user_id: Some(text(user)), ..base },
        Kind::Vitals(v) => {
            let m = |k: usize| v.get(k).map(|x| x as i64);
            PeerEvent {
                kind: "vitals",
                lcp_ms: m(0),
                cls_milli: m(1),
                inp_ms: m(2),
                ttfb_ms: m(3),
                fcp_ms: m(4),
                ..base
            }
        }
    }
}

/// Writes the analytic events of `envelopes` as one flat Parquet file for the peer
/// engines: one row per [`Event`] as `envelope_events` makes it (the dataflow's input),
/// with its logical time as the peers bench stamps it (`t`: event time rounded up to
/// `tick`), every field of its kind as a column (null for other kinds), strings
/// resolved. The order keys the engine compares as symbols (`tab_sym`, and `tag_sym` and
/// `message_sym` for its tie rules) come as their 64-bit values.
pub fn export_parquet(envelopes: &[Envelope], tick: u64, path: &Path) -> anyhow::Result<()> {
    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    let mut rows = Vec::with_capacity(envelopes.len());
    let mut scratch = Vec::new();
    for env in envelopes {
        scratch.clear();
        envelope_events(env, &mut scratch);
        let t = tick_ceil_ms(env.ts, tick);
        rows.extend(scratch.iter().map(|e| peer_event(t, e)));
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    macro_rules! col {
        ($name:ident, str) => {
            fields.push(Field::new(stringify!($name), DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.$name.as_str()))));
        };
        ($name:ident, kind) => {
            fields.push(Field::new(stringify!($name), DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.$name))));
        };
        ($name:ident, i64) => {
            fields.push(Field::new(stringify!($name), DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.$name))));
        };
        ($name:ident, u64) => {
            fields.push(Field::new(stringify!($name), DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.$name))));
        };
        ($name:ident, opt_str) => {
            fields.push(Field::new(stringify!($name), DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from_iter(rows.iter().map(|r| r.$name.as_deref()))));
        };
        ($name:ident, opt_i64) => {
            fields.push(Field::new(stringify!($name), DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.$name))));
        };
        ($name:ident, opt_u64) => {
            fields.push(Field::new(stringify!($name), DataType::UInt64, true));
            columns.push(Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.$name))));
        };
        ($name:ident, opt_bool) => {
            fields.push(Field::new(stringify!($name), DataType::Boolean, true));
            columns.push(Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.$name))));
        };
    }
    col!(t, i64);
    col!(project, str);
    col!(device_id, str);
    col!(tab_id, str);
    col!(tab_sym, u64);
    col!(seq, u64);
    col!(sub, i64);
    col!(ts, i64);
    col!(url, str);
    col!(kind, kind);
    col!(pv_url, opt_str);
    col!(path, opt_str);
    col!(width, opt_i64);
    col!(height, opt_i64);
    col!(page_height, opt_i64);
    col!(browser, opt_str);
    col!(os, opt_str);
    col!(device_type, opt_str);
    col!(country, opt_str);
    col!(scroll_x, opt_i64);
    col!(scroll_y, opt_i64);
    col!(x, opt_i64);
    col!(y, opt_i64);
    col!(page_x, opt_i64);
    col!(page_y, opt_i64);
    col!(has_page, opt_bool);
    col!(has_position, opt_bool);
    col!(selector, opt_str);
    col!(tag, opt_str);
    col!(tag_sym, opt_u64);
    col!(interactive, opt_bool);
    col!(text_field, opt_bool);
    col!(touch, opt_bool);
    col!(node, opt_i64);
    col!(offset, opt_i64);
    col!(first, opt_bool);
    col!(message, opt_str);
    col!(message_sym, opt_u64);
    col!(fingerprint, opt_str);
    col!(name, opt_str);
    col!(user_id, opt_str);
    col!(lcp_ms, opt_i64);
    col!(cls_milli, opt_i64);
    col!(inp_ms, opt_i64);
    col!(ttfb_ms, opt_i64);
    col!(fcp_ms, opt_i64);
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let file = std::fs::File::create(path)?;
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// A source fed batch by batch over a channel: each message is a batch of stamped
/// envelopes and the frontier after it; a closed channel ends the input.
struct ChannelSource {
    rx: std::sync::mpsc::Receiver<(Vec<(u64, Envelope)>, u64)>,
    frontier: u64,
}

impl Source for ChannelSource {
    // Never blocks: a source that waited here would hold the worker between the steps
    // that carry a batch through the dataflow (the worker parks by itself when idle).
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        Ok(match self.rx.try_recv() {
            Ok((items, frontier)) => {
                out.extend(items);
                self.frontier = self.frontier.max(frontier);
                Progress::At { frontier: self.frontier, busy: true }
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => Progress::At { frontier: self.frontier, busy: false },
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Progress::Done,
        })
    }
}

/// sightflow's answers for the peers to compare: every view of `snap` (all but the
/// engine's own `sightflow_state`) as `dir/<table>.parquet`, whole. Returns the tables
/// and their rows.
pub fn peer_answers(snap: &Snapshot, dir: &Path) -> anyhow::Result<Vec<(String, usize)>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, schema, batches) in &snap.tables {
        if *name == sightflow_dataflows::schema::STATE_TABLE {
            continue;
        }
        let file = std::fs::File::create(dir.join(format!("{name}.parquet")))?;
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
        out.push((name.to_string(), batches.iter().map(|b| b.num_rows()).sum()));
    }
    Ok(out)
}

/// What [`incremental_updates`] measured.
pub struct Updates {
    /// Each batch's update time.
    pub times: Vec<Duration>,
    /// The complete final snapshot.
    pub snapshot: Arc<Snapshot>,
    /// CPU seconds each thread used meanwhile, by thread name.
    pub cpu: BTreeMap<String, f64>,
}

/// Feeds `batches` (in event-time order) into a live dataflow one at a time and
/// measures each incremental update: from handing the batch over until a snapshot
/// covers it.
pub fn incremental_updates(config: &Config, batches: &[Vec<Envelope>]) -> anyhow::Result<Updates> {
    let params = Arc::new(Params::from_config(config));
    let tick = params.tick;
    let (tx, rx) = std::sync::mpsc::channel();
    let rx = Mutex::new(Some(rx));
    let running = start(
        RunOptions { workers: 1, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: false },
        move |_, _| {
            let rx = rx.lock().ok().and_then(|mut r| r.take()).expect("one worker");
            Box::new(ChannelSource { rx, frontier: 0 }) as Box<dyn Source>
        },
    )?;
    let mut times = Vec::new();
    let cpu_before = thread_cpu();
    for b in batches {
        let items: Vec<(u64, Envelope)> = b.iter().map(|e| (tick_ceil_ms(e.ts, tick), e.clone())).collect();
        let frontier = items.iter().map(|(t, _)| *t).max().unwrap_or(0);
        let started = Instant::now();
        tx.send((items, frontier)).map_err(|_| anyhow::anyhow!("the dataflow stopped"))?;
        running
            .snapshots
            .wait_for(frontier.saturating_sub(1), Duration::from_secs(600))
            .map_err(|_| anyhow::anyhow!("the views did not catch up"))?;
        times.push(started.elapsed());
    }
    let mut cpu = thread_cpu();
    for (name, secs) in cpu.iter_mut() {
        *secs -= cpu_before.get(name).copied().unwrap_or(0.0);
    }
    drop(tx);
    let snapshots = running.snapshots.clone();
    running.join()?;
    Ok(Updates { times, snapshot: snapshots.wait_complete(), cpu })
}

/// One recording of the rrweb pool: its events as `(ms after its first, the event's
/// fields but "timestamp" as the inside of an object: `"type":2,"data":{...}`)`, and what
/// it planted.
pub(crate) struct PoolSession {
    pub events: Vec<(i64, String)>,
    pub truth: Truth,
}

/// The generated recordings that raw rrweb traffic replays under new ids and times
/// (FullSnapshots of about the fixtures' size), and their FullSnapshots' mean size.
pub(crate) fn rrweb_pool() -> (Vec<PoolSession>, usize) {
    let pool = GenOptions { devices: 400, paragraphs: 60, seed: 99, ..Default::default() };
    let (recs, _) = generate(&pool);
    let mut snapshot_bytes = (0usize, 0usize);
    let pool = recs
        .into_iter()
        .map(|r| {
            let first = r.events.iter().filter_map(|e| e["timestamp"].as_i64()).min().unwrap_or(0);
            // In the order a recorder emits them: by time (the generator writes a
            // slot's reactions before the mouse moves that lead up to them).
            let mut events = r.events;
            events.sort_by_key(|e| e["timestamp"].as_i64().unwrap_or(first));
            let events = events
                .into_iter()
                .map(|mut e| {
                    let ts = e["timestamp"].as_i64().unwrap_or(first);
                    if let Some(o) = e.as_object_mut() {
                        o.remove("timestamp");
                    }
                    if e["type"] == 2 {
                        snapshot_bytes.0 += e.to_string().len();
                        snapshot_bytes.1 += 1;
                    }
                    // In rrweb's order (`type`, `data`, then the rest; the SDK adds
                    // `timestamp` last), as a recorder's JSON.stringify writes it.
                    let mut rest = String::new();
                    if let Some(o) = e.as_object_mut() {
                        for k in ["type", "data"] {
                            if let Some(v) = o.remove(k) {
                                rest.push_str(&format!(
                                    "{}{}:{v}",
                                    if rest.is_empty() { "" } else { "," },
                                    serde_json::Value::from(k.to_string())
                                ));
                            }
                        }
                        for (k, v) in o.iter() {
                            rest.push_str(&format!(
                                "{}{}:{v}",
                                if rest.is_empty() { "" } else { "," },
                                serde_json::Value::from(k.to_string())
                            ));
                        }
                    }
                    (ts - first, rest)
                })
                .collect();
            PoolSession { events, truth: r.truth }
        })
        .collect();
    (pool, snapshot_bytes.0 / snapshot_bytes.1.max(1))
}

/// One rrweb event as the SDK sends it to `/track`.
pub(crate) fn sdk_event(device: &str, tab: &str, seq: u64, ts: i64, rest: &str) -> String {
    format!(
        "{{\"type\":\"rrweb\",\"device_id\":\"{device}\",\"tab_id\":\"{tab}\",\"seq\":{seq},\"ts\":{ts},\"event\":{{{rest},\"timestamp\":{ts}}}}}"
    )
}

/// One tab's events: `(ts, the event as the SDK sends it)`, in time order.
type TabTimeline = (String, Vec<(i64, String)>);

/// Raw rrweb traffic at about `rate` events/s for `seconds`: one timeline per tab,
/// `(ts, the event as the SDK sends it)`, starting a little after now. Sessions start
/// evenly, so the rate is steady. A pool of generated recordings (FullSnapshots of about
/// the fixtures' size) is replayed under new device ids and times: generating every
/// session would take longer than the run.
fn rrweb_timelines(rate: u64, seconds: u64) -> anyhow::Result<(i64, Vec<TabTimeline>)> {
    let (pool, snapshot_bytes) = rrweb_pool();
    let pool: Vec<Vec<(i64, String)>> = pool.into_iter().map(|p| p.events).collect();
    let per_device = pool.iter().map(Vec::len).sum::<usize>() as f64 / pool.len() as f64;
    let session_ms = pool.iter().map(|r| r.last().map_or(0, |e| e.0)).sum::<i64>() / pool.len() as i64;
    // Sessions start evenly from the longest one's length before the window: every
    // session that can reach the window does, so the window gets `rate` on average.
    let longest_ms = pool.iter().map(|r| r.last().map_or(0, |e| e.0)).max().unwrap_or(0);
    // Events from a batch period before the start to one after the end, so that the
    // requests due during the run carry a full period each.
    let span_ms = seconds as i64 * 1000 + 2 * SDK_BATCH_MS;
    let window_ms = span_ms + longest_ms;
    let devices = ((rate as f64 * window_ms as f64 / 1000.0) / per_device).ceil() as usize;
    let events = rate as i64 * span_ms / 1000;
    // Building and compressing take about 8 us per event; start after that.
    let now = sightflow::serve::now_ms() + 1000 + events * 8 / 1000;
    let from = now - SDK_BATCH_MS;
    let first_start = from - longest_ms;
    eprintln!(
        "traffic: {devices} sessions of {:.0} events over {:.0} s on average, FullSnapshots of {} bytes on average",
        per_device,
        session_ms as f64 / 1000.0,
        snapshot_bytes
    );
    let mut timelines = Vec::new();
    for d in 0..devices {
        let rec = &pool[d % pool.len()];
        let device = format!("rrweb-{d}");
        let tab = format!("{device}-tab");
        let start = first_start + (d as i64 * window_ms) / devices as i64;
        let mut line = Vec::new();
        for (seq, (rel, rest)) in rec.iter().enumerate() {
            let ts = start + rel;
            if ts < from || ts > from + span_ms {
                continue;
            }
            line.push((ts, sdk_event(&device, &tab, seq as u64 + 1, ts, rest)));
        }
        if !line.is_empty() {
            timelines.push((tab, line));
        }
    }
    Ok((now, timelines))
}

/// What [`live_under_ingest`] measured.
#[derive(Debug, Clone, Default)]
pub struct LiveFigure {
    /// Sessions in the views before the load started, and how long they took to load.
    pub sessions: usize,
    pub preload_s: f64,
    /// SDK events/s acknowledged during the run, and the acknowledgement's p99.
    pub achieved: f64,
    pub ack_p99_ms: f64,
    /// Per dashboard query over HTTP: name, runs, p50, p99, max (ms).
    pub queries: Vec<(String, u64, f64, f64, f64)>,
    /// Live-feed subscribers that stayed connected to the end, of those asked for.
    pub subscribers: (usize, usize),
    /// Acknowledgement → the first live-feed event at or past its `min_as_of`, over
    /// every (acknowledged request, subscriber): deliveries, p50, p99, p99.9, max (ms).
    pub delivery: (u64, f64, f64, f64, f64),
    /// Acknowledged requests a subscriber never saw covered.
    pub undelivered: u64,
    /// Evaluations of subscribed queries the server ran (shared ones count once).
    pub evaluations: u64,
}

/// Percent-encodes a query-string value.
fn query_value(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// What `sightflow-bench live` runs.
#[derive(Clone, Copy, Debug)]
pub struct LiveOptions {
    /// Light sessions preloaded into the log.
    pub sessions: usize,
    /// SDK events per second ingested meanwhile.
    pub rate: u64,
    pub seconds: u64,
    pub senders: usize,
    /// Live-feed clients, spread over the four dashboard queries.
    pub subscribers: usize,
    /// `query.nice` (the defaults' when `None`).
    pub query_nice: Option<u8>,
}

/// Dashboards under ingest: `serve` (in this process) starts over a log holding
/// `sessions` light sessions, then takes SDK events at `rate` per second from `senders`
/// senders while one client runs the dashboard queries over HTTP in a loop and
/// `subscribers` live-feed clients follow the dashboard queries (spread over the four).
pub fn live_under_ingest(opts: &LiveOptions) -> anyhow::Result<LiveFigure> {
    use std::io::BufRead;
    let LiveOptions { sessions, rate, seconds, senders, subscribers, query_nice } = *opts;
    let mut config = Config::defaults();
    if let Some(n) = query_nice {
        config.query.nice = n;
    }
    config.ingest.max_events_per_batch = 100_000;
    config.query.max_subscriptions = config.query.max_subscriptions.max(subscribers + 16);
    let dir = tempfile::tempdir()?;
    let loaded = Instant::now();
    write_log(&config, dir.path(), &requests(&light_sessions(sessions, 1_795_161_600_000)?, Shape::Chunks))?;
    let query_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = sightflow::serve::build(config.clone(), dir.path(), query_rt.handle().clone())?;
    {
        let _in = rt.enter();
        started.server.spawn_maintenance();
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = started.router.clone();
    rt.spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    // Every loaded session in the views (the log is read back at start).
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut told = Instant::now();
    loop {
        let snap = started.snapshots.latest();
        let rows = snap.num_rows("sessions").unwrap_or(0);
        if rows >= sessions {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the views did not load the sessions within an hour ({rows} of {sessions})"
        );
        if told.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "preload: {rows} of {sessions} sessions in the views (as of {}) after {:.0} s",
                snap.as_of,
                loaded.elapsed().as_secs_f64()
            );
            told = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let preload_s = loaded.elapsed().as_secs_f64();
    let (token, _) = started.meta.token_create("bench", sightflow_config::access::Role::Viewer, None, "bench")?;
    let stop = Arc::new(AtomicBool::new(false));

    // The subscribers: (when each event arrived, its as_of), per subscriber.
    let mut subs = Vec::new();
    for k in 0..subscribers {
        let sql = DASHBOARD_QUERIES[k % FEED_QUERIES].1;
        let url = format!("{base}/api/v1/subscribe?sql={}", query_value(sql));
        let (token, stop) = (token.clone(), stop.clone());
        let got: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let seen = got.clone();
        let a = bench_agent();
        subs.push((
            got,
            std::thread::spawn(move || -> bool {
                let Ok(mut r) = a.get(&url).header("authorization", &format!("Bearer {token}")).call() else {
                    return false;
                };
                if r.status() != 200 {
                    first_failure(Ok(r));
                    return false;
                }
                let mut lines = std::io::BufReader::new(r.body_mut().as_reader());
                let mut line = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) | Err(_) => return stop.load(Ordering::Relaxed),
                        Ok(_) => {}
                    }
                    if let Some(id) = line.strip_prefix("id:").and_then(|v| v.trim().parse::<u64>().ok())
                        && let Ok(mut s) = seen.lock()
                    {
                        s.push((Instant::now(), id));
                    }
                    if line.starts_with("event: close") {
                        return false;
                    }
                }
            }),
        ));
    }

    // The dashboard: the four queries over HTTP, one after another, until the end.
    let query_times: Arc<Mutex<Vec<hdrhistogram::Histogram<u64>>>> = Arc::new(Mutex::new(
        DASHBOARD_QUERIES.iter().map(|_| hdrhistogram::Histogram::new(3)).collect::<Result<_, _>>()?,
    ));
    let dashboard = {
        let (url, token, stop, times, a) =
            (format!("{base}/api/v1/query"), token.clone(), stop.clone(), query_times.clone(), bench_agent());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, (_, sql)) in DASHBOARD_QUERIES.iter().enumerate() {
                    let body = serde_json::json!({ "sql": sql }).to_string();
                    let t = Instant::now();
                    let r = a
                        .post(&url)
                        .header("authorization", &format!("Bearer {token}"))
                        .content_type("application/json")
                        .send(body.as_str());
                    match r {
                        Ok(mut r) if r.status() == 200 => {
                            let _ = r.body_mut().read_to_vec();
                            if let Ok(mut h) = times.lock() {
                                let _ = h[i].record(t.elapsed().as_micros() as u64);
                            }
                        }
                        other => first_failure(other),
                    }
                }
            }
        })
    };

    // The senders: SDK click and page-view events every 10 ms, as the freshness bench's.
    let per_request = ((rate as f64 / 100.0) / senders.max(1) as f64).ceil().max(1.0) as usize;
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let ack_hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let sent = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let mut threads = Vec::new();
    for k in 0..senders {
        let (url, acks, ack_hist, sent, a) =
            (format!("{base}/api/v1/track?key=demo"), acks.clone(), ack_hist.clone(), sent.clone(), bench_agent());
        threads.push(std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut n = 0u64;
            let mut body = String::with_capacity(per_request * 120);
            while begin.elapsed() < run_for {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(next - now);
                }
                next += Duration::from_millis(10);
                let ts = sightflow::serve::now_ms();
                compact_request(&mut body, &format!("live-{k}"), &mut n, per_request, ts);
                let t = Instant::now();
                match a.post(&url).content_type("application/json").send(body.as_str()) {
                    Ok(mut r) if r.status() == 200 => {
                        let answered = Instant::now();
                        if let Ok(mut h) = ack_hist.lock() {
                            let _ = h.record((answered - t).as_micros() as u64);
                        }
                        sent.fetch_add(per_request as u64, Ordering::Relaxed);
                        if let (Some(m), Ok(mut acks)) = (min_as_of(&mut r), acks.lock()) {
                            acks.push((answered, m));
                        }
                    }
                    other => first_failure(other),
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let achieved = sent.load(Ordering::Relaxed) as f64 / run_for.as_secs_f64();
    // Time for the last acknowledgements to reach the feed.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = dashboard.join();
    let evaluations = started.state.live.evaluations.load(Ordering::Relaxed);
    drop(started);
    rt.shutdown_timeout(Duration::from_secs(5));
    query_rt.shutdown_background();

    let acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
    let mut delivery = hdrhistogram::Histogram::<u64>::new(3)?;
    let (mut connected, mut undelivered) = (0, 0u64);
    for (got, handle) in subs {
        if handle.join().unwrap_or(false) {
            connected += 1;
        }
        let events = got.lock().map(|g| g.clone()).unwrap_or_default();
        for &(acked, need) in &acks {
            // The first event at or past the acknowledgement's time that covers it.
            let i = events.partition_point(|(_, as_of)| *as_of < need);
            match events.get(i) {
                Some((at, _)) => delivery.record(at.saturating_duration_since(acked).as_micros() as u64)?,
                None => undelivered += 1,
            }
        }
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let queries = query_times
        .lock()
        .map(|hs| {
            hs.iter()
                .zip(DASHBOARD_QUERIES)
                .map(|(h, (name, _))| (name.to_string(), h.len(), ms(h, 0.5), ms(h, 0.99), h.max() as f64 / 1000.0))
                .collect()
        })
        .unwrap_or_default();
    let ack_p99_ms = ack_hist.lock().map(|h| ms(&h, 0.99)).unwrap_or(0.0);
    Ok(LiveFigure {
        sessions,
        preload_s,
        achieved,
        ack_p99_ms,
        queries,
        subscribers: (connected, subscribers),
        delivery: (
            delivery.len(),
            ms(&delivery, 0.5),
            ms(&delivery, 0.99),
            ms(&delivery, 0.999),
            delivery.max() as f64 / 1000.0,
        ),
        undelivered,
        evaluations,
    })
}

/// One request's body of compact SDK events: `per_request` clicks, every 50th event a
/// page view, over 500 devices named `{devices}-{n % 500}`; `n` counts events sent.
fn compact_request(body: &mut String, devices: &str, n: &mut u64, per_request: usize, ts: i64) {
    body.clear();
    body.push('[');
    for i in 0..per_request {
        *n += 1;
        let (n, device) = (*n, format!("{devices}-{}", *n % 500));
        if i > 0 {
            body.push(',');
        }
        if n.is_multiple_of(50) {
            body.push_str(&format!("{{\"type\":\"page_view\",\"device_id\":\"{device}\",\"ts\":{ts},\"url\":\"http://shop.bench.test/p{}\",\"viewport_width\":1280,\"viewport_height\":800}}", n % 7));
        } else {
            body.push_str(&format!(
                "{{\"type\":\"click\",\"device_id\":\"{device}\",\"ts\":{ts},\"x\":{},\"y\":{}}}",
                n % 1200,
                n % 700
            ));
        }
    }
    body.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_events_are_sent_in_rrwebs_own_field_order() {
        let (pool, _) = rrweb_pool();
        let (rel, rest) = &pool[0].events[0];
        let text = sdk_event("dev", "tab", 1, 1_000 + rel, rest);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["event"]["timestamp"], 1_000 + rel);
        let event = &text[text.find("\"event\":").expect("event") + 8..];
        assert!(event.starts_with("{\"type\":"), "type first, as rrweb writes it: {event:.40}");
        let data = event.find("\"data\":").expect("data");
        assert!(data < event.find("\"timestamp\":").expect("timestamp"), "{event:.80}");
    }
}
