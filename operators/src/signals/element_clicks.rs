//! The clickmap per element: per (project, URL, selector) the element's tag, its clicks,
//! rage clicks (clicks inside rage bursts), dead clicks, error clicks, and the distinct
//! sessions that clicked it — what PostHog's toolbar shows per element, and what the
//! console outlines on the rebuilt page.
//!
//! Built from [`Fact`]s alone: the device needs no hook for it.

use differential_dataflow::difference::{IsZero, Semigroup};

use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::SessionRow;
use crate::signals::{Fact, FactSignal};
use crate::sym::Sym;

row! {
    /// An element of a page.
    ElementKey {
        project: Sym as project Str,
        url: Sym as url Str,
        selector: Sym as selector Str,
    }
}

row! {
    /// What happened on an element, accumulated as a difference (only ever added to).
    #[derive(Default)]
    ElementAgg {
        /// The element's tag (the largest symbol seen: one tag per selector in practice).
        tag: Sym as tag Str,
        clicks: i64 as clicks I64,
        rage_clicks: i64 as rage_clicks I64,
        dead_clicks: i64 as dead_clicks I64,
        error_clicks: i64 as error_clicks I64,
        sessions: i64 as sessions I64,
    }
}

impl IsZero for ElementAgg {
    fn is_zero(&self) -> bool {
        self.clicks == 0
            && self.rage_clicks == 0
            && self.dead_clicks == 0
            && self.error_clicks == 0
            && self.sessions == 0
    }
}

impl Semigroup for ElementAgg {
    fn plus_equals(&mut self, r: &Self) {
        self.tag = self.tag.max(r.tag);
        self.clicks += r.clicks;
        self.rage_clicks += r.rage_clicks;
        self.dead_clicks += r.dead_clicks;
        self.error_clicks += r.error_clicks;
        self.sessions += r.sessions;
    }
}

impl crate::columns::Aggregate for ElementAgg {
    fn visible(&self) -> bool {
        self.clicks > 0
    }
}

/// A session's clicked elements (sorted), to count each element's sessions once.
#[derive(Clone, Debug, Default)]
pub struct State {
    seen: Vec<(Sym, Sym)>,
}

/// What one fact adds to its element.
fn contribution(fact: &Fact) -> (Sym, Sym, ElementAgg) {
    let one = ElementAgg::default();
    match *fact {
        Fact::Click { url, selector, tag } => (url, selector, ElementAgg { tag, clicks: 1, ..one }),
        Fact::RageClick { url, selector } => (url, selector, ElementAgg { rage_clicks: 1, ..one }),
        Fact::DeadClick { url, selector } => (url, selector, ElementAgg { dead_clicks: 1, ..one }),
        Fact::ErrorClick { url, selector } => (url, selector, ElementAgg { error_clicks: 1, ..one }),
    }
}

impl FactSignal for State {
    fn on_fact(&mut self, fact: &Fact, row: &SessionRow, out: &mut Emit) {
        let (url, selector, mut add) = contribution(fact);
        if matches!(fact, Fact::Click { .. })
            && let Err(at) = self.seen.binary_search(&(url, selector))
        {
            self.seen.insert(at, (url, selector));
            add.sessions = 1;
        }
        out.elements.entry(ElementKey { project: row.project, url, selector }).or_default().plus_equals(&add);
    }

    fn heap_bytes(&self) -> usize {
        self.seen.capacity() * std::mem::size_of::<(Sym, Sym)>()
    }

    fn reference(facts: &[(usize, Fact)], rows: &[SessionRow], v: &mut crate::Views) {
        let mut sessions: std::collections::BTreeSet<(usize, Sym, Sym)> = Default::default();
        for (s, fact) in facts {
            let (url, selector, mut add) = contribution(fact);
            if matches!(fact, Fact::Click { .. }) && sessions.insert((*s, url, selector)) {
                add.sessions = 1;
            }
            let key = ElementKey { project: rows[*s].project, url, selector };
            crate::registry::accumulate(&mut v.element_clicks, key, add);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    fn elements(v: &crate::Views) -> Vec<(String, i64, i64, i64, i64, i64)> {
        let mut e: Vec<_> = v
            .element_clicks
            .iter()
            .map(|(k, a)| (k.selector.as_string(), a.clicks, a.rage_clicks, a.dead_clicks, a.error_clicks, a.sessions))
            .collect();
        e.sort();
        e
    }

    #[test]
    fn each_element_counts_its_clicks_and_their_signals() {
        // Three quick clicks on one spot, two elements: all six are rage clicks.
        check("0 pv /a; 0 click 5 5 a#x; 100 click 5 5 b#y; 200 click 5 5 a#x; 250 mut", |v| {
            assert_eq!(elements(v), [("a#x".into(), 2, 2, 0, 0, 1), ("b#y".into(), 1, 1, 0, 0, 1)])
        });
        // A dead click and an error click.
        check("0 pv /a; 100 click 1 1 a#x; 5000 click 1 1 b#y; 5100 mut; 5200 error boom", |v| {
            assert_eq!(elements(v), [("a#x".into(), 1, 0, 1, 0, 1), ("b#y".into(), 1, 0, 0, 1, 1)])
        });
        // Two sessions click the same element: two sessions.
        check("0 pv /a; 10 click 1 1 a#x; 20 mut; 3600000 pv /a; 3600010 click 1 1 a#x; 3600020 mut", |v| {
            assert_eq!(elements(v), [("a#x".into(), 2, 0, 0, 0, 2)])
        });
    }
}
