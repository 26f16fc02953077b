//! Interned strings.
//!
//! Operators never carry strings: a [`Sym`] is the 64-bit xxh3 hash of a string, and a
//! process-wide table maps it back for the edges that print or publish it. Hashing makes
//! symbols content-defined, so two workers (or two runs) give the same symbol to the
//! same string without coordinating, and ordering by symbol is deterministic.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};

/// An interned string. `Sym::EMPTY` is the empty string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Sym(pub u64);

const SHARDS: usize = 16;

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

type SymMap = HashMap<u64, Arc<str>, std::hash::BuildHasherDefault<SymHasher>>;

struct Table {
    shards: Vec<RwLock<SymMap>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table { shards: (0..SHARDS).map(|_| RwLock::new(SymMap::default())).collect() })
}

impl Sym {
    /// The empty string.
    pub const EMPTY: Sym = Sym(0);

    /// Interns `s` (the empty string is always `Sym::EMPTY`).
    pub fn new(s: &str) -> Sym {
        if s.is_empty() {
            return Sym::EMPTY;
        }
        // 0 is reserved for the empty string.
        let h = xxhash_rust::xxh3::xxh3_64(s.as_bytes()).max(1);
        let shard = &table().shards[(h as usize) % SHARDS];
        let known = shard.read().map(|m| m.contains_key(&h)).unwrap_or(false);
        if !known && let Ok(mut m) = shard.write() {
            m.entry(h).or_insert_with(|| Arc::from(s));
        }
        Sym(h)
    }

    /// The string behind the symbol; `None` only for symbols never interned here.
    pub fn resolve(self) -> Option<Arc<str>> {
        if self.0 == 0 {
            static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
            return Some(EMPTY.get_or_init(|| Arc::from("")).clone());
        }
        let shard = &table().shards[(self.0 as usize) % SHARDS];
        shard.read().ok().and_then(|m| m.get(&self.0).cloned())
    }

    /// The string behind the symbol, or `""`.
    pub fn as_string(self) -> String {
        self.resolve().map(|s| s.to_string()).unwrap_or_default()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of interned strings and their total bytes.
    pub fn table_size() -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for s in &table().shards {
            if let Ok(m) = s.read() {
                n += m.len();
                bytes += m.values().map(|v| v.len() + 16 + 24).sum::<usize>();
            }
        }
        (n, bytes)
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
}
