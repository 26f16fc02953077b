//! The one list of views, and the one list of the behaviour operator's outputs.
//!
//! [`for_each_view!`](crate::for_each_view) names every published view once: its
//! [`ViewId`], table name, row type, difference type and shape. Everything that handles
//! views as a set is generated from it: [`ViewId`], [`Update`], [`Views`] and its diff,
//! the dataflow's collections and their tags, the publisher's tables. A new view is one
//! line here (and its signal module).
//!
//! Shapes: `rows` (a multiset of rows, difference `isize`), `count(column)` (a key whose
//! multiplicity is published as `column`), `agg` (a key with an aggregate difference
//! that publishes its own columns), `derived` (built by the publisher from its inputs).
//!
//! [`for_each_output!`](crate::for_each_output) is the same for the behaviour operator's
//! outputs (what a [`Device`](crate::device::Device) emits), some of which feed
//! aggregates rather than a view: `vec` outputs collect changes as they come, `map`
//! outputs add up per key before shipping.

use std::collections::BTreeMap;

/// Calls `$m!` with every published view: `Id, field, "table", Row, Diff, shape, source;`
/// where the source is `output(field)` (the behaviour operator's output of that name,
/// as it is) or `built` (by [`crate::views::build_views`]).
#[macro_export]
macro_rules! for_each_view {
    ($m:ident) => {
        $m! {
            Sessions, sessions, "sessions", $crate::signals::sessions::SessionRow, isize, rows, output(sessions);
            PageViews, page_views, "page_views", $crate::signals::sessions::PageViewRow, isize, rows, output(page_views);
            RageClicks, rage_clicks, "rage_clicks", $crate::signals::rage::RageRow, isize, rows, output(rage_clicks);
            DeadClicks, dead_clicks, "dead_clicks", $crate::signals::clicks::DeadRow, isize, rows, output(dead_clicks);
            ErrorClicks, error_clicks, "error_clicks", $crate::signals::clicks::ErrorClickRow, isize, rows, output(error_clicks);
            QuickBacks, quick_backs, "quick_backs", $crate::signals::quick_back::QuickBackRow, isize, rows, output(quick_backs);
            ExcessiveScrolls, excessive_scrolls, "excessive_scrolls", $crate::signals::episodes::EpisodeRow, isize, rows, output(excessive_scrolls);
            ThrashedCursors, thrashed_cursors, "thrashed_cursors", $crate::signals::episodes::EpisodeRow, isize, rows, output(thrashed_cursors);
            HeatmapCells, heatmap_cells, "heatmap_cells", $crate::signals::heatmap::HeatRow, isize, count(count), output(heat);
            ScrollDepth, scroll_depth, "scroll_depth", $crate::signals::scroll_depth::DepthRow, isize, count(sessions), built;
            SessionFunnels, session_funnels, "session_funnels", $crate::signals::funnels::FunnelRow, isize, rows, output(funnels);
            FunnelSteps, funnel_steps, "funnel_steps", $crate::signals::funnels::FunnelStepRow, isize, derived, built;
            PageStats, page_stats, "page_stats", $crate::signals::page_stats::PageKey, $crate::signals::page_stats::PageAgg, agg, built;
            Errors, errors, "errors", $crate::signals::errors::ErrKey, $crate::signals::errors::ErrAgg, agg, built;
            ErrorEvents, error_events, "error_events", $crate::signals::errors::ErrorEventRow, isize, rows, output(error_events);
            ElementClicks, element_clicks, "element_clicks", $crate::signals::element_clicks::ElementKey, $crate::signals::element_clicks::ElementAgg, agg, output(elements);
        }
    };
}

/// Calls `$m!` with every output of the behaviour operator: `field: Row, Diff, kind;`.
#[macro_export]
macro_rules! for_each_output {
    ($m:ident) => {
        $m! {
            sessions: $crate::signals::sessions::SessionRow, isize, vec;
            page_views: $crate::signals::sessions::PageViewRow, isize, vec;
            rage_clicks: $crate::signals::rage::RageRow, isize, vec;
            dead_clicks: $crate::signals::clicks::DeadRow, isize, vec;
            error_clicks: $crate::signals::clicks::ErrorClickRow, isize, vec;
            quick_backs: $crate::signals::quick_back::QuickBackRow, isize, vec;
            excessive_scrolls: $crate::signals::episodes::EpisodeRow, isize, vec;
            thrashed_cursors: $crate::signals::episodes::EpisodeRow, isize, vec;
            heat: $crate::signals::heatmap::HeatRow, isize, map;
            depth: $crate::signals::scroll_depth::DepthObs, isize, vec;
            funnels: $crate::signals::funnels::FunnelRow, isize, vec;
            page_agg: $crate::signals::page_stats::PageKey, $crate::signals::page_stats::PageAgg, map;
            visitors: $crate::signals::page_stats::PageVisitor, isize, vec;
            err_occ: $crate::signals::errors::ErrKey, $crate::signals::errors::ErrAgg, vec;
            err_sessions: $crate::signals::errors::ErrSession, isize, vec;
            error_events: $crate::signals::errors::ErrorEventRow, isize, vec;
            elements: $crate::signals::element_clicks::ElementKey, $crate::signals::element_clicks::ElementAgg, map;
        }
    };
}

/// Calls `$m!` with every signal built from facts: `field: Type;` (the type implements
/// [`FactSignal`](crate::signals::FactSignal)).
#[macro_export]
macro_rules! for_each_fact_signal {
    ($m:ident) => {
        $m! {
            element_clicks: $crate::signals::element_clicks::State;
        }
    };
}

macro_rules! declare_fact_signals {
    ($($field:ident : $t:ty;)*) => {
        /// The per-session state of every signal built from facts.
        #[derive(Clone, Debug, Default)]
        pub struct FactStates {
            $(#[doc = concat!("State of the `", stringify!($field), "` signal.")] pub $field: $t,)*
        }

        impl FactStates {
            /// Hands a fact to every signal built from facts.
            #[allow(unused_variables)]
            pub fn on_fact(&mut self, fact: &crate::signals::Fact, row: &crate::signals::sessions::SessionRow, out: &mut Emit) {
                $( crate::signals::FactSignal::on_fact(&mut self.$field, fact, row, out); )*
            }

            /// Heap bytes of their states.
            pub fn heap_bytes(&self) -> usize {
                0 $(+ crate::signals::FactSignal::heap_bytes(&self.$field))*
            }

            /// Reference: every signal built from facts, from one device's facts.
            #[allow(unused_variables)]
            pub fn reference(facts: &[(usize, crate::signals::Fact)], rows: &[crate::signals::sessions::SessionRow], v: &mut Views) {
                $( <$t as crate::signals::FactSignal>::reference(facts, rows, v); )*
            }
        }
    };
}

for_each_fact_signal!(declare_fact_signals);

macro_rules! declare_views {
    ($($id:ident, $field:ident, $name:literal, $row:ty, $diff:ty, $shape:ident $(($vc:ident))?, $src:ident $(($out:ident))?;)*) => {
        /// A published view.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ViewId {
            $(#[doc = concat!("The `", $name, "` view.")] $id),*
        }

        impl ViewId {
            /// Every view, in table order.
            pub const ALL: &'static [ViewId] = &[$(ViewId::$id),*];

            /// The view's table name.
            pub fn name(self) -> &'static str {
                match self { $(ViewId::$id => $name),* }
            }

            /// The view of a table name.
            pub fn from_name(name: &str) -> Option<ViewId> {
                match name { $($name => Some(ViewId::$id),)* _ => None }
            }
        }

        /// One change to one view.
        #[derive(Clone, Debug)]
        pub enum Update {
            $(#[doc = concat!("A row of `", $name, "` and its difference.")] $id($row, $diff)),*
        }

        impl Update {
            /// The view this change is to.
            pub fn view(&self) -> ViewId {
                match self { $(Update::$id(..) => ViewId::$id),* }
            }
        }

        /// Every view as plain ordered maps: what the batch reference computes, and what
        /// the published snapshots are compared against.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Views {
            $(#[doc = concat!("The rows of `", $name, "` and their accumulated differences.")] pub $field: BTreeMap<$row, $diff>,)*
        }

        impl Views {
            /// Adds one change.
            pub fn apply(&mut self, u: Update) {
                match u { $(Update::$id(k, r) => accumulate(&mut self.$field, k, r),)* }
            }

            /// A readable diff of two view sets, for test failures.
            pub fn diff(&self, other: &Views) -> String {
                let mut s = String::new();
                $( diff_one($name, &self.$field, &other.$field, &mut s); )*
                s
            }

            /// Rows (keys) held per view.
            pub fn len(&self, view: ViewId) -> usize {
                match view { $(ViewId::$id => self.$field.len()),* }
            }

            /// Adds a device's changes to the views that are the behaviour operator's
            /// outputs as they are (the others are built on top by the dataflow).
            pub fn add_direct(&mut self, e: Emit) {
                $( declare_views!(@direct self, e, $field, $src $(($out))?); )*
            }

            /// Only the views that are outputs as they are.
            pub fn direct(&self) -> Views {
                let mut v = Views::default();
                $( declare_views!(@keep v, self, $field, $src $(($out))?); )*
                v
            }
        }
    };
    (@direct $v:ident, $e:ident, $field:ident, output($out:ident)) => {
        for (r, d) in $e.$out {
            accumulate(&mut $v.$field, r, d);
        }
    };
    (@direct $v:ident, $e:ident, $field:ident, built) => {};
    (@keep $to:ident, $from:ident, $field:ident, output($out:ident)) => {
        $to.$field = $from.$field.clone();
    };
    (@keep $to:ident, $from:ident, $field:ident, built) => {};
}

for_each_view!(declare_views);

/// Adds `r` to `map[k]`, dropping the entry when it becomes zero.
pub fn accumulate<K: Ord, R: differential_dataflow::difference::Semigroup>(map: &mut BTreeMap<K, R>, k: K, r: R) {
    use std::collections::btree_map::Entry;
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

fn diff_one<K: Ord + std::fmt::Debug, R: PartialEq + std::fmt::Debug>(
    name: &str,
    a: &BTreeMap<K, R>,
    b: &BTreeMap<K, R>,
    out: &mut String,
) {
    use std::fmt::Write;
    for (k, v) in a {
        if b.get(k) != Some(v) {
            let _ = writeln!(out, "{name}: left has {k:?} => {v:?}, right has {:?}", b.get(k));
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            let _ = writeln!(out, "{name}: right only {k:?} => {v:?}");
        }
    }
}

macro_rules! declare_emit {
    ($($field:ident : $row:ty, $diff:ty, $kind:ident;)*) => {
        /// Changes a device produced while processing, one container per output of the
        /// behaviour operator; the operator stamps them with a time.
        #[derive(Default, Debug)]
        pub struct Emit {
            $(#[doc = concat!("Changes to the `", stringify!($field), "` output.")] pub $field: declare_emit!(@container $kind, $row, $diff),)*
        }

        impl Emit {
            /// Whether nothing was emitted.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_empty())*
            }
        }
    };
    (@container vec, $row:ty, $diff:ty) => { Vec<($row, $diff)> };
    (@container map, $row:ty, $diff:ty) => { crate::FastMap<$row, $diff> };
}

for_each_output!(declare_emit);

impl Emit {
    /// Adds to a summed output.
    pub fn add<K: std::hash::Hash + Eq, R: differential_dataflow::difference::Semigroup + Default>(
        map: &mut crate::FastMap<K, R>,
        k: K,
        r: R,
    ) {
        map.entry(k).or_default().plus_equals(&r);
    }
}
