//! Finding a session by id without scanning the sessions table.
//!
//! A view is published as segments that later snapshots share (`dataflows::segments`):
//! a new snapshot adds a small segment and slices rows out of older ones. The index
//! keeps a hash map per segment, keyed by the segment's identity (its buffers and
//! length), built the first time a lookup meets that segment; a lookup is a hash probe
//! per segment. Maps of segments no longer published are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMillisecondType;
use sightflow_dataflows::Snapshot;

/// Where a session's replay is: (project, device, started_at, ended_at).
pub type SessionPlace = (String, String, i64, i64);

type SegmentKey = (usize, usize, usize);

/// The per-segment maps from session id to its row.
#[derive(Default)]
pub struct SessionIndex {
    segments: Mutex<HashMap<SegmentKey, Arc<HashMap<String, usize>>>>,
}

fn key(b: &RecordBatch) -> Option<SegmentKey> {
    let ids = b.column_by_name("session_id")?.as_string_opt::<i32>()?;
    Some((ids.value_offsets().as_ptr() as usize, ids.values().as_ptr() as usize, ids.len()))
}

fn place(b: &RecordBatch, row: usize) -> Option<SessionPlace> {
    let text = |n: &str| b.column_by_name(n)?.as_string_opt::<i32>().map(|a| a.value(row).to_string());
    let ts = |n: &str| b.column_by_name(n)?.as_primitive_opt::<TimestampMillisecondType>().map(|a| a.value(row));
    Some((text("project")?, text("device_id")?, ts("started_at")?, ts("ended_at")?))
}

impl SessionIndex {
    /// The session `id` in `snap`.
    pub fn find(&self, snap: &Snapshot, id: &str) -> Option<SessionPlace> {
        let batches = snap.batches("sessions")?;
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<SegmentKey> = batches.iter().filter_map(key).collect();
        if segments.len() > live.len() * 2 + 16 {
            segments.retain(|k, _| live.contains(k));
        }
        for b in batches {
            let Some(k) = key(b) else { continue };
            let map = segments
                .entry(k)
                .or_insert_with(|| {
                    let ids = b.column_by_name("session_id").and_then(|c| c.as_string_opt::<i32>());
                    let mut m = HashMap::with_capacity(b.num_rows());
                    if let Some(ids) = ids {
                        for row in 0..ids.len() {
                            if ids.is_valid(row) {
                                m.insert(ids.value(row).to_string(), row);
                            }
                        }
                    }
                    Arc::new(m)
                })
                .clone();
            if let Some(&row) = map.get(id) {
                return place(b, row);
            }
        }
        None
    }

    /// Segments indexed (for tests and metrics).
    pub fn segments(&self) -> usize {
        self.segments.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(ids: &[&str]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("session_id", DataType::Utf8, false),
            Field::new("project", DataType::Utf8, false),
            Field::new("device_id", DataType::Utf8, false),
            Field::new("started_at", ts.clone(), false),
            Field::new("ended_at", ts, false),
        ]));
        let n = ids.len();
        let devices: Vec<String> = ids.iter().map(|i| format!("dev-{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(StringArray::from(vec!["demo"; n])),
                Arc::new(StringArray::from(devices)),
                Arc::new(TimestampMillisecondArray::from(vec![1; n])),
                Arc::new(TimestampMillisecondArray::from(vec![2; n])),
            ],
        )
        .unwrap()
    }

    fn snapshot(batches: Vec<RecordBatch>) -> Snapshot {
        let schema = batches[0].schema();
        Snapshot {
            as_of: 1,
            complete: false,
            tables: vec![("sessions", schema, batches)],
            state: Default::default(),
            build_us: 0,
            sessions_left: 0,
        }
    }

    #[test]
    fn sessions_are_found_per_segment_and_segments_are_indexed_once() {
        let old = batch(&["a", "b", "c"]);
        let idx = SessionIndex::default();
        let s1 = snapshot(vec![old.clone()]);
        assert_eq!(idx.find(&s1, "b").unwrap().1, "dev-b");
        assert!(idx.find(&s1, "z").is_none());
        assert_eq!(idx.segments(), 1);
        // The next snapshot shares the old segment, adds one, and slices a row out.
        let s2 = snapshot(vec![old.slice(1, 2), batch(&["d"])]);
        assert_eq!(idx.find(&s2, "d").unwrap().1, "dev-d");
        assert_eq!(idx.find(&s2, "c").unwrap().1, "dev-c");
        assert!(idx.find(&s2, "a").is_none(), "sliced out");
        assert_eq!(idx.find(&s1, "a").unwrap().1, "dev-a", "the old snapshot still finds it");
        assert_eq!(idx.segments(), 3);
    }
}
