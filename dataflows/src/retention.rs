//! Closed sessions leave the views `session.retention_ms` after their last change.
//!
//! A view of every session ever seen grows with every visitor, so a server that runs
//! for weeks would hold them all in memory; a restarted one holds only what its retained
//! log rebuilds. With a retention, the snapshot at `as_of` is exactly the views of every
//! event, minus every row of the sessions that closed, and did not change since, before
//! the cutoff `as_of - retention` (rounded down to a [`Retention::step`], so that it
//! moves once a minute and each move costs one pass over the per-session views). The
//! aggregates (heatmaps, page stats, errors, funnel steps) keep counting them.
//!
//! A session that left cannot change again: the configuration requires a retention of
//! at least the device state's grace plus a late click's wait, and after those the
//! device's state is gone. The changes that still come for its rows (their retractions
//! at the same logical time as others) are dropped by the publisher, which knows them as
//! retractions of rows it does not hold.

use std::collections::VecDeque;

use sightflow_operators::signals::sessions::{SessionId, SessionRow};
use sightflow_operators::{FastMap, FastSet};

/// Which sessions are due to leave the views.
pub struct Retention {
    ms: u64,
    step: u64,
    /// Each held session's last change: the logical time of its newest `sessions` row.
    last: FastMap<SessionId, u64>,
    /// Closing rows in the order they came: their time and session.
    closes: VecDeque<(u64, SessionId)>,
    /// Sessions that closed before this time have left.
    cutoff: u64,
    /// Sessions that have left so far.
    left: u64,
}

impl Retention {
    /// A retention of `ms` of logical time; `None` for 0 (every session stays).
    pub fn new(ms: u64) -> Option<Retention> {
        (ms > 0).then(|| Retention {
            ms,
            step: Self::step(ms),
            last: FastMap::default(),
            closes: VecDeque::new(),
            cutoff: 0,
            left: 0,
        })
    }

    /// How far the cutoff moves at once: a minute, or the retention when it is shorter.
    pub fn step(ms: u64) -> u64 {
        ms.clamp(1, 60_000)
    }

    /// The cutoff at `as_of`: sessions closed before it are not in the views.
    pub fn cutoff(&self, as_of: u64) -> u64 {
        as_of.saturating_sub(self.ms) / self.step * self.step
    }

    /// A `sessions` row added at logical time `t`. Rows come in time order.
    pub fn note(&mut self, t: u64, row: &SessionRow) {
        self.last.insert(row.session, t);
        if !row.is_live {
            self.closes.push_back((t, row.session));
        }
    }

    /// The sessions that leave at `as_of`: closed before its cutoff and not changed
    /// since. Empty until the cutoff moves.
    pub fn due(&mut self, as_of: u64) -> FastSet<SessionId> {
        let mut gone = FastSet::default();
        let cutoff = self.cutoff(as_of);
        if cutoff <= self.cutoff {
            return gone;
        }
        self.cutoff = cutoff;
        while let Some(&(t, s)) = self.closes.front() {
            if t >= cutoff {
                break;
            }
            self.closes.pop_front();
            // A later row (live again, or closed later and listed again) keeps it.
            if self.last.get(&s) == Some(&t) {
                self.last.remove(&s);
                gone.insert(s);
            }
        }
        self.left += gone.len() as u64;
        gone
    }

    /// Sessions that have left the views so far.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Sessions whose last change is tracked (held in the views), and closing rows listed.
    pub fn held(&self) -> (usize, usize) {
        (self.last.len(), self.closes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{Publisher, Snapshots, WorkerUpdate};
    use sightflow_operators::event::DeviceKey;
    use sightflow_operators::signals::heatmap::{HeatKind, HeatRow};
    use sightflow_operators::signals::rage::RageRow;
    use sightflow_operators::stats::StateStats;
    use sightflow_operators::{Params, Sym, Update};

    fn row(session: u64, is_live: bool) -> SessionRow {
        let key = DeviceKey { project: Sym::new("p"), device: Sym::new("d") };
        SessionRow { is_live, ..SessionRow::new(session, key, 0) }
    }

    fn rage(session: u64) -> RageRow {
        let (project, url, selector) = (Sym::new("p"), Sym::new("/a"), Sym::new("#b"));
        RageRow { session, project, url, ts: 0, x: 1, y: 2, clicks: 3, selector, end_ts: 0 }
    }

    fn heat() -> HeatRow {
        HeatRow {
            project: Sym::new("p"),
            url: Sym::new("/a"),
            kind: HeatKind::Click,
            viewport_bucket: 0,
            cell_x: 1,
            cell_y: 2,
        }
    }

    /// A live publisher of `workers` workers with a 10-minute retention.
    fn publisher(workers: usize) -> (Publisher, Snapshots) {
        let mut c = sightflow_config::Config::defaults();
        c.session.retention_ms = 600_000;
        let params = std::sync::Arc::new(Params::from_config(&c));
        let snapshots = Snapshots::new(&params);
        (Publisher::new(workers, params, snapshots.clone(), StateStats::default(), None, false), snapshots)
    }

    fn sessions_of(p: &Snapshots) -> Vec<(i64, bool)> {
        let t = p.latest().table("sessions").expect("a view");
        let ids = t.column_by_name("session_id").expect("column");
        let live = t.column_by_name("is_live").expect("column");
        let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Int64).expect("numbers");
        let ids = ids.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64");
        let live = live.as_any().downcast_ref::<arrow::array::BooleanArray>().expect("bool");
        let mut out: Vec<_> = ids.values().iter().zip(live.values().iter()).map(|(i, l)| (*i, l)).collect();
        out.sort();
        out
    }

    /// Through the publisher: a session that left takes its rows in every per-session
    /// view with it, the aggregates keep counting it, changes that come for its rows
    /// later are dropped (never a negative row), and a retraction that comes before its
    /// row within one time still cancels it.
    #[test]
    fn a_session_leaves_with_its_rows_and_nothing_of_it_comes_back() {
        let (mut p, snapshots) = publisher(1);
        let mut send = |updates: Vec<(u64, Update)>, frontier: u64| {
            p.receive(WorkerUpdate { worker: 0, updates, frontier: Some(frontier) });
        };
        send(
            vec![
                (1_000, Update::Sessions(row(1, true), 1)),
                (1_000, Update::RageClicks(rage(1), 1)),
                (1_000, Update::HeatmapCells(heat(), 1)),
                (2_000, Update::Sessions(row(1, true), -1)),
                (2_000, Update::Sessions(row(1, false), 1)),
                (2_000, Update::Sessions(row(2, true), 1)),
                // Inserted and retracted at one time, the retraction first.
                (3_000, Update::RageClicks(rage(2), -1)),
                (3_000, Update::RageClicks(rage(2), 1)),
            ],
            5_000,
        );
        assert_eq!(sessions_of(&snapshots), [(1, false), (2, true)]);
        assert_eq!(snapshots.latest().num_rows("rage_clicks"), Some(1));
        // The cutoff reaches 60 s at as_of 660 s: session 1 (closed at 2 s) leaves.
        send(vec![], 659_000);
        assert_eq!(sessions_of(&snapshots), [(1, false), (2, true)], "cutoff 0 until 660 s");
        send(vec![], 660_001);
        assert_eq!(sessions_of(&snapshots), [(2, true)]);
        assert_eq!(snapshots.latest().num_rows("rage_clicks"), Some(0), "its burst left with it");
        assert_eq!(snapshots.latest().num_rows("heatmap_cells"), Some(1), "aggregates keep counting it");
        assert_eq!(snapshots.latest().sessions_left, 1, "counted for /metrics");
        // Late retractions of its rows change nothing.
        send(
            vec![
                (700_000, Update::Sessions(row(1, false), -1)),
                (700_000, Update::RageClicks(rage(1), -1)),
                (700_000, Update::RageClicks(rage(2), 1)),
            ],
            700_010,
        );
        assert_eq!(sessions_of(&snapshots), [(2, true)]);
        let snap = snapshots.latest();
        assert_eq!(snap.num_rows("rage_clicks"), Some(1));
        let t = snap.table("rage_clicks").expect("a view");
        let ids =
            arrow::compute::cast(t.column_by_name("session_id").expect("column"), &arrow::datatypes::DataType::Int64)
                .expect("numbers");
        assert_eq!(ids.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64").values(), &[2]);
        // Dropped, not held as a negative row that would cancel a later one.
        send(vec![(710_000, Update::RageClicks(rage(1), 1))], 710_010);
        assert_eq!(snapshots.latest().num_rows("rage_clicks"), Some(2));
    }

    /// The publisher takes changes from several workers' messages in any order: a row
    /// that came and went across times leaves nothing, a change waits for the least
    /// frontier to pass its own time (not its message's), and the retention sees each
    /// session's rows in time order, so a session that closed leaves though its earlier
    /// row came in a later message.
    #[test]
    fn changes_from_several_workers_add_up_in_time_order() {
        let (mut p, snapshots) = publisher(2);
        p.receive(WorkerUpdate {
            worker: 1,
            updates: vec![
                (3_000, Update::Sessions(row(1, true), -1)),
                (3_000, Update::Sessions(row(1, false), 1)),
                (9_000, Update::RageClicks(rage(1), 1)),
            ],
            frontier: Some(10_000),
        });
        p.receive(WorkerUpdate {
            worker: 0,
            updates: vec![
                (1_000, Update::Sessions(row(1, true), 1)),
                (1_000, Update::RageClicks(rage(2), 1)),
                (2_000, Update::RageClicks(rage(2), -1)),
                (2_000, Update::HeatmapCells(heat(), 2)),
                (4_000, Update::HeatmapCells(heat(), -1)),
            ],
            frontier: Some(5_000),
        });
        let snap = snapshots.latest();
        assert_eq!(snap.as_of, 4_999);
        assert_eq!(sessions_of(&snapshots), [(1, false)]);
        assert_eq!(snap.num_rows("rage_clicks"), Some(0), "came and went; the 9 s burst waits");
        let heat = snap.table("heatmap_cells").expect("a view");
        let count = heat.column_by_name("count").expect("column");
        let count = arrow::compute::cast(count, &arrow::datatypes::DataType::Int64).expect("numbers");
        assert_eq!(count.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64").values(), &[1]);
        p.receive(WorkerUpdate { worker: 0, updates: vec![], frontier: Some(20_000) });
        assert_eq!(snapshots.latest().num_rows("rage_clicks"), Some(1), "its frontier passed");
        // Closed at 3 s, its live row (1 s) noted before: it leaves at cutoff 60 s.
        p.receive(WorkerUpdate { worker: 0, updates: vec![], frontier: Some(660_001) });
        p.receive(WorkerUpdate { worker: 1, updates: vec![], frontier: Some(660_001) });
        assert_eq!(sessions_of(&snapshots), []);
        assert_eq!(snapshots.latest().sessions_left, 1);
    }

    /// A session leaves once its last change is older than the cutoff, which moves a
    /// step at a time; live sessions and sessions that changed again stay.
    #[test]
    fn closed_sessions_leave_a_retention_after_their_last_change() {
        let mut r = Retention::new(600_000).expect("on");
        assert!(Retention::new(0).is_none(), "0 keeps every session");
        r.note(10_000, &row(1, true));
        r.note(20_000, &row(1, false)); // 1 closes at 20 s
        r.note(30_000, &row(2, false)); // 2 closes at 30 s ...
        r.note(40_000, &row(3, true)); // (3 stays live)
        r.note(90_000, &row(2, true)); // ... and is live again at 90 s
        r.note(100_000, &row(2, false)); // ... closed again at 100 s
        assert!(r.due(600_000 + 19_999).is_empty(), "the cutoff is still 0");
        assert_eq!(r.cutoff(600_000 + 59_999), 0, "a step is a minute");
        assert_eq!(r.due(600_000 + 60_000), FastSet::from_iter([1]), "cutoff 60 s: 1 closed at 20 s");
        assert!(r.due(600_000 + 119_999).is_empty(), "the cutoff has not moved");
        assert_eq!(r.due(600_000 + 120_000), FastSet::from_iter([2]), "cutoff 120 s: 2 closed last at 100 s");
        assert!(r.due(u64::MAX / 2).is_empty(), "3 is live");
        assert_eq!((r.left(), r.held()), (2, (1, 0)));
    }
}
