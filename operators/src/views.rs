//! Every view of the view contract as a differential collection.
//!
//! Views whose registry source is `output(...)` are the behaviour operator's output as
//! it is. The others are built here with differential operators on top: distinct
//! visitors and error sessions (`distinct_total`), scroll depth (`reduce` per URL over
//! at most a few hundred distinct depth observations), funnel steps (per-device
//! `reduce` for device funnels, then one record per step reached, whose multiplicity is
//! the count).

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::operators::ThresholdTotal;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::implementations::KeySpine;
use timely::dataflow::Stream;
use timely::progress::frontier::AntichainRef;

use crate::behaviour::{Behaviour, behaviour};
use crate::event::Event;
use crate::params::Params;
use crate::signals::errors::{ErrAgg, ErrKey};
use crate::signals::funnels::FunnelStepRow;
use crate::signals::page_stats::{PageAgg, PageKey};
use crate::signals::scroll_depth::{DepthRow, depth_bands};
use crate::stats::StateStats;
use crate::sym::Sym;

macro_rules! declare_collections {
    ($($id:ident, $field:ident, $name:literal, $row:ty, $diff:ty, $shape:ident $(($vc:ident))?, $src:ident $(($out:ident))?;)*) => {
        /// All views, one collection per view of the registry.
        pub struct ViewCollections<'s> {
            $(#[doc = concat!("The `", $name, "` view.")] pub $field: VecCollection<'s, u64, $row, $diff>,)*
            /// The arrangements whose bytes are measured rather than estimated from logs.
            pub measured: Vec<MeasuredTrace>,
        }

        /// The views built here (the others come from the behaviour operator).
        #[derive(Default)]
        #[allow(dead_code)]
        struct Built<'s> { $($field: Option<VecCollection<'s, u64, $row, $diff>>,)* }

        fn assemble<'s>(b: &Behaviour<'s>, mut built: Built<'s>, measured: Vec<MeasuredTrace>) -> ViewCollections<'s> {
            ViewCollections {
                $($field: declare_collections!(@take b, built, $field, $src $(($out))?),)*
                measured,
            }
        }
    };
    (@take $b:ident, $built:ident, $field:ident, output($out:ident)) => { $b.$out.clone() };
    (@take $b:ident, $built:ident, $field:ident, built) => {
        $built.$field.take().expect(concat!(stringify!($field), " is built by build_views"))
    };
}

crate::for_each_view!(declare_collections);

/// A read handle on an arrangement that measures the bytes its batches hold. It never
/// holds back compaction or merging.
pub struct MeasuredTrace {
    /// The view the state is attributed to.
    pub view: &'static str,
    measure: Box<dyn Fn() -> crate::stats::StateSize>,
}

impl MeasuredTrace {
    fn new<K: differential_dataflow::ExchangeData>(
        view: &'static str,
        mut trace: TraceAgent<KeySpine<K, u64, isize>>,
    ) -> MeasuredTrace {
        trace.set_logical_compaction(AntichainRef::new(&[]));
        trace.set_physical_compaction(AntichainRef::new(&[]));
        let measure = move || {
            let mut size = crate::stats::StateSize::default();
            trace.map_spans(|span| {
                if let Some(batch) = &span.inner {
                    let st = &batch.storage;
                    size.records += batch.updates;
                    size.bytes += st.keys.capacity() * std::mem::size_of::<K>()
                        + st.upds.offs.smol.capacity() * 4
                        + st.upds.offs.chonk.capacity() * 8
                        + st.upds.times.capacity() * std::mem::size_of::<u64>()
                        + st.upds.diffs.capacity() * std::mem::size_of::<isize>();
                }
            });
            size
        };
        MeasuredTrace { view, measure: Box::new(measure) }
    }

    /// Records and bytes held now: each batch's containers at their capacity (shared
    /// batches once per holder; a merge in progress counts its inputs, not its output).
    pub fn size(&self) -> crate::stats::StateSize {
        (self.measure)()
    }
}

/// Builds every view from a stream of events stamped with logical time. `per_time`:
/// see [`behaviour`] (true unless only the final state will be read).
pub fn build_views<'s>(
    events: Stream<'s, u64, Vec<Event>>,
    params: Arc<Params>,
    stats: StateStats,
    per_time: bool,
) -> ViewCollections<'s> {
    let b = behaviour(events, params.clone(), stats, per_time);
    let mut built = Built::default();

    let band = params.band_pct;
    built.scroll_depth = Some(
        b.depth
            .clone()
            .map(|o| ((o.project, o.url), (o.deepest, o.page_height)))
            .reduce_named("scroll_depth", move |_key, input, output| {
                let obs: Vec<(u32, u32, isize)> = input.iter().map(|(v, n)| (v.0, v.1, *n)).collect();
                output.extend(depth_bands(&obs, band));
            })
            .map(|((project, url), depth_pct): ((Sym, Sym), u32)| DepthRow { project, url, depth_pct }),
    );

    let per_device: Vec<bool> = params.funnels.iter().map(|f| f.per_device).collect();
    let pd = per_device.clone();
    let session_steps = b
        .funnels
        .clone()
        .filter(move |r| !pd.get(r.funnel as usize).copied().unwrap_or(false))
        .flat_map(|r| (1..=r.steps).map(move |step| FunnelStepRow { project: r.project, funnel: r.funnel, step }));
    let pd = per_device;
    let device_steps = b
        .funnels
        .clone()
        .filter(move |r| pd.get(r.funnel as usize).copied().unwrap_or(false))
        .map(|r| ((r.project, r.funnel, r.device), r.steps))
        .reduce_named("funnel_steps devices", |_key, input, output| {
            if let Some(max) = input.iter().filter(|(_, n)| *n > 0).map(|(v, _)| **v).max() {
                output.push((max, 1isize));
            }
        })
        .flat_map(|((project, funnel, _device), steps): ((Sym, u32, Sym), u32)| {
            (1..=steps).map(move |step| FunnelStepRow { project, funnel, step })
        });
    built.funnel_steps = Some(session_steps.concat(device_steps));

    // Arrangements the logs attribute are named "<view> <purpose>"; these two are
    // measured from their batches instead, so their names do not start with a view.
    let visitors = b.visitors.clone().arrange_by_self_named("distinct visitors of page_stats");
    let visitors_trace = MeasuredTrace::new("page_stats", visitors.trace.clone());
    #[expect(clippy::disallowed_methods, reason = "distinct_total on the named arrangement above")]
    let visitors = visitors
        .distinct_total()
        .explode(|v| Some((PageKey { project: v.project, url: v.url }, PageAgg { visitors: 1, ..Default::default() })));
    // Signals per page: each signal row counts on its URL while it is held.
    fn on_page(project: Sym, url: Sym, set: impl FnOnce(&mut PageAgg)) -> Option<(PageKey, PageAgg)> {
        let mut a = PageAgg::default();
        set(&mut a);
        Some((PageKey { project, url }, a))
    }
    let signals = b
        .rage_clicks
        .clone()
        .explode(|r| on_page(r.project, r.url, |a| a.rage_clicks = 1))
        .concat(b.dead_clicks.clone().explode(|r| on_page(r.project, r.url, |a| a.dead_clicks = 1)))
        .concat(b.error_clicks.clone().explode(|r| on_page(r.project, r.url, |a| a.error_clicks = 1)))
        .concat(b.quick_backs.clone().explode(|r| on_page(r.project, r.url, |a| a.quick_backs = 1)))
        .concat(b.excessive_scrolls.clone().explode(|r| on_page(r.project, r.url, |a| a.excessive_scrolls = 1)))
        .concat(b.thrashed_cursors.clone().explode(|r| on_page(r.project, r.url, |a| a.thrashed_cursors = 1)));
    built.page_stats = Some(b.page_agg.clone().concat(visitors).concat(signals));

    let err_sessions = b.err_sessions.clone().arrange_by_self_named("distinct sessions of errors");
    let err_trace = MeasuredTrace::new("errors", err_sessions.trace.clone());
    #[expect(clippy::disallowed_methods, reason = "distinct_total on the named arrangement above")]
    let err_sessions = err_sessions
        .distinct_total()
        .explode(|e| Some((ErrKey { project: e.project, fingerprint: e.fingerprint }, ErrAgg::sessions(1))));
    built.errors = Some(b.err_occ.clone().concat(err_sessions));

    assemble(&b, built, vec![visitors_trace, err_trace])
}
