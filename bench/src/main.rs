//! The sightflow benchmark harness. Every figure it prints comes with the command that
//! reproduces it; `bench/README.md` records the latest ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use prost::Message;
use sightflow::batch::{self, Input};
use sightflow_bench::harness;
use sightflow_bench::traffic::{GenOptions, generate, json_bytes};
use sightflow_config::Config;
use sightflow_dataflows::convert::envelope_events;
use sightflow_proto::v1::Envelope;

/// The allocator `sightflow` ships with: the server measured in this process is the one
/// users run.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "sightflow-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Batch-mode throughput through all views: the bundled rrweb recordings replicated
    /// with shifted devices and times.
    Batch {
        /// Copies of the recordings.
        #[arg(long, default_value_t = 2000)]
        replicas: usize,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Directory with the recordings and their manifest.
        #[arg(long, default_value = "tests/fixtures/rrweb")]
        fixtures: PathBuf,
        /// Timed runs; the best is reported with the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Writes generated recordings (one rrweb JSON file per device) and truth.json.
    Gen {
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Backfill throughput from the embedded log through all views, checked against
    /// the generator's ground truth.
    Backfill {
        #[arg(long, default_value_t = 2000)]
        devices: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Worker counts to measure, e.g. 1,2.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Write the traffic to a fresh topic on this Kafka broker and backfill from it
        /// instead of the embedded log.
        #[arg(long)]
        kafka: Option<String>,
        /// The engine's tick (ms) the log is written and read with; the defaults' when
        /// not given.
        #[arg(long)]
        tick_ms: Option<u64>,
        /// How the traffic is cut into appends: `sdk` (each tab's 5 s of events in one
        /// request, as the SDK sends them; one record each) or `chunks` (every 256
        /// envelopes across devices, mostly one envelope per record).
        #[arg(long, default_value = "sdk")]
        shape: harness::Shape,
    },
    /// Dataflow state and RSS per live and per closed session.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Freshness under live HTTP load: acknowledgement to visible in a snapshot.
    Freshness(FreshnessArgs),
    /// The ingest decoder alone, on one core: the generator's raw rrweb traffic as the
    /// SDK sends it (gzipped requests, one per tab every 5 s) through `decode_track`.
    Decode {
        /// rrweb events per second of the traffic generated (its mix, not a pace).
        #[arg(long, default_value_t = 45_000)]
        rate: u64,
        /// Seconds of traffic generated.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Timed passes over it; the best is reported with the median.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Incremental update time against DuckDB and chdb recomputing the same views from
    /// Parquet after every batch (needs `pip install duckdb chdb`).
    Peers {
        #[arg(long, default_value_t = 2000)]
        devices: usize,
        /// Batches sightflow takes one at a time.
        #[arg(long, default_value_t = 10)]
        batches: usize,
        /// Parquet files the batches are exported as (consecutive batches per file); the
        /// peers recompute when a file is complete.
        #[arg(long)]
        files: Option<usize>,
        /// How many of those file boundaries the peers recompute at (evenly spread, the
        /// last one always): each recompute reads every file so far.
        #[arg(long)]
        points: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Start of the first session (ms since the epoch; the generator's default when
        /// not given). Just before midnight UTC, sessions split there.
        #[arg(long)]
        start_ms: Option<i64>,
    },
    /// `serve` in its own process under raw rrweb traffic for a long time: RSS, counted
    /// state, the string table and freshness sampled, their slopes after the warm-up,
    /// and the views against what was planted.
    Soak {
        /// rrweb events per second offered.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// How long sessions keep starting (s); the last ones then play to their end.
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        sample_s: u64,
        /// Samples before this are left out of the slopes (default: a third of the run).
        #[arg(long)]
        warmup_s: Option<u64>,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// The server's `session.idle_gap_ms`, so that sessions end during the run.
        #[arg(long, default_value_t = 120_000)]
        idle_gap_ms: u64,
        /// The server's `session.retention_ms`, so that closed sessions leave the views
        /// during the run (the least the defaults allow: the device state's grace plus
        /// a late click's wait); 0 keeps them all.
        #[arg(long, default_value_t = 360_000)]
        retention_ms: u64,
    },
    /// The server half of `soak` (started by it).
    #[command(hide = true)]
    ServeChild {
        #[arg(long)]
        idle_gap_ms: u64,
        #[arg(long)]
        retention_ms: u64,
    },
    /// Dashboards under ingest: the dashboard queries over HTTP and live-feed subscribers
    /// while SDK events are ingested, over views that hold many sessions.
    Live {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
        /// SDK events per second ingested meanwhile.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Live-feed clients, spread over the four dashboard queries.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// `query.nice` (the defaults' when not given).
        #[arg(long)]
        query_nice: Option<u8>,
    },
    /// Latency of live-dashboard queries over views holding many sessions.
    Query {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
}

#[derive(clap::Args)]
struct FreshnessArgs {
    /// Offered loads in events/s, e.g. 10000,50000,100000.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    rates: Vec<u64>,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// The engine's tick (ms); the default configuration's when not given.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Allowed lateness (ms), also the idle timeout; the defaults' when not given.
    #[arg(long)]
    lateness_ms: Option<u64>,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// `ingest.max_in_flight` (the default configuration's when not given).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// `ingest.max_queue_ms` (the default configuration's when not given).
    #[arg(long)]
    max_queue_ms: Option<u64>,
    /// What the senders post: `sdk` (compact SDK click and page-view events) or
    /// `rrweb` (the generator's raw rrweb traffic, as it happens).
    #[arg(long, default_value = "sdk")]
    traffic: String,
    /// Run `serve` with this Kafka broker (a fresh topic) instead of the embedded log.
    #[arg(long)]
    kafka: Option<String>,
    /// Open loop over at most this many connections, opened as needed: every sender's
    /// requests go out when they are due, whether or not earlier answers came, as many
    /// browsers would send them (ack time counts from when a request was due). Without
    /// it each sender waits for its answer before its next request.
    #[arg(long)]
    open_loop: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Batch { replicas, workers, fixtures, runs } => batch_throughput(replicas, workers, &fixtures, runs),
        Command::Gen { devices, seed, out } => gen_files(devices, seed, &out),
        Command::Backfill { devices, seed, workers, runs, kafka, tick_ms, shape } => {
            backfill(devices, seed, &workers, runs, kafka.as_deref(), tick_ms, shape)
        }
        Command::Memory { devices, seed, workers } => memory(devices, seed, workers),
        Command::Query { sessions, runs } => query(sessions, runs),
        Command::Decode { rate, seconds, runs } => decode(rate, seconds, runs),
        Command::Live { sessions, rate, seconds, senders, subscribers, query_nice } => {
            live(&harness::LiveOptions { sessions, rate, seconds, senders, subscribers, query_nice })
        }
        Command::Peers { devices, batches, files, points, seed, start_ms } => {
            let files = files.unwrap_or(batches).clamp(1, batches.max(1));
            peers(devices, batches, files, points.unwrap_or(files).clamp(1, files), seed, start_ms)
        }
        Command::Soak { rate, seconds, sample_s, warmup_s, senders, idle_gap_ms, retention_ms } => {
            let opts = sightflow_bench::soak::SoakOptions {
                rate,
                seconds,
                sample_s,
                warmup_s: warmup_s.unwrap_or(seconds / 3),
                senders,
                idle_gap_ms,
                retention_ms,
            };
            soak(&opts)
        }
        Command::ServeChild { idle_gap_ms, retention_ms } => {
            sightflow_bench::soak::serve_child(soak_config(idle_gap_ms, retention_ms)?)
        }
        Command::Freshness(args) => {
            anyhow::ensure!(
                args.traffic == "sdk" || args.traffic == "rrweb",
                "--traffic must be sdk or rrweb, got {:?}",
                args.traffic
            );
            freshness(&args)
        }
    }
}

/// The server configuration of the soak: the defaults, with a session idle gap and a
/// retention short enough for sessions to end and leave the views during the run.
fn soak_config(idle_gap_ms: u64, retention_ms: u64) -> anyhow::Result<Config> {
    let mut config = Config::defaults();
    config.session.idle_gap_ms = idle_gap_ms;
    config.session.retention_ms = retention_ms;
    config.validate()?;
    Ok(config)
}

fn soak(opts: &sightflow_bench::soak::SoakOptions) -> anyhow::Result<()> {
    use sightflow_bench::soak::slope;
    println!("machine: {}", machine());
    let c = soak_config(opts.idle_gap_ms, opts.retention_ms)?;
    println!(
        "soak: serve in its own process (defaults: tick {} ms, lateness {} ms, fsync {:?}; session idle gap {} ms, retention {} ms), {} rrweb events/s for {} s, {} senders that resend after Retry-After",
        c.engine.tick_ms,
        c.engine.allowed_lateness_ms,
        c.log.fsync,
        opts.idle_gap_ms,
        opts.retention_ms,
        opts.rate,
        opts.seconds,
        opts.senders
    );
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.arg("serve-child").arg("--idle-gap-ms").arg(opts.idle_gap_ms.to_string());
    child.arg("--retention-ms").arg(opts.retention_ms.to_string());
    let f = sightflow_bench::soak::soak(child, opts)?;
    // The steady part: after the warm-up, while sessions still start.
    let after: Vec<_> =
        f.samples.iter().filter(|s| s.t >= opts.warmup_s as f64 && s.t <= opts.seconds as f64 + 1.0).collect();
    println!(
        "totals: {} rrweb events acknowledged, {} requests refused and sent again, {} failed, {} never visible; ack p99 {:.1} ms, ack->visible p50 {:.1} ms, p99 {:.1} ms",
        f.sent_events, f.refused, f.failed, f.unseen, f.ack_p99_ms, f.visible_p50_ms, f.visible_p99_ms
    );
    if let (Some(a), Some(b)) = (after.first(), after.last()) {
        let minutes = (b.t - a.t) / 60.0;
        let sessions_per_min = (b.sessions - a.sessions) as f64 / minutes.max(1e-9);
        println!("slopes from {:.0} s to {:.0} s ({} samples), per minute and over that part:", a.t, b.t, after.len());
        let line = |name: &str, unit: &str, scale: f64, get: &dyn Fn(&sightflow_bench::soak::Sample) -> f64| {
            let pts: Vec<(f64, f64)> = after.iter().map(|s| (s.t / 60.0, get(s) / scale)).collect();
            let (k, mean) = slope(&pts);
            println!(
                "  {name:<22} {k:>+10.3} {unit}/min, {:>+9.2} {unit} ({:+.1} % of its mean {mean:.2} {unit})",
                k * minutes,
                if mean != 0.0 { 100.0 * k * minutes / mean } else { 0.0 }
            );
            k
        };
        let rss = line("RSS", "MB", 1e6, &|s| s.rss as f64);
        line("allocated (jemalloc)", "MB", 1e6, &|s| s.allocated as f64);
        line("resident (jemalloc)", "MB", 1e6, &|s| s.resident as f64);
        let state = line("counted state", "MB", 1e6, &|s| s.state as f64);
        let views = line("published views", "MB", 1e6, &|s| s.views as f64);
        line("string table", "MB", 1e6, &|s| s.strings_bytes as f64);
        line("string table entries", "k", 1e3, &|s| s.strings as f64);
        line("ack->visible p99", "ms", 1.0, &|s| s.visible_p99_ms);
        line("ack p99", "ms", 1.0, &|s| s.ack_p99_ms);
        line("accepted", "k/s", 1e3, &|s| s.accepted_per_s);
        if sessions_per_min >= 1.0 {
            println!(
                "  new sessions {sessions_per_min:.0}/min: counted state + views grow {:.0} B per new session, RSS {:.0} B",
                (state + views) * 1e6 / sessions_per_min,
                rss * 1e6 / sessions_per_min
            );
        }
    }
    println!(
        "CPU: server {:.0} s ({:.0} % of a core over {:.0} s), load generator and senders {:.0} s",
        f.server_cpu,
        100.0 * f.server_cpu / f.seconds.max(1e-9),
        f.seconds,
        f.generator_cpu
    );
    if opts.retention_ms > 0 {
        println!(
            "views: {} sessions held at the end of {} started (closed ones leave {} s after they end); {} missing that should be held, {} held that should have left",
            f.held_sessions,
            f.samples.last().map_or(0, |s| s.sessions),
            opts.retention_ms / 1000,
            f.missing,
            f.stale
        );
        println!("views: planted for the sessions held (aggregates: for all) {:?}", f.planted);
    } else {
        println!("views: planted {:?}", f.planted);
    }
    println!("       in views {:?}", f.observed);
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- soak --rate {} --seconds {} --sample-s {} --warmup-s {} --senders {} --idle-gap-ms {} --retention-ms {}",
        opts.rate, opts.seconds, opts.sample_s, opts.warmup_s, opts.senders, opts.idle_gap_ms, opts.retention_ms
    );
    anyhow::ensure!(f.observed == f.planted, "the views differ from what was planted");
    anyhow::ensure!(f.missing == 0 && f.stale == 0, "sessions held do not follow the retention");
    anyhow::ensure!(f.failed == 0, "{} requests failed", f.failed);
    Ok(())
}

/// The recordings as envelopes, one device each.
fn recordings(dir: &std::path::Path) -> anyhow::Result<Vec<Envelope>> {
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".json") && name != "manifest.json" {
            inputs.push(Input::Rrweb { device: name.trim_end_matches(".json").to_string(), path, tab: String::new() });
        }
    }
    inputs.sort_by_key(|i| match i {
        Input::Rrweb { path, .. } | Input::Events { path } => path.clone(),
    });
    let loaded = batch::load(&inputs, "bench", i64::MAX / 4)?;
    anyhow::ensure!(!loaded.envelopes.is_empty(), "no recordings in {}", dir.display());
    Ok(loaded.envelopes)
}

/// Replica `r` of every recording: its own devices, shifted in time so that replicas
/// overlap (about 100 concurrent copies) without colliding.
fn replicate(base: &[Envelope], replicas: usize) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(base.len() * replicas);
    for r in 0..replicas {
        let shift = (r % 100) as i64 * 30_000 + (r / 100) as i64 * 3_600_000;
        for e in base {
            let mut e = e.clone();
            e.device_id = format!("{}-r{r}", e.device_id);
            e.tab_id = format!("{}-r{r}", e.tab_id);
            e.ts += shift;
            out.push(e);
        }
    }
    out
}

fn batch_throughput(replicas: usize, workers: usize, fixtures: &std::path::Path, runs: usize) -> anyhow::Result<()> {
    let base = recordings(fixtures)?;
    let envelopes = replicate(&base, replicas);
    let bytes: usize = envelopes.iter().map(|e| e.encoded_len()).sum();
    let mut scratch = Vec::new();
    let events: usize = envelopes
        .iter()
        .map(|e| {
            scratch.clear();
            envelope_events(e, &mut scratch);
            scratch.len()
        })
        .sum();
    let mut config = Config::defaults();
    config.engine.workers = workers;
    let mut times = Vec::new();
    let mut sessions = 0;
    for _ in 0..runs.max(1) {
        let input = envelopes.clone();
        let started = Instant::now();
        let snap = batch::run(&config, input)?;
        times.push(started.elapsed().as_secs_f64());
        sessions = snap.num_rows("sessions").unwrap_or(0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let best = times[0];
    let median = times[times.len() / 2];
    println!("batch mode, all views, {workers} worker(s), {replicas} replicas of {} recordings", base.len().min(8));
    println!(
        "  input: {} envelopes ({} analytic events incl. mouse positions), {:.1} MB protobuf",
        envelopes.len(),
        events,
        bytes as f64 / 1e6
    );
    println!("  output: {sessions} sessions");
    println!(
        "  best of {}: {:.3} s = {:.0} envelopes/s, {:.0} events/s, {:.1} MB/s (median {:.3} s)",
        times.len(),
        best,
        envelopes.len() as f64 / best,
        events as f64 / best,
        bytes as f64 / 1e6 / best,
        median
    );
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- batch --replicas {replicas} --workers {workers} --runs {}",
        times.len()
    );
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} cores, {cpu}", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn gen_files(devices: usize, seed: u64, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let opts = GenOptions { devices, seed, ..Default::default() };
    let (recs, mut truth) = generate(&opts);
    truth.rrweb_bytes = json_bytes(&recs);
    for r in &recs {
        std::fs::write(out.join(format!("{}.json", r.device)), serde_json::to_vec(&r.events)?)?;
    }
    std::fs::write(out.join("truth.json"), serde_json::to_vec_pretty(&truth)?)?;
    println!(
        "wrote {} recordings ({} rrweb events, {:.1} MB) and truth.json to {}",
        recs.len(),
        truth.rrweb_events,
        truth.rrweb_bytes as f64 / 1e6,
        out.display()
    );
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- gen --devices {devices} --seed {seed} --out {}",
        out.display()
    );
    Ok(())
}

fn backfill(
    devices: usize,
    seed: u64,
    workers: &[usize],
    runs: usize,
    kafka: Option<&str>,
    tick_ms: Option<u64>,
    shape: harness::Shape,
) -> anyhow::Result<()> {
    let mut config = Config::defaults();
    if let Some(t) = tick_ms {
        config.engine.tick_ms = t;
    }
    let started = Instant::now();
    let t = harness::traffic(&GenOptions { devices, seed, ..Default::default() })?;
    let dir = tempfile::tempdir()?;
    let requests = harness::requests(&t.envelopes, shape);
    let late = match kafka {
        Some(brokers) => {
            harness::fresh_topic(&mut config, brokers, 4)?;
            let late = harness::write_kafka(&config, &requests)?;
            println!(
                "wrote the traffic to topic {} (4 partitions) on {brokers} in {:.1} s",
                config.kafka.topic,
                started.elapsed().as_secs_f64()
            );
            late
        }
        None => harness::write_log(&config, dir.path(), &requests)?,
    };
    let source = if kafka.is_some() { "Kafka (tansu, same machine)" } else { "the embedded log" };
    println!(
        "generated {devices} devices: {} rrweb events ({:.1} MB JSON) -> {} envelopes in {} requests ({shape:?} shape), {} analytic events, {:.1} MB protobuf, {late} late; in {:.1} s",
        t.truth.rrweb_events,
        t.truth.rrweb_bytes as f64 / 1e6,
        t.envelopes.len(),
        requests.len(),
        t.events,
        t.protobuf_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("machine: {}, tick {} ms", machine(), config.engine.tick_ms);
    for &w in workers {
        let mut best: Option<harness::BackfillFigure> = None;
        let mut cpus = Vec::new();
        for _ in 0..runs.max(1) {
            let f = harness::backfill(&config, dir.path(), w, &t)?;
            cpus.push(f.cpu);
            if best.as_ref().is_none_or(|b| f.stats.elapsed < b.stats.elapsed) {
                best = Some(f);
            }
        }
        let f = best.expect("one run");
        let secs = f.stats.elapsed.as_secs_f64();
        println!(
            "backfill from {source}, all views, {w} worker(s): {:.3} s = {:.0} envelopes/s, {:.0} analytic events/s, {:.1} MB/s of log (best of {runs}); views equal the planted truth",
            secs,
            f.stats.events as f64 / secs,
            f.events as f64 / secs,
            f.stats.bytes as f64 / 1e6 / secs,
        );
        // Wall time on a shared VM varies run to run; CPU time is the steadier A/B figure.
        cpus.sort_by(f64::total_cmp);
        println!(
            "  CPU per run (all threads: workers, publisher, log reader), least first: {} s; {:.0} analytic events per CPU second (least CPU)",
            cpus.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(", "),
            f.events as f64 / cpus[0].max(0.01),
        );
    }
    println!("  truth: {:?}", t.truth);
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- backfill --devices {devices} --seed {seed} --workers {} --runs {runs}{}",
        workers.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(","),
        kafka.map(|k| format!(" --kafka {k}")).unwrap_or_default()
            + &tick_ms.map(|t| format!(" --tick-ms {t}")).unwrap_or_default()
            + if shape == harness::Shape::Chunks { " --shape chunks" } else { "" }
    );
    Ok(())
}

fn memory(devices: usize, seed: u64, workers: usize) -> anyhow::Result<()> {
    let mut config = Config::defaults();
    config.engine.workers = workers;
    let rss0 = harness::rss_bytes();
    // Small snapshots: their size does not reach the dataflow (they go to the replay
    // store), and generating 100k devices stays fast.
    let opts = GenOptions { devices, seed, paragraphs: 8, ..Default::default() };
    let m = harness::memory(&config, &opts, 200)?;
    let per = |b: u64| b as f64 / m.sessions.max(1) as f64;
    println!("machine: {}", machine());
    println!(
        "memory, {} sessions ({} envelopes streamed in), {workers} worker(s); views equal the planted truth:",
        m.sessions, m.envelopes
    );
    println!(
        "  live:   dataflow state {:.1} MB = {:.0} B per live session; process RSS {:.1} MB ({:.1} MB at start)",
        m.live_state_bytes as f64 / 1e6,
        per(m.live_state_bytes),
        m.live_rss_bytes as f64 / 1e6,
        rss0 as f64 / 1e6,
    );
    println!(
        "  closed: dataflow state {:.1} MB = {:.0} B per closed session; published views {:.1} MB; process RSS {:.1} MB",
        m.closed_state_bytes as f64 / 1e6,
        per(m.closed_state_bytes),
        m.view_bytes as f64 / 1e6,
        m.closed_rss_bytes as f64 / 1e6
    );
    let strings = |(n, b): (u64, u64)| format!("{n} strings, {:.1} MB = {:.0} B per session", b as f64 / 1e6, per(b));
    println!(
        "  string table: live {}; closed {}; past the keep time {}",
        strings(m.strings_live),
        strings(m.strings_closed),
        strings(m.strings_reclaimed)
    );
    let mut views = m.per_view_live.clone();
    views.sort_by_key(|v| std::cmp::Reverse(v.1));
    for (v, b) in views.iter().take(6) {
        let closed = m.per_view_closed.iter().find(|(n, _)| n == v).map_or(0, |x| x.1);
        println!("    state of {v}: {:.0} B per live session, {:.0} B per closed session", per(*b), per(closed));
    }
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- memory --devices {devices} --seed {seed} --workers {workers}"
    );
    Ok(())
}

fn query(sessions: usize, runs: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut config = Config::defaults();
    config.engine.workers = 2;
    // Each worker generates its share as it reads it: 10M sessions never exist at once.
    let count = Arc::new(AtomicU64::new(0));
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let (c, f) = (count.clone(), failure.clone());
    let snap = batch::run_streams(&config, move |i| {
        let (c, f) = (c.clone(), f.clone());
        Box::new(harness::LightSessions::new(sessions, 1_795_161_600_000, i, 2).map_while(move |e| match e {
            Ok(e) => {
                c.fetch_add(1, Ordering::Relaxed);
                Some(e)
            }
            Err(e) => {
                f.lock().map(|mut f| f.get_or_insert(e.to_string()).clone()).ok();
                None
            }
        }))
    })?;
    if let Some(e) = failure.lock().ok().and_then(|f| f.clone()) {
        anyhow::bail!("generating light sessions: {e}");
    }
    let n = count.load(Ordering::Relaxed);
    let rows = |t: &str| snap.num_rows(t).unwrap_or(0);
    println!("machine: {}", machine());
    println!(
        "views over {n} envelopes built in {:.1} s: {} sessions, {} rage bursts, {} heatmap cells, {} page views",
        started.elapsed().as_secs_f64(),
        rows("sessions"),
        rows("rage_clicks"),
        rows("heatmap_cells"),
        rows("page_views")
    );
    let (state, views, _) = harness::dataflow_state(&snap);
    println!(
        "  held: published views {:.0} MB, dataflow state {:.0} MB, process RSS {:.0} MB",
        views as f64 / 1e6,
        state as f64 / 1e6,
        harness::rss_bytes() as f64 / 1e6
    );
    let mut arrow: Vec<(&str, usize, usize)> = snap
        .tables
        .iter()
        .map(|(name, _, batches)| {
            let rows = batches.iter().map(|b| b.num_rows()).sum();
            (*name, rows, batches.iter().map(|b| b.get_array_memory_size()).sum())
        })
        .collect();
    arrow.sort_by_key(|(_, _, bytes)| std::cmp::Reverse(*bytes));
    let arrow: Vec<String> = arrow
        .iter()
        .take(6)
        .map(|(n, rows, bytes)| format!("{n} {:.0} MB ({rows} rows)", *bytes as f64 / 1e6))
        .collect();
    println!("  largest Arrow tables: {}", arrow.join(", "));
    for (name, p50, p99, max) in harness::query_latency(&snap, runs)? {
        println!("  {name:<22} p50 {p50:>8.2} ms  p99 {p99:>8.2} ms  max {max:>8.2} ms ({runs} runs)");
    }
    println!("  reproduce: cargo run --release -p sightflow-bench -- query --sessions {sessions} --runs {runs}");
    Ok(())
}

fn decode(rate: u64, seconds: u64, runs: usize) -> anyhow::Result<()> {
    let d = harness::decode_throughput(rate, seconds, runs)?;
    println!("machine: {}", machine());
    println!(
        "decode on one core: {} requests, {} rrweb events, {:.1} MB gzipped, {:.1} MB of JSON; {} runs",
        d.requests,
        d.events,
        d.gzipped_bytes as f64 / 1e6,
        d.json_bytes as f64 / 1e6,
        d.runs.len()
    );
    let mut runs = d.runs.clone();
    runs.sort_by(f64::total_cmp);
    let (best, median) = (runs[0], runs[runs.len() / 2]);
    let per_s = |s: f64| d.events as f64 / s;
    println!(
        "  best {:.0} events/s ({:.0} ns per event, {:.0} MB/s of JSON), median {:.0} events/s; gunzip alone {:.0} ns per event ({:.0} % of the best)",
        per_s(best),
        best * 1e9 / d.events as f64,
        d.json_bytes as f64 / 1e6 / best,
        per_s(median),
        d.gunzip_s * 1e9 / d.events as f64,
        100.0 * d.gunzip_s / best
    );
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- decode --rate {rate} --seconds {seconds} --runs {}",
        d.runs.len()
    );
    Ok(())
}

fn live(opts: &harness::LiveOptions) -> anyhow::Result<()> {
    let f = harness::live_under_ingest(opts)?;
    let harness::LiveOptions { sessions, rate, seconds, senders, subscribers, query_nice } = *opts;
    println!("machine: {}", machine());
    println!(
        "dashboards under ingest: serve (defaults{}, in this process) over {} light sessions (loaded from its log in {:.0} s), {rate} SDK events/s offered for {seconds} s from {senders} senders: {:.0}/s acknowledged, ack p99 {:.1} ms",
        query_nice.map(|n| format!(", query.nice {n}")).unwrap_or_default(),
        f.sessions,
        f.preload_s,
        f.achieved,
        f.ack_p99_ms
    );
    for (name, n, p50, p99, max) in &f.queries {
        println!("  {name:<22} p50 {p50:>8.2} ms  p99 {p99:>8.2} ms  max {max:>8.2} ms ({n} runs over HTTP)");
    }
    let (n, p50, p99, p999, max) = f.delivery;
    println!(
        "  live feed: {} of {} subscribers to the end; ack -> first event covering it: p50 {p50:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms over {n} (ack, subscriber) pairs, {} never covered; {} evaluations of subscribed queries",
        f.subscribers.0, f.subscribers.1, f.undelivered, f.evaluations
    );
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- live --sessions {sessions} --rate {rate} --seconds {seconds} --senders {senders} --subscribers {subscribers}{}",
        query_nice.map(|n| format!(" --query-nice {n}")).unwrap_or_default()
    );
    anyhow::ensure!(f.subscribers.0 == f.subscribers.1, "subscribers were closed or failed");
    Ok(())
}

fn freshness(args: &FreshnessArgs) -> anyhow::Result<()> {
    let FreshnessArgs { rates, seconds, senders, tick_ms, lateness_ms, workers, .. } = args;
    let (seconds, senders, workers) = (*seconds, *senders, *workers);
    let rrweb = args.traffic == "rrweb";
    let kafka = args.kafka.as_deref();
    let mut config = Config::defaults();
    if let Some(t) = tick_ms {
        config.engine.tick_ms = *t;
    }
    if let Some(l) = lateness_ms {
        config.engine.allowed_lateness_ms = *l;
        config.engine.idle_timeout_ms = (*l).max(config.engine.tick_ms);
    }
    config.engine.workers = workers;
    config.ingest.max_events_per_batch = 100_000;
    if let Some(n) = args.max_in_flight {
        config.ingest.max_in_flight = n;
    }
    if let Some(ms) = args.max_queue_ms {
        config.ingest.max_queue_ms = ms;
    }
    println!("machine: {}", machine());
    if let Some(k) = kafka {
        config.kafka.brokers = k.to_string();
        config.kafka.produce_timeout_ms = 10_000;
        println!("through Kafka at {k} (tansu on this machine), a fresh 4-partition topic per load");
    }
    let e = &config.engine;
    println!(
        "freshness over HTTP (serve in-process, fsync {:?}, tick {} ms, lateness {} ms, idle timeout {} ms, ingest in flight {} (0: per core), queue {} ms, {workers} worker(s), {senders} senders{}, {seconds} s per load, {})",
        config.log.fsync,
        e.tick_ms,
        e.allowed_lateness_ms,
        e.idle_timeout_ms,
        config.ingest.max_in_flight,
        config.ingest.max_queue_ms,
        match args.open_loop {
            Some(n) => format!(" in open loop over up to {n} connections (ack time from when a request was due)"),
            None => " in closed loop (each waits for its answer)".to_string(),
        },
        if rrweb {
            "raw rrweb as the SDK sends it: a request per tab every 5 s, gzipped"
        } else {
            "compact SDK events every 10 ms per sender"
        }
    );
    for &rate in rates {
        if let Some(k) = kafka {
            harness::fresh_topic(&mut config, k, 4)?;
        }
        let f = harness::freshness(&config, rate, seconds, senders, rrweb, args.open_loop)?;
        println!(
            "  offered {:>7.0}/s: achieved {:>7.0}/s, {} requests ({} failed, {} events shed, {} of them with Retry-After, shed answer p99 {:.1} ms); ack p50 {:.1} ms, p99 {:.1} ms; ack->visible p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; p99 first third {:.1} ms, last third {:.1} ms; {} never visible",
            f.offered,
            f.achieved,
            f.requests,
            f.failed,
            f.shed,
            f.shed_with_retry_after,
            f.shed_p99_ms,
            f.ack_p50_ms,
            f.ack_p99_ms,
            f.p50_ms,
            f.p99_ms,
            f.p999_ms,
            f.max_ms,
            f.p99_first_ms,
            f.p99_last_ms,
            f.unseen
        );
    }
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- freshness --rates {} --seconds {seconds} --senders {senders}{}{}{}{} --workers {workers} --traffic {}{}",
        rates.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","),
        tick_ms.map(|t| format!(" --tick-ms {t}")).unwrap_or_default(),
        lateness_ms.map(|t| format!(" --lateness-ms {t}")).unwrap_or_default(),
        args.max_in_flight.map(|t| format!(" --max-in-flight {t}")).unwrap_or_default(),
        args.max_queue_ms.map(|t| format!(" --max-queue-ms {t}")).unwrap_or_default(),
        if rrweb { "rrweb" } else { "sdk" },
        kafka.map(|k| format!(" --kafka {k}")).unwrap_or_default()
            + &args.open_loop.map(|n| format!(" --open-loop {n}")).unwrap_or_default()
    );
    Ok(())
}

fn peers(
    devices: usize,
    batches: usize,
    files: usize,
    points: usize,
    seed: u64,
    start_ms: Option<i64>,
) -> anyhow::Result<()> {
    let config = Config::defaults();
    let mut opts = GenOptions { devices, seed, paragraphs: 8, ..Default::default() };
    if let Some(s) = start_ms {
        opts.start_ms = s;
    }
    // Page snapshots do not reach the views: small ones keep generation quick.
    let t = harness::traffic(&opts)?;
    let dir = tempfile::tempdir()?;
    let per = t.envelopes.len().div_ceil(batches.max(1));
    let parts: Vec<Vec<Envelope>> = t.envelopes.chunks(per).map(|c| c.to_vec()).collect();
    // File f holds the batches up to (f + 1) * parts / files.
    let ends: Vec<usize> = (1..=files).map(|f| f * parts.len() / files).collect();
    let mut from = 0;
    for (f, end) in ends.iter().enumerate() {
        let events: Vec<Envelope> = parts[from..*end].iter().flatten().cloned().collect();
        // The logical times the dataflow gets (`incremental_updates` stamps the same).
        harness::export_parquet(&events, config.engine.tick_ms, &dir.path().join(format!("events-{f:04}.parquet")))?;
        from = *end;
    }
    // The peers recompute after these many files (evenly spread, the last always).
    let at: Vec<usize> = (1..=points).map(|p| (p * files).div_ceil(points)).collect();
    let harness::Updates { times, snapshot: snap, cpu } = harness::incremental_updates(&config, &parts)?;
    let answers_dir = dir.path().join("sightflow");
    let answers = harness::peer_answers(&snap, &answers_dir)?;
    let ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    // The update at the end of the data, where the peers' recompute is compared: the
    // mean over the last tenth of the batches (one batch alone is noisy).
    let tail = &ms[ms.len() - ms.len().div_ceil(10)..];
    let mut sorted = ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    println!("machine: {}", machine());
    println!(
        "peers: {} envelopes ({} analytic events) in {} batches of ~{per} envelopes, exported as {files} Parquet files",
        t.envelopes.len(),
        t.events,
        parts.len(),
    );
    println!(
        "  sightflow incremental update per batch: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; last tenth of the batches mean {:.2} ms",
        mean(&ms),
        pct(0.5),
        pct(0.99),
        sorted.last().copied().unwrap_or(0.0),
        mean(tail),
    );
    let per_batch = |thread: &str| cpu.get(thread).copied().unwrap_or(0.0) * 1000.0 / parts.len().max(1) as f64;
    println!(
        "  CPU per batch: timely worker {:.2} ms, publisher {:.2} ms (/proc/self/task, 10 ms resolution summed over the run)",
        per_batch("timely:work-0"),
        per_batch("publisher")
    );
    println!(
        "  sightflow's views (rows): {}",
        answers.iter().map(|(n, r)| format!("{n} {r}")).collect::<Vec<_>>().join(", ")
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/peers.py");
    let at_list = at.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let out =
        std::process::Command::new("python3").arg(&script).arg(dir.path()).arg(&at_list).arg(&answers_dir).output()?;
    let base = mean(tail).max(0.001);
    let mut reported = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            println!("    {line}");
            continue;
        };
        reported += 1;
        let curve: Vec<String> = at
            .iter()
            .zip(v["recompute_ms"].as_array().into_iter().flatten())
            .map(|(n, t)| format!("{}: {:.0} ms", ends[n - 1], t.as_f64().unwrap_or(0.0)))
            .collect();
        let last = v["last_ms"].as_f64().unwrap_or(0.0);
        let views = v["views"].as_object().cloned().unwrap_or_default();
        let differ: Vec<&String> = views.iter().filter(|(_, e)| e.as_bool() != Some(true)).map(|(n, _)| n).collect();
        println!(
            "  {}: recompute of all {} views after the last batch {:.1} ms ({:.0}x sightflow's incremental update); after batch {}; {}",
            v["engine"].as_str().unwrap_or("?"),
            views.len(),
            last,
            last / base,
            curve.join(", "),
            if differ.is_empty() && !views.is_empty() {
                "every view equal to sightflow's".to_string()
            } else {
                format!("DIFFER from sightflow's: {}", differ.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            }
        );
        if let Some(groups) = v["groups_ms"].as_object() {
            let g: Vec<String> =
                groups.iter().map(|(k, t)| format!("{k} {:.0} ms", t.as_f64().unwrap_or(0.0))).collect();
            println!("    time per view group (last recompute): {}", g.join(", "));
        }
    }
    println!(
        "  reproduce: cargo run --release -p sightflow-bench -- peers --devices {devices} --batches {batches} --files {files} --points {points} --seed {seed}{}",
        start_ms.map(|s| format!(" --start-ms {s}")).unwrap_or_default()
    );
    if std::env::var_os("PEERS_KEEP").is_some() {
        println!("  kept the exported files and sightflow's views in {}", dir.keep().display());
    }
    if !out.status.success() || reported == 0 {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        anyhow::bail!("the peers' answers differ from sightflow's, or a peer failed (exit status {})", out.status);
    }
    Ok(())
}
