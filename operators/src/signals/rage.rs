//! Rage clicks: at least `signals.rage.min_clicks` consecutive clicks on one page view,
//! each at most `max_gap_ms` after the previous and within `radius_px` of the burst's
//! first click. A burst is maximal and reported once with its click count; a click
//! without a position neither joins nor starts one that can grow.

use crate::event::{Click, Kind};
use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::SessionRow;
use crate::signals::{Kept, RowCtx, replace_kept};
use crate::sym::Sym;

row! {
    /// A rage-click burst, reported once with its click count.
    RageRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        url: Sym as url Str,
        /// First click.
        ts: i64 as ts Ts,
        x: i32 as x I32,
        y: i32 as y I32,
        clicks: u32 as clicks I64,
        selector: Sym as selector Str,
        /// Last click.
        end_ts: i64 as end_ts Ts,
    }
}

impl Kept for RageRow {
    /// A burst grows at its end.
    type Part = (i64, u32);
    fn part(&self) -> Self::Part {
        (self.end_ts, self.clicks)
    }
    fn with(self, (end_ts, clicks): Self::Part) -> Self {
        RageRow { end_ts, clicks, ..self }
    }
}

#[derive(Clone, Debug)]
struct Burst {
    first_eff: i64,
    last_eff: i64,
    x: i32,
    y: i32,
    /// The first click's position is known: only then can others join it.
    positioned: bool,
    selector: Sym,
    count: u32,
    /// The targets of the burst's clicks until it has enough of them to be a rage
    /// burst (then each click is counted as it comes).
    early: smallvec::SmallVec<[Sym; 3]>,
}

/// A page view's burst.
#[derive(Clone, Debug, Default)]
pub struct PageState {
    burst: Option<Burst>,
    emitted: Option<(i64, u32)>,
}

/// Clicks that became rage clicks at this click (their targets), for the element view.
pub type RageTargets = smallvec::SmallVec<[Sym; 4]>;

impl PageState {
    fn row(&self, c: RowCtx) -> Option<RageRow> {
        self.burst.as_ref().map(|b| RageRow {
            session: c.session,
            project: c.project,
            url: c.url,
            ts: b.first_eff,
            end_ts: b.last_eff,
            x: b.x,
            y: b.y,
            clicks: b.count,
            selector: b.selector,
        })
    }

    /// A click on the page at effective time `eff`: joins the burst or ends it and
    /// starts another. Returns the targets of clicks that are rage clicks from now on.
    pub fn on_click(
        &mut self,
        ctx: RowCtx,
        eff: i64,
        c: &Click,
        row: &mut SessionRow,
        p: &Params,
        out: &mut Emit,
    ) -> RageTargets {
        let joins = self.burst.as_ref().is_some_and(|b| {
            eff - b.last_eff <= p.rage_gap
                && c.has_position
                && b.positioned
                && (c.x as i64 - b.x as i64).pow(2) + (c.y as i64 - b.y as i64).pow(2) <= p.rage_radius2
        });
        if joins {
            let b = self.burst.as_mut().expect("burst");
            b.count += 1;
            b.last_eff = eff;
            if b.count < p.rage_min {
                b.early.push(c.selector);
                return RageTargets::new();
            }
            if b.count == p.rage_min {
                row.rage_clicks += 1;
                let mut all: RageTargets = std::mem::take(&mut b.early).into_iter().collect();
                all.push(c.selector);
                return all;
            }
            return smallvec::smallvec![c.selector];
        }
        // The previous burst is final: emit its last form and forget it.
        self.flush(ctx, p, out);
        self.emitted = None;
        let b = Burst {
            first_eff: eff,
            last_eff: eff,
            x: c.x,
            y: c.y,
            positioned: c.has_position,
            selector: c.selector,
            count: 1,
            early: smallvec::SmallVec::new(),
        };
        self.burst = Some(b);
        if p.rage_min <= 1 {
            row.rage_clicks += 1;
            return smallvec::smallvec![c.selector];
        }
        if let Some(b) = &mut self.burst {
            b.early.push(c.selector);
        }
        RageTargets::new()
    }

    /// Emits the burst's current form (shown once it has the minimum clicks).
    pub fn flush(&mut self, ctx: RowCtx, p: &Params, out: &mut Emit) {
        let now = self.row(ctx);
        let shown = self.burst.as_ref().is_some_and(|b| b.count >= p.rage_min);
        replace_kept(&mut out.rage_clicks, &mut self.emitted, now, shown);
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.burst
            .as_ref()
            .map_or(0, |b| if b.early.spilled() { b.early.capacity() * std::mem::size_of::<Sym>() } else { 0 })
    }
}

/// Reference: the bursts of every page, as runs of click indices (into the timeline's
/// events) with at least the minimum clicks.
pub(crate) fn reference_bursts(tl: &Timeline, p: &Params) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for (pi, _) in tl.pages.iter().enumerate() {
        let clicks: Vec<usize> =
            tl.on_page[pi].iter().copied().filter(|&i| matches!(tl.anns[i].ev.kind, Kind::Click(_))).collect();
        let click = |i: usize| match tl.anns[i].ev.kind {
            Kind::Click(c) => c,
            _ => unreachable!("a click"),
        };
        let mut k = 0;
        while k < clicks.len() {
            let first = click(clicks[k]);
            let mut end = k + 1;
            while end < clicks.len() {
                let c = click(clicks[end]);
                let dx = (c.x - first.x) as f64;
                let dy = (c.y - first.y) as f64;
                let close = c.has_position && first.has_position && dx * dx + dy * dy <= p.rage_radius2 as f64;
                let quick = tl.anns[clicks[end]].eff - tl.anns[clicks[end - 1]].eff <= p.rage_gap;
                if !(close && quick) {
                    break;
                }
                end += 1;
            }
            if end - k >= p.rage_min as usize {
                out.push((pi, clicks[k..end].to_vec()));
            }
            k = end;
        }
    }
    out
}

/// Reference: `rage_clicks` rows and the sessions' counts.
pub(crate) fn reference(tl: &Timeline, bursts: &[(usize, Vec<usize>)], rows: &mut [SessionRow], v: &mut crate::Views) {
    for (pi, members) in bursts {
        let pg = &tl.pages[*pi];
        let first = &tl.anns[members[0]];
        let Kind::Click(c) = first.ev.kind else { continue };
        rows[pg.session].rage_clicks += 1;
        *v.rage_clicks
            .entry(RageRow {
                session: rows[pg.session].session,
                project: tl.key.project,
                url: pg.url,
                ts: first.eff,
                end_ts: tl.anns[*members.last().expect("members")].eff,
                x: c.x,
                y: c.y,
                clicks: members.len() as u32,
                selector: c.selector,
            })
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    fn bursts(v: &crate::Views) -> Vec<(i64, i64, u32)> {
        let mut b: Vec<_> = v.rage_clicks.keys().map(|r| (r.ts, r.end_ts, r.clicks)).collect();
        b.sort();
        b
    }

    #[test]
    fn bursts_are_maximal_quick_and_close() {
        check("0 pv /a; 0 click 5 5; 500 click 6 6; 1000 click 7 7", |v| assert_eq!(bursts(v), [(0, 1000, 3)]));
        check("0 pv /a; 0 click 5 5; 500 click 6 6", |v| assert!(bursts(v).is_empty()));
        // Six quick clicks are one burst.
        check("0 pv /a; 0 click 1 1; 100 click 1 1; 200 click 1 1; 300 click 1 1; 400 click 1 1; 500 click 1 1", |v| {
            assert_eq!(bursts(v), [(0, 500, 6)])
        });
        // Too slow (1001 ms), too far (31 px from the first click).
        check("0 pv /a; 0 click 5 5; 1001 click 5 5; 1500 click 5 5", |v| assert!(bursts(v).is_empty()));
        check("0 pv /a; 0 click 0 0; 100 click 10 10; 200 click 31 0", |v| assert!(bursts(v).is_empty()));
        // Distance is from the first click, not the previous one.
        check("0 pv /a; 0 click 0 0; 100 click 25 0; 200 click 30 0", |v| assert_eq!(bursts(v), [(0, 200, 3)]));
        // A click without a position breaks a burst.
        check("0 pv /a; 0 click 5 5; 100 click - -; 200 click 5 5; 300 click 5 5", |v| assert!(bursts(v).is_empty()));
        // A new page view ends the burst.
        check("0 pv /a; 0 click 5 5; 100 click 5 5; 150 pv /b; 200 click 5 5", |v| assert!(bursts(v).is_empty()));
    }
}
