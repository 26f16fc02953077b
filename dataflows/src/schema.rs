//! Every view's table, derived from the registry: its [`Spec`] (how its rows become
//! Arrow, from the row type's [`Columns`]), the [`Tables`] that hold them all, and the
//! two tables that are not a view of rows (`funnel_steps`, built from its inputs, and
//! `sightflow_state`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Array, Float64Builder, Int32Builder, Int64Array, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMillisecondBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use differential_dataflow::difference::Semigroup;
use sightflow_operators::columns::{Cell, ColType, Column, Columns};
use sightflow_operators::stats::StateSize;
use sightflow_operators::{FastSet, Params, Sym, Update, ViewId, Views};

use crate::segments::{Spec, View};

/// The names of the published tables, in a stable order: every view, then
/// `sightflow_state`.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    ViewId::ALL.iter().map(|v| v.name()).chain(std::iter::once(STATE_TABLE))
}

/// The table of state sizes per view.
pub const STATE_TABLE: &str = "sightflow_state";

fn field(c: &Column) -> Field {
    let (ty, nullable) = match c.ty {
        ColType::Str | ColType::Session | ColType::Funnel | ColType::Hex | ColType::Label => (DataType::Utf8, false),
        ColType::OptStr => (DataType::Utf8, true),
        ColType::Ts => (DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        ColType::I64 => (DataType::Int64, false),
        ColType::I32 => (DataType::Int32, false),
        ColType::F64 => (DataType::Float64, false),
        ColType::OptI32 => (DataType::Int32, true),
        ColType::OptF64 => (DataType::Float64, true),
        ColType::Bool => (DataType::Boolean, false),
    };
    Field::new(c.name, ty, nullable)
}

/// One column of `rows`, cell `i` of each.
fn column<T>(rows: &[T], c: &Column, cell: impl Fn(&T) -> Cell, params: &Params) -> ArrayRef {
    let n = rows.len();
    match c.ty {
        ColType::Str | ColType::OptStr | ColType::Session | ColType::Funnel | ColType::Hex | ColType::Label => {
            use std::fmt::Write;
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for r in rows {
                match cell(r) {
                    Cell::Sym(s) if c.ty == ColType::OptStr && s.is_empty() => b.append_null(),
                    Cell::Sym(s) => match s.resolve() {
                        Some(v) => b.append_value(&*v),
                        None => b.append_value(""),
                    },
                    Cell::Session(id) | Cell::Hex(id) => {
                        write!(b, "{id:016x}").expect("writing to a string builder");
                        b.append_value("");
                    }
                    Cell::Funnel(i) => b.append_value(params.funnels.get(i as usize).map_or("", |f| f.name.as_str())),
                    Cell::Label(s) => b.append_value(s),
                    other => panic!("{}: {other:?} in a text column", c.name),
                }
            }
            Arc::new(b.finish())
        }
        ColType::Ts => {
            let mut b = TimestampMillisecondBuilder::with_capacity(n);
            for r in rows {
                let Cell::Ts(v) = cell(r) else { panic!("{}: not a time", c.name) };
                b.append_value(v);
            }
            Arc::new(b.finish().with_timezone("UTC"))
        }
        ColType::I64 => {
            let mut b = Int64Builder::with_capacity(n);
            for r in rows {
                let Cell::I64(v) = cell(r) else { panic!("{}: not an integer", c.name) };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
        ColType::I32 => {
            let mut b = Int32Builder::with_capacity(n);
            for r in rows {
                let Cell::I32(v) = cell(r) else { panic!("{}: not an integer", c.name) };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
        ColType::F64 => {
            let mut b = Float64Builder::with_capacity(n);
            for r in rows {
                let Cell::F64(v) = cell(r) else { panic!("{}: not a number", c.name) };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
        ColType::OptI32 => {
            let mut b = Int32Builder::with_capacity(n);
            for r in rows {
                let Cell::OptI32(v) = cell(r) else { panic!("{}: not an optional integer", c.name) };
                b.append_option(v);
            }
            Arc::new(b.finish())
        }
        ColType::OptF64 => {
            let mut b = Float64Builder::with_capacity(n);
            for r in rows {
                let Cell::OptF64(v) = cell(r) else { panic!("{}: not an optional number", c.name) };
                b.append_option(v);
            }
            Arc::new(b.finish())
        }
        ColType::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            for r in rows {
                let Cell::Bool(v) = cell(r) else { panic!("{}: not a boolean", c.name) };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
    }
}

fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns match their schema")
}

/// The key columns of `keys`.
fn key_columns<K: Columns>(keys: &[K], params: &Params) -> (Vec<Field>, Vec<ArrayRef>) {
    let fields = K::COLUMNS.iter().map(field).collect();
    let cols = K::COLUMNS.iter().enumerate().map(|(i, c)| column(keys, c, |k| k.cell(i), params)).collect();
    (fields, cols)
}

/// A multiset view: each row repeated by its multiplicity.
pub fn build_rows<K: Columns + Copy>(rows: &[(K, isize)], params: &Params) -> RecordBatch {
    let keys: Vec<K> = rows.iter().flat_map(|(r, n)| std::iter::repeat_n(*r, (*n).max(0) as usize)).collect();
    let (fields, cols) = key_columns(&keys, params);
    batch(fields, cols)
}

/// A counting view: one row per key and its count as column `name`.
pub fn build_counts<K: Columns + Copy>(rows: &[(K, isize)], name: &'static str, params: &Params) -> RecordBatch {
    let keys: Vec<K> = rows.iter().map(|(k, _)| *k).collect();
    let (mut fields, mut cols) = key_columns(&keys, params);
    fields.push(Field::new(name, DataType::Int64, false));
    cols.push(count_values(rows.iter().map(|(_, n)| *n)));
    batch(fields, cols)
}

fn count_values(v: impl Iterator<Item = isize>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v.map(|n| n as i64)))
}

/// An aggregate view: one row per key, the key's columns then the aggregate's.
pub fn build_aggs<K: Columns + Copy, A: Columns + Copy>(rows: &[(K, A)], params: &Params) -> RecordBatch {
    let keys: Vec<K> = rows.iter().map(|(k, _)| *k).collect();
    let (mut fields, mut cols) = key_columns(&keys, params);
    fields.extend(A::COLUMNS.iter().map(field));
    let aggs: Vec<A> = rows.iter().map(|(_, a)| *a).collect();
    cols.extend(agg_values(&aggs, params));
    batch(fields, cols)
}

fn agg_values<A: Columns>(aggs: &[A], params: &Params) -> Vec<ArrayRef> {
    A::COLUMNS.iter().enumerate().map(|(i, c)| column(aggs, c, |a| a.cell(i), params)).collect()
}

/// Every view's [`Spec`], named after its [`ViewId`].
pub mod specs {
    use super::*;

    macro_rules! declare_specs {
        ($($id:ident, $field:ident, $name:literal, $row:ty, $diff:ty, $shape:ident $(($vc:ident))?, $src:ident $(($out:ident))?;)*) => {
            $( declare_specs!(@spec $id, $row, $diff, $shape $(($vc))?); )*
        };
        (@spec $id:ident, $row:ty, $diff:ty, rows) => {
            #[doc = concat!("The spec of `", stringify!($id), "`.")]
            pub struct $id;
            impl Spec for $id {
                type Row = $row;
                type Diff = isize;
                fn shown(d: &isize) -> u32 {
                    (*d).max(0) as u32
                }
                fn build(rows: &[($row, isize)], params: &Params) -> RecordBatch {
                    build_rows(rows, params)
                }
            }
        };
        (@spec $id:ident, $row:ty, $diff:ty, count($vc:ident)) => {
            #[doc = concat!("The spec of `", stringify!($id), "`.")]
            pub struct $id;
            impl Spec for $id {
                type Row = $row;
                type Diff = isize;
                fn shown(_d: &isize) -> u32 {
                    1
                }
                fn build(rows: &[($row, isize)], params: &Params) -> RecordBatch {
                    build_counts(rows, stringify!($vc), params)
                }
                const VALUES_FROM: Option<usize> = Some(<$row as Columns>::COLUMNS.len());
                fn values(diffs: &[isize], _params: &Params) -> Vec<ArrayRef> {
                    vec![count_values(diffs.iter().copied())]
                }
            }
        };
        (@spec $id:ident, $row:ty, $diff:ty, agg) => {
            #[doc = concat!("The spec of `", stringify!($id), "`.")]
            pub struct $id;
            impl Spec for $id {
                type Row = $row;
                type Diff = $diff;
                fn shown(d: &$diff) -> u32 {
                    u32::from(sightflow_operators::columns::Aggregate::visible(d))
                }
                fn build(rows: &[($row, $diff)], params: &Params) -> RecordBatch {
                    build_aggs(rows, params)
                }
                const VALUES_FROM: Option<usize> = Some(<$row as Columns>::COLUMNS.len());
                fn values(diffs: &[$diff], params: &Params) -> Vec<ArrayRef> {
                    agg_values(diffs, params)
                }
            }
        };
        (@spec $id:ident, $row:ty, $diff:ty, derived) => {};
    }

    sightflow_operators::for_each_view!(declare_specs);
}

fn add<K: Eq + std::hash::Hash, R: Semigroup>(map: &mut HashMap<K, R>, k: K, r: R) {
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

macro_rules! declare_tables {
    ($($id:ident, $field:ident, $name:literal, $row:ty, $diff:ty, $shape:ident $(($vc:ident))?, $src:ident $(($out:ident))?;)*) => {
        /// Materialised state of every view.
        #[derive(Default)]
        pub struct Tables {
            $(#[doc = concat!("The `", $name, "` view.")] pub $field: declare_tables!(@ty $id, $row, $diff, $shape),)*
            /// Derived tables, rebuilt whole when their inputs change.
            derived: HashMap<ViewId, (SchemaRef, Vec<RecordBatch>)>,
        }

        impl Tables {
            /// Adds one change.
            pub fn apply(&mut self, u: Update) {
                if reads_into_derived(u.view()) {
                    self.derived.clear();
                }
                match u { $(Update::$id(r, d) => declare_tables!(@add self.$field, r, d, $shape),)* }
            }

            /// Whether `u` takes away a row that is not held: with `session.retention_ms`,
            /// a row of a session that has left the views.
            pub fn retracts_absent(&self, u: &Update) -> bool {
                match u { $(Update::$id(r, d) => declare_tables!(@absent self.$field, r, d, $shape),)* }
            }

            /// Removes every row of these sessions from the per-session views (the row
            /// views, each of which is keyed by its session); returns the rows removed.
            pub fn remove_sessions(&mut self, gone: &FastSet<u64>) -> usize {
                let n = 0 $(+ declare_tables!(@remove self.$field, gone, $shape))*;
                if n > 0 {
                    self.derived.clear();
                }
                n
            }

            /// Rows held, over all views.
            pub fn rows(&self) -> usize {
                0 $(+ self.$field.len())*
            }

            /// Bytes held, over all views: their rows and their Arrow form.
            pub fn heap_bytes(&self) -> usize {
                let derived: usize = self.derived.values().flat_map(|(_, b)| b).map(RecordBatch::get_array_memory_size).sum();
                derived $(+ declare_tables!(@bytes self.$field, $row, $diff, $shape))*
            }

            /// The views as ordered maps, for comparison with the batch reference.
            pub fn to_views(&self) -> Views {
                Views { $($field: self.$field.iter().map(|(k, r)| (*k, *r)).collect(),)* }
            }

            /// View `id` as Arrow batches, built from what changed since the last call.
            pub fn arrow(&mut self, id: ViewId, params: &Params) -> (SchemaRef, Vec<RecordBatch>) {
                match id {
                    $(ViewId::$id => declare_tables!(@arrow self, $id, $field, params, $shape),)*
                }
            }

            /// Every symbol held in the values of aggregates (an error's first message):
            /// unlike keys, which every change brings again, these come from events long
            /// past, and the string table must keep them.
            pub fn for_each_value_sym(&self, f: &mut dyn FnMut(Sym)) {
                $( declare_tables!(@value_syms self.$field, f, $shape); )*
            }
        }
    };
    (@bytes $t:expr, $row:ty, $diff:ty, derived) => { $t.capacity() * (std::mem::size_of::<($row, $diff)>() + 1) };
    (@bytes $t:expr, $row:ty, $diff:ty, $shape:ident) => { $t.heap_bytes() };
    (@ty $id:ident, $row:ty, $diff:ty, derived) => { HashMap<$row, $diff> };
    (@ty $id:ident, $row:ty, $diff:ty, $shape:ident) => { View<specs::$id> };
    (@add $t:expr, $r:ident, $d:ident, derived) => { add(&mut $t, $r, $d) };
    (@add $t:expr, $r:ident, $d:ident, $shape:ident) => { $t.add($r, $d) };
    (@arrow $s:ident, $id:ident, $field:ident, $params:ident, derived) => {{
        if !$s.derived.contains_key(&ViewId::$id) {
            let b = derived_table(ViewId::$id, $s, $params);
            $s.derived.insert(ViewId::$id, (b.schema(), vec![b]));
        }
        $s.derived[&ViewId::$id].clone()
    }};
    (@arrow $s:ident, $id:ident, $field:ident, $params:ident, $shape:ident) => { $s.$field.arrow($params) };
    (@absent $t:expr, $r:ident, $d:ident, rows) => { *$d < 0 && $t.get($r).is_none() };
    (@absent $t:expr, $r:ident, $d:ident, $shape:ident) => {{
        let _ = ($r, $d);
        false
    }};
    (@remove $t:expr, $gone:ident, rows) => { $t.remove_where(|k| $gone.contains(&k.session)) };
    (@remove $t:expr, $gone:ident, $shape:ident) => { 0 };
    (@value_syms $t:expr, $f:ident, agg) => {
        for (_, d) in $t.iter() {
            Columns::syms(d, $f);
        }
    };
    (@value_syms $t:expr, $f:ident, $shape:ident) => {};
}

sightflow_operators::for_each_view!(declare_tables);

/// Whether a change to `view` changes a derived table.
fn reads_into_derived(view: ViewId) -> bool {
    matches!(view, ViewId::FunnelSteps | ViewId::SessionFunnels)
}

/// A derived table: `funnel_steps` lists every configured step of every (project,
/// funnel) seen, zero counts included, with the conversion from the first step.
fn derived_table(id: ViewId, t: &Tables, params: &Params) -> RecordBatch {
    assert_eq!(id, ViewId::FunnelSteps, "the only derived table");
    let mut by: BTreeMap<(String, u32), BTreeMap<u32, i64>> = BTreeMap::new();
    for f in t.session_funnels.keys() {
        by.entry((f.project.as_string(), f.funnel)).or_default();
    }
    for (r, n) in &t.funnel_steps {
        *by.entry((r.project.as_string(), r.funnel)).or_default().entry(r.step).or_insert(0) += *n as i64;
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
            Field::new("project", DataType::Utf8, false),
            Field::new("funnel", DataType::Utf8, false),
            Field::new("step", DataType::Int64, false),
            Field::new("step_name", DataType::Utf8, false),
            Field::new("entered", DataType::Int64, false),
            Field::new("conversion_rate", DataType::Float64, false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.clone()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.clone()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3.clone()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.5))),
        ],
    )
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
            Arc::new(StringArray::from_iter_values(state.keys().cloned())),
            Arc::new(UInt64Array::from_iter_values(state.values().map(|s| s.records as u64))),
            Arc::new(UInt64Array::from_iter_values(state.values().map(|s| s.bytes as u64))),
        ],
    )
}
