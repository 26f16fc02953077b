//! Kafka as the event log: a producer that appends accepted batches, stamped with
//! logical times exactly as the embedded log stamps them, and a reader of explicitly
//! assigned partitions (no consumer group, no rebalancing: offsets live in the engine's
//! checkpoint).
//!
//! A message is one device's share of one ingest batch, keyed by the device id, on the
//! partition `hash(project, device) % partitions` (so one device's events stay in order
//! in one partition). Its value is `SFL1` followed by a [`LogRecord`] protobuf: the
//! events with their logical times, the partition frontier after them and the batch id.
//! Any other value is garbage: the reader counts it, logs its partition and offset, and
//! goes on.
//!
//! Re-reading a partition reproduces the times of the live run: every time comes from
//! the record, raised to the partition's frontier so far when a producer (another
//! process, or one restarted without its clock) stamped below it, and a retried batch
//! (same batch id) is kept once. Only an idle partition's frontier follows the wall
//! clock, with a margin that covers a message still in flight.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};
use sightflow_config::StartAt;
use sightflow_config::time::{Clock, Stamp, tick_ceil};
use sightflow_proto::v1::{Envelope, LogRecord};

use crate::log::Appended;

/// The first bytes of every message value sightflow writes.
pub const MAGIC: &[u8; 4] = b"SFL1";

/// Batch ids remembered per partition to drop retried batches.
const RECENT_BATCHES: usize = 100_000;

/// How to reach the topic, and the clock rules (the same as the embedded log's).
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `host:port[,host:port...]` (config `kafka.brokers`).
    pub brokers: String,
    /// The topic produced to and read (`kafka.topic`).
    pub topic: String,
    /// How long a produce waits for the broker's acknowledgement (`kafka.produce_timeout_ms`).
    pub produce_timeout: Duration,
    /// Bound on a reader's prefetched messages, in KiB (`kafka.queue_max_kbytes`).
    pub queue_max_kbytes: u64,
    /// The broker drops the producer's own retries (readers drop retried batches anyway).
    pub idempotence: bool,
    /// Extra librdkafka properties.
    pub client: BTreeMap<String, String>,
    /// Tick of logical time (ms).
    pub tick_ms: u64,
    /// Allowed lateness behind a partition's largest event time (ms).
    pub lateness_ms: u64,
    /// Whether late events are clamped to the frontier (else dropped).
    pub clamp_late: bool,
    /// An idle partition's frontier follows the wall clock after this long (ms).
    pub idle_timeout_ms: u64,
    /// Event times past the server clock plus this count as that.
    pub max_skew_ms: u64,
}

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    /// librdkafka refused the client configuration.
    #[error("kafka: cannot create a client for {brokers}: {reason}")]
    Client {
        /// The configured brokers.
        brokers: String,
        /// librdkafka's message.
        reason: String,
    },
    /// The topic's metadata could not be fetched (brokers unreachable, not authorised, ...).
    #[error("kafka: cannot read the metadata of topic {topic:?} from {brokers}: {reason}")]
    Metadata {
        /// The topic.
        topic: String,
        /// The configured brokers.
        brokers: String,
        /// librdkafka's message.
        reason: String,
    },
    /// The brokers report no partitions for the topic.
    #[error(
        "kafka: topic {topic:?} does not exist on {brokers}; create it first (for example \
         `tansu topic create {topic} --partitions 4 --broker tcp://HOST:PORT`)"
    )]
    NoTopic {
        /// The topic.
        topic: String,
        /// The configured brokers.
        brokers: String,
    },
    /// A produced message was not acknowledged in time, or was refused (the reason).
    #[error("kafka: the broker did not acknowledge the batch: {0}")]
    Produce(String),
    /// Offsets could not be looked up or partitions assigned.
    #[error("kafka: cannot look up offsets of topic {topic:?}: {reason}")]
    Offsets {
        /// The topic.
        topic: String,
        /// librdkafka's message.
        reason: String,
    },
}

/// Client callbacks: librdkafka's errors go to the log as warnings, at most one every
/// 10 s per client (a broker that is down is reported, not repeated every second),
/// except "end of partition", which readers handle themselves; its own log lines go to
/// the debug level.
#[derive(Debug, Default)]
pub struct Quiet {
    last_warning_ms: std::sync::atomic::AtomicI64,
}

impl ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, log_message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let last = self.last_warning_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= 10_000 {
            self.last_warning_ms.store(now, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%error, reason, "kafka client (repeats of this are muted for 10 s)");
        }
    }
}

impl ConsumerContext for Quiet {}

type Client = BaseConsumer<Quiet>;

/// Messages this process produced that its readers have not read yet, with the least
/// logical time each holds: an idle partition's frontier never passes them.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Mutex<InFlightEntries>>);

#[derive(Debug, Default)]
struct InFlightEntries {
    next_id: u64,
    /// id -> (partition, offset once delivered, least logical time)
    entries: BTreeMap<u64, (u32, Option<u64>, u64)>,
}

impl InFlight {
    fn add(&self, partition: u32, least_time: u64) -> u64 {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.next_id += 1;
        let id = g.next_id;
        g.entries.insert(id, (partition, None, least_time));
        id
    }

    fn delivered(&self, id: u64, offset: u64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.entries.get_mut(&id) {
            e.1 = Some(offset);
        }
    }

    fn failed(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entries.remove(&id);
    }

    /// The least logical time a message of `partition` at or after offset `next` may
    /// still bring (forgetting messages before `next`: they were read).
    pub fn floor(&self, partition: u32, next: u64) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.entries.retain(|_, (p, off, _)| *p != partition || off.is_none_or(|o| o >= next));
        g.entries.values().filter(|(p, _, _)| *p == partition).map(|(_, _, t)| *t).min()
    }
}

impl KafkaOptions {
    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "sightflow");
        // Loopback brokers and tests: do not wait long to notice a broker is gone.
        c.set("reconnect.backoff.max.ms", "1000");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    fn consumer(&self) -> Result<Client, KafkaFailure> {
        let mut c = self.base();
        c.set("group.id", format!("sightflow-{}", self.topic));
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("enable.partition.eof", "true");
        c.set("auto.offset.reset", "earliest");
        c.set("queued.max.messages.kbytes", self.queue_max_kbytes.to_string());
        c.set("fetch.wait.max.ms", "10");
        c.create_with_context(Quiet::default()).map_err(|source: KafkaError| KafkaFailure::Client {
            brokers: self.brokers.clone(),
            reason: source.to_string(),
        })
    }

    /// The topic's partition count (0 when the topic does not exist).
    fn partition_count(&self, consumer: &Client) -> Result<u32, KafkaFailure> {
        let md = consumer.fetch_metadata(Some(&self.topic), Timeout::After(Duration::from_secs(10))).map_err(
            |source: KafkaError| KafkaFailure::Metadata {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
                reason: source.to_string(),
            },
        )?;
        let Some(t) = md.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(0);
        };
        if t.error().is_some() {
            return Ok(0);
        }
        Ok(t.partitions().len() as u32)
    }
}

/// The partition of a device: the same hash as the embedded log.
pub fn partition_of(project: &str, device: &str, partitions: u32) -> u32 {
    (device_hash(project, device) % partitions.max(1) as u64) as u32
}

/// The xxh3 of `project`, a NUL and `device`, without joining them first.
pub fn device_hash(project: &str, device: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(project.as_bytes());
    h.update(&[0]);
    h.update(device.as_bytes());
    h.digest()
}

/// A message value: `MAGIC` then the record.
pub fn encode_record(record: &LogRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(record.encoded_len() + MAGIC.len());
    v.extend_from_slice(MAGIC);
    record.encode(&mut v).expect("a Vec grows as needed");
    v
}

/// Why a Kafka message is not a sightflow record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadRecord {
    /// The value does not start with [`MAGIC`].
    #[error("not a sightflow record (starts with {head:?}, expected \"SFL1\")")]
    Magic {
        /// Its first 16 bytes, non-printable ones as `.`.
        head: String,
    },
    /// The value starts with [`MAGIC`] but the rest is not a `LogRecord`.
    #[error("a sightflow record that does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Decodes a message value written by [`encode_record`].
pub fn decode_record(value: &[u8]) -> Result<LogRecord, BadRecord> {
    let Some(body) = value.strip_prefix(MAGIC.as_slice()) else {
        let head: String =
            value.iter().take(16).map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' }).collect();
        return Err(BadRecord::Magic { head });
    };
    Ok(LogRecord::decode(body)?)
}

/// Appends ingest batches to the topic.
pub struct KafkaSink {
    opts: KafkaOptions,
    producer: FutureProducer<Quiet>,
    meta: Client,
    /// One clock per partition (grows when partitions are added).
    clocks: Mutex<Vec<Clock>>,
    in_flight: InFlight,
}

impl KafkaSink {
    /// Connects and checks the topic exists. `frontiers` restores the partition clocks
    /// (from the engine's checkpoint).
    pub fn connect(opts: KafkaOptions, frontiers: &[u64]) -> Result<KafkaSink, KafkaFailure> {
        let mut c = opts.base();
        c.set("enable.idempotence", opts.idempotence.to_string());
        c.set("acks", "all");
        if !opts.idempotence {
            // Order within a partition survives retries only with one request in flight.
            c.set("max.in.flight.requests.per.connection", "1");
        }
        c.set("linger.ms", "1");
        // What waits for the broker is bounded: past 64 MB a produce fails at once (the
        // request answers 503) instead of queueing up to librdkafka's default of 1 GB.
        if !opts.client.contains_key("queue.buffering.max.kbytes") {
            c.set("queue.buffering.max.kbytes", "65536");
        }
        c.set("message.timeout.ms", opts.produce_timeout.as_millis().max(1).to_string());
        let producer: FutureProducer<Quiet> =
            c.create_with_context(Quiet::default()).map_err(|source: KafkaError| KafkaFailure::Client {
                brokers: opts.brokers.clone(),
                reason: source.to_string(),
            })?;
        let meta = opts.consumer()?;
        let n = opts.partition_count(&meta)?;
        if n == 0 {
            return Err(KafkaFailure::NoTopic { topic: opts.topic.clone(), brokers: opts.brokers.clone() });
        }
        let clocks = (0..n as usize)
            .map(|p| {
                Clock::with_frontier(
                    opts.tick_ms,
                    opts.lateness_ms,
                    opts.clamp_late,
                    frontiers.get(p).copied().unwrap_or(0),
                )
            })
            .collect();
        Ok(KafkaSink { opts, producer, meta, clocks: Mutex::new(clocks), in_flight: InFlight::default() })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &KafkaOptions {
        &self.opts
    }

    /// What this sink has produced and its readers not yet read (give it to the readers).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// Partitions of the topic as last seen (at connect or [`KafkaSink::refresh_partitions`]).
    pub fn partitions(&self) -> u32 {
        self.clocks.lock().map(|c| c.len() as u32).unwrap_or(0)
    }

    /// Looks for added partitions (blocking; call off the async threads).
    pub fn refresh_partitions(&self) -> Result<u32, KafkaFailure> {
        let n = self.opts.partition_count(&self.meta)?;
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        while clocks.len() < n as usize {
            clocks.push(Clock::new(self.opts.tick_ms, self.opts.lateness_ms, self.opts.clamp_late));
        }
        Ok(clocks.len() as u32)
    }

    /// Low and high watermarks per partition (blocking).
    pub fn watermarks(&self) -> Vec<Option<(u64, u64)>> {
        (0..self.partitions())
            .map(|p| {
                self.meta
                    .fetch_watermarks(&self.opts.topic, p as i32, Timeout::After(Duration::from_millis(500)))
                    .ok()
                    .map(|(l, h)| (l.max(0) as u64, h.max(0) as u64))
            })
            .collect()
    }

    /// Stamps the events with logical times and produces one message per partition;
    /// returns once the broker has acknowledged every message (or fails:
    /// nothing is then acknowledged to the client, and a retry with the same `batch_id`
    /// is kept once).
    ///
    /// One message per partition, not per device: a broker stores and serves each
    /// message as a unit (tansu: one SQL row), so a request of events from 125 devices
    /// cost 125 rows; the reader takes records of any mix of devices.
    pub async fn append(
        &self,
        batch_id: impl AsRef<str>,
        events: Vec<Envelope>,
        now_ms: i64,
    ) -> Result<Appended, KafkaFailure> {
        let batch_id = batch_id.as_ref();
        let mut out = Appended::default();
        let n = self.partitions();
        let mut pending = Vec::new();
        {
            // Stamp and enqueue under the lock, so that records enter each partition in
            // the order of their frontiers.
            let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
            // Events are stamped in the order they came (as the embedded log does), then
            // grouped into one record per partition.
            let cap = now_ms.saturating_add(self.opts.max_skew_ms as i64);
            let mut by_part: BTreeMap<u32, Vec<Envelope>> = BTreeMap::new();
            let mut advanced: Vec<bool> = vec![false; n as usize];
            for mut e in events {
                let p = partition_of(&e.project, &e.device_id, n);
                let clock = &mut clocks[p as usize];
                if !std::mem::replace(&mut advanced[p as usize], true) {
                    clock.advance_idle(now_ms.saturating_sub(self.opts.idle_timeout_ms as i64));
                }
                if e.ts > cap {
                    out.future += 1;
                }
                match clock.stamp_capped(e.ts, cap) {
                    Stamp::OnTime(t) => e.logical_time = t,
                    Stamp::Clamped(t) => {
                        e.logical_time = t;
                        out.clamped += 1;
                    }
                    Stamp::Dropped => {
                        out.dropped += 1;
                        continue;
                    }
                }
                out.events += 1;
                out.visible_at = out.visible_at.max(e.logical_time);
                by_part.entry(p).or_default().push(e);
            }
            // One record per partition, announcing the partition's frontier after the
            // whole batch (its events are all stamped at or after the frontier before).
            for (p, kept) in by_part {
                let mut devices: Vec<(&str, &str)> =
                    kept.iter().map(|e| (e.project.as_str(), e.device_id.as_str())).collect();
                devices.sort_unstable();
                devices.dedup();
                let (project, device) = devices[0];
                // The same request retried gives the same key; the same batch id from
                // other devices is another batch. One device keeps the key it had when
                // records were per device, so a retry across an upgrade is still dropped.
                let key = if devices.len() == 1 {
                    crate::log::batch_key(project, device, batch_id)
                } else {
                    let all: Vec<String> = devices.iter().map(|(p, d)| format!("{p}\u{0}{d}")).collect();
                    crate::log::batch_key(project, &all.join("\u{1}"), batch_id)
                };
                let message_key = if devices.len() == 1 { device.to_string() } else { project.to_string() };
                let batch_id = if batch_id.is_empty() { String::new() } else { format!("{key:032x}") };
                let record = LogRecord {
                    frontier: clocks[p as usize].frontier(),
                    batch_id,
                    events: kept,
                    appended_at_ms: now_ms,
                };
                let least = record.events.iter().map(|e| e.logical_time).min().unwrap_or(record.frontier);
                let id = self.in_flight.add(p, least);
                let value = encode_record(&record);
                let msg = FutureRecord::to(&self.opts.topic)
                    .partition(p as i32)
                    .key(message_key.as_bytes())
                    .payload(&value)
                    .timestamp(now_ms);
                match self.producer.send_result(msg) {
                    Ok(fut) => pending.push((p, id, fut)),
                    Err((e, _)) => {
                        self.in_flight.failed(id);
                        for (_, id, _) in &pending {
                            self.in_flight.failed(*id);
                        }
                        return Err(KafkaFailure::Produce(format!("cannot enqueue for partition {p}: {e}")));
                    }
                }
            }
        }
        let mut failure = None;
        for (p, id, fut) in pending {
            match fut.await {
                Ok(Ok(delivery)) => self.in_flight.delivered(id, delivery.offset.max(0) as u64),
                Ok(Err((e, _))) => {
                    self.in_flight.failed(id);
                    failure.get_or_insert(KafkaFailure::Produce(format!("partition {p}: {e}")));
                }
                Err(_) => {
                    self.in_flight.failed(id);
                    failure.get_or_insert(KafkaFailure::Produce(format!("partition {p}: the producer was dropped")));
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(out),
        }
    }
}

/// Creates the topic with `partitions` partitions (replication 1); an existing topic is
/// left as it is.
pub fn create_topic(opts: &KafkaOptions, partitions: i32) -> Result<(), KafkaFailure> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<Quiet> =
        opts.base().create_with_context(Quiet::default()).map_err(|source: KafkaError| KafkaFailure::Client {
            brokers: opts.brokers.clone(),
            reason: source.to_string(),
        })?;
    let topic = NewTopic::new(&opts.topic, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(
        admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))),
    )
    .map_err(|source: KafkaError| KafkaFailure::Metadata {
        topic: opts.topic.clone(),
        brokers: opts.brokers.clone(),
        reason: source.to_string(),
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaFailure::Produce(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Resolves where reading starts, per partition.
pub fn resolve_start(opts: &KafkaOptions, start: &StartAt) -> Result<Vec<(u32, u64)>, KafkaFailure> {
    let consumer = opts.consumer()?;
    let n = opts.partition_count(&consumer)?;
    if n == 0 {
        return Err(KafkaFailure::NoTopic { topic: opts.topic.clone(), brokers: opts.brokers.clone() });
    }
    let marks = |p: u32| -> Result<(u64, u64), KafkaFailure> {
        consumer
            .fetch_watermarks(&opts.topic, p as i32, Timeout::After(Duration::from_secs(10)))
            .map(|(l, h)| (l.max(0) as u64, h.max(0) as u64))
            .map_err(|source: KafkaError| KafkaFailure::Offsets {
                topic: opts.topic.clone(),
                reason: source.to_string(),
            })
    };
    match start {
        StartAt::Earliest => (0..n).map(|p| Ok((p, marks(p)?.0))).collect(),
        StartAt::Latest => (0..n).map(|p| Ok((p, marks(p)?.1))).collect(),
        StartAt::Offsets(list) => (0..n)
            .map(|p| match list.iter().find(|(q, _)| *q == p) {
                Some((_, o)) => Ok((p, *o)),
                None => Ok((p, marks(p)?.0)),
            })
            .collect(),
        StartAt::Time(ms) => offsets_at(opts, &consumer, n, *ms),
    }
}

/// Per partition, the offset of the first message at or after `ms` (the end when none).
pub fn offsets_for_time(opts: &KafkaOptions, ms: i64) -> Result<Vec<(u32, u64)>, KafkaFailure> {
    let consumer = opts.consumer()?;
    let n = opts.partition_count(&consumer)?;
    offsets_at(opts, &consumer, n, ms)
}

/// The high watermark of every partition: where "the end, now" is.
pub fn end_offsets(opts: &KafkaOptions) -> Result<Vec<(u32, u64)>, KafkaFailure> {
    resolve_start(opts, &StartAt::Latest)
}

fn offsets_at(opts: &KafkaOptions, consumer: &Client, n: u32, ms: i64) -> Result<Vec<(u32, u64)>, KafkaFailure> {
    let fail = |source: KafkaError| KafkaFailure::Offsets { topic: opts.topic.clone(), reason: source.to_string() };
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(&opts.topic, p as i32, Offset::Offset(ms)).map_err(fail)?;
    }
    let found = consumer.offsets_for_times(tpl, Timeout::After(Duration::from_secs(10))).map_err(fail)?;
    let mut out = Vec::with_capacity(n as usize);
    for p in 0..n {
        let (low, high) =
            consumer.fetch_watermarks(&opts.topic, p as i32, Timeout::After(Duration::from_secs(10))).map_err(fail)?;
        let (low, high) = (low.max(0) as u64, high.max(0) as u64);
        let mut offset = match found.find_partition(&opts.topic, p as i32).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => (o as u64).clamp(low, high),
            _ => high,
        };
        // Some brokers (tansu 0.6) answer the earliest offset when no message is that
        // recent: check the message there.
        if offset == low && offset < high && timestamp_at(opts, p, offset)?.is_some_and(|t| t < ms) {
            offset = high;
        }
        out.push((p, offset));
    }
    Ok(out)
}

/// The timestamp of the message at `offset` of partition `p`.
fn timestamp_at(opts: &KafkaOptions, p: u32, offset: u64) -> Result<Option<i64>, KafkaFailure> {
    let consumer = opts.consumer()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&opts.topic, p as i32, Offset::Offset(offset as i64)).map_err(|source: KafkaError| {
        KafkaFailure::Offsets { topic: opts.topic.clone(), reason: source.to_string() }
    })?;
    consumer.assign(&tpl).map_err(|source: KafkaError| KafkaFailure::Offsets {
        topic: opts.topic.clone(),
        reason: source.to_string(),
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() as u32 == p && m.offset() >= offset as i64 => {
                return Ok(m.timestamp().to_millis());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

pub use crate::source::PartitionPosition;

struct Part {
    start: u64,
    next: u64,
    /// Exclusive end (finite readers).
    end: Option<u64>,
    frontier: u64,
    eof: bool,
    last_message: Instant,
    recent: HashSet<String>,
    recent_order: VecDeque<String>,
}

impl Part {
    /// Whether a batch id was seen (and remembers it).
    fn seen(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return false;
        }
        if self.recent.contains(id) {
            return true;
        }
        self.recent.insert(id.to_string());
        self.recent_order.push_back(id.to_string());
        if self.recent_order.len() > RECENT_BATCHES
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        false
    }

    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct KafkaBatch {
    /// `(logical time, envelope)` of every event read.
    pub events: Vec<(u64, Envelope)>,
    /// Sightflow records read (messages that decoded, duplicates included).
    pub records: usize,
    /// Bytes of message values read, garbage included.
    pub bytes: usize,
    /// Messages that are not sightflow records (skipped).
    pub garbage: usize,
    /// Retried batches skipped.
    pub duplicates: usize,
    /// Events raised to their partition's frontier.
    pub clamped: usize,
}

/// Reads a set of partitions, each from a given offset, optionally up to an end.
pub struct KafkaReader {
    opts: KafkaOptions,
    consumer: Client,
    parts: BTreeMap<u32, Part>,
    /// What this process's own sink has in flight (serve), if anything.
    in_flight: Option<InFlight>,
    /// Which partitions are this reader's: `p % peers == index` (for new partitions).
    share: (usize, usize),
    /// Idle partitions follow the wall clock (live readers only).
    live: bool,
    last_error_log: Option<Instant>,
    /// Since when the consumer has only failed, and its last error.
    failing: Option<(Instant, String)>,
    last_refresh: Instant,
    /// How often a live reader looks for added partitions.
    refresh_every: Duration,
}

impl KafkaReader {
    /// A reader of `partitions` (partition, start offset, optional end offset), one
    /// worker's `share = (index, peers)` of the topic. Live readers also pick up added
    /// partitions of their share (from their beginning) and move idle partitions'
    /// frontiers with the wall clock.
    pub fn new(
        opts: KafkaOptions,
        partitions: &[(u32, u64, Option<u64>)],
        share: (usize, usize),
        live: bool,
    ) -> Result<KafkaReader, KafkaFailure> {
        let consumer = opts.consumer()?;
        let mut reader = KafkaReader {
            opts,
            consumer,
            parts: BTreeMap::new(),
            in_flight: None,
            share,
            live,
            last_error_log: None,
            failing: None,
            last_refresh: Instant::now(),
            refresh_every: Duration::from_secs(10),
        };
        reader.add(partitions)?;
        Ok(reader)
    }

    /// Idle partitions wait for what `in_flight` still has to deliver, instead of a
    /// margin of the whole produce timeout (for readers in the process that produces).
    pub fn with_in_flight(mut self, in_flight: InFlight) -> KafkaReader {
        self.in_flight = Some(in_flight);
        self
    }

    /// How often a live reader looks for added partitions (10 s unless set).
    pub fn refresh_every(mut self, every: Duration) -> KafkaReader {
        self.refresh_every = every;
        self
    }

    fn add(&mut self, partitions: &[(u32, u64, Option<u64>)]) -> Result<(), KafkaFailure> {
        let mut tpl = TopicPartitionList::new();
        for &(p, start, end) in partitions {
            if self.parts.contains_key(&p) {
                continue;
            }
            let part = Part {
                start,
                next: start,
                end,
                frontier: 0,
                eof: false,
                last_message: Instant::now(),
                recent: HashSet::new(),
                recent_order: VecDeque::new(),
            };
            if part.done() {
                self.parts.insert(p, part);
                continue;
            }
            tpl.add_partition_offset(&self.opts.topic, p as i32, Offset::Offset(start as i64)).map_err(
                |source: KafkaError| KafkaFailure::Offsets {
                    topic: self.opts.topic.clone(),
                    reason: source.to_string(),
                },
            )?;
            self.parts.insert(p, part);
        }
        if tpl.count() > 0 {
            self.consumer.incremental_assign(&tpl).map_err(|source: KafkaError| KafkaFailure::Offsets {
                topic: self.opts.topic.clone(),
                reason: source.to_string(),
            })?;
        }
        Ok(())
    }

    /// Reads up to `max` messages without blocking.
    pub fn read(&mut self, max: usize) -> KafkaBatch {
        let mut out = KafkaBatch::default();
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => {
                    self.failing = None;
                    let p = msg.partition() as u32;
                    let offset = msg.offset().max(0) as u64;
                    let Some(part) = self.parts.get_mut(&p) else { continue };
                    if part.end.is_some_and(|e| offset >= e) {
                        continue;
                    }
                    part.next = offset + 1;
                    part.eof = false;
                    part.last_message = Instant::now();
                    let value = msg.payload().unwrap_or_default();
                    out.bytes += value.len();
                    let record = match decode_record(value) {
                        Ok(r) => r,
                        Err(reason) => {
                            out.garbage += 1;
                            tracing::warn!(topic = %self.opts.topic, partition = p, offset, %reason, "skipping a malformed message");
                            continue;
                        }
                    };
                    out.records += 1;
                    if part.seen(&record.batch_id) {
                        out.duplicates += 1;
                        continue;
                    }
                    for mut e in record.events {
                        let t = e.logical_time.max(part.frontier);
                        if t > e.logical_time {
                            out.clamped += 1;
                        }
                        e.logical_time = t;
                        out.events.push((t, e));
                    }
                    part.frontier = part.frontier.max(record.frontier);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.failing = None;
                    if let Some(part) = self.parts.get_mut(&(p as u32)) {
                        part.eof = true;
                    }
                }
                Some(Err(e)) => {
                    self.failing.get_or_insert_with(|| (Instant::now(), String::new())).1 = e.to_string();
                    if self.last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(topic = %self.opts.topic, error = %e, "kafka consumer error (retrying)");
                        self.last_error_log = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        if self.live && self.last_refresh.elapsed() >= self.refresh_every {
            self.last_refresh = Instant::now();
            self.pick_up_new_partitions();
        }
        out
    }

    fn pick_up_new_partitions(&mut self) {
        let Ok(n) = self.opts.partition_count(&self.consumer) else { return };
        let (index, peers) = self.share;
        let new: Vec<(u32, u64, Option<u64>)> = (0..n)
            .filter(|p| *p as usize % peers == index && !self.parts.contains_key(p))
            .map(|p| (p, 0, None))
            .collect();
        if !new.is_empty() {
            tracing::info!(topic = %self.opts.topic, partitions = ?new.iter().map(|p| p.0).collect::<Vec<_>>(), "reading added partitions");
            if let Err(e) = self.add(&new) {
                tracing::warn!(error = %e, "cannot assign added partitions");
            }
        }
    }

    /// The reader's frontier: the least partition frontier. A live reader's idle,
    /// caught-up partition follows the wall clock `now_ms`, behind it by the idle timeout
    /// and the allowed lateness (as far behind as a producer stamps) plus a second, and
    /// never past what its own process still has in flight. Without that knowledge (the
    /// producers are elsewhere) it stays a whole produce timeout further behind, since a
    /// message may be in flight that long.
    pub fn frontier(&mut self, now_ms: i64) -> u64 {
        let idle = Duration::from_millis(self.opts.idle_timeout_ms);
        let mut behind = self.opts.idle_timeout_ms as i64 + self.opts.lateness_ms as i64 + 1000;
        if self.in_flight.is_none() {
            behind += self.opts.produce_timeout.as_millis() as i64;
        }
        let wall = tick_ceil(now_ms.saturating_sub(behind), self.opts.tick_ms);
        let mut min = u64::MAX;
        for (p, part) in self.parts.iter_mut() {
            if part.done() {
                continue;
            }
            if self.live && part.eof && part.last_message.elapsed() >= idle {
                let floor = self.in_flight.as_ref().and_then(|f| f.floor(*p, part.next)).unwrap_or(u64::MAX);
                part.frontier = part.frontier.max(wall.min(floor));
            }
            min = min.min(part.frontier);
        }
        if min == u64::MAX { 0 } else { min }
    }

    /// Whether every partition reached its end (finite readers).
    pub fn done(&self) -> bool {
        self.parts.values().all(Part::done)
    }

    /// Whether a partition reached its end (finite readers).
    pub fn partition_done(&self, partition: u32) -> bool {
        self.parts.get(&partition).is_none_or(Part::done)
    }

    /// How long the consumer has only failed, and its last error (`None` while it reads).
    pub fn failing(&self) -> Option<(Duration, String)> {
        self.failing.as_ref().map(|(since, why)| (since.elapsed(), why.clone()))
    }

    /// Whether every partition has been read to the end the broker reported last.
    pub fn caught_up(&self) -> bool {
        self.parts.values().all(|p| p.eof || p.done())
    }

    /// Where each assigned partition is, by partition.
    pub fn positions(&self) -> Vec<PartitionPosition> {
        self.parts
            .iter()
            .map(|(p, s)| PartitionPosition { partition: *p, start: s.start, next: s.next, frontier: s.frontier })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_anything_else_is_named_garbage() {
        let rec = LogRecord {
            events: vec![Envelope { device_id: "d".into(), ts: 5, logical_time: 100, ..Default::default() }],
            frontier: 100,
            batch_id: "b#d".into(),
            appended_at_ms: 7,
        };
        assert_eq!(decode_record(&encode_record(&rec)).unwrap(), rec);
        let e = decode_record(b"{\"type\": 3}").unwrap_err();
        assert_eq!(e, BadRecord::Magic { head: "{\"type\": 3}".into() });
        assert!(e.to_string().contains("not a sightflow record") && e.to_string().contains("SFL1"), "{e}");
        let e = decode_record(b"SFL1\xff\xff\xff").unwrap_err();
        assert!(matches!(e, BadRecord::Decode(_)), "{e}");
    }

    #[test]
    fn in_flight_holds_an_idle_partition_until_its_messages_are_read() {
        let f = InFlight::default();
        let a = f.add(1, 500);
        let b = f.add(1, 300);
        let c = f.add(2, 100);
        assert_eq!(f.floor(1, 0), Some(300));
        f.delivered(b, 10);
        f.delivered(a, 11);
        assert_eq!(f.floor(1, 11), Some(500), "offset 10 was read");
        assert_eq!(f.floor(1, 12), None);
        f.failed(c);
        assert_eq!(f.floor(2, 0), None, "a failed message will not come");
    }

    /// Options for topic "t" on a mock cluster: tick 100 ms, lateness 1 s.
    fn mock_options<C: rdkafka::ClientContext>(
        mock: &rdkafka::mocking::MockCluster<'_, C>,
        idempotence: bool,
    ) -> KafkaOptions {
        KafkaOptions {
            brokers: mock.bootstrap_servers(),
            topic: "t".into(),
            produce_timeout: Duration::from_secs(10),
            queue_max_kbytes: 1024,
            idempotence,
            client: BTreeMap::new(),
            tick_ms: 100,
            lateness_ms: 1000,
            clamp_late: true,
            idle_timeout_ms: 1000,
            max_skew_ms: 60_000,
        }
    }

    fn ev(device: &str, ts: i64) -> Envelope {
        Envelope { project: "demo".into(), device_id: device.into(), ts, ..Default::default() }
    }

    /// librdkafka's mock cluster: partitions a live reader was not given at start are
    /// picked up; a retried batch is read once; times never go below the frontier.
    #[test]
    fn readers_pick_up_partitions_and_drop_retried_batches() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 4, 1).unwrap();
        let opts = mock_options(&mock, false);
        let sink = KafkaSink::connect(opts.clone(), &[]).unwrap();
        assert_eq!(sink.partitions(), 4);
        let t0 = 1_795_000_000_000;
        let events: Vec<Envelope> = (0..40).map(|i| ev(&format!("d{i}"), t0 + i)).collect();
        let a = futures::executor::block_on(sink.append("b1", events.clone(), t0)).unwrap();
        assert_eq!(a.events, 40);
        // The same batch again (a client retry after a lost answer).
        futures::executor::block_on(sink.append("b1", events, t0)).unwrap();
        // The same batch id from other devices is another batch.
        let others: Vec<Envelope> = (0..10).map(|i| ev(&format!("e{i}"), t0 + 50 + i)).collect();
        futures::executor::block_on(sink.append("b1", others, t0 + 50)).unwrap();
        // A reader that starts with partition 0 only picks up 1, 2 and 3.
        let mut r = KafkaReader::new(opts, &[(0, 0, None)], (0, 1), true)
            .unwrap()
            .with_in_flight(sink.in_flight())
            .refresh_every(Duration::ZERO);
        let (mut got, mut dups) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 50 && Instant::now() < deadline {
            let b = r.read(100);
            dups += b.duplicates;
            got.extend(b.events);
            std::thread::sleep(Duration::from_millis(10));
        }
        // One message per partition and request (40 devices over 4 partitions, twice,
        // then 10 devices): not one per device.
        let messages = |r: &KafkaReader| r.positions().iter().map(|p| p.next).sum::<u64>();
        let touched = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| partition_of("demo", &format!("{prefix}{i}"), 4))
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while messages(&r) < 2 * touched("d", 40) + touched("e", 10) && Instant::now() < deadline {
            let b = r.read(100);
            dups += b.duplicates;
            got.extend(b.events);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.positions().len(), 4, "every partition is read");
        assert_eq!(messages(&r), 2 * touched("d", 40) + touched("e", 10));
        assert_eq!(got.len(), 50, "each event once");
        assert!(dups > 0, "the retried batch was seen and dropped");
        assert!(got.iter().all(|(t, e)| *t == e.logical_time && *t >= tick_ceil(e.ts, 100)));
    }

    /// A batch spanning more than the allowed lateness, with devices interleaved, is
    /// stamped in arrival order as the embedded log stamps it: nothing is late.
    #[test]
    fn a_long_batch_of_interleaved_devices_is_not_late() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let opts = mock_options(&mock, true);
        let sink = KafkaSink::connect(opts.clone(), &[]).unwrap();
        let t0 = 1_795_000_000_000;
        let events: Vec<Envelope> = (0..50).map(|i| ev(if i % 2 == 0 { "x" } else { "y" }, t0 + i * 100)).collect();
        let a = futures::executor::block_on(sink.append("b", events, t0)).unwrap();
        assert_eq!((a.events, a.clamped), (50, 0));
        let mut r = KafkaReader::new(opts, &[(0, 0, None)], (0, 1), false).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 50 && Instant::now() < deadline {
            let b = r.read(100);
            assert_eq!(b.clamped, 0, "no time below the frontier of an earlier record");
            got.extend(b.events);
        }
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|(t, e)| *t == tick_ceil(e.ts, 100)));
    }

    /// A finite source (a backfill) whose broker goes away fails once it has only failed
    /// for its give-up time, naming the partition and offset it stopped at; a live one
    /// would retry.
    #[test]
    fn a_finite_source_fails_when_the_broker_stays_down() {
        use crate::source::{KafkaSource, SourceStats};
        use sightflow_proto::source::Source;
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let opts = mock_options(&mock, false);
        let sink = KafkaSink::connect(opts.clone(), &[]).unwrap();
        let t0 = 1_795_000_000_000;
        let events: Vec<Envelope> = (0..20).map(|i| ev("d", t0 + i)).collect();
        futures::executor::block_on(sink.append("b", events, t0)).unwrap();
        // It expects more records than the topic holds, so it waits for the broker.
        let reader = KafkaReader::new(opts, &[(0, 0, Some(1_000))], (0, 1), false).unwrap();
        let stats = std::sync::Arc::new(SourceStats::default());
        let mut source =
            KafkaSource::new(reader, 0, BTreeMap::new(), true, stats.clone()).give_up_after(Duration::from_secs(1));
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < 20 && Instant::now() < deadline {
            source.poll(&mut out).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(out.len(), 20);
        mock.broker_down(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            match source.poll(&mut out) {
                Err(e) => break e,
                Ok(_) => assert!(Instant::now() < deadline, "the source never gave up"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The 20 events were one record (one append).
        assert_eq!((err.partition, err.offset), (Some(0), Some(1)), "{err}");
        assert!(err.to_string().contains("partition 0 at offset 1: the broker has not answered"), "{err}");
    }

    #[test]
    fn devices_map_to_the_same_partition_as_in_the_embedded_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log::Log::open(crate::log::LogOptions {
            dir: dir.path().to_path_buf(),
            partitions: 4,
            segment_bytes: 1 << 20,
            fsync: crate::log::FsyncPolicy::Never,
            retention_bytes: u64::MAX,
            retention_ms: i64::MAX,
            tick_ms: 100,
            lateness_ms: 1000,
            clamp_late: true,
            idle_timeout_ms: 1000,
            max_skew_ms: 60_000,
        })
        .unwrap();
        for d in 0..50 {
            let device = format!("device-{d}");
            assert_eq!(partition_of("demo", &device, 4), log.partition_of("demo", &device));
        }
        assert_eq!(partition_of("demo", "x", 0), 0);
        // Where devices land is on disk and in topics: it must never move.
        for (p, d) in [("demo", "x"), ("", ""), ("a\u{0}b", "c"), ("demo", &"d".repeat(300))] {
            assert_eq!(device_hash(p, d), xxhash_rust::xxh3::xxh3_64(format!("{p}\u{0}{d}").as_bytes()));
        }
        assert_eq!(partition_of("demo", "device-17", 4), 3);
    }
}
