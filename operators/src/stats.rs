//! State sizes per view and worker, so memory can be attributed to a view.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Records and approximate bytes one operator holds on one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Records held.
    pub records: usize,
    /// Approximate bytes held.
    pub bytes: usize,
}

/// A shared registry of state sizes, keyed by (view, worker).
#[derive(Clone, Debug, Default)]
pub struct StateStats {
    inner: Arc<Mutex<BTreeMap<(String, usize), StateSize>>>,
}

impl StateStats {
    /// Records what `view`'s state holds on `worker` now (replacing the last report).
    pub fn set(&self, view: &str, worker: usize, records: usize, bytes: usize) {
        if let Ok(mut m) = self.inner.lock() {
            match m.get_mut(&(view.to_string(), worker)) {
                Some(s) => *s = StateSize { records, bytes },
                None => {
                    m.insert((view.to_string(), worker), StateSize { records, bytes });
                }
            }
        }
    }

    /// Adds to a (view, worker) entry (records and bytes may shrink).
    pub fn add(&self, view: &str, worker: usize, records: isize, bytes: isize) {
        if let Ok(mut m) = self.inner.lock() {
            let s = m.entry((view.to_string(), worker)).or_default();
            s.records = (s.records as isize + records).max(0) as usize;
            s.bytes = (s.bytes as isize + bytes).max(0) as usize;
        }
    }

    /// Totals per view over all workers.
    pub fn per_view(&self) -> BTreeMap<String, StateSize> {
        let mut out: BTreeMap<String, StateSize> = BTreeMap::new();
        if let Ok(m) = self.inner.lock() {
            for ((view, _), s) in m.iter() {
                let e = out.entry(view.clone()).or_default();
                e.records += s.records;
                e.bytes += s.bytes;
            }
        }
        out
    }
}
