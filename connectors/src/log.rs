//! The embedded event log: append-only segment files per partition, for one machine
//! with nothing else installed.
//!
//! Layout: `DIR/p{partition}/{base_offset:020}.seg`. A segment is a sequence of records
//! `[u32 length][u32 crc32][LogRecord protobuf]`; offsets count records per partition.
//! Events are partitioned by device, so one device's events stay in order in one
//! partition. Every record carries its events' logical times (assigned here, by the
//! partition's [`Clock`]) and the partition frontier after it, so re-reading the log
//! reproduces exactly the times of the live run.
//!
//! Durability: a record is acknowledged after it is written and, with
//! [`FsyncPolicy::EveryBatch`], synced. On open, a torn record at the end of a segment
//! (a crash mid-write) is cut off: it was never acknowledged. A write that fails (a full
//! disk) leaves the partition *broken*: nothing more is appended, so nothing more is
//! acknowledged, until the torn bytes have been cut off again; readers only ever read
//! committed records, and re-read from disk after such a repair. Retried batches carry
//! the same batch id and are appended once per (project, device).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use sightflow_config::time::{Clock, Stamp};
use sightflow_proto::v1::{Envelope, LogRecord};

/// When appended records are synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement.
    EveryBatch,
    /// By a background thread at this interval; a crash of the machine (not of the
    /// process) may lose what was acknowledged since the last sync.
    Interval(Duration),
    /// Left to the operating system.
    Never,
}

/// How a log is laid out and kept.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Directory holding one subdirectory of segment files per partition.
    pub dir: PathBuf,
    /// Number of partitions (config `log.partitions`).
    pub partitions: u32,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// When appended records are synced to disk.
    pub fsync: FsyncPolicy,
    /// Oldest segments are deleted once a partition holds more than this.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_ms: i64,
    /// Logical time: tick, allowed lateness, clamp (else drop) late events.
    pub tick_ms: u64,
    /// Allowed lateness behind a partition's largest event time (ms).
    pub lateness_ms: u64,
    /// Whether late events are clamped to the frontier (else dropped).
    pub clamp_late: bool,
    /// An idle partition's frontier follows the wall clock after this long.
    pub idle_timeout_ms: u64,
    /// Event times past the server clock plus this count as that (see
    /// [`Clock::stamp_capped`]).
    pub max_skew_ms: u64,
}

/// Everything that can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("log I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record in a segment file does not check out (length, checksum or protobuf).
    #[error("log record at {path} offset {offset} is corrupt: {reason}")]
    Corrupt {
        /// The segment file.
        path: String,
        /// The record's offset in its partition.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A partition's last write failed; it refuses appends until repaired.
    #[error(
        "partition {partition} of the event log cannot be written ({reason}); nothing is accepted \
         on it until the write succeeds again"
    )]
    Broken {
        /// The partition.
        partition: u32,
        /// The failed write's error.
        reason: String,
    },
    /// A reader met a corrupt record ([`LogError::Corrupt`] with its partition).
    #[error("partition {partition} of the event log is damaged at offset {offset} ({path}): {reason}")]
    Damaged {
        /// The partition.
        partition: u32,
        /// The segment file.
        path: String,
        /// The record's offset in the partition.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io { path: path.display().to_string(), source }
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Events appended (neither dropped nor duplicates).
    pub events: usize,
    /// Late events kept at the frontier's logical time.
    pub clamped: usize,
    /// Late events dropped (the `drop` policy).
    pub dropped: usize,
    /// Devices whose share of this batch was already appended (a retry) and skipped.
    pub duplicate_partitions: usize,
    /// Events of the batch skipped as already appended.
    pub duplicate_events: usize,
    /// The largest logical time given to an accepted event (0 when none): a snapshot
    /// with `as_of` at or past it reflects every event of the batch.
    pub visible_at: u64,
    /// Events dated past the server clock plus the allowed skew (their effect on time
    /// was capped).
    pub future: usize,
}

impl Appended {
    fn add(&mut self, o: Appended) {
        self.events += o.events;
        self.clamped += o.clamped;
        self.dropped += o.dropped;
        self.duplicate_partitions += o.duplicate_partitions;
        self.duplicate_events += o.duplicate_events;
        self.visible_at = self.visible_at.max(o.visible_at);
        self.future += o.future;
    }
}

/// File operations of the log and the replay store that tests can make fail, to show
/// that a failed write (a full disk) loses nothing acknowledged.
pub(crate) mod faults {
    use std::fs::File;
    use std::io::Write;

    #[cfg(test)]
    thread_local! {
        /// Bytes the next writes may still write before they fail (`None`: no limit),
        /// and whether truncation fails too.
        pub static BUDGET: std::cell::Cell<(Option<usize>, bool)> = const { std::cell::Cell::new((None, false)) };
    }

    #[cfg(test)]
    fn disk_full() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device (injected)")
    }

    pub(crate) fn write_all(mut f: impl Write, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let (Some(left), t) = BUDGET.get() {
            if left < buf.len() {
                // A partial write, as a full disk leaves it.
                f.write_all(&buf[..left])?;
                BUDGET.set((Some(0), t));
                return Err(disk_full());
            }
            BUDGET.set((Some(left - buf.len()), t));
        }
        f.write_all(buf)
    }

    pub(crate) fn sync(f: &File) -> std::io::Result<()> {
        f.sync_data()
    }

    pub(crate) fn truncate(f: &File, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if BUDGET.get().1 {
            return Err(disk_full());
        }
        f.set_len(len)
    }
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    /// Bytes of complete records.
    bytes: u64,
    records: u64,
    newest_ms: i64,
}

#[derive(Debug)]
struct Partition {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: File,
    clock: Clock,
    /// Recent batch keys (see [`batch_key`]), for idempotent retries.
    recent: HashSet<u128>,
    recent_order: VecDeque<u128>,
    unsynced: bool,
    last_append: Instant,
    /// Set when a write failed and the segment may end in a torn record: nothing is
    /// appended until [`Log::repair`] has cut it off.
    broken: Option<String>,
    /// The last write failed (and no write has succeeded since): the partition is
    /// failing even once repaired, until [`Log::append`] or [`Log::probe`] succeeds.
    failing: Option<String>,
    /// When the failure was last logged (logged at most every 10 s).
    logged_at: Option<Instant>,
}

const RECENT_BATCHES: usize = 100_000;

/// Shared state of one partition: readers see `end` (records committed) move.
#[derive(Debug)]
struct Shared {
    partition: Mutex<Partition>,
    end: AtomicU64,
    frontier: AtomicU64,
    /// Bumped whenever bytes past the committed end were cut off: readers then drop
    /// what they buffered of the active segment.
    epoch: AtomicU64,
}

/// A failing partition, as `/health` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The partition.
    pub partition: u32,
    /// The error of its last failed write.
    pub reason: String,
}

/// The key a batch is deduplicated by: the same batch id from another project or
/// another device is another batch.
pub fn batch_key(project: &str, device: &str, batch_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(format!("{project}\u{0}{device}\u{0}{batch_id}").as_bytes())
}

/// The key of a stored record's batch id (written as 32 hex digits; any other text is
/// hashed, as older logs wrote plain ids).
fn stored_key(batch_id: &str) -> u128 {
    if batch_id.len() == 32
        && let Ok(k) = u128::from_str_radix(batch_id, 16)
    {
        return k;
    }
    xxhash_rust::xxh3::xxh3_128(batch_id.as_bytes())
}

/// Longest batch id accepted (bytes).
pub const MAX_BATCH_ID_BYTES: usize = 128;

/// Why a client's batch id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBatchId {
    /// Longer than [`MAX_BATCH_ID_BYTES`] (its length in bytes).
    #[error("the batch id is {0} bytes long, at most {MAX_BATCH_ID_BYTES} allowed")]
    TooLong(usize),
    /// Holds a space, a control or a non-ASCII byte (the byte's index).
    #[error("the batch id may hold only printable ASCII characters (no spaces); byte {0} is not")]
    NotPrintable(usize),
}

/// Checks a client's batch id: at most [`MAX_BATCH_ID_BYTES`] of printable ASCII.
pub fn check_batch_id(id: &str) -> Result<(), BadBatchId> {
    if id.len() > MAX_BATCH_ID_BYTES {
        return Err(BadBatchId::TooLong(id.len()));
    }
    if let Some(at) = id.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(BadBatchId::NotPrintable(at));
    }
    Ok(())
}

/// The log: append from ingest, read from the dataflow.
#[derive(Clone, Debug)]
pub struct Log {
    opts: Arc<LogOptions>,
    parts: Arc<Vec<Shared>>,
    appended: Arc<(Mutex<u64>, Condvar)>,
    write_errors: Arc<AtomicU64>,
    /// Appends waiting for the group commit.
    group: Arc<Mutex<Group>>,
    /// What a group commit syncs before the log's own records ([`Log::sync_first`]).
    before: Arc<std::sync::OnceLock<BeforeSync>>,
}

/// A sync another store asks the log's group commit to make first.
struct BeforeSync(Box<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for BeforeSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeSync")
    }
}

/// The group commit: one appender at a time (the leader) takes every append waiting,
/// writes them with one write and one sync per partition, and hands each its answer.
/// Concurrent requests then share a sync instead of queueing for one each. Each append
/// waits on its own slot, so a group's end wakes each of its appenders once, and the
/// next leader, instead of every waiting thread.
#[derive(Debug, Default)]
struct Group {
    waiting: Vec<Job>,
    leading: bool,
}

#[derive(Debug)]
struct Job {
    batch_id: String,
    events: Vec<Envelope>,
    now_ms: i64,
    slot: Arc<Slot>,
}

/// Where an append waits: for its answer, or for its turn to lead the next group.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    answer: Option<Result<Appended, LogError>>,
    lead: bool,
}

impl Slot {
    fn set(&self, f: impl FnOnce(&mut SlotState)) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut st);
        drop(st);
        self.ready.notify_one();
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Reads the complete records of a segment; returns them with the byte length of the
/// valid prefix (a torn tail is excluded).
fn scan_segment(path: &Path) -> Result<(Vec<LogRecord>, u64), LogError> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).map_err(|e| io(path, e))?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if pos + 8 + len > data.len() {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match LogRecord::decode(payload) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    Ok((records, pos as u64))
}

impl Log {
    /// Opens (or creates) a log, recovering each partition: a torn tail is cut off, the
    /// clock resumes at the last frontier, recent batch ids are remembered.
    pub fn open(opts: LogOptions) -> Result<Log, LogError> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| io(&opts.dir, e))?;
        let mut parts = Vec::new();
        for p in 0..opts.partitions {
            let dir = opts.dir.join(format!("p{p}"));
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let mut bases: Vec<u64> = std::fs::read_dir(&dir)
                .map_err(|e| io(&dir, e))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name().to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok())
                })
                .collect();
            bases.sort_unstable();
            let mut segments = Vec::new();
            let mut frontier = 0u64;
            let mut recent_order = VecDeque::new();
            for (i, base) in bases.iter().enumerate() {
                let path = dir.join(segment_name(*base));
                let (records, valid) = scan_segment(&path)?;
                if i + 1 == bases.len() {
                    // Cut a torn tail off the active segment.
                    let f = OpenOptions::new().write(true).open(&path).map_err(|e| io(&path, e))?;
                    f.set_len(valid).map_err(|e| io(&path, e))?;
                }
                let newest_ms = records.last().map_or(0, |r| r.appended_at_ms);
                for r in &records {
                    frontier = frontier.max(r.frontier);
                    if !r.batch_id.is_empty() {
                        recent_order.push_back(stored_key(&r.batch_id));
                        if recent_order.len() > RECENT_BATCHES {
                            recent_order.pop_front();
                        }
                    }
                }
                segments.push(Segment { base: *base, path, bytes: valid, records: records.len() as u64, newest_ms });
            }
            if segments.is_empty() {
                let path = dir.join(segment_name(0));
                File::create(&path).map_err(|e| io(&path, e))?;
                segments.push(Segment { base: 0, path, bytes: 0, records: 0, newest_ms: 0 });
            }
            let last = segments.last().expect("a segment");
            let file = OpenOptions::new().append(true).open(&last.path).map_err(|e| io(&last.path, e))?;
            let end = last.base + last.records;
            let clock = Clock::with_frontier(opts.tick_ms, opts.lateness_ms, opts.clamp_late, frontier);
            let recent = recent_order.iter().cloned().collect();
            parts.push(Shared {
                partition: Mutex::new(Partition {
                    dir,
                    segments,
                    file,
                    clock,
                    recent,
                    recent_order,
                    unsynced: false,
                    last_append: Instant::now(),
                    broken: None,
                    failing: None,
                    logged_at: None,
                }),
                end: AtomicU64::new(end),
                frontier: AtomicU64::new(frontier),
                epoch: AtomicU64::new(0),
            });
        }
        let log = Log {
            opts: Arc::new(opts),
            parts: Arc::new(parts),
            appended: Arc::new((Mutex::new(0), Condvar::new())),
            write_errors: Arc::new(AtomicU64::new(0)),
            group: Arc::new(Mutex::new(Group::default())),
            before: Arc::new(std::sync::OnceLock::new()),
        };
        if let FsyncPolicy::Interval(every) = log.opts.fsync {
            let weak = Arc::downgrade(&log.parts);
            std::thread::Builder::new()
                .name("log-fsync".into())
                .spawn(move || {
                    while let Some(parts) = weak.upgrade() {
                        for s in parts.iter() {
                            if let Ok(mut p) = s.partition.lock()
                                && p.unsynced
                                && p.broken.is_none()
                            {
                                match p.file.sync_data() {
                                    Ok(()) => p.unsynced = false,
                                    Err(e) => {
                                        tracing::error!(dir = %p.dir.display(), error = %e, "cannot sync the event log");
                                        p.broken = Some(format!("sync failed: {e}"));
                                    }
                                }
                            }
                        }
                        drop(parts);
                        std::thread::sleep(every);
                    }
                })
                .map_err(|e| io(&log.opts.dir, e))?;
        }
        Ok(log)
    }

    /// Makes every group commit (with [`FsyncPolicy::EveryBatch`]) call `sync` before it
    /// writes, and fail its appends when `sync` fails. A store whose writes must be
    /// durable before the log's (the replay store) so shares the log's group: a request
    /// waits for one group, not two. Set once; later calls are ignored.
    pub fn sync_first(&self, sync: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) {
        let _ = self.before.set(BeforeSync(Box::new(sync)));
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.opts.partitions
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// The partition of a device: its events stay in order there.
    pub fn partition_of(&self, project: &str, device: &str) -> u32 {
        crate::kafka::partition_of(project, device, self.opts.partitions)
    }

    /// Appends a batch (stamping logical times), durably per the fsync policy, and
    /// returns what happened. `batch_id` makes retries idempotent (empty: none): each
    /// device's share of a batch is one record, kept once per (project, device, batch id).
    /// A batch's records in one partition are written with one write, so they are
    /// appended all or none.
    ///
    /// Appends that arrive while another is being written wait and are then written
    /// together (group commit): each still gets its own answer, and a batch is answered
    /// only once its records are synced.
    pub fn append(&self, batch_id: &str, events: Vec<Envelope>, now_ms: i64) -> Result<Appended, LogError> {
        let slot = Arc::new(Slot::default());
        let job = Job { batch_id: batch_id.to_string(), events, now_ms, slot: slot.clone() };
        let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
        g.waiting.push(job);
        let mut lead = !g.leading;
        g.leading = true;
        drop(g);
        loop {
            if lead {
                self.lead_group();
            }
            let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(answer) = st.answer.take() {
                    return answer;
                }
                if std::mem::take(&mut st.lead) {
                    break;
                }
                st = slot.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            lead = true;
        }
    }

    /// Leads one group: takes every waiting append (the leader's own among them), writes
    /// them, answers each, and hands the lead to the first append that came meanwhile.
    fn lead_group(&self) {
        let jobs = std::mem::take(&mut self.group.lock().unwrap_or_else(|e| e.into_inner()).waiting);
        let slots: Vec<Arc<Slot>> = jobs.iter().map(|j| j.slot.clone()).collect();
        // A leader that panicked would leave every later append waiting: its group
        // gets an error instead, and the next append leads.
        let answers =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.append_jobs(jobs))).unwrap_or_else(|_| {
                slots
                    .iter()
                    .map(|_| {
                        Err(LogError::Io {
                            path: self.opts.dir.display().to_string(),
                            source: std::io::Error::other("the append failed unexpectedly (a panic); it is not acknowledged, and a retry with its batch id is kept once"),
                        })
                    })
                    .collect()
            });
        for (slot, answer) in slots.iter().zip(answers) {
            slot.set(|st| st.answer = Some(answer));
        }
        let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
        match g.waiting.first() {
            Some(next) => next.slot.set(|st| st.lead = true),
            None => g.leading = false,
        }
    }

    /// Writes a group of appends: per partition, the records of every job in order, with
    /// one write and one sync. A job whose records failed to be written in some
    /// partition gets that error (its other partitions may be appended: a retry with the
    /// same batch id skips those).
    fn append_jobs(&self, jobs: Vec<Job>) -> Vec<Result<Appended, LogError>> {
        if self.opts.fsync == FsyncPolicy::EveryBatch
            && let Some(before) = self.before.get()
            && let Err(e) = (before.0)()
        {
            let why = format!("a store synced with the log failed: {e}");
            return jobs
                .iter()
                .map(|_| {
                    Err(LogError::Io {
                        path: self.opts.dir.display().to_string(),
                        source: std::io::Error::other(why.clone()),
                    })
                })
                .collect();
        }
        let parts = self.opts.partitions as usize;
        // Per partition, per job: the job's events there, in arrival order.
        let mut by_part: Vec<Vec<(usize, Vec<Envelope>)>> = vec![Vec::new(); parts];
        let mut meta = Vec::with_capacity(jobs.len());
        for (j, job) in jobs.into_iter().enumerate() {
            meta.push((job.batch_id, job.now_ms));
            for e in job.events {
                let p = self.partition_of(&e.project, &e.device_id) as usize;
                match by_part[p].last_mut() {
                    Some((last, evs)) if *last == j => evs.push(e),
                    _ => by_part[p].push((j, vec![e])),
                }
            }
        }
        let mut answers: Vec<Result<Appended, LogError>> = meta.iter().map(|_| Ok(Appended::default())).collect();
        for (p, shares) in by_part.into_iter().enumerate() {
            if shares.is_empty() {
                continue;
            }
            let jobs_here: Vec<usize> = shares.iter().map(|(j, _)| *j).collect();
            match self.append_partition(p, &meta, shares) {
                Ok(stats) => {
                    for (j, st) in jobs_here.iter().zip(stats) {
                        if let Ok(a) = &mut answers[*j] {
                            a.add(st);
                        }
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    let mut first = Some(e);
                    for j in &jobs_here {
                        if answers[*j].is_ok() {
                            answers[*j] = Err(first
                                .take()
                                .unwrap_or_else(|| LogError::Broken { partition: p as u32, reason: reason.clone() }));
                        }
                    }
                }
            }
        }
        let (lock, cvar) = &*self.appended;
        if let Ok(mut n) = lock.lock() {
            *n += 1;
            cvar.notify_all();
        }
        answers
    }

    /// Appends the shares of a group's jobs to one partition: stamps them in order
    /// with one clock, skips retried batches, writes all records with one write, and
    /// only then moves the clock and the dedupe keys. Returns each share's stats.
    fn append_partition(
        &self,
        p: usize,
        meta: &[(String, i64)],
        shares: Vec<(usize, Vec<Envelope>)>,
    ) -> Result<Vec<Appended>, LogError> {
        let shared = &self.parts[p];
        let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
        self.repair(p as u32, shared, &mut part)?;
        let mut clock = part.clock.clone();
        let mut added: std::collections::HashSet<u128> = std::collections::HashSet::new();
        let mut new_keys: Vec<u128> = Vec::new();
        let mut records: Vec<LogRecord> = Vec::new();
        let mut all_stats = Vec::with_capacity(shares.len());
        for (j, events) in shares {
            let (batch_id, now_ms) = (meta[j].0.as_str(), meta[j].1);
            let cap = now_ms.saturating_add(self.opts.max_skew_ms as i64);
            // One record per device, in the order the devices first appear.
            let mut slot: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            let mut keys: Vec<Option<u128>> = Vec::new();
            let mut duplicate: Vec<bool> = Vec::new();
            let device_of: Vec<usize> = events
                .iter()
                .map(|e| {
                    *slot.entry((e.project.as_str(), e.device_id.as_str())).or_insert_with(|| {
                        let key = (!batch_id.is_empty()).then(|| batch_key(&e.project, &e.device_id, batch_id));
                        duplicate.push(key.is_some_and(|k| part.recent.contains(&k) || added.contains(&k)));
                        keys.push(key);
                        keys.len() - 1
                    })
                })
                .collect();
            drop(slot);
            clock.advance_idle(now_ms.saturating_sub(self.opts.idle_timeout_ms as i64));
            let before = clock.frontier();
            let mut kept: Vec<Vec<Envelope>> = vec![Vec::new(); keys.len()];
            let mut stats = Appended::default();
            // Stamped in arrival order, as they came, then grouped per device.
            for (mut e, d) in events.into_iter().zip(device_of) {
                if duplicate[d] {
                    stats.duplicate_events += 1;
                    continue;
                }
                if e.ts > cap {
                    stats.future += 1;
                }
                match clock.stamp_capped(e.ts, cap) {
                    Stamp::OnTime(t) => e.logical_time = t,
                    Stamp::Clamped(t) => {
                        e.logical_time = t;
                        stats.clamped += 1;
                    }
                    Stamp::Dropped => {
                        stats.dropped += 1;
                        continue;
                    }
                }
                stats.visible_at = stats.visible_at.max(e.logical_time);
                stats.events += 1;
                kept[d].push(e);
            }
            stats.duplicate_partitions = duplicate.iter().filter(|d| **d).count();
            let fresh: Vec<usize> = (0..keys.len()).filter(|d| !duplicate[*d]).collect();
            // Only the last record of a job may announce the frontier after it: the
            // others hold times at or after the frontier before it.
            for (i, &d) in fresh.iter().enumerate() {
                records.push(LogRecord {
                    events: std::mem::take(&mut kept[d]),
                    frontier: if i + 1 == fresh.len() { clock.frontier() } else { before },
                    batch_id: keys[d].map(|k| format!("{k:032x}")).unwrap_or_default(),
                    appended_at_ms: now_ms,
                });
                if let Some(k) = keys[d] {
                    added.insert(k);
                    new_keys.push(k);
                }
            }
            all_stats.push(stats);
        }
        if records.is_empty() {
            return Ok(all_stats);
        }
        self.write_records(p as u32, shared, &mut part, &records)?;
        // Committed: only now do the clock and the dedupe keys move.
        part.clock = clock;
        for k in new_keys {
            part.recent.insert(k);
            part.recent_order.push_back(k);
            if part.recent_order.len() > RECENT_BATCHES
                && let Some(old) = part.recent_order.pop_front()
            {
                part.recent.remove(&old);
            }
        }
        let end = part.segments.last().map_or(0, |s| s.base + s.records);
        shared.end.store(end, Ordering::Release);
        shared.frontier.store(part.clock.frontier(), Ordering::Release);
        Ok(all_stats)
    }

    /// Writes records (one write, synced per the policy). On failure the partition is
    /// left broken: its segment may end in a torn record, which [`Log::repair`] cuts off
    /// before anything else is appended.
    fn write_records(
        &self,
        partition: u32,
        shared: &Shared,
        part: &mut Partition,
        records: &[LogRecord],
    ) -> Result<(), LogError> {
        let mut buf = Vec::new();
        for record in records {
            let payload = record.encode_to_vec();
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        if part.segments.last().is_some_and(|s| s.bytes > 0 && s.bytes + buf.len() as u64 > self.opts.segment_bytes) {
            self.roll(part).map_err(|e| self.fail(partition, shared, part, e))?;
        }
        let path = part.segments.last().expect("segment").path.clone();
        let written = faults::write_all(&mut part.file, &buf).and_then(|()| match self.opts.fsync {
            FsyncPolicy::EveryBatch => faults::sync(&part.file),
            _ => Ok(()),
        });
        if let Err(e) = written {
            return Err(self.fail(partition, shared, part, io(&path, e)));
        }
        if self.opts.fsync != FsyncPolicy::EveryBatch {
            part.unsynced = true;
        }
        let seg = part.segments.last_mut().expect("segment");
        seg.bytes += buf.len() as u64;
        seg.records += records.len() as u64;
        seg.newest_ms = records.last().map_or(seg.newest_ms, |r| r.appended_at_ms);
        part.last_append = Instant::now();
        if part.failing.take().is_some() {
            tracing::warn!(partition, "the event log accepts writes again");
            part.logged_at = None;
        }
        Ok(())
    }

    /// Marks a partition broken after a failed write, tries to repair it at once, and
    /// returns the error to answer with (nothing of this append is acknowledged).
    fn fail(&self, partition: u32, shared: &Shared, part: &mut Partition, e: LogError) -> LogError {
        if part.logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::error!(partition, error = %e, "cannot write the event log; nothing is acknowledged on this partition until a write succeeds");
            part.logged_at = Some(Instant::now());
        }
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        part.broken = Some(e.to_string());
        part.failing = Some(e.to_string());
        let _ = self.repair(partition, shared, part);
        e
    }

    /// Tries failing partitions again with an empty record (no events), so that a
    /// partition nobody writes to stops failing once the disk has room again.
    pub fn probe(&self, now_ms: i64) {
        for (p, shared) in self.parts.iter().enumerate() {
            let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            if part.failing.is_none() || self.repair(p as u32, shared, &mut part).is_err() {
                continue;
            }
            let record = LogRecord {
                events: Vec::new(),
                frontier: part.clock.frontier(),
                batch_id: String::new(),
                appended_at_ms: now_ms,
            };
            if self.write_records(p as u32, shared, &mut part, &[record]).is_ok() {
                let end = part.segments.last().map_or(0, |s| s.base + s.records);
                shared.end.store(end, Ordering::Release);
            }
        }
    }

    /// Cuts a broken partition's active segment back to its committed records, so that
    /// the next record starts where the last acknowledged one ended. Fails (and the
    /// partition stays broken) while the disk refuses.
    fn repair(&self, partition: u32, shared: &Shared, part: &mut Partition) -> Result<(), LogError> {
        let Some(reason) = part.broken.clone() else { return Ok(()) };
        let seg = part.segments.last().expect("segment");
        let (path, good) = (seg.path.clone(), seg.bytes);
        let fixed = faults::truncate(&part.file, good).and_then(|()| part.file.sync_all());
        match fixed {
            Ok(()) => {
                part.broken = None;
                part.unsynced = false;
                // Readers drop anything they buffered past the committed end.
                shared.epoch.fetch_add(1, Ordering::AcqRel);
                tracing::debug!(partition, path = %path.display(), bytes = good, "event log repaired: the torn tail was cut off");
                Ok(())
            }
            Err(e) => {
                let reason = format!("{reason}; the repair failed too: {e}");
                part.broken = Some(reason.clone());
                Err(LogError::Broken { partition, reason })
            }
        }
    }

    /// Partitions that cannot be written now, and why.
    pub fn failures(&self) -> Vec<Failure> {
        self.parts
            .iter()
            .enumerate()
            .filter_map(|(p, s)| {
                let part = s.partition.lock().unwrap_or_else(|e| e.into_inner());
                part.broken
                    .clone()
                    .or_else(|| part.failing.clone())
                    .map(|reason| Failure { partition: p as u32, reason })
            })
            .collect()
    }

    /// Failed writes since the log was opened.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    fn roll(&self, part: &mut Partition) -> Result<(), LogError> {
        let last = part.segments.last().expect("segment");
        let base = last.base + last.records;
        let path = part.dir.join(segment_name(base));
        if self.opts.fsync != FsyncPolicy::Never {
            part.file.sync_data().map_err(|e| io(&last.path, e))?;
        }
        part.file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        part.segments.push(Segment { base, path, bytes: 0, records: 0, newest_ms: 0 });
        Ok(())
    }

    /// Deletes segments beyond the retention limits (never the active one, and never
    /// one with records at or after `unread[p]`, the first offset of partition `p` the
    /// engine has not read: a missing entry keeps the partition whole). Returns the
    /// number of segments deleted.
    ///
    /// Without the second rule, an engine reading a backlog older than the retention
    /// (a log written long ago, a server down for days) lost the segments ahead of its
    /// reader, silently.
    pub fn enforce_retention(&self, now_ms: i64, unread: &[u64]) -> Result<usize, LogError> {
        let mut deleted = 0;
        for (p, shared) in self.parts.iter().enumerate() {
            let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            let unread_from = unread.get(p).copied().unwrap_or(0);
            loop {
                if part.segments.len() < 2 {
                    break;
                }
                let total: u64 = part.segments.iter().map(|s| s.bytes).sum();
                let oldest = &part.segments[0];
                let too_old = now_ms - oldest.newest_ms > self.opts.retention_ms;
                if !(too_old || total > self.opts.retention_bytes) || oldest.base + oldest.records > unread_from {
                    break;
                }
                std::fs::remove_file(&oldest.path).map_err(|e| io(&oldest.path, e))?;
                part.segments.remove(0);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Advances the frontier of idle partitions to follow the wall clock, so that views
    /// keep moving when no events arrive.
    pub fn tick(&self, now_ms: i64) {
        for shared in self.parts.iter() {
            let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            if part.last_append.elapsed() >= Duration::from_millis(self.opts.idle_timeout_ms) {
                part.clock.advance_idle(now_ms.saturating_sub(self.opts.idle_timeout_ms as i64));
                shared.frontier.store(part.clock.frontier(), Ordering::Release);
            }
        }
    }

    /// Records committed per partition (the next offset to be written).
    pub fn end_offsets(&self) -> Vec<u64> {
        self.parts.iter().map(|s| s.end.load(Ordering::Acquire)).collect()
    }

    /// The earliest retained offset per partition.
    pub fn start_offsets(&self) -> Vec<u64> {
        self.parts
            .iter()
            .map(|s| s.partition.lock().map(|p| p.segments.first().map_or(0, |g| g.base)).unwrap_or(0))
            .collect()
    }

    /// Current frontier per partition.
    pub fn frontiers(&self) -> Vec<u64> {
        self.parts.iter().map(|s| s.frontier.load(Ordering::Acquire)).collect()
    }

    /// Bytes held on disk per partition.
    pub fn bytes(&self) -> Vec<u64> {
        self.parts
            .iter()
            .map(|s| s.partition.lock().map(|p| p.segments.iter().map(|g| g.bytes).sum()).unwrap_or(0))
            .collect()
    }

    /// Waits up to `timeout` for any append after the call.
    pub fn wait_for_append(&self, timeout: Duration) {
        let (lock, cvar) = &*self.appended;
        if let Ok(g) = lock.lock() {
            let _ = cvar.wait_timeout(g, timeout);
        }
    }

    /// Per partition, the offset of the first record appended at or after `ms` (the end
    /// when there is none).
    pub fn offsets_for_time(&self, ms: i64) -> Result<Vec<u64>, LogError> {
        let ends = self.end_offsets();
        let mut out = Vec::with_capacity(ends.len());
        for (p, end) in ends.iter().enumerate() {
            let mut reader = self.reader(&[(p as u32, 0)]);
            let c = &mut reader.cursors[0];
            let mut found = *end;
            while c.offset < *end {
                let Some((record, _)) = read_next(&self.parts[p], c)? else { break };
                if record.appended_at_ms >= ms {
                    found = c.offset;
                    break;
                }
                c.offset += 1;
            }
            out.push(found);
        }
        Ok(out)
    }

    /// A reader of some partitions, each starting at an offset (clamped to what is
    /// retained).
    pub fn reader(&self, partitions: &[(u32, u64)]) -> Reader {
        Reader {
            log: self.clone(),
            cursors: partitions
                .iter()
                .map(|&(p, offset)| Cursor {
                    partition: p,
                    offset,
                    file: None,
                    segment_base: u64::MAX,
                    position: 0,
                    frontier: 0,
                    epoch: 0,
                    path: PathBuf::new(),
                    file_len: 0,
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Cursor {
    partition: u32,
    /// Next record to read.
    offset: u64,
    file: Option<BufReader<File>>,
    segment_base: u64,
    position: u64,
    /// Frontier of the last record read.
    frontier: u64,
    /// The partition's repair epoch when the open segment was last positioned.
    epoch: u64,
    /// The open segment's path and its length when last looked at.
    path: PathBuf,
    file_len: u64,
}

/// Reads records of some partitions in order.
#[derive(Debug)]
pub struct Reader {
    log: Log,
    cursors: Vec<Cursor>,
}

/// What one read produced.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// `(logical time, envelope)` of every event read.
    pub events: Vec<(u64, Envelope)>,
    /// Records read.
    pub records: usize,
    /// Bytes read.
    pub bytes: usize,
    /// Every reader partition has reached the committed end.
    pub caught_up: bool,
}

impl Reader {
    /// Next offsets per partition.
    pub fn positions(&self) -> Vec<(u32, u64)> {
        self.cursors.iter().map(|c| (c.partition, c.offset)).collect()
    }

    /// The least frontier over this reader's partitions: no future record has a
    /// logical time below it. A partition read to its end follows the log's frontier
    /// (which moves with the wall clock when idle); otherwise the last record read.
    pub fn frontier(&self) -> u64 {
        self.cursors
            .iter()
            .map(|c| {
                let shared = &self.log.parts[c.partition as usize];
                if c.offset >= shared.end.load(Ordering::Acquire) {
                    shared.frontier.load(Ordering::Acquire).max(c.frontier)
                } else {
                    c.frontier
                }
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Moves past a damaged stretch of `partition` (after [`Reader::read`] reported it
    /// as corrupt): to the start of the next segment, or to the committed end when the
    /// damage is in the last one. Returns the offsets skipped, `(from, to)`.
    pub fn skip_damaged(&mut self, partition: u32) -> Option<(u64, u64)> {
        let c = self.cursors.iter_mut().find(|c| c.partition == partition)?;
        let shared = &self.log.parts[partition as usize];
        let next = {
            let part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            part.segments.iter().find(|s| s.base > c.offset).map(|s| s.base)
        };
        let to = next.unwrap_or_else(|| shared.end.load(Ordering::Acquire)).max(c.offset);
        let from = c.offset;
        c.offset = to;
        c.file = None;
        Some((from, to))
    }

    /// Reads up to `max_records` records (over all partitions).
    pub fn read(&mut self, max_records: usize) -> Result<ReadBatch, LogError> {
        let mut batch = ReadBatch { caught_up: true, ..Default::default() };
        let per = (max_records / self.cursors.len().max(1)).max(1);
        for c in &mut self.cursors {
            let shared = &self.log.parts[c.partition as usize];
            let end = shared.end.load(Ordering::Acquire);
            let mut n = 0;
            while c.offset < end && n < per {
                let record = read_next(shared, c).map_err(|e| match e {
                    LogError::Corrupt { path, offset, reason } => {
                        LogError::Damaged { partition: c.partition, path, offset, reason }
                    }
                    other => other,
                })?;
                let Some((record, bytes)) = record else { break };
                c.offset += 1;
                n += 1;
                batch.records += 1;
                batch.bytes += bytes;
                c.frontier = c.frontier.max(record.frontier);
                for e in record.events {
                    batch.events.push((e.logical_time, e));
                }
            }
            if c.offset < end {
                batch.caught_up = false;
            }
        }
        Ok(batch)
    }
}

/// Reads the record at the cursor, opening the right segment when needed. `Ok(None)`
/// means there is nothing more to read now; a sealed segment that ends before the next
/// one begins, or a record that does not check, is an error naming the offset (see
/// [`Reader::skip_damaged`]).
fn read_next(shared: &Shared, c: &mut Cursor) -> Result<Option<(LogRecord, usize)>, LogError> {
    let epoch = shared.epoch.load(Ordering::Acquire);
    if epoch != c.epoch {
        // Bytes past the committed end were cut off since this cursor last read: what it
        // buffered of them is stale (seeking drops a BufReader's buffer).
        c.epoch = epoch;
        if let Some(f) = c.file.as_mut() {
            f.seek(SeekFrom::Start(c.position)).map_err(|e| io(Path::new("log segment"), e))?;
            c.file_len = 0;
        }
    }
    loop {
        let segs: Vec<(u64, PathBuf)> = {
            let part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            part.segments.iter().map(|s| (s.base, s.path.clone())).collect()
        };
        if c.file.is_none() {
            // The segment holding `c.offset`: the last one starting at or before it.
            let Some(first) = segs.first() else { return Ok(None) };
            if c.offset < first.0 {
                c.offset = first.0; // retention removed what this reader had not read
            }
            let (base, path) = segs.iter().rev().find(|(b, _)| *b <= c.offset).cloned().expect("first <= offset");
            let f = File::open(&path).map_err(|e| io(&path, e))?;
            c.file = Some(BufReader::new(f));
            c.path = path.clone();
            c.segment_base = base;
            c.position = 0;
            c.file_len = 0;
            let sealed = segs.iter().any(|(b, _)| *b > base);
            // Skip records before the offset.
            for k in base..c.offset {
                if read_raw(c)?.is_none() {
                    if sealed {
                        return Err(LogError::Corrupt {
                            path: path.display().to_string(),
                            offset: k,
                            reason: "the sealed segment ends before this record".into(),
                        });
                    }
                    c.file = None;
                    return Ok(None);
                }
            }
        }
        match read_raw(c)? {
            Some((payload, bytes)) => {
                let record = LogRecord::decode(payload.as_slice()).map_err(|e| LogError::Corrupt {
                    path: c.path.display().to_string(),
                    offset: c.offset,
                    reason: e.to_string(),
                })?;
                return Ok(Some((record, bytes)));
            }
            None => {
                // End of this segment: go on with the next one, which must start where
                // this one ended.
                let Some((next, _)) = segs.iter().find(|(b, _)| *b > c.segment_base).cloned() else {
                    return Ok(None);
                };
                if c.offset < next {
                    return Err(LogError::Corrupt {
                        path: c.path.display().to_string(),
                        offset: c.offset,
                        reason: format!("the sealed segment ends before the next segment begins (at offset {next})"),
                    });
                }
                c.file = None;
            }
        }
    }
}

/// Reads the record at the cursor's position: `None` at the end of the written bytes
/// (a record not wholly there is not read: its length is checked against the file
/// before anything is allocated).
fn read_raw(c: &mut Cursor) -> Result<Option<(Vec<u8>, usize)>, LogError> {
    let path = c.path.clone();
    let f = c.file.as_mut().expect("open segment");
    let mut head = [0u8; 8];
    match f.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // Nothing more yet: come back later from the same position.
            f.seek(SeekFrom::Start(c.position)).map_err(|e| io(&path, e))?;
            return Ok(None);
        }
        Err(e) => return Err(io(&path, e)),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if c.position + 8 + len > c.file_len {
        c.file_len = f.get_ref().metadata().map_err(|e| io(&path, e))?.len();
        if c.position + 8 + len > c.file_len {
            f.seek(SeekFrom::Start(c.position)).map_err(|e| io(&path, e))?;
            return Ok(None);
        }
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = f.read_exact(&mut payload) {
        f.seek(SeekFrom::Start(c.position)).map_err(|e| io(&path, e))?;
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(None);
        }
        return Err(io(&path, e));
    }
    if crc32fast::hash(&payload) != crc {
        f.seek(SeekFrom::Start(c.position)).map_err(|e| io(&path, e))?;
        return Err(LogError::Corrupt {
            path: path.display().to_string(),
            offset: c.offset,
            reason: "checksum mismatch".into(),
        });
    }
    c.position += 8 + len;
    Ok(Some((payload, 8 + len as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightflow_proto::v1::Activity;
    use sightflow_proto::v1::envelope::Kind;
    use std::io::Write;

    fn opts(dir: &Path) -> LogOptions {
        LogOptions {
            dir: dir.to_path_buf(),
            partitions: 2,
            segment_bytes: 400,
            fsync: FsyncPolicy::EveryBatch,
            retention_bytes: u64::MAX,
            retention_ms: i64::MAX,
            tick_ms: 100,
            lateness_ms: 1000,
            clamp_late: true,
            idle_timeout_ms: 1000,
            max_skew_ms: 500,
        }
    }

    fn ev(device: &str, ts: i64) -> Envelope {
        Envelope {
            project: "p".into(),
            device_id: device.into(),
            ts,
            kind: Some(Kind::Activity(Activity::default())),
            ..Default::default()
        }
    }

    fn read_all(log: &Log) -> Vec<(u64, String, i64)> {
        let parts: Vec<(u32, u64)> = (0..log.partitions()).map(|p| (p, 0)).collect();
        let mut r = log.reader(&parts);
        let mut out = Vec::new();
        loop {
            let b = r.read(1000).unwrap();
            out.extend(b.events.into_iter().map(|(t, e)| (t, e.device_id, e.ts)));
            if b.caught_up {
                break;
            }
        }
        out.sort();
        out
    }

    const T: i64 = 1_795_000_000_000;

    #[test]
    fn concurrent_appends_are_committed_together_and_answered_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.segment_bytes = 1 << 20;
        let log = Log::open(o).unwrap();
        // Threads t and t + 4 send the same batches at the same time, so that a batch and
        // its copy can land in one group: exactly one of them may be appended.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    for i in 0..25 {
                        let k = t % 4;
                        let batch = vec![ev(&format!("d{k}-{}", i % 3), T + i), ev(&format!("x{k}"), T + i)];
                        let first = log.append(&format!("b{k}.{i}"), batch.clone(), T + i).unwrap();
                        let retry = log.append(&format!("b{k}.{i}"), batch, T + i).unwrap();
                        assert_eq!(retry.events, 0, "a retry after an answer is always skipped");
                        answers.push(((k, i), first.events + retry.events));
                    }
                    answers
                })
            })
            .collect();
        let mut appended: BTreeMap<(i64, i64), usize> = BTreeMap::new();
        for t in threads {
            for (key, n) in t.join().unwrap() {
                *appended.entry(key).or_default() += n;
            }
        }
        assert_eq!(appended.len(), 100);
        assert!(appended.values().all(|n| *n == 2), "each batch's two events once: {appended:?}");
        assert_eq!(read_all(&log).len(), 4 * 25 * 2, "every batch once");
        assert_eq!(log.end_offsets().iter().sum::<u64>(), 4 * 25 * 2, "one record per device and batch");
    }

    #[test]
    fn a_store_synced_first_fails_the_group_and_nothing_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        let (calls, fail) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let (c, f) = (calls.clone(), fail.clone());
        log.sync_first(move || {
            c.fetch_add(1, Ordering::Relaxed);
            if f.load(Ordering::Relaxed) { Err(std::io::Error::other("replay disk gone")) } else { Ok(()) }
        });
        log.append("b1", vec![ev("a", T)], T).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1, "synced before the group's records");
        fail.store(true, Ordering::Relaxed);
        let e = log.append("b2", vec![ev("a", T + 1)], T + 1).unwrap_err();
        assert!(e.to_string().contains("replay disk gone"), "{e}");
        fail.store(false, Ordering::Relaxed);
        assert_eq!(read_all(&log).len(), 1, "the failed group wrote nothing");
        log.append("b2", vec![ev("a", T + 1)], T + 1).unwrap();
        assert_eq!(read_all(&log).len(), 2, "its retry is kept");
    }

    #[test]
    fn appends_read_back_with_logical_times_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        for i in 0..30 {
            log.append(&format!("b{i}"), vec![ev("a", T + i * 50), ev("b", T + i * 50 + 1)], T + i * 50 + 1).unwrap();
        }
        let got = read_all(&log);
        assert_eq!(got.len(), 60);
        assert!(got.iter().all(|(t, _, ts)| *t == sightflow_config::time::tick_ceil(*ts, 100)));
        let segs = std::fs::read_dir(dir.path().join(format!("p{}", log.partition_of("p", "a")))).unwrap().count();
        assert!(segs > 1, "small segments roll");
        assert_eq!(log.end_offsets().iter().sum::<u64>(), 60, "one record per partition per batch");
    }

    #[test]
    fn late_events_are_clamped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        log.append("", vec![ev("a", T + 10_000)], T + 10_000).unwrap();
        let a = log.append("", vec![ev("a", T)], T + 10_000).unwrap();
        assert_eq!(a.clamped, 1);
        // Sorted by logical time: the late event sits at the frontier, before the first.
        let got = read_all(&log);
        assert_eq!(got[0], (sightflow_config::time::tick_ceil(T + 9_000, 100), "a".into(), T));
        assert_eq!(got[1], (T as u64 + 10_000, "a".into(), T + 10_000));
    }

    #[test]
    fn reopening_cuts_a_torn_tail_and_remembers_batches_and_frontiers() {
        let dir = tempfile::tempdir().unwrap();
        let p;
        {
            let log = Log::open(opts(dir.path())).unwrap();
            p = log.partition_of("p", "a");
            log.append("one", vec![ev("a", T)], T).unwrap();
            log.append("two", vec![ev("a", T + 5_000)], T + 5_000).unwrap();
        }
        // A crash in the middle of writing a third record.
        let seg =
            std::fs::read_dir(dir.path().join(format!("p{p}"))).unwrap().map(|e| e.unwrap().path()).max().unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let log = Log::open(opts(dir.path())).unwrap();
        assert_eq!(log.end_offsets()[p as usize], 2);
        assert_eq!(log.frontiers()[p as usize], sightflow_config::time::tick_ceil(T + 4_000, 100));
        // A retried batch is not appended again; a new one is.
        assert_eq!(log.append("two", vec![ev("a", T + 5_000)], T + 5_000).unwrap().duplicate_partitions, 1);
        log.append("three", vec![ev("a", T + 6_000)], T + 6_000).unwrap();
        assert_eq!(read_all(&log).len(), 3);
    }

    #[test]
    fn offsets_for_a_time_find_the_first_record_appended_then() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        for i in 0..10 {
            log.append(&format!("b{i}"), vec![ev("a", T + i * 50)], T + i * 1000).unwrap();
        }
        let p = log.partition_of("p", "a") as usize;
        assert_eq!(log.offsets_for_time(T + 4000).unwrap()[p], 4);
        assert_eq!(log.offsets_for_time(T + 3500).unwrap()[p], 4);
        assert_eq!(log.offsets_for_time(0).unwrap()[p], 0);
        assert_eq!(log.offsets_for_time(T + 99_000).unwrap()[p], 10, "past the last record: the end");
        assert_eq!(log.offsets_for_time(T).unwrap()[1 - p], 0, "an empty partition: its end");
    }

    #[test]
    fn idle_partitions_follow_the_wall_clock_and_readers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.idle_timeout_ms = 0;
        let log = Log::open(o).unwrap();
        let mut r = log.reader(&[(0, 0), (1, 0)]);
        log.tick(T);
        r.read(10).unwrap();
        assert_eq!(r.frontier(), sightflow_config::time::tick_ceil(T - 1000, 100));
    }

    #[test]
    fn retention_deletes_old_segments_but_never_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.partitions = 1;
        o.retention_bytes = 600;
        let log = Log::open(o).unwrap();
        for i in 0..20 {
            log.append("", vec![ev("a", T + i)], T).unwrap();
        }
        let before = log.bytes()[0];
        // Nothing the engine has not read goes.
        assert_eq!(log.enforce_retention(T, &[]).unwrap(), 0);
        assert_eq!(log.enforce_retention(T, &[0]).unwrap(), 0);
        assert_eq!(log.start_offsets()[0], 0);
        // As the engine reads on, segments behind it go, never one ahead of it.
        let (mut deleted, mut first_at) = (0, None);
        for read in 1..=20 {
            let d = log.enforce_retention(T, &[read]).unwrap();
            assert!(log.start_offsets()[0] <= read, "read up to {read}: kept from {}", log.start_offsets()[0]);
            if d > 0 && first_at.is_none() {
                first_at = Some(read);
            }
            deleted += d;
        }
        assert!(first_at.is_some_and(|r| r > 1), "the first segment went once it was read: {first_at:?}");
        assert!(deleted > 0 && log.bytes()[0] <= 600 && log.bytes()[0] < before);
        assert!(log.start_offsets()[0] > 0);
        // A reader from offset 0 starts at the oldest retained record.
        let mut r = log.reader(&[(0, 0)]);
        let b = r.read(100).unwrap();
        assert_eq!(b.records as u64, 20 - log.start_offsets()[0]);
    }

    fn ev_in(project: &str, device: &str, ts: i64) -> Envelope {
        Envelope { project: project.into(), ..ev(device, ts) }
    }

    /// The disk fills in the middle of a record, then refuses even the repair, then
    /// frees up: nothing is acknowledged while broken, the reader never stalls on the
    /// torn bytes it may have buffered, and every acknowledged event is read back, live
    /// and after reopening.
    #[test]
    fn a_full_disk_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.partitions = 1;
        o.segment_bytes = 1 << 20;
        let log = Log::open(o.clone()).unwrap();
        let mut reader = log.reader(&[(0, 0)]);
        let mut acked = Vec::new();
        for i in 0..5 {
            log.append(&format!("a{i}"), vec![ev("a", T + i)], T).unwrap();
            acked.push(T + i);
        }
        assert_eq!(reader.read(100).unwrap().events.len(), 5);
        // 20 bytes left: the next record is torn.
        faults::BUDGET.set((Some(20), true));
        let e = log.append("b0", vec![ev("a", T + 10)], T).unwrap_err();
        assert!(e.to_string().contains("no space left"), "{e}");
        assert_eq!(log.failures().len(), 1);
        // Still full, and the torn tail cannot be cut: refused, not acknowledged.
        let e = log.append("b1", vec![ev("a", T + 11)], T).unwrap_err();
        assert!(matches!(e, LogError::Broken { partition: 0, .. }), "{e}");
        assert_eq!(reader.read(100).unwrap().events.len(), 0, "nothing committed to read");
        assert_eq!(log.end_offsets(), vec![5]);
        // Room to cut the torn tail, but not for more: still failing.
        faults::BUDGET.set((Some(0), false));
        assert!(log.append("b1", vec![ev("a", T + 11)], T).is_err());
        log.probe(T);
        assert_eq!(log.failures().len(), 1, "repaired, but not yet writable");
        // Space again: a probe finds it, and the next append is acknowledged.
        faults::BUDGET.set((None, false));
        log.probe(T);
        assert!(log.failures().is_empty());
        log.append("b2", vec![ev("a", T + 12)], T).unwrap();
        acked.push(T + 12);
        assert!(log.failures().is_empty());
        assert_eq!(log.write_errors(), 3);
        let b = reader.read(100).unwrap();
        assert_eq!(b.events.iter().map(|(_, e)| e.ts).collect::<Vec<_>>(), vec![T + 12]);
        // The retry of a refused batch is a new batch (it was never appended).
        log.append("b0", vec![ev("a", T + 10)], T).unwrap();
        acked.push(T + 10);
        let got: Vec<i64> = read_all(&log).into_iter().map(|(_, _, ts)| ts).collect();
        let mut want = acked.clone();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want);
        drop(reader);
        drop(log);
        let log = Log::open(o).unwrap();
        let mut again: Vec<i64> = read_all(&log).into_iter().map(|(_, _, ts)| ts).collect();
        again.sort();
        assert_eq!(again, want, "after reopening");
    }

    /// A reader that buffered the torn bytes of a failed write reads the record written
    /// over them after the repair, not the stale bytes.
    #[test]
    fn readers_drop_torn_bytes_they_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.partitions = 1;
        o.segment_bytes = 1 << 20;
        let log = Log::open(o).unwrap();
        let mut reader = log.reader(&[(0, 0)]);
        log.append("", vec![ev("a", T)], T).unwrap();
        faults::BUDGET.set((Some(30), false));
        assert!(log.append("", vec![ev("a", T + 1)], T).is_err());
        faults::BUDGET.set((None, false));
        // The reader reads the committed record; its buffer may hold the torn bytes.
        assert_eq!(reader.read(10).unwrap().events.len(), 1);
        log.append("", vec![ev("zzzz", T + 2)], T).unwrap();
        let b = reader.read(10).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].1.device_id, "zzzz");
    }

    #[test]
    fn batch_ids_are_scoped_by_project_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        assert_eq!(log.append("1", vec![ev_in("p", "a", T)], T).unwrap().events, 1);
        let b = log.append("1", vec![ev_in("q", "a", T)], T).unwrap();
        assert_eq!((b.events, b.duplicate_partitions), (1, 0), "another project's batch 1");
        let c = log.append("1", vec![ev_in("p", "b", T)], T).unwrap();
        assert_eq!((c.events, c.duplicate_partitions), (1, 0), "another device's batch 1");
        // A retry of a batch of two devices where one device's share is a repeat.
        let d = log.append("1", vec![ev_in("p", "a", T), ev_in("p", "c", T)], T).unwrap();
        assert_eq!((d.events, d.duplicate_events), (1, 1));
        assert_eq!(read_all(&log).len(), 4);
        assert_eq!(check_batch_id(&"x".repeat(MAX_BATCH_ID_BYTES + 1)), Err(BadBatchId::TooLong(129)));
        assert_eq!(check_batch_id("a b"), Err(BadBatchId::NotPrintable(1)));
        assert!(check_batch_id("0b1f-22").is_ok());
    }

    #[test]
    fn a_far_future_event_does_not_hide_later_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        let a = log.append("", vec![ev("a", T + 23 * 3_600_000)], T).unwrap();
        assert_eq!(a.future, 1);
        assert_eq!(a.visible_at, T as u64 + 500, "stamped at the cap, not a day ahead");
        let b = log.append("", vec![ev("a", T + 1_000)], T + 1_000).unwrap();
        assert_eq!((b.clamped, b.visible_at), (0, T as u64 + 1_000), "a present event is on time");
    }

    /// A record damaged on disk in a sealed segment is reported with its partition and
    /// offset; the reader can skip to the next segment and go on.
    #[test]
    fn damage_in_a_sealed_segment_is_named_and_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.partitions = 1;
        let log = Log::open(o.clone()).unwrap();
        for i in 0..30 {
            log.append("", vec![ev("a", T + i)], T + i).unwrap();
        }
        let mut segs: Vec<PathBuf> =
            std::fs::read_dir(dir.path().join("p0")).unwrap().map(|e| e.unwrap().path()).collect();
        segs.sort();
        assert!(segs.len() > 2);
        // Flip a byte in the middle of the first segment.
        let mut data = std::fs::read(&segs[0]).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(&segs[0], &data).unwrap();
        let mut r = log.reader(&[(0, 0)]);
        let mut got = 0;
        let mut damaged = None;
        for _ in 0..10 {
            match r.read(100) {
                Ok(b) => {
                    got += b.events.len();
                    if b.caught_up {
                        break;
                    }
                }
                Err(LogError::Damaged { partition, offset, .. }) => {
                    damaged = Some(offset);
                    assert_eq!(partition, 0);
                    let (from, to) = r.skip_damaged(0).unwrap();
                    assert!(from == offset && to > from);
                }
                Err(e) => panic!("{e}"),
            }
        }
        let at = damaged.expect("the damage was reported");
        assert!(at > 0, "records before it were read");
        assert!((20..30).contains(&got), "the rest of the log was read: {got}");
        // Reopening a log whose sealed segment is damaged works, and so does reading it.
        drop(r);
        drop(log);
        let log = Log::open(o).unwrap();
        assert!(matches!(log.reader(&[(0, 0)]).read(1000), Err(LogError::Damaged { .. }) | Ok(_)));
    }
}
