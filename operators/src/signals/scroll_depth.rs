//! Scroll depth: per URL, how many sessions' deepest visible y (scroll position plus
//! viewport height) reaches each `scroll_depth.band_pct` band of the page. 100% is the
//! page height when the sender knew it, else the deepest any session reached on the
//! URL. The same deepest y also gives the scroll kind of the heatmap: sessions reaching
//! each `heatmap.cell_px` band, per viewport bucket.

use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::signals::heatmap::{HeatKind, HeatRow};
use crate::signals::{Kept, replace_kept};
use crate::sym::Sym;

row! {
    /// One session's deepest visible y on one URL (px, rounded down to a cell), and the
    /// page height when the sender knew it (else 0).
    DepthObs {
        /// The project.
        project: Sym,
        /// The URL.
        url: Sym,
        /// Deepest visible y (px, rounded down to a cell).
        deepest: u32,
        /// Page height (px), 0 when unknown.
        page_height: u32,
    }
}

row! {
    /// A scroll-depth band; its multiplicity is the number of sessions reaching it.
    DepthRow {
        project: Sym as project Str,
        url: Sym as url Str,
        depth_pct: u32 as depth_pct I32,
    }
}

impl Kept for DepthObs {
    type Part = (u32, u32);
    fn part(&self) -> Self::Part {
        (self.deepest, self.page_height)
    }
    fn with(self, (deepest, page_height): Self::Part) -> Self {
        DepthObs { deepest, page_height, ..self }
    }
}

#[derive(Clone, Copy, Debug)]
struct Depth {
    url: Sym,
    bucket: u32,
    deepest: i32,
    page_height: u32,
    bands: u32,
    emitted: Option<(u32, u32)>,
}

/// A session's deepest visible y per (URL, viewport bucket at the page's start).
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    depth: Vec<Depth>,
}

impl SessionState {
    /// A page of `url` (started at viewport width `start_width`) has been seen down to
    /// `deepest`, on a page `page_height` high (0: unknown).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        project: Sym,
        url: Sym,
        start_width: u32,
        deepest: i32,
        page_height: u32,
        p: &Params,
        out: &mut Emit,
    ) {
        let bucket = p.viewport_bucket(start_width);
        let deepest = deepest.max(0);
        let entry = match self.depth.iter_mut().position(|d| d.url == url && d.bucket == bucket) {
            Some(i) => &mut self.depth[i],
            None => {
                self.depth.reserve_exact(1);
                self.depth.push(Depth { url, bucket, deepest: 0, page_height: 0, bands: 0, emitted: None });
                self.depth.last_mut().expect("pushed")
            }
        };
        entry.deepest = entry.deepest.max(deepest);
        if page_height > 0 {
            entry.page_height = entry.page_height.max(page_height);
        }
        let bands = (entry.deepest as u32).div_ceil(p.cell as u32);
        for band in entry.bands..bands {
            let row = HeatRow {
                project,
                url,
                kind: HeatKind::Scroll,
                viewport_bucket: bucket,
                cell_x: 0,
                cell_y: band as i32,
            };
            *out.heat.entry(row).or_insert(0) += 1;
        }
        entry.bands = entry.bands.max(bands);
        let obs =
            DepthObs { project, url, deepest: depth_round(entry.deepest, p.cell), page_height: entry.page_height };
        replace_kept(&mut out.depth, &mut entry.emitted, Some(obs), true);
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.depth.capacity() * std::mem::size_of::<Depth>()
    }
}

/// Deepest visible y as observed by scroll depth: rounded down to a cell.
pub fn depth_round(deepest: i32, cell: i32) -> u32 {
    (deepest.max(0) / cell * cell) as u32
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

/// Reference: each session's deepest y per (URL, start bucket), with the scroll heat
/// bands it reaches; observations are collected for [`reference_finish`].
pub(crate) fn reference(
    tl: &Timeline,
    p: &Params,
    v: &mut crate::Views,
    obs: &mut std::collections::BTreeMap<DepthObs, isize>,
) {
    let bucket = |w: u32| p.breakpoints.iter().rev().find(|b| **b <= w).copied().unwrap_or(0);
    let mut deepest: std::collections::BTreeMap<(usize, Sym, u32), (i32, u32)> = Default::default();
    for pg in tl.pages.iter().filter(|pg| pg.counted) {
        let e = deepest.entry((pg.session, pg.url, bucket(pg.start_width))).or_insert((0, 0));
        e.0 = e.0.max(pg.deepest.max(0));
        if pg.page_height > 0 {
            e.1 = e.1.max(pg.page_height);
        }
    }
    for ((_, url, b), (d, height)) in deepest {
        let reached = (d + p.cell - 1) / p.cell;
        for band in 0..reached {
            *v.heatmap_cells
                .entry(HeatRow {
                    project: tl.key.project,
                    url,
                    kind: HeatKind::Scroll,
                    viewport_bucket: b,
                    cell_x: 0,
                    cell_y: band,
                })
                .or_insert(0) += 1;
        }
        let rounded = (d - d % p.cell) as u32;
        *obs.entry(DepthObs { project: tl.key.project, url, deepest: rounded, page_height: height }).or_insert(0) += 1;
    }
}

/// Reference: the bands of every URL from all sessions' observations.
pub(crate) fn reference_finish(obs: &std::collections::BTreeMap<DepthObs, isize>, p: &Params, v: &mut crate::Views) {
    type Observations = Vec<(u32, u32, isize)>;
    let mut per_url: std::collections::BTreeMap<(Sym, Sym), Observations> = Default::default();
    for (o, n) in obs {
        per_url.entry((o.project, o.url)).or_default().push((o.deepest, o.page_height, *n));
    }
    for ((project, url), list) in per_url {
        let deepest_any = list.iter().map(|o| o.0).max().unwrap_or(0);
        let mut band = 0;
        while band <= 100 {
            let n: isize = list
                .iter()
                .filter(|&&(d, h, _)| {
                    let full = if h > 0 { h } else { deepest_any };
                    let pct = if full == 0 { 100.0 } else { (d as f64 * 100.0 / full as f64).min(100.0) };
                    pct.floor() as u32 >= band
                })
                .map(|o| o.2)
                .sum();
            if n != 0 {
                v.scroll_depth.insert(DepthRow { project, url, depth_pct: band }, n);
            }
            band += p.band_pct;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::depth_bands;
    use crate::signals::testing::check;

    #[test]
    fn depth_bands_use_page_height_or_the_deepest_session() {
        // Two sessions without page height: 100% is 2000px.
        let bands = depth_bands(&[(2000, 0, 1), (1000, 0, 1)], 25);
        assert_eq!(bands, vec![(0, 2), (25, 2), (50, 2), (75, 1), (100, 1)]);
        // A known page height of 4000px: 2000px is 50%.
        let bands = depth_bands(&[(2000, 4000, 1)], 50);
        assert_eq!(bands, vec![(0, 1), (50, 1)]);
    }

    #[test]
    fn sessions_reach_bands() {
        let d = |v: &crate::Views| {
            let mut b: Vec<_> = v.scroll_depth.iter().map(|(r, n)| (r.depth_pct, *n)).collect();
            b.sort();
            b
        };
        // One session: its own deepest is 100%.
        check("0 pv /a 800 600; 10 scroll 1 600", |v| assert_eq!(d(v).last(), Some(&(100, 1))));
        check("0 pv /a 800 600 2400; 10 scroll 1 600", |v| {
            assert_eq!(d(v), [(0, 1), (10, 1), (20, 1), (30, 1), (40, 1), (50, 1)])
        });
    }
}
