//! Page stats per URL: page views, distinct visitors (devices), average time on page,
//! exits (a session's last page view) and bounces (sessions with one page view).
//! Contributions are accumulated as an aggregate difference ([`PageAgg`]), so no operator
//! ever re-reads all page views of a URL.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};

use crate::registry::Emit;
use crate::row;
use crate::sym::Sym;

row! {
    /// Key of page stats.
    PageKey {
        project: Sym as project Str,
        url: Sym as url Str,
    }
}

row! {
    /// A device that viewed a URL (made distinct for page_stats.visitors).
    PageVisitor {
        /// The project.
        project: Sym,
        /// The URL viewed.
        url: Sym,
        /// The device that viewed it.
        device: Sym,
    }
}

row! {
    /// Page-stats aggregate, accumulated as a difference.
    #[derive(Default)]
    PageAgg {
        views: i64 as page_views I64,
        visitors: i64 as visitors I64,
        /// Sum of page-view durations.
        duration_ms: i64,
        + avg_time_ms F64 (r => r.duration_ms as f64 / r.views.max(1) as f64),
        /// Page views that are their session's last.
        exits: i64 as exits I64,
        /// Sessions whose only page view is here.
        bounces: i64 as bounces I64,
        + total_time_ms I64 (r => r.duration_ms),
    }
}

impl IsZero for PageAgg {
    fn is_zero(&self) -> bool {
        *self == PageAgg::default()
    }
}

impl Semigroup for PageAgg {
    fn plus_equals(&mut self, r: &Self) {
        self.views += r.views;
        self.duration_ms += r.duration_ms;
        self.exits += r.exits;
        self.bounces += r.bounces;
        self.visitors += r.visitors;
    }
}

impl Monoid for PageAgg {
    fn zero() -> Self {
        PageAgg::default()
    }
}

impl Abelian for PageAgg {
    fn negate(&mut self) {
        self.views = -self.views;
        self.duration_ms = -self.duration_ms;
        self.exits = -self.exits;
        self.bounces = -self.bounces;
        self.visitors = -self.visitors;
    }
}

impl differential_dataflow::difference::Multiply<isize> for PageAgg {
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

/// A session's exit and bounce, held where they count now.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionState {
    /// The URL holding the session's exit.
    exit: Option<Sym>,
    /// The URL holding the session's bounce.
    bounce: Option<Sym>,
}

fn add(out: &mut Emit, project: Sym, url: Sym, f: impl FnOnce(&mut PageAgg)) {
    f(out.page_agg.entry(PageKey { project, url }).or_default());
}

impl SessionState {
    /// The session's `n`-th page view, of `url`.
    pub fn on_page_view(&mut self, project: Sym, device: Sym, url: Sym, n: u32, out: &mut Emit) {
        add(out, project, url, |a| a.views += 1);
        out.visitors.push((PageVisitor { project, url, device }, 1));
        // The exit moves to the newest page view.
        if let Some(prev) = self.exit.replace(url) {
            add(out, project, prev, |a| a.exits -= 1);
        }
        add(out, project, url, |a| a.exits += 1);
        // A bounce is a session with exactly one page view.
        if n == 1 {
            self.bounce = Some(url);
            add(out, project, url, |a| a.bounces += 1);
        } else if let Some(b) = self.bounce.take() {
            add(out, project, b, |a| a.bounces -= 1);
        }
    }
}

/// A page view's duration grew by `delta` ms.
pub fn on_duration(project: Sym, url: Sym, delta: i64, out: &mut Emit) {
    if delta != 0 {
        add(out, project, url, |a| a.duration_ms += delta);
    }
}

/// Reference: views, time, exits and bounces per page of one device; its visitors are
/// collected for [`reference_finish`].
pub(crate) fn reference(
    tl: &crate::reference::Timeline,
    rows: &[crate::signals::sessions::SessionRow],
    v: &mut crate::Views,
    visitors: &mut std::collections::BTreeSet<PageVisitor>,
) {
    use crate::registry::accumulate;
    let project = tl.key.project;
    let mut last_of_session: std::collections::BTreeMap<usize, Sym> = Default::default();
    for pg in tl.pages.iter().filter(|pg| pg.counted) {
        accumulate(
            &mut v.page_stats,
            PageKey { project, url: pg.url },
            PageAgg { views: 1, duration_ms: pg.last - pg.start, ..Default::default() },
        );
        visitors.insert(PageVisitor { project, url: pg.url, device: tl.key.device });
        last_of_session.insert(pg.session, pg.url);
    }
    for (s, url) in last_of_session {
        let bounce = i64::from(rows[s].page_views == 1);
        accumulate(
            &mut v.page_stats,
            PageKey { project, url },
            PageAgg { exits: 1, bounces: bounce, ..Default::default() },
        );
    }
}

/// Reference: distinct visitors per page.
pub(crate) fn reference_finish(visitors: &std::collections::BTreeSet<PageVisitor>, v: &mut crate::Views) {
    for pv in visitors {
        crate::registry::accumulate(
            &mut v.page_stats,
            PageKey { project: pv.project, url: pv.url },
            PageAgg { visitors: 1, ..Default::default() },
        );
    }
}

impl crate::columns::Aggregate for PageAgg {
    fn visible(&self) -> bool {
        self.views > 0
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn views_time_exits_and_bounces() {
        let stats = |v: &crate::Views| {
            let mut s: Vec<_> = v
                .page_stats
                .iter()
                .map(|(k, a)| (k.url.as_string(), a.views, a.duration_ms, a.exits, a.bounces, a.visitors))
                .collect();
            s.sort();
            s
        };
        check("0 pv /a; 1000 pv /b; 1500 act", |v| {
            assert_eq!(stats(v), [("/a".into(), 1, 1000, 0, 0, 1), ("/b".into(), 1, 500, 1, 0, 1)])
        });
        check("0 pv /a; 10 act", |v| assert_eq!(stats(v), [("/a".into(), 1, 10, 1, 1, 1)]));
        // Two devices on one page: two visitors.
        check("0 pv /a; 0 d2 pv /a", |v| assert_eq!(stats(v)[0].5, 2));
    }
}
