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
        /// Rage-click bursts on the page (rows of `rage_clicks`), and so on for each
        /// signal: a dashboard's "top pages by signal" reads these per URL instead of
        /// grouping every signal row.
        rage_clicks: i64 as rage_clicks I64,
        dead_clicks: i64 as dead_clicks I64,
        error_clicks: i64 as error_clicks I64,
        quick_backs: i64 as quick_backs I64,
        excessive_scrolls: i64 as excessive_scrolls I64,
        thrashed_cursors: i64 as thrashed_cursors I64,
    }
}

impl PageAgg {
    /// Every field, in order, to add or scale them all alike.
    fn fields(&mut self) -> [&mut i64; 11] {
        [
            &mut self.views,
            &mut self.visitors,
            &mut self.duration_ms,
            &mut self.exits,
            &mut self.bounces,
            &mut self.rage_clicks,
            &mut self.dead_clicks,
            &mut self.error_clicks,
            &mut self.quick_backs,
            &mut self.excessive_scrolls,
            &mut self.thrashed_cursors,
        ]
    }

    /// The signals counted on the page.
    fn signals(&self) -> i64 {
        self.rage_clicks
            + self.dead_clicks
            + self.error_clicks
            + self.quick_backs
            + self.excessive_scrolls
            + self.thrashed_cursors
    }
}

impl IsZero for PageAgg {
    fn is_zero(&self) -> bool {
        *self == PageAgg::default()
    }
}

impl Semigroup for PageAgg {
    fn plus_equals(&mut self, r: &Self) {
        let mut r = *r;
        for (a, b) in self.fields().into_iter().zip(r.fields()) {
            *a += *b;
        }
    }
}

impl Monoid for PageAgg {
    fn zero() -> Self {
        PageAgg::default()
    }
}

impl Abelian for PageAgg {
    fn negate(&mut self) {
        for a in self.fields() {
            *a = -*a;
        }
    }
}

impl differential_dataflow::difference::Multiply<isize> for PageAgg {
    type Output = PageAgg;
    fn multiply(mut self, n: &isize) -> PageAgg {
        for a in self.fields() {
            *a *= *n as i64;
        }
        self
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

/// Reference: the signals per page, from the signal views' rows.
pub(crate) fn reference_signals(v: &mut crate::Views) {
    type Set = fn(&mut PageAgg, i64);
    let mut counts: Vec<(PageKey, PageAgg)> = Vec::new();
    let mut count = |rows: &mut dyn Iterator<Item = (Sym, Sym, isize)>, set: Set| {
        for (project, url, n) in rows {
            let mut a = PageAgg::default();
            set(&mut a, n as i64);
            counts.push((PageKey { project, url }, a));
        }
    };
    count(&mut v.rage_clicks.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.rage_clicks = n);
    count(&mut v.dead_clicks.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.dead_clicks = n);
    count(&mut v.error_clicks.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.error_clicks = n);
    count(&mut v.quick_backs.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.quick_backs = n);
    count(&mut v.excessive_scrolls.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.excessive_scrolls = n);
    count(&mut v.thrashed_cursors.iter().map(|(r, n)| (r.project, r.url, *n)), |a, n| a.thrashed_cursors = n);
    for (k, a) in counts {
        crate::registry::accumulate(&mut v.page_stats, k, a);
    }
}

impl crate::columns::Aggregate for PageAgg {
    /// A page shows once it has a counted page view or a signal (a signal can be on a
    /// page no session of it counted: a tab left on a page over a session split).
    fn visible(&self) -> bool {
        self.views > 0 || self.signals() > 0
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

    /// Each page counts the signal rows on it: a rage burst and the dead clicks of it on
    /// /a, none on /b.
    #[test]
    fn signals_are_counted_per_page() {
        check("0 pv /a; 0 click 5 5; 500 click 6 6; 1000 click 7 7; 9000 pv /b; 9500 act", |v| {
            let of = |url: &str| *v.page_stats.iter().find(|(k, _)| k.url.as_string() == url).expect(url).1;
            let on = |n: usize, url: &str| (n as i64, of(url));
            let dead = v.dead_clicks.keys().filter(|r| r.url.as_string() == "/a").count();
            let (n, a) = on(v.rage_clicks.len(), "/a");
            assert_eq!((a.rage_clicks, a.dead_clicks), (n, dead as i64));
            assert!(n == 1 && dead > 0, "{n} bursts, {dead} dead clicks");
            let b = of("/b");
            assert_eq!((b.rage_clicks, b.dead_clicks, b.views), (0, 0, 1));
        });
    }
}
