//! The generic store of a published view, and its Arrow form kept across snapshots.
//!
//! Each view is a [`View`]: the rows the dataflow's changes add up to, and their Arrow
//! form as a list of immutable *segments*. A snapshot never rebuilds a view from scratch:
//! rows that changed since the last snapshot are built into one new small segment, and
//! the rows they replace are cut out of their old segments by slicing (zero copy).
//! Segments of similar size are merged by concatenating their live rows (no re-encoding),
//! so a view of N rows is a few dozen batches and each row is copied O(log N) times over
//! its life. The cost of a snapshot follows what changed, not the size of the views.
//!
//! The store knows no view: a [`Spec`] says how a view's rows become Arrow (see
//! [`crate::schema`], which derives every view's spec from the registry).

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use differential_dataflow::difference::{IsZero, Semigroup};
use sightflow_operators::{FastMap, Params};

/// How one view's rows become Arrow: its row and difference types, how many table rows
/// a key shows as, and the columns.
pub trait Spec: 'static {
    /// A key of the view (a row, for row views).
    type Row: Copy + Eq + Hash + Ord;
    /// What the dataflow's changes to a key add up to (a multiplicity or an aggregate).
    type Diff: Semigroup + Copy;
    /// Table rows a key with this difference shows as (its multiplicity for row views,
    /// one or none for aggregates).
    fn shown(d: &Self::Diff) -> u32;
    /// The table of `rows`, each key repeated `shown` times, in the given order.
    fn build(rows: &[(Self::Row, Self::Diff)], params: &Params) -> RecordBatch;
    /// Views whose key shows as at most one row and whose difference is that row's
    /// value (counts, aggregates) name their first value column: a changed value is
    /// patched in place (the segment's value columns are rebuilt, its key columns
    /// shared) instead of moving the row to a new segment.
    const VALUES_FROM: Option<usize> = None;
    /// The value columns (from `VALUES_FROM` on) of rows with these differences.
    fn values(_diffs: &[Self::Diff], _params: &Params) -> Vec<ArrayRef> {
        Vec::new()
    }
}

/// Where a key's rows sit: a segment and a run of rows in it.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seg: u32,
    start: u32,
    len: u32,
}

/// A slot whose key's current rows are not in any segment (changed since the last
/// snapshot, or showing no rows).
const UNBUILT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Held<R> {
    diff: R,
    /// Index of the key's [`Loc`] in `View::slots`: segments refer to rows by slot, so
    /// moving rows between segments needs no hashing of keys.
    slot: u32,
    /// Listed in `View::changed`.
    pending: bool,
}

/// An immutable batch of rows, some of which may have been replaced since.
struct Segment<R> {
    batch: RecordBatch,
    /// For views patched in place: each row's difference, row-aligned with `batch`.
    diffs: Vec<R>,
    /// `diffs` changed since the value columns were built.
    patched: bool,
    /// The slots built into `batch`, in row order; a slot's rows are live here while its
    /// `Loc` points here.
    slots: Vec<u32>,
    /// Runs of rows replaced since the segment was built.
    dead: Vec<(u32, u32)>,
    /// Rows still live.
    valid: u32,
    /// The live rows as zero-copy slices of `batch`, until the next change.
    published: Option<Vec<RecordBatch>>,
}

impl<R> Segment<R> {
    fn new(batch: RecordBatch, slots: Vec<u32>, diffs: Vec<R>) -> Segment<R> {
        let valid = batch.num_rows() as u32;
        Segment { batch, diffs, patched: false, slots, dead: Vec::new(), valid, published: None }
    }

    /// More dead rows than live ones, or cut into too many slices: keep only the live rows.
    fn needs_compaction(&self) -> bool {
        !self.dead.is_empty() && (self.valid * 2 < self.batch.num_rows() as u32 || self.dead.len() >= MAX_RUNS)
    }
}

/// The rows of `batch` outside the `dead` runs, as zero-copy slices.
fn slices(batch: &RecordBatch, dead: &[(u32, u32)]) -> Vec<RecordBatch> {
    if dead.is_empty() {
        return vec![batch.clone()];
    }
    let rows = batch.num_rows() as u32;
    let mut dead = dead.to_vec();
    dead.sort_unstable();
    let mut out = Vec::with_capacity(dead.len() + 1);
    let mut at = 0u32;
    for (start, len) in dead {
        if start > at {
            out.push(batch.slice(at as usize, (start - at) as usize));
        }
        at = at.max(start + len);
    }
    if at < rows {
        out.push(batch.slice(at as usize, (rows - at) as usize));
    }
    out
}

/// A segment cut by this many replaced runs is rewritten with its live rows only.
const MAX_RUNS: usize = 32;
/// Segments are merged up to this many rows.
const MAX_SEGMENT_ROWS: u32 = 1 << 15;

/// One materialised view: its rows (key and accumulated difference) and their Arrow form
/// (see the module documentation).
pub struct View<S: Spec> {
    held: FastMap<S::Row, Held<S::Diff>>,
    slots: Vec<Loc>,
    free_slots: Vec<u32>,
    /// Keys changed since the last [`View::arrow`].
    changed: Vec<S::Row>,
    dirty: bool,
    /// Segments by id; ids grow with the age of the newest rows a segment was made from.
    segs: BTreeMap<u32, Segment<S::Diff>>,
    next_seg: u32,
    arrow: Option<(SchemaRef, Vec<RecordBatch>)>,
    work: ViewWork,
}

/// What keeping a view's Arrow form has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewWork {
    /// Rows built from keys (string resolution and all).
    pub built_rows: u64,
    /// Rows copied between segments (compaction and merges).
    pub copied_rows: u64,
    /// Segments now.
    pub segments: usize,
    /// Batches published now.
    pub batches: usize,
}

impl<S: Spec> Default for View<S> {
    fn default() -> Self {
        View {
            held: FastMap::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            changed: Vec::new(),
            dirty: true,
            segs: BTreeMap::new(),
            next_seg: 0,
            arrow: None,
            work: ViewWork::default(),
        }
    }
}

impl<S: Spec> View<S> {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The difference held for a key (`None`: it adds up to zero).
    pub fn get(&self, k: &S::Row) -> Option<&S::Diff> {
        self.held.get(k).map(|h| &h.diff)
    }

    /// Every key held and its difference, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&S::Row, &S::Diff)> {
        self.held.iter().map(|(k, h)| (k, &h.diff))
    }

    /// Every key held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &S::Row> {
        self.held.keys()
    }

    /// Bytes the view holds: its table of keys at capacity, its slots, and every
    /// segment's Arrow buffers, differences and slot lists (dead rows included, until a
    /// compaction rewrites them).
    pub fn heap_bytes(&self) -> usize {
        let held = self.held.capacity() * (std::mem::size_of::<(S::Row, Held<S::Diff>)>() + 1);
        let slots = self.slots.capacity() * std::mem::size_of::<Loc>() + self.free_slots.capacity() * 4;
        let changed = self.changed.capacity() * std::mem::size_of::<S::Row>();
        let segs: usize = self
            .segs
            .values()
            .map(|g| {
                g.batch.get_array_memory_size()
                    + g.diffs.capacity() * std::mem::size_of::<S::Diff>()
                    + g.slots.capacity() * 4
                    + g.dead.capacity() * 8
            })
            .sum();
        held + slots + changed + segs
    }

    /// What keeping the Arrow form has cost, and its shape now.
    pub fn work(&self) -> ViewWork {
        ViewWork { segments: self.segs.len(), batches: self.arrow.as_ref().map_or(0, |(_, b)| b.len()), ..self.work }
    }

    /// Adds `r` to `k`; a key whose difference adds up to zero is gone.
    pub fn add(&mut self, k: S::Row, r: S::Diff) {
        self.dirty = true;
        match self.held.entry(k) {
            Entry::Occupied(mut e) => {
                let h = e.get_mut();
                let at = &mut self.slots[h.slot as usize];
                h.diff.plus_equals(&r);
                if S::VALUES_FROM.is_some() && at.seg != UNBUILT && !h.diff.is_zero() && S::shown(&h.diff) == at.len {
                    // Still one row: patch its value where it is.
                    let seg = self.segs.get_mut(&at.seg).expect("a built key's segment exists");
                    seg.diffs[at.start as usize] = h.diff;
                    seg.patched = true;
                    seg.published = None;
                    return;
                }
                cut(&mut self.slots, &mut self.segs, h.slot);
                if h.diff.is_zero() {
                    self.free_slots.push(h.slot);
                    e.remove();
                } else if !h.pending {
                    h.pending = true;
                    self.changed.push(k);
                }
            }
            Entry::Vacant(e) => {
                if !r.is_zero() {
                    let unbuilt = Loc { seg: UNBUILT, start: 0, len: 0 };
                    let slot = match self.free_slots.pop() {
                        Some(s) => {
                            self.slots[s as usize] = unbuilt;
                            s
                        }
                        None => {
                            self.slots.push(unbuilt);
                            self.slots.len() as u32 - 1
                        }
                    };
                    e.insert(Held { diff: r, slot, pending: true });
                    self.changed.push(k);
                }
            }
        }
    }

    /// Removes every key `gone` picks, whatever it adds up to; returns how many went.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&S::Row) -> bool) -> usize {
        let keys: Vec<S::Row> = self.held.keys().filter(|k| gone(k)).copied().collect();
        for k in &keys {
            let h = self.held.remove(k).expect("listed above");
            cut(&mut self.slots, &mut self.segs, h.slot);
            // A pending key stays listed in `changed`; building skips keys not held.
            self.free_slots.push(h.slot);
        }
        if !keys.is_empty() {
            self.dirty = true;
        }
        keys.len()
    }

    /// The view as Arrow batches (schema and live rows). Only rows changed since the
    /// last call are built; an unchanged view returns the same batches.
    pub fn arrow(&mut self, params: &Params) -> (SchemaRef, Vec<RecordBatch>) {
        if let (false, Some(a)) = (self.dirty, &self.arrow) {
            return a.clone();
        }
        self.dirty = false;
        self.build_changed(params);
        self.maintain(params);
        let schema = match &self.arrow {
            Some((s, _)) => s.clone(),
            None => S::build(&[], params).schema(),
        };
        let mut batches = Vec::new();
        for seg in self.segs.values_mut() {
            let live = seg.published.get_or_insert_with(|| slices(&seg.batch, &seg.dead));
            batches.extend(live.iter().filter(|b| b.num_rows() > 0).cloned());
        }
        self.arrow = Some((schema.clone(), batches.clone()));
        (schema, batches)
    }

    /// Builds the changed keys' rows into new segments of at most [`MAX_SEGMENT_ROWS`]
    /// rows each (in batch mode every key has changed: one segment would be one batch of
    /// millions of rows, built in one go).
    fn build_changed(&mut self, params: &Params) {
        let mut changed = std::mem::take(&mut self.changed);
        let mut rows: Vec<(S::Row, S::Diff)> = Vec::with_capacity(changed.len().min(MAX_SEGMENT_ROWS as usize));
        let mut slots = Vec::with_capacity(rows.capacity());
        let mut shown = 0u32;
        for k in changed.drain(..) {
            // Keys gone since are not held any more.
            let Some(h) = self.held.get_mut(&k) else {
                continue;
            };
            if !h.pending {
                continue;
            }
            h.pending = false;
            let (d, slot) = (h.diff, h.slot);
            let n = S::shown(&d);
            if n > 0 {
                if shown > 0 && shown + n > MAX_SEGMENT_ROWS {
                    self.build_segment(&mut rows, &mut slots, params);
                    shown = 0;
                }
                rows.push((k, d));
                slots.push(slot);
                shown += n;
            }
        }
        self.build_segment(&mut rows, &mut slots, params);
        // Keep the list's room for the next snapshot's changes, not for the biggest
        // build ever (batch mode lists every key once: 144 B per session, held for good).
        if changed.capacity() > 4096 {
            changed.shrink_to(4096);
        }
        self.changed = changed;
    }

    /// Builds `rows` (with their `slots`) into one new segment; leaves both empty.
    fn build_segment(&mut self, rows: &mut Vec<(S::Row, S::Diff)>, slots: &mut Vec<u32>, params: &Params) {
        if rows.is_empty() {
            return;
        }
        let batch = S::build(rows, params);
        self.work.built_rows += batch.num_rows() as u64;
        let id = self.next_seg;
        self.next_seg += 1;
        let mut start = 0u32;
        for ((_, d), slot) in rows.iter().zip(slots.iter()) {
            let len = S::shown(d);
            self.slots[*slot as usize] = Loc { seg: id, start, len };
            start += len;
        }
        debug_assert_eq!(start as usize, batch.num_rows());
        let diffs = if S::VALUES_FROM.is_some() { rows.iter().map(|(_, d)| *d).collect() } else { Vec::new() };
        self.segs.insert(id, Segment::new(batch, std::mem::take(slots), diffs));
        rows.clear();
    }

    /// Drops empty segments, rewrites sparse or fragmented ones, and merges neighbours
    /// until each segment is bigger than the next newer one (or merging would pass
    /// [`MAX_SEGMENT_ROWS`]): like a binary counter, a view of N rows has O(log N) small
    /// segments and a row is copied O(log N) times.
    fn maintain(&mut self, params: &Params) {
        self.segs.retain(|_, s| s.valid > 0);
        if let Some(from) = S::VALUES_FROM {
            for seg in self.segs.values_mut().filter(|s| s.patched) {
                let mut cols = seg.batch.columns()[..from].to_vec();
                cols.extend(S::values(&seg.diffs, params));
                seg.batch = RecordBatch::try_new(seg.batch.schema(), cols).expect("value columns match the schema");
                seg.patched = false;
            }
        }
        let sparse: Vec<u32> = self.segs.iter().filter(|(_, s)| s.needs_compaction()).map(|(id, _)| *id).collect();
        for id in sparse {
            let seg = self.segs.remove(&id).expect("listed");
            let (batch, slots, diffs) = live_rows(&mut self.slots, id, seg, id, 0);
            self.work.copied_rows += batch.num_rows() as u64;
            self.segs.insert(id, Segment::new(batch, slots, diffs));
        }
        loop {
            let sizes: Vec<(u32, u32)> = self.segs.iter().map(|(id, s)| (*id, s.valid)).collect();
            let Some(pair) = sizes.windows(2).find(|w| {
                let (older, newer) = (w[0].1, w[1].1);
                older <= newer && older + newer <= MAX_SEGMENT_ROWS
            }) else {
                break;
            };
            let (a, b) = (pair[0].0, pair[1].0);
            let older = self.segs.remove(&a).expect("listed");
            let newer = self.segs.remove(&b).expect("listed");
            // The merged segment takes the older id, so segments stay in age order.
            let (ba, mut slots, mut diffs) = live_rows(&mut self.slots, a, older, a, 0);
            let (bb, sb, db) = live_rows(&mut self.slots, b, newer, a, ba.num_rows() as u32);
            slots.extend(sb);
            diffs.extend(db);
            let batch = concat_batches(&ba.schema(), [&ba, &bb]).expect("segments of one view share a schema");
            self.work.copied_rows += batch.num_rows() as u64;
            self.segs.insert(a, Segment::new(batch, slots, diffs));
        }
    }
}

/// Cuts a key's rows out of the segment they were built into (they are dead there
/// from now on); the key's slot is then unbuilt.
fn cut<R>(slots: &mut [Loc], segs: &mut BTreeMap<u32, Segment<R>>, slot: u32) {
    let at = &mut slots[slot as usize];
    if at.seg != UNBUILT {
        let seg = segs.get_mut(&at.seg).expect("a built key's segment exists");
        seg.dead.push((at.start, at.len));
        seg.valid -= at.len;
        seg.published = None;
        at.seg = UNBUILT;
    }
}

/// The live rows of segment `id` as a dense batch and their slots; their locations move
/// to segment `to`, starting at row `offset`.
fn live_rows<R: Copy>(
    locs: &mut [Loc],
    id: u32,
    seg: Segment<R>,
    to: u32,
    offset: u32,
) -> (RecordBatch, Vec<u32>, Vec<R>) {
    let Segment { batch, slots, dead, diffs, .. } = seg;
    if dead.is_empty() {
        // Every listed slot is live here and keeps its order: the rows stay as they are.
        if to != id || offset != 0 {
            for &slot in &slots {
                let at = &mut locs[slot as usize];
                at.seg = to;
                at.start += offset;
            }
        }
        return (batch, slots, diffs);
    }
    let mut indices: Vec<u32> = Vec::new();
    let mut live = Vec::with_capacity(slots.len());
    let mut live_diffs = Vec::new();
    let mut next = offset;
    for slot in slots {
        let at = &mut locs[slot as usize];
        // A slot listed here but pointing elsewhere was replaced (and maybe reused).
        if at.seg != id {
            continue;
        }
        indices.extend(at.start..at.start + at.len);
        if !diffs.is_empty() {
            live_diffs.extend_from_slice(&diffs[at.start as usize..(at.start + at.len) as usize]);
        }
        at.seg = to;
        at.start = next;
        next += at.len;
        live.push(slot);
    }
    let batch = take_record_batch(&batch, &UInt32Array::from(indices)).expect("live row indices are in range");
    (batch, live, live_diffs)
}

#[cfg(test)]
mod tests {
    use arrow::util::display::array_value_to_string;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::schema::specs;
    use sightflow_operators::Sym;
    use sightflow_operators::signals::heatmap::{HeatKind, HeatRow};
    use sightflow_operators::signals::page_stats::{PageAgg, PageKey};
    use sightflow_operators::signals::sessions::SessionRow;
    use std::collections::HashMap;

    fn params() -> Params {
        Params::from_config(&sightflow_config::Config::defaults())
    }

    /// Every row of `batches` as text, sorted: the table as a multiset.
    fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                let cells: Vec<String> =
                    b.columns().iter().map(|c| array_value_to_string(c, r).expect("displayable")).collect();
                out.push(cells.join("|"));
            }
        }
        out.sort();
        out
    }

    /// The view built from scratch: what the segments must add up to.
    fn from_scratch<S: Spec>(v: &View<S>, params: &Params) -> Vec<String> {
        let mut all: Vec<(S::Row, S::Diff)> =
            v.iter().map(|(k, d)| (*k, *d)).filter(|(_, d)| S::shown(d) > 0).collect();
        all.sort_unstable_by_key(|a| a.0);
        rows_of(&[S::build(&all, params)])
    }

    fn session(id: u64, events: u32) -> SessionRow {
        SessionRow {
            session: id,
            project: Sym::new("p"),
            device: Sym::new(&format!("d{}", id % 97)),
            started_at: id as i64,
            ended_at: id as i64 + events as i64,
            is_live: !events.is_multiple_of(3),
            page_views: 1,
            events,
            clicks: events / 2,
            rage_clicks: 0,
            dead_clicks: 0,
            error_clicks: 0,
            errors: 0,
            entry_url: Sym::new("/a"),
            exit_url: Sym::EMPTY,
            browser: Sym::new("Chrome"),
            os: Sym::EMPTY,
            device_type: Sym::EMPTY,
            country: Sym::EMPTY,
            quick_backs: 0,
            excessive_scrolls: 0,
            thrashed_cursors: 0,
            tabs: 1,
            user_id: Sym::EMPTY,
        }
    }

    #[test]
    fn segments_always_add_up_to_the_view() {
        let params = params();
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: View<specs::Sessions> = View::default();
        let mut current: HashMap<u64, u32> = HashMap::new();
        for round in 0..300 {
            // Mostly updates of recent sessions, some new ones, some closed for good,
            // now and then a duplicate row (multiplicity 2) and its retraction.
            for _ in 0..rng.random_range(0..60) {
                let id = rng.random_range(0..(round * 20 + 50));
                match current.get(&id).copied() {
                    Some(e) if rng.random_bool(0.1) => {
                        v.add(session(id, e), -1);
                        current.remove(&id);
                    }
                    Some(e) => {
                        v.add(session(id, e), -1);
                        v.add(session(id, e + 1), 1);
                        current.insert(id, e + 1);
                    }
                    None => {
                        v.add(session(id, 1), 1);
                        current.insert(id, 1);
                    }
                }
            }
            if rng.random_bool(0.05) {
                let s = session(1_000_000 + round, 5);
                v.add(s, 2);
                if rng.random_bool(0.5) {
                    v.add(s, -1);
                }
            }
            // Now and then every row of some sessions leaves, built or not.
            if round % 25 == 24 {
                let m = round % 7;
                let held = v.len();
                let gone = v.remove_where(|k| k.session % 7 == m);
                current.retain(|id, _| id % 7 != m);
                assert_eq!(v.len(), held - gone);
                assert!(v.iter().all(|(k, _)| k.session % 7 != m));
            }
            let (_, batches) = v.arrow(&params);
            assert_eq!(rows_of(&batches), from_scratch(&v, &params), "round {round}");
        }
        let w = v.work();
        assert!(w.segments >= 2, "{w:?}");
    }

    #[test]
    fn aggregates_that_show_no_row_leave_the_table() {
        let params = params();
        let mut v: View<specs::PageStats> = View::default();
        let key = PageKey { project: Sym::new("p"), url: Sym::new("/x") };
        let view = PageAgg { views: 1, duration_ms: 10, visitors: 1, ..PageAgg::default() };
        v.add(key, view);
        assert_eq!(v.arrow(&params).1.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        // Views back to 0 but visitors still counted: held, not shown.
        v.add(key, PageAgg { views: -1, duration_ms: -10, ..PageAgg::default() });
        assert_eq!(v.len(), 1);
        assert_eq!(v.arrow(&params).1.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
        v.add(key, view);
        let (_, b) = v.arrow(&params);
        assert_eq!(rows_of(&b), from_scratch(&v, &params));
        assert!(rows_of(&b)[0].contains("|2|"), "{:?}", rows_of(&b));
    }

    #[test]
    fn what_a_view_holds_is_counted_and_released() {
        let params = params();
        let mut v: View<specs::Sessions> = View::default();
        assert_eq!(v.heap_bytes(), 0);
        for id in 0..20_000 {
            v.add(session(id, 1), 1);
        }
        v.arrow(&params);
        let full = v.heap_bytes();
        let arrow: usize = v.segs.values().map(|g| g.batch.get_array_memory_size()).sum();
        // The key table and the Arrow form: each at least a few bytes per row.
        assert!(arrow > 20_000 * 16 && full > arrow + 20_000 * 16, "{full} bytes, {arrow} of them Arrow");
        for id in 0..20_000 {
            v.add(session(id, 1), -1);
        }
        v.arrow(&params);
        // The Arrow form goes with the rows.
        assert!(v.heap_bytes() <= full - arrow, "{} bytes left of {full}", v.heap_bytes());
    }

    #[test]
    fn a_snapshot_costs_what_changed_not_the_view_size() {
        let params = params();
        let mut v: View<specs::Sessions> = View::default();
        let n = 100_000u64;
        for chunk in 0..100 {
            for id in chunk * 1000..(chunk + 1) * 1000 {
                v.add(session(id, 1), 1);
            }
            v.arrow(&params);
        }
        let before = v.work();
        assert_eq!(before.built_rows, n);
        // Segments grow geometrically up to the cap: few of them, each row copied a few
        // times (log2 of the view over the first segment's size).
        assert!(before.segments <= 2 * (n as usize / MAX_SEGMENT_ROWS as usize) + 8, "{before:?}");
        assert!(before.copied_rows <= 8 * n, "{before:?}");

        // An unchanged view is not rebuilt at all.
        let (_, same) = v.arrow(&params);
        assert_eq!(v.work(), before);

        // Ten changed sessions: ten rows built, the old rows cut out by slicing.
        for id in (0..n).step_by(10_000) {
            v.add(session(id, 1), -1);
            v.add(session(id, 2), 1);
        }
        let (_, after) = v.arrow(&params);
        let w = v.work();
        assert_eq!(w.built_rows - before.built_rows, 10);
        assert!(w.copied_rows - before.copied_rows < 1000, "{w:?} after {before:?}");
        assert_eq!(after.iter().map(|b| b.num_rows()).sum::<usize>(), n as usize);
        assert!(after.len() > same.len());
        assert_eq!(rows_of(&after), from_scratch(&v, &params));

        // Replacing most rows of the oldest segments rewrites them densely.
        for id in 0..n / 2 {
            v.add(session(id, if id % 10_000 == 0 { 2 } else { 1 }), -1);
        }
        let (_, b) = v.arrow(&params);
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), n as usize / 2);
        assert!(v.work().segments <= 2 * (n as usize / 2 / MAX_SEGMENT_ROWS as usize) + 8, "{:?}", v.work());
        assert_eq!(rows_of(&b), from_scratch(&v, &params));
    }

    /// Batch mode changes every key before its one snapshot: the build
    /// cuts it into segments of at most MAX_SEGMENT_ROWS rows, and the list of changed
    /// keys does not keep room for all of them afterwards.
    #[test]
    fn a_build_of_every_key_comes_in_capped_segments() {
        let params = params();
        let mut v: View<specs::Sessions> = View::default();
        let n = 2 * MAX_SEGMENT_ROWS as u64 + 100;
        for id in 0..n {
            v.add(session(id, 1), 1);
        }
        let (_, b) = v.arrow(&params);
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), n as usize);
        assert_eq!(b.len(), 3, "{:?}", b.iter().map(|b| b.num_rows()).collect::<Vec<_>>());
        assert!(b.iter().all(|b| b.num_rows() <= MAX_SEGMENT_ROWS as usize));
        assert!(v.changed.capacity() <= 4096, "{}", v.changed.capacity());
        assert_eq!(rows_of(&b), from_scratch(&v, &params));
        // And the segments stay right as keys change and leave.
        for id in (0..n).step_by(3) {
            v.add(session(id, 1), -1);
        }
        let (_, b) = v.arrow(&params);
        assert_eq!(rows_of(&b), from_scratch(&v, &params));
    }

    fn cell(i: u32) -> HeatRow {
        HeatRow {
            project: Sym::new("p"),
            url: Sym::new(&format!("/page/{}", i % 7)),
            kind: HeatKind::Click,
            viewport_bucket: 1,
            cell_x: (i / 7) as i32,
            cell_y: 0,
        }
    }

    #[test]
    fn counts_are_patched_in_place() {
        let params = params();
        let mut rng = StdRng::seed_from_u64(11);
        let mut v: View<specs::HeatmapCells> = View::default();
        for i in 0..20_000 {
            v.add(cell(i), 1);
        }
        v.arrow(&params);
        let before = v.work();
        // Counts of existing cells change: no row is built or moved.
        for _ in 0..50 {
            for _ in 0..500 {
                v.add(cell(rng.random_range(0..20_000)), 1);
            }
            let (_, b) = v.arrow(&params);
            assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 20_000);
        }
        let w = v.work();
        assert_eq!((w.built_rows, w.copied_rows), (before.built_rows, before.copied_rows), "{w:?}");
        assert_eq!(rows_of(&v.arrow(&params).1), from_scratch(&v, &params));
        // Cells that go to zero leave; new ones come; counts keep changing.
        for round in 0..100 {
            for _ in 0..200 {
                let c = cell(rng.random_range(0..25_000));
                let n = v.get(&c).copied().unwrap_or(0);
                v.add(c, if n > 0 && rng.random_bool(0.3) { -n } else { 1 });
            }
            let (_, b) = v.arrow(&params);
            assert_eq!(rows_of(&b), from_scratch(&v, &params), "round {round}");
        }
    }

    #[test]
    fn aggregates_keep_up_under_churn() {
        let params = params();
        let mut rng = StdRng::seed_from_u64(5);
        let mut v: View<specs::PageStats> = View::default();
        for round in 0..200 {
            for _ in 0..50 {
                let key = PageKey { project: Sym::new("p"), url: Sym::new(&format!("/u{}", rng.random_range(0..400))) };
                let views = match v.get(&key) {
                    Some(a) if a.views > 0 && rng.random_bool(0.2) => -a.views,
                    _ => 1,
                };
                v.add(key, PageAgg { views, duration_ms: 7 * views, visitors: 1, ..PageAgg::default() });
            }
            let (_, b) = v.arrow(&params);
            assert_eq!(rows_of(&b), from_scratch(&v, &params), "round {round}");
        }
    }
}
