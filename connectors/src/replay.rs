//! The replay store: raw rrweb events, kept verbatim as gzip-compressed chunks in a
//! local directory, read back chunk by chunk for the player.
//!
//! Layout: `{dir}/{project}/{device}/{tab}/{first_ts}-{last_ts}-{first_seq}-{raw_bytes}-{tag}.gz`,
//! where the directory names are hex hashes of the identifiers (so any device id is a
//! safe path), `raw_bytes` is the chunk's uncompressed size (so a reader can page a long
//! session without opening its chunks) and `tag` names the write: a retried batch (same
//! batch id) writes the same chunk again rather than a second copy. Each chunk's first
//! line names its project, device and tab, and is checked on reading; then one line per
//! event, `seq \t ts \t event-json`. The dataflow never reads this: sessions only tell
//! which device and time range to fetch.
//!
//! Durability follows the log's fsync policy: with [`FsyncPolicy::EveryBatch`] a chunk
//! and its directory are synced before the ingest answer. Writers that finish while a
//! sync runs share the next one ([`ReplayStore::sync`], a group commit with one
//! `syncfs` of the store's file system), so a request costs no sync of its own per
//! chunk. A chunk is renamed into place before it is synced: after a crash, a chunk
//! that was never acknowledged may be torn, which its gzip checksum shows; readers skip
//! it and a retry of its batch replaces it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::FsyncPolicy;

thread_local! {
    /// One gzip compressor per thread, reset between chunks. Making one allocates and
    /// zeroes its window and hash tables (hundreds of KB), which cost more than
    /// compressing a small chunk: with a chunk per tab and request, that was a quarter of
    /// the server's time under raw rrweb traffic.
    static GZIP: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new_gzip(flate2::Compression::fast(), 15));
}

/// `text` as one gzip member (what `GzDecoder` reads back).
fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    GZIP.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(text.len() / 3 + 64);
        loop {
            let done = c.total_in() as usize;
            let status = c.compress_vec(&text[done..], &mut out, flate2::FlushCompress::Finish)?;
            if status == flate2::Status::StreamEnd {
                return Ok(out);
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
        /// The operation: `create`, `write`, `sync`, `list` or `read`.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A chunk does not decompress, has a bad header or line, or belongs elsewhere.
    #[error("replay chunk {path} is unreadable: {reason}")]
    Chunk {
        /// The chunk's path relative to the store.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> ReplayError + 'p {
    move |source| ReplayError::Io { what, path: path.display().to_string(), source }
}

/// One stored chunk, as listed (nothing read yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Path relative to the store.
    pub path: String,
    /// The hex hash of the tab id (the chunk's directory name).
    pub tab_hash: String,
    /// Time of the chunk's first event (ms since the epoch, from the name).
    pub first_ts: i64,
    /// Time of the chunk's last event (ms since the epoch, from the name).
    pub last_ts: i64,
    /// Sequence number of the chunk's first event (from the name).
    pub first_seq: u64,
    /// Uncompressed bytes (from the name).
    pub raw_bytes: u64,
    /// Compressed bytes on disk.
    pub stored_bytes: u64,
}

fn h(s: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

/// The replay store.
#[derive(Debug)]
pub struct ReplayStore {
    dir: PathBuf,
    fsync: FsyncPolicy,
    /// Chunks written but not yet synced (the interval policy).
    unsynced: Mutex<Vec<PathBuf>>,
    writes: AtomicU64,
    /// The group commit of [`ReplayStore::sync`].
    group: (Mutex<SyncGroup>, std::sync::Condvar),
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

/// Parses `{first_ts}-{last_ts}-{first_seq}-{raw_bytes}-{tag}.gz`.
fn parse_name(name: &str) -> Option<(i64, i64, u64, u64)> {
    let mut it = name.strip_suffix(".gz")?.split('-');
    let first = it.next()?.parse().ok()?;
    let last = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let raw = it.next()?.parse().ok()?;
    Some((first, last, seq, raw))
}

impl ReplayStore {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &Path, fsync: FsyncPolicy) -> Result<ReplayStore, ReplayError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        Ok(ReplayStore {
            dir: dir.to_path_buf(),
            fsync,
            unsynced: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            group: Default::default(),
        })
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
            let synced =
                std::fs::File::open(&self.dir).and_then(|d| rustix::fs::syncfs(&d).map_err(std::io::Error::from));
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

    fn device_dir(&self, project: &str, device: &str) -> PathBuf {
        self.dir.join(h(project)).join(h(device))
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
    /// (its batch id and the device), so that a retry replaces the chunk instead of
    /// adding a copy; without one every write is its own chunk. Returns the compressed
    /// size.
    pub fn put(
        &self,
        project: &str,
        device: &str,
        tab: &str,
        batch: Option<&str>,
        events: &[RawEvent],
    ) -> Result<u64, ReplayError> {
        let Some(first) = events.first() else { return Ok(0) };
        let first_ts = events.iter().map(|e| e.ts).min().unwrap_or(first.ts);
        let last_ts = events.iter().map(|e| e.ts).max().unwrap_or(first.ts);
        let header = serde_json::json!({"project": project, "device": device, "tab": tab});
        let mut text = String::with_capacity(128 + events.iter().map(|e| e.json.len() + 32).sum::<usize>());
        text.push_str(&header.to_string());
        text.push('\n');
        for e in events {
            text.push_str(&format!("{}\t{}\t", e.seq, e.ts));
            // One event per line: newlines inside JSON text are only ever in strings,
            // where they are escaped, so none occur here.
            text.push_str(e.json.trim());
            text.push('\n');
        }
        let bytes = gzip(text.as_bytes())
            .map_err(|e| ReplayError::Chunk { path: "new chunk".into(), reason: e.to_string() })?;
        let tag = match batch {
            Some(b) => h(&format!("{b}\u{0}{tab}")),
            None => {
                let n = self.writes.fetch_add(1, Ordering::Relaxed);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("u{:x}{:x}{:x}", nanos, std::process::id(), n)
            }
        };
        let dir = self.device_dir(project, device).join(h(tab));
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let name = format!(
            "{:016}-{:016}-{:010}-{:012}-{tag}.gz",
            first_ts.max(0),
            last_ts.max(0),
            first.seq.min(9_999_999_999),
            text.len()
        );
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(ReplayError::Io { what: "write", path: path.display().to_string(), source: e });
        }
        if let FsyncPolicy::Interval(_) = self.fsync
            && let Ok(mut u) = self.unsynced.lock()
        {
            u.push(path);
        }
        Ok(bytes.len() as u64)
    }

    /// Syncs the chunks written since the last call (the interval policy).
    pub fn sync_pending(&self) -> Result<usize, ReplayError> {
        let paths = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        let mut dirs = std::collections::BTreeSet::new();
        for p in &paths {
            if let Ok(f) = std::fs::File::open(p) {
                f.sync_all().map_err(io("sync", p))?;
            }
            if let Some(d) = p.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in dirs {
            std::fs::File::open(&d).and_then(|f| f.sync_all()).map_err(io("sync", &d))?;
        }
        Ok(paths.len())
    }

    /// Chunks of one device whose time range overlaps `[from, to]`, in time order (then
    /// tab and sequence number).
    pub fn chunks(&self, project: &str, device: &str, from: i64, to: i64) -> Result<Vec<ChunkRef>, ReplayError> {
        let dir = self.device_dir(project, device);
        let mut out = Vec::new();
        let tabs = match std::fs::read_dir(&dir) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        for tab in tabs.flatten() {
            let tab_hash = tab.file_name().to_string_lossy().to_string();
            self.list_tab(&dir, &tab_hash, from, to, &mut out)?;
        }
        out.sort_by(|a, b| {
            (a.first_ts, &a.tab_hash, a.first_seq, &a.path).cmp(&(b.first_ts, &b.tab_hash, b.first_seq, &b.path))
        });
        Ok(out)
    }

    fn list_tab(
        &self,
        device_dir: &Path,
        tab_hash: &str,
        from: i64,
        to: i64,
        out: &mut Vec<ChunkRef>,
    ) -> Result<(), ReplayError> {
        let dir = device_dir.join(tab_hash);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some((first_ts, last_ts, first_seq, raw_bytes)) = parse_name(&name) else { continue };
            if last_ts < from || first_ts > to {
                continue;
            }
            let stored_bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            let rel = e.path().strip_prefix(&self.dir).map(|p| p.display().to_string()).unwrap_or(name);
            out.push(ChunkRef {
                path: rel,
                tab_hash: tab_hash.to_string(),
                first_ts,
                last_ts,
                first_seq,
                raw_bytes,
                stored_bytes,
            });
        }
        Ok(())
    }

    /// Reads one chunk's events (in the order written), checking that its header names
    /// this project and device.
    pub fn read_chunk(&self, chunk: &ChunkRef, project: &str, device: &str) -> Result<Vec<RawEvent>, ReplayError> {
        let path = self.dir.join(&chunk.path);
        let bad = |reason: String| ReplayError::Chunk { path: chunk.path.clone(), reason };
        let data = std::fs::read(&path).map_err(io("read", &path))?;
        let mut text = String::with_capacity(chunk.raw_bytes.min(64 << 20) as usize);
        flate2::read::GzDecoder::new(&data[..]).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
        let mut lines = text.lines();
        let header: serde_json::Value =
            lines.next().and_then(|l| serde_json::from_str(l).ok()).ok_or_else(|| bad("missing header".into()))?;
        if header["project"] != project || header["device"] != device {
            return Err(bad(format!(
                "its header names project {} and device {}, not {project:?} and {device:?}",
                header["project"], header["device"]
            )));
        }
        let tab = header["tab"].as_str().ok_or_else(|| bad("its header names no tab".into()))?.to_string();
        if h(&tab) != chunk.tab_hash {
            return Err(bad(format!("its header names tab {tab:?}, which is not the tab it is stored under")));
        }
        let mut out = Vec::new();
        for (i, line) in lines.enumerate() {
            let mut parts = line.splitn(3, '\t');
            let (Some(seq), Some(ts), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(format!("line {} is malformed", i + 2)));
            };
            let (Ok(seq), Ok(ts)) = (seq.parse(), ts.parse()) else {
                return Err(bad(format!("line {} has no sequence number and time", i + 2)));
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
        let mut chunks = Vec::new();
        self.list_tab(&self.device_dir(project, device), &h(tab), i64::MIN, i64::MAX, &mut chunks)?;
        chunks.sort_by(|a, b| (a.first_seq, a.first_ts, &a.path).cmp(&(b.first_seq, b.first_ts, &b.path)));
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

    /// Deletes chunks whose newest event is older than `before_ts`. Returns how many.
    pub fn enforce_retention(&self, before_ts: i64) -> Result<usize, ReplayError> {
        let mut deleted = 0;
        let walk = |d: &Path| std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).collect::<Vec<_>>());
        for project in walk(&self.dir).map_err(io("list", &self.dir))? {
            for device in walk(&project).unwrap_or_default() {
                for tab in walk(&device).unwrap_or_default() {
                    for chunk in walk(&tab).unwrap_or_default() {
                        let name = chunk.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                        if parse_name(&name).is_some_and(|(_, last, _, _)| last < before_ts) {
                            std::fs::remove_file(&chunk).map_err(io("delete", &chunk))?;
                            deleted += 1;
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Where the store keeps its chunks.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    #[test]
    fn one_compressor_makes_every_chunk_readable() {
        // The thread's compressor is reused: each chunk is a whole gzip member of its own,
        // whatever came before it (a large one, an empty one).
        use std::io::Read as _;
        let big: String = (0..200_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        for text in ["first", big.as_str(), "", "after the big one"] {
            let gz = gzip(text.as_bytes()).unwrap();
            let mut back = String::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn concurrent_writers_share_syncs_and_every_chunk_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap());
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
        for t in 0..6 {
            let (events, chunks) = read(&store, &format!("d{t}"), 0, i64::MAX);
            assert_eq!((events.len(), chunks), (20, 20), "device {t}");
        }
    }

    #[test]
    fn chunks_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::EveryBatch).unwrap();
        store.write("p", "dev/1", "t1", None, &[ev("t1", 0, 100), ev("t1", 1, 300)]).unwrap();
        store.write("p", "dev/1", "t2", None, &[ev("t2", 0, 200)]).unwrap();
        store.write("p", "dev/1", "t1", None, &[ev("t1", 2, 5_000)]).unwrap();
        store.write("p", "other", "t1", None, &[ev("t1", 0, 150)]).unwrap();
        let (got, chunks) = read(&store, "dev/1", 0, 1_000);
        assert_eq!(got, vec![ev("t1", 0, 100), ev("t2", 0, 200), ev("t1", 1, 300)]);
        assert_eq!(chunks, 2, "the chunk after the range is not listed");
        assert!(store.chunks("p", "dev/1", 0, 1_000).unwrap().iter().all(|c| c.raw_bytes > 0 && c.stored_bytes > 0));
        assert_eq!(store.read_tab("p", "dev/1", "t1").unwrap().0.len(), 3);
        assert_eq!(store.enforce_retention(1_000).unwrap(), 3);
        assert_eq!(store.read_tab("p", "dev/1", "t1").unwrap().0, vec![ev("t1", 2, 5_000)]);
    }

    #[test]
    fn a_retried_batch_replaces_its_chunk_and_repeated_seqs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::Never).unwrap();
        store.write("p", "d", "t", Some("b1"), &[ev("t", 0, 100)]).unwrap();
        store.write("p", "d", "t", Some("b1"), &[ev("t", 0, 100)]).unwrap();
        // Two imports that both start at sequence number 0 are two chunks.
        store.write("p", "d", "t", None, &[ev("t", 0, 100), ev("t", 1, 101)]).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 0, 100), ev("t", 1, 101)]).unwrap();
        assert_eq!(read(&store, "d", 0, 1_000).0.len(), 5);
    }

    #[test]
    fn an_unreadable_or_misplaced_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path(), FsyncPolicy::Never).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 0, 100)]).unwrap();
        store.write("p", "d", "t", None, &[ev("t", 1, 200)]).unwrap();
        let chunks = store.chunks("p", "d", 0, 1_000).unwrap();
        std::fs::write(dir.path().join(&chunks[0].path), b"not gzip").unwrap();
        let e = store.read_chunk(&chunks[0], "p", "d").unwrap_err();
        assert!(e.to_string().contains(&chunks[0].path), "{e}");
        assert_eq!(store.read_chunk(&chunks[1], "p", "d").unwrap().len(), 1);
        // A chunk copied under another device is refused by its header.
        let e = store.read_chunk(&chunks[1], "p", "intruder").unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        let (events, skipped) = store.read_tab("p", "d", "t").unwrap();
        assert_eq!((events.len(), skipped.len()), (1, 1));
    }
}
