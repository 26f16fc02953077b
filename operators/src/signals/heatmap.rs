//! Heatmap grids: counts per (URL, kind, viewport bucket, cell) with `heatmap.cell_px`
//! cells in page (document) coordinates: a click or mouse position's client coordinates
//! plus the page's scroll at that moment. The scroll kind (sessions reaching each depth
//! band) is kept by [`crate::signals::scroll_depth`].

use crate::columns::FieldSyms;
use crate::event::{Kind, MAX_MOVE_OFFSET_MS};
use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::sym::Sym;

/// What a heatmap cell counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum HeatKind {
    /// Clicks per cell.
    Click,
    /// Mouse positions per cell.
    Move,
    /// Sessions reaching each depth band.
    Scroll,
}

impl HeatKind {
    /// The kind as published.
    pub fn as_str(self) -> &'static str {
        match self {
            HeatKind::Click => "click",
            HeatKind::Move => "move",
            HeatKind::Scroll => "scroll",
        }
    }
}

impl FieldSyms for HeatKind {
    fn field_syms(&self, _f: &mut dyn FnMut(Sym)) {}
}

row! {
    /// A heatmap cell; its multiplicity is the count. Scroll cells have `cell_x` 0 and
    /// count sessions whose deepest visible y reaches band `cell_y`.
    HeatRow {
        project: Sym as project Str,
        url: Sym as url Str,
        /// What the cell counts.
        kind: HeatKind,
        + kind Label (r => r.kind.as_str()),
        viewport_bucket: u32 as viewport_bucket I32,
        cell_x: i32 as cell_x I32,
        cell_y: i32 as cell_y I32,
    }
}

/// Counts one point of `kind` at page coordinates `(x, y)` on a page of viewport `width`.
#[allow(clippy::too_many_arguments)]
pub fn count(project: Sym, url: Sym, kind: HeatKind, width: u32, x: i32, y: i32, p: &Params, out: &mut Emit) {
    let row = HeatRow {
        project,
        url,
        kind,
        viewport_bucket: p.viewport_bucket(width),
        cell_x: x.div_euclid(p.cell),
        cell_y: y.div_euclid(p.cell),
    };
    *out.heat.entry(row).or_insert(0) += 1;
}

/// Reference: click and move cells.
pub(crate) fn reference(tl: &Timeline, p: &Params, v: &mut crate::Views) {
    let cell = |c: i32| (c as f64 / p.cell as f64).floor() as i32;
    let bucket = |w: u32| p.breakpoints.iter().rev().find(|b| **b <= w).copied().unwrap_or(0);
    for (i, a) in tl.anns.iter().enumerate() {
        let Some(pi) = a.page else { continue };
        let pg = &tl.pages[pi];
        let (kind, x, y) = match a.ev.kind {
            Kind::Click(c) if c.has_position => {
                if c.has_page {
                    (HeatKind::Click, c.page_x, c.page_y)
                } else {
                    (HeatKind::Click, c.x + a.doc.0, c.y + a.doc.1)
                }
            }
            Kind::Move { x, y, offset, .. } => {
                let at = a.eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64;
                // The document's scroll at `at`: the last record at or before it among
                // those that came before this event.
                let doc = pg
                    .scrolls
                    .iter()
                    .take_while(|(j, ..)| *j < i)
                    .filter(|(_, t, ..)| *t <= at)
                    .last()
                    .map_or(pg.base, |&(_, _, sx, sy)| (sx, sy));
                (HeatKind::Move, x + doc.0, y + doc.1)
            }
            _ => continue,
        };
        *v.heatmap_cells
            .entry(HeatRow {
                project: tl.key.project,
                url: pg.url,
                kind,
                viewport_bucket: bucket(a.width),
                cell_x: cell(x),
                cell_y: cell(y),
            })
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn cells_are_in_page_coordinates() {
        let cells = |v: &crate::Views, kind: &str| {
            let mut c: Vec<_> = v
                .heatmap_cells
                .iter()
                .filter(|(r, _)| r.kind.as_str() == kind)
                .map(|(r, n)| (r.viewport_bucket, r.cell_x, r.cell_y, *n))
                .collect();
            c.sort();
            c
        };
        check("0 pv /a 1280; 10 click 20 40; 20 click 31 47", |v| assert_eq!(cells(v, "click"), [(1024, 1, 2, 2)]));
        check("0 pv /a 800; 10 scroll 1 160; 20 click 0 0", |v| assert_eq!(cells(v, "click"), [(768, 0, 10, 1)]));
        check("0 pv /a 500; 10 click -1 -1", |v| assert_eq!(cells(v, "click"), [(0, -1, -1, 1)]));
        check("0 pv /a 500; 10 click - -", |v| assert!(cells(v, "click").is_empty()));
        check("0 pv /a 500; 100 move 16 16", |v| assert_eq!(cells(v, "move"), [(0, 1, 1, 1)]));
    }
}
