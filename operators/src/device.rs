//! The per-device state machine behind every sequence view.
//!
//! A [`Device`] sees its events in processing order (logical time, then event time,
//! tab, sequence number) and the passage of logical time (deadlines). It keeps the
//! timeline, the sessions and the tabs with their page views, and calls the hooks of
//! each signal module ([`crate::signals`]) as events come; the signals emit *changes* to
//! their views into an [`Emit`].
//!
//! Time: every event gets an effective time `max(ts, latest effective time of the
//! device)`, so a device's timeline only moves forward and a late event can only append.
//! Windows that must be *closed* before a verdict (dead clicks, session end) are judged on
//! the device's own timeline when it can, and otherwise at a deadline in logical time
//! (see [`crate::signals::clicks`]). Only events that arrived by the deadline count.
//!
//! State: a device keeps full state while its session is live and for
//! `engine.state_grace_ms` of logical time after its last arrival (so a recording
//! imported in chunks continues its session); then it is released ([`Device::evict_at`]).
//! The batch reference ([`crate::reference`]) states the same definitions without any of
//! this machinery.

use std::collections::VecDeque;

use crate::event::{Click, DOCUMENT_NODE, DeviceKey, Event, Kind, MAX_MOVE_OFFSET_MS, PageView, tick_after, tick_ceil};
use crate::params::Params;
use crate::registry::{Emit, FactStates};
use crate::signals::clicks::{Pending, Verdict};
use crate::signals::heatmap::HeatKind;
use crate::signals::sessions::{PageViewRow, SessionRow, session_id};
use crate::signals::{
    Fact, Kept, RowCtx, excessive_scroll, funnels, heatmap, page_stats, quick_back, rage, replace, replace_kept,
    scroll_depth, thrashed_cursor,
};
use crate::sym::Sym;

/// One page view of a tab (or, after a session split, the page the tab is still on,
/// carried into the new session without counting as a page view).
#[derive(Clone, Debug)]
struct Page {
    tab: Sym,
    /// Counted as a page view of this session (it has a row and page-stats weight).
    counted: bool,
    url: Sym,
    start: i64,
    last: i64,
    /// Viewport width when the page view started: fixes its depth bucket.
    start_width: u32,
    width: u32,
    height: u32,
    page_height: u32,
    doc_x: i32,
    doc_y: i32,
    max_scroll_y: i32,
    deepest: i32,
    clicks: u32,
    vitals: crate::event::Vitals,
    /// Scroll positions of the document within the last `MAX_MOVE_OFFSET_MS`, to place
    /// mouse positions (which arrive up to that much after they happened).
    scroll_hist: VecDeque<(i64, i32, i32)>,
    scroll_base: (i32, i32),
    row_emitted: Option<<PageViewRow as Kept>::Part>,
    rage: rage::PageState,
    scroll: excessive_scroll::PageState,
    thrash: thrashed_cursor::PageState,
}

impl Page {
    fn new(tab: Sym, counted: bool, url: Sym, start: i64, width: u32, height: u32, page_height: u32) -> Page {
        Page {
            tab,
            counted,
            url,
            start,
            last: start,
            start_width: width,
            width,
            height,
            page_height,
            doc_x: 0,
            doc_y: 0,
            max_scroll_y: 0,
            deepest: height as i32,
            clicks: 0,
            vitals: Default::default(),
            scroll_hist: VecDeque::new(),
            scroll_base: (0, 0),
            row_emitted: None,
            rage: rage::PageState::default(),
            scroll: excessive_scroll::PageState::default(),
            thrash: thrashed_cursor::PageState::default(),
        }
    }

    fn record_scroll(&mut self, eff: i64, x: i32, y: i32) {
        self.doc_x = x;
        self.doc_y = y;
        self.forget_scrolls(eff);
        self.scroll_hist.push_back((eff, x, y));
    }

    /// Drops scroll positions no mouse position at or after `eff` can be placed with
    /// (every later event has an effective time of at least `eff`).
    fn forget_scrolls(&mut self, eff: i64) {
        while let Some(&(t, bx, by)) = self.scroll_hist.front() {
            if t < eff - MAX_MOVE_OFFSET_MS as i64 {
                self.scroll_base = (bx, by);
                self.scroll_hist.pop_front();
            } else {
                break;
            }
        }
        // A burst of scrolling leaves a big buffer behind: give it back.
        let len = self.scroll_hist.len();
        if self.scroll_hist.capacity() > 2 * len + 4 {
            self.scroll_hist.shrink_to(len + len / 2 + 2);
        }
    }

    /// Document scroll offset at time `at` (not later than the newest entry).
    fn scroll_at(&self, at: i64) -> (i32, i32) {
        let mut cur = self.scroll_base;
        for &(t, x, y) in &self.scroll_hist {
            if t <= at {
                cur = (x, y);
            } else {
                break;
            }
        }
        cur
    }

    fn ctx(&self, session: u64, project: Sym) -> RowCtx {
        RowCtx { session, project, url: self.url }
    }

    /// Heap bytes (the struct itself is counted where it is held).
    fn heap_bytes(&self) -> usize {
        self.scroll_hist.capacity() * std::mem::size_of::<(i64, i32, i32)>()
            + self.rage.heap_bytes()
            + self.scroll.heap_bytes()
            + self.thrash.heap_bytes()
    }
}

#[derive(Clone, Debug)]
struct Tab {
    tab: Sym,
    /// Had an event in this session (carried tabs have not, yet).
    seen: bool,
    page: Option<Page>,
    quick_back: quick_back::TabState,
    pages: u32,
    clicks: Pending,
}

impl Tab {
    /// Heap bytes (the struct itself is counted where it is held).
    fn heap_bytes(&self) -> usize {
        self.page.as_ref().map_or(0, |p| p.heap_bytes()) + self.clicks.heap_bytes()
    }
}

#[derive(Clone, Debug)]
struct Session {
    row: SessionRow,
    emitted: Option<SessionRow>,
    next_midnight: i64,
    /// Logical time at which the session can no longer take events in the ordinary
    /// course (idle gap, max age or midnight); `is_live` turns false there.
    close_at: u64,
    tabs: Vec<Tab>,
    funnels: funnels::SessionState,
    depth: scroll_depth::SessionState,
    pages: page_stats::SessionState,
    facts: FactStates,
}

/// Everything known about one device.
#[derive(Clone, Debug)]
pub struct Device {
    key: DeviceKey,
    /// Latest effective time.
    last_eff: i64,
    /// Logical time of the latest event.
    last_t: u64,
    session: Option<Box<Session>>,
    /// The deadline the operator has queued a wake-up for (`u64::MAX`: none).
    pub scheduled: u64,
}

/// Dead verdicts given while processing one step, turned into facts after it.
type Verdicts = Vec<Verdict>;

impl Device {
    /// A device with no events yet.
    pub fn new(key: DeviceKey) -> Device {
        Device { key, last_eff: i64::MIN, last_t: 0, session: None, scheduled: u64::MAX }
    }

    /// Which device this is.
    pub fn key(&self) -> DeviceKey {
        self.key
    }

    /// The effective time an event with event time `ts` gets.
    pub fn effective(&self, ts: i64) -> i64 {
        ts.max(self.last_eff)
    }

    /// The logical time at which the state may be dropped (once `now` passes it):
    /// the session has ended and no event arrived for the grace period.
    pub fn evict_at(&self, p: &Params) -> u64 {
        let close = self.session.as_ref().map_or(0, |s| s.close_at);
        close.max(tick_ceil(self.last_t as i64 + p.grace as i64, p.tick))
    }

    /// Whether the device holds no state at all.
    pub fn is_empty(&self) -> bool {
        self.session.is_none()
    }

    /// The next logical time at which something is due (verdicts, session end,
    /// release); `u64::MAX` when nothing is held.
    pub fn next_deadline(&self, p: &Params) -> u64 {
        let Some(s) = &self.session else { return u64::MAX };
        let mut d = self.evict_at(p);
        if s.row.is_live {
            d = d.min(s.close_at);
        }
        for tab in &s.tabs {
            d = d.min(tab.clicks.next_deadline());
        }
        d
    }

    /// Heap bytes of state held: the session and everything it owns, each counted
    /// once at its allocated capacity (the `Device` itself is counted by its holder).
    pub fn heap_bytes(&self) -> usize {
        self.session.as_ref().map_or(0, |s| {
            std::mem::size_of::<Session>()
                + s.tabs.capacity() * std::mem::size_of::<Tab>()
                + s.tabs.iter().map(|t| t.heap_bytes()).sum::<usize>()
                + s.funnels.heap_bytes()
                + s.depth.heap_bytes()
                + s.facts.heap_bytes()
        })
    }

    /// Processes due deadlines up to and including `now`.
    /// At the release time every pending verdict is given.
    pub fn advance(&mut self, now: u64, p: &Params, out: &mut Emit) {
        let release = now >= self.evict_at(p);
        let Some(s) = &mut self.session else { return };
        let mut dead = Verdicts::new();
        for tab in &mut s.tabs {
            tab.clicks.judge_due(now, release, &mut s.row, out, &mut dead);
        }
        facts_of_verdicts(s, &dead, out);
        if s.row.is_live && s.close_at <= now {
            s.row.is_live = false;
        }
        self.flush(p, out);
    }

    /// Processes one event that arrived at logical time `t`.
    pub fn event(&mut self, t: u64, ev: &Event, p: &Params, out: &mut Emit) {
        let eff = self.effective(ev.ts);
        // A new session on the first event, after the idle gap, at max age, at midnight.
        let split = match &self.session {
            None => true,
            Some(s) => eff - s.row.ended_at > p.gap || eff - s.row.started_at >= p.max_age || eff >= s.next_midnight,
        };
        if split {
            self.start_session(eff, t, p, out);
        }
        self.last_eff = eff;
        self.last_t = t;
        let s = self.session.as_mut().expect("a session exists");
        s.row.ended_at = eff;
        if ev.counts_as_event() {
            s.row.events += 1;
        }
        s.close_at = close_at(&s.row, s.next_midnight, p);
        s.row.is_live = t < s.close_at;

        let tab_index = match s.tabs.iter().position(|tb| tb.tab == ev.tab) {
            Some(i) => i,
            None => {
                // Tabs are big and few: grow one at a time (a Vec's first allocation
                // would otherwise hold four).
                s.tabs.reserve_exact(1);
                s.tabs.push(Tab {
                    tab: ev.tab,
                    seen: false,
                    page: None,
                    quick_back: Default::default(),
                    pages: 0,
                    clicks: Pending::default(),
                });
                s.tabs.len() - 1
            }
        };
        if !s.tabs[tab_index].seen {
            s.tabs[tab_index].seen = true;
            s.row.tabs += 1;
        }
        // Reactions to earlier clicks of this tab, and verdicts the timeline allows now.
        s.tabs[tab_index].clicks.on_event(&ev.kind, eff, p);
        let mut dead = Verdicts::new();
        for tab in &mut s.tabs {
            tab.clicks.judge_passed(eff, &mut s.row, p, out, &mut dead);
        }
        facts_of_verdicts(s, &dead, out);
        {
            let tab = &mut s.tabs[tab_index];
            tab.clicks.prune(eff, p);
            if let Some(page) = &mut tab.page {
                page.last = eff;
                page.forget_scrolls(eff);
            }
        }

        self.apply(t, tab_index, eff, ev, p, out);
        // Entry and exit: the URL of the session's first and last event.
        let s = self.session.as_mut().expect("a session exists");
        let url = s.tabs[tab_index].page.as_ref().map_or(ev.url, |pg| pg.url);
        if !url.is_empty() {
            if s.row.entry_url.is_empty() {
                s.row.entry_url = url;
            }
            s.row.exit_url = url;
        }
    }

    /// The kind-specific effects of an event.
    fn apply(&mut self, t: u64, tab_index: usize, eff: i64, ev: &Event, p: &Params, out: &mut Emit) {
        let project = self.key.project;
        let s = self.session.as_mut().expect("a session exists");
        match ev.kind {
            Kind::PageView(pv) => self.page_view(tab_index, eff, &pv, p, out),
            Kind::Snapshot { scroll_x, scroll_y } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    page.record_scroll(eff, scroll_x, scroll_y);
                    page.deepest = page.deepest.max(scroll_y + page.height as i32);
                }
            }
            Kind::Click(c) => click(s, tab_index, t, eff, ev, &c, p, out),
            Kind::Scroll { node, x, y } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    if node == DOCUMENT_NODE {
                        page.record_scroll(eff, x, y);
                        page.max_scroll_y = page.max_scroll_y.max(y);
                        page.deepest = page.deepest.max(y + page.height as i32);
                    }
                    let ctx = page.ctx(s.row.session, project);
                    page.scroll.on_scroll(ctx, node, y, eff, &mut s.row, p, out);
                }
            }
            Kind::Move { x, y, offset, .. } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    let at = eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64;
                    let ctx = page.ctx(s.row.session, project);
                    page.thrash.on_move(ctx, x, at, &mut s.row, p, out);
                    let (sx, sy) = page.scroll_at(at);
                    heatmap::count(project, page.url, HeatKind::Move, page.width, x + sx, y + sy, p, out);
                }
            }
            Kind::Resize { width, height } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    page.width = width;
                    page.height = height;
                    page.deepest = page.deepest.max(page.doc_y + height as i32);
                }
            }
            Kind::Error { message, fingerprint } => {
                let url = s.tabs[tab_index].page.as_ref().map_or(ev.url, |pg| pg.url);
                crate::signals::errors::on_error(&mut s.row, url, message, fingerprint, eff, out);
                let tab = &mut s.tabs[tab_index];
                let hit = tab.clicks.on_error(tab.pages, eff, message, &mut s.row, p, out);
                for c in hit {
                    s.facts.on_fact(&Fact::ErrorClick { url: c.url, selector: c.selector }, &s.row, out);
                }
            }
            Kind::Custom { name } => s.funnels.on_custom(name, eff, p),
            Kind::Identify { user } => s.row.user_id = user,
            Kind::Vitals(v) => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    page.vitals.update(&v);
                }
            }
            Kind::Mutation | Kind::Input { .. } | Kind::TouchMove | Kind::Exit | Kind::Activity => {}
        }
    }

    fn start_session(&mut self, eff: i64, t: u64, p: &Params, out: &mut Emit) {
        let key = self.key;
        let mut carried: Vec<Tab> = Vec::new();
        if let Some(mut old) = self.session.take() {
            // Windows never span sessions: judge what is pending now.
            let mut dead = Verdicts::new();
            for tab in &mut old.tabs {
                tab.clicks.judge_all(&mut old.row, out, &mut dead);
            }
            facts_of_verdicts(&mut old, &dead, out);
            old.row.is_live = false;
            self.session = Some(old);
            self.flush(p, out);
            let old = self.session.take().expect("old session");
            // The tabs stay on their pages: carry the page context, not its counts.
            for tab in old.tabs {
                if let Some(pg) = tab.page {
                    let mut np = Page::new(tab.tab, false, pg.url, eff, pg.width, pg.height, pg.page_height);
                    np.doc_x = pg.doc_x;
                    np.doc_y = pg.doc_y;
                    np.scroll_base = (pg.doc_x, pg.doc_y);
                    np.deepest = pg.doc_y + pg.height as i32;
                    carried.push(Tab {
                        tab: tab.tab,
                        seen: false,
                        page: Some(np),
                        quick_back: Default::default(),
                        pages: tab.pages,
                        clicks: Pending::default(),
                    });
                }
            }
        }
        let next_midnight = p.next_midnight(eff);
        let mut row = SessionRow::new(session_id(key, eff), key, eff);
        let close = close_at(&row, next_midnight, p);
        row.is_live = t < close;
        self.session = Some(Box::new(Session {
            row,
            emitted: None,
            next_midnight,
            close_at: close,
            tabs: carried,
            funnels: funnels::SessionState::new(p),
            depth: scroll_depth::SessionState::default(),
            pages: page_stats::SessionState::default(),
            facts: FactStates::default(),
        }));
    }

    fn page_view(&mut self, tab_index: usize, eff: i64, pv: &PageView, p: &Params, out: &mut Emit) {
        let key = self.key;
        let s = self.session.as_mut().expect("session");
        // End the tab's current page view.
        {
            let tab = &mut s.tabs[tab_index];
            if let Some(mut old) = tab.page.take() {
                old.last = eff;
                // Its burst, episodes and row are final now.
                flush_page(&mut old, &mut s.depth, s.row.session, key, p, out);
                tab.quick_back.on_page_view(old.url, old.start, old.counted, pv.url, eff, &mut s.row, p, out);
            }
            tab.pages += 1;
            tab.page = Some(Page::new(tab.tab, true, pv.url, eff, pv.width, pv.height, pv.page_height));
        }
        s.row.page_views += 1;
        s.row.fill_client(pv);
        s.pages.on_page_view(key.project, key.device, pv.url, s.row.page_views, out);
        s.funnels.on_page_view(pv, eff, p);
    }

    /// Emits every row whose value changed since it was last emitted.
    pub fn flush(&mut self, p: &Params, out: &mut Emit) {
        let key = self.key;
        let Some(s) = &mut self.session else { return };
        let session = s.row.session;
        for tab in &mut s.tabs {
            if let Some(page) = &mut tab.page {
                flush_page(page, &mut s.depth, session, key, p, out);
            }
        }
        s.funnels.flush(&s.row, p, out);
        replace(&mut out.sessions, &mut s.emitted, Some(s.row));
    }
}

/// A click: counted by the session and its page, then handed to each click signal.
#[allow(clippy::too_many_arguments)]
fn click(s: &mut Session, tab_index: usize, t: u64, eff: i64, ev: &Event, c: &Click, p: &Params, out: &mut Emit) {
    s.row.clicks += 1;
    let project = s.row.project;
    let tab = &mut s.tabs[tab_index];
    let url = tab.page.as_ref().map_or(ev.url, |pg| pg.url);
    let page_number = tab.pages;
    let mut rage_targets = rage::RageTargets::new();
    if let Some(page) = &mut tab.page {
        page.clicks += 1;
        if c.has_position {
            let (px, py) = if c.has_page { (c.page_x, c.page_y) } else { (c.x + page.doc_x, c.y + page.doc_y) };
            heatmap::count(project, url, HeatKind::Click, page.width, px, py, p, out);
        }
        let ctx = page.ctx(s.row.session, project);
        rage_targets = page.rage.on_click(ctx, eff, c, &mut s.row, p, out);
    }
    tab.clicks.on_click(t, eff, page_number, url, c, p);
    s.funnels.on_click(c.selector, eff, p);
    if tab.page.is_some() {
        s.facts.on_fact(&Fact::Click { url, selector: c.selector, tag: c.tag }, &s.row, out);
    }
    for selector in rage_targets {
        s.facts.on_fact(&Fact::RageClick { url, selector }, &s.row, out);
    }
}

fn facts_of_verdicts(s: &mut Session, dead: &[Verdict], out: &mut Emit) {
    for d in dead {
        s.facts.on_fact(&Fact::DeadClick { url: d.url, selector: d.selector }, &s.row, out);
    }
}

fn close_at(row: &SessionRow, next_midnight: i64, p: &Params) -> u64 {
    tick_after(row.ended_at + p.gap, p.tick)
        .min(tick_ceil(row.started_at.saturating_add(p.max_age), p.tick))
        .min(tick_ceil(next_midnight.min(i64::MAX / 2), p.tick))
}

fn flush_page(
    page: &mut Page,
    depth: &mut scroll_depth::SessionState,
    session: u64,
    key: DeviceKey,
    p: &Params,
    out: &mut Emit,
) {
    let project = key.project;
    let ctx = page.ctx(session, project);
    page.rage.flush(ctx, p, out);
    page.scroll.flush(ctx, out);
    page.thrash.flush(ctx, out);
    if !page.counted {
        return;
    }
    let row = PageViewRow {
        session,
        project,
        device: key.device,
        tab: page.tab,
        url: page.url,
        ts: page.start,
        duration_ms: page.last - page.start,
        max_scroll_y: page.max_scroll_y,
        deepest_visible_y: page.deepest,
        viewport_width: page.width,
        viewport_height: page.height,
        clicks: page.clicks,
        lcp_ms: None,
        cls_milli: None,
        inp_ms: None,
        ttfb_ms: None,
        fcp_ms: None,
    }
    .with_vitals(page.vitals);
    // Page stats hold the duration the emitted row shows.
    page_stats::on_duration(project, page.url, row.duration_ms - page.row_emitted.map_or(0, |r| r.0), out);
    replace_kept(&mut out.page_views, &mut page.row_emitted, Some(row), true);
    depth.observe(project, page.url, page.start_width, page.deepest, page.page_height, p, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Devices sit inline in the behaviour operator's hash map, whose slots are allocated
    /// ahead of use: a device without a session must stay small (the session is boxed).
    /// `--nocapture` prints the sizes the state accounting works with.
    #[test]
    fn idle_devices_are_small() {
        use std::mem::size_of;
        assert!(size_of::<Device>() <= 64, "Device is {} bytes", size_of::<Device>());
        // Emitted rows are kept as their changing part only: a page holds no full row copy.
        // Web vitals cost 40 of these bytes (the page's and its emitted row's).
        assert!(size_of::<Page>() <= 360, "Page is {} bytes", size_of::<Page>());
        println!(
            "Device {} Session {} SessionRow {} Tab {} Page {}",
            size_of::<Device>(),
            size_of::<Session>(),
            size_of::<SessionRow>(),
            size_of::<Tab>(),
            size_of::<Page>(),
        );
    }
}
