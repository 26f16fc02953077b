//! Batch reference implementations of every view: each definition computed from
//! scratch over the whole input, with no incremental state. The oracle tests compare
//! the dataflow's published views with these at every published `as_of`.
//!
//! Input is the set of `(logical time, event)` pairs; the views at `as_of` are a function
//! of the events with logical time `<= as_of`. This module builds each device's
//! [`Timeline`] (effective times, sessions, releases, page instances); each signal module
//! states its definition over it. The shared conventions (stated once here and
//! implemented independently by [`crate::device`]):
//! - a device's events are ordered by (logical time, event time, tab, seq, sub); the
//!   effective time of an event is `max(event time, previous effective time)`;
//! - a device's state is released when the next event's logical time is beyond
//!   `max(session close, last arrival + grace)`; the next event then starts afresh;
//! - a dead-click verdict is given once the device has an event past the click's longest
//!   window, or at the click's deadline (the tick `click + window` for a click that arrived
//!   on time, `late_verdict` after its arrival for a late one), or when a new session starts
//!   or the state is released; only events that arrived by the deadline count as reactions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::event::{DOCUMENT_NODE, DeviceKey, Event, Kind, tick_after, tick_ceil};
use crate::params::Params;
use crate::registry::{FactStates, Views};
use crate::signals::sessions::{SessionId, reference_session_id};
use crate::signals::{
    Fact, clicks, errors, excessive_scroll, funnels, heatmap, page_stats, quick_back, rage, scroll_depth, sessions,
    thrashed_cursor,
};
use crate::sym::Sym;

/// One event with what the timeline scan derived for it.
#[derive(Clone, Copy, Debug)]
pub struct Ann {
    /// Logical time of arrival.
    pub t: u64,
    /// The event.
    pub ev: Event,
    /// Effective time.
    pub eff: i64,
    /// Index into [`Timeline::sessions`].
    pub session: usize,
    /// The tab's page instance after the event (its own for a page view).
    pub page: Option<usize>,
    /// Page number within the tab (page views of the tab in this epoch).
    pub page_no: u32,
    /// The page's viewport width and document scroll just before the event.
    pub width: u32,
    /// The document scroll `(x, y)` just before the event (px).
    pub doc: (i32, i32),
}

/// One session of a device.
#[derive(Clone, Debug)]
pub struct Sess {
    /// The session id.
    pub id: SessionId,
    /// Effective time of its first event (ms).
    pub start: i64,
    /// Effective time of its last event (ms).
    pub last: i64,
    /// The first midnight after `start` in the session time zone (ms; `i64::MAX` when
    /// sessions do not split at midnight).
    pub next_midnight: i64,
    /// A later session of the same device exists (split or release).
    pub superseded: bool,
    /// The epoch's release time has passed (`as_of` beyond it).
    pub released: bool,
}

/// One page of a tab within a session (counted, or carried over a split).
#[derive(Clone, Debug)]
pub struct PageInst {
    /// Index into [`Timeline::sessions`].
    pub session: usize,
    /// The tab.
    pub tab: Sym,
    /// Started by a page view in this session (else carried over a split, and not a
    /// page view of its own).
    pub counted: bool,
    /// The page's URL.
    pub url: Sym,
    /// Effective time the page started in this session (ms).
    pub start: i64,
    /// Effective time of the page's last event (ms).
    pub last: i64,
    /// Viewport width when the page started (px).
    pub start_width: u32,
    /// Viewport width now, after resizes (px).
    pub width: u32,
    /// Viewport height now, after resizes (px).
    pub height: u32,
    /// Document height when known, else 0 (px).
    pub page_height: u32,
    /// Document scroll when the page started.
    pub base: (i32, i32),
    /// Deepest visible y so far: document scroll plus viewport height (px).
    pub deepest: i32,
    /// Largest document scroll y (px).
    pub max_scroll_y: i32,
    /// Document scroll records (event index, effective time, x, y).
    pub scrolls: Vec<(usize, i64, i32, i32)>,
}

/// One device's events as the definitions see them.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// The device.
    pub key: DeviceKey,
    /// The views' logical time: only events with logical time `<=` this are in.
    pub as_of: u64,
    /// The device's events in processing order.
    pub anns: Vec<Ann>,
    /// Its sessions, in order.
    pub sessions: Vec<Sess>,
    /// Its page instances, in order of start.
    pub pages: Vec<PageInst>,
    /// Events of each page instance, in order.
    pub on_page: Vec<Vec<usize>>,
}

impl Timeline {
    /// The URL an event belongs to: its page's, else the one it carries.
    pub fn url_of(&self, a: &Ann) -> Sym {
        a.page.map_or(a.ev.url, |pi| self.pages[pi].url)
    }

    /// When a session closes (logical time).
    pub fn close_of(&self, s: &Sess, p: &Params) -> u64 {
        tick_after(s.last + p.gap, p.tick)
            .min(tick_ceil(s.start.saturating_add(p.max_age), p.tick))
            .min(tick_ceil(s.next_midnight.min(i64::MAX / 2), p.tick))
    }
}

fn doc_now(pg: &PageInst) -> (i32, i32) {
    pg.scrolls.last().map_or(pg.base, |&(_, _, x, y)| (x, y))
}

/// Builds a device's timeline from its events in processing order.
pub fn timeline(key: DeviceKey, evs: &[(u64, Event)], as_of: u64, p: &Params) -> Timeline {
    let mut tl =
        Timeline { key, as_of, anns: Vec::new(), sessions: Vec::new(), pages: Vec::new(), on_page: Vec::new() };
    // 1. Effective times, sessions, releases.
    let mut last_eff: Option<i64> = None;
    let mut last_t = 0u64;
    let mut cur: Option<usize> = None;
    let mut new_epoch_at: BTreeSet<usize> = BTreeSet::new();
    for &(t, ev) in evs {
        if let Some(c) = cur {
            let release = tl.close_of(&tl.sessions[c], p).max(tick_ceil(last_t as i64 + p.grace as i64, p.tick));
            if t > release {
                tl.sessions[c].superseded = true;
                cur = None;
                last_eff = None;
                new_epoch_at.insert(tl.anns.len());
            }
        }
        let eff = last_eff.map_or(ev.ts, |l| ev.ts.max(l));
        let split = match cur {
            None => true,
            Some(c) => {
                let s = &tl.sessions[c];
                eff - s.last > p.gap || eff - s.start >= p.max_age || eff >= s.next_midnight
            }
        };
        if split {
            if let Some(c) = cur {
                tl.sessions[c].superseded = true;
            }
            tl.sessions.push(Sess {
                id: reference_session_id(key, eff),
                start: eff,
                last: eff,
                next_midnight: p.next_midnight(eff),
                superseded: false,
                released: false,
            });
            cur = Some(tl.sessions.len() - 1);
        }
        let c = cur.expect("session");
        tl.sessions[c].last = eff;
        last_eff = Some(eff);
        last_t = t;
        tl.anns.push(Ann { t, ev, eff, session: c, page: None, page_no: 0, width: 0, doc: (0, 0) });
    }
    if let Some(c) = cur {
        let release = tl.close_of(&tl.sessions[c], p).max(tick_ceil(last_t as i64 + p.grace as i64, p.tick));
        if release <= as_of {
            tl.sessions[c].released = true;
        }
    }

    // 2. Pages: per tab, the current page instance; pages carry over a session split.
    struct TabCtx {
        page: Option<usize>,
        pages: u32,
    }
    let pages = &mut tl.pages;
    let anns = &mut tl.anns;
    let mut tabs: HashMap<Sym, TabCtx> = HashMap::new();
    let mut prev_session: Option<usize> = None;
    #[allow(clippy::needless_range_loop)] // `anns[i]` is written back below
    for i in 0..anns.len() {
        let a = anns[i];
        if new_epoch_at.contains(&i) {
            tabs.clear();
        } else if prev_session.is_some_and(|s| s != a.session) {
            // Split: each tab on a page stays there, as an uncounted page of the new session.
            let mut ts: Vec<Sym> = tabs.keys().copied().collect();
            ts.sort();
            for tab in ts {
                let ctx = tabs.get_mut(&tab).expect("tab");
                match ctx.page {
                    Some(pi) => {
                        let old = pages[pi].clone();
                        let (dx, dy) = doc_now(&old);
                        pages.push(PageInst {
                            session: a.session,
                            tab,
                            counted: false,
                            url: old.url,
                            start: a.eff,
                            last: a.eff,
                            start_width: old.width,
                            width: old.width,
                            height: old.height,
                            page_height: old.page_height,
                            base: (dx, dy),
                            deepest: dy + old.height as i32,
                            max_scroll_y: 0,
                            scrolls: Vec::new(),
                        });
                        ctx.page = Some(pages.len() - 1);
                    }
                    None => {
                        tabs.remove(&tab);
                    }
                }
            }
        }
        prev_session = Some(a.session);
        let ctx = tabs.entry(a.ev.tab).or_insert(TabCtx { page: None, pages: 0 });
        if let Some(pi) = ctx.page {
            pages[pi].last = a.eff;
            anns[i].width = pages[pi].width;
            anns[i].doc = doc_now(&pages[pi]);
        }
        match a.ev.kind {
            Kind::PageView(pv) => {
                ctx.pages += 1;
                pages.push(PageInst {
                    session: a.session,
                    tab: a.ev.tab,
                    counted: true,
                    url: pv.url,
                    start: a.eff,
                    last: a.eff,
                    start_width: pv.width,
                    width: pv.width,
                    height: pv.height,
                    page_height: pv.page_height,
                    base: (0, 0),
                    deepest: pv.height as i32,
                    max_scroll_y: 0,
                    scrolls: Vec::new(),
                });
                ctx.page = Some(pages.len() - 1);
            }
            Kind::Snapshot { scroll_x, scroll_y } => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    pg.scrolls.push((i, a.eff, scroll_x, scroll_y));
                    pg.deepest = pg.deepest.max(scroll_y + pg.height as i32);
                }
            }
            Kind::Scroll { node, x, y } if node == DOCUMENT_NODE => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    pg.scrolls.push((i, a.eff, x, y));
                    pg.max_scroll_y = pg.max_scroll_y.max(y);
                    pg.deepest = pg.deepest.max(y + pg.height as i32);
                }
            }
            Kind::Resize { width, height } => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    let (_, dy) = doc_now(pg);
                    pg.width = width;
                    pg.height = height;
                    pg.deepest = pg.deepest.max(dy + height as i32);
                }
            }
            _ => {}
        }
        anns[i].page = ctx.page;
        anns[i].page_no = ctx.pages;
    }
    tl.on_page = vec![Vec::new(); tl.pages.len()];
    for (i, a) in tl.anns.iter().enumerate() {
        if let Some(pi) = a.page {
            tl.on_page[pi].push(i);
        }
    }
    tl
}

/// What the views across devices are built from after every device is done.
#[derive(Default)]
struct Across {
    visitors: BTreeSet<page_stats::PageVisitor>,
    err_sessions: BTreeSet<errors::ErrSession>,
    depth_obs: BTreeMap<scroll_depth::DepthObs, isize>,
}

/// Every view as of `as_of`, from scratch.
pub fn reference(events: &[(u64, Event)], as_of: u64, p: &Params) -> Views {
    let mut by_device: BTreeMap<DeviceKey, Vec<(u64, Event)>> = BTreeMap::new();
    for (t, e) in events {
        if *t <= as_of {
            by_device.entry(e.device).or_default().push((*t, *e));
        }
    }
    let mut v = Views::default();
    let mut across = Across::default();
    for (key, mut evs) in by_device {
        evs.sort_by_key(|(t, e)| (*t, e.order_key()));
        let tl = timeline(key, &evs, as_of, p);
        device(&tl, p, &mut v, &mut across);
    }
    page_stats::reference_finish(&across.visitors, &mut v);
    page_stats::reference_signals(&mut v);
    errors::reference_finish(&across.err_sessions, &mut v);
    scroll_depth::reference_finish(&across.depth_obs, p, &mut v);
    funnels::reference_finish(p, &mut v);
    v
}

/// Every signal's reference over one device's timeline.
fn device(tl: &Timeline, p: &Params, v: &mut Views, across: &mut Across) {
    let mut rows = sessions::reference_rows(tl, p);
    sessions::reference_page_views(tl, &rows, v);
    page_stats::reference(tl, &rows, v, &mut across.visitors);
    scroll_depth::reference(tl, p, v, &mut across.depth_obs);
    heatmap::reference(tl, p, v);
    let bursts = rage::reference_bursts(tl, p);
    rage::reference(tl, &bursts, &mut rows, v);
    excessive_scroll::reference(tl, p, &mut rows, v);
    thrashed_cursor::reference(tl, p, &mut rows, v);
    quick_back::reference(tl, p, &mut rows, v);
    let (error_clicks, dead) = clicks::reference_verdicts(tl, p);
    clicks::reference(tl, &error_clicks, &dead, &mut rows, v);
    funnels::reference(tl, p, &rows, v);
    errors::reference(tl, &mut rows, v, &mut across.err_sessions);
    // Facts, for the signals built on them.
    let click = |i: usize| match tl.anns[i].ev.kind {
        Kind::Click(c) => Some(c),
        _ => None,
    };
    let mut facts: Vec<(usize, Fact)> = Vec::new();
    for (i, a) in tl.anns.iter().enumerate() {
        if let (Some(c), Some(_)) = (click(i), a.page) {
            facts.push((a.session, Fact::Click { url: tl.url_of(a), selector: c.selector, tag: c.tag }));
        }
    }
    for (_, members) in &bursts {
        for &i in members {
            let a = &tl.anns[i];
            facts.push((
                a.session,
                Fact::RageClick { url: tl.url_of(a), selector: click(i).expect("a click").selector },
            ));
        }
    }
    for &i in &dead {
        let a = &tl.anns[i];
        facts.push((a.session, Fact::DeadClick { url: tl.url_of(a), selector: click(i).expect("a click").selector }));
    }
    for &(i, _) in &error_clicks {
        let a = &tl.anns[i];
        facts.push((a.session, Fact::ErrorClick { url: tl.url_of(a), selector: click(i).expect("a click").selector }));
    }
    FactStates::reference(&facts, &rows, v);
    for r in rows {
        *v.sessions.entry(r).or_insert(0) += 1;
    }
}
