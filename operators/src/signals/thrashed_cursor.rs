//! Thrashed cursor: at least `signals.thrashed_cursor.min_reversals` horizontal direction
//! reversals of the mouse within `window_ms` (positions in time order, `dx = 0`
//! skipped, touch moves ignored); a reversal happens at the turning point, and
//! overlapping qualifying windows merge into one episode.

use crate::event::{Kind, MAX_MOVE_OFFSET_MS};
use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::signals::RowCtx;
use crate::signals::episodes::{EpisodeRow, Episodes, reference_episodes};
use crate::signals::sessions::SessionRow;

/// A page view's mouse direction and episodes.
#[derive(Clone, Debug, Default)]
pub struct PageState {
    /// The last mouse position's x and time: a reversal happens at the turning point.
    last_x: Option<(i32, i64)>,
    last_dx: i8,
    /// Made at the page's first reversal.
    episodes: Option<Box<Episodes>>,
}

impl PageState {
    /// A mouse position at `x` at time `at` (its own time, not its batch's).
    pub fn on_move(&mut self, ctx: RowCtx, x: i32, at: i64, row: &mut SessionRow, p: &Params, out: &mut Emit) {
        if let Some((lx, turn)) = self.last_x {
            let dir = (x - lx).signum() as i8;
            if dir != 0 {
                if self.last_dx != 0
                    && dir != self.last_dx
                    && self.episodes.get_or_insert_default().change(
                        turn,
                        p.thrash_reversals,
                        p.thrash_window,
                        &mut out.thrashed_cursors,
                        ctx,
                    )
                {
                    row.thrashed_cursors += 1;
                }
                self.last_dx = dir;
            }
        }
        self.last_x = Some((x, at));
    }

    /// Emits the current episode's form.
    pub fn flush(&mut self, ctx: RowCtx, out: &mut Emit) {
        if let Some(e) = self.episodes.as_mut() {
            e.flush(ctx, &mut out.thrashed_cursors);
        }
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.episodes.as_ref().map_or(0, |e| std::mem::size_of::<Episodes>() + e.heap_bytes())
    }
}

/// Reference: horizontal reversals of the mouse per page, then episodes.
pub(crate) fn reference(tl: &Timeline, p: &Params, rows: &mut [SessionRow], v: &mut crate::Views) {
    for (pi, pg) in tl.pages.iter().enumerate() {
        // Positions in order with their own times; a reversal is dated at the turn.
        let xs: Vec<(i32, i64)> = tl.on_page[pi]
            .iter()
            .filter_map(|&i| match tl.anns[i].ev.kind {
                Kind::Move { x, offset, .. } => Some((x, tl.anns[i].eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64)),
                _ => None,
            })
            .collect();
        let mut reversals = Vec::new();
        let mut dir = 0i8;
        for w in xs.windows(2) {
            let d = (w[1].0 - w[0].0).signum() as i8;
            if d == 0 {
                continue;
            }
            if dir != 0 && d != dir {
                reversals.push(w[0].1);
            }
            dir = d;
        }
        for (start, end, n) in reference_episodes(&reversals, p.thrash_reversals, p.thrash_window) {
            rows[pg.session].thrashed_cursors += 1;
            let session = rows[pg.session].session;
            *v.thrashed_cursors
                .entry(EpisodeRow {
                    session,
                    project: tl.key.project,
                    url: pg.url,
                    ts: start,
                    end_ts: end,
                    reversals: n,
                })
                .or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn four_reversals_within_a_second() {
        check("0 pv /a; 0 move 0 0; 100 move 50 0; 200 move 0 0; 300 move 50 0; 400 move 0 0; 500 move 50 0", |v| {
            let e: Vec<_> = v.thrashed_cursors.keys().map(|r| (r.ts, r.end_ts, r.reversals)).collect();
            assert_eq!(e, [(100, 400, 4)]);
        });
        check("0 pv /a; 0 move 0 0; 400 move 50 0; 800 move 0 0; 1200 move 50 0; 1600 move 0 0; 2000 move 50 0", |v| {
            assert!(v.thrashed_cursors.is_empty())
        });
        // Vertical movement and pauses (dx = 0) do not reverse.
        check("0 pv /a; 0 move 0 0; 100 move 0 50; 200 move 0 0; 300 move 0 50", |v| {
            assert!(v.thrashed_cursors.is_empty())
        });
    }
}
