//! Interned strings.
//!
//! Operators never carry strings: a [`Sym`] is the 64-bit xxh3 hash of a string, and a
//! process-wide table maps it back for the edges that print or publish it. Hashing makes
//! symbols content-defined, so two workers (or two runs) give the same symbol to the
//! same string without coordinating, and ordering by symbol is deterministic.
//!
//! The table is bounded by what is in use. Each entry records the *epoch* (a minute of
//! logical time, [`EPOCH_MS`]) in which it was last interned or resolved; the publisher
//! moves the epoch with the dataflow's frontier and, after each snapshot, drops the
//! entries not touched for [`crate::Params::strings_keep`]. That is safe because a
//! symbol is needed only to build a row into Arrow: published rows keep their strings
//! in their Arrow segments and are rebuilt only when they change, and every change comes
//! either from an event (whose strings were just interned) or from a device's state,
//! which re-publishes its rows while it lives (each rebuild touches their symbols) and
//! is released within the session gap and the state grace of its last event. A symbol
//! dropped and seen again is interned again with the same value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};

/// An interned string. `Sym::EMPTY` is the empty string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Sym(pub u64);

const SHARDS: usize = 16;

/// Logical milliseconds per epoch of the string table.
pub const EPOCH_MS: u64 = 60_000;

/// Entries marked with this epoch are never dropped ([`Sym::keep`]).
const KEPT: u32 = u32::MAX;

/// Symbols are already xxh3 hashes: the table uses them as they are (rotated, since the
/// low bits choose the shard and would otherwise be the same for every key in it).
#[derive(Default)]
struct SymHasher(u64);

impl std::hash::Hasher for SymHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    text: Arc<str>,
    /// The epoch it was last interned or resolved in, or [`KEPT`].
    touched: AtomicU32,
}

impl Entry {
    fn touch(&self, epoch: u32) {
        // Most touches find the epoch current: a load, no write to the shared line.
        if self.touched.load(Ordering::Relaxed) < epoch {
            self.touched.fetch_max(epoch, Ordering::Relaxed);
        }
    }
}

type SymMap = HashMap<u64, Entry, std::hash::BuildHasherDefault<SymHasher>>;

struct Table {
    shards: Vec<RwLock<SymMap>>,
    /// The current epoch: the furthest frontier of any dataflow in the process.
    epoch: AtomicU32,
    /// The first epoch moved to: strings interned before any frontier was known count
    /// as touched in it.
    first: AtomicU32,
    entries: AtomicUsize,
    bytes: AtomicUsize,
    /// One-shot builds in progress ([`Sym::pin`]); no reclaiming while any runs.
    pins: AtomicUsize,
}

/// Bytes an entry holds: its text and the `Arc`'s counts, and the key, entry and control
/// byte of its map slot.
fn entry_bytes(text: &str) -> usize {
    text.len() + 16 + 33
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::new)
}

fn hash(s: &str) -> u64 {
    // 0 is reserved for the empty string.
    xxhash_rust::xxh3::xxh3_64(s.as_bytes()).max(1)
}

impl Table {
    fn new() -> Table {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::new(SymMap::default())).collect(),
            epoch: AtomicU32::new(0),
            first: AtomicU32::new(0),
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
        }
    }

    fn shard(&self, h: u64) -> &RwLock<SymMap> {
        &self.shards[(h as usize) % SHARDS]
    }

    fn now(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }

    fn intern(&self, s: &str, epoch: u32) -> Sym {
        if s.is_empty() {
            return Sym::EMPTY;
        }
        let h = hash(s);
        let shard = self.shard(h);
        let known = shard.read().ok().is_some_and(|m| m.get(&h).map(|e| e.touch(epoch)).is_some());
        if !known && let Ok(mut m) = shard.write() {
            m.entry(h)
                .or_insert_with(|| {
                    self.entries.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(entry_bytes(s), Ordering::Relaxed);
                    Entry { text: Arc::from(s), touched: AtomicU32::new(0) }
                })
                .touch(epoch);
        }
        Sym(h)
    }

    /// The entry's text, marking it used now (`touch` only marks).
    fn get(&self, h: u64) -> Option<Arc<str>> {
        let m = self.shard(h).read().ok()?;
        let e = m.get(&h)?;
        e.touch(self.now());
        Some(e.text.clone())
    }

    fn advance(&self, ms: u64) {
        let e = (ms / EPOCH_MS).min(u64::from(KEPT - 1)) as u32;
        let _ = self.first.compare_exchange(0, e, Ordering::Relaxed, Ordering::Relaxed);
        self.epoch.fetch_max(e, Ordering::Relaxed);
    }

    fn reclaim(&self, keep_ms: u64) -> usize {
        if self.pins.load(Ordering::Acquire) > 0 {
            return 0;
        }
        let keep = keep_ms.div_ceil(EPOCH_MS).min(u64::from(u32::MAX)) as u32;
        // One epoch more than asked: an entry touched early in an epoch is as old as one
        // touched at its end.
        let Some(before) = self.now().checked_sub(keep.saturating_add(1)) else {
            return 0;
        };
        let first = self.first.load(Ordering::Relaxed);
        let mut dropped = 0;
        for s in &self.shards {
            let Ok(mut m) = s.write() else { continue };
            let (n, mut freed) = (m.len(), 0);
            m.retain(|_, e| {
                let keep = e.touched.load(Ordering::Relaxed).max(first) >= before;
                if !keep {
                    freed += entry_bytes(&e.text);
                }
                keep
            });
            dropped += n - m.len();
            self.entries.fetch_sub(n - m.len(), Ordering::Relaxed);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            if m.capacity() > 4 * m.len().max(1024) {
                m.shrink_to_fit();
            }
        }
        dropped
    }
}

impl Sym {
    /// The empty string.
    pub const EMPTY: Sym = Sym(0);

    /// Interns `s` (the empty string is always `Sym::EMPTY`).
    pub fn new(s: &str) -> Sym {
        let t = table();
        t.intern(s, t.now())
    }

    /// Interns `s` for the life of the process (project names: few, and resolved by
    /// tables derived from rows that no event refreshes).
    pub fn keep(s: &str) -> Sym {
        table().intern(s, KEPT)
    }

    /// The string behind the symbol; `None` for symbols never interned here, or dropped
    /// as unused.
    pub fn resolve(self) -> Option<Arc<str>> {
        if self.0 == 0 {
            static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
            return Some(EMPTY.get_or_init(|| Arc::from("")).clone());
        }
        table().get(self.0)
    }

    /// Marks the symbol in use now (a held value that no event refreshes).
    pub fn touch(self) {
        let t = table();
        if let Ok(m) = t.shard(self.0).read()
            && let Some(e) = m.get(&self.0)
        {
            e.touch(t.now());
        }
    }

    /// The string behind the symbol, or `""`.
    pub fn as_string(self) -> String {
        self.resolve().map(|s| s.to_string()).unwrap_or_default()
    }

    /// Whether this is [`Sym::EMPTY`].
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of interned strings and the bytes they hold (text, entry and map slot).
    pub fn table_size() -> (usize, usize) {
        let t = table();
        (t.entries.load(Ordering::Relaxed), t.bytes.load(Ordering::Relaxed))
    }

    /// Moves the table's epoch to the one holding logical time `ms` (it never goes
    /// back: with several dataflows in one process, the furthest one leads).
    pub fn advance(ms: u64) {
        table().advance(ms);
    }

    /// Drops the entries neither interned nor resolved in the last `keep_ms` of logical
    /// time; returns how many. Nothing is dropped while a [`Pinned`] lives.
    pub fn reclaim(keep_ms: u64) -> usize {
        table().reclaim(keep_ms)
    }

    /// Holds every entry until the guard is dropped: a one-shot build (batch mode, a
    /// backfill) resolves its strings only at its end, at whatever epoch it interned them,
    /// so a live dataflow in the same process must not reclaim them meanwhile.
    pub fn pin() -> Pinned {
        table().pins.fetch_add(1, Ordering::AcqRel);
        Pinned(())
    }
}

/// Suspends reclaiming while it lives ([`Sym::pin`]).
#[derive(Debug)]
pub struct Pinned(());

impl Drop for Pinned {
    fn drop(&mut self) {
        table().pins.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resolve() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "Sym({:#x})", self.0),
        }
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_content_defined() {
        let a = Sym::new("https://x.test/a");
        assert_eq!(a, Sym::new("https://x.test/a"));
        assert_ne!(a, Sym::new("https://x.test/b"));
        assert_eq!(a.as_string(), "https://x.test/a");
        assert_eq!(Sym::new(""), Sym::EMPTY);
        assert_eq!(Sym::EMPTY.as_string(), "");
    }

    /// Entries untouched for the keep time go; touched and kept ones stay; a dropped
    /// string interned again gets the same symbol. (On a table of its own: the process's
    /// table serves the other tests.)
    #[test]
    fn unused_entries_are_reclaimed() {
        let t = Table::new();
        let early = t.intern("interned-before-any-frontier", t.now());
        let base = 1u64 << 40;
        t.advance(base);
        let kept = t.intern("project-that-stays", KEPT);
        let old = t.intern("device-seen-once", t.now());
        let used = t.intern("url-seen-again", t.now());
        t.advance(base + 5 * EPOCH_MS);
        t.intern("url-seen-again", t.now());
        assert_eq!(t.reclaim(10 * EPOCH_MS), 0, "nothing is older than the keep time yet");
        t.advance(base + 12 * EPOCH_MS);
        assert_eq!(t.reclaim(10 * EPOCH_MS), 2, "the first epoch's entries");
        assert!(t.get(old.0).is_none() && t.get(early.0).is_none());
        assert_eq!(t.get(used.0).as_deref(), Some("url-seen-again"), "touched 7 epochs ago");
        assert_eq!(t.get(kept.0).as_deref(), Some("project-that-stays"));
        assert_eq!(t.entries.load(Ordering::Relaxed), 2);
        assert_eq!(t.intern("device-seen-once", t.now()), old);
        assert_eq!(t.get(old.0).as_deref(), Some("device-seen-once"));
        assert_eq!(t.entries.load(Ordering::Relaxed), 3);
    }
}
