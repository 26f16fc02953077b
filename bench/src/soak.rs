//! The soak: `serve` in its own process under raw rrweb traffic for a long time, with
//! sessions starting and ending all the time. The load generator (this process) sends
//! what the SDK sends (a gzipped request per tab every 5 s, with a batch id) and, as the
//! SDK does, sends a refused request again after its `Retry-After`; so nothing valid
//! is lost and the views must equal what the generator planted. Every sample reads the
//! server's RSS from `/proc`, its counted state and string table from the server
//! itself, and the acknowledgement and ack→visible latencies of the last interval.

use std::collections::BinaryHeap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use std::time::{Duration, Instant};

use sightflow_config::Config;

use crate::harness::{self, PoolSession, SDK_BATCH_BYTES, SDK_BATCH_MS, sdk_event};
use crate::traffic::Truth;

/// What the soak runs.
pub struct SoakOptions {
    /// rrweb events per second offered.
    pub rate: u64,
    /// How long sessions keep starting.
    pub seconds: u64,
    /// Seconds between samples.
    pub sample_s: u64,
    /// Samples before this are the warm-up, left out of the slopes.
    pub warmup_s: u64,
    /// Concurrent HTTP senders.
    pub senders: usize,
    /// The server's `session.idle_gap_ms`: sessions end this long after their last event.
    pub idle_gap_ms: u64,
    /// The server's `session.retention_ms`: closed sessions leave the views this long
    /// after they end (0: never).
    pub retention_ms: u64,
}

/// One sample of the server.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the first session started.
    pub t: f64,
    pub rss: u64,
    /// What the allocator has handed out and not had back (jemalloc's count).
    pub allocated: u64,
    /// Physical memory in the allocator's pages.
    pub resident: u64,
    /// The dataflow's counted state (without the published views and strings).
    pub state: u64,
    /// The published views' counted bytes.
    pub views: u64,
    pub strings: u64,
    pub strings_bytes: u64,
    /// rrweb events acknowledged per second over the interval.
    pub accepted_per_s: f64,
    /// Requests refused (429/503) over the interval; each was sent again.
    pub refused: u64,
    pub ack_p99_ms: f64,
    pub visible_p99_ms: f64,
    /// Sessions started so far.
    pub sessions: u64,
}

/// The soak's outcome.
pub struct SoakFigure {
    pub samples: Vec<Sample>,
    pub planted: Truth,
    pub observed: Truth,
    pub sent_events: u64,
    pub refused: u64,
    pub failed: u64,
    pub unseen: u64,
    pub ack_p99_ms: f64,
    pub visible_p99_ms: f64,
    pub visible_p50_ms: f64,
    /// CPU seconds of the server process and of this one (generator and senders).
    pub server_cpu: f64,
    pub generator_cpu: f64,
    /// Wall seconds from the first session's start to the end of the check.
    pub seconds: f64,
    /// Sessions the views held at the end (with a retention, the recent ones).
    pub held_sessions: u64,
    /// With a retention: sessions missing that should be held, and held that should
    /// have left.
    pub missing: u64,
    pub stale: u64,
}

/// The server side: `serve` built with `config` on a free loopback port, its address on
/// stdout, then one answer line per command line on stdin (`stats`, `held`, `sql ...`) until
/// stdin closes.
pub fn serve_child(config: Config) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let query_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = sightflow::serve::build(config, dir.path(), query_rt.handle().clone())?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", listener.local_addr()?)?;
    out.flush()?;
    // As `sightflow serve` does: retention, checkpoints, idle node maps.
    {
        let _in = rt.enter();
        started.server.spawn_maintenance();
    }
    let router = started.router.clone();
    rt.spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    for line in std::io::stdin().lock().lines() {
        let snap = started.snapshots.latest();
        let answer = match line?.trim() {
            "stats" => {
                let (state, views, mut per_view) = harness::dataflow_state(&snap);
                // The counted state per view, largest first.
                per_view.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
                let per_view: serde_json::Map<_, _> =
                    per_view.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
                let (strings, strings_bytes) = harness::strings(&snap);
                let alloc = sightflow::serve::allocator_bytes().unwrap_or_default();
                serde_json::json!({"state": state, "views": views, "strings": strings, "strings_bytes": strings_bytes, "as_of": snap.as_of,
                    "allocated": alloc.allocated, "resident": alloc.resident, "retained": alloc.retained,
                    "per_view": per_view})
            }
            // The views' counts and the devices of the sessions they hold, from one snapshot.
            "held" => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let r = rt
                    .block_on(sightflow_query::execute(&snap, "select device_id from sessions", &Default::default()))
                    .map_err(|e| anyhow::anyhow!("devices: {e}"))?;
                let devices: Vec<serde_json::Value> =
                    sightflow_query::format::rows_as_arrays(&r).into_iter().map(|r| r[0].clone()).collect();
                serde_json::json!({"as_of": snap.as_of, "truth": harness::observed(&snap)?, "devices": devices})
            }
            sql if sql.starts_with("sql ") => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                match rt.block_on(sightflow_query::execute(&snap, &sql[4..], &Default::default())) {
                    Ok(r) => serde_json::to_value(sightflow_query::format::rows_as_arrays(&r))?,
                    Err(e) => serde_json::json!({"error": e.to_string()}),
                }
            }
            other => serde_json::json!({"error": format!("unknown command {other:?}")}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    drop(started);
    query_rt.shutdown_background();
    rt.shutdown_background();
    Ok(())
}

/// A request the generator built: one tab's events of one flush period.
struct Job {
    body: Vec<u8>,
    batch_id: String,
    events: usize,
}

/// A session being played: pool recording `pool`, started at `start`.
struct Playing {
    k: u64,
    pool: usize,
    start: i64,
    cursor: usize,
    next_flush: i64,
    batch: Vec<String>,
    bytes: usize,
    flushes: u64,
}

/// Latencies and counts of one sample interval.
struct Window {
    ack: hdrhistogram::Histogram<u64>,
    visible: hdrhistogram::Histogram<u64>,
    accepted: u64,
    refused: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            ack: hdrhistogram::Histogram::new(3).expect("3 significant figures"),
            visible: hdrhistogram::Histogram::new(3).expect("3 significant figures"),
            accepted: 0,
            refused: 0,
        }
    }
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Runs the soak against a child `serve` started as `child`.
pub fn soak(mut child: std::process::Command, opts: &SoakOptions) -> anyhow::Result<SoakFigure> {
    use std::process::Stdio;
    let mut server = child.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let pid = server.id();
    let mut to_server = server.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin to the server"))?;
    let mut from_server = std::io::BufReader::new(server.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?);
    let mut line = String::new();
    from_server.read_line(&mut line)?;
    let addr =
        line.trim().strip_prefix("listening ").ok_or_else(|| anyhow::anyhow!("server said {line:?}"))?.to_string();
    let mut ask = |cmd: &str| -> anyhow::Result<serde_json::Value> {
        writeln!(to_server, "{cmd}")?;
        to_server.flush()?;
        let mut line = String::new();
        from_server.read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    };

    let (pool, snapshot_bytes) = harness::rrweb_pool();
    let pool = Arc::new(pool);
    let per_session = pool.iter().map(|p| p.events.len()).sum::<usize>() as f64 / pool.len() as f64;
    let longest_ms = pool.iter().map(|p| p.events.last().map_or(0, |e| e.0)).max().unwrap_or(0);
    let sessions_per_s = opts.rate as f64 / per_session;
    println!(
        "soak: {sessions_per_s:.1} sessions/s of {per_session:.0} rrweb events (FullSnapshots of {snapshot_bytes} bytes on average), the longest {:.0} s; sessions end {:.0} s after their last event",
        longest_ms as f64 / 1000.0,
        opts.idle_gap_ms as f64 / 1000.0
    );

    let window = Arc::new(Mutex::new(Window::new()));
    let total_ack = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let sent_events = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started_sessions = Arc::new(AtomicU64::new(0));
    let planted = Arc::new(Mutex::new(Truth::default()));
    // A tab's requests all go through one sender, in order, as the SDK sends them: one
    // at a time, the next only after the last was accepted.
    let (jobs_tx, jobs_rx): (Vec<_>, Vec<_>) = (0..opts.senders.max(1)).map(|_| mpsc::channel::<Job>()).unzip();
    let (acks_tx, acks_rx) = mpsc::channel::<(Instant, u64)>();
    let t0 = sightflow::serve::now_ms() + 500;
    let begin = Instant::now() + Duration::from_millis(500);

    // The generator: plays every session in real time and cuts its requests.
    let generator = {
        let (planted, started_sessions) = (planted.clone(), started_sessions.clone());
        let (seconds, pool) = (opts.seconds, pool.clone());
        std::thread::Builder::new().name("generator".into()).spawn(move || -> anyhow::Result<()> {
            let mut playing: Vec<Playing> = Vec::new();
            let mut k: u64 = 0;
            let end = t0 + seconds as i64 * 1000;
            let start_of = |k: u64| t0 + (k as f64 * 1000.0 / sessions_per_s) as i64;
            loop {
                let now = sightflow::serve::now_ms();
                while start_of(k) <= now.min(end - 1) {
                    let device = format!("soak-{k}");
                    let phase = (xxhash_rust::xxh3::xxh3_64(device.as_bytes()) % SDK_BATCH_MS as u64) as i64;
                    let start = start_of(k);
                    let next_flush = start + SDK_BATCH_MS - (start - phase).rem_euclid(SDK_BATCH_MS);
                    playing.push(Playing {
                        k,
                        pool: (k as usize) % pool.len(),
                        start,
                        cursor: 0,
                        next_flush,
                        batch: Vec::new(),
                        bytes: 0,
                        flushes: 0,
                    });
                    k += 1;
                    started_sessions.store(k, Ordering::Relaxed);
                }
                if now >= end && playing.is_empty() {
                    return Ok(());
                }
                playing.retain_mut(|p| {
                    let rec: &PoolSession = &pool[p.pool];
                    let device = format!("soak-{}", p.k);
                    let tab = format!("{device}-tab");
                    let flush = |p: &mut Playing| {
                        if p.batch.is_empty() {
                            return;
                        }
                        let text = format!("[{}]", p.batch.join(","));
                        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        if gz.write_all(text.as_bytes()).is_err() {
                            return;
                        }
                        p.flushes += 1;
                        let job = Job {
                            body: gz.finish().unwrap_or_default(),
                            batch_id: format!("{tab}.{}", p.flushes),
                            events: p.batch.len(),
                        };
                        let _ = jobs_tx[p.k as usize % jobs_tx.len()].send(job);
                        p.batch.clear();
                        p.bytes = 0;
                    };
                    while let Some((rel, rest)) = rec.events.get(p.cursor) {
                        let ts = p.start + rel;
                        if ts > now {
                            break;
                        }
                        let text = sdk_event(&device, &tab, p.cursor as u64 + 1, ts, rest);
                        if p.bytes + text.len() > SDK_BATCH_BYTES {
                            flush(p);
                        }
                        p.bytes += text.len() + 1;
                        p.batch.push(text);
                        p.cursor += 1;
                    }
                    if now >= p.next_flush {
                        flush(p);
                        p.next_flush += SDK_BATCH_MS;
                    }
                    let done = p.cursor == rec.events.len() && p.batch.is_empty();
                    if done && let Ok(mut t) = planted.lock() {
                        t.add(&rec.truth);
                    }
                    !done
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        })?
    };

    // The senders: as the SDK, a refused request goes again after its Retry-After.
    let url = format!("http://{addr}/api/v1/track?key=demo");
    let mut senders = Vec::new();
    for jobs_rx in jobs_rx {
        let (acks_tx, window, total_ack) = (acks_tx.clone(), window.clone(), total_ack.clone());
        let (sent_events, refused, failed, url) = (sent_events.clone(), refused.clone(), failed.clone(), url.clone());
        senders.push(std::thread::spawn(move || {
            let agent = harness::bench_agent();
            loop {
                let Ok(job) = jobs_rx.recv() else { return };
                let url = format!("{url}&batch_id={}", job.batch_id);
                for attempt in 0..100 {
                    let sent_at = Instant::now();
                    let resp = agent
                        .post(&url)
                        .header("content-encoding", "gzip")
                        .content_type("text/plain")
                        .send(&job.body[..]);
                    let answered = Instant::now();
                    let us = (answered - sent_at).as_micros() as u64;
                    match resp {
                        Ok(mut r) if r.status() == 200 => {
                            let min_as_of = harness::min_as_of(&mut r);
                            sent_events.fetch_add(job.events as u64, Ordering::Relaxed);
                            if let Ok(mut w) = window.lock() {
                                let _ = w.ack.record(us);
                                w.accepted += job.events as u64;
                            }
                            if let Ok(mut h) = total_ack.lock() {
                                let _ = h.record(us);
                            }
                            if let Some(t) = min_as_of {
                                let _ = acks_tx.send((answered, t));
                            }
                            break;
                        }
                        Ok(r) if (r.status() == 429 || r.status() == 503) && attempt < 99 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut w) = window.lock() {
                                w.refused += 1;
                            }
                            let wait = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<u64>().ok())
                                .unwrap_or(1)
                                .clamp(1, 10);
                            std::thread::sleep(Duration::from_secs(wait));
                        }
                        other => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                harness::first_failure(other);
                            }
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(acks_tx);

    // The watcher: an acknowledged request is visible once `/health` shows a snapshot
    // at or past its `min_as_of` (polled every 5 ms, so the figure is up to 5 ms high).
    let done_sending = Arc::new(AtomicBool::new(false));
    let total_visible = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let watcher = {
        let (window, total_visible, done_sending) = (window.clone(), total_visible.clone(), done_sending.clone());
        let health = format!("http://{addr}/health");
        std::thread::spawn(move || -> u64 {
            use std::cmp::Reverse;
            let agent = harness::bench_agent();
            let mut pending: BinaryHeap<Reverse<(u64, Instant)>> = BinaryHeap::new();
            let mut deadline = None;
            loop {
                while let Ok((at, need)) = acks_rx.try_recv() {
                    pending.push(Reverse((need, at)));
                }
                if done_sending.load(Ordering::Relaxed) {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
                    if pending.is_empty() || Instant::now() > d {
                        return pending.len() as u64;
                    }
                }
                if pending.is_empty() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let as_of = agent
                    .get(&health)
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok())
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| v["as_of"].as_u64());
                let seen = Instant::now();
                if let Some(as_of) = as_of {
                    let mut w = window.lock().ok();
                    let mut all = total_visible.lock().ok();
                    while let Some(Reverse((need, at))) = pending.peek().copied() {
                        if need > as_of {
                            break;
                        }
                        pending.pop();
                        let us = seen.saturating_duration_since(at).as_micros() as u64;
                        if let Some(w) = w.as_mut() {
                            let _ = w.visible.record(us);
                        }
                        if let Some(h) = all.as_mut() {
                            let _ = h.record(us);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // The sampler.
    let mut samples = Vec::new();
    let mut next = begin + Duration::from_secs(opts.sample_s.max(1));
    let mut last = begin;
    println!(
        "{:>6} {:>10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10} {:>8} {:>9} {:>11} {:>9}",
        "t (s)",
        "RSS MB",
        "alloc MB",
        "resid. MB",
        "state MB",
        "views MB",
        "strings",
        "strings MB",
        "accepted/s",
        "refused",
        "ack p99",
        "visible p99",
        "sessions"
    );
    while !generator.is_finished() {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
            continue;
        }
        next += Duration::from_secs(opts.sample_s.max(1));
        let stats = ask("stats")?;
        let w = window.lock().map(|mut w| std::mem::replace(&mut *w, Window::new())).unwrap_or_else(|_| Window::new());
        let elapsed = now.duration_since(last).as_secs_f64();
        last = now;
        let s = Sample {
            t: now.duration_since(begin).as_secs_f64(),
            rss: rss_of(pid),
            allocated: stats["allocated"].as_u64().unwrap_or(0),
            resident: stats["resident"].as_u64().unwrap_or(0),
            state: stats["state"].as_u64().unwrap_or(0),
            views: stats["views"].as_u64().unwrap_or(0),
            strings: stats["strings"].as_u64().unwrap_or(0),
            strings_bytes: stats["strings_bytes"].as_u64().unwrap_or(0),
            accepted_per_s: w.accepted as f64 / elapsed.max(1e-9),
            refused: w.refused,
            ack_p99_ms: ms(&w.ack, 0.99),
            visible_p99_ms: ms(&w.visible, 0.99),
            sessions: started_sessions.load(Ordering::Relaxed),
        };
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{:>6.0} {:>10.1} {:>9.1} {:>10.1} {:>10.1} {:>9.1} {:>9} {:>10.1} {:>10.0} {:>8} {:>6.1} ms {:>8.1} ms {:>9}",
            s.t,
            mb(s.rss),
            mb(s.allocated),
            mb(s.resident),
            mb(s.state),
            mb(s.views),
            s.strings,
            mb(s.strings_bytes),
            s.accepted_per_s,
            s.refused,
            s.ack_p99_ms,
            s.visible_p99_ms,
            s.sessions
        );
        samples.push(s);
    }
    let stats = ask("stats")?;
    println!("counted state per view at the end (bytes): {}", stats["per_view"]);
    generator.join().map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    for s in senders {
        let _ = s.join();
    }
    done_sending.store(true, Ordering::Relaxed);
    let unseen = watcher.join().map_err(|_| anyhow::anyhow!("the watcher panicked"))?;

    // Late clicks wait for their window's verdict; idle partitions follow the wall clock.
    let planted = planted.lock().map(|t| t.clone()).unwrap_or_default();
    let mut want = planted.clone();
    want.rrweb_events = 0;
    want.rrweb_bytes = 0;
    let mut observed = Truth::default();
    let (mut held_sessions, mut missing, mut stale) = (0u64, 0u64, 0u64);
    let started = started_sessions.load(Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs(120);
    while Instant::now() < settle {
        let held = ask("held")?;
        observed = serde_json::from_value(held["truth"].clone())?;
        let devices: Vec<u64> = held["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str()?.strip_prefix("soak-")?.parse().ok())
            .collect();
        held_sessions = devices.len() as u64;
        if opts.retention_ms > 0 {
            // The sessions held must be exactly what was planted for them; the
            // aggregates count every session (see `per_session_truth`).
            want = per_session_truth(&planted, devices.iter().map(|k| &pool[*k as usize % pool.len()].truth));
            // Which sessions must be held, and which must have left, by when they ended
            // (their last event plus the idle gap, in event time) against the cutoff;
            // those within half a minute of it may be either.
            let as_of = held["as_of"].as_u64().unwrap_or(0) as i64;
            let step = opts.retention_ms.min(60_000) as i64;
            let cutoff = (as_of - opts.retention_ms as i64).max(0) / step * step;
            let ended = |k: u64| {
                let last = pool[k as usize % pool.len()].events.last().map_or(0, |e| e.0);
                t0 + (k as f64 * 1000.0 / sessions_per_s) as i64 + last + opts.idle_gap_ms as i64
            };
            let held: std::collections::HashSet<u64> = devices.iter().copied().collect();
            missing = (0..started).filter(|k| ended(*k) >= cutoff + 30_000 && !held.contains(k)).count() as u64;
            stale = (0..started).filter(|k| ended(*k) < cutoff - 30_000 && held.contains(k)).count() as u64;
        }
        if observed == want && missing == 0 && stale == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    if observed != want {
        // Which sessions differ, for the thrashed cursors and dead clicks.
        for (view, field) in [("thrashed_cursors", 0usize), ("dead_clicks", 1)] {
            let rows = ask(&format!(
                "sql select s.device_id, count(*) from {view} t join sessions s using (session_id) group by 1"
            ))?;
            let mut shown = 0;
            for r in rows.as_array().into_iter().flatten() {
                let device = r[0].as_str().unwrap_or_default();
                let got = r[1].as_u64().unwrap_or(0);
                let k: usize = device.trim_start_matches("soak-").parse().unwrap_or(0);
                let t = &pool[k % pool.len()].truth;
                let planted = if field == 0 { t.thrashed_cursors } else { t.dead_clicks };
                if got != planted && shown < 3 {
                    shown += 1;
                    println!("{view}: {device} (pool {}) has {got}, planted {planted}", k % pool.len());
                    let detail = ask(&format!(
                        "sql select t.* from {view} t join sessions s using (session_id) where s.device_id = '{device}' order by t.ts"
                    ))?;
                    println!("  {detail}");
                }
            }
        }
    }
    let server_cpu = harness::cpu_of(pid);
    let _ = server.kill();
    let _ = server.wait();
    let (ack_p99, (vis_p50, vis_p99)) = (
        total_ack.lock().map(|h| ms(&h, 0.99)).unwrap_or(0.0),
        total_visible.lock().map(|h| (ms(&h, 0.5), ms(&h, 0.99))).unwrap_or((0.0, 0.0)),
    );
    Ok(SoakFigure {
        samples,
        planted: want,
        observed,
        sent_events: sent_events.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        unseen,
        ack_p99_ms: ack_p99,
        visible_p99_ms: vis_p99,
        visible_p50_ms: vis_p50,
        server_cpu,
        generator_cpu: harness::process_cpu(),
        seconds: begin.elapsed().as_secs_f64(),
        held_sessions,
        missing,
        stale,
    })
}

/// What the views must show when closed sessions leave them: every per-session count
/// summed over the sessions they hold, and the aggregates (funnel conversions and
/// error occurrences, read from `funnel_steps` and `errors`) over every session planted.
pub fn per_session_truth<'a>(planted: &Truth, held: impl Iterator<Item = &'a Truth>) -> Truth {
    let mut want = Truth::default();
    for t in held {
        want.add(t);
    }
    want.funnel_conversions = planted.funnel_conversions;
    want.uncaught_errors = planted.uncaught_errors;
    want.rrweb_events = 0;
    want.rrweb_bytes = 0;
    want
}

/// Resident set size of process `pid` in bytes.
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The least-squares slope of `y` over `x`, and the mean of `y`.
pub fn slope(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, points.first().map_or(0.0, |p| p.1));
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (if sxx > 0.0 { sxy / sxx } else { 0.0 }, my)
}
