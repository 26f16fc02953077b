//! Episodes of "at least N changes within W", with overlapping qualifying windows merged
//! into one: the shape shared by excessive scrolling and thrashed cursors.

use std::collections::VecDeque;

use crate::row;
use crate::signals::{Kept, RowCtx, replace_kept};
use crate::sym::Sym;

row! {
    /// An excessive-scrolling or thrashed-cursor episode: merged qualifying windows.
    EpisodeRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        url: Sym as url Str,
        /// First direction change (or reversal) of the episode.
        ts: i64 as ts Ts,
        reversals: u32 as reversals I64,
        /// Last one.
        end_ts: i64 as end_ts Ts,
    }
}

impl Kept for EpisodeRow {
    /// An episode grows at its end.
    type Part = (i64, u32);
    fn part(&self) -> Self::Part {
        (self.end_ts, self.reversals)
    }
    fn with(self, (end_ts, reversals): Self::Part) -> Self {
        EpisodeRow { end_ts, reversals, ..self }
    }
}

/// The incremental detector: the times of the last `min - 1` changes and the episode
/// being grown.
#[derive(Clone, Debug, Default)]
pub struct Episodes {
    recent: VecDeque<i64>,
    /// Index of the next change.
    index: u64,
    current: Option<Episode>,
    emitted: Option<(i64, u32)>,
}

#[derive(Clone, Copy, Debug)]
struct Episode {
    start: i64,
    end: i64,
    count: u32,
    last_index: u64,
}

impl Episodes {
    /// Records a change at `at`; returns true when an episode started. An episode that
    /// can no longer grow is emitted in its final form into `out` and forgotten.
    pub fn change(&mut self, at: i64, min: u32, window: i64, out: &mut Vec<(EpisodeRow, isize)>, ctx: RowCtx) -> bool {
        let j = self.index;
        self.index += 1;
        let need = (min as usize).saturating_sub(1);
        let mut started = false;
        let first = if need == 0 {
            Some(at)
        } else if self.recent.len() == need {
            self.recent.front().copied()
        } else {
            None
        };
        if let Some(first) = first
            && at - first <= window
        {
            match &mut self.current {
                Some(ep) if first <= ep.end => {
                    ep.count += (j - ep.last_index) as u32;
                    ep.end = at;
                    ep.last_index = j;
                }
                _ => {
                    let done = self.row(ctx);
                    replace_kept(out, &mut self.emitted, done, true);
                    self.emitted = None;
                    self.current = Some(Episode { start: first, end: at, count: min, last_index: j });
                    started = true;
                }
            }
        }
        if need > 0 {
            if self.recent.len() == need {
                self.recent.pop_front();
            }
            self.recent.push_back(at);
        }
        started
    }

    fn row(&self, c: RowCtx) -> Option<EpisodeRow> {
        self.current.map(|e| EpisodeRow {
            session: c.session,
            project: c.project,
            url: c.url,
            ts: e.start,
            end_ts: e.end,
            reversals: e.count,
        })
    }

    /// Emits the episode's current form.
    pub fn flush(&mut self, ctx: RowCtx, out: &mut Vec<(EpisodeRow, isize)>) {
        let now = self.row(ctx);
        replace_kept(out, &mut self.emitted, now, true);
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.recent.capacity() * 8
    }
}

/// Reference: episodes of at least `min` changes within `window`, overlapping windows
/// merged: `(first change, last change, changes)`.
pub(crate) fn reference_episodes(changes: &[i64], min: u32, window: i64) -> Vec<(i64, i64, u32)> {
    let m = min.max(1) as usize;
    // Every qualifying window as (first index, last index), in order of their ends.
    let windows: Vec<(usize, usize)> =
        (m - 1..changes.len()).map(|j| (j + 1 - m, j)).filter(|&(a, b)| changes[b] - changes[a] <= window).collect();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (a, b) in windows {
        match out.last_mut() {
            // Overlapping in time with the episode so far: the same episode.
            Some(ep) if changes[a] <= changes[ep.1] => ep.1 = b,
            _ => out.push((a, b)),
        }
    }
    out.into_iter().map(|(a, b)| (changes[a], changes[b], (b - a + 1) as u32)).collect()
}

#[cfg(test)]
mod tests {
    use super::reference_episodes;

    #[test]
    fn episodes_merge_overlapping_windows() {
        // 8 changes within 4 s: one episode of 8.
        let c = [0, 500, 1000, 1500, 2000, 2500, 3000, 3500];
        assert_eq!(reference_episodes(&c, 6, 10_000), vec![(0, 3500, 8)]);
        // Two separate bursts.
        let c = [0, 100, 200, 300, 5000, 5100, 5200, 5300];
        assert_eq!(reference_episodes(&c, 4, 1000), vec![(0, 300, 4), (5000, 5300, 4)]);
        // Too slow.
        assert!(reference_episodes(&[0, 2000, 4000, 6000], 4, 1000).is_empty());
    }
}
