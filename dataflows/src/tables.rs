//! The publisher's materialised views, and their Arrow form kept across snapshots.
//!
//! Each view is a [`View`]: the rows the dataflow's changes add up to, and their Arrow
//! form as a list of immutable *segments*. A snapshot never rebuilds a view from scratch:
//! rows that changed since the last snapshot are built into one new small segment, and
//! the rows they replace are cut out of their old segments by slicing (zero copy).
//! Segments of similar size are merged by concatenating their live rows (no re-encoding),
//! so a view of N rows is a few dozen batches and each row is copied O(log N) times over
//! its life. The cost of a snapshot follows what changed, not the size of the views.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use differential_dataflow::difference::{IsZero, Semigroup};
use sightflow_operators::FastMap;
use sightflow_operators::rows::*;
use sightflow_operators::stats::StateSize;
use sightflow_operators::{Params, Sym, Views};

/// A view's row type: its difference, how many table rows a key shows as, and how rows
/// become Arrow columns.
pub trait ViewRow: Copy + Eq + Hash + Ord {
    type Diff: Semigroup + Copy;
    /// Table rows a key with this difference shows as (its multiplicity for row views,
    /// one or none for aggregates).
    fn shown(d: &Self::Diff) -> u32;
    /// The table of `rows`, each key repeated `shown` times, in the given order.
    fn build(rows: &[(Self, Self::Diff)], params: &Params) -> RecordBatch;
    /// Views whose key shows as at most one row and whose difference is that row's
    /// value (counts, aggregates) name their first value column: a changed value is
    /// patched in place (the segment's value columns are rebuilt, its key columns
    /// shared) instead of moving the row to a new segment.
    const VALUES_FROM: Option<usize> = None;
    /// The value columns (from `VALUES_FROM` on) of rows with these differences.
    fn values(_diffs: &[Self::Diff]) -> Vec<ArrayRef> {
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
pub struct View<K, R> {
    held: FastMap<K, Held<R>>,
    slots: Vec<Loc>,
    free_slots: Vec<u32>,
    /// Keys changed since the last [`View::arrow`].
    changed: Vec<K>,
    dirty: bool,
    /// Segments by id; ids grow with the age of the newest rows a segment was made from.
    segs: BTreeMap<u32, Segment<R>>,
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

impl<K, R> Default for View<K, R> {
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

impl<K: Copy + Eq + Hash, R: Semigroup + Copy> View<K, R> {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn get(&self, k: &K) -> Option<&R> {
        self.held.get(k).map(|h| &h.diff)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &R)> {
        self.held.iter().map(|(k, h)| (k, &h.diff))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.held.keys()
    }

    /// What keeping the Arrow form has cost, and its shape now.
    pub fn work(&self) -> ViewWork {
        ViewWork { segments: self.segs.len(), batches: self.arrow.as_ref().map_or(0, |(_, b)| b.len()), ..self.work }
    }
}

impl<K: ViewRow> View<K, K::Diff> {
    /// Adds `r` to `k`; a key whose difference adds up to zero is gone.
    pub fn add(&mut self, k: K, r: K::Diff) {
        self.dirty = true;
        match self.held.entry(k) {
            Entry::Occupied(mut e) => {
                let h = e.get_mut();
                let at = &mut self.slots[h.slot as usize];
                h.diff.plus_equals(&r);
                if K::VALUES_FROM.is_some() && at.seg != UNBUILT && !h.diff.is_zero() && K::shown(&h.diff) == at.len {
                    // Still one row: patch its value where it is.
                    let seg = self.segs.get_mut(&at.seg).expect("a built key's segment exists");
                    seg.diffs[at.start as usize] = h.diff;
                    seg.patched = true;
                    seg.published = None;
                    return;
                }
                if at.seg != UNBUILT {
                    let seg = self.segs.get_mut(&at.seg).expect("a built key's segment exists");
                    seg.dead.push((at.start, at.len));
                    seg.valid -= at.len;
                    seg.published = None;
                    at.seg = UNBUILT;
                }
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

    /// The view as Arrow batches (schema and live rows). Only rows changed since the
    /// last call are built; an unchanged view returns the same batches.
    pub fn arrow(&mut self, params: &Params) -> (SchemaRef, Vec<RecordBatch>) {
        if let (false, Some(a)) = (self.dirty, &self.arrow) {
            return a.clone();
        }
        self.dirty = false;
        self.build_changed(params);
        self.maintain();
        let schema = match &self.arrow {
            Some((s, _)) => s.clone(),
            None => K::build(&[], params).schema(),
        };
        let mut batches = Vec::new();
        for seg in self.segs.values_mut() {
            let live = seg.published.get_or_insert_with(|| slices(&seg.batch, &seg.dead));
            batches.extend(live.iter().filter(|b| b.num_rows() > 0).cloned());
        }
        self.arrow = Some((schema.clone(), batches.clone()));
        (schema, batches)
    }

    /// Builds the changed keys' rows into one new segment.
    fn build_changed(&mut self, params: &Params) {
        let mut rows: Vec<(K, K::Diff)> = Vec::with_capacity(self.changed.len());
        let mut slots = Vec::with_capacity(self.changed.len());
        for k in self.changed.drain(..) {
            // Keys gone since are not held any more.
            let Some(h) = self.held.get_mut(&k) else {
                continue;
            };
            if !h.pending {
                continue;
            }
            h.pending = false;
            if K::shown(&h.diff) > 0 {
                rows.push((k, h.diff));
                slots.push(h.slot);
            }
        }
        if rows.is_empty() {
            return;
        }
        let batch = K::build(&rows, params);
        self.work.built_rows += batch.num_rows() as u64;
        let id = self.next_seg;
        self.next_seg += 1;
        let mut start = 0u32;
        for ((_, d), slot) in rows.iter().zip(&slots) {
            let len = K::shown(d);
            self.slots[*slot as usize] = Loc { seg: id, start, len };
            start += len;
        }
        debug_assert_eq!(start as usize, batch.num_rows());
        let diffs = if K::VALUES_FROM.is_some() { rows.iter().map(|(_, d)| *d).collect() } else { Vec::new() };
        self.segs.insert(id, Segment::new(batch, slots, diffs));
    }

    /// Drops empty segments, rewrites sparse or fragmented ones, and merges neighbours
    /// until each segment is bigger than the next newer one (or merging would pass
    /// [`MAX_SEGMENT_ROWS`]): like a binary counter, a view of N rows has O(log N) small
    /// segments and a row is copied O(log N) times.
    fn maintain(&mut self) {
        self.segs.retain(|_, s| s.valid > 0);
        if let Some(from) = K::VALUES_FROM {
            for seg in self.segs.values_mut().filter(|s| s.patched) {
                let mut cols = seg.batch.columns()[..from].to_vec();
                cols.extend(K::values(&seg.diffs));
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

/// One change to one view.
#[derive(Clone, Debug)]
pub enum Update {
    Session(SessionRow, isize),
    PageView(PageViewRow, isize),
    Rage(RageRow, isize),
    Dead(DeadRow, isize),
    ErrorClick(ErrorClickRow, isize),
    QuickBack(QuickBackRow, isize),
    Scroll(EpisodeRow, isize),
    Thrash(EpisodeRow, isize),
    Heat(HeatRow, isize),
    Depth(DepthRow, isize),
    SessionFunnel(FunnelRow, isize),
    FunnelStep(FunnelStepRow, isize),
    PageStat(PageKey, PageAgg),
    Error(ErrKey, ErrAgg),
}

/// The names of the published tables, in a stable order.
pub const TABLE_NAMES: &[&str] = &[
    "sessions",
    "page_views",
    "rage_clicks",
    "dead_clicks",
    "error_clicks",
    "quick_backs",
    "excessive_scrolls",
    "thrashed_cursors",
    "heatmap_cells",
    "scroll_depth",
    "session_funnels",
    "funnel_steps",
    "page_stats",
    "errors",
    "sightflow_state",
];

fn add<K: Eq + Hash, R: Semigroup>(map: &mut HashMap<K, R>, k: K, r: R) {
    match map.entry(k) {
        Entry::Occupied(mut e) => {
            e.get_mut().plus_equals(&r);
            if e.get().is_zero() {
                e.remove();
            }
        }
        Entry::Vacant(e) => {
            if !r.is_zero() {
                e.insert(r);
            }
        }
    }
}

/// Materialised state of every view.
#[derive(Default)]
pub struct Tables {
    pub sessions: View<SessionRow, isize>,
    pub page_views: View<PageViewRow, isize>,
    pub rage_clicks: View<RageRow, isize>,
    pub dead_clicks: View<DeadRow, isize>,
    pub error_clicks: View<ErrorClickRow, isize>,
    pub quick_backs: View<QuickBackRow, isize>,
    pub excessive_scrolls: View<EpisodeRow, isize>,
    pub thrashed_cursors: View<EpisodeRow, isize>,
    pub heatmap_cells: View<HeatRow, isize>,
    pub scroll_depth: View<DepthRow, isize>,
    pub session_funnels: View<FunnelRow, isize>,
    /// Raw step counts; published through `funnel_steps_table`.
    pub funnel_steps: HashMap<FunnelStepRow, isize>,
    pub page_stats: View<PageKey, PageAgg>,
    pub errors: View<ErrKey, ErrAgg>,
    /// `funnel_steps` is small and derived (zero rows included), so it is rebuilt whole
    /// when its inputs change.
    funnel_table: Option<(SchemaRef, Vec<RecordBatch>)>,
}

impl Tables {
    pub fn apply(&mut self, u: Update) {
        match u {
            Update::Session(r, d) => self.sessions.add(r, d),
            Update::PageView(r, d) => self.page_views.add(r, d),
            Update::Rage(r, d) => self.rage_clicks.add(r, d),
            Update::Dead(r, d) => self.dead_clicks.add(r, d),
            Update::ErrorClick(r, d) => self.error_clicks.add(r, d),
            Update::QuickBack(r, d) => self.quick_backs.add(r, d),
            Update::Scroll(r, d) => self.excessive_scrolls.add(r, d),
            Update::Thrash(r, d) => self.thrashed_cursors.add(r, d),
            Update::Heat(r, d) => self.heatmap_cells.add(r, d),
            Update::Depth(r, d) => self.scroll_depth.add(r, d),
            Update::SessionFunnel(r, d) => {
                self.funnel_table = None;
                self.session_funnels.add(r, d)
            }
            Update::FunnelStep(r, d) => {
                self.funnel_table = None;
                add(&mut self.funnel_steps, r, d)
            }
            Update::PageStat(k, a) => self.page_stats.add(k, a),
            Update::Error(k, a) => self.errors.add(k, a),
        }
    }

    /// Rows held, over all views.
    pub fn rows(&self) -> usize {
        self.sessions.len()
            + self.page_views.len()
            + self.rage_clicks.len()
            + self.dead_clicks.len()
            + self.error_clicks.len()
            + self.quick_backs.len()
            + self.excessive_scrolls.len()
            + self.thrashed_cursors.len()
            + self.heatmap_cells.len()
            + self.scroll_depth.len()
            + self.session_funnels.len()
            + self.funnel_steps.len()
            + self.page_stats.len()
            + self.errors.len()
    }

    /// The views as ordered maps, for comparison with the batch reference.
    pub fn to_views(&self) -> Views {
        fn c<K: ViewRow>(m: &View<K, K::Diff>) -> BTreeMap<K, K::Diff> {
            m.iter().map(|(k, r)| (*k, *r)).collect()
        }
        Views {
            sessions: c(&self.sessions),
            page_views: c(&self.page_views),
            rage_clicks: c(&self.rage_clicks),
            dead_clicks: c(&self.dead_clicks),
            error_clicks: c(&self.error_clicks),
            quick_backs: c(&self.quick_backs),
            excessive_scrolls: c(&self.excessive_scrolls),
            thrashed_cursors: c(&self.thrashed_cursors),
            heatmap_cells: c(&self.heatmap_cells),
            scroll_depth: c(&self.scroll_depth),
            session_funnels: c(&self.session_funnels),
            funnel_steps: self.funnel_steps.iter().map(|(k, r)| (*k, *r)).collect(),
            page_stats: c(&self.page_stats),
            errors: c(&self.errors),
        }
    }

    /// Table `index` of [`TABLE_NAMES`] (not `sightflow_state`) as Arrow batches, built
    /// from what changed since the last call.
    pub fn arrow(&mut self, index: usize, params: &Params) -> (SchemaRef, Vec<RecordBatch>) {
        match index {
            0 => self.sessions.arrow(params),
            1 => self.page_views.arrow(params),
            2 => self.rage_clicks.arrow(params),
            3 => self.dead_clicks.arrow(params),
            4 => self.error_clicks.arrow(params),
            5 => self.quick_backs.arrow(params),
            6 => self.excessive_scrolls.arrow(params),
            7 => self.thrashed_cursors.arrow(params),
            8 => self.heatmap_cells.arrow(params),
            9 => self.scroll_depth.arrow(params),
            10 => self.session_funnels.arrow(params),
            11 => {
                if self.funnel_table.is_none() {
                    let b = funnel_steps_table(self, params);
                    self.funnel_table = Some((b.schema(), vec![b]));
                }
                self.funnel_table.clone().expect("built")
            }
            12 => self.page_stats.arrow(params),
            13 => self.errors.arrow(params),
            _ => unreachable!("no table {index}"),
        }
    }
}

fn s(sym: Sym) -> String {
    sym.as_string()
}

/// A column of symbols, resolved straight into the array's buffer.
fn sym_array<R>(rows: &[R], f: impl Fn(&R) -> Sym) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for r in rows {
        match f(r).resolve() {
            Some(v) => b.append_value(&*v),
            None => b.append_value(""),
        }
    }
    Arc::new(b.finish())
}

/// A nullable column of symbols: the empty symbol is null.
fn opt_sym_array<R>(rows: &[R], f: impl Fn(&R) -> Sym) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for r in rows {
        let sym = f(r);
        match sym.resolve() {
            Some(v) if !sym.is_empty() => b.append_value(&*v),
            _ => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// A column of session ids as [`session_id_string`] writes them.
fn sid_array<R>(rows: &[R], f: impl Fn(&R) -> SessionId) -> ArrayRef {
    use std::fmt::Write;
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for r in rows {
        write!(b, "{:016x}", f(r)).expect("writing to a string builder");
        b.append_value("");
    }
    Arc::new(b.finish())
}

fn ts_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false)
}

fn ts_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(v).with_timezone("UTC"))
}

fn str_array<S: AsRef<str>>(v: impl Iterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn i64_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn i32_array(v: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(v))
}

/// Rows of a multiset view, each repeated by its multiplicity.
fn expand<R: Copy>(rows: &[(R, isize)]) -> Vec<R> {
    rows.iter().flat_map(|(r, n)| std::iter::repeat_n(*r, (*n).max(0) as usize)).collect()
}

fn multiplicity(n: &isize) -> u32 {
    (*n).max(0) as u32
}

fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> RecordBatch {
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, cols).expect("columns match their schema")
}

/// The table of a view patched in place: its key columns, then [`ViewRow::values`].
fn keyed_batch<K: ViewRow>(fields: Vec<Field>, mut cols: Vec<ArrayRef>, rows: &[(K, K::Diff)]) -> RecordBatch {
    let diffs: Vec<K::Diff> = rows.iter().map(|(_, d)| *d).collect();
    cols.extend(K::values(&diffs));
    batch(fields, cols)
}

fn f(n: &str, d: DataType) -> Field {
    Field::new(n, d, false)
}

fn fo(n: &str, d: DataType) -> Field {
    Field::new(n, d, true)
}

impl ViewRow for SessionRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(SessionRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("device_id", Utf8),
                ts_field("started_at"),
                ts_field("ended_at"),
                f("duration_ms", Int64),
                f("is_live", Boolean),
                f("page_views", Int64),
                f("events", Int64),
                f("clicks", Int64),
                f("rage_clicks", Int64),
                f("dead_clicks", Int64),
                f("error_clicks", Int64),
                f("errors", Int64),
                fo("entry_url", Utf8),
                fo("exit_url", Utf8),
                fo("browser", Utf8),
                fo("os", Utf8),
                fo("device_type", Utf8),
                fo("country", Utf8),
                f("quick_backs", Int64),
                f("excessive_scrolls", Int64),
                f("thrashed_cursors", Int64),
                f("tabs", Int64),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.device),
                ts_array(rows.iter().map(|r| r.started_at)),
                ts_array(rows.iter().map(|r| r.ended_at)),
                i64_array(rows.iter().map(|r| r.ended_at - r.started_at)),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.is_live).collect::<Vec<_>>())),
                i64_array(rows.iter().map(|r| r.page_views as i64)),
                i64_array(rows.iter().map(|r| r.events as i64)),
                i64_array(rows.iter().map(|r| r.clicks as i64)),
                i64_array(rows.iter().map(|r| r.rage_clicks as i64)),
                i64_array(rows.iter().map(|r| r.dead_clicks as i64)),
                i64_array(rows.iter().map(|r| r.error_clicks as i64)),
                i64_array(rows.iter().map(|r| r.errors as i64)),
                opt_sym_array(&rows, |r| r.entry_url),
                opt_sym_array(&rows, |r| r.exit_url),
                opt_sym_array(&rows, |r| r.browser),
                opt_sym_array(&rows, |r| r.os),
                opt_sym_array(&rows, |r| r.device_type),
                opt_sym_array(&rows, |r| r.country),
                i64_array(rows.iter().map(|r| r.quick_backs as i64)),
                i64_array(rows.iter().map(|r| r.excessive_scrolls as i64)),
                i64_array(rows.iter().map(|r| r.thrashed_cursors as i64)),
                i64_array(rows.iter().map(|r| r.tabs as i64)),
            ],
        )
    }
}

impl ViewRow for PageViewRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(PageViewRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("device_id", Utf8),
                f("tab_id", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("duration_ms", Int64),
                f("max_scroll_y", Int32),
                f("deepest_visible_y", Int32),
                f("viewport_width", Int32),
                f("viewport_height", Int32),
                f("clicks", Int64),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.device),
                sym_array(&rows, |r| r.tab),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                i64_array(rows.iter().map(|r| r.duration_ms)),
                i32_array(rows.iter().map(|r| r.max_scroll_y)),
                i32_array(rows.iter().map(|r| r.deepest_visible_y)),
                i32_array(rows.iter().map(|r| r.viewport_width as i32)),
                i32_array(rows.iter().map(|r| r.viewport_height as i32)),
                i64_array(rows.iter().map(|r| r.clicks as i64)),
            ],
        )
    }
}

impl ViewRow for RageRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(RageRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("x", Int32),
                f("y", Int32),
                f("clicks", Int64),
                f("selector", Utf8),
                ts_field("end_ts"),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                i32_array(rows.iter().map(|r| r.x)),
                i32_array(rows.iter().map(|r| r.y)),
                i64_array(rows.iter().map(|r| r.clicks as i64)),
                sym_array(&rows, |r| r.selector),
                ts_array(rows.iter().map(|r| r.end_ts)),
            ],
        )
    }
}

impl ViewRow for DeadRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(DeadRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("x", Int32),
                f("y", Int32),
                f("selector", Utf8),
                f("tag", Utf8),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                i32_array(rows.iter().map(|r| r.x)),
                i32_array(rows.iter().map(|r| r.y)),
                sym_array(&rows, |r| r.selector),
                sym_array(&rows, |r| r.tag),
            ],
        )
    }
}

impl ViewRow for ErrorClickRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(ErrorClickRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("selector", Utf8),
                f("message", Utf8),
                f("x", Int32),
                f("y", Int32),
                ts_field("error_ts"),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                sym_array(&rows, |r| r.selector),
                sym_array(&rows, |r| r.message),
                i32_array(rows.iter().map(|r| r.x)),
                i32_array(rows.iter().map(|r| r.y)),
                ts_array(rows.iter().map(|r| r.error_ts)),
            ],
        )
    }
}

impl ViewRow for QuickBackRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(QuickBackRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("dwell_ms", Int64),
                f("from_url", Utf8),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                i64_array(rows.iter().map(|r| r.dwell_ms)),
                sym_array(&rows, |r| r.from_url),
            ],
        )
    }
}

impl ViewRow for EpisodeRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(EpisodeRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("url", Utf8),
                ts_field("ts"),
                f("reversals", Int64),
                ts_field("end_ts"),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.url),
                ts_array(rows.iter().map(|r| r.ts)),
                i64_array(rows.iter().map(|r| r.reversals as i64)),
                ts_array(rows.iter().map(|r| r.end_ts)),
            ],
        )
    }
}

impl ViewRow for HeatRow {
    type Diff = isize;
    fn shown(_d: &isize) -> u32 {
        1
    }
    fn build(rows: &[(HeatRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        keyed_batch(
            vec![
                f("project", Utf8),
                f("url", Utf8),
                f("kind", Utf8),
                f("viewport_bucket", Int32),
                f("cell_x", Int32),
                f("cell_y", Int32),
                f("count", Int64),
            ],
            vec![
                sym_array(rows, |r| r.0.project),
                sym_array(rows, |r| r.0.url),
                str_array(rows.iter().map(|r| r.0.kind.as_str())),
                i32_array(rows.iter().map(|r| r.0.viewport_bucket as i32)),
                i32_array(rows.iter().map(|r| r.0.cell_x)),
                i32_array(rows.iter().map(|r| r.0.cell_y)),
            ],
            rows,
        )
    }
    const VALUES_FROM: Option<usize> = Some(6);
    fn values(diffs: &[isize]) -> Vec<ArrayRef> {
        vec![i64_array(diffs.iter().map(|d| *d as i64))]
    }
}

impl ViewRow for DepthRow {
    type Diff = isize;
    fn shown(_d: &isize) -> u32 {
        1
    }
    fn build(rows: &[(DepthRow, isize)], _params: &Params) -> RecordBatch {
        use DataType::*;
        keyed_batch(
            vec![f("project", Utf8), f("url", Utf8), f("depth_pct", Int32), f("sessions", Int64)],
            vec![
                sym_array(rows, |r| r.0.project),
                sym_array(rows, |r| r.0.url),
                i32_array(rows.iter().map(|r| r.0.depth_pct as i32)),
            ],
            rows,
        )
    }
    const VALUES_FROM: Option<usize> = Some(3);
    fn values(diffs: &[isize]) -> Vec<ArrayRef> {
        vec![i64_array(diffs.iter().map(|d| *d as i64))]
    }
}

impl ViewRow for FunnelRow {
    type Diff = isize;
    fn shown(d: &isize) -> u32 {
        multiplicity(d)
    }
    fn build(rows: &[(FunnelRow, isize)], params: &Params) -> RecordBatch {
        use DataType::*;
        let rows = expand(rows);
        let name = |i: u32| params.funnels.get(i as usize).map_or_else(String::new, |f| f.name.clone());
        batch(
            vec![
                f("session_id", Utf8),
                f("project", Utf8),
                f("device_id", Utf8),
                f("funnel", Utf8),
                f("steps_reached", Int64),
            ],
            vec![
                sid_array(&rows, |r| r.session),
                sym_array(&rows, |r| r.project),
                sym_array(&rows, |r| r.device),
                str_array(rows.iter().map(|r| name(r.funnel))),
                i64_array(rows.iter().map(|r| r.steps as i64)),
            ],
        )
    }
}

/// `funnel_steps`: every configured step of every (project, funnel) seen, zero counts included.
fn funnel_steps_table(t: &Tables, params: &Params) -> RecordBatch {
    use DataType::*;
    let mut by: BTreeMap<(String, u32), BTreeMap<u32, i64>> = BTreeMap::new();
    for f in t.session_funnels.keys() {
        by.entry((s(f.project), f.funnel)).or_default();
    }
    for (r, n) in &t.funnel_steps {
        *by.entry((s(r.project), r.funnel)).or_default().entry(r.step).or_insert(0) += *n as i64;
    }
    let mut rows: Vec<(String, String, i64, String, i64, f64)> = Vec::new();
    for ((project, fi), counts) in by {
        let Some(spec) = params.funnels.get(fi as usize) else {
            continue;
        };
        let first = counts.get(&1).copied().unwrap_or(0);
        for step in 1..=spec.steps.len() as u32 {
            let n = counts.get(&step).copied().unwrap_or(0);
            let rate = if first > 0 { n as f64 / first as f64 } else { 0.0 };
            rows.push((
                project.clone(),
                spec.name.clone(),
                step as i64,
                spec.labels[step as usize - 1].clone(),
                n,
                rate,
            ));
        }
    }
    batch(
        vec![
            f("project", Utf8),
            f("funnel", Utf8),
            f("step", Int64),
            f("step_name", Utf8),
            f("entered", Int64),
            f("conversion_rate", Float64),
        ],
        vec![
            str_array(rows.iter().map(|r| r.0.clone())),
            str_array(rows.iter().map(|r| r.1.clone())),
            i64_array(rows.iter().map(|r| r.2)),
            str_array(rows.iter().map(|r| r.3.clone())),
            i64_array(rows.iter().map(|r| r.4)),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5))),
        ],
    )
}

impl ViewRow for PageKey {
    type Diff = PageAgg;
    fn shown(d: &PageAgg) -> u32 {
        u32::from(d.views > 0)
    }
    fn build(rows: &[(PageKey, PageAgg)], _params: &Params) -> RecordBatch {
        use DataType::*;
        keyed_batch(
            vec![
                f("project", Utf8),
                f("url", Utf8),
                f("page_views", Int64),
                f("visitors", Int64),
                f("avg_time_ms", Float64),
                f("exits", Int64),
                f("bounces", Int64),
                f("total_time_ms", Int64),
            ],
            vec![sym_array(rows, |r| r.0.project), sym_array(rows, |r| r.0.url)],
            rows,
        )
    }
    const VALUES_FROM: Option<usize> = Some(2);
    fn values(diffs: &[PageAgg]) -> Vec<ArrayRef> {
        vec![
            i64_array(diffs.iter().map(|a| a.views)),
            i64_array(diffs.iter().map(|a| a.visitors)),
            Arc::new(Float64Array::from_iter_values(
                diffs.iter().map(|a| a.duration_ms as f64 / a.views.max(1) as f64),
            )),
            i64_array(diffs.iter().map(|a| a.exits)),
            i64_array(diffs.iter().map(|a| a.bounces)),
            i64_array(diffs.iter().map(|a| a.duration_ms)),
        ]
    }
}

impl ViewRow for ErrKey {
    type Diff = ErrAgg;
    fn shown(d: &ErrAgg) -> u32 {
        u32::from(d.occurrences > 0)
    }
    fn build(rows: &[(ErrKey, ErrAgg)], _params: &Params) -> RecordBatch {
        use DataType::*;
        keyed_batch(
            vec![
                f("project", Utf8),
                f("fingerprint", Utf8),
                f("message", Utf8),
                f("occurrences", Int64),
                f("sessions", Int64),
                ts_field("first_seen"),
                ts_field("last_seen"),
            ],
            vec![sym_array(rows, |r| r.0.project), str_array(rows.iter().map(|r| format!("{:016x}", r.0.fingerprint)))],
            rows,
        )
    }
    const VALUES_FROM: Option<usize> = Some(2);
    fn values(diffs: &[ErrAgg]) -> Vec<ArrayRef> {
        vec![
            sym_array(diffs, |a| a.first_message),
            i64_array(diffs.iter().map(|a| a.occurrences)),
            i64_array(diffs.iter().map(|a| a.sessions)),
            ts_array(diffs.iter().map(|a| a.first_ts)),
            ts_array(diffs.iter().map(|a| a.last_ts)),
        ]
    }
}

/// The `sightflow_state` table: state held per view.
pub fn state_table(state: &BTreeMap<String, StateSize>) -> RecordBatch {
    batch(
        vec![
            Field::new("view", DataType::Utf8, false),
            Field::new("records", DataType::UInt64, false),
            Field::new("bytes", DataType::UInt64, false),
        ],
        vec![
            str_array(state.keys().cloned()),
            Arc::new(UInt64Array::from_iter_values(state.values().map(|s| s.records as u64))),
            Arc::new(UInt64Array::from_iter_values(state.values().map(|s| s.bytes as u64))),
        ],
    )
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::display::array_value_to_string;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

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
    fn from_scratch<K: ViewRow>(v: &View<K, K::Diff>, params: &Params) -> Vec<String> {
        let mut all: Vec<(K, K::Diff)> = v.iter().map(|(k, d)| (*k, *d)).filter(|(_, d)| K::shown(d) > 0).collect();
        all.sort_unstable_by_key(|a| a.0);
        rows_of(&[K::build(&all, params)])
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
        }
    }

    #[test]
    fn segments_always_add_up_to_the_view() {
        let params = params();
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: View<SessionRow, isize> = View::default();
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
            let (_, batches) = v.arrow(&params);
            assert_eq!(rows_of(&batches), from_scratch(&v, &params), "round {round}");
        }
        let w = v.work();
        assert!(w.segments >= 2, "{w:?}");
    }

    #[test]
    fn aggregates_that_show_no_row_leave_the_table() {
        let params = params();
        let mut v: View<PageKey, PageAgg> = View::default();
        let key = PageKey { project: Sym::new("p"), url: Sym::new("/x") };
        let view = PageAgg { views: 1, duration_ms: 10, exits: 0, bounces: 0, visitors: 1 };
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
    fn a_snapshot_costs_what_changed_not_the_view_size() {
        let params = params();
        let mut v: View<SessionRow, isize> = View::default();
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
        let mut v: View<HeatRow, isize> = View::default();
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
        let mut v: View<PageKey, PageAgg> = View::default();
        for round in 0..200 {
            for _ in 0..50 {
                let key = PageKey { project: Sym::new("p"), url: Sym::new(&format!("/u{}", rng.random_range(0..400))) };
                let views = match v.get(&key) {
                    Some(a) if a.views > 0 && rng.random_bool(0.2) => -a.views,
                    _ => 1,
                };
                v.add(key, PageAgg { views, duration_ms: 7 * views, exits: 0, bounces: 0, visitors: 1 });
            }
            let (_, b) = v.arrow(&params);
            assert_eq!(rows_of(&b), from_scratch(&v, &params), "round {round}");
        }
    }
}
