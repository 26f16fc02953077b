//! The replay store: raw rrweb events, kept verbatim as gzip-compressed chunks appended
//! to segment files, read back chunk by chunk for the player.
//!
//! A chunk is one request's events of one tab: a binary header that names its project,
//! device, tab, batch, times and sequence numbers, then the gzip-compressed lines
//! `seq \t ts \t event-json`. Chunks are appended to `{dir}/{id:016x}.seg`, each framed as
//! `[u32 length][u32 crc32][chunk]`. When a segment is full it is sealed: synced, and its
//! index written beside it as `{id:016x}.idx`, one 64-byte entry per chunk (device hash,
//! tab hash, batch tag, first and last time, first sequence number, place, sizes) sorted
//! by device and time. The dataflow never reads this store: sessions only tell which
//! device and time range to fetch.
//!
//! Why segments: the store began as a directory per device and tab with a file per
//! chunk, and under raw rrweb traffic ext4's inode and directory allocation for those
//! took a fifth of the server's CPU (bench/README.md). Appending to one file costs a
//! write per request and no metadata.
//!
//! Finding chunks: the active segment's index is in memory. Every sealed segment's time
//! range is in memory, and its index file is searched (binary search on its entries)
//! only when that range overlaps the range asked for. A retried batch (same batch id and
//! tab) is written again; a listing keeps its last copy.
//!
//! Durability follows the log's fsync policy. With [`FsyncPolicy::EveryBatch`] a writer
//! waits for an `fdatasync` of the active segment that began after its write
//! ([`ReplayStore::sync`], a group commit shared by every writer that finished
//! meanwhile). A segment is synced before it is sealed, and a new segment's directory
//! entry before anything is written to it. A failed write leaves the segment *broken*:
//! its torn tail is cut off before the next append. The store never changes a segment it
//! opened: at start-up every segment found is sealed (an index that is missing or
//! damaged is rebuilt by reading the segment up to its first unreadable chunk) and
//! appends go to a new one. Retention deletes whole sealed segments whose newest event
//! is older than the limit. A store in the layout before segments (a directory per
//! project, device and tab, a file per chunk) is moved into segments when opened.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::log::FsyncPolicy;
use crate::log::faults;

thread_local! {
    /// One gzip compressor per thread, reset between chunks. Making one allocates and
    /// zeroes its window and hash tables (hundreds of KB), which cost more than
    /// compressing a small chunk: with a chunk per tab and request, that was a quarter of
    /// the server's time under raw rrweb traffic.
    static GZIP: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new_gzip(flate2::Compression::fast(), 15));
}

/// `text` as one gzip member (what `GzDecoder` reads back), appended to `out`.
fn gzip_into(text: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    GZIP.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        out.reserve(text.len() / 3 + 64);
        loop {
            let done = c.total_in() as usize;
            let status = c.compress_vec(&text[done..], out, flate2::FlushCompress::Finish)?;
            if status == flate2::Status::StreamEnd {
                return Ok(());
            }
            out.reserve(out.capacity().max(4096));
        }
    })
}

/// One stored raw event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The tab id, from the chunk's header.
    pub tab: String,
    /// The event's sequence number within its tab.
    pub seq: u64,
    /// The event's time (ms since the epoch).
    pub ts: i64,
    /// The event's JSON text, exactly as received.
    pub json: String,
}

/// What can go wrong with the replay store.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file operation failed.
    #[error("replay store: cannot {what} {path}: {source}")]
    Io {
        /// The operation: `create`, `write`, `sync`, `list`, `read` or `delete`.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A chunk does not check, decompress, has a bad header or line, or belongs elsewhere.
    #[error("replay chunk {path} is unreadable: {reason}")]
    Chunk {
        /// The chunk's id.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier write failed and its torn tail could not be cut off.
    #[error("replay store: segment {path} cannot be written: {reason}")]
    Broken {
        /// The segment file.
        path: String,
        /// What failed.
        reason: String,
    },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> ReplayError + 'p {
    move |source| ReplayError::Io { what, path: path.display().to_string(), source }
}

/// One stored chunk, as listed (nothing read yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Where the chunk is: `{segment}-{offset}-{length}-{tab hash}`, in hex
    /// ([`ChunkRef::from_id`] reads it back).
    pub id: String,
    /// The hash of the tab id.
    pub tab_hash: u64,
    /// Time of the chunk's first event (ms since the epoch).
    pub first_ts: i64,
    /// Time of the chunk's last event (ms since the epoch).
    pub last_ts: i64,
    /// Sequence number of the chunk's first event.
    pub first_seq: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// Bytes in the segment.
    pub stored_bytes: u64,
}

impl ChunkRef {
    /// The chunk an id names, with the sizes a listing gave; `None` when `id` is not a
    /// chunk id. The chunk's own header is checked when it is read.
    pub fn from_id(id: &str, raw_bytes: u64, stored_bytes: u64) -> Option<ChunkRef> {
        let (_, _, _, tab) = parse_id(id)?;
        Some(ChunkRef {
            id: id.to_string(),
            tab_hash: tab,
            first_ts: 0,
            last_ts: 0,
            first_seq: 0,
            raw_bytes,
            stored_bytes,
        })
    }
}

fn chunk_id(segment: u64, e: &Entry) -> String {
    format!("{segment:016x}-{:x}-{:x}-{:016x}", e.offset, e.len, e.tab)
}

fn parse_id(id: &str) -> Option<(u64, u64, u32, u64)> {
    let mut it = id.split('-');
    let segment = u64::from_str_radix(it.next().filter(|s| s.len() == 16)?, 16).ok()?;
    let offset = u64::from_str_radix(it.next().filter(|s| !s.is_empty() && s.len() <= 16)?, 16).ok()?;
    let len = u32::from_str_radix(it.next().filter(|s| !s.is_empty() && s.len() <= 8)?, 16).ok()?;
    let tab = u64::from_str_radix(it.next().filter(|s| s.len() == 16)?, 16).ok()?;
    it.next().is_none().then_some((segment, offset, len, tab))
}

fn h(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

fn device_hash(project: &str, device: &str) -> u64 {
    let mut x = xxhash_rust::xxh3::Xxh3::new();
    x.update(project.as_bytes());
    x.update(&[0]);
    x.update(device.as_bytes());
    x.digest()
}

/// One chunk in an index: 64 bytes, little-endian, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    device: u64,
    tab: u64,
    /// The batch id and tab's hash (a retry writes the same), or unique.
    tag: u64,
    first_ts: i64,
    last_ts: i64,
    first_seq: u64,
    /// Where the chunk's frame starts in its segment.
    offset: u64,
    /// The chunk's length (the frame's, without its 8 bytes of length and checksum).
    len: u32,
    /// Uncompressed bytes of the chunk's lines (capped at `u32::MAX`).
    raw: u32,
}

const ENTRY: usize = 64;

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in
            [self.device, self.tab, self.tag, self.first_ts as u64, self.last_ts as u64, self.first_seq, self.offset]
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.raw.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Entry {
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Entry {
            device: u(0),
            tab: u(1),
            tag: u(2),
            first_ts: u(3) as i64,
            last_ts: u(4) as i64,
            first_seq: u(5),
            offset: u(6),
            len: u32::from_le_bytes(b[56..60].try_into().expect("4 bytes")),
            raw: u32::from_le_bytes(b[60..64].try_into().expect("4 bytes")),
        }
    }

    fn overlaps(&self, from: i64, to: i64) -> bool {
        self.last_ts >= from && self.first_ts <= to
    }
}

/// An index file: a 64-byte header (magic, entries, newest and oldest time, checksum
/// of the header) and the entries sorted by (device, first time, offset).
const INDEX_MAGIC: &[u8; 8] = b"SFRIDX01";

fn encode_index(entries: &mut [Entry]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| (e.device, e.first_ts, e.offset));
    let (min, max) = range(entries);
    let mut out = Vec::with_capacity(ENTRY * (entries.len() + 1));
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&min.to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.resize(ENTRY, 0);
    for e in entries.iter() {
        e.encode(&mut out);
    }
    out
}

/// The header of an index file: (entries, oldest, newest), if it checks and the file has
/// exactly that many entries.
fn read_index_header(path: &Path) -> Option<(u64, i64, i64)> {
    let f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; ENTRY];
    f.read_exact_at(&mut head, 0).ok()?;
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(head[32..36].try_into().expect("4 bytes"));
    if &head[..8] != INDEX_MAGIC || crc32fast::hash(&head[..32]) != crc {
        return None;
    }
    let n = word(8);
    let len = f.metadata().ok()?.len();
    (len == ENTRY as u64 * (n + 1)).then(|| (n, word(16) as i64, word(24) as i64))
}

/// The entries of `device` in an index file of `n` entries: a binary search, then the
/// run of its entries.
fn search_index(path: &Path, n: u64, device: u64) -> std::io::Result<Vec<Entry>> {
    let f = std::fs::File::open(path)?;
    let mut buf = [0u8; ENTRY];
    let at = |i: u64, buf: &mut [u8; ENTRY]| -> std::io::Result<Entry> {
        f.read_exact_at(buf, ENTRY as u64 * (i + 1))?;
        Ok(Entry::decode(buf))
    };
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid, &mut buf)?.device < device {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut out = Vec::new();
    let mut block = vec![0u8; ENTRY * 64];
    while lo < n {
        let k = (n - lo).min(64) as usize;
        f.read_exact_at(&mut block[..k * ENTRY], ENTRY as u64 * (lo + 1))?;
        for c in block[..k * ENTRY].chunks_exact(ENTRY) {
            let e = Entry::decode(c);
            if e.device != device {
                return Ok(out);
            }
            out.push(e);
        }
        lo += k as u64;
    }
    Ok(out)
}

fn range(entries: &[Entry]) -> (i64, i64) {
    let min = entries.iter().map(|e| e.first_ts).min().unwrap_or(i64::MAX);
    let max = entries.iter().map(|e| e.last_ts).max().unwrap_or(i64::MIN);
    (min, max)
}

/// A chunk's header, as framed in its segment.
struct Header<'a> {
    project: &'a str,
    device: &'a str,
    tab: &'a str,
    tag: u64,
    first_ts: i64,
    last_ts: i64,
    first_seq: u64,
    raw: u32,
}

const CHUNK_VERSION: u8 = 1;

impl Header<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(CHUNK_VERSION);
        for s in [self.project, self.device, self.tab] {
            let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        for v in [self.tag, self.first_ts as u64, self.last_ts as u64, self.first_seq] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.raw.to_le_bytes());
    }

    /// The header and the compressed lines after it.
    fn decode(b: &[u8]) -> Result<(Header<'_>, &[u8]), String> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = b.get(at..at + n).ok_or("the header is cut short")?;
            at += n;
            Ok(s)
        };
        if take(1)?[0] != CHUNK_VERSION {
            return Err("unknown chunk version".into());
        }
        let mut text = || -> Result<&str, String> {
            let n = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            std::str::from_utf8(take(n)?).map_err(|_| "a header name is not UTF-8".to_string())
        };
        let (project, device, tab) = (text()?, text()?, text()?);
        let mut word = || -> Result<u64, String> { Ok(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"))) };
        let (tag, first_ts, last_ts, first_seq) = (word()?, word()? as i64, word()? as i64, word()?);
        let raw = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let rest = &b[at..];
        Ok((Header { project, device, tab, tag, first_ts, last_ts, first_seq, raw }, rest))
    }
}

/// A sealed segment: its time range and size in memory, its index in a file (or, when
/// the index could not be written, in memory).
#[derive(Debug)]
struct Sealed {
    id: u64,
    chunks: u64,
    min_ts: i64,
    max_ts: i64,
    in_memory: Option<Arc<Vec<Entry>>>,
}

/// The segment appends go to.
#[derive(Debug)]
struct Active {
    id: u64,
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// Bytes written and acknowledged by the file system.
    len: u64,
    entries: Vec<Entry>,
    /// An earlier write failed: its torn tail must be cut off before the next append.
    broken: Option<String>,
    unsynced: bool,
}

#[derive(Debug)]
struct State {
    active: Active,
    sealed: Vec<Sealed>,
}

/// Tickets of writers waiting for a sync, and the syncs done.
#[derive(Debug, Default)]
struct SyncGroup {
    /// The last ticket handed out.
    issued: u64,
    /// Every ticket up to this is covered by a finished sync.
    done: u64,
    syncing: bool,
    /// Recent failed syncs: the tickets each covered, and why.
    failed: std::collections::VecDeque<(u64, u64, String)>,
}

/// A segment is sealed past this many bytes (the default).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// ... or this many chunks, so that the active index stays small.
const SEGMENT_CHUNKS: usize = 200_000;

/// The replay store.
#[derive(Debug)]
pub struct ReplayStore {
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    state: Mutex<State>,
    writes: AtomicU64,
    /// The group commit of [`ReplayStore::sync`].
    group: (Mutex<SyncGroup>, std::sync::Condvar),
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn index_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.idx"))
}

/// Where a scan stopped before the end of a segment, and why.
type Stopped = Option<(u64, String)>;

/// Reads a segment's chunks up to the first one that does not check. Returns the
/// entries and, when it stopped before the end, where and why.
fn scan_segment(path: &Path) -> Result<(Vec<Entry>, Stopped), ReplayError> {
    let f = std::fs::File::open(path).map_err(io("read", path))?;
    let end = f.metadata().map_err(io("read", path))?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut entries = Vec::new();
    let mut at = 0u64;
    let mut payload = Vec::new();
    while at < end {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).is_err() {
            return Ok((entries, Some((at, "a chunk's frame is cut short".into()))));
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if at + 8 + len as u64 > end {
            return Ok((entries, Some((at, "a chunk runs past the end of the segment".into()))));
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok((entries, Some((at, "a chunk does not match its checksum".into()))));
        }
        match Header::decode(&payload) {
            Ok((hd, _)) => entries.push(Entry {
                device: device_hash(hd.project, hd.device),
                tab: h(hd.tab),
                tag: hd.tag,
                first_ts: hd.first_ts,
                last_ts: hd.last_ts,
                first_seq: hd.first_seq,
                offset: at,
                len,
                raw: hd.raw,
            }),
            Err(why) => return Ok((entries, Some((at, why)))),
        }
        at += 8 + len as u64;
    }
    Ok((entries, None))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn create_segment(dir: &Path, id: u64) -> Result<Active, ReplayError> {
    let path = segment_path(dir, id);
    let file = std::fs::OpenOptions::new().create_new(true).append(true).open(&path).map_err(io("create", &path))?;
    // The new file's name must be durable before anything written to it is acknowledged.
    sync_dir(dir).map_err(io("sync", dir))?;
    Ok(Active { id, path, file: Arc::new(file), len: 0, entries: Vec::new(), broken: None, unsynced: false })
}

/// Writes a sealed segment's index file (atomically, by rename). The index can always be
/// rebuilt from the segment, so it is not synced.
fn write_index(dir: &Path, id: u64, entries: &mut [Entry]) -> std::io::Result<()> {
    let bytes = encode_index(entries);
    let path = index_path(dir, id);
    let tmp = dir.join(format!(".{id:016x}.idx.tmp"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)
}

impl ReplayStore {
    /// A store in a local directory (created if missing), with segments of the default
    /// size.
    pub fn local(dir: &Path, fsync: FsyncPolicy) -> Result<ReplayStore, ReplayError> {
        ReplayStore::open(dir, fsync, SEGMENT_BYTES)
    }

    /// A store in a local directory (created if missing): the segments found are sealed
    /// (their indexes rebuilt where missing or damaged), chunks in the old layout are
    /// moved in, and appends go to a new segment.
    pub fn open(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> Result<ReplayStore, ReplayError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut ids = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io("list", dir))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".seg").and_then(|n| u64::from_str_radix(n, 16).ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut sealed = Vec::with_capacity(ids.len());
        for &id in &ids {
            sealed.push(Self::seal_found(dir, id)?);
        }
        let next = ids.last().map_or(1, |l| l + 1);
        let active = create_segment(dir, next)?;
        let store = ReplayStore {
            dir: dir.to_path_buf(),
            fsync,
            segment_bytes: segment_bytes.max(1),
            state: Mutex::new(State { active, sealed }),
            writes: AtomicU64::new(0),
            group: Default::default(),
        };
        legacy::migrate(&store)?;
        Ok(store)
    }

    /// A segment found at start-up, sealed: its index file if it checks, else rebuilt.
    fn seal_found(dir: &Path, id: u64) -> Result<Sealed, ReplayError> {
        let idx = index_path(dir, id);
        if let Some((n, min_ts, max_ts)) = read_index_header(&idx) {
            return Ok(Sealed { id, chunks: n, min_ts, max_ts, in_memory: None });
        }
        let seg = segment_path(dir, id);
        let (mut entries, stopped) = scan_segment(&seg)?;
        if let Some((at, why)) = stopped {
            tracing::warn!(segment = %seg.display(), offset = at, reason = %why, chunks = entries.len(), "a replay segment is readable only up to this offset; the rest is left out");
        }
        let (min_ts, max_ts) = range(&entries);
        let chunks = entries.len() as u64;
        let in_memory = match write_index(dir, id, &mut entries) {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(segment = %seg.display(), error = %e, "cannot write a replay segment's index; it is kept in memory");
                Some(Arc::new(entries))
            }
        };
        Ok(Sealed { id, chunks, min_ts, max_ts, in_memory })
    }

    /// Makes every chunk written before the call durable (with
    /// [`FsyncPolicy::EveryBatch`]; otherwise it returns at once). Callers that arrive
    /// while a sync runs wait for the next one, which covers them all.
    pub fn sync(&self) -> Result<(), ReplayError> {
        if self.fsync != FsyncPolicy::EveryBatch {
            return Ok(());
        }
        let (lock, cvar) = &self.group;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        g.issued += 1;
        let ticket = g.issued;
        loop {
            if g.done >= ticket {
                return match g.failed.iter().find(|(from, to, _)| (*from..=*to).contains(&ticket)) {
                    Some((_, _, why)) => Err(ReplayError::Io {
                        what: "sync",
                        path: self.dir.display().to_string(),
                        source: std::io::Error::other(why.clone()),
                    }),
                    None => Ok(()),
                };
            }
            if g.syncing {
                g = cvar.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.syncing = true;
            let (from, upto) = (g.done + 1, g.issued);
            drop(g);
            let synced = self.sync_active();
            g = lock.lock().unwrap_or_else(|e| e.into_inner());
            g.syncing = false;
            g.done = upto;
            if let Err(e) = synced {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot sync the replay store");
                g.failed.push_back((from, upto, e.to_string()));
                if g.failed.len() > 64 {
                    g.failed.pop_front();
                }
            }
            cvar.notify_all();
        }
    }

    /// Syncs the active segment now, without a group of its own: for a caller whose
    /// own group commit covers the writers ([`crate::log::Log::sync_first`]). Writes in
    /// a segment since sealed were synced when it was sealed.
    pub fn sync_active(&self) -> std::io::Result<()> {
        let file = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.active.unsynced {
                return Ok(());
            }
            st.active.unsynced = false;
            st.active.file.clone()
        };
        let synced = faults::sync(&file);
        if synced.is_err() {
            // Its pages may be gone: what the failed sync covered is not acknowledged, and
            // later writes go to a new segment.
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::ptr_eq(&st.active.file, &file) && st.active.broken.is_none() {
                st.active.broken = Some("a sync failed".into());
            }
        }
        synced
    }

    /// Writes one chunk of a tab's events (in order), durably: [`ReplayStore::put`]
    /// and then [`ReplayStore::sync`].
    pub fn write(
        &self,
        project: &str,
        device: &str,
        tab: &str,
        batch: Option<&str>,
        events: &[RawEvent],
    ) -> Result<u64, ReplayError> {
        let n = self.put(project, device, tab, batch, events)?;
        self.sync()?;
        Ok(n)
    }

    /// Writes one chunk of a tab's events (in order); it is durable once a
    /// [`ReplayStore::sync`] that began after it returns. `batch` names the ingest batch
    /// (its batch id and the device), so that a retry replaces the chunk in listings
    /// instead of adding a copy; without one every write is its own chunk. Returns the
    /// stored size.
    pub fn put(
        &self,
        project: &str,
        device: &str,
        tab: &str,
        batch: Option<&str>,
        events: &[RawEvent],
    ) -> Result<u64, ReplayError> {
        let tag = match batch {
            Some(b) => {
                let mut x = xxhash_rust::xxh3::Xxh3::new();
                x.update(b.as_bytes());
                x.update(&[0]);
                x.update(tab.as_bytes());
                x.digest()
            }
            None => {
                let n = self.writes.fetch_add(1, Ordering::Relaxed);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                xxhash_rust::xxh3::xxh3_64(format!("u{nanos:x}-{:x}-{n:x}", std::process::id()).as_bytes())
            }
        };
        self.put_tagged(project, device, tab, tag, events)
    }

    fn put_tagged(
        &self,
        project: &str,
        device: &str,
        tab: &str,
        tag: u64,
        events: &[RawEvent],
    ) -> Result<u64, ReplayError> {
        use std::fmt::Write as _;
        let Some(first) = events.first() else { return Ok(0) };
        let first_ts = events.iter().map(|e| e.ts).min().unwrap_or(first.ts);
        let last_ts = events.iter().map(|e| e.ts).max().unwrap_or(first.ts);
        let mut text = String::with_capacity(events.iter().map(|e| e.json.len() + 32).sum::<usize>());
        for e in events {
            let _ = write!(text, "{}\t{}\t", e.seq, e.ts);
            // One event per line: newlines inside JSON text are only ever in strings,
            // where they are escaped, so none occur here.
            text.push_str(e.json.trim());
            text.push('\n');
        }
        let raw = text.len().min(u32::MAX as usize) as u32;
        let header = Header { project, device, tab, tag, first_ts, last_ts, first_seq: first.seq, raw };
        // The frame: length and checksum, filled in once the chunk is complete.
        let mut frame = Vec::with_capacity(64 + project.len() + device.len() + tab.len() + text.len() / 3);
        frame.extend_from_slice(&[0; 8]);
        header.encode(&mut frame);
        gzip_into(text.as_bytes(), &mut frame)
            .map_err(|e| ReplayError::Chunk { path: "new chunk".into(), reason: e.to_string() })?;
        let len = frame.len() - 8;
        if len > u32::MAX as usize {
            return Err(ReplayError::Chunk { path: "new chunk".into(), reason: "larger than 4 GiB".into() });
        }
        let crc = crc32fast::hash(&frame[8..]);
        frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut entry = Entry {
            device: device_hash(project, device),
            tab: h(tab),
            tag,
            first_ts,
            last_ts,
            first_seq: first.seq,
            offset: 0,
            len: len as u32,
            raw,
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.repair(&mut st)?;
        let a = &st.active;
        if a.len > 0 && (a.len + frame.len() as u64 > self.segment_bytes || a.entries.len() >= SEGMENT_CHUNKS) {
            self.roll(&mut st)?;
        }
        let a = &mut st.active;
        entry.offset = a.len;
        if let Err(e) = faults::write_all(&*a.file, &frame) {
            a.broken = Some(format!("a write failed: {e}"));
            return Err(ReplayError::Io { what: "write", path: a.path.display().to_string(), source: e });
        }
        a.len += frame.len() as u64;
        a.entries.push(entry);
        a.unsynced = true;
        Ok(frame.len() as u64)
    }

    /// Cuts off what a failed write left at the end of the active segment, or, after a
    /// failed sync, goes on in a new segment.
    fn repair(&self, st: &mut State) -> Result<(), ReplayError> {
        let Some(reason) = st.active.broken.clone() else { return Ok(()) };
        let a = &st.active;
        let fixed = if reason.starts_with("a sync failed") {
            Err(std::io::Error::other("the segment's pages may be lost"))
        } else {
            faults::truncate(&a.file, a.len).and_then(|()| a.file.sync_all())
        };
        match fixed {
            Ok(()) => {
                st.active.broken = None;
                tracing::warn!(segment = %st.active.path.display(), "the replay store accepts writes again");
                Ok(())
            }
            Err(_) => {
                // Seal what checks and go on in a new segment.
                let path = st.active.path.display().to_string();
                self.roll(st).map_err(|e| ReplayError::Broken { path, reason: format!("{reason}; {e}") })?;
                Ok(())
            }
        }
    }

    /// Seals the active segment (synced; its index written, or kept in memory) and
    /// starts a new one.
    fn roll(&self, st: &mut State) -> Result<(), ReplayError> {
        let next = create_segment(&self.dir, st.active.id + 1)?;
        let a = &mut st.active;
        if a.broken.is_none() {
            faults::sync(&a.file).map_err(io("sync", &a.path))?;
        }
        let mut entries = std::mem::take(&mut a.entries);
        let (min_ts, max_ts) = range(&entries);
        let chunks = entries.len() as u64;
        let in_memory = match write_index(&self.dir, a.id, &mut entries) {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(segment = %a.path.display(), error = %e, "cannot write a replay segment's index; it is kept in memory");
                Some(Arc::new(entries))
            }
        };
        st.sealed.push(Sealed { id: a.id, chunks, min_ts, max_ts, in_memory });
        st.active = next;
        Ok(())
    }

    /// Syncs what was written since the last sync (the interval policy).
    pub fn sync_pending(&self) -> Result<usize, ReplayError> {
        let pending = self.state.lock().map(|s| s.active.unsynced).unwrap_or(true);
        if !pending {
            return Ok(0);
        }
        self.sync_active().map_err(io("sync", &self.dir))?;
        Ok(1)
    }

    /// Chunks of one device whose time range overlaps `[from, to]`, in time order (then
    /// tab and sequence number). A retried batch is listed once, by its last copy.
    pub fn chunks(&self, project: &str, device: &str, from: i64, to: i64) -> Result<Vec<ChunkRef>, ReplayError> {
        let dev = device_hash(project, device);
        let mut found: Vec<(u64, Entry)> = Vec::new();
        let mut on_disk: Vec<(u64, u64)> = Vec::new();
        {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for s in st.sealed.iter().filter(|s| s.max_ts >= from && s.min_ts <= to) {
                match &s.in_memory {
                    Some(entries) => found
                        .extend(entries.iter().filter(|e| e.device == dev && e.overlaps(from, to)).map(|e| (s.id, *e))),
                    None => on_disk.push((s.id, s.chunks)),
                }
            }
            let a = &st.active;
            found.extend(a.entries.iter().filter(|e| e.device == dev && e.overlaps(from, to)).map(|e| (a.id, *e)));
        }
        for (id, n) in on_disk {
            let path = index_path(&self.dir, id);
            match search_index(&path, n, dev) {
                Ok(entries) => found.extend(entries.into_iter().filter(|e| e.overlaps(from, to)).map(|e| (id, e))),
                // Retention deleted it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &path)(e)),
            }
        }
        // The last copy of each (tab, batch).
        found.sort_unstable_by_key(|(id, e)| (e.tab, e.tag, std::cmp::Reverse((*id, e.offset))));
        found.dedup_by_key(|(_, e)| (e.tab, e.tag));
        let mut out: Vec<ChunkRef> = found
            .into_iter()
            .map(|(id, e)| ChunkRef {
                id: chunk_id(id, &e),
                tab_hash: e.tab,
                first_ts: e.first_ts,
                last_ts: e.last_ts,
                first_seq: e.first_seq,
                raw_bytes: e.raw as u64,
                stored_bytes: e.len as u64 + 8,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.first_ts, a.tab_hash, a.first_seq, &a.id).cmp(&(b.first_ts, b.tab_hash, b.first_seq, &b.id))
        });
        Ok(out)
    }

    /// Reads one chunk's events (in the order written), checking that its header names
    /// this project, device and tab.
    pub fn read_chunk(&self, chunk: &ChunkRef, project: &str, device: &str) -> Result<Vec<RawEvent>, ReplayError> {
        let bad = |reason: String| ReplayError::Chunk { path: chunk.id.clone(), reason };
        let (segment, offset, len, tab_hash) = parse_id(&chunk.id).ok_or_else(|| bad("not a chunk id".into()))?;
        let path = segment_path(&self.dir, segment);
        let f = std::fs::File::open(&path).map_err(io("read", &path))?;
        let mut data = vec![0u8; 8 + len as usize];
        f.read_exact_at(&mut data, offset).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let framed = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
        if framed != len || crc32fast::hash(&data[8..]) != crc {
            return Err(bad("it does not match its checksum".into()));
        }
        let (head, gz) = Header::decode(&data[8..]).map_err(bad)?;
        if head.project != project || head.device != device {
            return Err(bad(format!(
                "its header names project {:?} and device {:?}, not {project:?} and {device:?}",
                head.project, head.device
            )));
        }
        if h(head.tab) != tab_hash {
            return Err(bad(format!("its header names tab {:?}, which is not the tab it is listed under", head.tab)));
        }
        let mut text = String::with_capacity(head.raw as usize);
        flate2::read::GzDecoder::new(gz).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
        let tab = head.tab.to_string();
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut parts = line.splitn(3, '\t');
            let (Some(seq), Some(ts), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(format!("line {} is malformed", i + 1)));
            };
            let (Ok(seq), Ok(ts)) = (seq.parse(), ts.parse()) else {
                return Err(bad(format!("line {} has no sequence number and time", i + 1)));
            };
            out.push(RawEvent { tab: tab.clone(), seq, ts, json: json.to_string() });
        }
        Ok(out)
    }

    /// Every stored event of one tab, in sequence order (to rebuild its node map).
    /// Unreadable chunks are skipped and returned.
    pub fn read_tab(
        &self,
        project: &str,
        device: &str,
        tab: &str,
    ) -> Result<(Vec<RawEvent>, Vec<ReplayError>), ReplayError> {
        let t = h(tab);
        let mut chunks: Vec<ChunkRef> =
            self.chunks(project, device, i64::MIN, i64::MAX)?.into_iter().filter(|c| c.tab_hash == t).collect();
        chunks.sort_by(|a, b| (a.first_seq, a.first_ts, &a.id).cmp(&(b.first_seq, b.first_ts, &b.id)));
        let mut events = Vec::new();
        let mut skipped = Vec::new();
        for c in &chunks {
            match self.read_chunk(c, project, device) {
                Ok(e) => events.extend(e),
                Err(e) => skipped.push(e),
            }
        }
        events.sort_by_key(|e| e.seq);
        Ok((events, skipped))
    }

    /// Deletes the sealed segments whose newest event is older than `before_ts`.
    /// Returns how many chunks they held.
    pub fn enforce_retention(&self, before_ts: i64) -> Result<usize, ReplayError> {
        let old: Vec<Sealed> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (old, keep) = std::mem::take(&mut st.sealed).into_iter().partition(|s| s.max_ts < before_ts);
            st.sealed = keep;
            old
        };
        let mut deleted = 0;
        for s in old {
            for path in [index_path(&self.dir, s.id), segment_path(&self.dir, s.id)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("delete", &path)(e)),
                }
            }
            deleted += s.chunks as usize;
        }
        Ok(deleted)
    }

    /// Where the store keeps its segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segments (sealed and active) and the chunks they hold.
    pub fn size(&self) -> (usize, u64) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.sealed.len() + 1, st.sealed.iter().map(|s| s.chunks).sum::<u64>() + st.active.entries.len() as u64)
    }
}

/// The layout before segments: `{dir}/{project}/{device}/{tab}/{first_ts}-{last_ts}-
/// {first_seq}-{raw_bytes}-{tag}.gz` (hex hashes for the directories), each chunk a gzip
/// member of a JSON header line and the event lines. Opening a store moves such chunks
/// into segments (keeping their batch tags) and deletes them; unreadable ones stay where
/// they are, named in the log.
mod legacy {
    use super::*;

    fn is_hash_dir(p: &Path) -> bool {
        p.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    fn children(d: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn read(path: &Path) -> Result<(String, String, String, Vec<RawEvent>), String> {
        let data = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&data[..]).read_to_string(&mut text).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        let header: serde_json::Value =
            lines.next().and_then(|l| serde_json::from_str(l).ok()).ok_or("missing header")?;
        let field = |k: &str| header[k].as_str().map(str::to_string).ok_or(format!("its header names no {k}"));
        let (project, device, tab) = (field("project")?, field("device")?, field("tab")?);
        let mut events = Vec::new();
        for line in lines {
            let mut parts = line.splitn(3, '\t');
            let (Some(seq), Some(ts), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
                return Err("a line is malformed".into());
            };
            let (Ok(seq), Ok(ts)) = (seq.parse(), ts.parse()) else {
                return Err("a line has no sequence number and time".into());
            };
            events.push(RawEvent { tab: tab.clone(), seq, ts, json: json.to_string() });
        }
        Ok((project, device, tab, events))
    }

    pub(super) fn migrate(store: &ReplayStore) -> Result<(), ReplayError> {
        let projects: Vec<PathBuf> = children(&store.dir).into_iter().filter(|p| is_hash_dir(p)).collect();
        if projects.is_empty() {
            return Ok(());
        }
        let (mut moved, mut left) = (0usize, 0usize);
        let mut done = Vec::new();
        for project in &projects {
            for device in children(project) {
                for tab in children(&device) {
                    for chunk in children(&tab) {
                        let name = chunk.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                        let Some(stem) = name.strip_suffix(".gz") else { continue };
                        let tag = xxhash_rust::xxh3::xxh3_64(stem.rsplit('-').next().unwrap_or(stem).as_bytes());
                        match read(&chunk) {
                            Ok((p, d, t, events)) => {
                                store.put_tagged(&p, &d, &t, tag, &events)?;
                                done.push(chunk);
                                moved += 1;
                            }
                            Err(why) => {
                                tracing::warn!(chunk = %chunk.display(), reason = %why, "an unreadable replay chunk of the old layout is left where it is");
                                left += 1;
                            }
                        }
                    }
                }
            }
        }
        // Durable in segments before the old copies go.
        store.sync_active().map_err(io("sync", &store.dir))?;
        for chunk in done {
            std::fs::remove_file(&chunk).map_err(io("delete", &chunk))?;
        }
        for project in &projects {
            for device in children(project) {
                for tab in children(&device) {
                    let _ = std::fs::remove_dir(&tab);
                }
                let _ = std::fs::remove_dir(&device);
            }
            let _ = std::fs::remove_dir(project);
        }
        tracing::info!(moved, left, "replay chunks of the old layout were moved into segments");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tab: &str, seq: u64, ts: i64) -> RawEvent {
        RawEvent {
            tab: tab.into(),
            seq,
            ts,
            json: format!("{{\"type\":3,\"timestamp\":{ts},\"data\":{{\"text\":\"a\\nb\"}}}}"),
        }
    }

    fn read(store: &ReplayStore, device: &str, from: i64, to: i64) -> (Vec<RawEvent>, usize) {
        let chunks = store.chunks("p", device, from, to).unwrap();
        let mut out = Vec::new();
        for c in &chunks {
            out.extend(store.read_chunk(c, "p", device).unwrap().into_iter().filter(|e| e.ts >= from && e.ts <= to));
        }
        out.sort_by_key(|e| e.ts);
        (out, chunks.len())
    }

    /// Offsets of the frames of a segment file.
    fn frames(path: &Path) -> Vec<(u64, u32)> {
        let data = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + 8 <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
            out.push((at as u64, len));
            at += 8 + len as usize;
        }
        out
    }

    #[test]
    fn one_compressor_makes_every_chunk_readable() {
        // The thread's compressor is reused: each chunk is a whole gzip member of its own,
        // whatever came before it (a large one, an empty one).
        let big: String = (0..200_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        for text in ["first", big.as_str(), "", "after the big one"] {
            let mut gz = Vec::new();
            gzip_into(text.as_bytes(), &mut gz).unwrap();
            let mut back = String::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn concurrent_writers_share_syncs_and_every_chunk_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments, so that writers also meet seals.
        let store = Arc::new(ReplayStore::open(dir.path(), FsyncPolicy::EveryBatch, 2_000).unwrap());
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..20u64 {
                        let e = ev(&format!("tab{t}"), i, 1_000 + i as i64);
                        store.write("p", &format!("d{t}"), &format!("tab{t}"), Some(&format!("b{i}")), &[e]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let g = store.group.0.lock().unwrap();
        assert_eq!(g.done, g.issued, "every sync asked for was done");
        assert!(g.failed.is_empty());
        drop(g);
        assert!(store.size().0 > 3, "segments were sealed: {:?}", store.size());
        for t in 0..6 {
            let (events, chunks) = read(&store, &format!("d{t}"), 0, i64::MAX);
            assert_eq!((events.len(), chunks), (20, 20), "device {t}");
        }
    }

    #[test]
    fn chunks_round_trip_in_order_across_seals_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::open(dir.path(), FsyncPolicy::EveryBatch, 100).unwrap();
        store.write("p", "dev/1", "t1", None, &[ev("t1", 0, 100), ev("t1", 1, 300)]).unwrap();
        store.write("p", "dev/1", "t2", None, &[ev("t2", 0, 200)]).unwrap();
        store.write("p", "dev/1", "t1", None, &[ev("t1", 2, 5_000)]).unwrap();
        store.write("p", "other", "t1", None, &[ev("t1", 0, 150)]).unwrap();
        let check = |store: &ReplayStore| {
            let (got, chunks) = read(store, "dev/1", 0, 1_000);
            assert_eq!(got, vec![ev("t1", 0, 100), ev("t2", 0, 200), ev("t1", 1, 300)]);
            assert_eq!(chunks, 2, "the chunk after the range is not listed");
            assert!(
                store.chunks("p", "dev/1", 0, 1_000).unwrap().iter().all(|c| c.raw_bytes > 0 && c.stored_bytes > 0)
            );
            assert_eq!(store.read_tab("p", "dev/1", "t1").unwrap().0.len(), 3);
        };
        check(&store);
        drop(store);
        // Reopened from the index files; then again with every index gone (rebuilt).
        check(&ReplayStore::open(dir.path(), FsyncPolicy::EveryBatch, 100).unwrap());
        for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "idx") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let store = ReplayStore::open(dir.path(), FsyncPolicy::EveryBatch, 1 << 20).unwrap();
        check(&store);
        // Small segments hold one chunk each: retention deletes the three old ones.
        assert_eq!(store.enforce_retention(1_000).unwrap(), 3);
        assert_eq!(store.read_tab("p", "dev/1", "t1").unwrap().0, vec![ev("t1", 2, 5_000)]);
    }

    #[test]
    fn a_retried_batch_is_listed_once_and_repeated_seqs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::Never).unwrap();
        store.write("p", "d", "t", Some("b1"), &[ev("t", 0, 100)]).unwrap();
        store.write("p", "d", "t", Some("b1"), &[ev("t", 0, 100)]).unwrap();
        // Two imports that both start at sequence number 0 are two chunks.
        store.write("p", "d", "t", None, &[ev("t", 0, 100), ev("t", 1, 101)]).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 0, 100), ev("t", 1, 101)]).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 5);
        // The same batch id in another tab is another chunk.
        store.write("p", "d", "t2", Some("b1"), &[ev("t2", 0, 100)]).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 6);
    }

    #[test]
    fn an_unreadable_or_misplaced_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::Never).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 0, 100)]).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 1, 200)]).unwrap();
        let chunks = store.chunks("p", "d", 0, 1_000).unwrap();
        // Damage the first chunk's compressed bytes.
        let seg = segment_path(dir.path(), 1);
        let (at, len) = frames(&seg)[0];
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"garbage", at + 8 + len as u64 - 10).unwrap();
        let e = store.read_chunk(&chunks[0], "p", "d").unwrap_err();
        assert!(e.to_string().contains(&chunks[0].id) && e.to_string().contains("checksum"), "{e}");
        assert_eq!(store.read_chunk(&chunks[1], "p", "d").unwrap().len(), 1);
        // A chunk asked for under another device is refused by its header.
        let e = store.read_chunk(&chunks[1], "p", "intruder").unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        let (events, skipped) = store.read_tab("p", "d", "t").unwrap();
        assert_eq!((events.len(), skipped.len()), (1, 1));
        // Ids from elsewhere are not chunks.
        for id in ["", "../../etc/passwd", "0000000000000001-0-10", "zz00000000000001-0-10-0000000000000000"] {
            assert!(ChunkRef::from_id(id, 0, 0).is_none(), "{id}");
        }
    }

    #[test]
    fn a_torn_tail_is_left_out_at_restart_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        for i in 0..3 {
            store.write("p", "d", "t", None, &[ev("t", i, 100 + i as i64)]).unwrap();
        }
        drop(store);
        // A crash in the middle of the third chunk.
        let seg = segment_path(dir.path(), 1);
        let (at, _) = frames(&seg)[2];
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(at + 20).unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 2);
        store.write("p", "d", "t", None, &[ev("t", 3, 103)]).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 3);
    }

    #[test]
    fn a_failed_write_is_not_kept_and_the_next_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 0, 100)]).unwrap();
        faults::BUDGET.set((Some(20), false));
        assert!(store.write("p", "d", "t", None, &[ev("t", 1, 101)]).is_err());
        faults::BUDGET.set((None, false));
        store.write("p", "d", "t", None, &[ev("t", 2, 102)]).unwrap();
        let seqs = |s: &ReplayStore| read(s, "d", 0, 1_000).0.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&store), vec![0, 2]);
        // The torn bytes were cut off: after a restart every chunk still reads.
        drop(store);
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        assert_eq!(seqs(&store), vec![0, 2]);
        // When the tail cannot be cut off, writes go on in a new segment.
        faults::BUDGET.set((Some(20), false));
        assert!(store.write("p", "d", "t", None, &[ev("t", 3, 103)]).is_err());
        faults::BUDGET.set((None, true));
        store.write("p", "d", "t", None, &[ev("t", 4, 104)]).unwrap();
        faults::BUDGET.set((None, false));
        assert_eq!(store.size().0, 3, "a new segment");
        assert_eq!(seqs(&store), vec![0, 2, 4]);
    }

    #[test]
    fn chunks_of_the_old_layout_are_moved_in() {
        let dir = tempfile::tempdir().unwrap();
        let hx = |s: &str| format!("{:016x}", h(s));
        let tab_dir = dir.path().join(hx("p")).join(hx("d")).join(hx("t"));
        std::fs::create_dir_all(&tab_dir).unwrap();
        let chunk = |events: &[RawEvent]| {
            let mut text = "{\"project\":\"p\",\"device\":\"d\",\"tab\":\"t\"}\n".to_string();
            for e in events {
                text.push_str(&format!("{}\t{}\t{}\n", e.seq, e.ts, e.json));
            }
            let mut gz = Vec::new();
            gzip_into(text.as_bytes(), &mut gz).unwrap();
            gz
        };
        std::fs::write(
            tab_dir.join("0000000000000100-0000000000000101-0000000000-000000000100-abc.gz"),
            chunk(&[ev("t", 0, 100), ev("t", 1, 101)]),
        )
        .unwrap();
        std::fs::write(tab_dir.join("0000000000000200-0000000000000200-0000000002-000000000100-def.gz"), b"not gzip")
            .unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0, vec![ev("t", 0, 100), ev("t", 1, 101)]);
        let left: Vec<_> = std::fs::read_dir(&tab_dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "only the unreadable chunk stays: {left:?}");
        drop(store);
        // Not moved twice.
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 2);
    }
}
