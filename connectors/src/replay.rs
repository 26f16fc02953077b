//! The replay store: raw rrweb events, kept verbatim as gzip-compressed chunks in an
//! object store (a local directory by default), read back in order for the player.
//!
//! Layout: `replay/{project}/{device}/{tab}/{first_ts}-{last_ts}-{first_seq}.gz`, where
//! the path segments are hex hashes of the identifiers (so any device id is a safe path)
//! and each chunk's first line names them. A line is `seq \t ts \t event-json`. The
//! dataflow never reads this: sessions only tell which device and time range to fetch.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// One stored raw event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub tab: String,
    pub seq: u64,
    pub ts: i64,
    /// The event's JSON text, exactly as received.
    pub json: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store: {0}")]
    Store(#[from] object_store::Error),
    #[error("replay chunk {path} is unreadable: {reason}")]
    Chunk { path: String, reason: String },
}

/// What reading a session back cost and saved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub chunks: usize,
    /// Compressed bytes read.
    pub stored_bytes: u64,
    /// Uncompressed bytes of the chunks.
    pub raw_bytes: u64,
}

fn h(s: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

/// The replay store.
#[derive(Clone, Debug)]
pub struct ReplayStore {
    store: Arc<dyn ObjectStore>,
}

impl ReplayStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> ReplayStore {
        ReplayStore { store }
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<ReplayStore, ReplayError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ReplayError::Chunk { path: dir.display().to_string(), reason: e.to_string() })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(ReplayStore::new(Arc::new(fs)))
    }

    fn device_prefix(project: &str, device: &str) -> StorePath {
        StorePath::from(format!("replay/{}/{}", h(project), h(device)))
    }

    /// Writes one chunk of a tab's events (already in order). Returns the compressed size.
    pub async fn write(&self, project: &str, device: &str, tab: &str, events: &[RawEvent]) -> Result<u64, ReplayError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(0) };
        let first_ts = events.iter().map(|e| e.ts).min().unwrap_or(first.ts);
        let last_ts = events.iter().map(|e| e.ts).max().unwrap_or(last.ts);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let header = serde_json::json!({"project": project, "device": device, "tab": tab});
        let mut text = header.to_string();
        text.push('\n');
        for e in events {
            text.push_str(&format!("{}\t{}\t", e.seq, e.ts));
            // One event per line: newlines inside JSON text are only ever in strings,
            // where they are escaped, so none occur here.
            text.push_str(e.json.trim());
            text.push('\n');
        }
        let chunk_err = |e: std::io::Error| ReplayError::Chunk { path: "new chunk".into(), reason: e.to_string() };
        enc.write_all(text.as_bytes()).map_err(chunk_err)?;
        let bytes = enc.finish().map_err(chunk_err)?;
        let path = StorePath::from(format!(
            "replay/{}/{}/{}/{:016}-{:016}-{:010}.gz",
            h(project),
            h(device),
            h(tab),
            first_ts.max(0),
            last_ts.max(0),
            first.seq
        ));
        let n = bytes.len() as u64;
        self.store.put(&path, PutPayload::from(Bytes::from(bytes))).await?;
        Ok(n)
    }

    async fn read_chunk(&self, path: &StorePath, stats: &mut ReplayStats) -> Result<Vec<RawEvent>, ReplayError> {
        let data = self.store.get(path).await?.bytes().await?;
        stats.chunks += 1;
        stats.stored_bytes += data.len() as u64;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_string(&mut text)
            .map_err(|e| ReplayError::Chunk { path: path.to_string(), reason: e.to_string() })?;
        stats.raw_bytes += text.len() as u64;
        let mut lines = text.lines();
        let header: serde_json::Value = lines
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| ReplayError::Chunk { path: path.to_string(), reason: "missing header".into() })?;
        let tab = header["tab"].as_str().unwrap_or("").to_string();
        let mut out = Vec::new();
        for line in lines {
            let mut parts = line.splitn(3, '\t');
            let (Some(seq), Some(ts), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ReplayError::Chunk { path: path.to_string(), reason: "malformed line".into() });
            };
            out.push(RawEvent {
                tab: tab.clone(),
                seq: seq.parse().unwrap_or(0),
                ts: ts.parse().unwrap_or(0),
                json: json.to_string(),
            });
        }
        Ok(out)
    }

    /// Chunk paths of a device whose time range overlaps `[from, to]`.
    async fn chunks(&self, prefix: &StorePath, from: i64, to: i64) -> Result<Vec<StorePath>, ReplayError> {
        let metas: Vec<_> = self.store.list(Some(prefix)).try_collect().await?;
        let mut paths: Vec<StorePath> = metas
            .into_iter()
            .map(|m| m.location)
            .filter(|p| {
                let name = p.filename().unwrap_or("");
                let mut it = name.trim_end_matches(".gz").split('-');
                let first = it.next().and_then(|s| s.parse::<i64>().ok()).unwrap_or(i64::MIN);
                let last = it.next().and_then(|s| s.parse::<i64>().ok()).unwrap_or(i64::MAX);
                last >= from && first <= to
            })
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Every stored event of a device with `from <= ts <= to`, in time order (then tab
    /// and sequence number).
    pub async fn read_range(
        &self,
        project: &str,
        device: &str,
        from: i64,
        to: i64,
    ) -> Result<(Vec<RawEvent>, ReplayStats), ReplayError> {
        let mut stats = ReplayStats::default();
        let mut events = Vec::new();
        for path in self.chunks(&Self::device_prefix(project, device), from, to).await? {
            events.extend(self.read_chunk(&path, &mut stats).await?.into_iter().filter(|e| e.ts >= from && e.ts <= to));
        }
        events.sort_by(|a, b| (a.ts, &a.tab, a.seq).cmp(&(b.ts, &b.tab, b.seq)));
        Ok((events, stats))
    }

    /// Every stored event of one tab, in sequence order (to rebuild its node map).
    pub async fn read_tab(&self, project: &str, device: &str, tab: &str) -> Result<Vec<RawEvent>, ReplayError> {
        let prefix = StorePath::from(format!("replay/{}/{}/{}", h(project), h(device), h(tab)));
        let mut stats = ReplayStats::default();
        let mut events = Vec::new();
        for path in self.chunks(&prefix, i64::MIN, i64::MAX).await? {
            events.extend(self.read_chunk(&path, &mut stats).await?);
        }
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    /// Deletes chunks whose newest event is older than `before_ts`. Returns how many.
    pub async fn enforce_retention(&self, before_ts: i64) -> Result<usize, ReplayError> {
        let metas: Vec<_> = self.store.list(Some(&StorePath::from("replay"))).try_collect().await?;
        let mut deleted = 0;
        for m in metas {
            let name = m.location.filename().unwrap_or("").to_string();
            let last = name.split('-').nth(1).and_then(|s| s.parse::<i64>().ok()).unwrap_or(i64::MAX);
            if last < before_ts {
                self.store.delete(&m.location).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
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

    #[tokio::test]
    async fn chunks_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::local(dir.path()).unwrap();
        store.write("p", "dev/1", "t1", &[ev("t1", 0, 100), ev("t1", 1, 300)]).await.unwrap();
        store.write("p", "dev/1", "t2", &[ev("t2", 0, 200)]).await.unwrap();
        store.write("p", "dev/1", "t1", &[ev("t1", 2, 5_000)]).await.unwrap();
        store.write("p", "other", "t1", &[ev("t1", 0, 150)]).await.unwrap();
        let (got, stats) = store.read_range("p", "dev/1", 0, 1_000).await.unwrap();
        assert_eq!(got, vec![ev("t1", 0, 100), ev("t2", 0, 200), ev("t1", 1, 300)]);
        assert_eq!(stats.chunks, 2, "the chunk after the range is not read");
        assert!(stats.raw_bytes > 0 && stats.stored_bytes > 0);
        assert_eq!(store.read_tab("p", "dev/1", "t1").await.unwrap().len(), 3);
        assert_eq!(store.enforce_retention(1_000).await.unwrap(), 3);
        assert_eq!(store.read_tab("p", "dev/1", "t1").await.unwrap(), vec![ev("t1", 2, 5_000)]);
    }
}
