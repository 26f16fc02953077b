//! The dataflow's Kafka source: one reader per worker over the partitions assigned to
//! it (`partition % workers == worker`), with the positions, frontiers and counters that
//! `/health`, `/metrics`, the checkpoint and the backfill progress show.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightflow_config::Config;
use sightflow_connectors::kafka::{KafkaOptions, KafkaReader, PartitionPosition};
use sightflow_dataflows::{Progress, Source};
use sightflow_proto::v1::Envelope;

use crate::serve::now_ms;

/// The connector's options from the configuration.
pub fn kafka_options(config: &Config) -> KafkaOptions {
    let k = &config.kafka;
    KafkaOptions {
        brokers: k.brokers.clone(),
        topic: k.topic.clone(),
        produce_timeout: Duration::from_millis(k.produce_timeout_ms),
        queue_max_kbytes: k.queue_max_kbytes,
        idempotence: k.idempotence,
        client: k.client.clone(),
        tick_ms: config.engine.tick_ms,
        lateness_ms: config.engine.allowed_lateness_ms,
        clamp_late: config.engine.late_policy == sightflow_config::LatePolicy::Clamp,
        idle_timeout_ms: config.engine.idle_timeout_ms,
        max_skew_ms: config.engine.clock_skew_ms(),
    }
}

/// What every worker's reader has done, shared with the rest of the process.
#[derive(Default)]
pub struct KafkaShared {
    pub positions: Mutex<BTreeMap<u32, PartitionPosition>>,
    /// Per worker: the frontier at which it reached the end found at start-up.
    pub caught_up_at: Mutex<BTreeMap<usize, u64>>,
    pub records: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub garbage: AtomicU64,
    pub duplicates: AtomicU64,
    pub clamped: AtomicU64,
}

impl KafkaShared {
    /// Positions per partition, in partition order.
    pub fn positions(&self) -> Vec<PartitionPosition> {
        self.positions.lock().map(|p| p.values().cloned().collect()).unwrap_or_default()
    }
}

/// One worker's share of the topic.
pub struct KafkaSource {
    pub worker: usize,
    pub reader: KafkaReader,
    pub shared: Arc<KafkaShared>,
    /// The end offsets at start-up (`/health` turns ready past them).
    pub startup_end: BTreeMap<u32, u64>,
    /// Finite readers finish at their end offsets.
    pub finite: bool,
    pub caught_up: bool,
    /// The largest logical time read so far.
    pub max_time: u64,
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Progress {
        let batch = self.reader.read(512);
        let s = &self.shared;
        s.records.fetch_add(batch.records as u64, Ordering::Relaxed);
        s.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        s.bytes.fetch_add(batch.bytes as u64, Ordering::Relaxed);
        s.garbage.fetch_add(batch.garbage as u64, Ordering::Relaxed);
        s.duplicates.fetch_add(batch.duplicates as u64, Ordering::Relaxed);
        s.clamped.fetch_add(batch.clamped as u64, Ordering::Relaxed);
        let busy = batch.records + batch.garbage > 0;
        if let Some(t) = batch.events.iter().map(|(t, _)| *t).max() {
            self.max_time = self.max_time.max(t);
        }
        out.extend(batch.events);
        let frontier = self.reader.frontier(now_ms());
        let positions = self.reader.positions();
        if let Ok(mut p) = s.positions.lock() {
            for pos in &positions {
                p.insert(pos.partition, pos.clone());
            }
        }
        if !self.caught_up
            && positions.iter().all(|p| p.next >= self.startup_end.get(&p.partition).copied().unwrap_or(0))
        {
            self.caught_up = true;
            // Ready once the views reflect everything read up to the start-up end (but
            // not waiting for events stamped in the future).
            if let Ok(mut c) = s.caught_up_at.lock() {
                c.insert(self.worker, frontier.max(self.max_time.saturating_add(1).min(now_ms().max(0) as u64)));
            }
        }
        if self.finite && self.reader.done() {
            return Progress::Done;
        }
        Progress::At { frontier, busy }
    }
}
