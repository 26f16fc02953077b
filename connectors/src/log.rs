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
//! (a crash mid-write) is cut off: it was never acknowledged. Retried batches carry the
//! same batch id and are appended once per partition.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
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
    pub dir: PathBuf,
    pub partitions: u32,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Oldest segments are deleted once a partition holds more than this.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_ms: i64,
    /// Logical time: tick, allowed lateness, clamp (else drop) late events.
    pub tick_ms: u64,
    pub lateness_ms: u64,
    pub clamp_late: bool,
    /// An idle partition's frontier follows the wall clock after this long.
    pub idle_timeout_ms: u64,
}

/// Everything that can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("log record at {path} offset {offset} is corrupt: {reason}")]
    Corrupt { path: String, offset: u64, reason: String },
}

fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io { path: path.display().to_string(), source }
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub events: usize,
    /// Late events kept at the frontier's logical time.
    pub clamped: usize,
    /// Late events dropped (the `drop` policy).
    pub dropped: usize,
    /// Partitions that already held this batch (a retry) and were skipped.
    pub duplicate_partitions: usize,
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
    /// Recent batch ids, for idempotent retries.
    recent: HashSet<String>,
    recent_order: VecDeque<String>,
    unsynced: bool,
    last_append: Instant,
}

const RECENT_BATCHES: usize = 100_000;

/// Shared state of one partition: readers see `end` (records committed) move.
#[derive(Debug)]
struct Shared {
    partition: Mutex<Partition>,
    end: AtomicU64,
    frontier: AtomicU64,
}

/// The log: append from ingest, read from the dataflow.
#[derive(Clone, Debug)]
pub struct Log {
    opts: Arc<LogOptions>,
    parts: Arc<Vec<Shared>>,
    appended: Arc<(Mutex<u64>, Condvar)>,
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
                        recent_order.push_back(r.batch_id.clone());
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
                }),
                end: AtomicU64::new(end),
                frontier: AtomicU64::new(frontier),
            });
        }
        let log =
            Log { opts: Arc::new(opts), parts: Arc::new(parts), appended: Arc::new((Mutex::new(0), Condvar::new())) };
        if let FsyncPolicy::Interval(every) = log.opts.fsync {
            let weak = Arc::downgrade(&log.parts);
            std::thread::Builder::new()
                .name("log-fsync".into())
                .spawn(move || {
                    while let Some(parts) = weak.upgrade() {
                        for s in parts.iter() {
                            if let Ok(mut p) = s.partition.lock()
                                && p.unsynced
                            {
                                let _ = p.file.sync_data();
                                p.unsynced = false;
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

    pub fn partitions(&self) -> u32 {
        self.opts.partitions
    }

    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// The partition of a device: its events stay in order there.
    pub fn partition_of(&self, project: &str, device: &str) -> u32 {
        crate::kafka::partition_of(project, device, self.opts.partitions)
    }

    /// Appends a batch (stamping logical times), durably per the fsync policy, and
    /// returns what happened. `batch_id` makes retries idempotent (empty: none).
    pub fn append(&self, batch_id: &str, events: Vec<Envelope>, now_ms: i64) -> Result<Appended, LogError> {
        let mut by_part: Vec<Vec<Envelope>> = vec![Vec::new(); self.opts.partitions as usize];
        for e in events {
            let p = self.partition_of(&e.project, &e.device_id);
            by_part[p as usize].push(e);
        }
        let mut out = Appended::default();
        for (p, events) in by_part.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let shared = &self.parts[p];
            let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            let key = format!("{batch_id}#{p}");
            if !batch_id.is_empty() && part.recent.contains(&key) {
                out.duplicate_partitions += 1;
                continue;
            }
            part.clock.advance_idle(now_ms.saturating_sub(self.opts.idle_timeout_ms as i64));
            let mut kept = Vec::with_capacity(events.len());
            for mut e in events {
                match part.clock.stamp(e.ts) {
                    Stamp::OnTime(t) => {
                        e.logical_time = t;
                        kept.push(e);
                    }
                    Stamp::Clamped(t) => {
                        e.logical_time = t;
                        out.clamped += 1;
                        kept.push(e);
                    }
                    Stamp::Dropped => out.dropped += 1,
                }
            }
            out.events += kept.len();
            let record = LogRecord {
                events: kept,
                frontier: part.clock.frontier(),
                batch_id: if batch_id.is_empty() { String::new() } else { key.clone() },
                appended_at_ms: now_ms,
            };
            self.write_record(&mut part, &record)?;
            if !batch_id.is_empty() {
                part.recent.insert(key.clone());
                part.recent_order.push_back(key);
                if part.recent_order.len() > RECENT_BATCHES
                    && let Some(old) = part.recent_order.pop_front()
                {
                    part.recent.remove(&old);
                }
            }
            let end = part.segments.last().map_or(0, |s| s.base + s.records);
            shared.end.store(end, Ordering::Release);
            shared.frontier.store(record.frontier, Ordering::Release);
        }
        let (lock, cvar) = &*self.appended;
        if let Ok(mut n) = lock.lock() {
            *n += 1;
            cvar.notify_all();
        }
        Ok(out)
    }

    fn write_record(&self, part: &mut Partition, record: &LogRecord) -> Result<(), LogError> {
        let payload = record.encode_to_vec();
        let mut buf = Vec::with_capacity(payload.len() + 8);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        if part.segments.last().is_some_and(|s| s.bytes > 0 && s.bytes + buf.len() as u64 > self.opts.segment_bytes) {
            self.roll(part)?;
        }
        let path = part.segments.last().expect("segment").path.clone();
        part.file.write_all(&buf).map_err(|e| io(&path, e))?;
        match self.opts.fsync {
            FsyncPolicy::EveryBatch => part.file.sync_data().map_err(|e| io(&path, e))?,
            _ => part.unsynced = true,
        }
        let seg = part.segments.last_mut().expect("segment");
        seg.bytes += buf.len() as u64;
        seg.records += 1;
        seg.newest_ms = record.appended_at_ms;
        part.last_append = Instant::now();
        Ok(())
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

    /// Deletes segments beyond the retention limits (never the active one). Returns
    /// the number of segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        for shared in self.parts.iter() {
            let mut part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if part.segments.len() < 2 {
                    break;
                }
                let total: u64 = part.segments.iter().map(|s| s.bytes).sum();
                let oldest = &part.segments[0];
                let too_old = now_ms - oldest.newest_ms > self.opts.retention_ms;
                if !(too_old || total > self.opts.retention_bytes) {
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

    /// Reads up to `max_records` records (over all partitions).
    pub fn read(&mut self, max_records: usize) -> Result<ReadBatch, LogError> {
        let mut batch = ReadBatch { caught_up: true, ..Default::default() };
        let per = (max_records / self.cursors.len().max(1)).max(1);
        for c in &mut self.cursors {
            let shared = &self.log.parts[c.partition as usize];
            let end = shared.end.load(Ordering::Acquire);
            let mut n = 0;
            while c.offset < end && n < per {
                let record = read_next(shared, c)?;
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

/// Reads the record at the cursor, opening the right segment when needed.
fn read_next(shared: &Shared, c: &mut Cursor) -> Result<Option<(LogRecord, usize)>, LogError> {
    loop {
        if c.file.is_none() {
            // Find the segment holding `c.offset` (or the first retained one after it).
            let segs: Vec<(u64, u64, PathBuf)> = {
                let part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
                part.segments.iter().map(|s| (s.base, s.records, s.path.clone())).collect()
            };
            let Some((base, _, path)) = segs.iter().find(|(b, n, _)| c.offset < b + n.max(&1)).or(segs.last()).cloned()
            else {
                return Ok(None);
            };
            if c.offset < base {
                c.offset = base; // retention removed what this reader had not read
            }
            let f = File::open(&path).map_err(|e| io(&path, e))?;
            c.file = Some(BufReader::new(f));
            c.segment_base = base;
            c.position = 0;
            // Skip records before the offset.
            let skip = c.offset - base;
            for _ in 0..skip {
                if read_raw(c, &path)?.is_none() {
                    return Ok(None);
                }
            }
        }
        let path = PathBuf::new();
        match read_raw(c, &path)? {
            Some((payload, bytes)) => {
                let record = LogRecord::decode(payload.as_slice()).map_err(|e| LogError::Corrupt {
                    path: "log".into(),
                    offset: c.offset,
                    reason: e.to_string(),
                })?;
                return Ok(Some((record, bytes)));
            }
            None => {
                // End of this segment: move to the next one if there is one.
                let next = {
                    let part = shared.partition.lock().unwrap_or_else(|e| e.into_inner());
                    part.segments.iter().any(|s| s.base > c.segment_base)
                };
                if !next {
                    return Ok(None);
                }
                c.file = None;
            }
        }
    }
}

fn read_raw(c: &mut Cursor, path: &Path) -> Result<Option<(Vec<u8>, usize)>, LogError> {
    let f = c.file.as_mut().expect("open segment");
    let mut head = [0u8; 8];
    match f.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // A record being written: come back later from the same position.
            f.seek(SeekFrom::Start(c.position)).map_err(|e| io(path, e))?;
            return Ok(None);
        }
        Err(e) => return Err(io(path, e)),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    let mut payload = vec![0u8; len];
    if let Err(e) = f.read_exact(&mut payload) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            f.seek(SeekFrom::Start(c.position)).map_err(|e| io(path, e))?;
            return Ok(None);
        }
        return Err(io(path, e));
    }
    if crc32fast::hash(&payload) != crc {
        return Err(LogError::Corrupt {
            path: path.display().to_string(),
            offset: c.offset,
            reason: "checksum mismatch".into(),
        });
    }
    c.position += 8 + len as u64;
    Ok(Some((payload, 8 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightflow_proto::v1::Activity;
    use sightflow_proto::v1::envelope::Kind;

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
    fn appends_read_back_with_logical_times_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(opts(dir.path())).unwrap();
        for i in 0..30 {
            log.append(&format!("b{i}"), vec![ev("a", T + i * 50), ev("b", T + i * 50 + 1)], T).unwrap();
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
            log.append("two", vec![ev("a", T + 5_000)], T).unwrap();
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
        assert_eq!(log.append("two", vec![ev("a", T + 5_000)], T).unwrap().duplicate_partitions, 1);
        log.append("three", vec![ev("a", T + 6_000)], T).unwrap();
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
        let deleted = log.enforce_retention(T).unwrap();
        assert!(deleted > 0 && log.bytes()[0] <= 600 && log.bytes()[0] < before);
        assert!(log.start_offsets()[0] > 0);
        // A reader from offset 0 starts at the oldest retained record.
        let mut r = log.reader(&[(0, 0)]);
        let b = r.read(100).unwrap();
        assert_eq!(b.records as u64, 20 - log.start_offsets()[0]);
    }
}
