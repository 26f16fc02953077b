//! The sightflow benchmark harness. Every figure it prints comes with the command that
//! reproduces it; `bench/README.md` records the latest ones.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use prost::Message;
use sightflow::batch::{self, Input};
use sightflow_config::Config;
use sightflow_dataflows::convert::envelope_events;
use sightflow_proto::v1::Envelope;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Batch { replicas, workers, fixtures, runs } => batch_throughput(replicas, workers, &fixtures, runs),
    }
}

/// The recordings as envelopes, one device each.
fn recordings(dir: &std::path::Path) -> anyhow::Result<Vec<Envelope>> {
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".json") && name != "manifest.json" {
            inputs.push(Input::Rrweb { device: name.trim_end_matches(".json").to_string(), path });
        }
    }
    inputs.sort_by_key(|i| match i {
        Input::Rrweb { path, .. } | Input::Events { path } => path.clone(),
    });
    let loaded = batch::load(&inputs, "bench", i64::MAX / 4).map_err(anyhow::Error::msg)?;
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
        let snap = batch::run(&config, input).map_err(anyhow::Error::msg)?;
        times.push(started.elapsed().as_secs_f64());
        sessions = snap.table("sessions").map_or(0, |b| b.num_rows());
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
