//! Backfill from the embedded log: re-read every retained record (or the records up to
//! the end found at start) through the same dataflow into a fresh view state.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightflow_config::Config;
use sightflow_connectors::log::{Log, Reader};
use sightflow_dataflows::{Progress, RunOptions, Snapshot, Source, start};
use sightflow_operators::Params;
use sightflow_proto::v1::Envelope;

use crate::serve::log_options;

/// What a backfill read and how long it took.
#[derive(Debug, Clone, Default)]
pub struct BackfillStats {
    pub records: u64,
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Reads partitions from the start up to `end`, then finishes.
struct FiniteLogSource {
    reader: Reader,
    end: Vec<u64>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Source for FiniteLogSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Progress {
        let batch = match self.reader.read(512) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event log; the backfill stops here");
                return Progress::Done;
            }
        };
        self.counters.records.fetch_add(batch.records as u64, Ordering::Relaxed);
        self.counters.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        self.counters.bytes.fetch_add(batch.bytes as u64, Ordering::Relaxed);
        out.extend(batch.events);
        let done = self.reader.positions().iter().all(|(p, o)| *o >= self.end[*p as usize])
            || (batch.records == 0 && batch.caught_up);
        if done {
            Progress::Done
        } else {
            // Records of one partition arrive in logical-time order per record, and a
            // record's frontier bounds what later records hold.
            Progress::At { frontier: self.reader.frontier(), busy: true }
        }
    }
}

/// Runs the dataflow over the log under `data_dir` from its earliest retained record to
/// the end found at start, and returns the complete views.
pub fn backfill_log(config: &Config, data_dir: &Path) -> Result<(Arc<Snapshot>, BackfillStats), String> {
    let log = Log::open(log_options(config, data_dir)).map_err(|e| e.to_string())?;
    let end = log.end_offsets();
    let partitions = log.partitions() as usize;
    let counters = Arc::new(Counters::default());
    let params = Arc::new(Params::from_config(config));
    let started = Instant::now();
    let (src_log, src_counters) = (log.clone(), counters.clone());
    let src_end = Mutex::new(end.clone());
    let running = start(
        RunOptions {
            workers: config.engine.workers,
            params,
            on_publish: None,
            idle_park: Duration::from_millis(1),
            final_only: true,
        },
        move |worker, peers| {
            let mine: Vec<(u32, u64)> =
                (0..partitions).filter(|p| p % peers == worker).map(|p| (p as u32, 0)).collect();
            let end = src_end.lock().map(|e| e.clone()).unwrap_or_default();
            Box::new(FiniteLogSource { reader: src_log.reader(&mine), end, counters: src_counters.clone() })
                as Box<dyn Source>
        },
    )?;
    let snapshots = running.snapshots.clone();
    running.join()?;
    let snap = snapshots.wait_complete();
    let stats = BackfillStats {
        records: counters.records.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    Ok((snap, stats))
}
