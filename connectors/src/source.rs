//! The dataflow's inputs: a worker's share of the embedded log ([`LogSource`]) or of a
//! Kafka topic ([`KafkaSource`]), each implementing [`Source`] with the same
//! bookkeeping ([`SourceStats`]): positions, frontiers and counters for `/health`,
//! `/metrics`, the checkpoint and the backfill progress.
//!
//! A live source reads on past what it cannot read: damage on disk is skipped (and
//! listed), a broker that is down is retried. A finite source (a backfill) fails
//! instead, naming the partition and offset, so that no view is written as complete
//! when part of its input is missing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightflow_proto::source::{Progress, Source, SourceError};
use sightflow_proto::v1::Envelope;

use crate::kafka::KafkaReader;
use crate::log::{Log, LogError, Reader};

/// Where one partition of a reader is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The partition.
    pub partition: u32,
    /// Where this reader started (the view state's origin).
    pub start: u64,
    /// Next offset to read.
    pub next: u64,
    /// The partition frontier: no later event gets a logical time below it.
    pub frontier: u64,
}

/// A stretch of the log skipped as damaged on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The partition.
    pub partition: u32,
    /// First offset skipped.
    pub from: u64,
    /// Offset reading resumed at (exclusive end of the stretch).
    pub to: u64,
    /// Why the record at `from` could not be read.
    pub reason: String,
}

/// What every worker's source has done, shared with the rest of the process.
#[derive(Debug, Default)]
pub struct SourceStats {
    positions: Mutex<BTreeMap<u32, PartitionPosition>>,
    /// Per worker: the frontier at which it reached the end found at start-up.
    caught_up_at: Mutex<BTreeMap<usize, u64>>,
    /// Why a worker cannot read on now, per worker.
    failures: Mutex<BTreeMap<usize, String>>,
    skipped: Mutex<Vec<Skipped>>,
    /// Log records or Kafka messages read.
    pub records: AtomicU64,
    /// Events read.
    pub events: AtomicU64,
    /// Bytes of records read.
    pub bytes: AtomicU64,
    /// Kafka messages that were not sightflow records.
    pub garbage: AtomicU64,
    /// Retried batches read again and dropped.
    pub duplicates: AtomicU64,
    /// Events raised to their partition's frontier on reading.
    pub clamped: AtomicU64,
}

impl SourceStats {
    /// Positions per partition, in partition order.
    pub fn positions(&self) -> Vec<PartitionPosition> {
        self.positions.lock().map(|p| p.values().cloned().collect()).unwrap_or_default()
    }

    /// Per worker, the frontier at which it caught up with the start-up end.
    pub fn caught_up_at(&self) -> BTreeMap<usize, u64> {
        self.caught_up_at.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Why workers cannot read on now.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .map(|f| f.iter().map(|(w, why)| format!("worker {w} cannot read its input: {why}")).collect())
            .unwrap_or_default()
    }

    /// Stretches skipped as damaged.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Positions known before any read (a backfill's starts).
    pub fn set_start(&self, starts: &[(u32, u64)]) {
        if let Ok(mut p) = self.positions.lock() {
            for &(partition, start) in starts {
                p.insert(partition, PartitionPosition { partition, start, next: start, frontier: 0 });
            }
        }
    }

    fn failing(&self, worker: usize, why: Option<String>) {
        if let Ok(mut f) = self.failures.lock() {
            match why {
                Some(w) => {
                    if f.get(&worker) != Some(&w) {
                        tracing::error!(worker, error = %w, "cannot read the event log");
                        f.insert(worker, w);
                    }
                }
                None => {
                    f.remove(&worker);
                }
            }
        }
    }
}

/// The bookkeeping both sources share.
struct Tracking {
    worker: usize,
    stats: Arc<SourceStats>,
    /// End offsets at start-up: `/health` turns ready past them.
    startup_end: BTreeMap<u32, u64>,
    caught_up: bool,
    /// The largest logical time read so far.
    max_time: u64,
    /// Finite sources end at these offsets.
    end: Option<BTreeMap<u32, u64>>,
}

impl Tracking {
    fn after_read(&mut self, items: &[(u64, Envelope)], positions: &[PartitionPosition], frontier: u64, now_ms: i64) {
        if let Some(t) = items.iter().map(|(t, _)| *t).max() {
            self.max_time = self.max_time.max(t);
        }
        if let Ok(mut p) = self.stats.positions.lock() {
            for pos in positions {
                let e = p.entry(pos.partition).or_insert_with(|| pos.clone());
                e.next = pos.next;
                e.frontier = pos.frontier;
            }
        }
        if !self.caught_up
            && positions.iter().all(|p| p.next >= self.startup_end.get(&p.partition).copied().unwrap_or(0))
        {
            self.caught_up = true;
            // Ready once the views reflect everything read up to the start-up end (but
            // not waiting for events stamped in the future).
            if let Ok(mut c) = self.stats.caught_up_at.lock() {
                c.insert(self.worker, frontier.max(self.max_time.saturating_add(1).min(now_ms.max(0) as u64)));
            }
        }
    }

    fn finished(&self, positions: &[PartitionPosition]) -> bool {
        self.end
            .as_ref()
            .is_some_and(|end| positions.iter().all(|p| p.next >= end.get(&p.partition).copied().unwrap_or(0)))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A worker's share of the embedded log.
pub struct LogSource {
    log: Log,
    reader: Reader,
    starts: BTreeMap<u32, u64>,
    track: Tracking,
}

impl LogSource {
    /// Reads `partitions` (partition, start offset) of `log` for worker `worker`, live
    /// (`end` is `None`: idle partitions follow the wall clock, damage is skipped) or up
    /// to the `end` offsets (damage fails the source).
    pub fn new(
        log: &Log,
        worker: usize,
        partitions: &[(u32, u64)],
        startup_end: BTreeMap<u32, u64>,
        end: Option<BTreeMap<u32, u64>>,
        stats: Arc<SourceStats>,
    ) -> LogSource {
        LogSource {
            log: log.clone(),
            reader: log.reader(partitions),
            starts: partitions.iter().copied().collect(),
            track: Tracking { worker, stats, startup_end, caught_up: false, max_time: 0, end },
        }
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        let frontier = self.reader.frontier();
        self.reader
            .positions()
            .into_iter()
            .map(|(partition, next)| PartitionPosition {
                partition,
                start: self.starts.get(&partition).copied().unwrap_or(0),
                next,
                frontier,
            })
            .collect()
    }
}

impl Source for LogSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        let finite = self.track.end.is_some();
        // A live read answers sooner with smaller batches; a backfill reads more at once.
        let batch = match self.reader.read(if finite { 512 } else { 256 }) {
            Ok(b) => b,
            Err(LogError::Damaged { partition, offset, reason, path }) if finite => {
                return Err(SourceError {
                    partition: Some(partition),
                    offset: Some(offset),
                    reason: format!("{reason} in {path}"),
                });
            }
            Err(LogError::Damaged { partition, offset, reason, .. }) => {
                // Damaged on disk (not a torn write, which is never committed): the views
                // must not stop for it. Skip to where the log is readable again, loudly.
                let skipped = self.reader.skip_damaged(partition);
                tracing::error!(partition, offset, %reason, ?skipped, "the event log is damaged; skipping what cannot be read");
                if let (Some((from, to)), Ok(mut s)) = (skipped, self.track.stats.skipped.lock()) {
                    s.push(Skipped { partition, from, to, reason });
                }
                return Ok(Progress::At { frontier: self.reader.frontier(), busy: true });
            }
            Err(e) if finite => return Err(SourceError { partition: None, offset: None, reason: e.to_string() }),
            Err(e) => {
                // Reported once and shown by /health; retried (the disk may recover).
                self.track.stats.failing(self.track.worker, Some(e.to_string()));
                return Ok(Progress::At { frontier: self.reader.frontier(), busy: false });
            }
        };
        self.track.stats.failing(self.track.worker, None);
        let s = &self.track.stats;
        s.records.fetch_add(batch.records as u64, Ordering::Relaxed);
        s.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        s.bytes.fetch_add(batch.bytes as u64, Ordering::Relaxed);
        let busy = batch.records > 0;
        if batch.caught_up && !finite {
            self.log.tick(now_ms());
        }
        let positions = self.positions();
        let frontier = self.reader.frontier();
        self.track.after_read(&batch.events, &positions, frontier, now_ms());
        out.extend(batch.events);
        if self.track.finished(&positions) || (finite && batch.records == 0 && batch.caught_up) {
            return Ok(Progress::Done);
        }
        // A finite read keeps going until its end; a record's frontier bounds what later
        // records of its partition hold.
        Ok(Progress::At { frontier, busy: busy || finite })
    }
}

/// A worker's share of a Kafka topic.
pub struct KafkaSource {
    reader: KafkaReader,
    finite: bool,
    /// A finite source fails once the broker has been unreachable this long.
    give_up_after: Duration,
    track: Tracking,
}

impl KafkaSource {
    /// Reads what `reader` was given for worker `worker`; `finite` sources end at the
    /// reader's end offsets and fail when the broker stays unreachable.
    pub fn new(
        reader: KafkaReader,
        worker: usize,
        startup_end: BTreeMap<u32, u64>,
        finite: bool,
        stats: Arc<SourceStats>,
    ) -> KafkaSource {
        KafkaSource {
            reader,
            finite,
            give_up_after: Duration::from_secs(30),
            track: Tracking { worker, stats, startup_end, caught_up: false, max_time: 0, end: None },
        }
    }

    /// How long a finite source waits for an unreachable broker before it fails.
    pub fn give_up_after(mut self, d: Duration) -> KafkaSource {
        self.give_up_after = d;
        self
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        let batch = self.reader.read(512);
        let s = &self.track.stats;
        s.records.fetch_add(batch.records as u64, Ordering::Relaxed);
        s.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        s.bytes.fetch_add(batch.bytes as u64, Ordering::Relaxed);
        s.garbage.fetch_add(batch.garbage as u64, Ordering::Relaxed);
        s.duplicates.fetch_add(batch.duplicates as u64, Ordering::Relaxed);
        s.clamped.fetch_add(batch.clamped as u64, Ordering::Relaxed);
        let busy = batch.records + batch.garbage > 0;
        let positions = self.reader.positions();
        if let Some((since, why)) = self.reader.failing() {
            if self.finite && since >= self.give_up_after {
                let at = positions.iter().find(|p| !self.reader.partition_done(p.partition));
                return Err(SourceError {
                    partition: at.map(|p| p.partition),
                    offset: at.map(|p| p.next),
                    reason: format!("the broker has not answered for {} s: {why}", since.as_secs()),
                });
            }
            self.track.stats.failing(self.track.worker, Some(why));
        } else {
            self.track.stats.failing(self.track.worker, None);
        }
        let frontier = self.reader.frontier(now_ms());
        self.track.after_read(&batch.events, &positions, frontier, now_ms());
        out.extend(batch.events);
        if self.finite && self.reader.done() {
            return Ok(Progress::Done);
        }
        Ok(Progress::At { frontier, busy })
    }
}
