//! The publisher's materialised views, and their Arrow form.
//!
//! [`Tables`] accumulates the changes the dataflow emits; [`Tables::table`] turns one
//! view into an Arrow record batch. Each view's batch is rebuilt only when that view
//! changed since the last snapshot.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use differential_dataflow::difference::Semigroup;
use sightflow_operators::rows::*;
use sightflow_operators::stats::StateSize;
use sightflow_operators::{Params, Sym, Views};

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
    use std::collections::hash_map::Entry;
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
    pub sessions: HashMap<SessionRow, isize>,
    pub page_views: HashMap<PageViewRow, isize>,
    pub rage_clicks: HashMap<RageRow, isize>,
    pub dead_clicks: HashMap<DeadRow, isize>,
    pub error_clicks: HashMap<ErrorClickRow, isize>,
    pub quick_backs: HashMap<QuickBackRow, isize>,
    pub excessive_scrolls: HashMap<EpisodeRow, isize>,
    pub thrashed_cursors: HashMap<EpisodeRow, isize>,
    pub heatmap_cells: HashMap<HeatRow, isize>,
    pub scroll_depth: HashMap<DepthRow, isize>,
    pub session_funnels: HashMap<FunnelRow, isize>,
    pub funnel_steps: HashMap<FunnelStepRow, isize>,
    pub page_stats: HashMap<PageKey, PageAgg>,
    pub errors: HashMap<ErrKey, ErrAgg>,
    dirty: [bool; 14],
}

impl Tables {
    pub fn apply(&mut self, u: Update) {
        let i = match u {
            Update::Session(r, d) => {
                add(&mut self.sessions, r, d);
                0
            }
            Update::PageView(r, d) => {
                add(&mut self.page_views, r, d);
                1
            }
            Update::Rage(r, d) => {
                add(&mut self.rage_clicks, r, d);
                2
            }
            Update::Dead(r, d) => {
                add(&mut self.dead_clicks, r, d);
                3
            }
            Update::ErrorClick(r, d) => {
                add(&mut self.error_clicks, r, d);
                4
            }
            Update::QuickBack(r, d) => {
                add(&mut self.quick_backs, r, d);
                5
            }
            Update::Scroll(r, d) => {
                add(&mut self.excessive_scrolls, r, d);
                6
            }
            Update::Thrash(r, d) => {
                add(&mut self.thrashed_cursors, r, d);
                7
            }
            Update::Heat(r, d) => {
                add(&mut self.heatmap_cells, r, d);
                8
            }
            Update::Depth(r, d) => {
                add(&mut self.scroll_depth, r, d);
                9
            }
            Update::SessionFunnel(r, d) => {
                add(&mut self.session_funnels, r, d);
                10
            }
            Update::FunnelStep(r, d) => {
                add(&mut self.funnel_steps, r, d);
                11
            }
            Update::PageStat(k, a) => {
                add(&mut self.page_stats, k, a);
                12
            }
            Update::Error(k, a) => {
                add(&mut self.errors, k, a);
                13
            }
        };
        self.dirty[i] = true;
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
        fn c<K: Ord + Clone, R: Clone>(m: &HashMap<K, R>) -> BTreeMap<K, R> {
            m.iter().map(|(k, r)| (k.clone(), r.clone())).collect()
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
            funnel_steps: c(&self.funnel_steps),
            page_stats: c(&self.page_stats),
            errors: c(&self.errors),
        }
    }

    /// Takes the set of views changed since the last call.
    pub fn take_dirty(&mut self) -> [bool; 14] {
        std::mem::take(&mut self.dirty)
    }
}

fn s(sym: Sym) -> String {
    sym.as_string()
}

fn opt(sym: Sym) -> Option<String> {
    if sym.is_empty() { None } else { Some(sym.as_string()) }
}

fn ts_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false)
}

fn ts_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(v).with_timezone("UTC"))
}

fn str_array(v: impl Iterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn opt_str_array(v: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn i64_array(v: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn i32_array(v: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(v))
}

/// Rows of a multiset view, each repeated by its multiplicity, in a stable order.
fn expand<R: Copy + Ord>(m: &HashMap<R, isize>) -> Vec<R> {
    let mut v: Vec<R> = m.iter().flat_map(|(r, n)| std::iter::repeat_n(*r, (*n).max(0) as usize)).collect();
    v.sort_unstable();
    v
}

fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("columns match their schema");
    (schema, batch)
}

fn sid(id: SessionId) -> String {
    session_id_string(id)
}

/// Builds one view's Arrow table.
pub fn build_table(t: &Tables, index: usize, params: &Params) -> (SchemaRef, RecordBatch) {
    use DataType::*;
    let f = |n: &str, d: DataType| Field::new(n, d, false);
    let fo = |n: &str, d: DataType| Field::new(n, d, true);
    match index {
        0 => {
            let rows = expand(&t.sessions);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.device))),
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
                    opt_str_array(rows.iter().map(|r| opt(r.entry_url))),
                    opt_str_array(rows.iter().map(|r| opt(r.exit_url))),
                    opt_str_array(rows.iter().map(|r| opt(r.browser))),
                    opt_str_array(rows.iter().map(|r| opt(r.os))),
                    opt_str_array(rows.iter().map(|r| opt(r.device_type))),
                    opt_str_array(rows.iter().map(|r| opt(r.country))),
                    i64_array(rows.iter().map(|r| r.quick_backs as i64)),
                    i64_array(rows.iter().map(|r| r.excessive_scrolls as i64)),
                    i64_array(rows.iter().map(|r| r.thrashed_cursors as i64)),
                    i64_array(rows.iter().map(|r| r.tabs as i64)),
                ],
            )
        }
        1 => {
            let rows = expand(&t.page_views);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.device))),
                    str_array(rows.iter().map(|r| s(r.tab))),
                    str_array(rows.iter().map(|r| s(r.url))),
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
        2 => {
            let rows = expand(&t.rage_clicks);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.url))),
                    ts_array(rows.iter().map(|r| r.ts)),
                    i32_array(rows.iter().map(|r| r.x)),
                    i32_array(rows.iter().map(|r| r.y)),
                    i64_array(rows.iter().map(|r| r.clicks as i64)),
                    str_array(rows.iter().map(|r| s(r.selector))),
                    ts_array(rows.iter().map(|r| r.end_ts)),
                ],
            )
        }
        3 => {
            let rows = expand(&t.dead_clicks);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.url))),
                    ts_array(rows.iter().map(|r| r.ts)),
                    i32_array(rows.iter().map(|r| r.x)),
                    i32_array(rows.iter().map(|r| r.y)),
                    str_array(rows.iter().map(|r| s(r.selector))),
                    str_array(rows.iter().map(|r| s(r.tag))),
                ],
            )
        }
        4 => {
            let rows = expand(&t.error_clicks);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.url))),
                    ts_array(rows.iter().map(|r| r.ts)),
                    str_array(rows.iter().map(|r| s(r.selector))),
                    str_array(rows.iter().map(|r| s(r.message))),
                    i32_array(rows.iter().map(|r| r.x)),
                    i32_array(rows.iter().map(|r| r.y)),
                    ts_array(rows.iter().map(|r| r.error_ts)),
                ],
            )
        }
        5 => {
            let rows = expand(&t.quick_backs);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.url))),
                    ts_array(rows.iter().map(|r| r.ts)),
                    i64_array(rows.iter().map(|r| r.dwell_ms)),
                    str_array(rows.iter().map(|r| s(r.from_url))),
                ],
            )
        }
        6 | 7 => {
            let rows = expand(if index == 6 { &t.excessive_scrolls } else { &t.thrashed_cursors });
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.url))),
                    ts_array(rows.iter().map(|r| r.ts)),
                    i64_array(rows.iter().map(|r| r.reversals as i64)),
                    ts_array(rows.iter().map(|r| r.end_ts)),
                ],
            )
        }
        8 => {
            let mut rows: Vec<(HeatRow, isize)> = t.heatmap_cells.iter().map(|(k, n)| (*k, *n)).collect();
            rows.sort_unstable();
            batch(
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
                    str_array(rows.iter().map(|r| s(r.0.project))),
                    str_array(rows.iter().map(|r| s(r.0.url))),
                    str_array(rows.iter().map(|r| r.0.kind.as_str().to_string())),
                    i32_array(rows.iter().map(|r| r.0.viewport_bucket as i32)),
                    i32_array(rows.iter().map(|r| r.0.cell_x)),
                    i32_array(rows.iter().map(|r| r.0.cell_y)),
                    i64_array(rows.iter().map(|r| r.1 as i64)),
                ],
            )
        }
        9 => {
            let mut rows: Vec<(DepthRow, isize)> = t.scroll_depth.iter().map(|(k, n)| (*k, *n)).collect();
            rows.sort_unstable();
            batch(
                vec![f("project", Utf8), f("url", Utf8), f("depth_pct", Int32), f("sessions", Int64)],
                vec![
                    str_array(rows.iter().map(|r| s(r.0.project))),
                    str_array(rows.iter().map(|r| s(r.0.url))),
                    i32_array(rows.iter().map(|r| r.0.depth_pct as i32)),
                    i64_array(rows.iter().map(|r| r.1 as i64)),
                ],
            )
        }
        10 => {
            let rows = expand(&t.session_funnels);
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
                    str_array(rows.iter().map(|r| sid(r.session))),
                    str_array(rows.iter().map(|r| s(r.project))),
                    str_array(rows.iter().map(|r| s(r.device))),
                    str_array(rows.iter().map(|r| name(r.funnel))),
                    i64_array(rows.iter().map(|r| r.steps as i64)),
                ],
            )
        }
        11 => {
            // Every configured step of every (project, funnel) seen, zero counts included.
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
        12 => {
            let mut rows: Vec<(PageKey, PageAgg)> =
                t.page_stats.iter().filter(|(_, a)| a.views > 0).map(|(k, a)| (*k, *a)).collect();
            rows.sort_unstable();
            batch(
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
                vec![
                    str_array(rows.iter().map(|r| s(r.0.project))),
                    str_array(rows.iter().map(|r| s(r.0.url))),
                    i64_array(rows.iter().map(|r| r.1.views)),
                    i64_array(rows.iter().map(|r| r.1.visitors)),
                    Arc::new(Float64Array::from_iter_values(
                        rows.iter().map(|r| r.1.duration_ms as f64 / r.1.views.max(1) as f64),
                    )),
                    i64_array(rows.iter().map(|r| r.1.exits)),
                    i64_array(rows.iter().map(|r| r.1.bounces)),
                    i64_array(rows.iter().map(|r| r.1.duration_ms)),
                ],
            )
        }
        13 => {
            let mut rows: Vec<(ErrKey, ErrAgg)> =
                t.errors.iter().filter(|(_, a)| a.occurrences > 0).map(|(k, a)| (*k, *a)).collect();
            rows.sort_unstable();
            batch(
                vec![
                    f("project", Utf8),
                    f("fingerprint", Utf8),
                    f("message", Utf8),
                    f("occurrences", Int64),
                    f("sessions", Int64),
                    ts_field("first_seen"),
                    ts_field("last_seen"),
                ],
                vec![
                    str_array(rows.iter().map(|r| s(r.0.project))),
                    str_array(rows.iter().map(|r| format!("{:016x}", r.0.fingerprint))),
                    str_array(rows.iter().map(|r| s(r.1.first_message))),
                    i64_array(rows.iter().map(|r| r.1.occurrences)),
                    i64_array(rows.iter().map(|r| r.1.sessions)),
                    ts_array(rows.iter().map(|r| r.1.first_ts)),
                    ts_array(rows.iter().map(|r| r.1.last_ts)),
                ],
            )
        }
        _ => unreachable!("no table {index}"),
    }
}

/// The `sightflow_state` table: state held per view.
pub fn state_table(state: &BTreeMap<String, StateSize>) -> (SchemaRef, RecordBatch) {
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
