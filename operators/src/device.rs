//! The per-device state machine behind every sequence view.
//!
//! A [`Device`] sees its events in processing order (logical time, then event time,
//! tab, sequence number) and the passage of logical time (deadlines). From them it
//! maintains sessions, page views, rage/dead/error clicks, quick backs, excessive
//! scrolling, thrashed cursors, heatmap cells, scroll depth, funnel progress and the
//! page-stats and errors contributions, emitting *changes* to those views into an
//! [`Emit`].
//!
//! Time: every event gets an effective time `max(ts, latest effective time of the
//! device)`, so a device's timeline only moves forward and a late event can only append.
//! Windows that must be *closed* before a verdict (dead clicks, session end) are judged on
//! the device's own timeline when it can: a click is judged as soon as the device has an
//! event past the click's window. A device that goes quiet is judged at a deadline in
//! logical time: the first tick at or after `click + window` for a click that arrived on
//! time, or `engine.late_verdict_ms` after its arrival for a late one (an old recording
//! imported in chunks keeps its verdicts open for the next chunk). Only events that arrived
//! by the deadline count as reactions.
//!
//! State: a device keeps full state while its session is live and for
//! `engine.state_grace_ms` of logical time after its last arrival (so a recording
//! imported in chunks continues its session); then it is released ([`Device::evict_at`]).
//! The batch reference ([`crate::reference`]) states the same definitions without any of
//! this machinery.

use std::collections::VecDeque;

use crate::event::{DOCUMENT_NODE, DeviceKey, Event, Kind, MAX_MOVE_OFFSET_MS, PageView, tick_after, tick_ceil};
use crate::params::{Params, StepMatcher, glob_match, selector_match};
use crate::rows::*;
use crate::sym::Sym;

/// Changes produced while processing; the operator stamps them with a time.
#[derive(Default, Debug)]
pub struct Emit {
    pub sessions: Vec<(SessionRow, isize)>,
    pub page_views: Vec<(PageViewRow, isize)>,
    pub rage_clicks: Vec<(RageRow, isize)>,
    pub dead_clicks: Vec<(DeadRow, isize)>,
    pub error_clicks: Vec<(ErrorClickRow, isize)>,
    pub quick_backs: Vec<(QuickBackRow, isize)>,
    pub excessive_scrolls: Vec<(EpisodeRow, isize)>,
    pub thrashed_cursors: Vec<(EpisodeRow, isize)>,
    pub heat: crate::FastMap<HeatRow, isize>,
    pub depth: Vec<(DepthObs, isize)>,
    pub funnels: Vec<(FunnelRow, isize)>,
    pub page_agg: crate::FastMap<PageKey, PageAgg>,
    pub visitors: Vec<(PageVisitor, isize)>,
    pub err_occ: Vec<(ErrKey, ErrAgg)>,
    pub err_sessions: Vec<(ErrSession, isize)>,
}

impl Emit {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.page_views.is_empty()
            && self.rage_clicks.is_empty()
            && self.dead_clicks.is_empty()
            && self.error_clicks.is_empty()
            && self.quick_backs.is_empty()
            && self.excessive_scrolls.is_empty()
            && self.thrashed_cursors.is_empty()
            && self.heat.is_empty()
            && self.depth.is_empty()
            && self.funnels.is_empty()
            && self.page_agg.is_empty()
            && self.visitors.is_empty()
            && self.err_occ.is_empty()
            && self.err_sessions.is_empty()
    }

    fn page(&mut self, k: PageKey, f: impl FnOnce(&mut PageAgg)) {
        let e = self.page_agg.entry(k).or_default();
        f(e);
    }

    fn heat(&mut self, row: HeatRow, d: isize) {
        *self.heat.entry(row).or_insert(0) += d;
    }
}

/// Replaces an emitted row with its current value (retract + insert) when it changed.
fn replace<R: Copy + PartialEq>(out: &mut Vec<(R, isize)>, emitted: &mut Option<R>, current: Option<R>) {
    if *emitted != current {
        if let Some(old) = emitted.take() {
            out.push((old, -1));
        }
        if let Some(new) = current {
            out.push((new, 1));
        }
        *emitted = current;
    }
}

/// A row held in emitted form only by the part of it that can change while its state is
/// held; the rest is the same in the row built from that state now.
trait Kept: Copy + PartialEq {
    type Part: Copy + PartialEq;
    fn part(&self) -> Self::Part;
    /// `self` with `part` put back: the row as emitted.
    fn with(self, part: Self::Part) -> Self;
}

/// [`replace`] for a [`Kept`] row. `now` is the row built from the state as it is,
/// whether or not it is shown; it exists whenever a part is held.
fn replace_kept<R: Kept>(out: &mut Vec<(R, isize)>, emitted: &mut Option<R::Part>, now: Option<R>, shown: bool) {
    let current = now.filter(|_| shown);
    let part = current.as_ref().map(R::part);
    if *emitted != part {
        if let Some(old) = emitted.take() {
            let now = now.expect("an emitted row's state is held");
            out.push((now.with(old), -1));
        }
        if let Some(new) = current {
            out.push((new, 1));
        }
        *emitted = part;
    }
}

impl Kept for PageViewRow {
    /// Duration, scroll, viewport and clicks.
    type Part = (i64, i32, i32, u32, u32, u32);
    fn part(&self) -> Self::Part {
        (
            self.duration_ms,
            self.max_scroll_y,
            self.deepest_visible_y,
            self.viewport_width,
            self.viewport_height,
            self.clicks,
        )
    }
    fn with(self, p: Self::Part) -> Self {
        let (duration_ms, max_scroll_y, deepest_visible_y, viewport_width, viewport_height, clicks) = p;
        PageViewRow { duration_ms, max_scroll_y, deepest_visible_y, viewport_width, viewport_height, clicks, ..self }
    }
}

impl Kept for RageRow {
    /// A burst grows at its end.
    type Part = (i64, u32);
    fn part(&self) -> Self::Part {
        (self.end_ts, self.clicks)
    }
    fn with(self, (end_ts, clicks): Self::Part) -> Self {
        RageRow { end_ts, clicks, ..self }
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

impl Kept for DepthObs {
    type Part = (u32, u32);
    fn part(&self) -> Self::Part {
        (self.deepest, self.page_height)
    }
    fn with(self, (deepest, page_height): Self::Part) -> Self {
        DepthObs { deepest, page_height, ..self }
    }
}

impl Kept for FunnelRow {
    type Part = u32;
    fn part(&self) -> Self::Part {
        self.steps
    }
    fn with(self, steps: Self::Part) -> Self {
        FunnelRow { steps, ..self }
    }
}

/// What rows of a page are stamped with.
#[derive(Clone, Copy, Debug)]
struct RowCtx {
    session: SessionId,
    project: Sym,
    url: Sym,
}

/// A detector of "N direction changes within W": merges overlapping qualifying
/// windows into one episode.
#[derive(Clone, Debug, Default)]
struct Episodes {
    /// Times of the last `min - 1` changes.
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
    /// Records a change at `at`; returns true when an episode started. An episode
    /// that can no longer grow is emitted in its final form into `out` and forgotten.
    fn change(&mut self, at: i64, min: u32, window: i64, out: &mut Vec<(EpisodeRow, isize)>, ctx: RowCtx) -> bool {
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

    /// Heap bytes (the struct itself is counted where it is held).
    fn heap_bytes(&self) -> usize {
        self.recent.capacity() * 8
    }
}

#[derive(Clone, Copy, Debug)]
struct Burst {
    first_eff: i64,
    last_eff: i64,
    x: i32,
    y: i32,
    /// The first click's position is known: only then can others join it.
    positioned: bool,
    selector: Sym,
    count: u32,
}

#[derive(Clone, Copy, Debug)]
struct ScrollNode {
    node: u32,
    y: i32,
    dir: i8,
}

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
    /// Scroll positions of the document within the last `MAX_MOVE_OFFSET_MS`, to place
    /// mouse positions (which arrive up to that much after they happened).
    scroll_hist: VecDeque<(i64, i32, i32)>,
    scroll_base: (i32, i32),
    scroll_nodes: Vec<ScrollNode>,
    /// Made at the page's first scroll direction change (most pages have none).
    scroll_eps: Option<Box<Episodes>>,
    /// The last mouse position's x and time: a reversal happens at the turning point.
    last_x: Option<(i32, i64)>,
    last_dx: i8,
    /// Made at the page's first mouse reversal.
    thrash_eps: Option<Box<Episodes>>,
    burst: Option<Burst>,
    burst_emitted: Option<(i64, u32)>,
    row_emitted: Option<<PageViewRow as Kept>::Part>,
}

impl Page {
    #[allow(clippy::too_many_arguments)]
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
            scroll_hist: VecDeque::new(),
            scroll_base: (0, 0),
            scroll_nodes: Vec::new(),
            scroll_eps: None,
            last_x: None,
            last_dx: 0,
            thrash_eps: None,
            burst: None,
            burst_emitted: None,
            row_emitted: None,
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

    fn duration(&self) -> i64 {
        self.last - self.start
    }

    /// Heap bytes (the struct itself is counted where it is held).
    fn heap_bytes(&self) -> usize {
        self.scroll_hist.capacity() * std::mem::size_of::<(i64, i32, i32)>()
            + self.scroll_nodes.capacity() * std::mem::size_of::<ScrollNode>()
            + [&self.scroll_eps, &self.thrash_eps]
                .iter()
                .map(|e| e.as_ref().map_or(0, |e| std::mem::size_of::<Episodes>() + e.heap_bytes()))
                .sum::<usize>()
    }
}

#[derive(Clone, Copy, Debug)]
struct PendingClick {
    eff: i64,
    page_number: u32,
    url: Sym,
    x: i32,
    y: i32,
    selector: Sym,
    tag: Sym,
    /// When the dead verdict is due (logical time).
    deadline: u64,
    /// Text fields are never dead.
    exempt: bool,
    reacted: bool,
    judged: bool,
    errored: bool,
}

#[derive(Clone, Debug)]
struct Tab {
    tab: Sym,
    /// Had an event in this session (carried tabs have not, yet).
    seen: bool,
    page: Option<Page>,
    /// The page view before the current one (url, start), for quick backs.
    prev: Option<(Sym, i64)>,
    pages: u32,
    clicks: VecDeque<PendingClick>,
}

impl Tab {
    /// Heap bytes (the struct itself is counted where it is held).
    fn heap_bytes(&self) -> usize {
        self.page.as_ref().map_or(0, |p| p.heap_bytes()) + self.clicks.capacity() * std::mem::size_of::<PendingClick>()
    }
}

#[derive(Clone, Debug)]
struct Funnel {
    /// For each step, the latest start time of a chain that reached it (`NONE` when no
    /// chain has).
    best_start: Box<[i64]>,
    emitted: Option<u32>,
}

impl Funnel {
    const NONE: i64 = i64::MIN;
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

#[derive(Clone, Debug)]
struct Session {
    row: SessionRow,
    emitted: Option<SessionRow>,
    next_midnight: i64,
    /// Logical time at which the session can no longer take events in the ordinary
    /// course (idle gap, max age or midnight); `is_live` turns false there.
    close_at: u64,
    tabs: Vec<Tab>,
    funnels: Vec<Funnel>,
    depth: Vec<Depth>,
    /// The page view holding the session's exit (url) in page stats.
    exit: Option<Sym>,
    /// The url holding the session's bounce in page stats.
    bounce: Option<Sym>,
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

fn sq(x: i64) -> i64 {
    x * x
}

fn sign(x: i32) -> i8 {
    x.signum() as i8
}

impl Device {
    pub fn new(key: DeviceKey) -> Device {
        Device { key, last_eff: i64::MIN, last_t: 0, session: None, scheduled: u64::MAX }
    }

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
        if self.session.is_none() {
            return u64::MAX;
        }
        let mut d = self.evict_at(p);
        if let Some(s) = &self.session {
            if s.row.is_live {
                d = d.min(s.close_at);
            }
            for tab in &s.tabs {
                for c in &tab.clicks {
                    if !c.judged && !c.exempt {
                        d = d.min(c.deadline);
                    }
                }
            }
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
                + s.funnels.capacity() * std::mem::size_of::<Funnel>()
                + s.funnels.iter().map(|f| f.best_start.len() * std::mem::size_of::<i64>()).sum::<usize>()
                + s.depth.capacity() * std::mem::size_of::<Depth>()
        })
    }

    /// Processes due deadlines up to and including `now`.
    /// At the release time every pending verdict is given.
    pub fn advance(&mut self, now: u64, p: &Params, out: &mut Emit) {
        let release = now >= self.evict_at(p);
        let Some(s) = &mut self.session else { return };
        let key = self.key;
        for tab in &mut s.tabs {
            for c in tab.clicks.iter_mut() {
                if !c.judged && (c.deadline <= now || release) {
                    judge(c, &mut s.row, key, out);
                }
            }
        }
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
                    prev: None,
                    pages: 0,
                    clicks: VecDeque::new(),
                });
                s.tabs.len() - 1
            }
        };
        if !s.tabs[tab_index].seen {
            s.tabs[tab_index].seen = true;
            s.row.tabs += 1;
        }

        // Reactions to earlier clicks of this tab.
        let reaction = match ev.kind {
            Kind::Mutation => Some(p.dead_mutation),
            Kind::PageView(_) => Some(p.dead_navigation),
            Kind::Scroll { .. } => Some(p.dead_scroll),
            Kind::Input { .. } => Some(p.dead_input),
            _ => None,
        };
        {
            let tab = &mut s.tabs[tab_index];
            if let Some(w) = reaction {
                for c in tab.clicks.iter_mut() {
                    if !c.judged && eff - c.eff <= w {
                        c.reacted = true;
                    }
                }
            }
        }
        // The device has moved past these clicks' windows: nothing can react any more.
        let window = p.dead_window();
        let key = self.key;
        for tab in &mut s.tabs {
            for c in tab.clicks.iter_mut() {
                if !c.judged && !c.exempt && eff - c.eff > window {
                    judge(c, &mut s.row, key, out);
                }
            }
        }
        {
            let tab = &mut s.tabs[tab_index];
            // Clicks leave once judged and past the error window.
            while let Some(c) = tab.clicks.front() {
                if (c.judged || c.exempt) && eff - c.eff > p.error_window {
                    tab.clicks.pop_front();
                    let len = tab.clicks.len();
                    if tab.clicks.capacity() > 2 * len + 2 {
                        tab.clicks.shrink_to(len + len / 2 + 1);
                    }
                } else {
                    break;
                }
            }
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
        let key = self.key;
        let s = self.session.as_mut().expect("a session exists");
        match ev.kind {
            Kind::PageView(pv) => self.page_view(tab_index, eff, &pv, p, out),
            Kind::Snapshot { scroll_x, scroll_y } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    page.record_scroll(eff, scroll_x, scroll_y);
                    page.deepest = page.deepest.max(scroll_y + page.height as i32);
                }
            }
            Kind::Click(c) => {
                s.row.clicks += 1;
                let project = key.project;
                let session = s.row.session;
                let tab = &mut s.tabs[tab_index];
                let url = tab.page.as_ref().map_or(ev.url, |pg| pg.url);
                let page_number = tab.pages;
                if let Some(page) = &mut tab.page {
                    page.clicks += 1;
                    let (px, py) = if c.has_page { (c.page_x, c.page_y) } else { (c.x + page.doc_x, c.y + page.doc_y) };
                    if c.has_position {
                        out.heat(
                            HeatRow {
                                project,
                                url,
                                kind: HeatKind::Click,
                                viewport_bucket: p.viewport_bucket(page.width),
                                cell_x: px.div_euclid(p.cell),
                                cell_y: py.div_euclid(p.cell),
                            },
                            1,
                        );
                    }
                    // Rage: consecutive clicks close in time and space.
                    let joins = page.burst.as_ref().is_some_and(|b| {
                        eff - b.last_eff <= p.rage_gap
                            && c.has_position
                            && b.positioned
                            && sq(c.x as i64 - b.x as i64) + sq(c.y as i64 - b.y as i64) <= p.rage_radius2
                    });
                    if joins {
                        let b = page.burst.as_mut().expect("burst");
                        b.count += 1;
                        b.last_eff = eff;
                        if b.count == p.rage_min {
                            s.row.rage_clicks += 1;
                        }
                    } else {
                        // The previous burst is final: emit its last form and forget it.
                        let done = rage_row(page, session, project);
                        let shown = page.burst.is_some_and(|b| b.count >= p.rage_min);
                        replace_kept(&mut out.rage_clicks, &mut page.burst_emitted, done, shown);
                        page.burst_emitted = None;
                        page.burst = Some(Burst {
                            first_eff: eff,
                            last_eff: eff,
                            x: c.x,
                            y: c.y,
                            positioned: c.has_position,
                            selector: c.selector,
                            count: 1,
                        });
                        if p.rage_min <= 1 {
                            s.row.rage_clicks += 1;
                        }
                    }
                }
                // Grow by half (a deque's first allocation would hold four).
                if tab.clicks.len() == tab.clicks.capacity() {
                    tab.clicks.reserve_exact(tab.clicks.len() / 2 + 1);
                }
                tab.clicks.push_back(PendingClick {
                    eff,
                    page_number,
                    url,
                    x: c.x,
                    y: c.y,
                    selector: c.selector,
                    tag: c.tag,
                    deadline: verdict_deadline(t, ev.ts, eff, p),
                    exempt: c.text_field,
                    reacted: false,
                    judged: false,
                    errored: false,
                });
                self.funnel_step(
                    eff,
                    p,
                    |m| matches!(m, StepMatcher::Click(sel) if selector_match(sel, &c.selector.as_string())),
                );
            }
            Kind::Scroll { node, x, y } => {
                if let Some(page) = &mut s.tabs[tab_index].page {
                    if node == DOCUMENT_NODE {
                        page.record_scroll(eff, x, y);
                        page.max_scroll_y = page.max_scroll_y.max(y);
                        page.deepest = page.deepest.max(y + page.height as i32);
                    }
                    let change = match page.scroll_nodes.iter_mut().find(|n| n.node == node) {
                        Some(n) => {
                            let dir = sign(y - n.y);
                            n.y = y;
                            let change = dir != 0 && n.dir != 0 && dir != n.dir;
                            if dir != 0 {
                                n.dir = dir;
                            }
                            change
                        }
                        None => {
                            page.scroll_nodes.reserve_exact(1);
                            page.scroll_nodes.push(ScrollNode { node, y, dir: 0 });
                            false
                        }
                    };
                    let ctx = RowCtx { session: s.row.session, project: key.project, url: page.url };
                    if change
                        && page.scroll_eps.get_or_insert_default().change(
                            eff,
                            p.scroll_changes,
                            p.scroll_window,
                            &mut out.excessive_scrolls,
                            ctx,
                        )
                    {
                        s.row.excessive_scrolls += 1;
                    }
                }
            }
            Kind::Move { x, y, offset, .. } => {
                let project = key.project;
                if let Some(page) = &mut s.tabs[tab_index].page {
                    let at = eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64;
                    if let Some((lx, turn)) = page.last_x {
                        let dir = sign(x - lx);
                        if dir != 0 {
                            let ctx = RowCtx { session: s.row.session, project, url: page.url };
                            if page.last_dx != 0
                                && dir != page.last_dx
                                && page.thrash_eps.get_or_insert_default().change(
                                    turn,
                                    p.thrash_reversals,
                                    p.thrash_window,
                                    &mut out.thrashed_cursors,
                                    ctx,
                                )
                            {
                                s.row.thrashed_cursors += 1;
                            }
                            page.last_dx = dir;
                        }
                    }
                    page.last_x = Some((x, at));
                    let (sx, sy) = page.scroll_at(at);
                    out.heat(
                        HeatRow {
                            project,
                            url: page.url,
                            kind: HeatKind::Move,
                            viewport_bucket: p.viewport_bucket(page.width),
                            cell_x: (x + sx).div_euclid(p.cell),
                            cell_y: (y + sy).div_euclid(p.cell),
                        },
                        1,
                    );
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
                s.row.errors += 1;
                let ek = ErrKey { project: key.project, fingerprint };
                out.err_occ.push((ek, ErrAgg::occurrence(eff, message)));
                out.err_sessions.push((ErrSession { project: key.project, fingerprint, session: s.row.session }, 1));
                let tab = &mut s.tabs[tab_index];
                let page_number = tab.pages;
                for c in tab.clicks.iter_mut() {
                    if !c.errored && c.page_number == page_number && eff - c.eff <= p.error_window {
                        c.errored = true;
                        s.row.error_clicks += 1;
                        out.error_clicks.push((
                            ErrorClickRow {
                                session: s.row.session,
                                project: key.project,
                                url: c.url,
                                ts: c.eff,
                                x: c.x,
                                y: c.y,
                                selector: c.selector,
                                message,
                                error_ts: eff,
                            },
                            1,
                        ));
                    }
                }
            }
            Kind::Custom { name } => {
                self.funnel_step(eff, p, |m| matches!(m, StepMatcher::Event(n) if *n == name));
            }
            Kind::Mutation | Kind::Input { .. } | Kind::TouchMove | Kind::Exit | Kind::Activity => {}
        }
    }

    fn start_session(&mut self, eff: i64, t: u64, p: &Params, out: &mut Emit) {
        let key = self.key;
        let mut carried: Vec<Tab> = Vec::new();
        if let Some(mut old) = self.session.take() {
            // Windows never span sessions: judge what is pending now.
            for tab in &mut old.tabs {
                for c in tab.clicks.iter_mut() {
                    if !c.judged {
                        judge(c, &mut old.row, key, out);
                    }
                }
            }
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
                        prev: None,
                        pages: tab.pages,
                        clicks: VecDeque::new(),
                    });
                }
            }
        }
        let id = session_id(key, eff);
        let next_midnight = p.next_midnight(eff);
        let mut row = SessionRow {
            session: id,
            project: key.project,
            device: key.device,
            started_at: eff,
            ended_at: eff,
            is_live: true,
            page_views: 0,
            events: 0,
            clicks: 0,
            rage_clicks: 0,
            dead_clicks: 0,
            error_clicks: 0,
            errors: 0,
            quick_backs: 0,
            excessive_scrolls: 0,
            thrashed_cursors: 0,
            entry_url: Sym::EMPTY,
            exit_url: Sym::EMPTY,
            browser: Sym::EMPTY,
            os: Sym::EMPTY,
            device_type: Sym::EMPTY,
            country: Sym::EMPTY,
            tabs: 0,
        };
        let close = close_at(&row, next_midnight, p);
        row.is_live = t < close;
        let funnels = p
            .funnels
            .iter()
            .map(|f| Funnel { best_start: vec![Funnel::NONE; f.steps.len()].into(), emitted: None })
            .collect();
        self.session = Some(Box::new(Session {
            row,
            emitted: None,
            next_midnight,
            close_at: close,
            tabs: carried,
            funnels,
            depth: Vec::new(),
            exit: None,
            bounce: None,
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
                if old.counted {
                    // Quick back: A (prev), B (old), A (this one).
                    if let Some((a_url, _)) = tab.prev
                        && a_url == pv.url
                        && old.url != pv.url
                        && eff - old.start <= p.quick_back_max
                    {
                        s.row.quick_backs += 1;
                        out.quick_backs.push((
                            QuickBackRow {
                                session: s.row.session,
                                project: key.project,
                                url: old.url,
                                ts: old.start,
                                dwell_ms: eff - old.start,
                                from_url: a_url,
                            },
                            1,
                        ));
                    }
                    tab.prev = Some((old.url, old.start));
                } else {
                    tab.prev = None;
                }
            }
            tab.pages += 1;
            tab.page = Some(Page::new(tab.tab, true, pv.url, eff, pv.width, pv.height, pv.page_height));
        }
        let r = &mut s.row;
        r.page_views += 1;
        for (field, v) in [
            (&mut r.browser, pv.browser),
            (&mut r.os, pv.os),
            (&mut r.device_type, pv.device_type),
            (&mut r.country, pv.country),
        ] {
            if field.is_empty() && !v.is_empty() {
                *field = v;
            }
        }
        let pk = PageKey { project: key.project, url: pv.url };
        out.page(pk, |a| a.views += 1);
        out.visitors.push((PageVisitor { project: key.project, url: pv.url, device: key.device }, 1));
        // The session's exit moves to its newest page view.
        if let Some(prev_exit) = s.exit.replace(pv.url) {
            out.page(PageKey { project: key.project, url: prev_exit }, |a| a.exits -= 1);
        }
        out.page(pk, |a| a.exits += 1);
        // A bounce is a session with exactly one page view.
        if r.page_views == 1 {
            s.bounce = Some(pv.url);
            out.page(pk, |a| a.bounces += 1);
        } else if let Some(b) = s.bounce.take() {
            out.page(PageKey { project: key.project, url: b }, |a| a.bounces -= 1);
        }
        let path = pv.path;
        let url = pv.url;
        self.funnel_step(eff, p, |m| match m {
            StepMatcher::Page { pattern, whole_url } => {
                let target = if *whole_url { url } else { path };
                glob_match(pattern, &target.as_string())
            }
            _ => false,
        });
    }

    fn funnel_step(&mut self, eff: i64, p: &Params, matches: impl Fn(&StepMatcher) -> bool) {
        let Some(s) = &mut self.session else { return };
        for (spec, f) in p.funnels.iter().zip(s.funnels.iter_mut()) {
            for k in (0..spec.steps.len()).rev() {
                if !matches(&spec.steps[k]) {
                    continue;
                }
                if k == 0 {
                    f.best_start[0] = eff;
                } else {
                    let start = f.best_start[k - 1];
                    if start != Funnel::NONE && eff - start <= spec.window {
                        f.best_start[k] = f.best_start[k].max(start);
                    }
                }
            }
        }
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
        for (i, (spec, f)) in p.funnels.iter().zip(s.funnels.iter_mut()).enumerate() {
            let steps =
                (0..spec.steps.len()).rev().find(|k| f.best_start[*k] != Funnel::NONE).map_or(0, |k| k as u32 + 1);
            let row = FunnelRow { session, project: key.project, device: key.device, funnel: i as u32, steps };
            replace_kept(&mut out.funnels, &mut f.emitted, Some(row), true);
        }
        replace(&mut out.sessions, &mut s.emitted, Some(s.row));
    }
}

fn close_at(row: &SessionRow, next_midnight: i64, p: &Params) -> u64 {
    tick_after(row.ended_at + p.gap, p.tick)
        .min(tick_ceil(row.started_at.saturating_add(p.max_age), p.tick))
        .min(tick_ceil(next_midnight.min(i64::MAX / 2), p.tick))
}

/// When a quiet device's click is judged: at the tick its window closes when it arrived
/// on time (later reactions would be late themselves), else `late_verdict` after it
/// arrived.
pub fn verdict_deadline(t: u64, ts: i64, eff: i64, p: &Params) -> u64 {
    if t == tick_ceil(ts, p.tick) { tick_ceil(eff + p.dead_window(), p.tick).max(t) } else { t + p.late_verdict }
}

/// Session ids are content-defined: project, device and start time.
pub fn session_id(key: DeviceKey, start: i64) -> SessionId {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&key.project.0.to_le_bytes());
    buf[8..16].copy_from_slice(&key.device.0.to_le_bytes());
    buf[16..].copy_from_slice(&start.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

fn judge(c: &mut PendingClick, row: &mut SessionRow, key: DeviceKey, out: &mut Emit) {
    c.judged = true;
    if !c.reacted && !c.exempt {
        row.dead_clicks += 1;
        out.dead_clicks.push((
            DeadRow {
                session: row.session,
                project: key.project,
                url: c.url,
                ts: c.eff,
                x: c.x,
                y: c.y,
                selector: c.selector,
                tag: c.tag,
            },
            1,
        ));
    }
}

/// The page's current burst as a row (shown once it has the minimum clicks).
fn rage_row(page: &Page, session: SessionId, project: Sym) -> Option<RageRow> {
    page.burst.map(|b| RageRow {
        session,
        project,
        url: page.url,
        ts: b.first_eff,
        end_ts: b.last_eff,
        x: b.x,
        y: b.y,
        clicks: b.count,
        selector: b.selector,
    })
}

fn flush_page(page: &mut Page, depth: &mut Vec<Depth>, session: SessionId, key: DeviceKey, p: &Params, out: &mut Emit) {
    let project = key.project;
    let rage = rage_row(page, session, project);
    let shown = page.burst.is_some_and(|b| b.count >= p.rage_min);
    replace_kept(&mut out.rage_clicks, &mut page.burst_emitted, rage, shown);
    let ctx = RowCtx { session, project, url: page.url };
    if let Some(eps) = page.scroll_eps.as_mut() {
        let xs = eps.row(ctx);
        replace_kept(&mut out.excessive_scrolls, &mut eps.emitted, xs, true);
    }
    if let Some(eps) = page.thrash_eps.as_mut() {
        let th = eps.row(ctx);
        replace_kept(&mut out.thrashed_cursors, &mut eps.emitted, th, true);
    }
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
        duration_ms: page.duration(),
        max_scroll_y: page.max_scroll_y,
        deepest_visible_y: page.deepest,
        viewport_width: page.width,
        viewport_height: page.height,
        clicks: page.clicks,
    };
    // Page stats hold the duration the emitted row shows.
    let d = page.duration() - page.row_emitted.map_or(0, |r| r.0);
    if d != 0 {
        out.page(PageKey { project, url: page.url }, |a| a.duration_ms += d);
    }
    replace_kept(&mut out.page_views, &mut page.row_emitted, Some(row), true);
    // Session-level depth per (url, viewport bucket at the page's start).
    let bucket = p.viewport_bucket(page.start_width);
    let deepest = page.deepest.max(0);
    let entry = match depth.iter_mut().position(|d| d.url == page.url && d.bucket == bucket) {
        Some(i) => &mut depth[i],
        None => {
            depth.reserve_exact(1);
            depth.push(Depth { url: page.url, bucket, deepest: 0, page_height: 0, bands: 0, emitted: None });
            depth.last_mut().expect("pushed")
        }
    };
    entry.deepest = entry.deepest.max(deepest);
    if page.page_height > 0 {
        entry.page_height = entry.page_height.max(page.page_height);
    }
    let bands = (entry.deepest as u32).div_ceil(p.cell as u32);
    for band in entry.bands..bands {
        out.heat(
            HeatRow {
                project,
                url: page.url,
                kind: HeatKind::Scroll,
                viewport_bucket: bucket,
                cell_x: 0,
                cell_y: band as i32,
            },
            1,
        );
    }
    entry.bands = entry.bands.max(bands);
    let obs = DepthObs {
        project,
        url: page.url,
        deepest: depth_round(entry.deepest, p.cell),
        page_height: entry.page_height,
    };
    replace_kept(&mut out.depth, &mut entry.emitted, Some(obs), true);
}

/// Deepest visible y as observed by scroll depth: rounded down to a cell.
pub fn depth_round(deepest: i32, cell: i32) -> u32 {
    (deepest.max(0) / cell * cell) as u32
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
        assert!(size_of::<Page>() <= 288, "Page is {} bytes", size_of::<Page>());
        assert!(size_of::<Depth>() <= 40, "Depth is {} bytes", size_of::<Depth>());
        assert!(size_of::<Funnel>() <= 24, "Funnel is {} bytes", size_of::<Funnel>());
        println!(
            "Device {} Session {} SessionRow {} Tab {} Page {} Episodes {} PendingClick {} Funnel {} Depth {} PageViewRow {} RageRow {} Burst {}",
            size_of::<Device>(),
            size_of::<Session>(),
            size_of::<SessionRow>(),
            size_of::<Tab>(),
            size_of::<Page>(),
            size_of::<Episodes>(),
            size_of::<PendingClick>(),
            size_of::<Funnel>(),
            size_of::<Depth>(),
            size_of::<PageViewRow>(),
            size_of::<RageRow>(),
            size_of::<Burst>(),
        );
    }
}
