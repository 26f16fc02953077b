//! Quick backs: page views A, B, A in a row on one tab of one session where B lasted at
//! most `signals.quick_back.max_dwell_ms` (B's start to the second A's start); reported
//! against B.

use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::SessionRow;
use crate::sym::Sym;

row! {
    /// Page views A, B, A with a short B; reported against B.
    QuickBackRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        /// B.
        url: Sym as url Str,
        /// B's start.
        ts: i64 as ts Ts,
        dwell_ms: i64 as dwell_ms I64,
        /// A.
        from_url: Sym as from_url Str,
    }
}

/// A tab's page view before the current one.
#[derive(Clone, Copy, Debug, Default)]
pub struct TabState {
    prev: Option<Sym>,
}

impl TabState {
    /// The tab leaves page view `b` (started at `b_start`, counted or not) for a page
    /// view of `next` at `eff`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_page_view(
        &mut self,
        b_url: Sym,
        b_start: i64,
        b_counted: bool,
        next: Sym,
        eff: i64,
        row: &mut SessionRow,
        p: &Params,
        out: &mut Emit,
    ) {
        if !b_counted {
            // A page carried over a session split has no predecessor in this session.
            self.prev = None;
            return;
        }
        if let Some(a) = self.prev
            && a == next
            && b_url != next
            && eff - b_start <= p.quick_back_max
        {
            row.quick_backs += 1;
            out.quick_backs.push((
                QuickBackRow {
                    session: row.session,
                    project: row.project,
                    url: b_url,
                    ts: b_start,
                    dwell_ms: eff - b_start,
                    from_url: a,
                },
                1,
            ));
        }
        self.prev = Some(b_url);
    }
}

/// Reference: consecutive counted page views A, B, A of one tab in one session.
pub(crate) fn reference(tl: &Timeline, p: &Params, rows: &mut [SessionRow], v: &mut crate::Views) {
    let mut by_tab: std::collections::BTreeMap<(usize, Sym), Vec<usize>> = Default::default();
    for (pi, pg) in tl.pages.iter().enumerate() {
        if pg.counted {
            by_tab.entry((pg.session, pg.tab)).or_default().push(pi);
        }
    }
    for ((s, _), list) in &by_tab {
        for w in list.windows(3) {
            let (a, b, c) = (&tl.pages[w[0]], &tl.pages[w[1]], &tl.pages[w[2]]);
            let dwell = c.start - b.start;
            if a.url == c.url && b.url != c.url && dwell <= p.quick_back_max {
                rows[*s].quick_backs += 1;
                *v.quick_backs
                    .entry(QuickBackRow {
                        session: rows[*s].session,
                        project: tl.key.project,
                        url: b.url,
                        ts: b.start,
                        dwell_ms: dwell,
                        from_url: a.url,
                    })
                    .or_insert(0) += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn a_b_a_with_a_short_b() {
        let qb = |v: &crate::Views| v.quick_backs.keys().map(|r| (r.url.as_string(), r.dwell_ms)).collect::<Vec<_>>();
        check("0 pv /a; 1000 pv /b; 6000 pv /a", |v| assert_eq!(qb(v), [("/b".to_string(), 5000)]));
        check("0 pv /a; 1000 pv /b; 6001 pv /a", |v| assert!(qb(v).is_empty()));
        check("0 pv /a; 1000 pv /b; 2000 pv /c", |v| assert!(qb(v).is_empty()));
        // On different tabs it is not a quick back.
        check("0 pv /a; 1000 t2 pv /b; 2000 pv /a", |v| assert!(qb(v).is_empty()));
        check("0 pv /a; 1000 pv /a; 2000 pv /a", |v| assert!(qb(v).is_empty()));
    }
}
