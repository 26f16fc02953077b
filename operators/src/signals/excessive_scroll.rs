//! Excessive scrolling: at least `signals.excessive_scroll.min_direction_changes` sign
//! changes of y between consecutive Scroll events of the same node within `window_ms` on
//! one page view; overlapping qualifying windows merge into one episode.

use crate::event::Kind;
use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::signals::RowCtx;
use crate::signals::episodes::{EpisodeRow, Episodes, reference_episodes};
use crate::signals::sessions::SessionRow;

#[derive(Clone, Copy, Debug)]
struct ScrollNode {
    node: u32,
    y: i32,
    dir: i8,
}

/// A page view's scroll directions and episodes.
#[derive(Clone, Debug, Default)]
pub struct PageState {
    nodes: Vec<ScrollNode>,
    /// Made at the page's first direction change (most pages have none).
    episodes: Option<Box<Episodes>>,
}

impl PageState {
    /// A scroll of `node` to `y` at effective time `eff`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_scroll(
        &mut self,
        ctx: RowCtx,
        node: u32,
        y: i32,
        eff: i64,
        row: &mut SessionRow,
        p: &Params,
        out: &mut Emit,
    ) {
        let change = match self.nodes.iter_mut().find(|n| n.node == node) {
            Some(n) => {
                let dir = (y - n.y).signum() as i8;
                n.y = y;
                let change = dir != 0 && n.dir != 0 && dir != n.dir;
                if dir != 0 {
                    n.dir = dir;
                }
                change
            }
            None => {
                self.nodes.reserve_exact(1);
                self.nodes.push(ScrollNode { node, y, dir: 0 });
                false
            }
        };
        if change
            && self.episodes.get_or_insert_default().change(
                eff,
                p.scroll_changes,
                p.scroll_window,
                &mut out.excessive_scrolls,
                ctx,
            )
        {
            row.excessive_scrolls += 1;
        }
    }

    /// Emits the current episode's form.
    pub fn flush(&mut self, ctx: RowCtx, out: &mut Emit) {
        if let Some(e) = self.episodes.as_mut() {
            e.flush(ctx, &mut out.excessive_scrolls);
        }
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<ScrollNode>()
            + self.episodes.as_ref().map_or(0, |e| std::mem::size_of::<Episodes>() + e.heap_bytes())
    }
}

/// Reference: direction changes of scroll y per node, then episodes per page.
pub(crate) fn reference(tl: &Timeline, p: &Params, rows: &mut [SessionRow], v: &mut crate::Views) {
    for (pi, pg) in tl.pages.iter().enumerate() {
        let mut last: std::collections::BTreeMap<u32, (i32, i8)> = Default::default();
        let mut changes = Vec::new();
        for &i in &tl.on_page[pi] {
            let Kind::Scroll { node, y, .. } = tl.anns[i].ev.kind else { continue };
            match last.get_mut(&node) {
                None => {
                    last.insert(node, (y, 0));
                }
                Some((ly, ld)) => {
                    let d = (y - *ly).signum() as i8;
                    if d != 0 {
                        if *ld != 0 && d != *ld {
                            changes.push(tl.anns[i].eff);
                        }
                        *ld = d;
                    }
                    *ly = y;
                }
            }
        }
        for (start, end, n) in reference_episodes(&changes, p.scroll_changes, p.scroll_window) {
            rows[pg.session].excessive_scrolls += 1;
            let session = rows[pg.session].session;
            *v.excessive_scrolls
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
    fn six_direction_changes_within_ten_seconds() {
        let up_down = "0 pv /a; 0 scroll 1 0; 100 scroll 1 100; 200 scroll 1 0; 300 scroll 1 100; 400 scroll 1 0; 500 scroll 1 100; 600 scroll 1 0; 700 scroll 1 100";
        check(up_down, |v| {
            let e: Vec<_> = v.excessive_scrolls.keys().map(|r| r.reversals).collect();
            assert_eq!(e, [6]);
        });
        check("0 pv /a; 0 scroll 1 0; 100 scroll 1 100; 200 scroll 1 0; 300 scroll 1 100", |v| {
            assert!(v.excessive_scrolls.is_empty())
        });
        // Changes of different nodes are counted per node.
        check("0 pv /a; 0 scroll 1 0; 100 scroll 2 100; 200 scroll 1 50; 300 scroll 2 0; 400 scroll 1 0", |v| {
            assert!(v.excessive_scrolls.is_empty())
        });
    }
}
