//! Every view of the view contract as a differential collection.
//!
//! Sequence views come straight from the behaviour operator. Aggregates are built with
//! differential operators on top: distinct visitors and error sessions
//! (`distinct_total`), scroll depth (`reduce` per URL over at most a few hundred
//! distinct depth observations), funnel steps (per-device `reduce` for device funnels,
//! then one record per step reached, whose multiplicity is the count).

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::difference::Multiply;
use differential_dataflow::operators::ThresholdTotal;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::implementations::KeySpine;
use timely::dataflow::Stream;
use timely::progress::frontier::AntichainRef;

use crate::behaviour::behaviour;
use crate::event::Event;
use crate::params::Params;
use crate::rows::*;
use crate::stats::StateStats;
use crate::sym::Sym;

/// All views.
pub struct ViewCollections<'s> {
    pub sessions: VecCollection<'s, u64, SessionRow>,
    pub page_views: VecCollection<'s, u64, PageViewRow>,
    pub rage_clicks: VecCollection<'s, u64, RageRow>,
    pub dead_clicks: VecCollection<'s, u64, DeadRow>,
    pub error_clicks: VecCollection<'s, u64, ErrorClickRow>,
    pub quick_backs: VecCollection<'s, u64, QuickBackRow>,
    pub excessive_scrolls: VecCollection<'s, u64, EpisodeRow>,
    pub thrashed_cursors: VecCollection<'s, u64, EpisodeRow>,
    pub heatmap_cells: VecCollection<'s, u64, HeatRow>,
    pub scroll_depth: VecCollection<'s, u64, DepthRow>,
    pub session_funnels: VecCollection<'s, u64, FunnelRow>,
    pub funnel_steps: VecCollection<'s, u64, FunnelStepRow>,
    pub page_stats: VecCollection<'s, u64, PageKey, PageAgg>,
    pub errors: VecCollection<'s, u64, ErrKey, ErrAgg>,
    /// The arrangements whose bytes are measured rather than estimated from logs.
    pub measured: Vec<MeasuredTrace>,
}

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

impl Multiply<isize> for PageAgg {
    type Output = PageAgg;
    fn multiply(self, n: &isize) -> PageAgg {
        let n = *n as i64;
        PageAgg {
            views: self.views * n,
            duration_ms: self.duration_ms * n,
            exits: self.exits * n,
            bounces: self.bounces * n,
            visitors: self.visitors * n,
        }
    }
}

impl Multiply<isize> for ErrAgg {
    type Output = ErrAgg;
    fn multiply(self, n: &isize) -> ErrAgg {
        ErrAgg { occurrences: self.occurrences * *n as i64, sessions: self.sessions * *n as i64, ..self }
    }
}

/// Scroll-depth bands of one URL from its sessions' observations: `(deepest, page
/// height, sessions)`. A session's 100% is its page height when known, else the
/// deepest visible y any session reached on the URL.
pub fn depth_bands(obs: &[(u32, u32, isize)], band_pct: u32) -> Vec<(u32, isize)> {
    let max_deepest = obs.iter().filter(|o| o.2 > 0).map(|o| o.0).max().unwrap_or(0);
    let bands = (100 / band_pct + 1) as usize;
    let mut counts = vec![0isize; bands];
    for &(deepest, height, n) in obs {
        let reference = if height > 0 { height } else { max_deepest };
        let pct = if reference == 0 { 100 } else { (deepest as u64 * 100 / reference as u64).min(100) as u32 };
        for c in counts.iter_mut().take((pct / band_pct) as usize + 1) {
            *c += n;
        }
    }
    counts.into_iter().enumerate().filter(|(_, c)| *c != 0).map(|(i, c)| (i as u32 * band_pct, c)).collect()
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

    let band = params.band_pct;
    let scroll_depth = b
        .depth
        .map(|o| ((o.project, o.url), (o.deepest, o.page_height)))
        .reduce_named("scroll_depth", move |_key, input, output| {
            let obs: Vec<(u32, u32, isize)> = input.iter().map(|(v, n)| (v.0, v.1, *n)).collect();
            output.extend(depth_bands(&obs, band));
        })
        .map(|((project, url), depth_pct): ((Sym, Sym), u32)| DepthRow { project, url, depth_pct });

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
    let funnel_steps = session_steps.concat(device_steps);

    // Arrangements the logs attribute are named "<view> <purpose>"; these two are
    // measured from their batches instead, so their names do not start with a view.
    let visitors = b.visitors.arrange_by_self_named("distinct visitors of page_stats");
    let visitors_trace = MeasuredTrace::new("page_stats", visitors.trace.clone());
    let visitors = visitors
        .distinct_total()
        .explode(|v| Some((PageKey { project: v.project, url: v.url }, PageAgg { visitors: 1, ..Default::default() })));
    let page_stats = b.page_agg.concat(visitors);

    let err_sessions = b.err_sessions.arrange_by_self_named("distinct sessions of errors");
    let err_trace = MeasuredTrace::new("errors", err_sessions.trace.clone());
    let err_sessions = err_sessions
        .distinct_total()
        .explode(|e| Some((ErrKey { project: e.project, fingerprint: e.fingerprint }, ErrAgg::sessions(1))));
    let errors = b.err_occ.concat(err_sessions);

    ViewCollections {
        sessions: b.sessions,
        page_views: b.page_views,
        rage_clicks: b.rage_clicks,
        dead_clicks: b.dead_clicks,
        error_clicks: b.error_clicks,
        quick_backs: b.quick_backs,
        excessive_scrolls: b.excessive_scrolls,
        thrashed_cursors: b.thrashed_cursors,
        heatmap_cells: b.heat,
        scroll_depth,
        session_funnels: b.funnels,
        funnel_steps,
        page_stats,
        errors,
        measured: vec![visitors_trace, err_trace],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_bands_use_page_height_or_the_deepest_session() {
        // Two sessions without page height: 100% is 2000px.
        let bands = depth_bands(&[(2000, 0, 1), (1000, 0, 1)], 25);
        assert_eq!(bands, vec![(0, 2), (25, 2), (50, 2), (75, 1), (100, 1)]);
        // A known page height of 4000px: 2000px is 50%.
        let bands = depth_bands(&[(2000, 4000, 1)], 50);
        assert_eq!(bands, vec![(0, 1), (50, 1)]);
    }
}
